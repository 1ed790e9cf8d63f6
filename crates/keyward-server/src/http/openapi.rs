//! The OpenAPI 3.1 document: its frame (info, tags, security schemes) here, its operations from
//! the routes registered in [`super`] (utoipa-axum's `OpenApiRouter`), served at
//! `GET /openapi.json`.
//!
//! Nothing in the document is written by hand: every schema is derived from the type that is
//! serialized (`super::wire`), every operation from its handler's annotation. How it is kept
//! true: `tests/it/wire.rs` snapshots the served document and every route's answers, so any
//! change to either shows in review; `tests/it/openapi.rs` checks that it lists exactly the
//! routes the app serves and that every `$ref` resolves (it does not check answers against
//! it); and CI fuzzes the running server against it with schemathesis (`.ci/schemathesis.sh`),
//! which checks every answer conforms to the documented schema.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use std::sync::LazyLock;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::wire;

/// keyward's API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "keyward",
        description = "Personal access tokens: create, verify, revoke. Errors are \
            `{\"error\": {\"code\", \"message\"}}` except on the OAuth endpoints, which answer in \
            RFC 6749 §5.2's shape. Every 401/403 of a Bearer-protected endpoint carries an RFC 6750 \
            `WWW-Authenticate` challenge.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(wire::ErrorResponse, wire::OAuthErrorResponse)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "tokens", description = "Managing one's tokens"),
        (name = "users", description = "The platform's users and service accounts, and tokens minted for them (an admin's token with `users:*` and `tokens:issue`)"),
        (name = "verify", description = "The verification hot path"),
        (name = "forward-auth", description = "Forward authentication for reverse proxies"),
        (name = "oauth", description = "RFC 7662 introspection and RFC 7009 revocation"),
        (name = "events", description = "Every user's events in order, and their webhook deliveries (an admin's token with `events:read`, `webhooks:read`)"),
        (name = "leaks", description = "Leaked secrets reported by GitHub's secret scanning, GitLab's token revocation API and in-house scanners: each token is revoked at once"),
        (name = "ops", description = "Health, readiness, metrics, this document"),
    )
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
        // GitLab's token revocation API: the pre-shared token is the whole header, no scheme.
        components.add_security_scheme(
            "gitlab",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("Authorization"))),
        );
    }
}

/// The document as served, built once.
pub static OPENAPI_JSON: LazyLock<String> =
    LazyLock::new(|| super::document().to_json().unwrap_or_default());

/// `GET /openapi.json`: this API's OpenAPI 3.1 document.
#[utoipa::path(
    get, path = "/openapi.json", tag = "ops",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
pub async fn openapi_json() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI_JSON.as_str(),
    )
        .into_response()
}
