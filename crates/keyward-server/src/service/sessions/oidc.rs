//! Single sign-on: signing in to the web page through an OpenID provider (the authorization-code
//! flow with PKCE), ending in the same session a password sign-in starts.
//!
//! - **Nothing pending is kept on the server.** `GET /login/oidc` gives the browser a short-lived
//!   cookie holding a random seed, its expiry and a MAC under the server key; the `state`, the
//!   `nonce` and the PKCE verifier are derived from the seed under the server key. So a flood of
//!   started sign-ins costs no memory, the verifier never leaves keyward, and the callback works
//!   only in the browser that started it (the `state` must be the cookie's).
//! - **The provider's answer is checked by `openidconnect`**, never by hand: the ID token's
//!   signature against the provider's published keys, its issuer, audience, expiry and nonce.
//! - **The provider is asked for little.** Its discovery document (with its keys) is fetched on
//!   first use and kept for [`DISCOVERY_TTL`]; a failed fetch is not retried for
//!   [`DISCOVERY_RETRY`], so anonymous requests cannot make keyward hammer it. The HTTP client
//!   has timeouts, reads at most [`MAX_RESPONSE_BYTES`], and follows no redirects.
//! - **A person is their `(issuer, sub)`**, linked to one user in the store. A first sign-in
//!   creates the user (when `create_users` is on) with the link and its audit event in one
//!   write. An existing user of the same name who is not linked is never taken over.
//! - **Audit and throttle:** every sign-in and every refusal is an audit event, and every
//!   refusal counts against the client's address in the sign-in throttle, as a failed password
//!   does (the same key). At the limit, the way back is refused before the provider is asked,
//!   and the burst is recorded once, so anonymous junk cannot grow the audit trail or make
//!   keyward call the provider without bound. A refusal with no client address is only logged.

use keyward_core::{AuditEvent, AuditKind, Email, User, UserId, UserKind, UserName};
use keyward_store::{IdentityRecord, NewUser};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreClientAuthMethod, CoreErrorResponseType, CoreGenderClaim,
    CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreProviderMetadata, CoreResponseType, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AsyncHttpClient, AuthType, AuthenticationFlow, AuthorizationCode, Client,
    ClientId, CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet,
    HttpRequest, HttpResponse, IdTokenFields, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, StandardErrorResponse, StandardTokenResponse,
};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::{Duration as StdDuration, Instant};
use subtle::ConstantTimeEq as _;
use time::Duration;
use zeroize::Zeroizing;

use super::throttle::{Reservation, ThrottleSubject};
use super::{Reserved, SessionSecret, hex, is_hex, random_hex};
use crate::service::{Keyward, ServiceResult};

/// How long a started sign-in (its cookie) may take to come back from the provider.
pub const SSO_LIFETIME: Duration = Duration::minutes(10);
/// How long the provider's discovery document and keys are kept before they are fetched again
/// (so a key rotation at the provider is seen within this).
pub const DISCOVERY_TTL: StdDuration = StdDuration::from_secs(600);
/// How long after a failed discovery keyward answers "unreachable" without asking again.
pub const DISCOVERY_RETRY: StdDuration = StdDuration::from_secs(10);
/// The most keyward reads of one answer from the provider.
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// Connecting to the provider, and a whole request to it, time out after these.
const CONNECT_TIMEOUT: StdDuration = StdDuration::from_secs(5);
const REQUEST_TIMEOUT: StdDuration = StdDuration::from_secs(15);
/// Random bytes in a sign-in cookie's seed.
const SEED_BYTES: usize = 32;
/// The longest authorization code keyward passes on (real ones are far shorter).
const MAX_CODE_CHARS: usize = 4096;

/// The client secret keyward shares with the provider: redacted in `Debug`, zeroized on drop.
#[derive(Clone)]
pub struct OidcClientSecret(Zeroizing<String>);

impl OidcClientSecret {
    /// Wraps the secret.
    pub fn new(secret: String) -> Self {
        Self(Zeroizing::new(secret))
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for OidcClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OidcClientSecret([REDACTED])")
    }
}

