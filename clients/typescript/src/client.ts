/**
 * The keyward client: `POST /v1/verify` with a short cache of positive answers, the same
 * trade-off as the Rust `RemoteVerifier` (`crates/keyward/src/verifier.rs`).
 */

import { isWellFormedToken } from "./format.js";

/** Why keyward refused a token. New reasons may appear; treat any of them as "not allowed". */
export type InactiveReason =
  | "malformed"
  | "unknown"
  | "expired"
  | "revoked"
  | "insufficient_scope"
  | "owner_disabled"
  | (string & {});

/** A token's owner. */
export interface Owner {
  /** The user id, `usr_…`. */
  readonly id: string;
  /** The user name. */
  readonly name: string;
  /** The platform's own id for the user; `null` when it gave keyward none (or keyward is older than the field). */
  readonly externalId: string | null;
}

/** keyward's answer for an active token holding every scope asked for. */
export interface ActiveAnswer {
  readonly active: true;
  readonly reason?: undefined;
  /** The token's id, `tok_…` (public, not secret). */
  readonly tokenId: string;
  readonly owner: Owner;
  /** Every scope the token holds (at least those asked for). */
  readonly scopes: readonly string[];
  /** When the token expires; `null` if it never does. */
  readonly expiresAt: Date | null;
}

/** keyward's answer for any other token. */
export interface InactiveAnswer {
  readonly active: false;
  /** Why: `malformed`, `unknown`, `expired`, `revoked`, `insufficient_scope`, `owner_disabled`. */
  readonly reason: InactiveReason;
  readonly tokenId?: undefined;
  readonly owner?: undefined;
  readonly scopes?: undefined;
  readonly expiresAt?: undefined;
}

/** What {@link Keyward.verify} answers. */
export type Answer = ActiveAnswer | InactiveAnswer;

/** What a verification asks for besides the token. */
export interface VerifyOptions {
  /** Scopes the request needs (`resource:action`, `*` on either side); all must be granted. */
  readonly scopes?: string | readonly string[] | undefined;
  /** The end client's address, recorded by keyward as the token's last-used IP. */
  readonly ip?: string | undefined;
}

/** How to reach keyward and how long to trust its answers. */
export interface KeywardOptions {
  /** keyward's base URL, e.g. `http://127.0.0.1:8080`. Default: the `KEYWARD_URL` environment variable. */
  readonly url?: string | undefined;
  /** How long a positive answer is trusted, in milliseconds (default 5000). `0` asks every time. */
  readonly ttl?: number | undefined;
  /** How many positive answers are kept (default 10 000); the least recently used goes first. */
  readonly capacity?: number | undefined;
  /** How long one call to keyward may take, in milliseconds (default 10 000). */
  readonly timeout?: number | undefined;
  /** The `fetch` to use (default: the platform's). */
  readonly fetch?: typeof fetch | undefined;
  /** The clock, in milliseconds since the epoch (default `Date.now`); tests pass a fake one. */
  readonly now?: (() => number) | undefined;
}

/** How long a positive answer is trusted by default, in milliseconds (the Rust client's 5 s). */
export const DEFAULT_TTL = 5_000;
/** How many positive answers are kept by default. */
export const DEFAULT_CAPACITY = 10_000;
/** How long one call to keyward may take by default, in milliseconds. */
export const DEFAULT_TIMEOUT = 10_000;

/**
 * keyward could not give an answer: unreachable, too slow, a non-2xx status, or a body that is
 * not a verification answer. Never treat it as "allowed": refuse the request (the middleware
 * answers 503) and let the client retry.
 */
export class KeywardUnavailableError extends Error {
  override readonly name = "KeywardUnavailableError";
  /** The HTTP status keyward answered with, when it answered at all. */
  readonly status: number | undefined;

