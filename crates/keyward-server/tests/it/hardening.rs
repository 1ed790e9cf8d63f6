//! Regression tests for what an outside attack found (issue 10): a rotated-out secret taking its
//! token over, tokens extending lifetimes, and introspection's `iat`. Each test failed before
//! the fix.

use crate::helpers::{Resp, START, TestApp, spawn_app};
use keyward_core::{ExpiryRequest, Scopes, TokenId, TokenName};
use keyward_server::Caller;
use keyward_server::service::RegenerateOptions;
use reqwest::Method;
use serde_json::json;
use time::Duration;
use time::format_description::well_known::Rfc3339;

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap()
}

async fn form_post(app: &TestApp, path: &str, bearer: &str, token: &str) -> Resp {
    let auth = format!("Bearer {bearer}");
    app.raw(
        Method::POST,
        path,
        &[
            ("authorization", &auth),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        format!("token={token}").into_bytes(),
    )
    .await
}

#[track_caller]
fn expect_rotated_out(r: &Resp) {
    assert_eq!(r.status, 401, "{}", r.text);
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.contains(r#"error="invalid_token""#) && challenge.contains("regeneration"),
        "{challenge}"
    );
}

/// Finding 2: during its grace period the old secret verifies — and does nothing else. It used
/// to regenerate its token, get a fresh secret and cut the owner's new one down to its grace.
#[tokio::test]
async fn a_secret_in_its_grace_period_verifies_and_does_nothing_else() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let everything = ["tokens:*", "droplet:read", "audit:read"];
    let admin = app.token(&alice, &everything).await;
    let t = app.token(&alice, &everything).await;
    let regen = app
        .post(
            &format!("/v1/tokens/{}/regenerate", t.id),
            &admin.secret,
            &json!({"grace_period": "1h"}),
        )
        .await
        .expect(200);
    let new_secret = regen["secret"].as_str().unwrap().to_owned();

    // It still verifies, through every verifying interface.
    assert_eq!(app.verdict(&t.secret, &["droplet:read"]).await, "active");
    let fa = app
        .raw(
            Method::GET,
            "/v1/auth",
            &[
                ("authorization", &format!("Bearer {}", t.secret)),
                ("x-keyward-scope", "droplet:read"),
            ],
            Vec::new(),
        )
        .await;
    assert_eq!(fa.status, 200, "{}", fa.text);
    let introspected = form_post(&app, "/oauth/introspect", &admin.secret, &t.secret).await;
    let introspected = introspected.expect(200);
    assert_eq!(introspected["active"], true);
    admin_can_still_introspect(&app, &admin.secret).await;

    // Every management call refuses it, whatever its scopes.
    expect_rotated_out(
        &app.post_empty("/v1/tokens/self/regenerate", &t.secret)
            .await,
    );
    expect_rotated_out(
        &app.post(
            "/v1/tokens/self/regenerate",
            &t.secret,
            &json!({"grace_period": "7d"}),
        )
        .await,
    );
    expect_rotated_out(&app.get("/v1/tokens/self", &t.secret).await);
    expect_rotated_out(&app.get("/v1/tokens", &t.secret).await);
    expect_rotated_out(&app.get(&format!("/v1/tokens/{}", t.id), &t.secret).await);
    expect_rotated_out(
        &app.post(
            "/v1/tokens",
            &t.secret,
            &json!({"name": "child", "scopes": ["droplet:read"]}),
        )
        .await,
    );
    expect_rotated_out(
        &app.post_empty(&format!("/v1/tokens/{}/regenerate", t.id), &t.secret)
            .await,
    );
    expect_rotated_out(
        &app.patch(
            &format!("/v1/tokens/{}", t.id),
            &t.secret,
            &json!({"name": "mine now"}),
        )
        .await,
    );
    expect_rotated_out(
        &app.delete(&format!("/v1/tokens/{}", t.id), &t.secret, None)
            .await,
    );
    expect_rotated_out(&app.get("/v1/audit", &t.secret).await);
    expect_rotated_out(&form_post(&app, "/oauth/revoke", &t.secret, &new_secret).await);
    let caller = form_post(&app, "/oauth/introspect", &t.secret, &new_secret).await;
    assert_eq!(caller.status, 401, "{}", caller.text);

    // The owner's new secret is untouched and still the only one after the grace period.
    assert_eq!(app.verdict(&new_secret, &[]).await, "active");
    app.advance(Duration::hours(1));
    assert_eq!(app.verdict(&t.secret, &[]).await, "revoked");
    assert_eq!(app.verdict(&new_secret, &[]).await, "active");
}

