/**
 * Webhook endpoints (SPEC §4.8) and leaked keys (SPEC §4.9) against the real server: an
 * endpoint's whole life through `client.webhooks`, `keys.reportLeak` on a live key and on a
 * root key (whose `key.leaked` event carries no `key`), and the published scanning patterns.
 * Deliveries go to example.com and fail in the background; nothing here waits for them.
 */

import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";

import WebSocket from "ws";

import { HttpError, KeywardClient, type WebhookEndpoint } from "@keyward/sdk";

import { KeywardServer, skipReason } from "./support/keyward.js";
import { Recorder, SocketJar, eventually } from "./support/wait.js";

const sockets = new SocketJar();
afterEach(() => sockets.closeAll());

describe("webhooks and leaked keys against the real server", { skip: skipReason() }, () => {
  let server: KeywardServer;
  let keyward: KeywardClient;

  before(async () => {
    server = await KeywardServer.start();
    keyward = new KeywardClient({ apiKey: server.liveKey, baseUrl: server.baseUrl, WebSocket });
    await keyward.apps.create({ name: "Leaky", slug: "leaky", permissions: [] });
  });
  after(() => server?.stop());

  test("an endpoint: create, list, get, update, rotate its secret, test, deliveries, retry, delete", async () => {
    const created = await keyward.webhooks.create({
      url: "https://example.com/hook",
      events: ["key.leaked", "key.revoked"],
      description: "SDK test",
    });
    assert.match(created.id, /^whe_/);
    assert.match(created.secret, /^whsec_/);
    assert.deepEqual([created.url, created.events, created.enabled], ["https://example.com/hook", ["key.leaked", "key.revoked"], true]);

    const listed: WebhookEndpoint[] = [];
    for await (const endpoint of keyward.webhooks.list({ limit: 10 })) listed.push(endpoint);
    assert.deepEqual(listed.map((endpoint) => endpoint.id), [created.id]);
    assert.ok(!JSON.stringify(listed).includes(created.secret), "lists never carry the secret");
    assert.equal((await keyward.webhooks.get(created.id)).description, "SDK test");

    const updated = await keyward.webhooks.update(created.id, { events: ["*"], description: "all of them" });
    assert.deepEqual([updated.events, updated.description], [["*"], "all of them"]);

    const rotated = await keyward.webhooks.rotateSecret(created.id);
    assert.equal(rotated.id, created.id);
    assert.match(rotated.secret, /^whsec_/);
    assert.notEqual(rotated.secret, created.secret);

    const queued = await keyward.webhooks.test(created.id);
    assert.match(queued.delivery_id, /^whd_/);
    const deliveries = await keyward.webhooks.deliveries(created.id).toArray();
    const delivery = deliveries.find((listed) => listed.id === queued.delivery_id);
    assert.equal(delivery?.event_type, "webhook.test");
    assert.equal(delivery?.endpoint_id, created.id);
    assert.deepEqual(await keyward.webhooks.retryDelivery(created.id, queued.delivery_id), { delivery_id: queued.delivery_id });

    assert.equal(await keyward.webhooks.delete(created.id), undefined);
    await assert.rejects(keyward.webhooks.get(created.id), (error: unknown) => error instanceof HttpError && error.status === 404);
  });

  test("an endpoint at a private address is refused", async () => {
    await assert.rejects(
      keyward.webhooks.create({ url: "http://127.0.0.1:9/hook" }),
      (error: unknown) => error instanceof HttpError && error.code === "invalid_url",
    );
  });

  test("reportLeak revokes a live key, and key.leaked names it", async () => {
    const socket = sockets.track(keyward.events({ minBackoffMs: 20, maxBackoffMs: 100 }));
    const recorder = new Recorder(socket);
    await recorder.waitFor("connected");

    const issued = await keyward.keys.create("leaky", { name: "pasted in a gist" });
    const report = await keyward.keys.reportLeak({ key: issued.secret, url: "https://gist.example/1", source: "sdk-test" });
    assert.deepEqual(report, { result: "revoked", key_id: issued.id });
    const refused = await keyward.keys.verify({ key: issued.secret });
    assert.deepEqual([refused.valid, refused.code], [false, "KEY_REVOKED"]);
    assert.equal((await keyward.keys.reportLeak({ key: issued.secret })).result, "already_revoked");

    const leaked = await eventually("key.leaked", () => recorder.of("event").find(({ event }) => event.type === "key.leaked"));
    assert.equal(leaked.event.key?.id, issued.id);
    assert.deepEqual([leaked.event.details?.url, leaked.event.details?.source], ["https://gist.example/1", "sdk-test"]);
    assert.ok(!JSON.stringify(recorder.events).includes(issued.secret), "no event carries the secret");
  });

  test("a leaked root key: revoked, and its key.leaked event has no `key`", async () => {
    const socket = sockets.track(keyward.events({ minBackoffMs: 20, maxBackoffMs: 100 }));
    const recorder = new Recorder(socket);
    await recorder.waitFor("connected");

    const rootKey = await keyward.rootKeys.create({ name: "leaked root", scopes: ["keys:read"] });
    const report = await keyward.keys.reportLeak({ key: rootKey.secret, source: "sdk-test" });
    assert.deepEqual(report, { result: "revoked", key_id: rootKey.id });
    const leaked = await eventually("key.leaked", () =>
      recorder.of("event").find(({ event }) => event.type === "key.leaked" && event.details?.root_key_id === rootKey.id),
    );
    assert.equal(leaked.event.key ?? undefined, undefined, "no API key to show");
    await assert.rejects(
      new KeywardClient({ apiKey: rootKey.secret, baseUrl: server.baseUrl }).apps.list(),
      (error: unknown) => error instanceof HttpError && error.code === "key_revoked",
    );
  });

  test("secretScanning.patterns() publishes the root keys' prefix", async () => {
    const { data } = await keyward.secretScanning.patterns();
    const root = data.find((pattern) => pattern.prefix === "sk");
    assert.ok(root, JSON.stringify(data));
    assert.ok(new RegExp(root.regex).test(server.liveKey), `${root.regex} matches a root key`);
  });
});
