/**
 * `@keyward/sdk/express`: protects Express routes with Keyward.
 *
 * ```ts
 * import { keyward } from "@keyward/sdk/express";
 *
 * app.get("/orders", keyward({ rootKey: process.env.KEYWARD_ROOT_KEY, permissions: "read:orders" }), (req, res) => {
 *   res.json({ owner: req.keyward!.owner_user_id });
 * });
 * ```
 *
 * A refused credential is answered 401, 403 or 429 (with `Retry-After`) in Keyward's error
 * envelope; if Keyward cannot be asked the answer is 503. The handler runs only for a valid
 * credential, with the verdict in `req.keyward`.
 */

import type { NextFunction, Request, RequestHandler, Response } from "express";

import type { VerifyKeyResponse } from "./api-types.js";
import type { NodeRequestLike } from "./gateway.js";
import { clientOf, decide, type KeywardIdentity, type ProtectOptions, type Refusal } from "./protect.js";

export type { KeywardIdentity, ProtectOptions, Refusal } from "./protect.js";

declare global {
  // Express's own way to type what middleware adds to the request.
  namespace Express {
    interface Request {
      /** The verdict on a request `keyward()` let through. */
      keyward?: KeywardIdentity;
      /** The raw body, when the middleware read it to check a workspace-key signature. */
      rawBody?: Uint8Array;
    }
  }
}

export interface KeywardExpressOptions extends ProtectOptions<Request> {
  /**
   * Answers when Keyward could not be asked (default: 503 in the envelope). Calling `next()`
   * here lets the unverified request through: do that only on purpose.
   */
  onError?: ((error: unknown, req: Request, res: Response, next: NextFunction) => void) | undefined;
  /** Answers a refused credential (default: the verdict's 401, 403 or 429 in the envelope). */
  handleInvalidKey?: ((verdict: VerifyKeyResponse, req: Request, res: Response, next: NextFunction) => void) | undefined;
}

function send(res: Response, answer: Refusal): void {
  res.status(answer.status).set(answer.headers).send(JSON.stringify(answer.body));
}

/**
 * A signed request's body was read here to digest it, so a JSON parser after this
 * middleware finds the stream finished: the parsed body is left where it would have put it.
 */
function keepBody(req: Request): void {
  if (!req.rawBody || req.body !== undefined || !req.is("application/json")) return;
  try {
    req.body = JSON.parse(new TextDecoder().decode(req.rawBody));
  } catch {
    // Not JSON after all: the handler still has req.rawBody.
  }
}

/** Express middleware that lets through only requests with a credential Keyward accepts. */
export function keyward(options: KeywardExpressOptions): RequestHandler {
  const client = clientOf(options);
  return (req, res, next) => {
    decide(client, options, req, req as unknown as NodeRequestLike)
      .then((decision) => {
        switch (decision.kind) {
          case "allowed":
            req.keyward = decision.identity;
            keepBody(req);
            return next();
          case "refused":
            if (options.handleInvalidKey) return options.handleInvalidKey(decision.verdict, req, res, next);
            return send(res, decision.refusal);
          case "unavailable":
            if (options.onError) return options.onError(decision.error, req, res, next);
            return send(res, decision.refusal);
          case "too_large":
            return send(res, decision.refusal);
        }
      })
      .catch(next);
  };
}
