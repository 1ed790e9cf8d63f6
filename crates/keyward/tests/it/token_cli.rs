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

#[test]
fn a_bulk_revocation_revokes_what_its_dry_run_listed() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    cli(dir, &["user", "add", "alice"], None).ok();
    cli(dir, &["user", "add", "bob"], None).ok();
    let (a1, _) = create_token(dir, "alice", "one", &["droplet:read"]);
    let (a2, _) = create_token(dir, "alice", "two", &["droplet:*"]);
    let (a3, _) = create_token(dir, "alice", "three", &["volume:read"]);
    let (b1, _) = create_token(dir, "bob", "bob's", &["droplet:read"]);

    // A bulk revocation is asked for with --all; conditions need it.
    let usage = cli(dir, &["token", "revoke", "--user", "alice"], None);
    assert_eq!(usage.code(), Some(2), "{usage:?}");
    assert!(usage.stderr.contains("--all"), "{usage:?}");
    cli(dir, &["token", "revoke", "--all", "--user", "nobody"], None).failed_cleanly(1);
    cli(
        dir,
        &[
            "token",
            "revoke",
            "--all",
            "--user",
            "alice",
            "--created-before",
            "yesterday",
        ],
        None,
    )
    .failed_cleanly(1);

    let scoped = cli(
        dir,
        &[
            "token",
            "revoke",
            "--all",
            "--user",
            "alice",
            "--scope",
            "droplet:read",
            "--dry-run",
        ],
        None,
    );
    let mut expected = vec![a1.id.clone(), a2.id.clone()];
    expected.sort();
    assert_eq!(scoped.ok().lines().collect::<Vec<_>>(), expected);
    assert!(
        scoped.stderr.contains("2 tokens would be revoked"),
        "{scoped:?}"
    );

    // The time conditions, each on its own side of the tokens' creation (none was ever used,
    // so "unused since" matches them whatever the time).
    let count = |flag: &str, at: &str| {
        cli(
            dir,
            &[
                "token",
                "revoke",
                "--all",
                "--user",
                "alice",
                flag,
                at,
                "--dry-run",
            ],
            None,
        )
        .ok()
        .lines()
        .count()
    };
    let (past, future) = ("2020-01-01T00:00:00Z", "2100-01-01T00:00:00Z");
    assert_eq!(count("--created-after", past), 3);
    assert_eq!(count("--created-after", future), 0);
    assert_eq!(count("--created-before", future), 3);
    assert_eq!(count("--created-before", past), 0);
    assert_eq!(count("--unused-since", future), 3);
    assert_eq!(count("--unused-since", past), 3);

    let dry = cli(
        dir,
        &["token", "revoke", "--all", "--user", "alice", "--dry-run"],
        None,
    );
    let listed: Vec<String> = dry.ok().lines().map(str::to_owned).collect();
    assert_eq!(listed.len(), 3);
    for made in [&a1, &a2, &a3, &b1] {
        assert_eq!(crate::helpers::listed(dir, &made.id)["state"], "active");
    }

    // In a pipe: no bar, one summary line.
    let real = cli(
        dir,
        &[
            "token",
            "revoke",
            "--all",
            "--user",
            "alice",
            "--reason",
            "laptop stolen",
        ],
        None,
    );
    assert_eq!(real.ok(), "revoked 3 tokens\n");
    assert!(real.stderr.is_empty(), "{real:?}");
    for id in &listed {
        let token = crate::helpers::listed(dir, id);
        assert_eq!(token["state"], "revoked", "{token}");
        assert_eq!(token["revoke_reason"], "laptop stolen", "{token}");
    }
    assert_eq!(crate::helpers::listed(dir, &b1.id)["state"], "active");
    // The single revocation by id still works beside it.
    let one = cli(dir, &["token", "revoke", &b1.id], None);
    assert!(
        one.ok().starts_with(&format!("revoked {}", b1.id)),
        "{one:?}"
    );
}

#[test]
fn leak_report_revokes_the_secrets_read_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    cli(dir, &["user", "add", "alice"], None).ok();
    let (leaked, _) = create_token(dir, "alice", "leaked", &["droplet:read"]);
    let (kept, _) = create_token(dir, "alice", "kept", &["droplet:read"]);
    let stdin = format!("{}\n\nkwp_not_a_token\n", leaked.secret);
    let out = cli(
        dir,
        &["leak", "report", "--source", "pre-commit scan"],
        Some(&stdin),
    );
    assert_eq!(
        out.ok(),
        "1 of 2 secrets were keyward tokens; 1 revoked now\n"
    );
    assert!(!out.stdout.contains(&leaked.secret) && !out.stderr.contains(&leaked.secret));
    let token = crate::helpers::listed(dir, &leaked.id);
    assert_eq!(token["state"], "revoked", "{token}");
    assert_eq!(token["revoke_reason"], "leaked", "{token}");
    assert_eq!(crate::helpers::listed(dir, &kept.id)["state"], "active");
    let audit = cli(dir, &["audit", "--json"], None);
    assert!(audit.ok().contains("token.leaked"), "{audit:?}");
    assert!(audit.ok().contains("pre-commit scan"), "{audit:?}");
    cli(dir, &["leak", "report"], Some("\n")).failed_cleanly(1);
}
