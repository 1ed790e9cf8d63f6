//! The PostgreSQL engine: any number of keyward instances share one database.
//!
//! Same model and semantics as the SQLite engine; what differs is how writers are serialised and
//! how other processes learn of changes:
//! - A regeneration reads the token `FOR UPDATE`, a revocation updates it with a guard on its
//!   state, so a check and the write that follows it see one state (SQLite gets this from its
//!   single write lock).
//! - A write that appends to the change log takes the `change_log` row lock first, so change
//!   sequence numbers become visible in commit order and a cursor never skips a late commit.
//! - [`ChangeFeed::change_epoch`](crate::ChangeFeed::change_epoch) is an in-memory counter fed by
//!   `LISTEN/NOTIFY` plus a heartbeat; see [`listener`] for the design and the propagation bound ([`PROPAGATION_BOUND`]).
//! - Migrations run under a session-level `pg_advisory_lock`, so instances starting at once on an
//!   empty database apply the schema exactly once.
//!
//! Laid out like the SQLite engine, one file per trait (`tokens`, `users`, `sessions`, `audit`,
//! `feed`, `backup`), so the two read side by side; [`listener`] is the change feed's listener.

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions as _, Connection as _, Postgres, Transaction};
use std::str::FromStr as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::migrate::{self, AppliedMigration, Migrations};
use crate::{StoreError, StoreResult};

/// The columns `decode::token` reads, from `tokens t` and its limits `l` (joined by
/// [`token_from!`]). Named one by one, never `*`: a prepared statement that selects `*` fails
/// ("cached plan must not change result type") once a migration adds a column, and several
/// releases serve one database during a rolling upgrade.
macro_rules! token_columns {
    () => {
        "t.id, t.owner, t.name, t.scopes, t.hint, t.created_at, t.expires_at, t.regenerated_at, \
         t.last_used_at, t.last_used_ip, t.revoked_at, t.revoked_by, t.revoke_reason, \
         l.allowed_ips, l.max_uses, l.remaining, l.refill_amount, l.refill_every, l.refilled_at, \
         l.rate_requests, l.rate_per, coalesce(l.version, 0) AS limits_version"
    };
}

/// `tokens t` with its limits `l`, for [`token_columns!`]: a token without a `token_limits`
/// row has none.
macro_rules! token_from {
    () => {
        " FROM tokens t LEFT JOIN token_limits l ON l.token_id = t.id "
    };
}

/// The statement `$update` on `tokens` (an `UPDATE` without `RETURNING`) answering the
/// updated tokens as [`token_columns!`].
macro_rules! returning_token {
    ($($update:tt)+) => {
        concat!(
            "WITH t AS (",
            $($update)+,
            " RETURNING *) SELECT ",
            token_columns!(),
            " FROM t LEFT JOIN token_limits l ON l.token_id = t.id"
        )
    };
}

mod audit;
mod backup;
mod events;
mod feed;
mod identities;
pub mod listener;
mod notices;
mod rows;
mod sessions;
mod tokens;
mod users;

pub use listener::{HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT, PROPAGATION_BOUND};

use listener::{CHANNEL, Feed};
use rows::db_error;

/// The schema (see [`Migrations`]).
const MIGRATIONS: Migrations = &[
    (
        1,
        "initial",
        include_str!("../../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "sessions",
        include_str!("../../migrations/postgres/0002_sessions.sql"),
    ),
    (
        3,
        "platform_users",
        include_str!("../../migrations/postgres/0003_platform_users.sql"),
    ),
    (
        4,
        "identities",
        include_str!("../../migrations/postgres/0004_identities.sql"),
    ),
    (
        5,
        "key_index",
        include_str!("../../migrations/postgres/0005_key_index.sql"),
    ),
    (
        6,
        "events",
        include_str!("../../migrations/postgres/0006_events.sql"),
    ),
    (
        8,
        "expiry_notices",
        include_str!("../../migrations/postgres/0008_expiry_notices.sql"),
    ),
    (
        9,
        "token_limits",
        include_str!("../../migrations/postgres/0009_token_limits.sql"),
    ),
    (
        10,
        "recent_use",
        include_str!("../../migrations/postgres/0010_recent_use.sql"),
    ),
];

/// The advisory lock key that serialises migrations ("keyward" in ASCII). Advisory locks are
/// per database, so deployments sharing a server do not wait for each other.
const MIGRATION_LOCK: i64 = 0x006b_6579_7761_7264;

/// Connections per process for queries (the listener has its own). Verification is served from
/// a cache, so a few are plenty.
const MAX_CONNECTIONS: u32 = 8;

/// How long a query waits for a connection (including connecting) before the store answers
/// `Unavailable`; verification then fails closed instead of hanging.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a query on the verification path (lookup, change log, ping) may take in all. A
/// server behind a network partition never answers; verification then fails closed (503)
/// instead of hanging.
const VERIFY_QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// `application_name` of query connections, for `pg_stat_activity`.
const APPLICATION_NAME: &str = "keyward";

/// Numbers the stores a process opens, so each listener connection has its own name.
static STORES_OPENED: AtomicU64 = AtomicU64::new(0);

/// The PostgreSQL implementation of [`Store`](crate::Store).
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    feed: Arc<Feed>,
    listener: Arc<ListenerTask>,
    /// What connecting migrated, for `keyward migrate` to report.
    migrations_applied: Arc<[AppliedMigration]>,
}

