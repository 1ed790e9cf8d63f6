/**
 * Express (and Connect, and plain `node:http`) middleware. Written against the minimal
 * `(req, res, next)` shape, so Express is not a dependency of this package.
 */

import { type ActiveAnswer, Keyward, normalizeScopes } from "./client.js";
import { decide } from "./decision.js";

/** The part of a Node request the middleware reads (Express's `req` is one). */
export interface RequestLike {
  headers: Record<string, string | string[] | undefined>;
  /** Express's client address (honours `trust proxy`); else the socket's is used. */
  ip?: string | undefined;
  socket?: { remoteAddress?: string | undefined } | undefined;
}

/** The part of a Node response the middleware writes (Express's `res` is one). */
export interface ResponseLike {
  statusCode: number;
  setHeader(name: string, value: string): unknown;
  end(body?: string): unknown;
}

/** Express-style `next`. */
export type Next = (error?: unknown) => void;

/** Options of {@link requireScopes}. */
export interface RequireScopesOptions {
  /** The client to ask (default: one made from `KEYWARD_URL` when the middleware is made). */
  readonly keyward?: Keyward | undefined;
}

declare global {
  // Express's own request type gains `keyward` (declaration merging; harmless without Express).
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Request {
      /** keyward's answer for this request's token, set by `requireScopes`. */
      keyward?: ActiveAnswer;
    }
  }
}

/**
 * Middleware that lets a request through only with an active bearer token holding every one of
 * `scopes`, and puts keyward's answer on `req.keyward` (also {@link keywardAnswer}`(req)`).
 *
 * Refuses with keyward's JSON error shape and an RFC 6750 challenge: 401 without a token or with
 * an inactive one, 403 `insufficient_scope`, 503 when keyward cannot answer (never "allowed").
 * Scopes are checked and the default client is made when this is called, so a typo or a missing
 * `KEYWARD_URL` stops the application at start-up.
 *
 * ```ts
 * app.get("/droplets", requireScopes("droplet:read"), (req, res) => res.json(req.keyward?.owner));
 * ```
 */
export function requireScopes(
  ...args: [...scopes: string[]] | [...scopes: string[], options: RequireScopesOptions]
): (req: RequestLike, res: ResponseLike, next: Next) => Promise<void> {
  const names: string[] = [];
  let options: RequireScopesOptions = {};
  for (const arg of args as (string | RequireScopesOptions)[]) {
    if (typeof arg === "string") names.push(arg);
    else options = arg;
  }
  const scopes = normalizeScopes(names);
  const keyward = options.keyward ?? new Keyward();
  return async (req, res, next) => {
    let decision;
    try {
      const header = req.headers["authorization"];
      const ip = req.ip ?? req.socket?.remoteAddress;
      decision = await decide(keyward, Array.isArray(header) ? undefined : header, scopes, ip);
    } catch (e) {
      next(e);
      return;
    }
    if (decision.ok) {
      (req as RequestLike & { keyward?: ActiveAnswer }).keyward = decision.answer;
      next();
      return;
    }
    const { status, headers, body } = decision.refusal;
    res.statusCode = status;
    for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
    res.end(JSON.stringify(body));
  };
}

/** keyward's answer that {@link requireScopes} put on this request, if it let it through. */
export function keywardAnswer(req: object): ActiveAnswer | undefined {
  return (req as { keyward?: ActiveAnswer }).keyward;
}
