//! The hot path: is this secret an active token granting these scopes?
//!
//! One format check, one keyed hash, one lookup in the [`VerifyCache`] (an in-memory table of
//! the hashes of recently verified tokens, kept coherent with the store through its change
//! feed); the store is read only on a miss, and never for a hash the [`KnownHashes`] set has
//! never seen. Uses are noted in memory and written in batches (the `usage` module); counts and a
//! sampled latency go to the metrics.

mod budget;
mod cache;
mod snapshot;
mod table;
mod usage;
mod warm;

pub use budget::{Allowance, LEASE_MAX, RateState};
pub use cache::{CachedToken, EntryLimits, KnownHashes, VerifiedToken, VerifyCache};
pub use snapshot::SnapshotError;
pub(super) use snapshot::save as save_snapshot;
pub(super) use usage::UsageBatch;
pub(super) use warm::{HOTTEST, warm};
pub use warm::{WarmUp, warm_target};

use keyward_core::{Actor, AuditEvent, AuditKind, InactiveReason, PackedTokenId, Scopes, format};
use keyward_store::{Revocation, StoreResult, TokenFilter};
use moka::ops::compute::{CompResult, Op};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};
use time::OffsetDateTime;

use super::{Keyward, ServiceError, ServiceResult, unix_time};
use crate::telemetry::HotCounter;

/// The reason a token revoked on the reuse of a replaced secret carries (`revoke_on_reuse`).
pub const ROTATED_SECRET_REUSED: &str = "rotated secret reused";
/// Who revokes it, in the record and the audit trail.
pub const REUSE_DETECTION: &str = "keyward (reuse detection)";
/// How many times one verification leases more of a budget before answering with the refusal.
const LEASE_ROUNDS: u32 = 4;
/// A replaced secret's uses are recorded at most once per token in this many seconds.
pub(super) const REUSE_NOTED_FOR_SECS: i64 = 60;

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
    /// A use to record as last-used (the first this second), and maybe a budget to top up.
    Used(PackedTokenId, i64, Option<Arc<budget::Budget>>),
    /// A budget running low: lease its next share in the background.
    TopUp(Arc<budget::Budget>, i64),
    /// The budget's leased share is spent: lease more from the store, then judge again.
    Lease(Arc<budget::Budget>, i64),
    /// An expired token was presented.
    ExpiredUse(Box<VerifiedToken>, i64),
    /// A replaced secret was presented after its grace period (reuse detection).
    RetiredUse(Box<VerifiedToken>, i64),
}

pub(super) struct VerifyMetrics {
    by_result: [HotCounter; 11],
    latency: metrics::Histogram,
}

const RESULT_LABELS: [&str; 11] = [
    "active",
    "malformed",
    "unknown",
    "expired",
    "revoked",
    "insufficient_scope",
    "owner_disabled",
    "ip_not_allowed",
    "usage_exceeded",
    "rate_limited",
    "error",
];

impl VerifyMetrics {
    pub(super) fn new() -> Self {
        Self {
            by_result: RESULT_LABELS.map(|r| {
                HotCounter::new(metrics::counter!("keyward_verifications_total", "result" => r))
            }),
            latency: metrics::histogram!("keyward_verification_duration_seconds"),
        }
    }

