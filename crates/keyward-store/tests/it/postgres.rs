//! The contract suite on PostgreSQL, a fresh database per test, and checks only PostgreSQL has
//! (several instances on one database, the change feed, its connection loss).
//!
//! The server comes from `KEYWARD_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`; the user must be allowed to create databases).
//! Each test creates `keyward_test_<unix time>_<pid>_<n>` and drops it when done. When the server
//! cannot be reached the tests pass as skipped and say so on stderr, unless
//! `KEYWARD_REQUIRE_POSTGRES=1` (as in CI), which makes them fail.

use async_trait::async_trait;
use keyward_core::AuditKind;
use keyward_core::{Clock as _, SystemClock};
use keyward_store::postgres::PROPAGATION_BOUND;
use keyward_store::{ChangeFeed as _, Maintenance as _, TokenStore as _};
use keyward_store::{PgStore, Store, StoreError};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{AssertSqlSafe, ConnectOptions as _, Connection as _};
use std::io::Write as _;
use std::str::FromStr as _;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use crate::contract::{PROPAGATION_WAIT, eventually};
use crate::fixtures::{Database, T0, add_token, add_user, audit};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Test databases older than this are leftovers of a run that was killed; the next run drops
/// them.
const STALE_AFTER_SECS: i64 = 60 * 60;

static NEXT_DB: AtomicU32 = AtomicU32::new(0);
static SWEPT: AtomicBool = AtomicBool::new(false);
static SKIP_NOTICE: Once = Once::new();

/// A fresh, empty PostgreSQL database, dropped (with any connections still open to it) when
/// this value is.
pub struct PgDb {
    name: String,
    admin: PgConnectOptions,
    /// The new database's URL (for processes that take a URL).
    pub url: String,
}

