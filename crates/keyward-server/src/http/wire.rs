//! The wire format's one owner: every request and response body of the JSON API and of the
//! standard interfaces, each deriving its OpenAPI schema (none is written by hand), and the
//! error-response sets the handlers' documentation shares.
//!
//! Answers are built from domain types by the constructors here, which name every field they
//! carry: renaming a domain field breaks the build here, and renaming a wire field shows in the
//! snapshot tests (`tests/it/wire.rs`). The hot paths' answers (verification, introspection)
//! borrow from the verified token rather than clone it.

use keyward_core::{
    self as domain, ExternalId, RawSecret, Scopes, TokenId, TokenIdText, TokenName, UserId,
};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use time::OffsetDateTime;
use utoipa::{IntoResponses, ToSchema};

use crate::service::VerifiedToken;

use crate::service::{AuditEntry, AuditPage, TokenPage, UserPage};

/// `POST /v1/tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// The token's label.
    pub name: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// `30d`, a date (`2027-01-01`, midnight UTC), an RFC 3339 time, or `never`; the deployment
    /// default when absent.
    pub expires: Option<String>,
    /// The addresses it may be used from: CIDR ranges or single addresses, IPv4 or IPv6
    /// (`203.0.113.0/24`, `2001:db8::/32`). Absent or empty = anywhere.
    #[serde(default)]
    pub allowed_ips: Vec<String>,
    /// How many successful verifications it has (1 to 10^12); absent = unlimited.
    pub max_uses: Option<u64>,
    /// Sets its remaining uses back to `amount` every `every` (needs `max_uses`).
    pub refill: Option<RefillRequest>,
    /// At most `requests` successful verifications per window of `per` (windows aligned to
    /// the clock: `1m` = each calendar minute).
    pub rate_limit: Option<RateLimitRequest>,
}

/// A refill: `{"amount": 100, "every": "1d"}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefillRequest {
    /// The remaining uses after each refill.
    pub amount: u64,
    /// How often: a duration such as `1d` or `12h` (at most `366d`).
    pub every: String,
}

/// A rate limit: `{"requests": 100, "per": "1m"}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitRequest {
    /// Requests per window.
    pub requests: u64,
    /// The window: a duration from `1s` to `1d`.
    pub per: String,
}

impl CreateTokenRequest {
    /// The limits asked for, checked on their own.
    pub fn limits(&self) -> Result<domain::Limits, domain::LimitsError> {
        domain::Limits {
            allowed_ips: self
                .allowed_ips
                .iter()
                .map(|s| domain::IpRange::parse(s))
                .collect::<Result<_, _>>()?,
            max_uses: self.max_uses,
            refill: self
                .refill
                .as_ref()
                .map(|r| domain::Refill::new(r.amount, &r.every))
                .transpose()?,
            rate_limit: self
                .rate_limit
                .as_ref()
                .map(|r| domain::RateLimit::new(r.requests, &r.per))
                .transpose()?,
        }
        .checked()
    }
}

/// `PATCH /v1/tokens/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTokenRequest {
    /// The new label.
    pub name: Option<String>,
    /// New allowed addresses (`[]` or `null`: anywhere).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>)]
    pub allowed_ips: Option<Option<Vec<String>>>,
    /// A new use count (`null`: unlimited). Setting any limit starts the counts afresh.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>)]
    pub max_uses: Option<Option<u64>>,
    /// A new refill (`null`: none).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<RefillRequest>)]
    pub refill: Option<Option<RefillRequest>>,
    /// A new rate limit (`null`: none).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<RateLimitRequest>)]
    pub rate_limit: Option<Option<RateLimitRequest>>,
}

impl UpdateTokenRequest {
    /// Whether any limit is being set.
    pub fn sets_limits(&self) -> bool {
        self.allowed_ips.is_some()
            || self.max_uses.is_some()
            || self.refill.is_some()
            || self.rate_limit.is_some()
    }

    /// `current` with the limits this request sets, checked on their own.
    pub fn limits(&self, current: &domain::Limits) -> Result<domain::Limits, domain::LimitsError> {
        let mut limits = current.clone();
        if let Some(ips) = &self.allowed_ips {
            limits.allowed_ips = ips
                .iter()
                .flatten()
                .map(|s| domain::IpRange::parse(s))
                .collect::<Result<_, _>>()?;
        }
        if let Some(max) = self.max_uses {
            limits.max_uses = max;
        }
        if let Some(refill) = &self.refill {
            limits.refill = refill
                .as_ref()
                .map(|r| domain::Refill::new(r.amount, &r.every))
                .transpose()?;
        }
        if let Some(rate) = &self.rate_limit {
            limits.rate_limit = rate
                .as_ref()
                .map(|r| domain::RateLimit::new(r.requests, &r.per))
                .transpose()?;
        }
        limits.checked()
    }
}

