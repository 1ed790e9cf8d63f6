//! `keyward token check`: offline format and checksum check, for scanners and pre-commit
//! hooks. No database, no data dir, nothing created.

use crate::helpers::{add_user, cli, cli_in, create_token};

#[test]
fn check_accepts_real_tokens_and_refuses_anything_else_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    add_user(&data, "alice");
    let (made, _) = create_token(&data, "alice", "t", &["droplet:read"]);
    let secret = made.secret.as_str();

    // Somewhere keyward has never been: a missing --data-dir, and a cwd without ./keyward-data.
    let nowhere = tempfile::tempdir().unwrap();
    let missing = nowhere.path().join("no-such-dir");

    let out = cli(&missing, &["token", "check", secret], None);
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    let out = cli_in(nowhere.path(), &["token", "check", secret], None);
    assert_eq!(out.code(), Some(0), "{out:?}");

    // `-` reads the token from stdin (with or without a line ending).
    let out = cli(
        &missing,
        &["token", "check", "-"],
        Some(&format!("{secret}\n")),
    );
    assert_eq!(out.code(), Some(0), "{out:?}");
    let out = cli_in(nowhere.path(), &["token", "check", "-"], Some(secret));
    assert_eq!(out.code(), Some(0), "{out:?}");
    // So does no argument at all: the form the README uses, which keeps the secret out of the
    // process list and the shell's history.
    let out = cli(&missing, &["token", "check"], Some(&format!("{secret}\n")));
    assert_eq!(out.code(), Some(0), "{out:?}");
    let out = cli(&missing, &["token", "check"], Some("kwp_nope\n"));
    out.failed_cleanly(1);

    // One changed character anywhere (prefix, body, checksum) → 1, with a reason.
    for at in [0, 2, 4, 20, 46, 47, 52] {
        let mut chars: Vec<char> = secret.chars().collect();
        chars[at] = match chars[at] {
            'a' => 'b',
            '0' => '1',
            _ => 'a',
        };
        let changed: String = chars.into_iter().collect();
        let out = cli(&missing, &["token", "check", &changed], None);
        let line = out.failed_cleanly(1);
        assert!(
            !line.contains(&changed) && !line.contains(&secret[4..47]),
            "the input is not echoed: {out:?}"
        );
        let out = cli(&missing, &["token", "check", "-"], Some(&changed));
        out.failed_cleanly(1);
    }

    // Garbage.
    let too_long = format!("{secret}x");
    let garbage: [&str; 6] = ["hello", "kwp_", "kwp_short", "", "ghp_abc", &too_long];
    for garbage in garbage {
        let out = cli(&missing, &["token", "check", garbage], None);
        out.failed_cleanly(1);
    }
    let out = cli(&missing, &["token", "check", "-"], Some(""));
    out.failed_cleanly(1);

    // Nothing was created anywhere.
    assert!(!missing.exists(), "token check created the data dir");
    assert_eq!(
        std::fs::read_dir(nowhere.path()).unwrap().count(),
        0,
        "token check created files in the working directory"
    );
}
