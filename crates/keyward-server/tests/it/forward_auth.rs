//! `/v1/auth`: forward authentication for reverse proxies.

use crate::helpers::{Resp, TestApp, spawn_app, spawn_app_with};
use keyward_core::{Scopes, TokenId};
use keyward_server::service::{ForwardAuthRoute, ForwardAuthRoutes};
use keyward_server::{Caller, Settings};
use reqwest::Method;

async fn auth(
    app: &TestApp,
    method: Method,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> Resp {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    if let Some(b) = &bearer {
        all.push(("authorization", b));
    }
    app.raw(method, "/v1/auth", &all, Vec::new()).await
}

#[tokio::test]
async fn a_token_with_the_scope_passes_with_identity_headers() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let t = app.token(&alice, &["droplet:read", "volume:*"]).await;

    for method in [Method::GET, Method::POST, Method::DELETE, Method::PUT] {
        let r = auth(
            &app,
            method.clone(),
            Some(&t.secret),
            &[("x-keyward-scope", "droplet:read volume:create")],
        )
        .await;
        assert_eq!(r.status, 200, "{method}: {}", r.text);
        assert_eq!(r.header("x-keyward-token-id"), Some(t.id.as_str()));
        assert_eq!(r.header("x-keyward-owner"), Some("alice"));
        assert_eq!(r.header("x-keyward-owner-id"), Some(alice.id.as_str()));
        assert_eq!(r.header("x-keyward-scopes"), Some("droplet:read volume:*"));
        assert!(r.header("www-authenticate").is_none());
        let expires = r.header("x-keyward-token-expires").expect("expires header");
        let expires =
            time::OffsetDateTime::parse(expires, &time::format_description::well_known::Rfc3339)
                .unwrap();
        assert_eq!(expires.offset(), time::UtcOffset::UTC);
        let record = app
            .keyward
            .get_token(&Caller::operator("root"), &TokenId::parse(&t.id).unwrap())
            .await
            .unwrap();
        assert_eq!(Some(expires), record.expires_at);
    }
}

#[tokio::test]
async fn a_token_that_never_expires_says_no_expiry() {
    let app = spawn_app_with(Settings {
        policy: keyward_core::LifetimePolicy {
            allow_never: true,
            ..keyward_core::LifetimePolicy::default()
        },
        ..Settings::default()
    })
    .await;
    let alice = app.user("alice").await;
    let issued = app
        .keyward
        .create_token(
            &Caller::operator("test"),
            Some(&alice.id),
            keyward_core::TokenName::parse("forever").unwrap(),
            Scopes::parse(&["droplet:read"]).unwrap(),
            Some(keyward_core::ExpiryRequest::Never),
            keyward_core::Limits::default(),
        )
        .await
        .unwrap();
    let r = auth(&app, Method::GET, Some(issued.secret.expose()), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.header("x-keyward-token-id"),
        Some(issued.token.id.as_str())
    );
    assert!(r.header("x-keyward-token-expires").is_none());
}

#[tokio::test]
async fn refusals_carry_the_rfc6750_challenge() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let t = app.token(&alice, &["droplet:read"]).await;

    let r = auth(
        &app,
        Method::GET,
        None,
        &[("x-keyward-scope", "droplet:read")],
    )
    .await;
    r.expect_error(401, "unauthenticated");
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer realm="keyward""#)
    );
    assert!(r.header("x-keyward-owner").is_none());

    let r = auth(&app, Method::GET, Some("kwp_garbage"), &[]).await;
    r.expect_error(401, "invalid_token");
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains(r#"error="invalid_token""#)
    );

    let r = auth(
        &app,
        Method::GET,
        Some(&t.secret),
        &[("x-keyward-scope", "droplet:read droplet:create")],
    )
    .await;
    r.expect_error(403, "insufficient_scope");
    assert_eq!(
        r.header("www-authenticate"),
        Some(
            r#"Bearer realm="keyward", error="insufficient_scope", error_description="this token lacks the scope droplet:create droplet:read", scope="droplet:create droplet:read""#
        )
    );
    assert!(r.header("x-keyward-owner").is_none());

    // A revocation is seen on the very next request.
    assert_eq!(
        auth(&app, Method::GET, Some(&t.secret), &[]).await.status,
        200
    );
    app.keyward
        .revoke_token(
            &Caller::operator("test"),
            &TokenId::parse(&t.id).unwrap(),
            None,
        )
        .await
        .unwrap();
    let r = auth(&app, Method::GET, Some(&t.secret), &[]).await;
    r.expect_error(401, "invalid_token");
    assert!(r.header("www-authenticate").unwrap().contains("revoked"));

    // A scope header that is not scopes is the proxy's mistake: 400, not a pass.
    let u = app.token(&alice, &["droplet:read"]).await;
    let r = auth(
        &app,
        Method::GET,
        Some(&u.secret),
        &[("x-keyward-scope", "Droplet")],
    )
    .await;
    r.expect_error(400, "invalid_scope");
}

