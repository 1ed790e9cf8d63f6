//! `keyward migrate` and `keyward store copy|backup|restore`: schema and data, no server key
//! needed (the data holds only keyed hashes; the key ring is kept, and backed up, apart).

use super::print;
use super::progress::{Interrupt, Interrupted, Meter, Unit};
use anyhow::Context as _;
use indicatif::HumanBytes;
use keyward::keyward_store::sqlite::backup_partial_path;
use keyward::keyward_store::{Maintenance as _, Snapshot, StoreError};
use keyward::{Config, Database, SqliteStore, Store};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

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
pub(super) async fn copy(from: &str, to: &str, quiet: bool) -> anyhow::Result<ExitCode> {
    let interrupt = Interrupt::listen()?;
    let from = Database::parse(from).map_err(|e| anyhow::anyhow!("--from: {e}"))?;
    let to = Database::parse(to).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    if from == to {
        anyhow::bail!("--from and --to name the same database");
    }
    let source = keyward::open_store(&from).await?;
    let target = keyward::open_store(&to).await?;
    let meter = Arc::new(Meter::new(quiet, Unit::Rows, interrupt.clone()));
    meter.spin(format!("reading {from}"));
    let snapshot = tokio::select! {
        read = source.dump() => read.with_context(|| format!("cannot read {from}")),
        () = interrupt.wait() => Err(Interrupted(format!("nothing was written to {to}")).into()),
    };
    let snapshot = snapshot.inspect_err(|_| meter.finish())?;
    write_into(&*target, &to, &snapshot, &meter, "copy").await?;
    print(&format!(
        "copied {} users, {} tokens, {} secret hashes and {} audit events from {from} to {to}\n",
        snapshot.users.len(),
        snapshot.tokens.len(),
        snapshot.hashes.len(),
        snapshot.audit.len(),
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// Writes a consistent copy of the configured SQLite database to the new file `file`.
pub(super) async fn backup(config: &Config, file: &Path, quiet: bool) -> anyhow::Result<ExitCode> {
    let interrupt = Interrupt::listen()?;
    let Database::Sqlite(source) = &config.database else {
        anyhow::bail!(
            "store backup copies SQLite databases; back up PostgreSQL with pg_dump \
             (pg_dump --format=custom --file=keyward.dump DATABASE_URL), and keep the server key \
             ring (DATA_DIR/server.key or KEYWARD_SERVER_KEYS) and the config apart from it \
             (README, Backups)"
        );
    };
    let meter = Arc::new(Meter::new(quiet, Unit::Bytes, interrupt));
    meter.spin(format!("backing up {}", config.database));
    let copied = {
        let (source, target, meter) = (source.clone(), file.to_owned(), Arc::clone(&meter));
        tokio::task::spawn_blocking(move || SqliteStore::backup(&source, &target, &*meter))
            .await
            .context("the backup task failed")?
    };
    meter.finish();
    let partial = backup_partial_path(file);
    let summary = copied.map_err(|e| match e {
        StoreError::Interrupted => Interrupted(format!(
            "no backup was written ({} was removed)",
            partial.display()
        ))
        .into(),
        StoreError::Conflict(what) if what == partial.display().to_string() => anyhow::anyhow!(
            "{what} exists: another backup to {} is running, or one was killed; remove it if none \
             is running (nothing was written)",
            file.display()
        ),
        StoreError::Conflict(what) => {
            anyhow::anyhow!("{what} already exists; a backup never overwrites a file")
        }
        other => anyhow::Error::new(other).context(format!(
            "cannot back up {} to {} (nothing was written)",
            config.database,
            file.display()
        )),
    })?;
    print(&format!(
        "backed up {} to {} ({})\n",
        config.database,
        file.display(),
        HumanBytes(summary.bytes)
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// Restores the backup `file` into the configured database, which must be empty.
pub(super) async fn restore(config: &Config, file: &Path, quiet: bool) -> anyhow::Result<ExitCode> {
    let interrupt = Interrupt::listen()?;
    if !file.is_file() {
        anyhow::bail!("there is no backup file {}", file.display());
    }
    let to = &config.database;
    let target = keyward::open_store(to).await?;
    let meter = Arc::new(Meter::new(quiet, Unit::Rows, interrupt.clone()));
    meter.spin(format!("reading {}", file.display()));
    let copy = PrivateCopy::of(file)?;
    let read = async {
        // The copy, not `file`: opening runs the migrations, which bring a backup made by an
        // older keyward up to this one's schema, and the backup itself stays as it was.
        let source = SqliteStore::open(&copy.path)
            .await
            .with_context(|| format!("{} is not a keyward backup", file.display()))?;
        let snapshot = source
            .dump()
            .await
            .with_context(|| format!("cannot read the backup {}", file.display()));
        source.close().await;
        snapshot
    };
    let snapshot = tokio::select! {
        read = read => read,
        () = interrupt.wait() => Err(Interrupted(format!("nothing was written; {to} is still empty")).into()),
    };
    drop(copy);
    let snapshot = snapshot.inspect_err(|_| meter.finish())?;
    if snapshot.users.is_empty() && snapshot.tokens.is_empty() && snapshot.audit.is_empty() {
        meter.finish();
        anyhow::bail!(
            "{} holds no users, tokens or audit events: not a keyward backup, or one of an empty \
             store (nothing was written)",
            file.display()
        );
    }
    write_into(&*target, to, &snapshot, &meter, "restore").await?;
    print(&format!(
        "restored {} users, {} tokens, {} secret hashes and {} audit events from {} into {to}\n",
        snapshot.users.len(),
        snapshot.tokens.len(),
        snapshot.hashes.len(),
        snapshot.audit.len(),
        file.display(),
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// Writes `snapshot` into the empty `target` in one transaction, with a progress bar; `verb`
/// names the command in the refusal.
async fn write_into(
    target: &dyn Store,
    to: &Database,
    snapshot: &Snapshot,
    meter: &Arc<Meter>,
    verb: &str,
) -> anyhow::Result<()> {
    meter.spin(format!("writing {to}"));
    let written = target
        .restore_watched(snapshot, Arc::clone(meter) as Arc<_>)
        .await;
    meter.finish();
    written.map_err(|e| match e {
        StoreError::InvalidState(_) => anyhow::anyhow!(
            "{to} already holds data; {verb} only into an empty database (nothing was written)"
        ),
        StoreError::Interrupted => {
            Interrupted(format!("nothing was written; {to} is still empty")).into()
        }
        other => {
            anyhow::Error::new(other).context(format!("cannot write {to} (nothing was written)"))
        }
    })
}

/// A private copy of a backup file (mode 0600, in a directory of mode 0700 under the system's
/// temporary directory), removed with everything SQLite put beside it when dropped.
struct PrivateCopy {
    dir: PathBuf,
    path: PathBuf,
}

impl PrivateCopy {
    fn of(file: &Path) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("keyward-restore-{}", std::process::id()));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let copy = Self {
            path: dir.join("backup.db"),
            dir,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut into = options
            .open(&copy.path)
            .with_context(|| format!("cannot create {}", copy.path.display()))?;
        let mut from = std::fs::File::open(file)
            .with_context(|| format!("cannot read the backup {}", file.display()))?;
        std::io::copy(&mut from, &mut into)
            .with_context(|| format!("cannot read the backup {}", file.display()))?;
        Ok(copy)
    }
}

impl Drop for PrivateCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