impl PgDb {
    /// A fresh database, or `None` when PostgreSQL is unreachable and not required.
    pub async fn fresh() -> Option<Self> {
        let base_url =
            std::env::var("KEYWARD_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
        let admin = PgConnectOptions::from_str(&base_url)
            .unwrap_or_else(|e| panic!("KEYWARD_TEST_DATABASE_URL is not a PostgreSQL URL: {e}"));
        let mut conn = match connect_admin(&admin).await {
            Ok(conn) => conn,
            Err(e) => {
                skip_or_fail(&base_url, &e);
                return None;
            }
        };
        if !SWEPT.swap(true, Ordering::SeqCst) {
            drop_stale_databases(&mut conn).await;
        }
        let name = format!(
            "keyward_test_{}_{}_{}",
            SystemClock.now().unix_timestamp(),
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::SeqCst)
        );
        sqlx::query(AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        Some(Self {
            url: with_database(&base_url, &name),
            name,
            admin,
        })
    }

    /// Options for a connection to this database.
    pub fn options(&self) -> PgConnectOptions {
        self.admin.clone().database(&self.name)
    }

    /// Opens a store on this database.
    pub async fn store(&self) -> PgStore {
        PgStore::connect_with(self.options()).await.unwrap()
    }

    /// Runs `sql` on the server's maintenance database (for `ALTER DATABASE`, terminating
    /// backends and the like).
    pub async fn admin(&self, sql: &str) {
        let mut conn = connect_admin(&self.admin).await.unwrap();
        sqlx::query(AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Terminates the backends whose `application_name` is `application_name`; returns how
    /// many there were.
    pub async fn terminate(&self, application_name: &str) -> i64 {
        let mut conn = connect_admin(&self.admin).await.unwrap();
        let terminated: i64 = sqlx::query_scalar(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = $1 AND application_name = $2",
        )
        .bind(&self.name)
        .bind(application_name)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
        terminated
    }
}

impl crate::contract::Fresh for PgDb {
    type Db = Self;
    fn into_fresh(self) -> Option<Self> {
        Some(self)
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot be blocked on; a thread with its own
        // runtime can. FORCE ends connections a store still holds (its listener, a pool).
        let admin = self.admin.clone();
        let sql = format!(r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#, self.name);
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut conn = connect_admin(&admin).await?;
                sqlx::query(AssertSqlSafe(sql)).execute(&mut conn).await?;
                conn.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) && !std::thread::panicking() {
            panic!("could not drop test database {}: {dropped:?}", self.name);
        }
    }
}

#[async_trait]
impl Database for PgDb {
    async fn open(&self) -> Box<dyn Store> {
        Box::new(self.store().await)
    }

    async fn sibling(&self) -> Box<dyn Database> {
        Box::new(Self::fresh().await.unwrap())
    }
}

async fn connect_admin(options: &PgConnectOptions) -> Result<PgConnection, sqlx::Error> {
    match tokio::time::timeout(Duration::from_secs(5), options.connect()).await {
        Ok(connected) => connected,
        Err(_) => Err(sqlx::Error::PoolTimedOut),
    }
}

/// PostgreSQL is unreachable: fail if it is required, else say once (past the test harness's
/// output capture) that these tests were skipped and how to run them.
fn skip_or_fail(url: &str, error: &sqlx::Error) {
    if std::env::var("KEYWARD_REQUIRE_POSTGRES").as_deref() == Ok("1") {
        panic!("KEYWARD_REQUIRE_POSTGRES=1 but PostgreSQL at {url} is unreachable: {error}");
    }
    SKIP_NOTICE.call_once(|| {
        let _ = writeln!(
            std::io::stderr(),
            "\nSKIPPED the PostgreSQL store tests: cannot connect to {url} ({error}).\n\
             To run them, start PostgreSQL there (or set KEYWARD_TEST_DATABASE_URL to a server \
             whose user may create databases); set KEYWARD_REQUIRE_POSTGRES=1 to make this a \
             failure.\n"
        );
    });
}

/// Drops test databases left behind by runs that were killed before their cleanup.
async fn drop_stale_databases(conn: &mut PgConnection) {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE datname LIKE 'keyward\\_test\\_%'",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let now = SystemClock.now().unix_timestamp();
    for name in names {
        let created = name
            .split('_')
            .nth(2)
            .and_then(|secs| secs.parse::<i64>().ok());
        if created.is_some_and(|secs| now - secs > STALE_AFTER_SECS) {
            let sql = format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#);
            let _ = sqlx::query(AssertSqlSafe(sql)).execute(&mut *conn).await;
        }
    }
}

/// `url` with its database (the path) replaced by `database`, keeping any query string.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{database}", &base[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

mod contract {
    crate::contract::contract_suite!(super::PgDb::fresh());
}

async fn revoke_through(store: &dyn Store, token: &keyward_core::TokenRecord) {
    let at = T0 + time::Duration::minutes(1);
    let event = audit(
        AuditKind::TokenRevoked,
        at,
        Some(&token.owner),
        Some(&token.id),
    );
    let revocation = keyward_store::Revocation {
        at,
        by: "test".to_owned(),
        reason: None,
    };
    store
        .revoke_token(&token.id, None, &revocation, &event)
        .await
        .unwrap();
}

#[test]
fn a_url_gets_its_database_replaced() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/postgres", "k"),
        "postgres://postgres@127.0.0.1:5432/k"
    );
    assert_eq!(
        with_database("postgres://u:p@h/db?sslmode=disable", "k"),
        "postgres://u:p@h/k?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h:1", "k"), "postgres://h:1/k");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_through_one_instance_reaches_another_within_the_bound() {
    let Some(db) = PgDb::fresh().await else {
        return;
    };
    let a = db.store().await;
    let b = db.store().await;
    let alice = add_user(&a, "alice").await;
    let (token, hash) = add_token(&a, &alice.id, T0).await;
    let cursor = b.change_cursor().await.unwrap();
    let epoch = b.change_epoch();

    revoke_through(&a, &token).await;
    let took = eventually("B's epoch moves after A's revocation", || {
        b.change_epoch() != epoch
    })
    .await;
    assert!(
        took < PROPAGATION_WAIT,
        "{took:?} (bound {PROPAGATION_BOUND:?})"
    );
    let changes = b.changes_since(cursor).await.unwrap();
    assert!(changes.complete);
    assert_eq!(changes.hashes, [hash.hash]);
    assert!(b.listener_connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_whose_notification_is_lost_is_caught_by_the_heartbeat() {
    let Some(db) = PgDb::fresh().await else {
        return;
    };
    let store = db.store().await;
    let epoch = store.change_epoch();
    // A change log entry written without NOTIFY, as if the notification had been lost.
    let mut conn = db.options().connect().await.unwrap();
    sqlx::query("INSERT INTO changes (hash, at) VALUES ($1, 0)")
        .bind(vec![7u8; 32])
        .execute(&mut conn)
        .await
        .unwrap();
    let start = Instant::now();
    eventually("the heartbeat notices the change", || {
        store.change_epoch() != epoch
    })
    .await;
    assert!(start.elapsed() < PROPAGATION_WAIT);
    assert_eq!(store.changes_since(0).await.unwrap().hashes.len(), 1);
    // Nothing else changes: the epoch then holds still.
    let settled = store.change_epoch();
    tokio::time::sleep(keyward_store::postgres::HEARTBEAT_INTERVAL * 2).await;
    assert_eq!(store.change_epoch(), settled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_listener_reconnects_and_catches_up() {
    let Some(db) = PgDb::fresh().await else {
        return;
    };
    let a = db.store().await;
    let b = db.store().await;
    let alice = add_user(&a, "alice").await;
    let (first, first_hash) = add_token(&a, &alice.id, T0).await;
    let (second, second_hash) = add_token(&a, &alice.id, T0).await;
    let cursor = b.change_cursor().await.unwrap();
    let epoch = b.change_epoch();

    assert_eq!(db.terminate(b.listener_application_name()).await, 1);
    revoke_through(&a, &first).await;
    eventually("B's epoch moves after the revocation", || {
        b.change_epoch() != epoch
    })
    .await;
    assert_eq!(
        b.changes_since(cursor).await.unwrap().hashes,
        [first_hash.hash]
    );

    eventually("B's listener reconnects", || b.listener_connected()).await;
    // Connected again, and listening: a later revocation still reaches B.
    let cursor = b.change_cursor().await.unwrap();
    let epoch = b.change_epoch();
    assert_eq!(b.change_epoch(), epoch, "a connected feed holds still");
    revoke_through(&a, &second).await;
    eventually("B hears of the next revocation", || {
        b.change_epoch() != epoch
    })
    .await;
    assert_eq!(
        b.changes_since(cursor).await.unwrap().hashes,
        [second_hash.hash]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_listener_is_down_the_epoch_never_holds_still() {
    let Some(db) = PgDb::fresh().await else {
        return;
    };
    let a = db.store().await;
    let b = db.store().await;
    let alice = add_user(&a, "alice").await;
    let (token, hash) = add_token(&a, &alice.id, T0).await;
    let cursor = b.change_cursor().await.unwrap();

    // New connections are refused, so B's listener cannot come back; the pools keep theirs.
    db.admin(&format!(
        r#"ALTER DATABASE "{}" WITH ALLOW_CONNECTIONS false"#,
        db.name()
    ))
    .await;
    assert_eq!(db.terminate(b.listener_application_name()).await, 1);
    eventually("B notices its listener is gone", || !b.listener_connected()).await;
    revoke_through(&a, &token).await;
    // Long past the bound, B still cannot vouch for its cache: every read is new.
    tokio::time::sleep(PROPAGATION_BOUND * 2).await;
    assert!(!b.listener_connected());
    let reads: Vec<u64> = (0..4).map(|_| b.change_epoch()).collect();
    assert!(reads.windows(2).all(|w| w[0] != w[1]), "{reads:?}");
    // B's queries still answer on its pooled connection, and show the revocation.
    assert_eq!(b.changes_since(cursor).await.unwrap().hashes, [hash.hash]);

    db.admin(&format!(
        r#"ALTER DATABASE "{}" WITH ALLOW_CONNECTIONS true"#,
        db.name()
    ))
    .await;
    eventually("B's listener comes back", || b.listener_connected()).await;
    let settled = b.change_epoch();
    assert_eq!(b.change_epoch(), settled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_instances_starting_at_once_apply_the_schema_once() {
    let Some(db) = PgDb::fresh().await else {
        return;
    };
    let opened = futures_join_all((0..4).map(|_| {
        let url = db.url.clone();
        async move { PgStore::connect(&url).await }
    }))
    .await;
    for store in &opened {
        store.as_ref().unwrap().ping().await.unwrap();
    }
    let mut conn = db.options().connect().await.unwrap();
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(applied, [1, 2, 3, 4, 5, 6, 8, 9, 10], "each migration once");
}

/// Runs futures concurrently, each as its own task, and collects their outputs in order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_keyward_could_not_have_written_is_corrupt() {
    let Some(db) = PgDb::fresh().await else {
        return;
    };
    let store = db.store().await;
    let alice = add_user(&store, "alice").await;
    let (token, _) = add_token(&store, &alice.id, T0).await;
    let mut conn = db.options().connect().await.unwrap();
    sqlx::query("UPDATE tokens SET scopes = 'not a scope!' WHERE id = $1")
        .bind(token.id.as_str())
        .execute(&mut conn)
        .await
        .unwrap();
    let err = store.token(&token.id, None).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt { ref what, .. } if what.contains("scopes")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_unavailable() {
    // A port nothing listens on: connecting fails with a clear error, and quickly.
    let start = Instant::now();
    let err = PgStore::connect("postgres://postgres@127.0.0.1:9/postgres")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_store_is_unavailable() {
    let Some(db) = PgDb::fresh().await else {
        return;
    };
    let store = Arc::new(db.store().await);
    store.ping().await.unwrap();
    store.close().await;
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_snapshot_restores_into_postgres_unchanged() {
    let Some(db) = PgDb::fresh().await else {
        return;
    };
    let sqlite_db = crate::sqlite::SqliteDb::fresh().await;
    let sqlite = sqlite_db.open().await;
    let hashes = crate::contract::populate(&*sqlite).await;
    let snapshot = sqlite.dump().await.unwrap();

    let pg = db.store().await;
    pg.restore(&snapshot).await.unwrap();
    assert_eq!(pg.dump().await.unwrap(), snapshot);
    for hash in &hashes {
        assert_eq!(
            pg.lookup(hash).await.unwrap(),
            sqlite.lookup(hash).await.unwrap()
        );
    }
    // And back: the two engines hold the same model.
    let back_db = crate::sqlite::SqliteDb::fresh().await;
    let back = back_db.open().await;
    back.restore(&pg.dump().await.unwrap()).await.unwrap();
    assert_eq!(back.dump().await.unwrap(), snapshot);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_append_waits_for_the_writer_ahead_of_it_but_a_sign_in_attempt_does_not() {
    // Sequence numbers are handed out at insert and seen at commit: an append must not commit
    // while a writer that may hold a smaller number is still open, or a reader past it would
    // skip that event for good. A writer ahead holds the change log's row lock to its commit.
    let Some(db) = PgDb::fresh().await else {
        return;
    };
    let store = std::sync::Arc::new(db.store().await);
    let mut ahead = db.options().connect().await.unwrap();
    let mut tx = ahead.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM change_log WHERE id = 1 FOR UPDATE")
        .execute(&mut *tx)
        .await
        .unwrap();

    let event = |kind| crate::fixtures::audit(kind, crate::fixtures::T0, None, None);
    // An attempt's own audit entry is no event: it never waits for the outbox.
    tokio::time::timeout(
        std::time::Duration::from_secs(2),
        keyward_store::AuditStore::append_audit(&*store, &event(AuditKind::UserSignInFailed)),
    )
    .await
    .expect("a sign-in attempt waited for the outbox")
    .unwrap();
    let append = tokio::spawn({
        let store = std::sync::Arc::clone(&store);
        async move {
            keyward_store::AuditStore::append_audit(&*store, &event(AuditKind::SignInThrottled))
                .await
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !append.is_finished(),
        "an event committed past a writer ahead of it"
    );
    tx.commit().await.unwrap();
    append.await.unwrap().unwrap();
    let events = keyward_store::EventStore::events_after(&*store, None, 10)
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
}
