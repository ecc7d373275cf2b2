/**
 * KeywardWebSocket and KeywardAlertsWebSocket against the real server, as the Rust sockets'
 * tests do: a refused credential stops for good (counted on the server), tokens rotate
 * across `token_expired` with nothing lost or repeated, a restart is resumed with `since`,
 * an in-band refusal after the upgrade still backs off, and a close is clean. The protocol
 * corners the real server cannot be made to produce on demand (`lagged`, bare close codes)
 * use a scripted WebSocket server.
 */

import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";

import WebSocket, { WebSocketServer } from "ws";

import { KeywardAlertsWebSocket, KeywardClient, KeywardWebSocket, type SocketEvent } from "@keyward/sdk";

import { IdentityProvider } from "./support/jwt.js";
import { KeywardServer, skipReason } from "./support/keyward.js";
import { TcpRelay } from "./support/relay.js";
import { Recorder, SocketJar, eventually, sleep } from "./support/wait.js";

const fast = { minBackoffMs: 20, maxBackoffMs: 100, WebSocket };
const sockets = new SocketJar();
afterEach(() => sockets.closeAll());

describe("sockets against the real server", { skip: skipReason() }, () => {
  /** The first start, which owns the data directory; `server` is the one running now. */
  let first: KeywardServer;
  let server: KeywardServer;
  let root: KeywardClient;

  before(async () => {
    first = server = await KeywardServer.start();
    root = new KeywardClient({ apiKey: first.liveKey, baseUrl: server.baseUrl, WebSocket });
    await root.apps.create({ name: "Mine", slug: "mine", permissions: [] });
  });
  after(async () => {
    await server?.stop();
    await first?.stop();
  });

  test("after auth_failed: disconnected for good, and no second attempt reaches the server", async () => {
    const attemptsBefore = (await server.metric("keyward_ws_connections_total")) ?? 0;
    const socket = sockets.track(new KeywardAlertsWebSocket({ apiKey: "sk_live_thisisnotarealkeyatall000000", baseUrl: server.baseUrl, ...fast }));
    const seen: SocketEvent[] = [];
    for await (const event of socket) seen.push(event);
    assert.equal(seen.length, 2, JSON.stringify(seen));
    const [refused, ended] = seen;
    assert.ok(refused?.type === "auth_failed" && refused.error.code === "invalid_api_key");
    assert.deepEqual(ended, { type: "disconnected", reconnecting: false, reason: "authentication failed" });
    assert.ok(socket.ended);
    assert.ok(!JSON.stringify(seen).includes("thisisnotarealkey"), "no report shows the key");
    // Ten backoffs' worth of time: a socket that tried again would have done so by now.
    await sleep(1_000);
    assert.equal((await server.metric("keyward_ws_connections_total")) ?? 0, attemptsBefore + 1, "exactly one attempt");
  });

  test("getJwt on every reconnect: tokens rotate across token_expired, no event lost or repeated", async () => {
    const provider = new IdentityProvider();
    const publicKey = await root.publicKeys.create({ type: "jwt", public_key: provider.publicPem, algorithms: ["ES256"] });
    let asked = 0;
    const alice = new KeywardClient({
      apiKey: publicKey.key,
      baseUrl: server.baseUrl,
      jwt: "captured.but.overridden",
      // Each token lives 2 s, so the stream expires and reconnects while keys keep coming.
      getJwt: () => {
        asked += 1;
        return provider.token("alice", 2);
      },
      WebSocket,
    });
    const socket = sockets.track(alice.events({ minBackoffMs: 20, maxBackoffMs: 100 }));
    const recorder = new Recorder(socket);
    const [welcome] = await recorder.waitFor("connected");
    assert.equal(welcome?.session.subject, "alice", "getJwt wins over jwt");

    const expected: string[] = [];
    for (let index = 0; index < 14; index += 1) {
      const owner = index % 4 === 3 ? "bob" : "alice"; // bob's keys must never show
      await root.keys.create("mine", { name: `k${index}`, owner_user_id: owner });
      if (owner === "alice") expected.push(`k${index}`);
      await sleep(250);
    }
    await recorder.waitFor("event", expected.length);
    await sleep(300);
    socket.close();
    const names = recorder.of("event").map(({ event }) => event.key?.name);
    assert.deepEqual(names, expected, "each of alice's events once, in order, across reconnects");
    const expired = recorder.of("token_expired").length;
    const connected = recorder.of("connected").length;
    assert.ok(expired >= 1 && connected >= 2, `${expired} expiries, ${connected} connections`);
    assert.ok(asked >= connected && asked <= connected + expired + 2, `${asked} tokens for ${connected} connections`);
    assert.equal(recorder.of("auth_failed").length, 0);
  });

  test("a server restart is resumed with since: nothing lost, nothing repeated", async () => {
    const relay = await TcpRelay.start(server.port);
    const socket = sockets.track(new KeywardWebSocket({ apiKey: first.liveKey, baseUrl: relay.baseUrl, ...fast }));
    const recorder = new Recorder(socket);
    try {
      await recorder.waitFor("connected");
      await root.keys.create("mine", { name: "before" });
      await recorder.waitFor("event");

      // The line goes down, the server restarts, keys are made while the socket cannot see.
      relay.cut();
      await recorder.waitFor("disconnected");
      server = await server.restart();
      assert.equal(server.baseUrl, first.baseUrl, "the same address after the restart");
      await root.keys.create("mine", { name: "while away 1" });
      await root.keys.create("mine", { name: "while away 2" });
      relay.restore(server.port);

      await recorder.waitFor("event", 3);
      await root.keys.create("mine", { name: "after" });
      await recorder.waitFor("event", 4);
      await sleep(200);
      const names = recorder.of("event").map(({ event }) => event.key?.name);
      assert.deepEqual(names, ["before", "while away 1", "while away 2", "after"]);
      assert.ok(recorder.of("connected").length >= 2);
      assert.ok(recorder.of("disconnected").every((event) => event.reconnecting));
    } finally {
      socket.close();
      await relay.stop();
    }
  });

  test("alerts: the alerts socket gets rate_limit.exceeded", async () => {
    await root.rateLimitSchemes.create({ slug: "one", windows: [{ limit: 1, period_seconds: 60 }] });
    const issued = await root.keys.create("mine", { name: "limited", rate_limit_scheme: "one" });
    const socket = sockets.track(root.alerts({ minBackoffMs: 20, maxBackoffMs: 100 }));
    const recorder = new Recorder(socket);
    await recorder.waitFor("connected");
    await root.keys.verify({ key: issued.secret });
    assert.equal((await root.keys.verify({ key: issued.secret })).code, "RATE_LIMITED");
    const [alert] = await recorder.waitFor("event");
    assert.deepEqual([alert?.event.type, alert?.event.key?.id], ["rate_limit.exceeded", issued.id]);
    socket.close();
  });

  test("close() is clean: one final disconnected, the server's socket gone, the loop ended", async () => {
    const socket = sockets.track(root.events());
    const recorder = new Recorder(socket);
    await recorder.waitFor("connected");
    await eventually("an open socket on the server", async () => ((await server.metric("keyward_ws_sockets")) ?? 0) >= 1);
    socket.close();
    socket.close();
    assert.deepEqual(recorder.of("disconnected"), [{ type: "disconnected", reconnecting: false, reason: "closed by the client" }]);
    await eventually("no open socket on the server", async () => (await server.metric("keyward_ws_sockets")) === 0);
    await sleep(300);
    assert.equal(recorder.of("connected").length, 1, "no reconnect after close");
  });
});