fn routes() -> Settings {
    let route = |m: &str, p: &str, s: &[&str]| {
        ForwardAuthRoute::new(m, p, Scopes::parse(s).unwrap()).unwrap()
    };
    Settings {
        forward_auth: ForwardAuthRoutes::new(vec![
            route("GET", "/droplets", &["droplet:read"]),
            route("*", "/droplets", &["droplet:update"]),
            route("DELETE", "/droplets", &["droplet:delete"]),
        ])
        .unwrap(),
        ..Settings::default()
    }
}

#[tokio::test]
async fn the_route_table_supplies_scopes_from_the_original_method_and_uri() {
    let app = spawn_app_with(routes()).await;
    let alice = app.user("alice").await;
    let reader = app.token(&alice, &["droplet:read"]).await;

    let status = |r: Resp| r.status.as_u16();
    // Traefik and Caddy names.
    let traefik =
        |m: &'static str, u: &'static str| [("x-forwarded-method", m), ("x-forwarded-uri", u)];
    assert_eq!(
        status(
            auth(
                &app,
                Method::GET,
                Some(&reader.secret),
                &traefik("GET", "/droplets/7?x=1")
            )
            .await
        ),
        200
    );
    assert_eq!(
        status(
            auth(
                &app,
                Method::GET,
                Some(&reader.secret),
                &traefik("POST", "/droplets")
            )
            .await
        ),
        403
    );
    let r = auth(
        &app,
        Method::GET,
        Some(&reader.secret),
        &traefik("DELETE", "/droplets/7"),
    )
    .await;
    r.expect_error(403, "insufficient_scope");
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .ends_with(r#"scope="droplet:delete""#)
    );
    // nginx names.
    let nginx =
        |m: &'static str, u: &'static str| [("x-original-method", m), ("x-original-uri", u)];
    assert_eq!(
        status(
            auth(
                &app,
                Method::GET,
                Some(&reader.secret),
                &nginx("GET", "/droplets")
            )
            .await
        ),
        200
    );
    assert_eq!(
        status(
            auth(
                &app,
                Method::GET,
                Some(&reader.secret),
                &nginx("PATCH", "/droplets/1")
            )
            .await
        ),
        403
    );
    // No route matches and there is no catch-all: refused, before the token is looked at.
    auth(
        &app,
        Method::GET,
        Some(&reader.secret),
        &nginx("POST", "/volumes"),
    )
    .await
    .expect_error(403, "no_route");
    auth(&app, Method::GET, None, &nginx("GET", "/volumes"))
        .await
        .expect_error(403, "no_route");
    // A table needs the original request to decide.
    auth(&app, Method::GET, Some(&reader.secret), &[])
        .await
        .expect_error(400, "invalid_header");
    assert_eq!(
        status(auth(&app, Method::GET, None, &nginx("GET", "/droplets")).await),
        401
    );
    // HEAD follows GET's route.
    assert_eq!(
        status(
            auth(
                &app,
                Method::GET,
                Some(&reader.secret),
                &nginx("HEAD", "/droplets/7")
            )
            .await
        ),
        200
    );
    // The header adds to what the table asks; it never lowers it.
    let mut headers = nginx("DELETE", "/droplets/1").to_vec();
    headers.push(("x-keyward-scope", "droplet:read"));
    auth(&app, Method::GET, Some(&reader.secret), &headers)
        .await
        .expect_error(403, "insufficient_scope");
    let mut headers = nginx("GET", "/droplets/1").to_vec();
    headers.push(("x-keyward-scope", "volume:read"));
    auth(&app, Method::GET, Some(&reader.secret), &headers)
        .await
        .expect_error(403, "insufficient_scope");
}