/// `POST /v1/tokens/{id}/regenerate` (body optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegenerateTokenRequest {
    /// How long the old secret keeps working, e.g. `10m`.
    pub grace_period: Option<String>,
    /// A new expiry; by default the token keeps the one it has. A token acting cannot set one
    /// later than its own: a later one asked for is clamped to it.
    pub expires: Option<String>,
}

/// `DELETE /v1/tokens/{id}` (body optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeTokenRequest {
    /// Why, for the audit trail.
    pub reason: Option<String>,
}

/// `POST /v1/tokens/revoke`: revoke every token that meets all the conditions given.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRevokeRequest {
    /// Only this user's tokens: a user id (`usr_…`) or name.
    pub user: Option<String>,
    /// Only tokens created before this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub created_before: Option<OffsetDateTime>,
    /// Only tokens created after this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub created_after: Option<OffsetDateTime>,
    /// Only tokens whose scopes grant this one (`droplet:read` matches `droplet:*` too).
    pub scope: Option<String>,
    /// Only tokens not used since this time (RFC 3339): never used, or last used before it.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub unused_since: Option<OffsetDateTime>,
    /// Revoke every token of the deployment when no condition is given (refused otherwise).
    #[serde(default)]
    pub all: bool,
    /// List what would be revoked, revoking nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Why, for the audit trail (default `bulk revocation`).
    pub reason: Option<String>,
}

/// What a bulk revocation did, or on a dry run would do.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkRevokeResponse {
    /// How many tokens were revoked (on a dry run: would be).
    pub count: u64,
    /// On a dry run, the ids of the tokens the real run would revoke, in id order.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    pub ids: Option<Vec<TokenId>>,
}

/// One secret of a GitHub secret scanning report (`POST /v1/leaks/github`).
#[derive(Debug, Deserialize, ToSchema)]
pub struct GithubLeak {
    /// The secret as found.
    #[schema(value_type = String)]
    pub token: RawSecret,
    /// The token type the partner registered.
    #[serde(rename = "type", default)]
    pub token_type: String,
    /// Where it was found.
    pub url: Option<String>,
    /// What kind of place (`content`, `commit`, `gist`, …).
    pub source: Option<String>,
}

/// GitHub's feedback on one reported secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct GithubLeakFeedback {
    /// The SHA-256 of the secret as reported, in lowercase hex.
    pub token_hash: String,
    /// The type as reported.
    pub token_type: String,
    /// `true_positive` for a secret of this deployment, `false_positive` otherwise.
    pub label: LeakLabel,
}

/// Whether a reported secret was one of keyward's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LeakLabel {
    /// A secret of this deployment (revoked now, or not working already).
    TruePositive,
    /// Not a secret of this deployment.
    FalsePositive,
}

/// `GET /v1/revocable_token_types`: the types GitLab may send to `POST /v1/revoke_tokens`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RevocableTokenTypes {
    /// The type names.
    pub types: Vec<&'static str>,
}

/// One secret of a GitLab token revocation request (`POST /v1/revoke_tokens`).
#[derive(Debug, Deserialize, ToSchema)]
pub struct GitlabLeak {
    /// The type, one of `GET /v1/revocable_token_types`.
    #[serde(rename = "type")]
    pub token_type: String,
    /// The secret as found.
    #[schema(value_type = String)]
    pub token: RawSecret,
    /// Where it was found.
    pub location: Option<String>,
}

/// `POST /v1/leaks`: secrets an in-house scanner found.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeakReportRequest {
    /// The secrets (at most 1000).
    #[schema(value_type = Vec<String>)]
    pub tokens: Vec<RawSecret>,
    /// Where they were found (a scanner's name, a URL).
    pub source: Option<String>,
}

/// What `POST /v1/leaks` did.
#[derive(Debug, Serialize, ToSchema)]
pub struct LeakReportResponse {
    /// How many of the secrets were keyward's.
    pub found: u64,
    /// How many tokens were revoked now (the others were not working already).
    pub revoked: u64,
}

/// `POST /v1/verify`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The presented token.
    #[schema(value_type = String)]
    pub token: RawSecret,
    /// Scopes the request needs.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The end client's address, recorded as last-used IP.
    #[schema(value_type = Option<String>)]
    pub ip: Option<IpAddr>,
}

/// Paging for listings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Page size (1 to 100, default 50), as sent: see [`super::extract::page_limit`].
    pub limit: Option<String>,
    /// The `next` value of the previous page.
    pub after: Option<String>,
}

/// Paging for the audit trail.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Page size (1 to 100, default 50), as sent: see [`super::extract::page_limit`].
    pub limit: Option<String>,
    /// The `next` value of the previous page, as sent (a number; checked by the handler, so a
    /// bad one gets a message of ours rather than the deserializer's).
    pub before: Option<String>,
}

// ------------------------------------------------------------------------------- errors

