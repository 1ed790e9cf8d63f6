//! The change log on SQLite, announced through the epoch file that every process using the
//! database maps (`crate::epoch`).

use async_trait::async_trait;
use keyward_core::{TokenHash, TokenId};
use sqlx::sqlite::SqliteConnection;
use time::OffsetDateTime;

use super::SqliteStore;
use super::rows::{self, db_error, unix};
use crate::{ChangeFeed, Changes, StoreResult};

/// How long the change log keeps an entry. A cache that has not caught up for longer starts over
/// (`Changes::complete` is false).
const CHANGE_LOG_RETENTION_SECS: i64 = 24 * 60 * 60;

/// [`reset_change_log`]'s statements (also run by `direct::bulk`): a marker entry, the pruning mark
/// moved past it, the entries it covers dropped.
pub(super) const RESET_MARK: &str = "INSERT INTO changes (hash, at) VALUES (zeroblob(32), ?1)";
pub(super) const RESET_PRUNE: &str =
    "UPDATE change_log SET pruned_through = (SELECT max(seq) FROM changes) WHERE id = 1";
pub(super) const RESET_DROP: &str =
    "DELETE FROM changes WHERE seq <= (SELECT pruned_through FROM change_log WHERE id = 1)";

/// [`prune_changes`]'s statements (also run by `direct::creations`): the pruning mark moved past
/// the entries older than the cutoff `?1`, the entries it covers dropped.
pub(super) const PRUNE_MARK: &str = "UPDATE change_log SET pruned_through = \
     max(pruned_through, coalesce((SELECT max(seq) FROM changes WHERE at < ?1), 0)) WHERE id = 1";
pub(super) const PRUNE_DROP: &str =
    "DELETE FROM changes WHERE seq <= (SELECT pruned_through FROM change_log WHERE id = 1)";

/// [`log_token_hashes`]' append (also run by `direct::creations`, which prunes once a batch):
/// every hash of token `?1`, at `?2`.
pub(super) const APPEND_TOKEN_HASHES: &str = "INSERT INTO changes (hash, at) \
     SELECT hash, ?2 FROM token_hashes WHERE token_id = ?1 ORDER BY hash";

/// The cutoff [`PRUNE_MARK`] takes at `now`.
pub(super) fn prune_cutoff(now: OffsetDateTime) -> i64 {
    unix(now).saturating_sub(CHANGE_LOG_RETENTION_SECS)
}

/// Drops change-log entries older than the retention period, remembering how far it has pruned.
/// Runs inside the writes that append to the log, so the log needs no janitor.
pub(super) async fn prune_changes(
    conn: &mut SqliteConnection,
    now: OffsetDateTime,
) -> StoreResult<()> {
    sqlx::query(PRUNE_MARK)
        .bind(prune_cutoff(now))
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    sqlx::query(PRUNE_DROP)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Appends `hash`, a hash that no longer exists (a secret moved to another key), to the change
/// log; the caller then logs the token's hashes as usual.
pub(super) async fn log_removed_hash(
    conn: &mut SqliteConnection,
    hash: &TokenHash,
    at: OffsetDateTime,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO changes (hash, at) VALUES (?1, ?2)")
        .bind(hash.0.to_vec())
        .bind(unix(at))
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Appends every hash of `token` (a new one among them) to the change log.
pub(super) async fn log_token_hashes(
    conn: &mut SqliteConnection,
    token: &TokenId,
    at: OffsetDateTime,
) -> StoreResult<()> {
    sqlx::query(APPEND_TOKEN_HASHES)
        .bind(token.as_str())
        .bind(unix(at))
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    prune_changes(conn, at).await
}

/// Tells every cache to start over: one marker entry, pruned at once, so every cursor from
/// before it reads as incomplete. For writes too large to log hash by hash (a restore).
pub(super) async fn reset_change_log(
    conn: &mut SqliteConnection,
    at: OffsetDateTime,
) -> StoreResult<()> {
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
impl ChangeFeed for SqliteStore {
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

    async fn seal_cache_snapshot(&self, seal: &[u8; 32]) -> StoreResult<bool> {
        sqlx::query(
            "INSERT INTO cache_seal (id, seal) VALUES (1, ?1) \
             ON CONFLICT (id) DO UPDATE SET seal = excluded.seal",
        )
        .bind(seal.as_slice())
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(true)
    }

    async fn cache_snapshot_seal(&self) -> StoreResult<Option<[u8; 32]>> {
        let seal: Option<Vec<u8>> = sqlx::query_scalar("SELECT seal FROM cache_seal WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        // The table's check keeps it 32 bytes; anything else is no seal.
        Ok(seal.and_then(|seal| seal.try_into().ok()))
    }
}
