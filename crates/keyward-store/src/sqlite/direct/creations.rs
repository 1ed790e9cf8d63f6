//! The group commit's batches (`sqlite::creations`) written through rusqlite on a blocking
//! thread. A creation is seven statements (a savepoint, the token, its secret's hash, the change
//! log, the audit entry, the outbox, the release); through sqlx each is a hop to its connection's
//! worker thread, about 100 µs, so a batch of 32 took over 20 ms before its commit. Here the
//! batch's statements run back to back, prepared once, on a connection of the writer's own.
//!
//! The batches of last uses (`TokenStore::record_usage`) are written here too, for the same
//! reason: one `UPDATE` per token used, each a hop through sqlx. After a sweep verifying each of
//! 10^6 tokens about twice at ~30,000 a second, the uses it noted were still being written
//! through sqlx a minute later (the server held ~190 MiB more for them); through this connection
//! they were all written ~40 s after the sweep ended.
//!
//! The statements are the sqlx writes' own constants (`tokens`, `audit`, `feed`), bound in the
//! same order by the binders `bulk` shares.
//!
//! Two settings of this connection are its own:
//! - Savepoints keep their journal in memory (`temp_store = MEMORY`). A batch's savepoints
//!   outgrow SQLite's 64 KiB in-memory sub-journal after a few creations, and it then opens,
//!   unlinks and writes a temporary file for every batch: a fifth of a lone creation's time
//!   (BENCHMARKS.md §19). The journal holds the pages a batch changed: a few pages a creation,
//!   so about ten MiB for the largest batch (256 creations) over a large store.
//! - The write-ahead log is copied back into the database file (checkpointed) when the writer
//!   has nothing queued, not inside the commit that makes it long. SQLite's automatic
//!   checkpoint runs in the commit that takes the log past 1,000 frames, so every creation of
//!   that batch, and every one queued behind it, waits for the copy and its sync. Here that
//!   commit only notes the log's length ([`Writer::checkpoint_due`]); `sqlite::creations` runs
//!   [`Writer::checkpoint`] once the queue is empty. Under writes that never pause, the commit
//!   that takes the log past [`CHECKPOINT_AT_COMMIT`] frames still checkpoints, so the log stays
//!   bounded.

use rusqlite::hooks::Wal;
use rusqlite::{Connection, TransactionBehavior, params};
use std::cell::Cell;
use std::ffi::c_int;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};

use super::bulk::{insert_audit_row, insert_error, insert_hash_row, insert_token_row, open_writer};
use super::lite_error;
use crate::outbox::OutboxRow;
use crate::sqlite::audit::{INSERT_AUDIT, INSERT_EVENT};
use crate::sqlite::creations::Creation;
use crate::sqlite::feed::{APPEND_TOKEN_HASHES, PRUNE_DROP, PRUNE_MARK, prune_cutoff};
use crate::sqlite::rows::unix;
use crate::sqlite::tokens::{INSERT_HASH, INSERT_TOKEN, LIVE_TOKENS_OF, RECORD_USE};
use crate::{HashRecord, MAX_TOKENS_REACHED, StoreError, StoreResult, Usage};

/// The writer's connection to the database file, opened at its first batch and kept; dropped
/// (and opened again at the next batch) after a batch failed as a whole, and for good when the
/// store closes.
#[derive(Debug)]
pub(in crate::sqlite) struct Writer {
    path: PathBuf,
    connection: Mutex<Slot>,
    /// Frames in the write-ahead log after this connection's last commit, 0 once a checkpoint
    /// was tried since.
    frames: AtomicI32,
}

/// Frames in the write-ahead log from which it is checkpointed once the writer is idle:
/// SQLite's own threshold for its automatic checkpoint (about 4 MiB).
const CHECKPOINT_WHEN_IDLE: c_int = 1_000;

/// Frames from which the commit that reaches them checkpoints, idle or not (about 40 MiB). A
/// burst of about a thousand creations (seven frames each at 32 in flight) never waits for a
/// checkpoint; writes that never pause wait for a larger one, ten times rarer (BENCHMARKS.md
/// §19 measures both).
const CHECKPOINT_AT_COMMIT: c_int = 10 * CHECKPOINT_WHEN_IDLE;

