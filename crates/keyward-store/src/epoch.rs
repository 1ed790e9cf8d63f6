//! The change epoch shared by every process that opens the same database: a 64-bit counter in a
//! small file beside it (`<database>-epoch`, like SQLite's own `-wal` and `-shm`), memory-mapped
//! and used as an [`AtomicU64`].
//!
//! Verification reads it on every request, so a read must cost no system call: after the mapping
//! is made, a read is one atomic load from memory that every process maps from the same page.
//! A writer advances it after its transaction commits, so a reader that sees a new value finds
//! the change in the database.
#![expect(
    unsafe_code,
    reason = "an atomic counter shared between processes needs a pointer into a shared mapping"
)]

use memmap2::{MmapOptions, MmapRaw};
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes in the epoch file: one `u64`.
const EPOCH_LEN: u64 = 8;

/// A change counter shared by every process that maps the same file.
#[derive(Debug)]
pub(crate) struct Epoch {
    map: MmapRaw,
}

impl Epoch {
    /// The epoch file that belongs to the database at `db`.
    pub(crate) fn path_for(db: &Path) -> PathBuf {
        let mut name = db.file_name().map(ToOwned::to_owned).unwrap_or_default();
        name.push("-epoch");
        db.with_file_name(name)
    }

    /// Opens (creating if missing) and maps the epoch file at `path`.
    ///
    /// Two processes may do this at once: both open with `create`, and the file is only ever
    /// lengthened to 8 bytes (a length it already has is left alone, so a counter another
    /// process has already advanced is never reset).
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let file = open_file(path)?;
        if file.metadata()?.len() < EPOCH_LEN {
            file.set_len(EPOCH_LEN)?;
        }
        let map = MmapOptions::new().len(8).map_raw(&file)?;
        // Page-aligned in practice; checked because `AtomicU64::from_ptr` requires it.
        if map.len() < 8 || !map.as_ptr().cast::<u64>().is_aligned() {
            return Err(io::Error::other(
                "the epoch mapping is not an aligned 8-byte region",
            ));
        }
        Ok(Self { map })
    }

    fn counter(&self) -> &AtomicU64 {
        // SAFETY: the mapping is at least 8 bytes, 8-aligned (both checked in `open`), writable and
        // shared, and lives as long as `self`, which bounds the returned reference. Every access,
        // in this process and in others, goes through atomic operations on this one `u64`, so
        // concurrent writes are not data races. keyward never shortens the file; only an outside
        // truncation could invalidate the mapping, and it would fault rather than read garbage.
        unsafe { AtomicU64::from_ptr(self.map.as_mut_ptr().cast::<u64>()) }
    }

    /// The current value: one memory load, no system call.
    pub(crate) fn load(&self) -> u64 {
        self.counter().load(Ordering::Acquire)
    }

    /// Advances the counter; called after a change-log write has committed.
    pub(crate) fn bump(&self) {
        self.counter().fetch_add(1, Ordering::SeqCst);
    }
}

fn open_file(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_file_sits_beside_the_database() {
        assert_eq!(
            Epoch::path_for(Path::new("/var/lib/keyward/keyward.db")),
            Path::new("/var/lib/keyward/keyward.db-epoch")
        );
        assert_eq!(Epoch::path_for(Path::new("k.db")), Path::new("k.db-epoch"));
    }

    #[test]
    fn two_mappings_of_one_file_share_the_counter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db-epoch");
        let a = Epoch::open(&path).unwrap();
        let b = Epoch::open(&path).unwrap();
        assert_eq!(a.load(), 0);
        a.bump();
        a.bump();
        assert_eq!(b.load(), 2);
        b.bump();
        assert_eq!(a.load(), 3);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 8);
    }

    #[test]
    fn reopening_keeps_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db-epoch");
        Epoch::open(&path).unwrap().bump();
        assert_eq!(Epoch::open(&path).unwrap().load(), 1);
    }

    #[test]
    fn a_short_file_is_lengthened_and_a_long_one_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, [0u8; 3]).unwrap();
        assert_eq!(Epoch::open(&short).unwrap().load(), 0);
        assert_eq!(std::fs::metadata(&short).unwrap().len(), 8);

        let long = dir.path().join("long");
        std::fs::write(&long, [0u8; 16]).unwrap();
        Epoch::open(&long).unwrap().bump();
        assert_eq!(std::fs::metadata(&long).unwrap().len(), 16);
    }

    #[cfg(unix)]
    #[test]
    fn a_new_epoch_file_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db-epoch");
        Epoch::open(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
