/**
 * Reading the facts `POST /api/v1/verify-request` needs from an incoming request: a Fetch
 * `Request` (Hono, Next.js, Deno, Bun, workers) or a Node `IncomingMessage` (Express, Fastify,
 * `node:http`). Only the credential headers of SPEC §4.4 leave your service; a body is read
 * only when a workspace-key signature covers it.
 */

import type { PermissionQuery, VerifyRequestRequest } from "./api-types.js";
import { sha256Hex, type BodyBytes } from "./signing.js";

/** The headers that carry a credential (SPEC §4.4); no other header is sent to Keyward. */
export const CREDENTIAL_HEADERS = ["authorization", "x-api-key", "x-tenant-id"] as const;

/** The largest body read to check a workspace-key signature (the server's default limit). */
export const MAX_SIGNED_BODY_BYTES = 1024 * 1024;

/** The shape of a Node `IncomingMessage` this reads; Express's `req` is one. */
export interface NodeRequestLike {
  method?: string | undefined;
  /** The path and query, e.g. `/orders?page=2` (Express's `originalUrl` is preferred). */
  url?: string | undefined;
  originalUrl?: string | undefined;
  headers: Record<string, string | string[] | undefined>;
  /** The raw body, when something (e.g. `express.json({ verify })`) kept it. */
  rawBody?: Uint8Array | undefined;
  readableEnded?: boolean | undefined;
  [Symbol.asyncIterator]?(): AsyncIterator<unknown>;
}

/** A request to verify: a Fetch `Request` or a Node request. */
export type IncomingRequest = Request | NodeRequestLike;

export interface VerifyRequestOptions {
  /** A permission query every request must satisfy, e.g. `"read:orders AND (write:orders OR admin)"`. */
  permissions?: PermissionQuery | undefined;
  /** Credits this request spends (default 1). */
  creditsCost?: number | undefined;
  /**
   * The body's bytes, for a request signed with a workspace key whose body was already read
   * elsewhere. Otherwise the body is read (a Fetch request's clone; a Node request's stream,
   * which is then kept as `rawBody`).
   */
  body?: BodyBytes | undefined;
  /** Use this key instead of the request's credential headers (a middleware's `getKey`). */
  key?: string | undefined;
}

/** Thrown when a signed body is larger than {@link MAX_SIGNED_BODY_BYTES}. */
export class BodyTooLargeError extends Error {
  override name = "BodyTooLargeError";
}

export function isFetchRequest(request: IncomingRequest): request is Request {
  return typeof (request as Request).headers?.get === "function";
}

function nodeHeader(request: NodeRequestLike, name: string): string | undefined {
  const value = request.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** One header of either kind of request. */
export function headerOf(request: IncomingRequest, name: string): string | undefined {
  return isFetchRequest(request) ? (request.headers.get(name) ?? undefined) : nodeHeader(request, name);
}

const SIGNED = /^\s*KW-HMAC-SHA256\s/i;

function isSigned(authorization: string | undefined): boolean {
  return authorization !== undefined && SIGNED.test(authorization);
}

async function readNodeBody(request: NodeRequestLike): Promise<Uint8Array> {
  if (request.rawBody) return request.rawBody;
  if (!request[Symbol.asyncIterator] || request.readableEnded) return new Uint8Array();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of request as AsyncIterable<Uint8Array | string>) {
    const bytes = typeof chunk === "string" ? new TextEncoder().encode(chunk) : chunk;
    size += bytes.byteLength;
    if (size > MAX_SIGNED_BODY_BYTES) throw new BodyTooLargeError("the signed body is larger than 1 MiB");
    chunks.push(bytes);
  }
  const body = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    body.set(chunk, offset);
    offset += chunk.byteLength;
  }
  // Whoever reads the body next finds it here, as with `express.json({ verify })`.
  request.rawBody = body;
  return body;
}

async function readFetchBody(request: Request): Promise<Uint8Array> {
  const body = new Uint8Array(await request.clone().arrayBuffer());
  if (body.byteLength > MAX_SIGNED_BODY_BYTES) throw new BodyTooLargeError("the signed body is larger than 1 MiB");
  return body;
}

/** The `verify-request` body for `request`. */
export async function describeRequest(
  request: IncomingRequest,
  options: VerifyRequestOptions = {},
): Promise<VerifyRequestRequest> {
  let method: string;
  let target: string;
  if (isFetchRequest(request)) {
    const url = new URL(request.url);
    method = request.method;
    target = url.pathname + url.search;
  } else {
    method = request.method ?? "GET";
    target = request.originalUrl ?? request.url ?? "/";
  }
  const queryStart = target.indexOf("?");
  const path = queryStart === -1 ? target : target.slice(0, queryStart);
  const query = queryStart === -1 ? "" : target.slice(queryStart + 1);

  const headers: Record<string, string> = {};
  for (const name of CREDENTIAL_HEADERS) {
    const value = headerOf(request, name);
    if (value !== undefined) headers[name] = value;
  }
  if (options.key !== undefined) {
    delete headers.authorization;
    headers["x-api-key"] = options.key;
  }

  const described: VerifyRequestRequest = { method, path, headers };
  if (query) described.query = query;
  if (options.permissions !== undefined) described.permissions = options.permissions;
  if (options.creditsCost !== undefined) described.credits_cost = options.creditsCost;
  if (isSigned(headers.authorization)) {
    const body =
      options.body ?? (isFetchRequest(request) ? await readFetchBody(request) : await readNodeBody(request));
    described.body_sha256 = await sha256Hex(body);
  }
  return described;
}
