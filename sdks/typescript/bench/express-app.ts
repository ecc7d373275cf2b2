/**
 * The app the Express benchmark loads: one route protected by the middleware, and the same
 * route verifying its key by hand with `POST /api/v1/keys/verify` over a kept-alive
 * connection (Node's fetch keeps connections alive). Run as a child process of
 * bench/express.ts, which passes KEYWARD_URL and KEYWARD_ROOT_KEY and reads the port.
 */

import type { AddressInfo } from "node:net";

import express from "express";

import { KeywardClient } from "@keyward/sdk";
import { keyward } from "@keyward/sdk/express";

const baseUrl = process.env.BENCH_KEYWARD_URL!;
const rootKey = process.env.BENCH_ROOT_KEY!;
const client = new KeywardClient({ apiKey: rootKey, baseUrl });

const app = express();

app.get("/middleware", keyward({ client }), (req, res) => {
  res.json({ owner: req.keyward?.owner_user_id ?? null });
});

app.get("/by-hand", async (req, res) => {
  const answer = await fetch(`${baseUrl}/api/v1/keys/verify`, {
    method: "POST",
    headers: { authorization: `Bearer ${rootKey}`, "content-type": "application/json" },
    body: JSON.stringify({ key: req.get("x-api-key") ?? "" }),
  });
  const verdict = (await answer.json()) as { valid: boolean; status: number; code: string; owner_user_id?: string };
  if (!verdict.valid) {
    res.status(verdict.status).json({ error: { code: verdict.code } });
    return;
  }
  res.json({ owner: verdict.owner_user_id ?? null });
});

const server = app.listen(0, "127.0.0.1", () => {
  process.send?.({ port: (server.address() as AddressInfo).port });
});
