//! `keyward store backup` and `keyward store restore` (issue 18, acceptance 3): a backup taken
//! while a client creates and revokes tokens restores, with the same key ring, into a new data
//! directory or into PostgreSQL, and every token answers as it did; nothing is ever written over;
//! Ctrl-C leaves no half-written target.

use crate::helpers::{Made, Server, add_user, cli, cli_env, create_token, list_tokens};
use crate::postgres::PgDb;
use keyward::keyward_store::{Maintenance as _, SqliteStore};
use keyward::{ServerKey, TokenHasher};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a step of the Ctrl-C tests may take before the test gives up.
const PATIENCE: Duration = Duration::from_secs(120);

/// The fields of a token record a restore must carry: all but its last use (which a
/// verification moves) and the owner's current name.
fn lasting(record: &Value) -> Value {
    let mut kept = serde_json::Map::new();
    for field in [
        "id",
        "owner",
        "name",
        "scopes",
        "hint",
        "created_at",
        "expires_at",
        "regenerated_at",
        "revoked_at",
        "revoked_by",
        "revoke_reason",
        "state",
    ] {
        kept.insert(field.to_owned(), record[field].clone());
    }
    Value::Object(kept)
}

/// The lasting records of the tokens `ids`, as `token list` prints them in `dir`.
fn records(dir: &Path, env: &[(&str, &str)], ids: &[&str]) -> BTreeMap<String, Value> {
    let listed = cli_env(dir, env, &["token", "list", "--json"], None).json();
    let listed = listed.as_array().expect("a list");
    ids.iter()
        .map(|id| {
            let record = listed
                .iter()
                .find(|t| t["id"] == *id)
                .unwrap_or_else(|| panic!("{id} is not listed"));
            ((*id).to_owned(), lasting(record))
        })
        .collect()
}

/// What the server answers for each token, asked for the scope they were made with.
async fn answers(server: &Server, made: &[Made]) -> Vec<Value> {
    let mut out = Vec::new();
    for m in made {
        out.push(server.api.verify(&m.secret, &["droplet:read"]).await);
    }
    out
}

/// A new data directory holding only a copy of `from`'s key ring.
fn with_key_ring_of(from: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(from.join("server.key"), dir.path().join("server.key")).unwrap();
    dir
}

/// A store to back up: alice, her admin token, tokens active, revoked over the API and revoked
/// at the command line with a reason; the server running on it.
async fn a_store_with_history() -> (tempfile::TempDir, Server, Made, Vec<Made>) {
    let dir = tempfile::tempdir().unwrap();
    add_user(dir.path(), "alice");
    let (admin, _) = create_token(dir.path(), "alice", "admin", &["tokens:*", "droplet:*"]);
    let server = Server::start(dir.path(), &[]);
    let mut made = vec![admin.clone()];
    for i in 0..8 {
        made.push(
            server
                .api
                .create(&admin.secret, &format!("t{i}"), &["droplet:read"])
                .await,
        );
    }
    for victim in &made[1..3] {
        server
            .api
            .delete(&format!("/v1/tokens/{}", victim.id), &admin.secret)
            .await
            .expect(200);
    }
    cli(
        dir.path(),
        &["token", "revoke", &made[3].id, "--reason", "laptop lost"],
        None,
    )
    .ok();
    (dir, server, admin, made)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_write_load_restores_every_token_as_it_answered() {
    let (a, server, admin, made) = a_store_with_history().await;
    let before = answers(&server, &made).await;
    assert_eq!(before[0]["active"], true);
    assert_eq!(before[1]["reason"], "revoked");
    let ids: Vec<&str> = made.iter().map(|m| m.id.as_str()).collect();
    let records_before = records(a.path(), &[], &ids);
    assert_eq!(records_before[&made[3].id]["revoke_reason"], "laptop lost");

    // The load: one token created and revoked after another, through the API, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicUsize::new(0));
    let load = {
        let (api, bearer) = (server.api.clone(), admin.secret.clone());
        let (stop, writes) = (Arc::clone(&stop), Arc::clone(&writes));
        tokio::spawn(async move {
            let mut done = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let asked = Instant::now();
                let m = api.create(&bearer, "load", &["droplet:read"]).await;
                writes.fetch_add(1, Ordering::SeqCst);
                api.delete(&format!("/v1/tokens/{}", m.id), &bearer)
                    .await
                    .expect(200);
                writes.fetch_add(1, Ordering::SeqCst);
                done.push((m, asked, Instant::now()));
            }
            done
        })
    };
    while writes.load(Ordering::SeqCst) < 6 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let file = a.path().join("backup.db");
    let started = Instant::now();
    let written_before = writes.load(Ordering::SeqCst);
    let out = {
        let (dir, file) = (a.path().to_owned(), file.clone());
        tokio::task::spawn_blocking(move || {
            cli(&dir, &["store", "backup", file.to_str().unwrap()], None)
        })
        .await
        .unwrap()
    };
    let ended = Instant::now();
    let written_during = writes.load(Ordering::SeqCst) - written_before;
    stop.store(true, Ordering::SeqCst);
    let load = load.await.unwrap();
    assert!(out.ok().starts_with("backed up sqlite://"), "{out:?}");
    assert!(out.stderr.is_empty(), "no bar in a pipe: {out:?}");
    assert!(written_during > 0, "the load wrote while the backup ran");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "a backup holds hashes: private");
    }
    drop(server);

    // Elsewhere, with the same key ring.
    let c = with_key_ring_of(a.path());
    let restored = cli(
        c.path(),
        &["store", "restore", file.to_str().unwrap()],
        None,
    );
    assert!(restored.ok().starts_with("restored "), "{restored:?}");
    let server = Server::start(c.path(), &[]);
    assert_eq!(answers(&server, &made).await, before);
    assert_eq!(records(c.path(), &[], &ids), records_before);

    // The load's tokens: revoked if revoked before the backup began, unknown if asked for after
    // it ended, and in between one of the states the store went through.
    let (mut revoked, mut unknown) = (0, 0);
    for (m, asked, revoked_at) in &load {
        let answer = server.api.verify(&m.secret, &["droplet:read"]).await;
        if *revoked_at < started {
            assert_eq!(answer["reason"], "revoked", "{answer}");
            revoked += 1;
        } else if *asked > ended {
            assert_eq!(answer["reason"], "unknown", "{answer}");
            unknown += 1;
        } else {
            assert!(
                answer["active"] == true
                    || ["revoked", "unknown"].contains(&answer["reason"].as_str().unwrap_or("")),
                "{answer}"
            );
        }
    }
    assert!(revoked >= 3, "{revoked} revoked before the backup");
    eprintln!(
        "backup under load: {written_during} writes during the backup ({:?}); {} load tokens, {revoked} revoked before, {unknown} made after",
        ended - started,
        load.len()
    );
}

