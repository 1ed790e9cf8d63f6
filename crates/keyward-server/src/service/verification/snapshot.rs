//! The verification cache kept across a restart: written to a file at a clean shutdown and
//! every `cache_snapshot_every` while the server runs (so a start after a crash finds a recent
//! one), read back at start-up instead of warming the cache from the store (which takes seconds
//! of both cores over a million tokens, BENCHMARKS.md §16; reading the file takes a fraction of
//! one).
//!
//! **Written while verifications go on.** The change cursor is noted first, with every change up
//! to it caught up with; an entry goes into the cache only if no change was caught up with while
//! it was read ([`super::cache::VerifyCache::try_with`]), so every entry the cache holds from
//! then on is coherent with the store as of that cursor, and whatever changed later is in the log
//! after it. The cache is then read a shard at a time, under that shard's read lock while its
//! entries are copied (hits go on; an insert or eviction in that shard, and the hits queued
//! behind it, wait for the copy: a 64th of the cache), and written as it is read. The memory a
//! snapshot takes is a shard's entries, plus the owners, scopes and grants the entries name (one
//! each, however many entries share it): not the cache's.
//!
//! **What is in it.** Each cached secret of a token without limits (a token's counts live in the
//! store, so those are read again at their first use), as the cache holds it: the first 16 bytes
//! of the secret's keyed hash, the token id, its owner and scopes, when it expires, when the
//! secret was issued, and whether it was revoked or replaced. No secret and no whole hash: the
//! file tells no more than the database beside it does.
//!
//! **Why it can be trusted.** Three checks, each failing closed (the file is left unread and the
//! warm-up reads the store instead):
//! - *It is keyward's own.* The file ends with an HMAC-SHA256 of all of it, under a key derived
//!   from the current server key ([`keyward_core::TokenHasher::subkey`]). A file changed or
//!   written by anyone without the key, or under a key since rotated out of first place, fails.
//! - *It belongs to this database, as it is now, and is read once.* A random seal is written to
//!   the database ([`keyward_store::ChangeFeed::seal_cache_snapshot`]) and then into the file.
//!   The database keeps only the last seal; a restore starts without one; a migration clears it
//!   (it may rewrite rows without logging them); and loading replaces it with a seal no file
//!   has, before the first entry goes in. So a file written for another database, or for this
//!   one before a restore, a migration or a later write, fails, and so does one loaded already
//!   (after a crash of the run that loaded it, the next start loads the last snapshot that run
//!   wrote, or reads the store). The file is removed once read, whatever comes of it.
//! - *Nothing changed since is missed.* The file names the change cursor its entries are
//!   coherent with, and is loaded only if the change log after that cursor is whole: every hash
//!   named there (a revocation after the file was written, before a crash or by `keyward token
//!   revoke` while the server was down, say) is left out, under the warm-up's coherence rule (see
//!   the `warm` module's docs). A log cut short (pruned after a day) loads nothing.
//!
//! **Format** (integers little-endian), in the order it is written, a shard of the cache at a
//! time: `MAGIC`, the seal (32 bytes), the cursor (i64); the entries ([`ENTRY_BYTES`] each:
//! prefix, token id, grant index u32, expiry i64, issue u32, secret state u32); the owners (u32
//! count; each id, name, external id or nothing, admin), the scopes (u32 count; each
//! space-separated), the grants (u32 count; each an owner and a scopes index, u32 each); the
//! entries' count (u64) and whether the cache was complete (u8); then the MAC (32 bytes).
//! Strings are a u16 length and UTF-8.

use hmac::{Hmac, KeyInit, Mac};
use keyward_core::{ExternalId, Scopes, UserId, UserName};
use keyward_store::StoreError;
use sha2::Sha256;
use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

use super::cache::{Kept, Owner, Tables, VerifyCache};
use super::warm::{MAX_RESYNCS, PAGE, Sync};
use crate::service::Keyward;

