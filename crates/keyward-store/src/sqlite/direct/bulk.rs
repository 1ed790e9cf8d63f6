//! `Maintenance::restore` on a database file, written through rusqlite on a blocking thread.
//!
//! sqlx hands every statement to its connection's worker thread and waits for the answer, about
//! 100 µs a row; seeding 10^6 tokens (a token row and a hash row each, and their users) took
//! over five minutes that way. Here one connection of our own binds prepared statements row
//! after row in one `BEGIN IMMEDIATE` transaction, the way `reader` reads, so the
//! cost is SQLite's own.
//!
//! The statements and the emptiness check are the sqlx writes' own constants (`tokens`, `users`,
//! `identities`, `audit`, `feed`, `backup`), bound in the same order as those writes (`insert_user_row` and the
//! others).

use keyward_core::{AuditEvent, Email, ExternalId, TokenId, TokenRecord, UserId};
use rusqlite::{Connection, OpenFlags, Statement, TransactionBehavior, params};
use std::path::Path;

use super::lite_error;
use crate::decode::LimitColumns;
use crate::sqlite::BUSY_TIMEOUT;
use crate::sqlite::audit::INSERT_AUDIT;
use crate::sqlite::backup::OCCUPIED;
use crate::sqlite::feed::{RESET_DROP, RESET_MARK, RESET_PRUNE};
use crate::sqlite::identities::INSERT_IDENTITY;
use crate::sqlite::rows::unix;
use crate::sqlite::tokens::{INSERT_HASH, INSERT_TOKEN};
use crate::sqlite::users::INSERT_USER;
use crate::{HashRecord, Progress, Snapshot, StoreError, StoreResult, go_on};

/// Page cache of the restoring connection, in KiB (SQLite's default is 2 MiB), taken only as
/// pages are used. Secret hashes (and a seeded snapshot's ids) are random keys, so inserts land
/// on arbitrary pages of the indexes; once those outgrow the cache, each insert spills a page to
/// the WAL and reads another back. Seeding 10^6 tokens (`seed` in bench/tools): 47 s with the
/// default, 39 s with 64 MiB, 28 s with 256 MiB, no better with 1 GiB.
const RESTORE_CACHE_KIB: i64 = 256 * 1024;

/// Writes `snapshot` into the empty database at `path` in one transaction, or nothing: every
/// error (an interruption by `progress` too) returns before the commit, and dropping the
/// transaction rolls it back.
pub(in crate::sqlite) fn restore(
    path: &Path,
    snapshot: &Snapshot,
    progress: &dyn Progress,
) -> StoreResult<()> {
    let mut connection = open(path).map_err(lite_error)?;
    // The write lock is held from the emptiness check to the commit.
    let tx = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(lite_error)?;
    let occupied: bool = tx
        .query_row(OCCUPIED, [], |row| row.get(0))
        .map_err(lite_error)?;
    if occupied {
        return Err(StoreError::InvalidState("the target store is not empty"));
    }

    insert_users(&tx, snapshot, progress)?;
    insert_tokens(&tx, snapshot, progress)?;
    insert_hashes(&tx, snapshot, progress)?;
    insert_audit(&tx, snapshot, progress)?;
    insert_identities(&tx, snapshot, progress)?;
    // Every cache on this database starts over (the caller bumps the epoch after the commit).
    go_on(progress)?;
    tx.execute(RESET_MARK, params![0_i64]).map_err(lite_error)?;
    tx.execute(RESET_PRUNE, []).map_err(lite_error)?;
    tx.execute(RESET_DROP, []).map_err(lite_error)?;
    tx.commit().map_err(lite_error)
}

fn insert_users(tx: &Connection, snapshot: &Snapshot, progress: &dyn Progress) -> StoreResult<()> {
    let mut insert = tx.prepare_cached(INSERT_USER).map_err(lite_error)?;
    for entry in &snapshot.users {
        go_on(progress)?;
        let user = &entry.user;
        insert
            .execute(params![
                user.id.as_str(),
                user.name.as_str(),
                user.kind.as_str(),
                user.external_id.as_ref().map(ExternalId::as_str),
                user.email.as_ref().map(Email::as_str),
                user.is_admin,
                entry.password_hash.as_deref(),
                unix(user.created_at),
                user.disabled_at.map(unix),
                entry.deleted_at.map(unix),
            ])
            .map_err(|e| {
                let message = e.to_string();
                insert_error(e, || {
                    crate::decode::user_taken(&message, Some(&user.name), user.external_id.as_ref())
                })
            })?;
        progress.advance(1);
    }
    Ok(())
}

