//! The service: keyward's use cases, shared by the HTTP API and the command line.
//!
//! Handlers and commands parse their input into core types, decide who is acting ([`Acting`]),
//! and call one method here. The rules (who may do what, scope ceilings, lifetimes, the audit
//! trail) live here and in `keyward-core`; the store only persists.

mod cache;
mod error;
pub mod gateway;
pub mod password;
pub mod session;
mod table;
mod throttle;
mod usage;

pub use cache::{CachedToken, KnownHashes, VerifiedToken, VerifyCache};
pub use error::{ServiceError, ServiceResult};
pub use gateway::{ForwardAuthRoute, ForwardAuthRoutes, SecretRevocation};
pub use session::{SessionSecret, SignIn, SignInForm, WebSession};

use keyward_core::{
    Actor, AuditEvent, AuditKind, Catalog, Clock, ExpiryRequest, InactiveReason, LifetimePolicy,
    PackedTokenId, Prefix, RawSecret, Scope, Scopes, TokenHasher, TokenId, TokenName, TokenRecord,
    TokenSecret, TokenState, User, UserId, UserName, format,
};
use keyward_store::{
    AuditFilter, NewUser, Page, Regeneration, Revocation, Store, StoreResult, StoredAuditEvent,
    StoredHash,
};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};
use time::{Duration, OffsetDateTime};

use crate::telemetry::HotCounter;
use keyward_core::scope::reserved::METRICS_READ;
use usage::UsageBatch;

/// Longest revocation reason, in characters.
pub const MAX_REASON_CHARS: usize = 500;
/// Most records one listing page returns.
pub const MAX_PAGE: u32 = 100;

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
    /// Whether the web page's session cookie is always marked `Secure` (set it when keyward is
    /// served over HTTPS; without it, the cookie is `Secure` only on requests that arrive with
    /// `X-Forwarded-Proto: https`).
    pub secure_cookies: bool,
    /// Which scopes a request proxied to `/v1/auth` needs, by method and path.
    pub forward_auth: ForwardAuthRoutes,
    /// Whether `/metrics` answers only to a bearer token holding `metrics:read` (it is open
    /// to anyone who reaches it otherwise).
    pub metrics_require_token: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            prefix: Prefix::default(),
            catalog: Catalog::sample(),
            policy: LifetimePolicy::default(),
            cache_capacity: 1_000_000,
            secure_cookies: false,
            forward_auth: ForwardAuthRoutes::default(),
            metrics_require_token: false,
        }
    }
}

/// Who is acting, on whose behalf, and with what ceiling.
#[derive(Debug, Clone)]
pub struct Acting {
    /// Whose tokens this may touch: one user's, or `None` for an operator at the command line.
    pub within: Option<UserId>,
    /// Who, for the audit trail.
    pub actor: Actor,
    /// From where.
    pub ip: Option<IpAddr>,
    /// The most rights a token made or regenerated here may carry: the presenting token's
    /// scopes. `None` when a person or an operator acts directly.
    pub ceiling: Option<Scopes>,
    /// The latest a token made or regenerated here may expire, and the latest a grace period
    /// may run to: the presenting token's own expiry (as Vault caps a child token's TTL at its
    /// parent's). `None` when a person or an operator acts directly (bound only by the
    /// deployment's maximum lifetime) or when the presenting token never expires.
    pub expiry_ceiling: Option<OffsetDateTime>,
}

impl Acting {
    /// An operator at the command line: any user's tokens, no ceiling.
    pub fn operator(os_user: &str) -> Self {
        Self {
            within: None,
            actor: Actor::cli(os_user),
            ip: None,
            ceiling: None,
            expiry_ceiling: None,
        }
    }

    /// The token the caller presented, if they acted with one.
    pub fn token(&self) -> Option<&TokenId> {
        self.actor.token.as_ref()
    }
}

