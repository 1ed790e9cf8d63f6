//! `keyward key ...`: the server key ring. Prints key ids, never a key (except `generate`, whose
//! whole point is a new key for a ring kept outside the data dir).

use super::print;
use anyhow::Context as _;
use keyward::keyward_core::{AuditKind, ServerKey};
use keyward::keyward_server::service::keys::{KeyRole, KeyUsage};
use keyward::{
    Caller, Config, KeySource, Keyward, LoadedKeys, load_keys, lock_data_dir, prepare_data_dir,
    read_key_ring, write_key_ring,
};
use std::path::Path;
use std::process::ExitCode;

/// `keyward key show`: the current key's id first, then where the keys come from, then the
/// older keys. Creates nothing.
pub(super) fn show(config: &Config) -> anyhow::Result<ExitCode> {
    let Some(loaded) = load_keys(config, false)? else {
        anyhow::bail!(
            "no server key yet: neither KEYWARD_SERVER_KEYS, KEYWARD_SERVER_KEY nor {} (keyward creates the file at its first start)",
            config.server_key_path().display()
        );
    };
    let mut text = format!("{} from {}\n", loaded.keys[0].id(), loaded.source);
    if loaded.keys.len() > 1 {
        text.push_str(&format!(
            "older keys, still verifying: {}\n",
            ids(&loaded.keys[1..])
        ));
    }
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// `keyward key generate`: a new random key, in hexadecimal, alone on stdout.
pub(super) fn generate() -> anyhow::Result<ExitCode> {
    let key = ServerKey::generate()?;
    print(&format!("{}\n", key.to_hex().as_str()))?;
    Ok(ExitCode::SUCCESS)
}

/// `keyward key status`: active tokens per key.
pub(super) async fn status(config: &Config) -> anyhow::Result<ExitCode> {
    let (keyward, loaded) = open(config).await?;
    let usage = keyward.key_usage().await?;
    let mut text = format!("keys from {}\n", loaded.source);
    for KeyUsage {
        key_id,
        tokens,
        role,
    } in &usage
    {
        text.push_str(&format!(
            "{key_id}  {:<7}  {tokens} active token{}\n",
            role.as_str(),
            if *tokens == 1 { "" } else { "s" }
        ));
    }
    print(&text)?;
    let missing = usage.iter().any(|u| u.role == KeyRole::Missing);
    Ok(if missing {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `keyward key rotate [--to ID]`: a new current key, or an older one promoted.
pub(super) async fn rotate(config: &Config, to: Option<&str>) -> anyhow::Result<ExitCode> {
    let (keyward, loaded) = open(config).await?;
    let path = file_source(&loaded)?;
    let _lock = lock_data_dir(&config.data_dir)?;
    let mut keys = reread(&path)?;
    let previous = keys[0].id().clone();
    match to {
        None => keys.insert(0, ServerKey::generate()?),
        Some(id) => {
            let at = position(&keys, id, &path)?;
            if at == 0 {
                anyhow::bail!("{id} is already the current key");
            }
            let key = keys.remove(at);
            keys.insert(0, key);
        }
    }
    write_key_ring(&path, &keys)?;
    let current = keys[0].id().clone();
    keyward
        .record_key_change(
            &caller(),
            AuditKind::ServerKeyRotated,
            format!("current key {current}; previously {previous}"),
        )
        .await
        .context("the ring was rotated, but the audit trail could not record it")?;
    print(&format!(
        "{current} is now the current key; tokens under {} still verify, and each moves to {current} when it is next used.\n\
         A running keyward serve takes the new ring within seconds. With several instances, every instance must hold this ring (see `keyward key status`).\n",
        ids(&keys[1..]),
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// `keyward key add`: a new key at the end of the ring.
pub(super) async fn add(config: &Config) -> anyhow::Result<ExitCode> {
    let (_keyward, loaded) = open(config).await?;
    let path = file_source(&loaded)?;
    let _lock = lock_data_dir(&config.data_dir)?;
    let mut keys = reread(&path)?;
    let key = ServerKey::generate()?;
    let id = key.id().clone();
    keys.push(key);
    write_key_ring(&path, &keys)?;
    print(&format!(
        "{id} added to the ring; it verifies nothing yet and {} stays current.\n\
         Give every instance this ring ({}), then run `keyward key rotate --to {id}` and give them the ring again.\n",
        keys[0].id(),
        path.display(),
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// `keyward key retire ID`: an older key out of the ring, once no active token uses it.
pub(super) async fn retire(config: &Config, id: &str) -> anyhow::Result<ExitCode> {
    let (keyward, loaded) = open(config).await?;
    let path = file_source(&loaded)?;
    let _lock = lock_data_dir(&config.data_dir)?;
    let mut keys = reread(&path)?;
    let at = position(&keys, id, &path)?;
    if at == 0 {
        anyhow::bail!(
            "{id} is the current key; rotate to a new one first (`keyward key rotate`), then retire {id} once its tokens have moved"
        );
    }
    let key_id = keys[at].id().clone();
    let in_use = keyward
        .key_usage()
        .await?
        .into_iter()
        .find(|u| u.key_id == key_id)
        .map_or(0, |u| u.tokens);
    if in_use > 0 {
        anyhow::bail!(
            "{key_id} still verifies {in_use} active token{}: each moves to the current key when it is next used (watch `keyward key status`); \
             retiring the key now would make them unknown. Nothing was changed",
            if in_use == 1 { "" } else { "s" }
        );
    }
    keys.remove(at);
    write_key_ring(&path, &keys)?;
    // What reuse detection could still recognise under the key goes with it.
    let dropped = keyward
        .drop_replaced_secrets_under(&caller(), &key_id)
        .await
        .context("the key was retired, but the replaced secrets under it could not be dropped")?;
    keyward
        .record_key_change(
            &caller(),
            AuditKind::ServerKeyRetired,
            format!(
                "key {key_id} retired; current key {}; {dropped} replaced secret{} under it dropped",
                keys[0].id(),
                if dropped == 1 { "" } else { "s" }
            ),
        )
        .await
        .context("the key was retired, but the audit trail could not record it")?;
    print(&format!(
        "{key_id} retired; the ring is now {}\n",
        ids(&keys)
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// The service over the configured store with the configured ring, whatever keys the store's
/// tokens use.
async fn open(config: &Config) -> anyhow::Result<(Keyward, LoadedKeys)> {
    prepare_data_dir(&config.data_dir)?;
    let loaded = load_keys(config, true)?.context("no server key")?;
    let keyward = keyward::build(config, loaded.ring()).await?;
    Ok((keyward, loaded))
}

/// The key file, or why a ring from the environment cannot be changed here.
fn file_source(loaded: &LoadedKeys) -> anyhow::Result<std::path::PathBuf> {
    match &loaded.source {
        KeySource::File(path) => Ok(path.clone()),
        KeySource::Env(var) => anyhow::bail!(
            "the server keys come from {var}, which keyward cannot change: put a new key (`keyward key generate`) \
             first in KEYWARD_SERVER_KEYS, keeping the others after it, and restart each instance; remove a key \
             from it once `keyward key status` shows no active token under it"
        ),
    }
}

/// The ring as it is now, under the lock (another change may have come first).
fn reread(path: &Path) -> anyhow::Result<Vec<ServerKey>> {
    read_key_ring(path)?.with_context(|| format!("the server key file {} is gone", path.display()))
}

fn position(keys: &[ServerKey], id: &str, path: &Path) -> anyhow::Result<usize> {
    keys.iter()
        .position(|k| k.id().as_str() == id)
        .with_context(|| {
            format!(
                "no key {id} in the ring ({}: {})",
                path.display(),
                ids(keys)
            )
        })
}

fn ids(keys: &[ServerKey]) -> String {
    keys.iter()
        .map(|k| k.id().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn caller() -> Caller {
    Caller::operator(&keyward::os_user())
}
