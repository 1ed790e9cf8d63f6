//! A tower layer for axum services: `require_scope(&verifier, "droplet:read")` lets a request
//! through only with an `Authorization: Bearer` token granting that scope, and puts the
//! token's [`Identity`] into the request's extensions (take it in a handler as an extractor).
//! Refusals are keyward's own answers: 401 or 403 with the RFC 6750 `WWW-Authenticate`
//! challenge and the JSON error body.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use axum::{Router, routing::get};
//! use keyward::layer::require_scope;
//! use keyward::verifier::{Identity, RemoteVerifier};
//!
//! let verifier = RemoteVerifier::new("http://127.0.0.1:8080")?;
//! let app: Router = Router::new()
//!     .route("/droplets", get(|who: Identity| async move { format!("hello {}", who.owner_name) }))
//!     .layer(require_scope(&verifier, "droplet:read")?);
//! # Ok(())
//! # }
//! ```

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{Request, header};
use axum::response::{IntoResponse, Response};
use keyward_core::{ScopeError, Scopes};
use keyward_server::ServiceError;
use keyward_server::http::ApiError;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

use crate::verifier::{Identity, TokenVerifier, VerifyError};

/// A layer requiring every scope of `scopes` (space-separated: `"droplet:read volume:read"`;
/// empty: any active token). Fails only if a scope is not a scope.
pub fn require_scope<V: TokenVerifier + Clone>(
    verifier: &V,
    scopes: &str,
) -> Result<RequireScopeLayer<V>, ScopeError> {
    Ok(RequireScopeLayer {
        verifier: Arc::new(verifier.clone()),
        wanted: Arc::new(Scopes::parse_space_separated(scopes)?),
    })
}

/// The layer [`require_scope`] makes.
pub struct RequireScopeLayer<V> {
    verifier: Arc<V>,
    wanted: Arc<Scopes>,
}

impl<V> Clone for RequireScopeLayer<V> {
    fn clone(&self) -> Self {
        Self {
            verifier: Arc::clone(&self.verifier),
            wanted: Arc::clone(&self.wanted),
        }
    }
}

impl<S, V> Layer<S> for RequireScopeLayer<V> {
    type Service = RequireScope<S, V>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireScope {
            inner,
            verifier: Arc::clone(&self.verifier),
            wanted: Arc::clone(&self.wanted),
        }
    }
}

/// The service [`RequireScopeLayer`] wraps around a route.
pub struct RequireScope<S, V> {
    inner: S,
    verifier: Arc<V>,
    wanted: Arc<Scopes>,
}

impl<S: Clone, V> Clone for RequireScope<S, V> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            verifier: Arc::clone(&self.verifier),
            wanted: Arc::clone(&self.wanted),
        }
    }
}

/// What the request's `Authorization` headers present.
enum Presented<'a> {
    /// No header.
    Nothing,
    /// One header: its Bearer token (empty, hence malformed, when it is not a Bearer credential).
    Token(&'a str),
    /// Several headers: a malformed request.
    Several,
}

fn bearer(request: &Request<Body>) -> Presented<'_> {
    let mut all = request.headers().get_all(header::AUTHORIZATION).iter();
    let Some(value) = all.next() else {
        return Presented::Nothing;
    };
    if all.next().is_some() {
        return Presented::Several;
    }
    let text = value.to_str().unwrap_or("");
    Presented::Token(match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => "",
    })
}

fn refusal(e: VerifyError) -> Response {
    ApiError::from(ServiceError::from(e)).into_response()
}

impl<S, V> Service<Request<Body>> for RequireScope<S, V>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    V: TokenVerifier,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        // The clone that was polled ready serves this call; a fresh clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = Arc::clone(&self.verifier);
        let wanted = Arc::clone(&self.wanted);
        Box::pin(async move {
            let secret = match bearer(&request) {
                Presented::Token(secret) => zeroize::Zeroizing::new(secret.to_owned()),
                Presented::Nothing => return Ok(refusal(VerifyError::Unauthenticated(None))),
                Presented::Several => {
                    return Ok(
                        ApiError::invalid_request("send exactly one Authorization header")
                            .into_response(),
                    );
                }
            };
            match verifier.verify(&secret, &wanted).await {
                Ok(identity) => {
                    request.extensions_mut().insert(identity);
                    inner.call(request).await
                }
                Err(e) => Ok(refusal(e)),
            }
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Identity {
    type Rejection = Response;

    /// The identity [`require_scope`] verified; a route without the layer answers 401.
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Identity>()
            .cloned()
            .ok_or_else(|| refusal(VerifyError::Unauthenticated(None)))
    }
}
