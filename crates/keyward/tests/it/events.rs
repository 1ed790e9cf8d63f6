//! Events at the command line (`keyward events`, `keyward webhook deliveries`) and webhooks
//! delivered by the real server to a receiver that verifies each delivery with the Standard
//! Webhooks library (`webhooks/receiver.py`).

use serde_json::Value;
use std::io::{BufRead as _, BufReader};
use std::process::Stdio;

use crate::helpers::{add_user, cli, create_token, keyward_command};

/// `keyward events --json` lines, parsed.
fn events(dir: &std::path::Path, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["events", "--json"];
    all.extend(args);
    cli(dir, &all, None)
        .ok()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_command_line_reads_events_in_order_and_follows_new_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    add_user(dir, "alice");
    let (made, _) = create_token(dir, "alice", "ci", &["droplet:read"]);
    let revoked = cli(
        dir,
        &["token", "revoke", &made.id, "--reason", "rotated"],
        None,
    );
    revoked.ok();

    let all = events(dir, &[]);
    let types: Vec<&str> = all.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["user.created", "token.created", "token.revoked"]);
    for e in &all {
        assert!(e["id"].as_str().unwrap().starts_with("evt_"), "{e}");
        assert!(e["timestamp"].is_string(), "{e}");
        assert!(!e.to_string().contains(&made.secret), "{e}");
    }
    assert_eq!(all[2]["data"]["token_id"], made.id.as_str());
    assert_eq!(all[2]["data"]["detail"], "rotated");

    // Paging by id, and a bound.
    let first = all[0]["id"].as_str().unwrap();
    assert_eq!(events(dir, &["--after", first]), all[1..]);
    assert_eq!(events(dir, &["--limit", "1"]), all[..1]);
    let table = cli(dir, &["events"], None);
    assert!(table.ok().contains("token.revoked"), "{table:?}");
    let refused = cli(dir, &["events", "--after", "tok_nope"], None);
    assert!(refused.failed_cleanly(1).contains("--after"), "{refused:?}");
    let unknown = cli(
        dir,
        &["events", "--after", "evt_01JD8X0VQ5R6M8A5C3E7F9G1HK"],
        None,
    );
    assert!(unknown.failed_cleanly(1).contains("event"), "{unknown:?}");

    // --follow prints what comes after it started, as it comes.
    let last = all[2]["id"].as_str().unwrap().to_owned();
    let mut follow = keyward_command(&[])
        .arg("--data-dir")
        .arg(dir)
        .args(["events", "--json", "--follow", "--after", &last])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    add_user(dir, "bob");
    let line = lines.next().unwrap().unwrap();
    follow.kill().unwrap();
    follow.wait().unwrap();
    let followed: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(followed["type"], "user.created");
    assert_eq!(followed, events(dir, &["--after", &last])[0]);

    let deliveries = cli(dir, &["webhook", "deliveries", "--json"], None);
    assert_eq!(deliveries.json(), serde_json::json!([]));
    let bad = cli(dir, &["webhook", "deliveries", "--state", "lost"], None);
    assert!(bad.failed_cleanly(1).contains("--state"), "{bad:?}");
}