/// Every error code an answer carries: `error.code` of the JSON API, and `error` of the OAuth
/// endpoints (RFC 6749 §5.2, RFC 6750 §3.1). Clients match on these: they never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No credential was sent.
    Unauthenticated,
    /// The credential is not an active token.
    InvalidToken,
    /// The token lacks a scope the request needs.
    InsufficientScope,
    /// A token tried to grant scopes it does not hold itself.
    ScopeExceedsCaller,
    /// The caller may not take this action at all (not an admin; a token acting on users).
    Forbidden,
    /// A malformed request (RFC 6749 §5.2, RFC 6750 §3.1), or one the service refuses.
    InvalidRequest,
    /// The caller may not do this to that token (RFC 6749 §5.2).
    UnauthorizedClient,
    /// The OAuth caller did not authenticate (RFC 6749 §5.2).
    InvalidClient,
    /// No such route or record (or not the caller's).
    NotFound,
    /// The route does not take this method.
    MethodNotAllowed,
    /// Not a valid token name.
    InvalidName,
    /// Not a valid scope.
    InvalidScope,
    /// A verification asked for a scope that is not in the deployment's catalog.
    UnknownScope,
    /// Not a valid expiry or grace period.
    InvalidExpiry,
    /// Not an acceptable password.
    InvalidPassword,
    /// The body is not the request the route takes.
    InvalidBody,
    /// The body is not JSON.
    MalformedJson,
    /// The query string is not the one the route takes.
    InvalidQuery,
    /// A header that decides the answer is malformed, repeated or contradicted.
    InvalidHeader,
    /// The original URI is ambiguous.
    InvalidUri,
    /// No forward-auth route matches.
    NoRoute,
    /// The body is not `application/json`.
    UnsupportedMediaType,
    /// The body is too large.
    PayloadTooLarge,
    /// The request conflicts with what is stored.
    Conflict,
    /// The token is not in a state that allows this (revoked, expired).
    InvalidState,
    /// The token store is unavailable.
    Unavailable,
    /// The token store is unavailable (RFC 6749 §5.2's name, on the OAuth endpoints).
    TemporarilyUnavailable,
    /// Too many requests at once; `Retry-After` says when to come back.
    Busy,
    /// The token may not be used from the client's address.
    IpNotAllowed,
    /// The token has no uses left (until its next refill; `Retry-After` says when).
    UsageExceeded,
    /// The token's rate limit is reached; `Retry-After` says when the window ends.
    RateLimited,
    /// A token's limits are not acceptable.
    InvalidLimits,
    /// The request took too long to answer.
    Timeout,
    /// Something broke inside; the cause is logged, never sent.
    Internal,
    /// Something broke inside (RFC 6749 §5.2's name, on the OAuth endpoints).
    ServerError,
}

/// Every error outside the OAuth endpoints.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorResponse<'a> {
    /// What went wrong.
    pub error: ErrorDetail<'a>,
}

/// The error's code and message.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail<'a> {
    /// Stable, machine-readable.
    pub code: ErrorCode,
    /// For people.
    pub message: &'a str,
}

/// RFC 6749 §5.2: errors of `/oauth/introspect` and `/oauth/revoke`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = OAuthError)]
pub struct OAuthErrorResponse<'a> {
    /// `invalid_request`, `invalid_client`, `invalid_token`, `insufficient_scope`,
    /// `unauthorized_client`, `temporarily_unavailable` or `server_error`.
    pub error: ErrorCode,
    /// For people.
    pub error_description: &'a str,
}

