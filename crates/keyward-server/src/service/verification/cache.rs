//! The verification cache: known hashes → what the store said about them, kept coherent with the
//! store's change log.
//!
//! Coherence rule: before answering from the cache, a verification compares the store's change
//! epoch (one atomic load, shared by every process on the database) with the epoch this cache
//! last caught up to. If they differ, it first reads the change log and evicts every hash named
//! there. A writer bumps the epoch only after its commit, so any revocation acknowledged before a
//! verification starts is evicted before that verification reads the cache. What a miss reads
//! from the store goes in only if the epoch has not moved since the verification noted it, before
//! its own catch-up, compared under the table's write lock ([`HashTable::insert_if`]): a change
//! caught up with while the read was out (its hash evicted before the entry went in, even one
//! read from the log before its epoch moved) keeps the entry out, and no verification can see the
//! entry before that comparison.
//!
//! Unknown tokens cost nothing: beside the cache, [`KnownHashes`] holds a fingerprint of every
//! hash the store has (loaded in the background, see [`KnownHashes::load`]), kept exact by the
//! same change log: a creation or regeneration logs its new hash, and catching up adds every
//! logged hash to the set. Once loaded, a miss whose hash is not in the set is answered
//! `unknown` without reading the store, so a flood of forged tokens is a flood of hashes and
//! memory lookups, not of database reads. Until it is loaded (and while it reloads after the
//! log was cut short), every miss reads the store, as before.

use keyward_core::{
    ExternalId, InactiveReason, IpRange, PackedTokenId, Scopes, TokenHash, TokenId, TokenIdText,
    UserId, UserName,
};
use keyward_store::{Lookup, Store, StoreResult};
use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use time::OffsetDateTime;

use super::budget::{Budget, Budgets};
use super::table::{FingerprintSet, HashTable, Inserted};
use crate::service::unix_time;
use crate::telemetry::HotCounter;

/// A unix second standing for "never".
const NEVER: i64 = i64::MAX;

/// A token's owner, shared by every cached token of theirs.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    /// The user's id.
    pub id: UserId,
    /// The user's name.
    pub name: UserName,
    /// The platform's id for the user, if it gave one.
    pub external_id: Option<ExternalId>,
    /// Whether the user is an admin.
    pub admin: bool,
}

/// Who a token speaks for, what it may do, and within which limits: shared by every cached
/// token with the same owner and scopes and no limits (a user's tokens usually share all
/// three), so an entry holds one pointer for them. A token with limits has a grant of its own
/// (its budget is its own), which is never interned.
#[derive(Debug)]
pub(super) struct Grant {
    owner: Arc<Owner>,
    scopes: Arc<Scopes>,
    limits: Option<Arc<EntryLimits>>,
}

impl PartialEq for Grant {
    fn eq(&self, other: &Self) -> bool {
        self.owner == other.owner
            && self.scopes == other.scopes
            && match (&self.limits, &other.limits) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
    }
}

impl Eq for Grant {}

impl Hash for Grant {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.owner.hash(state);
        self.scopes.hash(state);
        self.limits.as_ref().map(Arc::as_ptr).hash(state);
    }
}

/// What a verification tells about a token: who it speaks for and what it grants. Cheap to
/// clone (the owner and the scopes are shared); 40 bytes, because ten million of them may be
/// cached.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    id: PackedTokenId,
    grant: Arc<Grant>,
    /// [`NEVER`] when it does not expire. The hot path compares integers, not calendar dates.
    expires_unix: i64,
    /// When the presented secret was issued: the token's creation, or the regeneration that
    /// made this secret (unix seconds; a secret is issued now, and `u32` lasts until 2106).
    issued_unix: u32,
}

impl VerifiedToken {
    /// The token's id, as text on the stack.
    pub fn id_text(&self) -> TokenIdText {
        self.id.text()
    }

    /// The token's id in 16 bytes.
    pub fn id_packed(&self) -> PackedTokenId {
        self.id
    }

    /// The token's id (allocates; [`Self::id_text`] does not).
    pub fn token_id(&self) -> TokenId {
        self.id.unpack()
    }

    /// The owner's user id.
    pub fn owner_id(&self) -> &UserId {
        &self.grant.owner.id
    }

