//! Several `keyward serve` processes on one PostgreSQL database: revocations reach every
//! instance within the documented bound, a lost notification connection or a lost database
//! never lets a revoked token through, and `keyward store copy` moves a SQLite deployment over.
//!
//! PostgreSQL comes from `KEYWARD_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); each test creates its own database and drops
//! it. Without a reachable server these tests pass as skipped and say so on stderr, unless
//! `KEYWARD_REQUIRE_POSTGRES=1`.

use crate::helpers::{Made, Out, Server, cli_env};
use keyward::keyward_store::postgres::PROPAGATION_BOUND;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{AssertSqlSafe, ConnectOptions as _};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr as _;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Every instance of a deployment shares the server key.
const SERVER_KEY: &str = "6b657977617264207465737420736572766572206b6579206f6e6520746f6f21";
/// The documented bound, three times over for a loaded test machine.
const WAIT: Duration = Duration::from_millis(3 * PROPAGATION_BOUND.as_millis() as u64);

static NEXT_DB: AtomicU32 = AtomicU32::new(0);
static SKIP_NOTICE: Once = Once::new();

/// A fresh database, dropped (connections and all) with this value.
pub(crate) struct PgDb {
    name: String,
    admin: PgConnectOptions,
    /// Its URL, for `KEYWARD_DATABASE_URL`.
    pub(crate) url: String,
}

impl PgDb {
    /// A new database, or `None` (and a notice) when PostgreSQL is not there and not required.
    pub(crate) async fn fresh() -> Option<Self> {
        let base =
            std::env::var("KEYWARD_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
        let admin = PgConnectOptions::from_str(&base).expect("KEYWARD_TEST_DATABASE_URL");
        let mut conn = match connect(&admin).await {
            Ok(conn) => conn,
            Err(e) => {
                if std::env::var("KEYWARD_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                    panic!(
                        "KEYWARD_REQUIRE_POSTGRES=1 but PostgreSQL at {base} is unreachable: {e}"
                    );
                }
                SKIP_NOTICE.call_once(|| {
                    let _ = writeln!(
                        std::io::stderr(),
                        "\nSKIPPED the PostgreSQL black-box tests: cannot connect to {base} ({e}).\n\
                         Start PostgreSQL there or set KEYWARD_TEST_DATABASE_URL; \
                         KEYWARD_REQUIRE_POSTGRES=1 makes this a failure.\n"
                    );
                });
                return None;
            }
        };
        let name = format!(
            "keyward_test_{}_{}_{}",
            keyward::Clock::now(&keyward::SystemClock).unix_timestamp(),
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::SeqCst)
        );
        sqlx::query(AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .execute(&mut conn)
            .await
            .unwrap();
        let url = format!(
            "postgres://{}@{}:{}/{name}",
            admin.get_username(),
            admin.get_host(),
            admin.get_port()
        );
        Some(Self { name, admin, url })
    }

    /// `application_name`s of the keyward listener connections on this database.
    async fn listeners(&self) -> Vec<String> {
        let mut conn = connect(&self.admin).await.unwrap();
        sqlx::query_scalar(
            "SELECT application_name FROM pg_stat_activity \
             WHERE datname = $1 AND application_name LIKE 'keyward-listener-%'",
        )
        .bind(&self.name)
        .fetch_all(&mut conn)
        .await
        .unwrap()
    }

    /// The listener of the one `keyward` process running on this database now (a command
    /// that just exited may take a moment to leave `pg_stat_activity`).
    async fn only_listener(&self) -> String {
        let start = Instant::now();
        loop {
            let listeners = self.listeners().await;
            if listeners.len() == 1 {
                return listeners[0].clone();
            }
            assert!(start.elapsed() < Duration::from_secs(10), "{listeners:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn terminate(&self, application_name: &str) {
        let mut conn = connect(&self.admin).await.unwrap();
        let killed: i64 = sqlx::query_scalar(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = $1 AND application_name = $2",
        )
        .bind(&self.name)
        .bind(application_name)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(killed, 1, "{application_name}");
    }

    pub(crate) fn env(&self) -> [(&str, &str); 2] {
        [
            ("KEYWARD_DATABASE_URL", self.url.as_str()),
            ("KEYWARD_SERVER_KEY", SERVER_KEY),
        ]
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let sql = format!(r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#, self.name);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut conn = connect(&admin).await.unwrap();
                sqlx::query(AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .unwrap();
            });
        })
        .join();
    }
}

