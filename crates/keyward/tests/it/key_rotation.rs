//! Rotating the server key: a running server takes a new ring from its key file, tokens under
//! the old key keep working and move to the new key as they are used, and a key still in use
//! cannot be retired.

use crate::helpers::{Made, Server, cli, cli_env, create_token};
use std::path::Path;
use std::time::{Duration, Instant};

/// `key status` as `(key id, role, active tokens)`, in its order (current first).
pub fn status(dir: &Path, env: &[(&str, &str)]) -> Vec<(String, String, u64)> {
    let out = cli_env(dir, env, &["key", "status"], None);
    out.stdout
        .lines()
        .skip(1)
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            (
                words[0].to_owned(),
                words[1].to_owned(),
                words[2].parse().unwrap(),
            )
        })
        .collect()
}

/// Waits until `key status` shows `want` (a rekey happens off the request path).
#[track_caller]
pub fn until_status(dir: &Path, env: &[(&str, &str)], want: &[(&str, &str, u64)]) {
    let start = Instant::now();
    loop {
        let now = status(dir, env);
        let same = now.len() == want.len()
            && now
                .iter()
                .zip(want)
                .all(|(a, b)| a.0 == b.0 && a.1 == b.1 && a.2 == b.2);
        if same {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "key status is {now:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn current_id(dir: &Path) -> String {
    cli(dir, &["key", "show"], None)
        .ok()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_keeps_every_token_working_and_moves_each_as_it_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    cli(dir, &["user", "add", "alice", "--admin"], None).ok();
    let (used, _) = create_token(dir, "alice", "used", &["droplet:read", "tokens:create"]);
    // Regenerated once: its replaced secret is recognised under the old key until it retires.
    let (replaced, _) = create_token(dir, "alice", "idle", &["droplet:read"]);
    let idle = Made {
        secret: cli(dir, &["token", "regenerate", &replaced.id], None)
            .ok()
            .trim()
            .to_owned(),
        id: replaced.id.clone(),
    };
    let (revoked, _) = create_token(dir, "alice", "revoked", &["droplet:read"]);
    cli(dir, &["token", "revoke", &revoked.id], None).ok();
    let old = current_id(dir);
    let server = Server::start(dir, &[]);
    server.api.assert_active(&used.secret).await;

    // Rotate while the server runs; it takes the new ring from the file, no restart.
    let rotated = cli(dir, &["key", "rotate"], None);
    let new = current_id(dir);
    assert_ne!(new, old);
    assert!(
        rotated
            .ok()
            .starts_with(&format!("{new} is now the current key")),
        "{rotated:?}"
    );
    let shown = cli(dir, &["key", "show"], None);
    assert!(
        shown
            .ok()
            .contains(&format!("older keys, still verifying: {old}")),
        "{shown:?}"
    );
    let ring = std::fs::read_to_string(dir.join("server.key")).unwrap();
    assert!(
        !shown.stdout.contains(ring.lines().next().unwrap()),
        "never a key"
    );
    assert!(
        !rotated.stdout.contains(ring.lines().next().unwrap()),
        "never a key"
    );
    until_status(dir, &[], &[(&new, "current", 0), (&old, "older", 2)]);
    let start = Instant::now();
    while !server.logs().contains("server key ring loaded") {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the server never took the new ring"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Presented under the old key, `used` verifies (here as the bearer of a request) and moves
    // to the new key; the token it makes is hashed under the new key.
    let fresh = server
        .api
        .create(&used.secret, "fresh", &["droplet:read"])
        .await;
    server.api.assert_active(&fresh.secret).await;
    until_status(dir, &[], &[(&new, "current", 2), (&old, "older", 1)]);
    server.api.assert_active(&used.secret).await;
    server.api.assert_inactive(&revoked.secret, "revoked").await;
    server
        .api
        .assert_inactive(&replaced.secret, "revoked")
        .await;

    // The old key still verifies `idle`: retiring it is refused, and nothing changes.
    let refused = cli(dir, &["key", "retire", &old], None);
    let line = refused.failed_cleanly(1);
    assert!(line.contains("1 active token"), "{line}");
    assert!(cli(dir, &["key", "show"], None).ok().contains(&old));
    let current = cli(dir, &["key", "retire", &new], None);
    assert!(
        current.failed_cleanly(1).contains("current key"),
        "{current:?}"
    );

    server.api.assert_active(&idle.secret).await;
    until_status(dir, &[], &[(&new, "current", 3), (&old, "older", 0)]);
    let retired = cli(dir, &["key", "retire", &old], None);
    assert!(
        retired.ok().contains(&format!("{old} retired")),
        "{retired:?}"
    );
    assert_eq!(status(dir, &[]), [(new.clone(), "current".to_owned(), 3)]);
    // Every active token still answers the same, now under the new key alone.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for token in [&used, &idle, &fresh] {
        server.api.assert_active(&token.secret).await;
    }
    let restarted = {
        server.stop();
        Server::start(dir, &[])
    };
    for token in [&used, &idle, &fresh] {
        restarted.api.assert_active(&token.secret).await;
    }
    let audit = cli(dir, &["audit", "--json"], None).json();
    let kinds: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"server_key.rotated") && kinds.contains(&"server_key.retired"),
        "{kinds:?}"
    );
    // The replaced secret under the retired key went with it.
    let retirement = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "server_key.retired")
        .unwrap();
    assert!(
        retirement["detail"]
            .as_str()
            .unwrap()
            .ends_with("1 replaced secret under it dropped"),
        "{retirement}"
    );
}

