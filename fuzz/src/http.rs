//! The whole HTTP surface in process: the real application (`keyward_server::http::app`) over a
//! real SQLite store in a temporary directory, driven with `tower::ServiceExt::oneshot`.
//!
//! # Input
//!
//! Up to [`MAX_REQUESTS`] requests written as text, separated by a line `====`; the first line
//! of the input may be `@routes` to send them to an application with a forward-auth route table
//! (otherwise it has none). Each request is
//!
//! ```text
//! METHOD TARGET
//! Header-Name: value
//!
//! body
//! ```
//!
//! and may name the fixture with placeholders, replaced before sending: `$T0` `$T1` `$T2` `$T3`
//! the fixture tokens' secrets, `$I0` `$I1` `$I2` `$I3` their ids, `$UC` carol's user id,
//! `$B0` `$B1` `$B2` HTTP Basic
//! credentials with their secrets as password, `$X0` `$T0` with a wrong checksum, `$U` a
//! well-formed token that was never issued, `$NEW` and `$NID` the secret and id of the last
//! token a response in this input issued, `$BIG` 70 KiB of text (over the body limit). Text is
//! what libFuzzer mutates best with a dictionary (`fuzz/http_app.dict`), and seeds stay readable.
//!
//! # Fixture
//!
//! Users `alice` and `bob`, the admin `root`, and `carol`, whom inputs may change or delete;
//! `$T0` is alice's manager token (`tokens:*`, `droplet:*`, `volume:*`, `audit:read`), `$T1`
//! alice's `droplet:read`, `$T2` bob's (`tokens:*`, `*:read`), `$T3` root's platform-backend
//! token (`users:*`, `tokens:issue`). Carol is made again (or enabled again) before the next
//! input when one deleted (or disabled) her.
//! An input that may have changed a fixture token (any 2xx to a request that writes) gets fresh
//! ones minted before the next input; every [`REBUILD_EVERY`] mints the whole application is
//! built anew, so a long run does not grow one database without bound.
//!
//! # Properties
//!
//! For every response: no 5xx other than 503; under `/v1` and `/oauth` every 4xx/5xx body is
//! the JSON error shape (`{"error":{"code","message"}}`, or RFC 6749's
//! `{"error","error_description"}` from the OAuth endpoints) and every 401/403 carries a
//! `WWW-Authenticate` challenge; a body with a `secret` is marked `no-store` and holds a new,
//! well-formed token; and no response carries the secret of a token it did not issue unless
//! the request itself carried it outside `Authorization`. A panic anywhere aborts the run.
//!
//! This target found that a secret sent as data (a token name, a revocation reason) was stored
//! and shown again by later answers; such text is now refused (see
//! `a_secret_sent_as_a_reason_or_a_name_is_never_shown_again` in keyward-server's
//! `tests/it/bad_input.rs`).

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use base64::Engine as _;
use keyward_core::{
    Limits, ManualClock, Prefix, Scopes, ServerKey, TokenHasher, TokenName, TokenSecret, UserId,
    UserName, format,
};
use keyward_server::service::{ForwardAuthRoute, ForwardAuthRoutes, UserRequest};
use keyward_server::{Caller, Keyward, Settings};
use keyward_store::SqliteStore;
use serde_json::Value;
use std::cell::RefCell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tempfile::TempDir;
use time::macros::datetime;
use tower::ServiceExt as _;
use tower::util::BoxCloneService;

/// Most requests one input sends.
pub const MAX_REQUESTS: usize = 4;
/// Fixture mints after which the application and its database are built anew.
pub const REBUILD_EVERY: usize = 5_000;
/// The separator between requests, a line of its own.
const SEPARATOR: &[u8] = b"\n====\n";
/// The marker that selects the application with a route table.
const ROUTED: &[u8] = b"@routes\n";
/// Longest response body read.
const MAX_RESPONSE: usize = 1 << 20;

type App = BoxCloneService<Request<Body>, Response<Body>, Infallible>;

/// What earlier requests of one input did.
#[derive(Default)]
struct Seen {
    /// Tokens issued by their answers, oldest first.
    issued: Vec<Minted>,
}

/// One token of the fixture.
struct Minted {
    secret: String,
    id: String,
}

