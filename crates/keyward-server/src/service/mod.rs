//! The service: keyward's use cases, shared by the HTTP API, the web page and the command line.
//!
//! Handlers and commands parse their input into core types, get a [`Caller`] from the service
//! (a bearer token, a web session, or the operator), and call one method here. The rules (who
//! may do what, in [`caller`]; scope ceilings, lifetimes, the audit trail) live here and in
//! `keyward-core`; the store only persists.
//!
//! One module per use case: [`verification`] (the hot path: cache, hash table, usage, metrics),
//! [`tokens`], [`bulk`] (revoking many tokens at once), [`leaks`] (reports of leaked
//! secrets), [`notices`] (expiry reminders), [`users`], [`sessions`] (the web page's sign-in,
//! sessions and passwords) and [`gateway`] (forward-auth, OAuth introspection and revocation).

pub mod bulk;
pub mod caller;
mod error;
pub mod events;
pub mod gateway;
pub mod keys;
pub mod leaks;
pub mod notices;
pub mod sessions;
pub mod tokens;
pub mod users;
pub mod verification;

pub use bulk::{BulkRevocation, BulkRevokeRequest};
pub use caller::{Action, Caller, CallerKind, TokenCaller};
pub use error::{ServiceError, ServiceResult};
pub use events::{WebhookSecret, WebhookSettings};
pub use gateway::{ForwardAuthRoute, ForwardAuthRoutes, SecretRevocation};
pub use leaks::{
    GithubLeakSettings, GitlabLeakSettings, Leak, LeakSettings, LeakVerdict, PresharedToken,
};
pub use sessions::oidc::{
    AdminClaim, OidcClientSecret, OidcSettings, SsoCallback, SsoRefusal, SsoSignIn, SsoStart,
};
pub use sessions::{PasswordChange, SessionSecret, SignIn, SignInForm, WebSession};
pub use tokens::{AuditEntry, AuditPage, Issued, RegenerateOptions, TokenPage};
pub use users::{OWNER_DELETED, UserChanges, UserPage, UserRequest};
pub use verification::{
    Allowance, CachedToken, KnownHashes, LATENCY_SAMPLE_EVERY, REUSE_DETECTION,
    ROTATED_SECRET_REUSED, RateState, SnapshotError, Verdict, VerifiedToken, VerifyCache, WarmUp,
    warm_target,
};

use arc_swap::ArcSwap;
use keyward_core::{
    AuditEvent, AuditKind, Catalog, Clock, KeyRing, LifetimePolicy, NotifyBefore, Prefix,
    TokenHash, TokenId, UserId,
};
use keyward_store::{Store, StoreResult};
use std::sync::Arc;
use std::time::Duration as StdDuration;
use time::OffsetDateTime;

use verification::{UsageBatch, VerifyMetrics};

/// Longest revocation reason, in characters.
pub const MAX_REASON_CHARS: usize = 500;
/// Most records one listing page returns.
pub const MAX_PAGE: u32 = 100;
/// Records in a listing page when the caller names no size.
pub const DEFAULT_PAGE: u32 = 50;

/// A deployment's rules.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The prefix of new tokens.
    pub prefix: Prefix,
    /// The scopes tokens may carry.
    pub catalog: Catalog,
    /// How long tokens may live.
    pub policy: LifetimePolicy,
    /// How many secrets the verification cache keeps.
    pub cache_capacity: u64,
    /// Whether `keyward serve` warms the verification cache at start-up, most recently used
    /// tokens first ([`Keyward::warm_cache`]).
    pub warm_cache: bool,
    /// Where `keyward serve` writes the verification cache at a clean shutdown, for the next
    /// start-up's warm-up to read back instead of the store (`cache_snapshot`; on SQLite only:
    /// see [`Keyward::save_cache_snapshot`]). `None`: no snapshot.
    pub cache_snapshot: Option<std::path::PathBuf>,
    /// How often `keyward serve` also writes that snapshot while it runs, so that a start after
    /// a crash (no clean shutdown) finds a recent one (`cache_snapshot_every`).
    pub cache_snapshot_every: StdDuration,
    /// Whether the web page's session cookie is always marked `Secure` (set it when keyward is
    /// served over HTTPS; without it, the cookie is `Secure` only on requests that arrive with
    /// `X-Forwarded-Proto: https`).
    pub secure_cookies: bool,
    /// Which scopes a request proxied to `/v1/auth` needs, by method and path.
    pub forward_auth: ForwardAuthRoutes,
    /// Whether `/metrics` answers only to a bearer token holding `metrics:read` (it is open
    /// to anyone who reaches it otherwise).
    pub metrics_require_token: bool,
    /// Single sign-on through an OpenID provider, if set up.
    pub oidc: Option<OidcSettings>,
    /// Where events are sent (`[[webhooks]]`).
    pub webhooks: Vec<WebhookSettings>,
    /// How long a webhook delivery is retried before it is marked failed.
    pub webhook_retry_for: time::Duration,
    /// Email to tokens' owners (`[smtp]`), if set up.
    pub smtp: Option<crate::email::SmtpSettings>,
    /// Which leak reporters outside keyward are accepted (`[leaks.github]`, `[leaks.gitlab]`).
    pub leaks: LeakSettings,
    /// When owners are reminded that a token expires (`token.expiring`); empty: never.
    pub notify_before: NotifyBefore,
    /// How often each instance looks for tokens due for a reminder or at their expiry.
    pub notify_interval: StdDuration,
    /// Whether a replaced secret presented after its grace period revokes the token (it is
    /// recorded as `token.rotated_secret_used` either way).
    pub revoke_on_reuse: bool,
    /// Whether every new token must have `allowed_ips`.
    pub require_allowed_ips: bool,
    /// The most tokens, neither revoked nor expired, a user may have (0 = no cap).
    pub max_tokens_per_user: u32,
}

