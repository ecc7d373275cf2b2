/**
 * `@keyward/sdk/hono`: protects Hono routes with Keyward.
 *
 * ```ts
 * import { keyward, type KeywardVariables } from "@keyward/sdk/hono";
 *
 * const app = new Hono<{ Variables: KeywardVariables }>();
 * app.use("/orders/*", keyward({ rootKey: env.KEYWARD_ROOT_KEY, permissions: "read:orders" }));
 * app.get("/orders", (c) => c.json({ owner: c.get("keyward").owner_user_id }));
 * ```
 *
 * Unlike `@unkey/hono`, an invalid key never reaches the handler unless `handleInvalidKey`
 * says so: the default answer is the verdict's 401, 403 or 429, and 503 when Keyward cannot
 * be asked.
 */

import type { Context, MiddlewareHandler } from "hono";

import type { VerifyKeyResponse } from "./api-types.js";
import { clientOf, decide, toResponse, type KeywardIdentity, type ProtectOptions } from "./protect.js";

export type { KeywardIdentity, ProtectOptions, Refusal } from "./protect.js";

/** What the middleware sets on the context: `c.get("keyward")`. */
export type KeywardVariables = { keyward: KeywardIdentity };

export interface KeywardHonoOptions extends ProtectOptions<Context> {
  /** Answers when Keyward could not be asked (default: 503 in the envelope). */
  onError?: ((c: Context, error: unknown) => Response | Promise<Response>) | undefined;
  /** Answers a refused credential (default: the verdict's 401, 403 or 429 in the envelope). */
  handleInvalidKey?: ((c: Context, verdict: VerifyKeyResponse) => Response | Promise<Response>) | undefined;
}

/** Hono middleware that lets through only requests with a credential Keyward accepts. */
export function keyward(options: KeywardHonoOptions): MiddlewareHandler<{ Variables: KeywardVariables }> {
  const client = clientOf(options);
  return async (c, next) => {
    const decision = await decide<Context>(client, options, c, c.req.raw);
    switch (decision.kind) {
      case "allowed":
        c.set("keyward", decision.identity);
        await next();
        return;
      case "refused":
        return options.handleInvalidKey ? options.handleInvalidKey(c, decision.verdict) : toResponse(decision.refusal);
      case "unavailable":
        return options.onError ? options.onError(c, decision.error) : toResponse(decision.refusal);
      case "too_large":
        return toResponse(decision.refusal);
    }
  };
}
