//! The server key guard: a store whose active tokens were hashed under a key this server does
//! not have refuses to start (or, on purpose, resets), and readiness says so while running.

use crate::helpers::{Server, cli, cli_env, create_token};

const OTHER_KEY: &str = "6b657977617264206f74686572206b657920666f722074686520677561726421";

#[tokio::test]
async fn a_data_dir_without_its_key_refuses_to_start_until_told_to_reset() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    cli(dir, &["user", "add", "alice"], None).ok();
    let (token, _) = create_token(dir, "alice", "ci", &["droplet:read"]);
    let shown = cli(dir, &["key", "show"], None);
    let old_id = shown.ok().split_whitespace().next().unwrap().to_owned();
    assert!(
        shown.stdout.contains("server.key"),
        "says where the key comes from: {shown:?}"
    );
    let key_file = std::fs::read_to_string(dir.join("server.key")).unwrap();
    assert!(!shown.stdout.contains(key_file.trim()), "never the key");

    // The data dir lost its key: every command refuses, naming the missing key and the fix.
    std::fs::remove_file(dir.join("server.key")).unwrap();
    let out = cli(dir, &["token", "list"], None);
    let line = out.failed_cleanly(2);
    assert!(line.contains(&old_id), "{line}");
    assert!(
        line.contains("server.key") && line.contains("KEYWARD_SERVER_KEY"),
        "{line}"
    );
    assert!(line.contains("--accept-new-key"), "{line}");
    cli(dir, &["serve", "--listen", "127.0.0.1:0"], None).failed_cleanly(2);
    let new_id = cli(dir, &["key", "show"], None)
        .ok()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert_ne!(new_id, old_id);

    // A deliberate reset: the tokens under the old key are revoked, on the record.
    cli(dir, &["--accept-new-key", "token", "list"], None).ok();
    let server = Server::start(dir, &[]);
    let v = server.api.verify(&token.secret, &[]).await;
    assert_eq!(v["active"], false, "{v}");
    let ready = reqwest::get(format!("{}/readyz", server.base))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let tokens = cli(dir, &["token", "list", "--json"], None).json();
    assert_eq!(tokens[0]["revoke_reason"], "server key reset");
    let audit = cli(dir, &["audit", "--json"], None).json();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "server_key.reset"),
        "{audit}"
    );
}

#[tokio::test]
async fn readiness_fails_while_the_store_holds_tokens_this_instance_cannot_verify() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    cli(dir, &["user", "add", "alice"], None).ok();
    let server = Server::start(dir, &[]);
    // Another process with another key (a misconfigured fleet) makes a token.
    cli_env(
        dir,
        &[("KEYWARD_SERVER_KEY", OTHER_KEY)],
        &[
            "token",
            "create",
            "--user",
            "alice",
            "--name",
            "x",
            "--scope",
            "droplet:read",
        ],
        None,
    )
    .ok();
    let ready = reqwest::get(format!("{}/readyz", server.base))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("server key"), "{message}");
    let shown = cli_env(
        dir,
        &[("KEYWARD_SERVER_KEY", OTHER_KEY)],
        &["key", "show"],
        None,
    );
    assert!(
        shown.ok().ends_with("from KEYWARD_SERVER_KEY\n"),
        "{shown:?}"
    );
    let other_id = shown.stdout.split_whitespace().next().unwrap().to_owned();
    assert!(message.contains(&other_id), "{message}");
}
