//! Operations endpoints: liveness, readiness, metrics.

use crate::helpers::{Serving, spawn_app, spawn_app_serving, spawn_app_with};
use keyward_server::Settings;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    let r = app.request(Method::GET, "/healthz", None, None).await;
    assert_eq!(r.expect(200), json!({"status": "ok"}));
    let r = app.request(Method::GET, "/readyz", None, None).await;
    assert_eq!(r.expect(200), json!({"status": "ready"}));
}

#[tokio::test]
async fn readiness_fails_when_the_store_is_gone() {
    let app = spawn_app().await;
    app.store.close().await;
    let r = app.request(Method::GET, "/readyz", None, None).await;
    r.expect_error(503, "unavailable");
    // Liveness does not depend on the store.
    app.request(Method::GET, "/healthz", None, None)
        .await
        .expect(200);
    // A malformed token needs no store to be refused.
    let r = app
        .request(
            Method::POST,
            "/v1/verify",
            None,
            Some(&json!({"token": "kwp_nope"})),
        )
        .await;
    assert_eq!(
        r.expect(200),
        json!({"active": false, "reason": "malformed"})
    );
    // A well-formed one cannot be answered safely without it: 503, never "unknown".
    let well_formed =
        keyward_core::TokenSecret::generate(&keyward_core::Prefix::default()).unwrap();
    let r = app
        .request(
            Method::POST,
            "/v1/verify",
            None,
            Some(&json!({"token": well_formed.expose()})),
        )
        .await;
    r.expect_error(503, "unavailable");
}

fn counter(metrics: &str, result: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("keyward_verifications_total{")
                && l.contains(&format!("result=\"{result}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_count_verifications_by_result() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let t = app.token(&alice, &["droplet:read"]).await;
    let read = || async { app.request(Method::GET, "/metrics", None, None).await };
    let before = read().await;
    assert_eq!(before.status.as_u16(), 200);
    assert!(
        before
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/plain"))
    );

    assert_eq!(app.verdict(&t.secret, &["droplet:read"]).await, "active");
    assert_eq!(app.verdict("garbage", &[]).await, "malformed");
    let after = read().await;
    assert!(
        after.text.contains("keyward_verifications_total"),
        "{}",
        after.text
    );
    assert!(
        after.text.contains("keyward_verification_duration_seconds"),
        "{}",
        after.text
    );
    assert!(
        after.text.contains("keyward_cache_hits_total")
            || after.text.contains("keyward_cache_misses_total"),
        "{}",
        after.text
    );
    // Other tests share the recorder and run at the same time: counts only ever grow.
    assert!(counter(&after.text, "active") >= counter(&before.text, "active") + 1.0);
    assert!(counter(&after.text, "malformed") >= counter(&before.text, "malformed") + 1.0);
}

#[tokio::test]
async fn metrics_can_require_a_token_holding_metrics_read() {
    let app = spawn_app_with(Settings {
        metrics_require_token: true,
        ..Settings::default()
    })
    .await;
    let alice = app.user("alice").await;
    let scraper = app.token(&alice, &["metrics:read"]).await;
    let other = app.token(&alice, &["droplet:read", "tokens:*"]).await;

    let r = app.request(Method::GET, "/metrics", None, None).await;
    r.expect_error(401, "unauthenticated");
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer realm="keyward""#)
    );

    let r = app.get("/metrics", &other.secret).await;
    r.expect_error(403, "insufficient_scope");
    let challenge = r.header("www-authenticate").unwrap();
    assert!(
        challenge.contains(r#"error="insufficient_scope""#)
            && challenge.contains(r#"scope="metrics:read""#),
        "{challenge}"
    );

    let r = app.get("/metrics", "kwp_garbage").await;
    r.expect_error(401, "invalid_token");

    let r = app.get("/metrics", &scraper.secret).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    assert!(r.text.contains("keyward_verifications_total"), "{}", r.text);

    // Only /metrics changed: the rest of the operations endpoints stay open.
    app.request(Method::GET, "/healthz", None, None)
        .await
        .expect(200);
}

#[tokio::test]
async fn metrics_can_have_a_listener_of_their_own() {
    let app = spawn_app_serving(
        Settings::default(),
        Serving {
            separate_metrics: true,
            ..Serving::default()
        },
    )
    .await;
    let metrics_base = app.metrics_base.clone().unwrap();

    // The main listener no longer serves /metrics, and says so in the usual shape.
    let r = app.request(Method::GET, "/metrics", None, None).await;
    r.expect_error(404, "not_found");
    app.request(Method::GET, "/healthz", None, None)
        .await
        .expect(200);

    let r = app.get_at(&metrics_base, "/metrics", None).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain"))
    );
    assert!(r.text.contains("keyward_verifications_total"), "{}", r.text);
    // It serves /metrics alone.
    for path in ["/healthz", "/v1/tokens", "/openapi.json"] {
        app.get_at(&metrics_base, path, None)
            .await
            .expect_error(404, "not_found");
    }
}

#[tokio::test]
async fn a_metrics_listener_of_their_own_can_require_a_token_too() {
    let app = spawn_app_serving(
        Settings {
            metrics_require_token: true,
            ..Settings::default()
        },
        Serving {
            separate_metrics: true,
            ..Serving::default()
        },
    )
    .await;
    let metrics_base = app.metrics_base.clone().unwrap();
    let alice = app.user("alice").await;
    let scraper = app.token(&alice, &["metrics:*"]).await;
    let other = app.token(&alice, &["audit:read"]).await;

    app.get_at(&metrics_base, "/metrics", None)
        .await
        .expect_error(401, "unauthenticated");
    app.get_at(&metrics_base, "/metrics", Some(&other.secret))
        .await
        .expect_error(403, "insufficient_scope");
    let r = app
        .get_at(&metrics_base, "/metrics", Some(&scraper.secret))
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    app.get("/metrics", &scraper.secret)
        .await
        .expect_error(404, "not_found");
}
