//! Verifying tokens from a Rust service: in process over the local store ([`Verifier`]), or by
//! asking a keyward server ([`RemoteVerifier`]). Both answer with the same [`Identity`] or
//! [`VerifyError`], so [`crate::layer::require_scope`] works with either.

use keyward_core::{
    Clock, InactiveReason, Scopes, ServerKey, SystemClock, TokenHash, TokenHasher, TokenId, UserId,
    UserName,
};
use keyward_server::{Keyward, ServiceError, VerifiedToken};
use serde::Deserialize;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// Who a verified token speaks for: what a protected handler finds in its request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's id.
    pub token_id: TokenId,
    /// The owner's user id.
    pub owner_id: UserId,
    /// The owner's user name.
    pub owner_name: UserName,
    /// Every scope the token holds (at least the ones the route needs).
    pub scopes: Scopes,
    /// When the token expires (`None` = never).
    pub expires_at: Option<OffsetDateTime>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No token was presented (`None`), or it is not active (why).
    #[error("authentication required: {}", .0.map_or("no token was presented", InactiveReason::as_str))]
    Unauthenticated(Option<InactiveReason>),
    /// The token is active but lacks some of these scopes.
    #[error("this token lacks the scope {0}")]
    MissingScope(Scopes),
    /// The answer cannot be given safely now (store or server unreachable): refuse, retry later.
    #[error("token verification is unavailable: {0}")]
    Unavailable(String),
}

impl From<VerifyError> for ServiceError {
    fn from(e: VerifyError) -> Self {
        match e {
            VerifyError::Unauthenticated(reason) => Self::Unauthenticated(reason),
            VerifyError::MissingScope(needed) => Self::MissingScope {
                needed: needed.to_string(),
            },
            VerifyError::Unavailable(why) => Self::Unavailable(why),
        }
    }
}

/// Anything that can tell whether a token is active and grants scopes.
pub trait TokenVerifier: Send + Sync + 'static {
    /// Whether `secret` is an active token granting every scope of `wanted`.
    fn verify(
        &self,
        secret: &str,
        wanted: &Scopes,
    ) -> impl Future<Output = Result<Identity, VerifyError>> + Send;
}

/// Verifies in process, over the local store: the service's cached hot path (one keyed hash and
/// one memory lookup), with revocations seen on the next verification.
#[derive(Clone)]
pub struct Verifier {
    keyward: Arc<Keyward>,
}

impl Verifier {
    /// A verifier over an opened service (see [`crate::open`]).
    pub fn new(keyward: Arc<Keyward>) -> Self {
        Self { keyward }
    }
}

impl TokenVerifier for Verifier {
    async fn verify(&self, secret: &str, wanted: &Scopes) -> Result<Identity, VerifyError> {
        let identity = |token: &VerifiedToken, _: &keyward_server::service::Allowance| Identity {
            token_id: token.token_id(),
            owner_id: token.owner_id().clone(),
            owner_name: token.owner_name().clone(),
            scopes: token.scopes().clone(),
            expires_at: token.expires_at(),
        };
        match self
            .keyward
            .authorize(Some(secret), wanted, None, identity)
            .await
        {
            Ok(identity) => Ok(identity),
            Err(ServiceError::Unauthenticated(reason)) => Err(VerifyError::Unauthenticated(reason)),
            Err(ServiceError::Limited { reason, .. }) => {
                Err(VerifyError::Unauthenticated(Some(reason)))
            }
            Err(ServiceError::MissingScope { .. }) => {
                Err(VerifyError::MissingScope(wanted.clone()))
            }
            Err(e) => Err(VerifyError::Unavailable(e.to_string())),
        }
    }
}

/// How long [`RemoteVerifier`] trusts a positive answer by default.
pub const DEFAULT_REMOTE_TTL: Duration = Duration::from_secs(5);
/// How many positive answers [`RemoteVerifier`] keeps.
pub const REMOTE_CACHE_CAPACITY: u64 = 10_000;

/// Verifies by asking a keyward server (`POST /v1/verify`), keeping positive answers for a
/// short TTL ([`DEFAULT_REMOTE_TTL`], 5 s) so a busy API does not ask on every request.
///
/// The trade-off: a token revoked on the server may still pass here for up to the TTL after
/// its revocation (refusals are never cached, so a new token works at once). Use
/// [`RemoteVerifier::with_ttl`] with `Duration::ZERO` to ask every time, or the in-process
/// [`Verifier`] for no staleness at all. Plain HTTP only (no TLS is compiled in): run it next to
/// the keyward server or behind a TLS-terminating proxy on a private network.
///
/// Cached answers are keyed by an HMAC of the token under a key made for this process, so the
/// cache holds no token in clear.
#[derive(Clone)]
pub struct RemoteVerifier {
    verify_url: String,
    client: reqwest::Client,
    hasher: TokenHasher,
    cache: Option<moka::sync::Cache<TokenHash, Arc<Identity>>>,
    clock: Arc<dyn Clock>,
}

