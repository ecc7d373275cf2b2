/**
 * `KeywardWebSocket` and `KeywardAlertsWebSocket`: the live streams of `GET /ws` (SPEC §4.5),
 * reconnecting by themselves and resuming where they left off, exactly as the Rust SDK's
 * `EventsSocket` and `AlertsSocket` do (crates/keyward-sdk/src/socket.rs):
 *
 * - The credential is the client's: a root key, or a public key with the end user's token.
 *   `getJwt`, when given, is called before every connection and wins over `jwt`.
 * - Reconnects back off exponentially with full jitter, and resume after the last event
 *   received (`since`), so a disconnection loses and repeats nothing within the server's
 *   retention window. The backoff resets only when the server *welcomes* a connection
 *   (`connected`): a socket the server refuses in-band after the upgrade keeps backing off.
 * - After `auth_failed` (or close code 4001) the socket reports `auth_failed`, then
 *   `disconnected` with `reconnecting: false`, and never connects again.
 * - After `token_expired` (or close code 4002) it reconnects at once with a fresh token
 *   (`getJwt`, or `identify`'s `refreshUserToken`); a token that expires again at once backs
 *   off instead, so a fixed expired token cannot become a reconnect loop.
 */

import { Credentials, type CredentialOptions } from "./credentials.js";
import { DEFAULT_BASE_URL, fullJitter, normaliseBaseUrl } from "./transport.js";
import {
  CLOSE_AUTH_FAILED,
  CLOSE_TOKEN_EXPIRED,
  type ClientMessage,
  type ServerMessage,
  type SocketEvent,
  type SocketEventType,
} from "./socket-types.js";

/**
 * What the sockets need of a WebSocket: the browser's, Node 22's global one, or `ws`'s (pass
 * `WebSocket` from `ws` on Node 20).
 */
export interface WebSocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: "open" | "message" | "close" | "error", listener: (event: WebSocketEventLike) => void): void;
  /** `ws` reports the server's pings here; browsers answer them without telling anyone. */
  on?(event: "ping", listener: () => void): unknown;
}

/** What the socket reads of the events a WebSocket fires, whichever platform fired them. */
export interface WebSocketEventLike {
  type?: string;
  /** `message`: the text. */
  data?: unknown;
  /** `close`: the close code and reason. */
  code?: number;
  reason?: string;
  /** `error`, from `ws`: what went wrong. */
  message?: unknown;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface SocketOptions extends CredentialOptions {
  /** The server's address, e.g. `https://keyward.example.com`. */
  baseUrl?: string | undefined;
  /** The WebSocket class to use; the platform's global one when absent. */
  WebSocket?: WebSocketConstructor | undefined;
  /** Resume after this event id (`evt_…`) on the first connection too. */
  since?: string | undefined;
  /** The first reconnect waits up to this long; each failure doubles it. Default 250 ms. */
  minBackoffMs?: number | undefined;
  /** The longest wait between two attempts. Default 30 s. */
  maxBackoffMs?: number | undefined;
  /**
   * How long connecting may take, and how long a connection may stay silent when the
   * WebSocket reports pings (the server pings every 20 s). Default 60 s.
   */
  idleTimeoutMs?: number | undefined;
}

/** A connection ended by `token_expired` sooner than this backs off instead of reconnecting at once. */
const QUICK_EXPIRY_MS = 500;

/** How one connection ended. */
type Ended =
  | { kind: "finished" } // never again: refused credential, or closed by the caller
  | { kind: "now"; expiredToken: string | undefined } // reconnect at once (token expired)
  | { kind: "later"; reason: string }; // reconnect after a backoff

type Listener<K extends SocketEventType> = (event: Extract<SocketEvent, { type: K }>) => void;

/** The parts of a client a socket shares: where the server is, and who is calling. */
interface SocketSource {
  baseUrl: string;
  credentials: Credentials;
}

abstract class KeywardSocket implements AsyncIterable<SocketEvent> {
  readonly #channel: "events" | "alerts";
  readonly #source: SocketSource;
  readonly #WebSocket: WebSocketConstructor;
  readonly #minBackoffMs: number;
  readonly #maxBackoffMs: number;
  readonly #idleTimeoutMs: number;
  readonly #listeners = new Map<SocketEventType, Set<(event: SocketEvent) => void>>();
  /** The last event received: where the next connection resumes. */
  #since: string | undefined;
  #socket: WebSocketLike | undefined;
  /** Set once the final `disconnected` went out: nothing is reported after it. */
  #ended = false;
  #wakeUp: (() => void) | undefined;