/// One application with its store, users and fixture tokens.
struct World {
    app: App,
    keyward: Arc<Keyward>,
    store: SqliteStore,
    alice: UserId,
    bob: UserId,
    root: UserId,
    /// A user inputs may change, disable or delete (through `$UC`).
    carol: UserId,
    tokens: Vec<Minted>,
    /// A well-formed token of this deployment's prefix that was never issued.
    unknown: String,
    mints: usize,
    stale: bool,
    // Last: dropped after the store is closed.
    _dir: TempDir,
}

struct Harness {
    runtime: tokio::runtime::Runtime,
    plain: Option<World>,
    routed: Option<World>,
    inputs: u64,
}

thread_local! {
    // libFuzzer calls the target from one thread; the harness lives as long as the process.
    static HARNESS: RefCell<Option<Harness>> = const { RefCell::new(None) };
}

/// The fuzz target.
pub fn check(data: &[u8]) {
    HARNESS.with(|cell| {
        let mut slot = cell.borrow_mut();
        let harness = slot.get_or_insert_with(Harness::new);
        harness.run(data);
    });
}

impl Harness {
    fn new() -> Self {
        // Process-wide and idempotent; before `Keyward::new`, which registers the counters.
        keyward_server::telemetry::prometheus();
        remove_stale_scratch();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        Self {
            runtime,
            plain: None,
            routed: None,
            inputs: 0,
        }
    }

    fn run(&mut self, data: &[u8]) {
        let (routed, rest) = match data.strip_prefix(ROUTED) {
            Some(rest) => (true, rest),
            None => (false, data),
        };
        let slot = if routed {
            &mut self.routed
        } else {
            &mut self.plain
        };
        self.inputs += 1;
        let flush = self.inputs.is_multiple_of(256);
        self.runtime.block_on(async {
            let rebuild = slot.as_ref().is_none_or(|w| w.mints >= REBUILD_EVERY);
            if rebuild {
                if let Some(old) = slot.take() {
                    old.store.close().await;
                }
                *slot = Some(World::new(routed).await);
            }
            let world = slot.as_mut().expect("built above");
            if world.stale {
                world.mint().await;
            }
            let mut seen = Seen::default();
            for raw in split(rest, SEPARATOR).take(MAX_REQUESTS) {
                world.send(raw, &mut seen).await;
            }
            if flush {
                // Noted uses pile up in memory until written, as the server's flusher does.
                let _ = world.keyward.flush_usage().await;
            }
        });
    }
}

fn settings(routed: bool) -> Settings {
    let mut settings = Settings {
        cache_capacity: 10_000,
        ..Settings::default()
    };
    if routed {
        let route = |method: &str, prefix: &str, scopes: &[&str]| {
            let scopes = Scopes::parse(scopes).expect("the fixture's scopes parse");
            ForwardAuthRoute::new(method, prefix, scopes).expect("the fixture's routes are valid")
        };
        settings.forward_auth = ForwardAuthRoutes::new(vec![
            route("GET", "/droplets", &["droplet:read"]),
            route("*", "/droplets", &["droplet:update"]),
            route("DELETE", "/droplets/", &["droplet:delete"]),
            route("*", "/public", &[]),
        ])
        .expect("the fixture's table has no duplicates");
    }
    settings
}

/// Where the databases go: in memory where the machine has a tmpfs, since the fuzzer writes on
/// most inputs.
fn scratch_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    }
}

/// The prefix of this process's database directories: `keyward-fuzz-PID-`.
const SCRATCH_PREFIX: &str = "keyward-fuzz-";

