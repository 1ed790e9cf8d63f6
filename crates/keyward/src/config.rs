//! keyward's configuration: one typed struct, layered explicitly as
//! defaults < TOML file < `KEYWARD_*` environment < command-line flags.
//!
//! The file is `--config FILE`, else `KEYWARD_CONFIG`, else `DATA_DIR/keyward.toml` when it
//! exists. It must say `version = 1` and may hold only the keys below (a misspelt key is an
//! error, not a silently ignored setting):
//!
//! ```toml
//! version = 1
//! listen = "127.0.0.1:8080"
//! data_dir = "./keyward-data"
//! # sqlite://PATH (default: DATA_DIR/keyward.db) or postgres://USER@HOST:PORT/DB
//! database = "postgres://keyward@db.internal:5432/keyward"
//! token_prefix = "kwp"
//! max_lifetime = "366d"
//! default_lifetime = "30d"
//! allow_never = false
//! secure_cookies = false   # true when served over HTTPS: the sign-in cookie is always Secure
//! cache_capacity = 1000000
//! log = "info"
//!
//! [catalog]
//! droplet = ["read", "create", "update", "delete"]
//!
//! # Scopes a request proxied to /v1/auth needs when the proxy sends no X-Keyward-Scope:
//! # longest path prefix wins; "*" matches any method.
//! [[forward_auth.route]]
//! method = "GET"
//! path_prefix = "/droplets"
//! scopes = ["droplet:read"]
//! ```
//!
//! The server key is deliberately not a file setting: it comes from `KEYWARD_SERVER_KEY` or
//! from `DATA_DIR/server.key`, so a config file can be shared or committed without it.

use keyward_core::{Catalog, LifetimePolicy, Prefix, ServerKey, parse_duration};
use keyward_server::Settings;
use keyward_server::service::{ForwardAuthRoute, ForwardAuthRoutes};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use time::Duration;

/// The only config file version this keyward reads.
pub const CONFIG_VERSION: i64 = 1;
/// The config file looked for in the data dir when none is named.
pub const CONFIG_FILE_NAME: &str = "keyward.toml";
/// The address `keyward serve` listens on by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The data dir used when none is named.
pub const DEFAULT_DATA_DIR: &str = "./keyward-data";
/// The log filter used when none is named.
pub const DEFAULT_LOG: &str = "info";

/// Environment variables keyward reads; each overrides the file and is overridden by a flag.
pub mod env {
    /// Address to listen on.
    pub const LISTEN: &str = "KEYWARD_LISTEN";
    /// Data directory (database, server key, default config file).
    pub const DATA_DIR: &str = "KEYWARD_DATA_DIR";
    /// Config file path.
    pub const CONFIG: &str = "KEYWARD_CONFIG";
    /// Server key, 64 hexadecimal characters (instead of `DATA_DIR/server.key`).
    pub const SERVER_KEY: &str = "KEYWARD_SERVER_KEY";
    /// Prefix of new tokens.
    pub const TOKEN_PREFIX: &str = "KEYWARD_TOKEN_PREFIX";
    /// Longest token lifetime, e.g. `366d`.
    pub const MAX_LIFETIME: &str = "KEYWARD_MAX_LIFETIME";
    /// Lifetime of a token created without an expiry, e.g. `30d`.
    pub const DEFAULT_LIFETIME: &str = "KEYWARD_DEFAULT_LIFETIME";
    /// Whether tokens may never expire (`true`/`false`).
    pub const ALLOW_NEVER: &str = "KEYWARD_ALLOW_NEVER";
    /// Whether the web page's session cookie is always `Secure` (`true`/`false`).
    pub const SECURE_COOKIES: &str = "KEYWARD_SECURE_COOKIES";
    /// How many tokens the verification cache keeps.
    pub const CACHE_CAPACITY: &str = "KEYWARD_CACHE_CAPACITY";
    /// The tracing filter, e.g. `info` or `keyward_server=debug`.
    pub const LOG: &str = "KEYWARD_LOG";
    /// The database: `sqlite://PATH` or `postgres://...` (default: `DATA_DIR/keyward.db`).
    pub const DATABASE_URL: &str = "KEYWARD_DATABASE_URL";