#[tokio::test]
async fn backups_and_restores_never_write_over_anything() {
    let (a, server, _admin, made) = a_store_with_history().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.db");
    let file_arg = file.to_str().unwrap();
    cli(a.path(), &["store", "backup", file_arg], None).ok();
    let bytes = std::fs::read(&file).unwrap();

    let again = cli(a.path(), &["store", "backup", file_arg], None);
    assert!(
        again.failed_cleanly(1).contains("already exists"),
        "{again:?}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), bytes, "left as it was");

    // A partial file from a backup killed outright is not taken over either.
    let other = dir.path().join("other.db");
    std::fs::write(dir.path().join("other.db.partial"), b"").unwrap();
    let refused = cli(
        a.path(),
        &["store", "backup", other.to_str().unwrap()],
        None,
    );
    assert!(
        refused
            .failed_cleanly(1)
            .contains("other.db.partial exists"),
        "{refused:?}"
    );
    assert!(!other.exists());

    // Into a store that holds anything: refused, nothing written.
    let ids: Vec<&str> = made.iter().map(|m| m.id.as_str()).collect();
    let records_before = records(a.path(), &[], &ids);
    let into_itself = cli(a.path(), &["store", "restore", file_arg], None);
    assert!(
        into_itself
            .failed_cleanly(1)
            .contains("already holds data; restore only into an empty database"),
        "{into_itself:?}"
    );
    assert_eq!(list_tokens(a.path()).len(), made.len());
    assert_eq!(records(a.path(), &[], &ids), records_before);
    drop(server);

    let c = with_key_ring_of(a.path());
    let missing = cli(c.path(), &["store", "restore", "no-such.db"], None);
    assert!(
        missing.failed_cleanly(1).contains("no backup file"),
        "{missing:?}"
    );
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, "not a database, not even close\n".repeat(200)).unwrap();
    let refused = cli(
        c.path(),
        &["store", "restore", junk.to_str().unwrap()],
        None,
    );
    assert!(
        refused
            .failed_cleanly(1)
            .contains("is not a keyward backup"),
        "{refused:?}"
    );
    assert!(list_tokens(c.path()).is_empty());

    // PostgreSQL has its own tools: the refusal says which, and what else to keep.
    let pg = cli(
        c.path(),
        &[
            "--database",
            "postgres://nobody@127.0.0.1:1/none",
            "store",
            "backup",
            dir.path().join("pg.db").to_str().unwrap(),
        ],
        None,
    );
    let line = pg.failed_cleanly(1);
    assert!(
        line.contains("pg_dump") && line.contains("server.key"),
        "{line}"
    );
}

