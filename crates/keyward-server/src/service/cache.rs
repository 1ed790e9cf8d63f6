//! The verification cache: known hashes → what the store said about them, kept coherent with the
//! store's change log.
//!
//! Coherence rule: before answering from the cache, a verification compares the store's change
//! epoch (one atomic load, shared by every process on the database) with the epoch this cache
//! last caught up to. If they differ, it first reads the change log and evicts every hash named
//! there. A writer bumps the epoch only after its commit, so any revocation acknowledged before a
//! verification starts is evicted before that verification reads the cache.

use keyward_core::{InactiveReason, Scopes, TokenHash, TokenId, UserId, UserName};
use keyward_store::{Lookup, Store, StoreResult};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use time::OffsetDateTime;
use tokio::sync::Mutex;

use super::table::HashTable;

/// What a verification needs to know about one secret, kept in memory.
#[derive(Debug)]
pub struct CachedToken {
    /// The token's id.
    pub token_id: TokenId,
    /// Its owner.
    pub owner: UserId,
    /// The owner's name.
    pub owner_name: UserName,
    /// Its scopes.
    pub scopes: Scopes,
    /// When it expires (`None` = never).
    pub expires_at: Option<OffsetDateTime>,
    /// When this secret was made.
    pub created_at: OffsetDateTime,
    /// When this particular secret stops working after a regeneration.
    secret_valid_until: Option<i64>,
    /// `expires_at` in unix seconds: the hot path compares integers, not calendar dates.
    expires_unix: Option<i64>,
    /// Revoked, or owner disabled: an answer that no clock can change.
    blocked: Option<InactiveReason>,
    /// Unix second of the last use noted for batching, so a token used many times a second is
    /// noted once.
    last_noted: AtomicI64,
}

impl CachedToken {
    fn from_lookup(l: Lookup) -> Self {
        let blocked = if l.token.revoked_at.is_some() {
            Some(InactiveReason::Revoked)
        } else if l.owner_disabled {
            Some(InactiveReason::OwnerDisabled)
        } else {
            None
        };
        Self {
            token_id: l.token.id,
            owner: l.token.owner,
            owner_name: l.owner_name,
            scopes: l.token.scopes,
            expires_at: l.token.expires_at,
            created_at: l.token.created_at,
            secret_valid_until: l.secret_valid_until.map(OffsetDateTime::unix_timestamp),
            expires_unix: l.token.expires_at.map(OffsetDateTime::unix_timestamp),
            blocked,
            last_noted: AtomicI64::new(i64::MIN),
        }
    }

    /// Whether the token works at `now` (unix seconds), before any scope check. Stored times
    /// are whole seconds, so comparing whole seconds gives the same answer as full precision.
    pub fn state_at(&self, now: i64) -> Result<(), InactiveReason> {
        if let Some(reason) = self.blocked {
            return Err(reason);
        }
        if self.secret_valid_until.is_some_and(|until| until <= now) {
            return Err(InactiveReason::Revoked);
        }
        if self.expires_unix.is_some_and(|at| at <= now) {
            return Err(InactiveReason::Expired);
        }
        Ok(())
    }

    /// Returns true the first time it is called for a given second: the caller then records the
    /// use. Lock-free; at most one use per token per second reaches the batch.
    pub fn note_use(&self, now_unix: i64) -> bool {
        // Load first: the common case (already noted this second) then writes nothing, so cores
        // verifying the same token don't pass its cache line back and forth.
        self.last_noted.load(Ordering::Relaxed) != now_unix
            && self.last_noted.swap(now_unix, Ordering::Relaxed) != now_unix
    }
}

/// What a lookup through the cache found.
pub enum Found {
    /// The secret belongs to this token.
    Token(Arc<CachedToken>),
    /// No token has this secret.
    Unknown,
}

/// The cache and its change-log cursor.
pub struct VerifyCache {
    entries: HashTable<CachedToken>,
    synced_epoch: AtomicU64,
    cursor: Mutex<i64>,
    hits: metrics::Counter,
    misses: metrics::Counter,
}

impl VerifyCache {
    /// A cache of at most `capacity` secrets, starting at the store's current change cursor.
    pub async fn new(store: &dyn Store, capacity: u64) -> StoreResult<Self> {
        // Epoch first, then cursor: a change committed between the two is replayed, never missed.
        let epoch = store.change_epoch();
        let cursor = store.change_cursor().await?;
        Ok(Self {
            entries: HashTable::new(capacity),
            synced_epoch: AtomicU64::new(epoch),
            cursor: Mutex::new(cursor),
            hits: metrics::counter!("keyward_cache_hits_total"),
            misses: metrics::counter!("keyward_cache_misses_total"),
        })
    }

    /// Finds what the store knows about `hash`, from memory when it can be trusted.
    pub async fn find(&self, store: &dyn Store, hash: &TokenHash) -> StoreResult<Found> {
        self.catch_up(store).await?;
        if let Some(hit) = self.entries.get(hash) {
            self.hits.increment(1);
            return Ok(Found::Token(hit));
        }
        self.misses.increment(1);
        let before = store.change_epoch();
        let Some(lookup) = store.lookup(hash).await? else {
            return Ok(Found::Unknown);
        };
        let entry = Arc::new(CachedToken::from_lookup(lookup));
        self.entries.insert(*hash, Arc::clone(&entry));
        // A change committed while we read may have been caught up already, before our insert;
        // then our entry could be stale, so it must not stay. The answer for this request is
        // still right: it began before that change was acknowledged.
        if store.change_epoch() != before {
            self.entries.remove(hash);
        }
        Ok(Found::Token(entry))
    }

    /// Reads the change log if the store's epoch moved, evicting what changed.
    async fn catch_up(&self, store: &dyn Store) -> StoreResult<()> {
        if store.change_epoch() == self.synced_epoch.load(Ordering::Acquire) {
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
        } else {
            self.entries.clear();
        }
        *cursor = changes.cursor;
        self.synced_epoch.store(epoch, Ordering::Release);
        Ok(())
    }

    /// Forgets everything (used when the store cannot vouch for the cache any more).
    pub fn clear(&self) {
        self.entries.clear();
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
