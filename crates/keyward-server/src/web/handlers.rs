//! The page handlers: extract, check the form, call one service method, render.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use keyward_core::{
    ExpiryRequest, RawSecret, Scopes, TokenId, TokenName, UserId, UserName, expiry::parse_grace,
};
use std::collections::BTreeSet;
use std::sync::Arc;
use time::{Date, Duration, OffsetDateTime, Time};

use super::pages::{self, Nav, ScopeGroup, TokenRow, UserRow, render};
use super::{
    Fields, LOGIN_COOKIE, PageError, PagePath, SESSION_COOKIE, SSO_COOKIE, SSO_COOKIE_PATH, Signed,
    cookie, over_https, set_cookie, set_lax_cookie,
};
use crate::http::extract::ClientIp;
use crate::service::sessions::oidc::SSO_LIFETIME;
use crate::service::sessions::{SIGN_IN_FORM_LIFETIME, SIGN_IN_WINDOW};
use crate::service::{
    Action, Issued, Keyward, MAX_PAGE, RegenerateOptions, ServiceError, SignIn, SignInForm,
    SsoCallback, SsoRefusal, SsoSignIn, UserRequest, WebSession,
};
use subtle::ConstantTimeEq as _;

type Kw = State<Arc<Keyward>>;

/// The expiry choices offered besides a custom date and "never": value (days) and label.
const EXPIRY_CHOICES: [(&str, &str); 3] = [("30", "30 days"), ("60", "60 days"), ("90", "90 days")];

fn date_text(d: Date) -> String {
    d.format(time::macros::format_description!("[year]-[month]-[day]"))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------- sign-in

/// `GET /login`
pub async fn sign_in_page(State(kw): Kw, headers: HeaderMap) -> Result<Response, PageError> {
    // Reuse the form a previous visit set, so two tabs do not invalidate each other.
    let form = match cookie(&headers, LOGIN_COOKIE).and_then(|c| kw.sign_in_form(c)) {
        Some(form) => form,
        None => kw.new_sign_in_form()?,
    };
    Ok(sign_in_form(
        &kw,
        &headers,
        form,
        String::new(),
        None,
        StatusCode::OK,
    ))
}

fn sign_in_form(
    kw: &Keyward,
    headers: &HeaderMap,
    form: SignInForm,
    username: String,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let cookie = set_cookie(
        LOGIN_COOKIE,
        &form.cookie,
        "/login",
        SIGN_IN_FORM_LIFETIME.whole_seconds(),
        over_https(kw, headers),
    );
    let page = pages::SignInPage {
        nav: None,
        section: "",
        csrf: form.field,
        username,
        error,
        sso: kw.sso_provider_name().map(str::to_owned),
        passwords: kw.password_sign_in(),
    };
    let mut response = (status, [(header::SET_COOKIE, cookie)], render(&page)).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        // The throttle's window slides: a minute from now, this attempt is forgotten.
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(SIGN_IN_WINDOW.whole_seconds().unsigned_abs()),
        );
    }
    response
}

