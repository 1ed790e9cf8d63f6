//! The SQLite engine: the embedded default, one file that the server and the command line may
//! use at the same time.
//!
//! Durability: WAL with `synchronous=FULL`, so a commit (and so an acknowledged revocation)
//! survives `kill -9` and power loss. Every write runs in a `BEGIN IMMEDIATE` transaction: it
//! takes the write lock up front and waits for it (busy timeout), instead of starting as a reader
//! and failing with `SQLITE_BUSY` when another process wrote in between.

use async_trait::async_trait;
use keyward_core::{
    AuditEvent, TokenHash, TokenId, TokenName, TokenRecord, TokenState, User, UserId, UserName,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};
use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

use crate::epoch::Epoch;
use crate::migrate::{self, Migrations};
use crate::{
    AuditFilter, Changes, HashRecord, Lookup, NewUser, Page, Regeneration, Revocation,
    SessionRecord, Snapshot, Store, StoreError, StoreResult, StoredAuditEvent, StoredHash, Usage,
};

mod bulk;
mod reader;
mod rows;
mod sessions;

use rows::{db_error, insert_error, unix};

/// The schema (see [`Migrations`]).
const MIGRATIONS: Migrations = &[
    (
        1,
        "initial",
        include_str!("../../migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        "sessions",
        include_str!("../../migrations/sqlite/0002_sessions.sql"),
    ),
];

/// How long a statement waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// sqlx connections per process (`lookup` has its own, in `reader`). WAL lets readers run beside
/// the one writer; verification is served from a cache, so a few connections are plenty.
const MAX_CONNECTIONS: u32 = 4;

/// A secret's token, its owner and the secret's own validity, for `Store::lookup`; decoded by
/// `rows::lookup`. Read through `reader` (rusqlite), or through sqlx where the store has no file.
const LOOKUP: &str = "SELECT t.*, u.name AS owner_name, u.disabled_at AS owner_disabled_at, \
     h.valid_until AS secret_valid_until, h.created_at AS secret_created_at \
     FROM token_hashes h JOIN tokens t ON t.id = h.token_id JOIN users u ON u.id = t.owner \
     WHERE h.hash = ?1";

/// [`reset_change_log`]'s statements (also run by `bulk`): a marker entry, the pruning mark
/// moved past it, the entries it covers dropped.
pub(super) const RESET_MARK: &str = "INSERT INTO changes (hash, at) VALUES (zeroblob(32), ?1)";
pub(super) const RESET_PRUNE: &str =
    "UPDATE change_log SET pruned_through = (SELECT max(seq) FROM changes) WHERE id = 1";
pub(super) const RESET_DROP: &str =
    "DELETE FROM changes WHERE seq <= (SELECT pruned_through FROM change_log WHERE id = 1)";

/// How long the change log keeps an entry. A cache that has not caught up for longer starts over
/// (`Changes::complete` is false).
const CHANGE_LOG_RETENTION_SECS: i64 = 24 * 60 * 60;

/// The SQLite implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Direct read-only connections for `lookup`, when the database is a file.
    readers: Option<Arc<reader::Readers>>,
    epoch: Arc<Epoch>,
}

