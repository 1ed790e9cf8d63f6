//! What the server acknowledged survives it: `kill -9` loses no acknowledged token or
//! revocation (acceptance 7), and SIGTERM exits 0 after writing the last noted uses.

use crate::helpers::{
    Made, Server, add_user, assert_exit_0, assert_killed, body_of, cli, contains, create_token,
    listed,
};
use serde_json::json;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

/// Everything acknowledged so far: tokens that must verify, and tokens that must be revoked.
#[derive(Default)]
struct Acknowledged {
    live: Vec<Made>,
    revoked: Vec<Made>,
}

impl Acknowledged {
    fn revoke(&mut self, id: &str) {
        let at = self.live.iter().position(|m| m.id == id).unwrap();
        self.revoked.push(self.live.remove(at));
    }

    async fn check(&self, server: &Server, dir: &Path, round: usize) {
        for made in &self.live {
            let v = server.api.verify(&made.secret, &[]).await;
            assert_eq!(
                (&v["active"], &v["token_id"]),
                (&json!(true), &json!(made.id)),
                "round {round}: acknowledged token {} lost: {v}",
                made.id
            );
        }
        for made in &self.revoked {
            let v = server.api.verify(&made.secret, &[]).await;
            assert_eq!(
                v,
                json!({"active": false, "reason": "revoked"}),
                "round {round}: acknowledged revocation of {} lost",
                made.id
            );
            assert_eq!(listed(dir, &made.id)["state"], "revoked", "round {round}");
        }
    }
}

#[tokio::test]
async fn acknowledged_tokens_and_revocations_survive_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    add_user(dir, "alice");
    let (admin, _) = create_token(dir, "alice", "admin", &["tokens:*", "droplet:*"]);
    let mut acked = Acknowledged::default();

    for round in 0..3 {
        let server = Server::start(dir, &[]);
        let api = &server.api;
        // Whatever earlier rounds acknowledged is still there after their kill -9.
        acked.check(&server, dir, round).await;
        api.assert_active(&admin.secret).await;

        let mut made_here = Vec::new();
        for i in 0..4 {
            let m = api
                .create(
                    &admin.secret,
                    &format!("r{round}-http{i}"),
                    &["droplet:read"],
                )
                .await;
            made_here.push(m.clone());
            acked.live.push(m);
        }
        for i in 0..2 {
            let (m, _) = create_token(dir, "alice", &format!("r{round}-cli{i}"), &["droplet:read"]);
            acked.live.push(m);
        }
        // One revocation at the command line (the server has the token cached: verify first).
        let cli_victim = acked.live.last().unwrap().clone();
        server.api.assert_active(&cli_victim.secret).await;
        cli(dir, &["token", "revoke", &cli_victim.id], None).ok();
        acked.revoke(&cli_victim.id);

        // Revocations over HTTP, the last acknowledgement right before the kill.
        for victim in &made_here[..2] {
            api.assert_active(&victim.secret).await;
            let r = api
                .delete(&format!("/v1/tokens/{}", victim.id), &admin.secret)
                .await
                .expect(200);
            assert_eq!(r["token"]["state"], "revoked", "{r}");
            acked.revoke(&victim.id);
        }
        if round == 1 {
            // This round a creation is the last thing acknowledged.
            let m = api
                .create(&admin.secret, &format!("r{round}-last"), &["droplet:read"])
                .await;
            acked.live.push(m);
        } else {
            let victim = &made_here[2];
            api.delete(&format!("/v1/tokens/{}", victim.id), &admin.secret)
                .await
                .expect(200);
            acked.revoke(&victim.id);
        }
        let ended = server.kill9();
        assert_killed(&ended);
    }

    let server = Server::start(dir, &[]);
    acked.check(&server, dir, 3).await;
    assert_eq!(acked.revoked.len(), 3 * 3 + 2);
    assert_eq!(acked.live.len(), 3 * 6 - acked.revoked.len() + 1);
    assert_exit_0(&server.stop());
}