/// `POST /login`
pub async fn sign_in(
    State(kw): Kw,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    form: Fields,
) -> Result<Response, PageError> {
    if !kw.password_sign_in() {
        // Said before the form's token is checked: the page has no password form to get one.
        let form = kw.new_sign_in_form()?;
        return Ok(sign_in_form(
            &kw,
            &headers,
            form,
            String::new(),
            Some(PASSWORDS_OFF.to_owned()),
            StatusCode::FORBIDDEN,
        ));
    }
    // The form's token must be the one derived from a signed, unexpired cookie of ours.
    form.check_origin()?;
    let signed = cookie(&headers, LOGIN_COOKIE)
        .and_then(|c| kw.sign_in_form(c))
        .ok_or(PageError::Forbidden)?;
    let given = form.get("csrf").unwrap_or("");
    if !bool::from(signed.field.as_bytes().ct_eq(given.as_bytes())) {
        return Err(PageError::Forbidden);
    }
    let username = form.get("username").unwrap_or("").trim().to_owned();
    let password = RawSecret::new(form.get("password").unwrap_or("").to_owned());
    match kw.sign_in(&username, password, ip).await? {
        SignIn::Ok { secret, .. } => {
            let secure = over_https(&kw, &headers);
            let session = set_cookie(
                SESSION_COOKIE,
                secret.expose(),
                "/",
                crate::service::sessions::SESSION_MAX.whole_seconds(),
                secure,
            );
            let done = set_cookie(LOGIN_COOKIE, "", "/login", 0, secure);
            let mut response = Redirect::to("/tokens").into_response();
            let h = response.headers_mut();
            for c in [session, done] {
                if let Ok(v) = HeaderValue::from_str(&c) {
                    h.append(header::SET_COOKIE, v);
                }
            }
            Ok(response)
        }
        SignIn::Refused => Ok(sign_in_form(
            &kw,
            &headers,
            signed,
            username,
            Some("Incorrect username or password.".to_owned()),
            StatusCode::UNAUTHORIZED,
        )),
        SignIn::Throttled => Ok(sign_in_form(
            &kw,
            &headers,
            signed,
            username,
            Some("Too many failed sign-in attempts. Wait a minute, then try again.".to_owned()),
            StatusCode::TOO_MANY_REQUESTS,
        )),
        SignIn::PasswordsOff => Ok(sign_in_form(
            &kw,
            &headers,
            signed,
            String::new(),
            Some(PASSWORDS_OFF.to_owned()),
            StatusCode::FORBIDDEN,
        )),
    }
}

/// What a password sign-in is told when only single sign-on is on.
const PASSWORDS_OFF: &str = "Signing in with a password is turned off here: use single sign-on.";

/// The sign-in page with why a single sign-on did not work.
fn sso_refused(kw: &Keyward, headers: &HeaderMap, why: &SsoRefusal) -> Result<Response, PageError> {
    let form = match cookie(headers, LOGIN_COOKIE).and_then(|c| kw.sign_in_form(c)) {
        Some(form) => form,
        None => kw.new_sign_in_form()?,
    };
    let status = match why {
        SsoRefusal::NotConfigured => StatusCode::NOT_FOUND,
        SsoRefusal::Unreachable => StatusCode::SERVICE_UNAVAILABLE,
        SsoRefusal::Throttled => StatusCode::TOO_MANY_REQUESTS,
        SsoRefusal::Disabled
        | SsoRefusal::Unknown
        | SsoRefusal::NoName
        | SsoRefusal::NameTaken(_) => StatusCode::FORBIDDEN,
        _ => StatusCode::UNAUTHORIZED,
    };
    let mut response = sign_in_form(
        kw,
        headers,
        form,
        String::new(),
        Some(why.to_string()),
        status,
    );
    // The sign-in this cookie stood for is over, whatever happened.
    let clear = set_cookie(SSO_COOKIE, "", SSO_COOKIE_PATH, 0, over_https(kw, headers));
    if let Ok(v) = HeaderValue::from_str(&clear) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(response)
}

/// `GET /login/oidc`: off to the OpenID provider, with the cookie the way back needs.
pub async fn start_sso(State(kw): Kw, headers: HeaderMap) -> Result<Response, PageError> {
    match kw.start_sso().await? {
        Ok(start) => {
            // Lax, not Strict: the browser comes back from the provider's site, a cross-site
            // navigation, and must bring this cookie along.
            let cookie = set_lax_cookie(
                SSO_COOKIE,
                &start.cookie,
                SSO_COOKIE_PATH,
                SSO_LIFETIME.whole_seconds(),
                over_https(&kw, &headers),
            );
            Ok((
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, start.location),
                    (header::SET_COOKIE, cookie),
                ],
            )
                .into_response())
        }
        Err(why) => sso_refused(&kw, &headers, &why),
    }
}

