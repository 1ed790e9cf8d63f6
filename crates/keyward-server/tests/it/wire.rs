//! The wire format, pinned: insta snapshots of the served `/openapi.json` and of every route's
//! answers (success and the main errors), with ids, secrets, hints and times redacted. Any change
//! to an answer or to the document fails here and shows as a `.snap` diff in review
//! (`cargo insta review` accepts one; under `CI=true` a mismatch always fails).

use crate::helpers::{Resp, TestApp, spawn_app};
use insta::internals::Content;
use reqwest::Method;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value, json};

/// The headers an answer's contract includes; others (date, length) vary or say nothing.
const HEADERS: &[&str] = &[
    "content-type",
    "cache-control",
    "pragma",
    "retry-after",
    "www-authenticate",
    "x-keyward-token-id",
    "x-keyward-owner",
    "x-keyward-owner-id",
    "x-keyward-owner-external-id",
    "x-keyward-scopes",
    "x-keyward-token-expires",
];

/// JSON that keeps its members in the order they were sent (`serde_json::Value` sorts them), so
/// a snapshot shows a change of order too.
enum Ordered {
    Plain(Value),
    Array(Vec<Ordered>),
    Object(Vec<(String, Ordered)>),
}

impl Serialize for Ordered {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Plain(v) => v.serialize(s),
            Self::Array(items) => s.collect_seq(items),
            Self::Object(members) => {
                let mut map = s.serialize_map(Some(members.len()))?;
                for (k, v) in members {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E>(self) -> Result<Ordered, E> {
                Ok(Ordered::Plain(Value::Null))
            }
            fn visit_bool<E>(self, b: bool) -> Result<Ordered, E> {
                Ok(Ordered::Plain(Value::from(b)))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Ordered, E> {
                Ok(Ordered::Plain(Value::from(n)))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Ordered, E> {
                Ok(Ordered::Plain(Value::from(n)))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Ordered, E> {
                Ok(Ordered::Plain(Value::from(n)))
            }
            fn visit_str<E>(self, text: &str) -> Result<Ordered, E> {
                Ok(Ordered::Plain(Value::from(text)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Ordered, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Ordered::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry()? {
                    members.push(member);
                }
                Ok(Ordered::Object(members))
            }
        }
        d.deserialize_any(V)
    }
}

/// An answer as a snapshot sees it: status, the contract's headers, the body (members in the
/// order sent).
fn answer(r: &Resp) -> Ordered {
    let mut headers = Map::new();
    for name in HEADERS {
        let values: Vec<Value> = r
            .headers
            .get_all(*name)
            .iter()
            .map(|v| Value::from(v.to_str().unwrap()))
            .collect();
        match values.len() {
            0 => {}
            1 => {
                headers.insert((*name).to_owned(), values[0].clone());
            }
            _ => {
                headers.insert((*name).to_owned(), Value::Array(values));
            }
        }
    }
    let json = r
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/json"));
    let body = match (r.text.is_empty(), json) {
        (true, _) => Ordered::Plain(Value::Null),
        (false, true) => serde_json::from_str(&r.text).unwrap(),
        (false, false) => Ordered::Plain(Value::from(r.text.as_str())),
    };
    Ordered::Object(vec![
        (
            "status".to_owned(),
            Ordered::Plain(r.status.as_u16().into()),
        ),
        ("headers".to_owned(), Ordered::Plain(Value::Object(headers))),
        ("body".to_owned(), body),
    ])
}

/// `[label]` for a string (which must look like what it stands for), `null` kept as is.
fn redact_string(label: &'static str, check: fn(&str) -> bool) -> insta::internals::Redaction {
    insta::dynamic_redaction(move |value, path| match &value {
        Content::None | Content::Unit => value,
        Content::Some(inner) if matches!(**inner, Content::None) => value,
        _ => {
            let text = value
                .as_str()
                .or_else(|| match &value {
                    Content::Some(inner) => inner.as_str(),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("{path}: not a string: {value:?}"));
            assert!(check(text), "{path}: {text:?} is not a {label}");
            Content::from(label)
        }
    })
}

fn is_rfc3339(text: &str) -> bool {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).is_ok()
}

fn is_id(text: &str) -> bool {
    text.starts_with("tok_") || text.starts_with("usr_") || text.starts_with("evt_")
}

/// Snapshots named without the module path.
fn plain_settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_prepend_module_to_snapshot(false);
    s
}

/// The redactions every answer gets: whatever differs between runs.
fn settings() -> insta::Settings {
    let mut s = plain_settings();
    let ids = [
        ".**.id",
        ".**.owner",
        ".**.token_id",
        ".**.jti",
        ".**.sub",
        ".**.subject_user",
        ".**.user",
        ".**.token",
        ".**.next",
        ".**.user_id",
        ".**.event_id",
        ".**.ids[]",
        ".headers[\"x-keyward-token-id\"]",
        ".headers[\"x-keyward-owner-id\"]",
    ];
    for selector in ids {
        // `owner` and `token` are objects in some answers: only their string form is an id.
        s.add_redaction(
            selector,
            insta::dynamic_redaction(|value, path| {
                if value.as_str().is_some_and(is_id) {
                    Content::from("[id]")
                } else {
                    let _ = path;
                    value
                }
            }),
        );
    }
    for selector in [
        ".**.created_at",
        ".**.expires_at",
        ".**.regenerated_at",
        ".**.last_used_at",
        ".**.revoked_at",
        ".**.disabled_at",
        ".**.at",
        ".**.timestamp",
        ".**.next_attempt_at",
        ".**.last_attempt_at",
        ".**.finished_at",
    ] {
        s.add_redaction(selector, redact_string("[time]", is_rfc3339));
    }
    for selector in [".**.iat", ".**.exp"] {
        s.add_redaction(
            selector,
            insta::dynamic_redaction(|value, path| {
                assert!(value.as_i64().is_some(), "{path}: not seconds: {value:?}");
                Content::from("[unix time]")
            }),
        );
    }
    s.add_redaction(
        ".**.secret",
        redact_string("[secret]", |t| t.starts_with("kw")),
    );
    s.add_redaction(".**.hint", redact_string("[hint]", |t| t.starts_with("kw")));
    // Labels and `revoked_by` name the acting token by id.
    for selector in [".**.label", ".**.revoked_by"] {
        s.add_redaction(selector, redact_string("[actor]", |t| !t.is_empty()));
    }
    s
}

/// Snapshots an answer under `name`.
#[track_caller]
fn assert_answer(name: &str, r: &Resp) {
    let value = answer(r);
    settings().bind(|| insta::assert_json_snapshot!(name, value));
}

const ALL: &[&str] = &[
    "tokens:create",
    "tokens:read",
    "tokens:update",
    "tokens:delete",
    "audit:read",
    "tokens:introspect",
];

#[tokio::test]
async fn the_openapi_document() {
    let app = spawn_app().await;
    let r = app.request(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    let doc = r.expect(200);
    plain_settings().bind(|| insta::assert_json_snapshot!("openapi", doc));
}

#[tokio::test]
async fn token_management_answers() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    // A second apart, so that the listing's order (newest first, by id) is the same every run.
    let admin = app.token_named(&alice, "admin", ALL).await;
    app.advance(time::Duration::seconds(1));
    let reader = app.token_named(&alice, "reader", &["tokens:read"]).await;
    app.advance(time::Duration::seconds(1));
    let maker = app.token_named(&alice, "maker", &["tokens:create"]).await;
    app.advance(time::Duration::seconds(1));
    let unscoped = app.token_named(&alice, "unscoped", &["droplet:read"]).await;
    app.advance(time::Duration::seconds(1));

    let r = app
        .post(
            "/v1/tokens",
            &admin.secret,
            &json!({"name": "ci", "scopes": ["tokens:read"], "expires": "30d"}),
        )
        .await;
    assert_answer("tokens_create_201", &r);
    let made = r.json()["token"]["id"].as_str().unwrap().to_owned();
    assert_answer(
        "tokens_create_400_scope",
        &app.post(
            "/v1/tokens",
            &admin.secret,
            &json!({"name": "x", "scopes": ["no such scope"]}),
        )
        .await,
    );
    assert_answer(
        "tokens_create_401_no_token",
        &app.request(
            Method::POST,
            "/v1/tokens",
            None,
            Some(&json!({"name": "x", "scopes": []})),
        )
        .await,
    );
    assert_answer(
        "tokens_create_401_invalid_token",
        &app.post(
            "/v1/tokens",
            "kwp_not_a_token",
            &json!({"name": "x", "scopes": []}),
        )
        .await,
    );
    assert_answer(
        "tokens_create_403_scope",
        &app.post(
            "/v1/tokens",
            &reader.secret,
            &json!({"name": "x", "scopes": []}),
        )
        .await,
    );
    assert_answer(
        "tokens_create_403_ceiling",
        &app.post(
            "/v1/tokens",
            &maker.secret,
            &json!({"name": "x", "scopes": ["tokens:delete"]}),
        )
        .await,
    );
    assert_answer(
        "tokens_create_415",
        &app.raw(
            Method::POST,
            "/v1/tokens",
            &[("authorization", &format!("Bearer {}", admin.secret))],
            b"name=x".to_vec(),
        )
        .await,
    );

    assert_answer(
        "tokens_list_200",
        &app.get("/v1/tokens?limit=2", &admin.secret).await,
    );
    assert_answer(
        "tokens_list_400",
        &app.get("/v1/tokens?after=nope", &admin.secret).await,
    );

    let path = format!("/v1/tokens/{made}");
    assert_answer("tokens_get_200", &app.get(&path, &admin.secret).await);
    assert_answer(
        "tokens_get_404",
        &app.get("/v1/tokens/tok_01JZZZZZZZZZZZZZZZZZZZZZZZ", &admin.secret)
            .await,
    );
    assert_answer(
        "tokens_patch_200",
        &app.patch(&path, &admin.secret, &json!({"name": "deploy"}))
            .await,
    );
    assert_answer(
        "tokens_patch_400",
        &app.patch(&path, &admin.secret, &json!({"name": ""})).await,
    );
    assert_answer(
        "tokens_regenerate_200",
        &app.post(
            &format!("{path}/regenerate"),
            &admin.secret,
            &json!({"grace_period": "10m"}),
        )
        .await,
    );
    assert_answer(
        "tokens_delete_200",
        &app.delete(&path, &admin.secret, Some(&json!({"reason": "leaked"})))
            .await,
    );
    assert_answer(
        "tokens_regenerate_409",
        &app.post_empty(&format!("{path}/regenerate"), &admin.secret)
            .await,
    );

    assert_answer(
        "self_200",
        &app.get("/v1/tokens/self", &reader.secret).await,
    );
    assert_answer(
        "self_regenerate_200",
        &app.post_empty("/v1/tokens/self/regenerate", &reader.secret)
            .await,
    );
    assert_answer(
        "self_401_rotated_out",
        &app.get("/v1/tokens/self", &reader.secret).await,
    );
    // The old secret, presented after its grace, is recorded off the request path: wait for it,
    // so the trail below is the same on every run.
    let mut tries = 0;
    while !app
        .get("/v1/audit?limit=1", &admin.secret)
        .await
        .json()
        .to_string()
        .contains("token.rotated_secret_used")
    {
        tries += 1;
        assert!(
            tries < 500,
            "the reuse of a rotated-out secret was never recorded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    assert_answer(
        "audit_200",
        &app.get("/v1/audit?limit=3", &admin.secret).await,
    );
    assert_answer("audit_403", &app.get("/v1/audit", &unscoped.secret).await);
}

#[tokio::test]
async fn verification_answers() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let t = app.token(&alice, &["droplet:read"]).await;
    let verify = |body: Value| {
        let app = &app;
        async move {
            app.request(Method::POST, "/v1/verify", None, Some(&body))
                .await
        }
    };
    assert_answer(
        "verify_active",
        &verify(json!({"token": t.secret, "scopes": ["droplet:read"]})).await,
    );
    assert_answer(
        "verify_inactive_scope",
        &verify(json!({"token": t.secret, "scopes": ["droplet:delete"]})).await,
    );
    assert_answer(
        "verify_unknown_scope",
        &verify(json!({"token": t.secret, "scopes": ["droplet:write"]})).await,
    );
    assert_answer(
        "verify_inactive_malformed",
        &verify(json!({"token": "kwp_nope"})).await,
    );
    assert_answer(
        "verify_400",
        &verify(json!({"token": t.secret, "extra": 1})).await,
    );
}

fn form(token: &str) -> Vec<u8> {
    format!("token={token}&token_type_hint=access_token").into_bytes()
}

async fn oauth(app: &TestApp, path: &str, bearer: Option<&str>, body: Vec<u8>) -> Resp {
    let authorization = bearer.map(|b| format!("Bearer {b}"));
    let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
    if let Some(a) = &authorization {
        headers.push(("authorization", a));
    }
    app.raw(Method::POST, path, &headers, body).await
}

#[tokio::test]
async fn oauth_answers() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let gateway = app.token(&alice, &["tokens:introspect"]).await;
    let t = app.token(&alice, &["droplet:read"]).await;
    let introspect = "/oauth/introspect";
    assert_answer(
        "introspect_active",
        &oauth(&app, introspect, Some(&gateway.secret), form(&t.secret)).await,
    );
    assert_answer(
        "introspect_inactive",
        &oauth(&app, introspect, Some(&gateway.secret), form("kwp_nope")).await,
    );
    assert_answer(
        "introspect_400",
        &oauth(&app, introspect, Some(&gateway.secret), b"nope=1".to_vec()).await,
    );
    assert_answer(
        "introspect_401_no_credential",
        &oauth(&app, introspect, None, form(&t.secret)).await,
    );
    assert_answer(
        "introspect_401_scope",
        &oauth(&app, introspect, Some(&t.secret), form(&t.secret)).await,
    );
    assert_answer(
        "revoke_200",
        &oauth(&app, "/oauth/revoke", Some(&t.secret), form(&t.secret)).await,
    );
    assert_answer(
        "revoke_401",
        &oauth(&app, "/oauth/revoke", None, form(&t.secret)).await,
    );
}

#[tokio::test]
async fn forward_auth_answers() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let t = app.token(&alice, &["droplet:read"]).await;
    let auth = |token: Option<String>, scope: &'static str| {
        let app = &app;
        async move {
            let bearer = token.map(|t| format!("Bearer {t}"));
            let mut headers = vec![("x-keyward-scope", scope)];
            if let Some(b) = &bearer {
                headers.push(("authorization", b));
            }
            app.raw(Method::GET, "/v1/auth", &headers, Vec::new()).await
        }
    };
    assert_answer(
        "forward_auth_200",
        &auth(Some(t.secret.clone()), "droplet:read").await,
    );
    assert_answer("forward_auth_401", &auth(None, "droplet:read").await);
    assert_answer(
        "forward_auth_403",
        &auth(Some(t.secret.clone()), "droplet:write").await,
    );
    assert_answer(
        "forward_auth_400",
        &auth(Some(t.secret.clone()), "not a scope!").await,
    );
}

#[tokio::test]
async fn ops_and_fallback_answers() {
    let app = spawn_app().await;
    let get = |path: &'static str| app.request(Method::GET, path, None, None);
    assert_answer("healthz", &get("/healthz").await);
    assert_answer("readyz_200", &get("/readyz").await);
    let metrics = get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4")
    );
    assert_answer("fallback_404", &get("/no/such/route").await);
    assert_answer(
        "fallback_405",
        &app.request(Method::PUT, "/v1/verify", None, None).await,
    );
    app.store.close().await;
    assert_answer("readyz_503", &get("/readyz").await);
}