    fn record<R, A>(
        &self,
        outcome: &ServiceResult<Result<R, (InactiveReason, A)>>,
        took: Option<StdDuration>,
    ) {
        let i = match outcome {
            Ok(Ok(_)) => 0,
            Ok(Err((r, _))) => match r {
                InactiveReason::Malformed => 1,
                InactiveReason::Unknown => 2,
                InactiveReason::Expired => 3,
                InactiveReason::Revoked => 4,
                InactiveReason::InsufficientScope => 5,
                InactiveReason::OwnerDisabled => 6,
                InactiveReason::IpNotAllowed => 7,
                InactiveReason::UsageExceeded => 8,
                InactiveReason::RateLimited => 9,
            },
            Err(_) => 10,
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

/// Whether this thread's current verification is one of the sampled ones.
fn latency_sample() -> bool {
    thread_local!(static COUNT: std::cell::Cell<u32> = const { std::cell::Cell::new(0) });
    COUNT.with(|n| {
        let next = n.get().wrapping_add(1);
        n.set(next);
        next % LATENCY_SAMPLE_EVERY == 0
    })
}
impl Keyward {
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
                .verify_with(secret, wanted, ip, |token, _| token.clone())
                .await?
            {
                Ok(token) => Verdict::Active(token),
                Err(reason) => Verdict::Inactive(reason),
            },
        )
    }

    /// The scopes a verification asks for, parsed and checked against the catalog: a scope
    /// that is not a scope is [`ServiceError::BadScope`], one outside the catalog
    /// [`ServiceError::UnknownScope`] (never answered as `insufficient_scope`, which would
    /// pass a typo in the calling API off as a token's missing right).
    pub fn wanted_scopes<S: AsRef<str>>(&self, scopes: &[S]) -> Result<Scopes, ServiceError> {
        if scopes.is_empty() {
            return Ok(Scopes::default());
        }
        let wanted = Scopes::parse(scopes)?;
        self.settings
            .catalog
            .check_known(&wanted)
            .map_err(ServiceError::UnknownScope)?;
        Ok(wanted)
    }

    /// [`Self::verify`], answering with what `f` makes of the active token (and of its
    /// [`Allowance`], when it counts uses or requests) instead of a copy of it: on a cache hit
    /// nothing is cloned or allocated. `f` runs while the cache entry is read-locked: it must be
    /// short (format an answer) and must not call into `Keyward`, which could wait on that lock.
    pub async fn verify_with<R>(
        &self,
        secret: &str,
        wanted: &Scopes,
        ip: Option<IpAddr>,
        f: impl FnOnce(&VerifiedToken, &Allowance) -> R,
    ) -> ServiceResult<Result<R, InactiveReason>> {
        Ok(self
            .verify_limited_with(secret, wanted, ip, f)
            .await?
            .map_err(|(reason, _)| reason))
    }

    /// [`Self::verify_with`], with a refusal's [`Allowance`] too: when a `rate_limited` or
    /// `usage_exceeded` request may succeed again, and the rate limit's state.
    pub async fn verify_limited_with<R>(
        &self,
        secret: &str,
        wanted: &Scopes,
        ip: Option<IpAddr>,
        f: impl FnOnce(&VerifiedToken, &Allowance) -> R,
    ) -> ServiceResult<Result<R, (InactiveReason, Allowance)>> {
        self.verify_entry_with(secret, wanted, ip, |entry, allowance| {
            f(entry.token(), allowance)
        })
        .await
    }

    /// [`Self::verify_limited_with`], with `f` seeing the cached secret itself (whether it is
    /// rotated out, for instance), not only its token.
    pub(super) async fn verify_entry_with<R>(
        &self,
        secret: &str,
        wanted: &Scopes,
        ip: Option<IpAddr>,
        f: impl FnOnce(&CachedToken, &Allowance) -> R,
    ) -> ServiceResult<Result<R, (InactiveReason, Allowance)>> {
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
        f: impl FnOnce(&CachedToken, &Allowance) -> R,
    ) -> ServiceResult<Result<R, (InactiveReason, Allowance)>> {
        // Refused before any lookup: a typo or a random string never costs a hash or a query.
        if format::validate(secret).is_err() {
            return Ok(Err((InactiveReason::Malformed, Allowance::default())));
        }
        let mut f = Some(f);
        let mut leases = 0;
        loop {
            let Some((answer, after)) = self.judge_secret(secret, wanted, ip, &mut f).await? else {
                return Ok(Err((InactiveReason::Unknown, Allowance::default())));
            };
            // Bookkeeping after the entry's lock is released: it takes locks of its own.
            match after {
                After::Nothing => {}
                After::Used(id, now, top_up) => {
                    self.usage.note(id, unix_time(now), ip);
                    if let Some(budget) = top_up {
                        self.top_up(budget, now);
                    }
                }
                After::TopUp(budget, now) => self.top_up(budget, now),
                After::ExpiredUse(token, now) => self.note_expired_use(&token, ip, unix_time(now)),
                After::RetiredUse(token, now) => self.note_retired_use(&token, ip, unix_time(now)),
                // This instance's share of the budget is spent: lease more, then judge again
                // (other verifications may spend the new share first; after a few rounds the
                // answer is the refusal, which spends nothing).
                After::Lease(budget, now) if leases < LEASE_ROUNDS => {
                    leases += 1;
                    budget.lease(self.store.as_ref(), now, false).await?;
                    continue;
                }
                After::Lease(..) => {}
            }
            return Ok(match answer {
                Ok(Some(answer)) => Ok(answer),
                // `f` is taken only by the answer that ends the loop.
                Ok(None) => Err((InactiveReason::Unknown, Allowance::default())),
                Err(refused) => Err(refused),
            });
        }
    }

    /// The error for a token refused when it authenticates a request (the API's bearer, forward
    /// -auth): a limit's refusal says when to come back; any other is unauthenticated.
    pub(super) fn refusal(&self, reason: InactiveReason, allowance: &Allowance) -> ServiceError {
        match reason {
            InactiveReason::IpNotAllowed
            | InactiveReason::UsageExceeded
            | InactiveReason::RateLimited => ServiceError::Limited {
                reason,
                retry_after: allowance.retry_after(reason, self.clock.now_unix()),
                rate: allowance.rate.map(Box::new),
            },
            reason => ServiceError::Unauthenticated(Some(reason)),
        }
    }

    /// Leases the next share of a running-low budget in the background.
    fn top_up(&self, budget: Arc<budget::Budget>, now: i64) {
        let store = Arc::clone(&self.store);
        tokio::spawn(async move {
            if let Err(e) = budget.lease(store.as_ref(), now, true).await {
                tracing::warn!(error = %e, "could not lease a token's next uses ahead of time");
            }
        });
    }

    /// Looks `secret` up (under the current key, then each older key of the ring) and judges
    /// it; `None` when no token has it.
    async fn judge_secret<R, F: FnOnce(&CachedToken, &Allowance) -> R>(
        &self,
        secret: &str,
        wanted: &Scopes,
        ip: Option<IpAddr>,
        f: &mut Option<F>,
    ) -> ServiceResult<Option<(Result<Option<R>, (InactiveReason, Allowance)>, After)>> {
        let ring = self.ring();
        let hash = ring.current().hash_str(secret);
        let judge = |entry: &CachedToken| {
            // Read here, not before a possible store read, so a slow miss judges at the time
            // it answers.
            let now = self.clock.now_unix();
            match Self::judge(entry, wanted, ip, now) {
                Ok((allowance, after)) => (Ok(f.take().map(|f| f(entry, &allowance))), after),
                Err((reason, allowance, after)) => (Err((reason, allowance)), after),
            }
        };
        let judged = match self
            .cache
            .try_with(self.store.as_ref(), &hash, judge)
            .await?
        {
            Ok(judged) => Some(judged),
            // Not under the current key: under an older one of the ring, if any (a secret
            // issued before a rotation and not used since).
            Err(judge) if !ring.older().is_empty() => {
                let mut judge = judge;
                let mut found = None;
                for older in ring.older() {
                    let old = older.hash_str(secret);
                    match self
                        .cache
                        .try_with(self.store.as_ref(), &old, judge)
                        .await?
                    {
                        Ok(judged) => {
                            if !matches!(
                                judged.0,
                                Err((InactiveReason::Revoked | InactiveReason::Expired, _))
                            ) {
                                // The plaintext is in hand: move the secret to the current key.
                                self.rekey(old, hash, ring.current().key_id());
                            }
                            found = Some(judged);
                            break;
                        }
                        Err(back) => judge = back,
                    }
                }
                found
            }
            Err(_) => None,
        };
        Ok(judged)
    }

    /// Whether the token behind `entry` grants `wanted` to a request from `ip` at `now`, and
    /// what to note about it. Limits are judged last, and spend only when everything else
    /// allows the request: a refused request consumes nothing.
    fn judge(
        entry: &CachedToken,
        wanted: &Scopes,
        ip: Option<IpAddr>,
        now: i64,
    ) -> Result<(Allowance, After), (InactiveReason, Allowance, After)> {
        let refuse = |reason| Err((reason, Allowance::default(), After::Nothing));
        match entry.state_at(now) {
            Err(InactiveReason::Expired) => {
                return Err((
                    InactiveReason::Expired,
                    Allowance::default(),
                    After::ExpiredUse(Box::new(entry.token().clone()), now),
                ));
            }
            // Only past the other answers, so a live token's verification never gets here.
            Err(InactiveReason::Revoked) if entry.retired(now) => {
                return Err((
                    InactiveReason::Revoked,
                    Allowance::default(),
                    After::RetiredUse(Box::new(entry.token().clone()), now),
                ));
            }
            Err(reason) => return refuse(reason),
            Ok(()) if !entry.token().scopes().covers_all(wanted) => {
                return refuse(InactiveReason::InsufficientScope);
            }
            Ok(()) => {}
        }
        let mut allowance = Allowance::default();
        let mut prefetch = None;
        if let Some(limits) = entry.limits() {
            if !limits.allows(ip) {
                return refuse(InactiveReason::IpNotAllowed);
            }
            if let Some(budget) = limits.budget() {
                match budget.try_spend(now) {
                    budget::Spend::Spent(spent, top_up) => {
                        allowance = spent;
                        prefetch = top_up.then(|| Arc::clone(budget));
                    }
                    budget::Spend::Refused(reason, state) => {
                        return Err((reason, state, After::Nothing));
                    }
                    budget::Spend::Lease => {
                        return Err((
                            InactiveReason::UsageExceeded,
                            Allowance::default(),
                            After::Lease(Arc::clone(budget), now),
                        ));
                    }
                }
            }
        }
        // Only a successful presentation counts as a use.
        let after = if entry.note_use(now) {
            After::Used(entry.token().id_packed(), now, prefetch)
        } else if let Some(budget) = prefetch {
            After::TopUp(budget, now)
        } else {
            After::Nothing
        };
        Ok((allowance, after))
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

    /// Records that a replaced secret of `token` was presented after its grace period ended:
    /// a `token.rotated_secret_used` event with the client's address (at most one per token a
    /// minute, however often it is presented), and with `revoke_on_reuse` the token's
    /// revocation (reason [`ROTATED_SECRET_REUSED`]). The answer stays `revoked`, as for any
    /// replaced secret.
    fn note_retired_use(&self, token: &VerifiedToken, ip: Option<IpAddr>, now: OffsetDateTime) {
        let token_id = token.token_id();
        // On the service's clock, in one atomic step: concurrent uses note it once.
        let at = now.unix_timestamp();
        let noted = self
            .reuse_noted
            .entry(token_id.clone())
            .and_compute_with(|last| match last {
                Some(last) if at - *last.value() < REUSE_NOTED_FOR_SECS => Op::Nop,
                _ => Op::Put(at),
            });
        if matches!(noted, CompResult::Unchanged(_)) {
            return;
        }
        let actor = Actor {
            user: None,
            token: Some(token_id.clone()),
            label: "verification".to_owned(),
        };
        let event = AuditEvent {
            at: now,
            kind: AuditKind::TokenRotatedSecretUsed,
            actor: actor.clone(),
            subject_user: Some(token.owner_id().clone()),
            token_id: Some(token_id.clone()),
            ip,
            detail: None,
        };
        let revoke = self.settings.revoke_on_reuse.then(|| {
            let revoked = AuditEvent {
                kind: AuditKind::TokenRevoked,
                actor: Actor {
                    token: None,
                    label: REUSE_DETECTION.to_owned(),
                    ..actor
                },
                detail: Some(ROTATED_SECRET_REUSED.to_owned()),
                ..event.clone()
            };
            let revocation = Revocation {
                at: now,
                by: REUSE_DETECTION.to_owned(),
                reason: Some(ROTATED_SECRET_REUSED.to_owned()),
            };
            (revocation, revoked)
        });
        let store = Arc::clone(&self.store);
        tracing::warn!(token_id = %token_id, ip = ?ip, revoke = revoke.is_some(), "a replaced secret was presented after its grace period");
        // Off the request path, like the expired-use event. With a revocation, the use and the
        // revocation are written in one transaction (nothing if another instance revoked it).
        tokio::spawn(async move {
            let written = match revoke {
                None => store.append_audit(&event).await,
                Some((revocation, revoked)) => store
                    .revoke_tokens(
                        std::slice::from_ref(&token_id),
                        &TokenFilter::default(),
                        &revocation,
                        &[event, revoked],
                    )
                    .await
                    .map(drop),
            };
            if let Err(e) = written {
                tracing::warn!(error = %e, token_id = %token_id, "could not record a replaced secret's use");
            }
        });
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
        metrics::gauge!("keyward_uses_unwritten").set(self.usage.unwritten() as f64);
    }

    /// Writes the noted uses to the store (called every few seconds and at shutdown).
    pub async fn flush_usage(&self) -> StoreResult<usize> {
        self.usage.flush(self.store.as_ref()).await
    }

    /// Gives the uses this instance leased and did not spend back to the store (at shutdown,
    /// after the last verification). Returns how many tokens had a budget here.
    pub async fn give_back_leases(&self) -> usize {
        self.cache.budgets().give_back(self.store.as_ref()).await
    }
}
