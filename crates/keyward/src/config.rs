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
//!                          # ([tls] implies it)
//! # The proxies whose Forwarded / X-Forwarded-For / X-Real-IP name the client; [] = none
//! trusted_proxies = ["10.0.0.0/8", "127.0.0.1/32"]
//! cache_capacity = 1000000
//! warm_cache = true             # fill the cache at start-up, most recently used tokens first
//! cache_snapshot = true         # SQLite: write the cache at shutdown, read it back at start-up
//! cache_snapshot_every = "5m"   # and while running, for a start after a crash
//! log = "info"
//! notify_before = ["7d", "1d"]  # token.expiring reminders before a token expires; [] = none
//! notify_interval = "20s"       # how often each instance looks for reminders due
//! revoke_on_reuse = false       # true: a replaced secret used after its grace revokes the token
//! require_allowed_ips = false   # true: every new token must carry allowed_ips
//! max_tokens_per_user = 0       # live tokens one user may have; 0 = no cap
//!
//! [catalog]
//! droplet = ["read", "create", "update", "delete"]
//!
//! # Connection and request limits (these are the defaults).
//! [http]
//! header_read_timeout = "10s"  # a new connection's first request head must arrive within this
//! idle_timeout = "75s"         # a connection waiting for its next request is closed after this
//! request_timeout = "30s"      # a handler taking longer is answered 503 `timeout`
//! max_connections = 10000      # per listener; lowered to what `ulimit -n` allows
//!
//! # HTTPS on the main listener, both or neither (KEYWARD_TLS_CERT, KEYWARD_TLS_KEY). The files
//! # are re-read every 5 s; a changed pair reaches new connections without a restart.
//! [tls]
//! cert = "/etc/keyward/tls/fullchain.pem"  # the certificate, then any intermediates
//! key = "/etc/keyward/tls/privkey.pem"
//!
//! # /metrics: open on the main listener by default.
//! [metrics]
//! listen = "127.0.0.1:9100"    # serve /metrics only here (the main listener answers 404)
//! require_token = true         # only to a bearer token holding `metrics:read`
//!
//! # Single sign-on through an OpenID provider: on when `issuer` is set, and then `public_url`
//! # (top level, the address people use) is required. The provider must allow the redirect URL
//! # `{public_url}/login/oidc/callback`.
//! public_url = "https://keyward.example.com"
//! [oidc]
//! issuer = "https://accounts.example.com"  # discovery: ISSUER/.well-known/openid-configuration
//! display_name = "Example SSO"         # "Sign in with ..." (default: the issuer's host)
//! client_id = "keyward"
//! client_secret = "..."                # or KEYWARD_OIDC_CLIENT_SECRET (better: not in the file)
//! scopes = ["openid", "email", "profile"]
//! name_claim = "preferred_username"    # a new user's name: this claim, else email, else sub
//! create_users = true                  # a first sign-in creates the person
//! admin_claim = "groups"               # with admin_value: the provider decides who is admin
//! admin_value = "keyward-admins"
//! password_sign_in = true              # false: single sign-on only on the web page
//!
//! # Scopes a request proxied to /v1/auth needs, by the original method and normalized path:
//! # longest path prefix wins; "*" matches any method; HEAD follows GET. With a table, a request
//! # no route matches is refused unless there is a catch-all (`path_prefix = "/"`); `scopes = []`
//! # lets any active token through.
//! [[forward_auth.route]]
//! method = "GET"
//! path_prefix = "/droplets"
//! scopes = ["droplet:read"]
//! ```
//!
//! The server key is deliberately not a file setting: it comes from `KEYWARD_SERVER_KEY` or
//! from `DATA_DIR/server.key`, so a config file can be shared or committed without it.
//!
//! Every setting that is one value (all of the above but `[catalog]` and the route table) is
//! declared once, in the `settings!` invocation below: its key, its variable, its type, its
//! default, an optional flag and check, and whether it is secret or kept out of the file. The
//! type says how the file's value and the variable's text are read (`SettingValue`). The
//! file's shape, [`env`](mod@env), [`SETTINGS`], the fields of [`Config`], its redacting `Debug` and the
//! layering are generated from the declarations, so every setting is layered the same way and
//! an error always names the setting and where its value came from, in one line:
//! `KEYWARD_HTTP_IDLE_TIMEOUT: "x" is not a duration ...`,
//! `max_lifetime in /etc/keyward.toml: ...`, `--database: ...`.

