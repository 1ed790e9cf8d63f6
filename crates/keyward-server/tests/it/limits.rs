//! The limits a token carries, through the real server: allowed addresses, uses with refills,
//! rate limits; over `/v1/verify` and forward-auth; and that a token cannot make a looser one.

use crate::helpers::{Resp, TestApp, spawn_app};
use reqwest::Method;
use serde_json::{Value, json};
use time::Duration;

/// A token made over the API by a parent token with `tokens:create`, with `extra` fields.
async fn limited(app: &TestApp, parent: &str, extra: Value) -> (String, Value) {
    let mut body = json!({"name": "limited", "scopes": ["droplet:read"]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let made = app.post("/v1/tokens", parent, &body).await.expect(201);
    (
        made["secret"].as_str().unwrap().to_owned(),
        made["token"].clone(),
    )
}

async fn parent(app: &TestApp) -> String {
    let alice = app.user("alice").await;
    app.token(&alice, &["droplet:read", "tokens:create", "tokens:read"])
        .await
        .secret
}

async fn verify_from(app: &TestApp, secret: &str, ip: Option<&str>) -> Value {
    let mut body = json!({"token": secret, "scopes": ["droplet:read"]});
    if let Some(ip) = ip {
        body["ip"] = json!(ip);
    }
    app.request(Method::POST, "/v1/verify", None, Some(&body))
        .await
        .expect(200)
}

fn reason(v: &Value) -> &str {
    if v["active"] == true {
        "active"
    } else {
        v["reason"].as_str().unwrap()
    }
}

#[tokio::test]
async fn an_allowlist_admits_its_addresses_and_no_other() {
    let app = spawn_app().await;
    let parent = parent(&app).await;
    let (secret, token) = limited(
        &app,
        &parent,
        json!({"allowed_ips": ["203.0.113.7/24", "2001:db8::/32", "198.51.100.4"]}),
    )
    .await;
    assert_eq!(
        token["allowed_ips"],
        json!(["198.51.100.4/32", "203.0.113.0/24", "2001:db8::/32"]),
        "stored normalized"
    );
    for (ip, want) in [
        (Some("203.0.113.200"), "active"),
        (Some("::ffff:203.0.113.9"), "active"),
        (Some("2001:db8:77::1"), "active"),
        (Some("198.51.100.4"), "active"),
        (Some("198.51.100.5"), "ip_not_allowed"),
        (Some("203.0.114.1"), "ip_not_allowed"),
        (Some("2001:db9::1"), "ip_not_allowed"),
        // No address: refused, never assumed allowed.
        (None, "ip_not_allowed"),
    ] {
        assert_eq!(
            reason(&verify_from(&app, &secret, ip).await),
            want,
            "{ip:?}"
        );
    }
    // The API's own bearer authentication applies it too: the test client is 127.0.0.1.
    let (bound, _) = limited(
        &app,
        &parent,
        json!({"allowed_ips": ["10.0.0.0/8"], "scopes": ["tokens:read"]}),
    )
    .await;
    app.get("/v1/tokens", &bound)
        .await
        .expect_error(403, "ip_not_allowed");
    // Bad ranges are a clear 400.
    app.post(
        "/v1/tokens",
        &parent,
        &json!({"name": "x", "scopes": ["droplet:read"], "allowed_ips": ["10.0.0.0/33"]}),
    )
    .await
    .expect_error(400, "invalid_limits");
}

#[tokio::test]
async fn uses_run_out_exactly_and_refill() {
    let app = spawn_app().await;
    let parent = parent(&app).await;
    let (secret, token) = limited(&app, &parent, json!({"max_uses": 3})).await;
    assert_eq!(token["remaining"], 3);
    for left in [2, 1, 0] {
        let v = verify_from(&app, &secret, None).await;
        assert_eq!(reason(&v), "active", "{v}");
        assert_eq!(v["remaining"], left, "{v}");
    }
    let v = verify_from(&app, &secret, None).await;
    assert_eq!(reason(&v), "usage_exceeded", "{v}");
    assert!(v.get("retry_after").is_none(), "no refill, no retry: {v}");
    // A refused verification spends nothing, and the count holds across time.
    app.advance(Duration::seconds(3600));
    assert_eq!(
        reason(&verify_from(&app, &secret, None).await),
        "usage_exceeded"
    );

    let (refilling, _) = limited(
        &app,
        &parent,
        json!({"max_uses": 2, "refill": {"amount": 2, "every": "1h"}}),
    )
    .await;
    for _ in 0..2 {
        assert_eq!(reason(&verify_from(&app, &refilling, None).await), "active");
    }
    let v = verify_from(&app, &refilling, None).await;
    assert_eq!(reason(&v), "usage_exceeded");
    let retry = v["retry_after"].as_i64().unwrap();
    assert!((1..=3600).contains(&retry), "{v}");
    app.advance(Duration::seconds(3600));
    let v = verify_from(&app, &refilling, None).await;
    assert_eq!(reason(&v), "active", "refilled: {v}");
    assert_eq!(v["remaining"], 1);

    // Refill without uses, or zero uses: refused.
    app.post(
        "/v1/tokens",
        &parent,
        &json!({"name": "x", "scopes": ["droplet:read"], "refill": {"amount": 2, "every": "1h"}}),
    )
    .await
    .expect_error(400, "invalid_limits");
}

#[tokio::test]
async fn a_rate_limit_refuses_with_retry_after_and_spends_no_use_when_it_does() {
    let app = spawn_app().await;
    let parent = parent(&app).await;
    let (secret, _) = limited(
        &app,
        &parent,
        json!({"max_uses": 5, "rate_limit": {"requests": 2, "per": "1m"}}),
    )
    .await;
    let v = verify_from(&app, &secret, None).await;
    assert_eq!(reason(&v), "active");
    assert_eq!(v["ratelimit"]["limit"], 2);
    assert_eq!(v["ratelimit"]["remaining"], 1);
    assert!(v["ratelimit"]["reset"].as_i64().unwrap() > 0);
    assert_eq!(reason(&verify_from(&app, &secret, None).await), "active");
    let v = verify_from(&app, &secret, None).await;
    assert_eq!(reason(&v), "rate_limited", "{v}");
    assert!(
        (1..=60).contains(&v["retry_after"].as_i64().unwrap()),
        "{v}"
    );
    assert_eq!(v["ratelimit"]["remaining"], 0);
    // The next window: the refused request spent no use, so three are left of five.
    app.advance(Duration::seconds(60));
    let v = verify_from(&app, &secret, None).await;
    assert_eq!(reason(&v), "active");
    assert_eq!(v["remaining"], 2, "{v}");
}

async fn forward(app: &TestApp, secret: &str, extra: &[(&str, &str)]) -> Resp {
    let bearer = format!("Bearer {secret}");
    let mut headers = vec![
        ("authorization", bearer.as_str()),
        ("x-keyward-scope", "droplet:read"),
    ];
    headers.extend_from_slice(extra);
    app.raw(Method::GET, "/v1/auth", &headers, Vec::new()).await
}

#[tokio::test]
async fn forward_auth_answers_403_and_429_with_rate_limit_headers() {
    let app = spawn_app().await;
    let parent = parent(&app).await;
    let (secret, _) = limited(
        &app,
        &parent,
        json!({"rate_limit": {"requests": 2, "per": "10s"}}),
    )
    .await;
    let ok = forward(&app, &secret, &[]).await;
    assert_eq!(ok.status.as_u16(), 200);
    assert_eq!(ok.header("ratelimit-policy"), Some("\"token\";q=2;w=10"));
    let t: i64 = ok
        .header("ratelimit")
        .unwrap()
        .strip_prefix("\"token\";r=1;t=")
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&t), "{t}");
    assert_eq!(forward(&app, &secret, &[]).await.status.as_u16(), 200);
    let refused = forward(&app, &secret, &[]).await;
    refused.expect_error(429, "rate_limited");
    let retry: i64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry), "{retry}");
    assert!(
        refused
            .header("ratelimit")
            .unwrap()
            .starts_with("\"token\";r=0;t=")
    );

    let (spent, _) = limited(&app, &parent, json!({"max_uses": 1})).await;
    assert_eq!(forward(&app, &spent, &[]).await.status.as_u16(), 200);
    forward(&app, &spent, &[])
        .await
        .expect_error(429, "usage_exceeded");

    // The test client is 127.0.0.1, an untrusted peer: its X-Forwarded-For is ignored.
    let (bound, _) = limited(&app, &parent, json!({"allowed_ips": ["203.0.113.0/24"]})).await;
    forward(&app, &bound, &[("x-forwarded-for", "203.0.113.9")])
        .await
        .expect_error(403, "ip_not_allowed");
}