/// `GET /login/oidc/callback`: the provider's answer, checked by the service.
pub async fn finish_sso(
    State(kw): Kw,
    ClientIp(ip): ClientIp,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let callback = SsoCallback::from_query(query.as_deref().unwrap_or(""));
    let sso_cookie = cookie(&headers, SSO_COOKIE);
    match kw.finish_sso(sso_cookie, &callback, ip).await? {
        SsoSignIn::Ok { secret, .. } => {
            let secure = over_https(&kw, &headers);
            let page = pages::SignedInPage {
                nav: None,
                section: "",
            };
            let mut response = render(&page);
            let h = response.headers_mut();
            for c in [
                set_cookie(
                    SESSION_COOKIE,
                    secret.expose(),
                    "/",
                    crate::service::sessions::SESSION_MAX.whole_seconds(),
                    secure,
                ),
                set_cookie(SSO_COOKIE, "", SSO_COOKIE_PATH, 0, secure),
            ] {
                if let Ok(v) = HeaderValue::from_str(&c) {
                    h.append(header::SET_COOKIE, v);
                }
            }
            Ok(response)
        }
        SsoSignIn::Refused(why) => sso_refused(&kw, &headers, &why),
    }
}

/// `POST /logout`
pub async fn sign_out(
    State(kw): Kw,
    Signed(session): Signed,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    form: Fields,
) -> Result<Response, PageError> {
    form.check_csrf(&kw, &session)?;
    kw.sign_out(&session, ip).await?;
    let clear = set_cookie(SESSION_COOKIE, "", "/", 0, over_https(&kw, &headers));
    Ok(([(header::SET_COOKIE, clear)], Redirect::to("/login")).into_response())
}

// ---------------------------------------------------------------------------- tokens

/// `GET /tokens`
pub async fn tokens_page(State(kw): Kw, Signed(session): Signed) -> Result<Response, PageError> {
    tokens_with_notice(&kw, &session, None).await
}

async fn tokens_with_notice(
    kw: &Keyward,
    session: &WebSession,
    notice: Option<String>,
) -> Result<Response, PageError> {
    let caller = session.caller(None);
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = kw
            .list_tokens(&caller, None, after, crate::service::MAX_PAGE)
            .await?;
        after = page.next;
        all.extend(page.tokens);
        if after.is_none() {
            break;
        }
    }
    let now = kw.now();
    let (active, inactive): (Vec<_>, Vec<_>) = all
        .iter()
        .map(|t| TokenRow::new(t, now))
        .partition(|row| row.state == "active");
    let page = pages::TokensPage {
        nav: Nav::of(session),
        section: "tokens",
        notice,
        active,
        inactive,
    };
    Ok(render(&page))
}

/// The generate form, filled with what was submitted (or the defaults).
fn new_token_form(
    kw: &Keyward,
    session: &WebSession,
    form: Option<&Fields>,
    error: Option<String>,
) -> Result<Response, PageError> {
    let settings = kw.settings();
    let checked: BTreeSet<&str> = form.map(|f| f.all("scope").collect()).unwrap_or_default();
    let groups = settings
        .catalog
        .resources()
        .map(|(resource, actions)| {
            let actions: Vec<(String, bool)> = actions
                .map(|a| {
                    let scope = format!("{resource}:{a}");
                    (a.to_owned(), checked.contains(scope.as_str()))
                })
                .collect();
            ScopeGroup {
                resource: resource.to_owned(),
                all_checked: checked.contains(format!("{resource}:*").as_str()),
                has_read: actions.iter().any(|(a, _)| a == "read"),
                read_checked: false,
                actions: actions.into_iter().filter(|(a, _)| a != "read").collect(),
            }
        })
        .map(|mut g| {
            g.read_checked = checked.contains(format!("{}:read", g.resource).as_str());
            g
        })
        .collect();
    let today = kw.now().date();
    let max_days = settings.policy.max_lifetime.whole_days();
    let page = pages::NewTokenPage {
        nav: Nav::of(session),
        section: "tokens",
        csrf: session.csrf.clone(),
        nonce: kw.new_form_nonce()?,
        error,
        name: form.and_then(|f| f.get("name")).unwrap_or("").to_owned(),
        expires: form
            .and_then(|f| f.get("expires"))
            .unwrap_or("30")
            .to_owned(),
        expires_on: form
            .and_then(|f| f.get("expires_on"))
            .unwrap_or("")
            .to_owned(),
        expiry_choices: EXPIRY_CHOICES.to_vec(),
        allow_never: settings.policy.allow_never,
        min_date: date_text(today.next_day().unwrap_or(today)),
        max_date: date_text(
            today
                .checked_add(Duration::days(max_days - 1))
                .unwrap_or(today),
        ),
        max_days,
        groups,
    };
    Ok(render(&page))
}