    /// The owner's user name.
    pub fn owner_name(&self) -> &UserName {
        &self.grant.owner.name
    }

    /// The owner's external id, if the platform gave one.
    pub fn owner_external_id(&self) -> Option<&ExternalId> {
        self.grant.owner.external_id.as_ref()
    }

    /// Whether the owner is an admin.
    pub fn owner_admin(&self) -> bool {
        self.grant.owner.admin
    }

    /// Every scope the token holds.
    pub fn scopes(&self) -> &Scopes {
        &self.grant.scopes
    }

    /// The scopes as a shared handle.
    pub fn shared_scopes(&self) -> Arc<Scopes> {
        Arc::clone(&self.grant.scopes)
    }

    /// When it expires (`None` = never).
    pub fn expires_at(&self) -> Option<OffsetDateTime> {
        (self.expires_unix != NEVER).then(|| unix_time(self.expires_unix))
    }

    /// When the presented secret was issued (the token's creation or the regeneration that
    /// made it): RFC 7662's `iat`.
    pub fn issued_at(&self) -> OffsetDateTime {
        unix_time(i64::from(self.issued_unix))
    }
}

/// One cached secret: the token it belongs to and what decides whether it works now. Stored
/// inline in the table, 48 bytes plus its 16-byte key.
#[derive(Debug)]
pub struct CachedToken {
    token: VerifiedToken,
    /// Whether this secret works, as far as no clock is concerned.
    secret: SecretState,
    /// Low 32 bits of the unix second of the last use noted for batching, so a token used many
    /// times a second is noted once.
    last_noted: AtomicU32,
}

/// A cached secret's standing, in four bytes: blocked (revoked, or its owner disabled: an
/// answer no clock changes), the token's current secret, or a secret a regeneration replaced,
/// working until a unix second (the end of its grace period, within a week of now).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SecretState(u32);

impl SecretState {
    const REVOKED: Self = Self(0);
    const OWNER_DISABLED: Self = Self(1);
    const CURRENT: Self = Self(u32::MAX);

    /// A replaced secret working until `unix` (kept clear of the three states above: a time
    /// in 1970 reads as the second after them, one past 2106 as the second before).
    fn replaced_until(unix: i64) -> Self {
        Self(u32::try_from(unix.max(2)).unwrap_or(u32::MAX - 1))
    }

    /// The grace period's end, for a replaced secret.
    fn replaced(self) -> Option<i64> {
        (self != Self::REVOKED && self != Self::OWNER_DISABLED && self != Self::CURRENT)
            .then_some(i64::from(self.0))
    }
}

/// A cached token's limits: where it may be used from, and the budget its uses and requests
/// are spent from (shared by the token's secrets).
#[derive(Debug)]
pub struct EntryLimits {
    allowed_ips: Box<[IpRange]>,
    budget: Option<Arc<Budget>>,
}

impl EntryLimits {
    /// Whether a request from `ip` may use the token (an unknown address may not, when there is
    /// an allowlist).
    pub fn allows(&self, ip: Option<IpAddr>) -> bool {
        self.allowed_ips.is_empty()
            || ip.is_some_and(|ip| keyward_core::limits::in_any(&self.allowed_ips, ip))
    }

    /// The budget uses and requests are spent from, when the token counts either.
    pub fn budget(&self) -> Option<&Arc<Budget>> {
        self.budget.as_ref()
    }
}

impl CachedToken {
    /// The token this secret belongs to.
    pub fn token(&self) -> &VerifiedToken {
        &self.token
    }

    /// The token's limits, if it has any.
    pub fn limits(&self) -> Option<&Arc<EntryLimits>> {
        self.token.grant.limits.as_ref()
    }

    /// Whether the token works at `now` (unix seconds), before any scope check. Stored times
    /// are whole seconds, so comparing whole seconds gives the same answer as full precision.
    pub fn state_at(&self, now: i64) -> Result<(), InactiveReason> {
        match self.secret {
            SecretState::REVOKED => return Err(InactiveReason::Revoked),
            SecretState::OWNER_DISABLED => return Err(InactiveReason::OwnerDisabled),
            secret if secret.replaced().is_some_and(|until| until <= now) => {
                return Err(InactiveReason::Revoked);
            }
            _ => {}
        }
        if self.token.expires_unix <= now {
            return Err(InactiveReason::Expired);
        }
        Ok(())
    }

