//! Who may touch what (acceptance 4): another user's token is invisible (404), a token needs the
//! scope for each call, and can never grant more than it holds.

use crate::helpers::spawn_app;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn another_users_token_is_404_for_every_call_and_stays_active() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let alices = app.token(&alice, &["droplet:read"]).await;
    let alice_admin = app
        .token(&alice, &["tokens:*", "audit:read", "droplet:*"])
        .await;
    // Bob holds every right over tokens, and more scopes than Alice's token has.
    let bobs = app.token(&bob, &["tokens:*", "audit:read", "*:*"]).await;
    let before = app.snapshot().await;

    let path = format!("/v1/tokens/{}", alices.id);
    app.get(&path, &bobs.secret)
        .await
        .expect_error(404, "not_found");
    app.patch(&path, &bobs.secret, &json!({"name": "pwned"}))
        .await
        .expect_error(404, "not_found");
    app.post_empty(&format!("{path}/regenerate"), &bobs.secret)
        .await
        .expect_error(404, "not_found");
    app.post(
        &format!("{path}/regenerate"),
        &bobs.secret,
        &json!({"grace_period": "1m"}),
    )
    .await
    .expect_error(404, "not_found");
    app.delete(&path, &bobs.secret, Some(&json!({"reason": "mine now"})))
        .await
        .expect_error(404, "not_found");

    // The same answer as for an id that does not exist at all: nothing to tell them apart.
    let missing = app
        .get("/v1/tokens/tok_01JZZZZZZZZZZZZZZZZZZZZZZZ", &bobs.secret)
        .await;
    let theirs = app.get(&path, &bobs.secret).await;
    assert_eq!(missing.text, theirs.text);

    assert_eq!(app.snapshot().await, before, "nothing changed");
    assert_eq!(
        app.verdict(&alices.secret, &["droplet:read"]).await,
        "active"
    );
    let record = app.get(&path, &alice_admin.secret).await.expect(200);
    assert_eq!(record["token"]["name"], "test token");
    assert_eq!(record["token"]["state"], "active");
}

#[tokio::test]
async fn lists_and_audit_show_only_the_callers_own() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let alice_admin = app
        .token(&alice, &["tokens:*", "audit:read", "droplet:*"])
        .await;
    let made = app
        .post(
            "/v1/tokens",
            &alice_admin.secret,
            &json!({"name": "alice's", "scopes": ["droplet:read"]}),
        )
        .await
        .expect(201);
    let alice_tok = made["token"]["id"].as_str().unwrap().to_owned();
    app.delete(
        &format!("/v1/tokens/{alice_tok}"),
        &alice_admin.secret,
        Some(&json!({"reason": "secret"})),
    )
    .await
    .expect(200);
    let bob_admin = app.token(&bob, &["tokens:*", "audit:read"]).await;

    let list = app.get("/v1/tokens", &bob_admin.secret).await.expect(200);
    let ids: Vec<&str> = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [bob_admin.id.as_str()]);
    // Paging from one of Alice's ids shows none of hers either.
    let after = app
        .get(
            &format!("/v1/tokens?after={}", "tok_7ZZZZZZZZZZZZZZZZZZZZZZZZZ"),
            &bob_admin.secret,
        )
        .await
        .expect(200);
    assert!(
        after["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["owner"] == bob.id.as_str())
    );

    let audit = app.get("/v1/audit", &bob_admin.secret).await.expect(200);
    let events = audit["events"].as_array().unwrap();
    assert!(!events.is_empty());
    for e in events {
        assert_eq!(e["subject_user"], bob.id.as_str(), "{e}");
        assert_ne!(e["token_id"], alice_tok.as_str());
        assert_ne!(e["token_id"], alice_admin.id.as_str());
    }
    assert!(
        !audit.to_string().contains("alice"),
        "nothing of Alice's: {audit}"
    );

    // Alice sees hers.
    let hers = app.get("/v1/audit", &alice_admin.secret).await.expect(200);
    assert!(
        hers["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["token_id"] == alice_tok.as_str() && e["kind"] == "token.revoked")
    );
}

#[tokio::test]
async fn each_call_needs_its_scope() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let target = app.token(&alice, &["droplet:read"]).await;
    let reader = app.token(&alice, &["tokens:read", "droplet:*"]).await;
    let plain = app.token(&alice, &["droplet:*"]).await;
    let before = app.snapshot().await;
    let path = format!("/v1/tokens/{}", target.id);

    let r = app
        .post(
            "/v1/tokens",
            &reader.secret,
            &json!({"name": "x", "scopes": ["droplet:read"]}),
        )
        .await;
    let body = r.expect_error(403, "insufficient_scope");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tokens:create"),
        "{body}"
    );
    app.patch(&path, &reader.secret, &json!({"name": "y"}))
        .await
        .expect_error(403, "insufficient_scope");
    app.post_empty(&format!("{path}/regenerate"), &reader.secret)
        .await
        .expect_error(403, "insufficient_scope");
    app.delete(&path, &reader.secret, None)
        .await
        .expect_error(403, "insufficient_scope");
    app.get(&path, &reader.secret).await.expect(200);
    app.get("/v1/tokens", &reader.secret).await.expect(200);

    app.get(&path, &plain.secret)
        .await
        .expect_error(403, "insufficient_scope");
    app.get("/v1/tokens", &plain.secret)
        .await
        .expect_error(403, "insufficient_scope");
    // Reading itself needs no scope.
    app.get("/v1/tokens/self", &plain.secret).await.expect(200);

    assert_eq!(app.snapshot().await, before);
    assert_eq!(app.verdict(&target.secret, &[]).await, "active");
}

