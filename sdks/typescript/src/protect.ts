/**
 * What the Express, Hono and Fetch middleware share: one decision per request, made by
 * Keyward's `verify-request`, and the answer to give when the request is refused. The
 * adapters only read their framework's request and write its response.
 *
 * The middleware fails closed: a request is let through only on a `valid` verdict. When
 * Keyward cannot be asked (unreachable, timed out, misconfigured root key, 5xx), the request
 * gets 503 and the handler never runs.
 */

import type { PermissionQuery, VerifyKeyResponse } from "./api-types.js";
import { KeywardClient } from "./client.js";
import type { ErrorBody } from "./errors.js";
import { HttpError } from "./errors.js";
import { BodyTooLargeError, describeRequest, headerOf, type IncomingRequest } from "./gateway.js";

/** The verdict on a request the middleware let through: who made it, with what. */
export type KeywardIdentity = VerifyKeyResponse & { valid: true };

/** A value, or a function of the request that gives it. */
export type PerRequest<Req, V> = V | ((request: Req) => V);

export interface ProtectOptions<Req> {
  /**
   * The client that asks Keyward: a root key with the `verify` scope (or a workspace key).
   * Alternatively give `rootKey` (and `baseUrl`) and one is made.
   */
  client?: KeywardClient | undefined;
  rootKey?: string | undefined;
  baseUrl?: string | undefined;
  /** A permission query the credential must satisfy, e.g. `"read:orders OR admin"`. */
  permissions?: PerRequest<Req, PermissionQuery | undefined> | undefined;
  /** Credits the request spends (default 1). */
  creditsCost?: PerRequest<Req, number | undefined> | undefined;
  /**
   * Where the key is, when not in the usual headers (`Authorization: Bearer`, `X-API-Key`):
   * e.g. a query parameter or a cookie. `undefined` means the request has none.
   */
  getKey?: ((request: Req) => string | undefined | Promise<string | undefined>) | undefined;
}

/** An answer the middleware gives instead of calling the handler. */
export interface Refusal {
  status: number;
  headers: Record<string, string>;
  body: { error: ErrorBody };
}

export type Decision =
  | { kind: "allowed"; identity: KeywardIdentity }
  /** Keyward refused the credential (or there was none): `handleInvalidKey` may answer. */
  | { kind: "refused"; refusal: Refusal; verdict: VerifyKeyResponse }
  /** Keyward could not be asked: the refusal is a 503, and `onError` may answer. */
  | { kind: "unavailable"; refusal: Refusal; error: unknown }
  /** A signed body too large to digest: 413. */
  | { kind: "too_large"; refusal: Refusal };

const TYPE_BY_STATUS: Record<number, string> = {
  401: "AUTHENTICATION_ERROR",
  403: "PERMISSION_ERROR",
  413: "PAYLOAD_TOO_LARGE",
  429: "RATE_LIMIT_ERROR",
  503: "SERVICE_UNAVAILABLE",
};

/** SPEC §3's code and sentence for each refused verdict, as the server's forward auth answers. */
const REFUSALS: Record<string, [code: string, message: string]> = {
  INVALID_KEY: ["invalid_api_key", "Invalid or missing API key"],
  KEY_REVOKED: ["key_revoked", "This API key has been revoked"],
  KEY_DISABLED: ["key_disabled", "This API key is disabled"],
  KEY_EXPIRED: ["key_expired", "This API key has expired"],
  INSUFFICIENT_PERMISSIONS: ["insufficient_permissions", "This credential lacks the permissions this route requires"],
  TENANT_MISMATCH: ["tenant_mismatch", "The token is for another tenant than the request names"],
  RATE_LIMITED: ["rate_limited", "Too many requests; retry after the time in `Retry-After`"],
  USAGE_EXCEEDED: ["usage_exceeded", "This key has no credits left for this request"],
};

/**
 * How long a key refused for credits is told to wait: SPEC §3 gives every 429 a
 * `Retry-After`, and verify-request does not say when credits refill (the server's forward
 * auth uses the same day when nothing refills them).
 */
const USAGE_EXCEEDED_RETRY_AFTER_SECONDS = 86_400;

