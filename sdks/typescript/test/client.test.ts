/**
 * Every client method against the real server: the seeds' names, every resource group,
 * self-service with a JWT public key, pagination, `getJwt` before each request.
 */

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { AuthError, HttpError, KeywardClient, PageRequest } from "@keyward/sdk";

import { IdentityProvider } from "./support/jwt.js";
import { KeywardServer, skipReason } from "./support/keyward.js";

describe("KeywardClient against the real server", { skip: skipReason() }, () => {
  let server: KeywardServer;
  let keyward: KeywardClient;

  before(async () => {
    server = await KeywardServer.start();
    keyward = new KeywardClient({ apiKey: server.liveKey, baseUrl: server.baseUrl });
  });
  after(() => server?.stop());

  test("health and readiness need no credential", async () => {
    const anonymous = new KeywardClient({ baseUrl: server.baseUrl });
    assert.equal((await anonymous.health()).status, "ok");
    assert.equal((await anonymous.ready()).status, "ready");
  });

  test("apps and keys through the seeds' names", async () => {
    const app = await keyward.apiKeys.createApiAuthApp({ name: "Orders", slug: "orders", permissions: ["read", "write"] });
    assert.equal(app.slug, "orders");
    assert.equal((await keyward.apiKeys.getApiAuthApp("orders")).id, app.id);
    const renamed = await keyward.apiKeys.updateApiAuthApp("orders", { name: "Orders v2" });
    assert.equal(renamed.name, "Orders v2");
    const apps = await keyward.apiKeys.listApiAuthApps().toArray();
    assert.deepEqual(apps.map((listed) => listed.slug), ["orders"]);

    const issued = await keyward.apiKeys.createApiKey("orders", {
      name: "Customer 42",
      owner_user_id: "usr_42",
      permissions: ["read"],
    });
    assert.match(issued.secret, /^kw_live_/);
    const listed = await keyward.apiKeys.listApiKeys("orders", { owner_user_id: "usr_42" }).toArray();
    assert.deepEqual(listed.map((key) => key.id), [issued.id]);
    assert.ok(!JSON.stringify(listed).includes(issued.secret), "lists never carry secrets");

    const rotated = await keyward.apiKeys.rotateApiKey({ api_key_id: issued.id, expire_previous_in_seconds: 60 });
    assert.equal(rotated.id, issued.id);
    assert.notEqual(rotated.secret, issued.secret);
    // The grace period: both secrets work for now.
    assert.equal((await keyward.keys.verify({ key: issued.secret })).valid, true);
    assert.equal((await keyward.keys.verify({ key: rotated.secret })).valid, true);

    const revoked = await keyward.apiKeys.revokeApiKey({ api_key_id: issued.id });
    assert.equal(revoked.status, "revoked");
    const refused = await keyward.keys.verify({ key: rotated.secret });
    assert.deepEqual([refused.valid, refused.code, refused.status], [false, "KEY_REVOKED", 403]);

    assert.equal((await keyward.apiKeys.deleteApiAuthApp("orders")).slug, "orders");
    await assert.rejects(keyward.apps.get("orders"), (error: unknown) => error instanceof HttpError && error.status === 404);
  });

  test("keys: get, update, verify with permissions and credits, import, delete", async () => {
    await keyward.apps.create({ name: "Shop", slug: "shop", permissions: ["read:data", "write:data"] });
    const issued = await keyward.keys.create("shop", {
      name: "metered",
      permissions: ["read:data"],
      credits: { remaining: 2 },
      meta: { plan: "pro" },
    });
    assert.equal((await keyward.keys.get(issued.id)).name, "metered");
    const updated = await keyward.keys.update(issued.id, { name: "metered (prod)", meta: { plan: "team" } });
    assert.deepEqual([updated.name, updated.meta], ["metered (prod)", { plan: "team" }]);

    const allowed = await keyward.keys.verify({ key: issued.secret, permissions: "read:data" });
    assert.deepEqual([allowed.valid, allowed.code, allowed.credits?.remaining], [true, "VALID", 1]);
    const denied = await keyward.keys.verify({ key: issued.secret, permissions: "read:data AND write:data" });
    assert.deepEqual([denied.valid, denied.code, denied.status], [false, "INSUFFICIENT_PERMISSIONS", 403]);
    assert.equal((await keyward.keys.verify({ key: issued.secret, credits_cost: 1 })).credits?.remaining, 0);
    const spent = await keyward.keys.verify({ key: issued.secret });
    assert.deepEqual([spent.code, spent.status], ["USAGE_EXCEEDED", 429]);

    const imported = await keyward.keys.import("shop", {
      keys: [{ hash: "ab".repeat(32), start: "legacy", name: "imported" }],
    });
    assert.equal(imported.imported, 1);
    assert.equal((await keyward.keys.delete(issued.id)).id, issued.id);
    await assert.rejects(keyward.keys.get(issued.id), (error: unknown) => error instanceof HttpError && error.status === 404);
  });

  test("verify-request finds whichever credential a request carries", async () => {
    const issued = await keyward.keys.create("shop", { name: "gateway", owner_user_id: "usr_7" });
    const verdict = await keyward.gateway.verifyRequest({
      method: "GET",
      path: "/orders",
      headers: { "x-api-key": issued.secret },
    });
    assert.deepEqual([verdict.valid, verdict.credential_type, verdict.owner_user_id], [true, "api_key", "usr_7"]);
    const fromFetch = await keyward.gateway.verifyApiKeyRequest(
      new Request("http://service.example/orders?page=2", { headers: { authorization: `Bearer ${issued.secret}` } }),
    );
    assert.deepEqual([fromFetch.valid, fromFetch.key_id], [true, issued.id]);
    const fromNode = await keyward.gateway.verifyApiKeyRequest({
      method: "GET",
      url: "/orders",
      headers: { "x-api-key": "kw_live_notarealkeyatall" },
    });
    assert.deepEqual([fromNode.valid, fromNode.status], [false, 401]);
  });

  test("rate-limit schemes and organizations", async () => {
    const scheme = await keyward.rateLimitSchemes.create({ slug: "standard", windows: [{ limit: 100, period_seconds: 60 }] });
    assert.equal(scheme.slug, "standard");
    assert.equal((await keyward.rateLimitSchemes.update("standard", { windows: [{ limit: 50, period_seconds: 60 }] })).windows[0]?.limit, 50);
    assert.equal((await keyward.rateLimitSchemes.get("standard")).windows[0]?.limit, 50);
    assert.deepEqual((await keyward.rateLimitSchemes.list().toArray()).map((listed) => listed.slug), ["standard"]);

    const organization = await keyward.organizations.put("org_1", { credit_cap: 1000, credit_period: "monthly", rate_limit_scheme: "standard" });
    assert.deepEqual([organization.id, organization.credit_cap], ["org_1", 1000]);
    assert.equal((await keyward.organizations.get("org_1")).credit_period, "monthly");
    assert.equal((await keyward.organizations.delete("org_1")).id, "org_1");
    assert.equal((await keyward.rateLimitSchemes.delete("standard")).slug, "standard");
  });

  test("root keys and the environment", async () => {
    const root = await keyward.rootKeys.create({ name: "gateway", scopes: ["verify"] });
    assert.match(root.secret, /^sk_live_/);
    assert.ok((await keyward.rootKeys.list().toArray()).some((key) => key.id === root.id));
    const narrow = new KeywardClient({ apiKey: root.secret, baseUrl: server.baseUrl });
    await assert.rejects(
      narrow.apps.list(),
      (error: unknown) => error instanceof AuthError && error.status === 403 && error.code === "insufficient_scope",
    );
    assert.ok((await keyward.rootKeys.revoke(root.id)).revoked_at);
    await assert.rejects(narrow.keys.verify({ key: "kw_live_x" }), (error: unknown) => error instanceof AuthError && error.code === "key_revoked");

    const environment = await keyward.environment.update({ enhanced_security: true });
    assert.equal(environment.enhanced_security, true);
    assert.equal((await keyward.environment.get()).environment, "live");
  });

  test("public, signing and workspace keys", async () => {
    const provider = new IdentityProvider();
    const publicKey = await keyward.publicKeys.create({ type: "jwt", public_key: provider.publicPem, algorithms: ["ES256"] });
    assert.match(publicKey.key, /^pk_jwt_[0-9a-f]{32}$/);
    assert.ok((await keyward.publicKeys.list().toArray()).some((key) => key.id === publicKey.id));
    const rotated = await keyward.publicKeys.rotate(publicKey.id);
    assert.notEqual(rotated.key, publicKey.key);
    assert.equal((await keyward.publicKeys.delete(publicKey.id)).id, publicKey.id);

    const signing = await keyward.signingKeys.create({ name: "backend" });
    assert.match(signing.private_key_pem, /BEGIN PRIVATE KEY/);
    assert.equal(atob(signing.private_key_base64), signing.private_key_pem);
    const listedSigning = await keyward.signingKeys.list().toArray();
    assert.ok(!JSON.stringify(listedSigning).includes("PRIVATE"), "the private key is shown once");
    assert.equal((await keyward.signingKeys.delete(signing.id)).id, signing.id);

    const workspace = await keyward.workspaceKeys.create({ name: "backend" });
    assert.ok(workspace.secret.length > 20);
    assert.ok((await keyward.workspaceKeys.list().toArray()).some((key) => key.id === workspace.id));
    const rotatedWorkspace = await keyward.workspaceKeys.rotate(workspace.id);
    assert.notEqual(rotatedWorkspace.secret, workspace.secret);
    assert.equal((await keyward.workspaceKeys.delete(workspace.id)).id, workspace.id);
  });

  test("self-service: a pk_jwt_ key and the user's JWT; getJwt before every request, over jwt", async () => {
    await keyward.apps.create({ name: "Self", slug: "self", permissions: [] });
    const provider = new IdentityProvider();
    const publicKey = await keyward.publicKeys.create({
      type: "jwt",
      public_key: provider.publicPem,
      algorithms: ["ES256"],
      self_service_app: "self",
    });
    let asked = 0;
    const alice = new KeywardClient({
      apiKey: publicKey.key,
      baseUrl: server.baseUrl,
      jwt: "captured.but.overridden",
      getJwt: () => {
        asked += 1;
        return provider.token("alice");
      },
    });
    const bob = new KeywardClient({ apiKey: publicKey.key, baseUrl: server.baseUrl, jwt: provider.token("bob") });

    const mine = await alice.me.create({ name: "alice's key" });
    assert.equal(mine.owner_user_id, "alice");
    await bob.me.create({ name: "bob's key" });
    assert.deepEqual((await alice.me.list().toArray()).map((key) => key.name), ["alice's key"]);
    assert.deepEqual((await bob.me.list().toArray()).map((key) => key.name), ["bob's key"]);
    await assert.rejects(bob.me.revoke(mine.id), (error: unknown) => error instanceof HttpError && error.status === 404);

    const rotated = await alice.me.rotate(mine.id);
    assert.notEqual(rotated.secret, mine.secret);
    assert.equal((await alice.me.revoke(mine.id)).status, "revoked");
    assert.equal(asked, 4, "one fresh token for each of alice's requests");
  });

  test("usage and the audit log", async () => {
    const usage = await keyward.usage.get({ granularity: "hour" });
    assert.equal(usage.granularity, "hour");
    const byKey = await keyward.usage.byKey({});
    assert.ok(Array.isArray(byKey.data));
    const entries = await keyward.auditLog.list({ limit: 2 }).toArray();
    assert.ok(entries.length > 10, `${entries.length} audit entries`);
    const shop = entries.find((entry) => entry.action === "app.create" && (entry.details as { slug?: string }).slug === "shop");
    assert.match(shop?.request_id ?? "", /^req_[0-9a-f]{12}$/, "the shop app's creation, with its request id");
  });

  test("lists: await gives the first page, for await gives every item of every page", async () => {
    await keyward.apps.create({ name: "Paged", slug: "paged", permissions: [] });
    for (let index = 0; index < 5; index += 1) await keyward.keys.create("paged", { name: `k${index}` });
    const request = keyward.keys.list("paged", { limit: 2 });
    assert.ok(request instanceof PageRequest);
    const first = await request;
    assert.equal(first.data.length, 2);
    assert.ok(first.next_cursor);
    const second = await keyward.keys.list("paged", { limit: 2, cursor: first.next_cursor ?? undefined });
    assert.notDeepEqual(second.data.map((key) => key.id), first.data.map((key) => key.id));

    const pages: number[] = [];
    for await (const page of request.pages()) pages.push(page.data.length);
    assert.deepEqual(pages, [2, 2, 1]);
    const names: string[] = [];
    for await (const key of keyward.keys.list("paged", { limit: 2 })) names.push(key.name);
    assert.deepEqual(names, ["k4", "k3", "k2", "k1", "k0"], "newest first, each once");
  });

  test("demo sandboxes need no key, and their own key deletes them", async () => {
    const anonymous = new KeywardClient({ baseUrl: server.baseUrl });
    const session = await anonymous.demo.createSession();
    assert.match(session.secret, /^sk_demo_/);
    const demo = new KeywardClient({ apiKey: session.secret, baseUrl: server.baseUrl });
    assert.equal((await demo.environment.get()).environment, "demo");
    assert.equal(await demo.demo.deleteSession(), undefined);
    await assert.rejects(demo.environment.get(), AuthError);
  });
});
