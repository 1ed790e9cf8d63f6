//! Reading rows back into keyward's types, and turning sqlx errors into [`StoreError`]s.
//!
//! A value that does not decode or parse was not written by keyward, so it is
//! [`StoreError::Corrupt`], never a panic.

use keyward_core::{
    Actor, AuditEvent, AuditKind, KeyId, Scopes, TokenHash, TokenId, TokenName, TokenRecord, User,
    UserId, UserName,
};
use sqlx::error::ErrorKind;
use sqlx::postgres::PgRow;
use sqlx::{Decode, Postgres, Row, Type};
use std::fmt::Display;
use std::net::IpAddr;
use time::OffsetDateTime;

use crate::{HashRecord, SnapshotUser, StoreError, StoreResult, StoredAuditEvent, StoredHash};

/// SQLSTATEs for damaged data and a damaged index (class XX, internal error).
const DATA_CORRUPTED: &str = "XX001";
const INDEX_CORRUPTED: &str = "XX002";

/// Maps an error that has no more specific meaning at the call site.
pub(super) fn db_error(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Database(db) => {
            if matches!(db.code().as_deref(), Some(DATA_CORRUPTED | INDEX_CORRUPTED)) {
                StoreError::Corrupt(db.message().to_owned())
            } else {
                StoreError::Unavailable(db.message().to_owned())
            }
        }
        e @ (sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. }) => StoreError::Corrupt(e.to_string()),
        e => StoreError::Unavailable(e.to_string()),
    }
}

/// Maps a failed insert: a unique violation means `what` already exists, a foreign-key violation
/// that a row it refers to (a token's owner) does not.
pub(super) fn insert_error(e: sqlx::Error, what: impl FnOnce() -> String) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.kind() == ErrorKind::UniqueViolation => {
            StoreError::Conflict(what())
        }
        sqlx::Error::Database(db) if db.kind() == ErrorKind::ForeignKeyViolation => {
            StoreError::NotFound
        }
        _ => db_error(e),
    }
}

/// Unix seconds, as stored.
pub(super) fn unix(at: OffsetDateTime) -> i64 {
    at.unix_timestamp()
}

pub(super) fn get<'r, T: Decode<'r, Postgres> + Type<Postgres>>(
    row: &'r PgRow,
    column: &str,
) -> StoreResult<T> {
    row.try_get(column)
        .map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

fn parse<T, E: Display>(
    row: &PgRow,
    column: &str,
    f: impl FnOnce(&str) -> Result<T, E>,
) -> StoreResult<T> {
    let text: String = get(row, column)?;
    f(&text).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

fn parse_opt<T, E: Display>(
    row: &PgRow,
    column: &str,
    f: impl FnOnce(&str) -> Result<T, E>,
) -> StoreResult<Option<T>> {
    let text: Option<String> = get(row, column)?;
    text.map(|t| f(&t).map_err(|e| StoreError::Corrupt(format!("{column}: {e}"))))
        .transpose()
}

fn to_time(column: &str, secs: i64) -> StoreResult<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(secs)
        .map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

fn time(row: &PgRow, column: &str) -> StoreResult<OffsetDateTime> {
    to_time(column, get(row, column)?)
}

pub(super) fn opt_time(row: &PgRow, column: &str) -> StoreResult<Option<OffsetDateTime>> {
    get::<Option<i64>>(row, column)?
        .map(|secs| to_time(column, secs))
        .transpose()
}

/// A `users` row.
pub(super) fn user(row: &PgRow) -> StoreResult<User> {
    Ok(User {
        id: parse(row, "id", UserId::parse)?,
        name: parse(row, "name", UserName::parse)?,
        is_admin: get(row, "is_admin")?,
        created_at: time(row, "created_at")?,
        disabled_at: opt_time(row, "disabled_at")?,
    })
}

/// A `tokens` row.
pub(super) fn token(row: &PgRow) -> StoreResult<TokenRecord> {
    Ok(TokenRecord {
        id: parse(row, "id", TokenId::parse)?,
        owner: parse(row, "owner", UserId::parse)?,
        name: parse(row, "name", TokenName::parse)?,
        scopes: parse(row, "scopes", Scopes::parse_space_separated)?,
        hint: get(row, "hint")?,
        created_at: time(row, "created_at")?,
        expires_at: opt_time(row, "expires_at")?,
        regenerated_at: opt_time(row, "regenerated_at")?,
        last_used_at: opt_time(row, "last_used_at")?,
        last_used_ip: parse_opt(row, "last_used_ip", str::parse::<IpAddr>)?,
        revoked_at: opt_time(row, "revoked_at")?,
        revoked_by: get(row, "revoked_by")?,
        revoke_reason: get(row, "revoke_reason")?,
    })
}

/// The owner columns of a lookup: name and whether disabled.
pub(super) fn owner_of_lookup(row: &PgRow) -> StoreResult<(UserName, bool)> {
    let name = parse(row, "owner_name", UserName::parse)?;
    let disabled = opt_time(row, "owner_disabled_at")?.is_some();
    Ok((name, disabled))
}

/// A stored 32-byte hash.
pub(super) fn hash(row: &PgRow, column: &str) -> StoreResult<TokenHash> {
    let bytes: Vec<u8> = get(row, column)?;
    TokenHash::from_slice(&bytes)
        .ok_or_else(|| StoreError::Corrupt(format!("{column}: not 32 bytes")))
}

/// An `audit_events` row.
pub(super) fn audit_event(row: &PgRow) -> StoreResult<StoredAuditEvent> {
    Ok(StoredAuditEvent {
        seq: get(row, "seq")?,
        event: AuditEvent {
            at: time(row, "at")?,
            kind: parse(row, "kind", |s| {
                AuditKind::parse(s).ok_or("unknown audit kind")
            })?,
            actor: Actor {
                user: parse_opt(row, "actor_user", UserId::parse)?,
                token: parse_opt(row, "actor_token", TokenId::parse)?,
                label: get(row, "actor_label")?,
            },
            subject_user: parse_opt(row, "subject_user", UserId::parse)?,
            token_id: parse_opt(row, "token_id", TokenId::parse)?,
            ip: parse_opt(row, "ip", str::parse::<IpAddr>)?,
            detail: get(row, "detail")?,
        },
    })
}

/// A `users` row with its password hash.
pub(super) fn snapshot_user(row: &PgRow) -> StoreResult<SnapshotUser> {
    Ok(SnapshotUser {
        user: user(row)?,
        password_hash: get(row, "password_hash")?,
    })
}

/// A `token_hashes` row.
pub(super) fn hash_record(row: &PgRow) -> StoreResult<HashRecord> {
    Ok(HashRecord {
        token_id: parse(row, "token_id", TokenId::parse)?,
        hash: StoredHash {
            hash: hash(row, "hash")?,
            key_id: KeyId::from_stored(get(row, "key_id")?),
        },
        created_at: time(row, "created_at")?,
        valid_until: opt_time(row, "valid_until")?,
    })
}