async fn admin_can_still_introspect(app: &TestApp, admin: &str) {
    // (`tokens:*` covers `tokens:introspect`.)
    let r = form_post(app, "/oauth/introspect", admin, admin).await;
    assert_eq!(r.expect(200)["active"], true);
}

/// Finding 3a: a token extended its own life by regenerating itself with a later expiry.
#[tokio::test]
async fn a_token_cannot_extend_its_own_life_by_regenerating() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    // No tokens:* scope at all: self-regeneration needs none.
    let t = app.token(&alice, &["droplet:read"]).await;
    let expires = rfc3339(START + Duration::days(30));
    app.advance(Duration::days(1));
    let first = app
        .post(
            "/v1/tokens/self/regenerate",
            &t.secret,
            &json!({"expires": "366d"}),
        )
        .await
        .expect(200);
    assert_eq!(first["token"]["expires_at"], expires);
    let secret = first["secret"].as_str().unwrap();
    let second = app
        .post_empty("/v1/tokens/self/regenerate", secret)
        .await
        .expect(200);
    assert_eq!(second["token"]["expires_at"], expires, "kept, not renewed");
    let secret = second["secret"].as_str().unwrap();
    // The deployment forbids "never" before any clamping.
    app.post(
        "/v1/tokens/self/regenerate",
        secret,
        &json!({"expires": "never"}),
    )
    .await
    .expect_error(400, "invalid_expiry");
    // A shorter expiry is granted.
    let shorter = app
        .post(
            "/v1/tokens/self/regenerate",
            secret,
            &json!({"expires": "1d"}),
        )
        .await
        .expect(200);
    assert_eq!(
        shorter["token"]["expires_at"],
        rfc3339(START + Duration::days(2))
    );
    let v = app.verify(shorter["secret"].as_str().unwrap(), &[]).await;
    assert_eq!(v["expires_at"], rfc3339(START + Duration::days(2)));
}

/// Finding 3b: a short-lived token with `tokens:create` made children that outlived it, which
/// could repeat forever. A later expiry asked for is clamped to the maker's own.
#[tokio::test]
async fn children_never_outlive_the_token_that_made_them() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let parent = app
        .keyward
        .create_token(
            &Caller::operator("test"),
            Some(&alice.id),
            TokenName::parse("short").unwrap(),
            Scopes::parse(&["tokens:create", "droplet:read"]).unwrap(),
            Some(ExpiryRequest::In(Duration::hours(1))),
            keyward_core::Limits::default(),
        )
        .await
        .unwrap();
    let parent_expiry = rfc3339(START + Duration::hours(1));
    let mut maker = parent.secret.expose().to_owned();
    for generation in 0..3 {
        for expires in ["30d", "366d"] {
            let child = app
                .post(
                    "/v1/tokens",
                    &maker,
                    &json!({"name": "child", "scopes": ["tokens:create", "droplet:read"], "expires": expires}),
                )
                .await
                .expect(201);
            assert_eq!(
                child["token"]["expires_at"], parent_expiry,
                "{generation} {expires}"
            );
            maker = child["secret"].as_str().unwrap().to_owned();
        }
    }
    // A shorter expiry asked for is kept.
    let short = app
        .post(
            "/v1/tokens",
            &maker,
            &json!({"name": "shorter", "scopes": ["droplet:read"], "expires": "10m"}),
        )
        .await
        .expect(201);
    assert_eq!(
        short["token"]["expires_at"],
        rfc3339(START + Duration::minutes(10))
    );
    app.advance(Duration::hours(1));
    assert_eq!(app.verdict(&maker, &[]).await, "expired");
}