async fn connect(options: &PgConnectOptions) -> Result<PgConnection, sqlx::Error> {
    match tokio::time::timeout(Duration::from_secs(5), options.connect()).await {
        Ok(connected) => connected,
        Err(_) => Err(sqlx::Error::PoolTimedOut),
    }
}

/// `keyward ARGS` on `db`, from data dir `dir`.
fn kw(dir: &Path, db: &PgDb, args: &[&str]) -> Out {
    cli_env(dir, &db.env(), args, None)
}

/// A user and a token with `scopes`, made at the command line.
fn token(dir: &Path, env: &[(&str, &str)], user: &str, scopes: &[&str]) -> Made {
    let _ = cli_env(dir, env, &["user", "add", user], None);
    let mut args = vec!["token", "create", "--user", user, "--name", "t", "--json"];
    for s in scopes {
        args.extend(["--scope", s]);
    }
    let body = cli_env(dir, env, &args, None).json();
    Made {
        secret: body["secret"].as_str().unwrap().to_owned(),
        id: body["token"]["id"].as_str().unwrap().to_owned(),
    }
}

/// `POST /v1/verify` → (status, body).
async fn verify(server: &Server, secret: &str) -> (u16, Value) {
    let resp = server
        .api
        .call(
            reqwest::Method::POST,
            "/v1/verify",
            None,
            Some(&serde_json::json!({ "token": secret })),
        )
        .await;
    let body = serde_json::from_str(&resp.text).unwrap_or(Value::Null);
    (resp.status, body)
}