#[tokio::test]
async fn user_management_answers() {
    let app = spawn_app().await;
    let root = app.admin("root").await;
    let backend = app
        .token_named(
            &root,
            "backend",
            &[
                "users:read",
                "users:create",
                "users:update",
                "users:delete",
                "tokens:issue",
            ],
        )
        .await;
    let reader = app.token_named(&root, "reader", &["users:read"]).await;
    let r = app
        .post(
            "/v1/users",
            &backend.secret,
            &json!({"name": "ada", "external_id": "4711", "email": "ada@example.com"}),
        )
        .await;
    assert_answer("users_create_201", &r);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    assert_answer(
        "users_create_409",
        &app.post("/v1/users", &backend.secret, &json!({"name": "ada"}))
            .await,
    );
    assert_answer(
        "users_create_403_scope",
        &app.post("/v1/users", &reader.secret, &json!({"name": "eve"}))
            .await,
    );
    assert_answer(
        "users_list_200",
        &app.get("/v1/users?external_id=4711", &reader.secret).await,
    );
    assert_answer(
        "users_get_200",
        &app.get(&format!("/v1/users/{id}"), &reader.secret).await,
    );
    assert_answer(
        "users_update_200",
        &app.patch(
            &format!("/v1/users/{id}"),
            &backend.secret,
            &json!({"email": null, "disabled": true}),
        )
        .await,
    );
    app.patch(
        &format!("/v1/users/{id}"),
        &backend.secret,
        &json!({"disabled": false}),
    )
    .await
    .expect(200);
    assert_answer(
        "users_issue_201",
        &app.post(
            &format!("/v1/users/{id}/tokens"),
            &backend.secret,
            &json!({"name": "minted", "scopes": ["droplet:read"], "expires": "30d"}),
        )
        .await,
    );
    assert_answer(
        "users_delete_204",
        &app.delete(&format!("/v1/users/{id}"), &backend.secret, None)
            .await,
    );
}

