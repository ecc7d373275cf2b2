/**
 * The SDK and the server cannot disagree: the committed types (the REST API's and the
 * socket's messages alike) equal what the server's `/openapi.json` generates today, its
 * operation ids are unique, and every operation it serves has an SDK call (or a stated
 * reason not to).
 */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";

import { SDK_OPERATIONS } from "@keyward/sdk";

import { GENERATED_PATH, renderTypes, repeatedOperationIds } from "../scripts/openapi-types.js";
import { KeywardServer, skipReason } from "./support/keyward.js";

/** Operations the SDK does not wrap, and why. */
const NOT_WRAPPED: Record<string, string> = {
  websocket: "the sockets (KeywardWebSocket, KeywardAlertsWebSocket) speak GET /ws",
  metrics: "Prometheus text for scrapers, not an API call",
  // SPEC §4.9: GitHub posts its secret scanning reports here, authenticated by GitHub's own
  // ECDSA signature (no root key); an application has no reason to call it.
  github_report: "GitHub's secret scanning partner endpoint, called by GitHub, not by SDK users",
  redeem_portal_session: "called by Keyward's own portal page when a customer opens a link",
  end_portal_session: "called by Keyward's own portal page when a customer signs out",
};
/** The proxies' forward auth (SPEC §4.7): nginx, Traefik, Caddy call it, not applications. */
const isForwardAuth = (operationId: string): boolean => operationId.startsWith("forward_auth");

describe("the generated types against the server's OpenAPI document", { skip: skipReason() }, () => {
  let server: KeywardServer;
  let document: Record<string, unknown>;

  before(async () => {
    server = await KeywardServer.start();
    document = await server.openapi();
  });
  after(() => server?.stop());

  test("no operation id repeats (OpenAPI requires them unique; the generator refuses repeats)", () => {
    assert.deepEqual(repeatedOperationIds(document), {}, "operation ids used by more than one operation");
  });

  test("the socket's messages are among the document's schemas", () => {
    const schemas = (document.components as { schemas: Record<string, unknown> }).schemas;
    const missing = ["ServerMessage", "ClientMessage", "Event", "EventKey", "Session"].filter((name) => !(name in schemas));
    assert.deepEqual(missing, [], "socket schemas src/socket-types.ts derives its types from");
  });

  test("src/generated/openapi.ts is exactly what the server's /openapi.json generates", async () => {
    const committed = readFileSync(GENERATED_PATH, "utf8");
    const fresh = await renderTypes(document);
    if (committed !== fresh) {
      const committedLines = committed.split("\n");
      const freshLines = fresh.split("\n");
      const line = freshLines.findIndex((text, index) => text !== committedLines[index]);
      assert.fail(
        `the server's API changed: run \`npm run generate\` and update the SDK.\n` +
          `first difference at line ${line + 1}:\n  committed: ${committedLines[line]}\n  server:    ${freshLines[line]}`,
      );
    }
  });

  test("every operation the server serves has an SDK call", () => {
    const paths = document.paths as Record<string, Record<string, { operationId?: string }>>;
    const served = new Set<string>();
    for (const item of Object.values(paths)) {
      for (const operation of Object.values(item)) if (operation.operationId) served.add(operation.operationId);
    }
    const missing = [...served].filter(
      (id) => !SDK_OPERATIONS.includes(id as (typeof SDK_OPERATIONS)[number]) && !(id in NOT_WRAPPED) && !isForwardAuth(id),
    );
    assert.deepEqual(missing, [], "operations without an SDK call");
    const gone = SDK_OPERATIONS.filter((id) => !served.has(id));
    assert.deepEqual(gone, [], "SDK calls for operations the server no longer serves");
  });
});

describe("the generator", () => {
  test("refuses a document that repeats an operation id, naming it, rather than renaming it", async () => {
    const operation = { operationId: "forward_auth", responses: { "200": { description: "ok" } } };
    const document = {
      openapi: "3.1.0",
      info: { title: "t", version: "1" },
      paths: { "/auth": { get: operation, post: operation }, "/healthz": { get: { ...operation, operationId: "health" } } },
    };
    assert.deepEqual(repeatedOperationIds(document), { forward_auth: ["GET /auth", "POST /auth"] });
    await assert.rejects(renderTypes(document), /repeats operation ids[\s\S]*forward_auth: GET \/auth, POST \/auth/);
  });
});