    /// Every variable above.
    pub const ALL: &[&str] = &[
        LISTEN,
        DATA_DIR,
        CONFIG,
        SERVER_KEY,
        TOKEN_PREFIX,
        MAX_LIFETIME,
        DEFAULT_LIFETIME,
        ALLOW_NEVER,
        SECURE_COOKIES,
        CACHE_CAPACITY,
        LOG,
        DATABASE_URL,
    ];
}

/// The configuration is unusable; the message says which setting and why, in one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl ConfigError {
    fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// The environment as the loader sees it: `KEYWARD_*` variables only. Tests build one by hand
/// instead of touching the process environment.
#[derive(Default, Clone)]
pub struct Env(BTreeMap<String, String>);

impl Env {
    /// The `KEYWARD_*` variables of this process. A value that is not UTF-8 is an error.
    pub fn from_process() -> Result<Self, ConfigError> {
        let mut vars = BTreeMap::new();
        for (key, value) in std::env::vars_os() {
            let Some(key) = key.to_str().filter(|k| k.starts_with("KEYWARD_")) else {
                continue;
            };
            let value = value
                .into_string()
                .map_err(|_| ConfigError::new(format!("{key} is not valid UTF-8")))?;
            vars.insert(key.to_owned(), value);
        }
        Ok(Self(vars))
    }

    /// An environment with exactly these variables.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// A variable's value; an empty value counts as unset.
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names only: values include the server key.
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Settings given on the command line: the top layer.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--config FILE`.
    pub config: Option<PathBuf>,
    /// `--data-dir DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--listen ADDR` (serve only).
    pub listen: Option<SocketAddr>,
    /// `--database URL`.
    pub database: Option<String>,
}

/// The config file's shape. Every key is optional except `version`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    /// Checked by [`VersionProbe`] before this struct is parsed; declared so it is a known key.
    #[serde(rename = "version")]
    _version: Option<toml::Value>,
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    database: Option<String>,
    token_prefix: Option<String>,
    max_lifetime: Option<String>,
    default_lifetime: Option<String>,
    allow_never: Option<bool>,
    secure_cookies: Option<bool>,
    cache_capacity: Option<u64>,
    log: Option<String>,
    catalog: Option<BTreeMap<String, Vec<String>>>,
    forward_auth: Option<ForwardAuthFile>,
}

/// `[forward_auth]`: the route table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForwardAuthFile {
    #[serde(default)]
    route: Vec<RouteFile>,
}

/// One `[[forward_auth.route]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    #[serde(default = "any_method")]
    method: String,
    path_prefix: String,
    scopes: Vec<String>,
}

fn any_method() -> String {
    "*".to_owned()
}

/// Parses the route table, checking every scope against the catalog (a misspelt scope would
/// otherwise refuse every request on that route).
fn forward_auth_routes(
    file: Option<ForwardAuthFile>,
    catalog: &Catalog,
    origin: &dyn Fn(&str) -> String,
) -> Result<ForwardAuthRoutes, ConfigError> {
    let routes = file.map(|f| f.route).unwrap_or_default();
    let mut parsed = Vec::with_capacity(routes.len());
    for (i, route) in routes.into_iter().enumerate() {
        let here = || origin(&format!("forward_auth.route[{i}]"));
        let scopes = keyward_core::Scopes::parse(&route.scopes)
            .map_err(|e| ConfigError::new(format!("{}: {e}", here())))?;
        catalog
            .check(&scopes)
            .map_err(|e| ConfigError::new(format!("{}: {e}", here())))?;
        parsed.push(
            ForwardAuthRoute::new(&route.method, &route.path_prefix, scopes)
                .map_err(|e| ConfigError::new(format!("{}: {e}", here())))?,
        );
    }
    ForwardAuthRoutes::new(parsed)
        .map_err(|e| ConfigError::new(format!("{}: {e}", origin("[[forward_auth.route]]"))))
}

/// Only the version, read first so that a file of another version is refused for its version
/// rather than for a key this keyward does not know.
#[derive(Deserialize)]
struct VersionProbe {
    version: Option<toml::Value>,
}

/// keyward's complete configuration, every layer applied and every value checked.
pub struct Config {
    /// Where `keyward serve` listens.
    pub listen: SocketAddr,
    /// Where the database, the server key and the default config file live.
    pub data_dir: PathBuf,
    /// The config file that was read, if any.
    pub config_file: Option<PathBuf>,
    /// The database every command uses.
    pub database: Database,
    /// The prefix of new tokens.
    pub token_prefix: Prefix,
    /// The longest a token may live.
    pub max_lifetime: Duration,
    /// The lifetime of a token created without an expiry.
    pub default_lifetime: Duration,
    /// Whether tokens may never expire.
    pub allow_never: bool,
    /// Whether the web page's session cookie is always `Secure` (serve over HTTPS).
    pub secure_cookies: bool,
    /// How many tokens the verification cache keeps.
    pub cache_capacity: u64,
    /// The tracing filter for the server's logs.
    pub log: String,
    /// The scopes tokens may carry.
    pub catalog: Catalog,
    /// The forward-auth route table (`[[forward_auth.route]]`).
    pub forward_auth: ForwardAuthRoutes,
    /// The server key from `KEYWARD_SERVER_KEY`; `None` means `DATA_DIR/server.key`.
    pub server_key: Option<ServerKey>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("config_file", &self.config_file)
            .field("database", &self.database)
            .field("token_prefix", &self.token_prefix.as_str())
            .field("max_lifetime", &self.max_lifetime)
            .field("default_lifetime", &self.default_lifetime)
            .field("allow_never", &self.allow_never)
            .field("secure_cookies", &self.secure_cookies)
            .field("cache_capacity", &self.cache_capacity)
            .field("log", &self.log)
            .field("catalog", &self.catalog)
            .field("forward_auth", &self.forward_auth)
            // Whether a key was given, never the key (not even its id: it names the secret).
            .field(
                "server_key",
                &self.server_key.as_ref().map(|_| "[REDACTED]"),
            )
            .finish()
    }
}

