//! `/v1/users` over HTTP: the platform's backend, holding an admin's token, manages its users and
//! mints tokens for them; who may call each endpoint; deletion; service accounts; external ids in
//! the verification answer and forward-auth.

use crate::helpers::{TestApp, spawn_app};
use keyward_core::{RawSecret, UserName};
use keyward_server::service::{SignIn, UserRequest};
use reqwest::Method;
use serde_json::{Value, json};

/// What the platform's backend holds: every administrative scope.
const BACKEND: &[&str] = &[
    "users:read",
    "users:create",
    "users:update",
    "users:delete",
    "tokens:issue",
];

#[tokio::test]
async fn a_platform_backend_creates_a_user_mints_a_token_and_verify_names_the_external_id() {
    let app = spawn_app().await;
    let root = app.admin("root").await;
    let backend = app.token(&root, BACKEND).await;

    let r = app
        .post(
            "/v1/users",
            &backend.secret,
            &json!({"name": "ada@example.com", "external_id": "4711", "email": "ada@example.com"}),
        )
        .await;
    let user = r.expect(201);
    assert_eq!(user["name"], "ada@example.com");
    assert_eq!(user["kind"], "person");
    assert_eq!(user["external_id"], "4711");
    assert_eq!(user["admin"], false);
    let id = user["id"].as_str().unwrap().to_owned();

    // The platform finds its account by its own id.
    let found = app
        .get("/v1/users?external_id=4711", &backend.secret)
        .await
        .expect(200);
    assert_eq!(found["users"].as_array().unwrap().len(), 1);
    assert_eq!(found["users"][0]["id"], id.as_str());

    // Any scope of the catalog, though the backend's token holds none of them.
    let r = app
        .post(
            &format!("/v1/users/{id}/tokens"),
            &backend.secret,
            &json!({"name": "from the platform", "scopes": ["droplet:read"], "expires": "30d"}),
        )
        .await;
    let issued = r.expect(201);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(issued["token"]["owner"], id.as_str());
    let secret = issued["secret"].as_str().unwrap().to_owned();

    let v = app.verify(&secret, &["droplet:read"]).await;
    assert_eq!(v["active"], true, "{v}");
    assert_eq!(
        v["owner"],
        json!({"id": id, "name": "ada@example.com", "external_id": "4711"})
    );

    let r = app
        .request(Method::GET, "/v1/auth", Some(&secret), None)
        .await;
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(r.header("x-keyward-owner-external-id"), Some("4711"));
    assert_eq!(r.header("x-keyward-owner-id"), Some(id.as_str()));

    // A new external id shows in the very next answer (the cache drops the old owner).
    app.patch(
        &format!("/v1/users/{id}"),
        &backend.secret,
        &json!({"external_id": "4712"}),
    )
    .await
    .expect(200);
    let v = app.verify(&secret, &["droplet:read"]).await;
    assert_eq!(v["owner"]["external_id"], "4712");
}

#[tokio::test]
async fn forward_auth_sends_an_empty_external_id_when_there_is_none() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let token = app.token(&alice, &["droplet:read"]).await;
    let r = app
        .request(Method::GET, "/v1/auth", Some(&token.secret), None)
        .await;
    assert_eq!(r.status.as_u16(), 200);
    // Present and empty: a proxy copying it overwrites whatever the client sent.
    assert_eq!(r.header("x-keyward-owner-external-id"), Some(""));
    let v = app.verify(&token.secret, &[]).await;
    assert_eq!(v["owner"]["external_id"], Value::Null);
}

/// Every endpoint, and the scope it needs.
fn endpoints(user: &str) -> Vec<(Method, String, Option<Value>, &'static str)> {
    vec![
        (
            Method::POST,
            "/v1/users".to_owned(),
            Some(json!({"name": format!("new-{}", rand_suffix())})),
            "users:create",
        ),
        (Method::GET, "/v1/users".to_owned(), None, "users:read"),
        (Method::GET, format!("/v1/users/{user}"), None, "users:read"),
        (
            Method::PATCH,
            format!("/v1/users/{user}"),
            Some(json!({"email": "bob@example.com"})),
            "users:update",
        ),
        (
            Method::POST,
            format!("/v1/users/{user}/tokens"),
            Some(json!({"name": "minted", "scopes": ["droplet:read"]})),
            "tokens:issue",
        ),
        (
            Method::DELETE,
            format!("/v1/users/{user}"),
            None,
            "users:delete",
        ),
    ]
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed).to_string()
}

async fn call(
    app: &TestApp,
    method: &Method,
    path: &str,
    body: Option<&Value>,
    bearer: Option<&str>,
    cookie: Option<&str>,
) -> crate::helpers::Resp {
    match cookie {
        None => app.request(method.clone(), path, bearer, body).await,
        Some(cookie) => {
            let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
            app.raw(
                method.clone(),
                path,
                &[("cookie", cookie), ("content-type", "application/json")],
                body,
            )
            .await
        }
    }
}

