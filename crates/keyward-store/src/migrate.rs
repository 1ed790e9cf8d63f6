//! The one migration runner both engines use. Each engine brings its own SQL files and its own
//! way of keeping two processes from migrating at once (SQLite: a `BEGIN IMMEDIATE` transaction,
//! PostgreSQL: a session-level advisory lock), then hands this runner a connection that holds it.

use sqlx::SqlSafeStr as _;
use sqlx::migrate::{Migrate, MigrateError, Migration, MigrationType, Migrator};

use crate::{StoreError, StoreResult};

/// An engine's schema: `(version, description, SQL)`, embedded at compile time. Append a file and
/// a line to change it; never edit an applied migration (its checksum is recorded, and a
/// mismatch stops the store from opening).
pub(crate) type Migrations = &'static [(i64, &'static str, &'static str)];

/// A schema migration that opening a store applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppliedMigration {
    /// Its number, from its file name (`0003_platform_users.sql` is 3).
    pub version: i64,
    /// What it does, from its file name (`platform_users`).
    pub description: &'static str,
}

/// Applies the pending `migrations` on `conn`, which must already hold the engine's migration
/// lock, and returns those it applied. `db_error` maps the engine's own errors; anything else
/// sqlx refuses (a changed or missing migration) is a schema keyward did not write,
/// [`StoreError::Corrupt`].
pub(crate) async fn apply<C: Migrate>(
    migrations: Migrations,
    conn: &mut C,
    db_error: fn(sqlx::Error) -> StoreError,
) -> StoreResult<Vec<AppliedMigration>> {
    let refused = |e: MigrateError| match e {
        MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) => db_error(e),
        other => StoreError::corrupt_from(format!("database schema: {other}"), None, other),
    };
    // What is pending, read under the same lock the runner then holds: exactly what it applies.
    conn.ensure_migrations_table(MIGRATIONS_TABLE)
        .await
        .map_err(refused)?;
    let done: Vec<i64> = conn
        .list_applied_migrations(MIGRATIONS_TABLE)
        .await
        .map_err(refused)?
        .into_iter()
        .map(|m| m.version)
        .collect();
    let pending = migrations
        .iter()
        .filter(|(version, _, _)| !done.contains(version))
        .map(|&(version, description, _)| AppliedMigration {
            version,
            description,
        })
        .collect();
    let mut migrator = Migrator::with_migrations(
        migrations
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    description.into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    );
    // The caller holds the engine's lock. sqlx's own would come too late on PostgreSQL (after it
    // creates its bookkeeping table, where two `CREATE TABLE IF NOT EXISTS` at once can collide
    // in the catalog) and is a no-op on SQLite.
    migrator.set_locking(false);
    // A fleet upgrades one instance at a time: a newer release may already have applied
    // migrations this one does not know. They only add to the schema (see the README's
    // "Upgrading"), so this release runs on it; a changed checksum is still refused.
    migrator.set_ignore_missing(true);
    // `run_direct` rather than `run`: `run`'s `Acquire` bound makes the future not `Send`.
    migrator
        .run_direct(None, conn, false)
        .await
        .map_err(refused)?;
    Ok(pending)
}

/// sqlx's bookkeeping table, the default of its `Migrator`.
const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// Checks, in each engine's unit tests, that every file in `migrations/<engine>` is embedded
/// in order, so a new file cannot be forgotten.
#[cfg(test)]
pub(crate) fn assert_every_file_is_embedded(engine: &str, migrations: Migrations) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(engine);
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".sql"))
        .collect();
    files.sort();
    let embedded: Vec<String> = migrations
        .iter()
        .map(|(v, d, _)| format!("{v:04}_{d}.sql"))
        .collect();
    assert_eq!(files, embedded);
}
