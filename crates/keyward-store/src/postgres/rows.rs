//! This engine's error codes as [`StoreError`]s. Rows become records through the decoders
//! shared by every engine (`crate::decode`), re-exported here.

use sqlx::postgres::PgRow;
use sqlx::{Decode, Postgres, Row, Type};

use crate::{StoreError, StoreResult};

pub(super) use crate::decode::{
    audit_event, hash, hash_record, lookup, session, snapshot_user, token, unix, user,
};

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
/// that a row it refers to does not.
pub(super) fn insert_error(e: sqlx::Error, what: impl FnOnce() -> String) -> StoreError {
    crate::decode::insert_error(e, what, db_error)
}

/// A column of any decodable type (for the change-log queries).
pub(super) fn get<'r, T: Decode<'r, Postgres> + Type<Postgres>>(
    row: &'r PgRow,
    column: &str,
) -> StoreResult<T> {
    row.try_get(column)
        .map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}
