/**
 * Everything a call can fail with. Every class derives from {@link KeywardError}; none ever
 * carries an API key, a workspace secret or a token in its message or fields.
 *
 * ```
 * KeywardError
 * ├── HttpError            the server answered with an error (status, type, code, requestId)
 * │   ├── AuthError        401 or 403: missing, invalid, revoked or under-scoped credential
 * │   └── RateLimitError   429, with retryAfter (seconds) when the server said
 * └── ConnectionError      the server could not be reached
 *     └── TimeoutError     … or did not answer within the timeout
 * ```
 */

/** The `error` object of Keyward's envelope (SPEC §3). */
export interface ErrorBody {
  type: string;
  code: string;
  message: string;
  request_id: string;
}

/** The base class: `catch (e) { if (e instanceof KeywardError) … }` catches every SDK error. */
export class KeywardError extends Error {
  override name = "KeywardError";
}

/** An error answer from the server, with its envelope's fields. */
export class HttpError extends KeywardError {
  override name = "HttpError";
  /** The HTTP status, e.g. 404. */
  readonly status: number;
  /** The envelope's `type`, e.g. `NOT_FOUND_ERROR`. */
  readonly type: string;
  /** A stable snake_case reason, e.g. `key_not_found`. */
  readonly code: string;
  /** The `req_…` id to quote when asking about this call (empty if the server gave none). */
  readonly requestId: string;

  constructor(status: number, body: ErrorBody, options?: ErrorOptions) {
    super(describe(status, body), options);
    this.status = status;
    this.type = body.type;
    this.code = body.code;
    this.requestId = body.request_id;
  }
}

/** 401 or 403: the credential is missing, invalid, revoked, disabled, expired or lacks a scope. */
export class AuthError extends HttpError {
  override name = "AuthError";
}

/** 429: too many calls. */
export class RateLimitError extends HttpError {
  override name = "RateLimitError";
  /** Seconds to wait, from `Retry-After` (undefined when the answer had none readable). */
  readonly retryAfter: number | undefined;

  constructor(status: number, body: ErrorBody, retryAfter: number | undefined, options?: ErrorOptions) {
    super(status, body, options);
    this.retryAfter = retryAfter;
  }
}

/** The server could not be reached: refused, reset, DNS failure, TLS failure. */
export class ConnectionError extends KeywardError {
  override name = "ConnectionError";
}

/** The server did not answer within the client's `timeout`. A kind of {@link ConnectionError}. */
export class TimeoutError extends ConnectionError {
  override name = "TimeoutError";
}

function describe(status: number, body: ErrorBody): string {
  const request = body.request_id ? `, request ${body.request_id}` : "";
  return `${body.code}: ${body.message} (HTTP ${status} ${body.type}${request})`;
}

/** The envelope `type` SPEC §3 gives each status, for answers that came without an envelope. */
function typeForStatus(status: number): string {
  switch (status) {
    case 400:
    case 422:
      return "VALIDATION_ERROR";
    case 401:
      return "AUTHENTICATION_ERROR";
    case 403:
      return "PERMISSION_ERROR";
    case 404:
      return "NOT_FOUND_ERROR";
    case 409:
      return "CONFLICT_ERROR";
    case 413:
      return "PAYLOAD_TOO_LARGE";
    case 415:
      return "UNSUPPORTED_MEDIA_TYPE";
    case 429:
      return "RATE_LIMIT_ERROR";
    case 503:
      return "SERVICE_UNAVAILABLE";
    default:
      return status >= 200 && status < 300 ? "INVALID_RESPONSE" : "INTERNAL_ERROR";
  }
}

function isErrorBody(value: unknown): value is ErrorBody {
  if (typeof value !== "object" || value === null) return false;
  const body = value as Record<string, unknown>;
  return (
    typeof body.type === "string" &&
    typeof body.code === "string" &&
    typeof body.message === "string"
  );
}

/** The `error` object of an envelope, or undefined when `text` is no envelope. */
export function parseEnvelope(text: string): ErrorBody | undefined {
  try {
    const parsed: unknown = JSON.parse(text);
    const error = (parsed as { error?: unknown } | null)?.error;
    if (!isErrorBody(error)) return undefined;
    return { ...error, request_id: typeof error.request_id === "string" ? error.request_id : "" };
  } catch {
    return undefined;
  }
}

/** `Retry-After` as whole seconds; an HTTP date is turned into seconds from now. */
export function parseRetryAfter(value: string | null | undefined): number | undefined {
  if (value == null || value.trim() === "") return undefined;
  const seconds = Number(value.trim());
  if (Number.isFinite(seconds) && seconds >= 0) return Math.ceil(seconds);
  const date = Date.parse(value);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, Math.ceil((date - Date.now()) / 1000));
}

/**
 * The error for a non-2xx answer. The envelope is used when there is one; a bare answer (a
 * proxy's HTML 502, an empty 429) still becomes the right class, with a `code` that says the
 * envelope was missing.
 */
export function errorFromResponse(
  status: number,
  headers: Headers,
  text: string,
): HttpError {
  const body: ErrorBody = parseEnvelope(text) ?? {
    type: typeForStatus(status),
    code: "unexpected_response",
    message: `The server answered HTTP ${status} without Keyward's error envelope (${summarise(headers, text)})`,
    request_id: "",
  };
  if (!body.request_id) body.request_id = headers.get("x-request-id") ?? "";
  if (status === 429) {
    return new RateLimitError(status, body, parseRetryAfter(headers.get("retry-after")));
  }
  if (status === 401 || status === 403) return new AuthError(status, body);
  return new HttpError(status, body);
}

/** A 2xx answer whose body is not the JSON the API documents. */
export function invalidSuccessResponse(status: number, headers: Headers, text: string): HttpError {
  return new HttpError(status, {
    type: "INVALID_RESPONSE",
    code: "invalid_json",
    message: `The server answered HTTP ${status} with a body that is not JSON (${summarise(headers, text)})`,
    request_id: headers.get("x-request-id") ?? "",
  });
}

/** What came instead of JSON, for a person; never the body itself, which could echo anything. */
function summarise(headers: Headers, text: string): string {
  const type = headers.get("content-type") ?? "no content type";
  return text.length === 0 ? `${type}, empty body` : `${type}, ${text.length} characters`;
}
