/**
 * Managing tokens over keyward's HTTP API (`/v1/tokens`), acting as a token that holds the
 * matching `tokens:*` scopes. Nothing here is cached.
 */

import { type Keyward, KeywardUnavailableError } from "./client.js";
import { caller, type ManagementOptions } from "./management.js";

/** A token's record as keyward shows it: never the secret. */
export interface TokenRecord {
  readonly id: string;
  /** The owner's user id. */
  readonly owner: string;
  readonly name: string;
  readonly scopes: readonly string[];
  /** Prefix and last four characters of the current secret, to tell tokens apart. */
  readonly hint: string;
  readonly state: "active" | "expired" | "revoked" | (string & {});
  readonly createdAt: Date;
  readonly expiresAt: Date | null;
  readonly lastUsedAt: Date | null;
  readonly lastUsedIp: string | null;
  readonly regeneratedAt: Date | null;
  readonly revokedAt: Date | null;
  readonly revokedBy: string | null;
  readonly revokeReason: string | null;
}

/** A token with its secret: only from create and regenerate, and only this once. */
export interface IssuedToken {
  readonly token: TokenRecord;
  readonly secret: string;
}

/** The management calls of one token (see {@link tokens}). */
export interface TokenManager {
  /** `POST /v1/tokens` (`tokens:create`): `expires` is `30d`, an RFC 3339 time or `never`. */
  create(request: { name: string; scopes: readonly string[]; expires?: string }): Promise<IssuedToken>;
  /** `GET /v1/tokens` (`tokens:read`): a page, newest first; pass `next` as `after`. */
  list(page?: { limit?: number; after?: string }): Promise<{ tokens: TokenRecord[]; next: string | null }>;
  /** `GET /v1/tokens/{id}` (`tokens:read`); `self` is the acting token. */
  get(id: string): Promise<TokenRecord>;
  /** `PATCH /v1/tokens/{id}` (`tokens:update`). */
  rename(id: string, name: string): Promise<TokenRecord>;
  /** `POST /v1/tokens/{id}/regenerate` (`tokens:update`): a new secret, same id. */
  regenerate(id: string, options?: { gracePeriod?: string; expires?: string }): Promise<IssuedToken>;
  /** `DELETE /v1/tokens/{id}` (`tokens:delete`): the record stays, revoked. */
  revoke(id: string, reason?: string): Promise<TokenRecord>;
}

/**
 * The management calls, acting as the token `secret`, against `keyward`'s server. Refusals
 * (4xx) reject with {@link KeywardApiError}; no answer, 5xx or an unreadable body with
 * {@link KeywardUnavailableError}.
 */
export function tokens(keyward: Keyward, secret: string, options: ManagementOptions = {}): TokenManager {
  const call = caller(keyward, secret, options);
  const id = (value: string) => encodeURIComponent(value);
  const one = async (p: Promise<Record<string, unknown>>) => toRecord((await p)["token"]);
  const issued = async (p: Promise<Record<string, unknown>>) => toIssued(await p);
  return {
    create: ({ name, scopes, expires }) =>
      issued(call("POST", "/v1/tokens", { name, scopes, ...(expires === undefined ? {} : { expires }) })),
    async list(page = {}) {
      const query = new URLSearchParams();
      if (page.limit !== undefined) query.set("limit", String(page.limit));
      if (page.after !== undefined) query.set("after", page.after);
      const q = query.size > 0 ? `?${query}` : "";
      const r = await call("GET", `/v1/tokens${q}`);
      if (!Array.isArray(r["tokens"])) throw new KeywardUnavailableError("keyward's answer holds no tokens");
      return { tokens: r["tokens"].map(toRecord), next: typeof r["next"] === "string" ? r["next"] : null };
    },
    get: (tokenId) => one(call("GET", `/v1/tokens/${id(tokenId)}`)),
    rename: (tokenId, name) => one(call("PATCH", `/v1/tokens/${id(tokenId)}`, { name })),
    regenerate: (tokenId, options = {}) =>
      issued(
        call("POST", `/v1/tokens/${id(tokenId)}/regenerate`, {
          ...(options.gracePeriod === undefined ? {} : { grace_period: options.gracePeriod }),
          ...(options.expires === undefined ? {} : { expires: options.expires }),
        }),
      ),
    revoke: (tokenId, reason) =>
      one(call("DELETE", `/v1/tokens/${id(tokenId)}`, reason === undefined ? {} : { reason })),
  };
}

/** `{ token, secret }` of create, regenerate and a user's minted token. */
export function toIssued(r: Record<string, unknown>): IssuedToken {
  if (typeof r["secret"] !== "string") throw new KeywardUnavailableError("keyward's answer holds no secret");
  return { token: toRecord(r["token"]), secret: r["secret"] };
}

function toRecord(value: unknown): TokenRecord {
  if (typeof value !== "object" || value === null) {
    throw new KeywardUnavailableError("keyward's answer holds no token record");
  }
  const t = value as Record<string, unknown>;
  const str = (k: string) => (typeof t[k] === "string" ? (t[k] as string) : null);
  const date = (k: string) => (typeof t[k] === "string" ? new Date(t[k] as string) : null);
  const id = str("id");
  if (id === null || !Array.isArray(t["scopes"])) {
    throw new KeywardUnavailableError("keyward's answer is not a token record");
  }
  return {
    id,
    owner: str("owner") ?? "",
    name: str("name") ?? "",
    scopes: (t["scopes"] as unknown[]).map(String),
    hint: str("hint") ?? "",
    state: str("state") ?? "",
    createdAt: date("created_at") ?? new Date(Number.NaN),
    expiresAt: date("expires_at"),
    lastUsedAt: date("last_used_at"),
    lastUsedIp: str("last_used_ip"),
    regeneratedAt: date("regenerated_at"),
    revokedAt: date("revoked_at"),
    revokedBy: str("revoked_by"),
    revokeReason: str("revoke_reason"),
  };
}