  constructor(message: string, options?: { status?: number; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.status = options?.status;
  }
}

// `resource:action`, each side `*` or 1–64 of [a-z0-9_-] (keyward-core/src/scope.rs).
const SCOPE = /^(?:\*|[a-z0-9_-]{1,64}):(?:\*|[a-z0-9_-]{1,64})$/;

/**
 * The scopes asked for, checked, without duplicates and sorted (one cache entry per set).
 * A scope that is not `resource:action` is a programming error: it throws a `TypeError`.
 */
export function normalizeScopes(scopes: string | readonly string[] | undefined): string[] {
  const list = scopes === undefined ? [] : typeof scopes === "string" ? [scopes] : [...scopes];
  for (const scope of list) {
    if (typeof scope !== "string" || !SCOPE.test(scope)) {
      throw new TypeError(`not a keyward scope (resource:action): ${JSON.stringify(scope)}`);
    }
  }
  return [...new Set(list)].sort();
}

/** The keyward URL: the one given, or `KEYWARD_URL`. */
function resolveUrl(url: string | undefined): string {
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process
    ?.env;
  const base = url ?? env?.["KEYWARD_URL"];
  if (base === undefined || base === "") {
    throw new TypeError("no keyward URL: pass { url } or set the KEYWARD_URL environment variable");
  }
  return new URL(base).href.replace(/\/+$/, "");
}

interface CacheEntry {
  readonly answer: ActiveAnswer;
  readonly storedAt: number;
}

const MALFORMED: InactiveAnswer = Object.freeze({ active: false, reason: "malformed" });
const EXPIRED: InactiveAnswer = Object.freeze({ active: false, reason: "expired" });

/**
 * A client of one keyward server.
 *
 * Positive answers are kept for `ttl` (5 s by default), so a busy API does not ask keyward on
 * every request. The trade-off: a token revoked on the server may still pass here for up to the
 * TTL. Refusals are never kept, so a new token works at once. A kept answer whose token has
 * expired since is refused here, without asking. Malformed tokens (wrong shape or checksum) are
 * refused without asking.
 *
 * The cache is keyed by the HMAC-SHA256 of the token under a key made at random for this
 * instance (WebCrypto), together with the scopes asked for: no token is kept in clear, and
 * keyward itself decides what the scopes (and their wildcards) grant. An answer from the cache
 * does not send `ip`, so the token's last-used address is recorded once per TTL at most.
 */
export class Keyward {
  /** The base URL of the keyward server, without a trailing slash. */
  readonly url: string;
  readonly #verifyUrl: string;
  readonly #ttl: number;
  readonly #capacity: number;
  readonly #timeout: number;
  readonly #fetch: typeof fetch;
  readonly #now: () => number;
  // Map keeps insertion order: the first key is the least recently used.
  readonly #cache = new Map<string, CacheEntry>();
  #hmacKey: Promise<CryptoKey> | undefined;

  constructor(options: KeywardOptions = {}) {
    this.url = resolveUrl(options.url);
    this.#verifyUrl = `${this.url}/v1/verify`;
    this.#ttl = nonNegative("ttl", options.ttl ?? DEFAULT_TTL);
    this.#capacity = nonNegative("capacity", options.capacity ?? DEFAULT_CAPACITY);
    this.#timeout = nonNegative("timeout", options.timeout ?? DEFAULT_TIMEOUT);
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.#now = options.now ?? Date.now;
  }

  /**
   * Whether `token` is active and holds every scope asked for.
   *
   * Resolves with keyward's answer, active or not; rejects with
   * {@link KeywardUnavailableError} when there is no answer to be had (fail closed), and with a
   * `TypeError` for a scope that is not `resource:action`.
   */
  async verify(token: string, options: VerifyOptions = {}): Promise<Answer> {
    const scopes = normalizeScopes(options.scopes);
    // Garbage never costs a round trip.
    if (typeof token !== "string" || !isWellFormedToken(token)) return MALFORMED;
    if (this.#ttl === 0 || this.#capacity === 0) {
      return this.#checkExpiry(await this.#ask(token, scopes, options.ip));
    }
    const key = `${await this.#hmac(token)} ${scopes.join(" ")}`;
    const cached = this.#cache.get(key);
    if (cached !== undefined) {
      this.#cache.delete(key);
      if (this.#now() - cached.storedAt < this.#ttl) {
        const answer = this.#checkExpiry(cached.answer);
        if (answer.active) this.#cache.set(key, cached);
        return answer;
      }
    }
    const answer = this.#checkExpiry(await this.#ask(token, scopes, options.ip));
    if (answer.active) {
      if (this.#cache.size >= this.#capacity) {
        const oldest = this.#cache.keys().next();
        if (oldest.done !== true) this.#cache.delete(oldest.value);
      }
      this.#cache.set(key, { answer, storedAt: this.#now() });
    }
    return answer;
  }

