//! The command line changing tokens under a running server that has them cached: the server's
//! next verification follows the command line, never its cache.

use crate::helpers::{Server, add_user, cli, create_token, is_secret, listed};

#[tokio::test]
async fn a_cli_regeneration_is_seen_by_the_running_servers_next_verification() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = Server::start(dir, &[]);
    let api = &server.api;
    add_user(dir, "alice");
    let (first, _) = create_token(dir, "alice", "deploy", &["droplet:read"]);
    // Verified first, so the server has the old secret cached.
    assert_eq!(
        api.assert_active(&first.secret).await["token_id"],
        first.id.as_str()
    );
    api.assert_active(&first.secret).await;

    // No grace period: the old secret stops at once.
    let out = cli(dir, &["token", "regenerate", &first.id, "--json"], None);
    let body = out.json();
    let second = body["secret"].as_str().unwrap().to_owned();
    assert!(
        is_secret(&second, "kwp") && second != first.secret,
        "{body}"
    );
    assert_eq!(body["token"]["id"], first.id.as_str(), "same id: {body}");
    assert_eq!(body["token"]["name"], "deploy", "same name: {body}");
    assert!(out.stderr.contains("will not be shown again"), "{out:?}");
    api.assert_inactive(&first.secret, "revoked").await;
    let v = api.assert_active(&second).await;
    assert_eq!(v["token_id"], first.id.as_str(), "{v}");
    assert_eq!(v["scopes"], serde_json::json!(["droplet:read"]), "{v}");

    // With a grace period, the replaced secret keeps working beside the new one.
    let out = cli(
        dir,
        &["token", "regenerate", &first.id, "--grace", "10m"],
        None,
    );
    let third = out.ok().strip_suffix('\n').expect("one line").to_owned();
    assert!(is_secret(&third, "kwp") && third != second, "{out:?}");
    assert_eq!(
        api.assert_active(&second).await["token_id"],
        first.id.as_str()
    );
    assert_eq!(
        api.assert_active(&third).await["token_id"],
        first.id.as_str()
    );
    // The grace applies to the secret just replaced, not to older ones.
    api.assert_inactive(&first.secret, "revoked").await;

    let record = listed(dir, &first.id);
    assert_eq!(record["state"], "active", "{record}");
    assert_eq!(
        record["hint"],
        format!("kwp_…{}", &third[third.len() - 4..]),
        "{record}"
    );

    // Revoking the token ends every secret it has, the one in its grace period included.
    cli(dir, &["token", "revoke", &first.id], None).ok();
    api.assert_inactive(&second, "revoked").await;
    api.assert_inactive(&third, "revoked").await;
}

/// The server and the command line write to one SQLite database at the same time: neither may
/// fail because the other holds the write lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_and_a_busy_server_write_side_by_side_without_lock_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    add_user(&dir, "alice");
    let (admin, _) = create_token(&dir, "alice", "admin", &["tokens:*", "droplet:*"]);
    let server = Server::start(&dir, &[]);

    // HTTP writers: create then revoke, as fast as they can.
    let mut writers = Vec::new();
    for w in 0..4 {
        let api = server.api.clone();
        let bearer = admin.secret.clone();
        writers.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for i in 0..15 {
                let r = api
                    .post(
                        "/v1/tokens",
                        &bearer,
                        &serde_json::json!({"name": format!("w{w}-{i}"), "scopes": ["droplet:read"]}),
                    )
                    .await;
                statuses.push((r.status, r.text.clone()));
                if r.status == 201 {
                    let id = r.expect(201)["token"]["id"].as_str().unwrap().to_owned();
                    let r = api.delete(&format!("/v1/tokens/{id}"), &bearer).await;
                    statuses.push((r.status, r.text));
                }
            }
            statuses
        }));
    }
    // Meanwhile, the command line writes too (on a blocking thread: it waits for processes).
    let cli_dir = dir.clone();
    let cli_side = tokio::task::spawn_blocking(move || {
        (0..6)
            .map(|i| {
                let out = cli(
                    &cli_dir,
                    &[
                        "token",
                        "create",
                        "--user",
                        "alice",
                        "--name",
                        &format!("cli{i}"),
                        "--scope",
                        "droplet:read",
                        "--json",
                    ],
                    None,
                );
                let id = if out.code() == Some(0) {
                    out.json()["token"]["id"].as_str().map(str::to_owned)
                } else {
                    None
                };
                let revoked = id.map(|id| cli(&cli_dir, &["token", "revoke", &id], None));
                (out, revoked)
            })
            .collect::<Vec<_>>()
    });

    for writer in writers {
        for (status, body) in writer.await.unwrap() {
            assert!(
                status == 201 || status == 200,
                "HTTP write failed: {status} {body}"
            );
        }
    }
    for (created, revoked) in cli_side.await.unwrap() {
        assert_eq!(created.code(), Some(0), "CLI create failed: {created:?}");
        let revoked = revoked.unwrap();
        assert_eq!(revoked.code(), Some(0), "CLI revoke failed: {revoked:?}");
    }
    let all = crate::helpers::list_tokens(&dir);
    assert_eq!(all.len(), 1 + 4 * 15 + 6);
    assert_eq!(
        all.iter().filter(|t| t["state"] == "revoked").count(),
        4 * 15 + 6
    );
}
