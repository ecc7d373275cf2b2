/**
 * One HTTP exchange with Keyward, with everything every endpoint shares: URL building,
 * credentials and signing, the timeout, safe retries, the token refresh of `identify`, and
 * turning answers into values or typed errors.
 */

import type { Credentials } from "./credentials.js";
import {
  AuthError,
  ConnectionError,
  KeywardError,
  TimeoutError,
  errorFromResponse,
  invalidSuccessResponse,
} from "./errors.js";
import { sha256Hex, type WorkspaceKeySigner } from "./signing.js";

/** Where a client connects when no `baseUrl` is given (as the Rust SDK and CLI). */
export const DEFAULT_BASE_URL = "http://127.0.0.1:8080";
/** How long one attempt may take, in milliseconds, when no `timeout` is given. */
export const DEFAULT_TIMEOUT_MS = 30_000;
/** How many times a failed GET is tried again when no `maxRetries` is given. */
export const DEFAULT_MAX_RETRIES = 2;

/** The `fetch` the client calls: the platform's, or one passed in (tests, instrumentation). */
export type FetchFunction = (input: string, init: RequestInit) => Promise<Response>;

export type HttpMethod = "GET" | "POST" | "PUT" | "PATCH" | "DELETE";

/** Query values; `undefined` and `null` are left out. */
export type QueryParameters = Record<string, string | number | boolean | null | undefined>;

export interface TransportOptions {
  baseUrl: string;
  credentials: Credentials;
  signer: WorkspaceKeySigner | undefined;
  timeoutMs: number;
  maxRetries: number;
  fetch: FetchFunction;
}

/**
 * How far ahead a request refused as `signature_replayed` may be re-signed: far enough that
 * another process's next seconds are unlikely, near enough for a client clock somewhat ahead
 * of the server's to stay within its ±300 s.
 */
const REPLAY_JUMP_SECONDS = 30;

const RETRY_BASE_MS = 100;
const RETRY_MAX_MS = 2_000;

/** Full jitter over an exponentially growing ceiling (the AWS architecture blog's advice). */
export function fullJitter(attempt: number, baseMs: number, maxMs: number): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.random() * ceiling;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Whether a failed GET may be tried again: the server was unreachable, or said 503. */
function isRetryable(error: unknown): boolean {
  if (error instanceof TimeoutError) return false; // a slow server is not helped by more load
  if (error instanceof ConnectionError) return true;
  return error instanceof KeywardError && "status" in error && error.status === 503;
}

function isRefusedAs(error: unknown, code: string): boolean {
  return error instanceof AuthError && error.code === code;
}

/**
 * Checks an id or slug before it becomes a path segment: `.` and `..` would send the call to
 * another resource once the URL is normalised, and an empty one to the collection.
 */
function segment(value: string): string {
  if (value === "" || value === "." || value === "..") {
    throw new TypeError(`${JSON.stringify(value)} is not a valid id or slug`);
  }
  return encodeURIComponent(value);
}

/** `"/apps/{slug}/keys"` with `{slug: "acme"}` → `"/apps/acme/keys"`, each value encoded. */
export function fillPath(template: string, parameters: Record<string, string> = {}): string {
  if (!template.includes("{")) return template;
  return template.replace(/\{([^}]+)\}/g, (_, name: string) => {
    const value = parameters[name];
    if (value === undefined) throw new TypeError(`missing path parameter ${name}`);
    return segment(value);
  });
}

export function normaliseBaseUrl(baseUrl: string): string {
  let url: URL;
  try {
    url = new URL(baseUrl);
  } catch {
    throw new TypeError("baseUrl must be an absolute http(s) URL");
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new TypeError("baseUrl must be an absolute http(s) URL");
  }
  url.search = "";
  url.hash = "";
  return url.href.replace(/\/+$/, "");
}

export class Transport {
  readonly baseUrl: string;
  readonly credentials: Credentials;
  readonly #signer: WorkspaceKeySigner | undefined;
  readonly #timeoutMs: number;
  readonly #maxRetries: number;
  readonly #fetch: FetchFunction;

  constructor(options: TransportOptions) {
    this.baseUrl = normaliseBaseUrl(options.baseUrl);
    this.credentials = options.credentials;
    this.#signer = options.signer;
    this.#timeoutMs = options.timeoutMs;
    this.#maxRetries = options.maxRetries;
    this.#fetch = options.fetch;
  }

