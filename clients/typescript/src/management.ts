/**
 * What the management calls (`tokens`, `users`) share: one authenticated JSON call to keyward's
 * HTTP API, and how its refusals and failures surface. Nothing here is cached.
 */

import { type Keyward, KeywardUnavailableError } from "./client.js";

/** keyward refused a management call: 4xx with its error code (`not_found`, `invalid_token`, …). */
export class KeywardApiError extends Error {
  override readonly name = "KeywardApiError";
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** How the management calls reach keyward. */
export interface ManagementOptions {
  /** The `fetch` to use (default: the platform's). */
  fetch?: typeof fetch;
  /** How long one call may take, in milliseconds (default 10 000). */
  timeout?: number;
}

/** One call: the JSON object keyward answered (`{}` for 204 No Content). */
export type Call = (method: string, path: string, body?: unknown) => Promise<Record<string, unknown>>;

/**
 * The calls of the token `secret` against `keyward`'s server. Refusals (4xx) reject with
 * {@link KeywardApiError}; no answer, 5xx or an unreadable body with {@link KeywardUnavailableError}.
 */
export function caller(keyward: Keyward, secret: string, options: ManagementOptions = {}): Call {
  const doFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  const timeout = options.timeout ?? 10_000;
  return async (method, path, body) => {
    const headers: Record<string, string> = { authorization: `Bearer ${secret}`, accept: "application/json" };
    if (body !== undefined) headers["content-type"] = "application/json";
    let response: Response;
    try {
      response = await doFetch(`${keyward.url}${path}`, {
        method,
        headers,
        signal: AbortSignal.timeout(timeout),
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    } catch (cause) {
      throw new KeywardUnavailableError(`keyward at ${keyward.url} did not answer`, { cause });
    }
    if (response.status === 204) return {};
    let json: unknown;
    try {
      json = await response.json();
    } catch (cause) {
      throw new KeywardUnavailableError(`keyward answered ${response.status} with a body that is not JSON`, {
        status: response.status,
        cause,
      });
    }
    const record = typeof json === "object" && json !== null ? (json as Record<string, unknown>) : {};
    if (response.status >= 400 && response.status < 500) {
      const error = (record["error"] ?? {}) as { code?: unknown; message?: unknown };
      throw new KeywardApiError(response.status, String(error.code ?? "unknown"), String(error.message ?? ""));
    }
    if (!response.ok) {
      throw new KeywardUnavailableError(`keyward answered ${response.status}`, { status: response.status });
    }
    return record;
  };
}