/// `GET /tokens/new`
pub async fn new_token_page(State(kw): Kw, Signed(session): Signed) -> Result<Response, PageError> {
    new_token_form(&kw, &session, None, None)
}

/// What the generate form asks for, checked.
struct NewToken {
    name: TokenName,
    scopes: Scopes,
    expires: ExpiryRequest,
}

fn parse_new_token(kw: &Keyward, form: &Fields) -> Result<NewToken, String> {
    let name = TokenName::parse(form.get("name").unwrap_or(""))
        .map_err(|_| "Give the token a name of 1 to 100 characters.".to_owned())?;
    let wanted: BTreeSet<&str> = form.all("scope").collect();
    if wanted.is_empty() {
        return Err("Choose at least one scope.".to_owned());
    }
    let wanted: Vec<&str> = wanted.into_iter().collect();
    let scopes = Scopes::parse(&wanted).map_err(|e| e.to_string())?;
    kw.settings()
        .catalog
        .check(&scopes)
        .map_err(|e| e.to_string())?;
    let expires = match form.get("expires").unwrap_or("30") {
        "never" => ExpiryRequest::Never,
        "custom" => {
            let text = form.get("expires_on").unwrap_or("");
            let date = Date::parse(
                text,
                time::macros::format_description!("[year]-[month]-[day]"),
            )
            .map_err(|_| "Pick a custom expiry date.".to_owned())?;
            ExpiryRequest::At(OffsetDateTime::new_utc(date, Time::MIDNIGHT))
        }
        days => {
            let days: i64 = EXPIRY_CHOICES
                .iter()
                .find(|(value, _)| *value == days)
                .and_then(|(value, _)| value.parse().ok())
                .ok_or_else(|| "Choose an expiry.".to_owned())?;
            ExpiryRequest::In(Duration::days(days))
        }
    };
    kw.settings()
        .policy
        .resolve(Some(expires), kw.now())
        .map_err(|e| e.to_string())?;
    Ok(NewToken {
        name,
        scopes,
        expires,
    })
}