/// Removes the database directories of fuzzer processes that are gone: a crash ends the process
/// without dropping its `TempDir`, and a tmpfs is memory.
fn remove_stale_scratch() {
    let Ok(entries) = std::fs::read_dir(scratch_root()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix(SCRATCH_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid
            && pid != std::process::id()
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl World {
    async fn new(routed: bool) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{SCRATCH_PREFIX}{}-", std::process::id()))
            .tempdir_in(scratch_root())
            .expect("a temporary directory");
        let store = SqliteStore::open(&dir.path().join("keyward.db"))
            .await
            .expect("a SQLite store");
        let clock = Arc::new(ManualClock::new(datetime!(2026-03-02 09:00:00 UTC)));
        let key = ServerKey::generate().expect("a server key");
        let keyward = Keyward::new(
            Arc::new(store.clone()),
            clock,
            TokenHasher::new(&key),
            settings(routed),
        )
        .await
        .expect("the service starts");
        let keyward = Arc::new(keyward);
        let operator = Caller::operator("fuzz");
        let user = |name: &str, admin: bool| {
            let keyward = Arc::clone(&keyward);
            let name = UserName::parse(name).expect("a user name");
            let operator = operator.clone();
            async move {
                let request = UserRequest {
                    admin,
                    ..UserRequest::person(name)
                };
                keyward
                    .create_user(&operator, request)
                    .await
                    .expect("a user")
                    .id
            }
        };
        let alice = user("alice", false).await;
        let bob = user("bob", false).await;
        let root = user("root", true).await;
        let carol = user("carol", false).await;
        let app = BoxCloneService::new(keyward_server::http::app(
            Arc::clone(&keyward),
            keyward_server::http::Serves::All,
        ));
        let unknown = TokenSecret::generate(&Prefix::default())
            .expect("a token")
            .expose()
            .to_owned();
        let mut world = Self {
            app,
            keyward,
            store,
            alice,
            bob,
            root,
            carol,
            tokens: Vec::new(),
            unknown,
            mints: 0,
            stale: true,
            _dir: dir,
        };
        world.mint().await;
        world
    }

    /// Fresh fixture tokens, and carol as she was.
    async fn mint(&mut self) {
        let operator = Caller::operator("fuzz");
        match self.keyward.user_by_id(&operator, &self.carol).await {
            Ok(carol) if carol.disabled_at.is_some() => {
                self.keyward
                    .enable_user(&operator, &self.carol)
                    .await
                    .expect("carol enabled again");
            }
            Ok(_) => {}
            Err(_) => {
                // Deleted: her name is free again; the new carol has a new id.
                let name = UserName::parse(&format!("carol-{}", self.mints)).expect("a name");
                self.carol = self
                    .keyward
                    .create_user(&operator, UserRequest::person(name))
                    .await
                    .expect("carol again")
                    .id;
            }
        }
        let mut tokens = Vec::with_capacity(4);
        for (owner, scopes) in [
            (
                &self.alice,
                &["tokens:*", "droplet:*", "volume:*", "audit:read"][..],
            ),
            (&self.alice, &["droplet:read"][..]),
            (&self.bob, &["tokens:*", "*:read"][..]),
            (
                &self.root,
                &[
                    "users:read",
                    "users:create",
                    "users:update",
                    "users:delete",
                    "tokens:issue",
                ][..],
            ),
        ] {
            let issued = self
                .keyward
                .create_token(
                    &operator,
                    Some(owner),
                    TokenName::parse("fixture").expect("a token name"),
                    Scopes::parse(scopes).expect("the fixture's scopes parse"),
                    None,
                    Limits::default(),
                )
                .await
                .expect("a fixture token");
            tokens.push(Minted {
                secret: issued.secret.expose().to_owned(),
                id: issued.token.id.as_str().to_owned(),
            });
        }
        self.tokens = tokens;
        self.mints += 1;
        self.stale = false;
    }

    /// Replaces the placeholders in `raw`.
    fn expand(&self, raw: &[u8], issued: &[Minted]) -> Vec<u8> {
        let basic = |secret: &str| {
            base64::engine::general_purpose::STANDARD.encode(format!("fuzz:{secret}"))
        };
        let mut wrong = self.tokens[0].secret.clone().into_bytes();
        if let Some(last) = wrong.last_mut() {
            *last = if *last == b'A' { b'B' } else { b'A' };
        }
        let last = issued.last();
        let table: Vec<(&[u8], Vec<u8>)> = vec![
            (b"$BIG", vec![b'a'; 70 * 1024]),
            (
                b"$NEW",
                last.map_or(b"kwp_none".to_vec(), |m| m.secret.clone().into_bytes()),
            ),
            (
                b"$NID",
                last.map_or(b"tok_none".to_vec(), |m| m.id.clone().into_bytes()),
            ),
            (b"$T0", self.tokens[0].secret.clone().into_bytes()),
            (b"$T1", self.tokens[1].secret.clone().into_bytes()),
            (b"$T2", self.tokens[2].secret.clone().into_bytes()),
            (b"$T3", self.tokens[3].secret.clone().into_bytes()),
            (b"$UC", self.carol.as_str().as_bytes().to_vec()),
            (b"$I0", self.tokens[0].id.clone().into_bytes()),
            (b"$I1", self.tokens[1].id.clone().into_bytes()),
            (b"$I2", self.tokens[2].id.clone().into_bytes()),
            (b"$I3", self.tokens[3].id.clone().into_bytes()),
            (b"$B0", basic(&self.tokens[0].secret).into_bytes()),
            (b"$B1", basic(&self.tokens[1].secret).into_bytes()),
            (b"$B2", basic(&self.tokens[2].secret).into_bytes()),
            (b"$X0", wrong),
            (b"$U", self.unknown.clone().into_bytes()),
        ];
        let mut out = Vec::with_capacity(raw.len());
        let mut i = 0;
        'bytes: while i < raw.len() {
            if raw[i] == b'$' {
                for (name, value) in &table {
                    if raw[i..].starts_with(name) {
                        out.extend_from_slice(value);
                        i += name.len();
                        continue 'bytes;
                    }
                }
            }
            out.push(raw[i]);
            i += 1;
        }
        out
    }

    /// Sends one request and checks the answer.
    async fn send(&mut self, raw: &[u8], seen: &mut Seen) {
        let expanded = self.expand(raw, &seen.issued);
        let Some(sent) = Sent::parse(&expanded) else {
            return;
        };
        let request = sent.request();
        let response = self
            .app
            .clone()
            .oneshot(request)
            .await
            .unwrap_or_else(|e: Infallible| match e {});
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, MAX_RESPONSE)
            .await
            .expect("the response body can be read");
        let answer = Answer {
            status: parts.status,
            headers: parts.headers,
            body: body.to_vec(),
        };
        let known: Vec<&str> = self
            .tokens
            .iter()
            .chain(seen.issued.iter())
            .map(|m| m.secret.as_str())
            .collect();
        check_answer(&sent, &answer, &known);
        let writes = !matches!(sent.method, Method::GET | Method::HEAD)
            && !matches!(
                sent.uri.path(),
                "/v1/verify" | "/v1/auth" | "/oauth/introspect"
            );
        if answer.status.is_success() && writes {
            self.stale = true;
        }
        if let Some(new) = answer.issued() {
            seen.issued.push(new);
        }
    }
}

