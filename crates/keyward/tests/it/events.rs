//! Events at the command line (`keyward events`, `keyward webhook deliveries`), webhooks
//! delivered by the real server to a receiver that verifies each delivery with the Standard
//! Webhooks library (`webhooks/receiver.py`), and email to a real SMTP server (aiosmtpd,
//! `webhooks/smtp_server.py`).

use serde_json::Value;
use std::io::{BufRead as _, BufReader};
use std::process::Stdio;

use crate::helpers::{Server, add_user, cli, cli_env, create_token, keyward_command};
use crate::postgres::PgDb;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A Standard Webhooks secret (base64 of 32 bytes).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo=";

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

/// The Python with `standardwebhooks` and `aiosmtpd` (`KEYWARD_WEBHOOKS_PYTHON`, else
/// `target/webhooks-venv`), or `None` (a notice) when it is not there and
/// `KEYWARD_REQUIRE_WEBHOOKS` is not `1`. Set it up with `python3 -m venv target/webhooks-venv &&
/// target/webhooks-venv/bin/pip install standardwebhooks==1.0.0 aiosmtpd==1.4.6` (as `.ci/run`
/// does).
fn webhooks_python() -> Option<PathBuf> {
    let named = std::env::var_os("KEYWARD_WEBHOOKS_PYTHON").map(PathBuf::from);
    let default =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/webhooks-venv/bin/python");
    let found = named.or(Some(default)).filter(|p| {
        std::process::Command::new(p)
            .args(["-c", "import standardwebhooks, aiosmtpd"])
            .status()
            .is_ok_and(|s| s.success())
    });
    if found.is_none() {
        assert!(
            std::env::var("KEYWARD_REQUIRE_WEBHOOKS").as_deref() != Ok("1"),
            "no Python with standardwebhooks and KEYWARD_REQUIRE_WEBHOOKS=1"
        );
        eprintln!(
            "NOTICE: no Python with standardwebhooks and aiosmtpd; skipping the webhook tests"
        );
    }
    found
}

/// The receiver (`tests/webhooks/receiver.py`), recording into a file.
struct Receiver {
    child: std::process::Child,
    port: u16,
}

