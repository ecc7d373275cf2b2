/**
 * The browser build of `@keyward/sdk`: the same client, errors and sockets, bundled into one
 * ES module with nothing to resolve and no Node built-in. Browsers have `fetch`, `WebSocket`
 * and WebCrypto (on HTTPS or localhost) of their own.
 */

export * from "./index.js";
