//! last-used bookkeeping without a database write per verification: uses are noted in memory
//! (at most once per token per second, see `CachedToken::note_use`) and written in one
//! transaction every few seconds and at shutdown.

use keyward_core::PackedTokenId;
use keyward_store::{Store, Usage};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use time::OffsetDateTime;

/// Uses noted since the last flush, latest per token.
#[derive(Default)]
pub struct UsageBatch {
    pending: Mutex<HashMap<PackedTokenId, (OffsetDateTime, Option<IpAddr>)>>,
}

impl UsageBatch {
    /// Notes a use; a later one replaces an earlier one.
    pub fn note(&self, token: PackedTokenId, at: OffsetDateTime, ip: Option<IpAddr>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        match pending.get_mut(&token) {
            Some(slot) if slot.0 > at => {}
            Some(slot) => *slot = (at, ip.or(slot.1)),
            None => {
                pending.insert(token, (at, ip));
            }
        }
    }

    /// Writes what is pending. On failure the uses are put back, so none is lost to a blip.
    pub async fn flush(&self, store: &dyn Store) -> keyward_store::StoreResult<usize> {
        let taken = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        if taken.is_empty() {
            return Ok(0);
        }
        let batch: Vec<Usage> = taken
            .iter()
            .map(|(id, (at, ip))| Usage {
                token_id: id.unpack(),
                at: *at,
                ip: *ip,
            })
            .collect();
        match store.record_usage(&batch).await {
            Ok(()) => Ok(batch.len()),
            Err(e) => {
                for u in batch {
                    self.note(u.token_id.pack(), u.at, u.ip);
                }
                Err(e)
            }
        }
    }
}