#[tokio::test]
async fn sigterm_exits_0_after_recording_the_last_uses() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    add_user(dir, "alice");
    let (made, _) = create_token(dir, "alice", "ci", &["droplet:read"]);
    assert!(listed(dir, &made.id)["last_used_at"].is_null());

    let server = Server::start(dir, &[]);
    // Used right before the shutdown: uses are written in batches, so only the final flush on
    // the way out can have recorded it.
    let v = server
        .api
        .verify_body(&json!({"token": made.secret, "ip": "203.0.113.7"}))
        .await;
    assert_eq!(v["active"], true, "{v}");
    let ended = server.stop();
    assert_exit_0(&ended);
    assert!(
        ended.extra_stdout.is_empty(),
        "stdout holds only the listening line: {ended:?}"
    );
    assert!(ended.logs.contains("shutting down"), "{ended:?}");

    let record = listed(dir, &made.id);
    assert!(
        record["last_used_at"].is_string(),
        "the use was recorded at shutdown: {record}; {ended:?}"
    );
    assert_eq!(record["last_used_ip"], "203.0.113.7", "{record}");

    // And a restarted server shows it too.
    let server = Server::start(dir, &[]);
    let own = server
        .api
        .get("/v1/tokens/self", &made.secret)
        .await
        .expect(200);
    assert!(own["token"]["last_used_at"].is_string(), "{own}");
    assert_exit_0(&server.stop());
}

/// A clean shutdown writes the verification cache beside the database (owner-only, no secret
/// in it), and the next start fills its cache from it instead of the store, once; a token
/// revoked from the command line while the server was down answers `revoked` all the same.
#[tokio::test]
async fn a_clean_restart_keeps_the_cache_and_misses_no_revocation_made_while_down() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    add_user(dir, "alice");
    let (kept, _) = create_token(dir, "alice", "kept", &["droplet:read"]);
    let (revoked, _) = create_token(dir, "alice", "revoked", &["droplet:read"]);

    let server = Server::start(dir, &[]);
    server.api.assert_active(&kept.secret).await;
    server.api.assert_active(&revoked.secret).await;
    let ended = server.stop();
    assert_exit_0(&ended);
    let wrote = ended
        .logs
        .lines()
        .find(|l| l.contains("wrote the verification cache's snapshot"))
        .unwrap_or_else(|| panic!("{ended:?}"));
    assert!(wrote.contains("entries=2 "), "{wrote}");
    let file = dir.join("keyward.db-cache");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    let bytes = std::fs::read(&file).unwrap();
    for made in [&kept, &revoked] {
        assert!(!contains(&bytes, made.secret.as_bytes()));
        assert!(!contains(&bytes, body_of(&made.secret).as_bytes()));
    }

    cli(dir, &["token", "revoke", &revoked.id], None).ok();
    let server = Server::start(dir, &[]);
    let loaded = wait_for_log(&server, "verification cache loaded from its snapshot");
    // Two written; the one revoked since is left out.
    assert!(loaded.contains("entries=1 "), "{loaded}");
    let lookups = store_lookups(&server).await;
    server.api.assert_active(&kept.secret).await;
    assert_eq!(
        store_lookups(&server).await,
        lookups,
        "answered from the loaded cache"
    );
    server.api.assert_inactive(&revoked.secret, "revoked").await;
    assert!(!file.exists(), "a snapshot is read once");

    // After a crash the warm-up reads the database: no snapshot was written since.
    assert_killed(&server.kill9());
    let server = Server::start(dir, &[]);
    wait_for_log(&server, "verification cache warmed");
    assert!(
        !server.logs().contains("loaded from its snapshot"),
        "{}",
        server.logs()
    );
    server.api.assert_active(&kept.secret).await;
    assert_exit_0(&server.stop());
}