/// A request as sent.
struct Sent {
    method: Method,
    uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Vec<u8>,
}

impl Sent {
    /// `METHOD TARGET`, header lines, a blank line, the body. `None` for what no HTTP/1.1
    /// server would pass to the application (a bad method or target).
    fn parse(text: &[u8]) -> Option<Self> {
        let (head, body) = match find(text, b"\n\n") {
            Some(at) => (&text[..at], &text[at + 2..]),
            None => (text, &b""[..]),
        };
        let mut lines = split(head, b"\n");
        let first = lines.next()?;
        let (method, target) = match find(first, b" ") {
            Some(at) => (&first[..at], &first[at + 1..]),
            None => (first, &b"/"[..]),
        };
        let method = Method::from_bytes(method).ok()?;
        let uri = Uri::try_from(target).ok()?;
        uri.path_and_query()?;
        let headers = lines
            .filter_map(|line| {
                let at = find(line, b":")?;
                let name = HeaderName::from_bytes(line[..at].trim_ascii()).ok()?;
                let value = HeaderValue::from_bytes(line[at + 1..].trim_ascii()).ok()?;
                Some((name, value))
            })
            .collect();
        Some(Self {
            method,
            uri,
            headers,
            body: body.to_vec(),
        })
    }

    fn request(&self) -> Request<Body> {
        let mut request = Request::new(Body::from(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        for (name, value) in &self.headers {
            request.headers_mut().append(name.clone(), value.clone());
        }
        // As `serve` runs it: the peer's address is known.
        let peer = SocketAddr::from(([203, 0, 113, 7], 4711));
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    }

    /// Whether the request carries `secret` anywhere but in `Authorization`: then the answer
    /// may quote it back (in an error message, say).
    fn carries(&self, secret: &str) -> bool {
        let needle = secret.as_bytes();
        contains(self.uri.to_string().as_bytes(), needle)
            || contains(&self.body, needle)
            || self.headers.iter().any(|(name, value)| {
                *name != header::AUTHORIZATION && contains(value.as_bytes(), needle)
            })
    }

    /// The API family of the target, whose errors have a fixed shape.
    fn family(&self) -> Family {
        let path = self.uri.path();
        if matches!(path, "/oauth/introspect" | "/oauth/revoke") && self.method == Method::POST {
            Family::OAuth
        } else if path == "/v1" || path.starts_with("/v1/") || path.starts_with("/oauth/") {
            Family::Api
        } else {
            Family::Other
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// `/v1/...`, and what the router answers under `/oauth/` for other methods and paths.
    Api,
    /// The RFC 7662 / RFC 7009 endpoints.
    OAuth,
    /// Pages, operations, documents.
    Other,
}

/// A response, read in full.
struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The token this answer issued, if it issued one.
    fn issued(&self) -> Option<Minted> {
        let json = self.json()?;
        let secret = json.get("secret")?.as_str()?.to_owned();
        let id = json.pointer("/token/id")?.as_str()?.to_owned();
        Some(Minted { secret, id })
    }
}

/// Checks one answer. `known`: every secret of the fixture and of this input so far, none of
/// which the answer may show unless this request carried it.
fn check_answer(sent: &Sent, answer: &Answer, known: &[&str]) {
    let context = || {
        format!(
            "{} {} -> {} {}",
            sent.method,
            sent.uri,
            answer.status,
            String::from_utf8_lossy(&answer.body)
        )
    };
    let status = answer.status;
    assert!(
        !status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE,
        "a 5xx: {}",
        context()
    );

    let family = sent.family();
    if family != Family::Other && (status.is_client_error() || status.is_server_error()) {
        if sent.method != Method::HEAD {
            let json = answer.json();
            let json = json.as_ref().and_then(Value::as_object);
            let json =
                json.unwrap_or_else(|| panic!("an error that is not a JSON object: {}", context()));
            let text = |v: Option<&Value>| v.and_then(Value::as_str).is_some_and(|s| !s.is_empty());
            match family {
                Family::OAuth => assert!(
                    json.len() == 2
                        && text(json.get("error"))
                        && json.get("error_description").is_some_and(Value::is_string),
                    "not RFC 6749's error shape: {}",
                    context()
                ),
                _ => assert!(
                    json.len() == 1
                        && text(json.get("error").and_then(|e| e.get("code")))
                        && text(json.get("error").and_then(|e| e.get("message"))),
                    "not the error shape: {}",
                    context()
                ),
            }
            let content_type = answer.headers.get(header::CONTENT_TYPE);
            assert_eq!(
                content_type.map(HeaderValue::as_bytes),
                Some(&b"application/json"[..]),
                "{}",
                context()
            );
        }
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            assert!(
                answer.headers.contains_key(header::WWW_AUTHENTICATE),
                "a 401/403 without a challenge: {}",
                context()
            );
        }
    }

    if let Some(new) = answer.issued() {
        assert!(status.is_success(), "{}", context());
        assert_eq!(
            answer
                .headers
                .get(header::CACHE_CONTROL)
                .map(HeaderValue::as_bytes),
            Some(&b"no-store"[..]),
            "a secret in a cacheable answer: {}",
            context()
        );
        assert!(format::validate(&new.secret).is_ok(), "{}", context());
        assert!(
            !known.contains(&new.secret.as_str()),
            "an old secret issued again: {}",
            context()
        );
    }

    for secret in known {
        if sent.carries(secret) {
            continue;
        }
        let in_headers = answer
            .headers
            .values()
            .any(|v| contains(v.as_bytes(), secret.as_bytes()));
        assert!(
            !in_headers && !contains(&answer.body, secret.as_bytes()),
            "the answer shows the secret of a token it did not issue: {}",
            context()
        );
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

/// `haystack` split on every `separator`.
fn split<'a>(haystack: &'a [u8], separator: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = Some(haystack);
    std::iter::from_fn(move || {
        let current = rest?;
        match find(current, separator) {
            Some(at) => {
                rest = Some(&current[at + separator.len()..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}
