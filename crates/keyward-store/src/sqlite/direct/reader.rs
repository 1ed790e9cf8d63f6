//! The cold-verification read, on read-only connections of its own, run on the calling thread.
//!
//! sqlx runs each SQLite connection on a worker thread of its own and hands every statement and
//! its rows across channels; for a point read that SQLite answers in a few microseconds from its
//! page cache, those thread hops and the pool's bookkeeping made a lookup cost about 115 µs. A
//! cache miss in verification waits on exactly that read, so it goes to SQLite directly through
//! rusqlite, on the same file, and decodes through the same [`Columns`] decoders: about 7 µs,
//! HMAC included (`cargo bench -p keyward-server --bench verify`, cold verification).
//!
//! It runs on the calling task, blocking the executor for that long: the query is one
//! primary-key probe of `token_hashes` and two primary-key joins, and in WAL mode a reader never
//! waits for the writer or for a checkpoint. Handing it to `spawn_blocking` instead measured
//! twice the median and four times the 99th percentile, the hop costing more than the read. The
//! one wait left is SQLite's rare one for a WAL index that another connection is rebuilding after
//! a crash, bounded by the busy timeout.
//!
//! Freshness: each statement runs in its own read transaction, which starts from the last commit
//! in the WAL, so a lookup sees every commit acknowledged before it started. Statements are reset
//! after each use, so an idle connection holds no snapshot (which would also hold back
//! checkpoints).
//!
//! Never a long block: these connections wait at most [`BUSY_ON_TASK`] for a lock (a WAL index
//! being rebuilt, another program holding the file exclusively, a file system where WAL is not
//! in effect). Past that the lookup answers [`Read::Busy`] and the store asks again through
//! sqlx, whose wait happens on its own thread, so the executor's workers stay free.