impl RemoteVerifier {
    /// A verifier for the keyward server at `base_url` (e.g. `http://127.0.0.1:8080`) with the
    /// default TTL.
    pub fn new(base_url: &str) -> Result<Self, VerifyError> {
        Self::with_ttl(base_url, DEFAULT_REMOTE_TTL)
    }

    /// [`RemoteVerifier::new`] keeping positive answers for `ttl` (zero: no cache).
    pub fn with_ttl(base_url: &str, ttl: Duration) -> Result<Self, VerifyError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| VerifyError::Unavailable(e.to_string()))?;
        let key = ServerKey::generate().map_err(|e| VerifyError::Unavailable(e.to_string()))?;
        let cache = (!ttl.is_zero()).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(REMOTE_CACHE_CAPACITY)
                .time_to_live(ttl)
                .build()
        });
        Ok(Self {
            verify_url: format!("{}/v1/verify", base_url.trim_end_matches('/')),
            client,
            hasher: TokenHasher::new(&key),
            cache,
            clock: Arc::new(SystemClock),
        })
    }

    async fn ask(&self, secret: &str) -> Result<Identity, VerifyError> {
        #[derive(serde::Serialize)]
        struct Request<'a> {
            token: &'a str,
        }
        #[derive(Deserialize)]
        struct Owner {
            id: UserId,
            name: String,
        }
        #[derive(Deserialize)]
        struct Answer {
            active: bool,
            token_id: Option<TokenId>,
            owner: Option<Owner>,
            scopes: Option<Scopes>,
            #[serde(default, with = "time::serde::rfc3339::option")]
            expires_at: Option<OffsetDateTime>,
            reason: Option<InactiveReason>,
        }
        let unavailable = |e: reqwest::Error| VerifyError::Unavailable(e.without_url().to_string());
        let response = self
            .client
            .post(&self.verify_url)
            .json(&Request { token: secret })
            .send()
            .await
            .map_err(unavailable)?;
        if !response.status().is_success() {
            return Err(VerifyError::Unavailable(format!(
                "the keyward server answered {}",
                response.status()
            )));
        }
        let answer: Answer = response.json().await.map_err(unavailable)?;
        match answer {
            Answer {
                active: true,
                token_id: Some(token_id),
                owner: Some(owner),
                scopes: Some(scopes),
                expires_at,
                ..
            } => Ok(Identity {
                token_id,
                owner_id: owner.id,
                owner_name: UserName::parse(&owner.name)
                    .map_err(|e| VerifyError::Unavailable(e.to_string()))?,
                scopes,
                expires_at,
            }),
            Answer {
                active: false,
                reason,
                ..
            } => Err(VerifyError::Unauthenticated(Some(
                reason.unwrap_or(InactiveReason::Unknown),
            ))),
            Answer { .. } => Err(VerifyError::Unavailable(
                "the keyward server's answer is incomplete".to_owned(),
            )),
        }
    }
}

/// The cached or fresh identity, checked against what this request needs.
fn grant(
    identity: &Identity,
    wanted: &Scopes,
    now: OffsetDateTime,
) -> Result<Identity, VerifyError> {
    if identity.expires_at.is_some_and(|at| at <= now) {
        return Err(VerifyError::Unauthenticated(Some(InactiveReason::Expired)));
    }
    if !identity.scopes.covers_all(wanted) {
        return Err(VerifyError::MissingScope(wanted.clone()));
    }
    Ok(identity.clone())
}

impl TokenVerifier for RemoteVerifier {
    async fn verify(&self, secret: &str, wanted: &Scopes) -> Result<Identity, VerifyError> {
        // Garbage never costs a round trip.
        if keyward_core::format::validate(secret).is_err() {
            return Err(VerifyError::Unauthenticated(Some(
                InactiveReason::Malformed,
            )));
        }
        let Some(cache) = &self.cache else {
            return grant(&self.ask(secret).await?, wanted, self.clock.now());
        };
        let key = self.hasher.hash_str(secret);
        if let Some(identity) = cache.get(&key) {
            return grant(&identity, wanted, self.clock.now());
        }
        // Asked without scopes, so one cached answer serves every route's scopes.
        let identity = Arc::new(self.ask(secret).await?);
        cache.insert(key, Arc::clone(&identity));
        grant(&identity, wanted, self.clock.now())
    }
}