fn insert_tokens(tx: &Connection, snapshot: &Snapshot, progress: &dyn Progress) -> StoreResult<()> {
    let mut insert = tx.prepare_cached(INSERT_TOKEN).map_err(lite_error)?;
    for token in &snapshot.tokens {
        go_on(progress)?;
        insert_token_row(&mut insert, token)?;
        progress.advance(1);
    }
    Ok(())
}

/// Runs [`INSERT_TOKEN`], prepared as `insert`, for `token`.
pub(super) fn insert_token_row(insert: &mut Statement<'_>, token: &TokenRecord) -> StoreResult<()> {
    let limits = LimitColumns::of(token);
    insert
        .execute(params![
            token.id.as_str(),
            token.owner.as_str(),
            token.name.as_str(),
            token.scopes.to_string(),
            token.hint.as_str(),
            unix(token.created_at),
            token.expires_at.map(unix),
            token.regenerated_at.map(unix),
            token.last_used_at.map(unix),
            token.last_used_ip.map(|ip| ip.to_string()),
            token.revoked_at.map(unix),
            token.revoked_by.as_deref(),
            token.revoke_reason.as_deref(),
            limits.allowed_ips,
            limits.max_uses,
            limits.remaining,
            limits.refill_amount,
            limits.refill_every,
            limits.refilled_at,
            limits.rate_requests,
            limits.rate_per,
        ])
        .map_err(|e| insert_error(e, || format!("token {}", token.id)))?;
    Ok(())
}

fn insert_hashes(tx: &Connection, snapshot: &Snapshot, progress: &dyn Progress) -> StoreResult<()> {
    let mut insert = tx.prepare_cached(INSERT_HASH).map_err(lite_error)?;
    for hash in &snapshot.hashes {
        go_on(progress)?;
        insert_hash_row(&mut insert, hash)?;
        progress.advance(1);
    }
    Ok(())
}

/// Runs [`INSERT_HASH`], prepared as `insert`, for `hash`.
pub(super) fn insert_hash_row(insert: &mut Statement<'_>, hash: &HashRecord) -> StoreResult<()> {
    insert
        .execute(params![
            &hash.hash.hash.0[..],
            hash.token_id.as_str(),
            hash.hash.key_id.as_str(),
            unix(hash.created_at),
            hash.valid_until.map(unix),
        ])
        .map_err(|e| insert_error(e, || "token hash".to_owned()))?;
    Ok(())
}

fn insert_audit(tx: &Connection, snapshot: &Snapshot, progress: &dyn Progress) -> StoreResult<()> {
    let mut insert = tx.prepare_cached(INSERT_AUDIT).map_err(lite_error)?;
    for stored in &snapshot.audit {
        go_on(progress)?;
        insert_audit_row(&mut insert, &stored.event, Some(stored.seq))?;
        progress.advance(1);
    }
    Ok(())
}

/// Runs [`INSERT_AUDIT`], prepared as `insert`, for `event`, at sequence number `seq` when
/// given (a restore), else at the next.
pub(super) fn insert_audit_row(
    insert: &mut Statement<'_>,
    event: &AuditEvent,
    seq: Option<i64>,
) -> StoreResult<()> {
    insert
        .execute(params![
            unix(event.at),
            event.kind.as_str(),
            event.actor.user.as_ref().map(UserId::as_str),
            event.actor.token.as_ref().map(TokenId::as_str),
            event.actor.label.as_str(),
            event.subject_user.as_ref().map(UserId::as_str),
            event.token_id.as_ref().map(TokenId::as_str),
            event.ip.map(|ip| ip.to_string()),
            event.detail.as_deref(),
            seq,
        ])
        .map_err(|e| insert_error(e, || "audit event".to_owned()))?;
    Ok(())
}

fn insert_identities(
    tx: &Connection,
    snapshot: &Snapshot,
    progress: &dyn Progress,
) -> StoreResult<()> {
    let mut insert = tx.prepare_cached(INSERT_IDENTITY).map_err(lite_error)?;
    for identity in &snapshot.identities {
        go_on(progress)?;
        insert
            .execute(params![
                identity.issuer.as_str(),
                identity.subject.as_str(),
                identity.user.as_str(),
                unix(identity.created_at),
            ])
            .map_err(|e| insert_error(e, || format!("the identity {}", identity.subject)))?;
        progress.advance(1);
    }
    Ok(())
}

