/**
 * The framework-neutral form: a Fetch API `Request` in, "allowed" or a `Response` to send out.
 * Hono, Next.js route handlers, Fastify (through its `Request` adapter), Deno and Bun use it.
 */

import { type ActiveAnswer, Keyward, normalizeScopes } from "./client.js";
import { decide } from "./decision.js";

/** Options of {@link authorize}. */
export interface AuthorizeOptions {
  /** The client to ask (default: one shared client made from `KEYWARD_URL` on first use). */
  readonly keyward?: Keyward | undefined;
  /** The end client's address, recorded by keyward as the token's last use (the framework knows it). */
  readonly ip?: string | undefined;
}

/** What {@link authorize} decides: go on with keyward's answer, or send `response`. */
export type Authorization =
  | { readonly ok: true; readonly answer: ActiveAnswer }
  | { readonly ok: false; readonly response: Response };

let sharedKeyward: Keyward | undefined;

/**
 * Whether `request` carries an active bearer token holding every one of `scopes`.
 *
 * Refused requests get a ready `Response`: 401 without a token or with an inactive one, 403
 * `insufficient_scope`, 503 when keyward cannot answer; each with keyward's JSON error shape and
 * an RFC 6750 `WWW-Authenticate` challenge.
 *
 * ```ts
 * const auth = await authorize(request, "droplet:read");
 * if (!auth.ok) return auth.response;
 * return Response.json({ owner: auth.answer.owner.name });
 * ```
 */
export async function authorize(
  request: Request,
  scopes: string | readonly string[],
  options: AuthorizeOptions = {},
): Promise<Authorization> {
  const keyward = options.keyward ?? (sharedKeyward ??= new Keyward());
  const decision = await decide(
    keyward,
    request.headers.get("authorization"),
    normalizeScopes(scopes),
    options.ip,
  );
  if (decision.ok) return decision;
  const { status, headers, body } = decision.refusal;
  return { ok: false, response: new Response(JSON.stringify(body), { status, headers }) };
}