/// The file's first bytes: what it is, and the format's version. Nothing else ties a file to the
/// binary that reads it: bump the version with any change to what the file's bytes mean
/// ([`ENTRY_BYTES`]' layout, the numbers of a secret's state, how scopes are spelled), so that
/// a release never reads an older release's file as its own.
const MAGIC: &[u8; 16] = b"keyward cache\0v2";

/// What the file's MAC key is derived for.
const PURPOSE: &str = "verification cache snapshot";

/// Bytes before the entries: [`MAGIC`], the seal, the cursor.
const HEADER_BYTES: usize = 16 + 32 + 8;

/// Bytes after the tables: the entries' count (u64) and whether the cache was complete (u8).
const ENDING_BYTES: usize = 8 + 1;

/// Bytes of one entry.
const ENTRY_BYTES: usize = 16 + 16 + 4 + 8 + 4 + 4;

/// Bytes of the MAC at the end.
const MAC_BYTES: usize = 32;

/// Bytes a file may hold per entry the cache takes, beyond a fixed allowance: an entry, and room
/// for an owner and scopes of its own. A larger file is not read (it could not have been
/// written for this cache, and reading it would only take memory).
const MAX_BYTES_PER_ENTRY: u64 = 1024;

/// Why a snapshot was not written.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The store would not keep the seal.
    #[error("the store would not keep the snapshot's seal: {0}")]
    Store(#[from] StoreError),
    /// The file could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The snapshot's file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// No random seal could be drawn.
    #[error("no random seal: {0}")]
    Random(#[from] keyward_core::RandomError),
}

/// How a snapshot load went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Loaded {
    /// Entries it put in the cache.
    pub entries: u64,
    /// Whether the cache it was written from had been filled with every live secret of the
    /// store, and the whole file was taken in: the warm-up has nothing to add.
    pub complete: bool,
}

