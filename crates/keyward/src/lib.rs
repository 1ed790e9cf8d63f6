//! keyward: a self-hosted personal access token service.
//!
//! This crate is the `keyward` binary and the library face for Rust services that want to run
//! keyward in process: load a [`Config`], [`open`] the service, and call it.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use keyward::{Config, Flags, Scopes};
//!
//! let config = Config::load(&Flags::default())?;
//! let keyward = keyward::open(&config).await?;
//! let wanted = Scopes::parse(&["droplet:read"])?;
//! match keyward.verify("kwp_...", &wanted, None).await? {
//!     keyward::Verdict::Active(token) => println!("{} may read droplets", token.owner_name()),
//!     keyward::Verdict::Inactive(reason) => println!("refused: {}", reason.as_str()),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Services that only need to check tokens use a [`Verifier`] (in process, over the local
//! store) or a [`RemoteVerifier`] (asking a keyward server), directly or through the axum/tower
//! layer [`require_scope`], which puts the token's [`Identity`] into request extensions.
//!
//! The layers are re-exported whole ([`keyward_core`], [`keyward_store`], [`keyward_server`]);
//! the items most callers need are also re-exported at the top.

pub mod config;
pub mod keys;
pub mod layer;
pub mod setup;
pub mod verifier;

pub use config::{Config, ConfigError, Database, Env, Flags};
pub use keys::{KeySource, LoadedKeys, load_keys, watch_key_file};
pub use layer::require_scope;
pub use setup::{
    SetupError, load_key_ring, lock_data_dir, prepare_data_dir, read_key_ring, write_key_ring,
};
pub use verifier::{Identity, RemoteVerifier, TokenVerifier, Verifier, VerifyError};

pub use keyward_core;
pub use keyward_server;
pub use keyward_store;

pub use keyward_core::{
    Actor, AuditEvent, AuditKind, Catalog, Clock, ExpiryRequest, InactiveReason, LifetimePolicy,
    Prefix, RawSecret, Scope, Scopes, ServerKey, SystemClock, TokenHasher, TokenId, TokenName,
    TokenRecord, TokenSecret, TokenState, User, UserId, UserName,
};
pub use keyward_server::service::{Issued, RegenerateOptions};
pub use keyward_server::{Caller, Keyward, ServiceError, Settings, Verdict, VerifiedToken};
pub use keyward_store::{PgStore, SqliteStore, Store};

use anyhow::Context as _;
use std::sync::Arc;

/// Opens keyward as `config` describes: creates the data dir (mode 0700) if missing, reads or
/// creates the server key, opens the configured database (SQLite at `DATA_DIR/keyward.db`
/// unless `database` says otherwise), and builds the service on the system clock.
///
/// To have Prometheus metrics, call [`keyward_server::telemetry::prometheus`] before this: the
/// service takes its metric handles when it is built.
///
/// Refuses a store that holds active tokens hashed under a server key other than this one
/// (a data dir copied without its `server.key`, or a fleet with two keys): they could never
/// verify. [`open_with`] and [`KeyPolicy::AcceptNewKey`] reset on purpose.
pub async fn open(config: &Config) -> anyhow::Result<Arc<Keyward>> {
    open_with(config, KeyPolicy::Refuse).await
}

/// What [`open_with`] does with active tokens hashed under a server key it does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPolicy {
    /// Refuse to start, saying which key is missing and where keys are looked for.
    Refuse,
    /// A deliberate reset (`--accept-new-key`): revoke those tokens, with an audit event, and
    /// start on the key at hand.
    AcceptNewKey,
}

/// [`open`], with a choice about tokens under a missing server key.
pub async fn open_with(config: &Config, policy: KeyPolicy) -> anyhow::Result<Arc<Keyward>> {
    prepare_data_dir(&config.data_dir)?;
    let loaded = load_keys(config, true)?.context("no server key")?;
    let origin = if loaded.created {
        format!("{}, created just now because there was none", loaded.source)
    } else {
        loaded.source.to_string()
    };
    let keyward = build(config, loaded.ring()).await?;
    let missing = keyward
        .tokens_under_missing_keys()
        .await
        .context("cannot check the store's server keys")?;
    if !missing.is_empty() {
        let what = keyward_server::service::keys::describe(&missing);
        match policy {
            KeyPolicy::Refuse => return Err(SetupError::KeyMissing(format!(
                "the database {} holds active tokens hashed under a server key this server does not have: {what}. \
                 This server's keys are {} (from {origin}); keys come from KEYWARD_SERVER_KEYS, else KEYWARD_SERVER_KEY, \
                 else DATA_DIR/server.key. Put the original key back (restore {} or set KEYWARD_SERVER_KEY to it), \
                 or, to give up those tokens for good, start once with --accept-new-key (they are revoked, and the \
                 audit trail records the reset)",
                config.database,
                keyward
                    .key_ring()
                    .ids()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                config.server_key_path().display(),
            ))
            .into()),
            KeyPolicy::AcceptNewKey => {
                let revoked = keyward
                    .reset_server_key(&Caller::operator(&os_user()))
                    .await
                    .context("cannot reset the server key")?;
                tracing::warn!(revoked, "accepted a new server key: {what} revoked");
            }
        }
    }
    Ok(Arc::new(keyward))
}

/// The service over `config`'s database with `ring`, on the system clock, without looking at
/// which keys the store's tokens use (the `keyward key` commands show and change exactly that).
pub async fn build(config: &Config, ring: keyward_core::KeyRing) -> anyhow::Result<Keyward> {
    let store = open_store(&config.database).await?;
    Keyward::new(store, Arc::new(SystemClock), ring, config.settings())
        .await
        .context("cannot start the service")
}

/// The operating-system user running this process, for the audit trail of an operator's acts.
pub fn os_user() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .filter_map(|var| std::env::var(var).ok())
        .find(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "operator".to_owned())
}

/// Opens `database`, applying any pending schema migrations (under a lock, so instances starting
/// at once on one database apply them once).
pub async fn open_store(database: &Database) -> anyhow::Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> = match database {
        Database::Sqlite(path) => Arc::new(
            SqliteStore::open(path)
                .await
                .with_context(|| format!("cannot open the database {database}"))?,
        ),
        Database::Postgres(url) => Arc::new(
            PgStore::connect(url)
                .await
                .with_context(|| format!("cannot open the database {database}"))?,
        ),
    };
    Ok(store)
}

/// Opens `database` as [`open_store`] does and returns the schema migrations that applied, in
/// order (none when the schema was already up to date): what `keyward migrate` reports.
pub async fn migrate(database: &Database) -> anyhow::Result<Vec<keyward_store::AppliedMigration>> {
    let context = || format!("cannot open the database {database}");
    let applied = match database {
        Database::Sqlite(path) => SqliteStore::open(path)
            .await
            .with_context(context)?
            .migrations_applied()
            .to_vec(),
        Database::Postgres(url) => PgStore::connect(url)
            .await
            .with_context(context)?
            .migrations_applied()
            .to_vec(),
    };
    Ok(applied)
}