    /// Whether this is a secret that a regeneration replaced and that still works until its
    /// grace period ends. Such a secret verifies and does nothing else. Meaningful once
    /// [`Self::state_at`] answered `Ok`.
    pub fn rotated_out(&self) -> bool {
        self.secret.replaced().is_some()
    }

    /// Whether this is a replaced secret whose grace period is over, of a token that is neither
    /// revoked, expired at `now`, nor its owner disabled: presenting it is the sign of a stolen
    /// secret (reuse detection); a dead token's old secret is not. Meaningful once
    /// [`Self::state_at`] answered `Revoked`.
    pub fn retired(&self, now: i64) -> bool {
        self.secret.replaced().is_some() && self.token.expires_unix > now
    }

    /// Returns true the first time it is called for a given second: the caller then records the
    /// use. Lock-free; at most one use per token per second reaches the batch.
    pub fn note_use(&self, now_unix: i64) -> bool {
        let now = low_bits(now_unix);
        // Load first: the common case (already noted this second) then writes nothing, so cores
        // verifying the same token don't pass its cache line back and forth.
        self.last_noted.load(Ordering::Relaxed) != now
            && self.last_noted.swap(now, Ordering::Relaxed) != now
    }
}

/// The low 32 bits of a unix second: enough to tell this second from the previous one.
fn low_bits(unix: i64) -> u32 {
    let [a, b, c, d, ..] = unix.to_le_bytes();
    u32::from_le_bytes([a, b, c, d])
}

/// What a snapshot's entries point into: each grant is `(owner, scopes)`, indices into the
/// owners and the scopes.
#[derive(Default)]
pub(super) struct Tables {
    pub owners: Vec<Arc<Owner>>,
    pub scopes: Vec<Arc<Scopes>>,
    pub grants: Vec<(usize, usize)>,
}

/// The cache being written down for a snapshot, a shard at a time
/// ([`VerifyCache::exporter`]).
pub(super) struct Exporter<'a> {
    cache: &'a VerifyCache,
    /// The change cursor every entry written down is coherent with.
    pub cursor: i64,
    complete: bool,
    next_shard: usize,
    tables: Tables,
    /// Each owner, scopes and grant met so far (by address) and its index; the grants are held
    /// so that no address is freed and reused by another while the export lasts.
    owners: HashMap<usize, usize>,
    scopes: HashMap<usize, usize>,
    grants: HashMap<usize, usize>,
    held: Vec<Arc<Grant>>,
}

impl Exporter<'_> {
    /// The entries of the next shard of the table that are of tokens without limits (a token's
    /// counts live in the store), into `out` (emptied first), each with its grant as an index
    /// into the tables; `false` once every shard has been written down.
    pub fn next_shard(&mut self, out: &mut Vec<Kept>) -> bool {
        out.clear();
        if self.next_shard >= self.cache.entries.shards() {
            return false;
        }
        let Self {
            tables,
            owners,
            scopes,
            grants,
            held,
            ..
        } = self;
        self.cache
            .entries
            .for_each_in(self.next_shard, |prefix, cached| {
                let grant = &cached.token.grant;
                if grant.limits.is_some() {
                    return;
                }
                let index = *grants.entry(Arc::as_ptr(grant).addr()).or_insert_with(|| {
                    held.push(Arc::clone(grant));
                    let owner = *owners
                        .entry(Arc::as_ptr(&grant.owner).addr())
                        .or_insert_with(|| {
                            tables.owners.push(Arc::clone(&grant.owner));
                            tables.owners.len() - 1
                        });
                    let scope = *scopes
                        .entry(Arc::as_ptr(&grant.scopes).addr())
                        .or_insert_with(|| {
                            tables.scopes.push(Arc::clone(&grant.scopes));
                            tables.scopes.len() - 1
                        });
                    tables.grants.push((owner, scope));
                    tables.grants.len() - 1
                });
                out.push(Kept {
                    prefix,
                    id: cached.token.id.to_bytes(),
                    grant: index,
                    expires_unix: cached.token.expires_unix,
                    issued_unix: cached.token.issued_unix,
                    secret: cached.secret.0,
                });
            });
        self.next_shard += 1;
        true
    }

    /// Whether the cache held every live secret of the store from the export's start to now
    /// (a cache filled from it needs no warm-up from the store), and the tables the entries'
    /// grants point into.
    pub fn finish(self) -> (bool, Tables) {
        let complete = self.complete && self.cache.complete.load(Ordering::Acquire);
        (complete, self.tables)
    }
}

