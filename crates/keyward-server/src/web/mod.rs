//! The web page: server-rendered pages where a person signs in, generates a token and sees it
//! once, lists, regenerates and revokes their tokens; and admin pages for users (people and
//! service accounts) and for service accounts' tokens.
//!
//! Handlers are thin, as in the JSON API: extract, check the form's CSRF token, call one service
//! method, render. The rules (sessions, throttling, ownership, lifetimes) are in the service.
//!
//! Safety of the one page that shows a secret: it is the direct response to the POST that made
//! the secret (never a redirect, so the secret is in no URL, cookie or history entry), it is
//! `Cache-Control: no-store`, and the form carries a one-time nonce, so re-sending it (a reload)
//! does not make a second token; it says the secret was shown once instead.

mod handlers;
mod pages;

use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use std::sync::Arc;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::service::{Keyward, ServiceError, WebSession};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "keyward_session";
/// The sign-in form's CSRF cookie: signed with the server key (there is no session yet to tie a
/// token to), the form's token derived from it.
pub const LOGIN_COOKIE: &str = "keyward_login";
/// A started single sign-on's cookie (seed, expiry, MAC under the server key), sent only to
/// `/login/oidc` and its callback.
pub const SSO_COOKIE: &str = "keyward_oidc";
const SSO_COOKIE_PATH: &str = "/login/oidc";

/// The strict policy every page gets: nothing inline, nothing from elsewhere, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const STYLESHEET: &str = include_str!("../../static/keyward.css");
const COPY_SCRIPT: &str = include_str!("../../static/copy.js");

/// The pages, to be merged into the application router.
pub fn router() -> Router<Arc<Keyward>> {
    let router = Router::new()
        .route("/", get(|| async { Redirect::to("/tokens") }))
        .route(
            "/login",
            get(handlers::sign_in_page).post(handlers::sign_in),
        )
        .route("/login/oidc", get(handlers::start_sso))
        .route("/login/oidc/callback", get(handlers::finish_sso))
        .route("/logout", post(handlers::sign_out))
        .route("/tokens", get(handlers::tokens_page))
        .route(
            "/tokens/new",
            get(handlers::new_token_page).post(handlers::create_token),
        )
        .route(
            "/tokens/{id}/revoke",
            get(handlers::revoke_page).post(handlers::revoke_token),
        )
        .route(
            "/tokens/{id}/regenerate",
            get(handlers::regenerate_page).post(handlers::regenerate_token),
        )
        .route(
            "/admin/users",
            get(handlers::users_page).post(handlers::add_user),
        )
        .route(
            "/admin/users/{id}/disable",
            get(handlers::disable_page).post(handlers::disable_user),
        )
        .route("/admin/users/{id}/enable", post(handlers::enable_user))
        .route("/admin/users/{id}/make-admin", post(handlers::make_admin))
        .route(
            "/admin/users/{id}/remove-admin",
            post(handlers::remove_admin),
        )
        .route(
            "/admin/users/{id}/delete",
            get(handlers::delete_page).post(handlers::delete_user),
        )
        .route(
            "/admin/users/{id}/tokens",
            get(handlers::service_tokens_page).post(handlers::create_service_token),
        )
        .route(
            "/admin/users/{id}/tokens/{token}/revoke",
            get(handlers::revoke_service_token_page).post(handlers::revoke_service_token),
        )
        .route(
            "/account/password",
            get(handlers::password_page).post(handlers::change_password),
        )
        .route("/static/keyward.css", get(stylesheet))
        .route("/static/copy.js", get(copy_script));
    // Pages are private to the person signed in: no cache keeps them.
    let router = router.layer(SetResponseHeaderLayer::if_not_present(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    ));
    PAGE_HEADERS.iter().fold(router, |router, (name, value)| {
        router.layer(SetResponseHeaderLayer::overriding(
            name.clone(),
            HeaderValue::from_static(value),
        ))
    })
}