/// The restore's connection: [`open_writer`]'s with a larger page cache.
fn open(path: &Path) -> rusqlite::Result<Connection> {
    let connection = open_writer(path)?;
    connection.pragma_update(None, "cache_size", -RESTORE_CACHE_KIB)?;
    Ok(connection)
}

/// A read-write connection with the settings of the store's sqlx connections (SQLite's default
/// page cache). WAL is a property of the file, already set when the store opened it.
pub(super) fn open_writer(path: &Path) -> rusqlite::Result<Connection> {
    // No mutex inside SQLite: the connection is used by one thread at a time.
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection.busy_timeout(BUSY_TIMEOUT)?;
    connection.pragma_update(None, "foreign_keys", true)?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    Ok(connection)
}

/// Maps a failed insert as `rows::insert_error` maps sqlx's: a unique violation means `what`
/// already exists, a foreign-key violation that a row it refers to does not.
pub(super) fn insert_error(e: rusqlite::Error, what: impl FnOnce() -> String) -> StoreError {
    use rusqlite::ffi;
    match e.sqlite_error().map(|e| e.extended_code) {
        Some(ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY) => {
            StoreError::Conflict(what())
        }
        Some(ffi::SQLITE_CONSTRAINT_FOREIGNKEY) => StoreError::NotFound,
        _ => lite_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::SqliteStore;
    use crate::{IdentityRecord, Maintenance as _, SnapshotUser, StoredAuditEvent};
    use keyward_core::{
        Actor, AuditEvent, AuditKind, Scopes, TokenName, TokenRecord, User, UserKind, UserName,
    };
    use time::OffsetDateTime;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);

    fn snapshot() -> Snapshot {
        let user = User::new(
            UserId::generate(T0).unwrap(),
            UserName::parse("alice").unwrap(),
            UserKind::Person,
            T0,
        );
        let token = TokenRecord {
            id: TokenId::generate(T0).unwrap(),
            owner: user.id.clone(),
            name: TokenName::parse("ci").unwrap(),
            scopes: Scopes::parse(&["droplet:read"]).unwrap(),
            hint: "abcd".to_owned(),
            created_at: T0,
            expires_at: None,
            regenerated_at: None,
            last_used_at: None,
            last_used_ip: None,
            revoked_at: None,
            revoked_by: None,
            revoke_reason: None,
            limits: keyward_core::Limits::default(),
            remaining: None,
            refilled_at: None,
        };
        let event = AuditEvent {
            at: T0,
            kind: AuditKind::UserAdded,
            actor: Actor::cli("root"),
            subject_user: Some(user.id.clone()),
            token_id: None,
            ip: None,
            detail: None,
        };
        let identity = IdentityRecord {
            issuer: "https://accounts.example.com".to_owned(),
            subject: "248289761001".to_owned(),
            user: user.id.clone(),
            created_at: T0,
        };
        Snapshot {
            users: vec![SnapshotUser {
                user,
                password_hash: None,
                deleted_at: None,
            }],
            tokens: vec![token],
            hashes: Vec::new(),
            audit: vec![StoredAuditEvent { seq: 7, event }],
            identities: vec![identity],
        }
    }

    #[tokio::test]
    async fn a_failed_restore_writes_nothing_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("keyward.db"))
            .await
            .unwrap();
        assert!(store.readers.is_some(), "a file goes through `bulk`");

        // The last row fails, after the others were written in the transaction.
        let mut orphan = snapshot();
        orphan.tokens[0].owner = UserId::generate(T0).unwrap();
        let err = store.restore(&orphan).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound), "{err:?}");
        assert_eq!(store.dump().await.unwrap(), Snapshot::default());

        let mut twice = snapshot();
        twice.users.push(twice.users[0].clone());
        let err = store.restore(&twice).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Conflict(what) if what == "user alice"),
            "{err:?}"
        );
        assert_eq!(store.dump().await.unwrap(), Snapshot::default());

        // And the store is still writable: the failures left no lock or transaction behind.
        let whole = snapshot();
        store.restore(&whole).await.unwrap();
        assert_eq!(store.dump().await.unwrap(), whole);
    }
}
