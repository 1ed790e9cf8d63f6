//! The black-box harness: the real `keyward` binary as a child process, on a temp data dir,
//! serving real HTTP on 127.0.0.1 at a port the OS picked.
//!
//! Every wait is bounded: a server that never says it is listening, a command that hangs or a
//! process that ignores SIGTERM fails the test with what it wrote on stderr, instead of hanging
//! the suite.

use serde_json::Value;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a server may take to say it is listening (a cold start runs the migrations).
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a server may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one command-line invocation may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// How often an exit is polled for (a child's exit is inherently asynchronous).
const POLL: Duration = Duration::from_millis(10);

/// The binary under test, built by cargo for this package's integration tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_keyward");

/// Length of a secret after `<prefix>_`: 43 body characters and a 6-character checksum.
pub const AFTER_PREFIX_LEN: usize = 43 + 6;

/// Whether `s` has the shape `^<prefix>_[0-9A-Za-z]{49}$`.
pub fn is_secret(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|rest| {
            rest.len() == AFTER_PREFIX_LEN && rest.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

/// The 43-character random body of a secret.
pub fn body_of(secret: &str) -> &str {
    let (_, rest) = secret.split_once('_').expect("a secret has a prefix");
    &rest[..43]
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// A command for the binary with a clean environment: no `KEYWARD_*` variable of the machine
/// running the tests leaks in, and the operator name in the audit trail is fixed.
pub fn keyward_command(env: &[(&str, &str)]) -> Command {
    program_command(Path::new(BIN), env)
}

/// [`keyward_command`] for another build of keyward (the previous release, in the upgrade test).
fn program_command(program: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(program);
    for var in keyward::config::env::ALL {
        cmd.env_remove(var);
    }
    cmd.env("USER", "it-operator").env("RUST_BACKTRACE", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// What a finished command wrote and how it ended.
#[derive(Debug)]
pub struct Out {
    /// Exit status.
    pub status: ExitStatus,
    /// Everything on stdout.
    pub stdout: String,
    /// Everything on stderr.
    pub stderr: String,
}

impl Out {
    /// The exit code (`None` if killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(self.code(), Some(0), "command failed: {self:?}");
        &self.stdout
    }

    /// Asserts success and parses stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        let text = self.ok();
        serde_json::from_str(text).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// Asserts a failure the way the command line promises it: this exit code, exactly one
    /// line on stderr starting `keyward:`, nothing on stdout, no panic or backtrace.
    #[track_caller]
    pub fn failed_cleanly(&self, code: i32) -> &str {
        assert_eq!(self.code(), Some(code), "unexpected exit: {self:?}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "exactly one line on stderr: {self:?}");
        assert!(lines[0].starts_with("keyward: "), "{self:?}");
        assert!(
            lines[0].len() > "keyward: ".len() + 3,
            "a reason is given: {self:?}"
        );
        for bad in ["panicked", "backtrace", "RUST_BACKTRACE", "stack backtrace"] {
            assert!(!self.stderr.contains(bad), "{bad:?} on stderr: {self:?}");
        }
        assert!(self.stdout.is_empty(), "nothing on stdout: {self:?}");
        lines[0]
    }
}

/// Runs `cmd` to completion with `stdin` (or none), bounded by [`CLI_TIMEOUT`].
fn run_bounded(mut cmd: Command, stdin: Option<&str>) -> Out {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn keyward");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        // The command may exit before reading everything (e.g. a bad argument); that is fine.
        let _ = pipe.write_all(input.as_bytes());
    }
    let stdout = drain(child.stdout.take().expect("stdout is piped"));
    let stderr = drain(child.stderr.take().expect("stderr is piped"));
    let status = wait_bounded(&mut child, CLI_TIMEOUT)
        .unwrap_or_else(|| panic!("keyward did not finish within {CLI_TIMEOUT:?}: {cmd:?}"));
    let text =
        |h: JoinHandle<Vec<u8>>| String::from_utf8(h.join().expect("reader")).expect("UTF-8");
    Out {
        status,
        stdout: text(stdout),
        stderr: text(stderr),
    }
}

fn drain(mut pipe: impl std::io::Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// Waits for `child` to exit for at most `timeout`; kills it (and returns `None`) if it does not.
fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// `keyward --data-dir DIR ARGS...`, with `stdin` if given.
pub fn cli(dir: &Path, args: &[&str], stdin: Option<&str>) -> Out {
    cli_env(dir, &[], args, stdin)
}

/// [`cli`] with extra environment variables.
pub fn cli_env(dir: &Path, env: &[(&str, &str)], args: &[&str], stdin: Option<&str>) -> Out {
    let mut cmd = keyward_command(env);
    cmd.arg("--data-dir").arg(dir).args(args);
    run_bounded(cmd, stdin)
}

/// [`cli_env`] run by `program`, another build of keyward.
pub fn cli_program(
    program: &Path,
    dir: &Path,
    env: &[(&str, &str)],
    args: &[&str],
    stdin: Option<&str>,
) -> Out {
    let mut cmd = program_command(program, env);
    cmd.arg("--data-dir").arg(dir).args(args);
    run_bounded(cmd, stdin)
}

/// `keyward ARGS...` in the working directory `cwd`, with no `--data-dir`.
pub fn cli_in(cwd: &Path, args: &[&str], stdin: Option<&str>) -> Out {
    let mut cmd = keyward_command(&[]);
    cmd.current_dir(cwd).args(args);
    run_bounded(cmd, stdin)
}

/// A token made at the command line with `--json`.
#[derive(Debug, Clone)]
pub struct Made {
    /// The secret, shown this once.
    pub secret: String,
    /// Its id.
    pub id: String,
}

/// Adds user `name` at the command line.
#[track_caller]
pub fn add_user(dir: &Path, name: &str) {
    let out = cli(dir, &["user", "add", name], None);
    assert!(out.ok().contains(name), "{out:?}");
}

/// Creates a token for `user` at the command line (`--json`), with these scopes and 30 days.
#[track_caller]
pub fn create_token(dir: &Path, user: &str, name: &str, scopes: &[&str]) -> (Made, Out) {
    let mut args = vec![
        "token",
        "create",
        "--user",
        user,
        "--name",
        name,
        "--expires",
        "30d",
        "--json",
    ];
    for s in scopes {
        args.extend(["--scope", s]);
    }
    let out = cli(dir, &args, None);
    let body = out.json();
    let made = Made {
        secret: body["secret"].as_str().expect("secret").to_owned(),
        id: body["token"]["id"].as_str().expect("id").to_owned(),
    };
    assert!(is_secret(&made.secret, "kwp"), "{made:?}");
    (made, out)
}

/// Every token record, as `keyward token list --json` prints them.
#[track_caller]
pub fn list_tokens(dir: &Path) -> Vec<Value> {
    match cli(dir, &["token", "list", "--json"], None).json() {
        Value::Array(items) => items,
        other => panic!("token list --json is not an array: {other}"),
    }
}

/// One record from `keyward token list --json`.
#[track_caller]
pub fn listed(dir: &Path, id: &str) -> Value {
    list_tokens(dir)
        .into_iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("{id} is not listed"))
}

/// A running `keyward serve`.
pub struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT` (`https://` when it serves TLS).
    pub base: String,
    /// An HTTP client for it (one that trusts no test CA: use [`Api::with_client`] over TLS).
    pub api: Api,
    logs: Arc<Mutex<Vec<u8>>>,
    stderr_reader: Option<JoinHandle<()>>,
    stdout_lines: Receiver<String>,
}

/// How a server ended and what it had written.
#[derive(Debug)]
pub struct Ended {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it wrote on stderr.
    pub logs: String,
    /// Lines on stdout after the listening line (there should be none).
    pub extra_stdout: Vec<String>,
}

impl Server {
    /// Starts `keyward serve --listen 127.0.0.1:0` on `dir` with `env` and waits (bounded) for
    /// its `listening on http://ADDR` line (`https://` with `[tls]`); the listener is bound
    /// before that line is printed.
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_at(dir, env, "127.0.0.1:0")
    }

    /// [`Self::start`] on `listen` (for a server whose address must be known before it starts:
    /// single sign-on's redirect URL is registered at the provider first).
    pub fn start_at(dir: &Path, env: &[(&str, &str)], listen: &str) -> Self {
        Self::start_program(Path::new(BIN), dir, env, listen)
    }

    /// [`Self::start_at`] with `program`, another build of keyward (the previous release).
    pub fn start_program(program: &Path, dir: &Path, env: &[(&str, &str)], listen: &str) -> Self {
        let mut cmd = program_command(program, env);
        cmd.arg("--data-dir")
            .arg(dir)
            .args(["serve", "--listen", listen])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn keyward serve");

        // Drained from the start, so the pipe never fills and the test can read the logs.
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr_reader = {
            let logs = Arc::clone(&logs);
            let mut pipe = child.stderr.take().expect("stderr is piped");
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    logs.lock().expect("logs").extend_from_slice(&buf[..n]);
                }
            })
        };
        let (tx, stdout_lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });

        let mut server = Self {
            child: Some(child),
            base: String::new(),
            api: Api::new(""),
            logs,
            stderr_reader: Some(stderr_reader),
            stdout_lines,
        };
        let line = match server.stdout_lines.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(e) => {
                let ended = server.kill9();
                panic!("no listening line within {START_TIMEOUT:?} ({e}); {ended:?}");
            }
        };
        let Some(base) = line
            .strip_prefix("listening on ")
            .filter(|base| base.starts_with("http://") || base.starts_with("https://"))
        else {
            let ended = server.kill9();
            panic!("unexpected first line on stdout {line:?}; {ended:?}");
        };
        assert!(base.contains("://127.0.0.1:"), "{line:?}");
        server.base = base.to_owned();
        server.api = Api::new(&server.base);
        server
    }

    /// Everything the server has written on stderr so far.
    pub fn logs(&self) -> String {
        String::from_utf8_lossy(&self.logs.lock().expect("logs")).into_owned()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `kill -9`: no chance to flush or clean up.
    pub fn kill9(mut self) -> Ended {
        let mut child = self.child.take().expect("running");
        // `Child::kill` is SIGKILL on Unix.
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("wait");
        self.ended(status)
    }

    /// SIGTERM, then waits (bounded) for the exit.
    pub fn stop(mut self) -> Ended {
        let mut child = self.child.take().expect("running");
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
        let Some(status) = wait_bounded(&mut child, STOP_TIMEOUT) else {
            let ended = self.ended(ExitStatus::from_raw(9));
            panic!("no exit within {STOP_TIMEOUT:?} of SIGTERM; {ended:?}");
        };
        self.ended(status)
    }

    fn ended(&mut self, status: ExitStatus) -> Ended {
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        let extra_stdout = self.stdout_lines.try_iter().collect();
        Ended {
            status,
            logs: self.logs(),
            extra_stdout,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An HTTP answer, read in full.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// `Cache-Control`, if any.
    pub cache_control: Option<String>,
    /// The raw body.
    pub text: String,
}

impl Resp {
    /// Asserts the status and returns the body as JSON.
    #[track_caller]
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text))
    }
}