/// The 401 and 403 of an endpoint that takes a Bearer token and needs a scope.
#[derive(IntoResponses)]
pub enum BearerErrors {
    /// No token (challenge without error code) or not an active token (`invalid_token`)
    #[response(status = 401, headers(("WWW-Authenticate" = String, description = "RFC 6750 Bearer challenge")))]
    Unauthorized(ErrorResponse<'static>),
    /// The token lacks the scope the operation needs (`insufficient_scope`)
    #[response(status = 403, headers(("WWW-Authenticate" = String, description = "RFC 6750 Bearer challenge")))]
    Forbidden(ErrorResponse<'static>),
}

/// The 401 of an endpoint that takes a Bearer token (alone: for an endpoint that needs no
/// scope, or whose 403 says more than [`BearerErrors`]'s).
#[derive(IntoResponses)]
pub enum Unauthenticated {
    /// No token (challenge without error code) or not an active token (`invalid_token`)
    #[response(status = 401, headers(("WWW-Authenticate" = String, description = "RFC 6750 Bearer challenge")))]
    Unauthorized(ErrorResponse<'static>),
}

/// The 429 of a token whose uses or rate limit are spent.
#[derive(IntoResponses)]
pub enum Limited {
    /// The token's uses are spent (`usage_exceeded`) or its rate limit is (`rate_limited`)
    #[response(status = 429, headers(
        ("Retry-After" = u64, description = "Seconds until the token's next refill or rate window; absent for uses that never refill"),
        ("RateLimit-Policy" = String, description = "With a rate limit: `\"token\";q=<requests>;w=<seconds>`"),
        ("RateLimit" = String, description = "With a rate limit: `\"token\";r=<left>;t=<seconds to the window's end>`"),
    ))]
    TooManyRequests(ErrorResponse<'static>),
}

/// The refusals of a JSON body before it is read.
#[derive(IntoResponses)]
pub enum JsonBodyErrors {
    /// The body is too large
    #[response(status = 413)]
    TooLarge(ErrorResponse<'static>),
    /// The body is not JSON
    #[response(status = 415)]
    NotJson(ErrorResponse<'static>),
}

/// The 503 of an endpoint that needs the store.
#[derive(IntoResponses)]
pub enum StoreUnavailable {
    /// The token store is unavailable
    #[response(status = 503)]
    Unavailable(ErrorResponse<'static>),
}

/// The 503 of an OAuth endpoint.
#[derive(IntoResponses)]
pub enum OAuthStoreUnavailable {
    /// The token store is unavailable
    #[response(status = 503)]
    Unavailable(OAuthErrorResponse<'static>),
}

// ------------------------------------------------------------------------------- tokens

/// A token's state now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenState {
    /// Works.
    Active,
    /// Past its expiry.
    Expired,
    /// Revoked.
    Revoked,
}

impl From<domain::TokenState> for TokenState {
    fn from(state: domain::TokenState) -> Self {
        match state {
            domain::TokenState::Active => Self::Active,
            domain::TokenState::Expired => Self::Expired,
            domain::TokenState::Revoked => Self::Revoked,
        }
    }
}

/// A token as the API shows it: never the secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct Token {
    /// Public id, `tok_…`.
    #[schema(value_type = String)]
    pub id: TokenId,
    /// The owner's user id.
    #[schema(value_type = String)]
    pub owner: UserId,
    /// The owner's label for it.
    #[schema(value_type = String)]
    pub name: TokenName,
    /// What it may do.
    #[schema(value_type = Vec<String>)]
    pub scopes: Scopes,
    /// Prefix and last four characters of the current secret.
    pub hint: String,
    /// When it was made.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// When it stops working; null = never.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
    /// When its secret was last regenerated.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub regenerated_at: Option<OffsetDateTime>,
    /// When it was last used (recorded in batches, up to a few seconds late).
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<OffsetDateTime>,
    /// The client address of that use.
    #[schema(value_type = Option<String>)]
    pub last_used_ip: Option<IpAddr>,
    /// When it was revoked.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<OffsetDateTime>,
    /// Who revoked it.
    pub revoked_by: Option<String>,
    /// Why.
    pub revoke_reason: Option<String>,
    /// Its state now.
    pub state: TokenState,
    /// The addresses it may be used from (absent = anywhere).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Option<Vec<String>>)]
    pub allowed_ips: Vec<domain::IpRange>,
    /// How many uses it was given (absent = unlimited).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_uses: Option<u64>,
    /// Uses the store has not handed out yet (with `max_uses`). Instances lease uses in small
    /// batches, so a few may be held, unspent, by running instances.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
    /// How its uses refill: `{"amount", "every"}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub refill: Option<domain::Refill>,
    /// Its rate limit: `{"requests", "per"}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub rate_limit: Option<domain::RateLimit>,
}

impl Token {
    /// How `record` looks at `now`.
    pub fn new(record: domain::TokenRecord, now: OffsetDateTime) -> Self {
        let state = record.state(now).into();
        let domain::TokenRecord {
            id,
            owner,
            name,
            scopes,
            hint,
            created_at,
            expires_at,
            regenerated_at,
            last_used_at,
            last_used_ip,
            revoked_at,
            revoked_by,
            revoke_reason,
            limits,
            remaining,
            refilled_at: _,
        } = record;
        Self {
            id,
            owner,
            name,
            scopes,
            hint,
            created_at,
            expires_at,
            regenerated_at,
            last_used_at,
            last_used_ip,
            revoked_at,
            revoked_by,
            revoke_reason,
            state,
            allowed_ips: limits.allowed_ips,
            max_uses: limits.max_uses,
            remaining,
            refill: limits.refill,
            rate_limit: limits.rate_limit,
        }
    }
}

/// One token.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    /// The token.
    pub token: Token,
}

impl TokenResponse {
    /// `record` as it looks at `now`.
    pub fn new(record: domain::TokenRecord, now: OffsetDateTime) -> Self {
        Self {
            token: Token::new(record, now),
        }
    }
}

/// A token with its secret: only from create and regenerate (`Cache-Control: no-store`).
#[derive(Serialize, ToSchema)]
pub struct IssuedTokenResponse<'a> {
    /// The token.
    pub token: Token,
    /// The secret, shown this once.
    pub secret: &'a str,
}

impl<'a> IssuedTokenResponse<'a> {
    /// A token just issued, with its secret, as it looks at `now`.
    pub fn new(record: domain::TokenRecord, secret: &'a str, now: OffsetDateTime) -> Self {
        Self {
            token: Token::new(record, now),
            secret,
        }
    }
}

/// A page of tokens, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenListResponse {
    /// The tokens.
    pub tokens: Vec<Token>,
    /// Pass as `after` for the next page; null on the last.
    #[schema(value_type = Option<String>)]
    pub next: Option<TokenId>,
}

