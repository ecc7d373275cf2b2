/**
 * `identify(userId, userToken, { refreshUserToken })` with a client public key and signed
 * user tokens: an expired token is refreshed once, over HTTP and on the socket.
 */

import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";

import WebSocket from "ws";

import { AuthError, KeywardClient } from "@keyward/sdk";

import { userToken } from "./support/jwt.js";
import { KeywardServer, skipReason } from "./support/keyward.js";
import { Recorder, SocketJar } from "./support/wait.js";

const sockets = new SocketJar();
afterEach(() => sockets.closeAll());

describe("identify with a client public key and signed user tokens", { skip: skipReason() }, () => {
  let server: KeywardServer;
  let publicKey: string;
  let signingKey: { id: string; pem: string };

  before(async () => {
    server = await KeywardServer.start();
    const root = new KeywardClient({ apiKey: server.liveKey, baseUrl: server.baseUrl });
    await root.environment.update({ enhanced_security: true });
    await root.apps.create({ name: "Portal", slug: "portal", permissions: [] });
    const signing = await root.signingKeys.create({ name: "backend" });
    signingKey = { id: signing.id, pem: signing.private_key_pem };
    publicKey = (await root.publicKeys.create({ type: "client", self_service_app: "portal" })).key;
    assert.match(publicKey, /^pk_live_/);
  });
  after(() => server?.stop());

  /** A signed user token for `user`; a negative lifetime is an expired one (past the 60 s leeway). */
  const tokenFor = (user: string, lifetimeSeconds = 600): string => userToken(signingKey.pem, signingKey.id, user, lifetimeSeconds);

  test("an expired token is refreshed once, with the old token and its claims, and the call retried", async () => {
    const expired = tokenFor("sub_1", -120);
    const refreshed: Array<[string, Record<string, unknown> | undefined]> = [];
    const client = new KeywardClient({ apiKey: publicKey, baseUrl: server.baseUrl }).identify("sub_1", expired, {
      refreshUserToken: (oldToken, payload) => {
        refreshed.push([oldToken, payload]);
        return tokenFor("sub_1");
      },
    });
    assert.equal(client.userId, "sub_1");
    const created = await client.me.create({ name: "mine" });
    assert.equal(created.owner_user_id, "sub_1");
    assert.equal(refreshed.length, 1);
    assert.equal(refreshed[0]?.[0], expired);
    assert.deepEqual([refreshed[0]?.[1]?.entity_type, refreshed[0]?.[1]?.entity_id], ["subscriber", "sub_1"]);
    await client.me.list();
    assert.equal(refreshed.length, 1, "a fresh token is kept");
  });

  test("requests that meet the same expired token share one refresh", async () => {
    let calls = 0;
    const client = new KeywardClient({ apiKey: publicKey, baseUrl: server.baseUrl }).identify("sub_2", tokenFor("sub_2", -120), {
      refreshUserToken: async () => {
        calls += 1;
        await new Promise((resolve) => setTimeout(resolve, 50));
        return tokenFor("sub_2");
      },
    });
    const pages = await Promise.all([client.me.list(), client.me.list(), client.me.list()]);
    assert.equal(pages.length, 3);
    assert.equal(calls, 1);
  });

  test("without a refresh, or when the refresh gives another expired token, token_expired is thrown, not looped", async () => {
    const bare = new KeywardClient({ apiKey: publicKey, baseUrl: server.baseUrl }).identify("sub_3", tokenFor("sub_3", -120));
    await assert.rejects(bare.me.list(), (error: unknown) => error instanceof AuthError && error.code === "token_expired");

    let calls = 0;
    const stubborn = new KeywardClient({ apiKey: publicKey, baseUrl: server.baseUrl }).identify("sub_3", tokenFor("sub_3", -120), {
      refreshUserToken: () => {
        calls += 1;
        return tokenFor("sub_3", -120);
      },
    });
    await assert.rejects(stubborn.me.list(), (error: unknown) => error instanceof AuthError && error.code === "token_expired");
    assert.equal(calls, 1);
  });

  test("on the socket: token_expired calls refreshUserToken, and the stream goes on with the new token", async () => {
    const tokens: string[] = [];
    const client = new KeywardClient({ apiKey: publicKey, baseUrl: server.baseUrl, WebSocket }).identify("sub_4", tokenFor("sub_4", 2), {
      refreshUserToken: (oldToken) => {
        tokens.push(oldToken);
        return tokenFor("sub_4");
      },
    });
    const socket = sockets.track(client.events({ minBackoffMs: 20, maxBackoffMs: 100 }));
    const recorder = new Recorder(socket);
    const [welcome] = await recorder.waitFor("connected");
    assert.equal(welcome?.session.credential_type, "client_public_key");
    await recorder.waitFor("token_expired", 1, 5_000);
    await recorder.waitFor("connected", 2);
    assert.equal(tokens.length, 1);
    const created = await client.me.create({ name: "after the refresh" });
    const [seen] = await recorder.waitFor("event");
    assert.deepEqual([seen?.event.type, seen?.event.key?.id], ["key.created", created.id]);
    socket.close();
    assert.equal(recorder.of("auth_failed").length, 0);
  });
});