/// The background listener; stops when the last handle on the store is dropped.
#[derive(Debug)]
struct ListenerTask {
    handle: tokio::task::JoinHandle<()>,
    application_name: String,
}

impl Drop for ListenerTask {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`), applies any pending
    /// migrations, and starts the change-feed listener on its own connection. Several processes
    /// may do this at once, even on an empty database. Must run inside a tokio runtime.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        // The URL may hold a password, so it never goes into an error.
        let options = PgConnectOptions::from_str(url)
            .map_err(|_| StoreError::unavailable("not a valid PostgreSQL URL".to_owned()))?;
        Self::connect_with(options).await
    }

    /// [`PgStore::connect`] with options already parsed.
    pub async fn connect_with(options: PgConnectOptions) -> StoreResult<Self> {
        // PostgreSQL sends a NOTICE for every `IF NOT EXISTS` that finds its object (sqlx's
        // bookkeeping table on every start) and sqlx logs each at INFO: noise that reads like
        // a problem. Warnings and errors still come through.
        let options = options.options([("client_min_messages", "warning")]);
        let migrations_applied = migrate(&options).await?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone().application_name(APPLICATION_NAME))
            .await
            .map_err(db_error)?;
        let application_name = format!(
            "keyward-listener-{}-{}",
            std::process::id(),
            STORES_OPENED.fetch_add(1, Ordering::Relaxed)
        );
        let listener_options = options.application_name(&application_name);
        let (listener, end) = listener::connect(&listener_options)
            .await
            .map_err(db_error)?;
        let feed = Arc::new(Feed::default());
        let handle = listener::spawn(Arc::clone(&feed), listener_options, listener, end);
        Ok(Self {
            pool,
            feed,
            listener: Arc::new(ListenerTask {
                handle,
                application_name,
            }),
            migrations_applied: migrations_applied.into(),
        })
    }

    /// The schema migrations connecting applied (none if the schema was up to date).
    pub fn migrations_applied(&self) -> &[AppliedMigration] {
        &self.migrations_applied
    }

    /// The `application_name` of this store's listener connection, as `pg_stat_activity`
    /// shows it (`keyward-listener-<pid>-<n>`).
    pub fn listener_application_name(&self) -> &str {
        &self.listener.application_name
    }

    /// Whether the change-feed listener is connected. While it is not, the cache distrusts
    /// itself and every verification reads the change log from the database.
    pub fn listener_connected(&self) -> bool {
        self.feed.is_connected()
    }

    /// For graceful shutdown: stops the change listener (its task is aborted and its connection
    /// dropped), then waits for the pool's running statements and closes its connections. The
    /// store answers `Unavailable` afterwards.
    pub async fn close(&self) {
        self.listener.handle.abort();
        self.pool.close().await;
    }

    /// Commits a transaction that appended to the change log up to `seq`: notifies every
    /// listener (delivered only if the commit succeeds), commits, then advances this process's
    /// epoch.
    ///
    /// The commit runs as its own task so that a caller that gives up (a dropped request) cannot
    /// leave a committed change unannounced here. The epoch advances even if the commit reports
    /// an error: its outcome is then unknown, and a needless cache refresh costs nothing.
    async fn commit_and_announce(
        &self,
        mut tx: Transaction<'static, Postgres>,
        seq: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "SELECT pg_notify($1, $2 || ' ' || floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint)",
        )
        .bind(CHANNEL)
        .bind(seq.to_string())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let feed = Arc::clone(&self.feed);
        let task = tokio::spawn(async move {
            let committed = tx.commit().await;
            feed.committed(seq);
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

    async fn begin(&self) -> StoreResult<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(db_error)
    }
}

/// Applies pending migrations on a connection of its own that holds the migration advisory lock
/// throughout. The lock is session-level and the connection is closed afterwards (even on
/// failure), so a failed migration cannot leave the lock held by a pooled connection.
async fn migrate(options: &PgConnectOptions) -> StoreResult<Vec<AppliedMigration>> {
    let mut conn = options
        .clone()
        .application_name("keyward-migrate")
        .connect()
        .await
        .map_err(db_error)?;
    let applied = async {
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut conn)
            .await
            .map_err(db_error)?;
        migrate::apply(MIGRATIONS, &mut conn, db_error).await
    }
    .await;
    // Closing the session releases the lock.
    let closed = conn.close().await.map_err(db_error);
    applied.and_then(|applied| closed.map(|()| applied))
}

/// Runs a verification-path query, giving up after [`VERIFY_QUERY_TIMEOUT`].
async fn bounded<T>(query: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
    tokio::time::timeout(VERIFY_QUERY_TIMEOUT, query)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::unavailable(format!(
                "no answer from the database within {VERIFY_QUERY_TIMEOUT:?}"
            )))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_file_is_embedded_in_order() {
        crate::migrate::assert_every_file_is_embedded("postgres", MIGRATIONS);
    }

    #[test]
    fn a_bad_url_error_does_not_repeat_the_url() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let err = runtime
            .block_on(PgStore::connect("postgres://user:hunter2@[::1"))
            .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
