//! last-used bookkeeping without a database write per verification: uses are noted in memory
//! (at most once per token per second, see `CachedToken::note_use`) and written in one
//! transaction every few seconds and at shutdown.
//!
//! A note is appended to a list, not merged into a map, so the verification that makes it
//! touches only the list's end: over millions of tokens each note was otherwise an insert at a
//! random place in a map of every token used since the last flush (BENCHMARKS.md §13). The
//! flush merges the list to each token's latest use; so does a note that finds the list grown
//! past twice what its last merge left (plus [`SLACK`]), which bounds the memory to about twice
//! the tokens used between flushes (the map held each once), whoever calls the flush and
//! however rarely.

use keyward_core::PackedTokenId;
use keyward_store::{Store, Usage};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use time::OffsetDateTime;

/// Notes the list may hold beyond twice what its last merge left before a note merges it.
const SLACK: usize = 1 << 16;

/// A noted use: the token, when, and from where if known.
type Noted = (PackedTokenId, OffsetDateTime, Option<IpAddr>);

/// Uses noted since the last flush.
#[derive(Default)]
pub struct UsageBatch {
    pending: Mutex<Pending>,
    /// Uses taken by the flush at work and not yet written.
    writing: AtomicUsize,
}

#[derive(Default)]
struct Pending {
    /// In the order noted; a token may appear several times until merged.
    noted: Vec<Noted>,
    /// How many the list held after its last merge.
    merged: usize,
}

impl UsageBatch {
    /// Notes a use; the flush keeps each token's latest.
    pub fn note(&self, token: PackedTokenId, at: OffsetDateTime, ip: Option<IpAddr>) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.noted.push((token, at, ip));
        if pending.noted.len() >= pending.merged.saturating_mul(2).saturating_add(SLACK) {
            let noted = std::mem::take(&mut pending.noted);
            pending.noted = merge(noted);
            pending.merged = pending.noted.len();
        }
    }

    /// Uses noted and not written yet (those a flush is writing included): for the metric that
    /// shows whether writing keeps up with verification.
    pub fn unwritten(&self) -> usize {
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .noted
            .len();
        pending + self.writing.load(Ordering::Relaxed)
    }

    /// Writes what is pending. On failure the uses are put back, so none is lost to a blip.
    pub async fn flush(&self, store: &dyn Store) -> keyward_store::StoreResult<usize> {
        let taken = {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            pending.merged = 0;
            std::mem::take(&mut pending.noted)
        };
        if taken.is_empty() {
            return Ok(0);
        }
        let merged = merge(taken);
        let batch: Vec<Usage> = merged
            .iter()
            .map(|(id, at, ip)| Usage {
                token_id: id.unpack(),
                at: *at,
                ip: *ip,
            })
            .collect();
        self.writing.store(batch.len(), Ordering::Relaxed);
        let written = store.record_usage(&batch).await;
        self.writing.store(0, Ordering::Relaxed);
        match written {
            Ok(()) => Ok(batch.len()),
            Err(e) => {
                for (id, at, ip) in merged {
                    self.note(id, at, ip);
                }
                Err(e)
            }
        }
    }
}

/// Each token's latest use, with the latest address noted for it (a use without an address
/// keeps the one an earlier use had). Ties in time keep the order noted.
fn merge(mut noted: Vec<Noted>) -> Vec<Noted> {
    noted.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut merged: Vec<Noted> = Vec::with_capacity(noted.len());
    for (id, at, ip) in noted {
        match merged.last_mut() {
            Some(last) if last.0 == id => {
                last.1 = at;
                last.2 = ip.or(last.2);
            }
            _ => merged.push((id, at, ip)),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_core::TokenId;
    use time::macros::datetime;

    fn id(n: u8) -> PackedTokenId {
        TokenId::parse(&format!("tok_01M96JGRKGR8GF5NXYXQ3M3S{:02}", n))
            .unwrap()
            .pack()
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn merge_keeps_each_tokens_latest_use_and_its_last_known_address() {
        let t0 = datetime!(2026-12-06 10:00:00 UTC);
        let later = |s: i64| t0 + time::Duration::seconds(s);
        let merged = merge(vec![
            (id(2), later(1), ip("203.0.113.1")),
            (id(1), later(3), None),
            (id(2), later(0), ip("203.0.113.9")),
            (id(1), later(2), ip("198.51.100.7")),
            (id(2), later(2), None),
        ]);
        assert_eq!(
            merged,
            vec![
                (id(1), later(3), ip("198.51.100.7")),
                (id(2), later(2), ip("203.0.113.1")),
            ]
        );
    }

    #[test]
    fn unwritten_counts_what_is_noted_and_not_taken() {
        let batch = UsageBatch::default();
        let at = datetime!(2026-12-06 10:00:00 UTC);
        assert_eq!(batch.unwritten(), 0);
        batch.note(id(1), at, None);
        batch.note(id(2), at, None);
        assert_eq!(batch.unwritten(), 2);
        batch.writing.store(5, Ordering::Relaxed);
        assert_eq!(batch.unwritten(), 7, "a flush's batch counts until written");
    }

    #[test]
    fn the_list_is_merged_when_it_outgrows_its_last_merge() {
        let batch = UsageBatch::default();
        let at = datetime!(2026-12-06 10:00:00 UTC);
        // The same 7 tokens noted again and again, with no flush: the list is merged back to
        // them whenever it reaches twice that plus SLACK.
        let mut merges = 0;
        let mut before = 0;
        for i in 0..(3 * SLACK) {
            batch.note(id(u8::try_from(i % 7).unwrap()), at, None);
            let held = batch.pending.lock().unwrap().noted.len();
            assert!(
                held < 2 * 7 + SLACK,
                "{held} notes held after {} notes",
                i + 1
            );
            if held < before {
                merges += 1;
            }
            before = held;
        }
        assert!(merges >= 2, "merged {merges} times");
        let pending = batch.pending.lock().unwrap();
        let mut tokens: Vec<PackedTokenId> = pending.noted.iter().map(|n| n.0).collect();
        tokens.sort();
        tokens.dedup();
        assert_eq!(tokens.len(), 7);
    }
}
