//! `SqliteStore::backup`: a consistent copy of a live database file, through SQLite's online
//! backup API.
//!
//! **Why the backup API, and why it is consistent under load.** `sqlite3_backup_step` copies the
//! source's pages a few at a time; on its own it restarts whenever another process commits
//! between two steps, which under steady writes could mean never finishing. So the source
//! connection first opens a read transaction of its own and holds it to the end: in WAL mode a
//! reader sees one snapshot for as long as its transaction lasts and never blocks the writers,
//! and the backup steps inside that transaction copy that one snapshot (SQLite restarts a
//! backup only when the source pager reloads, which a held read transaction never does). The
//! copy is therefore the database exactly as it was at one commit, while the server keeps
//! writing. (`VACUUM INTO` would be consistent too, but gives nothing to measure progress or
//! stop on between pages.)
//!
//! **Nothing half-written is ever at `target`.** The pages go to `TARGET.partial`, created new
//! (mode 0600: a backup holds password hashes and token hashes); once complete it is fsynced,
//! linked to `target` (a hard link fails if `target` exists, so a file that appeared meanwhile is
//! never overwritten, as `rename` would), unlinked, and the directory fsynced. An error or an
//! interruption removes the partial file.

use rusqlite::backup::{Backup as PageCopy, StepResult};
use rusqlite::{Connection, OpenFlags};
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::lite_error;
use crate::sqlite::BUSY_TIMEOUT;
use crate::{Progress, StoreError, StoreResult, go_on};

/// Pages copied between two progress reports and interruption checks: 1 MiB at SQLite's
/// default 4 KiB page, a few milliseconds of copying.
const PAGES_PER_STEP: i32 = 256;

/// How long to wait before retrying a step that found the destination locked (it never is in
/// practice: the partial file is ours alone).
const RETRY_PAUSE: Duration = Duration::from_millis(10);

/// What a finished backup wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupSummary {
    /// The size of the copy, in bytes.
    pub bytes: u64,
}

/// The partial file beside `target` (`TARGET.partial`).
pub(in crate::sqlite) fn partial_path(target: &Path) -> PathBuf {
    let mut name: OsString = target
        .file_name()
        .map(ToOwned::to_owned)
        .unwrap_or_default();
    name.push(".partial");
    target.with_file_name(name)
}

/// Copies the database at `source` to the new file `target` (see the module docs).
pub(in crate::sqlite) fn backup(
    source: &Path,
    target: &Path,
    progress: &dyn Progress,
) -> StoreResult<BackupSummary> {
    if !source.is_file() {
        return Err(StoreError::unavailable(format!(
            "there is no database at {}",
            source.display()
        )));
    }
    if target.symlink_metadata().is_ok() {
        return Err(StoreError::Conflict(target.display().to_string()));
    }
    let partial = Partial::create(partial_path(target))?;
    let bytes = copy_pages(source, &partial.path, progress)?;
    go_on(progress)?;
    partial.publish(target)?;
    Ok(BackupSummary { bytes })
}

/// Copies every page of `source` into the empty database file `to`, inside one read
/// transaction on `source`; returns the size of the copy.
fn copy_pages(source: &Path, to: &Path, progress: &dyn Progress) -> StoreResult<u64> {
    let from = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(lite_error)?;
    from.busy_timeout(BUSY_TIMEOUT).map_err(lite_error)?;
    // The snapshot: a read transaction starts at its first read and holds until it ends.
    from.execute_batch("BEGIN DEFERRED").map_err(lite_error)?;
    from.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
        .map_err(lite_error)?;
    let page_size: i64 = from
        .query_row("PRAGMA page_size", [], |row| row.get(0))
        .map_err(lite_error)?;
    let page_size = u64::try_from(page_size).unwrap_or(0);

    let mut into = Connection::open_with_flags(
        to,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(lite_error)?;
    // The copy's last step commits it: durably, before it is published.
    into.pragma_update(None, "synchronous", "FULL")
        .map_err(lite_error)?;
    let mut copied: u64 = 0;
    {
        let pages = PageCopy::new(&from, &mut into).map_err(lite_error)?;
        let mut started = false;
        loop {
            go_on(progress)?;
            let step = pages.step(PAGES_PER_STEP).map_err(lite_error)?;
            let state = pages.progress();
            let total = u64::try_from(state.pagecount).unwrap_or(0);
            if !started {
                progress.start(total * page_size);
                started = true;
            }
            let done = total.saturating_sub(u64::try_from(state.remaining).unwrap_or(0));
            if done > copied {
                progress.advance((done - copied) * page_size);
                copied = done;
            }
            match step {
                StepResult::Done => break,
                StepResult::More => {}
                // Not expected (see RETRY_PAUSE), and harmless to wait out.
                _ => std::thread::sleep(RETRY_PAUSE),
            }
        }
    }
    drop(into);
    from.execute_batch("COMMIT").map_err(lite_error)?;
    Ok(copied * page_size)
}

/// The partial file: removed on drop unless published.
struct Partial {
    path: PathBuf,
    published: bool,
}

impl Partial {
    /// Creates the empty file (an empty file is an empty SQLite database), refusing one that
    /// is already there (another backup running, or one killed outright).
    fn create(path: PathBuf) -> StoreResult<Self> {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        match options.open(&path) {
            Ok(_) => Ok(Self {
                path,
                published: false,
            }),
            // From a backup still running, or one killed outright: the caller says which.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                Err(StoreError::Conflict(path.display().to_string()))
            }
            Err(e) => Err(io_error(&path, "create", e)),
        }
    }

    /// Makes the complete copy durable and gives it its name, never over an existing file.
    fn publish(mut self, target: &Path) -> StoreResult<()> {
        File::open(&self.path)
            .and_then(|f| f.sync_all())
            .map_err(|e| io_error(&self.path, "sync", e))?;
        match std::fs::hard_link(&self.path, target) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                return Err(StoreError::Conflict(target.display().to_string()));
            }
            Err(e) => return Err(io_error(target, "create", e)),
        }
        self.published = true;
        std::fs::remove_file(&self.path).map_err(|e| io_error(&self.path, "remove", e))?;
        let dir = match target.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error(dir, "sync", e))
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.published {
            let _ = std::fs::remove_file(&self.path);
            // A rollback journal the destination connection may have left behind.
            let mut journal = self.path.clone().into_os_string();
            journal.push("-journal");
            let _ = std::fs::remove_file(journal);
        }
    }
}

