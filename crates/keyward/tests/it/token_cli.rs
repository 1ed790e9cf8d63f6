//! `keyward token show|rename|revoke` at the command line, against the real binary.

use crate::helpers::{cli, create_token};
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
    assert_eq!(json["owner_name"], "alice");

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
