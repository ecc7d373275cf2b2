/**
 * The middleware inside real apps: Express, Hono (on @hono/node-server) and a plain Fetch
 * handler, each asked the same questions against the real server: allowed, refused, rate
 * limited, and Keyward down (fail closed, the handler never runs).
 */

import assert from "node:assert/strict";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { createServer } from "node:net";
import { after, before, describe, test } from "node:test";

import { serve } from "@hono/node-server";
import express from "express";
import { Hono } from "hono";

import { KeywardClient, WorkspaceKeySigner, sha256Hex } from "@keyward/sdk";
import { keyward as expressKeyward } from "@keyward/sdk/express";
import { withKeyward } from "@keyward/sdk/fetch";
import { keyward as honoKeyward, type KeywardVariables } from "@keyward/sdk/hono";

import { KeywardServer, skipReason } from "./support/keyward.js";

async function closedPort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((done) => probe.listen(0, "127.0.0.1", done));
  const { port } = probe.address() as AddressInfo;
  await new Promise<void>((done) => probe.close(() => done()));
  return port;
}

async function listen(server: Server): Promise<string> {
  await new Promise<void>((done) => (server.listening ? done() : server.once("listening", () => done())));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

interface Envelope {
  error: { type: string; code: string; message: string; request_id: string };
}

/** One framework's app, as the shared scenarios see it. */
interface Served {
  name: string;
  baseUrl: string;
  /** How many times each route's handler ran. */
  calls: Record<string, number>;
  close(): Promise<void>;
}

describe("middleware in real apps", { skip: skipReason() }, () => {
  let keywardServer: KeywardServer;
  let client: KeywardClient;
  let down: KeywardClient;
  const served: Served[] = [];
  const keys: Record<string, string> = {};

  before(async () => {
    keywardServer = await KeywardServer.start();
    client = new KeywardClient({ apiKey: keywardServer.liveKey, baseUrl: keywardServer.baseUrl });
    down = new KeywardClient({ apiKey: keywardServer.liveKey, baseUrl: `http://127.0.0.1:${await closedPort()}`, maxRetries: 0, timeout: 2_000 });
    await client.apps.create({ name: "Shop", slug: "shop", permissions: ["read:orders", "write:orders"] });
    await client.rateLimitSchemes.create({ slug: "two", windows: [{ limit: 2, period_seconds: 60 }] });
    const issue = async (name: string, body: Record<string, unknown> = {}): Promise<void> => {
      keys[name] = (await client.keys.create("shop", { name, owner_user_id: `owner_of_${name}`, ...body })).secret;
    };
    await issue("reader", { permissions: ["read:orders"] });
    await issue("nobody", { permissions: [] });
    await issue("revoked", { permissions: ["read:orders"] });
    await client.keys.revoke((await client.keys.list("shop", { search: "revoked" }).toArray())[0]!.id);
    for (const framework of ["express", "hono", "fetch"]) {
      await issue(`limited-${framework}`, { permissions: ["read:orders"], rate_limit_scheme: "two" });
    }

    // Express.
    const expressCalls: Record<string, number> = { orders: 0, down: 0, echo: 0 };
    const app = express();
    app.get("/orders", expressKeyward({ client, permissions: "read:orders" }), (req, res) => {
      expressCalls.orders! += 1;
      res.json({ owner: req.keyward?.owner_user_id, credential: req.keyward?.credential_type });
    });
    app.get("/down", expressKeyward({ client: down, permissions: "read:orders" }), (_req, res) => {
      expressCalls.down! += 1;
      res.json({});
    });
    // The body of a request signed with a workspace key is read to digest it; the JSON
    // parser after the middleware still hands it to the handler.
    app.post("/echo", expressKeyward({ client }), express.json(), (req, res) => {
      expressCalls.echo! += 1;
      res.json({ body: req.body, credential: req.keyward?.credential_type });
    });
    app.get(
      "/query",
      expressKeyward({
        client,
        getKey: (req) => (typeof req.query.key === "string" ? req.query.key : undefined),
        handleInvalidKey: (verdict, _req, res) => void res.status(418).json({ refused: verdict.code }),
      }),
      (req, res) => void res.json({ owner: req.keyward?.owner_user_id }),
    );
    const expressServer = app.listen(0, "127.0.0.1");
    served.push({ name: "express", baseUrl: await listen(expressServer), calls: expressCalls, close: () => new Promise((done) => expressServer.close(() => done())) });

    // Hono.
    const honoCalls: Record<string, number> = { orders: 0, down: 0 };
    const hono = new Hono<{ Variables: KeywardVariables }>();
    hono.get("/orders", honoKeyward({ client, permissions: "read:orders" }), (c) => {
      honoCalls.orders! += 1;
      return c.json({ owner: c.get("keyward").owner_user_id, credential: c.get("keyward").credential_type });
    });
    hono.get("/down", honoKeyward({ client: down, permissions: "read:orders" }), (c) => {
      honoCalls.down! += 1;
      return c.json({});
    });
    const honoServer = serve({ fetch: hono.fetch, port: 0, hostname: "127.0.0.1" }) as Server;
    served.push({ name: "hono", baseUrl: await listen(honoServer), calls: honoCalls, close: () => new Promise((done) => honoServer.close(() => done())) });

    // A plain Fetch handler, as Next.js route handlers are.
    const fetchCalls: Record<string, number> = { orders: 0, down: 0 };
    const orders = withKeyward({ client, permissions: "read:orders" }, async (_request, identity) => {
      fetchCalls.orders! += 1;
      return Response.json({ owner: identity.owner_user_id, credential: identity.credential_type });
    });
    const unavailable = withKeyward({ client: down, permissions: "read:orders" }, async () => {
      fetchCalls.down! += 1;
      return Response.json({});
    });
    const handler = (request: Request): Promise<Response> =>
      new URL(request.url).pathname === "/down" ? unavailable(request) : orders(request);
    const fetchServer = serve({ fetch: handler, port: 0, hostname: "127.0.0.1" }) as Server;
    served.push({ name: "fetch", baseUrl: await listen(fetchServer), calls: fetchCalls, close: () => new Promise((done) => fetchServer.close(() => done())) });
  });

  after(async () => {
    for (const app of served) await app.close();
    await keywardServer?.stop();
  });

  const get = (baseUrl: string, path: string, headers: Record<string, string> = {}): Promise<Response> =>
    fetch(`${baseUrl}${path}`, { headers });

  async function refusedWith(response: Response, status: number, type: string, code: string): Promise<Envelope> {
    assert.equal(response.status, status);
    const body = (await response.json()) as Envelope;
    assert.deepEqual([body.error.type, body.error.code], [type, code], JSON.stringify(body));
    assert.equal(typeof body.error.message, "string");
    return body;
  }

  for (const framework of ["express", "hono", "fetch"]) {
    test(`${framework}: a valid key reaches the handler, with the verified identity`, async () => {
      const app = served.find((candidate) => candidate.name === framework)!;
      const callsBefore = app.calls.orders!;
      const viaHeader = await get(app.baseUrl, "/orders", { "x-api-key": keys.reader! });
      assert.equal(viaHeader.status, 200);
      assert.deepEqual(await viaHeader.json(), { owner: "owner_of_reader", credential: "api_key" });
      const viaBearer = await get(app.baseUrl, "/orders", { authorization: `Bearer ${keys.reader}` });
      assert.equal(viaBearer.status, 200);
      assert.equal(app.calls.orders, callsBefore + 2);
    });

    test(`${framework}: refusals are 401 and 403 in the envelope, and never reach the handler`, async () => {
      const app = served.find((candidate) => candidate.name === framework)!;
      const callsBefore = app.calls.orders!;
      const missing = await get(app.baseUrl, "/orders");
      assert.equal(missing.headers.get("www-authenticate"), "Bearer");
      await refusedWith(missing, 401, "AUTHENTICATION_ERROR", "invalid_api_key");
      await refusedWith(await get(app.baseUrl, "/orders", { "x-api-key": "kw_live_notarealkey" }), 401, "AUTHENTICATION_ERROR", "invalid_api_key");
      await refusedWith(await get(app.baseUrl, "/orders", { "x-api-key": keys.nobody! }), 403, "PERMISSION_ERROR", "insufficient_permissions");
      await refusedWith(await get(app.baseUrl, "/orders", { "x-api-key": keys.revoked! }), 403, "PERMISSION_ERROR", "key_revoked");
      assert.equal(app.calls.orders, callsBefore, "the handler never ran");
    });

    test(`${framework}: the third call of a two-a-minute key is 429 with Retry-After`, async () => {
      const app = served.find((candidate) => candidate.name === framework)!;
      const key = keys[`limited-${framework}`]!;
      assert.equal((await get(app.baseUrl, "/orders", { "x-api-key": key })).status, 200);
      assert.equal((await get(app.baseUrl, "/orders", { "x-api-key": key })).status, 200);
      const limited = await get(app.baseUrl, "/orders", { "x-api-key": key });
      const retryAfter = Number(limited.headers.get("retry-after"));
      assert.ok(retryAfter >= 1 && retryAfter <= 60, `Retry-After ${retryAfter}`);
      await refusedWith(limited, 429, "RATE_LIMIT_ERROR", "rate_limited");
    });

    test(`${framework}: Keyward unreachable fails closed with 503, the handler never runs`, async () => {
      const app = served.find((candidate) => candidate.name === framework)!;
      const answer = await get(app.baseUrl, "/down", { "x-api-key": keys.reader! });
      assert.equal(answer.headers.get("retry-after"), "1");
      await refusedWith(answer, 503, "SERVICE_UNAVAILABLE", "verification_unavailable");
      assert.equal(app.calls.down, 0);
    });
  }

  test("express: getKey and handleInvalidKey", async () => {
    const app = served.find((candidate) => candidate.name === "express")!;
    const allowed = await get(app.baseUrl, `/query?key=${encodeURIComponent(keys.reader!)}`);
    assert.deepEqual(await allowed.json(), { owner: "owner_of_reader" });
    const refused = await get(app.baseUrl, "/query?key=kw_live_nope");
    assert.equal(refused.status, 418);
    assert.deepEqual(await refused.json(), { refused: "INVALID_KEY" });
  });

  test("express: a request signed with a workspace key is verified, and its JSON body still parsed", async () => {
    const app = served.find((candidate) => candidate.name === "express")!;
    const workspace = await client.workspaceKeys.create({ name: "partner" });
    const signer = new WorkspaceKeySigner(workspace.id, workspace.secret);
    const body = JSON.stringify({ order: 42 });
    const send = async (payload: string): Promise<Response> => {
      const authorization = await signer.authorization({ method: "POST", path: "/echo", query: "", bodySha256: await sha256Hex(body) });
      return fetch(`${app.baseUrl}/echo`, { method: "POST", headers: { authorization, "content-type": "application/json" }, body: payload });
    };
    const accepted = await send(body);
    assert.equal(accepted.status, 200);
    assert.deepEqual(await accepted.json(), { body: { order: 42 }, credential: "workspace_key" });
    const tampered = await send(JSON.stringify({ order: 43 }));
    await refusedWith(tampered, 401, "AUTHENTICATION_ERROR", "invalid_signature");
    assert.equal(app.calls.echo, 1);
  });
});
