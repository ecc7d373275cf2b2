/** ES256 tokens for tests: end-user JWTs and Keyward's signed user tokens, with node:crypto only. */

import { createPrivateKey, generateKeyPairSync, sign, type KeyObject } from "node:crypto";

export const nowSeconds = (): number => Math.floor(Date.now() / 1000);

function base64url(data: string | Buffer): string {
  return Buffer.from(data).toString("base64url");
}

function es256(key: KeyObject, claims: Record<string, unknown>, kid?: string): string {
  const header = base64url(JSON.stringify({ alg: "ES256", typ: "JWT", ...(kid ? { kid } : {}) }));
  const payload = base64url(JSON.stringify(claims));
  const signature = sign("sha256", Buffer.from(`${header}.${payload}`), { key, dsaEncoding: "ieee-p1363" });
  return `${header}.${payload}.${base64url(signature)}`;
}

/** An identity provider of our own: its public key goes to Keyward, its tokens to users. */
export class IdentityProvider {
  readonly publicPem: string;
  readonly #privateKey: KeyObject;

  constructor() {
    const { publicKey, privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    this.publicPem = publicKey.export({ type: "spki", format: "pem" }).toString();
    this.#privateKey = privateKey;
  }

  /** A JWT for `subject`, valid `lifetimeSeconds` from now (negative: already expired). */
  token(subject: string, lifetimeSeconds = 600): string {
    const now = nowSeconds();
    return es256(this.#privateKey, { sub: subject, iat: now, exp: now + lifetimeSeconds });
  }
}

/** A signed user token (SPEC §4.4) made with a Keyward signing key's private PEM. */
export function userToken(privateKeyPem: string, kid: string, entityId: string, lifetimeSeconds = 600): string {
  const now = nowSeconds();
  const claims = { entity_type: "subscriber", entity_id: entityId, iat: now, exp: now + lifetimeSeconds };
  return es256(createPrivateKey(privateKeyPem), claims, kid);
}