/// Writes the cache to `path` (see the module docs), replacing the file there. Returns the
/// entries written, or `None` when the store keeps no seal (PostgreSQL: an instance among many
/// owns no file of the store's). Verifications go on meanwhile; one snapshot is written at a
/// time. The cache is read a shard at a time and written as it is read (see the module docs).
pub(in crate::service) async fn save(
    keyward: &Keyward,
    path: &Path,
) -> Result<Option<u64>, SnapshotError> {
    let _one_at_a_time = keyward.cache.snapshot.lock().await;
    let mut seal = [0u8; 32];
    keyward_core::fill_random(&mut seal)?;
    // The seal first: from here on, only the file written below can be loaded; if writing it
    // fails, the file left from before no longer matches.
    if !keyward.store.seal_cache_snapshot(&seal).await? {
        return Ok(None);
    }
    let mut export = keyward.cache.exporter().await;
    let key = keyward.keys.load().current().subkey(PURPOSE);
    let (pieces, received) = tokio::sync::mpsc::channel(WRITE_AHEAD);
    let file = path.to_owned();
    let writer = tokio::task::spawn_blocking(move || write_file(&file, received, &key));
    let sent: Result<u64, _> = async {
        pieces
            .send(Piece::Bytes(header(&seal, export.cursor)))
            .await?;
        let mut kept = Vec::new();
        let mut entries = 0;
        while export.next_shard(&mut kept) {
            entries += kept.len() as u64;
            pieces.send(Piece::Bytes(encode_entries(&kept))).await?;
        }
        let (complete, tables) = export.finish();
        pieces
            .send(Piece::Bytes(trailer(&tables, entries, complete)))
            .await?;
        pieces.send(Piece::End).await?;
        Ok::<_, tokio::sync::mpsc::error::SendError<Piece>>(entries)
    }
    .await;
    drop(pieces);
    let written = writer
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    let source = match (written, sent) {
        (Ok(()), Ok(entries)) => return Ok(Some(entries)),
        (Err(source), _) => source,
        // The writer stops taking pieces only when it fails, and says so above.
        (Ok(()), Err(_)) => std::io::Error::other("the snapshot's writer stopped early"),
    };
    Err(SnapshotError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Loads the snapshot at `path` into the cache, if there is one it can trust (see the module
/// docs); says why not in the log otherwise. Runs beside the verifications, a page at a time.
pub(super) async fn load(keyward: &Keyward, path: &Path) -> Option<Loaded> {
    let capacity = keyward.settings.cache_capacity;
    let key = keyward.keys.load().current().subkey(PURPOSE);
    let file = path.to_owned();
    let read = tokio::task::spawn_blocking(move || read_file(&file, capacity, &key)).await;
    if !matches!(read, Ok(Ok(None))) {
        // Read once, whatever comes of it: one that is refused now never loads later either.
        if let Err(e) = tokio::fs::remove_file(path).await {
            tracing::warn!(path = %path.display(), error = %e, "could not remove the verification cache's snapshot");
        }
    }
    let bytes = match read {
        Ok(Ok(Some(bytes))) => bytes,
        Ok(Ok(None)) => return None,
        Ok(Err(why)) => {
            tracing::warn!(path = %path.display(), why, "the verification cache's snapshot was not loaded; warming from the store");
            return None;
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "the verification cache's snapshot was not loaded; warming from the store");
            return None;
        }
    };
    let loaded = match fill(keyward, &bytes).await {
        Ok(loaded) => loaded,
        Err(why) => {
            tracing::warn!(path = %path.display(), why = %why, "the verification cache's snapshot was not loaded; warming from the store");
            return None;
        }
    };
    if loaded.complete {
        keyward.cache.mark_complete();
    }
    Some(loaded)
}

/// Why a read snapshot was not put in the cache.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("{0}")]
    Bad(&'static str),
    #[error("the store could not be read: {0}")]
    Store(#[from] StoreError),
}

/// Checks the seal and the change log, then puts the entries in the cache under the warm-up's
/// coherence rule. `bytes` passed [`read_file`]'s MAC check.
async fn fill(keyward: &Keyward, bytes: &[u8]) -> Result<Loaded, Refused> {
    let store = keyward.store.as_ref();
    let cache: &VerifyCache = &keyward.cache;
    let snapshot = decode(bytes).map_err(Refused::Bad)?;
    if store.cache_snapshot_seal().await? != Some(snapshot.seal) {
        return Err(Refused::Bad(
            "it was written for another database, or for this one before a restore or a later \
             shutdown, or was loaded already",
        ));
    }
    // Used up before anything goes in: a snapshot is loaded once, never again after a crash
    // of the run that loaded it (whose next start reads the store, as after any crash).
    let mut spent = [0u8; 32];
    keyward_core::fill_random(&mut spent).map_err(|_| Refused::Bad("no random seal"))?;
    store.seal_cache_snapshot(&spent).await?;
    let grants = cache
        .import_grants(snapshot.owners, snapshot.scopes, &snapshot.grants)
        .ok_or(Refused::Bad(
            "a grant names an owner or scopes it does not hold",
        ))?;
    let mut sync = Sync {
        read_at: 0,
        since: snapshot.cursor,
        changed: HashSet::new(),
    };
    // The entries were read at a moment whose epoch is unknown: what changed since their cursor
    // is read before the first goes in.
    if !sync.again(keyward).await? {
        return Err(Refused::Bad(
            "the change log since it was written was cut short",
        ));
    }
    let mut loaded = Loaded {
        entries: 0,
        complete: snapshot.complete,
    };
    for page in snapshot.entries.chunks(ENTRY_BYTES * PAGE as usize) {
        let mut resyncs = 0;
        for entry in page.chunks_exact(ENTRY_BYTES) {
            let kept = kept(entry);
            if store.change_epoch() != sync.read_at {
                resyncs += 1;
                if resyncs > MAX_RESYNCS || !sync.again(keyward).await? {
                    tracing::warn!(
                        entries = loaded.entries,
                        "the store kept changing under the snapshot's load; stopped"
                    );
                    loaded.complete = false;
                    return Ok(loaded);
                }
            }
            if sync.changed.contains(&kept.prefix) {
                continue;
            }
            match cache.insert_kept(store, sync.read_at, &kept, &grants) {
                Some(true) => loaded.entries += 1,
                Some(false) => {}
                // No room (a smaller cache than the one written): not all of it is held.
                None => loaded.complete = false,
            }
        }
        tokio::task::yield_now().await;
    }
    Ok(loaded)
}

/// The file at `path`, if there is one, its size fits a cache of `capacity` and its MAC
/// checks out under `key`; the error says why not.
fn read_file(path: &Path, capacity: u64, key: &[u8; 32]) -> Result<Option<Vec<u8>>, &'static str> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    // Not through a link, and only a plain file (never a device or a pipe), at most the size
    // the cache could have written, whatever the file claims or becomes meanwhile.
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
    {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(_) => return Err("it cannot be opened (it must be a file, not a link)"),
        Ok(file) => file,
    };
    if !file.metadata().map_err(|_| "it cannot be read")?.is_file() {
        return Err("it is not a file");
    }
    let limit = capacity
        .saturating_mul(MAX_BYTES_PER_ENTRY)
        .saturating_add(1 << 20);
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|_| "it cannot be read")?;
    if bytes.len() as u64 > limit {
        return Err("it is larger than the cache it would fill");
    }
    let Some(body_len) = bytes.len().checked_sub(MAC_BYTES) else {
        return Err("it is too short");
    };
    let (body, tag) = bytes.split_at(body_len);
    let mut mac = mac(key);
    mac.update(body);
    mac.verify_slice(tag).map_err(
        |_| "its MAC does not match: written under another server key, or changed since",
    )?;
    bytes.truncate(body_len);
    Ok(Some(bytes))
}

/// A piece of a snapshot's body, on its way to [`write_file`].
enum Piece {
    Bytes(Zeroizing<Vec<u8>>),
    /// Every piece was sent: the file may take its place.
    End,
}

/// Pieces encoded ahead of the writer: a shard's entries each, so a few of them.
const WRITE_AHEAD: usize = 2;

/// Writes the pieces received and their MAC to `path`: to a file beside it first, synced, then
/// renamed over it, so that a crash leaves the old file or the new one, never part of one; and
/// only once [`Piece::End`] arrives (pieces that stop before it leave nothing). Readable by the
/// owner alone, as the database is. Runs on a thread that may block.
fn write_file(
    path: &Path,
    mut pieces: tokio::sync::mpsc::Receiver<Piece>,
    key: &[u8; 32],
) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    // A name of this process's own (two servers on one file write one each; the last rename
    // wins, and only its seal is the store's), made new: never a leftover, whose mode could be
    // looser, nor a link. One writer at a time in this process: a save whose future was dropped
    // leaves its writer to finish removing the file before the next one starts.
    static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = WRITING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut partial = path.as_os_str().to_owned();
    partial.push(format!(".{}.partial", std::process::id()));
    let partial = PathBuf::from(partial);
    let _ = std::fs::remove_file(&partial);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .and_then(|file| {
            let mut out = std::io::BufWriter::with_capacity(1 << 16, file);
            let mut mac = mac(key);
            loop {
                match pieces.blocking_recv() {
                    Some(Piece::Bytes(bytes)) => {
                        mac.update(&bytes);
                        out.write_all(&bytes)?;
                    }
                    Some(Piece::End) => break,
                    None => return Err(std::io::Error::other("the snapshot was cut short")),
                }
            }
            out.write_all(&mac.finalize().into_bytes())?;
            out.into_inner().map_err(|e| e.into_error())?.sync_all()
        })
        .and_then(|()| std::fs::rename(&partial, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
        return written;
    }
    // The rename itself, made durable.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn mac(key: &[u8; 32]) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    match <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    }
}

/// The body's first bytes: the format, the seal and the change cursor.
fn header(seal: &[u8; 32], cursor: i64) -> Zeroizing<Vec<u8>> {
    let mut out = Vec::with_capacity(HEADER_BYTES);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(seal);
    out.extend_from_slice(&cursor.to_le_bytes());
    Zeroizing::new(out)
}

/// Entries, [`ENTRY_BYTES`] each.
fn encode_entries(entries: &[Kept]) -> Zeroizing<Vec<u8>> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_BYTES);
    for kept in entries {
        out.extend_from_slice(&kept.prefix);
        out.extend_from_slice(&kept.id);
        put_count(&mut out, kept.grant);
        out.extend_from_slice(&kept.expires_unix.to_le_bytes());
        out.extend_from_slice(&kept.issued_unix.to_le_bytes());
        out.extend_from_slice(&kept.secret.to_le_bytes());
    }
    // No secret in them, but the buffers are wiped all the same.
    Zeroizing::new(out)
}

