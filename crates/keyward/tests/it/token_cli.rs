//! `keyward token show|rename|revoke` at the command line, against the real binary.

use crate::helpers::{Server, cli, create_token};
use keyward::{Clock as _, SystemClock};

#[test]
fn a_token_is_shown_renamed_and_revoked_once() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    cli(dir, &["user", "add", "alice"], None).ok();
    let (made, _) = create_token(dir, "alice", "ci deploy", &["droplet:read"]);

    let shown = cli(dir, &["token", "show", &made.id], None);
    let text = shown.ok();
    assert!(
        text.contains("ci deploy") && text.contains("alice"),
        "{text}"
    );
    assert!(
        text.contains("droplet:read") && text.contains("active"),
        "{text}"
    );
    assert!(!text.contains(&made.secret), "never the secret");
    let json = cli(dir, &["token", "show", &made.id, "--json"], None).json();
    let alice = cli(dir, &["user", "show", "alice", "--json"], None).json();
    assert_eq!(json["owner"], alice["id"], "{json}");
    assert!(json.get("owner_name").is_none(), "the API's shape: {json}");

    // A date, as the web page's picker gives it: its first second, UTC.
    let date = (SystemClock.now().date() + time::Duration::days(10)).to_string();
    let dated = cli(
        dir,
        &[
            "token",
            "create",
            "--user",
            "alice",
            "--name",
            "dated",
            "--scope",
            "droplet:read",
            "--expires",
            &date,
            "--json",
        ],
        None,
    )
    .json();
    assert_eq!(dated["token"]["expires_at"], format!("{date}T00:00:00Z"));

    let out = cli(dir, &["token", "rename", &made.id, "deploy bot"], None);
    assert!(out.ok().contains("ci deploy → deploy bot"), "{out:?}");
    cli(dir, &["token", "rename", &made.id, ""], None).failed_cleanly(1);
    cli(
        dir,
        &["token", "show", "tok_01J00000000000000000000000"],
        None,
    )
    .failed_cleanly(1);

    cli(
        dir,
        &["token", "revoke", &made.id, "--reason", "laptop lost"],
        None,
    )
    .ok();
    // A second revocation changes nothing, says when, by whom and why, and fails.
    let again = cli(
        dir,
        &["token", "revoke", &made.id, "--reason", "other"],
        None,
    );
    let line = again.failed_cleanly(1);
    assert!(line.contains("already revoked"), "{line}");
    assert!(line.contains("laptop lost"), "{line}");
    let json = cli(dir, &["token", "show", &made.id, "--json"], None).json();
    assert_eq!(json["revoke_reason"], "laptop lost");
    assert_eq!(json["state"], "revoked");
}

#[tokio::test]
async fn json_tokens_have_exactly_the_apis_shape() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    cli(dir, &["user", "add", "alice"], None).ok();
    let (manager, _) = create_token(dir, "alice", "manager", &["tokens:read"]);
    let created = cli(
        dir,
        &[
            "token",
            "create",
            "--user",
            "alice",
            "--name",
            "ci",
            "--scope",
            "droplet:read",
            "--json",
        ],
        None,
    )
    .json();
    let id = created["token"]["id"].as_str().unwrap().to_owned();
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&created), ["secret", "token"], "{created}");

    let server = Server::start(dir, &[]);
    let api = server
        .api
        .get(&format!("/v1/tokens/{id}"), &manager.secret)
        .await
        .expect(200);
    let api = &api["token"];
    let shown = cli(dir, &["token", "show", &id, "--json"], None).json();
    assert_eq!(&shown, api, "token show --json is the API's token");
    assert_eq!(keys(&created["token"]), keys(api), "{created}");
    let listed = cli(dir, &["token", "list", "--json"], None).json();
    let listed = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(&listed, api, "token list --json holds the API's tokens");
}