impl TokenListResponse {
    /// A page of tokens as they look at `now`.
    pub fn new(page: TokenPage, now: OffsetDateTime) -> Self {
        let TokenPage { tokens, next } = page;
        Self {
            tokens: tokens.into_iter().map(|t| Token::new(t, now)).collect(),
            next,
        }
    }
}

// ------------------------------------------------------------------------------- users

/// What kind of account a user is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UserKind {
    /// A person: may sign in to the web page.
    Person,
    /// A service account: never signs in; admins manage its tokens.
    Service,
}

impl From<UserKind> for domain::UserKind {
    fn from(kind: UserKind) -> Self {
        match kind {
            UserKind::Person => Self::Person,
            UserKind::Service => Self::Service,
        }
    }
}

impl From<domain::UserKind> for UserKind {
    fn from(kind: domain::UserKind) -> Self {
        match kind {
            domain::UserKind::Person => Self::Person,
            domain::UserKind::Service => Self::Service,
        }
    }
}

/// `POST /v1/users`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    /// The name: 1 to 128 of `a-z 0-9 . _ - @ +`, starting with a letter or digit, not `usr_…`.
    pub name: String,
    /// The platform's own id for the user (unique among users; 1 to 255 printable ASCII).
    pub external_id: Option<String>,
    /// An email address.
    pub email: Option<String>,
    /// Whether the user is an admin (manages users; may hold `users:*` and `tokens:issue`).
    #[serde(default)]
    pub admin: bool,
    /// `person` (the default) or `service`.
    pub kind: Option<UserKind>,
    /// A password for the web page (people only; 12 to 1024 characters).
    #[schema(value_type = Option<String>)]
    pub password: Option<RawSecret>,
}

/// `PATCH /v1/users/{id}`: only the fields present change; `null` removes an email or an
/// external id.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    /// A new name.
    pub name: Option<String>,
    /// A new email address, or `null` to remove it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub email: Option<Option<String>>,
    /// A new external id, or `null` to remove it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub external_id: Option<Option<String>>,
    /// Make an admin, or not.
    pub admin: Option<bool>,
    /// Disable (sign-in refused, sessions ended, tokens refused but not revoked) or enable.
    pub disabled: Option<bool>,
}

/// A field that was sent, even as `null` (`Some(None)`), told apart from one that was not
/// (`None`, by `#[serde(default)]`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Paging and filtering for `GET /v1/users`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserListQuery {
    /// Only the user with this external id.
    pub external_id: Option<String>,
    /// Page size (1 to 100, default 50), as sent: see [`super::extract::page_limit`].
    pub limit: Option<String>,
    /// The `next` value of the previous page.
    pub before: Option<String>,
}

/// A user.
#[derive(Debug, Serialize, ToSchema)]
pub struct User {
    /// `usr_…`
    #[schema(value_type = String)]
    pub id: UserId,
    /// The name.
    pub name: String,
    /// `person` or `service`.
    pub kind: UserKind,
    /// The platform's id for the user; null when none.
    #[schema(required = true)]
    pub external_id: Option<String>,
    /// Email address; null when none.
    #[schema(required = true)]
    pub email: Option<String>,
    /// Whether the user is an admin.
    pub admin: bool,
    /// When the user was added.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// When the user was disabled; null when they are not.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub disabled_at: Option<OffsetDateTime>,
}

impl From<domain::User> for User {
    fn from(user: domain::User) -> Self {
        Self {
            id: user.id,
            name: user.name.as_str().to_owned(),
            kind: user.kind.into(),
            external_id: user.external_id.map(|e| e.as_str().to_owned()),
            email: user.email.map(|e| e.as_str().to_owned()),
            admin: user.is_admin,
            created_at: user.created_at,
            disabled_at: user.disabled_at,
        }
    }
}

/// A page of users, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserListResponse {
    /// The users.
    pub users: Vec<User>,
    /// Pass as `before` for the next page; null on the last.
    #[schema(value_type = Option<String>)]
    pub next: Option<UserId>,
}

impl From<UserPage> for UserListResponse {
    fn from(page: UserPage) -> Self {
        let UserPage { users, next } = page;
        Self {
            users: users.into_iter().map(User::from).collect(),
            next,
        }
    }
}

// ------------------------------------------------------------------------------- verify

/// A token's owner.
#[derive(Debug, Serialize, ToSchema)]
pub struct Owner<'a> {
    /// User id.
    #[schema(value_type = String)]
    pub id: &'a UserId,
    /// User name.
    pub name: &'a str,
    /// The platform's id for the user; null when it gave none.
    #[schema(required = true)]
    pub external_id: Option<&'a str>,
}

/// `"active": true` of an answer: always `true` on the wire, and in the document a boolean that
/// can only be `true`, so a schema check tells the two shapes of an answer apart.
#[derive(Debug, Clone, Copy)]
pub struct Active;

