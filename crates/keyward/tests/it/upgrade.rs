//! A rolling upgrade: the previous release and this one serve one PostgreSQL database at once,
//! and each verifies, creates and revokes tokens the other made, as a fleet does while its
//! instances are replaced one at a time.
//!
//! The previous release's binary comes from `KEYWARD_PREVIOUS_BIN`; `.ci/previous-release.sh`
//! builds it from git (the commit named in `.ci/previous-release`) and prints its path. Without
//! it this test passes as skipped and says so, unless `KEYWARD_REQUIRE_UPGRADE=1` (as in CI).

use crate::helpers::{Made, Server, cli_env, cli_program};
use crate::postgres::{PgDb, until_active, until_refused};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Once;

static SKIP_NOTICE: Once = Once::new();

/// The previous release's `keyward`, if the run has one.
fn previous_release() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("KEYWARD_PREVIOUS_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "KEYWARD_PREVIOUS_BIN={} is not a file",
            bin.display()
        );
        return Some(bin);
    }
    assert!(
        std::env::var("KEYWARD_REQUIRE_UPGRADE").as_deref() != Ok("1"),
        "KEYWARD_REQUIRE_UPGRADE=1 but KEYWARD_PREVIOUS_BIN is not set; \
         run `export KEYWARD_PREVIOUS_BIN=$(.ci/previous-release.sh)`"
    );
    SKIP_NOTICE.call_once(|| {
        let _ = writeln!(
            std::io::stderr(),
            "\nSKIPPED the upgrade test: KEYWARD_PREVIOUS_BIN is not set. \
             `export KEYWARD_PREVIOUS_BIN=$(.ci/previous-release.sh)` builds the previous release \
             from git; KEYWARD_REQUIRE_UPGRADE=1 makes this a failure.\n"
        );
    });
    None
}

/// A token for `user` made at the command line of `program` (`None`: this release).
fn token(
    program: Option<&Path>,
    dir: &Path,
    env: &[(&str, &str)],
    user: &str,
    scopes: &[&str],
) -> Made {
    let mut args = vec!["token", "create", "--user", user, "--name", "t", "--json"];
    for s in scopes {
        args.extend(["--scope", s]);
    }
    let out = match program {
        Some(program) => cli_program(program, dir, env, &args, None),
        None => cli_env(dir, env, &args, None),
    };
    let body = out.json();
    Made {
        secret: body["secret"].as_str().unwrap().to_owned(),
        id: body["token"]["id"].as_str().unwrap().to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_release_and_this_one_serve_one_database_side_by_side() {
    let Some(previous) = previous_release() else {
        return;
    };
    let Some(db) = PgDb::fresh().await else {
        return;
    };
    let env = db.env();
    let (old_dir, new_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (old_dir, new_dir) = (old_dir.path(), new_dir.path());
    let old_cli = |args: &[&str]| cli_program(&previous, old_dir, &env, args, None);

    // The fleet runs the previous release: its schema, its users, its tokens.
    old_cli(&["migrate"]).ok();
    old_cli(&["user", "add", "root", "--admin"]).ok();
    let old_bearer = token(
        Some(&previous),
        old_dir,
        &env,
        "root",
        &["tokens:*", "droplet:*"],
    );
    old_cli(&["user", "add", "alice"]).ok();
    let alices = token(Some(&previous), old_dir, &env, "alice", &["droplet:read"]);
    let old = Server::start_program(&previous, old_dir, &env, "127.0.0.1:0");
    old.api.assert_active(&old_bearer.secret).await;

    // One instance is replaced by this release: it migrates the shared database (while the
    // previous release keeps serving from it) and serves beside it.
    let new = Server::start(new_dir, &env);
    let new_bearer = token(None, new_dir, &env, "root", &["tokens:*", "droplet:*"]);
    for server in [&old, &new] {
        for made in [&old_bearer, &alices, &new_bearer] {
            until_active(server, &made.secret).await;
        }
    }

    // Each creates; both verify.
    let by_old = old
        .api
        .create(&old_bearer.secret, "by-old", &["droplet:read"])
        .await;
    let by_new = new
        .api
        .create(&new_bearer.secret, "by-new", &["droplet:read"])
        .await;
    for server in [&old, &new] {
        until_active(server, &by_old.secret).await;
        until_active(server, &by_new.secret).await;
    }

    // Each revokes what the other made; both refuse it.
    let revoked = old
        .api
        .delete(&format!("/v1/tokens/{}", by_new.id), &old_bearer.secret)
        .await;
    assert!(revoked.status < 300, "{revoked:?}");
    let revoked = new
        .api
        .delete(&format!("/v1/tokens/{}", by_old.id), &new_bearer.secret)
        .await;
    assert!(revoked.status < 300, "{revoked:?}");
    for server in [&old, &new] {
        for made in [&by_old, &by_new] {
            let (_, status, body) = until_refused(server, &made.secret).await;
            assert_eq!(
                (status, &body["reason"]),
                (200, &"revoked".into()),
                "{body}"
            );
        }
        server.api.assert_active(&alices.secret).await;
        let ready = reqwest::get(format!("{}/readyz", server.base))
            .await
            .unwrap();
        assert_eq!(ready.status(), 200, "{}", server.base);
    }
    // The previous release's command line still reads the shared trail.
    let trail = old_cli(&["audit", "--json"]).json();
    assert!(
        trail.as_array().is_some_and(|events| events.len() >= 6),
        "{trail}"
    );
}
