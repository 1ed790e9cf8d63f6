//! The client's address behind a trusted proxy (`trusted_proxies`): what the audit trail and a
//! token's last use record, over a real listener (the peer is this test, 127.0.0.1).

use crate::helpers::{Serving, TestApp, spawn_app, spawn_app_serving};
use keyward_core::IpRange;
use keyward_server::Settings;
use reqwest::Method;
use serde_json::json;

const MANAGE: &[&str] = &["tokens:*", "audit:read"];

/// A server that believes the forwarding headers of its loopback peers.
async fn behind_loopback_proxy() -> TestApp {
    spawn_app_serving(
        Settings::default(),
        Serving {
            trusted_proxies: vec![IpRange::parse("127.0.0.1/32").unwrap()],
            ..Serving::default()
        },
    )
    .await
}

/// Creates a token over the API with these extra headers; the address its `token.created`
/// audit entry records.
async fn recorded_ip(app: &TestApp, bearer: &str, headers: &[(&str, &str)]) -> String {
    let auth = format!("Bearer {bearer}");
    let mut all = headers.to_vec();
    all.push(("authorization", &auth));
    all.push(("content-type", "application/json"));
    let body = json!({"name": "from afar", "scopes": ["tokens:read"]});
    let created = app
        .raw(
            Method::POST,
            "/v1/tokens",
            &all,
            body.to_string().into_bytes(),
        )
        .await
        .expect(201);
    let id = created["token"]["id"].as_str().unwrap();
    let audit = app.get("/v1/audit", bearer).await.expect(200);
    let entry = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "token.created" && e["token_id"] == id)
        .unwrap_or_else(|| panic!("no token.created for {id}: {audit}"));
    entry["ip"].as_str().unwrap_or("(none)").to_owned()
}

#[tokio::test]
async fn a_trusted_proxys_forwarding_headers_name_the_client() {
    let app = behind_loopback_proxy().await;
    let alice = app.user("alice").await;
    let admin = app.token(&alice, MANAGE).await;

    for (headers, expected) in [
        (&[("x-forwarded-for", "203.0.113.9")][..], "203.0.113.9"),
        (&[("forwarded", "for=\"[2001:db8::7]\"")], "2001:db8::7"),
        (
            &[("forwarded", "for=\"[2001:db8::7]:4711\";proto=https")],
            "2001:db8::7",
        ),
        (&[("x-real-ip", "198.51.100.20")], "198.51.100.20"),
        // What the client wrote left of the address the proxy appended is not read.
        (
            &[("x-forwarded-for", "192.0.2.66, 203.0.113.9")],
            "203.0.113.9",
        ),
        // A request from the proxy itself.
        (&[], "127.0.0.1"),
    ] {
        assert_eq!(
            recorded_ip(&app, &admin.secret, headers).await,
            expected,
            "{headers:?}"
        );
    }
    // A hop that does not say who it forwarded for: the client is unknown, not guessed.
    assert_eq!(
        recorded_ip(&app, &admin.secret, &[("forwarded", "for=unknown")]).await,
        "(none)"
    );
}

#[tokio::test]
async fn without_trusted_proxies_the_headers_change_nothing() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let admin = app.token(&alice, MANAGE).await;
    for headers in [
        &[("x-forwarded-for", "203.0.113.9")][..],
        &[("forwarded", "for=\"[2001:db8::7]\"")],
        &[("x-real-ip", "198.51.100.20")],
        &[("forwarded", "for=unknown")],
    ] {
        assert_eq!(
            recorded_ip(&app, &admin.secret, headers).await,
            "127.0.0.1",
            "{headers:?}"
        );
    }
}

#[tokio::test]
async fn forward_auth_records_the_forwarded_client_as_the_tokens_last_use() {
    let app = behind_loopback_proxy().await;
    let alice = app.user("alice").await;
    let admin = app.token(&alice, &["tokens:read"]).await;
    let t = app.token(&alice, &["droplet:read"]).await;
    let bearer = format!("Bearer {}", t.secret);
    let r = app
        .raw(
            Method::GET,
            "/v1/auth",
            &[
                ("authorization", &bearer),
                ("x-keyward-scope", "droplet:read"),
                ("x-forwarded-for", "203.0.113.44"),
            ],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    app.keyward.flush_usage().await.unwrap();
    let got = app
        .get(&format!("/v1/tokens/{}", t.id), &admin.secret)
        .await
        .expect(200);
    assert_eq!(got["token"]["last_used_ip"], "203.0.113.44", "{got}");
}