impl Receiver {
    fn start(python: &Path, record: &Path, port: u16) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webhooks/receiver.py");
        let mut child = std::process::Command::new(python)
            .arg(script)
            .arg(SECRET)
            .arg(record)
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap()
            .parse()
            .unwrap();
        Self { child, port }
    }

    fn stop(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the receiver recorded: (webhook-id, the body as JSON), every delivery verified.
fn received(record: &Path) -> Vec<(String, Value)> {
    let text = std::fs::read_to_string(record).unwrap_or_default();
    text.lines()
        .map(|l| {
            let r: Value = serde_json::from_str(l).unwrap();
            assert_eq!(r["verified"], true, "a delivery did not verify: {r}");
            let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
            assert_eq!(body["id"], r["id"], "webhook-id is the event's id");
            (r["id"].as_str().unwrap().to_owned(), body)
        })
        .collect()
}

/// Waits (bounded) until the receiver has every event of `expected`.
fn wait_for_all(record: &Path, expected: &[Value]) -> Vec<(String, Value)> {
    let start = Instant::now();
    loop {
        let got = received(record);
        if expected
            .iter()
            .all(|e| got.iter().any(|(id, _)| e["id"] == id.as_str()))
        {
            return got;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "not every event arrived: {} of {}",
            got.len(),
            expected.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every event arrived exactly as the events API shows it, and each token's in order.
fn assert_as_sent_in_order(got: &[(String, Value)], expected: &[Value]) {
    for (_, body) in got {
        let sent = expected.iter().find(|e| e["id"] == body["id"]).unwrap();
        assert_eq!(body, sent);
    }
    let mut firsts: Vec<&Value> = Vec::new();
    for (_, body) in got {
        if !firsts.iter().any(|b| b["id"] == body["id"]) {
            firsts.push(body);
        }
    }
    let mut per_token: HashMap<&str, Vec<&Value>> = HashMap::new();
    for body in &firsts {
        if let Some(token) = body["data"]["token_id"].as_str() {
            per_token.entry(token).or_default().push(&body["id"]);
        }
    }
    for (token, arrived) in per_token {
        let order: Vec<&Value> = expected
            .iter()
            .filter(|e| e["data"]["token_id"] == token)
            .map(|e| &e["id"])
            .collect();
        assert_eq!(arrived, order, "token {token}'s events out of order");
    }
}

fn write_config(dir: &Path, port: u16, secret_in_file: bool) {
    let secret = if secret_in_file {
        format!("secret = \"{SECRET}\"\n")
    } else {
        String::new()
    };
    std::fs::write(
        dir.join("keyward.toml"),
        format!(
            "version = 1\n\
             [[webhooks]]\n\
             url = \"http://127.0.0.1:{port}/hooks/keyward\"\n\
             {secret}\
             events = [\"token.*\", \"user.*\"]\n"
        ),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_survive_a_receiver_down_and_a_restart_and_verify_with_the_library() {
    let Some(python) = webhooks_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let record = dir.join("received.jsonl");
    let receiver = Receiver::start(&python, &record, 0);
    let port = receiver.port;
    write_config(dir, port, true);
    let server = Server::start(dir, &[]);
    // The sender's first round places the webhook's cursor at the newest event.
    std::thread::sleep(Duration::from_millis(1500));

    add_user(dir, "alice");
    let (first, _) = create_token(dir, "alice", "one", &["droplet:read"]);
    wait_for_all(&record, &events(dir, &[])[..]);

    // The receiver goes down; events keep coming, and keyward restarts meanwhile.
    receiver.stop();
    let (second, _) = create_token(dir, "alice", "two", &["droplet:read"]);
    cli(dir, &["token", "revoke", &first.id], None).ok();
    std::thread::sleep(Duration::from_millis(1500));
    server.stop();
    cli(dir, &["token", "revoke", &second.id], None).ok();
    add_user(dir, "bob");
    let server = Server::start(dir, &[]);
    std::thread::sleep(Duration::from_secs(3));
    let _receiver = Receiver::start(&python, &record, port);

    let expected = events(dir, &[]);
    assert_eq!(expected.len(), 6, "{expected:?}");
    let got = wait_for_all(&record, &expected);
    assert_as_sent_in_order(&got, &expected);
    let delivered = cli(
        dir,
        &["webhook", "deliveries", "--state", "delivered", "--json"],
        None,
    );
    assert_eq!(delivered.json().as_array().unwrap().len(), expected.len());
    assert!(!server.logs().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_postgres_deliver_each_event_once() {
    let Some(python) = webhooks_python() else {
        return;
    };
    let Some(db) = PgDb::fresh().await else {
        return;
    };
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let record = a_dir.path().join("received.jsonl");
    let receiver = Receiver::start(&python, &record, 0);
    let [url, key] = db.env();
    // The secret from the environment this time.
    let env = [url, key, ("KEYWARD_WEBHOOK_SECRET_1", SECRET)];
    for dir in [a_dir.path(), b_dir.path()] {
        write_config(dir, receiver.port, false);
    }
    let a = Server::start(a_dir.path(), &env);
    let b = Server::start(b_dir.path(), &env);
    std::thread::sleep(Duration::from_millis(1500));
    cli_env(a_dir.path(), &env, &["user", "add", "alice"], None).ok();
    for i in 0..15 {
        let name = format!("t{i}");
        let args = [
            "token",
            "create",
            "--user",
            "alice",
            "--name",
            &name,
            "--scope",
            "droplet:read",
            "--json",
        ];
        cli_env(a_dir.path(), &env, &args, None).ok();
    }
    let expected: Vec<Value> = cli_env(a_dir.path(), &env, &["events", "--json"], None)
        .ok()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(expected.len(), 16);
    wait_for_all(&record, &expected);
    // A moment more for any second delivery to show.
    std::thread::sleep(Duration::from_secs(2));
    let got_now = received(&record);
    let mut ids: Vec<&str> = got_now.iter().map(|(id, _)| id.as_str()).collect();
    ids.sort_unstable();
    let before = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), before, "an event was delivered twice");
    assert_eq!(ids.len(), expected.len());
    assert_as_sent_in_order(&got_now, &expected);
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_by_others_reminders_and_leaks_are_emailed_to_the_owner_without_a_secret() {
    let Some(python) = webhooks_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let record = dir.join("mail.jsonl");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webhooks/smtp_server.py");
    let mut smtp = std::process::Command::new(&python)
        .arg(script)
        .arg(&record)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(smtp.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .parse()
        .unwrap();
    std::fs::write(
        dir.join("keyward.toml"),
        format!(
            "version = 1\nnotify_before = [\"1d\"]\nnotify_interval = \"1s\"\n[smtp]\nurl = \"smtp://127.0.0.1:{port}\"\nfrom = \"keyward <keyward@example.com>\"\n"
        ),
    )
    .unwrap();
    let server = Server::start(dir, &[]);
    std::thread::sleep(Duration::from_millis(1500));
    cli(
        dir,
        &["user", "add", "alice", "--email", "alice@example.com"],
        None,
    )
    .ok();
    let (own, _) = create_token(dir, "alice", "mine", &["tokens:delete"]);
    let (other, _) = create_token(dir, "alice", "theirs", &["droplet:read"]);
    // Revoked by the operator: mailed. A token revoking itself (the owner acting): not mailed.
    cli(
        dir,
        &["token", "revoke", &other.id, "--reason", "left the team"],
        None,
    )
    .ok();
    server
        .api
        .delete(&format!("/v1/tokens/{}", own.id), &own.secret)
        .await
        .expect(200);
    // Inside the reminder window (1d): the owner is reminded, once.
    let soon = cli(
        dir,
        &[
            "token",
            "create",
            "--user",
            "alice",
            "--name",
            "soon",
            "--expires",
            "12h",
            "--scope",
            "droplet:read",
            "--json",
        ],
        None,
    )
    .json();
    let soon_id = soon["token"]["id"].as_str().unwrap().to_owned();
    let soon_secret = soon["secret"].as_str().unwrap().to_owned();
    // Reported leaked: revoked, and the owner told of the leak (not also of the revocation).
    let (leaked, _) = create_token(dir, "alice", "pushed", &["droplet:read"]);
    let reported = cli(
        dir,
        &["leak", "report", "--source", "a public gist"],
        Some(&format!("{}\n", leaked.secret)),
    );
    assert!(reported.status.success(), "{reported:?}");

    let start = Instant::now();
    let count = |text: &str| text.lines().count();
    let mails = loop {
        let text = std::fs::read_to_string(&record).unwrap_or_default();
        if count(&text) >= 3 {
            break text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not every mail arrived: {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    std::thread::sleep(Duration::from_secs(2));
    let mails = std::fs::read_to_string(&record).unwrap_or(mails);
    let mails: Vec<Value> = mails
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(mails.len(), 3, "{mails:?}");
    let about = |id: &str| -> String {
        let found: Vec<&Value> = mails
            .iter()
            .filter(|m| m["data"].as_str().unwrap().contains(id))
            .collect();
        assert_eq!(found.len(), 1, "one mail about {id}: {mails:?}");
        assert_eq!(found[0]["to"], serde_json::json!(["alice@example.com"]));
        assert_eq!(found[0]["from"], "keyward@example.com");
        found[0]["data"].as_str().unwrap().to_owned()
    };
    let revoked = about(&other.id);
    assert!(revoked.contains("left the team"), "{revoked}");
    let reminder = about(&soon_id);
    assert!(reminder.contains("expires soon"), "{reminder}");
    assert!(reminder.contains("1d"), "{reminder}");
    let leak = about(&leaked.id);
    assert!(leak.contains("leaked and was revoked"), "{leak}");
    assert!(leak.contains("a public gist"), "{leak}");
    for data in mails.iter().map(|m| m["data"].as_str().unwrap()) {
        for secret in [&own.secret, &other.secret, &soon_secret, &leaked.secret] {
            assert!(
                !data.contains(secret.as_str()),
                "a secret in the mail: {data}"
            );
        }
    }
    let _ = smtp.kill();
    let _ = smtp.wait();
    drop(server);
}
