//! The page handlers: extract, check the form, call one service method, render.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use keyward_core::limits::{MAX_ALLOWED_IPS, MAX_USES};
use keyward_core::{
    Email, ExpiryRequest, ExternalId, IpRange, Limits, LimitsError, RateLimit, RawSecret, Refill,
    Scopes, TokenId, TokenName, TokenRecord, TokenState, User, UserId, UserKind, UserName,
    expiry::parse_grace,
};
use std::collections::BTreeSet;
use std::sync::Arc;
use time::{Date, Duration, OffsetDateTime, Time};

use super::pages::{
    self, Nav, ScopeGroup, TokenActions, TokenForm, TokenRow, UserDraft, UserRow, render,
};
use super::{
    Fields, LOGIN_COOKIE, PageError, PagePair, PagePath, SESSION_COOKIE, SSO_COOKIE,
    SSO_COOKIE_PATH, Signed, cookie, over_https, set_cookie, set_lax_cookie,
};
use crate::http::extract::ClientIp;
use crate::service::sessions::oidc::SSO_LIFETIME;
use crate::service::sessions::{PASSWORD_CHARS, SIGN_IN_FORM_LIFETIME, SIGN_IN_WINDOW};
use crate::service::{
    Action, Issued, Keyward, MAX_PAGE, PasswordChange, RegenerateOptions, ServiceError, SignIn,
    SignInForm, SsoCallback, SsoRefusal, SsoSignIn, UserChanges, UserRequest, WebSession,
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

/// Every token of `owner` (the caller's own when `None`), page after page, newest first.
async fn all_tokens(
    kw: &Keyward,
    session: &WebSession,
    owner: Option<&UserId>,
) -> Result<Vec<TokenRecord>, PageError> {
    let caller = session.caller(None);
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = kw.list_tokens(&caller, owner, after, MAX_PAGE).await?;
        all.extend(page.tokens);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(all),
        }
    }
}

/// The rows of every token of `owner` (the caller's own when `None`): active ones first, then
/// expired and revoked ones; each saying until when its previous secret works, if it still does.
async fn token_rows(
    kw: &Keyward,
    session: &WebSession,
    owner: Option<&UserId>,
) -> Result<(Vec<TokenRow>, Vec<TokenRow>), PageError> {
    let tokens = all_tokens(kw, session, owner).await?;
    let old_secrets = kw.old_secrets_until(&session.caller(None), owner).await?;
    let now = kw.now();
    Ok(tokens
        .iter()
        .map(|t| TokenRow::new(t, now, old_secrets.get(&t.id).copied()))
        .partition(|row| row.state == "active"))
}

/// `GET /tokens`
pub async fn tokens_page(State(kw): Kw, Signed(session): Signed) -> Result<Response, PageError> {
    tokens_with_notice(&kw, &session, None).await
}

async fn tokens_with_notice(
    kw: &Keyward,
    session: &WebSession,
    notice: Option<String>,
) -> Result<Response, PageError> {
    let (active, inactive) = token_rows(kw, session, None).await?;
    let page = pages::TokensPage {
        nav: Nav::of(session),
        section: "tokens",
        notice,
        actions: TokenActions {
            base: "/tokens".to_owned(),
            regenerate: true,
        },
        active,
        inactive,
    };
    Ok(render(&page))
}