/// `"active": false` of an answer: always `false`, documented as such.
#[derive(Debug, Clone, Copy)]
pub struct Inactive;

macro_rules! constant_bool {
    ($ty:ident, $value:literal) => {
        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_bool($value)
            }
        }

        impl utoipa::PartialSchema for $ty {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::Boolean)
                    .enum_values(Some([$value]))
                    .into()
            }
        }

        impl ToSchema for $ty {}
    };
}

constant_bool!(Active, true);
constant_bool!(Inactive, false);

/// `POST /v1/verify` for an active token.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyActive<'a> {
    /// Always true.
    pub active: Active,
    /// The token's id.
    #[schema(value_type = String)]
    pub token_id: TokenIdText,
    /// Its owner.
    pub owner: Owner<'a>,
    /// Its scopes.
    #[schema(value_type = Vec<String>)]
    pub scopes: &'a Scopes,
    /// Its expiry; null = never.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub expires_at: Option<OffsetDateTime>,
    /// Uses left, when the token has `max_uses`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
    /// Its rate limit's state, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratelimit: Option<RateLimitState>,
}

/// A rate limit's state in a verification answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct RateLimitState {
    /// Requests allowed per window.
    pub limit: u32,
    /// Requests left in the current window.
    pub remaining: u64,
    /// When the window ends (unix seconds).
    pub reset: i64,
}

impl From<&crate::service::RateState> for RateLimitState {
    fn from(r: &crate::service::RateState) -> Self {
        Self {
            limit: r.limit,
            remaining: r.remaining,
            reset: r.reset,
        }
    }
}

impl<'a> VerifyActive<'a> {
    /// The answer for `token`, borrowed from it, with what its limits left.
    pub fn new(token: &'a VerifiedToken, allowance: &crate::service::Allowance) -> Self {
        Self {
            active: Active,
            token_id: token.id_text(),
            owner: Owner {
                id: token.owner_id(),
                name: token.owner_name().as_str(),
                external_id: token.owner_external_id().map(ExternalId::as_str),
            },
            scopes: token.scopes(),
            expires_at: token.expires_at(),
            remaining: allowance.remaining,
            ratelimit: allowance.rate.as_ref().map(RateLimitState::from),
        }
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InactiveReason {
    /// Not a keyward token, or a bad checksum (refused before any lookup).
    Malformed,
    /// No such token.
    Unknown,
    /// Past its expiry.
    Expired,
    /// Revoked, or replaced by a regeneration.
    Revoked,
    /// Lacks a scope asked for.
    InsufficientScope,
    /// Its owner is disabled.
    OwnerDisabled,
    /// Presented from an address outside its `allowed_ips` (or with no `ip` given).
    IpNotAllowed,
    /// No uses left (until its next refill).
    UsageExceeded,
    /// Its rate limit is reached for the current window.
    RateLimited,
}

impl From<domain::InactiveReason> for InactiveReason {
    fn from(reason: domain::InactiveReason) -> Self {
        match reason {
            domain::InactiveReason::Malformed => Self::Malformed,
            domain::InactiveReason::Unknown => Self::Unknown,
            domain::InactiveReason::Expired => Self::Expired,
            domain::InactiveReason::Revoked => Self::Revoked,
            domain::InactiveReason::InsufficientScope => Self::InsufficientScope,
            domain::InactiveReason::OwnerDisabled => Self::OwnerDisabled,
            domain::InactiveReason::IpNotAllowed => Self::IpNotAllowed,
            domain::InactiveReason::UsageExceeded => Self::UsageExceeded,
            domain::InactiveReason::RateLimited => Self::RateLimited,
        }
    }
}

/// `POST /v1/verify` for any other token.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyInactive {
    /// Always false.
    pub active: Inactive,
    /// Why.
    pub reason: InactiveReason,
    /// Seconds until it may succeed again (`rate_limited`, and `usage_exceeded` with a refill).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<i64>,
    /// Its rate limit's state, when it was refused for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratelimit: Option<RateLimitState>,
}

impl VerifyInactive {
    /// The answer for a token refused for `reason`.
    pub fn new(reason: domain::InactiveReason) -> Self {
        Self {
            active: Inactive,
            reason: reason.into(),
            retry_after: None,
            ratelimit: None,
        }
    }

