//! Bad input (acceptance 5): every refusal is a 4xx with the one JSON error shape, and leaves
//! the database as it was.

use crate::helpers::{START, TestApp, spawn_app};
use keyward_core::User;
use reqwest::Method;
use serde_json::{Value, json};
use time::Duration;
use time::format_description::well_known::Rfc3339;

const JSON: (&str, &str) = ("content-type", "application/json");

struct Fixture {
    app: TestApp,
    alice: User,
    admin: String,
    target: String,
}

async fn fixture() -> Fixture {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let admin = app
        .token(&alice, &["tokens:*", "droplet:*", "volume:*", "audit:read"])
        .await
        .secret;
    let target = app.token(&alice, &["droplet:read"]).await.id;
    Fixture {
        app,
        alice,
        admin,
        target,
    }
}

fn auth(bearer: &str) -> String {
    format!("Bearer {bearer}")
}

/// POSTs a create request with `body`, expects `status`/`code`, and checks nothing changed.
async fn refused_create(f: &Fixture, body: Value, status: u16, code: &str) {
    let before = f.app.snapshot().await;
    let r = f.app.post("/v1/tokens", &f.admin, &body).await;
    r.expect_error(status, code);
    assert_eq!(
        f.app.snapshot().await,
        before,
        "the database changed after refusing {body}"
    );
}

#[tokio::test]
async fn malformed_or_mistyped_create_bodies_are_400_and_change_nothing() {
    let f = fixture().await;
    let a = auth(&f.admin);
    let before = f.app.snapshot().await;
    for raw in [
        "{",
        "{\"name\": \"x\", \"scopes\": [\"droplet:read\"]",
        "not json",
        "{\"name\": \"x\", \"scopes\": [\"droplet:read\"],}",
        "\u{feff}{}",
        "\"just a string\"",
    ] {
        let r = f
            .app
            .raw(
                Method::POST,
                "/v1/tokens",
                &[JSON, ("authorization", &a)],
                raw.as_bytes().to_vec(),
            )
            .await;
        assert!(
            r.status.as_u16() == 400
                && ["malformed_json", "invalid_body"]
                    .contains(&r.json()["error"]["code"].as_str().unwrap()),
            "{raw:?} -> {} {}",
            r.status,
            r.text
        );
    }
    let r = f
        .app
        .raw(
            Method::POST,
            "/v1/tokens",
            &[JSON, ("authorization", &a)],
            b"{".to_vec(),
        )
        .await;
    r.expect_error(400, "malformed_json");
    // Invalid UTF-8.
    let r = f
        .app
        .raw(
            Method::POST,
            "/v1/tokens",
            &[JSON, ("authorization", &a)],
            b"{\"name\": \"\xff\xfe\"}".to_vec(),
        )
        .await;
    assert_eq!(r.status.as_u16(), 400, "{}", r.text);
    r.json();
    // Empty body with a JSON content type.
    let r = f
        .app
        .raw(
            Method::POST,
            "/v1/tokens",
            &[JSON, ("authorization", &a)],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status.as_u16(), 400, "{}", r.text);
    r.json();
    assert_eq!(f.app.snapshot().await, before);

    for (body, code) in [
        (
            json!({"name": "x", "scopes": "droplet:read"}),
            "invalid_body",
        ),
        (
            json!({"name": 5, "scopes": ["droplet:read"]}),
            "invalid_body",
        ),
        (json!({"name": "x", "scopes": [1, 2]}), "invalid_body"),
        (
            json!({"name": "x", "scopes": ["droplet:read"], "expires": 30}),
            "invalid_body",
        ),
        (
            json!({"name": null, "scopes": ["droplet:read"]}),
            "invalid_body",
        ),
        (json!({"scopes": ["droplet:read"]}), "invalid_body"),
        (json!({"name": "x"}), "invalid_body"),
        (json!({}), "invalid_body"),
        (json!([]), "invalid_body"),
        (
            json!({"name": "x", "scopes": ["droplet:read"], "owner": "usr_01J00000000000000000000000"}),
            "invalid_body",
        ),
        (
            json!({"name": "x", "scopes": ["droplet:read"], "admin": true}),
            "invalid_body",
        ),
    ] {
        refused_create(&f, body, 400, code).await;
    }
}