/// Finding 3c: a grace period kept the old secret alive past that secret's own expiry.
#[tokio::test]
async fn a_grace_period_ends_no_later_than_the_old_secret() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let t = app
        .keyward
        .create_token(
            &Caller::operator("test"),
            Some(&alice.id),
            TokenName::parse("ending").unwrap(),
            Scopes::parse(&["droplet:read"]).unwrap(),
            Some(ExpiryRequest::In(Duration::minutes(10))),
            keyward_core::Limits::default(),
        )
        .await
        .unwrap();
    // An operator may give the token a new, longer life; the old secret keeps its own end.
    let regenerated = app
        .keyward
        .regenerate_token(
            &Caller::operator("test"),
            &t.token.id,
            RegenerateOptions {
                grace: Some(Duration::days(7)),
                expires: Some(ExpiryRequest::In(Duration::days(30))),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        regenerated.token.expires_at,
        Some(START + Duration::days(30))
    );
    let old = t.secret.expose();
    assert_eq!(app.verdict(old, &[]).await, "active");
    app.advance(Duration::minutes(10));
    assert_ne!(app.verdict(old, &[]).await, "active");
    assert_eq!(
        app.verdict(regenerated.secret.expose(), &[]).await,
        "active"
    );

    // A token regenerating a sibling: the grace ends with the caller, too.
    let maker = app
        .keyward
        .create_token(
            &Caller::operator("test"),
            Some(&alice.id),
            TokenName::parse("maker").unwrap(),
            Scopes::parse(&["tokens:update", "droplet:read"]).unwrap(),
            Some(ExpiryRequest::In(Duration::hours(1))),
            keyward_core::Limits::default(),
        )
        .await
        .unwrap();
    let sibling = app.token(&alice, &["droplet:read"]).await;
    let r = app
        .post(
            &format!("/v1/tokens/{}/regenerate", sibling.id),
            maker.secret.expose(),
            &json!({"grace_period": "7d"}),
        )
        .await
        .expect(200);
    let now = START + Duration::minutes(10);
    assert_eq!(r["token"]["expires_at"], rfc3339(now + Duration::hours(1)));
    app.advance(Duration::hours(1));
    assert_ne!(app.verdict(&sibling.secret, &[]).await, "active");
}

/// Finding 12: introspection's `iat` is when the presented secret was issued, not when the
/// token was first made.
#[tokio::test]
async fn introspection_iat_is_the_current_secrets_issue_time() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let gateway = app.token(&alice, &["tokens:introspect"]).await;
    let t = app.token(&alice, &["droplet:read"]).await;
    app.advance(Duration::hours(5));
    let regenerated = app
        .keyward
        .regenerate_token(
            &Caller::operator("test"),
            &TokenId::parse(&t.id).unwrap(),
            RegenerateOptions {
                grace: Some(Duration::hours(1)),
                expires: None,
            },
        )
        .await
        .unwrap();
    let answer = form_post(
        &app,
        "/oauth/introspect",
        &gateway.secret,
        regenerated.secret.expose(),
    )
    .await
    .expect(200);
    assert_eq!(
        answer["iat"],
        (START + Duration::hours(5)).unix_timestamp(),
        "{answer}"
    );
    // The old secret, in its grace period, was issued when the token was made.
    let old = form_post(&app, "/oauth/introspect", &gateway.secret, &t.secret)
        .await
        .expect(200);
    assert_eq!(old["iat"], START.unix_timestamp(), "{old}");
}