  /** The full URL of a server path (`/api/v1/…`, `/healthz`) with a query. */
  url(path: string, query?: QueryParameters): string {
    if (query === undefined) return `${this.baseUrl}${path}`;
    const search = new URLSearchParams();
    for (const [name, value] of Object.entries(query ?? {})) {
      if (value !== undefined && value !== null) search.append(name, String(value));
    }
    const text = search.toString();
    return `${this.baseUrl}${path}${text ? `?${text}` : ""}`;
  }

  /**
   * Calls the API and returns the decoded answer. A GET that meets a 503 or cannot connect is
   * tried again with backoff; a write never is, since it may have taken effect. Two refusals
   * are made before anything happens, so any request is sent once more after them:
   * `token_expired`, after `identify`'s refresh; `signature_replayed`, signed afresh (another
   * process with the same workspace key sent the very same request in the same second).
   */
  async request<T>(method: HttpMethod, path: string, options: { query?: QueryParameters; body?: unknown } = {}): Promise<T> {
    const url = this.url(path, options.query);
    // The server answers 415 to any write that does not say it is JSON, body or not.
    const body = method === "GET" ? undefined : JSON.stringify(options.body ?? {});
    let refreshed = false;
    let signedAgain = false;
    for (let attempt = 0; ; attempt += 1) {
      const offered = this.credentials.token();
      const token = offered instanceof Promise ? await offered : offered;
      try {
        return (await this.#send(method, url, body, token, signedAgain)) as T;
      } catch (error) {
        if (!refreshed && token !== undefined && isRefusedAs(error, "token_expired")) {
          refreshed = true;
          if (await this.credentials.refreshExpiredToken(token)) continue;
        }
        if (!signedAgain && this.#signer && isRefusedAs(error, "signature_replayed")) {
          signedAgain = true;
          continue;
        }
        if (method === "GET" && attempt < this.#maxRetries && isRetryable(error)) {
          await delay(fullJitter(attempt, RETRY_BASE_MS, RETRY_MAX_MS));
          continue;
        }
        throw error;
      }
    }
  }

  async #send(
    method: HttpMethod,
    url: string,
    body: string | undefined,
    token: string | undefined,
    afterReplay: boolean,
  ): Promise<unknown> {
    const headers = this.credentials.headers(token);
    if (body !== undefined) headers["content-type"] = "application/json";
    if (this.#signer) {
      const parsed = new URL(url);
      const signed = { method, path: parsed.pathname, query: parsed.search.slice(1), bodySha256: await sha256Hex(body ?? "") };
      const skipSeconds = afterReplay ? 1 + Math.floor(Math.random() * REPLAY_JUMP_SECONDS) : 0;
      headers.authorization = await this.#signer.authorization(signed, undefined, skipSeconds);
    }
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), this.#timeoutMs);
    try {
      const init: RequestInit = { method, headers, signal: controller.signal };
      if (body !== undefined) init.body = body;
      const response = await this.#fetch(url, init);
      const text = await response.text();
      return decode(response, text);
    } catch (error) {
      if (error instanceof KeywardError) throw error;
      if (controller.signal.aborted) {
        throw new TimeoutError(`Keyward at ${origin(url)} did not answer within ${this.#timeoutMs} ms`, { cause: error });
      }
      throw new ConnectionError(`cannot reach Keyward at ${origin(url)}: ${reason(error)}`, { cause: error });
    } finally {
      clearTimeout(timer);
    }
  }
}

function decode(response: Response, text: string): unknown {
  if (!response.ok) throw errorFromResponse(response.status, response.headers, text);
  if (response.status === 204) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    throw invalidSuccessResponse(response.status, response.headers, text);
  }
}

/** Scheme, host and port only: the rest of a URL is the caller's and never goes in a message. */
function origin(url: string): string {
  return new URL(url).origin;
}

/** fetch's own message is only "fetch failed"; the reason (refused, reset, DNS) is its cause. */
function reason(error: unknown): string {
  const cause = (error as { cause?: { code?: unknown; message?: unknown } } | null)?.cause;
  if (typeof cause?.code === "string") return cause.code;
  if (typeof cause?.message === "string") return cause.message;
  return error instanceof Error ? error.message : String(error);
}
