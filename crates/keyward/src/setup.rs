//! The data dir and the server key file: created on first start, checked on every start.
//!
//! The server key is the one secret that makes stored hashes useless to a thief, so its file is
//! created owner-only (0600) inside an owner-only dir (0700), and a key file that others can
//! read is refused rather than used.
//!
//! The file is a key ring: one key per line in hexadecimal, the current key first (a file of one
//! line, as every keyward before rotation wrote, is a ring of one). `keyward key rotate` and
//! `keyward key retire` rewrite it whole, atomically, under a lock on the data dir.

use keyward_core::{ServerKey, format_key_ring, parse_key_ring};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The data dir or the server key cannot be used; the message says which file and why.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A file or directory operation failed (the OS error is the `source`).
    #[error("{what} {}", path.display())]
    Io {
        /// What was being done, e.g. `cannot create the data dir`.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The key file is readable or writable by group or others.
    #[error("the server key file {} is accessible by group or others (mode {mode:04o}); run `chmod 600 {}`", path.display(), path.display())]
    KeyFileExposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file does not hold a key.
    #[error("the server key file {} does not hold a key: {reason}", path.display())]
    BadKeyFile {
        /// The key file.
        path: PathBuf,
        /// Why (never the content).
        reason: String,
    },
    /// The store holds active tokens hashed under a server key this server does not have.
    #[error("{0}")]
    KeyMissing(String),
    /// Both `KEYWARD_SERVER_KEYS` and `KEYWARD_SERVER_KEY` are set.
    #[error(
        "both KEYWARD_SERVER_KEYS and KEYWARD_SERVER_KEY are set; set only one (KEYWARD_SERVER_KEYS holds the whole ring)"
    )]
    TwoKeySources,
    /// The OS random number generator failed.
    #[error(transparent)]
    Random(#[from] keyward_core::RandomError),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SetupError + 'a {
    move |source| SetupError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Creates the data dir, owner-only, if it does not exist (an existing dir is left as it is).
pub fn prepare_data_dir(dir: &Path) -> Result<(), SetupError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io("cannot create the data dir", dir))
}

