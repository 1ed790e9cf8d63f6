//! The PostgreSQL engine: any number of keyward instances share one database.
//!
//! Same model and semantics as the SQLite engine; what differs is how writers are serialised and
//! how other processes learn of changes:
//! - A regeneration reads the token `FOR UPDATE`, a revocation updates it with a guard on its
//!   state, so a check and the write that follows it see one state (SQLite gets this from its
//!   single write lock).
//! - A write that appends to the change log takes the `change_log` row lock first, so change
//!   sequence numbers become visible in commit order and a cursor never skips a late commit.
//! - [`Store::change_epoch`] is an in-memory counter fed by `LISTEN/NOTIFY` plus a heartbeat; see
//!   [`feed`] for the design and the propagation bound ([`PROPAGATION_BOUND`]).
//! - Migrations run under a session-level `pg_advisory_lock`, so instances starting at once on an
//!   empty database apply the schema exactly once.

use async_trait::async_trait;
use keyward_core::{
    AuditEvent, TokenHash, TokenId, TokenName, TokenRecord, TokenState, User, UserId, UserName,
};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions as _, Connection as _, Postgres, Transaction};
use std::str::FromStr as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use time::OffsetDateTime;

use crate::migrate::{self, Migrations};
use crate::{
    AuditFilter, Changes, HashRecord, Lookup, NewUser, Page, Regeneration, Revocation,
    SessionRecord, Snapshot, Store, StoreError, StoreResult, StoredAuditEvent, StoredHash, Usage,
};

pub mod feed;
mod rows;
mod sessions;

pub use feed::{HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT, PROPAGATION_BOUND};

use feed::{CHANNEL, Feed, LOG_END_SQL};
use rows::{db_error, insert_error, unix};

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

/// How long the change log keeps an entry. A cache that has not caught up for longer starts over
/// (`Changes::complete` is false).
const CHANGE_LOG_RETENTION_SECS: i64 = 24 * 60 * 60;

/// How long a query on the verification path (lookup, change log, ping) may take in all. A
/// server behind a network partition never answers; verification then fails closed (503)
/// instead of hanging.
const VERIFY_QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// `application_name` of query connections, for `pg_stat_activity`.
const APPLICATION_NAME: &str = "keyward";

/// Numbers the stores a process opens, so each listener connection has its own name.
static STORES_OPENED: AtomicU64 = AtomicU64::new(0);

/// The PostgreSQL implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    feed: Arc<Feed>,
    listener: Arc<ListenerTask>,
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
        migrate(&options).await?;
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
        let (listener, end) = feed::connect(&listener_options).await.map_err(db_error)?;
        let feed = Arc::new(Feed::default());
        let handle = feed::spawn(Arc::clone(&feed), listener_options, listener, end);
        Ok(Self {
            pool,
            feed,
            listener: Arc::new(ListenerTask {
                handle,
                application_name,
            }),
        })
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

    /// Stops the listener and closes every connection, waiting for running statements. For
    /// graceful shutdown; the store answers `Unavailable` afterwards.
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
            Err(e) => Err(StoreError::unavailable(format!("commit task failed: {e}"))),
        }
    }

    async fn begin(&self) -> StoreResult<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(db_error)
    }

    /// A token by id in an open transaction, limited to `owner`'s when given; `lock` reads it
    /// `FOR UPDATE`, so the state checked is the state the transaction then changes.
    async fn token_in(
        conn: &mut PgConnection,
        id: &TokenId,
        owner: Option<&UserId>,
        lock: bool,
    ) -> StoreResult<Option<TokenRecord>> {
        let sql = if lock {
            "SELECT * FROM tokens WHERE id = $1 AND ($2::text IS NULL OR owner = $2) FOR UPDATE"
        } else {
            "SELECT * FROM tokens WHERE id = $1 AND ($2::text IS NULL OR owner = $2)"
        };
        let row = sqlx::query(sql)
            .bind(id.as_str())
            .bind(owner.map(UserId::as_str))
            .fetch_optional(conn)
            .await
            .map_err(db_error)?;
        row.as_ref().map(rows::token).transpose()
    }
}

