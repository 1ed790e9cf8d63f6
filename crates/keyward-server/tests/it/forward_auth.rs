//! `/v1/auth`: forward authentication for reverse proxies.

use crate::helpers::{Resp, TestApp, spawn_app, spawn_app_with};
use keyward_core::{Scopes, TokenId};
use keyward_server::service::{ForwardAuthRoute, ForwardAuthRoutes};
use keyward_server::{Acting, Settings};
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
    }
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
            &Acting::operator("test"),
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
        ]),
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
    // No route matches (or no original URI): authentication only.
    assert_eq!(
        status(
            auth(
                &app,
                Method::GET,
                Some(&reader.secret),
                &nginx("POST", "/volumes")
            )
            .await
        ),
        200
    );
    assert_eq!(
        status(auth(&app, Method::GET, Some(&reader.secret), &[]).await),
        200
    );
    assert_eq!(
        status(auth(&app, Method::GET, None, &nginx("GET", "/volumes")).await),
        401
    );
    // The header wins over the table.
    let mut headers = nginx("DELETE", "/droplets/1").to_vec();
    headers.push(("x-keyward-scope", "droplet:read"));
    assert_eq!(
        status(auth(&app, Method::GET, Some(&reader.secret), &headers).await),
        200
    );
}