/// The security headers every page carries (the layers above add them to the pages' routes;
/// [`not_a_page`] to the answers for addresses no route has).
const PAGE_HEADERS: [(header::HeaderName, &str); 4] = [
    (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
];

/// Whether a request asks for HTML by name (`Accept: text/html`), as a browser's navigation
/// does; API clients (`*/*`, `application/json`, or nothing) do not.
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| {
            let mut parts = media.split(';').map(str::trim);
            let html = parts
                .next()
                .is_some_and(|t| t.eq_ignore_ascii_case("text/html"));
            // `q=0` means "not this one".
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .is_some_and(|q| q.parse::<f32>().is_ok_and(|q| q <= 0.0))
            });
            html && !refused
        })
}

/// The HTML answer (404 or 405) to a browser that asked for an address no page has, or in a
/// way no page takes, with the pages' security headers.
pub fn not_a_page(method_not_allowed: bool) -> Response {
    let error = if method_not_allowed {
        PageError::MethodNotAllowed
    } else {
        PageError::NotFound
    };
    let mut response = error.into_response();
    let h = response.headers_mut();
    for (name, value) in &PAGE_HEADERS {
        h.insert(name.clone(), HeaderValue::from_static(value));
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", STYLESHEET)
}

async fn copy_script() -> Response {
    asset("text/javascript; charset=utf-8", COPY_SCRIPT)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// A cookie's value from the request, if sent.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether the browser reached us over HTTPS: the deployment says so, or the proxy in front
/// says so in `X-Forwarded-Proto`. Trusting that header can only add `Secure` to a cookie,
/// which never weakens it, so it needs no list of trusted proxies.
fn over_https(kw: &Keyward, headers: &HeaderMap) -> bool {
    kw.settings().secure_cookies
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value: `HttpOnly; SameSite=Strict`, `Secure` over HTTPS; `max_age` 0 clears.
fn set_cookie(name: &str, value: &str, path: &str, max_age: i64, secure: bool) -> String {
    format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// A `Set-Cookie` value like [`set_cookie`]'s but `SameSite=Lax`, for the one cookie that must
/// come back on a navigation from another site (a single sign-on's return from the provider).
fn set_lax_cookie(name: &str, value: &str, path: &str, max_age: i64, secure: bool) -> String {
    format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Refuses (403) a form a browser says was sent from another site (`Sec-Fetch-Site`), sibling
/// subdomains included: those can plant cookies for this one (cookie tossing), so a cookie and a
/// form field that match are not proof enough on their own. Browsers that do not send the
/// header (and non-browser clients) are judged by the CSRF token alone.
fn same_origin(headers: &HeaderMap) -> Result<(), PageError> {
    let mut sites = headers.get_all("sec-fetch-site").iter();
    let first = sites.next();
    if sites.next().is_some() {
        return Err(PageError::Forbidden);
    }
    match first.map(HeaderValue::as_bytes) {
        None | Some(b"same-origin" | b"none") => Ok(()),
        Some(_) => Err(PageError::Forbidden),
    }
}

/// A page that did not work out, shown as a friendly page with the right status.
#[derive(Debug)]
pub enum PageError {
    /// No such page or record, or not the viewer's (never told apart).
    NotFound,
    /// A page asked for with a method it does not take.
    MethodNotAllowed,
    /// A form without the right CSRF token.
    Forbidden,
    /// Input the service refused; the message says why.
    BadRequest(String),
    /// The database is unreachable.
    Unavailable,
    /// Too many sign-ins at once: come back shortly.
    Busy,
    /// Something that should not happen (logged).
    Internal,
}

impl From<ServiceError> for PageError {
    fn from(e: ServiceError) -> Self {
        match e {
            // The admin pages do not exist for anyone the service does not let in.
            ServiceError::NotFound | ServiceError::Forbidden(_) => Self::NotFound,
            ServiceError::Unauthenticated(_)
            | ServiceError::RotatedOut
            | ServiceError::MissingScope { .. }
            | ServiceError::ScopeCeiling { .. } => Self::Forbidden,
            ServiceError::Busy => Self::Busy,
            ServiceError::Unavailable(why) => {
                tracing::error!(error = %why, "page: store unavailable");
                Self::Unavailable
            }
            ServiceError::Internal(why) => {
                tracing::error!(error = %why, "page: internal error");
                Self::Internal
            }
            other => Self::BadRequest(other.to_string()),
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let retry_after = matches!(self, Self::Busy);
        let (status, heading, message) = match self {
            Self::NotFound => (
                StatusCode::NOT_FOUND,
                "Not found",
                "There is nothing here, or it is not yours to see.".to_owned(),
            ),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "Not allowed here",
                "This address does not take that kind of request. Use the page's own links and buttons.".to_owned(),
            ),
            Self::Forbidden => (
                StatusCode::FORBIDDEN,
                "Request refused",
                "This form has expired or did not come from keyward. Go back, reload the page and try again.".to_owned(),
            ),
            Self::BadRequest(why) => (StatusCode::BAD_REQUEST, "That did not work", why),
            Self::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Busy",
                "Too many people are signing in right now. Try again in a moment.".to_owned(),
            ),
            Self::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "keyward cannot reach its database right now. Try again in a moment.".to_owned(),
            ),
            Self::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "The error was logged. Try again in a moment.".to_owned(),
            ),
        };
        let page = pages::Message {
            nav: None,
            section: "",
            heading: heading.to_owned(),
            message,
            tone: "error",
            back: "/tokens".to_owned(),
            back_label: "Back to my tokens".to_owned(),
        };
        let mut response = (status, pages::render(&page)).into_response();
        if retry_after {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(crate::service::sessions::RETRY_AFTER_SECS),
            );
        }
        response
    }
}

/// The signed-in person; anyone else is sent to the sign-in page.
pub struct Signed(pub WebSession);

impl FromRequestParts<Arc<Keyward>> for Signed {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        kw: &Arc<Keyward>,
    ) -> Result<Self, Self::Rejection> {
        let Some(secret) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(Redirect::to("/login").into_response());
        };
        match kw.web_session(secret).await {
            Ok(Some(session)) => Ok(Self(session)),
            Ok(None) => {
                let clear = set_cookie(SESSION_COOKIE, "", "/", 0, over_https(kw, &parts.headers));
                Err(([(header::SET_COOKIE, clear)], Redirect::to("/login")).into_response())
            }
            Err(e) => Err(PageError::from(e).into_response()),
        }
    }
}