impl Config {
    /// The configuration of this process: its `KEYWARD_*` environment and `flags`.
    pub fn load(flags: &Flags) -> Result<Self, ConfigError> {
        Self::load_from(&Env::from_process()?, flags)
    }

    /// The configuration from an explicit environment and flags (reads the config file).
    pub fn load_from(env: &Env, flags: &Flags) -> Result<Self, ConfigError> {
        let data_dir_before_file = flags
            .data_dir
            .clone()
            .or_else(|| env.get(env::DATA_DIR).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let (file, config_file) = match flags
            .config
            .clone()
            .or_else(|| env.get(env::CONFIG).map(PathBuf::from))
        {
            Some(path) => (read_file(&path)?, Some(path)),
            None => {
                let path = data_dir_before_file.join(CONFIG_FILE_NAME);
                if path.is_file() {
                    (read_file(&path)?, Some(path))
                } else {
                    (FileConfig::default(), None)
                }
            }
        };
        let origin = |key: &str| match &config_file {
            Some(path) => format!("{key} in {}", path.display()),
            None => key.to_owned(),
        };

        let listen = match (flags.listen, env.get(env::LISTEN)) {
            (Some(flag), _) => flag,
            (None, Some(v)) => v.parse().map_err(|_| {
                ConfigError::new(format!(
                    "{}: {v:?} is not an address such as 127.0.0.1:8080",
                    env::LISTEN
                ))
            })?,
            (None, None) => match file.listen {
                Some(addr) => addr,
                None => DEFAULT_LISTEN
                    .parse()
                    .map_err(|_| ConfigError::new("the default listen address is invalid"))?,
            },
        };
        let data_dir = flags
            .data_dir
            .clone()
            .or_else(|| env.get(env::DATA_DIR).map(PathBuf::from))
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));

        let database = match flags.database.as_deref() {
            Some(url) => {
                Database::parse(url).map_err(|e| ConfigError::new(format!("--database: {e}")))?
            }
            None => match layered(env, env::DATABASE_URL, file.database, &origin("database")) {
                (Some(url), url_origin) => Database::parse(&url)
                    .map_err(|e| ConfigError::new(format!("{url_origin}: {e}")))?,
                (None, _) => Database::Sqlite(data_dir.join(SQLITE_FILE_NAME)),
            },
        };

