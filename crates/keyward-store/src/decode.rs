//! Rows back into keyward's types, written once for every engine.
//!
//! Each engine's row type reaches these decoders through [`Columns`], implemented for any sqlx row
//! whose database decodes the six column types keyward stores (text, integer, boolean, bytes and
//! their nullable forms), and for the rusqlite rows of SQLite's direct point reads
//! (`sqlite::direct`). A value that does not decode or parse was not written by keyward, so it
//! is [`StoreError::Corrupt`], never a panic. Error mapping stays with each engine: its codes
//! differ.

use keyward_core::{
    Actor, AuditEvent, AuditKind, Email, ExternalId, IpRange, KeyId, Limits, RateLimit, Refill,
    Scopes, TokenHash, TokenId, TokenName, TokenRecord, User, UserId, UserKind, UserName,
};
use sqlx::error::ErrorKind;
use sqlx::{ColumnIndex, Decode, Row, Type};
use std::fmt::Display;
use std::net::IpAddr;
use time::OffsetDateTime;

use crate::{
    HashRecord, IdentityRecord, Lookup, SessionRecord, SnapshotUser, StoreError, StoreResult,
    StoredAuditEvent, StoredHash,
};

/// Named column reads, as the decoders need them.
pub(crate) trait Columns {
    /// A text column.
    fn text(&self, column: &str) -> StoreResult<String>;
    /// A nullable text column.
    fn opt_text(&self, column: &str) -> StoreResult<Option<String>>;
    /// An integer column.
    fn int(&self, column: &str) -> StoreResult<i64>;
    /// A nullable integer column.
    fn opt_int(&self, column: &str) -> StoreResult<Option<i64>>;
    /// A boolean column (SQLite stores 0/1; sqlx decodes it).
    fn flag(&self, column: &str) -> StoreResult<bool>;
    /// A bytes column.
    fn bytes(&self, column: &str) -> StoreResult<Vec<u8>>;
}

fn get<'r, R, T>(row: &'r R, column: &str) -> StoreResult<T>
where
    R: Row,
    T: Decode<'r, R::Database> + Type<R::Database>,
    for<'c> &'c str: ColumnIndex<R>,
{
    row.try_get(column)
        .map_err(|e| StoreError::corrupt_from(format!("{column}: {e}"), None, e))
}

impl<R> Columns for R
where
    R: Row,
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    fn text(&self, column: &str) -> StoreResult<String> {
        get(self, column)
    }

    fn opt_text(&self, column: &str) -> StoreResult<Option<String>> {
        get(self, column)
    }

    fn int(&self, column: &str) -> StoreResult<i64> {
        get(self, column)
    }

    fn opt_int(&self, column: &str) -> StoreResult<Option<i64>> {
        get(self, column)
    }

    fn flag(&self, column: &str) -> StoreResult<bool> {
        get(self, column)
    }

    fn bytes(&self, column: &str) -> StoreResult<Vec<u8>> {
        get(self, column)
    }
}

/// Maps a failed insert: a unique violation means `what` already exists, a foreign-key violation
/// that a row it refers to (a token's owner) does not; anything else as the engine maps it.
pub(crate) fn insert_error(
    e: sqlx::Error,
    what: impl FnOnce() -> String,
    otherwise: impl FnOnce(sqlx::Error) -> StoreError,
) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.kind() == ErrorKind::UniqueViolation => {
            StoreError::Conflict(what())
        }
        sqlx::Error::Database(db) if db.kind() == ErrorKind::ForeignKeyViolation => {
            StoreError::NotFound
        }
        _ => otherwise(e),
    }
}

/// What a unique violation on `users` took, from the engine's message (both name the column or
/// its index): the external id, or else the name; each shown when the write gave it.
pub(crate) fn user_taken(
    message: &str,
    name: Option<&UserName>,
    external_id: Option<&ExternalId>,
) -> String {
    if message.contains("external_id") {
        external_id.map_or_else(
            || "a user with that external id".to_owned(),
            |id| format!("a user with external id {:?}", id.as_str()),
        )
    } else {
        name.map_or_else(
            || "a user with that name".to_owned(),
            |name| format!("user {name}"),
        )
    }
}

/// Unix seconds, as stored.
pub(crate) fn unix(at: OffsetDateTime) -> i64 {
    at.unix_timestamp()
}

fn parse<T, E: Display>(
    row: &impl Columns,
    column: &str,
    f: impl FnOnce(&str) -> Result<T, E>,
) -> StoreResult<T> {
    let text = row.text(column)?;
    f(&text).map_err(|e| StoreError::corrupt(format!("{column}: {e}")))
}

fn parse_opt<T, E: Display>(
    row: &impl Columns,
    column: &str,
    f: impl FnOnce(&str) -> Result<T, E>,
) -> StoreResult<Option<T>> {
    row.opt_text(column)?
        .map(|t| f(&t).map_err(|e| StoreError::corrupt(format!("{column}: {e}"))))
        .transpose()
}

