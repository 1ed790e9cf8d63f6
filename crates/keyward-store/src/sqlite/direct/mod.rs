//! The only place this engine talks to SQLite through rusqlite instead of sqlx.
//!
//! **The driver decision.** The SQLite engine runs on sqlx: the pool, every write but token
//! creation on a file, every read but one, migrations. Three paths go to SQLite directly through rusqlite, on the same file and the
//! same `libsqlite3-sys` that sqlx links:
//! - [`Readers`] (`reader`), the point read of a cold verification (`TokenStore::lookup`):
//!   about 7 µs against sqlx's 115 µs, which are its worker-thread hops (BENCHMARKS.md, cold
//!   verification);
//! - [`restore`] (`bulk`), writing a snapshot row by row without a thread hop per row (seeding
//!   10^6 tokens: seconds instead of minutes);
//! - [`Writer`] (`creations`), the group commit's batches of token creations, for the same
//!   reason (BENCHMARKS.md, creation under concurrency).
//!
//! Another, [`backup`] (`online`), is here because sqlx has no binding for SQLite's online
//! backup API at all.
//!
//! The three are measured wins on paths that matter (the verification hot path, creation under
//! concurrency, seeding the benchmarks), so they stay; going rusqlite throughout would mean a
//! second async story (a blocking pool of our own for every write) for no measured gain, and sqlx throughout would
//! give the wins back. The cost is a second error type, mapped here once ([`lite_error`], the
//! twin of `rows::db_error`), and a second set of bindings for the bulk writes, which use the
//! sqlx writes' own SQL constants in the same bind order. Nothing outside this module names
//! rusqlite; the rows come back through the same decoders (`crate::decode::Columns`).

use crate::StoreError;
use crate::sqlite::rows::{SQLITE_CORRUPT, SQLITE_NOTADB};

mod bulk;
mod creations;
mod online;
mod reader;

pub(super) use bulk::restore;
pub(super) use creations::Writer;
pub use online::BackupSummary;
pub(super) use online::{backup, partial_path};
pub(super) use reader::{Read, Readers};

/// Maps a rusqlite error as `rows::db_error` maps sqlx's: the error kept as the source, SQLite's
/// extended result code as the code.
fn lite_error(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(code, message) => {
            let what = message.clone().unwrap_or_else(|| code.to_string());
            let extended = Some(code.extended_code.to_string());
            if matches!(code.extended_code & 0xff, SQLITE_CORRUPT | SQLITE_NOTADB) {
                StoreError::corrupt_from(what, extended, e)
            } else {
                StoreError::unavailable_from(what, extended, e)
            }
        }
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::Utf8Error(..)
        | rusqlite::Error::InvalidColumnIndex(_)
        | rusqlite::Error::InvalidColumnName(_)
        | rusqlite::Error::InvalidColumnType(..) => {
            StoreError::corrupt_from(e.to_string(), None, e)
        }
        _ => StoreError::unavailable_from(e.to_string(), None, e),
    }
}