        let (prefix_text, prefix_origin) = layered(
            env,
            env::TOKEN_PREFIX,
            file.token_prefix,
            &origin("token_prefix"),
        );
        let token_prefix = match prefix_text {
            Some(p) => {
                Prefix::parse(&p).map_err(|e| ConfigError::new(format!("{prefix_origin}: {e}")))?
            }
            None => Prefix::default(),
        };

        let max_lifetime = duration_setting(
            env,
            env::MAX_LIFETIME,
            file.max_lifetime,
            &origin("max_lifetime"),
        )?
        .unwrap_or(LifetimePolicy::default().max_lifetime);
        let default_lifetime = duration_setting(
            env,
            env::DEFAULT_LIFETIME,
            file.default_lifetime,
            &origin("default_lifetime"),
        )?
        .unwrap_or(LifetimePolicy::default().default_lifetime);
        if default_lifetime > max_lifetime {
            return Err(ConfigError::new(format!(
                "default_lifetime ({} days) is longer than max_lifetime ({} days)",
                default_lifetime.whole_days(),
                max_lifetime.whole_days()
            )));
        }

        let allow_never = match env.get(env::ALLOW_NEVER) {
            Some(v) => parse_bool(v).ok_or_else(|| {
                ConfigError::new(format!("{}: {v:?} is not true or false", env::ALLOW_NEVER))
            })?,
            None => file.allow_never.unwrap_or(false),
        };
        let secure_cookies = match env.get(env::SECURE_COOKIES) {
            Some(v) => parse_bool(v).ok_or_else(|| {
                ConfigError::new(format!(
                    "{}: {v:?} is not true or false",
                    env::SECURE_COOKIES
                ))
            })?,
            None => file.secure_cookies.unwrap_or(false),
        };
        let cache_capacity = match env.get(env::CACHE_CAPACITY) {
            Some(v) => v.parse().map_err(|_| {
                ConfigError::new(format!(
                    "{}: {v:?} is not a whole number",
                    env::CACHE_CAPACITY
                ))
            })?,
            None => file.cache_capacity.unwrap_or(1_000_000),
        };

        let (log, log_origin) = layered(env, env::LOG, file.log, &origin("log"));
        let log = log.unwrap_or_else(|| DEFAULT_LOG.to_owned());
        tracing_subscriber::EnvFilter::try_new(&log).map_err(|e| {
            ConfigError::new(format!("{log_origin}: {log:?} is not a log filter: {e}"))
        })?;

        let catalog = match file.catalog {
            Some(resources) => Catalog::new(resources)
                .map_err(|e| ConfigError::new(format!("{}: {e}", origin("[catalog]"))))?,
            None => Catalog::sample(),
        };

        let forward_auth = forward_auth_routes(file.forward_auth, &catalog, &origin)?;

        let server_key = env
            .get(env::SERVER_KEY)
            .map(|hex| {
                ServerKey::from_hex(hex)
                    .map_err(|e| ConfigError::new(format!("{}: {e}", env::SERVER_KEY)))
            })
            .transpose()?;

        Ok(Self {
            listen,
            data_dir,
            config_file,
            database,
            token_prefix,
            max_lifetime,
            default_lifetime,
            allow_never,
            secure_cookies,
            cache_capacity,
            log,
            catalog,
            forward_auth,
            server_key,
        })
    }

    /// The service's rules, as configured.
    pub fn settings(&self) -> Settings {
        Settings {
            prefix: self.token_prefix.clone(),
            catalog: self.catalog.clone(),
            policy: LifetimePolicy {
                max_lifetime: self.max_lifetime,
                allow_never: self.allow_never,
                default_lifetime: self.default_lifetime,
            },
            cache_capacity: self.cache_capacity,
            secure_cookies: self.secure_cookies,
            forward_auth: self.forward_auth.clone(),
        }
    }

    /// The default SQLite database file, `DATA_DIR/keyward.db` (used unless `database` names
    /// another).
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join(SQLITE_FILE_NAME)
    }

    /// The server key file (used when `KEYWARD_SERVER_KEY` is not set).
    pub fn server_key_path(&self) -> PathBuf {
        self.data_dir.join("server.key")
    }
}

