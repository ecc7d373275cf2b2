/**
 * `npm run generate`: starts the server (KEYWARD_BIN, or the repository's build), reads its
 * `/openapi.json`, and writes the API's types to `src/generated/openapi.ts`.
 */

import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

import { KeywardServer } from "../test/support/keyward.js";
import { GENERATED_PATH, renderTypes } from "./openapi-types.js";

const server = await KeywardServer.start();
try {
  writeFileSync(GENERATED_PATH, await renderTypes(await server.openapi()));
  console.log(`wrote ${fileURLToPath(GENERATED_PATH)}`);
} finally {
  await server.stop();
}