/// The body's last bytes, after the entries: the tables they point into, how many entries
/// there are, and whether the cache was complete.
fn trailer(tables: &Tables, entries: u64, complete: bool) -> Zeroizing<Vec<u8>> {
    let mut out = Vec::new();
    put_count(&mut out, tables.owners.len());
    for owner in &tables.owners {
        put_str(&mut out, owner.id.as_str());
        put_str(&mut out, owner.name.as_str());
        match &owner.external_id {
            Some(external) => {
                out.push(1);
                put_str(&mut out, external.as_str());
            }
            None => out.push(0),
        }
        out.push(u8::from(owner.admin));
    }
    put_count(&mut out, tables.scopes.len());
    for scopes in &tables.scopes {
        put_str(&mut out, &scopes.to_string());
    }
    put_count(&mut out, tables.grants.len());
    for &(owner, scopes) in &tables.grants {
        put_count(&mut out, owner);
        put_count(&mut out, scopes);
    }
    out.extend_from_slice(&entries.to_le_bytes());
    out.push(u8::from(complete));
    Zeroizing::new(out)
}

/// A count or an index, as u32 (a cache holds fewer than 2^32 entries per shard, and owners,
/// scopes and grants are fewer than its entries).
fn put_count(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

/// A string of at most 64 KiB (ids, names and scopes are far shorter; a longer one is cut,
/// and then fails to parse on reading, which refuses the file).
fn put_str(out: &mut Vec<u8>, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(usize::from(u16::MAX))];
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// A snapshot's body, decoded but for its entries (left as bytes, [`ENTRY_BYTES`] each).
struct Decoded<'a> {
    seal: [u8; 32],
    cursor: i64,
    complete: bool,
    owners: Vec<Owner>,
    scopes: Vec<Scopes>,
    grants: Vec<(usize, usize)>,
    entries: &'a [u8],
}