  constructor(channel: "events" | "alerts", options: SocketOptions, source?: SocketSource) {
    this.#channel = channel;
    this.#source = source ?? {
      baseUrl: normaliseBaseUrl(options.baseUrl ?? DEFAULT_BASE_URL),
      credentials: new Credentials(options),
    };
    const WebSocketClass = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WebSocketClass) {
      throw new TypeError("no WebSocket here: pass one, e.g. `new KeywardWebSocket({ …, WebSocket })` with WebSocket from the `ws` package");
    }
    this.#WebSocket = WebSocketClass;
    this.#minBackoffMs = options.minBackoffMs ?? 250;
    this.#maxBackoffMs = options.maxBackoffMs ?? 30_000;
    this.#idleTimeoutMs = options.idleTimeoutMs ?? 60_000;
    this.#since = options.since;
    // Started after the constructor returns, so listeners added right away miss nothing.
    queueMicrotask(() => void this.#run());
  }

  /** The id of the last event received (`evt_…`), where a reconnect resumes. */
  get lastEventId(): string | undefined {
    return this.#since;
  }

  /** Whether the socket has ended for good (refused, or closed by {@link close}). */
  get ended(): boolean {
    return this.#ended;
  }

  on<K extends SocketEventType>(type: K, listener: Listener<K>): this {
    let set = this.#listeners.get(type);
    if (!set) this.#listeners.set(type, (set = new Set()));
    set.add(listener as (event: SocketEvent) => void);
    return this;
  }

  off<K extends SocketEventType>(type: K, listener: Listener<K>): this {
    this.#listeners.get(type)?.delete(listener as (event: SocketEvent) => void);
    return this;
  }