impl SqliteStore {
    /// Opens the database at `path`, creating the file (mode 0600) if it is missing, and applies
    /// any pending migrations. The parent directory must exist. Several processes may open the
    /// same file at once, even a fresh one.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        create_private_file(path)
            .map_err(|e| StoreError::unavailable(format!("cannot open {}: {e}", path.display())))?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = connect(options).await.map_err(db_error)?;
        migrate(&pool).await?;
        let readers = reader::Readers::for_file(path)?.map(Arc::new);
        let epoch_path = Epoch::path_for(path);
        let epoch = Epoch::open(&epoch_path).map_err(|e| {
            StoreError::unavailable(format!("cannot map {}: {e}", epoch_path.display()))
        })?;
        // A process that died between a commit and its bump left that change unannounced;
        // announcing "something may have changed" once on start-up covers it.
        epoch.bump();
        Ok(Self {
            pool,
            readers,
            epoch: Arc::new(epoch),
        })
    }

    /// Waits for running statements and closes every connection, so SQLite can checkpoint the
    /// WAL on the way out. For graceful shutdown; the store answers `Unavailable` afterwards.
    pub async fn close(&self) {
        if let Some(readers) = &self.readers {
            readers.close();
        }
        self.pool.close().await;
    }

    async fn begin_write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_error)
    }

    /// Commits a transaction that appended to the change log, then advances the epoch.
    ///
    /// Runs as its own task so that a caller that gives up (a dropped request) cannot leave a
    /// committed change unannounced. The epoch advances even if the commit reports an error:
    /// its outcome is then unknown, and a needless cache refresh costs nothing.
    async fn commit_and_announce(&self, tx: Transaction<'static, Sqlite>) -> StoreResult<()> {
        let epoch = Arc::clone(&self.epoch);
        let task = tokio::spawn(async move {
            let committed = tx.commit().await;
            epoch.bump();
            committed
        });
        match task.await {
            Ok(committed) => committed.map_err(db_error),
            Err(e) => Err(StoreError::unavailable(format!("commit task failed: {e}"))),
        }
    }

    /// A token by id in an open transaction, limited to `owner`'s when given.
    async fn token_in(
        conn: &mut SqliteConnection,
        id: &TokenId,
        owner: Option<&UserId>,
    ) -> StoreResult<Option<TokenRecord>> {
        let row = sqlx::query("SELECT * FROM tokens WHERE id = ?1 AND (?2 IS NULL OR owner = ?2)")
            .bind(id.as_str())
            .bind(owner.map(UserId::as_str))
            .fetch_optional(conn)
            .await
            .map_err(db_error)?;
        row.as_ref().map(rows::token).transpose()
    }
}

/// Creates the database file with owner-only permissions before SQLite does (it would use the
/// umask); SQLite gives its `-wal` and `-shm` files the same permissions as the database.
fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path).map(drop)
}