/// A running server also writes the cache's snapshot every `cache_snapshot_every`, so a start
/// after `kill -9` loads the latest one; a token revoked after it (from the command line while
/// the server ran, or while it was down) answers `revoked` all the same.
#[tokio::test]
async fn a_start_after_kill_9_loads_the_last_periodic_snapshot_and_misses_no_revocation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    add_user(dir, "alice");
    let (kept, _) = create_token(dir, "alice", "kept", &["droplet:read"]);
    let (revoked_up, _) = create_token(dir, "alice", "revoked while up", &["droplet:read"]);
    let (revoked_down, _) = create_token(dir, "alice", "revoked while down", &["droplet:read"]);
    let every = [("KEYWARD_CACHE_SNAPSHOT_EVERY", "1s")];

    let server = Server::start(dir, &every);
    for made in [&kept, &revoked_up, &revoked_down] {
        server.api.assert_active(&made.secret).await;
    }
    // A snapshot written after the three were cached (the first may have come before).
    let written = |logs: &str| {
        logs.lines()
            .filter(|l| l.contains("wrote the verification cache's snapshot"))
            .inspect(|l| assert!(l.contains("when=\"periodic\""), "{l}"))
            .count()
    };
    let seen = written(&server.logs());
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while written(&server.logs()) < seen + 2 {
        assert!(std::time::Instant::now() < until, "{}", server.logs());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let file = dir.join("keyward.db-cache");
    assert!(file.exists());
    // After that snapshot: a revocation the file may not know of.
    cli(dir, &["token", "revoke", &revoked_up.id], None).ok();
    server
        .api
        .assert_inactive(&revoked_up.secret, "revoked")
        .await;
    assert_killed(&server.kill9());
    cli(dir, &["token", "revoke", &revoked_down.id], None).ok();

    let server = Server::start(dir, &every);
    let loaded = wait_for_log(&server, "verification cache loaded from its snapshot");
    // `kept`, and `revoked while up` if a snapshot came after its revocation (as revoked);
    // never `revoked while down`.
    assert!(
        loaded.contains("entries=1 ") || loaded.contains("entries=2 "),
        "{loaded}"
    );
    let lookups = store_lookups(&server).await;
    server.api.assert_active(&kept.secret).await;
    assert_eq!(
        store_lookups(&server).await,
        lookups,
        "answered from the loaded cache"
    );
    server
        .api
        .assert_inactive(&revoked_up.secret, "revoked")
        .await;
    server
        .api
        .assert_inactive(&revoked_down.secret, "revoked")
        .await;
    assert_exit_0(&server.stop());
}

/// The log line of `server` holding `text`, waited for (bounded).
fn wait_for_log(server: &Server, text: &str) -> String {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(line) = server.logs().lines().find(|l| l.contains(text)) {
            return line.to_owned();
        }
        assert!(
            std::time::Instant::now() < until,
            "no {text:?} in the logs: {}",
            server.logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The server's `keyward_store_lookups_total` (verifications that read the store).
async fn store_lookups(server: &Server) -> u64 {
    let metrics = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Present from the start (at 0): a renamed metric fails here rather than reading 0 twice.
    let n = metrics
        .lines()
        .find_map(|l| l.strip_prefix("keyward_store_lookups_total "))
        .unwrap_or_else(|| panic!("no keyward_store_lookups_total in {metrics}"));
    n.trim().parse().unwrap()
}

/// Creations that arrive together are committed together (group commit), and each is
/// acknowledged only once that commit is durable: 32 creators at once, the server killed with
/// `kill -9` while their requests are in flight; every creation acknowledged before the kill
/// verifies after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creations_acknowledged_before_kill_9_survive_it() {
    const CREATORS: usize = 32;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    add_user(dir, "alice");
    let (admin, _) = create_token(dir, "alice", "admin", &["tokens:*", "droplet:*"]);
    let server = Server::start(dir, &[]);
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Made>::new()));
    let mut creators = tokio::task::JoinSet::new();
    for c in 0..CREATORS {
        let (url, bearer) = (format!("{}/v1/tokens", server.base), admin.secret.clone());
        let acked = std::sync::Arc::clone(&acked);
        creators.spawn(async move {
            let client = reqwest::Client::builder().no_proxy().build().unwrap();
            for i in 0.. {
                let body = json!({"name": format!("c{c} #{i}"), "scopes": ["droplet:read"]});
                let Ok(resp) = client
                    .post(&url)
                    .bearer_auth(&bearer)
                    .json(&body)
                    .send()
                    .await
                else {
                    return; // the server is gone
                };
                if resp.status() != 201 {
                    return;
                }
                let Ok(made) = resp.json::<serde_json::Value>().await else {
                    return; // killed while the answer was on its way: not acknowledged
                };
                acked.lock().unwrap().push(Made {
                    secret: made["secret"].as_str().unwrap().to_owned(),
                    id: made["token"]["id"].as_str().unwrap().to_owned(),
                });
            }
        });
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while acked.lock().unwrap().len() < 300 {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} creations acknowledged in 60 s",
            acked.lock().unwrap().len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // Mid-stream: the creators have requests in flight, some in a batch being committed.
    assert_killed(&server.kill9());
    while creators.join_next().await.is_some() {}
    let acked = std::mem::take(&mut *acked.lock().unwrap());

    let server = Server::start(dir, &[]);
    let survivors = Acknowledged {
        live: acked,
        revoked: Vec::new(),
    };
    survivors.check(&server, dir, 0).await;
    assert_exit_0(&server.stop());
}
