//! Links to OpenID providers' accounts on SQLite.

use async_trait::async_trait;
use keyward_core::{AuditEvent, User, UserId};
use sqlx::sqlite::SqliteConnection;

use super::SqliteStore;
use super::audit::insert_audit;
use super::rows::{self, db_error, insert_error, unix};
use super::users::insert_user_row;
use crate::{IdentityRecord, IdentityStore, NewUser, StoreError, StoreResult};

/// An identity row (shared with `direct::bulk`).
pub(super) const INSERT_IDENTITY: &str =
    "INSERT INTO user_identities (issuer, subject, user_id, created_at) VALUES (?1, ?2, ?3, ?4)";

pub(super) async fn insert_identity_row(
    conn: &mut SqliteConnection,
    identity: &IdentityRecord,
) -> StoreResult<()> {
    sqlx::query(INSERT_IDENTITY)
        .bind(&identity.issuer)
        .bind(&identity.subject)
        .bind(identity.user.as_str())
        .bind(unix(identity.created_at))
        .execute(conn)
        .await
        .map_err(|e| insert_error(e, || format!("the identity {}", identity.subject)))?;
    Ok(())
}

#[async_trait]
impl IdentityStore for SqliteStore {
    async fn user_by_identity(&self, issuer: &str, subject: &str) -> StoreResult<Option<User>> {
        let row = sqlx::query(
            "SELECT u.* FROM users u JOIN user_identities i ON i.user_id = u.id \
             WHERE u.deleted_at IS NULL AND i.issuer = ?1 AND i.subject = ?2",
        )
        .bind(issuer)
        .bind(subject)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.as_ref().map(rows::user).transpose()
    }

    async fn add_user_with_identity(
        &self,
        new: &NewUser,
        identity: &IdentityRecord,
        audit: &AuditEvent,
    ) -> StoreResult<()> {
        if identity.user != new.user.id {
            return Err(StoreError::InvalidState(
                "the identity is not the new user's",
            ));
        }
        let mut tx = self.begin_write().await?;
        insert_user_row(&mut tx, &new.user, new.password_hash.as_deref(), None).await?;
        insert_identity_row(&mut tx, identity).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn identities(&self, user: &UserId) -> StoreResult<Vec<IdentityRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM user_identities WHERE user_id = ?1 ORDER BY issuer, subject",
        )
        .bind(user.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(rows::identity).collect()
    }
}
