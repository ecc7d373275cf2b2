/**
 * `npm run size`: the browser entry's size as a browser app ships it, minified by esbuild and
 * gzipped (level 9). The budget is 12 KB; the package test fails above it.
 */

import { gzipSync } from "node:zlib";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";

export const BROWSER_BUDGET_BYTES = 12 * 1024;

export async function browserSize(): Promise<{ minified: number; gzipped: number }> {
  const result = await build({
    entryPoints: [fileURLToPath(new URL("../dist/browser.js", import.meta.url))],
    bundle: true,
    minify: true,
    format: "esm",
    platform: "browser",
    target: "es2020",
    write: false,
    logLevel: "silent",
  });
  const code = result.outputFiles[0]!.contents;
  return { minified: code.byteLength, gzipped: gzipSync(code, { level: 9 }).byteLength };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { minified, gzipped } = await browserSize();
  const kb = (bytes: number): string => `${(bytes / 1024).toFixed(2)} KB`;
  console.log(`browser entry (dist/browser.js): ${kb(minified)} minified, ${kb(gzipped)} min+gzip (budget ${kb(BROWSER_BUDGET_BYTES)})`);
  if (gzipped > BROWSER_BUDGET_BYTES) process.exit(1);
}