/// Reads the key ring from `path`, creating the file (mode 0600) with one new random key if it
/// does not exist yet. Two processes starting at once agree on one key: the file appears
/// complete or not at all.
pub fn load_key_ring(path: &Path) -> Result<Vec<ServerKey>, SetupError> {
    match read_key_file(path) {
        Err(SetupError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {
            create_key_file(path)
        }
        other => other,
    }
}

/// Reads the key ring from `path` without creating one (`Ok(None)` when there is no file).
pub fn read_key_ring(path: &Path) -> Result<Option<Vec<ServerKey>>, SetupError> {
    match read_key_file(path) {
        Ok(keys) => Ok(Some(keys)),
        Err(SetupError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces the key ring at `path` with `keys` (the first current): written aside (mode 0600),
/// synced, renamed over the file, and the directory synced, so a crash leaves the old ring or
/// the new one, never a mix. The caller holds [`lock_data_dir`].
pub fn write_key_ring(path: &Path, keys: &[ServerKey]) -> Result<(), SetupError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let aside = aside_path(path)?;
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&aside)?;
        file.write_all(format_key_ring(keys).as_bytes())?;
        file.sync_all()?;
        fs::rename(&aside, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&aside);
    }
    written.map_err(io("cannot write the server key file", path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("cannot sync the data dir", dir))
}

/// An exclusive lock on the data dir, held while the returned file lives: key ring changes
/// (`keyward key rotate`, `retire`) happen one at a time.
pub fn lock_data_dir(dir: &Path) -> Result<File, SetupError> {
    let file = File::open(dir).map_err(io("cannot open the data dir", dir))?;
    file.lock().map_err(io("cannot lock the data dir", dir))?;
    Ok(file)
}

/// A fresh name beside `path` for a file that becomes `path` once complete. Unique per attempt,
/// not just per process: threads of one process may race too.
fn aside_path(path: &Path) -> Result<PathBuf, SetupError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map_or_else(|| "server.key".into(), |n| n.to_string_lossy().into_owned());
    let mut nonce = [0u8; 8];
    keyward_core::fill_random(&mut nonce)?;
    Ok(dir.join(format!(
        ".{file_name}.{:016x}.new",
        u64::from_le_bytes(nonce)
    )))
}

fn read_key_file(path: &Path) -> Result<Vec<ServerKey>, SetupError> {
    let file = File::open(path).map_err(io("cannot open the server key file", path))?;
    let meta = file
        .metadata()
        .map_err(io("cannot read the server key file", path))?;
    if !meta.is_file() {
        return Err(SetupError::BadKeyFile {
            path: path.to_owned(),
            reason: "not a regular file".to_owned(),
        });
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SetupError::KeyFileExposed {
            path: path.to_owned(),
            mode,
        });
    }
    let text = zeroize::Zeroizing::new(
        fs::read_to_string(path).map_err(io("cannot read the server key file", path))?,
    );
    parse_key_ring(&text).map_err(|e| SetupError::BadKeyFile {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

fn create_key_file(path: &Path) -> Result<Vec<ServerKey>, SetupError> {
    let key = ServerKey::generate()?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let aside = aside_path(path)?;
    let result = write_aside_and_link(&key, &aside, path);
    // The aside copy is only a step; whatever happened, it must not linger.
    let _ = fs::remove_file(&aside);
    match result {
        Ok(()) => {
            // The link is durable only once the directory entry is.
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io("cannot sync the data dir", dir))?;
            tracing::info!(key_id = key.id().as_str(), path = %path.display(), "created a new server key");
            Ok(vec![key])
        }
        // Another process won the race: its key is the key.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => read_key_file(path),
        Err(e) => Err(SetupError::Io {
            what: "cannot create the server key file",
            path: path.to_owned(),
            source: e,
        }),
    }
}

fn write_aside_and_link(key: &ServerKey, aside: &Path, path: &Path) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(aside)?;
    file.write_all(key.to_hex().as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    // Unlike a rename, a hard link never replaces an existing file.
    fs::hard_link(aside, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_key_is_created_once_owner_only_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        prepare_data_dir(&data).unwrap();
        assert_eq!(fs::metadata(&data).unwrap().mode() & 0o777, 0o700);
        let path = data.join("server.key");
        let first = load_key_ring(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let again = load_key_ring(&path).unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].to_hex(), again[0].to_hex());
        let leftovers: Vec<_> = fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["server.key"]);
    }

    #[test]
    fn concurrent_first_starts_agree_on_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.key");
        let keys: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| load_key_ring(&path).unwrap()[0].to_hex().to_string()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(keys.iter().all(|k| k == &keys[0]));
    }

    #[test]
    fn an_exposed_or_broken_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.key");
        let key = load_key_ring(&path).unwrap().remove(0);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let message = load_key_ring(&path).err().unwrap().to_string();
        assert!(
            message.contains("mode 0644") && message.contains("chmod 600"),
            "{message}"
        );
        assert!(!message.contains(key.to_hex().as_str()));

        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, "not hex at all").unwrap();
        let message = load_key_ring(&path).err().unwrap().to_string();
        assert!(
            message.contains("does not hold a key") && !message.contains("not hex"),
            "{message}"
        );
    }

    #[test]
    fn a_ring_is_replaced_whole_and_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.key");
        let first = load_key_ring(&path).unwrap().remove(0);
        let _lock = lock_data_dir(dir.path()).unwrap();
        let newer = ServerKey::generate().unwrap();
        let (newer_id, first_id) = (newer.id().clone(), first.id().clone());
        write_key_ring(&path, &[newer, first]).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let ring = read_key_ring(&path).unwrap().unwrap();
        let ids: Vec<_> = ring.iter().map(|k| k.id().clone()).collect();
        assert_eq!(ids, [newer_id, first_id]);
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["server.key"]);
    }
}
