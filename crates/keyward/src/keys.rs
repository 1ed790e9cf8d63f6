//! Where the server keys come from, and keeping a running server's key ring in step with them.
//!
//! The ring is `KEYWARD_SERVER_KEYS` (one key per line, the current first), else
//! `KEYWARD_SERVER_KEY` (a ring of one), else the file `DATA_DIR/server.key` (one key per line,
//! created with one new key at the first start). Only the file can change while a server runs:
//! `keyward serve` looks at it every few seconds and takes a changed ring without a restart.

use crate::config::Config;
use crate::setup::{SetupError, load_key_ring, read_key_ring};
use keyward_core::{KeyRing, ServerKey};
use keyward_server::Keyward;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How often a running server looks at its key file.
pub const RING_CHECK_EVERY: Duration = Duration::from_secs(2);

/// Where a key ring came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// An environment variable (`KEYWARD_SERVER_KEYS` or `KEYWARD_SERVER_KEY`).
    Env(&'static str),
    /// The key file.
    File(PathBuf),
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(var) => f.write_str(var),
            Self::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A ring as read, with its source.
pub struct LoadedKeys {
    /// The keys, the current first.
    pub keys: Vec<ServerKey>,
    /// Where they came from.
    pub source: KeySource,
    /// Whether the key file was created just now (there was none).
    pub created: bool,
}

impl LoadedKeys {
    /// The ring the service uses.
    pub fn ring(&self) -> KeyRing {
        match KeyRing::new(&self.keys) {
            Ok(ring) => ring,
            // Every source is read through `parse_key_ring` or holds one key, which refuse an
            // empty ring and a key twice.
            Err(e) => unreachable!("a loaded key ring is valid: {e}"),
        }
    }
}

/// Reads the ring `config` names. With `create`, a missing key file is created with one new key;
/// without, a missing file is `Ok(None)`.
pub fn load_keys(config: &Config, create: bool) -> Result<Option<LoadedKeys>, SetupError> {
    match (&config.server_keys, &config.server_key) {
        (Some(_), Some(_)) => Err(SetupError::TwoKeySources),
        (Some(ring), None) => Ok(Some(LoadedKeys {
            keys: ring.0.iter().map(copy_key).collect(),
            source: KeySource::Env("KEYWARD_SERVER_KEYS"),
            created: false,
        })),
        (None, Some(key)) => Ok(Some(LoadedKeys {
            keys: vec![copy_key(key)],
            source: KeySource::Env("KEYWARD_SERVER_KEY"),
            created: false,
        })),
        (None, None) => {
            let path = config.server_key_path();
            let existed = path.exists();
            let keys = if create {
                Some(load_key_ring(&path)?)
            } else {
                read_key_ring(&path)?
            };
            Ok(keys.map(|keys| LoadedKeys {
                keys,
                source: KeySource::File(path),
                created: !existed,
            }))
        }
    }
}

fn copy_key(key: &ServerKey) -> ServerKey {
    match ServerKey::from_hex(&key.to_hex()) {
        Ok(copy) => copy,
        Err(_) => unreachable!("a key's own hex reads back"),
    }
}

/// Keeps `keyward`'s ring in step with the key file at `path`: looks every
/// [`RING_CHECK_EVERY`] and loads a changed ring (a rotation done by `keyward key rotate`, or a
/// file copied in from another instance). A file that does not read keeps the ring in use and
/// is reported once per change. Ends when the service is dropped.
pub fn watch_key_file(keyward: &Arc<Keyward>, path: PathBuf) {
    let service = Arc::downgrade(keyward);
    tokio::spawn(async move {
        let mut seen = stamp(&path);
        let mut ticker = tokio::time::interval(RING_CHECK_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let now = stamp(&path);
            if now == seen {
                continue;
            }
            seen = now;
            if !reload(&service, &path) {
                return;
            }
        }
    });
}

/// Loads the ring at `path` into the service, if it is still there; `false` once it is gone.
fn reload(service: &Weak<Keyward>, path: &Path) -> bool {
    let Some(keyward) = service.upgrade() else {
        return false;
    };
    match read_key_ring(path) {
        Ok(Some(keys)) => match KeyRing::new(&keys) {
            Ok(ring) => {
                let same = ring.ids().eq(keyward.key_ring().ids());
                if !same {
                    keyward.set_key_ring(ring);
                }
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "the server key file changed but is not a key ring; keeping the keys in use")
            }
        },
        Ok(None) => {
            tracing::warn!(path = %path.display(), "the server key file is gone; keeping the keys in use")
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "the server key file changed but cannot be read; keeping the keys in use")
        }
    }
    true
}

/// What changes when the file is rewritten: a rename gives a new inode, an edit a new time or
/// size.
fn stamp(path: &Path) -> Option<(u64, i64, i64, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.ino(), meta.mtime(), meta.mtime_nsec(), meta.size()))
}