/// The one path parameter of a page (`/tokens/{id}/…`, `/admin/users/{id}/…`) as text. A path
/// that does not decode (invalid UTF-8) names nothing: the friendly 404 page, never axum's
/// plain-text rejection.
pub struct PagePath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PagePath {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(id)| Self(id))
            .map_err(|_| PageError::NotFound)
    }
}

/// The two path parameters of a page under a user (`/admin/users/{id}/tokens/{token}/…`) as
/// text; like [`PagePath`], a path that does not decode names nothing.
pub struct PagePair(pub String, pub String);

impl<S: Send + Sync> FromRequestParts<S> for PagePair {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path((a, b))| Self(a, b))
            .map_err(|_| PageError::NotFound)
    }
}

/// A submitted form's fields, in order; repeated names (the scope checkboxes) are kept. Also
/// whether the browser said it came from this site (see `same_origin`).
pub struct Fields {
    pairs: Vec<(String, String)>,
    same_origin: bool,
}

impl<S: Send + Sync> FromRequest<S> for Fields {
    type Rejection = PageError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let same_origin = same_origin(req.headers()).is_ok();
        // Every form carries a CSRF token, so one that cannot be read (no form body, another
        // content type) cannot show it came from keyward: refused as a form without it is.
        let axum::Form(pairs) = axum::Form::<Vec<(String, String)>>::from_request(req, state)
            .await
            .map_err(|e| match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => {
                    PageError::BadRequest(format!("The form could not be read: {}", e.body_text()))
                }
                _ => PageError::Forbidden,
            })?;
        Ok(Self { pairs, same_origin })
    }
}

impl Fields {
    /// The first value of `name`.
    fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`.
    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Refuses the form (403) if the browser says another site sent it.
    fn check_origin(&self) -> Result<(), PageError> {
        if self.same_origin {
            Ok(())
        } else {
            Err(PageError::Forbidden)
        }
    }

    /// Refuses the form (403) unless it carries the session's CSRF token and came from this
    /// site.
    fn check_csrf(&self, kw: &Keyward, session: &WebSession) -> Result<(), PageError> {
        self.check_origin()?;
        match self.get("csrf") {
            Some(token) if kw.csrf_matches(session, token) => Ok(()),
            _ => Err(PageError::Forbidden),
        }
    }
}