/// A JSON client for one server.
#[derive(Clone)]
pub struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    /// A JSON client for the server at `base` that sends with `client`.
    pub fn with_client(base: &str, client: reqwest::Client) -> Self {
        Self {
            base: base.to_owned(),
            client,
        }
    }

    fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("client"),
        }
    }

    /// Any request; `bearer` becomes `Authorization: Bearer ...`.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> Resp {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = bearer {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let cache_control = resp
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp.text().await.expect("body");
        Resp {
            status,
            cache_control,
            text,
        }
    }

    /// `POST /v1/verify` `{"token", "scopes"}` → the 200 answer's body.
    pub async fn verify(&self, token: &str, scopes: &[&str]) -> Value {
        self.verify_body(&serde_json::json!({"token": token, "scopes": scopes}))
            .await
    }

    /// `POST /v1/verify` with any body → the 200 answer's body.
    pub async fn verify_body(&self, body: &Value) -> Value {
        self.call(reqwest::Method::POST, "/v1/verify", None, Some(body))
            .await
            .expect(200)
    }

    /// Asserts `token` verifies active (with no scopes asked) and returns the answer.
    pub async fn assert_active(&self, token: &str) -> Value {
        let v = self.verify(token, &[]).await;
        assert_eq!(v["active"], true, "expected active: {v}");
        v
    }

    /// Asserts `token` is refused for `reason`.
    pub async fn assert_inactive(&self, token: &str, reason: &str) {
        let v = self.verify(token, &[]).await;
        assert_eq!(
            v,
            serde_json::json!({"active": false, "reason": reason}),
            "expected {reason}"
        );
    }

    /// `GET path` with a bearer token.
    pub async fn get(&self, path: &str, bearer: &str) -> Resp {
        self.call(reqwest::Method::GET, path, Some(bearer), None)
            .await
    }

    /// `POST path` with a bearer token and a JSON body.
    pub async fn post(&self, path: &str, bearer: &str, body: &Value) -> Resp {
        self.call(reqwest::Method::POST, path, Some(bearer), Some(body))
            .await
    }

    /// `DELETE path` with a bearer token.
    pub async fn delete(&self, path: &str, bearer: &str) -> Resp {
        self.call(reqwest::Method::DELETE, path, Some(bearer), None)
            .await
    }

    /// `POST /v1/tokens` → the new token's secret and id.
    pub async fn create(&self, bearer: &str, name: &str, scopes: &[&str]) -> Made {
        let body = self
            .post(
                "/v1/tokens",
                bearer,
                &serde_json::json!({"name": name, "scopes": scopes, "expires": "30d"}),
            )
            .await
            .expect(201);
        Made {
            secret: body["secret"].as_str().expect("secret").to_owned(),
            id: body["token"]["id"].as_str().expect("id").to_owned(),
        }
    }
}