#[tokio::test]
async fn a_staged_key_verifies_nothing_until_promoted_and_env_rings_are_not_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    cli(dir, &["user", "add", "alice"], None).ok();
    let (token, _) = create_token(dir, "alice", "t", &["droplet:read"]);
    let first = current_id(dir);
    let added = cli(dir, &["key", "add"], None);
    let staged = added.ok().split_whitespace().next().unwrap().to_owned();
    assert!(
        added.stdout.contains(&format!("key rotate --to {staged}")),
        "{added:?}"
    );
    assert_eq!(current_id(dir), first, "an added key is not current");
    until_status(dir, &[], &[(&first, "current", 1), (&staged, "older", 0)]);
    cli(dir, &["key", "rotate", "--to", &staged], None).ok();
    until_status(dir, &[], &[(&staged, "current", 0), (&first, "older", 1)]);
    let unknown = cli(dir, &["key", "rotate", "--to", "k000000000000"], None);
    assert!(
        unknown.failed_cleanly(1).contains("no key k000000000000"),
        "{unknown:?}"
    );
    let server = Server::start(dir, &[]);
    server.api.assert_active(&token.secret).await;

    // A ring from the environment: shown and used, never rewritten by the command line.
    let a = cli(dir, &["key", "generate"], None).ok().trim().to_owned();
    let b = cli(dir, &["key", "generate"], None).ok().trim().to_owned();
    assert_eq!(a.len(), 64);
    assert_ne!(a, b);
    let ring = format!("{a}\n{b}\n");
    let env = [("KEYWARD_SERVER_KEYS", ring.as_str())];
    let shown = cli_env(dir, &env, &["key", "show"], None);
    assert!(shown.ok().contains("from KEYWARD_SERVER_KEYS"), "{shown:?}");
    assert!(
        shown.stdout.contains("older keys, still verifying"),
        "{shown:?}"
    );
    assert!(
        !shown.stdout.contains(&a) && !shown.stdout.contains(&b),
        "never a key"
    );
    let refused = cli_env(dir, &env, &["key", "rotate"], None);
    assert!(
        refused.failed_cleanly(1).contains("KEYWARD_SERVER_KEYS"),
        "{refused:?}"
    );
    let both = cli_env(
        dir,
        &[
            ("KEYWARD_SERVER_KEYS", ring.as_str()),
            ("KEYWARD_SERVER_KEY", a.as_str()),
        ],
        &["key", "status"],
        None,
    );
    assert!(both.failed_cleanly(2).contains("set only one"), "{both:?}");
    let bad = cli_env(
        dir,
        &[("KEYWARD_SERVER_KEYS", "zz\n")],
        &["key", "show"],
        None,
    );
    let line = bad.failed_cleanly(2);
    assert!(
        line.contains("KEYWARD_SERVER_KEYS") && line.contains("line 1"),
        "{line}"
    );
}