fn to_time(column: &str, secs: i64) -> StoreResult<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(secs)
        .map_err(|e| StoreError::corrupt(format!("{column}: {e}")))
}

/// A non-null time column.
pub(crate) fn time(row: &impl Columns, column: &str) -> StoreResult<OffsetDateTime> {
    to_time(column, row.int(column)?)
}

/// A nullable time column.
pub(crate) fn opt_time(row: &impl Columns, column: &str) -> StoreResult<Option<OffsetDateTime>> {
    row.opt_int(column)?
        .map(|secs| to_time(column, secs))
        .transpose()
}

/// A `users` row.
pub(crate) fn user(row: &impl Columns) -> StoreResult<User> {
    Ok(User {
        id: parse(row, "id", UserId::parse)?,
        name: parse(row, "name", UserName::parse)?,
        kind: parse(row, "kind", |s| {
            UserKind::parse(s).ok_or("unknown user kind")
        })?,
        external_id: parse_opt(row, "external_id", ExternalId::parse)?,
        email: parse_opt(row, "email", Email::parse)?,
        is_admin: row.flag("is_admin")?,
        created_at: time(row, "created_at")?,
        disabled_at: opt_time(row, "disabled_at")?,
    })
}

/// A row of `TokenStore::old_secrets_until`: `token_id` and `until`.
pub(crate) fn old_secret(row: &impl Columns) -> StoreResult<(TokenId, OffsetDateTime)> {
    Ok((parse(row, "token_id", TokenId::parse)?, time(row, "until")?))
}

/// A `tokens` row.
pub(crate) fn token(row: &impl Columns) -> StoreResult<TokenRecord> {
    Ok(TokenRecord {
        id: parse(row, "id", TokenId::parse)?,
        owner: parse(row, "owner", UserId::parse)?,
        name: parse(row, "name", TokenName::from_stored)?,
        scopes: parse(row, "scopes", Scopes::parse_space_separated)?,
        hint: row.text("hint")?,
        created_at: time(row, "created_at")?,
        expires_at: opt_time(row, "expires_at")?,
        regenerated_at: opt_time(row, "regenerated_at")?,
        last_used_at: opt_time(row, "last_used_at")?,
        last_used_ip: parse_opt(row, "last_used_ip", str::parse::<IpAddr>)?,
        revoked_at: opt_time(row, "revoked_at")?,
        revoked_by: row.opt_text("revoked_by")?,
        revoke_reason: row.opt_text("revoke_reason")?,
        limits: limits(row)?,
        remaining: count(row, "remaining")?,
        refilled_at: opt_time(row, "refilled_at")?,
    })
}

/// A nullable count column (never negative when keyward wrote it).
fn count(row: &impl Columns, column: &str) -> StoreResult<Option<u64>> {
    row.opt_int(column)?
        .map(|n| u64::try_from(n).map_err(|_| StoreError::corrupt(format!("{column}: negative"))))
        .transpose()
}

/// The limit columns of a `tokens` row.
fn limits(row: &impl Columns) -> StoreResult<Limits> {
    let corrupt = |what: &str| StoreError::corrupt(format!("limits: {what}"));
    let allowed_ips = match row.opt_text("allowed_ips")? {
        None => Vec::new(),
        Some(text) => text
            .split_whitespace()
            .map(IpRange::parse)
            .collect::<Result<_, _>>()
            .map_err(|_| corrupt("allowed_ips"))?,
    };
    let refill = match (count(row, "refill_amount")?, count(row, "refill_every")?) {
        (Some(amount), Some(every_secs)) => Some(Refill { amount, every_secs }),
        (None, None) => None,
        _ => return Err(corrupt("refill")),
    };
    let rate_limit = match (count(row, "rate_requests")?, count(row, "rate_per")?) {
        (Some(requests), Some(per)) => Some(RateLimit {
            requests: u32::try_from(requests).map_err(|_| corrupt("rate_requests"))?,
            per_secs: u32::try_from(per)
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| corrupt("rate_per"))?,
        }),
        (None, None) => None,
        _ => return Err(corrupt("rate limit")),
    };
    Ok(Limits {
        allowed_ips,
        max_uses: count(row, "max_uses")?,
        refill,
        rate_limit,
    })
}

/// A token's limit columns as bound in a write, in the order of the `tokens` columns
/// `allowed_ips, max_uses, remaining, refill_amount, refill_every, refilled_at, rate_requests,
/// rate_per`.
pub(crate) struct LimitColumns {
    pub allowed_ips: Option<String>,
    pub max_uses: Option<i64>,
    pub remaining: Option<i64>,
    pub refill_amount: Option<i64>,
    pub refill_every: Option<i64>,
    pub refilled_at: Option<i64>,
    pub rate_requests: Option<i64>,
    pub rate_per: Option<i64>,
}

