//! Spending a token's uses and rate limit, exactly, on many instances, without a store round
//! trip per verification.
//!
//! The store holds each counted token's budget: its remaining uses, and what is left of its
//! current rate-limit window. An instance never spends from the store directly: it *leases* a
//! share (a sixteenth of the remaining uses, an eighth of the window; at least one, at most
//! [`LEASE_MAX`]) in one atomic store write, and spends that share in memory. The store hands
//! out each use once, so no number of instances ever accepts more than the token has: with
//! `max_uses = 100`, never a 101st use. A small budget goes one at a time, so little of it is
//! ever stranded on an instance that gets no more requests; a large one goes in batches, and
//! the next batch is fetched in the background when half of one is spent, so a busy token's
//! verification does not wait on the store.
//!
//! The trade-off, written down: uses leased by an instance that dies without shutting down are
//! lost (at most a sixteenth of what was left, or [`LEASE_MAX`]); a clean shutdown gives them
//! back. A `remaining` in an answer is what the store has left plus this instance's unspent
//! share (other instances' shares count as spent). A store that cannot be reached when a lease
//! is needed fails the verification closed (503), as any store failure does.

use keyward_core::{InactiveReason, Limits, PackedTokenId, RateLimit};
use keyward_store::{Lease, LeaseSize, Store, StoreResult};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The most one lease takes.
pub const LEASE_MAX: u64 = 4096;
/// Leases of uses take a sixteenth of what is left.
const USES_LEASE: LeaseSize = LeaseSize {
    divisor: 16,
    max: LEASE_MAX,
};
/// Leases of a rate-limit window take an eighth of what is left of it.
const RATE_LEASE: LeaseSize = LeaseSize {
    divisor: 8,
    max: LEASE_MAX,
};
/// After the store said a token has no uses left (and no refill is due), this instance answers
/// `usage_exceeded` from memory for this long before asking again (uses given back by a
/// stopping instance, or a new count, are seen after it).
const EXHAUSTED_RECHECK_SECS: i64 = 5;
/// "Never", as a unix second.
const NEVER: i64 = i64::MAX;

/// What a verification of a counted token tells about its budget, for the answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allowance {
    /// Uses left (with `max_uses`).
    pub remaining: Option<u64>,
    /// When the uses refill next (unix seconds), with a refill.
    pub refills_at: Option<i64>,
    /// The rate limit's state (with `rate_limit`).
    pub rate: Option<RateState>,
}

/// A rate limit's state after a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateState {
    /// Requests allowed per window.
    pub limit: u32,
    /// The window's length in seconds.
    pub window_secs: u32,
    /// Requests left in the current window.
    pub remaining: u64,
    /// When the window ends (unix seconds).
    pub reset: i64,
    /// When this state was read (unix seconds, on the service's clock).
    pub at: i64,
}

impl Allowance {
    /// Seconds from `now` until a refused request may succeed: the rate window's end, or the
    /// next refill. `None` when nothing will change by itself.
    pub fn retry_after(&self, reason: InactiveReason, now: i64) -> Option<i64> {
        let at = match reason {
            InactiveReason::RateLimited => self.rate.map(|r| r.reset),
            InactiveReason::UsageExceeded => self.refills_at,
            _ => None,
        }?;
        Some((at - now).max(1))
    }
}

/// One counted budget (uses, or a rate window) as this instance holds it.
#[derive(Debug)]
struct Bucket {
    /// The refill period or window the balance belongs to.
    period_start: i64,
    /// When it lapses ([`NEVER`] for uses without a refill).
    period_end: i64,
    /// Leased and not yet spent.
    balance: u64,
    /// What the store had left after the last lease.
    left: u64,
    /// The store had nothing left: refuse from memory until then.
    exhausted_until: i64,
    /// The size of the last lease (for prefetching the next).
    last_grant: u64,
}

impl Bucket {
    fn empty() -> Self {
        Self {
            period_start: 0,
            period_end: NEVER,
            balance: 0,
            left: 0,
            exhausted_until: 0,
            last_grant: 0,
        }
    }