#[tokio::test]
async fn event_answers() {
    let app = spawn_app().await;
    let root = app.admin("root").await;
    let reader = app
        .token_named(
            &root,
            "events",
            &["events:read", "webhooks:read", "tokens:*"],
        )
        .await;
    let other = app.token_named(&root, "other", &["tokens:read"]).await;
    let alice = app.user("alice").await;
    let made = app.token_named(&alice, "ci", &["droplet:read"]).await;
    app.delete(
        &format!("/v1/tokens/{}", made.id),
        &reader.secret,
        Some(&json!({"reason": "rotated out"})),
    )
    .await;
    let r = app.get("/v1/events?limit=3", &reader.secret).await;
    assert_answer("events_200", &r);
    let next = r.json()["next"].as_str().unwrap().to_owned();
    let rest = app
        .get(&format!("/v1/events?after={next}"), &reader.secret)
        .await
        .expect(200);
    assert!(!rest["events"].as_array().unwrap().is_empty());
    assert_answer(
        "events_400_after",
        &app.get(
            "/v1/events?after=evt_01JD8X0VQ5R6M8A5C3E7F9G1HK",
            &reader.secret,
        )
        .await,
    );
    assert_answer("events_403", &app.get("/v1/events", &other.secret).await);
    assert_answer(
        "webhook_deliveries_200",
        &app.get("/v1/webhooks/deliveries?state=failed", &reader.secret)
            .await,
    );
    assert_answer(
        "webhook_deliveries_400",
        &app.get("/v1/webhooks/deliveries?state=lost", &reader.secret)
            .await,
    );
}

