//! The pages' templates (compiled in by askama from `templates/`) and the views they show.

use askama::Template;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use keyward_core::{TokenRecord, TokenState, User, UserKind};
use time::OffsetDateTime;
use time::macros::format_description;

use crate::service::WebSession;

/// Renders a page as HTML; a template error (a bug, never bad input) is logged and answers 500.
pub(super) fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            html,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "page: template failed");
            (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal error",
            )
                .into_response()
        }
    }
}

/// The signed-in person, as the page header shows them.
pub(super) struct Nav {
    pub name: String,
    pub is_admin: bool,
    pub csrf: String,
    /// How they signed in: `password`, or the OpenID provider's name.
    pub method: String,
}

impl Nav {
    pub fn of(session: &WebSession) -> Option<Self> {
        Some(Self {
            name: session.user.name.to_string(),
            is_admin: session.user.is_admin,
            csrf: session.csrf.clone(),
            method: session.method.clone(),
        })
    }
}

/// A time as pages show it.
pub(super) fn when(at: OffsetDateTime) -> String {
    at.format(format_description!(
        "[year]-[month]-[day] [hour]:[minute] UTC"
    ))
    .unwrap_or_else(|_| at.to_string())
}

/// An expiry as pages show it: the time and how far away it is.
pub(super) fn expiry(at: Option<OffsetDateTime>, now: OffsetDateTime) -> String {
    match at {
        None => "Never".to_owned(),
        Some(at) if at <= now => format!("{} (expired)", when(at)),
        Some(at) => {
            // Rounded to the nearest day: a 30-day token made a minute ago has 30 days left.
            let days = ((at - now).whole_seconds() + 43_200) / 86_400;
            let left = match days {
                0 => "today".to_owned(),
                1 => "in 1 day".to_owned(),
                n => format!("in {n} days"),
            };
            format!("{} ({left})", when(at))
        }
    }
}

/// A token's limits as pages show them, on one line (`from 203.0.113.0/24 · 87 of 100 uses
/// left · rate limit 100/1m`); `None` for a token without any. Uses left are the store's count,
/// as the API gives it: uses an instance holds unspent count as spent.
pub(super) fn limits(t: &TokenRecord) -> Option<String> {
    let limits = &t.limits;
    let mut parts = Vec::new();
    if !limits.allowed_ips.is_empty() {
        let ranges: Vec<String> = limits.allowed_ips.iter().map(ToString::to_string).collect();
        parts.push(format!("from {}", ranges.join(", ")));
    }
    if let Some(max) = limits.max_uses {
        let left = t.remaining.unwrap_or(max);
        parts.push(match limits.refill {
            // After a refill the uses left are counted from its amount, not from `max_uses`.
            Some(refill) => format!("{left} uses left, refill {refill}"),
            None => format!("{left} of {max} uses left"),
        });
    }
    if let Some(rate) = limits.rate_limit {
        parts.push(format!("rate limit {rate}"));
    }
    (!parts.is_empty()).then(|| parts.join(" · "))
}

/// One row of the tokens table.
pub(super) struct TokenRow {
    pub id: String,
    pub name: String,
    pub hint: String,
    pub scopes: Vec<String>,
    pub created: String,
    pub expires: String,
    pub last_used: String,
    pub last_ip: Option<String>,
    /// Its limits on one line, if it has any.
    pub limits: Option<String>,
    pub state: &'static str,
    pub revoked: Option<String>,
    /// Until when the previous secret still works, after a regeneration with a grace period.
    pub grace: Option<String>,
}