#[tokio::test]
async fn a_backup_restores_into_postgresql() {
    let Some(db) = PgDb::fresh().await else {
        return;
    };
    let (a, server, _admin, made) = a_store_with_history().await;
    let before = answers(&server, &made).await;
    let ids: Vec<&str> = made.iter().map(|m| m.id.as_str()).collect();
    let records_before = records(a.path(), &[], &ids);
    let file = a.path().join("backup.db");
    cli(a.path(), &["store", "backup", file.to_str().unwrap()], None).ok();
    drop(server);

    // The key ring comes with the data dir (server.key), the database from the environment.
    let c = with_key_ring_of(a.path());
    let pg = [("KEYWARD_DATABASE_URL", db.url.as_str())];
    let restored = cli_env(
        c.path(),
        &pg,
        &["store", "restore", file.to_str().unwrap()],
        None,
    );
    assert!(
        restored.ok().starts_with("restored 1 users, 9 tokens"),
        "{restored:?}"
    );
    let again = cli_env(
        c.path(),
        &pg,
        &["store", "restore", file.to_str().unwrap()],
        None,
    );
    assert!(
        again.failed_cleanly(1).contains("already holds data"),
        "{again:?}"
    );
    let server = Server::start(c.path(), &pg);
    assert_eq!(answers(&server, &made).await, before);
    assert_eq!(records(c.path(), &pg, &ids), records_before);
}

/// `keyward --data-dir DIR ARGS`, started, with TMPDIR set, stdout and stderr piped.
fn spawn(dir: &Path, tmp: &Path, args: &[&str]) -> Child {
    let mut cmd = crate::helpers::keyward_command(&[]);
    cmd.env("TMPDIR", tmp)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().expect("spawn keyward")
}

fn signal(child: &Child, which: &str) {
    let sent = Command::new("kill")
        .args([which, &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill {which} failed");
}

/// Waits (bounded) for `child` to exit; returns its status and what it wrote on stderr.
fn finish(mut child: Child) -> (ExitStatus, String, String) {
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("keyward did not exit within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    use std::io::Read as _;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stdout, stderr)
}

/// Polls `until` every millisecond for at most [`PATIENCE`].
fn wait_for(what: &str, mut until: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !until() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_leaves_no_half_written_target() {
    // A store large enough that restoring it takes seconds.
    let a = tempfile::tempdir().unwrap();
    let key = ServerKey::from_hex(&"6b".repeat(32)).unwrap();
    let (snapshot, _) = keyward_bench::synthetic(&TokenHasher::new(&key), 60_000, 100).unwrap();
    let seeded = Instant::now();
    let store = SqliteStore::open(&a.path().join("keyward.db"))
        .await
        .unwrap();
    store.restore(&snapshot).await.unwrap();
    store.close().await;
    let seeded = seeded.elapsed();
    let file = a.path().join("big.db");
    let timed = Instant::now();
    cli(a.path(), &["store", "backup", file.to_str().unwrap()], None).ok();
    eprintln!(
        "{} rows seeded in {seeded:?}; backed up ({} bytes) in {:?}",
        snapshot.rows(),
        std::fs::metadata(&file).unwrap().len(),
        timed.elapsed()
    );

    // A restore interrupted while it writes: its reading of the backup (a private copy under
    // TMPDIR) is over, its one transaction is under way.
    let c = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let child = spawn(
        c.path(),
        tmp.path(),
        &["store", "restore", file.to_str().unwrap()],
    );
    let mut seen_copy = false;
    wait_for("the restore to read its backup", || {
        let copying = !entries(tmp.path()).is_empty();
        seen_copy |= copying;
        seen_copy && !copying
    });
    signal(&child, "-INT");
    let (status, stdout, stderr) = finish(child);
    assert_eq!(status.code(), Some(130), "{stdout}{stderr}");
    assert!(
        stderr.contains("keyward: interrupted: nothing was written; sqlite://")
            && stderr.contains("is still empty"),
        "{stderr}"
    );
    assert!(stdout.is_empty(), "{stdout}");
    assert!(entries(tmp.path()).is_empty(), "the private copy is gone");
    let users = cli(c.path(), &["user", "list", "--json"], None).json();
    assert_eq!(users, serde_json::json!([]), "the target is empty");
    assert!(list_tokens(c.path()).is_empty());

    // A backup interrupted part way: SIGSTOP holds it once its partial file is there (trying
    // again should the whole copy have finished first), then Ctrl-C and SIGCONT.
    let target = a.path().join("again.db");
    let partial = a.path().join("again.db.partial");
    let mut attempts = 0;
    let (status, stderr) = loop {
        attempts += 1;
        assert!(
            attempts <= 5,
            "every backup finished before it could be stopped"
        );
        let child = spawn(
            a.path(),
            tmp.path(),
            &["store", "backup", target.to_str().unwrap()],
        );
        wait_for("the partial backup file", || {
            partial.exists() || target.exists()
        });
        signal(&child, "-STOP");
        if target.exists() {
            signal(&child, "-CONT");
            let (status, ..) = finish(child);
            assert!(status.success());
            std::fs::remove_file(&target).unwrap();
            continue;
        }
        signal(&child, "-INT");
        signal(&child, "-CONT");
        let (status, _, stderr) = finish(child);
        break (status, stderr);
    };
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("keyward: interrupted: no backup was written")
            && stderr.contains("again.db.partial was removed"),
        "{stderr}"
    );
    assert!(!target.exists(), "no backup");
    assert!(!partial.exists(), "no partial file");
    assert!(
        !a.path().join("again.db.partial-journal").exists(),
        "no journal"
    );
}