/// Which claim makes a person an admin: `claim` holds `value`, or is a list holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminClaim {
    /// The claim's name, e.g. `groups`.
    pub claim: String,
    /// The value that makes an admin, e.g. `keyward-admins`.
    pub value: String,
}

/// How keyward signs people in through an OpenID provider (`[oidc]` in the config).
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// The provider's issuer URL, exactly as its ID tokens say it.
    pub issuer: String,
    /// What the sign-in page calls the provider ("Sign in with …").
    pub display_name: String,
    /// keyward's client id at the provider.
    pub client_id: String,
    /// keyward's client secret at the provider (`None`: a public client, PKCE alone).
    pub client_secret: Option<OidcClientSecret>,
    /// Where the provider sends the browser back: `{public_url}/login/oidc/callback`.
    pub redirect_url: String,
    /// The scopes asked for (`openid` is always among them).
    pub scopes: Vec<String>,
    /// The claim a new user's name comes from; then `email`, then `sub`.
    pub name_claim: String,
    /// Whether a first sign-in creates the person.
    pub create_users: bool,
    /// Which claim makes an admin, if the provider decides that.
    pub admin: Option<AdminClaim>,
    /// Whether the password form is offered too.
    pub password_sign_in: bool,
}

impl OidcSettings {
    /// The path of the callback, under the public URL.
    pub const CALLBACK_PATH: &str = "/login/oidc/callback";

    /// Checks what the provider's library would refuse later: the issuer and redirect URLs.
    pub fn check(&self) -> Result<(), String> {
        self.urls().map(drop)
    }

    fn urls(&self) -> Result<(IssuerUrl, RedirectUrl), String> {
        let issuer = IssuerUrl::new(self.issuer.clone())
            .map_err(|e| format!("{:?} is not an issuer URL: {e}", self.issuer))?;
        let redirect = RedirectUrl::new(self.redirect_url.clone())
            .map_err(|e| format!("{:?} is not a redirect URL: {e}", self.redirect_url))?;
        Ok((issuer, redirect))
    }
}

/// The claims of an ID token beyond the standard ones (a `groups` list, say), kept as JSON.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct OtherClaims(serde_json::Map<String, serde_json::Value>);

impl AdditionalClaims for OtherClaims {}

type IdFields = IdTokenFields<
    OtherClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type TokenResponse = StandardTokenResponse<IdFields, CoreTokenType>;
type OidcClient = Client<
    OtherClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    TokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// The provider as last discovered, or when discovery last failed.
enum Discovery {
    Unknown,
    Found {
        metadata: Box<CoreProviderMetadata>,
        at: Instant,
    },
    Failed {
        at: Instant,
    },
}

/// The provider's side of single sign-on: settings, the HTTP client, the discovery cache.
pub(in crate::service) struct Provider {
    settings: OidcSettings,
    issuer: IssuerUrl,
    redirect_url: RedirectUrl,
    http: ProviderHttp,
    discovery: tokio::sync::Mutex<Discovery>,
}

/// An HTTP request to the provider that did not get an answer.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ProviderHttpError(String);

impl Provider {
    /// The provider of `settings`, nothing fetched yet.
    pub(in crate::service) fn new(settings: OidcSettings) -> Result<Self, String> {
        let (issuer, redirect_url) = settings.urls()?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            // A redirect could take the code or the client secret to another host.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("the HTTP client for single sign-on: {e}"))?;
        Ok(Self {
            settings,
            issuer,
            redirect_url,
            http: ProviderHttp(http),
            discovery: tokio::sync::Mutex::new(Discovery::Unknown),
        })
    }