thread_local! {
    /// The log's length that the write-ahead log hook saw at the commit this thread just ran;
    /// the hook is a plain function, called on the committing thread.
    static COMMITTED_FRAMES: Cell<Option<c_int>> = const { Cell::new(None) };
}

/// The write-ahead log hook of the writer's connection, called by SQLite after each commit with
/// the log's length in frames. It replaces the automatic checkpoint (one hook per connection).
fn after_commit(wal: &Wal, frames: c_int) -> rusqlite::Result<()> {
    if frames < CHECKPOINT_AT_COMMIT {
        COMMITTED_FRAMES.set(Some(frames));
        return Ok(());
    }
    COMMITTED_FRAMES.set(Some(0));
    // As SQLite's automatic checkpoint does, a failed one is not the commit's failure (the
    // commit stands); the next commit tries again.
    if let Err(e) = wal.checkpoint() {
        tracing::warn!(error = %e, frames, "the write-ahead log's checkpoint at commit failed");
    }
    Ok(())
}

/// The writer's connection: [`open_writer`]'s, with the two settings the module's docs give.
fn open_batch_writer(path: &std::path::Path) -> rusqlite::Result<Connection> {
    let connection = open_writer(path)?;
    connection.pragma_update(None, "temp_store", "MEMORY")?;
    connection.wal_hook(Some(after_commit));
    Ok(connection)
}

#[derive(Debug, Default)]
struct Slot {
    connection: Option<Connection>,
    closed: bool,
}

impl Writer {
    /// The writer for the database file at `path` (absolute, as `Readers` keeps it).
    pub(in crate::sqlite) fn new(path: PathBuf) -> Self {
        Self {
            path,
            connection: Mutex::new(Slot::default()),
            frames: AtomicI32::new(0),
        }
    }

    /// Closes the connection (SQLite checkpoints the WAL when the file's last one closes);
    /// later batches are refused as the closed pool refuses other writes.
    pub(in crate::sqlite) fn close(&self) {
        let mut slot = self.slot();
        slot.closed = true;
        slot.connection = None;
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes `batch` in one transaction: one answer per creation, in order, or the error that
    /// failed the batch as a whole (nothing of it committed, as far as SQLite said).
    /// Blocking: call it from a blocking thread.
    pub(in crate::sqlite) fn write(&self, batch: &[Creation]) -> StoreResult<Vec<StoreResult<()>>> {
        self.on_connection(|connection| write_batch(connection, batch))
    }

    /// Records `uses` (`TokenStore::record_usage`), [`USES_PER_TRANSACTION`] to a transaction,
    /// so creations wait at most one short transaction for the connection. On an error the
    /// transactions before it stay committed; writing them again changes nothing (a use only
    /// moves a token's last use forward). Blocking: call it from a blocking thread.
    pub(in crate::sqlite) fn record_usage(&self, uses: &[Usage]) -> StoreResult<()> {
        for part in uses.chunks(USES_PER_TRANSACTION) {
            self.on_connection(|connection| {
                let tx = connection
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(lite_error)?;
                {
                    let mut update = tx.prepare_cached(RECORD_USE).map_err(lite_error)?;
                    for usage in part {
                        update
                            .execute(params![
                                usage.token_id.as_str(),
                                unix(usage.at),
                                usage.ip.map(|ip| ip.to_string()),
                            ])
                            .map_err(lite_error)?;
                    }
                }
                tx.commit().map_err(lite_error)
            })?;
        }
        // Not waited for by anyone: the log is copied back now rather than left to a creation.
        // The uses are written whether or not it succeeds.
        if self.checkpoint_due()
            && let Err(e) = self.checkpoint()
        {
            tracing::warn!(error = %e, "the write-ahead log's checkpoint failed");
        }
        Ok(())
    }

    /// Whether the write-ahead log has grown enough since its last checkpoint to be worth one
    /// now ([`CHECKPOINT_WHEN_IDLE`] frames).
    pub(in crate::sqlite) fn checkpoint_due(&self) -> bool {
        self.frames.load(Ordering::Relaxed) >= CHECKPOINT_WHEN_IDLE
    }

    /// Copies the write-ahead log back into the database file, as far as no reader still needs
    /// it (a passive checkpoint: it waits for no one; the next commit after a complete one starts
    /// the log over). Tried once per commit that made it due: after a failure, the next commit
    /// makes it due again. Blocking: call it from a blocking thread.
    pub(in crate::sqlite) fn checkpoint(&self) -> StoreResult<()> {
        self.frames.store(0, Ordering::Relaxed);
        if self.slot().closed {
            // Closing the file's last connection checkpoints it.
            return Ok(());
        }
        self.on_connection(|connection| {
            connection
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                .map_err(lite_error)
        })
    }

    /// Runs `f` on the writer's connection, opening it first if need be.
    fn on_connection<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mut slot = self.slot();
        if slot.closed {
            return Err(StoreError::unavailable("the store is closed"));
        }
        let connection = match &mut slot.connection {
            Some(connection) => connection,
            empty => empty.insert(open_batch_writer(&self.path).map_err(lite_error)?),
        };
        let written = f(connection);
        if let Some(frames) = COMMITTED_FRAMES.take() {
            self.frames.store(frames, Ordering::Relaxed);
        }
        if written.is_err() {
            // Whatever state the failure left the connection in, the next batch starts afresh.
            slot.connection = None;
        }
        written
    }
}