/// The attack that found the hole: a read-only token deleting through the proxy by spelling the
/// DELETE route's path another way, with a catch-all that lets any token through.
#[tokio::test]
async fn another_spelling_of_a_path_cannot_skip_its_route() {
    let route = |m: &str, p: &str, s: &[&str]| {
        ForwardAuthRoute::new(m, p, Scopes::parse(s).unwrap()).unwrap()
    };
    let app = spawn_app_with(Settings {
        forward_auth: ForwardAuthRoutes::new(vec![
            route("GET", "/droplets", &["droplet:read"]),
            route("DELETE", "/droplets", &["droplet:delete"]),
            route("*", "/", &[]),
        ])
        .unwrap(),
        ..Settings::default()
    })
    .await;
    let alice = app.user("alice").await;
    let reader = app.token(&alice, &["droplet:read"]).await;
    let deleter = app.token(&alice, &["droplet:delete"]).await;
    let ask = |token: &str, method: &str, uri: &str| {
        let headers = [
            ("x-original-method".to_owned(), method.to_owned()),
            ("x-original-uri".to_owned(), uri.to_owned()),
            ("authorization".to_owned(), format!("Bearer {token}")),
        ];
        let app = &app;
        async move {
            let pairs: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            app.raw(Method::GET, "/v1/auth", &pairs, Vec::new()).await
        }
    };
    for uri in [
        "/droplets/7",
        "/%64roplets/7",
        "/dr%6Fplets/7",
        "/droplets/./7",
        "/volumes/../droplets/7",
        "/%2e%2e/droplets/7",
        "//droplets/7",
        "/droplets//7",
        "/DROPLETS/7",
        "/Droplets/7?force=1",
        "http://api.internal/droplets/7",
    ] {
        let r = ask(&reader.secret, "DELETE", uri).await;
        r.expect_error(403, "insufficient_scope");
        assert_eq!(
            ask(&deleter.secret, "DELETE", uri).await.status,
            200,
            "{uri}"
        );
        assert_eq!(ask(&reader.secret, "GET", uri).await.status, 200, "{uri}");
    }
    for uri in [
        "/droplets;v=1/7",
        "/droplets%3B/7",
        "/droplets%2F7",
        "/droplets%5c7",
        "/droplets\\7",
        "/droplets/7%00",
        "/droplets/%ff",
        "/droplets/%252F7",
        "droplets/7",
    ] {
        let r = ask(&reader.secret, "DELETE", uri).await;
        r.expect_error(400, "invalid_uri");
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("URI"),
            "{uri}"
        );
    }
    // The catch-all lets any active token through elsewhere, and nothing else.
    assert_eq!(ask(&reader.secret, "POST", "/volumes").await.status, 200);
    assert_eq!(ask("kwp_nope", "POST", "/volumes").await.status, 401);
}

/// Only the proxy decides what the request was: two sources that disagree, or a deciding header
/// sent twice, are refused instead of "first one wins".
#[tokio::test]
async fn header_sources_must_agree_and_come_once() {
    let app = spawn_app_with(routes()).await;
    let alice = app.user("alice").await;
    let reader = app.token(&alice, &["droplet:read"]).await;
    let bearer = format!("Bearer {}", reader.secret);
    let send = |headers: Vec<(&'static str, &'static str)>| {
        let mut all: Vec<(&str, &str)> = headers;
        all.push(("authorization", bearer.as_str()));
        let app = &app;
        async move { app.raw(Method::GET, "/v1/auth", &all, Vec::new()).await }
    };
    // nginx sets X-Original-*; a client-sent X-Forwarded-Uri that disagrees is refused.
    send(vec![
        ("x-original-method", "DELETE"),
        ("x-original-uri", "/droplets/7"),
        ("x-forwarded-method", "GET"),
        ("x-forwarded-uri", "/droplets/7"),
    ])
    .await
    .expect_error(400, "invalid_header");
    send(vec![
        ("x-original-method", "GET"),
        ("x-original-uri", "/droplets/7"),
        ("x-forwarded-uri", "/droplets"),
    ])
    .await
    .expect_error(400, "invalid_header");
    // Agreeing copies are fine.
    let r = send(vec![
        ("x-original-method", "GET"),
        ("x-original-uri", "/droplets/7"),
        ("x-forwarded-method", "GET"),
        ("x-forwarded-uri", "/droplets/7"),
    ])
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // A deciding header twice.
    for (twice, value) in [
        ("x-original-uri", "/droplets/7"),
        ("x-original-method", "GET"),
        ("x-forwarded-uri", "/droplets/7"),
        ("x-keyward-scope", "droplet:read"),
    ] {
        let mut headers = vec![
            ("x-original-method", "GET"),
            ("x-original-uri", "/droplets/7"),
        ];
        headers.push((twice, value));
        if !twice.starts_with("x-original") {
            headers.push((twice, value));
        }
        send(headers).await.expect_error(400, "invalid_header");
    }
    let twice = app
        .raw(
            Method::GET,
            "/v1/auth",
            &[
                ("authorization", bearer.as_str()),
                ("authorization", bearer.as_str()),
            ],
            Vec::new(),
        )
        .await;
    twice.expect_error(400, "invalid_request");

    // Without a route table too: the proxy's original request comes once, and agrees.
    let plain = spawn_app().await;
    let bob = plain.user("bob").await;
    let t = plain.token(&bob, &["droplet:read"]).await;
    let bearer = format!("Bearer {}", t.secret);
    for headers in [
        vec![("x-original-uri", "/a"), ("x-original-uri", "/b")],
        vec![("x-original-uri", "/a"), ("x-forwarded-uri", "/b")],
        vec![
            ("x-keyward-scope", "droplet:read"),
            ("x-keyward-scope", "droplet:read"),
        ],
    ] {
        let mut all = headers.clone();
        all.push(("authorization", bearer.as_str()));
        plain
            .raw(Method::GET, "/v1/auth", &all, Vec::new())
            .await
            .expect_error(400, "invalid_header");
    }
}
