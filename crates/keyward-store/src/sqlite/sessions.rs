//! Web sessions, form nonces and disabling users on SQLite.

use keyward_core::{AuditEvent, TokenHash, User, UserId};
use time::OffsetDateTime;

use super::rows::{self, db_error, insert_error, unix};
use super::{SqliteStore, insert_audit, prune_changes};
use crate::{SessionRecord, StoreError, StoreResult};

pub(super) async fn create(
    store: &SqliteStore,
    session: &SessionRecord,
    stale_before: OffsetDateTime,
    audit: &AuditEvent,
) -> StoreResult<()> {
    let mut tx = store.begin_write().await?;
    sqlx::query("DELETE FROM sessions WHERE last_seen_at < ?1 OR expires_at <= ?2")
        .bind(unix(stale_before))
        .bind(unix(session.created_at))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    sqlx::query(
        "INSERT INTO sessions (id_hash, user_id, created_at, last_seen_at, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .bind(session.id_hash.0.to_vec())
    .bind(session.user.as_str())
    .bind(unix(session.created_at))
    .bind(unix(session.last_seen_at))
    .bind(unix(session.expires_at))
    .execute(&mut *tx)
    .await
    .map_err(|e| insert_error(e, || "session".to_owned()))?;
    insert_audit(&mut tx, audit).await?;
    tx.commit().await.map_err(db_error)
}

pub(super) async fn get(
    store: &SqliteStore,
    id_hash: &TokenHash,
) -> StoreResult<Option<SessionRecord>> {
    let row = sqlx::query("SELECT * FROM sessions WHERE id_hash = ?1")
        .bind(id_hash.0.to_vec())
        .fetch_optional(&store.pool)
        .await
        .map_err(db_error)?;
    row.as_ref().map(rows::session).transpose()
}

pub(super) async fn touch(
    store: &SqliteStore,
    id_hash: &TokenHash,
    at: OffsetDateTime,
) -> StoreResult<()> {
    let mut tx = store.begin_write().await?;
    sqlx::query("UPDATE sessions SET last_seen_at = max(last_seen_at, ?2) WHERE id_hash = ?1")
        .bind(id_hash.0.to_vec())
        .bind(unix(at))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    tx.commit().await.map_err(db_error)
}

pub(super) async fn delete(
    store: &SqliteStore,
    id_hash: &TokenHash,
    audit: Option<&AuditEvent>,
) -> StoreResult<()> {
    let mut tx = store.begin_write().await?;
    sqlx::query("DELETE FROM sessions WHERE id_hash = ?1")
        .bind(id_hash.0.to_vec())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    if let Some(audit) = audit {
        insert_audit(&mut tx, audit).await?;
    }
    tx.commit().await.map_err(db_error)
}

pub(super) async fn use_nonce(
    store: &SqliteStore,
    session: &TokenHash,
    nonce: &str,
    at: OffsetDateTime,
) -> StoreResult<bool> {
    let mut tx = store.begin_write().await?;
    // Only within a live session: a nonce of an ended session is never "fresh".
    let inserted = sqlx::query(
        "INSERT INTO form_nonces (session_hash, nonce, used_at) \
         SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM sessions WHERE id_hash = ?1) \
         ON CONFLICT DO NOTHING",
    )
    .bind(session.0.to_vec())
    .bind(nonce)
    .bind(unix(at))
    .execute(&mut *tx)
    .await
    .map_err(db_error)?
    .rows_affected();
    tx.commit().await.map_err(db_error)?;
    Ok(inserted == 1)
}

pub(super) async fn set_disabled(
    store: &SqliteStore,
    id: &UserId,
    disabled: bool,
    at: OffsetDateTime,
    audit: &AuditEvent,
) -> StoreResult<User> {
    let mut tx = store.begin_write().await?;
    let row = if disabled {
        sqlx::query(
            "UPDATE users SET disabled_at = coalesce(disabled_at, ?2) WHERE id = ?1 RETURNING *",
        )
        .bind(id.as_str())
        .bind(unix(at))
        .fetch_optional(&mut *tx)
        .await
    } else {
        sqlx::query("UPDATE users SET disabled_at = NULL WHERE id = ?1 RETURNING *")
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await
    }
    .map_err(db_error)?;
    let user = rows::user(&row.ok_or(StoreError::NotFound)?)?;
    if disabled {
        sqlx::query("DELETE FROM sessions WHERE user_id = ?1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
    }
    sqlx::query(
        "INSERT INTO changes (hash, at) SELECT h.hash, ?2 FROM token_hashes h \
         JOIN tokens t ON t.id = h.token_id WHERE t.owner = ?1 ORDER BY h.hash",
    )
    .bind(id.as_str())
    .bind(unix(at))
    .execute(&mut *tx)
    .await
    .map_err(db_error)?;
    prune_changes(&mut tx, at).await?;
    insert_audit(&mut tx, audit).await?;
    store.commit_and_announce(tx).await?;
    Ok(user)
}
