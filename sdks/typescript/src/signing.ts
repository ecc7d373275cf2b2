/**
 * `KW-HMAC-SHA256` request signatures of workspace keys (SPEC §4.4), with WebCrypto only, so
 * the same code runs in Node 20+, browsers, Deno, Bun and edge runtimes.
 *
 * `sig` is the standard Base64 of HMAC-SHA256, keyed with the secret's UTF-8 bytes, over
 * `METHOD\nPATH?QUERY\nTS\nhex(sha256(body))`, with `?QUERY` left out when the query is empty.
 */

const encoder = new TextEncoder();

function subtle(): SubtleCrypto {
  const crypto = globalThis.crypto;
  if (!crypto?.subtle) {
    throw new Error("WebCrypto (crypto.subtle) is unavailable: Keyward signing needs Node 20+ or a browser on HTTPS");
  }
  return crypto.subtle;
}

function hex(bytes: ArrayBuffer): string {
  let out = "";
  for (const byte of new Uint8Array(bytes)) out += byte.toString(16).padStart(2, "0");
  return out;
}

function base64(bytes: ArrayBuffer): string {
  let binary = "";
  for (const byte of new Uint8Array(bytes)) binary += String.fromCharCode(byte);
  return btoa(binary);
}

/** Body bytes as WebCrypto takes them; a string is its UTF-8. */
export type BodyBytes = Uint8Array | ArrayBuffer | string;

function toBytes(body: BodyBytes): Uint8Array {
  if (typeof body === "string") return encoder.encode(body);
  return body instanceof Uint8Array ? body : new Uint8Array(body);
}

/** Lowercase hex SHA-256: the `body_sha256` of `verify-request` and the last signed line. */
export async function sha256Hex(body: BodyBytes): Promise<string> {
  // A copy into a fresh ArrayBuffer: a Node Buffer may be a view into a larger shared pool.
  const bytes = toBytes(body);
  return hex(await subtle().digest("SHA-256", bytes.slice().buffer as ArrayBuffer));
}

/** What a signature covers. */
export interface SignedRequest {
  method: string;
  /** The path as sent, percent-encoding and all. */
  path: string;
  /** The query as sent, without `?`; empty when there is none. */
  query: string;
  timestamp: number;
  bodySha256: string;
}

/** The exact bytes the server recomputes: see the module comment. */
export function canonicalString(request: SignedRequest): string {
  const target = request.query ? `${request.path}?${request.query}` : request.path;
  return `${request.method.toUpperCase()}\n${target}\n${request.timestamp}\n${request.bodySha256}`;
}

/**
 * Signs requests with one workspace key. The secret lives only in the imported, non-extractable
 * CryptoKey and in this closure; nothing here ever prints it.
 */
export class WorkspaceKeySigner {
  readonly keyId: string;
  readonly #key: Promise<CryptoKey>;
  /**
   * Signatures already used, with their timestamps. The server accepts a signature once, so
   * an identical request within the same second is signed for the next free second instead
   * (well within the ±300 s window), as the Rust SDK does.
   */
  readonly #recent = new Map<string, number>();
  #trimmedAt = 0;

  constructor(keyId: string, secret: string) {
    this.keyId = keyId;
    this.#key = subtle().importKey(
      "raw",
      encoder.encode(secret),
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["sign"],
    );
  }

  async signature(request: SignedRequest): Promise<string> {
    const mac = await subtle().sign("HMAC", await this.#key, encoder.encode(canonicalString(request)));
    return base64(mac);
  }

  /**
   * The `Authorization` value for a request, fresh even when an identical one was just sent.
   * `skipSeconds` starts the search that many seconds ahead: after a `signature_replayed`,
   * another process holding the same key has used the next seconds too, and a random jump
   * (well within the ±300 s window) is unlikely to land on one of them.
   */
  async authorization(
    request: Omit<SignedRequest, "timestamp">,
    nowSeconds = Math.floor(Date.now() / 1000),
    skipSeconds = 0,
  ): Promise<string> {
    if (this.#trimmedAt !== nowSeconds) {
      // Timestamps before now are never chosen again: only the rest can clash.
      for (const [signature, at] of this.#recent) if (at < nowSeconds) this.#recent.delete(signature);
      this.#trimmedAt = nowSeconds;
    }
    let timestamp = nowSeconds + skipSeconds;
    let signature = await this.signature({ ...request, timestamp });
    while (this.#recent.has(signature)) {
      timestamp += 1;
      signature = await this.signature({ ...request, timestamp });
    }
    this.#recent.set(signature, timestamp);
    return `KW-HMAC-SHA256 key=${this.keyId}, ts=${timestamp}, sig=${signature}`;
  }
}
