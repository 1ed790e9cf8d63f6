//! The harness: a real server on an ephemeral port over a fresh SQLite file, a controlled clock,
//! and helpers to drive it over HTTP and to look at what it stored.

use keyward_core::{
    Clock, IpRange, ManualClock, Scopes, ServerKey, TokenHasher, TokenName, TokenRecord, User,
    UserName,
};
use keyward_server::http::{HttpLimits, ServeOptions};
use keyward_server::service::UserRequest;
use keyward_server::{Caller, Keyward, Settings};
use keyward_store::{
    AuditFilter, AuditStore as _, Page, SqliteStore, StoredAuditEvent, TokenStore as _,
    UserStore as _,
};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use tempfile::TempDir;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Where every test's clock starts.
pub const START: OffsetDateTime = datetime!(2026-03-02 09:00:00 UTC);

/// A running server and everything behind it.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The address behind `base`.
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT` of the listener that serves `/metrics` alone, if there is one.
    pub metrics_base: Option<String>,
    /// The service the server runs, for set-up and for looking behind the API.
    pub keyward: Arc<Keyward>,
    /// The server's clock.
    pub clock: Arc<ManualClock>,
    /// The same store the service uses (a clone shares its pool), so a test can close it.
    pub store: SqliteStore,
    /// The HTTP client.
    pub client: reqwest::Client,
    /// The data directory.
    pub dir: TempDir,
    /// The server key, as hex, for a second process on the same data dir.
    pub key_hex: String,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

/// A token made through the service: its secret (shown once) and its id.
pub struct Minted {
    /// The plaintext.
    pub secret: String,
    /// The public id.
    pub id: String,
}

/// An HTTP answer, read in full.
#[derive(Debug)]
pub struct Resp {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// The raw body.
    pub text: String,
}

impl Resp {
    /// The body as JSON; fails the test (showing the body) if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}); status {}, body {:?}",
                self.status, self.text
            )
        })
    }

    /// Asserts the status and returns the JSON body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text
        );
        self.json()
    }

    /// Asserts an error answer: this status, the `{"error":{"code","message"}}` shape and code.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> Value {
        let body = self.expect(status);
        assert_eq!(
            body["error"]["code"], code,
            "unexpected error code; body: {body}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "an error carries a message; body: {body}"
        );
        assert_eq!(
            body.as_object().map(|o| o.len()),
            Some(1),
            "only `error` at the top level: {body}"
        );
        if matches!(status, 401 | 403) {
            // docs/api.md: every 401 and 403 carries an RFC 6750 challenge.
            assert!(
                self.header("www-authenticate")
                    .is_some_and(|c| c.starts_with("Bearer realm=\"keyward\"")),
                "a {status} {code} without a challenge: {:?}",
                self.headers
            );
        }
        body
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Everything the store holds that a request could change, for "the database is unchanged".
/// Last-used bookkeeping is left out: authenticating a request (even one refused for its body)
/// is a use, recorded by the background flusher at a time the test does not control.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Every user.
    pub users: Vec<User>,
    /// Every token of every owner.
    pub tokens: Vec<TokenRecord>,
    /// The whole audit trail.
    pub audit: Vec<StoredAuditEvent>,
}

/// Starts a fresh app: new data dir, database, server key and clock; the listener is bound
/// before the server task starts, so the first request cannot race it.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(Settings::default()).await
}

/// How the test server serves: the production defaults unless a test says otherwise.
#[derive(Debug, Default)]
pub struct Serving {
    /// Connection and request limits.
    pub limits: HttpLimits,
    /// Whether `/metrics` gets a listener of its own.
    pub separate_metrics: bool,
    /// The proxies whose forwarding headers are believed.
    pub trusted_proxies: Vec<IpRange>,
}

/// [`spawn_app`] with other settings.
pub async fn spawn_app_with(settings: Settings) -> TestApp {
    spawn_app_serving(settings, Serving::default()).await
}

/// [`spawn_app`] with other settings, served with other limits or listeners.
pub async fn spawn_app_serving(settings: Settings, serving: Serving) -> TestApp {
    // Process-wide and idempotent; must precede `Keyward::new`, which registers the counters.
    keyward_server::telemetry::prometheus();
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("keyward.db"))
        .await
        .unwrap();
    let clock = Arc::new(ManualClock::new(START));
    let key = ServerKey::generate().unwrap();
    let key_hex = key.to_hex().to_string();
    let keyward = Keyward::new(
        Arc::new(store.clone()),
        clock.clone(),
        TokenHasher::new(&key),
        settings,
    )
    .await
    .unwrap();
    let keyward = Arc::new(keyward);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let metrics_listener = if serving.separate_metrics {
        Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
    } else {
        None
    };
    let metrics_base = metrics_listener
        .as_ref()
        .map(|l| format!("http://{}", l.local_addr().unwrap()));
    let options = ServeOptions {
        limits: serving.limits,
        metrics_listener,
        tls: None,
        trusted_proxies: serving.trusted_proxies,
    };
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(keyward_server::http::serve(
        listener,
        Arc::clone(&keyward),
        options,
        async move {
            let _ = rx.await;
        },
    ));
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    TestApp {
        base: format!("http://{addr}"),
        addr,
        metrics_base,
        keyward,
        clock,
        store,
        client,
        dir,
        key_hex,
        shutdown: Some(tx),
        server: Some(server),
    }
}

impl TestApp {
    /// Adds a user through the service, as an operator.
    pub async fn user(&self, name: &str) -> User {
        self.keyward
            .create_user(
                &Caller::operator("test"),
                UserRequest::person(UserName::parse(name).unwrap()),
            )
            .await
            .unwrap()
    }

    /// Adds an admin through the service, as an operator.
    pub async fn admin(&self, name: &str) -> User {
        self.keyward
            .create_user(
                &Caller::operator("test"),
                UserRequest {
                    admin: true,
                    ..UserRequest::person(UserName::parse(name).unwrap())
                },
            )
            .await
            .unwrap()
    }

    /// Creates a token for `user` through the service, as an operator (default expiry, 30 days).
    pub async fn token(&self, user: &User, scopes: &[&str]) -> Minted {
        self.token_named(user, "test token", scopes).await
    }

    /// [`TestApp::token`] with a name.
    pub async fn token_named(&self, user: &User, name: &str, scopes: &[&str]) -> Minted {
        let issued = self
            .keyward
            .create_token(
                &Caller::operator("test"),
                Some(&user.id),
                TokenName::parse(name).unwrap(),
                Scopes::parse(scopes).unwrap(),
                None,
                keyward_core::Limits::default(),
            )
            .await
            .unwrap();
        Minted {
            secret: issued.secret.expose().to_owned(),
            id: issued.token.id.as_str().to_owned(),
        }
    }

    /// Sends a request with an optional bearer token and JSON body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> Resp {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        read(req.send().await.unwrap()).await
    }

    /// `GET` on another listener of this server (`base` as in [`TestApp::metrics_base`]).
    pub async fn get_at(&self, base: &str, path: &str, bearer: Option<&str>) -> Resp {
        let mut req = self.client.get(format!("{base}{path}"));
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        read(req.send().await.unwrap()).await
    }

    /// Sends raw bytes with the given headers.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Resp {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        read(req.send().await.unwrap()).await
    }

    /// `GET`.
    pub async fn get(&self, path: &str, bearer: &str) -> Resp {
        self.request(Method::GET, path, Some(bearer), None).await
    }

    /// `POST` with a JSON body.
    pub async fn post(&self, path: &str, bearer: &str, body: &Value) -> Resp {
        self.request(Method::POST, path, Some(bearer), Some(body))
            .await
    }

    /// `POST` with no body.
    pub async fn post_empty(&self, path: &str, bearer: &str) -> Resp {
        self.request(Method::POST, path, Some(bearer), None).await
    }

    /// `PATCH` with a JSON body.
    pub async fn patch(&self, path: &str, bearer: &str, body: &Value) -> Resp {
        self.request(Method::PATCH, path, Some(bearer), Some(body))
            .await
    }

    /// `DELETE`, with an optional JSON body.
    pub async fn delete(&self, path: &str, bearer: &str, body: Option<&Value>) -> Resp {
        self.request(Method::DELETE, path, Some(bearer), body).await
    }

    /// `POST /v1/verify` with a token and scopes; asserts 200 and returns the answer.
    pub async fn verify(&self, secret: &str, scopes: &[&str]) -> Value {
        self.request(
            Method::POST,
            "/v1/verify",
            None,
            Some(&json!({"token": secret, "scopes": scopes})),
        )
        .await
        .expect(200)
    }

    /// The `reason` of an inactive answer, or `"active"`.
    pub async fn verdict(&self, secret: &str, scopes: &[&str]) -> String {
        let v = self.verify(secret, scopes).await;
        if v["active"] == true {
            "active".to_owned()
        } else {
            assert_eq!(v["active"], false, "{v}");
            v["reason"].as_str().unwrap().to_owned()
        }
    }

    /// Moves the server's clock.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// Every file of the data dir (database, `-wal`, `-shm`, epoch file), by name.
    pub fn db_files(&self) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().unwrap().is_file())
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    }

    /// All bytes of every file in the data dir.
    pub fn db_bytes(&self) -> Vec<u8> {
        self.db_files().into_iter().flat_map(|(_, b)| b).collect()
    }

    /// Everything stored that a request could change (see [`Snapshot`]).
    pub async fn snapshot(&self) -> Snapshot {
        let store = &self.store;
        let mut tokens = store
            .list_tokens(
                None,
                &Page {
                    after: None,
                    limit: 100_000,
                },
            )
            .await
            .unwrap();
        for t in &mut tokens {
            t.last_used_at = None;
            t.last_used_ip = None;
        }
        let audit = store
            .audit_events(&AuditFilter {
                subject_user: None,
                before_seq: None,
                limit: 100_000,
            })
            .await
            .unwrap();
        Snapshot {
            users: store
                .list_users(&keyward_store::UserFilter {
                    limit: 100_000,
                    ..keyward_store::UserFilter::default()
                })
                .await
                .unwrap(),
            tokens,
            audit,
        }
    }

    /// The whole audit trail, newest first, straight from the store.
    pub async fn audit_trail(&self) -> Vec<StoredAuditEvent> {
        self.store
            .audit_events(&AuditFilter {
                subject_user: None,
                before_seq: None,
                limit: 100_000,
            })
            .await
            .unwrap()
    }

    /// Another service over the same data dir and server key, as the command line would be:
    /// its own store connection, cache and clock.
    pub async fn second_process(&self) -> Keyward {
        let store = SqliteStore::open(&self.dir.path().join("keyward.db"))
            .await
            .unwrap();
        let key = ServerKey::from_hex(&self.key_hex).unwrap();
        let clock = Arc::new(ManualClock::new(self.clock.now()));
        Keyward::new(
            Arc::new(store),
            clock,
            TokenHasher::new(&key),
            Settings::default(),
        )
        .await
        .unwrap()
    }

    /// Stops the server gracefully (it flushes noted uses on the way out) and waits for it.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }
}

async fn read(response: reqwest::Response) -> Resp {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    Resp {
        status,
        headers,
        text,
    }
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
