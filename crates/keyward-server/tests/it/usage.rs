//! last_used bookkeeping (batched, never a write per verification) and the audit of
//! expired-token use (written off the request path).

use crate::helpers::{START, spawn_app};
use keyward_store::TokenStore as _;
use reqwest::Method;
use serde_json::{Value, json};
use time::Duration;
use time::format_description::well_known::Rfc3339;

#[tokio::test]
async fn last_used_is_recorded_in_batches_not_by_the_verification() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let admin = app.token(&alice, &["tokens:read"]).await;
    let t = app.token(&alice, &["droplet:read"]).await;
    // Anything noted so far (nothing) is written; from here the only pending use is ours.
    app.keyward.flush_usage().await.unwrap();

    app.advance(Duration::minutes(5));
    let v = app
        .request(
            Method::POST,
            "/v1/verify",
            None,
            Some(&json!({"token": t.secret, "scopes": ["droplet:read"], "ip": "203.0.113.7"})),
        )
        .await
        .expect(200);
    assert_eq!(v["active"], true);

    // Verified, but not yet written.
    let id = keyward_core::TokenId::parse(&t.id).unwrap();
    let stored = app.store.token(&id, None).await.unwrap().unwrap();
    assert_eq!(
        stored.last_used_at, None,
        "a verification must not write to the database"
    );
    assert_eq!(stored.last_used_ip, None);

    assert!(
        app.keyward.flush_usage().await.unwrap() >= 1,
        "the use was pending in memory"
    );
    let got = app
        .get(&format!("/v1/tokens/{}", t.id), &admin.secret)
        .await
        .expect(200);
    assert_eq!(
        got["token"]["last_used_at"],
        (START + Duration::minutes(5)).format(&Rfc3339).unwrap()
    );
    assert_eq!(got["token"]["last_used_ip"], "203.0.113.7");

    // A later use moves it forward; an IPv6 client address is kept as given.
    app.advance(Duration::minutes(1));
    app.request(
        Method::POST,
        "/v1/verify",
        None,
        Some(&json!({"token": t.secret, "ip": "2001:db8::1"})),
    )
    .await
    .expect(200);
    app.keyward.flush_usage().await.unwrap();
    let got = app
        .get(&format!("/v1/tokens/{}", t.id), &admin.secret)
        .await
        .expect(200);
    assert_eq!(
        got["token"]["last_used_at"],
        (START + Duration::minutes(6)).format(&Rfc3339).unwrap()
    );
    assert_eq!(got["token"]["last_used_ip"], "2001:db8::1");
}

#[tokio::test]
async fn inactive_verifications_are_not_uses() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let admin = app.token(&alice, &["tokens:*"]).await;
    let t = app.token(&alice, &["droplet:read"]).await;
    app.delete(&format!("/v1/tokens/{}", t.id), &admin.secret, None)
        .await
        .expect(200);
    app.keyward.flush_usage().await.unwrap();
    app.advance(Duration::minutes(1));
    assert_eq!(app.verdict(&t.secret, &[]).await, "revoked");
    app.keyward.flush_usage().await.unwrap();
    let got = app
        .get(&format!("/v1/tokens/{}", t.id), &admin.secret)
        .await
        .expect(200);
    assert_eq!(got["token"]["last_used_at"], Value::Null);
}

#[tokio::test]
async fn presenting_an_expired_token_is_audited() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let t = app.token(&alice, &["droplet:read"]).await;
    app.advance(Duration::days(31));

    let r = app
        .request(
            Method::POST,
            "/v1/verify",
            None,
            Some(&json!({"token": t.secret, "ip": "198.51.100.9"})),
        )
        .await
        .expect(200);
    assert_eq!(r, json!({"active": false, "reason": "expired"}));
    // The same token as a bearer credential is refused too.
    app.get("/v1/tokens/self", &t.secret)
        .await
        .expect_error(401, "invalid_token");

    // Written off the request path: wait for it, boundedly.
    let mut found = Vec::new();
    for _ in 0..40 {
        found = app
            .audit_trail()
            .await
            .into_iter()
            .filter(|e| e.event.kind.as_str() == "token.expired_use")
            .collect();
        if !found.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        found.len(),
        1,
        "one event per expired token, not one per use"
    );
    let e = &found[0].event;
    assert_eq!(e.token_id.as_ref().map(|i| i.as_str()), Some(t.id.as_str()));
    assert_eq!(e.subject_user.as_ref(), Some(&alice.id));
    assert_eq!(e.ip, Some("198.51.100.9".parse().unwrap()));
    assert_eq!(e.at, START + Duration::days(31));
}

#[tokio::test]
async fn a_verification_refused_for_scope_is_not_a_use() {
    // `last_used_at` is documented as "when it was last presented successfully"; an
    // `insufficient_scope` answer is `active: false`, not a success.
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let admin = app.token(&alice, &["tokens:read"]).await;
    let t = app.token(&alice, &["droplet:read"]).await;
    app.keyward.flush_usage().await.unwrap();
    assert_eq!(
        app.verdict(&t.secret, &["volume:delete"]).await,
        "insufficient_scope"
    );
    app.keyward.flush_usage().await.unwrap();
    let got = app
        .get(&format!("/v1/tokens/{}", t.id), &admin.secret)
        .await
        .expect(200);
    assert_eq!(got["token"]["last_used_at"], Value::Null, "{got}");
}