  /**
   * Ends the socket: closes the connection cleanly (1000), cancels any reconnect, and reports
   * the final `disconnected`.
   */
  close(): void {
    if (this.#ended) return;
    this.#finish("closed by the client");
    this.#socket?.close(1000, "client closing");
    this.#wakeUp?.();
  }

  /**
   * Every report, in order, until the socket ends; leaving the loop early closes the socket,
   * as dropping the Rust stream does.
   */
  async *[Symbol.asyncIterator](): AsyncGenerator<SocketEvent, void, undefined> {
    const queue: SocketEvent[] = [];
    let wake: (() => void) | undefined;
    const push = (event: SocketEvent): void => {
      queue.push(event);
      wake?.();
    };
    const types: SocketEventType[] = ["connected", "event", "lagged", "auth_failed", "token_expired", "disconnected"];
    for (const type of types) this.on(type, push);
    try {
      for (;;) {
        const next = queue.shift();
        if (next === undefined) {
          if (this.#ended) return;
          await new Promise<void>((resolve) => (wake = resolve));
          wake = undefined;
          continue;
        }
        yield next;
        if (next.type === "disconnected" && !next.reconnecting) return;
      }
    } finally {
      for (const type of types) this.off(type, push);
      this.close();
    }
  }

  #emit(event: SocketEvent): void {
    if (this.#ended) return;
    for (const listener of [...(this.#listeners.get(event.type) ?? [])]) {
      try {
        listener(event);
      } catch (error) {
        // A listener's bug is its own: reported as uncaught, it must not stop the socket.
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }

  /** Reports the end, once, and stops everything after it. */
  #finish(reason: string): void {
    this.#emit({ type: "disconnected", reconnecting: false, reason });
    this.#ended = true;
  }

  async #run(): Promise<void> {
    let failures = 0;
    while (!this.#ended) {
      const started = Date.now();
      const { ended, accepted } = await this.#connectOnce();
      if (this.#ended) return;
      // Only the server's welcome proves the credential works: an upgrade alone does not.
      if (accepted) failures = 0;
      let outcome = ended;
      if (outcome.kind === "now" && Date.now() - started < QUICK_EXPIRY_MS) {
        outcome = { kind: "later", reason: "the token expired again at once" };
      }
      if (outcome.kind === "finished") return;
      if (outcome.kind === "now") {
        if (outcome.expiredToken !== undefined) {
          await this.#source.credentials.refreshExpiredToken(outcome.expiredToken);
        }
        continue;
      }
      this.#emit({ type: "disconnected", reconnecting: true, reason: outcome.reason });
      const wait = fullJitter(failures, this.#minBackoffMs, this.#maxBackoffMs);
      failures += 1;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, wait);
        this.#wakeUp = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wakeUp = undefined;
    }
  }

  #url(token: string | undefined): string {
    const url = new URL(`${this.#source.baseUrl}/ws`);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const parameters = this.#source.credentials.socketParameters(token);
    if (this.#since !== undefined) parameters.since = this.#since;
    for (const [name, value] of Object.entries(parameters)) url.searchParams.set(name, value);
    return url.href;
  }

  /** One connection, until it ends; `accepted` says whether the server welcomed it. */
  async #connectOnce(): Promise<{ ended: Ended; accepted: boolean }> {
    let token: string | undefined;
    try {
      token = await this.#source.credentials.token();
    } catch {
      return { ended: { kind: "later", reason: "getJwt failed to provide a token" }, accepted: false };
    }
    if (this.#ended) return { ended: { kind: "finished" }, accepted: false };
    let socket: WebSocketLike;
    try {
      socket = new this.#WebSocket(this.#url(token));
    } catch {
      // The URL carries the credential: the constructor's message is not repeated.
      return { ended: { kind: "later", reason: "the WebSocket could not be created" }, accepted: false };
    }
    this.#socket = socket;
    return new Promise((resolve) => {
      let accepted = false;
      let settled = false;
      let silence: ReturnType<typeof setTimeout> | undefined;
      const end = (ended: Ended, closeCode?: number): void => {
        if (settled) return;
        settled = true;
        clearTimeout(silence);
        this.#socket = undefined;
        if (closeCode !== undefined) socket.close(closeCode);
        resolve({ ended, accepted });
      };
      // Until `open`, the timer bounds connecting; after it, silence (where pings are seen).
      const watch = (reason: string): void => {
        clearTimeout(silence);
        silence = setTimeout(() => end({ kind: "later", reason }, 1000), this.#idleTimeoutMs);
      };
      const pingsVisible = typeof socket.on === "function";
      watch("connecting timed out");
      socket.on?.("ping", () => watch("the server went silent"));

      socket.addEventListener("open", () => {
        if (pingsVisible) watch("the server went silent");
        else clearTimeout(silence);
        const subscribe: ClientMessage = { type: "subscribe", channel: this.#channel };
        socket.send(JSON.stringify(subscribe));
      });
      socket.addEventListener("message", (event) => {
        if (pingsVisible) watch("the server went silent");
        let message: ServerMessage;
        try {
          message = JSON.parse(String(event.data)) as ServerMessage;
        } catch {
          return end({ kind: "later", reason: "the server sent a message that is not JSON" }, 1000);
        }
        switch (message.type) {
          case "connected":
            accepted = true;
            return this.#emit({ type: "connected", session: message.session });
          case "event":
            this.#since = message.event.id;
            return this.#emit({ type: "event", event: message.event });
          case "lagged":
            return this.#emit({ type: "lagged", missed: message.missed });
          case "auth_failed":
            this.#emit({ type: "auth_failed", error: message.error });
            this.#finish("authentication failed");
            return end({ kind: "finished" }, 1000);
          case "token_expired":
            this.#emit({ type: "token_expired" });
            return end({ kind: "now", expiredToken: token }, 1000);
          default:
            return; // subscribed, unsubscribed, error: nothing for the consumer
        }
      });
      socket.addEventListener("close", (event) => {
        if (event.code === CLOSE_AUTH_FAILED) {
          this.#finish("authentication failed");
          return end({ kind: "finished" });
        }
        if (event.code === CLOSE_TOKEN_EXPIRED) return end({ kind: "now", expiredToken: token });
        const reason = event.reason ? `closed (${event.code}): ${event.reason}` : `closed (${event.code})`;
        return end({ kind: "later", reason });
      });
      socket.addEventListener("error", (event) => {
        // `ws` says what went wrong ("Unexpected server response: 503"); browsers say nothing.
        // The URL carries the credential, so a message that quotes it is blotted.
        const detail =
          typeof event.message === "string" ? `: ${this.#source.credentials.redact(event.message, token)}` : "";
        end({ kind: "later", reason: `connection error${detail}` });
      });
    });
  }
}

/** Key events: `key.created`, `key.updated`, `key.rotated`, `key.revoked`, `key.deleted`, `key.expired`, `key.leaked`. */
export class KeywardWebSocket extends KeywardSocket {
  /** `source` is for `KeywardClient.events()`, which shares its credentials; leave it out. */
  constructor(options: SocketOptions, source?: SocketSource) {
    super("events", options, source);
  }
}

/** Alerts: `rate_limit.exceeded`, `credits.low`, `credits.exhausted`, `key.expiring`, `webhook.disabled`. */
export class KeywardAlertsWebSocket extends KeywardSocket {
  /** `source` is for `KeywardClient.alerts()`, which shares its credentials; leave it out. */
  constructor(options: SocketOptions, source?: SocketSource) {
    super("alerts", options, source);
  }
}