/// One kind of caller, and how it is refused (`None`: it is not).
struct Case<'a> {
    who: &'a str,
    bearer: Option<&'a str>,
    cookie: Option<&'a str>,
    refused: Option<(u16, &'a str)>,
}

#[tokio::test]
async fn each_endpoint_answers_each_kind_of_caller_as_documented() {
    let app = spawn_app().await;
    let root = app.admin("root").await;
    let alice = app
        .keyward
        .create_user(
            &keyward_server::Caller::operator("test"),
            UserRequest {
                password: Some(RawSecret::new("correct horse battery staple".to_owned())),
                ..UserRequest::person(UserName::parse("alice").unwrap())
            },
        )
        .await
        .unwrap();
    // A non-admin's token holding every scope it may hold, wildcards included.
    let alices = app.token(&alice, &["tokens:*", "*:read"]).await;
    let SignIn::Ok { secret, .. } = app
        .keyward
        .sign_in(
            "alice",
            RawSecret::new("correct horse battery staple".to_owned()),
            None,
        )
        .await
        .unwrap()
    else {
        panic!("alice could not sign in");
    };
    let cookie = format!("keyward_session={}", secret.expose());

    for (i, (method, _, _, scope)) in endpoints("usr_0").iter().enumerate() {
        // A fresh target each time: the DELETE row removes it.
        let bob = app.user(&format!("bob-{i}")).await;
        let (_, path, body, _) = endpoints(bob.id.as_str()).swap_remove(i);
        let with_scope = app.token(&root, &[scope]).await;
        let others: Vec<&str> = BACKEND.iter().copied().filter(|s| s != scope).collect();
        let without = app.token(&root, &others).await;
        let cases = [
            Case {
                who: "admin's token with the scope",
                bearer: Some(&with_scope.secret),
                cookie: None,
                refused: None,
            },
            Case {
                who: "admin's token without it",
                bearer: Some(&without.secret),
                cookie: None,
                refused: Some((403, "insufficient_scope")),
            },
            Case {
                who: "a non-admin's token",
                bearer: Some(&alices.secret),
                cookie: None,
                refused: Some((403, "insufficient_scope")),
            },
            Case {
                who: "a signed-in non-admin's cookie",
                bearer: None,
                cookie: Some(&cookie),
                refused: Some((401, "unauthenticated")),
            },
            Case {
                who: "no credential",
                bearer: None,
                cookie: None,
                refused: Some((401, "unauthenticated")),
            },
        ];
        for Case {
            who,
            bearer,
            cookie,
            refused,
        } in cases
        {
            let r = call(&app, method, &path, body.as_ref(), bearer, cookie).await;
            let Some((status, code)) = refused else {
                assert!(
                    r.status.is_success(),
                    "{method} {path} by {who}: {} {}",
                    r.status,
                    r.text
                );
                continue;
            };
            assert_eq!(
                r.status.as_u16(),
                status,
                "{method} {path} by {who}: {}",
                r.text
            );
            assert_eq!(r.json()["error"]["code"], code, "{method} {path} by {who}");
            let challenge = r.header("www-authenticate").unwrap_or_default();
            assert!(
                challenge.starts_with("Bearer"),
                "{method} {path} by {who}: {challenge:?}"
            );
            if status == 403 {
                assert!(
                    challenge.contains(&format!("scope=\"{scope}\"")),
                    "{method} {path} by {who}: the challenge names the scope: {challenge}"
                );
            }
        }
    }
}

#[tokio::test]
async fn administrative_scopes_are_only_for_admins() {
    let app = spawn_app().await;
    let root = app.admin("root").await;
    let alice = app.user("alice").await;
    let backend = app.token(&root, BACKEND).await;
    let maker = app.token(&alice, &["tokens:*"]).await;

    // A non-admin asking for one: refused, though `tokens:*` would cover `tokens:issue`.
    for scope in ["users:read", "tokens:issue", "users:*"] {
        app.post(
            "/v1/tokens",
            &maker.secret,
            &json!({"name": "x", "scopes": [scope]}),
        )
        .await
        .expect(403);
    }
    // Minting one for a non-admin: refused; for an admin: allowed.
    app.post(
        &format!("/v1/users/{}/tokens", alice.id),
        &backend.secret,
        &json!({"name": "x", "scopes": ["users:read"]}),
    )
    .await
    .expect_error(403, "forbidden");
    app.post(
        &format!("/v1/users/{}/tokens", root.id),
        &backend.secret,
        &json!({"name": "x", "scopes": ["users:read"]}),
    )
    .await
    .expect(201);

    // A demoted admin's tokens lose their administrative rights at once.
    app.patch(
        &format!("/v1/users/{}", root.id),
        &backend.secret,
        &json!({"admin": false}),
    )
    .await
    .expect_error(409, "invalid_state");
    let other_admin = app.admin("other").await;
    let others = app.token(&other_admin, BACKEND).await;
    app.patch(
        &format!("/v1/users/{}", root.id),
        &others.secret,
        &json!({"admin": false}),
    )
    .await
    .expect(200);
    app.get("/v1/users", &backend.secret)
        .await
        .expect_error(403, "insufficient_scope");
}

