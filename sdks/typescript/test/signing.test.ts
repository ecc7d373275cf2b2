/**
 * Workspace-key signing (SPEC §4.4): the canonical string byte for byte, signatures the real
 * server accepts, and tampered, replayed or forged requests it refuses.
 */

import assert from "node:assert/strict";
import { createHash, createHmac } from "node:crypto";
import { Readable } from "node:stream";
import { after, before, describe, test } from "node:test";

import {
  AuthError,
  HttpError,
  KeywardClient,
  WorkspaceKeySigner,
  canonicalString,
  sha256Hex,
  type FetchFunction,
} from "@keyward/sdk";

import { KeywardServer, skipReason } from "./support/keyward.js";

describe("the signature itself", () => {
  test("is Base64 HMAC-SHA256 over METHOD, PATH?QUERY, TS and the body's hex SHA-256", async () => {
    const body = '{"name":"Signed"}';
    const digest = createHash("sha256").update(body).digest("hex");
    assert.equal(await sha256Hex(body), digest);
    assert.equal(await sha256Hex(new TextEncoder().encode(body)), digest);
    const request = { method: "post", path: "/api/v1/apps", query: "limit=5", timestamp: 1700000000, bodySha256: digest };
    assert.equal(canonicalString(request), `POST\n/api/v1/apps?limit=5\n1700000000\n${digest}`);
    assert.equal(canonicalString({ ...request, query: "" }), `POST\n/api/v1/apps\n1700000000\n${digest}`, "no ? without a query");

    const signer = new WorkspaceKeySigner("wk_1", "wksec_live_secret");
    const expected = createHmac("sha256", "wksec_live_secret").update(canonicalString(request)).digest("base64");
    assert.equal(await signer.signature(request), expected);
  });

  test("an identical request in the same second is signed for the next second, never reused", async () => {
    const signer = new WorkspaceKeySigner("wk_1", "secret");
    const request = { method: "GET", path: "/api/v1/apps", query: "", bodySha256: await sha256Hex("") };
    const headers = await Promise.all([1, 2, 3].map(() => signer.authorization(request, 1700000000)));
    assert.deepEqual(
      headers.map((header) => /ts=(\d+)/.exec(header)?.[1]).sort(),
      ["1700000000", "1700000001", "1700000002"],
    );
    assert.equal(new Set(headers).size, 3);
    assert.match(headers[0]!, /^KW-HMAC-SHA256 key=wk_1, ts=1700000000, sig=[A-Za-z0-9+/]{43}=$/);
  });
});

