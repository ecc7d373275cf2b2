/**
 * In a real browser: Debian's Chromium, driven by playwright-core. A page served from another
 * origin than Keyward loads the browser build and, with a `pk_jwt_` key and its user's JWT,
 * lists and creates the user's own keys through CORS, receives its own `key.created` on the
 * event socket, and never sees another user's keys; a 429 there is a `RateLimitError` whose
 * `retryAfter` it could read (CORS exposes `Retry-After`).
 *
 * Skipped, saying why, without Chromium, unless KEYWARD_TEST_BROWSER=required (CI), when it
 * fails instead.
 */

import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";

import { chromium, type Browser, type Page } from "playwright-core";

import { KeywardClient } from "@keyward/sdk";

import { IdentityProvider } from "./support/jwt.js";
import { KeywardServer, skipReason } from "./support/keyward.js";

const CHROMIUM = process.env.KEYWARD_TEST_CHROMIUM ?? "/usr/bin/chromium";

function browserSkipReason(): string | undefined {
  const reason = skipReason() ?? (existsSync(CHROMIUM) ? undefined : `no Chromium at ${CHROMIUM} (apt-get install chromium)`);
  if (reason && process.env.KEYWARD_TEST_BROWSER === "required") {
    throw new Error(`KEYWARD_TEST_BROWSER=required, but ${reason}`);
  }
  return reason;
}

const PAGE = `<!doctype html><meta charset="utf-8"><title>Keyward SDK in a browser</title>
<script type="module" src="/page.js"></script>`;

/** Calls one of page.js's functions; a string, so nothing of this file's transpiling reaches the page. */
async function run<T>(tab: Page, name: string, args: Record<string, unknown>): Promise<T> {
  await tab.waitForFunction("window.ready === true");
  return (await tab.evaluate(`window.${name}(${JSON.stringify(args)})`)) as T;
}

describe("the browser build in Chromium", { skip: browserSkipReason() }, () => {
  let page: Server;
  let pageOrigin: string;
  let keyward: KeywardServer;
  let browser: Browser;
  let publicKey: string;
  let provider: IdentityProvider;
  let bobsKeyId: string;

  before(async () => {
    const scripts: Record<string, Buffer> = {
      "/sdk.js": readFileSync(new URL("../dist/browser.js", import.meta.url)),
      "/page.js": readFileSync(new URL("./browser/page.js", import.meta.url)),
    };
    page = createServer((request, response) => {
      const script = scripts[request.url ?? ""];
      if (script) {
        response.writeHead(200, { "content-type": "text/javascript" });
        response.end(script);
      } else {
        response.writeHead(200, { "content-type": "text/html" });
        response.end(PAGE);
      }
    });
    await new Promise<void>((done) => page.listen(0, "127.0.0.1", done));
    pageOrigin = `http://127.0.0.1:${(page.address() as AddressInfo).port}`;
    // Keyward allows the page's origin, and only it.
    keyward = await KeywardServer.start({ env: { CORS_ORIGIN: pageOrigin } });

    const root = new KeywardClient({ apiKey: keyward.liveKey, baseUrl: keyward.baseUrl });
    await root.apps.create({ name: "Portal", slug: "portal", permissions: [] });
    provider = new IdentityProvider();
    publicKey = (await root.publicKeys.create({ type: "jwt", public_key: provider.publicPem, algorithms: ["ES256"], self_service_app: "portal" })).key;
    const bob = new KeywardClient({ apiKey: publicKey, baseUrl: keyward.baseUrl, jwt: provider.token("bob") });
    bobsKeyId = (await bob.me.create({ name: "bob's key" })).id;

    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu"] });
  });

  after(async () => {
    await browser?.close();
    await keyward?.stop();
    await new Promise<void>((done) => (page ? page.close(() => done()) : done()));
  });

  test("lists and creates its own keys through CORS, and hears its own key.created on the socket", async () => {
    assert.notEqual(new URL(pageOrigin).origin, new URL(keyward.baseUrl).origin, "another origin than Keyward's");
    const tab = await browser.newPage();
    const consoleErrors: string[] = [];
    tab.on("console", (message) => {
      if (message.type() === "error") consoleErrors.push(message.text());
    });
    await tab.goto(pageOrigin);

    const result = await run<{
      before: string[];
      createdOwner: string;
      secretPrefix: string;
      secondId: string;
      heard: Array<{ type: string; id: string; owner: string }>;
      othersNewKeyId: string;
      after: string[];
      othersKey: string;
    }>(tab, "ownKeys", { apiKey: publicKey, baseUrl: keyward.baseUrl, jwt: provider.token("alice"), othersJwt: provider.token("bob"), othersKeyId: bobsKeyId });

    assert.deepEqual(result.before, []);
    assert.equal(result.createdOwner, "alice");
    assert.equal(result.secretPrefix, "kw_");
    assert.ok(
      result.heard.some((event) => event.type === "key.created" && event.id === result.secondId),
      `its own key.created: ${JSON.stringify(result.heard)}`,
    );
    assert.ok(result.heard.every((event) => event.owner === "alice"), "only alice's events");
    assert.ok(!result.heard.some((event) => event.id === result.othersNewKeyId), "not bob's key, made while alice listened");
    assert.deepEqual(result.after, ["from the browser", "while listening"], "never bob's key");
    assert.match(result.othersKey, /^404 /);
    // Chromium logs every failed request, the 404 asked for just above included; nothing else.
    assert.deepEqual(consoleErrors, ["Failed to load resource: the server responded with a status of 404 (Not Found)"]);
    await tab.close();
  });

  test("a cross-origin 429 is a RateLimitError with the seconds of Retry-After", async () => {
    const tab = await browser.newPage();
    await tab.goto(pageOrigin);
    // Only this test asks this server for demo sessions: the 6th is refused (or, should the
    // requests straddle the limit's window, at most five later).
    const outcome = await run<{ attempt: number; rateLimitError?: boolean; status?: number; code?: string; retryAfter?: unknown }>(
      tab,
      "rateLimited",
      { baseUrl: keyward.baseUrl },
    );
    assert.ok(outcome.attempt >= 6 && outcome.attempt <= 11, `refused at request ${outcome.attempt}`);
    assert.deepEqual(
      { rateLimitError: outcome.rateLimitError, status: outcome.status, code: outcome.code },
      { rateLimitError: true, status: 429, code: "rate_limited" },
    );
    assert.equal(typeof outcome.retryAfter, "number", `retryAfter read through CORS: ${String(outcome.retryAfter)}`);
    assert.ok((outcome.retryAfter as number) > 0 && (outcome.retryAfter as number) <= 60, `at most the minute: ${String(outcome.retryAfter)}`);
    await tab.close();
  });

  test("a page from an origin Keyward does not allow is stopped by CORS", async () => {
    const tab = await browser.newPage();
    // The same page served as "localhost": another origin than the one CORS_ORIGIN allows.
    await tab.goto(pageOrigin.replace("127.0.0.1", "localhost"));
    const outcome = await run<string>(tab, "callFromHere", { apiKey: publicKey, baseUrl: keyward.baseUrl, jwt: provider.token("alice") });
    assert.equal(outcome, "blocked");
    await tab.close();
  });
});