/// The answer to a verification.
pub enum Verdict {
    /// The token works and grants what was asked.
    Active(VerifiedToken),
    /// It does not, and why.
    Inactive(InactiveReason),
}

/// What a verification leaves to note once the cache entry is released.
enum After {
    Nothing,
    /// A use to record as last-used (the first this second).
    Used(PackedTokenId, i64),
    /// An expired token was presented.
    ExpiredUse(Box<VerifiedToken>, i64),
}

/// A token just made or regenerated, with the secret that is shown this once.
pub struct Issued {
    /// The record.
    pub token: TokenRecord,
    /// The secret; exists nowhere else.
    pub secret: TokenSecret,
}

/// How to regenerate.
#[derive(Debug, Clone, Copy, Default)]
pub struct RegenerateOptions {
    /// How long the old secret keeps working (none by default); never past the old secret's
    /// own expiry, nor the acting token's.
    pub grace: Option<Duration>,
    /// A new expiry; by default the token keeps the one it has. A token acting cannot set one
    /// later than its own (the request is clamped to it).
    pub expires: Option<ExpiryRequest>,
}

struct VerifyMetrics {
    by_result: [HotCounter; 8],
    latency: metrics::Histogram,
}

const RESULT_LABELS: [&str; 8] = [
    "active",
    "malformed",
    "unknown",
    "expired",
    "revoked",
    "insufficient_scope",
    "owner_disabled",
    "error",
];

impl VerifyMetrics {
    fn new() -> Self {
        Self {
            by_result: RESULT_LABELS.map(|r| {
                HotCounter::new(metrics::counter!("keyward_verifications_total", "result" => r))
            }),
            latency: metrics::histogram!("keyward_verification_duration_seconds"),
        }
    }

    fn record<R>(
        &self,
        outcome: &ServiceResult<Result<R, InactiveReason>>,
        took: Option<StdDuration>,
    ) {
        let i = match outcome {
            Ok(Ok(_)) => 0,
            Ok(Err(r)) => match r {
                InactiveReason::Malformed => 1,
                InactiveReason::Unknown => 2,
                InactiveReason::Expired => 3,
                InactiveReason::Revoked => 4,
                InactiveReason::InsufficientScope => 5,
                InactiveReason::OwnerDisabled => 6,
            },
            Err(_) => 7,
        };
        self.by_result[i].increment();
        if let Some(took) = took {
            self.latency.record(took.as_secs_f64());
        }
    }
}

/// One verification in this many is timed for the latency histogram. Timing costs two clock
/// reads, a large share of a cached verification; a regular sample describes the distribution as
/// well. The counters still count every verification.
pub const LATENCY_SAMPLE_EVERY: u32 = 16;