impl LimitColumns {
    /// The columns of `token`'s limits and use count.
    pub(crate) fn of(token: &TokenRecord) -> Self {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let l = &token.limits;
        Self {
            allowed_ips: (!l.allowed_ips.is_empty()).then(|| {
                l.allowed_ips
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            }),
            max_uses: l.max_uses.map(n),
            remaining: token.remaining.map(n),
            refill_amount: l.refill.map(|r| n(r.amount)),
            refill_every: l.refill.map(|r| n(r.every_secs)),
            refilled_at: token.refilled_at.map(|t| t.unix_timestamp()),
            rate_requests: l.rate_limit.map(|r| i64::from(r.requests)),
            rate_per: l.rate_limit.map(|r| i64::from(r.per_secs)),
        }
    }
}

/// A lookup row: a `tokens` row with the owner's `owner_name`, `owner_external_id`,
/// `owner_admin` and `owner_disabled_at` and the
/// secret's `secret_valid_until` and `secret_created_at`.
pub(crate) fn lookup(row: &impl Columns) -> StoreResult<Lookup> {
    Ok(Lookup {
        token: token(row)?,
        owner_name: parse(row, "owner_name", UserName::parse)?,
        owner_external_id: parse_opt(row, "owner_external_id", ExternalId::parse)?,
        owner_admin: row.flag("owner_admin")?,
        owner_disabled: opt_time(row, "owner_disabled_at")?.is_some(),
        secret_valid_until: opt_time(row, "secret_valid_until")?,
        secret_created_at: time(row, "secret_created_at")?,
        limits_version: row.int("limits_version")?,
    })
}

/// A stored 32-byte hash.
pub(crate) fn hash(row: &impl Columns, column: &str) -> StoreResult<TokenHash> {
    TokenHash::from_slice(&row.bytes(column)?)
        .ok_or_else(|| StoreError::corrupt(format!("{column}: not 32 bytes")))
}

/// An `audit_events` row. A kind written by a newer release (during a rolling upgrade) reads as
/// [`AuditKind::Unrecognized`], with the stored kind at the start of the detail: the trail stays
/// readable by every release that shares the database.
pub(crate) fn audit_event(row: &impl Columns) -> StoreResult<StoredAuditEvent> {
    let stored_kind = row.text("kind")?;
    let (kind, detail) = match AuditKind::parse(&stored_kind) {
        Some(kind) => (kind, row.opt_text("detail")?),
        None => (
            AuditKind::Unrecognized,
            Some(match row.opt_text("detail")? {
                Some(detail) => format!("{stored_kind}: {detail}"),
                None => stored_kind,
            }),
        ),
    };
    Ok(StoredAuditEvent {
        seq: row.int("seq")?,
        event: AuditEvent {
            at: time(row, "at")?,
            kind,
            actor: Actor {
                user: parse_opt(row, "actor_user", UserId::parse)?,
                token: parse_opt(row, "actor_token", TokenId::parse)?,
                label: row.text("actor_label")?,
            },
            subject_user: parse_opt(row, "subject_user", UserId::parse)?,
            token_id: parse_opt(row, "token_id", TokenId::parse)?,
            ip: parse_opt(row, "ip", str::parse::<IpAddr>)?,
            detail,
        },
    })
}

/// A `users` row with its password hash.
pub(crate) fn snapshot_user(row: &impl Columns) -> StoreResult<SnapshotUser> {
    Ok(SnapshotUser {
        user: user(row)?,
        password_hash: row.opt_text("password_hash")?,
        deleted_at: opt_time(row, "deleted_at")?,
    })
}

/// A `token_hashes` row.
pub(crate) fn hash_record(row: &impl Columns) -> StoreResult<HashRecord> {
    Ok(HashRecord {
        token_id: parse(row, "token_id", TokenId::parse)?,
        hash: StoredHash {
            hash: hash(row, "hash")?,
            key_id: KeyId::from_stored(row.text("key_id")?),
        },
        created_at: time(row, "created_at")?,
        valid_until: opt_time(row, "valid_until")?,
    })
}

/// A `sessions` row.
pub(crate) fn session(row: &impl Columns) -> StoreResult<SessionRecord> {
    Ok(SessionRecord {
        id_hash: hash(row, "id_hash")?,
        user: parse(row, "user_id", UserId::parse)?,
        created_at: time(row, "created_at")?,
        last_seen_at: time(row, "last_seen_at")?,
        expires_at: time(row, "expires_at")?,
        signed_in_with: row.opt_text("signed_in_with")?,
    })
}

/// A `user_identities` row.
pub(crate) fn identity(row: &impl Columns) -> StoreResult<IdentityRecord> {
    Ok(IdentityRecord {
        issuer: row.text("issuer")?,
        subject: row.text("subject")?,
        user: parse(row, "user_id", UserId::parse)?,
        created_at: time(row, "created_at")?,
    })
}
