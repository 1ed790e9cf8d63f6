//! Users on SQLite.

use async_trait::async_trait;
use keyward_core::{AuditEvent, User, UserId, UserName};
use sqlx::sqlite::SqliteConnection;
use time::OffsetDateTime;

use super::SqliteStore;
use super::audit::insert_audit;
use super::feed::prune_changes;
use super::rows::{self, db_error, insert_error, unix};
use crate::{NewUser, StoreError, StoreResult, UserStore};

/// A user row (shared with `direct::bulk`).
pub(super) const INSERT_USER: &str = "INSERT INTO users (id, name, is_admin, password_hash, created_at, \
     disabled_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

pub(super) async fn insert_user_row(
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

#[async_trait]
impl UserStore for SqliteStore {
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

    async fn set_user_disabled(
        &self,
        id: &UserId,
        disabled: bool,
        at: OffsetDateTime,
        audit: &AuditEvent,
    ) -> StoreResult<User> {
        let mut tx = self.begin_write().await?;
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
        self.commit_and_announce(tx).await?;
        Ok(user)
    }
}