/// Asserts a process ended by a clean exit with status 0.
#[track_caller]
pub fn assert_exit_0(ended: &Ended) {
    assert_eq!(ended.status.code(), Some(0), "{ended:?}");
}

/// Asserts a process was killed by SIGKILL (so nothing ran on the way out).
#[track_caller]
pub fn assert_killed(ended: &Ended) {
    assert_eq!(ended.status.signal(), Some(9), "{ended:?}");
}

/// What a command run at a terminal did: how it ended, its stdout and stderr, and everything
/// the terminal showed (what the line discipline echoed of the typing).
#[derive(Debug)]
pub struct AtTerminal {
    /// How it ended and what it wrote to its stdout and stderr (pipes).
    pub out: Out,
    /// What the terminal displayed.
    pub screen: String,
}

/// Runs `keyward --data-dir DIR ARGS` with a pseudo-terminal on stdin, typing the next of
/// `answers` (and Enter) each time its stderr ends with `prompt`, as a person would: only once
/// asked, so that what the terminal echoes is what the program chose to let it echo.
pub fn at_terminal(dir: &Path, args: &[&str], prompt: &str, answers: &[&str]) -> AtTerminal {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};

    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("openpt");
    grantpt(&master).expect("grantpt");
    unlockpt(&master).expect("unlockpt");
    let name = ptsname(&master, Vec::new()).expect("ptsname");
    let terminal = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.to_str().unwrap())
        .expect("open the terminal");
    let mut cmd = keyward_command(&[]);
    cmd.arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::from(terminal))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn keyward");
    // The parent's end of the terminal is closed (moved into the command, dropped with it), so
    // reading the master ends when the child is gone.
    drop(cmd);

    let mut master = std::fs::File::from(master);
    let mut screen_reader = master.try_clone().unwrap();
    let screen = std::thread::spawn(move || {
        let mut shown = Vec::new();
        let mut buf = [0u8; 1024];
        // EIO once the last holder of the terminal's other end has closed it.
        while let Ok(n) = screen_reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            shown.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&shown).into_owned()
    });
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let mut stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut err = Vec::new();
    let mut typed = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let asked = String::from_utf8_lossy(&err).matches(prompt).count();
        if asked > typed && typed < answers.len() {
            master
                .write_all(format!("{}\n", answers[typed]).as_bytes())
                .unwrap();
            typed += 1;
            continue;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => err.extend(chunk),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!(
                    "keyward {args:?} hung at the terminal; stderr so far: {}",
                    String::from_utf8_lossy(&err)
                );
            }
        }
    }
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let status = child.wait().unwrap();
    drop(master);
    AtTerminal {
        out: Out {
            status,
            stdout,
            stderr: String::from_utf8_lossy(&err).into_owned(),
        },
        screen: screen.join().unwrap(),
    }
}
