//! The standards gateways speak: RFC 6750 challenges, RFC 7662 introspection, RFC 7009
//! revocation. Each test checks the RFC's status codes and the exact member sets.

use crate::helpers::{Resp, START, TestApp, spawn_app};
use keyward_core::{AuditKind, TokenId};
use keyward_server::Caller;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use time::Duration;

fn basic(secret: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("gateway:{secret}"))
    )
}

fn form(token: &str) -> Vec<u8> {
    let mut body = String::from("token=");
    body.extend(token.bytes().map(|b| match b {
        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
        _ => format!("%{b:02X}"),
    }));
    body.push_str("&token_type_hint=access_token");
    body.into_bytes()
}

async fn oauth_post(app: &TestApp, path: &str, authorization: Option<&str>, body: Vec<u8>) -> Resp {
    let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
    if let Some(a) = authorization {
        headers.push(("authorization", a));
    }
    app.raw(Method::POST, path, &headers, body).await
}

async fn introspect(app: &TestApp, authorization: Option<&str>, token: &str) -> Resp {
    oauth_post(app, "/oauth/introspect", authorization, form(token)).await
}

async fn revoke(app: &TestApp, authorization: Option<&str>, token: &str) -> Resp {
    oauth_post(app, "/oauth/revoke", authorization, form(token)).await
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

fn challenges(r: &Resp) -> Vec<String> {
    r.headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// RFC 6749 §5.2: exactly `error` and `error_description`, this code, this status.
#[track_caller]
fn expect_oauth_error(r: &Resp, status: u16, code: &str) {
    let body = r.expect(status);
    assert_eq!(
        keys(&body),
        BTreeSet::from(["error", "error_description"]),
        "{body}"
    );
    assert_eq!(body["error"], code, "{body}");
    assert_eq!(r.header("cache-control"), Some("no-store"));
}

// ------------------------------------------------------------------ RFC 6750

#[tokio::test]
async fn every_401_and_403_carries_the_rfc6750_challenge() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let reader = app.token(&alice, &["droplet:read"]).await;

    // No credential: the challenge has no error code (§3.1).
    let r = app.request(Method::GET, "/v1/tokens", None, None).await;
    r.expect_error(401, "unauthenticated");
    assert_eq!(challenges(&r), [r#"Bearer realm="keyward""#]);

    let r = app.get("/v1/tokens", "kwp_garbage").await;
    r.expect_error(401, "invalid_token");
    assert_eq!(
        challenges(&r),
        [
            r#"Bearer realm="keyward", error="invalid_token", error_description="the token is not active: malformed""#
        ]
    );

    let r = app.get("/v1/tokens", &reader.secret).await;
    r.expect_error(403, "insufficient_scope");
    assert_eq!(
        challenges(&r),
        [
            r#"Bearer realm="keyward", error="insufficient_scope", error_description="this token lacks the scope tokens:read", scope="tokens:read""#
        ]
    );

    // The scope ceiling is a 403 of a Bearer-protected endpoint too.
    let maker = app.token(&alice, &["tokens:create", "droplet:read"]).await;
    let r = app
        .post(
            "/v1/tokens",
            &maker.secret,
            &json!({"name": "x", "scopes": ["droplet:read", "droplet:delete"]}),
        )
        .await;
    r.expect_error(403, "scope_exceeds_caller");
    let c = challenges(&r);
    assert_eq!(c.len(), 1);
    assert!(
        c[0].starts_with(
            r#"Bearer realm="keyward", error="insufficient_scope", error_description=""#
        ) && c[0].ends_with(r#", scope="droplet:delete""#),
        "{c:?}"
    );
}

#[tokio::test]
async fn two_authorization_headers_are_an_invalid_request() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let t = app.token(&alice, &["tokens:read"]).await;
    let bearer = format!("Bearer {}", t.secret);
    let mut headers = reqwest::header::HeaderMap::new();
    headers.append("authorization", bearer.parse().unwrap());
    headers.append("authorization", bearer.parse().unwrap());
    let resp = app
        .client
        .get(format!("{}/v1/tokens", app.base))
        .headers(headers)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge
            .starts_with(r#"Bearer realm="keyward", error="invalid_request", error_description=""#),
        "{challenge}"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_request");
}

// ------------------------------------------------------------------ RFC 7662

#[tokio::test]
async fn introspection_answers_the_rfc_shape_for_an_active_token() {
    let app = spawn_app().await;
    let gateway_owner = app.user("gateway").await;
    let gateway = app.token(&gateway_owner, &["tokens:introspect"]).await;
    let alice = app.user("alice").await;
    let t = app.token(&alice, &["droplet:read", "volume:read"]).await;

    for authorization in [format!("Bearer {}", gateway.secret), basic(&gateway.secret)] {
        let r = introspect(&app, Some(&authorization), &t.secret).await;
        let body = r.expect(200);
        assert_eq!(
            keys(&body),
            BTreeSet::from([
                "active",
                "scope",
                "username",
                "token_type",
                "exp",
                "iat",
                "sub",
                "jti"
            ]),
            "{body}"
        );
        assert_eq!(body["active"], true);
        assert_eq!(body["scope"], "droplet:read volume:read");
        assert_eq!(body["username"], "alice");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["sub"], alice.id.as_str());
        assert_eq!(body["jti"], t.id);
        assert_eq!(body["iat"], START.unix_timestamp());
        assert_eq!(body["exp"], (START + Duration::days(30)).unix_timestamp());
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert!(!r.text.contains(&t.secret) && !r.text.contains(&gateway.secret));
    }

    // It counts as a use, like any verification.
    app.keyward.flush_usage().await.unwrap();
    let record = app
        .keyward
        .get_token(&Caller::operator("test"), &TokenId::parse(&t.id).unwrap())
        .await
        .unwrap();
    assert!(record.last_used_at.is_some());
}

#[tokio::test]
async fn introspection_of_any_inactive_token_is_active_false_and_nothing_else() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let revoked = app.token(&alice, &["droplet:read"]).await;
    app.keyward
        .revoke_token(
            &Caller::operator("test"),
            &TokenId::parse(&revoked.id).unwrap(),
            None,
        )
        .await
        .unwrap();
    let expiring = app.token(&alice, &["droplet:read"]).await;
    // Well-formed, valid checksum, but no store has heard of it.
    let unknown = keyward_core::TokenSecret::generate(&keyward_core::Prefix::default())
        .unwrap()
        .expose()
        .to_owned();
    app.advance(Duration::days(31));
    // The gateway's own token expired too; a fresh one.
    let gateway = app.token(&alice, &["tokens:introspect"]).await;
    let auth = format!("Bearer {}", gateway.secret);

    for token in [
        revoked.secret.as_str(),
        expiring.secret.as_str(),
        unknown.as_str(),
        "kwp_not-a-token",
        "",
        "garbage ünïcødé",
    ] {
        let r = introspect(&app, Some(&auth), token).await;
        assert_eq!(r.expect(200), json!({"active": false}), "{token:?}");
        assert_eq!(r.text, r#"{"active":false}"#);
    }
}

#[tokio::test]
async fn introspection_callers_must_hold_tokens_introspect() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let t = app.token(&alice, &["droplet:read"]).await;
    let no_scope = app.token(&alice, &["tokens:read", "droplet:read"]).await;

    // No credential: invalid_client, both challenges.
    let r = introspect(&app, None, &t.secret).await;
    expect_oauth_error(&r, 401, "invalid_client");
    assert_eq!(
        challenges(&r),
        [r#"Bearer realm="keyward""#, r#"Basic realm="keyward""#]
    );

    // Bearer without the scope: 401 (RFC 7662 §2.3), RFC 6750's insufficient_scope.
    let r = introspect(
        &app,
        Some(&format!("Bearer {}", no_scope.secret)),
        &t.secret,
    )
    .await;
    expect_oauth_error(&r, 401, "insufficient_scope");
    let c = challenges(&r);
    assert!(
        c.len() == 1
            && c[0].starts_with(r#"Bearer realm="keyward", error="insufficient_scope""#)
            && c[0].ends_with(r#"scope="tokens:introspect""#),
        "{c:?}"
    );

    // Bearer that is not a token.
    let r = introspect(&app, Some("Bearer kwp_nope"), &t.secret).await;
    expect_oauth_error(&r, 401, "invalid_token");
    assert!(challenges(&r)[0].contains(r#"error="invalid_token""#));

    // Basic: invalid_client with a Basic challenge, whether the password is no token or
    // a token without the scope.
    for auth in [
        basic("kwp_nope"),
        basic(&no_scope.secret),
        "Basic !!!".to_owned(),
    ] {
        let r = introspect(&app, Some(&auth), &t.secret).await;
        expect_oauth_error(&r, 401, "invalid_client");
        assert_eq!(challenges(&r), [r#"Basic realm="keyward""#]);
    }
}

#[tokio::test]
async fn introspection_refuses_a_body_that_is_not_a_token_request() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let gateway = app.token(&alice, &["tokens:introspect"]).await;
    let auth = format!("Bearer {}", gateway.secret);

    let r = oauth_post(
        &app,
        "/oauth/introspect",
        Some(&auth),
        b"token_type_hint=x".to_vec(),
    )
    .await;
    expect_oauth_error(&r, 400, "invalid_request");
    let r = app
        .raw(
            Method::POST,
            "/oauth/introspect",
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            br#"{"token": "x"}"#.to_vec(),
        )
        .await;
    expect_oauth_error(&r, 400, "invalid_request");
    // A repeated parameter is malformed too (RFC 6749 §3.1).
    let r = oauth_post(
        &app,
        "/oauth/introspect",
        Some(&auth),
        b"token=a&token=b".to_vec(),
    )
    .await;
    expect_oauth_error(&r, 400, "invalid_request");
}

// ------------------------------------------------------------------ RFC 7009

#[tokio::test]
async fn a_token_revokes_itself_and_is_refused_at_once() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let t = app.token(&alice, &["droplet:read"]).await;

    let r = revoke(&app, Some(&format!("Bearer {}", t.secret)), &t.secret).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.text, "");
    assert_eq!(app.verdict(&t.secret, &[]).await, "revoked");

    // Audited: the actor is the token, the reason RFC 7009's.
    let event = app
        .audit_trail()
        .await
        .into_iter()
        .find(|e| e.event.kind == AuditKind::TokenRevoked)
        .unwrap()
        .event;
    assert_eq!(
        event.token_id.as_ref().map(TokenId::as_str),
        Some(t.id.as_str())
    );
    assert_eq!(
        event.actor.token.as_ref().map(TokenId::as_str),
        Some(t.id.as_str())
    );
    assert_eq!(event.detail.as_deref(), Some("RFC 7009 revocation"));
}

#[tokio::test]
async fn an_owner_token_with_tokens_delete_revokes_a_sibling_over_basic() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let admin = app.token(&alice, &["tokens:delete"]).await;
    let t = app.token(&alice, &["droplet:read"]).await;

    let r = revoke(&app, Some(&basic(&admin.secret)), &t.secret).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(app.verdict(&t.secret, &[]).await, "revoked");
    assert_eq!(app.verdict(&admin.secret, &[]).await, "active");
    let record = app
        .keyward
        .get_token(&Caller::operator("test"), &TokenId::parse(&t.id).unwrap())
        .await
        .unwrap();
    assert_eq!(record.revoke_reason.as_deref(), Some("RFC 7009 revocation"));

    // Already revoked, unknown, malformed: 200, nothing changes.
    let before = app.snapshot().await;
    for token in [t.secret.as_str(), "kwp_unknown", "", "garbage"] {
        let r = revoke(&app, Some(&basic(&admin.secret)), token).await;
        assert_eq!(r.status, 200, "{token:?}: {}", r.text);
    }
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn another_owners_token_or_a_sibling_without_the_scope_is_not_revoked() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let alice_admin = app.token(&alice, &["tokens:*"]).await;
    let alice_plain = app.token(&alice, &["droplet:read"]).await;
    let bobs = app.token(&bob, &["droplet:read"]).await;
    let before = app.snapshot().await;

    let r = revoke(
        &app,
        Some(&format!("Bearer {}", alice_admin.secret)),
        &bobs.secret,
    )
    .await;
    expect_oauth_error(&r, 400, "unauthorized_client");
    let r = revoke(
        &app,
        Some(&format!("Bearer {}", alice_plain.secret)),
        &alice_admin.secret,
    )
    .await;
    expect_oauth_error(&r, 400, "unauthorized_client");
    assert_eq!(app.verdict(&bobs.secret, &[]).await, "active");
    assert_eq!(app.verdict(&alice_admin.secret, &[]).await, "active");

    // The caller must authenticate.
    let r = revoke(&app, None, &bobs.secret).await;
    expect_oauth_error(&r, 401, "invalid_client");
    let r = revoke(&app, Some("Bearer kwp_nope"), &bobs.secret).await;
    expect_oauth_error(&r, 401, "invalid_token");
    let r = revoke(&app, Some(&basic("kwp_nope")), &bobs.secret).await;
    expect_oauth_error(&r, 401, "invalid_client");
    assert_eq!(challenges(&r), [r#"Basic realm="keyward""#]);

    let mut after = app.snapshot().await;
    // Authenticating counts as a use; nothing else may change.
    for t in &mut after.tokens {
        t.last_used_at = None;
    }
    assert_eq!(after, before);
}
