/**
 * The messages of `GET /ws` (SPEC §4.5). The wire types come from the server's OpenAPI
 * document (`components.schemas`, generated into `src/generated/openapi.ts`), so the drift
 * test covers the socket as it covers the REST API; what the SDK adds on top (the events a
 * socket reports, the close codes) is written here.
 */

import type { components } from "./generated/openapi.js";
import type { ErrorBody } from "./errors.js";

type Schemas = components["schemas"];

/** The close code of a refused credential: the client stops for good. */
export const CLOSE_AUTH_FAILED = 4001;
/** The close code of an expired end-user token: the client reconnects with a fresh one. */
export const CLOSE_TOKEN_EXPIRED = 4002;

/** Who the socket speaks for, as the server's welcome says. */
export type Session = Schemas["Session"];

/** The key an event is about: its metadata, never its secret (`KeywardEvent.key`, when present). */
export type EventKey = Schemas["EventKey"];

/**
 * An event (`key.created`, …, `key.leaked`) or an alert (`rate_limit.exceeded`, …,
 * `webhook.disabled`); its `id` (`evt_…`) is where a socket resumes. `key` is absent when the
 * event is about no API key: `webhook.disabled` (its endpoint is in `details`), and
 * `key.leaked` about a root key.
 */
export type KeywardEvent = Schemas["Event"];

/** What the server sends. */
export type ServerMessage = Schemas["ServerMessage"];

/** What a client sends: `subscribe` or `unsubscribe` to a channel. */
export type ClientMessage = Schemas["ClientMessage"];

/** What a socket reports, in order: the TypeScript form of the Rust SDK's `SocketEvent`. */
export type SocketEvent =
  /** A connection was accepted (also after each reconnect). */
  | { type: "connected"; session: Session }
  /** An event (on a KeywardWebSocket) or an alert (on a KeywardAlertsWebSocket). */
  | { type: "event"; event: KeywardEvent }
  /** The server dropped this many events because this consumer fell behind. */
  | { type: "lagged"; missed: number }
  /** The credential was refused; a final `disconnected` follows. */
  | { type: "auth_failed"; error: ErrorBody }
  /** The token expired; the socket reconnects at once with a fresh one. */
  | { type: "token_expired" }
  /** The connection ended; `reconnecting: false` is the end of the socket. */
  | { type: "disconnected"; reconnecting: boolean; reason: string };

export type SocketEventType = SocketEvent["type"];