    /// A client from the provider's discovery document, fetched when missing or stale.
    async fn client(&self) -> Result<OidcClient, SsoRefusal> {
        let mut discovery = self.discovery.lock().await;
        let fresh = match &*discovery {
            Discovery::Found { metadata, at } if at.elapsed() < DISCOVERY_TTL => {
                Some(metadata.as_ref().clone())
            }
            Discovery::Failed { at } if at.elapsed() < DISCOVERY_RETRY => {
                return Err(SsoRefusal::Unreachable);
            }
            _ => None,
        };
        let metadata = match fresh {
            Some(metadata) => metadata,
            None => {
                match CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http).await {
                    Ok(metadata) => {
                        *discovery = Discovery::Found {
                            metadata: Box::new(metadata.clone()),
                            at: Instant::now(),
                        };
                        metadata
                    }
                    Err(e) => {
                        tracing::warn!(
                            issuer = %self.settings.issuer,
                            error = %error_chain(&e),
                            "single sign-on: provider discovery failed"
                        );
                        *discovery = Discovery::Failed { at: Instant::now() };
                        return Err(SsoRefusal::Unreachable);
                    }
                }
            }
        };
        drop(discovery);
        // HTTP Basic (the default of RFC 6749 and OpenID Connect) unless the provider says it
        // takes the secret only in the request body.
        let auth_type = match metadata.token_endpoint_auth_methods_supported() {
            Some(methods)
                if !methods.contains(&CoreClientAuthMethod::ClientSecretBasic)
                    && methods.contains(&CoreClientAuthMethod::ClientSecretPost) =>
            {
                AuthType::RequestBody
            }
            _ => AuthType::BasicAuth,
        };
        let client = OidcClient::from_provider_metadata(
            metadata,
            ClientId::new(self.settings.client_id.clone()),
            self.settings
                .client_secret
                .as_ref()
                .map(|s| openidconnect::ClientSecret::new(s.expose().to_owned())),
        )
        .set_redirect_uri(self.redirect_url.clone())
        .set_auth_type(auth_type);
        Ok(client)
    }
}

/// keyward's HTTP client as `openidconnect` calls it.
struct ProviderHttp(reqwest::Client);

impl<'c> AsyncHttpClient<'c> for ProviderHttp {
    type Error = ProviderHttpError;
    type Future =
        Pin<Box<dyn Future<Output = Result<HttpResponse, ProviderHttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

impl ProviderHttp {
    /// One request to the provider, its answer read up to [`MAX_RESPONSE_BYTES`].
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, ProviderHttpError> {
        let request = reqwest::Request::try_from(request)
            .map_err(|e| ProviderHttpError(format!("request: {e}")))?;
        let mut response = self
            .0
            .execute(request)
            .await
            .map_err(|e| ProviderHttpError(e.to_string()))?;
        let mut answer = HttpResponse::new(Vec::new());
        *answer.status_mut() = response.status();
        *answer.headers_mut() = std::mem::take(response.headers_mut());
        let body = answer.body_mut();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| ProviderHttpError(e.to_string()))?
        {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(ProviderHttpError(format!(
                    "the answer is larger than {MAX_RESPONSE_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(answer)
    }
}

/// An error and its causes, in one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A started single sign-on: send the browser to `location` with `cookie` set.
pub struct SsoStart {
    /// The provider's authorization URL.
    pub location: String,
    /// The sign-in cookie (seed, expiry, MAC) for the callback.
    pub cookie: String,
}

impl fmt::Debug for SsoStart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SsoStart([REDACTED])")
    }
}

/// Why a single sign-on did not end in a session; each says so in words a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SsoRefusal {
    /// Single sign-on is not configured.
    NotConfigured,
    /// No sign-in cookie, an expired or forged one, or a `state` that is not the cookie's (the
    /// sign-in was started in another browser, or the link was replayed).
    Stale,
    /// The provider said no (the person cancelled, say); its error code, when it is a plain one.
    ProviderSaidNo(Option<String>),
    /// The provider cannot be reached or its discovery document is unusable.
    Unreachable,
    /// The code was refused at the token endpoint (used before, expired, or not for us).
    CodeRefused,
    /// The ID token is missing or does not verify (signature, issuer, audience, expiry, nonce).
    Unverified,
    /// The linked user is disabled.
    Disabled,
    /// Nobody is linked and `create_users` is off.
    Unknown,
    /// Nobody is linked and no user name could be made from the claims.
    NoName,
    /// Nobody is linked, and a user with the name exists: never taken over.
    NameTaken(String),
    /// Too many failed sign-ins from this address; nothing was checked.
    Throttled,
}

impl fmt::Display for SsoRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotConfigured => f.write_str("Single sign-on is not set up on this keyward."),
            Self::Stale => f.write_str(
                "This sign-in has expired or was started in another browser. Start again.",
            ),
            Self::ProviderSaidNo(Some(code)) => {
                write!(f, "The sign-in provider did not sign you in ({code}).")
            }
            Self::ProviderSaidNo(None) => f.write_str("The sign-in provider did not sign you in."),
            Self::Unreachable => f.write_str(
                "The sign-in provider cannot be reached right now. Try again in a moment.",
            ),
            Self::CodeRefused => f.write_str(
                "The sign-in provider did not accept this sign-in (it may have been used \
                 already). Start again.",
            ),
            Self::Unverified => f.write_str(
                "The sign-in provider's answer could not be verified, so you were not signed in.",
            ),
            Self::Disabled => f.write_str("Your keyward account is disabled."),
            Self::Unknown => f.write_str(
                "Your account is not linked to a keyward user. Ask an admin to add you.",
            ),
            Self::NoName => f.write_str(
                "Your account at the provider has no name keyward can use as a user name. Ask \
                 an admin to add you.",
            ),
            Self::Throttled => {
                f.write_str("Too many failed sign-ins from here. Wait a minute, then try again.")
            }
            Self::NameTaken(name) => write!(
                f,
                "A keyward user named {name} already exists and is not linked to your account, \
                 so you were not signed in as them. Ask an admin."
            ),
        }
    }
}

