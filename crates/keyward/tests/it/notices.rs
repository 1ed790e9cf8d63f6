//! What keyward tells on its own: expiry reminders (`notify_before`) and the expiry itself, each
//! exactly once per token across restarts and instances, and the reuse of a replaced secret after
//! its grace period (with `revoke_on_reuse`, the token's revocation). Real servers, real
//! SQLite files and a real PostgreSQL database; the interval is shortened through
//! `KEYWARD_NOTIFY_INTERVAL` and the thresholds are seconds, so the windows pass while the test
//! waits.

use crate::helpers::{Made, Server, cli_env};
use crate::postgres::PgDb;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// Reminders an hour and six seconds before expiry, looked for every second.
const NOTIFY: [(&str, &str); 2] = [
    ("KEYWARD_NOTIFY_BEFORE", "1h,6s"),
    ("KEYWARD_NOTIFY_INTERVAL", "1s"),
];

/// `env` and the shortened notice settings.
fn with_notify<'a>(env: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    env.iter().copied().chain(NOTIFY).collect()
}

/// A token for `user` (added if new) that expires in `expires`.
fn token(dir: &Path, env: &[(&str, &str)], user: &str, expires: &str) -> Made {
    let _ = cli_env(dir, env, &["user", "add", user], None);
    let args = [
        "token",
        "create",
        "--user",
        user,
        "--name",
        "t",
        "--expires",
        expires,
        "--scope",
        "droplet:read",
        "--json",
    ];
    let body = cli_env(dir, env, &args, None).json();
    Made {
        secret: body["secret"].as_str().unwrap().to_owned(),
        id: body["token"]["id"].as_str().unwrap().to_owned(),
    }
}

/// The audit trail, oldest first.
fn audit(dir: &Path, env: &[(&str, &str)]) -> Vec<Value> {
    let mut all = cli_env(dir, env, &["audit", "--json", "--limit", "1000"], None)
        .json()
        .as_array()
        .unwrap()
        .clone();
    all.reverse();
    all
}

/// The notices about `token` in `trail`: `7d`-style thresholds for `token.expiring`, and
/// `expired`.
fn notices(trail: &[Value], token: &Made) -> Vec<String> {
    trail
        .iter()
        .filter(|e| e["token_id"] == token.id.as_str())
        .filter_map(|e| match e["kind"].as_str().unwrap() {
            "token.expiring" => Some(e["detail"].as_str().unwrap().to_owned()),
            "token.expired" => Some("expired".to_owned()),
            _ => None,
        })
        .collect()
}