#[tokio::test]
async fn users_are_validated_and_conflicts_are_409() {
    let app = spawn_app().await;
    let root = app.admin("root").await;
    let backend = app.token(&root, BACKEND).await;
    let post = |body: Value| {
        let app = &app;
        let secret = backend.secret.clone();
        async move { app.post("/v1/users", &secret, &body).await }
    };
    post(json!({"name": "svc", "kind": "service", "password": "correct horse battery staple"}))
        .await
        .expect_error(400, "invalid_request");
    post(json!({"name": "usr_01ABC"})).await.expect(400);
    post(json!({"name": "Bad Name"})).await.expect(400);
    post(json!({"name": "x", "email": "not an email"}))
        .await
        .expect(400);
    post(json!({"name": "x", "external_id": "tab\there"}))
        .await
        .expect(400);
    post(json!({"name": "x", "unknown": 1})).await.expect(400);
    post(json!({"name": "ci-bot", "kind": "service", "external_id": "svc-1"}))
        .await
        .expect(201);
    post(json!({"name": "ci-bot"})).await.expect(409);
    post(json!({"name": "other", "external_id": "svc-1"}))
        .await
        .expect(409);
    app.patch(
        &format!("/v1/users/{}", root.id),
        &backend.secret,
        &json!({}),
    )
    .await
    .expect(400);
    app.get("/v1/users?before=nope", &backend.secret)
        .await
        .expect(400);
    app.get("/v1/users/usr_01J00000000000000000000000", &backend.secret)
        .await
        .expect(404);
}

#[tokio::test]
async fn deleting_a_user_refuses_their_tokens_at_once_and_frees_the_name() {
    let app = spawn_app().await;
    let root = app.admin("root").await;
    let backend = app.token(&root, BACKEND).await;
    let alice = app.user("alice").await;
    let token = app.token(&alice, &["droplet:read"]).await;
    assert_eq!(app.verify(&token.secret, &[]).await["active"], true);

    let r = app
        .delete(&format!("/v1/users/{}", alice.id), &backend.secret, None)
        .await;
    assert_eq!(r.status.as_u16(), 204, "{}", r.text);
    let v = app.verify(&token.secret, &[]).await;
    assert_eq!(v["active"], false);
    assert_eq!(v["reason"], "revoked");
    let record = app
        .keyward
        .get_token(
            &keyward_server::Caller::operator("test"),
            &keyward_core::TokenId::parse(&token.id).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(record.revoke_reason.as_deref(), Some("owner deleted"));
    app.get(&format!("/v1/users/{}", alice.id), &backend.secret)
        .await
        .expect(404);
    app.delete(&format!("/v1/users/{}", alice.id), &backend.secret, None)
        .await
        .expect(404);
    // The name is free again; the new alice is someone else.
    let again = app
        .post("/v1/users", &backend.secret, &json!({"name": "alice"}))
        .await
        .expect(201);
    assert_ne!(again["id"], alice.id.as_str());
    // Nobody deletes themselves.
    app.delete(&format!("/v1/users/{}", root.id), &backend.secret, None)
        .await
        .expect_error(409, "invalid_state");
}

#[tokio::test]
async fn a_service_account_cannot_sign_in_and_its_tokens_work() {
    let app = spawn_app().await;
    let root = app.admin("root").await;
    let backend = app.token(&root, BACKEND).await;
    let robot = app
        .post(
            "/v1/users",
            &backend.secret,
            &json!({"name": "deploy-bot", "kind": "service"}),
        )
        .await
        .expect(201);
    assert_eq!(robot["kind"], "service");
    let id = robot["id"].as_str().unwrap();
    let issued = app
        .post(
            &format!("/v1/users/{id}/tokens"),
            &backend.secret,
            &json!({"name": "deploys", "scopes": ["droplet:*"]}),
        )
        .await
        .expect(201);
    let secret = issued["secret"].as_str().unwrap();
    assert_eq!(app.verify(secret, &["droplet:read"]).await["active"], true);
    // No password, so no sign-in, whatever is typed.
    let answer = app
        .keyward
        .sign_in("deploy-bot", RawSecret::new(String::new()), None)
        .await
        .unwrap();
    assert!(!matches!(answer, SignIn::Ok { .. }));
    let caller = keyward_server::Caller::operator("test");
    let robot_id = keyward_core::UserId::parse(id).unwrap();
    assert!(
        app.keyward
            .set_password(
                &caller,
                &robot_id,
                Some(RawSecret::new("correct horse battery staple".to_owned()))
            )
            .await
            .is_err()
    );
}
