//! Group commit of token creations: creations that arrive together share one write transaction
//! and one durable commit (one sync of the WAL) instead of each waiting in line for its own.
//!
//! `insert_token` queues its rows and waits for its answer. The first creation to find no
//! writer at work starts one, a task of its own; the writer takes everything queued (at most
//! [`BATCH_MAX`]), writes each creation under a savepoint of its own — one that fails (its
//! owner's cap reached, a clash) is rolled back alone and answered with its error — commits the
//! rest at once, answers each, and goes on while anything is queued. Every creation is answered
//! only after the commit that holds it returned, so an acknowledged creation is as durable as
//! before. Nothing waits to fill a batch: a creation alone is committed at once, and a batch is
//! what arrived while the previous commit was running. On a database file the batch is written
//! through rusqlite on a blocking thread, on a connection of the writer's own (`direct::Writer`:
//! sqlx would cost a worker-thread hop per statement, seven per creation); a database no second
//! connection can open is written through the store's sqlx pool ([`write_batch`]).
//!
//! The writer runs apart from the callers, so a caller that gives up (a dropped request) cannot
//! cut a batch short; its creation is committed, or refused, with the others.

use keyward_core::{AuditEvent, TokenRecord};
use sqlx::SqlitePool;
use sqlx::sqlite::SqliteConnection;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

use super::audit::insert_audit;
use super::direct;
use super::feed::{append_token_hashes, prune_changes};
use super::rows::{db_error, unix};
use super::tokens::{LIVE_TOKENS_OF, insert_hash_row, insert_token_row};
use crate::epoch::Epoch;
use crate::{HashRecord, MAX_TOKENS_REACHED, StoreError, StoreResult, StoredHash};

/// The most creations one transaction holds.
const BATCH_MAX: usize = 256;

/// A creation waiting for the writer.
pub(super) struct Creation {
    pub(super) token: TokenRecord,
    pub(super) hash: StoredHash,
    pub(super) audit: AuditEvent,
    pub(super) max_per_user: Option<u32>,
    answer: oneshot::Sender<StoreResult<()>>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Creation>,
    /// A writer is at work and will take what is waiting.
    writing: bool,
}

/// The creations queue of one store (shared by its clones).
#[derive(Clone, Default)]
pub(super) struct Creations {
    queue: Arc<Mutex<Queue>>,
    /// Writes the batches through rusqlite when the database is a file (`direct::Writer`); a
    /// database no second connection can open is written through the store's sqlx pool.
    writer: Option<Arc<direct::Writer>>,
}

impl std::fmt::Debug for Creations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Creations").finish_non_exhaustive()
    }
}

impl Creations {
    /// The queue of a store whose database file is `file` (`None`: not a file a second
    /// connection can open).
    pub(super) fn new(file: Option<std::path::PathBuf>) -> Self {
        Self {
            queue: Arc::default(),
            writer: file.map(|path| Arc::new(direct::Writer::new(path))),
        }
    }

    /// Writes a token, its first secret and the audit event of its creation, in a transaction
    /// it may share with other creations; returns once that transaction is durably committed
    /// (or with why this creation was refused).
    pub(super) async fn create(
        &self,
        pool: &SqlitePool,
        epoch: &Arc<Epoch>,
        token: &TokenRecord,
        hash: &StoredHash,
        audit: &AuditEvent,
        max_per_user: Option<u32>,
    ) -> StoreResult<()> {
        let (answer, answered) = oneshot::channel();
        let start_writer = {
            let mut queue = self.lock();
            queue.waiting.push(Creation {
                token: token.clone(),
                hash: hash.clone(),
                audit: audit.clone(),
                max_per_user,
                answer,
            });
            !std::mem::replace(&mut queue.writing, true)
        };
        if start_writer {
            tokio::spawn(write_while_queued(
                self.clone(),
                pool.clone(),
                Arc::clone(epoch),
            ));
        }
        answered.await.unwrap_or_else(|_| {
            Err(StoreError::unavailable(
                "the creation's writer stopped before answering",
            ))
        })
    }