/// A cached entry of a token without limits, written down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Kept {
    /// What the cache keeps of the secret's hash (its first 16 bytes).
    pub prefix: [u8; 16],
    /// The token id's 16 bytes.
    pub id: [u8; 16],
    /// An index into [`Tables::grants`].
    pub grant: usize,
    pub expires_unix: i64,
    pub issued_unix: u32,
    /// The secret's state ([`SecretState`]'s number).
    pub secret: u32,
}

/// One shared copy of each distinct value: a million cached tokens of a thousand owners hold a
/// thousand owners. Used only when an entry is made (a cache miss, already a store read).
struct Interner<T> {
    inner: Mutex<Interned<T>>,
}

struct Interned<T> {
    set: HashSet<Arc<T>>,
    /// Size at which values no entry holds any more are dropped.
    sweep_at: usize,
}

/// Smallest sweep threshold: below it, unused values are kept.
const INTERN_SWEEP_MIN: usize = 1024;

impl<T: Hash + Eq> Interner<T> {
    fn new() -> Self {
        Self {
            inner: Mutex::new(Interned {
                set: HashSet::new(),
                sweep_at: INTERN_SWEEP_MIN,
            }),
        }
    }

    fn intern(&self, value: T) -> Arc<T> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = inner.set.get(&value) {
            return Arc::clone(found);
        }
        if inner.set.len() >= inner.sweep_at {
            // Amortised: the threshold doubles past what survives.
            inner.set.retain(|v| Arc::strong_count(v) > 1);
            inner.sweep_at = (inner.set.len() * 2).max(INTERN_SWEEP_MIN);
        }
        let value = Arc::new(value);
        inner.set.insert(Arc::clone(&value));
        value
    }
}

/// How many hashes one page of [`KnownHashes::load`] reads.
const LOAD_PAGE: u32 = 10_000;

/// Every hash the store holds, as fingerprints (see the module docs).
pub struct KnownHashes {
    set: FingerprintSet,
    /// Bumped whenever the set must be loaded again.
    generation: AtomicU64,
    /// The generation whose load completed: the set holds every stored hash while this equals
    /// [`Self::generation`]. A load that began in an older generation never makes them equal.
    loaded: AtomicU64,
    stale: tokio::sync::Notify,
}

impl KnownHashes {
    fn new() -> Self {
        Self {
            set: FingerprintSet::default(),
            generation: AtomicU64::new(0),
            loaded: AtomicU64::new(u64::MAX),
            stale: tokio::sync::Notify::new(),
        }
    }

    /// Whether the store certainly has no such hash: the set is complete and lacks it.
    fn rules_out(&self, hash: &TokenHash) -> bool {
        self.is_ready() && !self.set.may_contain(hash)
    }

    /// The set may lack hashes (the change log was cut short): no answer comes from it until it
    /// is loaded again.
    fn mark_stale(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.stale.notify_one();
    }

    /// Whether every stored hash is in the set.
    pub fn is_ready(&self) -> bool {
        self.loaded.load(Ordering::Acquire) == self.generation.load(Ordering::Acquire)
    }

