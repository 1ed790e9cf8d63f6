//! Warming the verification cache at start-up: a restarted instance answers from the first
//! request (a miss reads the store, as always), and in the background fills its cache with the
//! secrets most likely to be verified next, most recently used token first
//! ([`keyward_store::TokenStore::secrets_by_recent_use`], read a page at a time through an index).
//!
//! **A snapshot first.** Where the last clean shutdown wrote the cache down (SQLite,
//! `cache_snapshot`), the warm-up loads that file before anything else (`super::snapshot`, under
//! the coherence rule below, the file standing for a page read at its change cursor). When the
//! cache it was written from held every live secret, nothing is read from the store; otherwise
//! the warm-up goes on as below, skipping what the file filled.
//!
//! **Two orders.** Reading by recent use visits the store at random (each secret's token, owner
//! and validity a page read of its own): on SQLite about 20 µs a secret, 20 s for 10^6. So only
//! the [`HOTTEST`] most recently used are read that way when the cache can hold every secret the
//! store has: the rest is read in the order the store keeps its tokens
//! ([`keyward_store::TokenStore::secrets_in_store_order`], each table page read once: 8.5 s for
//! 10^6), since once the hottest are in, the order no longer matters; past its first page,
//! each page is read in pieces at once, one per core ([`READERS`]). A store
//! with more secrets than the cache takes, or without a cheaper order, is read by recent use to
//! the end.
//!
//! **Coherence.** A page is read from the store as it was at some moment; a change committed
//! after that moment may already have been caught up with (and its hash evicted, while not yet
//! cached) by the time the page's entries go in. So each page is read after noting the change
//! epoch, catching the cache up and noting the change cursor, in that order; before each entry
//! goes in, the epoch is compared again, and if it moved, the cache catches up and the change log
//! since the noted cursor is read: every hash named there is left out of the rest of the page
//! (if the log was cut short, the rest of the page is). An entry that goes in while the epoch
//! has not moved is evicted by the next catch-up like any other; one whose epoch moved just
//! before it would go in is left out, the epoch compared under the table's lock
//! ([`VerifyCache::insert_warmed`], the rule of a cold read).
//!
//! **Capacity.** The warm-up fills the cache to 90 % of its capacity ([`warm_target`]), never more:
//! the rest is room for tokens it did not reach (created since, or used after the restart), so
//! that they do not push out what it warmed. It never replaces an entry a verification made, and
//! never evicts one: a full shard of the table is skipped.
//!
//! **Sharing the machine.** Pages are small and the task yields between them, so verification
//! is never starved; it stops when the service is dropped.

use keyward_core::TokenHash;
use keyward_store::{
    Lookup, RecentUseCursor, StoreError, StoreOrderCursor, StoreOrderPage, StoreResult,
};
use std::collections::HashSet;
use std::sync::{Arc, LazyLock, Weak};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

use super::cache::VerifyCache;
use super::table::prefix_of;
use crate::service::Keyward;

/// Most secrets one page reads: a few milliseconds of store time, then the verifications
/// waiting meanwhile run.
pub(super) const PAGE: u32 = 5_000;

/// How many entries the warm-up fills a cache of `capacity` to: 90 %, leaving a tenth for the
/// tokens it does not reach (see the module docs).
pub fn warm_target(capacity: u64) -> u64 {
    capacity - capacity / 10
}

/// Secrets read most recently used first before the rest is read in store order (when the cache
/// can hold them all): the tokens in use right before the restart, about a second of reading.
pub(in crate::service) const HOTTEST: u64 = 50_000;

/// Threads a page in store order is read on at once: one per core, at most four (the caching
/// and the verifications waiting meanwhile need cores too).
static READERS: LazyLock<u32> = LazyLock::new(|| {
    std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(1).min(4))
});

/// Times one page may find the store changed under it before the warm-up gives up: a store
/// whose epoch never settles (PostgreSQL while its listener is down) cannot be warmed from.
pub(super) const MAX_RESYNCS: u32 = 16;

/// Times a failed page read is tried again, a second apart, before the warm-up gives up.
const MAX_RETRIES: u32 = 3;