use keyward_core::{
    Catalog, IpRange, LifetimePolicy, NotifyBefore, Prefix, ServerKey, parse_duration,
};
use keyward_server::Settings;
use keyward_server::email::SmtpSettings;
use keyward_server::http::{HttpLimits, TlsFiles};
use keyward_server::service::leaks::GITHUB_KEYS_URL;
use keyward_server::service::{
    AdminClaim, DEFAULT_CACHE_SNAPSHOT_EVERY, DEFAULT_NOTIFY_INTERVAL, ForwardAuthRoute,
    ForwardAuthRoutes, GithubLeakSettings, GitlabLeakSettings, LeakSettings, OidcClientSecret,
    OidcSettings, PresharedToken, WebhookSecret, WebhookSettings,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration as StdDuration;
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
/// The default SQLite file's name in the data dir.
pub const SQLITE_FILE_NAME: &str = "keyward.db";

/// Declares every setting once and generates from the declarations: [`env`](mod@env) (with `env::ALL`),
/// [`SETTINGS`], the file's shape (`FileConfig` and one struct per table), the fields of
/// [`Config`], its redacting `Debug`, and `Config::from_layers`, which gives each setting its
/// flag, else its variable, else its file value, else its default.
///
/// A setting reads `name: Type = default, env CONST = "KEYWARD_..."`, then any of, in this
/// order: `flag field` (the [`Flags`] field over it), `check function` (a further rule on the
/// value), `secret = true` (`Debug` shows `[REDACTED]`), `file = false` (refused in the file).
/// A default may use a setting declared above it (`database` is in `data_dir`). A setting in
/// `tables` is a field of the table's type, which must have exactly the table's settings as
/// public fields (`[http]` fills the server's `HttpLimits`).
///
/// Adding a setting is one declaration (and whatever reads `config.name`):
///
/// ```text
/// /// How long an audit record is kept, e.g. `400d`.
/// audit_retention: Duration = Duration::days(400),
///     env AUDIT_RETENTION = "KEYWARD_AUDIT_RETENTION";
/// ```
macro_rules! settings {
    // One setting's [`Setting`]; `$key` is `name` or `table.name`.
    (@info $key:expr, $var:expr, $ty:ty, [$($doc:literal)*], $($flag:ident)?;
        $($secret:literal)?; $($in_file:literal)?) => {
        Setting {
            key: $key,
            env: $var,
            flag: settings!(@or $(Some(stringify!($flag)))?; None),
            doc: concat!($($doc),*),
            secret: settings!(@or $($secret)?; false),
            in_file: settings!(@or $($in_file)?; true),
            examples: <$ty as SettingValue>::EXAMPLES,
        }
    };
    (@or ; $default:expr) => { $default };
    (@or $value:expr; $default:expr) => { $value };
    (@flag $flags:ident, $ty:ty, $flag:ident) => {
        $flags.$flag.as_ref().map(FlagValue::<$ty>::to_value)
    };
    (@flag $flags:ident, $ty:ty) => { None::<Result<$ty, String>> };
    (@check $ty:ty, $check:path) => { Some($check as Check<$ty>) };
    (@check $ty:ty) => { None::<Check<$ty>> };
    (
        env_only { $( $(#[doc = $edoc:literal])* $EVAR:ident = $evar:literal; )* }
        file_only { $( $(#[doc = $fdoc:literal])* $fname:ident: $fty:ty, )* }
        derived { $( $(#[doc = $ddoc:literal])* $dname:ident: $dty:ty, )* }
        settings { $(
            $(#[doc = $doc:literal])*
            $name:ident: $ty:ty = $default:expr, env $VAR:ident = $var:literal
            $(, flag $flag:ident)? $(, check $check:path)?
            $(, secret = $secret:literal)? $(, file = $in_file:literal)?;
        )* }
        tables { $(
            $(#[doc = $tdoc:literal])*
            $table:ident: $Table:ident, file $TableFile:ident { $(
                $(#[doc = $sdoc:literal])*
                $sname:ident: $sty:ty = $sdefault:expr, env $SVAR:ident = $svar:literal
                $(, flag $sflag:ident)? $(, check $scheck:path)?
                $(, secret = $ssecret:literal)? $(, file = $sin_file:literal)?;
            )* }
        )* }
    ) => {
        /// Environment variables keyward reads; each overrides the file and is overridden by a
        /// flag.
        pub mod env {
            $( $(#[doc = $edoc])* pub const $EVAR: &str = $evar; )*
            $( $(#[doc = $doc])* pub const $VAR: &str = $var; )*
            $($( $(#[doc = $sdoc])* pub const $SVAR: &str = $svar; )*)*

            /// Every variable above.
            pub const ALL: &[&str] = &[$($EVAR,)* $($VAR,)* $($($SVAR,)*)*];
        }

        /// Every setting, as declared.
        pub const SETTINGS: &[Setting] = &[
            $( settings!(@info stringify!($name), $var, $ty, [$($doc)*], $($flag)?;
                $($secret)?; $($in_file)?), )*
            $($( settings!(@info concat!(stringify!($table), ".", stringify!($sname)), $svar,
                $sty, [$($sdoc)*], $($sflag)?; $($ssecret)?; $($sin_file)?), )*)*
        ];

        /// The config file's shape. Every key is optional except `version`.
        #[derive(Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct FileConfig {
            /// Checked by [`VersionProbe`] before this struct is parsed; declared so it is a
            /// known key.
            #[serde(rename = "version")]
            _version: Option<toml::Value>,
            $( $name: Option<<$ty as SettingValue>::File>, )*
            $( $table: Option<$TableFile>, )*
            $( $(#[doc = $fdoc])* $fname: $fty, )*
        }

        $(
            #[doc = concat!("`[", stringify!($table), "]` in the config file.")]
            #[derive(Default, Deserialize)]
            #[serde(deny_unknown_fields)]
            struct $TableFile {
                $( $sname: Option<<$sty as SettingValue>::File>, )*
            }
        )*

        /// keyward's complete configuration, every layer applied and every value checked.
        pub struct Config {
            $( $(#[doc = $doc])* pub $name: $ty, )*
            $( $(#[doc = $tdoc])* pub $table: $Table, )*
            $( $(#[doc = $ddoc])* pub $dname: $dty, )*
        }

        /// The fields of [`Config`] that are not one setting, worked out by `load_from`.
        struct Derived {
            $( $dname: $dty, )*
        }

        impl fmt::Debug for Config {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut out = f.debug_struct("Config");
                $( out.field(
                    stringify!($name),
                    &Shown::of(&self.$name, settings!(@or $($secret)?; false)),
                ); )*
                $( out.field(stringify!($table), &Table(stringify!($Table), &[$(
                    (
                        stringify!($sname),
                        Shown::of(&self.$table.$sname, settings!(@or $($ssecret)?; false)),
                    ),
                )*])); )*
                $( out.field(stringify!($dname), &self.$dname); )*
                out.finish()
            }
        }

        impl Config {
            /// Every declared setting from its flag, else its variable, else the file, else its
            /// default; `origin` names a file key with the file's path.
            fn from_layers(
                env: &Env,
                flags: &Flags,
                file: FileConfig,
                origin: &dyn Fn(&str) -> String,
                derived: Derived,
            ) -> Result<Self, ConfigError> {
                $(
                    let $name: $ty = layer(
                        &settings!(@info stringify!($name), $var, $ty, [$($doc)*], $($flag)?;
                            $($secret)?; $($in_file)?),
                        env,
                        settings!(@flag flags, $ty $(, $flag)?),
                        file.$name,
                        origin,
                        $default,
                        settings!(@check $ty $(, $check)?),
                    )?;
                )*
                $(
                    let $table = {
                        let file = file.$table.unwrap_or_default();
                        $(
                            let $sname: $sty = layer(
                                &settings!(@info
                                    concat!(stringify!($table), ".", stringify!($sname)),
                                    $svar, $sty, [$($sdoc)*], $($sflag)?;
                                    $($ssecret)?; $($sin_file)?),
                                env,
                                settings!(@flag flags, $sty $(, $sflag)?),
                                file.$sname,
                                origin,
                                $sdefault,
                                settings!(@check $sty $(, $scheck)?),
                            )?;
                        )*
                        $Table { $( $sname, )* }
                    };
                )*
                let Derived { $( $dname, )* } = derived;
                Ok(Self { $( $name, )* $( $table, )* $( $dname, )* })
            }
        }
    };
}

settings! {
    // Variables that are not a setting of their own.
    env_only {
        /// Config file path.
        CONFIG = "KEYWARD_CONFIG";
        /// GitLab's pre-shared token for its token revocation API (over `[leaks.gitlab] token`;
        /// setting it turns GitLab's reports on).
        LEAKS_GITLAB_TOKEN = "KEYWARD_LEAKS_GITLAB_TOKEN";
    }
    // Keys of the file that are more than one value, read by `load_from`.
    file_only {
        catalog: Option<BTreeMap<String, Vec<String>>>,
        forward_auth: Option<ForwardAuthFile>,
        webhooks: Option<Vec<WebhookFile>>,
        leaks: Option<LeaksFile>,
    }
    // Fields of `Config` worked out by `load_from`.
    derived {
        /// The config file that was read, if any.
        config_file: Option<PathBuf>,
        /// The scopes tokens may carry (`[catalog]`).
        catalog: Catalog,
        /// Whether no `[catalog]` was configured, so `catalog` is keyward's built-in sample
        /// (`droplet`, `volume`, `account`): `serve` warns about it.
        catalog_is_sample: bool,
        /// The forward-auth route table (`[[forward_auth.route]]`).
        forward_auth: ForwardAuthRoutes,
        /// Single sign-on as the server takes it, when `[oidc]` turns it on.
        sso: Option<OidcSettings>,
        /// Where events are sent (`[[webhooks]]`), secrets from the file or
        /// `KEYWARD_WEBHOOK_SECRET_<N>`.
        webhooks: Vec<WebhookSettings>,
        /// Which leak reporters are accepted (`[leaks.github]`, `[leaks.gitlab]`).
        leaks: LeakSettings,
    }
    settings {
        /// Where `keyward serve` listens.
        // DEFAULT_LISTEN, as a test checks.
        listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080)),
            env LISTEN = "KEYWARD_LISTEN", flag listen;
        /// Where the database, the server key and the default config file live.
        data_dir: PathBuf = PathBuf::from(DEFAULT_DATA_DIR),
            env DATA_DIR = "KEYWARD_DATA_DIR", flag data_dir;
        /// The database every command uses: `sqlite://PATH` or `postgres://...` (default:
        /// `DATA_DIR/keyward.db`).
        database: Database = Database::Sqlite(data_dir.join(SQLITE_FILE_NAME)),
            env DATABASE_URL = "KEYWARD_DATABASE_URL", flag database;
        /// The prefix of new tokens.
        token_prefix: Prefix = Prefix::default(), env TOKEN_PREFIX = "KEYWARD_TOKEN_PREFIX";
        /// The longest a token may live, e.g. `366d`.
        max_lifetime: Duration = LifetimePolicy::default().max_lifetime,
            env MAX_LIFETIME = "KEYWARD_MAX_LIFETIME";
        /// The lifetime of a token created without an expiry, e.g. `30d`.
        default_lifetime: Duration = LifetimePolicy::default().default_lifetime,
            env DEFAULT_LIFETIME = "KEYWARD_DEFAULT_LIFETIME";
        /// Whether tokens may never expire (`true`/`false`).
        allow_never: bool = false, env ALLOW_NEVER = "KEYWARD_ALLOW_NEVER";
        /// Whether the web page's session cookie is always `Secure` (serve over HTTPS).
        secure_cookies: bool = false, env SECURE_COOKIES = "KEYWARD_SECURE_COOKIES";
        /// The proxies whose forwarding headers (`Forwarded`, `X-Forwarded-For`, `X-Real-IP`)
        /// name the client, as addresses or CIDR ranges, e.g. `["10.0.0.0/8", "127.0.0.1/32"]`;
        /// `[]` believes no one's, and the client is the connection's peer.
        trusted_proxies: Vec<IpRange> = Vec::new(),
            env TRUSTED_PROXIES = "KEYWARD_TRUSTED_PROXIES";
        /// How many tokens the verification cache keeps.
        cache_capacity: u64 = 1_000_000, env CACHE_CAPACITY = "KEYWARD_CACHE_CAPACITY";
        /// Whether `keyward serve` warms the verification cache at start-up, in the background,
        /// most recently used tokens first (`true`/`false`).
        warm_cache: bool = true, env WARM_CACHE = "KEYWARD_WARM_CACHE";
        /// Whether `keyward serve` over SQLite writes the verification cache to
        /// `DATABASE-cache` (beside the database file) at a clean shutdown and every
        /// `cache_snapshot_every`, for the next start-up's warm-up to read back instead of the
        /// store (`true`/`false`; only with `warm_cache`).
        cache_snapshot: bool = true, env CACHE_SNAPSHOT = "KEYWARD_CACHE_SNAPSHOT";
        /// How often `keyward serve` also writes that snapshot while it runs, so that a start
        /// after a crash finds a recent one, e.g. `5m`; at most a day (the change log keeps a
        /// day, and an older snapshot never loads).
        cache_snapshot_every: StdDuration = DEFAULT_CACHE_SNAPSHOT_EVERY,
            env CACHE_SNAPSHOT_EVERY = "KEYWARD_CACHE_SNAPSHOT_EVERY", check within_a_day;
        /// The tracing filter for the server's logs, e.g. `info` or `keyward_server=debug`.
        log: String = DEFAULT_LOG.to_owned(), env LOG = "KEYWARD_LOG", check log_filter;
        /// The server key, 64 hexadecimal characters; `None` means `DATA_DIR/server.key`.
        server_key: Option<ServerKey> = None, env SERVER_KEY = "KEYWARD_SERVER_KEY",
            secret = true, file = false;
        /// The server key ring, one key per line, the current key first; wins over
        /// `KEYWARD_SERVER_KEY` and `DATA_DIR/server.key`.
        server_keys: Option<ServerKeys> = None, env SERVER_KEYS = "KEYWARD_SERVER_KEYS",
            secret = true, file = false;
        /// The address people use to reach keyward, e.g. `https://keyward.example.com` (single
        /// sign-on's redirect URL is under it).
        public_url: Option<HttpUrl> = None, env PUBLIC_URL = "KEYWARD_PUBLIC_URL";
        /// How long a webhook delivery is retried (with exponential backoff) before it is
        /// marked failed, e.g. `1d`.
        webhook_retry_for: Duration = Duration::days(1),
            env WEBHOOK_RETRY_FOR = "KEYWARD_WEBHOOK_RETRY_FOR";
        /// When owners are reminded that a token expires (`token.expiring`), e.g.
        /// `["7d", "1d"]`; `[]` sends none.
        notify_before: NotifyBefore = NotifyBefore::default(),
            env NOTIFY_BEFORE = "KEYWARD_NOTIFY_BEFORE";
        /// How often each instance looks for tokens due for a reminder or at their expiry,
        /// e.g. `20s` (tests set `1s`).
        notify_interval: StdDuration = DEFAULT_NOTIFY_INTERVAL,
            env NOTIFY_INTERVAL = "KEYWARD_NOTIFY_INTERVAL";
        /// Whether a replaced secret presented after its grace period revokes its token
        /// (`true`/`false`); it is recorded as `token.rotated_secret_used` either way.
        revoke_on_reuse: bool = false, env REVOKE_ON_REUSE = "KEYWARD_REVOKE_ON_REUSE";
        /// Whether every new token must carry `allowed_ips` (`true`/`false`).
        require_allowed_ips: bool = false, env REQUIRE_ALLOWED_IPS = "KEYWARD_REQUIRE_ALLOWED_IPS";
        /// The most tokens, neither revoked nor expired, one user may have; 0 = no cap.
        max_tokens_per_user: u64 = 0, env MAX_TOKENS_PER_USER = "KEYWARD_MAX_TOKENS_PER_USER";
    }
    tables {
        /// Connection and request limits (`[http]`).
        http: HttpLimits, file HttpFile {
            /// How long a new connection may take to send its first request head, e.g. `10s`.
            header_read_timeout: StdDuration = HttpLimits::default().header_read_timeout,
                env HTTP_HEADER_READ_TIMEOUT = "KEYWARD_HTTP_HEADER_READ_TIMEOUT";
            /// How long a connection may wait for its next request, e.g. `75s`.
            idle_timeout: StdDuration = HttpLimits::default().idle_timeout,
                env HTTP_IDLE_TIMEOUT = "KEYWARD_HTTP_IDLE_TIMEOUT";
            /// How long a request may take before it is answered 503, e.g. `30s`.
            request_timeout: StdDuration = HttpLimits::default().request_timeout,
                env HTTP_REQUEST_TIMEOUT = "KEYWARD_HTTP_REQUEST_TIMEOUT";
            /// How many connections each listener keeps open at once.
            max_connections: usize = HttpLimits::default().max_connections,
                env HTTP_MAX_CONNECTIONS = "KEYWARD_HTTP_MAX_CONNECTIONS", check at_least_one;
        }
        /// Where `/metrics` is served and to whom (`[metrics]`).
        metrics: MetricsConfig, file MetricsFile {
            /// A separate address serving `/metrics` alone.
            listen: Option<SocketAddr> = None, env METRICS_LISTEN = "KEYWARD_METRICS_LISTEN";
            /// Whether `/metrics` needs a bearer token holding `metrics:read` (`true`/`false`).
            require_token: bool = false,
                env METRICS_REQUIRE_TOKEN = "KEYWARD_METRICS_REQUIRE_TOKEN";
        }
        /// HTTPS on the main listener (`[tls]`): on when `cert` and `key` are set, both or
        /// neither.
        tls: TlsConfig, file TlsFile {
            /// The certificate chain, PEM: the server's certificate first, then intermediates.
            cert: Option<PathBuf> = None, env TLS_CERT = "KEYWARD_TLS_CERT";
            /// The certificate's private key, PEM (PKCS#8, PKCS#1 or SEC1).
            key: Option<PathBuf> = None, env TLS_KEY = "KEYWARD_TLS_KEY";
        }
        /// Email to tokens' owners (`[smtp]`): on when `url` is set.
        smtp: SmtpConfig, file SmtpFile {
            /// `smtp://host:port` (add `?tls=required` for STARTTLS), `smtps://host:port`
            /// (TLS), with `user:password@` to authenticate.
            url: Option<SmtpUrl> = None, env SMTP_URL = "KEYWARD_SMTP_URL", secret = true;
            /// The sender, e.g. `keyward <keyward@example.com>`.
            from: Option<String> = None, env SMTP_FROM = "KEYWARD_SMTP_FROM";
        }
        /// Single sign-on through an OpenID provider (`[oidc]`): on when `issuer` is set.
        oidc: OidcConfig, file OidcFile {
            /// The provider's issuer URL, exactly as its ID tokens say it.
            issuer: Option<HttpUrl> = None, env OIDC_ISSUER = "KEYWARD_OIDC_ISSUER";
            /// What the sign-in page calls the provider (default: the issuer's host).
            display_name: Option<String> = None,
                env OIDC_DISPLAY_NAME = "KEYWARD_OIDC_DISPLAY_NAME";
            /// keyward's client id at the provider.
            client_id: String = "keyward".to_owned(), env OIDC_CLIENT_ID = "KEYWARD_OIDC_CLIENT_ID";
            /// keyward's client secret at the provider (none: a public client, PKCE alone).
            client_secret: Option<OidcClientSecret> = None,
                env OIDC_CLIENT_SECRET = "KEYWARD_OIDC_CLIENT_SECRET", secret = true;
            /// The scopes asked for, e.g. `["openid", "email", "profile"]` (`openid` always).
            scopes: Vec<String> = DEFAULT_OIDC_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
                env OIDC_SCOPES = "KEYWARD_OIDC_SCOPES", check oidc_scopes;
            /// The claim a new user's name comes from; then `email`, then `sub`.
            name_claim: String = "preferred_username".to_owned(),
                env OIDC_NAME_CLAIM = "KEYWARD_OIDC_NAME_CLAIM";
            /// Whether a first sign-in creates the person (`true`/`false`).
            create_users: bool = true, env OIDC_CREATE_USERS = "KEYWARD_OIDC_CREATE_USERS";
            /// The claim that makes an admin (with `admin_value`), e.g. `groups`.
            admin_claim: Option<String> = None, env OIDC_ADMIN_CLAIM = "KEYWARD_OIDC_ADMIN_CLAIM";
            /// The value of `admin_claim` (or one of its values) that makes an admin.
            admin_value: Option<String> = None, env OIDC_ADMIN_VALUE = "KEYWARD_OIDC_ADMIN_VALUE";
            /// Whether the web page also offers the password form (`true`/`false`).
            password_sign_in: bool = true,
                env OIDC_PASSWORD_SIGN_IN = "KEYWARD_OIDC_PASSWORD_SIGN_IN";
        }
    }
}

/// One setting as declared: where it may be set and how it is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// Its key in the config file; `table.key` for a key in a table such as `[http]`.
    pub key: &'static str,
    /// The environment variable over the file.
    pub env: &'static str,
    /// The [`Flags`] field over the variable, if any (`data_dir` is `--data-dir`).
    pub flag: Option<&'static str>,
    /// What it is, as its declaration says.
    pub doc: &'static str,
    /// Whether its value is secret: `Debug` shows `[REDACTED]` when it is set.
    pub secret: bool,
    /// Whether the config file may set it (the server key it may not).
    pub in_file: bool,
    /// Two valid values, written as in the config file (the variable takes them unquoted).
    pub examples: [&'static str; 2],
}

/// A type a setting can have: how the file's value and a variable's text become one.
trait SettingValue: Sized + fmt::Debug {
    /// What the config file holds for it. serde reads it, so a value of the wrong TOML type is
    /// reported with its line.
    type File: DeserializeOwned;
    /// Two valid values as TOML, different from each other (for [`Setting::examples`]).
    const EXAMPLES: [&'static str; 2];
    /// The value from the config file.
    fn from_file(value: Self::File) -> Result<Self, String>;
    /// The value from an environment variable, or a flag given as text. The message need not
    /// name the setting, and must not repeat a secret.
    fn from_text(text: &str) -> Result<Self, String>;
    /// Whether a value is there at all: only an `Option` may be unset.
    fn is_set(&self) -> bool {
        true
    }
}

impl SettingValue for SocketAddr {
    type File = SocketAddr;
    const EXAMPLES: [&'static str; 2] = ["\"127.0.0.1:9001\"", "\"127.0.0.1:9002\""];
    fn from_file(value: SocketAddr) -> Result<Self, String> {
        Ok(value)
    }
    fn from_text(text: &str) -> Result<Self, String> {
        text.parse()
            .map_err(|_| format!("{text:?} is not an address such as {DEFAULT_LISTEN}"))
    }
}

impl SettingValue for PathBuf {
    type File = PathBuf;
    const EXAMPLES: [&'static str; 2] = ["\"/srv/keyward-a\"", "\"/srv/keyward-b\""];
    fn from_file(value: PathBuf) -> Result<Self, String> {
        Ok(value)
    }
    fn from_text(text: &str) -> Result<Self, String> {
        Ok(PathBuf::from(text))
    }
}

impl SettingValue for String {
    type File = String;
    const EXAMPLES: [&'static str; 2] = ["\"debug\"", "\"warn\""];
    fn from_file(value: String) -> Result<Self, String> {
        Ok(value)
    }
    fn from_text(text: &str) -> Result<Self, String> {
        Ok(text.to_owned())
    }
}

impl SettingValue for bool {
    type File = bool;
    const EXAMPLES: [&'static str; 2] = ["true", "false"];
    fn from_file(value: bool) -> Result<Self, String> {
        Ok(value)
    }
    fn from_text(text: &str) -> Result<Self, String> {
        parse_bool(text).ok_or_else(|| format!("{text:?} is not true or false"))
    }
}

impl SettingValue for u64 {
    type File = u64;
    const EXAMPLES: [&'static str; 2] = ["10", "20"];
    fn from_file(value: u64) -> Result<Self, String> {
        Ok(value)
    }
    fn from_text(text: &str) -> Result<Self, String> {
        text.parse()
            .map_err(|_| format!("{text:?} is not a whole number"))
    }
}

impl SettingValue for usize {
    type File = u64;
    const EXAMPLES: [&'static str; 2] = ["10", "20"];
    fn from_file(value: u64) -> Result<Self, String> {
        usize::try_from(value).map_err(|_| format!("{value} is too large"))
    }
    fn from_text(text: &str) -> Result<Self, String> {
        text.parse()
            .map_err(|_| format!("{text:?} is not a whole number"))
    }
}

/// A lifetime, written `366d` (see [`parse_duration`]).
impl SettingValue for Duration {
    type File = String;
    // Between the defaults of default_lifetime (30d) and max_lifetime (366d), so that either
    // may be set alone.
    const EXAMPLES: [&'static str; 2] = ["\"31d\"", "\"32d\""];
    fn from_file(value: String) -> Result<Self, String> {
        Self::from_text(&value)
    }
    fn from_text(text: &str) -> Result<Self, String> {
        parse_duration(text).map_err(|e| e.to_string())
    }
}

/// A timeout, written `10s` (see [`parse_duration`]; always positive).
impl SettingValue for StdDuration {
    type File = String;
    const EXAMPLES: [&'static str; 2] = ["\"5s\"", "\"2m\""];
    fn from_file(value: String) -> Result<Self, String> {
        Self::from_text(&value)
    }
    fn from_text(text: &str) -> Result<Self, String> {
        let duration = parse_duration(text).map_err(|e| e.to_string())?;
        StdDuration::try_from(duration).map_err(|_| format!("{text:?} is not positive"))
    }
}

/// Expiry reminder thresholds, written `["7d", "1d"]` (each as [`parse_duration`] reads it); a
/// variable may also list them as `7d,1d`.
impl SettingValue for NotifyBefore {
    type File = Vec<String>;
    const EXAMPLES: [&'static str; 2] = ["[\"14d\", \"2d\"]", "[]"];
    fn from_file(value: Vec<String>) -> Result<Self, String> {
        NotifyBefore::parse(&value).map_err(|e| e.to_string())
    }
    fn from_text(text: &str) -> Result<Self, String> {
        Self::from_file(Vec::<String>::from_text(text)?)
    }
}

/// Address ranges, written `["10.0.0.0/8", "2001:db8::1"]` (each as [`IpRange::parse`] reads
/// it); a variable may also list them as `10.0.0.0/8,2001:db8::1`.
impl SettingValue for Vec<IpRange> {
    type File = Vec<String>;
    const EXAMPLES: [&'static str; 2] = ["[\"10.0.0.0/8\", \"127.0.0.1\"]", "[\"2001:db8::/32\"]"];
    fn from_file(value: Vec<String>) -> Result<Self, String> {
        value
            .iter()
            .map(|range| IpRange::parse(range).map_err(|e| e.to_string()))
            .collect()
    }
    fn from_text(text: &str) -> Result<Self, String> {
        Self::from_file(Vec::<String>::from_text(text)?)
    }
}

impl SettingValue for Prefix {
    type File = String;
    const EXAMPLES: [&'static str; 2] = ["\"acme\"", "\"envp\""];
    fn from_file(value: String) -> Result<Self, String> {
        Self::from_text(&value)
    }
    fn from_text(text: &str) -> Result<Self, String> {
        Prefix::parse(text).map_err(|e| e.to_string())
    }
}

impl SettingValue for Database {
    type File = String;
    // The second carries a password, which `Debug` must never show.
    const EXAMPLES: [&'static str; 2] = [
        "\"sqlite:///srv/keyward/a.db\"",
        "\"postgres://keyward:pw-never-shown@db.internal:5432/keyward\"",
    ];
    fn from_file(value: String) -> Result<Self, String> {
        Self::from_text(&value)
    }
    fn from_text(text: &str) -> Result<Self, String> {
        Database::parse(text)
    }
}

impl SettingValue for ServerKey {
    type File = String;
    const EXAMPLES: [&'static str; 2] = [
        "\"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\"",
        "\"f0e1d2c3b4a5968778695a4b3c2d1e0f00112233445566778899aabbccddeeff\"",
    ];
    fn from_file(value: String) -> Result<Self, String> {
        Self::from_text(&value)
    }
    fn from_text(text: &str) -> Result<Self, String> {
        // The message never repeats the text: it is a secret.
        ServerKey::from_hex(text).map_err(|e| e.to_string())
    }
}

/// A key ring given whole (`KEYWARD_SERVER_KEYS`): one key per line, the current key first.
/// `Debug` shows key ids only.
#[derive(Debug)]
pub struct ServerKeys(pub Vec<ServerKey>);

impl SettingValue for ServerKeys {
    type File = String;
    const EXAMPLES: [&'static str; 2] = [
        "\"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\"",
        "\"f0e1d2c3b4a5968778695a4b3c2d1e0f00112233445566778899aabbccddeeff\\n000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\"",
    ];
    fn from_file(value: String) -> Result<Self, String> {
        Self::from_text(&value)
    }
    fn from_text(text: &str) -> Result<Self, String> {
        // The message names a line, never its text: it is a secret.
        keyward_core::parse_key_ring(text)
            .map(Self)
            .map_err(|e| e.to_string())
    }
}

/// A setting with no default: unset unless a layer gives it.
impl<T: SettingValue> SettingValue for Option<T> {
    type File = T::File;
    const EXAMPLES: [&'static str; 2] = T::EXAMPLES;
    fn from_file(value: T::File) -> Result<Self, String> {
        T::from_file(value).map(Some)
    }
    fn from_text(text: &str) -> Result<Self, String> {
        T::from_text(text).map(Some)
    }
    fn is_set(&self) -> bool {
        self.is_some()
    }
}

/// A flag's value: already of the setting's type (clap parsed it), or text read as the
/// variable's would be.
trait FlagValue<T> {
    /// The setting's value.
    fn to_value(&self) -> Result<T, String>;
}

impl<T: SettingValue + Clone> FlagValue<T> for T {
    fn to_value(&self) -> Result<T, String> {
        Ok(self.clone())
    }
}

impl FlagValue<Database> for String {
    fn to_value(&self) -> Result<Database, String> {
        Database::from_text(self)
    }
}

/// A further rule on a setting's value (`check` in its declaration).
type Check<T> = fn(&T) -> Result<(), String>;

/// One setting, layered: the flag, else the variable, else the file, else `default`; then
/// `check`. An error names the setting where its value came from: `--flag`, `KEYWARD_...` or
/// `key in FILE`.
fn layer<T: SettingValue>(
    setting: &Setting,
    env: &Env,
    flag: Option<Result<T, String>>,
    file: Option<T::File>,
    origin: &dyn Fn(&str) -> String,
    default: T,
    check: Option<Check<T>>,
) -> Result<T, ConfigError> {
    let (value, from) = if let Some(value) = flag {
        let name = setting.flag.unwrap_or(setting.key).replace('_', "-");
        (value, format!("--{name}"))
    } else if let Some(text) = env.get(setting.env) {
        (T::from_text(text), setting.env.to_owned())
    } else if let Some(value) = file {
        let from = origin(setting.key);
        if !setting.in_file {
            return Err(ConfigError::new(format!(
                "{from}: not a config file setting; set {} instead",
                setting.env
            )));
        }
        (T::from_file(value), from)
    } else {
        (Ok(default), format!("the default {}", setting.key))
    };
    value
        .and_then(|value| match check {
            Some(check) => check(&value).map(|()| value),
            None => Ok(value),
        })
        .map_err(|e| ConfigError::new(format!("{from}: {e}")))
}

fn log_filter(filter: &String) -> Result<(), String> {
    tracing_subscriber::EnvFilter::try_new(filter)
        .map(drop)
        .map_err(|e| format!("{filter:?} is not a log filter: {e}"))
}

/// A snapshot's period: a start refuses a snapshot older than the change log (a day), so a
/// longer period would write files that no start after a crash could use.
fn within_a_day(period: &StdDuration) -> Result<(), String> {
    if *period <= StdDuration::from_secs(24 * 60 * 60) {
        Ok(())
    } else {
        Err(format!(
            "{period:?} is longer than a day (the change log keeps a day, and an older snapshot never loads)"
        ))
    }
}

fn at_least_one(n: &usize) -> Result<(), String> {
    if *n >= 1 {
        Ok(())
    } else {
        Err(format!("{n} is not a whole number of at least 1"))
    }
}

/// A setting's value in `Debug`: `[REDACTED]` if it is a secret that is set.
struct Shown<'a> {
    value: &'a dyn fmt::Debug,
    redacted: bool,
}

impl<'a> Shown<'a> {
    fn of<T: SettingValue>(value: &'a T, secret: bool) -> Self {
        Self {
            value,
            redacted: secret && value.is_set(),
        }
    }
}

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.redacted {
            // Whether a secret was given, never the secret (not even a key's id: it names it).
            f.write_str("[REDACTED]")
        } else {
            self.value.fmt(f)
        }
    }
}

/// A table's settings in `Debug`, each [`Shown`].
struct Table<'a>(&'static str, &'a [(&'static str, Shown<'a>)]);

impl fmt::Debug for Table<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct(self.0);
        for (name, value) in self.1 {
            out.field(name, value);
        }
        out.finish()
    }
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
        // `scopes = []`: any active token (for a catch-all, say).
        let scopes = if route.scopes.is_empty() {
            keyward_core::Scopes::default()
        } else {
            keyward_core::Scopes::parse(&route.scopes)
                .map_err(|e| ConfigError::new(format!("{}: {e}", here())))?
        };
        if !scopes.is_empty() {
            catalog
                .check(&scopes)
                .map_err(|e| ConfigError::new(format!("{}: {e}", here())))?;
        }
        parsed.push(
            ForwardAuthRoute::new(&route.method, &route.path_prefix, scopes)
                .map_err(|e| ConfigError::new(format!("{}: {e}", here())))?,
        );
    }
    ForwardAuthRoutes::new(parsed)
        .map_err(|e| ConfigError::new(format!("{}: {e}", origin("[[forward_auth.route]]"))))
}

/// One `[[webhooks]]`. No `Debug`: it holds the secret's text.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookFile {
    url: String,
    secret: Option<String>,
    events: Vec<String>,
}

/// The variable that gives the `n`th webhook's secret (counting from 1, in file order).
pub fn webhook_secret_var(n: usize) -> String {
    format!("KEYWARD_WEBHOOK_SECRET_{n}")
}

/// Reads `[[webhooks]]`: each secret from `KEYWARD_WEBHOOK_SECRET_<N>` (the Nth webhook,
/// counting from 1) or else the file, in the Standard Webhooks format; URLs distinct.
fn webhooks(
    file: Option<Vec<WebhookFile>>,
    env: &Env,
    origin: &dyn Fn(&str) -> String,
) -> Result<Vec<WebhookSettings>, ConfigError> {
    let mut parsed: Vec<WebhookSettings> = Vec::new();
    for (i, hook) in file.unwrap_or_default().into_iter().enumerate() {
        let var = webhook_secret_var(i + 1);
        let (text, from) = match (env.get(&var), &hook.secret) {
            (Some(text), _) => (zeroize::Zeroizing::new(text.to_owned()), var.clone()),
            (None, Some(text)) => (
                zeroize::Zeroizing::new(text.clone()),
                origin(&format!("webhooks[{i}].secret")),
            ),
            (None, None) => {
                return Err(ConfigError::new(format!(
                    "{}: a webhook needs a secret (secret = \"whsec_…\", or {var})",
                    origin(&format!("webhooks[{i}]"))
                )));
            }
        };
        let secret =
            WebhookSecret::parse(&text).map_err(|e| ConfigError::new(format!("{from}: {e}")))?;
        let settings = WebhookSettings {
            url: hook.url,
            secret,
            events: hook.events,
        };
        settings
            .check()
            .map_err(|e| ConfigError::new(format!("{}: {e}", origin(&format!("webhooks[{i}]")))))?;
        if parsed.iter().any(|p| p.url == settings.url) {
            return Err(ConfigError::new(format!(
                "{}: the url {:?} is another webhook's too; give each webhook its own",
                origin(&format!("webhooks[{i}]")),
                settings.url
            )));
        }
        parsed.push(settings);
    }
    Ok(parsed)
}

/// `[leaks]`: the leak reporters outside keyward, each on when its table is there.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaksFile {
    github: Option<GithubLeaksFile>,
    gitlab: Option<GitlabLeaksFile>,
}

/// `[leaks.github]`: GitHub's secret scanning partner program.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GithubLeaksFile {
    keys_url: Option<String>,
}

/// `[leaks.gitlab]`: GitLab's token revocation API.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GitlabLeaksFile {
    token: Option<String>,
}

/// Shortest pre-shared token GitLab may be given: anyone who has it can revoke any keyward
/// token they also hold, so it must not be guessable.
const MIN_GITLAB_TOKEN_CHARS: usize = 24;

/// The leak reporters as the server takes them.
fn leak_settings(
    file: Option<LeaksFile>,
    env: &Env,
    origin: &dyn Fn(&str) -> String,
) -> Result<LeakSettings, ConfigError> {
    let file = file.unwrap_or_default();
    let github = file
        .github
        .map(|github| {
            let url = github.keys_url.as_deref().unwrap_or(GITHUB_KEYS_URL);
            HttpUrl::parse(url)
                .map(|url| GithubLeakSettings {
                    keys_url: url.as_str().to_owned(),
                })
                .map_err(|e| ConfigError::new(format!("{}: {e}", origin("leaks.github.keys_url"))))
        })
        .transpose()?;
    let (token, from) = match env.get(env::LEAKS_GITLAB_TOKEN) {
        Some(token) => (Some(token.to_owned()), env::LEAKS_GITLAB_TOKEN.to_owned()),
        None => match file.gitlab {
            Some(GitlabLeaksFile { token: Some(token) }) => {
                (Some(token), origin("leaks.gitlab.token"))
            }
            Some(GitlabLeaksFile { token: None }) => {
                return Err(ConfigError::new(format!(
                    "{} needs token: the pre-shared token GitLab sends (or {})",
                    origin("[leaks.gitlab]"),
                    env::LEAKS_GITLAB_TOKEN
                )));
            }
            None => (None, String::new()),
        },
    };
    let gitlab = match token {
        Some(token)
            if token.chars().count() < MIN_GITLAB_TOKEN_CHARS
                || token.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            return Err(ConfigError::new(format!(
                "{from}: GitLab's token must be at least {MIN_GITLAB_TOKEN_CHARS} characters without spaces (generate one, e.g. openssl rand -hex 32)"
            )));
        }
        Some(token) => Some(GitlabLeakSettings {
            token: PresharedToken::new(token),
        }),
        None => None,
    };
    Ok(LeakSettings { github, gitlab })
}

/// Only the version, read first so that a file of another version is refused for its version
/// rather than for a key this keyward does not know.
#[derive(Deserialize)]
struct VersionProbe {
    version: Option<toml::Value>,
}

impl Config {
    /// The configuration of this process: its `KEYWARD_*` environment and `flags`.
    pub fn load(flags: &Flags) -> Result<Self, ConfigError> {
        Self::load_from(&Env::from_process()?, flags)
    }

    /// The configuration from an explicit environment and flags (reads the config file).
    pub fn load_from(env: &Env, flags: &Flags) -> Result<Self, ConfigError> {
        // The data dir is where the config file is looked for, so it cannot come from the file.
        let data_dir_before_file = flags
            .data_dir
            .clone()
            .or_else(|| env.get(env::DATA_DIR).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let (mut file, config_file) = match flags
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

        let declared = file.catalog.take();
        let catalog_is_sample = declared.is_none();
        let catalog = match declared {
            Some(resources) => Catalog::new(resources)
                .map_err(|e| ConfigError::new(format!("{}: {e}", origin("[catalog]"))))?,
            None => Catalog::sample(),
        };
        let forward_auth = forward_auth_routes(file.forward_auth.take(), &catalog, &origin)?;
        let webhooks = webhooks(file.webhooks.take(), env, &origin)?;
        let leaks = leak_settings(file.leaks.take(), env, &origin)?;
        let derived = Derived {
            config_file: config_file.clone(),
            catalog,
            catalog_is_sample,
            forward_auth,
            sso: None,
            webhooks,
            leaks,
        };
        let mut config = Self::from_layers(env, flags, file, &origin, derived)?;
        config.sso = config.single_sign_on()?;

        // Rules between settings.
        if config.default_lifetime > config.max_lifetime {
            return Err(ConfigError::new(format!(
                "default_lifetime ({} days) is longer than max_lifetime ({} days)",
                config.default_lifetime.whole_days(),
                config.max_lifetime.whole_days()
            )));
        }
        config.tls.check()?;
        if let Some(url) = &config.smtp.url {
            let Some(from) = &config.smtp.from else {
                return Err(ConfigError::new(
                    "[smtp] needs from: the sender of keyward's mail",
                ));
            };
            SmtpSettings {
                url: url.0.clone(),
                from: from.clone(),
            }
            .check()
            .map_err(|e| ConfigError::new(format!("[smtp]: {e}")))?;
        }
        if let Some(addr) = config.metrics.listen
            && addr == config.listen
            && addr.port() != 0
        {
            return Err(ConfigError::new(format!(
                "metrics.listen ({addr}) is the address of listen: give /metrics another port, or leave metrics.listen out to serve it there"
            )));
        }
        Ok(config)
    }

    /// `[oidc]` and `public_url` as the server takes them, when `oidc.issuer` is set.
    fn single_sign_on(&self) -> Result<Option<OidcSettings>, ConfigError> {
        let oidc = &self.oidc;
        let Some(issuer) = &oidc.issuer else {
            return Ok(None);
        };
        let Some(public_url) = &self.public_url else {
            return Err(ConfigError::new(format!(
                "[oidc] needs public_url (or {}): the address people use to reach keyward, \
                 e.g. https://keyward.example.com; the provider sends them back to \
                 PUBLIC_URL{}",
                env::PUBLIC_URL,
                OidcSettings::CALLBACK_PATH
            )));
        };
        let admin = match (&oidc.admin_claim, &oidc.admin_value) {
            (Some(claim), Some(value)) => Some(AdminClaim {
                claim: claim.clone(),
                value: value.clone(),
            }),
            (None, None) => None,
            _ => {
                return Err(ConfigError::new(
                    "oidc.admin_claim and oidc.admin_value go together: set both, or neither",
                ));
            }
        };
        let settings = OidcSettings {
            issuer: issuer.as_str().to_owned(),
            display_name: oidc
                .display_name
                .clone()
                .unwrap_or_else(|| issuer.host().to_owned()),
            client_id: oidc.client_id.clone(),
            client_secret: oidc.client_secret.clone(),
            redirect_url: format!(
                "{}{}",
                public_url.as_str().trim_end_matches('/'),
                OidcSettings::CALLBACK_PATH
            ),
            scopes: oidc.scopes.clone(),
            name_claim: oidc.name_claim.clone(),
            create_users: oidc.create_users,
            admin,
            password_sign_in: oidc.password_sign_in,
        };
        settings
            .check()
            .map_err(|e| ConfigError::new(format!("[oidc]: {e}")))?;
        Ok(Some(settings))
    }

    /// Where the verification cache's snapshot is kept: beside the SQLite file, as
    /// `FILE-cache` (as SQLite keeps `FILE-wal`). `None` with `cache_snapshot = false` or
    /// `warm_cache = false`, and on PostgreSQL, whose many instances own no file of the store's.
    pub fn cache_snapshot_path(&self) -> Option<PathBuf> {
        match &self.database {
            // Read back by the warm-up: without it, none is written either.
            Database::Sqlite(path) if self.cache_snapshot && self.warm_cache => {
                let mut file = path.as_os_str().to_owned();
                file.push("-cache");
                Some(PathBuf::from(file))
            }
            _ => None,
        }
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
            warm_cache: self.warm_cache,
            cache_snapshot: self.cache_snapshot_path(),
            cache_snapshot_every: self.cache_snapshot_every,
            // Over HTTPS the browser always arrives over HTTPS.
            secure_cookies: self.secure_cookies || self.tls.files().is_some(),
            forward_auth: self.forward_auth.clone(),
            metrics_require_token: self.metrics.require_token,
            oidc: self.sso.clone(),
            webhooks: self.webhooks.clone(),
            webhook_retry_for: self.webhook_retry_for,
            smtp: self.smtp.url.clone().map(|url| SmtpSettings {
                url: url.0,
                from: self.smtp.from.clone().unwrap_or_default(),
            }),
            leaks: self.leaks.clone(),
            notify_before: self.notify_before.clone(),
            notify_interval: self.notify_interval,
            revoke_on_reuse: self.revoke_on_reuse,
            require_allowed_ips: self.require_allowed_ips,
            max_tokens_per_user: u32::try_from(self.max_tokens_per_user).unwrap_or(u32::MAX),
        }
    }

    /// The default SQLite database file, `DATA_DIR/keyward.db` (used unless `database` names
    /// another).
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join(SQLITE_FILE_NAME)
    }

    /// The server key ring file (used when neither `KEYWARD_SERVER_KEYS` nor
    /// `KEYWARD_SERVER_KEY` is set).
    pub fn server_key_path(&self) -> PathBuf {
        self.data_dir.join("server.key")
    }
}

/// `[metrics]`, every layer applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsConfig {
    /// A separate address that serves `/metrics` alone; `None` serves it on the main listener.
    pub listen: Option<SocketAddr>,
    /// Whether `/metrics` answers only to a bearer token holding `metrics:read`.
    pub require_token: bool,
}

/// `[tls]`, every layer applied: HTTPS when both files are named.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// The certificate chain's PEM file.
    pub cert: Option<PathBuf>,
    /// The private key's PEM file.
    pub key: Option<PathBuf>,
}

impl TlsConfig {
    /// The two files to serve HTTPS with; `None` for plain HTTP.
    pub fn files(&self) -> Option<TlsFiles> {
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        }
    }

    /// Both files or neither: one alone would serve plain HTTP where HTTPS was meant.
    fn check(&self) -> Result<(), ConfigError> {
        let (given, missing, missing_var) = match (&self.cert, &self.key) {
            (Some(_), None) => ("tls.cert", "tls.key", env::TLS_KEY),
            (None, Some(_)) => ("tls.key", "tls.cert", env::TLS_CERT),
            _ => return Ok(()),
        };
        Err(ConfigError::new(format!(
            "{given} is set but {missing} is not: HTTPS needs both the certificate chain \
             (tls.cert, {}) and its private key (tls.key, {}); set {missing} (or {missing_var}) \
             too, or neither to serve plain HTTP",
            env::TLS_CERT,
            env::TLS_KEY
        )))
    }
}

/// `[smtp]`, every layer applied.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// The SMTP server's URL.
    pub url: Option<SmtpUrl>,
    /// The sender.
    pub from: Option<String>,
}

/// An SMTP server's URL, `smtp://` or `smtps://`. It may hold a password: its `Debug` shows
/// nothing and an error never repeats it.
#[derive(Clone)]
pub struct SmtpUrl(String);

impl fmt::Debug for SmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SmtpUrl([REDACTED])")
    }
}

impl SettingValue for SmtpUrl {
    type File = String;
    const EXAMPLES: [&'static str; 2] = [
        "\"smtp://mail.example.com:25\"",
        "\"smtps://mail.example.com:465\"",
    ];
    fn from_file(value: String) -> Result<Self, String> {
        Self::from_text(&value)
    }
    fn from_text(text: &str) -> Result<Self, String> {
        if text.starts_with("smtp://") || text.starts_with("smtps://") {
            Ok(Self(text.to_owned()))
        } else {
            Err("an SMTP URL starts with smtp:// or smtps://".to_owned())
        }
    }
}

/// `[oidc]`, every layer applied (see [`OidcSettings`] for what each means). Single sign-on is
/// on when `issuer` is set.
#[derive(Debug, Clone, Default)]
pub struct OidcConfig {
    /// The provider's issuer URL.
    pub issuer: Option<HttpUrl>,
    /// What the sign-in page calls the provider.
    pub display_name: Option<String>,
    /// keyward's client id at the provider.
    pub client_id: String,
    /// keyward's client secret at the provider.
    pub client_secret: Option<OidcClientSecret>,
    /// The scopes asked for.
    pub scopes: Vec<String>,
    /// The claim a new user's name comes from.
    pub name_claim: String,
    /// Whether a first sign-in creates the person.
    pub create_users: bool,
    /// The claim that makes an admin.
    pub admin_claim: Option<String>,
    /// Its value that makes an admin.
    pub admin_value: Option<String>,
    /// Whether the password form is offered too.
    pub password_sign_in: bool,
}

/// The scopes single sign-on asks for unless told otherwise.
pub const DEFAULT_OIDC_SCOPES: [&str; 3] = ["openid", "email", "profile"];

/// An `http://` or `https://` URL with a host and no query or fragment, kept as written (an
/// issuer must match the provider's `iss` claim character for character).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    text: String,
    host: String,
}

impl HttpUrl {
    /// Reads a URL.
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = reqwest::Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
        let host = match url.host_str() {
            Some(host) if matches!(url.scheme(), "http" | "https") => host.to_owned(),
            _ => return Err(format!("{text:?} is not an http:// or https:// URL")),
        };
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!("{text:?} must not have a query or a fragment"));
        }
        Ok(Self {
            text: text.to_owned(),
            host,
        })
    }

    /// The URL as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Its host.
    pub fn host(&self) -> &str {
        &self.host
    }
}

impl SettingValue for HttpUrl {
    type File = String;
    const EXAMPLES: [&'static str; 2] = [
        "\"https://accounts.example.com\"",
        "\"https://login.example.org/realms/staff\"",
    ];
    fn from_file(value: String) -> Result<Self, String> {
        Self::parse(&value)
    }
    fn from_text(text: &str) -> Result<Self, String> {
        Self::parse(text)
    }
}

impl SettingValue for OidcClientSecret {
    type File = String;
    const EXAMPLES: [&'static str; 2] = [
        "\"client-secret-never-shown-1\"",
        "\"client-secret-never-shown-2\"",
    ];
    fn from_file(value: String) -> Result<Self, String> {
        Self::from_text(&value)
    }
    fn from_text(text: &str) -> Result<Self, String> {
        // The message never repeats the text: it is a secret.
        if text.is_empty() {
            return Err("the client secret is empty".to_owned());
        }
        Ok(OidcClientSecret::new(text.to_owned()))
    }
}

/// A list of words: an array in the file; in a variable, words separated by commas or spaces
/// (or an array written as in the file).
impl SettingValue for Vec<String> {
    type File = Vec<String>;
    const EXAMPLES: [&'static str; 2] = [
        "[\"openid\", \"email\"]",
        "[\"openid\", \"profile\", \"groups\"]",
    ];
    fn from_file(value: Vec<String>) -> Result<Self, String> {
        Ok(value)
    }
    fn from_text(text: &str) -> Result<Self, String> {
        if text.trim_start().starts_with('[') {
            #[derive(Deserialize)]
            struct List {
                list: Vec<String>,
            }
            return toml::from_str::<List>(&format!("list = {text}"))
                .map(|l| l.list)
                .map_err(|e| format!("{text:?} is not a list of words: {}", e.message()));
        }
        Ok(text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|w| !w.is_empty())
            .map(str::to_owned)
            .collect())
    }
}

#[expect(
    clippy::ptr_arg,
    reason = "a check takes a reference to the setting's own type"
)]
fn oidc_scopes(scopes: &Vec<String>) -> Result<(), String> {
    match scopes.iter().find(|s| {
        s.is_empty()
            || !s
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    }) {
        Some(bad) => Err(format!("{bad:?} is not a scope")),
        None => Ok(()),
    }
}

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
        let shown = format!("{from_flag:?}");
        assert!(!shown.contains("pw"), "{shown}");

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

        let path = write_config(
            dir.path(),
            "version = 1\n[[forward_auth.route]]\npath_prefix = \"/\"\nscopes = []\n",
        );
        let config = Config::load_from(&Env::default(), &flags_with(&path)).unwrap();
        assert!(config.forward_auth.has_catch_all());
        assert!(matches!(
            config.forward_auth.decide("PUT", "/anything"),
            Ok(RouteDecision::Needs(scopes)) if scopes.is_empty()
        ));

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
    fn tls_needs_both_files_and_makes_cookies_secure() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_str().unwrap();
        let off = Config::load_from(
            &Env::from_pairs([("KEYWARD_DATA_DIR", data)]),
            &Flags::default(),
        )
        .unwrap();
        assert_eq!(off.tls.files(), None);
        assert!(!off.settings().secure_cookies);

        let path = write_config(
            dir.path(),
            "version = 1\n[tls]\ncert = \"/etc/k/cert.pem\"\nkey = \"/etc/k/key.pem\"\n",
        );
        let on = Config::load_from(&Env::default(), &flags_with(&path)).unwrap();
        assert_eq!(
            on.tls.files(),
            Some(TlsFiles {
                cert: "/etc/k/cert.pem".into(),
                key: "/etc/k/key.pem".into(),
            })
        );
        assert!(on.settings().secure_cookies, "[tls] implies Secure cookies");

        let env = Env::from_pairs([
            ("KEYWARD_DATA_DIR", data),
            ("KEYWARD_TLS_CERT", "/run/cert.pem"),
            ("KEYWARD_TLS_KEY", "/run/key.pem"),
        ]);
        let from_env = Config::load_from(&env, &Flags::default()).unwrap();
        assert_eq!(
            from_env.tls.files().map(|f| f.key),
            Some("/run/key.pem".into())
        );

        let cert_only = write_config(dir.path(), "version = 1\n[tls]\ncert = \"/etc/k/c.pem\"\n");
        let message = err(Config::load_from(&Env::default(), &flags_with(&cert_only)));
        assert!(
            message.starts_with("tls.cert is set but tls.key is not"),
            "{message}"
        );
        assert!(message.contains("KEYWARD_TLS_KEY"), "{message}");
        assert!(!message.contains('\n'), "one line: {message}");
        let key_only = Env::from_pairs([("KEYWARD_DATA_DIR", data), ("KEYWARD_TLS_KEY", "/k.pem")]);
        let message = err(Config::load_from(&key_only, &Flags::default()));
        assert!(
            message.starts_with("tls.key is set but tls.cert is not"),
            "{message}"
        );
        assert!(message.contains("KEYWARD_TLS_CERT"), "{message}");
    }

    #[test]
    fn leak_reporters_are_on_when_their_tables_are_there() {
        let dir = tempfile::tempdir().unwrap();
        let off = Config::load_from(
            &Env::from_pairs([("KEYWARD_DATA_DIR", dir.path().to_str().unwrap())]),
            &Flags::default(),
        )
        .unwrap();
        assert!(off.settings().leaks.github.is_none() && off.settings().leaks.gitlab.is_none());

        let token = "gitlab-preshared-0123456789abcdef";
        let path = write_config(
            dir.path(),
            &format!("version = 1\n[leaks.github]\n[leaks.gitlab]\ntoken = \"{token}\"\n"),
        );
        let config = Config::load_from(&Env::default(), &flags_with(&path)).unwrap();
        let leaks = config.settings().leaks;
        assert_eq!(leaks.github.unwrap().keys_url, GITHUB_KEYS_URL);
        assert!(leaks.gitlab.is_some());
        assert!(
            !format!("{config:?}").contains(token),
            "the token is redacted"
        );

        let path = write_config(
            dir.path(),
            "version = 1\n[leaks.github]\nkeys_url = \"http://127.0.0.1:9/keys\"\n",
        );
        let config = Config::load_from(&Env::default(), &flags_with(&path)).unwrap();
        assert_eq!(
            config.settings().leaks.github.unwrap().keys_url,
            "http://127.0.0.1:9/keys"
        );

        for (bad, says) in [
            ("[leaks.gitlab]\n", "needs token"),
            ("[leaks.gitlab]\ntoken = \"short\"\n", "at least 24"),
            (
                "[leaks.github]\nkeys_url = \"ftp://x\"\n",
                "leaks.github.keys_url",
            ),
            ("[leaks.bitbucket]\n", "unknown field"),
        ] {
            let path = write_config(dir.path(), &format!("version = 1\n{bad}"));
            let message = err(Config::load_from(&Env::default(), &flags_with(&path)));
            assert!(message.contains(says), "{bad}: {message}");
        }
        // The variable turns GitLab's reports on by itself.
        let env = Env::from_pairs([
            ("KEYWARD_DATA_DIR", dir.path().to_str().unwrap()),
            ("KEYWARD_LEAKS_GITLAB_TOKEN", token),
        ]);
        let path = write_config(dir.path(), "version = 1\n");
        let config = Config::load_from(&env, &flags_with(&path)).unwrap();
        assert!(config.settings().leaks.gitlab.is_some());
    }

    #[test]
    fn oidc_is_on_with_an_issuer_and_needs_public_url() {
        let dir = tempfile::tempdir().unwrap();
        let off = Config::load_from(
            &Env::from_pairs([("KEYWARD_DATA_DIR", dir.path().to_str().unwrap())]),
            &Flags::default(),
        )
        .unwrap();
        assert!(off.settings().oidc.is_none());

        let oidc = "[oidc]\nissuer = \"https://accounts.example.com\"\n";
        let message = err(Config::load_from(
            &Env::default(),
            &flags_with(&write_config(dir.path(), &format!("version = 1\n{oidc}"))),
        ));
        assert!(message.contains("[oidc] needs public_url"), "{message}");
        assert!(message.contains("KEYWARD_PUBLIC_URL"), "{message}");

        let path = write_config(
            dir.path(),
            &format!(
                "version = 1\npublic_url = \"https://keyward.example.com/\"\n{oidc}\
                 admin_claim = \"groups\"\nadmin_value = \"keyward-admins\"\n\
                 password_sign_in = false\n"
            ),
        );
        let env = Env::from_pairs([("KEYWARD_OIDC_CLIENT_SECRET", "s3cret-never-shown")]);
        let config = Config::load_from(&env, &flags_with(&path)).unwrap();
        let sso = config.settings().oidc.unwrap();
        assert_eq!(sso.issuer, "https://accounts.example.com");
        assert_eq!(sso.display_name, "accounts.example.com");
        assert_eq!(sso.client_id, "keyward");
        assert_eq!(
            sso.redirect_url,
            "https://keyward.example.com/login/oidc/callback"
        );
        assert_eq!(sso.scopes, ["openid", "email", "profile"]);
        assert_eq!(sso.name_claim, "preferred_username");
        assert!(sso.create_users && !sso.password_sign_in);
        assert_eq!(
            sso.admin,
            Some(AdminClaim {
                claim: "groups".to_owned(),
                value: "keyward-admins".to_owned()
            })
        );
        assert!(sso.client_secret.is_some());
        assert!(!format!("{config:?}").contains("s3cret"));

        for (extra, says) in [
            ("admin_claim = \"groups\"\n", "go together"),
            ("scopes = [\"openid\", \"a b\"]\n", "is not a scope"),
        ] {
            let path = write_config(
                dir.path(),
                &format!("version = 1\npublic_url = \"https://k.example\"\n{oidc}{extra}"),
            );
            let message = err(Config::load_from(&Env::default(), &flags_with(&path)));
            assert!(message.contains(says), "{message}");
        }
        let path = write_config(
            dir.path(),
            "version = 1\npublic_url = \"ftp://k.example\"\n",
        );
        let message = err(Config::load_from(&Env::default(), &flags_with(&path)));
        assert!(message.contains("public_url in"), "{message}");
    }

    #[test]
    fn http_limits_and_metrics_are_layered_and_checked() {
        use std::time::Duration as Std;
        let dir = tempfile::tempdir().unwrap();
        let defaults = Config::load_from(
            &Env::from_pairs([("KEYWARD_DATA_DIR", dir.path().to_str().unwrap())]),
            &Flags::default(),
        )
        .unwrap();
        assert_eq!(defaults.http, HttpLimits::default());
        assert_eq!(defaults.http.header_read_timeout, Std::from_secs(10));
        assert_eq!(defaults.http.idle_timeout, Std::from_secs(75));
        assert_eq!(defaults.http.request_timeout, Std::from_secs(30));
        assert_eq!(defaults.http.max_connections, 10_000);
        assert_eq!(defaults.metrics, MetricsConfig::default());
        assert!(!defaults.settings().metrics_require_token);

        let path = write_config(
            dir.path(),
            "version = 1\n\
             [http]\nheader_read_timeout = \"5s\"\nidle_timeout = \"2m\"\n\
             request_timeout = \"20s\"\nmax_connections = 500\n\
             [metrics]\nlisten = \"127.0.0.1:9100\"\nrequire_token = true\n",
        );
        let from_file = Config::load_from(&Env::default(), &flags_with(&path)).unwrap();
        assert_eq!(
            from_file.http,
            HttpLimits {
                header_read_timeout: Std::from_secs(5),
                idle_timeout: Std::from_secs(120),
                request_timeout: Std::from_secs(20),
                max_connections: 500,
            }
        );
        assert_eq!(
            from_file.metrics,
            MetricsConfig {
                listen: Some("127.0.0.1:9100".parse().unwrap()),
                require_token: true,
            }
        );
        assert!(from_file.settings().metrics_require_token);

        let env = Env::from_pairs([
            ("KEYWARD_HTTP_HEADER_READ_TIMEOUT", "3s"),
            ("KEYWARD_HTTP_IDLE_TIMEOUT", "90s"),
            ("KEYWARD_HTTP_REQUEST_TIMEOUT", "1m"),
            ("KEYWARD_HTTP_MAX_CONNECTIONS", "64"),
            ("KEYWARD_METRICS_LISTEN", "127.0.0.1:9200"),
            ("KEYWARD_METRICS_REQUIRE_TOKEN", "false"),
        ]);
        let from_env = Config::load_from(&env, &flags_with(&path)).unwrap();
        assert_eq!(
            from_env.http,
            HttpLimits {
                header_read_timeout: Std::from_secs(3),
                idle_timeout: Std::from_secs(90),
                request_timeout: Std::from_secs(60),
                max_connections: 64,
            }
        );
        assert_eq!(
            from_env.metrics.listen,
            Some("127.0.0.1:9200".parse().unwrap())
        );
        assert!(!from_env.metrics.require_token);
        let shown = format!("{from_env:?}");
        assert!(shown.contains("max_connections: 64"), "{shown}");

        for (text, expected) in [
            ("[http]\nidle_timeout = \"soon\"", "http.idle_timeout in "),
            ("[http]\nmax_connections = 0", "http.max_connections in "),
            ("[http]\nmax_conns = 5", "unknown field `max_conns`"),
            ("[metrics]\nlisten = \"nowhere\"", "(line 3)"),
            (
                "listen = \"127.0.0.1:8080\"\n[metrics]\nlisten = \"127.0.0.1:8080\"",
                "metrics.listen (127.0.0.1:8080) is the address of listen",
            ),
        ] {
            let path = write_config(dir.path(), &format!("version = 1\n{text}\n"));
            let message = err(Config::load_from(&Env::default(), &flags_with(&path)));
            assert!(message.contains(expected), "{text}: {message}");
            assert!(!message.contains('\n'), "one line: {message}");
        }
        for (var, value) in [
            ("KEYWARD_HTTP_MAX_CONNECTIONS", "lots"),
            ("KEYWARD_HTTP_MAX_CONNECTIONS", "0"),
            ("KEYWARD_HTTP_REQUEST_TIMEOUT", "0s"),
            ("KEYWARD_HTTP_HEADER_READ_TIMEOUT", "500ms"),
            ("KEYWARD_METRICS_LISTEN", "9100"),
            ("KEYWARD_METRICS_REQUIRE_TOKEN", "maybe"),
        ] {
            let env = Env::from_pairs([
                ("KEYWARD_DATA_DIR", dir.path().to_str().unwrap()),
                (var, value),
            ]);
            let message = err(Config::load_from(&env, &Flags::default()));
            assert!(message.starts_with(var), "{var}={value}: {message}");
        }
    }

    #[test]
    fn trusted_proxies_are_ranges_and_a_bad_one_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let ranges = |list: &[&str]| -> Vec<IpRange> {
            list.iter().map(|r| IpRange::parse(r).unwrap()).collect()
        };
        let defaults = Config::load_from(
            &Env::from_pairs([("KEYWARD_DATA_DIR", dir.path().to_str().unwrap())]),
            &Flags::default(),
        )
        .unwrap();
        assert!(defaults.trusted_proxies.is_empty(), "no one by default");

        let path = write_config(
            dir.path(),
            "version = 1\ntrusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1\", \"2001:db8::/32\"]\n",
        );
        let from_file = Config::load_from(&Env::default(), &flags_with(&path)).unwrap();
        assert_eq!(
            from_file.trusted_proxies,
            ranges(&["10.0.0.0/8", "127.0.0.1/32", "2001:db8::/32"])
        );
        let env = Env::from_pairs([("KEYWARD_TRUSTED_PROXIES", "192.168.0.0/16, ::1")]);
        let from_env = Config::load_from(&env, &flags_with(&path)).unwrap();
        assert_eq!(
            from_env.trusted_proxies,
            ranges(&["192.168.0.0/16", "::1/128"])
        );

        for (text, expected) in [
            (
                "trusted_proxies = [\"10.0.0.0/8\", \"proxy.internal\"]",
                "trusted_proxies in ",
            ),
            (
                "trusted_proxies = [\"10.0.0.0/33\"]",
                "\"10.0.0.0/33\" is not an IP address or CIDR range",
            ),
            ("trusted_proxies = \"10.0.0.0/8\"", "(line 2)"),
        ] {
            let path = write_config(dir.path(), &format!("version = 1\n{text}\n"));
            let message = err(Config::load_from(&Env::default(), &flags_with(&path)));
            assert!(message.contains(expected), "{text}: {message}");
            assert!(!message.contains('\n'), "one line: {message}");
        }
        let env = Env::from_pairs([
            ("KEYWARD_DATA_DIR", dir.path().to_str().unwrap()),
            ("KEYWARD_TRUSTED_PROXIES", "10.0.0.0/8,10.0.0.0.1"),
        ]);
        let message = err(Config::load_from(&env, &Flags::default()));
        assert!(
            message.starts_with("KEYWARD_TRUSTED_PROXIES: \"10.0.0.0.1\""),
            "{message}"
        );
    }

    /// The point of declaring each setting once: every declared setting can be set in the file
    /// and in the environment, the environment wins, and `Debug` never shows a secret.
    #[test]
    fn every_declared_setting_is_set_by_file_and_env_and_env_wins() {
        let dir = tempfile::tempdir().unwrap();
        // `[oidc]` with an issuer needs `public_url` beside it.
        let base = std::cell::Cell::new("");
        let load = |file_line: Option<String>, var: Option<(&str, &str)>| {
            let path = write_config(
                dir.path(),
                &format!(
                    "version = 1\n{}{}\n",
                    base.get(),
                    file_line.unwrap_or_default()
                ),
            );
            let env = Env::from_pairs(var);
            Config::load_from(&env, &flags_with(&path)).map(|c| format!("{c:?}"))
        };
        let unset = load(None, None).unwrap();
        let mut vars: Vec<&str> = SETTINGS.iter().map(|s| s.env).collect();
        vars.push(env::CONFIG);
        vars.push(env::LEAKS_GITLAB_TOKEN);
        vars.sort_unstable();
        let mut all = env::ALL.to_vec();
        all.sort_unstable();
        assert_eq!(all, vars, "env::ALL lists every variable once");

        for setting in SETTINGS {
            // What a setting needs beside it: `[oidc]` needs `public_url`, and each of `[tls]`'s
            // two files the other.
            base.set(match setting.key {
                key if key.starts_with("oidc.") => "public_url = \"https://keyward.example.com\"\n",
                "tls.cert" => "tls.key = \"/srv/keyward/key.pem\"\n",
                "tls.key" => "tls.cert = \"/srv/keyward/cert.pem\"\n",
                "smtp.url" => "smtp.from = \"keyward@example.com\"\n",
                _ => "",
            });
            let unset = if base.get().is_empty() {
                unset.clone()
            } else if setting.key.starts_with("tls.") {
                // Either file alone is refused, so there is no unset state to compare with;
                // neither is secret, and only a secret's check uses it.
                String::new()
            } else {
                load(None, None).unwrap()
            };
            let [a, b] = setting.examples;
            // A variable holds the value of the example's TOML string: its `\n` is a newline
            // (`KEYWARD_SERVER_KEYS` is a ring, one key per line).
            let value = |example: &str| example.trim_matches('"').replace("\\n", "\n");
            let (a_value, b_value) = (value(a), value(b));
            let (a_text, b_text) = (a_value.as_str(), b_value.as_str());
            let in_file = |value: &str| Some(format!("{} = {value}", setting.key));
            let env_a = load(None, Some((setting.env, a_text))).unwrap();
            let env_b = load(None, Some((setting.env, b_text))).unwrap();
            if setting.secret {
                assert_ne!(env_b, unset, "{} sets {}", setting.env, setting.key);
            } else {
                assert_ne!(env_a, env_b, "{} sets {}", setting.env, setting.key);
            }
            let mut shown = vec![env_a.clone(), env_b.clone()];
            if setting.in_file {
                let file_a = load(in_file(a), None).unwrap();
                let file_b = load(in_file(b), None).unwrap();
                let both = load(in_file(a), Some((setting.env, b_text))).unwrap();
                if setting.secret {
                    assert_ne!(file_a, unset, "the file sets {}", setting.key);
                } else {
                    // The file's values show through as the variable's do, and differ.
                    assert_eq!(file_a, env_a, "{} is read from the file", setting.key);
                    assert_eq!(file_b, env_b, "{} is read from the file", setting.key);
                    assert_eq!(both, env_b, "{} wins over the file", setting.env);
                }
                shown.extend([file_a, file_b, both]);
            } else {
                let message = err(Config::load_from(
                    &Env::default(),
                    &flags_with(&write_config(
                        dir.path(),
                        &format!("version = 1\n{} = {a}\n", setting.key),
                    )),
                ));
                assert!(message.contains(setting.env), "{message}");
                assert!(!message.contains(a_text), "{message}");
            }
            for debug in shown {
                assert!(!debug.contains("never-shown"), "{debug}");
                if setting.secret {
                    assert!(debug.contains("[REDACTED]"), "{debug}");
                    for text in [a_text, b_text] {
                        assert!(!debug.contains(text), "{}: {debug}", setting.key);
                        assert!(!debug.contains(&text[..text.len() / 2]), "{debug}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_readme_lists_every_variable() {
        let readme = include_str!("../../../README.md");
        for var in env::ALL {
            assert!(
                readme.contains(&format!("`{var}`")),
                "{var} is not in README.md"
            );
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
            ("KEYWARD_CACHE_SNAPSHOT_EVERY", "2d"),
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