use keyward_core::TokenHash;
use rusqlite::{Connection, OpenFlags, OptionalExtension as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::lite_error;
use crate::decode::Columns;
use crate::sqlite::rows;
use crate::sqlite::tokens::LOOKUP;
use crate::{Lookup, StoreError, StoreResult};

/// Idle connections kept for reuse. Each lookup holds one only while it runs, without awaiting,
/// so no more are ever open at once than threads calling `lookup` at once.
const MAX_IDLE: usize = 8;

/// Longest wait for a lock on the calling thread (see the module docs).
const BUSY_ON_TASK: Duration = Duration::from_millis(50);

/// What a read on the calling thread gave.
pub(in crate::sqlite) enum Read<T = Option<Lookup>> {
    /// The answer.
    Done(T),
    /// The database stayed locked for [`BUSY_ON_TASK`]: ask through sqlx.
    Busy,
}

/// Read-only connections to the database file, taken by a lookup and given back after it.
#[derive(Debug)]
pub(in crate::sqlite) struct Readers {
    path: PathBuf,
    idle: Mutex<Idle>,
}

#[derive(Debug, Default)]
struct Idle {
    connections: Vec<Connection>,
    closed: bool,
}

impl Readers {
    /// Readers for the database at `path`, or `None` when `path` names no ordinary file that a
    /// second connection could open (`:memory:`, a temporary database, a URI): such a store reads
    /// through sqlx.
    pub(in crate::sqlite) fn for_file(path: &Path) -> StoreResult<Option<Self>> {
        let name = path.as_os_str();
        let uri = name.to_str().is_some_and(|name| name.starts_with("file:"));
        if name.is_empty() || name == ":memory:" || uri {
            return Ok(None);
        }
        // Absolute, so a later change of working directory cannot point a new reader elsewhere.
        let path = std::fs::canonicalize(path).map_err(|e| {
            StoreError::unavailable_from(format!("cannot open {}: {e}", path.display()), None, e)
        })?;
        Ok(Some(Self {
            path,
            idle: Mutex::new(Idle::default()),
        }))
    }

    /// The database file (absolute).
    pub(in crate::sqlite) fn path(&self) -> &Path {
        &self.path
    }

    /// The token, owner and validity of the secret with this hash, as `TokenStore::lookup` returns.
    pub(in crate::sqlite) fn lookup(&self, hash: &TokenHash) -> StoreResult<Read> {
        let connection = self.take()?;
        let found = connection.prepare_cached(LOOKUP).and_then(|mut statement| {
            statement
                .query_row([&hash.0[..]], |row| {
                    let names = row.as_ref().column_names();
                    Ok(rows::lookup(&LiteRow { row, names: &names }))
                })
                .optional()
        });
        let found = match found {
            Ok(found) => found.transpose()?,
            Err(e) if is_busy(&e) => {
                self.give_back(connection);
                return Ok(Read::Busy);
            }
            // A connection that failed is dropped with its error.
            Err(e) => return Err(lite_error(e)),
        };
        self.give_back(connection);
        Ok(Read::Done(found))
    }

    /// The rows of `sql`, a statement selecting a secret's `hash` and what [`LOOKUP`] selects,
    /// with `params`: a page of `TokenStore::secrets_by_recent_use`. Meant for a blocking
    /// thread (a page is milliseconds of reading).
    pub(in crate::sqlite) fn secrets(
        &self,
        sql: &str,
        params: &[rusqlite::types::Value],
    ) -> StoreResult<Read<Vec<(TokenHash, Lookup)>>> {
        let connection = self.take()?;
        let found = connection.prepare_cached(sql).and_then(|mut statement| {
            // Named once for the page, not for each row.
            let names: Vec<String> = statement
                .column_names()
                .into_iter()
                .map(str::to_owned)
                .collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            statement
                .query_map(rusqlite::params_from_iter(params), |row| {
                    let row = LiteRow { row, names: &names };
                    Ok(rows::hash(&row, "hash").and_then(|hash| Ok((hash, rows::lookup(&row)?))))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
        });
        let found = match found {
            Ok(found) => found.into_iter().collect::<StoreResult<Vec<_>>>()?,
            Err(e) if is_busy(&e) => {
                self.give_back(connection);
                return Ok(Read::Busy);
            }
            Err(e) => return Err(lite_error(e)),
        };
        self.give_back(connection);
        Ok(Read::Done(found))
    }

    /// Closes every idle connection and refuses further lookups, so that the writer's connection
    /// is the last one and can checkpoint the WAL when it closes. A lookup running now is not
    /// waited for: its connection is closed, not given back, when it ends.
    pub(in crate::sqlite) fn close(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.closed = true;
        idle.connections.clear();
    }

    fn take(&self) -> StoreResult<Connection> {
        {
            // The lock guards only a push or a pop, so a poisoned one still holds a sound list.
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.closed {
                return Err(StoreError::unavailable("the store is closed".to_owned()));
            }
            if let Some(connection) = idle.connections.pop() {
                return Ok(connection);
            }
        }
        self.open().map_err(lite_error)
    }

    fn give_back(&self, connection: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if !idle.closed && idle.connections.len() < MAX_IDLE {
            idle.connections.push(connection);
        }
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        // No mutex inside SQLite: a connection is used by one thread at a time (`Connection` is
        // `Send`, not `Sync`). WAL mode is a property of the file, set by the writer.
        let connection = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        connection.busy_timeout(BUSY_ON_TASK)?;
        Ok(connection)
    }
}

/// Whether SQLite gave up waiting for a lock.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// A rusqlite row, read by column name like the sqlx rows, with its statement's column names
/// (`names`, in column order) found once: rusqlite's own lookup by name asks SQLite for every
/// column's name on every read (a quarter of a warm-up page's time, by perf).
struct LiteRow<'r, 'n> {
    row: &'r rusqlite::Row<'r>,
    names: &'n [&'n str],
}

impl LiteRow<'_, '_> {
    fn get<T: rusqlite::types::FromSql>(&self, column: &str) -> StoreResult<T> {
        let Some(index) = self.names.iter().position(|name| *name == column) else {
            return Err(StoreError::corrupt(format!("{column}: no such column")));
        };
        self.row
            .get(index)
            .map_err(|e| StoreError::corrupt_from(format!("{column}: {e}"), None, e))
    }
}

impl Columns for LiteRow<'_, '_> {
    fn text(&self, column: &str) -> StoreResult<String> {
        self.get(column)
    }

    fn opt_text(&self, column: &str) -> StoreResult<Option<String>> {
        self.get(column)
    }

    fn int(&self, column: &str) -> StoreResult<i64> {
        self.get(column)
    }

    fn opt_int(&self, column: &str) -> StoreResult<Option<i64>> {
        self.get(column)
    }

    fn flag(&self, column: &str) -> StoreResult<bool> {
        self.get(column)
    }

    fn bytes(&self, column: &str) -> StoreResult<Vec<u8>> {
        self.get(column)
    }
}