/// The generate form, filled with what was submitted (or the defaults), posted to `action`.
fn token_form(
    kw: &Keyward,
    session: &WebSession,
    form: Option<&Fields>,
    list: &TokenList,
    action: String,
) -> Result<TokenForm, PageError> {
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
            let only = match actions.as_slice() {
                [(action, checked)] => Some((action.clone(), *checked)),
                _ => None,
            };
            ScopeGroup {
                resource: resource.to_owned(),
                only,
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
    let text = |name| form.and_then(|f| f.get(name)).unwrap_or("").to_owned();
    Ok(TokenForm {
        action,
        cancel: Some(list.href.clone()),
        csrf: session.csrf.clone(),
        nonce: kw.new_form_nonce()?,
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
        allowed_ips: text("allowed_ips"),
        ips_required: settings.require_allowed_ips,
        max_uses: text("max_uses"),
        refill: text("refill"),
        rate_limit: text("rate_limit"),
    })
}

/// The generate page, filled with what was submitted (or the defaults).
fn new_token_form(
    kw: &Keyward,
    session: &WebSession,
    form: Option<&Fields>,
    error: Option<String>,
) -> Result<Response, PageError> {
    let page = pages::NewTokenPage {
        nav: Nav::of(session),
        section: "tokens",
        error,
        form: token_form(
            kw,
            session,
            form,
            &TokenList::own(),
            "/tokens/new".to_owned(),
        )?,
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
    limits: Limits,
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
    let limits = parse_limits(form).map_err(|e| limits_refusal(&e))?;
    Ok(NewToken {
        name,
        scopes,
        expires,
        limits,
    })
}

/// The form's limits, read as the API and the command line read them; an empty field sets none.
fn parse_limits(form: &Fields) -> Result<Limits, LimitsError> {
    let text = |name| Some(form.get(name).unwrap_or("").trim()).filter(|t| !t.is_empty());
    Limits {
        allowed_ips: form
            .get("allowed_ips")
            .unwrap_or("")
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|range| !range.is_empty())
            .map(IpRange::parse)
            .collect::<Result<_, _>>()?,
        max_uses: text("max_uses")
            .map(|n| n.parse().map_err(|_| LimitsError::BadUses))
            .transpose()?,
        refill: text("refill").map(Refill::parse).transpose()?,
        rate_limit: text("rate_limit").map(RateLimit::parse).transpose()?,
    }
    .checked()
}

/// Why limits were refused, in the form's words where the core's name the API's fields.
fn limits_refusal(e: &LimitsError) -> String {
    match e {
        LimitsError::BadUses => {
            format!("Maximum uses must be a whole number from 1 to {MAX_USES}.")
        }
        LimitsError::RefillWithoutUses => {
            "A refill needs maximum uses: it sets the remaining uses back to its amount.".to_owned()
        }
        LimitsError::TooManyIps => {
            format!("A token may have at most {MAX_ALLOWED_IPS} allowed IP addresses or ranges.")
        }
        LimitsError::AllowedIpsRequired => {
            "This deployment requires every token to have allowed IP addresses.".to_owned()
        }
        other => other.to_string(),
    }
}

/// The list a token is in, as the pages around it link back to it: the signed-in person's own
/// tokens, or a service account's.
struct TokenList {
    href: String,
    /// The breadcrumb's text.
    crumb: String,
    /// "back to …".
    label: String,
    section: &'static str,
}

impl TokenList {
    fn own() -> Self {
        Self {
            href: "/tokens".to_owned(),
            crumb: "API tokens".to_owned(),
            label: "my tokens".to_owned(),
            section: "tokens",
        }
    }

    fn of_service(account: &User) -> Self {
        Self {
            href: format!("/admin/users/{}/tokens", account.id),
            crumb: format!("Tokens of {}", account.name),
            label: format!("the tokens of {}", account.name),
            section: "admin",
        }
    }
}

/// The page that shows a secret, once: the direct answer to the POST that made it.
fn once_page(
    kw: &Keyward,
    session: &WebSession,
    issued: &Issued,
    list: TokenList,
    heading: &'static str,
    grace: Option<String>,
) -> Response {
    let page = pages::OncePage {
        nav: Nav::of(session),
        section: list.section,
        heading,
        back: list.href,
        crumb: list.crumb,
        back_label: list.label,
        name: issued.token.name.as_str().to_owned(),
        secret: issued.secret.expose(),
        scopes: issued
            .token
            .scopes
            .iter()
            .map(ToString::to_string)
            .collect(),
        expires: pages::expiry(issued.token.expires_at, kw.now()),
        limits: pages::limits(&issued.token),
        grace,
    };
    let mut response = render(&page);
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// What a replayed form (a reload of the page that showed a secret) answers.
fn already_done(session: &WebSession, list: TokenList, what: &str) -> Response {
    let page = pages::Message {
        nav: Nav::of(session),
        section: list.section,
        heading: format!("This token was already {what}"),
        message: format!(
            "This form was already sent and the token {what}. Its secret was shown once and cannot be shown again: if you did not store it, regenerate the token."
        ),
        tone: "warn",
        back: list.href,
        back_label: format!("Back to {}", list.label),
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
        return Ok(already_done(&session, TokenList::own(), "created"));
    }
    let issued = match kw
        .create_token(
            &session.caller(ip),
            None,
            new.name,
            new.scopes,
            Some(new.expires),
            new.limits,
        )
        .await
    {
        Ok(issued) => issued,
        // Administrative scopes asked for by someone who is not an admin: said on the form.
        Err(e @ ServiceError::Forbidden(_)) => {
            let mut response = new_token_form(&kw, &session, Some(&form), Some(e.to_string()))?;
            *response.status_mut() = StatusCode::FORBIDDEN;
            return Ok(response);
        }
        // Limits the deployment refuses (`require_allowed_ips`), a cap on tokens reached: also
        // said on the form, which keeps what was typed.
        Err(e) => {
            let (status, why) = refusal(e)?;
            let mut response = new_token_form(&kw, &session, Some(&form), Some(why))?;
            *response.status_mut() = status;
            return Ok(response);
        }
    };
    Ok(once_page(
        &kw,
        &session,
        &issued,
        TokenList::own(),
        "Your new token",
        None,
    ))
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
    let list = TokenList::own();
    let page = pages::RevokePage {
        nav: Nav::of(&session),
        section: list.section,
        csrf: session.csrf.clone(),
        action: format!("/tokens/{}/revoke", token.id),
        back: list.href,
        crumb: list.crumb,
        token: TokenRow::new(&token, kw.now(), None),
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
    let now = kw.now();
    if token.state(now) != TokenState::Active {
        return Ok(cannot_regenerate(&session, &token, now));
    }
    let page = pages::RegeneratePage {
        nav: Nav::of(&session),
        section: "tokens",
        csrf: session.csrf.clone(),
        nonce: kw.new_form_nonce()?,
        token: TokenRow::new(&token, now, None),
    };
    Ok(render(&page))
}

/// The page (409) for a token that cannot be regenerated because it is revoked or expired:
/// with the navigation, and what to do instead.
fn cannot_regenerate(session: &WebSession, token: &TokenRecord, now: OffsetDateTime) -> Response {
    let name = token.name.as_str();
    let (heading, message) = match (token.revoked_at, token.expires_at) {
        (Some(at), _) => (
            "This token is revoked",
            format!(
                "“{name}” was revoked on {}, so it cannot be regenerated. Generate a new token instead.",
                pages::when(at)
            ),
        ),
        (None, Some(at)) if at <= now => (
            "This token has expired",
            format!(
                "“{name}” expired on {}, so it cannot be regenerated. Generate a new token instead.",
                pages::when(at)
            ),
        ),
        _ => (
            "This token cannot be regenerated",
            format!("“{name}” cannot be regenerated now. Generate a new token instead."),
        ),
    };
    let list = TokenList::own();
    let page = pages::Message {
        nav: Nav::of(session),
        section: list.section,
        heading: heading.to_owned(),
        message,
        tone: "warn",
        back: list.href,
        back_label: format!("Back to {}", list.label),
    };
    (StatusCode::CONFLICT, render(&page)).into_response()
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
    // Checked before the nonce is used up, so a mistyped id (or a token that cannot be
    // regenerated) does not spend it.
    let token = kw.get_token(&session.caller(None), &id).await?;
    if token.state(kw.now()) != TokenState::Active {
        return Ok(cannot_regenerate(&session, &token, kw.now()));
    }
    if !kw
        .use_form_nonce(&session, form.get("nonce").unwrap_or(""))
        .await?
    {
        return Ok(already_done(&session, TokenList::own(), "regenerated"));
    }
    let options = RegenerateOptions {
        grace,
        expires: None,
    };
    let issued = match kw.regenerate_token(&session.caller(ip), &id, options).await {
        Ok(issued) => issued,
        // Revoked or expired since it was read above.
        Err(ServiceError::InvalidState(_)) => {
            let token = kw.get_token(&session.caller(None), &id).await?;
            return Ok(cannot_regenerate(&session, &token, kw.now()));
        }
        Err(e) => return Err(e.into()),
    };
    let grace = Some(match grace {
        Some(g) => format!("keeps working until {}", pages::when(kw.now() + g)),
        None => "stopped working now".to_owned(),
    });
    Ok(once_page(
        &kw,
        &session,
        &issued,
        TokenList::own(),
        "Your regenerated token",
        grace,
    ))
}

// ---------------------------------------------------------------------------- account

/// The change-password page, with a notice or an error, and `status`.
async fn password_form(
    kw: &Keyward,
    session: &WebSession,
    notice: Option<String>,
    error: Option<String>,
    status: StatusCode,
) -> Result<Response, PageError> {
    let page = pages::PasswordPage {
        nav: Nav::of(session),
        section: "account",
        csrf: session.csrf.clone(),
        name: session.user.name.to_string(),
        method: session.method.clone(),
        has_password: kw.has_password(session).await?,
        min_chars: *PASSWORD_CHARS.start(),
        max_chars: *PASSWORD_CHARS.end(),
        notice,
        error,
    };
    Ok((status, render(&page)).into_response())
}

/// `GET /account/password` (`?changed=1` after a change: the form redirects here)
pub async fn password_page(
    State(kw): Kw,
    Signed(session): Signed,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let notice = (query.as_deref() == Some("changed=1")).then(|| {
        "Your password was changed. You are still signed in here; every other session of yours has ended."
            .to_owned()
    });
    password_form(&kw, &session, notice, None, StatusCode::OK).await
}

/// `POST /account/password`
pub async fn change_password(
    State(kw): Kw,
    Signed(session): Signed,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    form: Fields,
) -> Result<Response, PageError> {
    form.check_csrf(&kw, &session)?;
    let field = |name| form.get(name).unwrap_or("");
    let refuse =
        |why: &str, status| password_form(&kw, &session, None, Some(why.to_owned()), status);
    if field("new") != field("repeat") {
        return refuse(
            "The two new passwords are not the same. Type the new password twice.",
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    let current = RawSecret::new(field("current").to_owned());
    let new = RawSecret::new(field("new").to_owned());
    match kw.change_own_password(&session, current, new, ip).await {
        Ok(PasswordChange::Changed(secret)) => {
            let cookie = set_cookie(
                SESSION_COOKIE,
                secret.expose(),
                "/",
                crate::service::sessions::SESSION_MAX.whole_seconds(),
                over_https(&kw, &headers),
            );
            Ok((
                [(header::SET_COOKIE, cookie)],
                Redirect::to("/account/password?changed=1"),
            )
                .into_response())
        }
        Ok(PasswordChange::WrongPassword) => {
            refuse(
                "Your current password is not right. Nothing was changed.",
                StatusCode::BAD_REQUEST,
            )
            .await
        }
        Ok(PasswordChange::Throttled) => {
            let mut response = refuse(
                "Too many wrong passwords. Wait a minute, then try again.",
                StatusCode::TOO_MANY_REQUESTS,
            )
            .await?;
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(SIGN_IN_WINDOW.whole_seconds().unsigned_abs()),
            );
            Ok(response)
        }
        Ok(PasswordChange::NoPassword) => {
            refuse("You have no password here to change.", StatusCode::CONFLICT).await
        }
        Err(ServiceError::BadPassword) => {
            let why = format!(
                "The new password must be {} to {} characters long.",
                PASSWORD_CHARS.start(),
                PASSWORD_CHARS.end()
            );
            refuse(&why, StatusCode::BAD_REQUEST).await
        }
        Err(e) => Err(e.into()),
    }
}

// ---------------------------------------------------------------------------- admin

/// What the users page shows around its table.
#[derive(Default)]
struct UsersView {
    /// The page's cursor: users added before this one (the first page when `None`).
    before: Option<UserId>,
    notice: Option<String>,
    error: Option<String>,
    draft: UserDraft,
}

async fn users_with(
    kw: &Keyward,
    session: &WebSession,
    view: UsersView,
) -> Result<Response, PageError> {
    let later = view.before.is_some();
    let users = kw
        .list_users(&session.caller(None), None, view.before, MAX_PAGE)
        .await?;
    let page = pages::UsersPage {
        nav: Nav::of(session),
        section: "admin",
        csrf: session.csrf.clone(),
        notice: view.notice,
        error: view.error,
        users: users
            .users
            .iter()
            .map(|u| UserRow::new(u, session))
            .collect(),
        later,
        next: users.next.map(|id| id.to_string()),
        draft: view.draft,
    };
    Ok(render(&page))
}

/// A refusal a page shows above its form, with its status (409 for a taken name or a state
/// that forbids the change, as the API answers; 400 for bad input); anything else is an error
/// page.
fn refusal(e: ServiceError) -> Result<(StatusCode, String), PageError> {
    match e {
        ServiceError::Conflict(_) | ServiceError::InvalidState(_) => {
            Ok((StatusCode::CONFLICT, e.to_string()))
        }
        ServiceError::BadName(_)
        | ServiceError::BadPassword
        | ServiceError::BadScope(_)
        | ServiceError::BadExpiry(_)
        | ServiceError::Invalid(_) => Ok((StatusCode::BAD_REQUEST, e.to_string())),
        ServiceError::BadLimits(e) => Ok((StatusCode::BAD_REQUEST, limits_refusal(&e))),
        e => Err(e.into()),
    }
}

/// The users page with the service's refusal above the form (which keeps what was typed).
async fn users_refused(
    kw: &Keyward,
    session: &WebSession,
    e: ServiceError,
    draft: UserDraft,
) -> Result<Response, PageError> {
    let (status, message) = refusal(e)?;
    let view = UsersView {
        error: Some(message),
        draft,
        ..UsersView::default()
    };
    let mut response = users_with(kw, session, view).await?;
    *response.status_mut() = status;
    Ok(response)
}

/// The users page's query: `?before=` a user id, for the pages after the first; `?added=` the
/// user just added (the form redirects here, so a reload does not send it again).
#[derive(Debug, serde::Deserialize)]
pub struct UsersQuery {
    before: Option<String>,
    added: Option<String>,
}

/// What the users page says about a user just added.
fn added_notice(user: &User) -> String {
    match user.kind {
        UserKind::Person => format!("Added {}.", user.name),
        UserKind::Service => format!(
            "Added the service account {}. Make its tokens from its Tokens page.",
            user.name
        ),
    }
}

/// `GET /admin/users`
pub async fn users_page(
    State(kw): Kw,
    Signed(session): Signed,
    query: Result<Query<UsersQuery>, QueryRejection>,
) -> Result<Response, PageError> {
    session.caller(None).authorize(Action::ReadUsers)?;
    // A cursor that is not a user id names no page.
    let Ok(Query(query)) = query else {
        return Err(PageError::NotFound);
    };
    let before = match query.before.as_deref().filter(|b| !b.is_empty()) {
        Some(id) => Some(parse_user_id(id)?),
        None => None,
    };
    // Only names a user the viewer can see; anything else adds no notice.
    let added = match query.added.as_deref().map(UserId::parse) {
        Some(Ok(id)) => kw.user_by_id(&session.caller(None), &id).await.ok(),
        _ => None,
    };
    let view = UsersView {
        before,
        notice: added.as_ref().map(added_notice),
        ..UsersView::default()
    };
    users_with(&kw, &session, view).await
}

/// The add-user form as sent, for the service to check (and the page to show again).
fn user_draft(form: &Fields) -> UserDraft {
    let text = |name| form.get(name).unwrap_or("").trim().to_owned();
    UserDraft {
        name: text("name"),
        is_service: form.get("kind") == Some(UserKind::Service.as_str()),
        external_id: text("external_id"),
        email: text("email"),
        is_admin: form.get("admin").is_some(),
    }
}

fn user_request(form: &Fields, draft: &UserDraft) -> Result<UserRequest, ServiceError> {
    let kind = UserKind::parse(form.get("kind").unwrap_or(UserKind::Person.as_str())).ok_or(
        ServiceError::Invalid("choose a person or a service account"),
    )?;
    let optional = |text: &str| Some(text.to_owned()).filter(|t| !t.is_empty());
    Ok(UserRequest {
        name: UserName::parse_new(&draft.name)?,
        kind,
        admin: draft.is_admin,
        external_id: optional(&draft.external_id)
            .map(|x| ExternalId::parse(&x))
            .transpose()?,
        email: optional(&draft.email)
            .map(|e| Email::parse(&e))
            .transpose()?,
        password: form
            .get("password")
            .filter(|p| !p.is_empty())
            .map(|p| RawSecret::new(p.to_owned())),
    })
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
    let draft = user_draft(&form);
    let created = match user_request(&form, &draft) {
        Ok(request) => kw.create_user(&caller, request).await,
        Err(e) => Err(e),
    };
    match created {
        // Post/redirect/get: a reload of the page it lands on does not add the user again.
        Ok(user) => Ok(Redirect::to(&format!("/admin/users?added={}", user.id)).into_response()),
        Err(e) => users_refused(&kw, &session, e, draft).await,
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
    let view = UsersView {
        notice: Some(notice),
        ..UsersView::default()
    };
    users_with(&kw, &session, view).await
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
    let view = UsersView {
        notice: Some(format!("Enabled {}.", user.name)),
        ..UsersView::default()
    };
    users_with(&kw, &session, view).await
}

/// Makes a user an admin, or not.
async fn set_admin(
    kw: &Keyward,
    session: &WebSession,
    ip: Option<std::net::IpAddr>,
    id: &str,
    form: &Fields,
    admin: bool,
) -> Result<Response, PageError> {
    let caller = session.caller(ip);
    caller.authorize(Action::UpdateUser)?;
    form.check_csrf(kw, session)?;
    let changes = UserChanges {
        is_admin: Some(admin),
        ..UserChanges::default()
    };
    match kw.update_user(&caller, &parse_user_id(id)?, changes).await {
        Ok(user) => {
            let notice = if admin {
                format!("{} is now an admin.", user.name)
            } else {
                format!("{} is no longer an admin.", user.name)
            };
            let view = UsersView {
                notice: Some(notice),
                ..UsersView::default()
            };
            users_with(kw, session, view).await
        }
        Err(e) => users_refused(kw, session, e, UserDraft::default()).await,
    }
}

/// `POST /admin/users/{id}/make-admin`
pub async fn make_admin(
    State(kw): Kw,
    Signed(session): Signed,
    ClientIp(ip): ClientIp,
    PagePath(id): PagePath,
    form: Fields,
) -> Result<Response, PageError> {
    set_admin(&kw, &session, ip, &id, &form, true).await
}

/// `POST /admin/users/{id}/remove-admin`
pub async fn remove_admin(
    State(kw): Kw,
    Signed(session): Signed,
    ClientIp(ip): ClientIp,
    PagePath(id): PagePath,
    form: Fields,
) -> Result<Response, PageError> {
    set_admin(&kw, &session, ip, &id, &form, false).await
}

/// `GET /admin/users/{id}/delete`
pub async fn delete_page(
    State(kw): Kw,
    Signed(session): Signed,
    PagePath(id): PagePath,
) -> Result<Response, PageError> {
    let caller = session.caller(None);
    caller.authorize(Action::DeleteUser)?;
    let user = kw.user_by_id(&caller, &parse_user_id(&id)?).await?;
    let page = pages::DeletePage {
        nav: Nav::of(&session),
        section: "admin",
        csrf: session.csrf.clone(),
        id: user.id.to_string(),
        name: user.name.to_string(),
    };
    Ok(render(&page))
}

/// `POST /admin/users/{id}/delete`
pub async fn delete_user(
    State(kw): Kw,
    Signed(session): Signed,
    ClientIp(ip): ClientIp,
    PagePath(id): PagePath,
    form: Fields,
) -> Result<Response, PageError> {
    let caller = session.caller(ip);
    caller.authorize(Action::DeleteUser)?;
    form.check_csrf(&kw, &session)?;
    match kw.delete_user(&caller, &parse_user_id(&id)?).await {
        Ok(user) => {
            let notice = format!(
                "Deleted {}: every token of theirs is revoked (“{}”).",
                user.name,
                crate::service::OWNER_DELETED
            );
            let view = UsersView {
                notice: Some(notice),
                ..UsersView::default()
            };
            users_with(&kw, &session, view).await
        }
        Err(e) => users_refused(&kw, &session, e, UserDraft::default()).await,
    }
}

// ---------------------------------------------------------------------------- service accounts

/// The service account `id` names; any other user (or none, or a caller who may not read
/// users) is not found: these pages are for service accounts only.
async fn service_account(kw: &Keyward, session: &WebSession, id: &str) -> Result<User, PageError> {
    let account = kw
        .user_by_id(&session.caller(None), &parse_user_id(id)?)
        .await?;
    if account.kind == UserKind::Service {
        Ok(account)
    } else {
        Err(PageError::NotFound)
    }
}

/// The token `id` of `account`; a token of anyone else is not found here.
async fn service_token(
    kw: &Keyward,
    session: &WebSession,
    account: &User,
    id: &str,
) -> Result<TokenRecord, PageError> {
    let token = kw
        .get_token(&session.caller(None), &parse_token_id(id)?)
        .await?;
    if token.owner == account.id {
        Ok(token)
    } else {
        Err(PageError::NotFound)
    }
}

/// A service account's tokens page; `form` refills the generate form after a refusal.
async fn service_tokens_with(
    kw: &Keyward,
    session: &WebSession,
    account: &User,
    form: Option<&Fields>,
    notice: Option<String>,
    error: Option<String>,
) -> Result<Response, PageError> {
    let (active, inactive) = token_rows(kw, session, Some(&account.id)).await?;
    let list = TokenList::of_service(account);
    let mut new_form = token_form(kw, session, form, &list, list.href.clone())?;
    // The form is on the list's own page: "Cancel" would lead nowhere.
    new_form.cancel = None;
    let page = pages::ServiceTokensPage {
        nav: Nav::of(session),
        section: "admin",
        notice,
        error,
        name: account.name.to_string(),
        disabled: account.disabled_at.is_some(),
        actions: TokenActions {
            base: list.href,
            regenerate: false,
        },
        active,
        inactive,
        form: new_form,
    };
    Ok(render(&page))
}

/// `GET /admin/users/{id}/tokens`
pub async fn service_tokens_page(
    State(kw): Kw,
    Signed(session): Signed,
    PagePath(id): PagePath,
) -> Result<Response, PageError> {
    let account = service_account(&kw, &session, &id).await?;
    service_tokens_with(&kw, &session, &account, None, None, None).await
}

/// `POST /admin/users/{id}/tokens`: issues a token for the service account, shown once.
pub async fn create_service_token(
    State(kw): Kw,
    Signed(session): Signed,
    ClientIp(ip): ClientIp,
    PagePath(id): PagePath,
    form: Fields,
) -> Result<Response, PageError> {
    let caller = session.caller(ip);
    caller.authorize(Action::IssueToken)?;
    form.check_csrf(&kw, &session)?;
    let account = service_account(&kw, &session, &id).await?;
    let new = match parse_new_token(&kw, &form) {
        Ok(new) => new,
        Err(why) => {
            return service_token_refused(
                &kw,
                &session,
                &account,
                &form,
                StatusCode::BAD_REQUEST,
                why,
            )
            .await;
        }
    };
    if !kw
        .use_form_nonce(&session, form.get("nonce").unwrap_or(""))
        .await?
    {
        return Ok(already_done(
            &session,
            TokenList::of_service(&account),
            "created",
        ));
    }
    let issued = kw
        .issue_token(
            &caller,
            &account.id,
            new.name,
            new.scopes,
            Some(new.expires),
            new.limits,
        )
        .await;
    match issued {
        Ok(issued) => Ok(once_page(
            &kw,
            &session,
            &issued,
            TokenList::of_service(&account),
            "New service account token",
            None,
        )),
        // The caller may issue tokens (checked above): a refusal now is about this token,
        // such as administrative scopes for an account that is not an admin.
        Err(ServiceError::Forbidden(why)) => {
            let why = why.to_owned();
            service_token_refused(&kw, &session, &account, &form, StatusCode::BAD_REQUEST, why)
                .await
        }
        Err(e) => {
            let (status, why) = refusal(e)?;
            service_token_refused(&kw, &session, &account, &form, status, why).await
        }
    }
}

/// The service account's page with the generate form refilled and the refusal above it.
async fn service_token_refused(
    kw: &Keyward,
    session: &WebSession,
    account: &User,
    form: &Fields,
    status: StatusCode,
    why: String,
) -> Result<Response, PageError> {
    let mut response =
        service_tokens_with(kw, session, account, Some(form), None, Some(why)).await?;
    *response.status_mut() = status;
    Ok(response)
}

/// `GET /admin/users/{id}/tokens/{token}/revoke`
pub async fn revoke_service_token_page(
    State(kw): Kw,
    Signed(session): Signed,
    PagePair(id, token): PagePair,
) -> Result<Response, PageError> {
    let account = service_account(&kw, &session, &id).await?;
    let token = service_token(&kw, &session, &account, &token).await?;
    let list = TokenList::of_service(&account);
    let page = pages::RevokePage {
        nav: Nav::of(&session),
        section: list.section,
        csrf: session.csrf.clone(),
        action: format!("{}/{}/revoke", list.href, token.id),
        back: list.href,
        crumb: list.crumb,
        token: TokenRow::new(&token, kw.now(), None),
    };
    Ok(render(&page))
}

/// `POST /admin/users/{id}/tokens/{token}/revoke`
pub async fn revoke_service_token(
    State(kw): Kw,
    Signed(session): Signed,
    ClientIp(ip): ClientIp,
    PagePair(id, token): PagePair,
    form: Fields,
) -> Result<Response, PageError> {
    let caller = session.caller(ip);
    caller.authorize(Action::RevokeToken)?;
    // Found first, so the page is not found for anyone who may not see the account.
    let account = service_account(&kw, &session, &id).await?;
    form.check_csrf(&kw, &session)?;
    let token = service_token(&kw, &session, &account, &token).await?;
    let reason = form.get("reason").map(str::to_owned);
    let token = kw.revoke_token(&caller, &token.id, reason).await?;
    let notice = format!(
        "Revoked “{}” ({}). Anything still using it is refused from now on.",
        token.name.as_str(),
        token.hint
    );
    service_tokens_with(&kw, &session, &account, None, Some(notice), None).await
}
