/**
 * Every error class, retries and timeouts, and bad answers: against the real server, with a
 * relay in front of it that misbehaves on demand. No error ever shows a secret.
 */

import assert from "node:assert/strict";
import { createServer } from "node:net";
import { after, before, describe, test } from "node:test";
import { inspect } from "node:util";

import {
  AuthError,
  ConnectionError,
  HttpError,
  KeywardClient,
  KeywardError,
  RateLimitError,
  TimeoutError,
} from "@keyward/sdk";

import { KeywardServer, skipReason } from "./support/keyward.js";
import { FaultyProxy } from "./support/proxy.js";

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  const { port } = server.address() as { port: number };
  await new Promise<void>((done) => server.close(() => done()));
  return port;
}

/** Everything a person or a log could see of an error. */
function everythingShown(error: unknown): string {
  return [String(error), (error as Error).stack, JSON.stringify(error), inspect(error, { depth: 5 })].join("\n");
}

describe("errors, retries and timeouts", { skip: skipReason() }, () => {
  let server: KeywardServer;
  let proxy: FaultyProxy;
  let viaProxy: KeywardClient;

  before(async () => {
    server = await KeywardServer.start();
    proxy = await FaultyProxy.start(server.baseUrl);
    viaProxy = new KeywardClient({ apiKey: server.liveKey, baseUrl: proxy.baseUrl, timeout: 1_000 });
    await new KeywardClient({ apiKey: server.liveKey, baseUrl: server.baseUrl }).apps.create({
      name: "Errors",
      slug: "errors",
      permissions: [],
    });
  });
  after(async () => {
    await proxy?.stop();
    await server?.stop();
  });

  test("HttpError carries the envelope: status, type, code, requestId", async () => {
    const error = await viaProxy.apps.get("missing").catch((caught: unknown) => caught);
    assert.ok(error instanceof HttpError && error instanceof KeywardError);
    assert.equal(error.name, "HttpError");
    assert.deepEqual([error.status, error.type, error.code], [404, "NOT_FOUND_ERROR", "app_not_found"]);
    assert.match(error.requestId, /^req_[0-9a-f]{12}$/);
    assert.ok(error.message.includes(error.requestId));
  });

  test("AuthError for 401 and 403, with the server's code", async () => {
    const unknown = new KeywardClient({ apiKey: "sk_live_thisisnotarealkeyatall000000", baseUrl: server.baseUrl });
    const error = await unknown.apps.list().catch((caught: unknown) => caught);
    assert.ok(error instanceof AuthError && error instanceof HttpError);
    assert.deepEqual([error.status, error.type, error.code], [401, "AUTHENTICATION_ERROR", "invalid_api_key"]);
  });

  test("RateLimitError with retryAfter, from a rate-limited root key", async () => {
    const root = new KeywardClient({ apiKey: server.liveKey, baseUrl: server.baseUrl });
    await root.rateLimitSchemes.create({ slug: "one-a-minute", windows: [{ limit: 1, period_seconds: 60 }] });
    const limited = await root.rootKeys.create({ name: "limited", scopes: ["*"], rate_limit_scheme: "one-a-minute" });
    const client = new KeywardClient({ apiKey: limited.secret, baseUrl: server.baseUrl });
    await client.environment.get();
    const error = await client.environment.get().catch((caught: unknown) => caught);
    assert.ok(error instanceof RateLimitError && error instanceof HttpError);
    assert.deepEqual([error.status, error.type], [429, "RATE_LIMIT_ERROR"]);
    assert.ok(error.retryAfter !== undefined && error.retryAfter >= 1 && error.retryAfter <= 60, `${error.retryAfter}`);
  });

  test("ConnectionError when nothing listens; TimeoutError when nothing answers", async () => {
    const nowhere = new KeywardClient({ apiKey: server.liveKey, baseUrl: `http://127.0.0.1:${await closedPort()}`, maxRetries: 0 });
    const refused = await nowhere.apps.list().catch((caught: unknown) => caught);
    assert.ok(refused instanceof ConnectionError && !(refused instanceof TimeoutError));
    assert.match(refused.message, /ECONNREFUSED/);

    proxy.inject({ kind: "stall" });
    const started = Date.now();
    const slow = await viaProxy.apps.list().catch((caught: unknown) => caught);
    assert.ok(slow instanceof TimeoutError && slow instanceof ConnectionError, String(slow));
    assert.ok(Date.now() - started < 2_500, "the timeout is the client's, through AbortController, and not retried");
  });

  test("a GET is retried on 503 and on a dropped connection, then succeeds", async () => {
    proxy.seen.length = 0;
    proxy.inject({ kind: "status", status: 503, body: "" }, { kind: "drop" });
    const app = await viaProxy.apps.get("errors");
    assert.equal(app.slug, "errors");
    assert.deepEqual(proxy.seen, ["GET /api/v1/apps/errors", "GET /api/v1/apps/errors", "GET /api/v1/apps/errors"]);
  });

  test("a GET gives up after maxRetries; a write is never retried", async () => {
    proxy.seen.length = 0;
    const unavailable = { kind: "status", status: 503, body: '{"error":{"type":"SERVICE_UNAVAILABLE","code":"storage_unavailable","message":"Storage is unreachable","request_id":"req_0123456789ab"}}' } as const;
    proxy.inject(unavailable, unavailable, unavailable);
    const error = await viaProxy.apps.get("errors").catch((caught: unknown) => caught);
    assert.ok(error instanceof HttpError);
    assert.deepEqual([error.status, error.code, error.requestId], [503, "storage_unavailable", "req_0123456789ab"]);
    assert.equal(proxy.seen.length, 3, "one attempt and two retries");

    proxy.seen.length = 0;
    proxy.inject(unavailable);
    await assert.rejects(viaProxy.apps.create({ name: "Twice?", slug: "twice", permissions: [] }), HttpError);
    proxy.inject({ kind: "drop" });
    await assert.rejects(viaProxy.apps.create({ name: "Twice?", slug: "twice", permissions: [] }), ConnectionError);
    assert.deepEqual(proxy.seen, ["POST /api/v1/apps", "POST /api/v1/apps"], "no write went twice");
    assert.equal((await viaProxy.apps.list().toArray()).some((app) => app.slug === "twice"), false);
  });

  test("bad answers become clear HttpErrors, never crashes", async () => {
    proxy.inject({ kind: "status", status: 502, body: "<html>Bad gateway</html>", headers: { "content-type": "text/html" } });
    const html = await viaProxy.apps.create({ name: "x", slug: "x", permissions: [] }).catch((caught: unknown) => caught);
    assert.ok(html instanceof HttpError);
    assert.deepEqual([html.status, html.type, html.code], [502, "INTERNAL_ERROR", "unexpected_response"]);
    assert.match(html.message, /without Keyward's error envelope \(text\/html, 24 characters\)/);

    proxy.inject({ kind: "status", status: 200, body: "", headers: { "x-request-id": "req_aaaaaaaaaaaa" } });
    const empty = await viaProxy.apps.create({ name: "x", slug: "x", permissions: [] }).catch((caught: unknown) => caught);
    assert.ok(empty instanceof HttpError);
    assert.deepEqual([empty.status, empty.code, empty.requestId], [200, "invalid_json", "req_aaaaaaaaaaaa"]);

    proxy.inject({ kind: "status", status: 200, body: "{not json" });
    assert.ok((await viaProxy.apps.create({ name: "x", slug: "x", permissions: [] }).catch((caught: unknown) => caught)) instanceof HttpError);

    // A bare 429, as a proxy might send, still says when to retry.
    proxy.inject({ kind: "status", status: 429, headers: { "retry-after": "7", "x-request-id": "req_bbbbbbbbbbbb" } });
    const bare = await viaProxy.apps.create({ name: "x", slug: "x", permissions: [] }).catch((caught: unknown) => caught);
    assert.ok(bare instanceof RateLimitError);
    assert.deepEqual([bare.retryAfter, bare.requestId, bare.code], [7, "req_bbbbbbbbbbbb", "unexpected_response"]);

    proxy.inject({ kind: "status", status: 401, body: "" });
    assert.ok((await viaProxy.apps.create({ name: "x", slug: "x", permissions: [] }).catch((caught: unknown) => caught)) instanceof AuthError);
  });

  test("no error, log or printout ever shows a secret", async () => {
    const apiKey = "sk_live_supersecretvalue0000000000";
    const secret = "wksec_live_topsecretworkspace0000000";
    const token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2VjcmV0";
    const port = await closedPort();
    const errors: unknown[] = [];
    const clients = [
      new KeywardClient({ apiKey, baseUrl: server.baseUrl }),
      new KeywardClient({ apiKey, baseUrl: `http://127.0.0.1:${port}`, maxRetries: 0 }),
      new KeywardClient({ workspaceKey: { key: "wk_nosuchkey", secret }, baseUrl: server.baseUrl }),
      new KeywardClient({ apiKey: "pk_jwt_0123456789abcdef0123456789abcdef", jwt: token, baseUrl: server.baseUrl }),
      new KeywardClient({
        apiKey: "pk_jwt_0123456789abcdef0123456789abcdef",
        baseUrl: server.baseUrl,
        getJwt: () => {
          throw new Error("cannot refresh");
        },
      }),
    ];
    for (const client of clients) {
      errors.push(await client.apps.list().catch((caught: unknown) => caught));
      errors.push(await client.me.list().catch((caught: unknown) => caught));
      const printed = [inspect(client, { depth: 10, showHidden: true }), JSON.stringify(client), String(client)].join("\n");
      for (const value of [apiKey, secret, token]) assert.ok(!printed.includes(value), `client printout shows a secret: ${printed}`);
    }
    assert.equal(errors.length, 10);
    for (const error of errors) {
      assert.ok(error instanceof KeywardError, String(error));
      const shown = everythingShown(error);
      for (const value of [apiKey, secret, token]) assert.ok(!shown.includes(value), `an error shows a secret: ${shown}`);
    }
    const failedGetJwt = errors[9];
    assert.ok(failedGetJwt instanceof AuthError && failedGetJwt.code === "token_unavailable");
  });
});
