//! The command line's shape. The names are part of keyward's interface: scripts, integrations
//! and the docs rely on them, so change none without a deprecation.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// The heading of the options every command takes, apart from each command's own.
const GLOBAL: &str = "Global options";

/// keyward: a self-hosted personal access token service.
///
/// Settings come from defaults, then the config file, then KEYWARD_* environment variables,
/// then flags. The config file is --config, KEYWARD_CONFIG, or DATA_DIR/keyward.toml.
#[derive(Debug, Parser)]
#[command(
    name = "keyward",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Data directory: database, server key, default config file [env: KEYWARD_DATA_DIR] [default: ./keyward-data]
    #[arg(long, global = true, value_name = "DIR", help_heading = GLOBAL)]
    pub data_dir: Option<PathBuf>,

    /// Config file (TOML, `version = 1`) [env: KEYWARD_CONFIG]
    #[arg(long, global = true, value_name = "FILE", help_heading = GLOBAL)]
    pub config: Option<PathBuf>,

    /// Database: sqlite://PATH or postgres://USER@HOST:PORT/DB [env: KEYWARD_DATABASE_URL] [default: sqlite://DATA_DIR/keyward.db]
    #[arg(long, global = true, value_name = "URL", help_heading = GLOBAL)]
    pub database: Option<String>,

    /// Start even though the database holds active tokens hashed under a server key this
    /// server does not have: they are revoked ("server key reset"), on the record. Only for a
    /// deliberate reset; a lost key file is better put back.
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub accept_new_key: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API until SIGTERM or Ctrl-C.
    Serve(ServeArgs),
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Show the audit trail, newest first.
    Audit(AuditArgs),
    /// Show every user's events in order, oldest first (`--follow` waits for new ones).
    Events(EventsArgs),
    /// Webhooks: where their deliveries stand.
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// Report leaked secrets.
    #[command(subcommand)]
    Leak(LeakCommand),
    /// Apply pending schema migrations to the database and exit.
    Migrate,
    /// Move a deployment's data between databases; back it up and restore it.
    #[command(subcommand)]
    Store(StoreCommand),
    /// The server key.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Write the manual pages (generated from this help) into DIR: one per command. For
    /// packagers; hidden from the help.
    #[command(hide = true)]
    GenerateMan {
        /// Where to write `keyward.1`, `keyward-token-create.1`, ….
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

/// `keyward leak ...`.
#[derive(Debug, Subcommand)]
pub enum LeakCommand {
    /// Revoke the token of every secret read from stdin (one per line), whoever owns it: for
    /// secrets an in-house scanner found. Prints how many were keyward's and how many were
    /// revoked now.
    Report {
        /// Where they were found, for the audit trail (a scanner's name, a URL).
        #[arg(long, value_name = "TEXT")]
        source: Option<String>,
    },
}

/// `keyward key ...`: the server key ring (DATA_DIR/server.key, or KEYWARD_SERVER_KEYS).
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Print the current server key's id (first word), then where the keys come from, then any
    /// older keys still verifying. Never a key.
    Show,
    /// How many active tokens each key still verifies, and any key the store's tokens use that
    /// this server lacks.
    Status,
    /// Make a new key current (or, with --to, a key already in the ring). Older keys keep
    /// verifying; a token presented under one moves to the current key. A running server takes
    /// the new ring within seconds, without a restart.
    Rotate {
        /// Promote this key of the ring (added earlier with `key add`) instead of a new one.
        #[arg(long, value_name = "KEY_ID")]
        to: Option<String>,
    },
    /// Add a new key at the end of the ring, verifying nothing yet: for several instances,
    /// give every instance the ring with it first, then `key rotate --to` it.
    Add,
    /// Remove an older key from the ring. Refused while an active token still uses it.
    Retire {
        /// The key's id, as `key status` shows it.
        #[arg(value_name = "KEY_ID")]
        key_id: String,
    },
    /// Print a new random key in hexadecimal, for a ring kept in KEYWARD_SERVER_KEYS.
    Generate,
}

