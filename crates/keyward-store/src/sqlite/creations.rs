//! Group commit of token creations on a database file: creations that arrive together share
//! one write transaction and one durable commit (one sync of the WAL) instead of each waiting in
//! line for its own.
//!
//! `insert_token` queues its rows and waits for its answer. The first creation to find no
//! writer at work starts one, a task of its own; the writer takes everything queued (at most
//! [`BATCH_MAX`]) and hands it to `direct::Writer`, which writes each creation under a savepoint
//! of its own — one that fails (its owner's cap reached, a clash) is rolled back alone and
//! answered with its error — and commits the rest at once, through rusqlite on a blocking thread
//! (sqlx would cost a worker-thread hop per statement, seven per creation). The writer answers
//! each creation and goes on while anything is queued. Every creation is answered only after the
//! commit that holds it returned, so an acknowledged creation is as durable as before. Nothing
//! waits to fill a batch: a creation alone is committed at once, and a batch is what arrived
//! while the previous commit was running. A database no second connection can open (no file)
//! has no queue: each creation is its own transaction through the store's pool (`tokens`).
//!
//! The writer runs apart from the callers, so a caller that gives up (a dropped request) cannot
//! cut a batch short; its creation is committed, or refused, with the others.

use keyward_core::{AuditEvent, TokenRecord};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

use super::direct;
use crate::epoch::Epoch;
use crate::{StoreError, StoreResult, StoredHash};

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
#[derive(Clone)]
pub(super) struct Creations {
    queue: Arc<Mutex<Queue>>,
    /// Writes the batches, on a connection of its own to the database file.
    writer: Arc<direct::Writer>,
}

impl std::fmt::Debug for Creations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Creations").finish_non_exhaustive()
    }
}

impl Creations {
    /// The queue of a store whose database file is `file`.
    pub(super) fn new(file: PathBuf) -> Self {
        Self {
            queue: Arc::default(),
            writer: Arc::new(direct::Writer::new(file)),
        }
    }

    /// Writes a token, its first secret and the audit event of its creation, in a transaction
    /// it may share with other creations; returns once that transaction is durably committed
    /// (or with why this creation was refused).
    pub(super) async fn create(
        &self,
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
            tokio::spawn(write_while_queued(self.clone(), Arc::clone(epoch)));
        }
        answered.await.unwrap_or_else(|_| {
            Err(StoreError::unavailable(
                "the creation's writer stopped before answering",
            ))
        })
    }

    /// The writer's connection, for the other writes that go through it (`record_usage`).
    pub(super) fn writer(&self) -> Arc<direct::Writer> {
        Arc::clone(&self.writer)
    }

    /// Closes the writer's connection (see `SqliteStore::close`).
    pub(super) fn close(&self) {
        self.writer.close();
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
async fn write_while_queued(creations: Creations, epoch: Arc<Epoch>) {
    let mut at_work = AtWork {
        creations,
        finished: false,
    };
    while let Some(batch) = at_work.creations.next_batch() {
        let writer = Arc::clone(&at_work.creations.writer);
        let n = batch.len();
        let written = tokio::task::spawn_blocking(move || {
            let answers = writer.write(&batch);
            (batch, answers)
        })
        .await;
        // Even when the batch failed its commit may have happened (its outcome is unknown): a
        // needless cache refresh costs nothing, a missed one would hide a new token from the
        // caches' known hashes. Announced before any creation is answered.
        epoch.bump();
        // A blocking task that panicked took its batch with it: those callers are answered
        // with an error as their senders drop.
        let Ok((batch, answers)) = written else {
            continue;
        };
        let answers = answers.unwrap_or_else(|e| every(n, &e));
        for (creation, answer) in batch.into_iter().zip(answers) {
            // A caller that gave up no longer listens; its creation stands regardless.
            let _ = creation.answer.send(answer);
        }
    }
    at_work.finished = true;
}

/// The writer at work. Stopped before the queue was empty (a panic, its runtime shutting
/// down), it answers every creation queued with an error (their answer senders are dropped:
/// unacknowledged, whatever became of them) and leaves no writer recorded, so the next creation
/// starts one instead of waiting for it forever.
struct AtWork {
    creations: Creations,
    finished: bool,
}

impl Drop for AtWork {
    fn drop(&mut self) {
        if !self.finished {
            let mut queue = self.creations.lock();
            queue.writing = false;
            queue.waiting.clear();
        }
    }
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
