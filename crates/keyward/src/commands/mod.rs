//! The subcommands: each parses its arguments into core types, calls the service as an
//! operator, and prints. Rules and the audit trail live in the service, never here.

mod audit;
mod events;
mod key;
mod leak;
mod man;
mod output;
mod progress;
mod serve;
mod store;
mod token;
mod user;

use crate::cli::{Cli, Command, KeyCommand, StoreCommand, TokenCommand, WebhookCommand};
use anyhow::Context as _;
use keyward::keyward_server::ServiceError;
use keyward::keyward_server::http::TlsError;
use keyward::{Caller, Config, ConfigError, Flags, KeyPolicy, Keyward, SetupError, UserName};
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::sync::Arc;

/// Exit status of a command that failed: not found, conflict, invalid input, I/O.
const EXIT_FAILED: u8 = 1;
/// Exit status when the configuration (or the data dir and key it points at) is unusable.
const EXIT_BAD_CONFIG: u8 = 2;
/// Exit status of a long operation stopped by Ctrl-C (128 + SIGINT, as shells report it).
const EXIT_INTERRUPTED: u8 = 130;

/// Runs the command line and returns the process's exit status; every error is one line on
/// stderr, `keyward: <message>`.
pub fn run(cli: Cli) -> ExitCode {
    match dispatch(cli) {
        Ok(code) => code,
        Err(error) => {
            let code = if error.is::<progress::Interrupted>() {
                EXIT_INTERRUPTED
            } else if error
                .chain()
                .any(|e| e.is::<ConfigError>() || e.is::<SetupError>() || e.is::<TlsError>())
            {
                EXIT_BAD_CONFIG
            } else {
                EXIT_FAILED
            };
            let message = format!("{error:#}").replace('\n', " ");
            eprintln!("keyward: {message}");
            ExitCode::from(code)
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    // Offline by design: no config, no data dir, no key, so it works anywhere (pre-commit hooks,
    // scanners) and never creates files.
    if let Command::Token(TokenCommand::Check { secret, .. }) = &cli.command {
        return token::check(secret.as_deref());
    }
    if let Command::GenerateMan { dir } = &cli.command {
        return man::generate(dir);
    }
    let flags = Flags {
        config: cli.config,
        data_dir: cli.data_dir,
        listen: match &cli.command {
            Command::Serve(args) => args.listen,
            _ => None,
        },
        database: cli.database,
    };
    let config = Config::load(&flags)?;
    match &cli.command {
        Command::Key(KeyCommand::Show) => return key::show(&config),
        Command::Key(KeyCommand::Generate) => return key::generate(),
        _ => {}
    }
    let policy = if cli.accept_new_key {
        KeyPolicy::AcceptNewKey
    } else {
        KeyPolicy::Refuse
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        if let Command::Serve(_) = cli.command {
            return serve::serve(&config, policy).await;
        }
        init_tracing("warn");
        // These touch only the database: no data dir or server key is created for them.
        match &cli.command {
            Command::Migrate => return store::migrate(&config).await,
            Command::Store(StoreCommand::Copy { from, to, quiet }) => {
                return store::copy(from, to, *quiet).await;
            }
            Command::Store(StoreCommand::Backup { file, quiet }) => {
                return store::backup(&config, file, *quiet).await;
            }
            Command::Store(StoreCommand::Restore { file, quiet }) => {
                return store::restore(&config, file, *quiet).await;
            }
            // The ring and the store as they are: no check of the keys the tokens use.
            Command::Key(KeyCommand::Status) => return key::status(&config).await,
            Command::Key(KeyCommand::Rotate { to }) => {
                return key::rotate(&config, to.as_deref()).await;
            }
            Command::Key(KeyCommand::Add) => return key::add(&config).await,
            Command::Key(KeyCommand::Retire { key_id }) => {
                return key::retire(&config, key_id).await;
            }
            _ => {}
        }
        let keyward = keyward::open_with(&config, policy).await?;
        let caller = Caller::operator(&keyward::os_user());
        let ctx = Ctx { keyward, caller };
        match cli.command {
            Command::User(cmd) => user::run(&ctx, cmd).await,
            Command::Token(cmd) => token::run(&ctx, cmd).await,
            Command::Audit(args) => audit::run(&ctx, args).await,
            Command::Events(args) => events::events(&ctx, args).await,
            Command::Webhook(WebhookCommand::Deliveries(args)) => {
                events::deliveries(&ctx, args).await
            }
            Command::Leak(cmd) => leak::run(&ctx, cmd).await,
            // Handled above; kept exhaustive so a new command cannot be forgotten here.
            Command::Serve(_)
            | Command::Migrate
            | Command::Store(_)
            | Command::Key(_)
            | Command::GenerateMan { .. } => Ok(ExitCode::SUCCESS),
        }
    })
}

/// What every database-backed command needs.
struct Ctx {
    keyward: Arc<Keyward>,
    caller: Caller,
}

impl Ctx {
    /// A user by name, or `no user NAME`.
    async fn user(&self, name: &str) -> anyhow::Result<keyward::User> {
        let parsed =
            UserName::parse(name).map_err(|_| anyhow::anyhow!("no user {}", shown(name)))?;
        self.keyward
            .user_by_name(&self.caller, &parsed)
            .await
            .map_err(|e| describe(e, || format!("no user {}", shown(name))))
    }
}

/// Logs go to stderr so stdout carries only results (a secret, a listing, JSON).
fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A subscriber may already be set (never in the binary); keeping the first one is right.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in files or log pipelines.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// A service error as an operator should read it; `not_found` names what was missing.
fn describe(error: ServiceError, not_found: impl FnOnce() -> String) -> anyhow::Error {
    match error {
        ServiceError::NotFound => anyhow::anyhow!(not_found()),
        // The operator is at the console: the detail helps and holds nothing secret.
        ServiceError::Internal(detail) => anyhow::anyhow!("internal error: {detail}"),
        ServiceError::Unavailable(why) => anyhow::anyhow!("the token store is unavailable: {why}"),
        other => anyhow::Error::new(other),
    }
}

/// Text from the command line, made safe to echo in one error line.
fn shown(s: &str) -> String {
    let mut out = output::escaped(&s.chars().take(64).collect::<String>());
    if s.chars().count() > 64 {
        out.push('…');
    }
    out
}

/// Reads the first line of stdin without its line ending.
fn read_stdin_line(what: &str) -> anyhow::Result<zeroize::Zeroizing<String>> {
    let mut line = zeroize::Zeroizing::new(String::with_capacity(256));
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .with_context(|| format!("cannot read the {what} from stdin"))?;
    while line.ends_with(['\n', '\r']) {
        line.pop();
    }
    if line.is_empty() {
        anyhow::bail!("no {what} on stdin");
    }
    Ok(line)
}

/// A new password from stdin. From a pipe or a file, its first line. On a terminal, asked for on
/// stderr with the echo off (so it shows neither on the screen nor in the scrollback), twice,
/// and refused if the two differ.
fn read_new_password() -> anyhow::Result<zeroize::Zeroizing<String>> {
    if !std::io::stdin().is_terminal() {
        return read_stdin_line("password");
    }
    let first = prompt_hidden("Password: ")?;
    let again = prompt_hidden("The same password again: ")?;
    if *first != *again {
        anyhow::bail!("the two passwords differ; nothing was changed");
    }
    Ok(first)
}

/// Writes `prompt` to stderr and reads one line from the terminal on stdin without echoing it.
fn prompt_hidden(prompt: &str) -> anyhow::Result<zeroize::Zeroizing<String>> {
    // Echo off before the prompt shows: whatever is typed once it is visible stays hidden.
    let _quiet = EchoOff::on_stdin().context("cannot turn the terminal's echo off")?;
    let mut err = std::io::stderr().lock();
    err.write_all(prompt.as_bytes())
        .and_then(|()| err.flush())
        .context("cannot write to stderr")?;
    read_stdin_line("password")
}

/// The terminal on stdin with its echo off (the Enter that ends the line still shows), until
/// dropped, when its settings are put back.
struct EchoOff {
    saved: rustix::termios::Termios,
}

impl EchoOff {
    fn on_stdin() -> std::io::Result<Self> {
        use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin)?;
        let mut quiet = saved.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        quiet.local_modes.insert(LocalModes::ECHONL);
        tcsetattr(&stdin, OptionalActions::Now, &quiet)?;
        Ok(Self { saved })
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        let stdin = std::io::stdin();
        // Nothing better to do if it fails: the terminal is gone or was taken from us.
        let _ =
            rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &self.saved);
    }
}

/// Writes `text` to stdout and flushes, so a failure (a closed pipe) is an error, not a panic.
fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}

/// Writes `value` to stdout as pretty JSON and a newline.
fn print_json<T: serde::Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value).context("cannot write to stdout")?;
    out.write_all(b"\n")
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}