#[tokio::test]
async fn oversized_and_untyped_bodies() {
    let f = fixture().await;
    let a = auth(&f.admin);
    let before = f.app.snapshot().await;

    let big = format!(
        "{{\"name\": \"{}\", \"scopes\": [\"droplet:read\"]}}",
        "a".repeat(100 * 1024)
    );
    let r = f
        .app
        .raw(
            Method::POST,
            "/v1/tokens",
            &[JSON, ("authorization", &a)],
            big.clone().into_bytes(),
        )
        .await;
    r.expect_error(413, "payload_too_large");
    let r = f
        .app
        .raw(
            Method::POST,
            "/v1/verify",
            &[JSON],
            big.clone().into_bytes(),
        )
        .await;
    r.expect_error(413, "payload_too_large");
    let r = f
        .app
        .raw(
            Method::POST,
            &format!("/v1/tokens/{}/regenerate", f.target),
            &[JSON, ("authorization", &a)],
            big.into_bytes(),
        )
        .await;
    r.expect_error(413, "payload_too_large");

    let ok = serde_json::to_vec(&json!({"name": "x", "scopes": ["droplet:read"]})).unwrap();
    let r = f
        .app
        .raw(
            Method::POST,
            "/v1/tokens",
            &[("authorization", &a)],
            ok.clone(),
        )
        .await;
    r.expect_error(415, "unsupported_media_type");
    let r = f
        .app
        .raw(
            Method::POST,
            "/v1/tokens",
            &[("authorization", &a), ("content-type", "text/plain")],
            ok.clone(),
        )
        .await;
    r.expect_error(415, "unsupported_media_type");
    let r = f
        .app
        .raw(
            Method::POST,
            "/v1/verify",
            &[],
            b"{\"token\": \"x\"}".to_vec(),
        )
        .await;
    r.expect_error(415, "unsupported_media_type");
    // An optional body still has to say it is JSON.
    let r = f
        .app
        .raw(
            Method::POST,
            &format!("/v1/tokens/{}/regenerate", f.target),
            &[("authorization", &a)],
            b"{\"grace_period\": \"1m\"}".to_vec(),
        )
        .await;
    r.expect_error(415, "unsupported_media_type");
    let r = f
        .app
        .raw(
            Method::POST,
            &format!("/v1/tokens/{}/regenerate", f.target),
            &[JSON, ("authorization", &a)],
            b"{\"grace\": \"1m\"}".to_vec(),
        )
        .await;
    r.expect_error(400, "invalid_body");
    let r = f
        .app
        .raw(
            Method::DELETE,
            &format!("/v1/tokens/{}", f.target),
            &[JSON, ("authorization", &a)],
            b"{\"reason\": ".to_vec(),
        )
        .await;
    r.expect_error(400, "invalid_body");
    assert_eq!(f.app.snapshot().await, before);
}

#[tokio::test]
async fn unknown_scopes_are_refused() {
    let f = fixture().await;
    for scopes in [
        json!(["droplet:reed"]),
        json!(["dropplet:read"]),
        json!(["nosuch:*"]),
        json!(["*:fly"]),
        json!(["droplet"]),
        json!(["Droplet:read"]),
        json!(["droplet:read:extra"]),
        json!([""]),
        json!([]),
        json!(["droplet:read", "ünï:cødé"]),
        json!([format!("{}:read", "a".repeat(10_000))]),
    ] {
        refused_create(
            &f,
            json!({"name": "x", "scopes": scopes}),
            400,
            "invalid_scope",
        )
        .await;
    }
    let too_many: Vec<String> = (0..65).map(|_| "droplet:read".to_owned()).collect();
    let r = f
        .app
        .post(
            "/v1/tokens",
            &f.admin,
            &json!({"name": "x", "scopes": too_many}),
        )
        .await;
    // Duplicates collapse to one scope, or are refused: either way never a 5xx.
    assert!(
        r.status.as_u16() == 201 || r.status.as_u16() == 400,
        "{} {}",
        r.status,
        r.text
    );
}