/// The default SQLite file's name in the data dir.
pub const SQLITE_FILE_NAME: &str = "keyward.db";

/// Which database, and where: every command (`serve`, the command line, `migrate`) uses the one
/// configured.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// An SQLite file (`sqlite://PATH`; the default is `DATA_DIR/keyward.db`).
    Sqlite(PathBuf),
    /// A PostgreSQL server (`postgres://` or `postgresql://` URL, as libpq takes it).
    Postgres(String),
}

impl Database {
    /// Reads `sqlite://PATH` (`sqlite:///abs/file.db`, `sqlite://rel/file.db`) or a
    /// `postgres://` / `postgresql://` URL.
    pub fn parse(url: &str) -> Result<Self, String> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(
                    "sqlite:// needs a file path, e.g. sqlite:///var/lib/keyward/keyward.db"
                        .to_owned(),
                );
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_owned()));
        }
        // Never echo the value: it may be a URL with a password in it.
        Err(
            "not a database URL: use sqlite://PATH or postgres://USER@HOST:PORT/DATABASE"
                .to_owned(),
        )
    }

    /// A description safe for logs and errors: the file, or the server without credentials.
    pub fn redacted(&self) -> String {
        match self {
            Self::Sqlite(path) => format!("sqlite://{}", path.display()),
            Self::Postgres(url) => {
                let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
                // Drop `user:password@`; keep host, port and database.
                let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
                let rest = rest.split_once('?').map_or(rest, |(before, _)| before);
                format!("{scheme}://{rest}")
            }
        }
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// The env value if set, else the file value, with where it came from (for error messages).
fn layered(
    env: &Env,
    var: &str,
    file: Option<String>,
    file_origin: &str,
) -> (Option<String>, String) {
    match env.get(var) {
        Some(v) => (Some(v.to_owned()), var.to_owned()),
        None => (file, file_origin.to_owned()),
    }
}

fn duration_setting(
    env: &Env,
    var: &str,
    file: Option<String>,
    file_origin: &str,
) -> Result<Option<Duration>, ConfigError> {
    let (text, origin) = layered(env, var, file, file_origin);
    text.map(|t| parse_duration(&t).map_err(|e| ConfigError::new(format!("{origin}: {e}"))))
        .transpose()
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(format!("cannot read config file {}: {e}", path.display()))
    })?;
    parse_file(&text).map_err(|e| ConfigError::new(format!("config file {}: {e}", path.display())))
}

fn parse_file(text: &str) -> Result<FileConfig, String> {
    let probe: VersionProbe = toml::from_str(text).map_err(|e| describe(text, &e))?;
    match probe.version {
        None => return Err(format!("it must start with `version = {CONFIG_VERSION}`")),
        Some(toml::Value::Integer(CONFIG_VERSION)) => {}
        Some(other) => {
            return Err(format!(
                "version {other} is not supported; this keyward reads version {CONFIG_VERSION} (is the file for a newer keyward?)"
            ));
        }
    }
    toml::from_str(text).map_err(|e| describe(text, &e))
}

