/**
 * keyward's TypeScript client: verify personal access tokens against a keyward server, with a
 * short cache of positive answers; Express middleware; a Fetch API `authorize(Request)`; the
 * management calls for tokens and, for platform backends, users.
 *
 * @packageDocumentation
 */

export {
  type ActiveAnswer,
  type Answer,
  type InactiveAnswer,
  type InactiveReason,
  type KeywardOptions,
  type Owner,
  type VerifyOptions,
  DEFAULT_CAPACITY,
  DEFAULT_TIMEOUT,
  DEFAULT_TTL,
  Keyward,
  KeywardUnavailableError,
} from "./client.js";
export {
  type Next,
  type RequestLike,
  type RequireScopesOptions,
  type ResponseLike,
  keywardAnswer,
  requireScopes,
} from "./express.js";
export { type Authorization, type AuthorizeOptions, authorize } from "./fetch.js";
export { isWellFormedToken } from "./format.js";
export { type ManagementOptions, KeywardApiError } from "./management.js";
export { type IssuedToken, type TokenManager, type TokenRecord, tokens } from "./tokens.js";
export { type User, type UserManager, type UserPage, users } from "./users.js";
