/**
 * `@keyward/sdk/fetch`: protects any Fetch-API handler (Next.js route handlers, Deno, Bun,
 * Cloudflare Workers, Remix/React Router loaders) with Keyward.
 *
 * ```ts
 * import { withKeyward } from "@keyward/sdk/fetch";
 *
 * export const GET = withKeyward({ rootKey: process.env.KEYWARD_ROOT_KEY, permissions: "read:orders" },
 *   async (request, identity) => Response.json({ owner: identity.owner_user_id }));
 * ```
 *
 * The handler runs only for a valid credential; otherwise the answer is the verdict's 401,
 * 403 or 429 (with `Retry-After`) in Keyward's envelope, or 503 when Keyward cannot be asked.
 */

import type { VerifyKeyResponse } from "./api-types.js";
import { clientOf, decide, toResponse, type KeywardIdentity, type ProtectOptions } from "./protect.js";

export type { KeywardIdentity, ProtectOptions, Refusal } from "./protect.js";

export interface KeywardFetchOptions extends ProtectOptions<Request> {
  /** Answers when Keyward could not be asked (default: 503 in the envelope). */
  onError?: ((request: Request, error: unknown) => Response | Promise<Response>) | undefined;
  /** Answers a refused credential (default: the verdict's 401, 403 or 429 in the envelope). */
  handleInvalidKey?: ((request: Request, verdict: VerifyKeyResponse) => Response | Promise<Response>) | undefined;
}

/** Either the identity to hand on, or the response to give instead. */
export type GuardResult = { identity: KeywardIdentity; response?: undefined } | { identity?: undefined; response: Response };

/** The decision alone, for routers of your own: `const { identity, response } = await guard(request)`. */
export function keywardGuard(options: KeywardFetchOptions): (request: Request) => Promise<GuardResult> {
  const client = clientOf(options);
  return async (request) => {
    const decision = await decide(client, options, request, request);
    switch (decision.kind) {
      case "allowed":
        return { identity: decision.identity };
      case "refused":
        return {
          response: options.handleInvalidKey
            ? await options.handleInvalidKey(request, decision.verdict)
            : toResponse(decision.refusal),
        };
      case "unavailable":
        return {
          response: options.onError ? await options.onError(request, decision.error) : toResponse(decision.refusal),
        };
      case "too_large":
        return { response: toResponse(decision.refusal) };
    }
  };
}

/**
 * Wraps a Fetch handler: it is called as `handler(request, identity, ...rest)` for a valid
 * credential only (`rest` is whatever your framework passes after the request, e.g. Next.js's
 * `{ params }`).
 */
export function withKeyward<Rest extends unknown[]>(
  options: KeywardFetchOptions,
  handler: (request: Request, identity: KeywardIdentity, ...rest: Rest) => Response | Promise<Response>,
): (request: Request, ...rest: Rest) => Promise<Response> {
  const guard = keywardGuard(options);
  return async (request, ...rest) => {
    const { identity, response } = await guard(request);
    return identity ? handler(request, identity, ...rest) : response;
  };
}