/// Reads a body [`encode`] wrote; the error says what is wrong with it.
fn decode(body: &[u8]) -> Result<Decoded<'_>, &'static str> {
    let mut r = Reader(body);
    if r.take(MAGIC.len())? != MAGIC {
        return Err("it is not a snapshot of this version");
    }
    let seal = r.array::<32>()?;
    let cursor = i64::from_le_bytes(r.array()?);
    // The entries, then the tables, then the count and the flag (written last, when known).
    let Some(tables_end) = r.0.len().checked_sub(ENDING_BYTES) else {
        return Err("it is too short");
    };
    let (rest, ending) = r.0.split_at(tables_end);
    let mut ending = Reader(ending);
    let count = u64::from_le_bytes(ending.array()?);
    let complete = ending.byte()? == 1;
    let entries_len = count
        .checked_mul(ENTRY_BYTES as u64)
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n <= rest.len())
        .ok_or("its entries do not fit in it")?;
    let (entries, tables) = rest.split_at(entries_len);
    let mut r = Reader(tables);
    let mut owners = Vec::new();
    for _ in 0..r.count()? {
        let bad = "an owner does not read back";
        let id = UserId::parse(r.str()?).map_err(|_| bad)?;
        let name = UserName::parse(r.str()?).map_err(|_| bad)?;
        let external_id = match r.byte()? {
            0 => None,
            _ => Some(ExternalId::parse(r.str()?).map_err(|_| bad)?),
        };
        let admin = r.byte()? == 1;
        owners.push(Owner {
            id,
            name,
            external_id,
            admin,
        });
    }
    let mut scopes = Vec::new();
    for _ in 0..r.count()? {
        scopes
            .push(Scopes::parse_space_separated(r.str()?).map_err(|_| "scopes do not read back")?);
    }
    let mut grants = Vec::new();
    for _ in 0..r.count()? {
        grants.push((r.count()?, r.count()?));
    }
    if !r.0.is_empty() {
        return Err("its tables do not fill it");
    }
    Ok(Decoded {
        seal,
        cursor,
        complete,
        owners,
        scopes,
        grants,
        entries,
    })
}

