//! The change log on PostgreSQL, announced through `NOTIFY` and the listener (`listener`).

use async_trait::async_trait;
use keyward_core::{TokenHash, TokenId};
use sqlx::postgres::PgConnection;
use time::OffsetDateTime;

use super::listener::LOG_END_SQL;
use super::rows::{self, db_error, unix};
use super::{PgStore, bounded};
use crate::{ChangeFeed, Changes, StoreError, StoreResult};

/// How long the change log keeps an entry. A cache that has not caught up for longer starts over
/// (`Changes::complete` is false).
const CHANGE_LOG_RETENTION_SECS: i64 = 24 * 60 * 60;

/// Drops change-log entries older than the retention period, remembering how far it has pruned.
/// Runs inside the writes that append to the log (holding its row lock), so the log needs no
/// janitor.
pub(super) async fn prune_changes(conn: &mut PgConnection, now: OffsetDateTime) -> StoreResult<()> {
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

/// Locks the change log's row until the transaction ends: transactions that append to the log
/// (or to the outbox) do it one at a time, in commit order, so a reader paging by sequence
/// number never skips a row that commits later.
pub(super) async fn lock_change_log(conn: &mut PgConnection) -> StoreResult<()> {
    sqlx::query("SELECT 1 FROM change_log WHERE id = 1 FOR UPDATE")
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Appends `hash`, a hash that no longer exists (a secret moved to another key), to the change
/// log; the caller then logs the token's hashes as usual (in the same transaction, which this
/// already holds the log's lock for).
pub(super) async fn log_removed_hash(
    conn: &mut PgConnection,
    hash: &TokenHash,
    at: OffsetDateTime,
) -> StoreResult<()> {
    lock_change_log(conn).await?;
    sqlx::query("INSERT INTO changes (hash, at) VALUES ($1, $2)")
        .bind(hash.0.to_vec())
        .bind(unix(at))
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Appends every hash of `token` (a new one among them) to the change log; returns the log's new
/// end.
pub(super) async fn log_token_hashes(
    conn: &mut PgConnection,
    token: &TokenId,
    at: OffsetDateTime,
) -> StoreResult<i64> {
    // Held until commit: appends happen one transaction at a time, in commit order.
    lock_change_log(conn).await?;
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
pub(super) async fn reset_change_log(conn: &mut PgConnection) -> StoreResult<i64> {
    lock_change_log(conn).await?;
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
pub(super) async fn change_log_end(conn: &mut PgConnection) -> StoreResult<(i64, i64)> {
    sqlx::query_as(LOG_END_SQL)
        .fetch_one(conn)
        .await
        .map_err(db_error)
}

#[async_trait]
impl ChangeFeed for PgStore {
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

    /// None kept: a database many instances share is no one instance's to snapshot (each
    /// would need a seal of its own, and instances come and go), so none writes a snapshot.
    async fn seal_cache_snapshot(&self, _seal: &[u8; 32]) -> StoreResult<bool> {
        Ok(false)
    }

    async fn cache_snapshot_seal(&self) -> StoreResult<Option<[u8; 32]>> {
        Ok(None)
    }
}
