/**
 * Managing users over keyward's HTTP API (`/v1/users`) for a platform's backend, acting as an
 * admin's token holding the matching `users:*` scopes and `tokens:issue`. Nothing here is cached.
 */

import { type Keyward, KeywardUnavailableError } from "./client.js";
import { caller, type ManagementOptions } from "./management.js";
import { type IssuedToken, toIssued } from "./tokens.js";

/** A user as keyward shows it. */
export interface User {
  /** `usr_…`. */
  readonly id: string;
  readonly name: string;
  /** `person`, or `service`: a service account, which never signs in. */
  readonly kind: "person" | "service" | (string & {});
  /** The platform's own id for the user; `null` when it gave none. */
  readonly externalId: string | null;
  readonly email: string | null;
  /** Whether the user is an admin (manages users; may hold `users:*` and `tokens:issue`). */
  readonly admin: boolean;
  readonly createdAt: Date;
  /** When the user was disabled; `null` while they are not. */
  readonly disabledAt: Date | null;
}

/** One page of users, newest first; `next` is the `before` of the following page (`null` on the last). */
export interface UserPage {
  readonly users: User[];
  readonly next: string | null;
}

/** The user calls of one admin token (see {@link users}). */
export interface UserManager {
  /**
   * `POST /v1/users` (`users:create`). `externalId` is the platform's own id for the user
   * (unique; verification answers carry it as `owner.externalId`); a `service` account takes no
   * `password`. A name or external id taken rejects with 409.
   */
  create(request: {
    name: string;
    externalId?: string;
    email?: string;
    admin?: boolean;
    kind?: "person" | "service";
    password?: string;
  }): Promise<User>;
  /** `GET /v1/users` (`users:read`): a page, newest first; pass `next` as `before`. */
  list(page?: { externalId?: string; limit?: number; before?: string }): Promise<UserPage>;
  /** Every user (with `externalId`: the one, if any), newest first, following `next` page by page. */
  iterate(options?: { externalId?: string; pageSize?: number }): AsyncGenerator<User, void, undefined>;
  /** `GET /v1/users/{id}` (`users:read`). */
  get(id: string): Promise<User>;
  /** The user with this external id, or `null` if there is none (external ids are unique). */
  findByExternalId(externalId: string): Promise<User | null>;
  /**
   * `PATCH /v1/users/{id}` (`users:update`): only the fields given change; `email: null` or
   * `externalId: null` removes it. A disabled user's tokens are refused (`owner_disabled`), not
   * revoked; `disabled: false` enables them again.
   */
  update(
    id: string,
    changes: {
      name?: string;
      email?: string | null;
      externalId?: string | null;
      admin?: boolean;
      disabled?: boolean;
    },
  ): Promise<User>;
  /** `DELETE /v1/users/{id}` (`users:delete`): for good; every token of theirs is revoked first. */
  delete(id: string): Promise<void>;
  /**
   * `POST /v1/users/{id}/tokens` (`tokens:issue`): a token of that user, with its secret, only
   * this once. keyward clamps `expires` to the calling token's own expiry.
   */
  issueToken(id: string, request: { name: string; scopes: readonly string[]; expires?: string }): Promise<IssuedToken>;
}

/**
 * The user calls, acting as the admin token `secret`, against `keyward`'s server. Refusals
 * (4xx) reject with {@link KeywardApiError}; no answer, 5xx or an unreadable body with
 * {@link KeywardUnavailableError}.
 */
export function users(keyward: Keyward, secret: string, options: ManagementOptions = {}): UserManager {
  const call = caller(keyward, secret, options);
  const path = (id: string) => `/v1/users/${encodeURIComponent(id)}`;
  const list = async (page: { externalId?: string; limit?: number; before?: string } = {}): Promise<UserPage> => {
    const query = new URLSearchParams();
    if (page.externalId !== undefined) query.set("external_id", page.externalId);
    if (page.limit !== undefined) query.set("limit", String(page.limit));
    if (page.before !== undefined) query.set("before", page.before);
    const q = query.size > 0 ? `?${query}` : "";
    const r = await call("GET", `/v1/users${q}`);
    if (!Array.isArray(r["users"])) throw new KeywardUnavailableError("keyward's answer holds no users");
    return { users: r["users"].map(toUser), next: typeof r["next"] === "string" ? r["next"] : null };
  };
  return {
    async create({ name, externalId, email, admin, kind, password }) {
      return toUser(
        await call("POST", "/v1/users", {
          name,
          ...(externalId === undefined ? {} : { external_id: externalId }),
          ...(email === undefined ? {} : { email }),
          ...(admin === undefined ? {} : { admin }),
          ...(kind === undefined ? {} : { kind }),
          ...(password === undefined ? {} : { password }),
        }),
      );
    },
    list,
    async *iterate(options = {}) {
      let before: string | undefined;
      for (;;) {
        const page = await list({
          ...(options.externalId === undefined ? {} : { externalId: options.externalId }),
          ...(options.pageSize === undefined ? {} : { limit: options.pageSize }),
          ...(before === undefined ? {} : { before }),
        });
        yield* page.users;
        if (page.next === null) return;
        before = page.next;
      }
    },
    get: async (id) => toUser(await call("GET", path(id))),
    async findByExternalId(externalId) {
      return (await list({ externalId, limit: 1 })).users[0] ?? null;
    },
    async update(id, { name, email, externalId, admin, disabled }) {
      return toUser(
        await call("PATCH", path(id), {
          ...(name === undefined ? {} : { name }),
          ...(email === undefined ? {} : { email }),
          ...(externalId === undefined ? {} : { external_id: externalId }),
          ...(admin === undefined ? {} : { admin }),
          ...(disabled === undefined ? {} : { disabled }),
        }),
      );
    },
    async delete(id) {
      await call("DELETE", path(id));
    },
    issueToken: async (id, { name, scopes, expires }) =>
      toIssued(await call("POST", `${path(id)}/tokens`, { name, scopes, ...(expires === undefined ? {} : { expires }) })),
  };
}

function toUser(value: unknown): User {
  if (typeof value !== "object" || value === null) {
    throw new KeywardUnavailableError("keyward's answer holds no user");
  }
  const u = value as Record<string, unknown>;
  const str = (k: string) => (typeof u[k] === "string" ? (u[k] as string) : null);
  const date = (k: string) => (typeof u[k] === "string" ? new Date(u[k] as string) : null);
  const id = str("id");
  const name = str("name");
  if (id === null || name === null || typeof u["admin"] !== "boolean") {
    throw new KeywardUnavailableError("keyward's answer is not a user");
  }
  return {
    id,
    name,
    kind: str("kind") ?? "",
    externalId: str("external_id"),
    email: str("email"),
    admin: u["admin"],
    createdAt: date("created_at") ?? new Date(Number.NaN),
    disabledAt: date("disabled_at"),
  };
}
