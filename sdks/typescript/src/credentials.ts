/**
 * The credentials a client carries (SPEC §4.4) and how each is sent: over REST as headers,
 * over the socket as URL parameters. Secrets live in private fields, so neither
 * `console.log(client)` nor `JSON.stringify(client)` shows them.
 */

import { AuthError } from "./errors.js";

/** Returns the end user's current token (a JWT or a signed user token). */
export type TokenSource = () => string | undefined | Promise<string | undefined>;

/**
 * Called when the server says the user's token expired: returns a fresh one. `payload` is the
 * old token's decoded claims (not verified: it is the caller's own token), or `undefined` when
 * the token is no JWT.
 */
export type RefreshUserToken = (
  oldToken: string,
  payload: Record<string, unknown> | undefined,
) => string | Promise<string>;

/** The credentials of a client or a socket. */
export interface CredentialOptions {
  /** A root key (`sk_…`), app key, or a public key (`pk_jwt_…`, `pk_live_…`, `pk_test_…`). */
  apiKey?: string | undefined;
  /** The end user's token, captured now. */
  jwt?: string | undefined;
  /** Called before every request and every socket connection; wins over `jwt`. */
  getJwt?: TokenSource | undefined;
  /** The tenant to act as, sent as `X-Tenant-Id` (REST) or `tenant=` (socket). */
  tenant?: string | undefined;
}

interface Identity {
  userId: string;
  token: string;
  refresh: RefreshUserToken | undefined;
  /** The refresh under way, shared by every request that met the same expired token. */
  refreshing: Promise<string> | undefined;
}

/** Public keys travel in `X-API-Key`, with the end user's token as the bearer. */
export function isPublicKey(key: string): boolean {
  return key.startsWith("pk_");
}

/** A JWT's claims, unverified; `undefined` for anything that is not a JWT. */
export function decodeJwtPayload(token: string): Record<string, unknown> | undefined {
  const part = token.split(".")[1];
  if (part === undefined) return undefined;
  try {
    const base64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(base64.padEnd(base64.length + ((4 - (base64.length % 4)) % 4), "="));
    const bytes = Uint8Array.from(binary, (char) => char.charCodeAt(0));
    const claims: unknown = JSON.parse(new TextDecoder().decode(bytes));
    return typeof claims === "object" && claims !== null && !Array.isArray(claims)
      ? (claims as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}

export class Credentials {
  readonly #apiKey: string | undefined;
  readonly #jwt: string | undefined;
  readonly #getJwt: TokenSource | undefined;
  #identity: Identity | undefined;
  readonly tenant: string | undefined;

  constructor(options: CredentialOptions) {
    this.#apiKey = options.apiKey;
    this.#jwt = options.jwt;
    this.#getJwt = options.getJwt;
    this.tenant = options.tenant;
  }

  get hasApiKey(): boolean {
    return this.#apiKey !== undefined;
  }

  /** The user set by {@link Credentials.identify}, if any. */
  get userId(): string | undefined {
    return this.#identity?.userId;
  }

  identify(userId: string, token: string, refresh: RefreshUserToken | undefined): void {
    this.#identity = { userId, token, refresh, refreshing: undefined };
  }

  /**
   * The end user's token for this request or connection: the identified user's, else a fresh
   * one from `getJwt`, else the one captured at construction. Only `getJwt` makes it wait:
   * every request asks, and most clients have a fixed credential.
   */
  token(): string | undefined | Promise<string | undefined> {
    if (this.#identity) return this.#identity.token;
    return this.#getJwt ? this.#freshToken(this.#getJwt) : this.#jwt;
  }

  async #freshToken(getJwt: TokenSource): Promise<string | undefined> {
    try {
      return (await getJwt()) ?? undefined;
    } catch (cause) {
      // The callback's own error may say anything; it is kept as the cause, not the message.
      throw new AuthError(
        401,
        {
          type: "AUTHENTICATION_ERROR",
          code: "token_unavailable",
          message: "getJwt failed to provide a token",
          request_id: "",
        },
        { cause },
      );
    }
  }

  /**
   * After the server said `expiredToken` expired: asks `refreshUserToken` for a new one, once
   * for however many requests met the same expired token. True when there is a token to retry
   * with.
   */
  async refreshExpiredToken(expiredToken: string): Promise<boolean> {
    const identity = this.#identity;
    if (!identity?.refresh) return false;
    if (identity.token !== expiredToken) return true;
    identity.refreshing ??= Promise.resolve(identity.refresh(expiredToken, decodeJwtPayload(expiredToken)));
    try {
      identity.token = await identity.refreshing;
      return true;
    } catch {
      return false;
    } finally {
      identity.refreshing = undefined;
    }
  }

  /** REST headers for one request (the workspace-key signature is added by the transport). */
  headers(token: string | undefined): Record<string, string> {
    const headers: Record<string, string> = {};
    const apiKey = this.#apiKey;
    if (apiKey !== undefined) {
      if (isPublicKey(apiKey)) {
        headers["x-api-key"] = apiKey;
        if (token !== undefined) headers.authorization = `Bearer ${token}`;
      } else {
        headers.authorization = `Bearer ${apiKey}`;
      }
    }
    if (this.tenant !== undefined) headers["x-tenant-id"] = this.tenant;
    return headers;
  }

  /** The socket URL's credential parameters (SPEC §4.4): `api-key`, `token`, `tenant`. */
  socketParameters(token: string | undefined): Record<string, string> {
    const parameters: Record<string, string> = {};
    if (this.#apiKey !== undefined) parameters["api-key"] = this.#apiKey;
    if (token !== undefined) parameters.token = token;
    if (this.tenant !== undefined) parameters.tenant = this.tenant;
    return parameters;
  }

  /** `text` with every credential this object holds (and `token`) blotted out. */
  redact(text: string, token?: string): string {
    let redacted = text;
    for (const secret of [this.#apiKey, this.#jwt, this.#identity?.token, token]) {
      if (secret) redacted = redacted.split(secret).join("[REDACTED]");
    }
    return redacted;
  }

  toJSON(): Record<string, unknown> {
    return { apiKey: this.#apiKey === undefined ? undefined : "[REDACTED]", tenant: this.tenant };
  }
}