#[tokio::test]
async fn bad_names_are_refused_and_unicode_names_round_trip() {
    let f = fixture().await;
    for name in [
        String::new(),
        "   ".to_owned(),
        "\t\n ".to_owned(),
        "a".repeat(101),
        "x".repeat(10_000),
        "line\nbreak".to_owned(),
        "nul\u{0}".to_owned(),
    ] {
        refused_create(
            &f,
            json!({"name": name, "scopes": ["droplet:read"]}),
            400,
            "invalid_name",
        )
        .await;
    }
    let before = f.app.snapshot().await;
    f.app
        .patch(
            &format!("/v1/tokens/{}", f.target),
            &f.admin,
            &json!({"name": "x".repeat(10_000)}),
        )
        .await
        .expect_error(400, "invalid_name");
    f.app
        .patch(
            &format!("/v1/tokens/{}", f.target),
            &f.admin,
            &json!({"name": "  "}),
        )
        .await
        .expect_error(400, "invalid_name");
    f.app
        .patch(
            &format!("/v1/tokens/{}", f.target),
            &f.admin,
            &json!({"name": 5}),
        )
        .await
        .expect_error(400, "invalid_body");
    f.app
        .patch(&format!("/v1/tokens/{}", f.target), &f.admin, &json!({}))
        .await
        .expect_error(400, "invalid_body");
    assert_eq!(f.app.snapshot().await, before);

    let name = "déploiement 🚀 — 東京 ✓";
    let made = f
        .app
        .post(
            "/v1/tokens",
            &f.admin,
            &json!({"name": name, "scopes": ["droplet:read"]}),
        )
        .await
        .expect(201);
    assert_eq!(made["token"]["name"], name);
    let id = made["token"]["id"].as_str().unwrap();
    assert_eq!(
        f.app
            .get(&format!("/v1/tokens/{id}"), &f.admin)
            .await
            .expect(200)["token"]["name"],
        name
    );
    let listed = f.app.get("/v1/tokens", &f.admin).await.expect(200);
    assert!(
        listed["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == name)
    );
    let renamed = "ünïcødé ✨";
    f.app
        .patch(
            &format!("/v1/tokens/{id}"),
            &f.admin,
            &json!({"name": renamed}),
        )
        .await
        .expect(200);
    assert_eq!(
        f.app
            .get(&format!("/v1/tokens/{id}"), &f.admin)
            .await
            .expect(200)["token"]["name"],
        renamed
    );
    // 100 characters (not bytes) is the limit.
    f.app
        .post(
            "/v1/tokens",
            &f.admin,
            &json!({"name": "é".repeat(100), "scopes": ["droplet:read"]}),
        )
        .await
        .expect(201);
}

#[tokio::test]
async fn bad_expiries_and_grace_periods_are_refused() {
    let f = fixture().await;
    let past = (START - Duration::seconds(1)).format(&Rfc3339).unwrap();
    let now = START.format(&Rfc3339).unwrap();
    let too_far = (START + Duration::days(367)).format(&Rfc3339).unwrap();
    for expires in [
        past.as_str(),
        now.as_str(),
        too_far.as_str(),
        "367d",
        "53w",
        "999999999w",
        "never",
        "NEVER",
        "tomorrow",
        "0d",
        "-5d",
        "30",
        "d",
        "",
        "30 days",
        "2026-13-45T00:00:00Z",
        "३०d",
        "30ḋ",
    ] {
        refused_create(
            &f,
            json!({"name": "x", "scopes": ["droplet:read"], "expires": expires}),
            400,
            "invalid_expiry",
        )
        .await;
    }
    // The limits themselves are fine.
    f.app
        .post(
            "/v1/tokens",
            &f.admin,
            &json!({"name": "x", "scopes": ["droplet:read"], "expires": "366d"}),
        )
        .await
        .expect(201);

    let before = f.app.snapshot().await;
    let path = format!("/v1/tokens/{}/regenerate", f.target);
    for grace in ["8d", "2w", "0s", "-1m", "soon", "", "10 m"] {
        f.app
            .post(&path, &f.admin, &json!({"grace_period": grace}))
            .await
            .expect_error(400, "invalid_expiry");
    }
    f.app
        .post(&path, &f.admin, &json!({"grace_period": 600}))
        .await
        .expect_error(400, "invalid_body");
    f.app
        .post(&path, &f.admin, &json!({"expires": "never"}))
        .await
        .expect_error(400, "invalid_expiry");
    assert_eq!(f.app.snapshot().await, before);
}

#[tokio::test]
async fn bad_revocation_reasons_are_refused() {
    let f = fixture().await;
    let before = f.app.snapshot().await;
    let path = format!("/v1/tokens/{}", f.target);
    f.app
        .delete(&path, &f.admin, Some(&json!({"reason": "r".repeat(501)})))
        .await
        .expect_error(400, "invalid_request");
    f.app
        .delete(&path, &f.admin, Some(&json!({"reason": "two\nlines"})))
        .await
        .expect_error(400, "invalid_request");
    f.app
        .delete(&path, &f.admin, Some(&json!({"reason": 5})))
        .await
        .expect_error(400, "invalid_body");
    f.app
        .delete(&path, &f.admin, Some(&json!({"why": "x"})))
        .await
        .expect_error(400, "invalid_body");
    assert_eq!(f.app.snapshot().await, before);
}

/// Found by the `http_app` fuzz target: a secret sent as data, here another token's secret as a
/// revocation reason or a token name, was stored as it came and shown by every later answer about
/// that token (and kept in the audit trail), so the plaintext outlived the request. Such text is
/// now refused.
#[tokio::test]
async fn a_secret_sent_as_a_reason_or_a_name_is_never_shown_again() {
    let f = fixture().await;
    let other = f.app.token(&f.alice, &["droplet:read"]).await;
    // The fuzzer's input, with `$T1` = `other`: revoke with its secret as the reason, then again.
    let path = format!("/v1/tokens/{}", other.id);
    let reason = json!({"reason": other.secret});
    f.app
        .delete(&path, &f.admin, Some(&reason))
        .await
        .expect_error(400, "invalid_request");
    let again = f.app.delete(&path, &f.admin, None).await;
    assert!(!again.text.contains(&other.secret), "{}", again.text);
    // The same through a name, which the listing shows.
    let named = f.app.token(&f.alice, &["droplet:read"]).await;
    let rename = json!({"name": named.secret});
    f.app
        .patch(&format!("/v1/tokens/{}", named.id), &f.admin, &rename)
        .await
        .expect_error(400, "invalid_name");
    let listed = f.app.get("/v1/tokens", &f.admin).await;
    assert!(!listed.text.contains(&named.secret), "{}", listed.text);
}

#[tokio::test]
async fn garbage_and_unicode_tokens_verify_as_malformed() {
    let f = fixture().await;
    let before = f.app.snapshot().await;
    let valid = f.app.token(&f.alice, &["droplet:read"]).await.secret;
    let before_with_valid = f.app.snapshot().await;
    assert_ne!(before, before_with_valid);
    let mut flipped = valid.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    for token in [
        String::new(),
        " ".to_owned(),
        "garbage".to_owned(),
        "kwp_".to_owned(),
        "ünïcødé 🚀".to_owned(),
        "\u{0}\u{1}\u{7f}".to_owned(),
        "kwp_ääääääääääääääääääääääääääääääääääääääääääääääääää".to_owned(),
        format!("{valid} "),
        format!(" {valid}"),
        valid.to_uppercase(),
        valid[..valid.len() - 1].to_owned(),
        format!("{valid}A"),
        flipped,
        valid.replacen("kwp_", "kwp-", 1),
        "x".repeat(60_000),
        "kwp_000000000000000000000000000000000000000000000000000".to_owned(),
    ] {
        let r = f
            .app
            .request(
                Method::POST,
                "/v1/verify",
                None,
                Some(&json!({"token": token})),
            )
            .await;
        assert_eq!(
            r.expect(200),
            json!({"active": false, "reason": "malformed"}),
            "{token:?}"
        );
    }
    assert_eq!(f.app.snapshot().await, before_with_valid);
}

#[tokio::test]
async fn bad_verify_bodies_are_4xx_json() {
    let f = fixture().await;
    let before = f.app.snapshot().await;
    for (body, code) in [
        (json!({}), "invalid_body"),
        (json!({"token": 5}), "invalid_body"),
        (json!({"token": null}), "invalid_body"),
        (json!({"token": ["kwp_x"]}), "invalid_body"),
        (
            json!({"token": "x", "scopes": "droplet:read"}),
            "invalid_body",
        ),
        (json!({"token": "x", "ip": "not-an-ip"}), "invalid_body"),
        (json!({"token": "x", "ip": 7}), "invalid_body"),
        (json!({"token": "x", "extra": true}), "invalid_body"),
        (
            json!({"token": "x", "scopes": ["not a scope"]}),
            "invalid_scope",
        ),
    ] {
        let r = f
            .app
            .request(Method::POST, "/v1/verify", None, Some(&body))
            .await;
        r.expect_error(400, code);
    }
    let r = f
        .app
        .raw(Method::POST, "/v1/verify", &[JSON], b"{\"token\":".to_vec())
        .await;
    r.expect_error(400, "malformed_json");
    assert_eq!(f.app.snapshot().await, before);
}

#[tokio::test]
async fn unknown_routes_wrong_methods_and_bad_ids() {
    let f = fixture().await;
    let before = f.app.snapshot().await;
    // (`/` is the web page's: it sends a browser to its tokens.)
    for path in [
        "/v1",
        "/v2/tokens",
        "/v1/tokenz",
        "/v1/tokens/x/y/z",
        "/%ff",
        "/v1/ünïcødé",
    ] {
        let r = f.app.get(path, &f.admin).await;
        r.expect_error(404, "not_found");
    }
    for (method, path) in [
        (Method::PUT, "/v1/tokens".to_owned()),
        (Method::DELETE, "/v1/tokens".to_owned()),
        (Method::GET, "/v1/verify".to_owned()),
        (Method::POST, "/healthz".to_owned()),
        (Method::PUT, format!("/v1/tokens/{}", f.target)),
        (Method::GET, format!("/v1/tokens/{}/regenerate", f.target)),
        (Method::DELETE, "/v1/tokens/self".to_owned()),
    ] {
        let r = f
            .app
            .request(method.clone(), &path, Some(&f.admin), None)
            .await;
        r.expect_error(405, "method_not_allowed");
    }
    let other_id = "tok_01JZZZZZZZZZZZZZZZZZZZZZZZ";
    for id in [
        "nope",
        "tok_",
        "tok_nope",
        "usr_01J00000000000000000000000",
        "tok_01JZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ",
        "%00",
        "tok_%C3%BC",
        other_id,
    ] {
        f.app
            .get(&format!("/v1/tokens/{id}"), &f.admin)
            .await
            .expect_error(404, "not_found");
        f.app
            .patch(&format!("/v1/tokens/{id}"), &f.admin, &json!({"name": "n"}))
            .await
            .expect_error(404, "not_found");
        f.app
            .delete(&format!("/v1/tokens/{id}"), &f.admin, None)
            .await
            .expect_error(404, "not_found");
        f.app
            .post_empty(&format!("/v1/tokens/{id}/regenerate"), &f.admin)
            .await
            .expect_error(404, "not_found");
    }
    assert_eq!(f.app.snapshot().await, before);
}

#[tokio::test]
async fn bad_query_parameters_are_400() {
    let f = fixture().await;
    let root = f.app.admin("root").await;
    let backend = f.app.token(&root, &["users:read"]).await.secret;
    // Every paged endpoint takes a page size of 1 to 100, as the document says, and refuses
    // anything else with our message, never the deserializer's.
    let paged = [
        ("/v1/tokens", f.admin.as_str()),
        ("/v1/audit", f.admin.as_str()),
        ("/v1/users", backend.as_str()),
    ];
    for (path, bearer) in paged {
        for limit in ["0", "101", "1000", "abc", "-1", "1.5", "", "99999999999"] {
            let body = f
                .app
                .get(&format!("{path}?limit={limit}"), bearer)
                .await
                .expect_error(400, "invalid_query");
            assert_eq!(
                body["error"]["message"], "`limit` must be a whole number from 1 to 100",
                "{path}?limit={limit}"
            );
        }
        f.app
            .get(&format!("{path}?bogus=1"), bearer)
            .await
            .expect_error(400, "invalid_query");
        for limit in ["1", "100"] {
            f.app
                .get(&format!("{path}?limit={limit}"), bearer)
                .await
                .expect(200);
        }
    }
    for before in ["abc", "1e3", "", "99999999999999999999"] {
        let body = f
            .app
            .get(&format!("/v1/audit?before={before}"), &f.admin)
            .await
            .expect_error(400, "invalid_query");
        assert_eq!(
            body["error"]["message"], "`before` must be the `next` value of a previous page",
            "before={before}"
        );
    }
    let one = f.app.get("/v1/tokens?limit=1", &f.admin).await.expect(200);
    assert_eq!(one["tokens"].as_array().unwrap().len(), 1, "{one}");
}

#[tokio::test]
async fn a_malformed_paging_cursor_is_a_bad_request_not_a_missing_collection() {
    let f = fixture().await;
    // `GET /v1/tokens` exists; a bad `after` value is the client's mistake in the query (400,
    // like `limit=abc`), not a missing resource.
    f.app
        .get("/v1/tokens?after=garbage", &f.admin)
        .await
        .expect_error(400, "invalid_query");
}

#[tokio::test]
async fn json_errors_do_not_depend_on_how_the_content_type_is_spelled() {
    // Plain `application/json` takes a fast path; any other JSON media type takes axum's
    // extractor. A client must not be able to tell which: same status, code and message.
    let f = fixture().await;
    let token = f.app.token(&f.alice, &["droplet:read"]).await.secret;
    let valid = json!({"token": token, "scopes": ["droplet:read"]}).to_string();
    let big = format!("{{\"token\": \"{}\"}}", "a".repeat(100 * 1024));
    let bodies = [
        "{\"token\": 5}",
        "{not json",
        "{\"token\":",
        "",
        "{}",
        "[]",
        "\"kwp_x\"",
        "{\"token\": \"x\", \"extra\": true}",
        "{\"token\": \"x\", \"ip\": \"not-an-ip\"}",
        "{\"token\": \"x\", \"scopes\": [\"not a scope\"]}",
        "\u{feff}{\"token\": \"x\"}",
        "{\"token\": \"x\"} trailing",
        big.as_str(),
        valid.as_str(),
    ];
    for body in bodies {
        let plain = f
            .app
            .raw(Method::POST, "/v1/verify", &[JSON], body.into())
            .await;
        assert!(
            plain.status.as_u16() < 500,
            "{body:.40?} -> {} {}",
            plain.status,
            plain.text
        );
        for spelling in [
            "application/json; charset=utf-8",
            "application/json;charset=UTF-8",
            "Application/JSON",
        ] {
            let other = f
                .app
                .raw(
                    Method::POST,
                    "/v1/verify",
                    &[("content-type", spelling)],
                    body.into(),
                )
                .await;
            assert_eq!(
                (other.status, other.json()),
                (plain.status, plain.json()),
                "{body:.40?} sent as {spelling:?}"
            );
        }
    }
    // The valid body works both ways (and the checks above were not all refusals).
    let r = f
        .app
        .raw(
            Method::POST,
            "/v1/verify",
            &[("content-type", "application/json; charset=utf-8")],
            valid.into(),
        )
        .await;
    assert_eq!(r.expect(200)["active"], true);
}

#[tokio::test]
async fn a_verification_asking_for_a_scope_outside_the_catalog_is_400_unknown_scope() {
    let f = fixture().await;
    let token = f.app.token(&f.alice, &["droplet:read"]).await.secret;
    // A typo in the calling API is not a right the token lacks: 400, in the error shape.
    for scopes in [
        json!(["dropplet:read"]),
        json!(["droplet:reed"]),
        json!(["*:fly"]),
        json!(["droplet:read", "nosuch:*"]),
    ] {
        let r = f
            .app
            .raw(
                Method::POST,
                "/v1/verify",
                &[JSON],
                json!({"token": token, "scopes": scopes})
                    .to_string()
                    .into_bytes(),
            )
            .await;
        let body = r.expect_error(400, "unknown_scope");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("catalog"), "{scopes}: {message}");
    }
    // Not a scope at all stays `invalid_scope`; a known scope the token lacks stays an answer.
    let r = f
        .app
        .raw(
            Method::POST,
            "/v1/verify",
            &[JSON],
            json!({"token": token, "scopes": ["Droplet:read"]})
                .to_string()
                .into_bytes(),
        )
        .await;
    r.expect_error(400, "invalid_scope");
    assert_eq!(
        f.app.verdict(&token, &["droplet:delete"]).await,
        "insufficient_scope"
    );
    assert_eq!(f.app.verdict(&token, &["droplet:read"]).await, "active");
}