/// Waits (bounded) until `done` holds for the audit trail.
async fn until(dir: &Path, env: &[(&str, &str)], what: &str, done: impl Fn(&[Value]) -> bool) {
    let start = Instant::now();
    loop {
        let trail = audit(dir, env);
        if done(&trail) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "{what}: not within 40 s; the trail: {trail:#?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A token created with 20 s left, one created inside the nearest window (5 s left), and a
/// revoked one: made before `restart` is called and checked after it.
struct Walk {
    early: Made,
    inside: Made,
    revoked: Made,
}

impl Walk {
    fn start(dir: &Path, env: &[(&str, &str)]) -> Self {
        let walk = Self {
            early: token(dir, env, "alice", "20s"),
            inside: token(dir, env, "alice", "5s"),
            revoked: token(dir, env, "alice", "20s"),
        };
        cli_env(dir, env, &["token", "revoke", &walk.revoked.id], None).ok();
        walk
    }

    /// Until the first reminders are in (the hour's for `early`, the nearest for `inside`).
    async fn first_reminders(&self, dir: &Path, env: &[(&str, &str)]) {
        until(dir, env, "the first reminders", |trail| {
            notices(trail, &self.early).contains(&"1h".to_owned())
                && !notices(trail, &self.inside).is_empty()
        })
        .await;
    }

    /// Until every notice is in, then a few more scans: each fired exactly once.
    async fn all_once(&self, dir: &Path, env: &[(&str, &str)]) {
        until(dir, env, "every notice", |trail| {
            notices(trail, &self.early).len() == 3 && notices(trail, &self.inside).len() == 2
        })
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let trail = audit(dir, env);
        assert_eq!(notices(&trail, &self.early), ["1h", "6s", "expired"]);
        assert_eq!(
            notices(&trail, &self.inside),
            ["6s", "expired"],
            "created inside the nearest window: only its reminder"
        );
        assert_eq!(notices(&trail, &self.revoked), Vec::<String>::new());
        let reminder = trail
            .iter()
            .find(|e| e["kind"] == "token.expiring" && e["token_id"] == self.early.id.as_str())
            .unwrap();
        assert!(
            reminder["subject_user"].is_string() && reminder["ip"].is_null(),
            "{reminder}"
        );
    }
}

#[tokio::test]
async fn expiry_reminders_and_the_expiry_fire_once_each_across_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let env = with_notify(&[]);
    let server = Server::start(dir, &env);
    let walk = Walk::start(dir, &env);
    walk.first_reminders(dir, &env).await;
    let ended = server.stop();
    assert!(ended.status.success(), "{ended:?}");
    let _restarted = Server::start(dir, &env);
    walk.all_once(dir, &env).await;
}

#[tokio::test]
async fn reminders_can_be_turned_off() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let env = [
        ("KEYWARD_NOTIFY_BEFORE", "[]"),
        ("KEYWARD_NOTIFY_INTERVAL", "1s"),
    ];
    let _server = Server::start(dir, &env);
    let soon = token(dir, &env, "alice", "3s");
    until(dir, &env, "the expiry", |trail| {
        notices(trail, &soon) == ["expired"]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_postgres_fire_each_notice_once_across_a_restart() {
    let Some(db) = PgDb::fresh().await else {
        return;
    };
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let env = with_notify(&db.env());
    let a = Server::start(a_dir.path(), &env);
    let _b = Server::start(b_dir.path(), &env);
    let walk = Walk::start(a_dir.path(), &env);
    walk.first_reminders(a_dir.path(), &env).await;
    // One instance restarts meanwhile, as in a rolling upgrade.
    a.stop();
    let _a = Server::start(a_dir.path(), &env);
    walk.all_once(a_dir.path(), &env).await;
}

/// Regenerates `made` at the command line (no grace) and returns the new secret.
fn regenerate(dir: &Path, env: &[(&str, &str)], made: &Made) -> String {
    let body = cli_env(dir, env, &["token", "regenerate", &made.id, "--json"], None).json();
    body["secret"].as_str().unwrap().to_owned()
}

/// Presents `secret` for a client at `ip` and returns the answer.
async fn present(server: &Server, secret: &str, ip: &str) -> Value {
    server
        .api
        .verify_body(&json!({"token": secret, "ip": ip}))
        .await
}

/// Acceptance 4 on the store `env` names: an old secret used after its grace is recorded with
/// the client's address (once a minute however often it comes) and answers `revoked` as before;
/// with `revoke_on_reuse` the token is revoked too.
async fn reuse_walk(dir: &Path, env: &[(&str, &str)]) {
    let server = Server::start(dir, env);
    let stolen = token(dir, env, "alice", "30d");
    let fresh = regenerate(dir, env, &stolen);
    for _ in 0..3 {
        let answer = present(&server, &stolen.secret, "203.0.113.9").await;
        assert_eq!(answer, json!({"active": false, "reason": "revoked"}));
    }
    let used = |trail: &[Value], token: &Made| -> Vec<Value> {
        trail
            .iter()
            .filter(|e| {
                e["kind"] == "token.rotated_secret_used" && e["token_id"] == token.id.as_str()
            })
            .cloned()
            .collect()
    };
    until(dir, env, "the reuse event", |trail| {
        !used(trail, &stolen).is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = used(&audit(dir, env), &stolen);
    assert_eq!(events.len(), 1, "once a minute per token: {events:#?}");
    assert_eq!(events[0]["ip"], "203.0.113.9");
    // Not revoked unless configured: the new secret still works.
    server.api.assert_active(&fresh).await;
    server.stop();

    let revoking: Vec<(&str, &str)> = env
        .iter()
        .copied()
        .chain([("KEYWARD_REVOKE_ON_REUSE", "true")])
        .collect();
    let server = Server::start(dir, &revoking);
    let stolen = token(dir, env, "alice", "30d");
    let fresh = regenerate(dir, env, &stolen);
    server.api.assert_active(&fresh).await;
    let answer = present(&server, &stolen.secret, "198.51.100.4").await;
    assert_eq!(answer, json!({"active": false, "reason": "revoked"}));
    let start = Instant::now();
    loop {
        let answer = server.api.verify(&fresh, &[]).await;
        if answer["active"] == false {
            assert_eq!(answer["reason"], "revoked");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the token is not revoked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let trail = audit(dir, env);
    let events = used(&trail, &stolen);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["ip"], "198.51.100.4");
    let revoked = trail
        .iter()
        .find(|e| e["kind"] == "token.revoked" && e["token_id"] == stolen.id.as_str())
        .expect("the revocation is audited");
    assert_eq!(revoked["detail"], "rotated secret reused");
}

#[tokio::test]
async fn a_replaced_secret_used_after_its_grace_is_detected_on_sqlite() {
    let tmp = tempfile::tempdir().unwrap();
    reuse_walk(tmp.path(), &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_secret_used_after_its_grace_is_detected_on_postgres() {
    let Some(db) = PgDb::fresh().await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    reuse_walk(tmp.path(), &db.env()).await;
}