describe("an in-band refusal after the upgrade still backs off", { skip: skipReason() }, () => {
  let server: KeywardServer;
  before(async () => {
    server = await KeywardServer.start({ env: { KEYWARD_WS_MAX_CONNECTIONS_PER_CREDENTIAL: "1" } });
  });
  after(() => server?.stop());

  test("a second socket for the same credential, refused with 1013 after each upgrade, backs off", async () => {
    const holder = sockets.track(new KeywardWebSocket({ apiKey: server.liveKey, baseUrl: server.baseUrl, WebSocket }));
    await new Recorder(holder).waitFor("connected");
    const start = (await server.metric("keyward_ws_connections_total")) ?? 0;

    const refused = sockets.track(new KeywardWebSocket({ apiKey: server.liveKey, baseUrl: server.baseUrl, WebSocket, minBackoffMs: 200, maxBackoffMs: 2_000 }));
    const recorder = new Recorder(refused);
    await sleep(4_000);
    const attempts = ((await server.metric("keyward_ws_connections_total")) ?? 0) - start;
    // Reset on every upgrade, the backoff would stay near 200 ms: some forty attempts.
    assert.ok(attempts >= 2 && attempts <= 15, `${attempts} attempts in 4 s`);
    assert.equal(recorder.of("connected").length, 0);
    assert.ok(recorder.of("disconnected").every((event) => event.reconnecting && /1013/.test(event.reason)));
    assert.ok(!JSON.stringify(recorder.events).includes(server.liveKey), "no report shows the key");

    holder.close();
    await recorder.waitFor("connected", 1, 8_000);
    refused.close();
  });
});