describe("signed requests against the real server", { skip: skipReason() }, () => {
  let server: KeywardServer;
  let root: KeywardClient;
  let workspaceKey: { key: string; secret: string };

  before(async () => {
    server = await KeywardServer.start();
    root = new KeywardClient({ apiKey: server.liveKey, baseUrl: server.baseUrl });
    const created = await root.workspaceKeys.create({ name: "backend" });
    workspaceKey = { key: created.id, secret: created.secret };
  });
  after(() => server?.stop());

  /** A backend client whose `fetch` can be looked at, or meddled with, after signing. */
  function backend(meddle?: (url: string, init: RequestInit) => RequestInit): { client: KeywardClient; sent: RequestInit[] } {
    const sent: RequestInit[] = [];
    const fetchSpy: FetchFunction = (url, init) => {
      const final = meddle ? meddle(url, init) : init;
      sent.push(final);
      return fetch(url, final);
    };
    return { client: new KeywardClient({ workspaceKey, baseUrl: server.baseUrl, fetch: fetchSpy }), sent };
  }

  test("every call is signed and accepted: a body, a query, an encoded path, the same GET again and again", async () => {
    const { client, sent } = backend();
    const app = await client.apps.create({ name: "Signed", slug: "signed", permissions: [] });
    assert.equal(app.slug, "signed");
    const page = await client.apps.list({ limit: 5 });
    assert.deepEqual(page.data.map((listed) => listed.slug), ["signed"]);
    for (let index = 0; index < 5; index += 1) assert.equal((await client.apps.get("signed")).slug, "signed");
    // A path that needs percent-encoding is signed as sent: the server finds no such key
    // rather than refusing the signature.
    await assert.rejects(
      client.keys.get("key with/slash"),
      (error: unknown) => error instanceof HttpError && !(error instanceof AuthError) && error.status >= 400,
    );

    for (const init of sent) {
      const authorization = (init.headers as Record<string, string>).authorization ?? "";
      assert.match(authorization, new RegExp(`^KW-HMAC-SHA256 key=${workspaceKey.key}, ts=\\d+, sig=`));
      assert.ok(!JSON.stringify(init).includes(workspaceKey.secret), "the secret is never sent");
    }
  });

  test("a body changed after signing is refused", async () => {
    const { client } = backend((_, init) => ({ ...init, body: '{"name":"Tampered","slug":"tampered","permissions":[]}' }));
    const error = await client.apps.create({ name: "Signed 2", slug: "signed-2", permissions: [] }).catch((caught: unknown) => caught);
    assert.ok(error instanceof AuthError, String(error));
    assert.deepEqual([error.status, error.code], [401, "invalid_signature"]);
    await assert.rejects(root.apps.get("tampered"), HttpError);
  });

  test("a signature is accepted once: the same request replayed is refused", async () => {
    let replay: (() => Promise<Response>) | undefined;
    const { client } = backend((url, init) => {
      replay = () => fetch(url, init);
      return init;
    });
    await client.apps.list({ limit: 9 });
    const replayed = await replay!();
    assert.equal(replayed.status, 401);
    assert.equal(((await replayed.json()) as { error: { code: string } }).error.code, "signature_replayed");
  });

  test("two processes with one workspace key sending the same request in the same second both succeed", async () => {
    // Each client remembers only its own signatures: the second one's first signature is the
    // first one's, refused as a replay, and signed afresh.
    const [one, two] = [backend(), backend()];
    const second = Math.floor(Date.now() / 1000);
    assert.equal((await one.client.apps.list({ limit: 3 })).data.length, 1);
    assert.equal((await two.client.apps.list({ limit: 3 })).data.length, 1);
    if (Math.floor(Date.now() / 1000) === second) assert.equal(two.sent.length, 2, "refused as a replay once, then signed afresh");
  });

  test("a wrong secret is refused", async () => {
    const forged = new KeywardClient({ workspaceKey: { key: workspaceKey.key, secret: "wksec_live_notthesecret" }, baseUrl: server.baseUrl });
    await assert.rejects(forged.apps.get("signed"), (error: unknown) => error instanceof AuthError && error.code === "invalid_signature");
  });

  test("verifyApiKeyRequest checks a signed request to your own service, body included", async () => {
    const signer = new WorkspaceKeySigner(workspaceKey.key, workspaceKey.secret);
    const body = '{"order":42}';
    const authorization = await signer.authorization({ method: "POST", path: "/orders", query: "", bodySha256: await sha256Hex(body) });
    const signed = (payload: string): Request =>
      new Request("http://service.example/orders", { method: "POST", headers: { authorization }, body: payload });

    const verdict = await root.gateway.verifyApiKeyRequest(signed(body));
    assert.deepEqual([verdict.valid, verdict.credential_type], [true, "workspace_key"]);
    const tampered = await root.gateway.verifyApiKeyRequest(signed('{"order":43}'));
    assert.deepEqual([tampered.valid, tampered.status], [false, 401]);

    // A Node request's stream is read, digested, and kept as rawBody for the handler.
    const again = await signer.authorization({ method: "POST", path: "/orders", query: "", bodySha256: await sha256Hex(body) });
    const nodeRequest = Object.assign(Readable.from([Buffer.from(body)]), {
      method: "POST",
      url: "/orders",
      headers: { authorization: again },
      rawBody: undefined as Uint8Array | undefined,
    });
    const fromNode = await root.gateway.verifyApiKeyRequest(nodeRequest);
    assert.equal(fromNode.valid, true);
    assert.equal(new TextDecoder().decode(nodeRequest.rawBody), body);
  });
});