#[tokio::test]
async fn a_token_cannot_make_a_looser_one() {
    let app = spawn_app().await;
    let parent = parent(&app).await;
    let (bounded, _) = limited(
        &app,
        &parent,
        json!({
            "scopes": ["droplet:read", "tokens:create"],
            "allowed_ips": ["127.0.0.0/8"],
            "max_uses": 50,
            "rate_limit": {"requests": 10, "per": "1s"}
        }),
    )
    .await;
    for (extra, why) in [
        (json!({"allowed_ips": ["0.0.0.0/0"]}), "wider addresses"),
        (
            json!({"rate_limit": {"requests": 100, "per": "1s"}}),
            "faster",
        ),
        (json!({"max_uses": 1000}), "more uses"),
        (
            json!({"max_uses": 5, "refill": {"amount": 5, "every": "1d"}}),
            "uses that refill",
        ),
    ] {
        let mut body = json!({"name": "child", "scopes": ["droplet:read"]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        app.post("/v1/tokens", &bounded, &body)
            .await
            .expect_error(400, "invalid_limits");
        let _ = why;
    }
    // What the child leaves unset, it inherits.
    let child = app
        .post(
            "/v1/tokens",
            &bounded,
            &json!({"name": "child", "scopes": ["droplet:read"], "allowed_ips": ["127.0.0.1"]}),
        )
        .await
        .expect(201);
    let token = &child["token"];
    assert_eq!(token["allowed_ips"], json!(["127.0.0.1/32"]));
    assert_eq!(token["rate_limit"], json!({"requests": 10, "per": "1s"}));
    let max = token["max_uses"].as_u64().unwrap();
    assert!(max <= 50, "{token}");
}

#[tokio::test]
async fn patch_sets_limits_and_a_token_cannot_loosen_its_own() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let owner = app
        .token(&alice, &["droplet:read", "tokens:update", "tokens:read"])
        .await
        .secret;
    let target = app.token(&alice, &["droplet:read"]).await;
    assert_eq!(
        reason(&verify_from(&app, &target.secret, None).await),
        "active"
    );
    let path = format!("/v1/tokens/{}", target.id);
    let patched = app
        .patch(
            &path,
            &owner,
            &json!({"allowed_ips": ["192.0.2.0/24"], "max_uses": 1}),
        )
        .await
        .expect(200);
    assert_eq!(patched["token"]["allowed_ips"], json!(["192.0.2.0/24"]));
    assert_eq!(patched["token"]["remaining"], 1);
    // Every cache learns the new limits at once.
    assert_eq!(
        reason(&verify_from(&app, &target.secret, Some("198.51.100.1")).await),
        "ip_not_allowed"
    );
    assert_eq!(
        reason(&verify_from(&app, &target.secret, Some("192.0.2.1")).await),
        "active"
    );
    assert_eq!(
        reason(&verify_from(&app, &target.secret, Some("192.0.2.1")).await),
        "usage_exceeded"
    );
    // `null` removes a limit.
    app.patch(
        &path,
        &owner,
        &json!({"allowed_ips": null, "max_uses": null}),
    )
    .await
    .expect(200);
    assert_eq!(
        reason(&verify_from(&app, &target.secret, None).await),
        "active"
    );

    // A bounded token may tighten itself, never loosen.
    let bounded = app
        .post(
            "/v1/tokens",
            &app.token(&alice, &["droplet:read", "tokens:create", "tokens:update"]).await.secret,
            &json!({"name": "b", "scopes": ["droplet:read", "tokens:update"], "rate_limit": {"requests": 50, "per": "1s"}}),
        )
        .await
        .expect(201);
    let (secret, id) = (
        bounded["secret"].as_str().unwrap(),
        bounded["token"]["id"].as_str().unwrap(),
    );
    let own = format!("/v1/tokens/{id}");
    // Removing it leaves it bound by itself: what it leaves unset it inherits from its maker.
    let kept = app
        .patch(&own, secret, &json!({"rate_limit": null}))
        .await
        .expect(200);
    assert_eq!(
        kept["token"]["rate_limit"],
        json!({"requests": 50, "per": "1s"})
    );
    app.patch(
        &own,
        secret,
        &json!({"rate_limit": {"requests": 500, "per": "1s"}}),
    )
    .await
    .expect_error(400, "invalid_limits");
    let tighter = app
        .patch(
            &own,
            secret,
            &json!({"rate_limit": {"requests": 5, "per": "1s"}}),
        )
        .await
        .expect(200);
    assert_eq!(
        tighter["token"]["rate_limit"],
        json!({"requests": 5, "per": "1s"})
    );
    app.patch(&own, secret, &json!({}))
        .await
        .expect_error(400, "invalid_body");
}
