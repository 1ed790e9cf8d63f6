//! Users on PostgreSQL.

use async_trait::async_trait;
use keyward_core::{AuditEvent, Email, ExternalId, User, UserId, UserName};
use sqlx::postgres::PgConnection;
use time::OffsetDateTime;

use super::PgStore;
use super::audit::insert_audit;
use super::feed::{change_log_end, lock_change_log, prune_changes};
use super::rows::{self, db_error, insert_error, unix};
use crate::{NewUser, Revocation, StoreError, StoreResult, UserFilter, UserStore, UserUpdate};

pub(super) async fn insert_user_row(
    conn: &mut PgConnection,
    user: &User,
    password_hash: Option<&str>,
    deleted_at: Option<OffsetDateTime>,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO users (id, name, kind, external_id, email, is_admin, password_hash, \
         created_at, disabled_at, deleted_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(user.id.as_str())
    .bind(user.name.as_str())
    .bind(user.kind.as_str())
    .bind(user.external_id.as_ref().map(ExternalId::as_str))
    .bind(user.email.as_ref().map(Email::as_str))
    .bind(user.is_admin)
    .bind(password_hash)
    .bind(unix(user.created_at))
    .bind(user.disabled_at.map(unix))
    .bind(deleted_at.map(unix))
    .execute(conn)
    .await
    .map_err(|e| {
        let message = e.to_string();
        insert_error(e, || {
            rows::user_taken(&message, Some(&user.name), user.external_id.as_ref())
        })
    })?;
    Ok(())
}

/// Sends every hash of `owner`'s tokens to the change log (what caches know of the owner
/// changed); returns the log's end for the announcement.
async fn log_owner_hashes(
    conn: &mut PgConnection,
    owner: &UserId,
    at: OffsetDateTime,
) -> StoreResult<i64> {
    // Held until commit: appends happen one transaction at a time, in commit order.
    lock_change_log(conn).await?;
    sqlx::query(
        "INSERT INTO changes (hash, at) SELECT h.hash, $2 FROM token_hashes h \
         JOIN tokens t ON t.id = h.token_id WHERE t.owner = $1 ORDER BY h.hash",
    )
    .bind(owner.as_str())
    .bind(unix(at))
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    prune_changes(conn, at).await?;
    Ok(change_log_end(conn).await?.1)
}

async fn end_sessions(conn: &mut PgConnection, user: &UserId) -> StoreResult<()> {
    sqlx::query("DELETE FROM sessions WHERE user_id = $1")
        .bind(user.as_str())
        .execute(conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

#[async_trait]
impl UserStore for PgStore {
    async fn add_user(&self, new: &NewUser, audit: &AuditEvent) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        insert_user_row(&mut tx, &new.user, new.password_hash.as_deref(), None).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn user_by_name(&self, name: &UserName) -> StoreResult<Option<User>> {
        let row = sqlx::query("SELECT * FROM users WHERE name = $1 AND deleted_at IS NULL")
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.as_ref().map(rows::user).transpose()
    }

    async fn user_by_id(&self, id: &UserId) -> StoreResult<Option<User>> {
        let row = sqlx::query("SELECT * FROM users WHERE id = $1 AND deleted_at IS NULL")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.as_ref().map(rows::user).transpose()
    }

    async fn list_users(&self, filter: &UserFilter) -> StoreResult<Vec<User>> {
        let rows = sqlx::query(
            "SELECT * FROM users WHERE deleted_at IS NULL \
             AND ($1::text IS NULL OR external_id = $1) AND ($2::text IS NULL OR id < $2) \
             ORDER BY id DESC LIMIT $3",
        )
        .bind(filter.external_id.as_ref().map(ExternalId::as_str))
        .bind(filter.before.as_ref().map(UserId::as_str))
        .bind(i64::from(filter.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(rows::user).collect()
    }

    async fn password_hash(&self, id: &UserId) -> StoreResult<Option<String>> {
        let hash: Option<Option<String>> = sqlx::query_scalar(
            "SELECT password_hash FROM users WHERE id = $1 AND deleted_at IS NULL",
        )
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(hash.flatten())
    }

    async fn update_user(
        &self,
        id: &UserId,
        update: &UserUpdate,
        at: OffsetDateTime,
        audit: &[AuditEvent],
    ) -> StoreResult<User> {
        let mut tx = self.begin().await?;
        // A NULL parameter keeps a field; the boolean flags tell "remove" from "keep" for the
        // nullable ones.
        let row = sqlx::query(
            "UPDATE users SET \
             name = coalesce($2, name), \
             email = CASE WHEN $3 THEN $4 ELSE email END, \
             external_id = CASE WHEN $5 THEN $6 ELSE external_id END, \
             is_admin = coalesce($7, is_admin), \
             disabled_at = CASE WHEN $8::boolean IS NULL THEN disabled_at \
                 WHEN $8 THEN coalesce(disabled_at, $9) ELSE NULL END \
             WHERE id = $1 AND deleted_at IS NULL RETURNING *",
        )
        .bind(id.as_str())
        .bind(update.name.as_ref().map(UserName::as_str))
        .bind(update.email.is_some())
        .bind(
            update
                .email
                .as_ref()
                .and_then(|e| e.as_ref().map(Email::as_str)),
        )
        .bind(update.external_id.is_some())
        .bind(
            update
                .external_id
                .as_ref()
                .and_then(|e| e.as_ref().map(ExternalId::as_str)),
        )
        .bind(update.is_admin)
        .bind(update.disabled)
        .bind(unix(at))
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| {
            let message = e.to_string();
            insert_error(e, || {
                rows::user_taken(
                    &message,
                    update.name.as_ref(),
                    update.external_id.as_ref().and_then(Option::as_ref),
                )
            })
        })?;
        let user = rows::user(&row.ok_or(StoreError::NotFound)?)?;
        if update.disabled == Some(true) {
            end_sessions(&mut tx, id).await?;
        }
        let seq = log_owner_hashes(&mut tx, id, at).await?;
        for event in audit {
            insert_audit(&mut tx, event).await?;
        }
        self.commit_and_announce(tx, seq).await?;
        Ok(user)
    }

    async fn set_password(
        &self,
        id: &UserId,
        password_hash: Option<&str>,
        audit: &AuditEvent,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let updated =
            sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1 AND deleted_at IS NULL")
                .bind(id.as_str())
                .bind(password_hash)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        end_sessions(&mut tx, id).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn delete_user(
        &self,
        id: &UserId,
        revocation: &Revocation,
        audit: &AuditEvent,
    ) -> StoreResult<User> {
        let mut tx = self.begin().await?;
        // The row lock keeps a concurrent update or second delete out until we commit.
        let row =
            sqlx::query("SELECT * FROM users WHERE id = $1 AND deleted_at IS NULL FOR UPDATE")
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
        let user = rows::user(&row.ok_or(StoreError::NotFound)?)?;
        let at = unix(revocation.at);
        sqlx::query(
            "UPDATE tokens SET revoked_at = $2, revoked_by = $3, revoke_reason = $4 \
             WHERE owner = $1 AND revoked_at IS NULL",
        )
        .bind(id.as_str())
        .bind(at)
        .bind(revocation.by.as_str())
        .bind(revocation.reason.as_deref())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        end_sessions(&mut tx, id).await?;
        // No provider account signs in as them again.
        sqlx::query("DELETE FROM user_identities WHERE user_id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        sqlx::query(
            "UPDATE users SET name = $2, external_id = NULL, email = NULL, password_hash = NULL, \
             is_admin = false, disabled_at = coalesce(disabled_at, $3), deleted_at = $3 \
             WHERE id = $1",
        )
        .bind(id.as_str())
        .bind(UserName::tombstone(id).as_str())
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let seq = log_owner_hashes(&mut tx, id, revocation.at).await?;
        insert_audit(&mut tx, audit).await?;
        self.commit_and_announce(tx, seq).await?;
        Ok(user)
    }
}
