/**
 * `npm run bench`: requests per second of an Express route protected by
 * `@keyward/sdk/express`, against the same route calling `keys/verify` by hand over a
 * kept-alive connection, in the same run, against the real server.
 *
 * The two routes are measured in alternating rounds (after a warm-up); each round's pair gives
 * a ratio, and the median ratio is the figure, so a machine that gets busier or quieter during
 * the run (this one is shared) affects both sides of each ratio alike.
 * Settings: BENCH_SECONDS (per round, default 3), BENCH_ROUNDS (default 8),
 * BENCH_CONCURRENCY (default 32), KEYWARD_BIN (the server).
 */

import { fork } from "node:child_process";
import { Agent, request } from "node:http";
import { loadavg } from "node:os";

import { KeywardClient } from "@keyward/sdk";

import { KeywardServer } from "../test/support/keyward.js";

const seconds = Number(process.env.BENCH_SECONDS ?? 3);
const rounds = Number(process.env.BENCH_ROUNDS ?? 8);
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 32);

/** Sends GETs with `concurrency` kept-alive connections for `durationMs`; returns successes per second. */
async function load(url: string, headers: Record<string, string>, durationMs: number): Promise<number> {
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  const deadline = Date.now() + durationMs;
  let ok = 0;
  let failed = 0;
  const one = (): Promise<void> =>
    new Promise((resolve) => {
      const outgoing = request(url, { agent, headers }, (response) => {
        response.resume();
        response.on("end", () => {
          if (response.statusCode === 200) ok += 1;
          else failed += 1;
          resolve();
        });
      });
      outgoing.on("error", () => {
        failed += 1;
        resolve();
      });
      outgoing.end();
    });
  const started = Date.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (Date.now() < deadline) await one();
    }),
  );
  const elapsed = (Date.now() - started) / 1000;
  agent.destroy();
  if (failed > 0) throw new Error(`${failed} requests failed`);
  return ok / elapsed;
}

const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

const server = await KeywardServer.start();
const app = fork(new URL("./express-app.ts", import.meta.url), {
  execArgv: ["--import", "tsx"],
  env: { ...process.env, BENCH_KEYWARD_URL: server.baseUrl, BENCH_ROOT_KEY: server.liveKey },
});
try {
  const port = await new Promise<number>((resolve) => app.once("message", (message) => resolve((message as { port: number }).port)));
  const root = new KeywardClient({ apiKey: server.liveKey, baseUrl: server.baseUrl });
  await root.apps.create({ name: "Bench", slug: "bench", permissions: [] });
  const { secret } = await root.keys.create("bench", { name: "bench", owner_user_id: "usr_bench" });
  const headers = { "x-api-key": secret };
  const routes = { middleware: `http://127.0.0.1:${port}/middleware`, byHand: `http://127.0.0.1:${port}/by-hand` };

  await load(routes.middleware, headers, 1_000);
  await load(routes.byHand, headers, 1_000);
  const results = { middleware: [] as number[], byHand: [] as number[] };
  for (let round = 0; round < rounds; round += 1) {
    results.middleware.push(await load(routes.middleware, headers, seconds * 1000));
    results.byHand.push(await load(routes.byHand, headers, seconds * 1000));
  }
  const middleware = median(results.middleware);
  const byHand = median(results.byHand);
  const ratios = results.middleware.map((value, round) => value / results.byHand[round]!);
  const format = (values: number[]): string => values.map((value) => value.toFixed(0)).join(", ");
  console.log(`Express route, ${concurrency} kept-alive connections, ${rounds} alternating rounds of ${seconds} s (load average ${loadavg()[0]!.toFixed(2)})`);
  console.log(`  protected by @keyward/sdk/express (verify-request): median ${middleware.toFixed(0)} req/s  [${format(results.middleware)}]`);
  console.log(`  keys/verify called by hand:                         median ${byHand.toFixed(0)} req/s  [${format(results.byHand)}]`);
  console.log(`  ratio middleware / by hand, median of the rounds' ratios: ${median(ratios).toFixed(2)}x (target >= 0.90x)  [${ratios.map((ratio) => ratio.toFixed(2)).join(", ")}]`);
} finally {
  app.kill();
  await server.stop();
}