/// How a single sign-on went.
#[derive(Debug)]
pub enum SsoSignIn {
    /// Signed in: set this session cookie.
    Ok {
        /// The new session id, for the cookie.
        secret: SessionSecret,
        /// Who signed in.
        user: User,
    },
    /// Not signed in, and why.
    Refused(SsoRefusal),
}

/// What the provider's redirect back carried (`GET /login/oidc/callback?...`).
#[derive(Debug, Default)]
pub struct SsoCallback {
    /// `code`.
    pub code: Option<String>,
    /// `state`.
    pub state: Option<String>,
    /// `error`.
    pub error: Option<String>,
}

impl SsoCallback {
    /// Reads a raw query string; junk reads as missing fields, never an error.
    pub fn from_query(query: &str) -> Self {
        let mut callback = Self::default();
        for (key, value) in openidconnect::url::form_urlencoded::parse(query.as_bytes()) {
            let slot = match key.as_ref() {
                "code" => &mut callback.code,
                "state" => &mut callback.state,
                "error" => &mut callback.error,
                _ => continue,
            };
            // A repeated field is ambiguous: the first one counts.
            if slot.is_none() {
                *slot = Some(value.into_owned());
            }
        }
        callback
    }
}

/// The person an ID token that verified names.
struct Vouched {
    /// Its `iss`.
    issuer: String,
    /// Its `sub`.
    subject: String,
    /// Every claim.
    claims: serde_json::Map<String, serde_json::Value>,
}

/// The values one sign-in's seed stands for.
struct Derived {
    state: String,
    nonce: String,
    verifier: String,
}

impl Keyward {
    /// What the sign-in page calls the OpenID provider, if single sign-on is on.
    pub fn sso_provider_name(&self) -> Option<&str> {
        self.oidc.as_ref().map(|p| p.settings.display_name.as_str())
    }

    /// Whether the web page offers the password form (always, unless single sign-on is on
    /// with `password_sign_in = false`).
    pub fn password_sign_in(&self) -> bool {
        self.oidc
            .as_ref()
            .is_none_or(|p| p.settings.password_sign_in)
    }

    /// How a session was signed in, as the page says it: `password`, or the provider's name.
    pub(super) fn sign_in_method_name(&self, signed_in_with: Option<&str>) -> String {
        match (signed_in_with, &self.oidc) {
            (None, _) => "password".to_owned(),
            (Some(issuer), Some(p)) if issuer == p.settings.issuer => {
                p.settings.display_name.clone()
            }
            (Some(issuer), _) => issuer.to_owned(),
        }
    }