/// Connects the pool. Switching a fresh file to WAL takes an exclusive lock for which SQLite
/// does not call the busy handler, so when two processes create the database at once one of
/// them sees `SQLITE_BUSY` here; it retries for as long as the busy timeout would have waited.
/// Once the file is in WAL mode (a persistent setting), later connections never wait here.
async fn connect(options: SqliteConnectOptions) -> Result<SqlitePool, sqlx::Error> {
    let deadline = tokio::time::Instant::now() + BUSY_TIMEOUT;
    let mut pause = Duration::from_millis(5);
    loop {
        let connected = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options.clone())
            .await;
        match connected {
            Err(e) if rows::is_busy(&e) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

/// Applies pending migrations inside one write transaction. sqlx takes no lock for SQLite
/// migrations, so without it two processes opening a fresh file would both try to create the
/// schema; with it the second waits, then finds everything applied.
async fn migrate(pool: &SqlitePool) -> StoreResult<()> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
    migrate::apply(MIGRATIONS, &mut *tx, db_error).await?;
    tx.commit().await.map_err(db_error)
}

// The row writes, shared by the sqlx path and the bulk restore (`bulk`), bound in this order.

/// Whether the store holds anything `restore` would refuse to write over.
const OCCUPIED: &str = "SELECT EXISTS (SELECT 1 FROM users) OR EXISTS (SELECT 1 FROM tokens) \
     OR EXISTS (SELECT 1 FROM audit_events)";

/// An audit event; `?10` is its sequence number, NULL for the next one.
const INSERT_AUDIT: &str = "INSERT INTO audit_events \
     (seq, at, kind, actor_user, actor_token, actor_label, subject_user, token_id, ip, detail) \
     VALUES (?10, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

const INSERT_USER: &str = "INSERT INTO users (id, name, is_admin, password_hash, created_at, \
     disabled_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

const INSERT_TOKEN: &str = "INSERT INTO tokens (id, owner, name, scopes, hint, created_at, \
     expires_at, regenerated_at, last_used_at, last_used_ip, revoked_at, revoked_by, \
     revoke_reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";

const INSERT_HASH: &str = "INSERT INTO token_hashes (hash, token_id, key_id, created_at, \
     valid_until) VALUES (?1, ?2, ?3, ?4, ?5)";

async fn insert_audit(conn: &mut SqliteConnection, event: &AuditEvent) -> StoreResult<()> {
    insert_audit_row(conn, None, event).await
}

/// Appends an audit event, at sequence number `seq` when given (a restore), else at the next.
async fn insert_audit_row(
    conn: &mut SqliteConnection,
    seq: Option<i64>,
    event: &AuditEvent,
) -> StoreResult<()> {
    sqlx::query(INSERT_AUDIT)
        .bind(unix(event.at))
        .bind(event.kind.as_str())
        .bind(event.actor.user.as_ref().map(UserId::as_str))
        .bind(event.actor.token.as_ref().map(TokenId::as_str))
        .bind(event.actor.label.as_str())
        .bind(event.subject_user.as_ref().map(UserId::as_str))
        .bind(event.token_id.as_ref().map(TokenId::as_str))
        .bind(event.ip.map(|ip| ip.to_string()))
        .bind(event.detail.as_deref())
        .bind(seq)
        .execute(conn)
        .await
        .map_err(|e| insert_error(e, || "audit event".to_owned()))?;
    Ok(())
}

async fn insert_user_row(
    conn: &mut SqliteConnection,
    user: &User,
    password_hash: Option<&str>,
) -> StoreResult<()> {
    sqlx::query(INSERT_USER)
        .bind(user.id.as_str())
        .bind(user.name.as_str())
        .bind(user.is_admin)
        .bind(password_hash)
        .bind(unix(user.created_at))
        .bind(user.disabled_at.map(unix))
        .execute(conn)
        .await
        .map_err(|e| insert_error(e, || format!("user {}", user.name)))?;
    Ok(())
}

async fn insert_token_row(conn: &mut SqliteConnection, token: &TokenRecord) -> StoreResult<()> {
    sqlx::query(INSERT_TOKEN)
        .bind(token.id.as_str())
        .bind(token.owner.as_str())
        .bind(token.name.as_str())
        .bind(token.scopes.to_string())
        .bind(token.hint.as_str())
        .bind(unix(token.created_at))
        .bind(token.expires_at.map(unix))
        .bind(token.regenerated_at.map(unix))
        .bind(token.last_used_at.map(unix))
        .bind(token.last_used_ip.map(|ip| ip.to_string()))
        .bind(token.revoked_at.map(unix))
        .bind(token.revoked_by.as_deref())
        .bind(token.revoke_reason.as_deref())
        .execute(conn)
        .await
        .map_err(|e| insert_error(e, || format!("token {}", token.id)))?;
    Ok(())
}

async fn insert_hash_row(conn: &mut SqliteConnection, hash: &HashRecord) -> StoreResult<()> {
    sqlx::query(INSERT_HASH)
        .bind(hash.hash.hash.0.to_vec())
        .bind(hash.token_id.as_str())
        .bind(hash.hash.key_id.as_str())
        .bind(unix(hash.created_at))
        .bind(hash.valid_until.map(unix))
        .execute(conn)
        .await
        .map_err(|e| insert_error(e, || "token hash".to_owned()))?;
    Ok(())
}

/// Drops change-log entries older than the retention period, remembering how far it has pruned.
/// Runs inside the writes that append to the log, so the log needs no janitor.
async fn prune_changes(conn: &mut SqliteConnection, now: OffsetDateTime) -> StoreResult<()> {
    let cutoff = unix(now).saturating_sub(CHANGE_LOG_RETENTION_SECS);
    sqlx::query(
        "UPDATE change_log SET pruned_through = \
         max(pruned_through, coalesce((SELECT max(seq) FROM changes WHERE at < ?1), 0)) WHERE id = 1",
    )
    .bind(cutoff)
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    sqlx::query(
        "DELETE FROM changes WHERE seq <= (SELECT pruned_through FROM change_log WHERE id = 1)",
    )
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// Appends every hash of `token` except `except` to the change log.
async fn log_token_hashes(
    conn: &mut SqliteConnection,
    token: &TokenId,
    at: OffsetDateTime,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO changes (hash, at) SELECT hash, ?2 FROM token_hashes \
         WHERE token_id = ?1 ORDER BY hash",
    )
    .bind(token.as_str())
    .bind(unix(at))
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    prune_changes(conn, at).await
}

/// Tells every cache to start over: one marker entry, pruned at once, so every cursor from
/// before it reads as incomplete. For writes too large to log hash by hash (a restore).
async fn reset_change_log(conn: &mut SqliteConnection, at: OffsetDateTime) -> StoreResult<()> {
    sqlx::query(RESET_MARK)
        .bind(unix(at))
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    for statement in [RESET_PRUNE, RESET_DROP] {
        sqlx::query(statement)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
    }
    Ok(())
}

/// The change log's end, as of the connection's current snapshot.
async fn change_log_end(conn: &mut SqliteConnection) -> StoreResult<(i64, i64)> {
    let row: (i64, i64) = sqlx::query_as(
        "SELECT pruned_through, max(pruned_through, coalesce((SELECT max(seq) FROM changes), 0)) \
         FROM change_log WHERE id = 1",
    )
    .fetch_one(conn)
    .await
    .map_err(db_error)?;
    Ok(row)
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn add_user(&self, new: &NewUser, audit: &AuditEvent) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        insert_user_row(&mut tx, &new.user, new.password_hash.as_deref()).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn user_by_name(&self, name: &UserName) -> StoreResult<Option<User>> {
        let row = sqlx::query("SELECT * FROM users WHERE name = ?1")
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.as_ref().map(rows::user).transpose()
    }

    async fn user_by_id(&self, id: &UserId) -> StoreResult<Option<User>> {
        let row = sqlx::query("SELECT * FROM users WHERE id = ?1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.as_ref().map(rows::user).transpose()
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        let rows = sqlx::query("SELECT * FROM users ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        rows.iter().map(rows::user).collect()
    }

    async fn password_hash(&self, id: &UserId) -> StoreResult<Option<String>> {
        let hash: Option<Option<String>> =
            sqlx::query_scalar("SELECT password_hash FROM users WHERE id = ?1")
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(db_error)?;
        Ok(hash.flatten())
    }

    async fn insert_token(
        &self,
        token: &TokenRecord,
        hash: &StoredHash,
        audit: &AuditEvent,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        insert_token_row(&mut tx, token).await?;
        let first = HashRecord {
            token_id: token.id.clone(),
            hash: hash.clone(),
            created_at: token.created_at,
            valid_until: None,
        };
        insert_hash_row(&mut tx, &first).await?;
        // Logged like any change: every cache keeps the set of stored hashes (to answer unknown
        // tokens without a read) and must learn of this one before it is presented.
        log_token_hashes(&mut tx, &token.id, token.created_at).await?;
        insert_audit(&mut tx, audit).await?;
        self.commit_and_announce(tx).await
    }

    async fn token(
        &self,
        id: &TokenId,
        owner: Option<&UserId>,
    ) -> StoreResult<Option<TokenRecord>> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        Self::token_in(&mut conn, id, owner).await
    }

    async fn list_tokens(
        &self,
        owner: Option<&UserId>,
        page: &Page,
    ) -> StoreResult<Vec<TokenRecord>> {
        // One static statement per shape, so each uses its index instead of a catch-all plan.
        let query = match (owner, &page.after) {
            (Some(owner), Some(after)) => sqlx::query(
                "SELECT * FROM tokens WHERE owner = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3",
            )
            .bind(owner.as_str())
            .bind(after.as_str()),
            (Some(owner), None) => {
                sqlx::query("SELECT * FROM tokens WHERE owner = ?1 ORDER BY id DESC LIMIT ?2")
                    .bind(owner.as_str())
            }
            (None, Some(after)) => {
                sqlx::query("SELECT * FROM tokens WHERE id < ?1 ORDER BY id DESC LIMIT ?2")
                    .bind(after.as_str())
            }
            (None, None) => sqlx::query("SELECT * FROM tokens ORDER BY id DESC LIMIT ?1"),
        };
        let rows = query
            .bind(i64::from(page.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        rows.iter().map(rows::token).collect()
    }

    async fn rename_token(
        &self,
        id: &TokenId,
        owner: Option<&UserId>,
        name: &TokenName,
        audit: &AuditEvent,
    ) -> StoreResult<TokenRecord> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "UPDATE tokens SET name = ?3 WHERE id = ?1 AND (?2 IS NULL OR owner = ?2) RETURNING *",
        )
        .bind(id.as_str())
        .bind(owner.map(UserId::as_str))
        .bind(name.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let token = row
            .as_ref()
            .map(rows::token)
            .transpose()?
            .ok_or(StoreError::NotFound)?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(token)
    }

    async fn regenerate_token(
        &self,
        id: &TokenId,
        owner: Option<&UserId>,
        regen: &Regeneration,
        audit: &AuditEvent,
    ) -> StoreResult<TokenRecord> {
        let mut tx = self.begin_write().await?;
        // The write lock is already held, so this check and the writes below see one state.
        let current = Self::token_in(&mut tx, id, owner)
            .await?
            .ok_or(StoreError::NotFound)?;
        match current.state(regen.at) {
            TokenState::Active => {}
            TokenState::Revoked => return Err(StoreError::InvalidState("token is revoked")),
            TokenState::Expired => return Err(StoreError::InvalidState("token has expired")),
        }
        sqlx::query(
            "UPDATE token_hashes SET valid_until = min(coalesce(valid_until, ?2), ?2) WHERE token_id = ?1",
        )
        .bind(id.as_str())
        .bind(unix(regen.old_valid_until))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let new_hash = HashRecord {
            token_id: id.clone(),
            hash: regen.new_hash.clone(),
            created_at: regen.at,
            valid_until: None,
        };
        insert_hash_row(&mut tx, &new_hash).await?;
        let row = sqlx::query(
            "UPDATE tokens SET hint = ?2, expires_at = ?3, regenerated_at = ?4 WHERE id = ?1 RETURNING *",
        )
        .bind(id.as_str())
        .bind(regen.new_hint.as_str())
        .bind(regen.new_expires_at.map(unix))
        .bind(unix(regen.at))
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        let token = rows::token(&row)?;
        log_token_hashes(&mut tx, id, regen.at).await?;
        insert_audit(&mut tx, audit).await?;
        self.commit_and_announce(tx).await?;
        Ok(token)
    }

    async fn revoke_token(
        &self,
        id: &TokenId,
        owner: Option<&UserId>,
        revocation: &Revocation,
        audit: &AuditEvent,
    ) -> StoreResult<TokenRecord> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "UPDATE tokens SET revoked_at = ?3, revoked_by = ?4, revoke_reason = ?5 \
             WHERE id = ?1 AND (?2 IS NULL OR owner = ?2) AND revoked_at IS NULL RETURNING *",
        )
        .bind(id.as_str())
        .bind(owner.map(UserId::as_str))
        .bind(unix(revocation.at))
        .bind(revocation.by.as_str())
        .bind(revocation.reason.as_deref())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let Some(row) = row else {
            // Not updated: either not the caller's (or no such token), or already revoked. Still
            // under the write lock, so the answer cannot change before we give it.
            let existing = Self::token_in(&mut tx, id, owner).await?;
            return existing.ok_or(StoreError::NotFound);
        };
        let token = rows::token(&row)?;
        log_token_hashes(&mut tx, id, revocation.at).await?;
        insert_audit(&mut tx, audit).await?;
        self.commit_and_announce(tx).await?;
        Ok(token)
    }

    async fn lookup(&self, hash: &TokenHash) -> StoreResult<Option<Lookup>> {
        if let Some(readers) = &self.readers {
            // On this task: see `reader` for why a few µs of blocking beat a thread hop. When
            // the file stays locked, the wait moves to sqlx's thread below.
            if let reader::Read::Done(found) = readers.lookup(hash)? {
                return Ok(found);
            }
        }
        let row = sqlx::query(LOOKUP)
            .bind(hash.0.to_vec())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.as_ref().map(rows::lookup).transpose()
    }

    async fn stored_hashes(
        &self,
        after: Option<&TokenHash>,
        limit: u32,
    ) -> StoreResult<Vec<TokenHash>> {
        // The primary key's order (a WITHOUT ROWID table is stored in it): one range scan. Two
        // statements, because `?1 IS NULL OR hash > ?1` would not use the range.
        let limit = i64::from(limit);
        let query = match after {
            Some(after) => {
                sqlx::query("SELECT hash FROM token_hashes WHERE hash > ?1 ORDER BY hash LIMIT ?2")
                    .bind(after.0.to_vec())
                    .bind(limit)
            }
            None => sqlx::query("SELECT hash FROM token_hashes ORDER BY hash LIMIT ?1").bind(limit),
        };
        let rows = query.fetch_all(&self.pool).await.map_err(db_error)?;
        rows.iter().map(|row| rows::hash(row, "hash")).collect()
    }

    async fn record_usage(&self, batch: &[Usage]) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for usage in batch {
            // Another process (or an older batch) may hold a later use; a use only moves forward.
            sqlx::query(
                "UPDATE tokens SET last_used_at = ?2, last_used_ip = ?3 \
                 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at <= ?2)",
            )
            .bind(usage.token_id.as_str())
            .bind(unix(usage.at))
            .bind(usage.ip.map(|ip| ip.to_string()))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)
    }

    async fn append_audit(&self, event: &AuditEvent) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        insert_audit(&mut tx, event).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn audit_events(&self, filter: &AuditFilter) -> StoreResult<Vec<StoredAuditEvent>> {
        let query = match (&filter.subject_user, filter.before_seq) {
            (Some(user), Some(before)) => sqlx::query(
                "SELECT * FROM audit_events WHERE subject_user = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3",
            )
            .bind(user.as_str())
            .bind(before),
            (Some(user), None) => {
                sqlx::query("SELECT * FROM audit_events WHERE subject_user = ?1 ORDER BY seq DESC LIMIT ?2")
                    .bind(user.as_str())
            }
            (None, Some(before)) => {
                sqlx::query("SELECT * FROM audit_events WHERE seq < ?1 ORDER BY seq DESC LIMIT ?2").bind(before)
            }
            (None, None) => sqlx::query("SELECT * FROM audit_events ORDER BY seq DESC LIMIT ?1"),
        };
        let rows = query
            .bind(i64::from(filter.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        rows.iter().map(rows::audit_event).collect()
    }

    fn change_epoch(&self) -> u64 {
        self.epoch.load()
    }

    async fn changes_since(&self, cursor: i64) -> StoreResult<Changes> {
        // One read transaction: the rows and the pruning mark come from the same snapshot, so a
        // prune in between cannot hide a gap.
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let (pruned_through, end) = change_log_end(&mut tx).await?;
        let rows =
            sqlx::query("SELECT seq, hash FROM changes WHERE seq > ?1 AND seq <= ?2 ORDER BY seq")
                .bind(cursor)
                .bind(end)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
        tx.rollback().await.map_err(db_error)?;
        let hashes = rows
            .iter()
            .map(|row| rows::hash(row, "hash"))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Changes {
            hashes,
            cursor: end,
            // Behind the pruning mark: entries were dropped unseen. Ahead of the end: the cursor
            // belongs to another database (a restored backup); either way the cache starts over.
            complete: cursor >= pruned_through && cursor <= end,
        })
    }

    async fn change_cursor(&self) -> StoreResult<i64> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        Ok(change_log_end(&mut conn).await?.1)
    }

    async fn create_session(
        &self,
        session: &SessionRecord,
        stale_before: OffsetDateTime,
        audit: &AuditEvent,
    ) -> StoreResult<()> {
        sessions::create(self, session, stale_before, audit).await
    }

    async fn session(&self, id_hash: &TokenHash) -> StoreResult<Option<SessionRecord>> {
        sessions::get(self, id_hash).await
    }

    async fn touch_session(&self, id_hash: &TokenHash, at: OffsetDateTime) -> StoreResult<()> {
        sessions::touch(self, id_hash, at).await
    }

    async fn delete_session(
        &self,
        id_hash: &TokenHash,
        audit: Option<&AuditEvent>,
    ) -> StoreResult<()> {
        sessions::delete(self, id_hash, audit).await
    }

    async fn use_form_nonce(
        &self,
        session: &TokenHash,
        nonce: &str,
        at: OffsetDateTime,
    ) -> StoreResult<bool> {
        sessions::use_nonce(self, session, nonce, at).await
    }

    async fn set_user_disabled(
        &self,
        id: &UserId,
        disabled: bool,
        at: OffsetDateTime,
        audit: &AuditEvent,
    ) -> StoreResult<User> {
        sessions::set_disabled(self, id, disabled, at, audit).await
    }

    async fn dump(&self) -> StoreResult<Snapshot> {
        // One read transaction: WAL gives it one snapshot from its first read on.
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let users = sqlx::query("SELECT * FROM users ORDER BY name")
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
        let tokens = sqlx::query("SELECT * FROM tokens ORDER BY id")
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
        let hashes = sqlx::query("SELECT * FROM token_hashes ORDER BY token_id, hash")
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
        let audit = sqlx::query("SELECT * FROM audit_events ORDER BY seq")
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.rollback().await.map_err(db_error)?;
        Ok(Snapshot {
            users: users
                .iter()
                .map(rows::snapshot_user)
                .collect::<StoreResult<_>>()?,
            tokens: tokens.iter().map(rows::token).collect::<StoreResult<_>>()?,
            hashes: hashes
                .iter()
                .map(rows::hash_record)
                .collect::<StoreResult<_>>()?,
            audit: audit
                .iter()
                .map(rows::audit_event)
                .collect::<StoreResult<_>>()?,
        })
    }

    async fn restore(&self, snapshot: &Snapshot) -> StoreResult<()> {
        // A file (the one `reader` reads, so not `:memory:` or a URI) is written row by row
        // without sqlx's thread hops (see `bulk`), off the executor: a large restore takes
        // seconds. The task finishes, and commits, even if the caller stops waiting.
        if self.readers.is_some() {
            if self.pool.is_closed() {
                return Err(StoreError::unavailable("the store is closed".to_owned()));
            }
            // The file this store's own connections open.
            let path = self.pool.connect_options().get_filename().to_owned();
            let snapshot = snapshot.clone();
            let restored = tokio::task::spawn_blocking(move || bulk::restore(&path, &snapshot))
                .await
                .unwrap_or_else(|e| {
                    Err(StoreError::unavailable(format!("restore task failed: {e}")))
                });
            if restored.is_ok() {
                // Every process's cache starts over and learns the restored hashes.
                self.epoch.bump();
            }
            return restored;
        }
        // The write lock is held from the emptiness check to the commit.
        let mut tx = self.begin_write().await?;
        let occupied: bool = sqlx::query_scalar(OCCUPIED)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
        if occupied {
            return Err(StoreError::InvalidState("the target store is not empty"));
        }
        for user in &snapshot.users {
            insert_user_row(&mut tx, &user.user, user.password_hash.as_deref()).await?;
        }
        for token in &snapshot.tokens {
            insert_token_row(&mut tx, token).await?;
        }
        for hash in &snapshot.hashes {
            insert_hash_row(&mut tx, hash).await?;
        }
        for event in &snapshot.audit {
            insert_audit_row(&mut tx, Some(event.seq), &event.event).await?;
        }
        reset_change_log(&mut tx, OffsetDateTime::UNIX_EPOCH).await?;
        self.commit_and_announce(tx).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_migration_file_is_embedded_in_order() {
        crate::migrate::assert_every_file_is_embedded("sqlite", super::MIGRATIONS);
    }
}
