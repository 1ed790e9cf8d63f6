/**
 * From a request's `Authorization` header to "allowed" or the HTTP refusal to send: the one
 * mapping both the Express middleware and the Fetch API function use, so they answer alike.
 */

import { type ActiveAnswer, type Keyward, KeywardUnavailableError } from "./client.js";

/** The refusal to send: status, headers and a keyward-shaped JSON error body. */
export interface Refusal {
  readonly status: 401 | 403 | 503;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: { readonly error: { readonly code: string; readonly message: string } };
}

/** Allowed (with keyward's answer) or refused (with what to send). */
export type Decision =
  | { readonly ok: true; readonly answer: ActiveAnswer }
  | { readonly ok: false; readonly refusal: Refusal };

const REALM = 'Bearer realm="keyward"';

/** The token of an `Authorization: Bearer <token>` header (RFC 6750 §2.1), if there is one. */
export function bearerToken(header: string | null | undefined): string | undefined {
  if (typeof header !== "string") return undefined;
  const match = /^Bearer[ ]+([A-Za-z0-9\-._~+/]+=*)[ ]*$/i.exec(header);
  return match?.[1];
}

/**
 * Decides a request: no token → 401 with a bare challenge (RFC 6750 §3.1), an inactive token →
 * 401 `invalid_token`, a missing scope → 403 `insufficient_scope`, keyward unreachable → 503.
 * Anything else thrown (a programming error) propagates.
 */
export async function decide(
  keyward: Keyward,
  authorization: string | null | undefined,
  scopes: readonly string[],
  ip: string | undefined,
): Promise<Decision> {
  const token = bearerToken(authorization);
  if (token === undefined) {
    return refuse(401, REALM, "unauthenticated", "a bearer token is required");
  }
  let answer;
  try {
    answer = await keyward.verify(token, { scopes, ip });
  } catch (e) {
    if (e instanceof KeywardUnavailableError) {
      return refuse(503, undefined, "unavailable", "token verification is unavailable; retry later");
    }
    throw e;
  }
  if (answer.active) return { ok: true, answer };
  if (answer.reason === "insufficient_scope") {
    const needed = scopes.join(" ");
    return refuse(
      403,
      `${REALM}, error="insufficient_scope", error_description="this token lacks the scope ${needed}", scope="${needed}"`,
      "insufficient_scope",
      `this token lacks the scope ${needed}`,
    );
  }
  // The reason comes from keyward; keep only what RFC 6750 allows inside a quoted string.
  const reason = answer.reason.replace(/[^a-z_]/g, "");
  return refuse(
    401,
    `${REALM}, error="invalid_token", error_description="the token is not active: ${reason}"`,
    "invalid_token",
    `the token is not active: ${reason}`,
  );
}

function refuse(
  status: Refusal["status"],
  challenge: string | undefined,
  code: string,
  message: string,
): Decision {
  const headers: Record<string, string> = {
    "content-type": "application/json",
    "cache-control": "no-store",
  };
  if (challenge !== undefined) headers["www-authenticate"] = challenge;
  return { ok: false, refusal: { status, headers, body: { error: { code, message } } } };
}