    fn sso_derive(&self, seed: &str) -> Derived {
        let derive = |purpose: &str| {
            hex(&self
                .ring()
                .current()
                .hash_str(&format!("keyward oidc {purpose} v1\0{seed}"))
                .0)
        };
        Derived {
            state: derive("state"),
            nonce: derive("nonce"),
            // 64 characters of [0-9a-f]: a valid PKCE verifier (RFC 7636, 43 to 128 characters).
            verifier: derive("pkce"),
        }
    }

    fn sso_cookie_mac(&self, payload: &str) -> String {
        hex(&self
            .ring()
            .current()
            .hash_str(&format!("keyward oidc cookie v1\0{payload}"))
            .0[..16])
    }

    /// Starts a single sign-on: where to send the browser, and the cookie it must bring back.
    pub async fn start_sso(&self) -> ServiceResult<Result<SsoStart, SsoRefusal>> {
        let Some(provider) = &self.oidc else {
            return Ok(Err(SsoRefusal::NotConfigured));
        };
        let client = match provider.client().await {
            Ok(client) => client,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let seed = random_hex(SEED_BYTES)?;
        let expires = self.now().unix_timestamp() + SSO_LIFETIME.whole_seconds();
        let payload = format!("{}.{expires}", seed.as_str());
        let cookie = format!("{payload}.{}", self.sso_cookie_mac(&payload));
        let derived = self.sso_derive(&seed);
        let challenge =
            PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(derived.verifier));
        let (state, nonce) = (derived.state, derived.nonce);
        let (url, _, _) = client
            .authorize_url(
                AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
                move || CsrfToken::new(state),
                move || Nonce::new(nonce),
            )
            .add_scopes(
                provider
                    .settings
                    .scopes
                    .iter()
                    .filter(|s| s.as_str() != "openid")
                    .map(|s| Scope::new(s.clone())),
            )
            .set_pkce_challenge(challenge)
            .url();
        Ok(Ok(SsoStart {
            location: url.to_string(),
            cookie,
        }))
    }

