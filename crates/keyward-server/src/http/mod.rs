//! The axum application: routes, layers, and [`serve`].
//!
//! Handlers are thin: extract, authenticate, call one service method, map the result. Every
//! error, including axum's own rejections, a 404 route, a 405 method and a panic, leaves as the
//! same JSON error shape; only a browser asking for HTML (`Accept: text/html`) at an address no
//! route has gets the web page's 404 or 405 page instead.

mod client_addr;
pub mod error;
mod events;
pub mod extract;
mod forward_auth;
mod leaks;
mod oauth;
pub mod openapi;
mod ops;
mod server;
pub mod tls;
mod tokens;
mod users;
mod verify;
pub mod wire;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath};
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tower::{Service, ServiceBuilder};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::service::Keyward;
pub use error::ApiError;
pub use server::{
    DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_REQUEST_TIMEOUT, HttpLimits, ServeOptions, serve,
};
pub use tls::{Tls, TlsError, TlsFiles};
use wire::ErrorCode;

/// Largest request body accepted. Every keyward request is a few hundred bytes.
pub const BODY_LIMIT: usize = 64 * 1024;
/// How often noted uses are written to the store.
pub const USAGE_FLUSH_EVERY: Duration = Duration::from_secs(5);

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serves {
    /// Every route.
    All,
    /// Every route but `/metrics`, which has a listener of its own.
    AllButMetrics,
    /// `/metrics` alone, on its own listener.
    MetricsOnly,
}

/// The application: the routes `serves` names, then the layers that wrap them all.
///
/// The layers wrap the router as a whole, not each route (what `Router::layer` does), so a
/// request clones one boxed route rather than one box per layer.
pub fn app(
    keyward: Arc<Keyward>,
    serves: Serves,
) -> impl Service<Request<Body>, Response = Response, Error = Infallible, Future = impl Send + 'static>
+ Clone
+ Send
+ Sync
+ 'static {
    ServiceBuilder::new()
        .map_response(IntoResponse::into_response)
        // Before the rest, so no layer (tracing included) ever sees the credential in clear.
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::COOKIE,
        ]))
        .layer(CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| -> Response {
                tracing::error!("a request handler panicked");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::Internal,
                    "internal error",
                )
                .into_response()
            },
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .service(traced(routes(keyward, serves)))
}

/// The routes `serves` names, with the JSON 404 and 405 fallbacks.
fn routes(keyward: Arc<Keyward>, serves: Serves) -> Router {
    let (api, _) = api_routes().split_for_parts();
    let (metrics, _) = metrics_routes().split_for_parts();
    let router = match serves {
        Serves::All => api.merge(crate::web::router()).merge(metrics),
        Serves::AllButMetrics => api.merge(crate::web::router()),
        Serves::MetricsOnly => metrics,
    };
    router
        // A browser that asks for HTML gets a page; everyone else the JSON error.
        .fallback(|headers: HeaderMap| async move {
            if crate::web::wants_html(&headers) {
                crate::web::not_a_page(false)
            } else {
                ApiError::not_found().into_response()
            }
        })
        .method_not_allowed_fallback(|headers: HeaderMap| async move {
            if crate::web::wants_html(&headers) {
                crate::web::not_a_page(true)
            } else {
                ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    ErrorCode::MethodNotAllowed,
                    "this method is not allowed here",
                )
                .into_response()
            }
        })
        .with_state(keyward)
}

/// The one place a route is registered with its documentation: every route of the JSON API and
/// the standard interfaces but `/metrics` (the web pages, HTML for people, are not documented
/// and are merged in [`routes`]).
fn api_routes() -> OpenApiRouter<Arc<Keyward>> {
    // `/v1/auth` answers every method alike (proxies forward the original one), and is
    // documented with each of them.
    let (schemas, paths, _) = routes!(forward_auth::forward_auth);
    let forward_auth = (schemas, paths, any(forward_auth::forward_auth));
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(tokens::create_token, tokens::list_tokens))
        .routes(routes!(tokens::get_self))
        .routes(routes!(tokens::regenerate_self))
        .routes(routes!(
            tokens::get_token,
            tokens::update_token,
            tokens::revoke_token
        ))
        .routes(routes!(tokens::regenerate_token))
        .routes(routes!(tokens::bulk_revoke_tokens))
        .routes(routes!(leaks::report_github_leaks))
        .routes(routes!(leaks::gitlab_token_types))
        .routes(routes!(leaks::gitlab_revoke_tokens))
        .routes(routes!(leaks::report_leaks))
        .routes(routes!(users::create_user, users::list_users))
        .routes(routes!(
            users::get_user,
            users::update_user,
            users::delete_user
        ))
        .routes(routes!(users::issue_token))
        .routes(routes!(verify::verify_token))
        .routes(routes!(tokens::list_audit))
        .routes(routes!(events::list_events))
        .routes(routes!(events::list_deliveries))
        .routes(routes!(oauth::introspect_token))
        .routes(routes!(oauth::revoke_token_by_secret))
        .routes(forward_auth)
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(openapi::openapi_json))
}

/// `/metrics`, with its documentation: served per [`Serves`], documented always.
fn metrics_routes() -> OpenApiRouter<Arc<Keyward>> {
    OpenApiRouter::new().routes(routes!(ops::metrics))
}

/// The OpenAPI document of every route [`api_routes`] and [`metrics_routes`] register.
fn document() -> utoipa::openapi::OpenApi {
    let mut document = api_routes().merge(metrics_routes()).into_openapi();
    distinct_operation_ids(&mut document);
    document
}

/// OpenAPI wants every `operationId` unique, and an operation documented under several methods
/// (`/v1/auth`) gets its handler's name under each: the method is added to all but the `GET`.
fn distinct_operation_ids(document: &mut utoipa::openapi::OpenApi) {
    for item in document.paths.paths.values_mut() {
        let get_id = item.get.as_ref().and_then(|op| op.operation_id.clone());
        let methods = [
            ("put", &mut item.put),
            ("post", &mut item.post),
            ("delete", &mut item.delete),
            ("options", &mut item.options),
            ("head", &mut item.head),
            ("patch", &mut item.patch),
            ("trace", &mut item.trace),
        ];
        for (method, operation) in methods {
            if let Some(operation) = operation
                && let Some(id) = &mut operation.operation_id
                && get_id.as_ref() == Some(id)
            {
                id.push('_');
                id.push_str(method);
            }
        }
    }
}

/// Adds a debug span per request (inside the router, so it can name the matched route) when
/// debug logging is on. Otherwise it is left out: even unrecorded, it costs two clock reads and
/// a layer per request, and what it would report at other levels (5xx answers) is logged where
/// the error is made (see [`ApiError`]).
fn traced(router: Router) -> Router {
    let wanted = tracing::enabled!(tracing::Level::DEBUG)
        || tracing::enabled!(target: "tower_http::trace", tracing::Level::DEBUG);
    if wanted {
        router.layer(TraceLayer::new_for_http().make_span_with(request_span))
    } else {
        router
    }
}

/// The span for one request: the method and the matched route template, never the URI itself,
/// because a client may paste a secret where an id or a query belongs.
fn request_span(request: &Request<Body>) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    tracing::debug_span!("request", method = %request.method(), route)
}