/** A scripted WebSocket server: says what each test tells it to, and records what it is asked. */
async function scriptedServer(script: (socket: WebSocket, url: URL, attempt: number) => void): Promise<{ baseUrl: string; urls: URL[]; received: string[]; close(): Promise<void> }> {
  const server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise<void>((done) => server.once("listening", () => done()));
  const urls: URL[] = [];
  const received: string[] = [];
  server.on("connection", (socket, request) => {
    const url = new URL(request.url ?? "/", "ws://localhost");
    urls.push(url);
    socket.on("message", (data) => received.push(String(data)));
    script(socket, url, urls.length);
  });
  const { port } = server.address() as { port: number };
  const close = (): Promise<void> => new Promise<void>((done) => server.close(() => done()));
  sockets.track({ close: () => void close() });
  return { baseUrl: `http://127.0.0.1:${port}`, urls, received, close };
}

const welcome = JSON.stringify({ type: "connected", session: { credential_type: "api_key", environment: "live" } });
const event = (id: string): string =>
  JSON.stringify({
    type: "event",
    channel: "events",
    event: {
      id,
      type: "key.created",
      created_at: "2026-01-01T00:00:00Z",
      environment: "live",
      key: { id: "key_1", app: "a", name: id, owner_user_id: null, organization_id: null, permissions: [], meta: {}, start: "a_live_x", enabled: true, revoked: false, expires_at: null, created_at: "2026-01-01T00:00:00Z" },
    },
  });

describe("the socket protocol's corners", () => {
  test("lagged is reported; since resumes after the last event; 4002 reconnects at once with a fresh token", async () => {
    let tokens = 0;
    const scripted = await scriptedServer((socket, _url, attempt) => {
      socket.send(welcome);
      if (attempt === 1) {
        socket.send(JSON.stringify({ type: "lagged", missed: 3 }));
        socket.send(event("evt_7"));
        // Later than the quick-expiry guard (500 ms), so this counts as an ordinary expiry.
        setTimeout(() => socket.close(4002, "token expired"), 800);
      }
    });
    const socket = sockets.track(new KeywardWebSocket({
      apiKey: "pk_jwt_0123456789abcdef0123456789abcdef",
      getJwt: () => `token-${(tokens += 1)}`,
      tenant: "acme",
      baseUrl: scripted.baseUrl,
      WebSocket,
    }));
    const recorder = new Recorder(socket);
    await recorder.waitFor("connected", 2);
    socket.close();
    await scripted.close();
    assert.deepEqual(recorder.of("lagged"), [{ type: "lagged", missed: 3 }]);
    assert.equal(socket.lastEventId, "evt_7");
    const [first, second] = scripted.urls;
    assert.deepEqual(
      [first?.pathname, first?.searchParams.get("api-key"), first?.searchParams.get("token"), first?.searchParams.get("tenant"), first?.searchParams.get("since")],
      ["/ws", "pk_jwt_0123456789abcdef0123456789abcdef", "token-1", "acme", null],
    );
    assert.deepEqual([second?.searchParams.get("token"), second?.searchParams.get("since")], ["token-2", "evt_7"]);
    assert.equal(recorder.of("disconnected").filter((ended) => ended.reconnecting).length, 0, "a token expiry is no disconnection to back off from");
    assert.deepEqual(scripted.received.slice(0, 1), ['{"type":"subscribe","channel":"events"}']);
  });

  test("close code 4001 without a message still ends the socket for good", async () => {
    const scripted = await scriptedServer((socket) => socket.once("message", () => socket.close(4001, "authentication failed")));
    const socket = sockets.track(new KeywardAlertsWebSocket({ apiKey: "sk_live_x", baseUrl: scripted.baseUrl, ...fast }));
    const seen: SocketEvent[] = [];
    for await (const reported of socket) seen.push(reported);
    await sleep(300);
    await scripted.close();
    assert.deepEqual(seen, [{ type: "disconnected", reconnecting: false, reason: "authentication failed" }]);
    assert.equal(scripted.urls.length, 1);
    assert.deepEqual(scripted.received, ['{"type":"subscribe","channel":"alerts"}']);
  });
});