/// The parser's message with ` (line N)`, on one line (toml's own `Display` draws a snippet
/// over several lines).
fn describe(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let line = text
                .get(..span.start)
                .map_or(0, |before| before.matches('\n').count())
                + 1;
            format!("{message} (line {line})")
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_server::service::gateway::RouteDecision;
    use std::io::Write;

    const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn write_config(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("custom.toml");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        path
    }

    fn flags_with(config: &Path) -> Flags {
        Flags {
            config: Some(config.to_owned()),
            ..Flags::default()
        }
    }

    fn err(result: Result<Config, ConfigError>) -> String {
        result.expect_err("expected an error").to_string()
    }

    #[test]
    fn defaults_apply_without_file_env_or_flags() {
        let dir = tempfile::tempdir().unwrap();
        let flags = Flags {
            data_dir: Some(dir.path().to_owned()),
            ..Flags::default()
        };
        let c = Config::load_from(&Env::default(), &flags).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.token_prefix.as_str(), "kwp");
        assert_eq!(c.max_lifetime, Duration::days(366));
        assert_eq!(c.default_lifetime, Duration::days(30));
        assert!(!c.allow_never);
        assert_eq!(c.cache_capacity, 1_000_000);
        assert_eq!(c.log, "info");
        assert_eq!(c.catalog, Catalog::sample());
        assert!(c.server_key.is_none());
        assert!(c.config_file.is_none());
        assert_eq!(c.database_path(), dir.path().join("keyward.db"));
        assert_eq!(c.database, Database::Sqlite(dir.path().join("keyward.db")));
    }

    #[test]
    fn the_database_is_layered_and_parsed() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(
            dir.path(),
            "version = 1\ndatabase = \"postgres://k@file-host/k\"\n",
        );
        let from_file = Config::load_from(&Env::default(), &flags_with(&path)).unwrap();
        assert_eq!(
            from_file.database,
            Database::Postgres("postgres://k@file-host/k".to_owned())
        );
        let env = Env::from_pairs([("KEYWARD_DATABASE_URL", "sqlite:///srv/k.db")]);
        let from_env = Config::load_from(&env, &flags_with(&path)).unwrap();
        assert_eq!(
            from_env.database,
            Database::Sqlite(PathBuf::from("/srv/k.db"))
        );
        let flags = Flags {
            database: Some("postgresql://k:pw@flag-host:6432/k?sslmode=disable".to_owned()),
            ..flags_with(&path)
        };
        let from_flag = Config::load_from(&env, &flags).unwrap();
        assert_eq!(
            from_flag.database.redacted(),
            "postgresql://flag-host:6432/k",
            "no credentials"
        );
        assert!(!format!("{from_flag:?}").contains("pw"));

        for bad in ["mysql://x", "keyward.db", "sqlite://", "postgres:/x"] {
            let flags = Flags {
                database: Some(bad.to_owned()),
                ..Flags::default()
            };
            let message = err(Config::load_from(&Env::default(), &flags));
            assert!(message.starts_with("--database: "), "{bad}: {message}");
        }
    }

    #[test]
    fn file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(
            dir.path(),
            r#"
version = 1
listen = "127.0.0.1:9000"
data_dir = "/from/file"
token_prefix = "acme"
max_lifetime = "90d"
default_lifetime = "7d"
allow_never = true
cache_capacity = 10
log = "debug"

[catalog]
repo = ["read", "write"]
"#,
        );
        let from_file = Config::load_from(&Env::default(), &flags_with(&path)).unwrap();
        assert_eq!(from_file.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(from_file.data_dir, PathBuf::from("/from/file"));
        assert_eq!(from_file.token_prefix.as_str(), "acme");
        assert_eq!(from_file.max_lifetime, Duration::days(90));
        assert_eq!(from_file.default_lifetime, Duration::days(7));
        assert!(from_file.allow_never);
        assert_eq!(from_file.cache_capacity, 10);
        assert_eq!(from_file.log, "debug");
        let repo_read = keyward_core::Scopes::parse(&["repo:write"]).unwrap();
        assert!(from_file.catalog.check(&repo_read).is_ok());
        assert!(
            from_file
                .catalog
                .check(&keyward_core::Scopes::parse(&["droplet:read"]).unwrap())
                .is_err()
        );
        assert_eq!(from_file.config_file.as_deref(), Some(path.as_path()));

        let env = Env::from_pairs([
            ("KEYWARD_LISTEN", "127.0.0.1:9001"),
            ("KEYWARD_DATA_DIR", "/from/env"),
            ("KEYWARD_TOKEN_PREFIX", "envp"),
            ("KEYWARD_MAX_LIFETIME", "30d"),
            ("KEYWARD_DEFAULT_LIFETIME", "1d"),
            ("KEYWARD_ALLOW_NEVER", "false"),
            ("KEYWARD_CACHE_CAPACITY", "20"),
            ("KEYWARD_LOG", "warn"),
        ]);
        let from_env = Config::load_from(&env, &flags_with(&path)).unwrap();
        assert_eq!(from_env.listen.to_string(), "127.0.0.1:9001");
        assert_eq!(from_env.data_dir, PathBuf::from("/from/env"));
        assert_eq!(from_env.token_prefix.as_str(), "envp");
        assert_eq!(from_env.max_lifetime, Duration::days(30));
        assert_eq!(from_env.default_lifetime, Duration::days(1));
        assert!(!from_env.allow_never);
        assert_eq!(from_env.cache_capacity, 20);
        assert_eq!(from_env.log, "warn");

        let flags = Flags {
            config: Some(path.clone()),
            data_dir: Some(PathBuf::from("/from/flag")),
            listen: Some("127.0.0.1:9002".parse().unwrap()),
            database: None,
        };
        let from_flags = Config::load_from(&env, &flags).unwrap();
        assert_eq!(from_flags.listen.to_string(), "127.0.0.1:9002");
        assert_eq!(from_flags.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(
            from_flags.token_prefix.as_str(),
            "envp",
            "layers without a flag keep the env value"
        );
    }

    #[test]
    fn config_file_is_found_by_env_or_in_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let named = write_config(dir.path(), "version = 1\ntoken_prefix = \"named\"\n");
        let env = Env::from_pairs([("KEYWARD_CONFIG", named.to_str().unwrap())]);
        assert_eq!(
            Config::load_from(&env, &Flags::default())
                .unwrap()
                .token_prefix
                .as_str(),
            "named"
        );

        std::fs::write(
            dir.path().join(CONFIG_FILE_NAME),
            "version = 1\ntoken_prefix = \"indir\"\n",
        )
        .unwrap();
        let flags = Flags {
            data_dir: Some(dir.path().to_owned()),
            ..Flags::default()
        };
        let c = Config::load_from(&Env::default(), &flags).unwrap();
        assert_eq!(c.token_prefix.as_str(), "indir");
        assert_eq!(c.config_file, Some(dir.path().join(CONFIG_FILE_NAME)));

        let missing = Flags {
            config: Some(dir.path().join("nope.toml")),
            ..Flags::default()
        };
        assert!(
            err(Config::load_from(&Env::default(), &missing))
                .starts_with("cannot read config file")
        );
    }

    #[test]
    fn version_is_required_and_checked_first() {
        let dir = tempfile::tempdir().unwrap();
        let none = write_config(dir.path(), "listen = \"127.0.0.1:1\"\n");
        assert!(
            err(Config::load_from(&Env::default(), &flags_with(&none)))
                .contains("must start with `version = 1`")
        );
        // A newer file is refused for its version, not for the keys this keyward does not know.
        let newer = write_config(dir.path(), "version = 2\nshiny_new_key = true\n");
        let message = err(Config::load_from(&Env::default(), &flags_with(&newer)));
        assert!(message.contains("version 2 is not supported"), "{message}");
        let text = write_config(dir.path(), "version = \"1\"\n");
        assert!(
            err(Config::load_from(&Env::default(), &flags_with(&text))).contains("not supported")
        );
    }

    #[test]
    fn the_forward_auth_route_table_is_parsed_and_checked_at_start_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(
            dir.path(),
            "version = 1\n\
             [[forward_auth.route]]\nmethod = \"GET\"\npath_prefix = \"/droplets\"\nscopes = [\"droplet:read\"]\n\
             [[forward_auth.route]]\npath_prefix = \"/droplets\"\nscopes = [\"droplet:update\"]\n",
        );
        let config = Config::load_from(&Env::default(), &flags_with(&path)).unwrap();
        let routes = &config.settings().forward_auth;
        assert_eq!(routes.routes().len(), 2);
        let needed = |m, u| match routes.decide(m, u).unwrap() {
            RouteDecision::Needs(scopes) => scopes.to_string(),
            other => format!("{other:?}"),
        };
        assert_eq!(needed("GET", "/droplets/1"), "droplet:read");
        assert_eq!(needed("POST", "/droplets"), "droplet:update");
        assert_eq!(
            needed("GET", "/volumes"),
            "NoRoute",
            "no catch-all: refused"
        );

        for (bad, expected) in [
            (
                "scopes = [\"droplet:reed\"]\npath_prefix = \"/a\"",
                "unknown action",
            ),
            (
                "scopes = [\"droplet:read\"]\npath_prefix = \"a\"",
                "must start with '/'",
            ),
            (
                "scopes = [\"droplet:read\"]\npath_prefix = \"/a\"\nmethod = \"GET POST\"",
                "not an HTTP method",
            ),
            (
                "scopes = [\"droplet:read\"]\npath_prefix = \"/a;b\"",
                "normalized path",
            ),
            (
                "scopes = [\"droplet:read\"]\npath_prefix = \"/a\"\nmethod = \"HEAD\"",
                "follow GET",
            ),
            (
                "scopes = [\"droplet:read\"]\npath = \"/a\"",
                "unknown field `path`",
            ),
        ] {
            let path = write_config(
                dir.path(),
                &format!("version = 1\n[[forward_auth.route]]\n{bad}\n"),
            );
            let message = err(Config::load_from(&Env::default(), &flags_with(&path)));
            assert!(message.contains(expected), "{bad}: {message}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(
            dir.path(),
            "version = 1\nlisten = \"127.0.0.1:1\"\nlistn = \"oops\"\n",
        );
        let message = err(Config::load_from(&Env::default(), &flags_with(&path)));
        assert!(message.contains("unknown field `listn`"), "{message}");
        assert!(message.contains("(line 3)"), "{message}");
        assert!(!message.contains('\n'), "one line: {message}");
    }

    #[test]
    fn bad_values_name_their_source() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), "version = 1\nmax_lifetime = \"forever\"\n");
        let message = err(Config::load_from(&Env::default(), &flags_with(&path)));
        assert!(message.starts_with("max_lifetime in "), "{message}");

        let cases = [
            ("KEYWARD_TOKEN_PREFIX", "Bad"),
            ("KEYWARD_LISTEN", "nowhere"),
            ("KEYWARD_ALLOW_NEVER", "maybe"),
            ("KEYWARD_DEFAULT_LIFETIME", "400d"),
            ("KEYWARD_LOG", "info,[[["),
            ("KEYWARD_SERVER_KEY", "abc"),
        ];
        for (var, value) in cases {
            let env = Env::from_pairs([
                ("KEYWARD_DATA_DIR", dir.path().to_str().unwrap()),
                (var, value),
            ]);
            let message = err(Config::load_from(&env, &Flags::default()));
            assert!(
                message.contains(var) || message.contains("longer than max_lifetime"),
                "{var}: {message}"
            );
        }
        let wildcard = write_config(dir.path(), "version = 1\n[catalog]\ndroplet = [\"*\"]\n");
        assert!(
            err(Config::load_from(&Env::default(), &flags_with(&wildcard))).contains("[catalog]")
        );
    }

    #[test]
    fn the_server_key_comes_from_the_env_and_never_shows_in_debug() {
        let dir = tempfile::tempdir().unwrap();
        let env = Env::from_pairs([
            ("KEYWARD_SERVER_KEY", KEY_HEX),
            ("KEYWARD_DATA_DIR", dir.path().to_str().unwrap()),
        ]);
        let c = Config::load_from(&env, &Flags::default()).unwrap();
        assert_eq!(c.server_key.as_ref().unwrap().to_hex().as_str(), KEY_HEX);
        let shown = format!("{c:?} {env:?}");
        assert!(!shown.contains(KEY_HEX), "{shown}");
        assert!(!shown.contains(&KEY_HEX[..16]), "{shown}");
        assert!(shown.contains("[REDACTED]"));
    }

    #[test]
    fn empty_env_values_count_as_unset() {
        let dir = tempfile::tempdir().unwrap();
        let env = Env::from_pairs([
            ("KEYWARD_DATA_DIR", dir.path().to_str().unwrap()),
            ("KEYWARD_LISTEN", ""),
            ("KEYWARD_SERVER_KEY", ""),
        ]);
        let c = Config::load_from(&env, &Flags::default()).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert!(c.server_key.is_none());
    }
}