impl TokenRow {
    /// The row of `t` at `now`; `old_secret_until` is when its previous secret stops working,
    /// if one still works (see `TokenStore::old_secrets_until`).
    pub fn new(
        t: &TokenRecord,
        now: OffsetDateTime,
        old_secret_until: Option<OffsetDateTime>,
    ) -> Self {
        let state = match t.state(now) {
            TokenState::Active => "active",
            TokenState::Expired => "expired",
            TokenState::Revoked => "revoked",
        };
        Self {
            id: t.id.to_string(),
            name: t.name.as_str().to_owned(),
            hint: t.hint.clone(),
            scopes: t.scopes.iter().map(ToString::to_string).collect(),
            created: when(t.created_at),
            // A revoked token's expiry no longer means anything: when it ended does.
            expires: match t.revoked_at {
                Some(at) => format!("Revoked {}", when(at)),
                None => expiry(t.expires_at, now),
            },
            last_used: t.last_used_at.map_or_else(|| "Never".to_owned(), when),
            last_ip: t.last_used_ip.map(|ip| ip.to_string()),
            limits: limits(t),
            state,
            revoked: t.revoked_at.map(|at| match &t.revoke_reason {
                Some(reason) => format!(
                    "{} by {}: {reason}",
                    when(at),
                    t.revoked_by.as_deref().unwrap_or("?")
                ),
                None => format!("{} by {}", when(at), t.revoked_by.as_deref().unwrap_or("?")),
            }),
            grace: old_secret_until
                .filter(|until| *until > now && t.state(now) == TokenState::Active)
                .map(|until| format!("Previous secret works until {}", when(until))),
        }
    }
}

#[derive(Template)]
#[template(path = "login.html")]
pub(super) struct SignInPage {
    pub nav: Option<Nav>,
    pub section: &'static str,
    pub csrf: String,
    pub username: String,
    pub error: Option<String>,
    /// The OpenID provider's name, when single sign-on is on.
    pub sso: Option<String>,
    /// Whether the password form is shown.
    pub passwords: bool,
}

/// The page a single sign-on ends on: it moves on to `/tokens` itself. A redirect would not do:
/// the navigation began at the provider, so the browser would not send the `SameSite=Strict`
/// session cookie with it.
#[derive(Template)]
#[template(path = "signed_in.html")]
pub(super) struct SignedInPage {
    pub nav: Option<Nav>,
    pub section: &'static str,
}

/// Where the token table's row actions lead: `{base}/{id}/revoke` (and `…/regenerate` when
/// offered).
pub(super) struct TokenActions {
    pub base: String,
    pub regenerate: bool,
}

#[derive(Template)]
#[template(path = "tokens.html")]
pub(super) struct TokensPage {
    pub nav: Option<Nav>,
    pub section: &'static str,
    pub notice: Option<String>,
    pub actions: TokenActions,
    pub active: Vec<TokenRow>,
    pub inactive: Vec<TokenRow>,
}

/// One resource's checkboxes on the generate page.
pub(super) struct ScopeGroup {
    pub resource: String,
    /// A resource with a single action offers just that one choice (and whether it is
    /// checked): "Full access" and "Read only" would be the same thing twice.
    pub only: Option<(String, bool)>,
    pub all_checked: bool,
    pub has_read: bool,
    pub read_checked: bool,
    /// Each action and whether it is checked.
    pub actions: Vec<(String, bool)>,
}

/// The generate form (`token_form.html`), on the generate page and a service account's page.
pub(super) struct TokenForm {
    /// Where it is posted.
    pub action: String,
    /// Where "Cancel" leads, if anywhere.
    pub cancel: Option<String>,
    pub csrf: String,
    pub nonce: String,
    pub name: String,
    pub expires: String,
    pub expires_on: String,
    pub expiry_choices: Vec<(&'static str, &'static str)>,
    pub allow_never: bool,
    pub min_date: String,
    pub max_date: String,
    pub max_days: i64,
    pub groups: Vec<ScopeGroup>,
    /// The limits' fields, as typed (empty: no such limit).
    pub allowed_ips: String,
    /// Whether the deployment requires allowed IP addresses (`require_allowed_ips`).
    pub ips_required: bool,
    pub max_uses: String,
    pub refill: String,
    pub rate_limit: String,
}

#[derive(Template)]
#[template(path = "new_token.html")]
pub(super) struct NewTokenPage {
    pub nav: Option<Nav>,
    pub section: &'static str,
    pub error: Option<String>,
    pub form: TokenForm,
}

#[derive(Template)]
#[template(path = "once.html")]
pub(super) struct OncePage<'a> {
    pub nav: Option<Nav>,
    pub section: &'static str,
    pub heading: &'static str,
    /// The list the token is in: its address and what the links back call it.
    pub back: String,
    pub crumb: String,
    pub back_label: String,
    pub name: String,
    /// The secret: this page is the only response that ever carries it.
    pub secret: &'a str,
    pub scopes: Vec<String>,
    pub expires: String,
    /// Its limits on one line, if it has any.
    pub limits: Option<String>,
    pub grace: Option<String>,
}