/// Applies pending migrations on a connection of its own that holds the migration advisory lock
/// throughout. The lock is session-level and the connection is closed afterwards (even on
/// failure), so a failed migration cannot leave the lock held by a pooled connection.
async fn migrate(options: &PgConnectOptions) -> StoreResult<()> {
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
    applied.and(closed)
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

async fn insert_audit(conn: &mut PgConnection, event: &AuditEvent) -> StoreResult<()> {
    insert_audit_row(conn, None, event).await
}

/// Appends an audit event, at sequence number `seq` when given (a restore), else at the next.
async fn insert_audit_row(
    conn: &mut PgConnection,
    seq: Option<i64>,
    event: &AuditEvent,
) -> StoreResult<()> {
    // An identity column takes its default only when the column is left out, not from NULL.
    let sql = if seq.is_some() {
        "INSERT INTO audit_events \
         (at, kind, actor_user, actor_token, actor_label, subject_user, token_id, ip, detail, seq) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    } else {
        "INSERT INTO audit_events \
         (at, kind, actor_user, actor_token, actor_label, subject_user, token_id, ip, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    };
    let mut query = sqlx::query(sql)
        .bind(unix(event.at))
        .bind(event.kind.as_str())
        .bind(event.actor.user.as_ref().map(UserId::as_str))
        .bind(event.actor.token.as_ref().map(TokenId::as_str))
        .bind(event.actor.label.as_str())
        .bind(event.subject_user.as_ref().map(UserId::as_str))
        .bind(event.token_id.as_ref().map(TokenId::as_str))
        .bind(event.ip.map(|ip| ip.to_string()))
        .bind(event.detail.as_deref());
    if let Some(seq) = seq {
        query = query.bind(seq);
    }
    query
        .execute(conn)
        .await
        .map_err(|e| insert_error(e, || "audit event".to_owned()))?;
    Ok(())
}

async fn insert_user_row(
    conn: &mut PgConnection,
    user: &User,
    password_hash: Option<&str>,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO users (id, name, is_admin, password_hash, created_at, disabled_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
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

async fn insert_token_row(conn: &mut PgConnection, token: &TokenRecord) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO tokens (id, owner, name, scopes, hint, created_at, expires_at, regenerated_at, \
         last_used_at, last_used_ip, revoked_at, revoked_by, revoke_reason) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
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

async fn insert_hash_row(conn: &mut PgConnection, hash: &HashRecord) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO token_hashes (hash, token_id, key_id, created_at, valid_until) \
         VALUES ($1, $2, $3, $4, $5)",
    )
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
/// Runs inside the writes that append to the log (holding its row lock), so the log needs no
/// janitor.
async fn prune_changes(conn: &mut PgConnection, now: OffsetDateTime) -> StoreResult<()> {
    let cutoff = unix(now).saturating_sub(CHANGE_LOG_RETENTION_SECS);
    sqlx::query(
        "UPDATE change_log SET pruned_through = greatest(pruned_through, \
         coalesce((SELECT max(seq) FROM changes WHERE at < $1), 0)) WHERE id = 1",
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

/// Appends every hash of `token` except `except` to the change log; returns the log's new end.
async fn log_token_hashes(
    conn: &mut PgConnection,
    token: &TokenId,
    at: OffsetDateTime,
) -> StoreResult<i64> {
    // Held until commit: appends happen one transaction at a time, in commit order.
    sqlx::query("SELECT 1 FROM change_log WHERE id = 1 FOR UPDATE")
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    sqlx::query(
        "INSERT INTO changes (hash, at) SELECT hash, $2 FROM token_hashes \
         WHERE token_id = $1 ORDER BY hash",
    )
    .bind(token.as_str())
    .bind(unix(at))
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    prune_changes(conn, at).await?;
    Ok(change_log_end(conn).await?.1)
}

/// Tells every cache to start over: one marker entry, pruned at once, so every cursor from
/// before it reads as incomplete. For writes too large to log hash by hash (a restore).
async fn reset_change_log(conn: &mut PgConnection) -> StoreResult<i64> {
    sqlx::query("SELECT 1 FROM change_log WHERE id = 1 FOR UPDATE")
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    for statement in [
        "INSERT INTO changes (hash, at) VALUES (decode(repeat('00', 32), 'hex'), 0)",
        "UPDATE change_log SET pruned_through = (SELECT max(seq) FROM changes) WHERE id = 1",
        "DELETE FROM changes WHERE seq <= (SELECT pruned_through FROM change_log WHERE id = 1)",
    ] {
        sqlx::query(statement)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
    }
    Ok(change_log_end(conn).await?.1)
}

/// The change log's pruning mark and end, as the statement's snapshot sees them.
async fn change_log_end(conn: &mut PgConnection) -> StoreResult<(i64, i64)> {
    sqlx::query_as(LOG_END_SQL)
        .fetch_one(conn)
        .await
        .map_err(db_error)
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        bounded(async {
            sqlx::query("SELECT 1")
                .execute(&self.pool)
                .await
                .map_err(db_error)
        })
        .await?;
        Ok(())
    }

    async fn add_user(&self, new: &NewUser, audit: &AuditEvent) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        insert_user_row(&mut tx, &new.user, new.password_hash.as_deref()).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn user_by_name(&self, name: &UserName) -> StoreResult<Option<User>> {
        let row = sqlx::query("SELECT * FROM users WHERE name = $1")
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.as_ref().map(rows::user).transpose()
    }

    async fn user_by_id(&self, id: &UserId) -> StoreResult<Option<User>> {
        let row = sqlx::query("SELECT * FROM users WHERE id = $1")
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
            sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
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
        let mut tx = self.begin().await?;
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
        let seq = log_token_hashes(&mut tx, &token.id, token.created_at).await?;
        insert_audit(&mut tx, audit).await?;
        self.commit_and_announce(tx, seq).await
    }

    async fn token(
        &self,
        id: &TokenId,
        owner: Option<&UserId>,
    ) -> StoreResult<Option<TokenRecord>> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        Self::token_in(&mut conn, id, owner, false).await
    }

    async fn list_tokens(
        &self,
        owner: Option<&UserId>,
        page: &Page,
    ) -> StoreResult<Vec<TokenRecord>> {
        // One static statement per shape, so each uses its index instead of a catch-all plan.
        let query = match (owner, &page.after) {
            (Some(owner), Some(after)) => sqlx::query(
                "SELECT * FROM tokens WHERE owner = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
            )
            .bind(owner.as_str())
            .bind(after.as_str()),
            (Some(owner), None) => {
                sqlx::query("SELECT * FROM tokens WHERE owner = $1 ORDER BY id DESC LIMIT $2")
                    .bind(owner.as_str())
            }
            (None, Some(after)) => {
                sqlx::query("SELECT * FROM tokens WHERE id < $1 ORDER BY id DESC LIMIT $2")
                    .bind(after.as_str())
            }
            (None, None) => sqlx::query("SELECT * FROM tokens ORDER BY id DESC LIMIT $1"),
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
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "UPDATE tokens SET name = $3 WHERE id = $1 AND ($2::text IS NULL OR owner = $2) RETURNING *",
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
        let mut tx = self.begin().await?;
        // The row stays locked until commit, so this check and the writes below see one state.
        let current = Self::token_in(&mut tx, id, owner, true)
            .await?
            .ok_or(StoreError::NotFound)?;
        match current.state(regen.at) {
            TokenState::Active => {}
            TokenState::Revoked => return Err(StoreError::InvalidState("token is revoked")),
            TokenState::Expired => return Err(StoreError::InvalidState("token has expired")),
        }
        sqlx::query(
            "UPDATE token_hashes SET valid_until = least(coalesce(valid_until, $2), $2) WHERE token_id = $1",
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
            "UPDATE tokens SET hint = $2, expires_at = $3, regenerated_at = $4 WHERE id = $1 RETURNING *",
        )
        .bind(id.as_str())
        .bind(regen.new_hint.as_str())
        .bind(regen.new_expires_at.map(unix))
        .bind(unix(regen.at))
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        let token = rows::token(&row)?;
        let seq = log_token_hashes(&mut tx, id, regen.at).await?;
        insert_audit(&mut tx, audit).await?;
        self.commit_and_announce(tx, seq).await?;
        Ok(token)
    }

    async fn revoke_token(
        &self,
        id: &TokenId,
        owner: Option<&UserId>,
        revocation: &Revocation,
        audit: &AuditEvent,
    ) -> StoreResult<TokenRecord> {
        let mut tx = self.begin().await?;
        // A concurrent revocation holds the row until it commits; this statement then re-checks
        // `revoked_at` on the committed row and updates nothing.
        let row = sqlx::query(
            "UPDATE tokens SET revoked_at = $3, revoked_by = $4, revoke_reason = $5 \
             WHERE id = $1 AND ($2::text IS NULL OR owner = $2) AND revoked_at IS NULL RETURNING *",
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
            // Not updated: either not the caller's (or no such token), or already revoked, and
            // a revocation is final, so the answer cannot change before we give it.
            let existing = Self::token_in(&mut tx, id, owner, false).await?;
            return existing.ok_or(StoreError::NotFound);
        };
        let token = rows::token(&row)?;
        let seq = log_token_hashes(&mut tx, id, revocation.at).await?;
        insert_audit(&mut tx, audit).await?;
        self.commit_and_announce(tx, seq).await?;
        Ok(token)
    }

    async fn lookup(&self, hash: &TokenHash) -> StoreResult<Option<Lookup>> {
        let found = sqlx::query(
            "SELECT t.*, u.name AS owner_name, u.disabled_at AS owner_disabled_at, \
             h.valid_until AS secret_valid_until, h.created_at AS secret_created_at \
             FROM token_hashes h JOIN tokens t ON t.id = h.token_id JOIN users u ON u.id = t.owner \
             WHERE h.hash = $1",
        )
        .bind(hash.0.to_vec())
        .fetch_optional(&self.pool);
        let row = bounded(async { found.await.map_err(db_error) }).await?;
        row.as_ref().map(rows::lookup).transpose()
    }

    async fn stored_hashes(
        &self,
        after: Option<&TokenHash>,
        limit: u32,
    ) -> StoreResult<Vec<TokenHash>> {
        let limit = i64::from(limit);
        let query = match after {
            Some(after) => {
                sqlx::query("SELECT hash FROM token_hashes WHERE hash > $1 ORDER BY hash LIMIT $2")
                    .bind(after.0.to_vec())
                    .bind(limit)
            }
            None => sqlx::query("SELECT hash FROM token_hashes ORDER BY hash LIMIT $1").bind(limit),
        };
        let rows = query.fetch_all(&self.pool);
        let rows = bounded(async { rows.await.map_err(db_error) }).await?;
        rows.iter().map(|row| rows::hash(row, "hash")).collect()
    }

    async fn record_usage(&self, batch: &[Usage]) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = batch.iter().map(|u| u.token_id.as_str()).collect();
        let ats: Vec<i64> = batch.iter().map(|u| unix(u.at)).collect();
        let ips: Vec<Option<String>> = batch
            .iter()
            .map(|u| u.ip.map(|ip| ip.to_string()))
            .collect();
        let mut tx = self.begin().await?;
        // Lock the rows in id order first: instances flushing overlapping batches then wait for
        // each other instead of deadlocking.
        sqlx::query("SELECT 1 FROM tokens WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        // One row per token: its latest use in the batch (the later entry on a tie, as if the
        // batch were applied in order). Another instance may hold a later use; a use only moves
        // forward.
        sqlx::query(
            "WITH batch AS ( \
                 SELECT DISTINCT ON (id) id, at, ip \
                 FROM unnest($1::text[], $2::bigint[], $3::text[]) WITH ORDINALITY AS u (id, at, ip, ord) \
                 ORDER BY id, at DESC, ord DESC) \
             UPDATE tokens t SET last_used_at = b.at, last_used_ip = b.ip FROM batch b \
             WHERE t.id = b.id AND (t.last_used_at IS NULL OR t.last_used_at <= b.at)",
        )
        .bind(&ids)
        .bind(&ats)
        .bind(&ips)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    async fn append_audit(&self, event: &AuditEvent) -> StoreResult<()> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        insert_audit(&mut conn, event).await
    }

    async fn audit_events(&self, filter: &AuditFilter) -> StoreResult<Vec<StoredAuditEvent>> {
        let query = match (&filter.subject_user, filter.before_seq) {
            (Some(user), Some(before)) => sqlx::query(
                "SELECT * FROM audit_events WHERE subject_user = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
            )
            .bind(user.as_str())
            .bind(before),
            (Some(user), None) => sqlx::query(
                "SELECT * FROM audit_events WHERE subject_user = $1 ORDER BY seq DESC LIMIT $2",
            )
            .bind(user.as_str()),
            (None, Some(before)) => {
                sqlx::query("SELECT * FROM audit_events WHERE seq < $1 ORDER BY seq DESC LIMIT $2")
                    .bind(before)
            }
            (None, None) => sqlx::query("SELECT * FROM audit_events ORDER BY seq DESC LIMIT $1"),
        };
        let rows = query
            .bind(i64::from(filter.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        rows.iter().map(rows::audit_event).collect()
    }

    fn change_epoch(&self) -> u64 {
        self.feed.load()
    }

    async fn changes_since(&self, cursor: i64) -> StoreResult<Changes> {
        // One statement, one snapshot: the rows and the pruning mark agree, so a prune in
        // between cannot hide a gap. One round trip, since a cache calls this on every
        // verification while the change feed is down.
        let fetched = sqlx::query(
            "WITH log AS (SELECT pruned_through, \
                 greatest(pruned_through, coalesce((SELECT max(seq) FROM changes), 0)) AS log_end \
                 FROM change_log WHERE id = 1) \
             SELECT log.pruned_through, log.log_end, c.hash \
             FROM log LEFT JOIN changes c ON c.seq > $1 AND c.seq <= log.log_end \
             ORDER BY c.seq",
        )
        .bind(cursor)
        .fetch_all(&self.pool);
        let rows = bounded(async { fetched.await.map_err(db_error) }).await?;
        let Some(first) = rows.first() else {
            return Err(StoreError::corrupt("change_log has no row".to_owned()));
        };
        let pruned_through: i64 = rows::get(first, "pruned_through")?;
        let end: i64 = rows::get(first, "log_end")?;
        let mut hashes = Vec::with_capacity(rows.len());
        for row in &rows {
            if rows::get::<Option<Vec<u8>>>(row, "hash")?.is_some() {
                hashes.push(rows::hash(row, "hash")?);
            }
        }
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
        // REPEATABLE READ: every statement sees the snapshot the first one took.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .map_err(db_error)?;
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
        let mut tx = self.begin().await?;
        // Keeps every other writer out from the emptiness check to the commit (readers go on).
        sqlx::query(
            "LOCK TABLE users, tokens, token_hashes, audit_events IN SHARE ROW EXCLUSIVE MODE",
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let occupied: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM users) OR EXISTS (SELECT 1 FROM tokens) \
             OR EXISTS (SELECT 1 FROM audit_events)",
        )
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
        // Explicit sequence numbers do not move the identity sequence; new events go after them.
        sqlx::query(
            "SELECT setval(pg_get_serial_sequence('audit_events', 'seq'), max(seq)) \
             FROM audit_events HAVING max(seq) IS NOT NULL",
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let seq = reset_change_log(&mut tx).await?;
        self.commit_and_announce(tx, seq).await
    }
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