export function refusal(status: number, code: string, message: string, requestId = "", headers: Record<string, string> = {}): Refusal {
  const type = TYPE_BY_STATUS[status] ?? "INTERNAL_ERROR";
  const all: Record<string, string> = { "content-type": "application/json", ...headers };
  // RFC 9110 asks every 401 for a challenge, as the server's own 401s carry.
  if (status === 401) all["www-authenticate"] = "Bearer";
  return { status, headers: all, body: { error: { type, code, message, request_id: requestId } } };
}

/** The answer to a refused verdict: its own status, in Keyward's envelope. */
export function refusalFor(verdict: VerifyKeyResponse): Refusal {
  const status = [401, 403, 429].includes(verdict.status) ? verdict.status : 401;
  const [code, message] = REFUSALS[verdict.code] ?? REFUSALS.INVALID_KEY!;
  const headers: Record<string, string> = {};
  if (status === 429) headers["retry-after"] = String(retryAfterSeconds(verdict));
  // A more precise reason from the server (e.g. `token_expired` for a JWT) wins.
  return refusal(status, verdict.reason ?? code, message, "", headers);
}

function retryAfterSeconds(verdict: VerifyKeyResponse): number {
  if (verdict.code !== "RATE_LIMITED") return USAGE_EXCEEDED_RETRY_AFTER_SECONDS;
  const resetAt = verdict.rate_limit ? Date.parse(verdict.rate_limit.reset_at) : Number.NaN;
  return Number.isNaN(resetAt) ? 1 : Math.max(1, Math.ceil((resetAt - Date.now()) / 1000));
}

function resolve<Req, V>(value: PerRequest<Req, V> | undefined, request: Req): V | undefined {
  return typeof value === "function" ? (value as (request: Req) => V)(request) : value;
}

/** The client the options name, made once per middleware. */
export function clientOf<Req>(options: ProtectOptions<Req>): KeywardClient {
  if (options.client) return options.client;
  if (!options.rootKey) throw new TypeError("Keyward middleware needs `client` or `rootKey`");
  return new KeywardClient({ apiKey: options.rootKey, baseUrl: options.baseUrl });
}

/**
 * Decides one request. `framework` is what the options' callbacks receive (Express's `req`,
 * Hono's context); `incoming` is the request itself.
 */
export async function decide<Req>(
  client: KeywardClient,
  options: ProtectOptions<Req>,
  framework: Req,
  incoming: IncomingRequest,
): Promise<Decision> {
  try {
    const key = options.getKey ? await options.getKey(framework) : undefined;
    const presented = options.getKey ? key !== undefined : hasCredential(incoming);
    if (!presented) {
      // Nothing to verify: no need to ask Keyward to say so.
      const verdict: VerifyKeyResponse = { valid: false, code: "INVALID_KEY", status: 401 };
      return { kind: "refused", refusal: refusalFor(verdict), verdict };
    }
    const described = await describeRequest(incoming, {
      permissions: resolve(options.permissions, framework),
      creditsCost: resolve(options.creditsCost, framework),
      key,
    });
    const verdict = await client.gateway.verifyRequest(described);
    if (verdict.valid) return { kind: "allowed", identity: verdict as KeywardIdentity };
    return { kind: "refused", refusal: refusalFor(verdict), verdict };
  } catch (error) {
    if (error instanceof BodyTooLargeError) {
      const answer = refusal(413, "payload_too_large", "The request body is larger than a signed request may be");
      return { kind: "too_large", refusal: answer };
    }
    return { kind: "unavailable", refusal: unavailable(error), error };
  }
}

/** Keyward could not be asked: a retryable 503, never the handler. */
export function unavailable(error: unknown): Refusal {
  const requestId = error instanceof HttpError ? error.requestId : "";
  return refusal(
    503,
    "verification_unavailable",
    "The credential could not be verified right now; try again shortly",
    requestId,
    { "retry-after": "1" },
  );
}

function hasCredential(request: IncomingRequest): boolean {
  return headerOf(request, "authorization") !== undefined || headerOf(request, "x-api-key") !== undefined;
}

/** A refusal as a Fetch `Response`. */
export function toResponse(answer: Refusal): Response {
  return new Response(JSON.stringify(answer.body), { status: answer.status, headers: answer.headers });
}
