//! Bad input at the command line: exit status 1, one `keyward:` line on stderr, no panic, and
//! nothing changed in the database.

use crate::helpers::{add_user, cli, create_token};
use serde_json::Value;
use std::path::Path;

/// Everything a bad command could have changed.
fn state(dir: &Path) -> (Value, Value, Value) {
    (
        cli(dir, &["token", "list", "--json"], None).json(),
        cli(dir, &["user", "list", "--json"], None).json(),
        cli(dir, &["audit", "--json", "--limit", "1000"], None).json(),
    )
}

#[test]
fn bad_input_at_the_command_line_fails_cleanly_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    add_user(dir, "alice");
    let (made, _) = create_token(dir, "alice", "existing", &["droplet:read"]);
    let before = state(dir);
    assert_eq!(before.0.as_array().unwrap().len(), 1);

    let create = |user: &str, name: &str, scope: &str, expires: Option<&str>| {
        let mut args = vec![
            "token", "create", "--user", user, "--name", name, "--scope", scope,
        ];
        if let Some(e) = expires {
            args.extend(["--expires", e]);
        }
        cli(dir, &args, None)
    };
    let nonexistent = format!("tok_01J{}", "0".repeat(23));
    let long_name = "n".repeat(10_000);
    let cases = [
        ("unknown user", create("nobody", "x", "droplet:read", None)),
        (
            "invalid user name",
            create("No Body", "x", "droplet:read", None),
        ),
        (
            "unknown resource",
            create("alice", "x", "nosuch:read", None),
        ),
        ("unknown action", create("alice", "x", "droplet:fly", None)),
        ("malformed scope", create("alice", "x", "droplet", None)),
        ("empty name", create("alice", "", "droplet:read", None)),
        ("blank name", create("alice", "   ", "droplet:read", None)),
        (
            "control character in name",
            create("alice", "a\nb", "droplet:read", None),
        ),
        (
            "10,000-character name",
            create("alice", &long_name, "droplet:read", None),
        ),
        (
            "never (not allowed)",
            create("alice", "x", "droplet:read", Some("never")),
        ),
        (
            "past the max lifetime",
            create("alice", "x", "droplet:read", Some("400d")),
        ),
        (
            "a time in the past",
            create("alice", "x", "droplet:read", Some("2001-01-01T00:00:00Z")),
        ),
        (
            "an unreadable expiry",
            create("alice", "x", "droplet:read", Some("soon")),
        ),
        (
            "revoke a nonexistent id",
            cli(dir, &["token", "revoke", &nonexistent], None),
        ),
        (
            "revoke a non-id",
            cli(
                dir,
                &["token", "revoke", "not-an-id", "--reason", "x"],
                None,
            ),
        ),
        (
            "regenerate a nonexistent id",
            cli(dir, &["token", "regenerate", &nonexistent], None),
        ),
        (
            "regenerate with a too-long grace",
            cli(
                dir,
                &["token", "regenerate", &made.id, "--grace", "30d"],
                None,
            ),
        ),
        (
            "list an unknown user's tokens",
            cli(dir, &["token", "list", "--user", "nobody"], None),
        ),
        (
            "audit of an unknown user",
            cli(dir, &["audit", "--user", "nobody"], None),
        ),
        (
            "add an existing user",
            cli(dir, &["user", "add", "alice"], None),
        ),
    ];
    for (what, out) in &cases {
        assert_eq!(out.code(), Some(1), "{what}: {out:?}");
        let line = out.failed_cleanly(1);
        assert!(
            line.chars().count() < 400,
            "{what}: an overlong line: {line}"
        );
    }
    let (_, ref unknown_user) = cases[0];
    assert!(unknown_user.stderr.contains("nobody"), "{unknown_user:?}");
    let (_, ref missing) = cases[13];
    assert!(missing.stderr.contains(&nonexistent), "{missing:?}");

    assert_eq!(state(dir), before, "a failed command changed the database");
}
