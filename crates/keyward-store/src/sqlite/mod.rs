//! The SQLite engine: the embedded default, one file that the server and the command line may
//! use at the same time.
//!
//! Durability: WAL with `synchronous=FULL`, so a commit (and so an acknowledged revocation)
//! survives `kill -9` and power loss. Every write runs in a `BEGIN IMMEDIATE` transaction: it
//! takes the write lock up front and waits for it (busy timeout), instead of starting as a reader
//! and failing with `SQLITE_BUSY` when another process wrote in between.
//!
//! Laid out like the PostgreSQL engine, one file per trait (`tokens`, `users`, `sessions`,
//! `audit`, `feed`, `backup`), so the two read side by side. The two paths that bypass sqlx for
//! rusqlite live in `direct`, which says why.

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};
use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::epoch::Epoch;
use crate::migrate::{self, AppliedMigration, Migrations};
use crate::{StoreError, StoreResult};

mod audit;
mod backup;
mod creations;
mod direct;
mod events;
mod feed;
mod identities;
mod notices;
mod rows;
mod sessions;
mod tokens;
mod users;

use rows::db_error;

pub use direct::BackupSummary;

/// Where [`SqliteStore::backup`] writes before the copy is complete: `TARGET.partial`.
pub fn backup_partial_path(target: &Path) -> std::path::PathBuf {
    direct::partial_path(target)
}

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
    (
        3,
        "platform_users",
        include_str!("../../migrations/sqlite/0003_platform_users.sql"),
    ),
    (
        4,
        "identities",
        include_str!("../../migrations/sqlite/0004_identities.sql"),
    ),
    (
        5,
        "key_index",
        include_str!("../../migrations/sqlite/0005_key_index.sql"),
    ),
    (
        6,
        "events",
        include_str!("../../migrations/sqlite/0006_events.sql"),
    ),
    (
        8,
        "expiry_notices",
        include_str!("../../migrations/sqlite/0008_expiry_notices.sql"),
    ),
    (
        9,
        "token_limits",
        include_str!("../../migrations/sqlite/0009_token_limits.sql"),
    ),
    (
        10,
        "recent_use",
        include_str!("../../migrations/sqlite/0010_recent_use.sql"),
    ),
    (
        11,
        "secret_validity",
        include_str!("../../migrations/sqlite/0011_secret_validity.sql"),
    ),
    (
        12,
        "cache_seal",
        include_str!("../../migrations/sqlite/0012_cache_seal.sql"),
    ),
];

/// How long a statement waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// sqlx connections per process (`lookup` has its own, in `direct`). WAL lets readers run beside
/// the one writer; verification is served from a cache, so a few connections are plenty.
const MAX_CONNECTIONS: u32 = 4;

/// The SQLite implementation of [`Store`](crate::Store).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Direct read-only connections for `lookup`, when the database is a file.
    readers: Option<Arc<direct::Readers>>,
    epoch: Arc<Epoch>,
    /// Token creations waiting to be committed together, when the database is a file.
    creations: Option<creations::Creations>,
    /// What opening it migrated, for `keyward migrate` to report.
    migrations_applied: Arc<[AppliedMigration]>,
}

impl SqliteStore {
    /// Opens the database at `path`, creating the file (mode 0600) if it is missing, and applies
    /// any pending migrations. The parent directory must exist. Several processes may open the
    /// same file at once, even a fresh one.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        create_private_file(path).map_err(|e| {
            StoreError::unavailable_from(format!("cannot open {}: {e}", path.display()), None, e)
        })?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = connect(options).await.map_err(db_error)?;
        let migrations_applied = migrate(&pool).await?;
        let readers = direct::Readers::for_file(path)?.map(Arc::new);
        // Creations are written on a connection of their own, to the file the readers read.
        let creations = readers
            .as_ref()
            .map(|r| creations::Creations::new(r.path().to_path_buf()));
        let epoch_path = Epoch::path_for(path);
        let epoch = Epoch::open(&epoch_path).map_err(|e| {
            StoreError::unavailable_from(
                format!("cannot map {}: {e}", epoch_path.display()),
                None,
                e,
            )
        })?;
        // A process that died between a commit and its bump left that change unannounced;
        // announcing "something may have changed" once on start-up covers it.
        epoch.bump();
        Ok(Self {
            pool,
            readers,
            epoch: Arc::new(epoch),
            creations,
            migrations_applied: migrations_applied.into(),
        })
    }

    /// The schema migrations opening this store applied (none if the schema was up to date).
    pub fn migrations_applied(&self) -> &[AppliedMigration] {
        &self.migrations_applied
    }

    /// For graceful shutdown: the direct readers refuse new lookups and close their idle
    /// connections (a lookup still running closes its own connection when it ends, without
    /// being waited for); the creations' writer closes its connection (after the batch it is
    /// writing, if any) and refuses later batches; then the pool waits for its running
    /// statements and closes its connections. SQLite checkpoints the WAL when the last connection to the file closes, so
    /// the checkpoint happens here unless a lookup was still running. The store answers
    /// `Unavailable` afterwards.
    pub async fn close(&self) {
        if let Some(readers) = &self.readers {
            readers.close();
        }
        if let Some(creations) = &self.creations {
            creations.close();
        }
        self.pool.close().await;
    }

    /// Writes a consistent copy of the database file at `source` to the new file `target`,
    /// while other processes (a running server) go on reading and writing it: the database as
    /// it was at one commit. `target` must not exist; the pages go to [`backup_partial_path`]
    /// first and get `target`'s name only once complete and durable, so an error, or `progress`
    /// saying stop ([`StoreError::Interrupted`]), leaves no file behind. The source is only
    /// read: neither migrated nor created.
    ///
    /// Blocking (disk I/O for the whole copy): call it from a blocking thread.
    pub fn backup(
        source: &Path,
        target: &Path,
        progress: &dyn crate::Progress,
    ) -> StoreResult<BackupSummary> {
        direct::backup(source, target, progress)
    }

    /// Starts a write transaction holding the write lock (see the module docs).
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
            Err(e) => Err(StoreError::unavailable_from(
                format!("commit task failed: {e}"),
                None,
                e,
            )),
        }
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
async fn migrate(pool: &SqlitePool) -> StoreResult<Vec<AppliedMigration>> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
    let applied = migrate::apply(MIGRATIONS, &mut *tx, db_error).await?;
    if !applied.is_empty() {
        // A migration may rewrite rows without logging them: no cache snapshot written before
        // it is loaded after it (the table exists once every migration has run).
        sqlx::query("DELETE FROM cache_seal")
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
    }
    tx.commit().await.map_err(db_error)?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_migration_file_is_embedded_in_order() {
        crate::migrate::assert_every_file_is_embedded("sqlite", super::MIGRATIONS);
    }
}