    /// Takes in a lease from the store. A lease of a newer period replaces what was held (the
    /// old period's share lapsed); one of an older period is dropped.
    fn take_in(&mut self, lease: &Lease, now: i64, exhausted_for: Option<i64>) {
        if lease.period_start < self.period_start {
            return;
        }
        if lease.period_start > self.period_start {
            self.balance = 0;
        }
        self.period_start = lease.period_start;
        self.period_end = lease.period_end.unwrap_or(NEVER);
        self.balance += lease.granted;
        self.left = lease.left;
        self.last_grant = lease.granted;
        self.exhausted_until = if lease.granted == 0 && self.balance == 0 {
            exhausted_for.map_or(self.period_end, |secs| {
                self.period_end.min(now.saturating_add(secs))
            })
        } else {
            0
        };
    }

    /// Whether half of the last lease is spent and it was big enough to be worth fetching the
    /// next one ahead of time.
    fn wants_more(&self) -> bool {
        self.last_grant >= 4 && self.balance <= self.last_grant / 2 && self.left > 0
    }
}

/// What spending from a budget came to.
pub(super) enum Spend {
    /// One use and one request were spent; `prefetch` asks for the next lease in the background.
    Spent(Allowance, bool),
    /// Refused, nothing spent.
    Refused(InactiveReason, Allowance),
    /// The balance is spent: lease more from the store, then try again.
    Lease,
}

/// A counted token's budget on this instance, shared by every cached secret of the token.
#[derive(Debug)]
pub struct Budget {
    id: PackedTokenId,
    /// The token's limits version this budget was leased under.
    version: i64,
    uses: Option<Mutex<Bucket>>,
    refill: bool,
    rate: Option<(RateLimit, Mutex<Bucket>)>,
    /// One store lease at a time per token.
    leasing: tokio::sync::Mutex<()>,
    prefetching: AtomicBool,
}