/// How a warm-up went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarmUp {
    /// Entries it put in the cache.
    pub entries: u64,
    /// Secrets it read from the store.
    pub read: u64,
    /// Whether it ran to its end: every live secret read, or the cache filled to
    /// [`warm_target`]. `false` when it gave up (an error, a store that kept changing) or the
    /// service was dropped.
    pub finished: bool,
}

/// Where the warm-up reads next.
#[derive(Clone)]
enum Position {
    /// By recent use, after this secret (from the first when `None`).
    Recent(Option<RecentUseCursor>),
    /// In store order, after this cursor (from the first when `None`).
    Stored(Option<StoreOrderCursor>),
}

/// What reading one page came to.
enum Fetched {
    /// The store would not be read in store order (more secrets than the cache takes, or no
    /// such order): read on by recent use.
    NoStoreOrder,
    /// A page, and where the next one starts (`None` after the last page of this order).
    Page(Page, Option<Position>),
}

/// A page read from the store and not yet cached, with what its coherence check needs (see
/// the module docs).
struct Page {
    /// Where it was read from, should caching it fail and it have to be read again.
    from: Position,
    /// The change epoch noted before it was read.
    read_at: u64,
    /// The change cursor noted before it was read.
    since: i64,
    secrets: Vec<(TokenHash, Lookup)>,
}