/// Verifies until the answer is not `active`; returns how long that took. Fails if an answer
/// is `active` after `WAIT`.
pub(crate) async fn until_refused(server: &Server, secret: &str) -> (Duration, u16, Value) {
    let start = Instant::now();
    loop {
        let (status, body) = verify(server, secret).await;
        if !(status == 200 && body["active"] == true) {
            return (start.elapsed(), status, body);
        }
        assert!(
            start.elapsed() < WAIT,
            "still active {:?} after the revocation was acknowledged",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Verifies until the answer is `active`; fails if it is not within `WAIT`.
pub(crate) async fn until_active(server: &Server, secret: &str) {
    let start = Instant::now();
    loop {
        let (status, body) = verify(server, secret).await;
        if status == 200 && body["active"] == true {
            return;
        }
        assert!(
            start.elapsed() < WAIT,
            "not active {:?} after its creation was acknowledged: {body}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Keeps verifying for `period`: never `active`.
async fn never_active(server: &Server, secret: &str, period: Duration) -> Vec<u16> {
    let start = Instant::now();
    let mut statuses = Vec::new();
    while start.elapsed() < period {
        let (status, body) = verify(server, secret).await;
        assert!(
            !(status == 200 && body["active"] == true),
            "a revoked token verified active: {body}"
        );
        statuses.push(status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_through_one_instance_is_refused_by_the_other_within_the_bound() {
    let Some(db) = PgDb::fresh().await else {
        return;
    };
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    kw(a_dir.path(), &db, &["migrate"]).ok();
    let admin = token(a_dir.path(), &db.env(), "alice", &["tokens:*", "droplet:*"]);
    let a = Server::start(a_dir.path(), &db.env());
    let b = Server::start(b_dir.path(), &db.env());
    let target = a
        .api
        .create(&admin.secret, "deploy", &["droplet:read"])
        .await;
    // A token made on A is known to B within the propagation bound (B's set of known hashes
    // learns it from the change feed; until then B may answer `unknown`).
    until_active(&b, &target.secret).await;

    let revoked = a
        .api
        .delete(&format!("/v1/tokens/{}", target.id), &admin.secret)
        .await;
    assert!(revoked.status < 300, "{revoked:?}");
    let (took, status, body) = until_refused(&b, &target.secret).await;
    assert_eq!(
        (status, &body["reason"]),
        (200, &Value::from("revoked")),
        "{body}"
    );
    eprintln!("B refused the token {took:?} after A acknowledged its revocation");
    never_active(&b, &target.secret, Duration::from_millis(300)).await;

    let metrics = reqwest::get(format!("{}/metrics", b.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // A histogram, as the README says (with its buckets, so instances can be aggregated), not
    // a summary.
    assert!(
        metrics.contains("# TYPE keyward_revocation_propagation_seconds histogram"),
        "B reports the observed delay as a histogram: {metrics}"
    );
    assert!(
        metrics.contains("keyward_revocation_propagation_seconds_bucket{le=\"1\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_user_through_one_instance_refuses_their_tokens_on_both() {
    let Some(db) = PgDb::fresh().await else {
        return;
    };
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    kw(a_dir.path(), &db, &["migrate"]).ok();
    kw(a_dir.path(), &db, &["user", "add", "root", "--admin"]).ok();
    let backend = token(a_dir.path(), &db.env(), "root", &["users:delete"]);
    let doomed = token(a_dir.path(), &db.env(), "alice", &["droplet:read"]);
    let a = Server::start(a_dir.path(), &db.env());
    let b = Server::start(b_dir.path(), &db.env());
    a.api.assert_active(&doomed.secret).await;
    b.api.assert_active(&doomed.secret).await;

    let alice = kw(a_dir.path(), &db, &["user", "show", "alice", "--json"]).json();
    let deleted = a
        .api
        .delete(
            &format!("/v1/users/{}", alice["id"].as_str().unwrap()),
            &backend.secret,
        )
        .await;
    assert_eq!(deleted.status, 204, "{deleted:?}");
    // The instance that deleted refuses at once; the other within the propagation bound.
    let (status, body) = verify(&a, &doomed.secret).await;
    assert_eq!(
        (status, &body["reason"]),
        (200, &Value::from("revoked")),
        "{body}"
    );
    let (took, status, body) = until_refused(&b, &doomed.secret).await;
    assert_eq!(
        (status, &body["reason"]),
        (200, &Value::from("revoked")),
        "{body}"
    );
    eprintln!("B refused the deleted user's token {took:?} after A acknowledged the deletion");
    never_active(&b, &doomed.secret, Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_notification_connection_never_lets_a_revoked_token_through() {
    let Some(db) = PgDb::fresh().await else {
        return;
    };
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let made = token(a_dir.path(), &db.env(), "alice", &["droplet:read"]);
    let b = Server::start(b_dir.path(), &db.env());
    let b_listener = db.only_listener().await;
    b.api.assert_active(&made.secret).await;

    db.terminate(&b_listener).await;
    kw(a_dir.path(), &db, &["token", "revoke", &made.id]).ok();
    let (_, status, body) = until_refused(&b, &made.secret).await;
    assert_eq!(
        (status, &body["reason"]),
        (200, &Value::from("revoked")),
        "{body}"
    );
    never_active(&b, &made.secret, PROPAGATION_BOUND * 2).await;
    // B listens again.
    let start = Instant::now();
    while db.listeners().await.len() != 1 {
        assert!(start.elapsed() < WAIT, "B's listener did not come back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TCP relay between one instance and PostgreSQL that the test can cut and restore: the
/// instance loses the database while every other client keeps it.
struct Relay {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(upstream: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let accept = {
            let (open, links) = (Arc::clone(&open), Arc::clone(&links));
            tokio::spawn(async move {
                while let Ok((mut down, _)) = listener.accept().await {
                    if !open.load(Ordering::SeqCst) {
                        continue; // dropped: the connection is refused
                    }
                    let upstream = upstream.clone();
                    let link = tokio::spawn(async move {
                        if let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                        }
                    });
                    links.lock().unwrap().push(link.abort_handle());
                }
            })
        };
        Self {
            addr,
            open,
            links,
            accept,
        }
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_loses_the_database_fails_closed_and_recovers() {
    let Some(db) = PgDb::fresh().await else {
        return;
    };
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let revoked = token(a_dir.path(), &db.env(), "alice", &["droplet:read"]);
    let kept = token(a_dir.path(), &db.env(), "bob", &["droplet:read"]);
    let relay = Relay::start(format!("{}:{}", db.admin.get_host(), db.admin.get_port())).await;
    let b_url = format!(
        "postgres://{}@{}/{}",
        db.admin.get_username(),
        relay.addr,
        db.name
    );
    let b_env = [
        ("KEYWARD_DATABASE_URL", b_url.as_str()),
        ("KEYWARD_SERVER_KEY", SERVER_KEY),
    ];
    let b = Server::start(b_dir.path(), &b_env);
    b.api.assert_active(&revoked.secret).await;
    b.api.assert_active(&kept.secret).await;

    relay.cut();
    // The database itself is fine: A's side revokes while B cannot see it.
    kw(a_dir.path(), &db, &["token", "revoke", &revoked.id]).ok();
    let (_, status, body) = until_refused(&b, &revoked.secret).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"]["code"].is_string(), "a JSON error: {body}");
    let statuses = never_active(&b, &revoked.secret, PROPAGATION_BOUND * 2).await;
    assert!(statuses.iter().all(|s| *s == 503), "{statuses:?}");
    let (status, _) = verify(&b, &kept.secret).await;
    assert_eq!(
        status, 503,
        "no cached answer is trusted while B cannot vouch for it"
    );

    relay.restore();
    let start = Instant::now();
    loop {
        let (status, body) = verify(&b, &kept.secret).await;
        if status == 200 {
            assert_eq!(body["active"], true, "{body}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "B did not recover"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.api.assert_inactive(&revoked.secret, "revoked").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_reports_what_it_applied_and_starts_log_no_postgres_notices() {
    let Some(db) = PgDb::fresh().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let first = kw(dir.path(), &db, &["migrate"]);
    let text = first.ok();
    assert!(
        text.starts_with("applied 9 migrations to postgres://"),
        "{text}"
    );
    assert!(
        text.contains("0001_initial")
            && text.contains("0006_events")
            && text.contains("0008_expiry_notices")
            && text.contains("0009_token_limits")
            && text.contains("0010_recent_use"),
        "{text}"
    );
    let again = kw(dir.path(), &db, &["migrate"]);
    assert!(again.ok().contains("already up to date"), "{again:?}");

    // A start on a migrated database, logging at INFO: sqlx's `IF NOT EXISTS` notices
    // (`relation "_sqlx_migrations" already exists, skipping`) are not shown.
    let [url, key] = db.env();
    let server = Server::start(dir.path(), &[url, key, ("KEYWARD_LOG", "info")]);
    let made = token(dir.path(), &db.env(), "alice", &["droplet:read"]);
    // Made by another process (the command line): known within the propagation bound.
    until_active(&server, &made.secret).await;
    let logs = server.logs();
    assert!(logs.contains("keyward started"), "{logs}");
    assert!(!logs.contains("_sqlx_migrations"), "{logs}");
    assert!(!logs.contains("already exists"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_started_at_once_on_an_empty_database_both_come_up() {
    let Some(db) = PgDb::fresh().await else {
        return;
    };
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Server::start(a_dir.path(), &db.env()));
        let b = s.spawn(|| Server::start(b_dir.path(), &db.env()));
        (a.join().unwrap(), b.join().unwrap())
    });
    let made = token(a_dir.path(), &db.env(), "alice", &["droplet:read"]);
    // Made by a third process (the command line): each instance knows it within the bound.
    until_active(&a, &made.secret).await;
    until_active(&b, &made.secret).await;
    let mut conn = connect(&db.admin.clone().database(&db.name)).await.unwrap();
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        applied,
        [1, 2, 3, 4, 5, 6, 8, 9, 10],
        "one schema, each migration applied once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_copy_moves_a_sqlite_deployment_and_every_answer_stays_the_same() {
    let Some(db) = PgDb::fresh().await else {
        return;
    };
    let sqlite_dir = tempfile::tempdir().unwrap();
    let key = [("KEYWARD_SERVER_KEY", SERVER_KEY)];
    let active = token(sqlite_dir.path(), &key, "alice", &["droplet:read"]);
    let revoked = token(sqlite_dir.path(), &key, "bob", &["droplet:read"]);
    cli_env(
        sqlite_dir.path(),
        &key,
        &["token", "revoke", &revoked.id],
        None,
    )
    .ok();
    let rolled = token(sqlite_dir.path(), &key, "carol", &["droplet:read"]);
    let regenerated = cli_env(
        sqlite_dir.path(),
        &key,
        &["token", "regenerate", &rolled.id],
        None,
    );
    let new_secret = regenerated.ok().trim().to_owned();
    let secrets = [
        active.secret.as_str(),
        revoked.secret.as_str(),
        rolled.secret.as_str(),
        new_secret.as_str(),
        "kwp_00000000000000000000000000000000000000000000000000000",
    ];

    let before = {
        let server = Server::start(sqlite_dir.path(), &key);
        let mut answers = Vec::new();
        for secret in secrets {
            answers.push(verify(&server, secret).await);
        }
        server.stop();
        answers
    };
    assert_eq!(before[0].1["active"], true);
    assert_eq!(before[1].1["reason"], "revoked");
    assert_eq!(before[3].1["active"], true);
    let audit_before = cli_env(sqlite_dir.path(), &key, &["audit", "--json"], None).json();

    let from = format!(
        "sqlite://{}",
        sqlite_dir.path().join("keyward.db").display()
    );
    let copied = cli_env(
        sqlite_dir.path(),
        &key,
        &["store", "copy", "--from", &from, "--to", &db.url],
        None,
    );
    assert!(
        copied
            .ok()
            .starts_with("copied 3 users, 3 tokens, 4 secret hashes"),
        "{copied:?}"
    );
    let again = cli_env(
        sqlite_dir.path(),
        &key,
        &["store", "copy", "--from", &from, "--to", &db.url],
        None,
    );
    assert!(again.failed_cleanly(1).contains("already holds data"));

    let pg_dir = tempfile::tempdir().unwrap();
    // Read before verifying: presenting the replaced secret again records its reuse.
    let audit_after = kw(pg_dir.path(), &db, &["audit", "--json"]).json();
    assert_eq!(audit_after, audit_before);
    let server = Server::start(pg_dir.path(), &db.env());
    for (secret, answer) in secrets.iter().zip(&before) {
        assert_eq!(&verify(&server, secret).await, answer, "{secret}");
    }
}

/// Waits until `server` has loaded a key ring `times` times since it started.
async fn until_ring_loads(server: &Server, times: usize) {
    let start = Instant::now();
    while server.logs().matches("server key ring loaded").count() < times {
        assert!(
            start.elapsed() < WAIT + Duration::from_secs(10),
            "the instance never took the new ring: {}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_across_two_instances_keeps_every_token_working() {
    use crate::key_rotation::{status, until_status};
    let Some(db) = PgDb::fresh().await else {
        return;
    };
    // Each instance reads its own copy of the ring file, as a fleet does; no key in the
    // environment.
    let env = [("KEYWARD_DATABASE_URL", db.url.as_str())];
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a_path, b_path) = (a_dir.path(), b_dir.path());
    let share = || std::fs::copy(a_path.join("server.key"), b_path.join("server.key")).unwrap();
    cli_env(a_path, &env, &["migrate"], None).ok();
    cli_env(a_path, &env, &["user", "add", "root", "--admin"], None).ok();
    let used = token(a_path, &env, "root", &["tokens:*", "droplet:read"]);
    let idle = token(a_path, &env, "alice", &["droplet:read"]);
    let revoked = token(a_path, &env, "bob", &["droplet:read"]);
    cli_env(a_path, &env, &["token", "revoke", &revoked.id], None).ok();
    share();
    let first = status(a_path, &env)[0].0.clone();
    let a = Server::start(a_path, &env);
    let b = Server::start(b_path, &env);
    let (a_loads, b_loads) = (
        a.logs().matches("server key ring loaded").count(),
        b.logs().matches("server key ring loaded").count(),
    );

    // The procedure the README gives: add a key, give every instance the ring, then make the
    // new key current and give every instance the ring again.
    let added = cli_env(a_path, &env, &["key", "add"], None);
    let second = added.ok().split_whitespace().next().unwrap().to_owned();
    share();
    until_ring_loads(&a, a_loads + 1).await;
    until_ring_loads(&b, b_loads + 1).await;
    cli_env(a_path, &env, &["key", "rotate", "--to", &second], None).ok();
    share();
    until_ring_loads(&a, a_loads + 2).await;
    until_ring_loads(&b, b_loads + 2).await;
    until_status(
        a_path,
        &env,
        &[(&second, "current", 0), (&first, "older", 2)],
    );

    // Used on B, `used` moves to the new key; A, which cached it under the old one, learns the
    // change from the feed and still answers it.
    let fresh = b.api.create(&used.secret, "fresh", &["droplet:read"]).await;
    until_status(
        a_path,
        &env,
        &[(&second, "current", 2), (&first, "older", 1)],
    );
    for server in [&a, &b] {
        server.api.assert_active(&used.secret).await;
        until_active(server, &fresh.secret).await;
        server.api.assert_inactive(&revoked.secret, "revoked").await;
    }
    let refused = cli_env(a_path, &env, &["key", "retire", &first], None);
    assert!(
        refused.failed_cleanly(1).contains("1 active token"),
        "{refused:?}"
    );
    assert_eq!(status(b_path, &env)[1].0, first, "nothing was retired");

    a.api.assert_active(&idle.secret).await;
    until_status(
        a_path,
        &env,
        &[(&second, "current", 3), (&first, "older", 0)],
    );
    cli_env(a_path, &env, &["key", "retire", &first], None).ok();
    share();
    until_ring_loads(&a, a_loads + 3).await;
    until_ring_loads(&b, b_loads + 3).await;
    for server in [&a, &b] {
        for made in [&used, &idle, &fresh] {
            server.api.assert_active(&made.secret).await;
        }
        // Only active tokens move; a revoked one under a retired key is no longer recognised.
        server.api.assert_inactive(&revoked.secret, "unknown").await;
        let ready = reqwest::get(format!("{}/readyz", server.base))
            .await
            .unwrap();
        assert_eq!(ready.status(), 200);
    }
}

/// A token made at the command line with extra `token create` flags.
fn limited_token(dir: &Path, env: &[(&str, &str)], user: &str, flags: &[&str]) -> Made {
    let _ = cli_env(dir, env, &["user", "add", user], None);
    let mut args = vec![
        "token",
        "create",
        "--user",
        user,
        "--name",
        "t",
        "--json",
        "--scope",
        "droplet:read",
    ];
    args.extend_from_slice(flags);
    let body = cli_env(dir, env, &args, None).json();
    Made {
        secret: body["secret"].as_str().unwrap().to_owned(),
        id: body["token"]["id"].as_str().unwrap().to_owned(),
    }
}

/// `POST /v1/verify` on `base` with a shared client → the answer.
async fn verify_at(client: &reqwest::Client, base: &str, secret: &str) -> Value {
    client
        .post(format!("{base}/v1/verify"))
        .json(&serde_json::json!({ "token": secret }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_accept_exactly_max_uses_and_hold_a_rate_limit_together() {
    let Some(db) = PgDb::fresh().await else {
        return;
    };
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    kw(a_dir.path(), &db, &["migrate"]).ok();
    let uses = limited_token(a_dir.path(), &db.env(), "alice", &["--max-uses", "100"]);
    let rated = limited_token(a_dir.path(), &db.env(), "bob", &["--rate-limit", "20/10s"]);
    let a = Server::start(a_dir.path(), &db.env());
    let b = Server::start(b_dir.path(), &db.env());
    let client = reqwest::Client::new();

    // 300 at once, half through each instance: exactly 100 accepted.
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..300 {
        let (client, secret) = (client.clone(), uses.secret.clone());
        let base = if i % 2 == 0 {
            a.base.clone()
        } else {
            b.base.clone()
        };
        calls.spawn(async move { verify_at(&client, &base, &secret).await });
    }
    let mut accepted = 0;
    let mut refused = 0;
    while let Some(answer) = calls.join_next().await {
        let answer = answer.unwrap();
        if answer["active"] == true {
            accepted += 1;
        } else {
            assert_eq!(answer["reason"], "usage_exceeded", "{answer}");
            refused += 1;
        }
    }
    assert_eq!((accepted, refused), (100, 200));

    // 20 per 10 s across both instances, for a little over two windows of steady requests:
    // each whole window accepts between 18 and 22.
    let per_window = Arc::new(Mutex::new(std::collections::BTreeMap::<i64, u32>::new()));
    let start = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for base in [a.base.clone(), b.base.clone()] {
        for _ in 0..2 {
            let (client, secret, base) = (client.clone(), rated.secret.clone(), base.clone());
            let per_window = Arc::clone(&per_window);
            senders.spawn(async move {
                while start.elapsed() < Duration::from_secs(32) {
                    let answer = verify_at(&client, &base, &secret).await;
                    if answer["active"] == true {
                        let reset = answer["ratelimit"]["reset"].as_i64().unwrap();
                        *per_window.lock().unwrap().entry(reset).or_default() += 1;
                    } else {
                        assert_eq!(answer["reason"], "rate_limited", "{answer}");
                        assert!(answer["retry_after"].as_i64().unwrap() >= 1, "{answer}");
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
        }
    }
    while let Some(done) = senders.join_next().await {
        done.unwrap();
    }
    let windows = per_window.lock().unwrap().clone();
    eprintln!("accepted per 10 s window (by its end): {windows:?}");
    // The first and last windows were only partly covered.
    let whole: Vec<u32> = windows.values().copied().skip(1).collect();
    let whole = &whole[..whole.len().saturating_sub(1)];
    assert!(whole.len() >= 2, "{windows:?}");
    for n in whole {
        assert!((18..=22).contains(n), "{windows:?}");
    }
}