    /// Hashes in the set.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Loads every stored hash, page by page, then again whenever the set goes stale; runs until
    /// the cache is dropped. Hashes created meanwhile reach the set through the change log (the
    /// cache's cursor was taken before the first page), so once a load completes the set is
    /// exact.
    pub async fn load(known: std::sync::Weak<Self>, store: Arc<dyn Store>) {
        loop {
            let Some(this) = known.upgrade() else { return };
            let generation = this.generation.load(Ordering::Acquire);
            let mut after = None;
            let loaded = loop {
                match store.stored_hashes(after.as_ref(), LOAD_PAGE).await {
                    Ok(page) if page.is_empty() => break true,
                    Ok(page) => {
                        this.set.extend(&page);
                        after = page.last().copied();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not load the known token hashes; retrying");
                        break false;
                    }
                }
            };
            if loaded {
                this.loaded.store(generation, Ordering::Release);
                tracing::debug!(hashes = this.set.len(), "known token hashes loaded");
                // The set may go stale later (a cut-short change log): wait for that, or for the
                // cache to go (its drop wakes this too; the next upgrade then fails).
                this.stale.notified().await;
            } else {
                drop(this);
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

impl Drop for VerifyCache {
    fn drop(&mut self) {
        // Wakes the loader, which then finds the set gone and ends.
        self.known.stale.notify_one();
    }
}

/// The cache and its change-log cursor.
pub struct VerifyCache {
    entries: HashTable<CachedToken>,
    known: Arc<KnownHashes>,
    owners: Interner<Owner>,
    scopes: Interner<Scopes>,
    grants: Interner<Grant>,
    budgets: Budgets,
    synced_epoch: AtomicU64,
    cursor: tokio::sync::Mutex<i64>,
    /// Whether the cache was filled with every live secret of the store (a warm-up read them
    /// all, or a snapshot of a cache that had was loaded); a log cut short clears it.
    complete: AtomicBool,
    /// Held by a snapshot's writing (`super::snapshot::save`): one at a time.
    pub(super) snapshot: tokio::sync::Mutex<()>,
    hits: HotCounter,
    misses: HotCounter,
    /// Misses answered `unknown` from [`KnownHashes`], without a read.
    ruled_out: HotCounter,
    /// Misses that read the store.
    lookups: HotCounter,
}

impl VerifyCache {
    /// A cache of at most `capacity` secrets, starting at the store's current change cursor.
    pub async fn new(store: &dyn Store, capacity: u64) -> StoreResult<Self> {
        // Epoch first, then cursor: a change committed between the two is replayed, never missed.
        let epoch = store.change_epoch();
        let cursor = store.change_cursor().await?;
        Ok(Self {
            entries: HashTable::new(capacity),
            known: Arc::new(KnownHashes::new()),
            owners: Interner::new(),
            scopes: Interner::new(),
            grants: Interner::new(),
            budgets: Budgets::default(),
            synced_epoch: AtomicU64::new(epoch),
            cursor: tokio::sync::Mutex::new(cursor),
            complete: AtomicBool::new(false),
            snapshot: tokio::sync::Mutex::new(()),
            hits: HotCounter::new(metrics::counter!("keyward_cache_hits_total")),
            misses: HotCounter::new(metrics::counter!("keyward_cache_misses_total")),
            ruled_out: HotCounter::new(metrics::counter!("keyward_unknown_tokens_ruled_out_total")),
            lookups: HotCounter::new(metrics::counter!("keyward_store_lookups_total")),
        })
    }

    /// The budgets of counted tokens (uses and rate limits) this instance holds.
    pub fn budgets(&self) -> &Budgets {
        &self.budgets
    }

    /// The set of known hashes, for its loader and for metrics.
    pub fn known(&self) -> &Arc<KnownHashes> {
        &self.known
    }

    /// Runs `f` on what the store knows about `hash`, from memory when it can be trusted;
    /// `None` when no token has this secret. On a hit `f` runs under a shard's read lock, so it
    /// must be short and must not call back into the cache.
    pub async fn with<R>(
        &self,
        store: &dyn Store,
        hash: &TokenHash,
        f: impl FnOnce(&CachedToken) -> R,
    ) -> StoreResult<Option<R>> {
        Ok(self.try_with(store, hash, f).await?.ok())
    }

    /// [`Self::with`], handing `f` back unused when no token has this secret (so the caller can
    /// try the secret's hash under another key).
    pub async fn try_with<R, F: FnOnce(&CachedToken) -> R>(
        &self,
        store: &dyn Store,
        hash: &TokenHash,
        f: F,
    ) -> StoreResult<Result<R, F>> {
        // Noted before the catch-up: the only epoch at which an entry read below may go in. Any
        // catch-up that reads the log after this one must first see the epoch move past it (and
        // then nothing read below goes in), so no change the read below missed can be read from
        // the log and evicted before that entry goes in, even one committed and not yet
        // announced (its epoch not yet moved) when another catch-up read it.
        let before = store.change_epoch();
        self.catch_up_from(store, before).await?;
        let f = match self.entries.get_with(hash, f) {
            Ok(answer) => {
                self.hits.increment();
                return Ok(Ok(answer));
            }
            Err(f) => f,
        };
        self.misses.increment();
        if self.known.rules_out(hash) {
            self.ruled_out.increment();
            return Ok(Err(f));
        }
        self.lookups.increment();
        let Some(lookup) = store.lookup(hash).await? else {
            return Ok(Err(f));
        };
        let entry = self.entry(lookup);
        let answer = f(&entry);
        // A change committed while we read may have been caught up already (its hash evicted
        // before ours went in); then our entry could be stale, so it must not go in: it goes in
        // only if the epoch is still the one noted before the catch-up. The epoch is compared
        // under the shard's write lock, so no verification ever sees an entry that fails the
        // comparison; a change whose epoch moves after it evicts the entry at the next catch-up
        // like any other. The answer for this request is still right: it began before that
        // change was acknowledged.
        self.entries
            .insert_if(*hash, entry, || store.change_epoch() == before);
        Ok(Ok(answer))
    }

    fn entry(&self, l: Lookup) -> CachedToken {
        let secret = if l.token.revoked_at.is_some() {
            SecretState::REVOKED
        } else if l.owner_disabled {
            SecretState::OWNER_DISABLED
        } else {
            l.secret_valid_until.map_or(SecretState::CURRENT, |until| {
                SecretState::replaced_until(until.unix_timestamp())
            })
        };
        let id = l.token.id.pack();
        let limits = (!l.token.limits.is_empty()).then(|| {
            Arc::new(EntryLimits {
                allowed_ips: l.token.limits.allowed_ips.clone().into_boxed_slice(),
                budget: self.budgets.get(id, l.limits_version, &l.token.limits),
            })
        });
        let grant = Grant {
            owner: self.owners.intern(Owner {
                id: l.token.owner,
                name: l.owner_name,
                external_id: l.owner_external_id,
                admin: l.owner_admin,
            }),
            scopes: self.scopes.intern(l.token.scopes),
            limits,
        };
        CachedToken {
            token: VerifiedToken {
                id,
                grant: if grant.limits.is_some() {
                    Arc::new(grant)
                } else {
                    self.grants.intern(grant)
                },
                expires_unix: l
                    .token
                    .expires_at
                    .map_or(NEVER, OffsetDateTime::unix_timestamp),
                issued_unix: u32::try_from(l.secret_created_at.unix_timestamp().max(0))
                    .unwrap_or(u32::MAX),
            },
            secret,
            last_noted: AtomicU32::new(0),
        }
    }

    /// Caches what the warm-up (`super::warm`) read about `hash`, unless the cache holds it
    /// already (a verification may have cached something fresher) or its shard is full. The read
    /// began at the store's change epoch `read_at`, after the cache had caught up to it: if the
    /// epoch has moved since, the entry may be stale and does not go in, as in
    /// [`Self::try_with`]. Returns whether a new entry is kept.
    pub(super) fn insert_warmed(
        &self,
        store: &dyn Store,
        read_at: u64,
        hash: TokenHash,
        lookup: Lookup,
    ) -> bool {
        // Never over an entry already there, and never evicting one: a full shard is left as
        // it is (the table's eviction would otherwise drop what was warmed first, the most
        // recently used).
        self.entries
            .insert_if_room(hash, self.entry(lookup), || store.change_epoch() == read_at)
    }

    /// Starts writing the cache down for a snapshot (`super::snapshot`). Every change up to the
    /// change cursor noted here has been caught up with, and an entry goes in only if no change
    /// was caught up with while it was read ([`Self::try_with`]): so every entry held from now
    /// on is coherent with the store as of that cursor, and what changed after it is in the log
    /// after it. Verifications and catch-ups go on meanwhile.
    pub(super) async fn exporter(&self) -> Exporter<'_> {
        let cursor = *self.cursor.lock().await;
        Exporter {
            cache: self,
            cursor,
            complete: self.complete.load(Ordering::Acquire),
            next_shard: 0,
            tables: Tables::default(),
            owners: HashMap::new(),
            scopes: HashMap::new(),
            grants: HashMap::new(),
            held: Vec::new(),
        }
    }

    /// The grants of a snapshot's entries, each `(owner, scopes)` indices into `owners` and
    /// `scopes`, shared with what the cache already holds; `None` if an index is out of range.
    pub(super) fn import_grants(
        &self,
        owners: Vec<Owner>,
        scopes: Vec<Scopes>,
        grants: &[(usize, usize)],
    ) -> Option<Vec<Arc<Grant>>> {
        let owners: Vec<_> = owners.into_iter().map(|o| self.owners.intern(o)).collect();
        let scopes: Vec<_> = scopes.into_iter().map(|s| self.scopes.intern(s)).collect();
        grants
            .iter()
            .map(|&(owner, scope)| {
                Some(self.grants.intern(Grant {
                    owner: Arc::clone(owners.get(owner)?),
                    scopes: Arc::clone(scopes.get(scope)?),
                    limits: None,
                }))
            })
            .collect()
    }

    /// Caches an entry of a snapshot, as [`Self::insert_warmed`] caches a warm-up's (never over
    /// an entry, never evicting one, left out if the epoch moved from `read_at`): `Some(true)`
    /// when it is kept, `Some(false)` when the cache had the entry already or the epoch moved,
    /// `None` when there was no room for it (or its grant index is out of range).
    pub(super) fn insert_kept(
        &self,
        store: &dyn Store,
        read_at: u64,
        kept: &Kept,
        grants: &[Arc<Grant>],
    ) -> Option<bool> {
        let grant = grants.get(kept.grant)?;
        let entry = CachedToken {
            token: VerifiedToken {
                id: PackedTokenId::from_bytes(kept.id),
                grant: Arc::clone(grant),
                expires_unix: kept.expires_unix,
                issued_unix: kept.issued_unix,
            },
            secret: SecretState(kept.secret),
            last_noted: AtomicU32::new(0),
        };
        match self
            .entries
            .insert_prefix_if_room(kept.prefix, entry, || store.change_epoch() == read_at)
        {
            Inserted::Yes => Some(true),
            Inserted::Present | Inserted::Stale => Some(false),
            Inserted::Full => None,
        }
    }

    /// Notes that the cache was filled with every live secret of the store (see
    /// [`Exporter::finish`]).
    pub(super) fn mark_complete(&self) {
        self.complete.store(true, Ordering::Release);
    }

    /// Reads the change log if the store's epoch moved, evicting what changed.
    pub(super) async fn catch_up(&self, store: &dyn Store) -> StoreResult<()> {
        self.catch_up_from(store, store.change_epoch()).await
    }

    /// [`Self::catch_up`], the store's epoch read already (`seen`).
    async fn catch_up_from(&self, store: &dyn Store, seen: u64) -> StoreResult<()> {
        if seen == self.synced_epoch.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut cursor = self.cursor.lock().await;
        let epoch = store.change_epoch();
        if epoch == self.synced_epoch.load(Ordering::Acquire) {
            return Ok(());
        }
        let changes = store.changes_since(*cursor).await?;
        if changes.complete {
            for hash in &changes.hashes {
                self.entries.remove(hash);
            }
            // Logged hashes include every new one.
            self.known.set.extend(&changes.hashes);
        } else {
            // Not complete from before the first entry goes (an export reads it after).
            self.complete.store(false, Ordering::Release);
            self.entries.clear();
            self.known.mark_stale();
        }
        *cursor = changes.cursor;
        self.synced_epoch.store(epoch, Ordering::Release);
        Ok(())
    }

    /// Hands the hit and miss counts to the metrics recorder.
    pub fn publish_metrics(&self) {
        self.hits.publish();
        self.misses.publish();
        self.ruled_out.publish();
        self.lookups.publish();
        metrics::gauge!("keyward_cache_entries").set(self.entries.len() as f64);
        metrics::gauge!("keyward_known_hashes").set(self.known.len() as f64);
    }

    /// Entries held now (approximate).
    pub fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    /// Whether the cache is empty (approximate).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn an_entry_is_small() {
        // The memory budget is 160 bytes per cached token, table and membership set included:
        // a 64-byte entry in a block (a 16-byte key and this), 8-byte index buckets at 3/8 to
        // 3/4 load.
        assert_eq!(size_of::<VerifiedToken>(), 40);
        assert_eq!(size_of::<CachedToken>(), 48);
        assert_eq!(size_of::<Option<([u8; 16], CachedToken)>>(), 64);
    }

    #[test]
    fn interning_shares_equal_values_and_sweeps_unused_ones() {
        let interner = Interner::new();
        let a = interner.intern("a".to_owned());
        let b = interner.intern("a".to_owned());
        assert!(Arc::ptr_eq(&a, &b));
        drop((a, b));
        let kept = interner.intern("kept".to_owned());
        for n in 0..10 * INTERN_SWEEP_MIN {
            drop(interner.intern(n.to_string()));
        }
        let inner = interner.inner.lock().unwrap();
        assert!(
            inner.set.len() <= 2 * INTERN_SWEEP_MIN,
            "{}",
            inner.set.len()
        );
        assert!(inner.set.contains(&kept));
    }

    fn entry(secret: SecretState, expires_unix: i64) -> CachedToken {
        CachedToken {
            token: VerifiedToken {
                id: TokenId::parse("tok_01JD8X0VQ5R6M8A5C3E7F9G1HK")
                    .unwrap()
                    .pack(),
                grant: Arc::new(Grant {
                    owner: Arc::new(Owner {
                        id: UserId::parse("usr_01JD8X0VQ5R6M8A5C3E7F9G1HK").unwrap(),
                        name: UserName::parse("ada").unwrap(),
                        external_id: None,
                        admin: false,
                    }),
                    scopes: Arc::new(Scopes::default()),
                    limits: None,
                }),
                expires_unix,
                issued_unix: 1_800_000_000,
            },
            secret,
            last_noted: AtomicU32::new(0),
        }
    }

    #[test]
    fn a_secret_state_answers_as_the_store_would() {
        let expires = 1_800_000_100;
        let current = entry(SecretState::CURRENT, expires);
        assert_eq!(current.state_at(1_800_000_000), Ok(()));
        assert!(!current.rotated_out());
        // A current secret does not become a replaced one when u32 seconds run out.
        assert_eq!(entry(SecretState::CURRENT, NEVER).state_at(1 << 33), Ok(()));

        let replaced = entry(SecretState::replaced_until(1_800_000_050), expires);
        assert_eq!(replaced.state_at(1_800_000_049), Ok(()));
        assert!(replaced.rotated_out());
        assert_eq!(
            replaced.state_at(1_800_000_050),
            Err(InactiveReason::Revoked)
        );
        assert!(
            replaced.retired(1_800_000_050),
            "presenting it now is reuse"
        );
        assert!(
            !replaced.retired(expires),
            "an expired token's old secret is not"
        );

        let revoked = entry(SecretState::REVOKED, expires);
        assert_eq!(revoked.state_at(0), Err(InactiveReason::Revoked));
        assert!(!revoked.retired(0));
        let disabled = entry(SecretState::OWNER_DISABLED, expires);
        assert_eq!(disabled.state_at(0), Err(InactiveReason::OwnerDisabled));
        assert!(!disabled.retired(0));

        // Times the encoding cannot hold stay replaced secrets.
        assert_eq!(SecretState::replaced_until(0).replaced(), Some(2));
        assert_eq!(
            SecretState::replaced_until(1 << 40).replaced(),
            Some(i64::from(u32::MAX - 1))
        );
    }

    #[test]
    fn uses_are_noted_once_a_second() {
        let entry = entry(SecretState::CURRENT, 1_800_000_100);
        assert!(entry.note_use(1_800_000_001));
        assert!(!entry.note_use(1_800_000_001));
        assert!(entry.note_use(1_800_000_002));
        assert_eq!(entry.state_at(1_800_000_099), Ok(()));
        assert_eq!(entry.state_at(1_800_000_100), Err(InactiveReason::Expired));
        assert_eq!(
            entry.token().expires_at().unwrap().unix_timestamp(),
            1_800_000_100
        );
    }
}