/// How often each instance looks for expiry notices to send, by default: well within the minute
/// a notice is promised in.
pub const DEFAULT_NOTIFY_INTERVAL: StdDuration = StdDuration::from_secs(20);

/// Default [`Settings::cache_snapshot_every`]: Redis's first `save` rule. Over 10^6 cached
/// tokens a snapshot takes about half a second of one core and writes 57 MB (BENCHMARKS.md
/// §17), so every five minutes costs under 0.2 % of a core; the change log replays the writes
/// since (it keeps a day).
pub const DEFAULT_CACHE_SNAPSHOT_EVERY: StdDuration = StdDuration::from_secs(300);

impl Default for Settings {
    fn default() -> Self {
        Self {
            prefix: Prefix::default(),
            catalog: Catalog::sample(),
            policy: LifetimePolicy::default(),
            cache_capacity: 1_000_000,
            warm_cache: true,
            cache_snapshot: None,
            cache_snapshot_every: DEFAULT_CACHE_SNAPSHOT_EVERY,
            secure_cookies: false,
            forward_auth: ForwardAuthRoutes::default(),
            metrics_require_token: false,
            oidc: None,
            webhooks: Vec::new(),
            webhook_retry_for: time::Duration::days(1),
            smtp: None,
            leaks: LeakSettings::default(),
            notify_before: NotifyBefore::default(),
            notify_interval: DEFAULT_NOTIFY_INTERVAL,
            revoke_on_reuse: false,
            require_allowed_ips: false,
            max_tokens_per_user: 0,
        }
    }
}

/// keyward's use cases over one store. Each module of the service adds its methods.
pub struct Keyward {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// The server keys: swapped whole when the ring changes (`keyward key rotate`), read with
    /// one atomic load on the hot path.
    keys: ArcSwap<KeyRing>,
    settings: Settings,
    cache: VerifyCache,
    usage: UsageBatch,
    expired_noted: moka::sync::Cache<TokenId, ()>,
    /// Tokens whose replaced secret was presented lately, with when (unix seconds): one event
    /// per token a minute.
    reuse_noted: moka::sync::Cache<TokenId, i64>,
    metrics: VerifyMetrics,
    throttle: sessions::SignInThrottle,
    passwords: sessions::PasswordPool,
    oidc: Option<sessions::oidc::Provider>,
    key_check: keys::KeyCheck,
    /// Old-key secrets being moved to the current key, so a burst of uses moves each once.
    rekeying: moka::sync::Cache<TokenHash, ()>,
    /// GitHub's secret scanning keys, when its reports are accepted.
    github_keys: Option<leaks::GithubKeys>,
}