  /** Forgets every kept answer (after revoking a token through this process, say). */
  clearCache(): void {
    this.#cache.clear();
  }

  #checkExpiry(answer: Answer): Answer {
    if (answer.active && answer.expiresAt !== null && answer.expiresAt.getTime() <= this.#now()) {
      return EXPIRED;
    }
    return answer;
  }

  async #hmac(token: string): Promise<string> {
    this.#hmacKey ??= crypto.subtle.generateKey({ name: "HMAC", hash: "SHA-256" }, false, [
      "sign",
    ]) as Promise<CryptoKey>;
    const mac = await crypto.subtle.sign("HMAC", await this.#hmacKey, new TextEncoder().encode(token));
    let hex = "";
    for (const byte of new Uint8Array(mac)) hex += byte.toString(16).padStart(2, "0");
    return hex;
  }

  async #ask(token: string, scopes: readonly string[], ip: string | undefined): Promise<Answer> {
    const body: { token: string; scopes?: readonly string[]; ip?: string } = { token };
    if (scopes.length > 0) body.scopes = scopes;
    if (ip !== undefined && ip !== "") body.ip = ip;
    let response: Response;
    try {
      response = await this.#fetch(this.#verifyUrl, {
        method: "POST",
        headers: { "content-type": "application/json", accept: "application/json" },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(this.#timeout),
      });
    } catch (cause) {
      throw new KeywardUnavailableError(`keyward at ${this.url} did not answer: ${describe(cause)}`, {
        cause,
      });
    }
    let json: unknown;
    try {
      json = await response.json();
    } catch (cause) {
      throw new KeywardUnavailableError(
        `keyward answered ${response.status} with a body that is not JSON: ${describe(cause)}`,
        { status: response.status, cause },
      );
    }
    if (!response.ok) {
      throw new KeywardUnavailableError(
        `keyward answered ${response.status}${errorText(json)}`,
        { status: response.status },
      );
    }
    const answer = parseAnswer(json);
    if (answer === undefined) {
      throw new KeywardUnavailableError("keyward's answer is not a verification answer", {
        status: response.status,
      });
    }
    return answer;
  }
}

function nonNegative(name: string, value: number): number {
  if (!Number.isFinite(value) || value < 0) {
    throw new TypeError(`${name} must be a finite number >= 0, not ${String(value)}`);
  }
  return value;
}

function describe(e: unknown): string {
  if (e instanceof Error) {
    const cause = e.cause instanceof Error ? ` (${e.cause.message})` : "";
    return `${e.message}${cause}`;
  }
  return String(e);
}

/** `: code: message` from keyward's error body, if it is one. */
function errorText(json: unknown): string {
  const error = isObject(json) ? json["error"] : undefined;
  if (isObject(error) && typeof error["code"] === "string") {
    return `: ${error["code"]}: ${String(error["message"] ?? "")}`;
  }
  return "";
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** keyward's wire answer (snake_case) as the client's (camelCase), or `undefined` if it is not one. */
function parseAnswer(json: unknown): Answer | undefined {
  if (!isObject(json)) return undefined;
  if (json["active"] === false) {
    const reason = json["reason"];
    return Object.freeze({
      active: false,
      reason: typeof reason === "string" ? reason : "unknown",
    });
  }
  if (json["active"] !== true) return undefined;
  const { token_id: tokenId, owner, scopes, expires_at: expires } = json;
  if (
    typeof tokenId !== "string" ||
    !isObject(owner) ||
    typeof owner["id"] !== "string" ||
    typeof owner["name"] !== "string" ||
    !(owner["external_id"] === undefined || owner["external_id"] === null || typeof owner["external_id"] === "string") ||
    !Array.isArray(scopes) ||
    !scopes.every((s) => typeof s === "string")
  ) {
    return undefined;
  }
  let expiresAt: Date | null = null;
  if (expires !== undefined && expires !== null) {
    if (typeof expires !== "string") return undefined;
    expiresAt = new Date(expires);
    if (Number.isNaN(expiresAt.getTime())) return undefined;
  }
  return Object.freeze({
    active: true,
    tokenId,
    owner: Object.freeze({ id: owner["id"], name: owner["name"], externalId: owner["external_id"] ?? null }),
    scopes: Object.freeze([...(scopes as string[])]),
    expiresAt,
  });
}