    /// The seed of a sign-in cookie of [`Self::start_sso`], if it is one of this server's and
    /// has not expired.
    fn sso_seed<'c>(&self, cookie: &'c str) -> Option<&'c str> {
        let (payload, mac) = cookie.rsplit_once('.')?;
        let (seed, expires) = payload.split_once('.')?;
        let expires: i64 = expires.parse().ok()?;
        let valid = is_hex(seed, SEED_BYTES)
            && bool::from(
                self.sso_cookie_mac(payload)
                    .as_bytes()
                    .ct_eq(mac.as_bytes()),
            )
            && self.now().unix_timestamp() < expires;
        valid.then_some(seed)
    }

    /// Finishes a single sign-on from the provider's redirect back and the browser's sign-in
    /// cookie; see the module docs for what is checked and recorded.
    pub async fn finish_sso(
        &self,
        cookie: Option<&str>,
        callback: &SsoCallback,
        ip: Option<IpAddr>,
    ) -> ServiceResult<SsoSignIn> {
        let Some(provider) = &self.oidc else {
            return Ok(SsoSignIn::Refused(SsoRefusal::NotConfigured));
        };
        // Failures count against the client's address as failed password sign-ins do (the same
        // key): at the limit, a way back is refused before the provider is asked anything.
        let now = self.now();
        let at = now.unix_timestamp();
        let keys: Vec<String> = ip.map(|ip| format!("ip:{ip}")).into_iter().collect();
        let subjects: Vec<ThrottleSubject> = ip.map(ThrottleSubject::Address).into_iter().collect();
        if let Reservation::Throttled { started } = self.throttle.reserve(&keys, &subjects, at) {
            if let (Some(addr), false) = (ip, started.is_empty()) {
                let mut event = self.throttle_event(
                    &ThrottleSubject::Address(addr),
                    None,
                    "",
                    now,
                    ip,
                    "throttled: too many failed sign-ins; further refusals are counted until \
                     the burst ends",
                );
                // The start of a burst is an event; the refusals in it are counted.
                event.kind = AuditKind::SignInThrottled;
                self.store.append_audit(&event).await?;
            }
            tracing::warn!(ip = ?ip, "single sign-on throttled");
            return Ok(SsoSignIn::Refused(SsoRefusal::Throttled));
        }
        let reserved = Reserved {
            keyward: self,
            keys: &keys,
            at,
            keep: false,
        };
        let vouched = match self.sso_vouched(provider, cookie, callback, ip).await? {
            Ok(vouched) => vouched,
            Err(why) => {
                reserved.keep();
                // Anyone can cause these, so they are recorded only as far as the throttle lets
                // an address (and never without one).
                if ip.is_some() {
                    let event = self.sign_in_event(
                        AuditKind::UserSignInFailed,
                        now,
                        None,
                        "single sign-on",
                        ip,
                        Some(&format!("single sign-on: {why}")),
                    );
                    self.store.append_audit(&event).await?;
                }
                return Ok(SsoSignIn::Refused(why));
            }
        };
        let signed_in = self.sso_sign_in(provider, &vouched, ip).await?;
        match &signed_in {
            SsoSignIn::Ok { .. } => drop(reserved),
            SsoSignIn::Refused(_) => reserved.keep(),
        }
        Ok(signed_in)
    }

    /// The person the provider vouches for, from its redirect back: the cookie's `state`
    /// matches, the code is exchanged (with the PKCE verifier), and the ID token verifies.
    async fn sso_vouched(
        &self,
        provider: &Provider,
        cookie: Option<&str>,
        callback: &SsoCallback,
        ip: Option<IpAddr>,
    ) -> ServiceResult<Result<Vouched, SsoRefusal>> {
        let Some(seed) = cookie.and_then(|c| self.sso_seed(c)) else {
            tracing::info!(ip = ?ip, "single sign-on refused: no valid sign-in cookie");
            return Ok(Err(SsoRefusal::Stale));
        };
        let derived = self.sso_derive(seed);
        let state_matches = callback
            .state
            .as_deref()
            .is_some_and(|s| bool::from(s.as_bytes().ct_eq(derived.state.as_bytes())));
        if let Some(error) = &callback.error {
            // Only an error of the cookie's own sign-in is shown, and only a plain error code.
            let code = (state_matches
                && (1..=64).contains(&error.len())
                && error.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
            .then(|| error.clone());
            tracing::info!(ip = ?ip, error = ?code, "single sign-on: the provider said no");
            return Ok(Err(SsoRefusal::ProviderSaidNo(code)));
        }
        if !state_matches {
            tracing::info!(ip = ?ip, "single sign-on refused: the state is not the cookie's");
            return Ok(Err(SsoRefusal::Stale));
        }
        let Some(code) = callback
            .code
            .as_deref()
            .filter(|c| (1..=MAX_CODE_CHARS).contains(&c.len()))
        else {
            return Ok(Err(SsoRefusal::CodeRefused));
        };
        let client = match provider.client().await {
            Ok(client) => client,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let exchanged = match client.exchange_code(AuthorizationCode::new(code.to_owned())) {
            Ok(request) => {
                request
                    .set_pkce_verifier(PkceCodeVerifier::new(derived.verifier))
                    .request_async(&provider.http)
                    .await
            }
            Err(e) => {
                tracing::warn!(error = %e, "single sign-on: the provider has no token endpoint");
                return Ok(Err(SsoRefusal::Unreachable));
            }
        };
        let response = match exchanged {
            Ok(response) => response,
            Err(e) => {
                tracing::info!(ip = ?ip, error = %error_chain(&e), "single sign-on: code refused");
                return Ok(Err(SsoRefusal::CodeRefused));
            }
        };
        let Some(id_token) = response.extra_fields().id_token() else {
            tracing::warn!("single sign-on: the token response has no ID token");
            return Ok(Err(SsoRefusal::Unverified));
        };
        let verifier = client.id_token_verifier();
        let claims = match id_token.claims(&verifier, &Nonce::new(derived.nonce)) {
            Ok(claims) => claims,
            Err(e) => {
                tracing::warn!(ip = ?ip, error = %error_chain(&e), "single sign-on: ID token refused");
                return Ok(Err(SsoRefusal::Unverified));
            }
        };
        // Every claim as JSON, standard or not, so any of them can name a user or an admin.
        let Ok(serde_json::Value::Object(all)) = serde_json::to_value(claims) else {
            return Ok(Err(SsoRefusal::Unverified));
        };
        Ok(Ok(Vouched {
            issuer: claims.issuer().as_str().to_owned(),
            subject: claims.subject().as_str().to_owned(),
            claims: all,
        }))
    }

    /// The person the provider vouched for: found by their link or created, then signed in.
    async fn sso_sign_in(
        &self,
        provider: &Provider,
        vouched: &Vouched,
        ip: Option<IpAddr>,
    ) -> ServiceResult<SsoSignIn> {
        let Vouched {
            issuer,
            subject,
            claims,
        } = vouched;
        let (issuer, subject) = (issuer.as_str(), subject.as_str());
        let settings = &provider.settings;
        let now = self.now();
        let via = format!("single sign-on ({issuer})");
        let is_admin = settings
            .admin
            .as_ref()
            .map(|admin| match claims.get(&admin.claim) {
                Some(serde_json::Value::String(v)) => *v == admin.value,
                Some(serde_json::Value::Array(values)) => values
                    .iter()
                    .any(|v| v.as_str() == Some(admin.value.as_str())),
                _ => false,
            });

        let user = match self.store.user_by_identity(issuer, subject).await? {
            Some(user) if user.disabled_at.is_some() => {
                return self
                    .sso_refuse(Some(&user), SsoRefusal::Disabled, &via, ip)
                    .await;
            }
            Some(user) => match is_admin {
                Some(is_admin) if is_admin != user.is_admin => {
                    let event = AuditEvent {
                        detail: Some(format!(
                            "{via}: the claim {} {}",
                            settings.admin.as_ref().map_or("", |a| a.claim.as_str()),
                            if is_admin {
                                "makes them an admin"
                            } else {
                                "no longer makes them an admin"
                            }
                        )),
                        ..self.sign_in_event(
                            AuditKind::UserAdminChanged,
                            now,
                            Some(&user.id),
                            &via,
                            ip,
                            None,
                        )
                    };
                    // Through the one user update, so every cache drops what it knew of
                    // the owner: a demoted admin's tokens lose their administrative scopes
                    // at once.
                    let change = keyward_store::UserUpdate {
                        is_admin: Some(is_admin),
                        ..keyward_store::UserUpdate::default()
                    };
                    self.store
                        .update_user(&user.id, &change, now, &[event])
                        .await?
                }
                _ => user,
            },
            None if !settings.create_users => {
                return self.sso_refuse(None, SsoRefusal::Unknown, &via, ip).await;
            }
            None => {
                let Some(name) = user_name(claims, &settings.name_claim) else {
                    return self.sso_refuse(None, SsoRefusal::NoName, &via, ip).await;
                };
                if let Some(namesake) = self.store.user_by_name(&name).await? {
                    return self
                        .sso_refuse(
                            Some(&namesake),
                            SsoRefusal::NameTaken(name.to_string()),
                            &via,
                            ip,
                        )
                        .await;
                }
                let email = claims
                    .get("email")
                    .and_then(serde_json::Value::as_str)
                    .and_then(|e| Email::parse(e).ok());
                let user = User {
                    email,
                    is_admin: is_admin.unwrap_or(false),
                    ..User::new(UserId::generate(now)?, name.clone(), UserKind::Person, now)
                };
                let identity = IdentityRecord {
                    issuer: issuer.to_owned(),
                    subject: subject.to_owned(),
                    user: user.id.clone(),
                    created_at: now,
                };
                let event = AuditEvent {
                    detail: Some(format!("{via}: first sign-in")),
                    ..self.sign_in_event(AuditKind::UserAdded, now, Some(&user.id), &via, ip, None)
                };
                let new = NewUser {
                    user: user.clone(),
                    password_hash: None,
                };
                match self
                    .store
                    .add_user_with_identity(&new, &identity, &event)
                    .await
                {
                    Ok(()) => {
                        tracing::info!(user = %user.name, admin = user.is_admin, issuer, "user added by single sign-on");
                        user
                    }
                    // Another sign-in took the name (or linked the person) in between.
                    Err(keyward_store::StoreError::Conflict(_)) => {
                        return self
                            .sso_refuse(None, SsoRefusal::NameTaken(name.to_string()), &via, ip)
                            .await;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let secret = self
            .start_session(&user, Some(issuer), Some(&via), ip)
            .await?;
        tracing::info!(user = %user.name, issuer, "signed in by single sign-on");
        Ok(SsoSignIn::Ok { secret, user })
    }
}

impl Keyward {
    /// Records the refusal of a person the provider vouched for (`user`, when one is named).
    async fn sso_refuse(
        &self,
        user: Option<&User>,
        why: SsoRefusal,
        via: &str,
        ip: Option<IpAddr>,
    ) -> ServiceResult<SsoSignIn> {
        let label = user.map_or_else(|| via.to_owned(), |u| u.name.to_string());
        let detail = format!("{via}: {why}");
        let event = self.sign_in_event(
            AuditKind::UserSignInFailed,
            self.now(),
            user.map(|u| &u.id),
            &label,
            ip,
            Some(&detail),
        );
        self.store.append_audit(&event).await?;
        tracing::info!(user = ?user.map(|u| u.name.as_str()), reason = %why, "single sign-on refused");
        Ok(SsoSignIn::Refused(why))
    }
}

/// A new user's name from the claims: `name_claim`, else `email`, else `sub`, lowercased; the
/// first that is a valid user name.
fn user_name(
    claims: &serde_json::Map<String, serde_json::Value>,
    name_claim: &str,
) -> Option<UserName> {
    [name_claim, "email", "sub"]
        .into_iter()
        .filter_map(|claim| claims.get(claim).and_then(serde_json::Value::as_str))
        .find_map(|value| UserName::parse(&value.trim().to_lowercase()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        match value {
            serde_json::Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_user_name_falls_back_from_the_claim_to_email_to_sub() {
        let all = claims(json!({
            "preferred_username": "Ann.Lee", "email": "ann@example.com", "sub": "248289761001"
        }));
        let name = |claim| user_name(&all, claim).map(|n| n.to_string());
        assert_eq!(name("preferred_username").as_deref(), Some("ann.lee"));
        assert_eq!(name("nickname").as_deref(), Some("ann@example.com"));
        let bad = claims(json!({"preferred_username": "Ann Lee", "sub": "s-1"}));
        assert_eq!(
            user_name(&bad, "preferred_username").map(|n| n.to_string()),
            Some("s-1".to_owned()),
            "a name that is not a user name is skipped"
        );
        assert!(user_name(&claims(json!({"sub": "Ü"})), "x").is_none());
    }

    #[test]
    fn a_callback_query_never_fails_to_read() {
        let read = SsoCallback::from_query("code=a%20b&state=s&state=t&error&x=%ZZ&&=");
        assert_eq!(read.code.as_deref(), Some("a b"));
        assert_eq!(
            read.state.as_deref(),
            Some("s"),
            "the first of a repeated field"
        );
        assert_eq!(read.error.as_deref(), Some(""));
        let junk = SsoCallback::from_query("%%%\u{0}");
        assert!(junk.code.is_none() && junk.state.is_none());
    }

    proptest::proptest! {
        #[test]
        fn any_query_reads_without_panicking(query in ".{0,200}") {
            let read = SsoCallback::from_query(&query);
            proptest::prop_assert!(read.code.is_none() || query.contains("code"));
        }
    }

    #[test]
    fn the_client_secret_is_redacted() {
        let secret = OidcClientSecret::new("hunter2".to_owned());
        assert!(!format!("{secret:?}").contains("hunter2"));
    }
}
