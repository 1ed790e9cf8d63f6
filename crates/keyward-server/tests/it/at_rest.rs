//! No plaintext at rest (acceptance 2, the database half): no secret, and no secret's 43-char
//! body, appears in any file of the data dir, before or after the WAL is checkpointed.

use crate::helpers::{contains, spawn_app};
use keyward_core::format::BODY_LEN;
use serde_json::json;

fn body_of(secret: &str) -> &str {
    let (_, rest) = secret.split_once('_').unwrap();
    &rest[..BODY_LEN]
}

fn assert_absent(all: &[u8], files: &[(String, Vec<u8>)], secrets: &[String], ids: &[String]) {
    // The scan can see what was written: every token id is there.
    for id in ids {
        assert!(
            contains(all, id.as_bytes()),
            "token id {id} not found: the scan reads nothing useful"
        );
    }
    for secret in secrets {
        for (name, bytes) in files {
            assert!(
                !contains(bytes, secret.as_bytes()),
                "a secret is stored in {name}"
            );
            assert!(
                !contains(bytes, body_of(secret).as_bytes()),
                "a secret's body is stored in {name}"
            );
            // Nor as UTF-16 (what a careless log or binding might write).
            let wide: Vec<u8> = body_of(secret)
                .encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect();
            assert!(
                !contains(bytes, &wide),
                "a secret's body is stored as UTF-16 in {name}"
            );
        }
    }
}

#[tokio::test]
async fn no_secret_or_secret_body_is_in_any_file_of_the_data_dir() {
    let mut app = spawn_app().await;
    let alice = app.user("alice").await;
    let admin = app
        .token(&alice, &["tokens:*", "droplet:*", "volume:*"])
        .await;
    let mut secrets = vec![admin.secret.clone()];
    let mut ids = vec![admin.id.clone()];
    for (i, scopes) in [
        json!(["droplet:read"]),
        json!(["volume:*"]),
        json!(["droplet:*", "volume:read"]),
    ]
    .into_iter()
    .enumerate()
    {
        let made = app
            .post(
                "/v1/tokens",
                &admin.secret,
                &json!({"name": format!("t{i}"), "scopes": scopes}),
            )
            .await
            .expect(201);
        secrets.push(made["secret"].as_str().unwrap().to_owned());
        ids.push(made["token"]["id"].as_str().unwrap().to_owned());
    }
    // Regenerate one (with a grace period, so the old hash stays stored) and revoke another.
    let regen = app
        .post(
            &format!("/v1/tokens/{}/regenerate", ids[1]),
            &admin.secret,
            &json!({"grace_period": "1h"}),
        )
        .await
        .expect(200);
    secrets.push(regen["secret"].as_str().unwrap().to_owned());
    app.delete(
        &format!("/v1/tokens/{}", ids[2]),
        &admin.secret,
        Some(&json!({"reason": "test"})),
    )
    .await
    .expect(200);
    // Use them all, so last-used rows are written too.
    for s in &secrets {
        app.request(
            reqwest::Method::POST,
            "/v1/verify",
            None,
            Some(&json!({"token": s, "ip": "203.0.113.7"})),
        )
        .await
        .expect(200);
    }
    app.keyward.flush_usage().await.unwrap();

    let files = app.db_files();
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.contains(&"keyward.db") && names.contains(&"keyward.db-wal"),
        "{names:?}"
    );
    assert_absent(&app.db_bytes(), &files, &secrets, &ids);

    // Stop the server and close the pool: SQLite checkpoints the WAL into the main file.
    app.stop().await;
    app.store.close().await;
    let files = app.db_files();
    let main = &files.iter().find(|(n, _)| n == "keyward.db").unwrap().1;
    for id in &ids {
        assert!(
            contains(main, id.as_bytes()),
            "{id} reached the main file after the checkpoint"
        );
    }
    assert_absent(&app.db_bytes(), &files, &secrets, &ids);
}
