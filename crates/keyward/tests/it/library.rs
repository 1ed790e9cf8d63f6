//! The library face: the example API (`examples/protected_api.rs`, compiled into this test
//! binary) behind `require_scope`, with the in-process `Verifier` and with `RemoteVerifier`
//! asking a real `keyward serve`.

use crate::helpers::{Server, add_user, cli, create_token};
use crate::protected_api;
use keyward::verifier::TokenVerifier;
use keyward::{Config, Env, Flags, RemoteVerifier, Verifier};
use std::path::Path;
use std::time::Duration;

/// Serves `app` on an ephemeral port; returns its base URL.
async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

struct Call {
    status: u16,
    challenge: Option<String>,
    text: String,
}

async fn call(base: &str, method: reqwest::Method, token: Option<&str>) -> Call {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut req = client.request(method, format!("{base}/droplets"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    Call {
        status: resp.status().as_u16(),
        challenge: resp
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned()),
        text: resp.text().await.unwrap(),
    }
}

/// valid → 200 (the handler sees the identity), wrong scope → 403, no token → 401, each
/// refusal with its RFC 6750 challenge; then a revocation is refused.
async fn check_example_api<V: TokenVerifier + Clone>(verifier: &V, dir: &Path) {
    let base = serve(protected_api::router(verifier).unwrap()).await;
    let (reader, _) = create_token(dir, "alice", "reader", &["droplet:read"]);
    let (writer, _) = create_token(dir, "alice", "writer", &["droplet:create"]);

    let ok = call(&base, reqwest::Method::GET, Some(&reader.secret)).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(
        ok.text,
        format!("droplets of alice (token {})\n", reader.id)
    );
    let created = call(&base, reqwest::Method::POST, Some(&writer.secret)).await;
    assert_eq!(created.status, 201, "{}", created.text);

    let wrong = call(&base, reqwest::Method::POST, Some(&reader.secret)).await;
    assert_eq!(wrong.status, 403, "{}", wrong.text);
    assert_eq!(
        wrong.challenge.as_deref(),
        Some(
            r#"Bearer realm="keyward", error="insufficient_scope", error_description="this token lacks the scope droplet:create", scope="droplet:create""#
        )
    );
    let body: serde_json::Value = serde_json::from_str(&wrong.text).unwrap();
    assert_eq!(body["error"]["code"], "insufficient_scope");

    let none = call(&base, reqwest::Method::GET, None).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.challenge.as_deref(), Some(r#"Bearer realm="keyward""#));

    let garbage = call(&base, reqwest::Method::GET, Some("kwp_garbage")).await;
    assert_eq!(garbage.status, 401);
    assert!(
        garbage
            .challenge
            .unwrap()
            .contains(r#"error="invalid_token""#)
    );

    cli(dir, &["token", "revoke", &reader.id], None).ok();
    let revoked = call(&base, reqwest::Method::GET, Some(&reader.secret)).await;
    assert_eq!(revoked.status, 401, "{}", revoked.text);
    assert!(revoked.challenge.unwrap().contains("revoked"));
}

#[tokio::test]
async fn the_example_api_with_the_in_process_verifier() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    add_user(&dir, "alice");
    let flags = Flags {
        data_dir: Some(dir.clone()),
        ..Flags::default()
    };
    let config = Config::load_from(&Env::from_pairs::<&str, &str>([]), &flags).unwrap();
    let verifier = Verifier::new(keyward::open(&config).await.unwrap());
    check_example_api(&verifier, &dir).await;
}

#[tokio::test]
async fn the_example_api_with_the_remote_verifier() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start(&dir, &[]);
    add_user(&dir, "alice");
    let uncached = RemoteVerifier::with_ttl(&server.base, Duration::ZERO).unwrap();
    check_example_api(&uncached, &dir).await;

    // The cache's documented trade-off: a positive answer is trusted for its TTL, even past a
    // revocation; refusals are never cached.
    let cached = RemoteVerifier::with_ttl(&server.base, Duration::from_secs(3600)).unwrap();
    let base = serve(protected_api::router(&cached).unwrap()).await;
    let (t, _) = create_token(&dir, "alice", "cached", &["droplet:read"]);
    let wanted = keyward::Scopes::parse(&["droplet:read"]).unwrap();
    assert!(cached.verify("kwp_garbage", &wanted).await.is_err());
    assert_eq!(
        call(&base, reqwest::Method::GET, Some(&t.secret))
            .await
            .status,
        200
    );
    // The cached identity still carries the token's scopes: a route needing more is refused
    // without asking the server.
    assert_eq!(
        call(&base, reqwest::Method::POST, Some(&t.secret))
            .await
            .status,
        403
    );
    cli(&dir, &["token", "revoke", &t.id], None).ok();
    assert_eq!(
        call(&base, reqwest::Method::GET, Some(&t.secret))
            .await
            .status,
        200
    );
    assert_eq!(
        uncached.verify(&t.secret, &wanted).await,
        Err(keyward::VerifyError::Unauthenticated(Some(
            keyward::InactiveReason::Revoked
        )))
    );
    drop(server);
}
