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
//! while the previous commit was running. Once the queue is empty, the writer checkpoints the
//! write-ahead log if it has grown long (`direct::creations` says why not in the commit). A
//! database no second connection can open (no file) has no queue: each creation is its own
//! transaction through the store's pool (`tokens`).
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

    /// The next batch: what is queued, at most [`BATCH_MAX`]; empty when nothing is.
    fn next_batch(&self) -> Vec<Creation> {
        let mut queue = self.lock();
        let take = queue.waiting.len().min(BATCH_MAX);
        queue.waiting.drain(..take).collect()
    }

    /// Whether nothing is queued; if so, no writer is at work any more (the next creation
    /// starts one).
    fn stop_if_idle(&self) -> bool {
        let mut queue = self.lock();
        let idle = queue.waiting.is_empty();
        if idle {
            queue.writing = false;
        }
        idle
    }
}

/// The writer: batches until the queue is empty, then the write-ahead log's checkpoint if it is
/// due (creations queued meanwhile wait for it, then go in one batch), then stops.
async fn write_while_queued(creations: Creations, epoch: Arc<Epoch>) {
    let mut at_work = AtWork {
        creations,
        finished: false,
    };
    loop {
        let batch = at_work.creations.next_batch();
        let writer = Arc::clone(&at_work.creations.writer);
        if batch.is_empty() {
            if writer.checkpoint_due() {
                let checkpointed = tokio::task::spawn_blocking(move || writer.checkpoint()).await;
                if let Ok(Err(e)) = checkpointed {
                    tracing::warn!(error = %e, "the write-ahead log's checkpoint failed");
                }
            } else if at_work.creations.stop_if_idle() {
                break;
            }
            // After the checkpoint, or with something queued meanwhile: look at the queue again.
            continue;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::SqliteStore;
    use crate::{Maintenance as _, Snapshot, SnapshotUser, TokenStore as _};
    use keyward_core::{
        Actor, AuditKind, KeyId, Scopes, TokenHash, TokenId, TokenName, User, UserId, UserKind,
        UserName,
    };
    use std::path::Path;
    use time::OffsetDateTime;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);

    /// A store on a file, with one user, all checkpointed; the user's id.
    async fn store_with_a_user(dir: &Path) -> (SqliteStore, UserId) {
        let store = SqliteStore::open(&dir.join("keyward.db")).await.unwrap();
        let user = User::new(
            UserId::generate(T0).unwrap(),
            UserName::parse("alice").unwrap(),
            UserKind::Person,
            T0,
        );
        let id = user.id.clone();
        let snapshot = Snapshot {
            users: vec![SnapshotUser {
                user,
                password_hash: None,
                deleted_at: None,
            }],
            ..Snapshot::default()
        };
        store.restore(&snapshot).await.unwrap();
        // The schema and the user in the file itself, so a copy of it alone can be read.
        rusqlite::Connection::open(dir.join("keyward.db"))
            .unwrap()
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        (store, id)
    }

    /// Token `i` of `owner`: its record, its hash and the audit event of its creation.
    fn token(owner: &UserId, i: u32) -> (TokenRecord, StoredHash, AuditEvent) {
        let now = T0 + time::Duration::seconds(i.into());
        let token = TokenRecord {
            id: TokenId::generate(now).unwrap(),
            owner: owner.clone(),
            name: TokenName::parse(&format!("t{i}")).unwrap(),
            scopes: Scopes::parse(&["droplet:read"]).unwrap(),
            hint: "abcd".to_owned(),
            created_at: now,
            expires_at: None,
            regenerated_at: None,
            last_used_at: None,
            last_used_ip: None,
            revoked_at: None,
            revoked_by: None,
            revoke_reason: None,
            limits: keyward_core::Limits::default(),
            remaining: None,
            refilled_at: None,
        };
        let mut hash = [0; 32];
        hash[..4].copy_from_slice(&i.to_be_bytes());
        let hash = StoredHash {
            hash: TokenHash(hash),
            key_id: KeyId::from_stored("k1".to_owned()),
        };
        let audit = AuditEvent {
            at: now,
            kind: AuditKind::TokenCreated,
            actor: Actor::cli("root"),
            subject_user: Some(owner.clone()),
            token_id: Some(token.id.clone()),
            ip: None,
            detail: None,
        };
        (token, hash, audit)
    }

    /// A creation for the writer itself, its answer unheard.
    fn creation(owner: &UserId, i: u32) -> Creation {
        let (token, hash, audit) = token(owner, i);
        Creation {
            token,
            hash,
            audit,
            max_per_user: None,
            answer: oneshot::channel().0,
        }
    }

    /// Tokens in the database file itself, without its write-ahead log: those checkpointed.
    fn tokens_in_the_file(dir: &Path) -> i64 {
        let alone = tempfile::tempdir().unwrap();
        let copy = alone.path().join("copy.db");
        std::fs::copy(dir.join("keyward.db"), &copy).unwrap();
        rusqlite::Connection::open(&copy)
            .unwrap()
            .query_row("SELECT count(*) FROM tokens", [], |row| row.get(0))
            .unwrap()
    }

    #[tokio::test]
    async fn a_commit_leaves_the_log_to_an_idle_writer_until_it_is_ten_times_longer() {
        let dir = tempfile::tempdir().unwrap();
        let (store, owner) = store_with_a_user(dir.path()).await;
        let writer = store.creations.as_ref().unwrap().writer();

        // One creation a commit until the log is long enough for SQLite's automatic checkpoint
        // (1,000 frames): no commit copied anything back.
        let mut written = 0;
        while !writer.checkpoint_due() {
            let answers = writer.write(&[creation(&owner, written)]).unwrap();
            assert!(answers.iter().all(Result::is_ok));
            written += 1;
            assert!(written < 20_000, "the log never became due");
        }
        assert_eq!(tokens_in_the_file(dir.path()), 0);

        // What the idle writer runs copies every one of them.
        writer.checkpoint().unwrap();
        assert!(!writer.checkpoint_due());
        assert_eq!(tokens_in_the_file(dir.path()), i64::from(written));

        // Writes that never pause: the commit that takes the log to `CHECKPOINT_AT_COMMIT`
        // frames copies it back itself (and the log is no longer due).
        let mut due = false;
        loop {
            writer.write(&[creation(&owner, written)]).unwrap();
            written += 1;
            if due && !writer.checkpoint_due() {
                break;
            }
            due = writer.checkpoint_due();
            assert!(written < 20_000, "no commit checkpointed");
        }
        assert_eq!(tokens_in_the_file(dir.path()), i64::from(written));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_checkpoints_once_nothing_is_queued() {
        let dir = tempfile::tempdir().unwrap();
        let (store, owner) = store_with_a_user(dir.path()).await;
        let writer = store.creations.as_ref().unwrap().writer();
        let mut written = 0;
        while !writer.checkpoint_due() {
            writer.write(&[creation(&owner, written)]).unwrap();
            written += 1;
            assert!(written < 20_000, "the log never became due");
        }
        assert_eq!(tokens_in_the_file(dir.path()), 0);

        // One more creation, through the queue: once it is answered the writer finds nothing
        // queued and checkpoints, with no other creation to carry it.
        let (token, hash, audit) = token(&owner, written);
        store
            .insert_token(&token, &hash, &audit, None)
            .await
            .unwrap();
        for _ in 0..500 {
            if !writer.checkpoint_due() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(
            !writer.checkpoint_due(),
            "the idle writer never checkpointed"
        );
        assert_eq!(tokens_in_the_file(dir.path()), i64::from(written) + 1);
    }
}