    /// The answer for a token refused for one of its limits at `now`.
    pub fn limited(
        reason: domain::InactiveReason,
        allowance: &crate::service::Allowance,
        now: i64,
    ) -> Self {
        Self {
            retry_after: allowance.retry_after(reason, now),
            ratelimit: (reason == domain::InactiveReason::RateLimited)
                .then(|| allowance.rate.as_ref().map(RateLimitState::from))
                .flatten(),
            ..Self::new(reason)
        }
    }
}

/// The verification answer: one of two shapes, told apart by `active`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum VerifyAnswer<'a> {
    /// The token is active and grants the scopes asked for.
    Active(VerifyActive<'a>),
    /// It is not, or does not.
    Inactive(VerifyInactive),
}

// ------------------------------------------------------------------------------- audit

/// Who did something.
#[derive(Debug, Serialize, ToSchema)]
pub struct Actor {
    /// The acting user.
    #[schema(value_type = Option<String>)]
    pub user: Option<UserId>,
    /// The token they acted with.
    #[schema(value_type = Option<String>)]
    pub token: Option<TokenId>,
    /// A readable description.
    pub label: String,
}

impl From<domain::Actor> for Actor {
    fn from(actor: domain::Actor) -> Self {
        let domain::Actor { user, token, label } = actor;
        Self { user, token, label }
    }
}

/// One audit event.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEvent {
    /// Position in the trail.
    pub seq: i64,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
    /// What: `token.created`, `token.revoked`, …
    #[schema(value_type = String)]
    pub kind: domain::AuditKind,
    /// Who.
    pub actor: Actor,
    /// The user it concerns.
    #[schema(value_type = Option<String>)]
    pub subject_user: Option<UserId>,
    /// The token it concerns.
    #[schema(value_type = Option<String>)]
    pub token_id: Option<TokenId>,
    /// The client address.
    #[schema(value_type = Option<String>)]
    pub ip: Option<IpAddr>,
    /// A reason or detail.
    pub detail: Option<String>,
}

impl From<AuditEntry> for AuditEvent {
    fn from(stored: AuditEntry) -> Self {
        let AuditEntry { seq, event } = stored;
        let domain::AuditEvent {
            at,
            kind,
            actor,
            subject_user,
            token_id,
            ip,
            detail,
        } = event;
        Self {
            seq,
            at,
            kind,
            actor: actor.into(),
            subject_user,
            token_id,
            ip,
            detail,
        }
    }
}

/// A page of audit events, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditListResponse {
    /// The events.
    pub events: Vec<AuditEvent>,
    /// Pass as `before` for the next page; null on the last.
    pub next: Option<i64>,
}

impl AuditListResponse {
    /// The answer for one page of the trail.
    pub fn new(page: AuditPage) -> Self {
        let AuditPage { events, next } = page;
        Self {
            events: events.into_iter().map(AuditEvent::from).collect(),
            next,
        }
    }
}

// ------------------------------------------------------------------------------- oauth

/// `POST /oauth/introspect` and `POST /oauth/revoke` (form-encoded). Unknown parameters are
/// ignored, as RFC 6749 §3.1 requires.
#[derive(Debug, Deserialize, ToSchema)]
pub struct OAuthTokenRequest {
    /// The token asked about (or to revoke).
    #[schema(value_type = String)]
    pub token: RawSecret,
    /// `access_token` or `refresh_token`; a hint only, ignored (keyward has one kind of token).
    pub token_type_hint: Option<String>,
}

/// RFC 7662 §2.2: the answer for an active token. `client_id` is left out: a personal access
/// token is issued to a person (`username`, `sub`), not to an OAuth client.
#[derive(Debug, Serialize, ToSchema)]
pub struct IntrospectionResponse<'a> {
    /// Always true.
    pub active: Active,
    /// The token's scopes, space-separated.
    pub scope: String,
    /// The owner's user name.
    pub username: &'a str,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Expiry, seconds since the epoch; absent for a token that never expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// When this secret was issued, seconds since the epoch.
    pub iat: i64,
    /// The owner's user id.
    #[schema(value_type = String)]
    pub sub: &'a UserId,
    /// The token's id.
    #[schema(value_type = String)]
    pub jti: TokenIdText,
}

/// RFC 7662 §2.2: the whole answer for any token that is not active, whatever the reason.
#[derive(Debug, Serialize, ToSchema)]
pub struct InactiveIntrospectionResponse {
    /// Always false.
    pub active: Inactive,
}

impl<'a> IntrospectionResponse<'a> {
    /// The answer for `token`, borrowed from it where it can be.
    pub fn new(token: &'a VerifiedToken) -> Self {
        Self {
            active: Active,
            scope: token.scopes().to_string(),
            username: token.owner_name().as_str(),
            token_type: "Bearer",
            exp: token.expires_at().map(OffsetDateTime::unix_timestamp),
            iat: token.issued_at().unix_timestamp(),
            sub: token.owner_id(),
            jti: token.id_text(),
        }
    }
}

/// RFC 7662's answer: one of two shapes, told apart by `active`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum IntrospectionAnswer<'a> {
    /// The token is active.
    Active(IntrospectionResponse<'a>),
    /// It is not, whatever the reason.
    Inactive(InactiveIntrospectionResponse),
}

impl<'a> IntrospectionAnswer<'a> {
    /// The answer for `token`, or the inactive one when there is none.
    pub fn new(token: Option<&'a VerifiedToken>) -> Self {
        match token {
            Some(token) => Self::Active(IntrospectionResponse::new(token)),
            None => Self::Inactive(InactiveIntrospectionResponse { active: Inactive }),
        }
    }
}

// ------------------------------------------------------------------------------- ops

