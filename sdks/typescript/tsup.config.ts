import { defineConfig } from "tsup";

export default defineConfig([
  {
    // Node and bundlers: ESM and CommonJS, with declarations for both.
    entry: {
      index: "src/index.ts",
      express: "src/express.ts",
      hono: "src/hono.ts",
      fetch: "src/fetch.ts",
    },
    format: ["esm", "cjs"],
    // Shared code lives in one chunk for both formats, so the middleware subpaths and the
    // main entry share one KeywardClient and one set of error classes (instanceof works).
    splitting: true,
    dts: true,
    target: "node20",
    platform: "neutral",
    sourcemap: true,
    // The middleware only names these frameworks' types; nothing of theirs is bundled.
    external: ["express", "hono"],
  },
  {
    // Browsers: one self-contained ES module, with no Node built-in to resolve.
    entry: { browser: "src/browser.ts" },
    format: ["esm"],
    dts: true,
    target: "es2020",
    platform: "browser",
    sourcemap: true,
  },
]);