#[derive(Template)]
#[template(path = "confirm_revoke.html")]
pub(super) struct RevokePage {
    pub nav: Option<Nav>,
    pub section: &'static str,
    pub csrf: String,
    /// Where the form is posted.
    pub action: String,
    /// The list the token is in, and what the breadcrumb calls it.
    pub back: String,
    pub crumb: String,
    pub token: TokenRow,
}

#[derive(Template)]
#[template(path = "confirm_regenerate.html")]
pub(super) struct RegeneratePage {
    pub nav: Option<Nav>,
    pub section: &'static str,
    pub csrf: String,
    pub nonce: String,
    pub token: TokenRow,
}

#[derive(Template)]
#[template(path = "message.html")]
pub(super) struct Message {
    pub nav: Option<Nav>,
    pub section: &'static str,
    pub heading: String,
    pub message: String,
    /// `ok`, `warn` or `error`.
    pub tone: &'static str,
    pub back: String,
    pub back_label: String,
}

/// One row of the users table.
pub(super) struct UserRow {
    pub id: String,
    pub name: String,
    pub is_service: bool,
    pub is_admin: bool,
    pub is_self: bool,
    pub external_id: Option<String>,
    pub email: Option<String>,
    pub created: String,
    pub disabled: Option<String>,
}

impl UserRow {
    pub fn new(u: &User, viewer: &WebSession) -> Self {
        Self {
            id: u.id.to_string(),
            name: u.name.to_string(),
            is_service: u.kind == UserKind::Service,
            is_admin: u.is_admin,
            is_self: u.id == viewer.user.id,
            external_id: u.external_id.as_ref().map(ToString::to_string),
            email: u.email.as_ref().map(ToString::to_string),
            created: when(u.created_at),
            disabled: u.disabled_at.map(when),
        }
    }
}

/// What the add-user form shows: empty, or what was sent when it was refused.
#[derive(Default)]
pub(super) struct UserDraft {
    pub name: String,
    pub is_service: bool,
    pub external_id: String,
    pub email: String,
    pub is_admin: bool,
}

#[derive(Template)]
#[template(path = "users.html")]
pub(super) struct UsersPage {
    pub nav: Option<Nav>,
    pub section: &'static str,
    pub csrf: String,
    pub notice: Option<String>,
    pub error: Option<String>,
    pub users: Vec<UserRow>,
    /// Whether this is a later page (so a link leads back to the first).
    pub later: bool,
    /// The next page's `before` cursor, if there is one.
    pub next: Option<String>,
    pub draft: UserDraft,
}

#[derive(Template)]
#[template(path = "confirm_disable.html")]
pub(super) struct DisablePage {
    pub nav: Option<Nav>,
    pub section: &'static str,
    pub csrf: String,
    pub id: String,
    pub name: String,
}

#[derive(Template)]
#[template(path = "confirm_delete.html")]
pub(super) struct DeletePage {
    pub nav: Option<Nav>,
    pub section: &'static str,
    pub csrf: String,
    pub id: String,
    pub name: String,
}

#[derive(Template)]
#[template(path = "service_tokens.html")]
pub(super) struct ServiceTokensPage {
    pub nav: Option<Nav>,
    pub section: &'static str,
    pub notice: Option<String>,
    pub error: Option<String>,
    /// The service account's name.
    pub name: String,
    pub disabled: bool,
    pub actions: TokenActions,
    pub active: Vec<TokenRow>,
    pub inactive: Vec<TokenRow>,
    pub form: TokenForm,
}

#[derive(Template)]
#[template(path = "account_password.html")]
pub(super) struct PasswordPage {
    pub nav: Option<Nav>,
    pub section: &'static str,
    pub csrf: String,
    /// The signed-in person's name (for password managers, and the page's text).
    pub name: String,
    /// How they signed in this time: `password`, or the OpenID provider's name.
    pub method: String,
    /// Whether they have a password to change.
    pub has_password: bool,
    pub min_chars: usize,
    pub max_chars: usize,
    pub notice: Option<String>,
    pub error: Option<String>,
}
