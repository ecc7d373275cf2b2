/**
 * The package as npm ships it: ESM and CommonJS entries, the exports map's subpaths, a
 * browser build with nothing of Node in it and within its size budget, and no runtime
 * dependency.
 */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { describe, test } from "node:test";

import * as esm from "@keyward/sdk";

import { BROWSER_BUDGET_BYTES, browserSize } from "../scripts/size.js";

const packageJson = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as Record<string, unknown>;
const require = createRequire(import.meta.url);

describe("the package", () => {
  test("has no runtime dependency", () => {
    assert.equal(packageJson.dependencies, undefined);
    assert.equal(packageJson.name, "@keyward/sdk");
  });

  test("CommonJS and ESM entries export the same classes, subpaths included", () => {
    const cjs = require("@keyward/sdk") as typeof esm;
    for (const name of ["KeywardClient", "KeywardError", "HttpError", "AuthError", "RateLimitError", "ConnectionError", "TimeoutError", "KeywardWebSocket", "KeywardAlertsWebSocket"] as const) {
      assert.equal(typeof esm[name], "function", `ESM ${name}`);
      assert.equal(typeof cjs[name], "function", `CJS ${name}`);
    }
    assert.equal(typeof (require("@keyward/sdk/express") as { keyward: unknown }).keyward, "function");
    assert.equal(typeof (require("@keyward/sdk/hono") as { keyward: unknown }).keyward, "function");
    assert.equal(typeof (require("@keyward/sdk/fetch") as { withKeyward: unknown }).withKeyward, "function");
  });

  test("the error hierarchy is as documented", () => {
    assert.ok(esm.AuthError.prototype instanceof esm.HttpError);
    assert.ok(esm.RateLimitError.prototype instanceof esm.HttpError);
    assert.ok(esm.HttpError.prototype instanceof esm.KeywardError);
    assert.ok(esm.TimeoutError.prototype instanceof esm.ConnectionError);
    assert.ok(esm.ConnectionError.prototype instanceof esm.KeywardError);
  });

  test("the browser build is one self-contained module with nothing of Node", () => {
    const browser = readFileSync(new URL("../dist/browser.js", import.meta.url), "utf8");
    assert.doesNotMatch(browser, /\bfrom\s*["']/, "imports nothing");
    assert.doesNotMatch(browser, /\brequire\(|["']node:|\bprocess\.|\bBuffer\b/, "no Node built-in");
  });

  test(`the browser build is at most ${BROWSER_BUDGET_BYTES / 1024} KB min+gzip`, async () => {
    const { gzipped } = await browserSize();
    assert.ok(gzipped <= BROWSER_BUDGET_BYTES, `${gzipped} bytes`);
  });
});