/// A unix second as a time (the clamp is unreachable for any clock this side of year 9999).
fn unix_time(seconds: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Whether this thread's current verification is one of the sampled ones.
fn latency_sample() -> bool {
    thread_local!(static COUNT: std::cell::Cell<u32> = const { std::cell::Cell::new(0) });
    COUNT.with(|n| {
        let next = n.get().wrapping_add(1);
        n.set(next);
        next % LATENCY_SAMPLE_EVERY == 0
    })
}

/// keyward's use cases over one store.
pub struct Keyward {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    hasher: TokenHasher,
    settings: Settings,
    cache: VerifyCache,
    usage: UsageBatch,
    expired_noted: moka::sync::Cache<TokenId, ()>,
    metrics: VerifyMetrics,
    throttle: throttle::SignInThrottle,
    passwords: password::PasswordPool,
}

impl Keyward {
    /// Builds the service. Install the metrics recorder first if metrics are wanted.
    pub async fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        hasher: TokenHasher,
        settings: Settings,
    ) -> StoreResult<Self> {
        let cache = VerifyCache::new(store.as_ref(), settings.cache_capacity).await?;
        Ok(Self {
            store,
            clock,
            hasher,
            settings,
            cache,
            usage: UsageBatch::default(),
            // One audit event per expired token per hour is enough to see it is still in use.
            expired_noted: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(StdDuration::from_secs(3600))
                .build(),
            metrics: VerifyMetrics::new(),
            throttle: throttle::SignInThrottle::default(),
            passwords: password::PasswordPool::per_core(),
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

    /// The set of known hashes (for readiness and metrics).
    pub fn known_hashes(&self) -> &KnownHashes {
        self.cache.known()
    }

    /// The deployment's rules.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The store (for readiness checks).
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// The current time, to the second (the precision records are kept at).
    pub fn now(&self) -> OffsetDateTime {
        let now = self.clock.now();
        now.replace_nanosecond(0).unwrap_or(now)
    }

    // ------------------------------------------------------------------ verification

    /// The hot path: is `secret` an active token granting every scope of `wanted`?
    /// Errors only when the answer cannot be given safely (the store is unreachable).
    pub async fn verify(
        &self,
        secret: &str,
        wanted: &Scopes,
        ip: Option<IpAddr>,
    ) -> ServiceResult<Verdict> {
        Ok(
            match self
                .verify_with(secret, wanted, ip, VerifiedToken::clone)
                .await?
            {
                Ok(token) => Verdict::Active(token),
                Err(reason) => Verdict::Inactive(reason),
            },
        )
    }

    /// [`Self::verify`], answering with what `f` makes of the active token instead of a copy of
    /// it: on a cache hit nothing is cloned or allocated. `f` runs while the cache entry is
    /// read-locked: it must be short (format an answer) and must not call into `Keyward`, which
    /// could wait on that lock.
    pub async fn verify_with<R>(
        &self,
        secret: &str,
        wanted: &Scopes,
        ip: Option<IpAddr>,
        f: impl FnOnce(&VerifiedToken) -> R,
    ) -> ServiceResult<Result<R, InactiveReason>> {
        self.verify_entry_with(secret, wanted, ip, |entry| f(entry.token()))
            .await
    }

    /// [`Self::verify_with`], with `f` seeing the cached secret itself (whether it is rotated
    /// out, for instance), not only its token.
    async fn verify_entry_with<R>(
        &self,
        secret: &str,
        wanted: &Scopes,
        ip: Option<IpAddr>,
        f: impl FnOnce(&CachedToken) -> R,
    ) -> ServiceResult<Result<R, InactiveReason>> {
        let start = latency_sample().then(Instant::now);
        let outcome = self.verify_uninstrumented(secret, wanted, ip, f).await;
        self.metrics.record(&outcome, start.map(|s| s.elapsed()));
        outcome
    }

    async fn verify_uninstrumented<R>(
        &self,
        secret: &str,
        wanted: &Scopes,
        ip: Option<IpAddr>,
        f: impl FnOnce(&CachedToken) -> R,
    ) -> ServiceResult<Result<R, InactiveReason>> {
        // Refused before any lookup: a typo or a random string never costs a hash or a query.
        if format::validate(secret).is_err() {
            return Ok(Err(InactiveReason::Malformed));
        }
        let hash = self.hasher.hash_str(secret);
        let judged = self
            .cache
            .with(self.store.as_ref(), &hash, |entry| {
                // Read here, not before a possible store read, so a slow miss judges at the time
                // it answers.
                let now = self.clock.now_unix();
                match Self::judge(entry, wanted, now) {
                    Ok(after) => (Ok(f(entry)), after),
                    Err((reason, after)) => (Err(reason), after),
                }
            })
            .await?;
        let Some((answer, after)) = judged else {
            return Ok(Err(InactiveReason::Unknown));
        };
        // Bookkeeping after the entry's lock is released: it takes locks of its own.
        match after {
            After::Nothing => {}
            After::Used(id, now) => self.usage.note(id, unix_time(now), ip),
            After::ExpiredUse(token, now) => self.note_expired_use(&token, ip, unix_time(now)),
        }
        Ok(answer)
    }

    /// Whether the token behind `entry` grants `wanted` at `now`, and what to note about it.
    fn judge(
        entry: &CachedToken,
        wanted: &Scopes,
        now: i64,
    ) -> Result<After, (InactiveReason, After)> {
        match entry.state_at(now) {
            Err(InactiveReason::Expired) => Err((
                InactiveReason::Expired,
                After::ExpiredUse(Box::new(entry.token().clone()), now),
            )),
            Err(reason) => Err((reason, After::Nothing)),
            Ok(()) if !entry.token().scopes().covers_all(wanted) => {
                Err((InactiveReason::InsufficientScope, After::Nothing))
            }
            // Only a successful presentation counts as a use.
            Ok(()) if entry.note_use(now) => Ok(After::Used(entry.token().id_packed(), now)),
            Ok(()) => Ok(After::Nothing),
        }
    }

    fn note_expired_use(&self, token: &VerifiedToken, ip: Option<IpAddr>, now: OffsetDateTime) {
        let token_id = token.token_id();
        if self.expired_noted.contains_key(&token_id) {
            return;
        }
        self.expired_noted.insert(token_id.clone(), ());
        let event = AuditEvent {
            at: now,
            kind: AuditKind::TokenExpiredUse,
            actor: Actor {
                user: None,
                token: Some(token_id.clone()),
                label: "verification".to_owned(),
            },
            subject_user: Some(token.owner_id().clone()),
            token_id: Some(token_id),
            ip,
            detail: None,
        };
        let store = Arc::clone(&self.store);
        // Off the request path: an audit write must not slow or fail a verification.
        tokio::spawn(async move {
            if let Err(e) = store.append_audit(&event).await {
                tracing::warn!(error = %e, "could not record an expired-token use");
            }
        });
    }

    /// Authenticates a management call: the bearer token must be active, must be its token's
    /// current secret (a secret in the grace period after a regeneration verifies, and does
    /// nothing else), and, when `needed` is given, must hold that scope. Returns who is acting.
    pub async fn authenticate(
        &self,
        bearer: Option<&str>,
        needed: Option<&Scope>,
        ip: Option<IpAddr>,
    ) -> ServiceResult<Acting> {
        let secret = bearer.ok_or(ServiceError::Unauthenticated(None))?;
        let (token, rotated_out) = match self
            .verify_entry_with(secret, &Scopes::default(), ip, |entry| {
                (entry.token().clone(), entry.rotated_out())
            })
            .await?
        {
            Ok(found) => found,
            Err(reason) => return Err(ServiceError::Unauthenticated(Some(reason))),
        };
        if rotated_out {
            return Err(ServiceError::RotatedOut);
        }
        if let Some(needed) = needed
            && !token.scopes().covers(needed)
        {
            return Err(ServiceError::MissingScope {
                needed: needed.to_string(),
            });
        }
        let token_id = token.token_id();
        Ok(Acting {
            within: Some(token.owner_id().clone()),
            actor: Actor {
                user: Some(token.owner_id().clone()),
                label: format!("{} ({})", token.owner_name(), token_id),
                token: Some(token_id),
            },
            ip,
            ceiling: Some(token.scopes().clone()),
            expiry_ceiling: token.expires_at(),
        })
    }

    /// Whether the caller may read the metrics: anyone, unless the deployment requires a token,
    /// then an active bearer token holding `metrics:read`.
    pub async fn authorize_metrics(
        &self,
        bearer: Option<&str>,
        ip: Option<IpAddr>,
    ) -> ServiceResult<()> {
        if self.settings.metrics_require_token {
            self.authenticate(bearer, Some(&METRICS_READ), ip).await?;
        }
        Ok(())
    }

    /// Hands the hot-path counts (verifications by result, cache hits and misses) to the metrics
    /// recorder. They are counted per thread and reach the recorder only here: `keyward serve`
    /// calls it before every `/metrics` answer and every few seconds; an application that
    /// embeds keyward and exports metrics itself calls it before reading them.
    pub fn publish_metrics(&self) {
        for counter in &self.metrics.by_result {
            counter.publish();
        }
        self.cache.publish_metrics();
    }

    /// Writes the noted uses to the store (called every few seconds and at shutdown).
    pub async fn flush_usage(&self) -> StoreResult<usize> {
        self.usage.flush(self.store.as_ref()).await
    }

    // ------------------------------------------------------------------ tokens

    fn audit(
        &self,
        acting: &Acting,
        kind: AuditKind,
        at: OffsetDateTime,
        subject: &UserId,
        token: Option<&TokenId>,
    ) -> AuditEvent {
        AuditEvent {
            at,
            kind,
            actor: acting.actor.clone(),
            subject_user: Some(subject.clone()),
            token_id: token.cloned(),
            ip: acting.ip,
            detail: None,
        }
    }

    fn check_within(acting: &Acting, owner: &UserId) -> ServiceResult<()> {
        match &acting.within {
            Some(w) if w != owner => Err(ServiceError::NotFound),
            _ => Ok(()),
        }
    }

    fn check_ceiling(acting: &Acting, scopes: &Scopes) -> ServiceResult<()> {
        if let Some(ceiling) = &acting.ceiling {
            let missing = ceiling.missing(scopes);
            if !missing.is_empty() {
                return Err(ServiceError::ScopeCeiling {
                    missing: missing.iter().map(ToString::to_string).collect(),
                });
            }
        }
        Ok(())
    }

    /// `expires_at` (`None` = never), or the caller's own expiry if that comes sooner: nothing a
    /// token makes outlives it. A person or an operator has no such ceiling.
    fn clamp_expiry(acting: &Acting, expires_at: Option<OffsetDateTime>) -> Option<OffsetDateTime> {
        match (expires_at, acting.expiry_ceiling) {
            (Some(at), Some(ceiling)) => Some(at.min(ceiling)),
            (None, ceiling) => ceiling,
            (at, None) => at,
        }
    }

    fn issue_secret(&self) -> ServiceResult<(TokenSecret, StoredHash)> {
        let secret = TokenSecret::generate(&self.settings.prefix)?;
        let hash = StoredHash {
            hash: self.hasher.hash(&secret),
            key_id: self.hasher.key_id().clone(),
        };
        Ok((secret, hash))
    }

    /// Creates a token for `owner`; the secret is returned this once.
    pub async fn create_token(
        &self,
        acting: &Acting,
        owner: &UserId,
        name: TokenName,
        scopes: Scopes,
        expires: Option<ExpiryRequest>,
    ) -> ServiceResult<Issued> {
        Self::check_within(acting, owner)?;
        let user = self
            .store
            .user_by_id(owner)
            .await?
            .ok_or(ServiceError::NotFound)?;
        if user.disabled_at.is_some() {
            return Err(ServiceError::InvalidState("the user is disabled"));
        }
        self.settings.catalog.check(&scopes)?;
        Self::check_ceiling(acting, &scopes)?;
        let now = self.now();
        let expires_at = Self::clamp_expiry(acting, self.settings.policy.resolve(expires, now)?);
        let (secret, hash) = self.issue_secret()?;
        let token = TokenRecord {
            id: TokenId::generate(now)?,
            owner: owner.clone(),
            name,
            scopes,
            hint: secret.hint(),
            created_at: now,
            expires_at,
            regenerated_at: None,
            last_used_at: None,
            last_used_ip: None,
            revoked_at: None,
            revoked_by: None,
            revoke_reason: None,
        };
        let audit = self.audit(acting, AuditKind::TokenCreated, now, owner, Some(&token.id));
        self.store.insert_token(&token, &hash, &audit).await?;
        tracing::info!(token_id = %token.id, owner = %owner, actor = %acting.actor.label, "token created");
        Ok(Issued { token, secret })
    }

    /// One token, if it is within the caller's reach.
    pub async fn get_token(&self, acting: &Acting, id: &TokenId) -> ServiceResult<TokenRecord> {
        self.store
            .token(id, acting.within.as_ref())
            .await?
            .ok_or(ServiceError::NotFound)
    }

    /// Tokens newest first: the caller's, or for an operator `owner`'s (everyone's if `None`).
    pub async fn list_tokens(
        &self,
        acting: &Acting,
        owner: Option<&UserId>,
        page: Page,
    ) -> ServiceResult<Vec<TokenRecord>> {
        let owner = match (&acting.within, owner) {
            (Some(w), Some(o)) if w != o => return Ok(Vec::new()),
            (Some(w), _) => Some(w),
            (None, o) => o,
        };
        let page = Page {
            limit: page.limit.clamp(1, MAX_PAGE),
            ..page
        };
        Ok(self.store.list_tokens(owner, &page).await?)
    }

    /// Renames a token.
    pub async fn rename_token(
        &self,
        acting: &Acting,
        id: &TokenId,
        name: TokenName,
    ) -> ServiceResult<TokenRecord> {
        let current = self.get_token(acting, id).await?;
        let now = self.now();
        let mut audit = self.audit(
            acting,
            AuditKind::TokenRenamed,
            now,
            &current.owner,
            Some(id),
        );
        audit.detail = Some(format!("{} → {}", current.name.as_str(), name.as_str()));
        Ok(self
            .store
            .rename_token(id, acting.within.as_ref(), &name, &audit)
            .await?)
    }

    /// Gives a token a new secret, keeping its id, name and scopes. The old secret stops working
    /// now, or when the grace period ends.
    pub async fn regenerate_token(
        &self,
        acting: &Acting,
        id: &TokenId,
        options: RegenerateOptions,
    ) -> ServiceResult<Issued> {
        let current = self.get_token(acting, id).await?;
        Self::check_ceiling(acting, &current.scopes)?;
        let now = self.now();
        match current.state(now) {
            TokenState::Active => {}
            TokenState::Revoked => {
                return Err(ServiceError::InvalidState(
                    "the token is revoked; create a new one",
                ));
            }
            TokenState::Expired => {
                return Err(ServiceError::InvalidState(
                    "the token has expired; create a new one",
                ));
            }
        }
        // The token keeps its expiry unless asked for another; either way, a token acting here
        // cannot give it one later than its own.
        let new_expires_at = match (options.expires, current.expires_at) {
            (Some(request), _) => self.settings.policy.resolve(Some(request), now)?,
            (None, None) => self
                .settings
                .policy
                .resolve(Some(ExpiryRequest::Never), now)?,
            (None, Some(current_expiry)) => Some(current_expiry),
        };
        let new_expires_at = Self::clamp_expiry(acting, new_expires_at);
        // The old secret works no longer than it would have without the regeneration.
        let grace_ends = match options.grace {
            None => now,
            Some(grace) => {
                let wanted = now + grace;
                Self::clamp_expiry(acting, current.expires_at).map_or(wanted, |end| wanted.min(end))
            }
        };
        let (secret, new_hash) = self.issue_secret()?;
        let regen = Regeneration {
            new_hash,
            new_hint: secret.hint(),
            new_expires_at,
            old_valid_until: grace_ends,
            at: now,
        };
        let mut audit = self.audit(
            acting,
            AuditKind::TokenRegenerated,
            now,
            &current.owner,
            Some(id),
        );
        audit.detail = (grace_ends > now).then(|| {
            format!(
                "old secret valid for {} more seconds",
                (grace_ends - now).whole_seconds()
            )
        });
        let token = self
            .store
            .regenerate_token(id, acting.within.as_ref(), &regen, &audit)
            .await?;
        tracing::info!(token_id = %id, actor = %acting.actor.label, "token regenerated");
        Ok(Issued { token, secret })
    }

    /// Revokes a token. The record stays, revoked, for the audit trail; revoking twice is a no-op.
    pub async fn revoke_token(
        &self,
        acting: &Acting,
        id: &TokenId,
        reason: Option<String>,
    ) -> ServiceResult<TokenRecord> {
        let reason = match reason
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty())
        {
            Some(r)
                if r.chars().count() > MAX_REASON_CHARS
                    || r.chars().any(keyward_core::is_unsafe_text_char) =>
            {
                return Err(ServiceError::Invalid(
                    "a reason must be at most 500 characters, without control characters or invisible formatting characters",
                ));
            }
            // A secret pasted as the reason would be kept in the record and the audit trail.
            Some(r) if format::contains_token(&r) => {
                return Err(ServiceError::Invalid(
                    "a reason must not contain a token's secret; never paste a secret where text goes",
                ));
            }
            r => r,
        };
        let current = self.get_token(acting, id).await?;
        let now = self.now();
        let mut audit = self.audit(
            acting,
            AuditKind::TokenRevoked,
            now,
            &current.owner,
            Some(id),
        );
        audit.detail.clone_from(&reason);
        let revocation = Revocation {
            at: now,
            by: acting.actor.label.clone(),
            reason,
        };
        let token = self
            .store
            .revoke_token(id, acting.within.as_ref(), &revocation, &audit)
            .await?;
        tracing::info!(token_id = %id, actor = %acting.actor.label, "token revoked");
        Ok(token)
    }

    /// The audit trail: the caller's own events, or for an operator `subject`'s (all if `None`).
    pub async fn audit_events(
        &self,
        acting: &Acting,
        subject: Option<&UserId>,
        before_seq: Option<i64>,
        limit: u32,
    ) -> ServiceResult<Vec<StoredAuditEvent>> {
        let subject_user = match (&acting.within, subject) {
            (Some(w), _) => Some(w.clone()),
            (None, s) => s.cloned(),
        };
        let filter = AuditFilter {
            subject_user,
            before_seq,
            limit: limit.clamp(1, MAX_PAGE),
        };
        Ok(self.store.audit_events(&filter).await?)
    }

    // ------------------------------------------------------------------ users

    /// Adds a user, with a password when they will sign in to the web page.
    pub async fn add_user(
        &self,
        acting: &Acting,
        name: UserName,
        is_admin: bool,
        password: Option<&RawSecret>,
    ) -> ServiceResult<User> {
        let password_hash = match password {
            Some(password) => Some(
                self.passwords
                    .hash(RawSecret::new(password.expose().to_owned()))
                    .await?,
            ),
            None => None,
        };
        let now = self.now();
        let user = User {
            id: UserId::generate(now)?,
            name,
            is_admin,
            created_at: now,
            disabled_at: None,
        };
        let mut audit = self.audit(acting, AuditKind::UserAdded, now, &user.id, None);
        audit.detail = Some(format!(
            "{}{}",
            user.name,
            if is_admin { " (admin)" } else { "" }
        ));
        self.store
            .add_user(
                &NewUser {
                    user: user.clone(),
                    password_hash,
                },
                &audit,
            )
            .await?;
        tracing::info!(user = %user.name, admin = is_admin, actor = %acting.actor.label, "user added");
        Ok(user)
    }

    /// A user by name.
    pub async fn user_by_name(&self, name: &UserName) -> ServiceResult<User> {
        self.store
            .user_by_name(name)
            .await?
            .ok_or(ServiceError::NotFound)
    }

    /// A user by id.
    pub async fn user_by_id(&self, id: &UserId) -> ServiceResult<User> {
        self.store
            .user_by_id(id)
            .await?
            .ok_or(ServiceError::NotFound)
    }

    /// All users.
    pub async fn list_users(&self) -> ServiceResult<Vec<User>> {
        Ok(self.store.list_users().await?)
    }
}
