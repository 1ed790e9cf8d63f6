//! This engine's error codes as [`StoreError`]s. Rows become records through the decoders
//! shared by every engine (`crate::decode`), re-exported here.

use sqlx::postgres::PgRow;
use sqlx::{Decode, Postgres, Row, Type};

use crate::{StoreError, StoreResult};

pub(super) use crate::decode::{
    audit_event, hash, hash_record, identity, lookup, old_secret, session, snapshot_user, token,
    unix, user, user_taken,
};

/// SQLSTATEs for damaged data and a damaged index (class XX, internal error).
const DATA_CORRUPTED: &str = "XX001";
const INDEX_CORRUPTED: &str = "XX002";

/// Maps an error that has no more specific meaning at the call site, keeping it as the source and
/// its SQLSTATE as the code.
pub(super) fn db_error(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) => {
            let what = db.message().to_owned();
            let code = db.code().map(|c| c.into_owned());
            if matches!(code.as_deref(), Some(DATA_CORRUPTED | INDEX_CORRUPTED)) {
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

/// A column of any decodable type (for the change-log queries).
pub(super) fn get<'r, T: Decode<'r, Postgres> + Type<Postgres>>(
    row: &'r PgRow,
    column: &str,
) -> StoreResult<T> {
    row.try_get(column)
        .map_err(|e| StoreError::corrupt_from(format!("{column}: {e}"), None, e))
}