#[tokio::test]
async fn incident_response_answers() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let root = app.admin("root").await;
    let admin = app.token(&root, &["tokens:revoke-any"]).await;
    let scanner = app.token(&alice, &["leaks:report"]).await;
    let leaked = app.token(&alice, &["droplet:read"]).await;
    app.token(&alice, &["droplet:read"]).await;

    let bulk = |body: serde_json::Value| {
        let app = &app;
        let admin = &admin;
        async move { app.post("/v1/tokens/revoke", &admin.secret, &body).await }
    };
    assert_answer(
        "tokens_bulk_revoke_200_dry_run",
        &bulk(json!({"user": "alice", "dry_run": true})).await,
    );
    assert_answer(
        "tokens_bulk_revoke_400_no_condition",
        &bulk(json!({"dry_run": true})).await,
    );
    assert_answer(
        "tokens_bulk_revoke_403_scope",
        &app.post(
            "/v1/tokens/revoke",
            &scanner.secret,
            &json!({"user": "alice"}),
        )
        .await,
    );
    assert_answer(
        "leaks_report_200",
        &app.post(
            "/v1/leaks",
            &scanner.secret,
            &json!({"tokens": [leaked.secret, "kwp_nothing"], "source": "scanner"}),
        )
        .await,
    );
    assert_answer(
        "tokens_bulk_revoke_200",
        &bulk(json!({"user": "alice", "scope": "droplet:read"})).await,
    );
    assert_answer(
        "leaks_github_404_not_enabled",
        &app.raw(Method::POST, "/v1/leaks/github", &[], b"[]".to_vec())
            .await,
    );
}