/// Finding 10: names accepted bidirectional overrides and other invisible formatting characters
/// (U+202E made `token list` show a spoofed name). Every name field refuses them.
#[tokio::test]
async fn names_and_reasons_refuse_invisible_formatting_characters() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let admin = app.token(&alice, &["tokens:*", "droplet:read"]).await;
    for name in [
        "invoice\u{202E}fdp.exe",
        "ci\u{2066}prod\u{2069}",
        "a\u{200B}b",
        "line\u{2028}break",
        "tab\there",
    ] {
        app.post(
            "/v1/tokens",
            &admin.secret,
            &json!({"name": name, "scopes": ["droplet:read"]}),
        )
        .await
        .expect_error(400, "invalid_name");
        app.patch(
            &format!("/v1/tokens/{}", admin.id),
            &admin.secret,
            &json!({"name": name}),
        )
        .await
        .expect_error(400, "invalid_name");
        app.delete(
            &format!("/v1/tokens/{}", admin.id),
            &admin.secret,
            Some(&json!({"reason": name})),
        )
        .await
        .expect_error(400, "invalid_request");
    }
    assert_eq!(app.verdict(&admin.secret, &[]).await, "active");
}

/// Finding 13: invalid UTF-8 in a path was answered `400 text/plain`; every error of the API
/// has the JSON shape.
#[tokio::test]
async fn a_path_that_is_not_utf8_gets_the_json_error_shape() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let admin = app.token(&alice, &["tokens:*"]).await;
    for (method, path) in [
        (Method::GET, "/v1/tokens/%FF"),
        (Method::GET, "/v1/tokens/tok_%C3%28"),
        (Method::PATCH, "/v1/tokens/%FF%FE"),
        (Method::DELETE, "/v1/tokens/%80"),
        (Method::POST, "/v1/tokens/%FF/regenerate"),
        (Method::GET, "/v1/%FF"),
    ] {
        let r = app
            .raw(
                method.clone(),
                path,
                &[
                    ("authorization", &format!("Bearer {}", admin.secret)),
                    ("content-type", "application/json"),
                ],
                b"{}".to_vec(),
            )
            .await;
        assert_eq!(
            r.header("content-type"),
            Some("application/json"),
            "{method} {path}: {} {}",
            r.status,
            r.text
        );
        r.expect_error(404, "not_found");
    }
}

/// Found by fuzzing the HTTP surface: a secret sent as a token name or a revocation reason was
/// stored as it came and shown by every later answer (and kept in the audit trail), so the
/// plaintext outlived the request. Text that holds a well-formed token is refused.
#[tokio::test]
async fn a_secret_pasted_as_a_name_or_a_reason_is_refused() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let admin = app.token(&alice, &["tokens:*", "droplet:read"]).await;
    let other = app.token(&alice, &["droplet:read"]).await;
    let path = format!("/v1/tokens/{}", other.id);
    for text in [other.secret.clone(), format!("ci token: {}", other.secret)] {
        let r = app
            .delete(&path, &admin.secret, Some(&json!({"reason": text})))
            .await;
        r.expect_error(400, "invalid_request");
        assert!(!r.text.contains(&other.secret));
        let r = app
            .patch(&path, &admin.secret, &json!({"name": text}))
            .await;
        r.expect_error(400, "invalid_name");
        assert!(!r.text.contains(&other.secret));
        let r = app
            .post(
                "/v1/tokens",
                &admin.secret,
                &json!({"name": text, "scopes": ["droplet:read"]}),
            )
            .await;
        r.expect_error(400, "invalid_name");
    }
    let listed = app.get("/v1/tokens", &admin.secret).await;
    assert!(!listed.text.contains(&other.secret));
    let trail = format!("{:?}", app.audit_trail().await);
    assert!(!trail.contains(&other.secret));
    assert_eq!(app.verdict(&other.secret, &[]).await, "active");
}