/// Uses written per transaction by [`Writer::record_usage`]: milliseconds when the tokens' pages
/// are cached, ~50 ms over a 7 GB file of 10^7 tokens (each use dirties a page of its own; the
/// writer wrote ~147 MB/s of WAL there), which is as long as a creation may wait behind it.
const USES_PER_TRANSACTION: usize = 2_000;

fn write_batch(
    connection: &mut Connection,
    batch: &[Creation],
) -> StoreResult<Vec<StoreResult<()>>> {
    let mut tx = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(lite_error)?;
    let mut answers = Vec::with_capacity(batch.len());
    let mut latest = None;
    for creation in batch {
        let savepoint = tx.savepoint().map_err(lite_error)?;
        let written = write_one(&savepoint, creation);
        if written.is_ok() {
            savepoint.commit().map_err(lite_error)?;
            latest = latest.max(Some(creation.token.created_at));
        } else {
            // Rolled back to the savepoint, and released, when dropped.
            drop(savepoint);
        }
        answers.push(written);
    }
    let Some(latest) = latest else {
        // Nothing to commit: rolled back when dropped.
        return Ok(answers);
    };
    tx.execute(PRUNE_MARK, params![prune_cutoff(latest)])
        .map_err(lite_error)?;
    tx.execute(PRUNE_DROP, []).map_err(lite_error)?;
    tx.commit().map_err(lite_error)?;
    Ok(answers)
}

/// One creation's writes, as `insert_token` makes them through sqlx for a database that is not
/// a file.
fn write_one(conn: &Connection, c: &Creation) -> StoreResult<()> {
    if let Some(cap) = c.max_per_user {
        let live: i64 = conn
            .prepare_cached(LIVE_TOKENS_OF)
            .and_then(|mut count| {
                count.query_row(
                    params![c.token.owner.as_str(), unix(c.token.created_at)],
                    |row| row.get(0),
                )
            })
            .map_err(lite_error)?;
        if live >= i64::from(cap) {
            return Err(StoreError::InvalidState(MAX_TOKENS_REACHED));
        }
    }
    let prepare = |sql| conn.prepare_cached(sql).map_err(lite_error);
    insert_token_row(&mut *prepare(INSERT_TOKEN)?, &c.token)?;
    let first = HashRecord {
        token_id: c.token.id.clone(),
        hash: c.hash.clone(),
        created_at: c.token.created_at,
        valid_until: None,
    };
    insert_hash_row(&mut *prepare(INSERT_HASH)?, &first)?;
    prepare(APPEND_TOKEN_HASHES)?
        .execute(params![c.token.id.as_str(), unix(c.token.created_at)])
        .map_err(lite_error)?;
    insert_audit_row(&mut *prepare(INSERT_AUDIT)?, &c.audit, None)?;
    if let Some(row) = OutboxRow::for_audit(&c.audit)? {
        prepare(INSERT_EVENT)?
            .execute(params![
                row.id.as_str(),
                row.event_type,
                unix(c.audit.at),
                c.audit.token_id.as_ref().map(keyward_core::TokenId::as_str),
                c.audit
                    .subject_user
                    .as_ref()
                    .map(keyward_core::UserId::as_str),
                row.data.as_str(),
            ])
            .map_err(|e| insert_error(e, || format!("event {}", row.id)))?;
    }
    Ok(())
}