/// `keyward store ...`.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy users (with password hashes), tokens, every secret hash and the audit trail into an
    /// empty database, in one transaction. Copied tokens keep verifying as long as the new
    /// deployment uses the same server key.
    Copy {
        /// The source database, e.g. sqlite://./keyward-data/keyward.db.
        #[arg(long, value_name = "URL")]
        from: String,
        /// The target database, which must be empty, e.g. postgres://keyward@db:5432/keyward.
        #[arg(long, value_name = "URL")]
        to: String,
        /// No progress bar, only the summary line (as when stderr is not a terminal).
        #[arg(long, short)]
        quiet: bool,
    },
    /// Write a consistent copy of the configured SQLite database to FILE while the server runs
    /// (SQLite's online backup). FILE must not exist. For PostgreSQL, use pg_dump. The server
    /// key ring is not in the copy: back it up separately and keep it apart.
    Backup {
        /// The new backup file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// No progress bar, only the summary line (as when stderr is not a terminal).
        #[arg(long, short)]
        quiet: bool,
    },
    /// Restore a backup made by `store backup` into the configured database (SQLite or
    /// PostgreSQL), which must be empty, in one transaction. Tokens verify again with the key
    /// ring they were made under. FILE itself is only read.
    Restore {
        /// The backup file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// No progress bar, only the summary line (as when stderr is not a terminal).
        #[arg(long, short)]
        quiet: bool,
    },
}

/// `keyward serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port [env: KEYWARD_LISTEN] [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
}