impl Keyward {
    /// Builds the service. Install the metrics recorder first if metrics are wanted.
    pub async fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        keys: impl Into<KeyRing>,
        settings: Settings,
    ) -> StoreResult<Self> {
        let cache = VerifyCache::new(store.as_ref(), settings.cache_capacity).await?;
        let oidc = settings
            .oidc
            .clone()
            .map(sessions::oidc::Provider::new)
            .transpose()
            // Settings that passed `OidcSettings::check` fail here only if the TLS backend cannot
            // load: keyward cannot reach the provider, and says so at start-up.
            .map_err(keyward_store::StoreError::unavailable)?;
        let github_keys = settings
            .leaks
            .github
            .as_ref()
            .map(leaks::GithubKeys::new)
            .transpose()
            // As for the OpenID provider: only a TLS backend that cannot load fails here.
            .map_err(|e| keyward_store::StoreError::unavailable(e.to_string()))?;
        Ok(Self {
            store,
            clock,
            keys: ArcSwap::from_pointee(keys.into()),
            settings,
            cache,
            usage: UsageBatch::default(),
            // One audit event per expired token per hour is enough to see it is still in use.
            expired_noted: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(StdDuration::from_secs(3600))
                .build(),
            // Anyone holding an old secret can present it in a loop: one event a minute is
            // enough, and bounds the writes it causes.
            reuse_noted: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(StdDuration::from_secs(60))
                .build(),
            metrics: VerifyMetrics::new(),
            throttle: sessions::SignInThrottle::default(),
            passwords: sessions::PasswordPool::per_core(),
            oidc,
            key_check: keys::KeyCheck::default(),
            rekeying: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(StdDuration::from_secs(60))
                .build(),
            github_keys,
        })
    }

    /// Starts loading the set of every stored hash in the background (see [`KnownHashes`]):
    /// once loaded, a token that was never issued is answered `unknown` without a store read.
    /// `keyward serve` calls it at start-up; until the load completes (a few seconds for
    /// millions of tokens), verification reads the store on a miss, as before.
    pub fn track_known_hashes(&self) {
        let known = Arc::downgrade(self.cache.known());
        tokio::spawn(KnownHashes::load(known, Arc::clone(&self.store)));
    }

    /// Starts warming the verification cache in the background, the most recently used tokens'
    /// secrets first, up to [`warm_target`] of its capacity (see `verification::warm`).
    /// `keyward serve` calls it at start-up, unless `warm_cache` is off; verification answers
    /// meanwhile as it always does (a miss reads the store). The task ends when the warm-up is
    /// done or the service is dropped; awaiting it gives how it went (it never fails: errors
    /// are logged).
    pub fn warm_cache(self: &Arc<Self>) -> tokio::task::JoinHandle<WarmUp> {
        self.warm_cache_hottest_first(verification::HOTTEST)
    }

    /// [`Self::warm_cache`], reading only the `hottest` most recently used secrets in that order
    /// when the cache can hold every secret the store has, and the rest in the order the store
    /// keeps its tokens, which it reads faster (`warm_cache` reads the 50,000 hottest first).
    pub fn warm_cache_hottest_first(
        self: &Arc<Self>,
        hottest: u64,
    ) -> tokio::task::JoinHandle<WarmUp> {
        tokio::spawn(verification::warm(Arc::downgrade(self), hottest))
    }

    /// Writes the verification cache to `path` (`keyward serve` does every
    /// `cache_snapshot_every` and at a clean shutdown, when `cache_snapshot` is set), for the
    /// next start-up's warm-up to load instead of reading the store: every entry of a token
    /// without limits, the change cursor they are coherent with, and a seal also kept in the
    /// store, all under a MAC keyed from the server key (see `verification::snapshot`). Returns
    /// the entries written, or `None` when the store keeps no seal (PostgreSQL, whose instances
    /// own no file of the store's). Verifications go on meanwhile; calls are taken one at a time.
    pub async fn save_cache_snapshot(
        &self,
        path: &std::path::Path,
    ) -> Result<Option<u64>, SnapshotError> {
        verification::save_snapshot(self, path).await
    }

    /// The set of known hashes (for readiness and metrics).
    pub fn known_hashes(&self) -> &KnownHashes {
        self.cache.known()
    }

    /// The deployment's rules.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Whether this instance can answer: the store answers a trivial query, and holds no active
    /// token hashed under a server key this instance lacks. The error says why not.
    pub async fn readiness(&self) -> ServiceResult<()> {
        self.store.ping().await.map_err(ServiceError::from)?;
        self.check_keys().await
    }

    /// The current time, to the second (the precision records are kept at).
    pub fn now(&self) -> OffsetDateTime {
        let now = self.clock.now();
        now.replace_nanosecond(0).unwrap_or(now)
    }
}

impl Keyward {
    /// The audit event of `caller` doing `kind` to `subject` (and `token`) at `at`.
    fn audit(
        &self,
        caller: &Caller,
        kind: AuditKind,
        at: OffsetDateTime,
        subject: &UserId,
        token: Option<&TokenId>,
    ) -> AuditEvent {
        AuditEvent {
            at,
            kind,
            actor: caller.actor(),
            subject_user: Some(subject.clone()),
            token_id: token.cloned(),
            ip: caller.ip(),
            detail: None,
        }
    }
}

/// A unix second as a time (the clamp is unreachable for any clock this side of year 9999).
fn unix_time(seconds: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}
