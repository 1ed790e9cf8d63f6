//! `keyward migrate` and `keyward store copy`: schema and data, no server key needed.

use super::print;
use anyhow::Context as _;
use keyward::keyward_store::StoreError;
use keyward::{Config, Database};
use std::process::ExitCode;

/// Opens the configured database, which applies any pending migrations, and says which.
pub(super) async fn migrate(config: &Config) -> anyhow::Result<ExitCode> {
    let applied = keyward::migrate(&config.database).await?;
    let text = if applied.is_empty() {
        format!(
            "the schema of {} was already up to date; nothing to apply\n",
            config.database
        )
    } else {
        let names: Vec<String> = applied
            .iter()
            .map(|m| format!("{:04}_{}", m.version, m.description))
            .collect();
        format!(
            "applied {} migration{} to {}: {}\n",
            applied.len(),
            if applied.len() == 1 { "" } else { "s" },
            config.database,
            names.join(", ")
        )
    };
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// Copies everything a deployment needs from one database into an empty one.
pub(super) async fn copy(from: &str, to: &str) -> anyhow::Result<ExitCode> {
    let from = Database::parse(from).map_err(|e| anyhow::anyhow!("--from: {e}"))?;
    let to = Database::parse(to).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    if from == to {
        anyhow::bail!("--from and --to name the same database");
    }
    let source = keyward::open_store(&from).await?;
    let target = keyward::open_store(&to).await?;
    let snapshot = source
        .dump()
        .await
        .with_context(|| format!("cannot read {from}"))?;
    target.restore(&snapshot).await.map_err(|e| match e {
        StoreError::InvalidState(_) => anyhow::anyhow!(
            "{to} already holds data; copy only into an empty database (nothing was written)"
        ),
        other => {
            anyhow::Error::new(other).context(format!("cannot write {to} (nothing was written)"))
        }
    })?;
    print(&format!(
        "copied {} users, {} tokens, {} secret hashes and {} audit events from {from} to {to}\n",
        snapshot.users.len(),
        snapshot.tokens.len(),
        snapshot.hashes.len(),
        snapshot.audit.len(),
    ))?;
    Ok(ExitCode::SUCCESS)
}
