//! Incident response: bulk revocation (`POST /v1/tokens/revoke`) and leaked secrets reported by
//! GitHub's secret scanning (signed reports, checked against keys served here exactly as GitHub
//! serves them), GitLab's token revocation API and in-house scanners (`POST /v1/leaks`).

use keyward_core::AuditKind;
use keyward_server::Settings;
use keyward_server::service::{
    Action, BulkRevokeRequest, GithubLeakSettings, GitlabLeakSettings, LeakSettings,
    PresharedToken, ServiceError,
};
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey as _, LineEnding};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::helpers::{TestApp, contains, spawn_app, spawn_app_with};

/// Whether `secret` still verifies, and if not why.
async fn verdict(app: &TestApp, secret: &str) -> String {
    app.verdict(secret, &[]).await
}

#[tokio::test]
async fn bulk_revocation_lists_then_revokes_exactly_that_and_only_for_an_admin() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let root = app.admin("root").await;
    let a1 = app.token(&alice, &["droplet:read"]).await;
    let a2 = app.token(&alice, &["droplet:*"]).await;
    let a3 = app.token(&alice, &["volume:read"]).await;
    let b1 = app.token(&bob, &["droplet:read"]).await;
    let admin = app.token(&root, &["tokens:revoke-any"]).await;
    let admin_without = app.token(&root, &["tokens:read"]).await;
    // A non-admin's wildcard does not grant the administrative scope.
    let not_admin = app.token(&bob, &["tokens:*"]).await;
    let path = "/v1/tokens/revoke";
    let alices = json!({"user": "alice"});

    let before = app.snapshot().await;
    app.post(path, &not_admin.secret, &alices)
        .await
        .expect_error(403, "insufficient_scope");
    app.post(path, &admin_without.secret, &alices)
        .await
        .expect_error(403, "insufficient_scope");
    app.request(Method::POST, path, None, Some(&alices))
        .await
        .expect_error(401, "unauthenticated");
    // Never everything by accident: no condition needs `all`.
    app.post(path, &admin.secret, &json!({})).await.expect(400);
    app.post(path, &admin.secret, &json!({"dry_run": false}))
        .await
        .expect(400);
    app.post(path, &admin.secret, &json!({"user": "nobody"}))
        .await
        .expect_error(404, "not_found");
    app.post(
        path,
        &admin.secret,
        &json!({"user": "alice", "scope": "dropet:read"}),
    )
    .await
    .expect(400);
    let bad_time = app
        .post(
            path,
            &admin.secret,
            &json!({"user": "alice", "created_before": "yesterday"}),
        )
        .await;
    assert!(bad_time.status.is_client_error(), "{bad_time:?}");
    assert_eq!(app.snapshot().await, before, "refusals write nothing");

    // Every condition narrows; a user is named by name or id.
    let dry = |body: Value| {
        let mut body = body;
        body["dry_run"] = json!(true);
        body
    };
    let ids = |answer: &Value| -> Vec<String> {
        answer["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| id.as_str().unwrap().to_owned())
            .collect()
    };
    let scoped = app
        .post(
            path,
            &admin.secret,
            &dry(json!({"user": alice.id.as_str(), "scope": "droplet:read"})),
        )
        .await
        .expect(200);
    let mut expected = vec![a1.id.clone(), a2.id.clone()];
    expected.sort();
    assert_eq!(ids(&scoped), expected);
    assert_eq!(scoped["count"], 2);
    let everything = app
        .post(path, &admin.secret, &dry(json!({"all": true})))
        .await
        .expect(200);
    assert_eq!(everything["count"], 7);
    assert_eq!(app.snapshot().await, before, "a dry run writes nothing");

    // The dry run lists exactly what the real run then revokes.
    let listed = app
        .post(path, &admin.secret, &dry(alices.clone()))
        .await
        .expect(200);
    let listed = ids(&listed);
    assert_eq!(listed.len(), 3);
    let done = app.post(path, &admin.secret, &alices).await.expect(200);
    assert_eq!(done, json!({"count": 3}));
    for secret in [&a1.secret, &a2.secret, &a3.secret] {
        assert_eq!(verdict(&app, secret).await, "revoked");
    }
    assert_eq!(verdict(&app, &b1.secret).await, "active");
    let mut revoked: Vec<String> = app
        .audit_trail()
        .await
        .iter()
        .filter(|e| e.event.kind == AuditKind::TokenRevoked)
        .map(|e| {
            assert_eq!(e.event.subject_user.as_ref(), Some(&alice.id));
            assert_eq!(e.event.detail.as_deref(), Some("bulk revocation"));
            e.event.token_id.as_ref().unwrap().as_str().to_owned()
        })
        .collect();
    revoked.sort();
    assert_eq!(revoked, listed, "one audit event per token revoked");
    // Nothing left to revoke: a second run changes nothing.
    assert_eq!(
        app.post(path, &admin.secret, &alices).await.expect(200),
        json!({"count": 0})
    );
}