/// Warms the service's cache, page by page (the `hottest` most recently used first, see the
/// module docs), until the cache is as full as it gets warmed, the store has nothing more, or
/// the service is dropped. Errors are logged, never raised.
///
/// Each page is read while the one before it goes into the cache: the read runs on a blocking
/// thread, the caching on this task, so the two overlap (10^6 secrets: 7.7 s one after the
/// other, BENCHMARKS.md §14).
pub(in crate::service) async fn warm(service: Weak<Keyward>, hottest: u64) -> WarmUp {
    let started = Instant::now();
    let mut done = WarmUp {
        entries: 0,
        read: 0,
        finished: false,
    };
    let entries = metrics::counter!("keyward_cache_warmed_total");
    // A snapshot written at the last clean shutdown first: of a cache that held everything, it
    // leaves nothing to read from the store.
    let snapshot = match service.upgrade() {
        Some(keyward) => match keyward.settings.cache_snapshot.clone() {
            Some(path) => super::snapshot::load(&keyward, &path).await,
            None => None,
        },
        None => return done,
    };
    if let Some(loaded) = snapshot {
        done.entries = loaded.entries;
        entries.increment(loaded.entries);
        tracing::info!(
            entries = loaded.entries,
            complete = loaded.complete,
            took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "verification cache loaded from its snapshot"
        );
        if loaded.complete {
            done.finished = true;
            return done;
        }
    }
    // Where the next page is read; `None` once the store has no more.
    let mut at = Some(Position::Recent(None));
    // The page read and not yet cached.
    let mut current: Option<Page> = None;
    let mut try_store_order = true;
    let mut resume = None;
    let mut retries = 0;
    // Whether every page read went into the cache whole.
    let mut whole = true;
    loop {
        let Some(keyward) = service.upgrade() else {
            return done;
        };
        // What it warmed counts even where the table has dropped some of it again (a full
        // shard drops an arbitrary entry): reading on would only churn the cache. The page
        // waiting to be cached counts as cached.
        let queued = current.as_ref().map_or(0, |page| page.secrets.len() as u64);
        let held = keyward.cache.len().max(done.entries) + queued;
        let room = warm_target(keyward.settings.cache_capacity).saturating_sub(held);
        if current.is_none() && (at.is_none() || room == 0) {
            done.finished = true;
            if at.is_none() && whole {
                // Every live secret read and cached: a snapshot of this cache leaves the next
                // start nothing to read. (One filled to the target leaves it only room to fill.)
                keyward.cache.mark_complete();
            }
            break;
        }
        if try_store_order && done.read >= hottest {
            // Once: where recent use left off is kept, should the store refuse.
            try_store_order = false;
            match at.take() {
                Some(Position::Recent(after)) => {
                    resume = after;
                    at = Some(Position::Stored(None));
                }
                other => at = other,
            }
        }
        let mut limit = u32::try_from(room).unwrap_or(u32::MAX).min(PAGE);
        if try_store_order {
            // The hottest, and no more, before the store order is tried.
            limit = limit.min(u32::try_from(hottest - done.read).unwrap_or(u32::MAX));
        }
        let next = at.as_ref().filter(|_| room > 0);
        // The read goes first: it reaches its blocking thread, then the caching runs.
        let (fetched, cached) = tokio::join!(
            async {
                match next {
                    Some(next) => read_page(&keyward, next, limit, room).await.map(Some),
                    None => Ok(None),
                }
            },
            async {
                match current.take() {
                    Some(page) => cache_page(&keyward, page).await,
                    None => Ok(Some((0, true))),
                }
            },
        );
        let failed = match cached {
            Ok(Some((page_entries, whole_page))) => {
                done.entries += page_entries;
                entries.increment(page_entries);
                whole &= whole_page;
                None
            }
            Ok(None) => {
                tracing::warn!(
                    entries = done.entries,
                    "the store kept changing under the cache warm-up; stopped (misses read the store)"
                );
                return done;
            }
            Err((e, from)) => {
                // Read again from where it was; what was read after it is dropped.
                at = Some(from);
                Some(e)
            }
        };
        let failed = match (failed, fetched) {
            (Some(e), _) | (None, Err(e)) => Some(e),
            (None, Ok(None)) => None,
            (None, Ok(Some(Fetched::NoStoreOrder))) => {
                at = Some(Position::Recent(resume.take()));
                None
            }
            (None, Ok(Some(Fetched::Page(page, next)))) => {
                done.read += page.secrets.len() as u64;
                current = Some(page);
                at = next;
                None
            }
        };
        match failed {
            None => retries = 0,
            Some(e) if retries < MAX_RETRIES => {
                retries += 1;
                tracing::warn!(error = %e, "could not warm the verification cache; retrying");
                drop(keyward);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Some(e) => {
                tracing::warn!(
                    error = %e,
                    entries = done.entries,
                    "could not warm the verification cache; stopped (misses read the store)"
                );
                return done;
            }
        }
        drop(keyward);
        tokio::task::yield_now().await;
    }
    tracing::info!(
        entries = done.entries,
        read = done.read,
        took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "verification cache warmed"
    );
    done
}

/// Reads one page of at most `limit` secrets (in store order: tokens) at `at`, noting first
/// what the coherence rule of the module docs needs. `room` is how many more the cache takes.
async fn read_page(
    keyward: &Keyward,
    at: &Position,
    limit: u32,
    room: u64,
) -> StoreResult<Fetched> {
    let store = keyward.store.as_ref();
    let cache: &VerifyCache = &keyward.cache;
    // Epoch, catch-up, cursor, read: a change committed after the read is in the log after
    // `since`, and any catch-up that evicts it comes after an epoch change past `read_at`.
    let read_at = store.change_epoch();
    cache.catch_up(store).await?;
    let since = store.change_cursor().await?;
    let now = keyward.now();
    let (secrets, next) = match at {
        Position::Recent(after) => {
            let page = store
                .secrets_by_recent_use(now, after.as_ref(), limit)
                .await?;
            // An empty page is the end.
            let next = page
                .last()
                .map(|(hash, lookup)| Position::Recent(Some(RecentUseCursor::after(hash, lookup))));
            (page, next)
        }
        Position::Stored(after) => {
            // The cache takes `room` more besides what it holds: at most that many stored
            // secrets it does not hold, so every one read fits.
            let at_most = room.saturating_add(cache.len());
            let page = match after {
                // The first page, which also says whether the store has that order: alone.
                None => {
                    store
                        .secrets_in_store_order(now, None, limit, at_most)
                        .await?
                }
                Some(after) => read_in_pieces(keyward, now, after, limit, at_most).await?,
            };
            match page {
                None => return Ok(Fetched::NoStoreOrder),
                Some(page) => (page.secrets, page.next.map(|n| Position::Stored(Some(n)))),
            }
        }
    };
    let page = Page {
        from: at.clone(),
        read_at,
        since,
        secrets,
    };
    Ok(Fetched::Page(page, next))
}

/// The page of `limit` tokens in store order after `after`, read as [`READERS`] pieces at once
/// (each on a blocking thread of its own, [`StoreOrderCursor::pieces`]). On SQLite reading is
/// three quarters of a warm-up's CPU time; in pieces it runs on every core (10^6 secrets on two
/// cores: 8.3–9.2 s against 10.6–11.1 s in one piece, BENCHMARKS.md §16).
async fn read_in_pieces(
    keyward: &Keyward,
    now: OffsetDateTime,
    after: &StoreOrderCursor,
    limit: u32,
    at_most: u64,
) -> StoreResult<Option<StoreOrderPage>> {
    let reads: Vec<_> = after
        .pieces(limit, *READERS)
        .into_iter()
        .map(|(piece, piece_limit)| {
            let store = Arc::clone(&keyward.store);
            tokio::spawn(async move {
                store
                    .secrets_in_store_order(now, Some(&piece), piece_limit, at_most)
                    .await
            })
        })
        .collect();
    // Joined in order: the page's secrets in store order, and the last piece's next the page's.
    let mut page = StoreOrderPage {
        secrets: Vec::new(),
        next: None,
    };
    for read in reads {
        let read = read
            .await
            .map_err(|e| StoreError::unavailable(format!("a page read stopped: {e}")))??;
        // Past the first page a store keeps its order; one that did not is read by recent use.
        let Some(piece) = read else {
            return Ok(None);
        };
        page.secrets.extend(piece.secrets);
        page.next = piece.next;
    }
    Ok(Some(page))
}

/// Caches a page read by [`read_page`], keeping to the coherence rule of the module docs.
/// Returns the entries it made and whether it went through the whole page (not when the change
/// log was cut short meanwhile), or `None` when the store kept changing under it; on a store
/// error, the error and where the page was read from.
async fn cache_page(
    keyward: &Keyward,
    page: Page,
) -> Result<Option<(u64, bool)>, (StoreError, Position)> {
    let store = keyward.store.as_ref();
    let cache: &VerifyCache = &keyward.cache;
    let Page {
        from,
        read_at,
        since,
        secrets,
    } = page;
    let mut sync = Sync {
        read_at,
        since,
        changed: HashSet::new(),
    };
    let mut resyncs = 0;
    let mut entries = 0;
    for (hash, lookup) in secrets {
        if store.change_epoch() != sync.read_at {
            resyncs += 1;
            if resyncs > MAX_RESYNCS {
                return Ok(None);
            }
            match sync.again(keyward).await {
                Ok(true) => {}
                // What changed is unknown: the rest of the page is left to misses.
                Ok(false) => return Ok(Some((entries, false))),
                Err(e) => return Err((e, from)),
            }
        }
        if !sync.changed.contains(&prefix_of(&hash))
            && cache.insert_warmed(store, sync.read_at, hash, lookup)
        {
            entries += 1;
        }
    }
    Ok(Some((entries, true)))
}

/// Where entries read at one moment stand against the change log (the coherence rule of the
/// module docs): the epoch they are checked against as they go in, the cursor the log was read
/// to, and every hash named in the log since they were read (as the cache keeps them, their
/// first 16 bytes: a 2^-128 chance of leaving out an entry that did not change, never of
/// keeping one that did).
pub(super) struct Sync {
    pub read_at: u64,
    pub since: i64,
    pub changed: HashSet<[u8; 16]>,
}

impl Sync {
    /// Notes the epoch, catches the cache up and reads the log since `since`, in that order:
    /// an entry that goes in while the epoch stays at `read_at`, and is not in `changed`, is
    /// coherent with the store. `false` when the log was cut short (what changed is unknown).
    pub async fn again(&mut self, keyward: &Keyward) -> StoreResult<bool> {
        let store = keyward.store.as_ref();
        self.read_at = store.change_epoch();
        keyward.cache.catch_up(store).await?;
        let changes = store.changes_since(self.since).await?;
        if !changes.complete {
            return Ok(false);
        }
        self.changed.extend(changes.hashes.iter().map(prefix_of));
        self.since = changes.cursor;
        Ok(true)
    }
}
