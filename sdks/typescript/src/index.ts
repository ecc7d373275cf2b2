/**
 * `@keyward/sdk`: the TypeScript client of Keyward, for Node 20+ and browsers, with no
 * runtime dependency beyond the platform's `fetch`, `WebSocket` and WebCrypto.
 *
 * Middleware lives in `@keyward/sdk/express`, `@keyward/sdk/hono` and `@keyward/sdk/fetch`.
 */

export * from "./api-types.js";
export {
  KeywardClient,
  ApiKeys,
  Apps,
  AuditLog,
  Demo,
  Environment,
  Gateway,
  Keys,
  MyKeys,
  Organizations,
  Portal,
  PublicKeys,
  RateLimitSchemes,
  RootKeys,
  SecretScanning,
  SigningKeys,
  Usage,
  Webhooks,
  WorkspaceKeys,
  SDK_OPERATIONS,
  type KeywardClientOptions,
} from "./client.js";
export type { CredentialOptions, RefreshUserToken, TokenSource } from "./credentials.js";
export {
  AuthError,
  ConnectionError,
  HttpError,
  KeywardError,
  RateLimitError,
  TimeoutError,
  type ErrorBody,
} from "./errors.js";
export {
  BodyTooLargeError,
  CREDENTIAL_HEADERS,
  type IncomingRequest,
  type NodeRequestLike,
  type VerifyRequestOptions,
} from "./gateway.js";
export { PageRequest, type Page } from "./pagination.js";
export { canonicalString, sha256Hex, WorkspaceKeySigner, type SignedRequest } from "./signing.js";
export {
  KeywardAlertsWebSocket,
  KeywardWebSocket,
  type SocketOptions,
  type WebSocketConstructor,
  type WebSocketEventLike,
  type WebSocketLike,
} from "./socket.js";
export {
  CLOSE_AUTH_FAILED,
  CLOSE_TOKEN_EXPIRED,
  type EventKey,
  type KeywardEvent,
  type Session,
  type SocketEvent,
  type SocketEventType,
} from "./socket-types.js";
export { DEFAULT_BASE_URL, DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT_MS, type FetchFunction } from "./transport.js";