/// A P-256 key pair made from a seed (the test needs no randomness), and its public key as
/// GitHub publishes it.
fn key_pair(seed: &str) -> (SigningKey, String) {
    let scalar = Sha256::digest(seed.as_bytes());
    let key = SigningKey::from_slice(&scalar).unwrap();
    let pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    (key, pem)
}

fn sign(key: &SigningKey, body: &[u8]) -> String {
    use base64::Engine as _;
    let signature: Signature = key.sign(body);
    base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
}

/// Serves `{"public_keys": [...]}` at `/keys` exactly as GitHub does, counting the fetches.
async fn serve_keys(keys: Vec<(&str, String)>) -> (String, Arc<AtomicUsize>) {
    let fetches = Arc::new(AtomicUsize::new(0));
    let document = json!({
        "public_keys": keys
            .iter()
            .map(|(id, pem)| json!({"key_identifier": id, "key": pem, "is_current": true}))
            .collect::<Vec<_>>()
    });
    let counted = Arc::clone(&fetches);
    let router = axum::Router::new().route(
        "/keys",
        axum::routing::get(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            let document = document.clone();
            async move { axum::Json(document) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/keys", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, fetches)
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn a_signed_github_report_revokes_the_leaked_token_within_the_request() {
    let (github, github_pem) = key_pair("github");
    let (stranger, _) = key_pair("someone else");
    let (url, fetches) = serve_keys(vec![("github-key-1", github_pem)]).await;
    let app = spawn_app_with(Settings {
        leaks: LeakSettings {
            github: Some(GithubLeakSettings { keys_url: url }),
            gitlab: None,
        },
        ..Settings::default()
    })
    .await;
    let alice = app.user("alice").await;
    let leaked = app.token(&alice, &["droplet:read"]).await;
    let kept = app.token(&alice, &["droplet:read"]).await;
    // The leaked secret with its last character changed: its checksum no longer holds.
    let (head, last) = leaked.secret.split_at(leaked.secret.len() - 1);
    let forged = format!("{head}{}", if last == "x" { "y" } else { "x" });
    let report = json!([
        {"token": leaked.secret, "type": "keyward_token", "url": "https://github.com/octo/repo/blob/abc/config.yml", "source": "content"},
        {"token": forged, "type": "keyward_token", "url": "https://github.com/octo/repo/blob/abc/other.yml", "source": "content"},
    ]);
    let body = serde_json::to_vec(&report).unwrap();
    let send = |key_id: &str, signature: &str, body: Vec<u8>| {
        let headers = [
            ("content-type", "application/json".to_owned()),
            ("github-public-key-identifier", key_id.to_owned()),
            ("github-public-key-signature", signature.to_owned()),
        ];
        let app = &app;
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            app.raw(Method::POST, "/v1/leaks/github", &headers, body)
                .await
        }
    };

    let before = app.snapshot().await;
    // A signature by a key GitHub does not publish under that name.
    send("github-key-1", &sign(&stranger, &body), body.clone())
        .await
        .expect_error(401, "unauthenticated");
    // A key GitHub does not publish at all.
    send("github-key-2", &sign(&stranger, &body), body.clone())
        .await
        .expect_error(401, "unauthenticated");
    // The body changed after signing.
    let mut modified = body.clone();
    let at = modified.iter().position(|b| *b == b'o').unwrap();
    modified[at] = b'0';
    send("github-key-1", &sign(&github, &body), modified)
        .await
        .expect_error(401, "unauthenticated");
    // Not a signature at all, or none.
    send("github-key-1", "bm90IGEgc2lnbmF0dXJl", body.clone())
        .await
        .expect_error(401, "unauthenticated");
    app.raw(
        Method::POST,
        "/v1/leaks/github",
        &[("content-type", "application/json")],
        body.clone(),
    )
    .await
    .expect_error(401, "unauthenticated");
    assert_eq!(
        app.snapshot().await,
        before,
        "a refused report writes nothing"
    );
    assert_eq!(verdict(&app, &leaked.secret).await, "active");
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "unknown keys do not make keyward fetch GitHub's keys again and again"
    );

    // Signed by GitHub: revoked within the request, with GitHub's feedback.
    let answer = send("github-key-1", &sign(&github, &body), body.clone())
        .await
        .expect(200);
    assert_eq!(
        answer,
        json!([
            {"token_hash": sha256_hex(&leaked.secret), "token_type": "keyward_token", "label": "true_positive"},
            {"token_hash": sha256_hex(&forged), "token_type": "keyward_token", "label": "false_positive"},
        ])
    );
    assert_eq!(verdict(&app, &leaked.secret).await, "revoked");
    assert_eq!(verdict(&app, &kept.secret).await, "active");
    let trail = app.audit_trail().await;
    let leak = trail
        .iter()
        .find(|e| e.event.kind == AuditKind::TokenLeaked)
        .expect("a token.leaked event");
    assert_eq!(leak.event.token_id.as_ref().unwrap().as_str(), leaked.id);
    assert_eq!(leak.event.subject_user.as_ref(), Some(&alice.id));
    assert_eq!(leak.event.actor.label, "GitHub secret scanning");
    let detail = leak.event.detail.as_deref().unwrap();
    assert!(
        detail.contains("https://github.com/octo/repo/blob/abc/config.yml"),
        "{detail}"
    );
    assert!(detail.contains("content"), "{detail}");
    let revocation = trail
        .iter()
        .find(|e| e.event.kind == AuditKind::TokenRevoked)
        .expect("a token.revoked event");
    assert_eq!(revocation.event.detail.as_deref(), Some("leaked"));
    let token = app
        .get(
            &format!("/v1/tokens/{}", leaked.id),
            &app.token(&alice, &["tokens:read"]).await.secret,
        )
        .await
        .expect(200);
    assert_eq!(token["token"]["revoke_reason"], "leaked", "{token}");

    // The same report again is answered alike and writes nothing.
    let after = app.snapshot().await;
    let again = send("github-key-1", &sign(&github, &body), body.clone())
        .await
        .expect(200);
    assert_eq!(again, answer);
    assert_eq!(app.snapshot().await, after);

    // The leaked plaintext is nowhere in the database.
    for (name, bytes) in app.db_files() {
        assert!(!contains(&bytes, leaked.secret.as_bytes()), "{name}");
        assert!(!contains(&bytes, forged.as_bytes()), "{name}");
    }
}

#[tokio::test]
async fn partner_endpoints_are_not_found_unless_configured() {
    let app = spawn_app().await;
    app.raw(
        Method::POST,
        "/v1/leaks/github",
        &[
            ("github-public-key-identifier", "k"),
            ("github-public-key-signature", "s"),
        ],
        b"[]".to_vec(),
    )
    .await
    .expect_error(404, "not_found");
    app.raw(
        Method::GET,
        "/v1/revocable_token_types",
        &[("authorization", "anything-at-all-here-0123456789")],
        Vec::new(),
    )
    .await
    .expect_error(404, "not_found");
    app.raw(
        Method::POST,
        "/v1/revoke_tokens",
        &[("authorization", "anything-at-all-here-0123456789")],
        b"[]".to_vec(),
    )
    .await
    .expect_error(404, "not_found");
}

const GITLAB_TOKEN: &str = "gitlab-preshared-0123456789abcdef";

/// An app that takes GitLab's reports, sent with [`GITLAB_TOKEN`].
async fn gitlab_app() -> TestApp {
    spawn_app_with(Settings {
        leaks: LeakSettings {
            github: None,
            gitlab: Some(GitlabLeakSettings {
                token: PresharedToken::new(GITLAB_TOKEN.to_owned()),
            }),
        },
        ..Settings::default()
    })
    .await
}

#[tokio::test]
async fn gitlab_revokes_with_its_preshared_token_as_gitlab_documents() {
    let app = gitlab_app().await;
    let alice = app.user("alice").await;
    let leaked = app.token(&alice, &["droplet:read"]).await;
    let types = "/v1/revocable_token_types";
    let revoke = "/v1/revoke_tokens";

    // The token alone is the whole header: no scheme, nothing else.
    let bearer = format!("Bearer {GITLAB_TOKEN}");
    for refused in ["", "wrong-token-0123456789abcdefgh", bearer.as_str()] {
        let headers: Vec<(&str, &str)> = if refused.is_empty() {
            vec![]
        } else {
            vec![("authorization", refused)]
        };
        app.raw(Method::GET, types, &headers, Vec::new())
            .await
            .expect_error(401, "unauthenticated");
    }
    let answer = app
        .raw(
            Method::GET,
            types,
            &[("authorization", GITLAB_TOKEN)],
            Vec::new(),
        )
        .await
        .expect(200);
    assert_eq!(answer, json!({"types": ["gitleaks_rule_id_keyward_token"]}));

    let body = serde_json::to_vec(&json!([
        {"type": "gitleaks_rule_id_keyward_token", "token": leaked.secret, "location": "https://gitlab.example.com/group/project/-/blob/main/.env"},
        {"type": "gitleaks_rule_id_keyward_token", "token": "kwp_not_a_token", "location": "https://gitlab.example.com/x"},
    ]))
    .unwrap();
    let before = app.snapshot().await;
    app.raw(
        Method::POST,
        revoke,
        &[("content-type", "application/json")],
        body.clone(),
    )
    .await
    .expect_error(401, "unauthenticated");
    for (malformed, code) in [
        (&b"{\"token\": 1}"[..], "invalid_body"),
        (b"not json", "malformed_json"),
        (b"[{\"type\": \"x\"}]", "invalid_body"),
    ] {
        app.raw(
            Method::POST,
            revoke,
            &[
                ("authorization", GITLAB_TOKEN),
                ("content-type", "application/json"),
            ],
            malformed.to_vec(),
        )
        .await
        .expect_error(400, code);
    }
    assert_eq!(app.snapshot().await, before);
    let done = app
        .raw(
            Method::POST,
            revoke,
            &[
                ("authorization", GITLAB_TOKEN),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await;
    assert_eq!(done.status.as_u16(), 204, "{done:?}");
    assert_eq!(verdict(&app, &leaked.secret).await, "revoked");
    let leak = app
        .audit_trail()
        .await
        .into_iter()
        .find(|e| e.event.kind == AuditKind::TokenLeaked)
        .unwrap();
    assert_eq!(leak.event.actor.label, "GitLab");
    assert!(leak.event.detail.unwrap().contains("/-/blob/main/.env"));
}

#[tokio::test]
async fn an_inhouse_scanner_reports_with_leaks_report() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let scanner = app.token(&alice, &["leaks:report"]).await;
    let no_scope = app.token(&alice, &["tokens:*"]).await;
    let bobs = app.token(&bob, &["droplet:read"]).await;
    let body = json!({"tokens": [bobs.secret, "kwp_nothing"], "source": "ci secret scan"});

    app.post("/v1/leaks", &no_scope.secret, &body)
        .await
        .expect_error(403, "insufficient_scope");
    assert_eq!(verdict(&app, &bobs.secret).await, "active");
    // Holding the secret is the right: bob's token is revoked by alice's scanner.
    let answer = app
        .post("/v1/leaks", &scanner.secret, &body)
        .await
        .expect(200);
    assert_eq!(answer, json!({"found": 1, "revoked": 1}));
    assert_eq!(verdict(&app, &bobs.secret).await, "revoked");
    let again = app
        .post("/v1/leaks", &scanner.secret, &body)
        .await
        .expect(200);
    assert_eq!(again, json!({"found": 1, "revoked": 0}));
    let leak = app
        .audit_trail()
        .await
        .into_iter()
        .find(|e| e.event.kind == AuditKind::TokenLeaked)
        .unwrap();
    assert_eq!(leak.event.detail.as_deref(), Some("source: ci secret scan"));
    assert_eq!(leak.event.subject_user.as_ref(), Some(&bob.id));
}

#[tokio::test]
async fn a_leak_reporter_may_report_leaks_and_nothing_else() {
    let app = gitlab_app().await;
    let kw = &app.keyward;
    let alice = app.user("alice").await;
    let caller = kw
        .gitlab_reporter(Some(GITLAB_TOKEN.as_bytes()), None)
        .unwrap();
    assert!(matches!(
        kw.list_tokens(&caller, Some(&alice.id), None, 10).await,
        Err(ServiceError::Forbidden(_))
    ));
    let bulk = BulkRevokeRequest {
        all: true,
        ..BulkRevokeRequest::default()
    };
    assert!(matches!(
        kw.bulk_revoke_preview(&caller, &bulk).await,
        Err(ServiceError::Forbidden(_))
    ));
    assert!(matches!(
        kw.audit_events(&caller, None, None, 10).await,
        Err(ServiceError::Forbidden(_))
    ));
    assert!(kw.report_leaks(&caller, &[]).await.is_ok());
    // The rule itself, for every action there is: reporting leaks and nothing else, and no
    // one's records within reach.
    for action in Action::ALL {
        assert_eq!(
            caller.authorize(action).is_ok(),
            action == Action::ReportLeaks,
            "{action:?}"
        );
    }
    assert!(matches!(
        caller.reach(Some(&alice.id)),
        Err(ServiceError::Forbidden(_))
    ));
}
