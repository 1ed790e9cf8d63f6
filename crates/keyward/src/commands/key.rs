//! `keyward key ...`: the server key, never shown.

use super::print;
use keyward::{Config, TokenHasher, read_server_key};
use std::process::ExitCode;

/// `keyward key show`: the key id first, then where the key comes from. Creates nothing.
pub(super) fn show(config: &Config) -> anyhow::Result<ExitCode> {
    let (id, origin) = match &config.server_key {
        Some(key) => (
            TokenHasher::new(key).key_id().clone(),
            "from KEYWARD_SERVER_KEY".to_owned(),
        ),
        None => {
            let path = config.server_key_path();
            match read_server_key(&path)? {
                Some(key) => (
                    TokenHasher::new(&key).key_id().clone(),
                    format!("from {}", path.display()),
                ),
                None => anyhow::bail!(
                    "no server key yet: neither KEYWARD_SERVER_KEY nor {} (keyward creates the file at its first start)",
                    path.display()
                ),
            }
        }
    };
    print(&format!("{id} {origin}\n"))?;
    Ok(ExitCode::SUCCESS)
}