/// One entry: `entry` holds [`ENTRY_BYTES`] bytes (`chunks_exact` hands them).
fn kept(entry: &[u8]) -> Kept {
    fn at<const N: usize>(entry: &[u8], from: usize) -> [u8; N] {
        let mut out = [0; N];
        out.copy_from_slice(&entry[from..from + N]);
        out
    }
    Kept {
        prefix: at(entry, 0),
        id: at(entry, 16),
        grant: u32::from_le_bytes(at(entry, 32)) as usize,
        expires_unix: i64::from_le_bytes(at(entry, 36)),
        issued_unix: u32::from_le_bytes(at(entry, 44)),
        secret: u32::from_le_bytes(at(entry, 48)),
    }
}

/// Reads a body from its front.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.0.len() < n {
            return Err("it ends early");
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        self.take(N)?.try_into().map_err(|_| "it ends early")
    }

    fn byte(&mut self) -> Result<u8, &'static str> {
        Ok(self.array::<1>()?[0])
    }

    fn count(&mut self) -> Result<usize, &'static str> {
        Ok(u32::from_le_bytes(self.array()?) as usize)
    }

    fn str(&mut self) -> Result<&'a str, &'static str> {
        let len = u16::from_le_bytes(self.array()?);
        std::str::from_utf8(self.take(usize::from(len))?).map_err(|_| "a string is not UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn owner(name: &str, external: Option<&str>, admin: bool) -> Arc<Owner> {
        Arc::new(Owner {
            id: UserId::generate(time::OffsetDateTime::UNIX_EPOCH).unwrap(),
            name: UserName::parse(name).unwrap(),
            external_id: external.map(|e| ExternalId::parse(e).unwrap()),
            admin,
        })
    }

    /// What a cache would write down.
    struct Example {
        tables: Tables,
        entries: Vec<Kept>,
    }

    fn example() -> Example {
        Example {
            tables: Tables {
                owners: vec![owner("ada", None, true), owner("bob", Some("ext-7"), false)],
                scopes: vec![
                    Arc::new(Scopes::parse_space_separated("droplet:read volume:create").unwrap()),
                    Arc::new(Scopes::default()),
                ],
                grants: vec![(0, 0), (1, 1), (1, 0)],
            },
            entries: (0..5u8)
                .map(|n| Kept {
                    prefix: [n; 16],
                    id: [n + 100; 16],
                    grant: usize::from(n % 3),
                    expires_unix: i64::MAX - i64::from(n),
                    issued_unix: 1_800_000_000 + u32::from(n),
                    secret: u32::MAX - u32::from(n),
                })
                .collect(),
        }
    }

    /// The pieces [`save`] sends for `example`, its entries in two shards.
    fn pieces(example: &Example) -> Vec<Zeroizing<Vec<u8>>> {
        let (first, second) = example.entries.split_at(2);
        vec![
            header(&[9; 32], 42),
            encode_entries(first),
            encode_entries(&[]),
            encode_entries(second),
            trailer(&example.tables, example.entries.len() as u64, true),
        ]
    }

    fn body(example: &Example) -> Vec<u8> {
        pieces(example)
            .iter()
            .flat_map(|p| p.iter().copied())
            .collect()
    }

    /// Writes `example` to `path` as [`save`] does.
    fn write(path: &Path, example: &Example, key: &[u8; 32]) -> std::io::Result<()> {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        for piece in pieces(example) {
            tx.try_send(Piece::Bytes(piece)).ok().unwrap();
        }
        tx.try_send(Piece::End).ok().unwrap();
        write_file(path, rx, key)
    }

    #[test]
    fn a_body_reads_back_as_written() {
        let example = example();
        let body = body(&example);
        let decoded = decode(&body).unwrap();
        assert_eq!(decoded.seal, [9; 32]);
        assert_eq!(decoded.cursor, 42);
        assert!(decoded.complete);
        let tables = &example.tables;
        let owners: Vec<_> = tables.owners.iter().map(|o| &**o).collect();
        assert_eq!(decoded.owners.iter().collect::<Vec<_>>(), owners);
        assert_eq!(decoded.scopes[0], *tables.scopes[0]);
        assert_eq!(decoded.scopes[1], *tables.scopes[1]);
        assert_eq!(decoded.grants, tables.grants);
        let entries: Vec<_> = decoded
            .entries
            .chunks_exact(ENTRY_BYTES)
            .map(kept)
            .collect();
        assert_eq!(entries, example.entries);
    }

    #[test]
    fn a_cut_or_padded_body_is_refused_without_a_panic() {
        let body = body(&example());
        for len in 0..body.len() {
            assert!(decode(&body[..len]).is_err(), "cut at {len}");
        }
        let mut padded = body.clone();
        padded.push(0);
        assert!(decode(&padded).is_err());
        let mut other_version = body.clone();
        other_version[15] = b'1';
        assert_eq!(
            decode(&other_version).err(),
            Some("it is not a snapshot of this version")
        );
    }

    #[test]
    fn a_snapshot_cut_short_leaves_the_file_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyward.db-cache");
        let key = [3; 32];
        let cut_short = || {
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            tx.try_send(Piece::Bytes(header(&[8; 32], 7))).ok().unwrap();
            drop(tx);
            write_file(&path, rx, &key)
        };
        assert!(cut_short().is_err());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "nothing left"
        );
        let example = example();
        write(&path, &example, &key).unwrap();
        assert!(cut_short().is_err());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no partial file left"
        );
        assert_eq!(
            read_file(&path, 1_000, &key).unwrap(),
            Some(body(&example)),
            "the file before it stays whole"
        );
    }

    #[test]
    fn a_file_is_read_only_with_its_key_and_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyward.db-cache");
        let key = [3; 32];
        let example = example();
        let body = body(&example);
        write(&path, &example, &key).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no partial file left: {left:?}");
        assert_eq!(
            read_file(&path, 1_000, &key).unwrap().as_deref(),
            Some(&body[..])
        );
        assert!(read_file(&path, 1_000, &[4; 32]).is_err(), "another key");
        let mut bytes = std::fs::read(&path).unwrap();
        for at in [0, 20, bytes.len() / 2, bytes.len() - 1] {
            bytes[at] ^= 1;
            std::fs::write(&path, &bytes).unwrap();
            assert!(read_file(&path, 1_000, &key).is_err(), "byte {at} flipped");
            bytes[at] ^= 1;
        }
        std::fs::write(&path, &bytes).unwrap();
        assert!(
            read_file(&path, 0, &key).unwrap().is_some(),
            "a small file fits any cache"
        );
        assert_eq!(read_file(&dir.path().join("none"), 1_000, &key), Ok(None));
        // Never through a link, nor anything but a file, nor more than the cache could write.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(read_file(&link, 1_000, &key).is_err(), "a link");
        assert!(read_file(dir.path(), 1_000, &key).is_err(), "a directory");
        let large = dir.path().join("large");
        std::fs::write(&large, vec![0; (1 << 20) + 1025]).unwrap();
        assert_eq!(
            read_file(&large, 1, &key),
            Err("it is larger than the cache it would fill")
        );
    }
}
