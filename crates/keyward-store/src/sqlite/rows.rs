//! This engine's error codes as [`StoreError`]s. Rows become records through the decoders
//! shared by every engine (`crate::decode`), re-exported here.

use crate::StoreError;

pub(super) use crate::decode::{
    audit_event, hash, hash_record, identity, lookup, old_secret, session, snapshot_user, token,
    unix, user, user_taken,
};

/// SQLite's primary result codes: a lock is held, the file is damaged, the file is not a
/// database.
const SQLITE_BUSY: i32 = 5;
pub(super) const SQLITE_CORRUPT: i32 = 11;
pub(super) const SQLITE_NOTADB: i32 = 26;

/// Whether another connection held a lock that SQLite would not wait for.
pub(super) fn is_busy(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => primary_code(db.as_ref()) == Some(SQLITE_BUSY),
        _ => false,
    }
}

fn primary_code(db: &dyn sqlx::error::DatabaseError) -> Option<i32> {
    // sqlx reports SQLite's extended result code; its low byte is the primary code.
    db.code()
        .and_then(|c| c.parse::<i32>().ok())
        .map(|c| c & 0xff)
}

/// Maps an error that has no more specific meaning at the call site, keeping it as the source and
/// SQLite's extended result code as the code.
pub(super) fn db_error(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) => {
            let what = db.message().to_owned();
            let code = db.code().map(|c| c.into_owned());
            if matches!(
                primary_code(db.as_ref()),
                Some(SQLITE_CORRUPT | SQLITE_NOTADB)
            ) {
                StoreError::corrupt_from(what, code, e)
            } else {
                StoreError::unavailable_from(what, code, e)
            }
        }
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. } => StoreError::corrupt_from(e.to_string(), None, e),
        _ => StoreError::unavailable_from(e.to_string(), None, e),
    }
}

/// Maps a failed insert: a unique violation means `what` already exists, a foreign-key violation
/// that a row it refers to does not.
pub(super) fn insert_error(e: sqlx::Error, what: impl FnOnce() -> String) -> StoreError {
    crate::decode::insert_error(e, what, db_error)
}