/// The page that shows a secret, once: the direct answer to the POST that made it.
fn once_page(
    kw: &Keyward,
    session: &WebSession,
    issued: &Issued,
    heading: &'static str,
    grace: Option<String>,
) -> Response {
    let page = pages::OncePage {
        nav: Nav::of(session),
        section: "tokens",
        heading,
        name: issued.token.name.as_str().to_owned(),
        secret: issued.secret.expose(),
        scopes: issued
            .token
            .scopes
            .iter()
            .map(ToString::to_string)
            .collect(),
        expires: pages::expiry(issued.token.expires_at, kw.now()),
        grace,
    };
    let mut response = render(&page);
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// What a replayed form (a reload of the page that showed a secret) answers.
fn already_done(session: &WebSession, what: &str) -> Response {
    let page = pages::Message {
        nav: Nav::of(session),
        section: "tokens",
        heading: format!("This token was already {what}"),
        message: format!(
            "This form was already sent and the token {what}. Its secret was shown once and cannot be shown again: if you did not store it, regenerate the token."
        ),
        tone: "warn",
        back: "/tokens",
        back_label: "Back to my tokens",
    };
    (StatusCode::CONFLICT, render(&page)).into_response()
}

/// `POST /tokens/new`
pub async fn create_token(
    State(kw): Kw,
    Signed(session): Signed,
    ClientIp(ip): ClientIp,
    form: Fields,
) -> Result<Response, PageError> {
    form.check_csrf(&kw, &session)?;
    let new = match parse_new_token(&kw, &form) {
        Ok(new) => new,
        Err(why) => {
            let mut response = new_token_form(&kw, &session, Some(&form), Some(why))?;
            *response.status_mut() = StatusCode::BAD_REQUEST;
            return Ok(response);
        }
    };
    if !kw
        .use_form_nonce(&session, form.get("nonce").unwrap_or(""))
        .await?
    {
        return Ok(already_done(&session, "created"));
    }
    let issued = kw
        .create_token(
            &session.caller(ip),
            None,
            new.name,
            new.scopes,
            Some(new.expires),
        )
        .await?;
    Ok(once_page(&kw, &session, &issued, "Your new token", None))
}

fn parse_token_id(id: &str) -> Result<TokenId, PageError> {
    TokenId::parse(id).map_err(|_| PageError::NotFound)
}

/// `GET /tokens/{id}/revoke`
pub async fn revoke_page(
    State(kw): Kw,
    Signed(session): Signed,
    PagePath(id): PagePath,
) -> Result<Response, PageError> {
    let token = kw
        .get_token(&session.caller(None), &parse_token_id(&id)?)
        .await?;
    let page = pages::RevokePage {
        nav: Nav::of(&session),
        section: "tokens",
        csrf: session.csrf.clone(),
        token: TokenRow::new(&token, kw.now()),
    };
    Ok(render(&page))
}

/// `POST /tokens/{id}/revoke`
pub async fn revoke_token(
    State(kw): Kw,
    Signed(session): Signed,
    ClientIp(ip): ClientIp,
    PagePath(id): PagePath,
    form: Fields,
) -> Result<Response, PageError> {
    form.check_csrf(&kw, &session)?;
    let id = parse_token_id(&id)?;
    let reason = form.get("reason").map(str::to_owned);
    let token = kw.revoke_token(&session.caller(ip), &id, reason).await?;
    let notice = format!(
        "Revoked “{}” ({}). Anything still using it is refused from now on.",
        token.name.as_str(),
        token.hint
    );
    tokens_with_notice(&kw, &session, Some(notice)).await
}

/// `GET /tokens/{id}/regenerate`
pub async fn regenerate_page(
    State(kw): Kw,
    Signed(session): Signed,
    PagePath(id): PagePath,
) -> Result<Response, PageError> {
    let token = kw
        .get_token(&session.caller(None), &parse_token_id(&id)?)
        .await?;
    let page = pages::RegeneratePage {
        nav: Nav::of(&session),
        section: "tokens",
        csrf: session.csrf.clone(),
        nonce: kw.new_form_nonce()?,
        token: TokenRow::new(&token, kw.now()),
    };
    Ok(render(&page))
}

/// `POST /tokens/{id}/regenerate`
pub async fn regenerate_token(
    State(kw): Kw,
    Signed(session): Signed,
    ClientIp(ip): ClientIp,
    PagePath(id): PagePath,
    form: Fields,
) -> Result<Response, PageError> {
    form.check_csrf(&kw, &session)?;
    let id = parse_token_id(&id)?;
    let grace = match form.get("grace").map(str::trim).filter(|g| !g.is_empty()) {
        Some(g) => Some(parse_grace(g).map_err(ServiceError::from)?),
        None => None,
    };
    // Checked before the nonce is used up, so a mistyped id does not spend it.
    kw.get_token(&session.caller(None), &id).await?;
    if !kw
        .use_form_nonce(&session, form.get("nonce").unwrap_or(""))
        .await?
    {
        return Ok(already_done(&session, "regenerated"));
    }
    let options = RegenerateOptions {
        grace,
        expires: None,
    };
    let issued = kw
        .regenerate_token(&session.caller(ip), &id, options)
        .await?;
    let grace = Some(match grace {
        Some(g) => format!("keeps working until {}", pages::when(kw.now() + g)),
        None => "stopped working now".to_owned(),
    });
    Ok(once_page(
        &kw,
        &session,
        &issued,
        "Your regenerated token",
        grace,
    ))
}

// ---------------------------------------------------------------------------- admin

async fn users_with(
    kw: &Keyward,
    session: &WebSession,
    notice: Option<String>,
    error: Option<String>,
) -> Result<Response, PageError> {
    let users = kw
        .list_users(&session.caller(None), None, None, MAX_PAGE)
        .await?
        .users;
    let page = pages::UsersPage {
        nav: Nav::of(session),
        section: "admin",
        csrf: session.csrf.clone(),
        notice,
        error,
        users: users.iter().map(|u| UserRow::new(u, session)).collect(),
    };
    Ok(render(&page))
}

/// `GET /admin/users`
pub async fn users_page(State(kw): Kw, Signed(session): Signed) -> Result<Response, PageError> {
    users_with(&kw, &session, None, None).await
}

/// `POST /admin/users`
pub async fn add_user(
    State(kw): Kw,
    Signed(session): Signed,
    ClientIp(ip): ClientIp,
    form: Fields,
) -> Result<Response, PageError> {
    let caller = session.caller(ip);
    caller.authorize(Action::CreateUser)?;
    form.check_csrf(&kw, &session)?;
    let name = match UserName::parse_new(form.get("name").unwrap_or("").trim()) {
        Ok(name) => name,
        Err(e) => {
            let mut r = users_with(&kw, &session, None, Some(e.to_string())).await?;
            *r.status_mut() = StatusCode::BAD_REQUEST;
            return Ok(r);
        }
    };
    let password = RawSecret::new(form.get("password").unwrap_or("").to_owned());
    let is_admin = form.get("admin").is_some();
    let request = UserRequest {
        admin: is_admin,
        password: Some(password),
        ..UserRequest::person(name)
    };
    match kw.create_user(&caller, request).await {
        Ok(user) => users_with(&kw, &session, Some(format!("Added {}.", user.name)), None).await,
        Err(e @ (ServiceError::BadPassword | ServiceError::Conflict(_))) => {
            let mut r = users_with(&kw, &session, None, Some(e.to_string())).await?;
            *r.status_mut() = StatusCode::BAD_REQUEST;
            Ok(r)
        }
        Err(e) => Err(e.into()),
    }
}

fn parse_user_id(id: &str) -> Result<UserId, PageError> {
    UserId::parse(id).map_err(|_| PageError::NotFound)
}

/// `GET /admin/users/{id}/disable`
pub async fn disable_page(
    State(kw): Kw,
    Signed(session): Signed,
    PagePath(id): PagePath,
) -> Result<Response, PageError> {
    let caller = session.caller(None);
    caller.authorize(Action::UpdateUser)?;
    let user = kw.user_by_id(&caller, &parse_user_id(&id)?).await?;
    let page = pages::DisablePage {
        nav: Nav::of(&session),
        section: "admin",
        csrf: session.csrf.clone(),
        id: user.id.to_string(),
        name: user.name.to_string(),
    };
    Ok(render(&page))
}

/// `POST /admin/users/{id}/disable`
pub async fn disable_user(
    State(kw): Kw,
    Signed(session): Signed,
    ClientIp(ip): ClientIp,
    PagePath(id): PagePath,
    form: Fields,
) -> Result<Response, PageError> {
    let caller = session.caller(ip);
    caller.authorize(Action::UpdateUser)?;
    form.check_csrf(&kw, &session)?;
    let user = kw.disable_user(&caller, &parse_user_id(&id)?).await?;
    let notice = format!(
        "Disabled {}: signed out, and their tokens are refused until they are enabled again.",
        user.name
    );
    users_with(&kw, &session, Some(notice), None).await
}

/// `POST /admin/users/{id}/enable`
pub async fn enable_user(
    State(kw): Kw,
    Signed(session): Signed,
    ClientIp(ip): ClientIp,
    PagePath(id): PagePath,
    form: Fields,
) -> Result<Response, PageError> {
    let caller = session.caller(ip);
    caller.authorize(Action::UpdateUser)?;
    form.check_csrf(&kw, &session)?;
    let user = kw.enable_user(&caller, &parse_user_id(&id)?).await?;
    let notice = format!("Enabled {}.", user.name);
    users_with(&kw, &session, Some(notice), None).await
}