fn io_error(path: &Path, what: &str, e: std::io::Error) -> StoreError {
    StoreError::unavailable_from(format!("cannot {what} {}: {e}", path.display()), None, e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::SqliteStore;
    use crate::{Maintenance as _, Unwatched};
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Stops after `after` units.
    struct StopAfter {
        after: u64,
        done: AtomicU64,
        total: AtomicU64,
    }

    impl Progress for StopAfter {
        fn start(&self, total: u64) {
            self.total.store(total, Ordering::SeqCst);
        }
        fn advance(&self, done: u64) {
            self.done.fetch_add(done, Ordering::SeqCst);
        }
        fn stopped(&self) -> bool {
            self.done.load(Ordering::SeqCst) >= self.after
        }
    }

    async fn store_of(pages: usize) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyward.db");
        let store = SqliteStore::open(&path).await.unwrap();
        // Fill a table keyward does not read, so the file has many pages.
        sqlx::query("CREATE TABLE filler (blob BLOB)")
            .execute(&store.pool)
            .await
            .unwrap();
        for _ in 0..pages {
            sqlx::query("INSERT INTO filler VALUES (zeroblob(4000))")
                .execute(&store.pool)
                .await
                .unwrap();
        }
        store.close().await;
        (dir, path)
    }

    #[tokio::test]
    async fn a_backup_is_the_database_and_never_overwrites() {
        let (dir, source) = store_of(600).await;
        let target = dir.path().join("backup.db");
        let summary = backup(&source, &target, &Unwatched).unwrap();
        assert!(summary.bytes > 600 * 4000, "{summary:?}");
        assert_eq!(std::fs::metadata(&target).unwrap().len(), summary.bytes);
        assert!(!partial_path(&target).exists());
        let copy = SqliteStore::open(&target).await.unwrap();
        let original = SqliteStore::open(&source).await.unwrap();
        assert_eq!(copy.dump().await.unwrap(), original.dump().await.unwrap());

        let before = std::fs::read(&target).unwrap();
        let err = backup(&source, &target, &Unwatched).unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        assert_eq!(std::fs::read(&target).unwrap(), before, "left as it was");
    }

    #[tokio::test]
    async fn an_interrupted_backup_leaves_nothing() {
        let (dir, source) = store_of(600).await;
        let target = dir.path().join("backup.db");
        let stop = StopAfter {
            after: 1,
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
        };
        let err = backup(&source, &target, &stop).unwrap_err();
        assert!(matches!(err, StoreError::Interrupted), "{err:?}");
        assert!(
            stop.done.load(Ordering::SeqCst) < stop.total.load(Ordering::SeqCst),
            "stopped part way"
        );
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.starts_with("backup"))
            .collect();
        left.sort();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_missing_source_is_refused_without_creating_it() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("nothing.db");
        let err = backup(&source, &dir.path().join("b.db"), &Unwatched).unwrap_err();
        assert!(err.to_string().contains("no database"), "{err}");
        assert!(!source.exists());
        assert!(!dir.path().join("b.db").exists());
    }
}