/// `{"status": ...}` of `/healthz` and `/readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    /// `ok` or `ready`.
    pub status: &'static str,
}

impl Status {
    /// `/healthz`: the process serves requests.
    pub const OK: Self = Self { status: "ok" };
    /// `/readyz`: the store answers.
    pub const READY: Self = Self { status: "ready" };
}

/// Longest answer [`json_response`] expects; a longer one costs a reallocation, nothing more.
const ANSWER_CAPACITY: usize = 384;

/// A small JSON answer (the hot endpoints' answers), serialized into one buffer sized for it
/// and handed to the body without a copy.
pub fn json_response(value: &impl Serialize) -> axum::response::Response {
    use axum::http::{HeaderValue, header::CONTENT_TYPE};
    use axum::response::IntoResponse;
    let mut body = Vec::with_capacity(ANSWER_CAPACITY);
    match serde_json::to_writer(&mut body, value) {
        Ok(()) => (
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            body,
        )
            .into_response(),
        Err(e) => super::ApiError::from(crate::service::ServiceError::Internal(e.to_string()))
            .into_response(),
    }
}

// ------------------------------------------------------------------------------- events

/// One event: the body of `GET /v1/events`' entries and of every webhook delivery, byte for
/// byte the same for one event wherever it is read.
#[derive(Debug, Serialize, ToSchema)]
pub struct Event {
    /// The event's id (`evt_…`): the cursor of `GET /v1/events`, and the `webhook-id` of its
    /// deliveries.
    #[schema(value_type = String)]
    pub id: domain::EventId,
    /// `token.created`, `token.revoked`, `user.deleted`, …
    #[serde(rename = "type")]
    pub event_type: String,
    /// When it happened (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub timestamp: OffsetDateTime,
    /// What it concerns: `token_id`, `user_id`, `actor` (`label`, `user_id`, `token_id`),
    /// `ip`, `detail`, each when known. Never a secret.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

impl Event {
    /// The event as stored. Its `data` was written as a JSON object by the store; anything else
    /// (a row not written by keyward) is sent as an empty object rather than failing the read.
    pub fn new(stored: keyward_store::StoredEvent) -> Self {
        let keyward_store::StoredEvent {
            seq: _,
            id,
            event_type,
            at,
            token_id: _,
            user_id: _,
            data,
        } = stored;
        let data = serde_json::from_str(&data)
            .ok()
            .filter(serde_json::Value::is_object)
            .unwrap_or_else(|| serde_json::Value::Object(serde_json::Map::new()));
        Self {
            id,
            event_type,
            timestamp: at,
            data,
        }
    }
}

/// Reading the events.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Page size (1 to 100, default 50), as sent.
    pub limit: Option<String>,
    /// The id of the last event already read, as sent.
    pub after: Option<String>,
}

/// Events in order, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventListResponse {
    /// The events after `after`.
    pub events: Vec<Event>,
    /// Pass as `after` to read on (the last event's id; the `after` given when there is none
    /// yet, so a follower keeps its place).
    #[schema(value_type = Option<String>)]
    pub next: Option<domain::EventId>,
}

/// One webhook delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDelivery {
    /// The webhook's URL.
    pub webhook: String,
    /// The event delivered.
    #[schema(value_type = String)]
    pub event_id: domain::EventId,
    /// Its type.
    pub event_type: String,
    /// `pending`, `delivered` or `failed` (retries ran out).
    pub state: String,
    /// Attempts so far.
    pub attempts: u32,
    /// When it was queued.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// When it is tried next, while pending.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_attempt_at: Option<OffsetDateTime>,
    /// When it was last tried.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_attempt_at: Option<OffsetDateTime>,
    /// The last answer's HTTP status, if the webhook answered.
    pub last_status: Option<u16>,
    /// What went wrong last.
    pub last_error: Option<String>,
    /// When it was delivered or given up.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<OffsetDateTime>,
}

impl From<keyward_store::DeliveryRecord> for WebhookDelivery {
    fn from(record: keyward_store::DeliveryRecord) -> Self {
        let keyward_store::DeliveryRecord {
            webhook,
            event_id,
            event_type,
            state,
            attempts,
            created_at,
            next_attempt_at,
            last_attempt_at,
            last_status,
            last_error,
            finished_at,
        } = record;
        Self {
            webhook,
            event_id,
            event_type,
            state: state.as_str().to_owned(),
            attempts,
            created_at,
            next_attempt_at: (state == keyward_store::DeliveryState::Pending)
                .then_some(next_attempt_at),
            last_attempt_at,
            last_status,
            last_error,
            finished_at,
        }
    }
}

/// Listing webhook deliveries.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    /// Page size (1 to 100, default 50), as sent.
    pub limit: Option<String>,
    /// Only `pending`, `delivered` or `failed` ones, as sent.
    pub state: Option<String>,
}

/// Webhook deliveries, newest event first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryListResponse {
    /// The deliveries.
    pub deliveries: Vec<WebhookDelivery>,
}