#[tokio::test]
async fn a_token_cannot_mint_wider_scopes_than_its_own() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let minter = app.token(&alice, &["droplet:read", "tokens:create"]).await;
    let before = app.snapshot().await;

    for scopes in [
        json!(["droplet:*"]),
        json!(["volume:read"]),
        json!(["droplet:read", "droplet:update"]),
        json!(["*:read"]),
        json!(["tokens:*"]),
    ] {
        let r = app
            .post(
                "/v1/tokens",
                &minter.secret,
                &json!({"name": "wider", "scopes": scopes}),
            )
            .await;
        r.expect_error(403, "scope_exceeds_caller");
    }
    assert_eq!(app.snapshot().await, before, "nothing was made");

    let ok = app
        .post(
            "/v1/tokens",
            &minter.secret,
            &json!({"name": "narrow", "scopes": ["droplet:read"]}),
        )
        .await
        .expect(201);
    assert_eq!(ok["token"]["scopes"], json!(["droplet:read"]));
    assert_eq!(
        app.verdict(ok["secret"].as_str().unwrap(), &["droplet:read"])
            .await,
        "active"
    );
    // Its own scopes, all of them, are fine too.
    app.post(
        "/v1/tokens",
        &minter.secret,
        &json!({"name": "same", "scopes": ["droplet:read", "tokens:create"]}),
    )
    .await
    .expect(201);
}

#[tokio::test]
async fn a_token_cannot_regenerate_a_token_wider_than_itself() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let wide = app.token(&alice, &["droplet:*"]).await;
    let updater = app.token(&alice, &["tokens:update", "droplet:read"]).await;
    let before = app.snapshot().await;

    let r = app
        .post_empty(
            &format!("/v1/tokens/{}/regenerate", wide.id),
            &updater.secret,
        )
        .await;
    r.expect_error(403, "scope_exceeds_caller");
    assert_eq!(app.snapshot().await, before);
    assert_eq!(
        app.verdict(&wide.secret, &["droplet:delete"]).await,
        "active",
        "the old secret still works"
    );

    // A narrower one it may regenerate.
    let narrow = app.token(&alice, &["droplet:read"]).await;
    app.post_empty(
        &format!("/v1/tokens/{}/regenerate", narrow.id),
        &updater.secret,
    )
    .await
    .expect(200);
    assert_eq!(app.verdict(&narrow.secret, &[]).await, "revoked");
}

#[tokio::test]
async fn no_or_bad_credentials_are_401_with_a_bearer_challenge() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let t = app.token(&alice, &["tokens:*"]).await;
    let before = app.snapshot().await;

    for (method, path) in [
        (Method::GET, "/v1/tokens".to_owned()),
        (Method::GET, "/v1/tokens/self".to_owned()),
        (Method::GET, format!("/v1/tokens/{}", t.id)),
        (Method::DELETE, format!("/v1/tokens/{}", t.id)),
        (Method::POST, "/v1/tokens/self/regenerate".to_owned()),
        (Method::GET, "/v1/audit".to_owned()),
    ] {
        let r = app.request(method.clone(), &path, None, None).await;
        r.expect_error(401, "unauthenticated");
        assert_eq!(
            r.header("www-authenticate"),
            Some(r#"Bearer realm="keyward""#),
            "{method} {path}"
        );

        for garbage in ["garbage", "kwp_short", "ünïcødé", &format!("{}x", t.secret)] {
            let r = app
                .request(method.clone(), &path, Some(garbage), None)
                .await;
            r.expect_error(401, "invalid_token");
            let challenge = r.header("www-authenticate").unwrap();
            assert!(
                challenge.starts_with(r#"Bearer realm="keyward""#)
                    && challenge.contains("invalid_token"),
                "{challenge}"
            );
        }
    }
    // Not a Bearer credential at all.
    let r = app
        .raw(
            Method::GET,
            "/v1/tokens",
            &[("authorization", &format!("Basic {}", t.secret))],
            Vec::new(),
        )
        .await;
    r.expect_error(401, "invalid_token");

    let r = app
        .post(
            "/v1/tokens",
            "garbage",
            &json!({"name": "x", "scopes": ["droplet:read"]}),
        )
        .await;
    r.expect_error(401, "invalid_token");
    assert_eq!(app.snapshot().await, before);
}