fn lock(m: &Mutex<Bucket>) -> MutexGuard<'_, Bucket> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Budget {
    fn new(id: PackedTokenId, version: i64, limits: &Limits) -> Self {
        Self {
            id,
            version,
            uses: limits.max_uses.map(|_| Mutex::new(Bucket::empty())),
            refill: limits.refill.is_some(),
            rate: limits
                .rate_limit
                .map(|rate| (rate, Mutex::new(Bucket::empty()))),
            leasing: tokio::sync::Mutex::new(()),
            prefetching: AtomicBool::new(false),
        }
    }

    /// Spends one use and one request at `now` from what this instance holds, or says why not.
    /// Both or neither: a request refused for its rate spends no use, and the other way round.
    pub(super) fn try_spend(&self, now: i64) -> Spend {
        let mut uses = self.uses.as_ref().map(lock);
        let mut rate = self.rate.as_ref().map(|(limit, m)| (*limit, lock(m)));
        let mut need_lease = false;
        if let Some(u) = uses.as_deref_mut() {
            if now >= u.period_end {
                // The refill is due: what was held belongs to the past period.
                *u = Bucket::empty();
            }
            if u.balance == 0 {
                if now < u.exhausted_until {
                    let allowance = self.allowance(now, uses.as_deref(), rate.as_ref());
                    return Spend::Refused(InactiveReason::UsageExceeded, allowance);
                }
                need_lease = true;
            }
        }
        if let Some((limit, r)) = rate.as_mut() {
            let window = limit.window_start(now);
            if r.period_start != window {
                **r = Bucket::empty();
                r.period_start = window;
                r.period_end = window + i64::from(limit.per_secs);
                r.left = u64::from(limit.requests);
            }
            if r.balance == 0 {
                if now < r.exhausted_until {
                    let allowance = self.allowance(now, uses.as_deref(), rate.as_ref());
                    return Spend::Refused(InactiveReason::RateLimited, allowance);
                }
                need_lease = true;
            }
        }
        if need_lease {
            return Spend::Lease;
        }
        let mut prefetch = false;
        if let Some(u) = uses.as_deref_mut() {
            u.balance -= 1;
            prefetch |= u.wants_more();
        }
        if let Some((_, r)) = rate.as_mut() {
            r.balance -= 1;
            prefetch |= r.wants_more();
        }
        let allowance = self.allowance(now, uses.as_deref(), rate.as_ref());
        prefetch = prefetch && !self.prefetching.swap(true, Ordering::AcqRel);
        Spend::Spent(allowance, prefetch)
    }

    fn allowance(
        &self,
        now: i64,
        uses: Option<&Bucket>,
        rate: Option<&(RateLimit, MutexGuard<'_, Bucket>)>,
    ) -> Allowance {
        Allowance {
            remaining: uses.map(|u| u.left + u.balance),
            refills_at: uses
                .filter(|u| self.refill && u.period_end != NEVER)
                .map(|u| u.period_end),
            rate: rate.map(|(limit, r)| RateState {
                limit: limit.requests,
                window_secs: limit.per_secs,
                remaining: r.left + r.balance,
                reset: r.period_end,
                at: now,
            }),
        }
    }

    /// Leases from the store what this instance lacks at `now`: a bucket whose balance is spent
    /// and that is not known to be exhausted (or, with `top_up`, one running low). One lease
    /// at a time per token: concurrent verifications wait for it, then spend from it.
    pub(super) async fn lease(&self, store: &dyn Store, now: i64, top_up: bool) -> StoreResult<()> {
        let leased = self.lease_lacking(store, now, top_up).await;
        if top_up {
            self.prefetching.store(false, Ordering::Release);
        }
        leased
    }

    async fn lease_lacking(&self, store: &dyn Store, now: i64, top_up: bool) -> StoreResult<()> {
        let _one_at_a_time = self.leasing.lock().await;
        let id = self.id.unpack();
        let wants =
            |b: &Bucket| (b.balance == 0 && now >= b.exhausted_until) || (top_up && b.wants_more());
        if let Some(m) = &self.uses
            && wants(&lock(m))
        {
            let lease = store.lease_uses(&id, now, USES_LEASE).await?;
            let mut u = lock(m);
            match lease {
                Some(lease) if lease.version == self.version => {
                    u.take_in(&lease, now, Some(EXHAUSTED_RECHECK_SECS));
                }
                // The token's limits changed (the cache learns it from the change log): lease
                // nothing under the old ones; this verification answers as if exhausted, once.
                _ => u.exhausted_until = now + 1,
            }
        }
        if let Some((limit, m)) = &self.rate {
            let window = limit.window_start(now);
            let needed = {
                let r = lock(m);
                r.period_start == window && wants(&r)
            };
            if needed {
                let lease = store.lease_rate(&id, now, RATE_LEASE).await?;
                let mut r = lock(m);
                match lease {
                    Some(lease) if lease.version == self.version => r.take_in(&lease, now, None),
                    _ => r.exhausted_until = now + 1,
                }
            }
        }
        Ok(())
    }

    /// Gives the unspent uses back to the store (at shutdown).
    async fn give_back(&self, store: &dyn Store) -> StoreResult<()> {
        let Some(m) = &self.uses else { return Ok(()) };
        let (balance, period) = {
            let mut u = lock(m);
            let held = (u.balance, u.period_start);
            u.balance = 0;
            held
        };
        if balance > 0 {
            store
                .return_uses(&self.id.unpack(), self.version, period, balance)
                .await?;
        }
        Ok(())
    }
}

/// Every counted token's [`Budget`] on this instance, by token id: a token's secrets share one
/// budget, and a cache entry made again (after an eviction) finds the budget it left.
#[derive(Default)]
pub struct Budgets {
    by_token: Mutex<HashMap<PackedTokenId, Arc<Budget>>>,
}

impl Budgets {
    /// The budget of token `id` under limits version `version`; a budget of an older version is
    /// replaced (its unspent share is dropped: the new limits start a fresh count).
    pub fn get(&self, id: PackedTokenId, version: i64, limits: &Limits) -> Option<Arc<Budget>> {
        if !limits.counts() {
            return None;
        }
        let mut map = self.by_token.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(budget) = map.get(&id)
            && budget.version >= version
        {
            return Some(Arc::clone(budget));
        }
        let budget = Arc::new(Budget::new(id, version, limits));
        map.insert(id, Arc::clone(&budget));
        Some(budget)
    }

    /// Gives every unspent use back to the store (at shutdown). Returns how many tokens had
    /// some; errors are logged and the rest still given back.
    pub async fn give_back(&self, store: &dyn Store) -> usize {
        let budgets: Vec<Arc<Budget>> = self
            .by_token
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let mut given = 0;
        for budget in budgets {
            match budget.give_back(store).await {
                Ok(()) => given += 1,
                Err(e) => {
                    tracing::warn!(error = %e, token_id = %budget.id.text(), "could not give leased uses back");
                }
            }
        }
        given
    }
}