/// `keyward user ...`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user: a person, or with --service a service account (a robot that never signs in).
    Add {
        /// The user's name: a-z, 0-9, '.', '_', '-', '@' or '+' (an email address works).
        name: String,
        /// Make the user an admin (manages users; may hold users:* and tokens:issue).
        #[arg(long)]
        admin: bool,
        /// A service account: never signs in; admins manage its tokens.
        #[arg(long, conflicts_with = "password_stdin")]
        service: bool,
        /// The platform's own id for the user (unique).
        #[arg(long, value_name = "ID")]
        external_id: Option<String>,
        /// The user's email address.
        #[arg(long, value_name = "E")]
        email: Option<String>,
        /// Give the person a password for the web page, read from stdin: on a terminal, asked
        /// for twice without echo; from a pipe, its first line.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Show one user.
    Show {
        /// The user's name or id (usr_...).
        user: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List users, newest first.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Disable a user: no sign-in, sessions ended, tokens refused (not revoked).
    Disable {
        /// The user's name or id.
        user: String,
    },
    /// Enable a disabled user again.
    Enable {
        /// The user's name or id.
        user: String,
    },
    /// Delete a user for good: every token of theirs is revoked ("owner deleted").
    Delete {
        /// The user's name or id.
        user: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Set or change a person's password for the web page (their sessions end). Read from
    /// stdin: on a terminal, asked for twice without echo; from a pipe, its first line.
    /// Service accounts never have one.
    #[command(visible_alias = "passwd")]
    Password {
        /// The user's name or id.
        user: String,
        /// Read the password from stdin (what this command always does; accepted for symmetry
        /// with `user add`).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Make a user an admin, or not.
    SetAdmin {
        /// The user's name or id.
        user: String,
        /// true or false.
        #[arg(action = clap::ArgAction::Set)]
        admin: bool,
    },
}

/// `keyward token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; its secret is printed on stdout, once.
    Create {
        /// The owner's user name.
        #[arg(long, value_name = "NAME")]
        user: String,
        /// A label to tell the token apart.
        #[arg(long, value_name = "LABEL")]
        name: String,
        /// A scope, resource:action (repeat for more), e.g. droplet:read, droplet:*, tokens:create.
        #[arg(long = "scope", value_name = "S", required = true)]
        scopes: Vec<String>,
        /// When it expires: a duration (30d, 12h), a date (2027-01-01, midnight UTC), an RFC 3339 time, or never [default: the configured default_lifetime]
        #[arg(long, value_name = "WHEN")]
        expires: Option<String>,
        /// An address or CIDR range it may be used from (repeat for more), e.g. 203.0.113.0/24 or 2001:db8::/32 [default: anywhere]
        #[arg(long = "allow-ip", value_name = "CIDR")]
        allow_ips: Vec<String>,
        /// How many successful verifications it has [default: unlimited]
        #[arg(long, value_name = "N")]
        max_uses: Option<u64>,
        /// Set the remaining uses back to N every interval, e.g. 100/1d (needs --max-uses)
        #[arg(long, value_name = "N/EVERY")]
        refill: Option<String>,
        /// At most N successful verifications per window, e.g. 100/1m or 20/10s
        #[arg(long, value_name = "N/WINDOW")]
        rate_limit: Option<String>,
        /// Print {"token": <record>, "secret": "..."} instead of the bare secret.
        #[arg(long)]
        json: bool,
    },
    /// List tokens (never their secrets).
    List {
        /// Only this user's tokens.
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        /// Print a JSON array of records instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one token (never its secret).
    Show {
        /// The token id (tok_...).
        id: String,
        /// Print the record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rename a token.
    Rename {
        /// The token id (tok_...).
        id: String,
        /// The new label.
        name: String,
    },
    /// Revoke a token; the record stays, revoked, for the audit trail. Revoking a revoked token
    /// says when, by whom and why it was, and fails. With --all instead of an id: revoke every
    /// token (expired ones included) that meets all the conditions given, 100 per transaction;
    /// Ctrl-C stops between two and says how many were revoked.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "all"])))]
    Revoke {
        /// The token id (tok_...).
        id: Option<String>,
        /// Why, for the audit trail.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        /// Revoke in bulk: every token the conditions match (with none: every token of the
        /// deployment).
        #[arg(long, conflicts_with = "id")]
        all: bool,
        /// Only this user's tokens (a name or usr_... id).
        #[arg(long, value_name = "USER", requires = "all")]
        user: Option<String>,
        /// Only tokens created before this time (RFC 3339, e.g. 2026-12-01T00:00:00Z).
        #[arg(long, value_name = "TIME", requires = "all")]
        created_before: Option<String>,
        /// Only tokens created after this time (RFC 3339).
        #[arg(long, value_name = "TIME", requires = "all")]
        created_after: Option<String>,
        /// Only tokens whose scopes grant this one (droplet:read matches droplet:* too).
        #[arg(long, value_name = "SCOPE", requires = "all")]
        scope: Option<String>,
        /// Only tokens not used since this time (RFC 3339): never used, or last used before.
        #[arg(long, value_name = "TIME", requires = "all")]
        unused_since: Option<String>,
        /// List the ids of the tokens that would be revoked, one per line, and revoke nothing.
        #[arg(long, requires = "all")]
        dry_run: bool,
        /// No progress bar, only the summary line (as when stderr is not a terminal).
        #[arg(long, short, requires = "all")]
        quiet: bool,
    },
    /// Give a token a new secret (same id, name and scopes); printed on stdout, once.
    Regenerate {
        /// The token id (tok_...).
        id: String,
        /// How long the old secret keeps working, e.g. 10m (at most 7d) [default: it stops now]
        #[arg(long, value_name = "DURATION")]
        grace: Option<String>,
        /// A new expiry: a duration, a date, an RFC 3339 time, or never [default: the token keeps its expiry]
        #[arg(long, value_name = "WHEN")]
        expires: Option<String>,
        /// Print {"token": <record>, "secret": "..."} instead of the bare secret.
        #[arg(long)]
        json: bool,
    },
    /// Check a token's format and checksum offline (no database): exit 0 if well-formed, 1 if not.
    /// Reads the token from the first line of stdin unless given (an argument shows in the
    /// process list and the shell's history: prefer stdin).
    Check {
        /// The token; - or nothing reads it from stdin.
        secret: Option<String>,
        /// These four shadow the global options (clap does not give a global option to a
        /// subcommand that has its own of the same id), so the check does not offer what it
        /// never uses; given after `check`, each is refused with a word why.
        #[arg(long, hide = true, value_name = "URL", value_parser = offline)]
        database: Option<String>,
        /// See `database`. Each has the global option's type: a global option given before
        /// the subcommand is copied into the subcommand's matches under the same id.
        #[arg(long, hide = true, value_name = "DIR", value_parser = offline_path)]
        data_dir: Option<PathBuf>,
        /// See `database`.
        #[arg(long, hide = true, value_name = "FILE", value_parser = offline_path)]
        config: Option<PathBuf>,
        /// See `database`.
        #[arg(long, hide = true, action = clap::ArgAction::SetTrue, value_parser = offline_flag)]
        accept_new_key: bool,
    },
}

/// Why `token check` takes none of the global options.
const OFFLINE: &str = "token check reads no database, data directory, config or key: it checks a token's format and checksum offline";

/// The value parser of `token check --database` (and the other global options): refused.
fn offline(_: &str) -> Result<String, String> {
    Err(OFFLINE.to_owned())
}

/// [`offline`] for `token check --data-dir` and `--config`.
fn offline_path(_: &str) -> Result<PathBuf, String> {
    Err(OFFLINE.to_owned())
}

/// [`offline`] for `token check --accept-new-key`: its absence (clap's default, `false`) is
/// fine, its presence refused.
fn offline_flag(value: &str) -> Result<bool, String> {
    match value {
        "false" => Ok(false),
        _ => Err(OFFLINE.to_owned()),
    }
}

/// `keyward audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only events about this user.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// At most this many events.
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
}

/// `keyward events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Start after this event (its id, `evt_…`); from the first event when absent.
    #[arg(long, value_name = "ID")]
    pub after: Option<String>,
    /// At most this many events (all of them when absent).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
    /// Keep waiting for new events and print them as they come, until interrupted.
    #[arg(long)]
    pub follow: bool,
    /// Print each event as one line of JSON, exactly as the API and webhooks send it.
    #[arg(long)]
    pub json: bool,
}

/// `keyward webhook …`.
#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// List webhook deliveries, newest event first.
    Deliveries(DeliveriesArgs),
}

/// `keyward webhook deliveries`.
#[derive(Debug, Args)]
pub struct DeliveriesArgs {
    /// Only deliveries in this state: pending, delivered or failed.
    #[arg(long, value_name = "STATE")]
    pub state: Option<String>,
    /// At most this many (up to 100).
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub limit: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "keyward",
            "token",
            "list",
            "--data-dir",
            "/d",
            "--config",
            "/c.toml",
        ])
        .unwrap();
        assert_eq!(cli.data_dir, Some(PathBuf::from("/d")));
        assert_eq!(cli.config, Some(PathBuf::from("/c.toml")));
    }

    #[test]
    fn create_needs_a_scope_and_takes_many() {
        assert!(
            Cli::try_parse_from(["keyward", "token", "create", "--user", "a", "--name", "n"])
                .is_err()
        );
        let cli = Cli::try_parse_from([
            "keyward",
            "token",
            "create",
            "--user",
            "a",
            "--name",
            "n",
            "--scope",
            "tokens:*",
            "--scope",
            "droplet:read",
        ])
        .unwrap();
        let Command::Token(TokenCommand::Create { scopes, .. }) = cli.command else {
            panic!("not create")
        };
        assert_eq!(scopes, ["tokens:*", "droplet:read"]);
    }

    #[test]
    fn database_is_global_and_copy_takes_both_ends() {
        let cli =
            Cli::try_parse_from(["keyward", "migrate", "--database", "postgres://h/k"]).unwrap();
        assert_eq!(cli.database.as_deref(), Some("postgres://h/k"));
        assert!(matches!(cli.command, Command::Migrate));
        assert!(Cli::try_parse_from(["keyward", "store", "copy", "--from", "sqlite://a"]).is_err());
        let cli = Cli::try_parse_from([
            "keyward",
            "store",
            "copy",
            "--from",
            "sqlite://a",
            "--to",
            "postgres://b",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Store(StoreCommand::Copy { ref from, ref to, quiet: false })
                if from == "sqlite://a" && to == "postgres://b"
        ));
    }

    #[test]
    fn check_accepts_a_dash_or_nothing_for_stdin() {
        let cli = Cli::try_parse_from(["keyward", "token", "check", "-"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Token(TokenCommand::Check { secret: Some(secret), .. }) if secret == "-"
        ));
        let cli = Cli::try_parse_from(["keyward", "token", "check"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Token(TokenCommand::Check { secret: None, .. })
        ));
    }

    /// The help of `keyward ARGS... --help`, as printed.
    fn help(args: &[&str]) -> String {
        let mut argv = vec!["keyward"];
        argv.extend(args);
        argv.push("--help");
        let err = Cli::try_parse_from(argv).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::DisplayHelp);
        err.render().to_string()
    }

    #[test]
    fn every_help_puts_the_global_options_under_their_own_heading() {
        for args in [
            &[][..],
            &["token", "create"],
            &["user", "add"],
            &["serve"],
            &["migrate"],
        ] {
            let text = help(args);
            let (own, global) = text
                .split_once("Global options:")
                .unwrap_or_else(|| panic!("{args:?}: no heading\n{text}"));
            let listed = |section: &str, flag: &str| {
                section.lines().any(|l| l.trim_start().starts_with(flag))
            };
            for flag in ["--data-dir", "--config", "--database", "--accept-new-key"] {
                assert!(listed(global, flag), "{args:?}: {flag} not global\n{text}");
                assert!(!listed(own, flag), "{args:?}: {flag} among its own\n{text}");
            }
        }
        let create = help(&["token", "create"]);
        let (own, _) = create.split_once("Global options:").unwrap();
        assert!(
            own.contains("--scope") && own.contains("--expires"),
            "{create}"
        );
    }

    #[test]
    fn token_check_does_not_offer_a_database() {
        let text = help(&["token", "check"]);
        for flag in ["--database", "--data-dir", "--config", "--accept-new-key"] {
            assert!(!text.contains(flag), "{flag}: {text}");
        }
        for args in [
            &["--database", "sqlite://x"][..],
            &["--data-dir", "/d"],
            &["--config", "/c.toml"],
            &["--accept-new-key"],
        ] {
            let mut argv = vec!["keyward", "token", "check"];
            argv.extend(args);
            let err = Cli::try_parse_from(argv).unwrap_err();
            assert!(
                err.to_string().contains("reads no database"),
                "{args:?}: {err}"
            );
        }
        // Before the subcommand they are the global options, which check ignores as before.
        let cli = Cli::try_parse_from([
            "keyward",
            "--database",
            "sqlite://x",
            "--data-dir",
            "/d",
            "--config",
            "/c.toml",
            "--accept-new-key",
            "token",
            "check",
        ])
        .unwrap();
        assert_eq!(cli.data_dir, Some(PathBuf::from("/d")));
        assert!(matches!(
            cli.command,
            Command::Token(TokenCommand::Check { secret: None, .. })
        ));
    }

    #[test]
    fn user_password_takes_the_flag_and_keeps_its_old_name() {
        for args in [
            &["keyward", "user", "password", "ada"][..],
            &["keyward", "user", "password", "ada", "--password-stdin"],
            &["keyward", "user", "passwd", "ada"],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            assert!(
                matches!(cli.command, Command::User(UserCommand::Password { ref user, .. }) if user == "ada"),
                "{args:?}"
            );
        }
    }
}