    /// Closes the writer's own connection, if it has one (see `SqliteStore::close`).
    pub(super) fn close(&self) {
        if let Some(writer) = &self.writer {
            writer.close();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves the queue itself intact (pushes and takes).
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The next batch, or `None` (and no writer at work) when nothing is queued.
    fn next_batch(&self) -> Option<Vec<Creation>> {
        let mut queue = self.lock();
        if queue.waiting.is_empty() {
            queue.writing = false;
            return None;
        }
        let take = queue.waiting.len().min(BATCH_MAX);
        Some(queue.waiting.drain(..take).collect())
    }
}

/// The writer: batches until the queue is empty.
async fn write_while_queued(creations: Creations, pool: SqlitePool, epoch: Arc<Epoch>) {
    let mut writer = Writer {
        creations,
        finished: false,
    };
    while let Some(batch) = writer.creations.next_batch() {
        let (batch, answers) = match &writer.creations.writer {
            Some(direct) => write_directly(Arc::clone(direct), &epoch, batch).await,
            None => {
                let answers = write_batch(&pool, &epoch, &batch).await;
                (batch, answers)
            }
        };
        for (creation, answer) in batch.into_iter().zip(answers) {
            // A caller that gave up no longer listens; its creation stands regardless.
            let _ = creation.answer.send(answer);
        }
    }
    writer.finished = true;
}

/// The writer at work. Stopped before the queue was empty (a panic, its runtime shutting
/// down), it answers every creation it held or that is queued with an error (their answer
/// senders are dropped: unacknowledged, whatever became of them) and leaves no writer
/// recorded, so the next creation starts one instead of waiting for it forever.
struct Writer {
    creations: Creations,
    finished: bool,
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.finished {
            let mut queue = self.creations.lock();
            queue.writing = false;
            queue.waiting.clear();
        }
    }
}

/// Writes `batch` in one transaction through rusqlite on a blocking thread; one answer per
/// creation, in order.
async fn write_directly(
    direct: Arc<direct::Writer>,
    epoch: &Epoch,
    batch: Vec<Creation>,
) -> (Vec<Creation>, Vec<StoreResult<()>>) {
    let n = batch.len();
    let written = tokio::task::spawn_blocking(move || {
        let answers = direct.write(&batch);
        (batch, answers)
    })
    .await;
    // Whatever the outcome, the commit may have happened: announce it (see `write_batch`).
    epoch.bump();
    match written {
        Ok((batch, Ok(answers))) => (batch, answers),
        Ok((batch, Err(e))) => (batch, every(n, &e)),
        // The blocking task panicked or was cancelled: the batch is gone with it, and its
        // callers are answered with an error when their senders drop.
        Err(_) => (Vec::new(), Vec::new()),
    }
}

/// Writes `batch` in one transaction through the store's sqlx pool; one answer per creation,
/// in order.
async fn write_batch(pool: &SqlitePool, epoch: &Epoch, batch: &[Creation]) -> Vec<StoreResult<()>> {
    let mut tx = match pool.begin_with("BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(e) => return every(batch.len(), &db_error(e)),
    };
    let mut answers = Vec::with_capacity(batch.len());
    for creation in batch {
        if let Err(e) = sqlx::query("SAVEPOINT creation")
            .execute(&mut *tx)
            .await
            .map_err(db_error)
        {
            return every(batch.len(), &e);
        }
        let written = write_one(&mut tx, creation).await;
        let close = if written.is_ok() {
            "RELEASE creation"
        } else {
            "ROLLBACK TO creation; RELEASE creation"
        };
        if let Err(e) = sqlx::raw_sql(close).execute(&mut *tx).await {
            return every(batch.len(), &db_error(e));
        }
        answers.push(written);
    }
    let Some(latest) = batch
        .iter()
        .zip(&answers)
        .filter(|(_, answer)| answer.is_ok())
        .map(|(c, _)| c.token.created_at)
        .max()
    else {
        // Nothing to commit; the transaction rolls back when dropped.
        return answers;
    };
    if let Err(e) = prune_changes(&mut tx, latest).await {
        return every(batch.len(), &e);
    }
    let committed = tx.commit().await;
    // Even when the commit reports an error its outcome is unknown: a needless cache refresh
    // costs nothing, a missed one would hide a new token from the caches' known hashes.
    epoch.bump();
    match committed {
        Ok(()) => answers,
        Err(e) => {
            let e = db_error(e);
            answers
                .into_iter()
                .map(|answer| answer.and_then(|()| Err(copy_of(&e))))
                .collect()
        }
    }
}

/// One creation's writes, in the open transaction.
async fn write_one(conn: &mut SqliteConnection, c: &Creation) -> StoreResult<()> {
    // The write lock is held: no other creation can slip in between the count and the insert,
    // and the count sees this batch's earlier creations.
    if let Some(cap) = c.max_per_user {
        let live: i64 = sqlx::query_scalar(LIVE_TOKENS_OF)
            .bind(c.token.owner.as_str())
            .bind(unix(c.token.created_at))
            .fetch_one(&mut *conn)
            .await
            .map_err(db_error)?;
        if live >= i64::from(cap) {
            return Err(StoreError::InvalidState(MAX_TOKENS_REACHED));
        }
    }
    insert_token_row(conn, &c.token).await?;
    let first = HashRecord {
        token_id: c.token.id.clone(),
        hash: c.hash.clone(),
        created_at: c.token.created_at,
        valid_until: None,
    };
    insert_hash_row(conn, &first).await?;
    // Logged like any change: every cache keeps the set of stored hashes (to answer unknown
    // tokens without a read) and must learn of this one before it is presented. The log is
    // pruned once for the batch.
    append_token_hashes(conn, &c.token.id, c.token.created_at).await?;
    insert_audit(conn, &c.audit).await
}

/// `n` answers of `e`.
fn every(n: usize, e: &StoreError) -> Vec<StoreResult<()>> {
    (0..n).map(|_| Err(copy_of(e))).collect()
}

/// `e` again, for each creation of a batch it failed (without the engine's error as source,
/// which cannot be cloned; the message says what it said).
fn copy_of(e: &StoreError) -> StoreError {
    match e {
        StoreError::NotFound => StoreError::NotFound,
        StoreError::Conflict(what) => StoreError::Conflict(what.clone()),
        StoreError::InvalidState(why) => StoreError::InvalidState(why),
        StoreError::Unavailable { what, code, .. } => StoreError::Unavailable {
            what: what.clone(),
            code: code.clone(),
            source: None,
        },
        StoreError::Corrupt { what, code, .. } => StoreError::Corrupt {
            what: what.clone(),
            code: code.clone(),
            source: None,
        },
        StoreError::Interrupted => StoreError::Interrupted,
    }
}
