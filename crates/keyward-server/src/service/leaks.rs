//! Leaked secrets: reports from GitHub's secret scanning partner program, GitLab's token
//! revocation API and in-house scanners, each revoking the reported token within the request.
//!
//! - **A report revokes whoever owns the token.** Holding a secret is all the right a report
//!   needs (whoever holds it could use it anyway), so a reporter reaches every user's tokens,
//!   and learns nothing of them but whether the secret was one of keyward's (GitHub's
//!   `true_positive`).
//! - **Only a working secret is revoked.** A secret whose token is revoked or expired, or an old
//!   secret past its grace period, changes nothing: a report of it writes nothing, so a report
//!   sent twice revokes once.
//! - **The secret is never kept.** A revocation is recorded as `token.revoked` (reason `leaked`)
//!   and `token.leaked` (where it was found) in the same transaction; the feedback GitHub asks
//!   for names a secret by its SHA-256, computed in memory.
//! - **The reporters are checked first.** GitHub signs each report with ECDSA P-256 (SHA-256)
//!   under a key it publishes; the keys are fetched from `keys_url`, kept, and fetched again
//!   when a report names a key keyward does not know, at most once per [`KEY_REFETCH_EVERY`]
//!   so that anonymous requests cannot make keyward hammer GitHub. GitLab sends a pre-shared
//!   token as the whole `Authorization` header, compared in constant time.

use base64::Engine as _;
use keyward_core::{AuditEvent, AuditKind, RawSecret, TokenId, format};
use keyward_store::{Revocation, TokenFilter};
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use super::{Action, Caller, Keyward, ServiceError, ServiceResult};

/// GitHub's published secret scanning keys, the default `[leaks.github] keys_url`.
pub const GITHUB_KEYS_URL: &str = "https://api.github.com/meta/public_keys/secret_scanning";
/// The reporter's name in the audit trail for GitHub's reports.
pub const GITHUB: &str = "GitHub secret scanning";
/// The reporter's name in the audit trail for GitLab's reports.
pub const GITLAB: &str = "GitLab";
/// The token types `GET /v1/revocable_token_types` names: GitLab's type is the secret
/// detection rule's identifier (`gitleaks_rule_id_` and the rule's id), and a deployment's
/// custom rule for keyward tokens has the id `keyward_token`.
pub const GITLAB_TOKEN_TYPES: &[&str] = &["gitleaks_rule_id_keyward_token"];
/// The revocation reason of a leaked token.
pub const LEAKED_REASON: &str = "leaked";
/// Most secrets one report may carry.
pub const MAX_REPORTED: usize = 1000;
/// The soonest keyward fetches GitHub's keys again after fetching them (or failing to).
pub const KEY_REFETCH_EVERY: Duration = Duration::from_secs(60);
/// How long fetched keys are trusted before a report makes keyward fetch them again.
const KEYS_FRESH_FOR: Duration = Duration::from_secs(24 * 3600);
/// Largest key document accepted.
const MAX_KEY_DOCUMENT: usize = 256 * 1024;
/// Longest place (URL, source) kept in the audit trail, in characters.
const MAX_PLACE_CHARS: usize = 300;

/// Leak intake's partners, each off (its endpoints 404) unless configured.
#[derive(Debug, Clone, Default)]
pub struct LeakSettings {
    /// GitHub's secret scanning partner program.
    pub github: Option<GithubLeakSettings>,
    /// GitLab's token revocation API.
    pub gitlab: Option<GitlabLeakSettings>,
}

/// `[leaks.github]`.
#[derive(Debug, Clone)]
pub struct GithubLeakSettings {
    /// Where GitHub publishes the keys its reports are signed with.
    pub keys_url: String,
}

/// `[leaks.gitlab]`.
#[derive(Debug, Clone)]
pub struct GitlabLeakSettings {
    /// The token GitLab sends as its whole `Authorization` header.
    pub token: PresharedToken,
}

/// A pre-shared token: redacted in `Debug`, zeroized on drop.
#[derive(Clone)]
pub struct PresharedToken(Zeroizing<String>);

impl PresharedToken {
    /// Wraps the configured token.
    pub fn new(token: String) -> Self {
        Self(Zeroizing::new(token))
    }

    /// Whether `presented` is this token, in constant time (their hashes are compared, so not
    /// even the length shows in the time taken).
    fn matches(&self, presented: &[u8]) -> bool {
        let presented = Sha256::digest(presented);
        let expected = Sha256::digest(self.0.as_bytes());
        presented.ct_eq(&expected).into()
    }
}

impl std::fmt::Debug for PresharedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PresharedToken([REDACTED])")
    }
}

/// One reported secret and where it was found.
#[derive(Debug)]
pub struct Leak {
    /// The secret as reported.
    pub secret: RawSecret,
    /// Where it was found (a URL), if said.
    pub url: Option<String>,
    /// What kind of place (GitHub's `source`: `content`, `commit`, …; an in-house scanner's
    /// name), if said.
    pub source: Option<String>,
}

/// What a report did with one secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeakVerdict {
    /// A working secret of this token: the token is revoked now.
    Revoked(TokenId),
    /// A secret of this token that no longer works (revoked, expired, or an old secret past
    /// its grace period): nothing changed.
    Inactive(TokenId),
    /// Not a keyward secret of this deployment (malformed, forged, unknown).
    NotOurs,
}

impl LeakVerdict {
    /// Whether the secret was one of keyward's (GitHub's `true_positive`).
    pub fn is_ours(&self) -> bool {
        !matches!(self, Self::NotOurs)
    }
}

/// The SHA-256 of a secret as sent, in lowercase hex: how GitHub's feedback names it.
pub fn secret_sha256(secret: &str) -> String {
    keyward_core::hex(&Sha256::digest(secret.as_bytes()))
}

/// GitHub's keys as last fetched.
#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, VerifyingKey>,
    fetched: Option<Instant>,
}

/// GitHub's signing keys: fetched on demand, at most once per [`KEY_REFETCH_EVERY`].
pub(super) struct GithubKeys {
    url: String,
    http: reqwest::Client,
    cache: tokio::sync::Mutex<KeyCache>,
}

/// GitHub's key document.
#[derive(serde::Deserialize)]
struct KeyDocument {
    public_keys: Vec<PublishedKey>,
}

#[derive(serde::Deserialize)]
struct PublishedKey {
    key_identifier: String,
    key: String,
}

impl GithubKeys {
    pub(super) fn new(settings: &GithubLeakSettings) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()?;
        Ok(Self {
            url: settings.keys_url.clone(),
            http,
            cache: tokio::sync::Mutex::new(KeyCache::default()),
        })
    }

    /// The key named `id`: from the cache, or fetched when unknown (or the cache is stale)
    /// and the last fetch is old enough. `Ok(None)`: GitHub does not publish such a key.
    async fn key(&self, id: &str) -> ServiceResult<Option<VerifyingKey>> {
        // One fetch at a time: concurrent reports wait for it rather than fetching again.
        let mut cache = self.cache.lock().await;
        let stale = cache
            .fetched
            .is_none_or(|at| at.elapsed() >= KEYS_FRESH_FOR);
        if let Some(key) = cache.keys.get(id)
            && !stale
        {
            return Ok(Some(*key));
        }
        let may_fetch = cache
            .fetched
            .is_none_or(|at| at.elapsed() >= KEY_REFETCH_EVERY);
        if may_fetch {
            cache.fetched = Some(Instant::now());
            match self.fetch().await {
                Ok(keys) => cache.keys = keys,
                Err(why) => {
                    tracing::warn!(url = %self.url, error = %why, "leaks: cannot fetch GitHub's secret scanning keys");
                }
            }
        }
        // No keys at all (the fetch failed, now or within the last minute): nothing can be
        // checked, so the report is not called forged; GitHub sends it again later.
        if cache.keys.is_empty() {
            return Err(ServiceError::Unavailable(
                "GitHub's signing keys cannot be fetched".to_owned(),
            ));
        }
        Ok(cache.keys.get(id).copied())
    }

    async fn fetch(&self) -> Result<HashMap<String, VerifyingKey>, String> {
        let mut response = self
            .http
            .get(&self.url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| e.to_string())?
            .error_for_status()
            .map_err(|e| e.to_string())?;
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > MAX_KEY_DOCUMENT {
                return Err("the key document is too large".to_owned());
            }
            body.extend_from_slice(&chunk);
        }
        let document: KeyDocument =
            serde_json::from_slice(&body).map_err(|e| format!("not a key document: {e}"))?;
        let mut keys = HashMap::new();
        for published in document.public_keys {
            match VerifyingKey::from_public_key_pem(&published.key) {
                Ok(key) => {
                    keys.insert(published.key_identifier, key);
                }
                Err(e) => tracing::warn!(
                    key_identifier = %published.key_identifier,
                    error = %e,
                    "leaks: GitHub published a key that is not a P-256 public key; ignored"
                ),
            }
        }
        Ok(keys)
    }
}

impl Keyward {
    /// GitHub's secret scanning as the caller of `POST /v1/leaks/github`, once `signature`
    /// (base64 DER ECDSA P-256 SHA-256 over the raw `body`) checks under the published key
    /// `key_id`. Unauthenticated for a missing, malformed or wrong signature or an unknown key;
    /// not found when GitHub's reports are not enabled.
    pub async fn github_reporter(
        &self,
        key_id: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        ip: Option<IpAddr>,
    ) -> ServiceResult<Caller> {
        let keys = self.github_keys.as_ref().ok_or(ServiceError::NotFound)?;
        let (Some(key_id), Some(signature)) = (key_id, signature) else {
            return Err(ServiceError::Unauthenticated(None));
        };
        let signature = base64::engine::general_purpose::STANDARD
            .decode(signature.trim())
            .ok()
            .and_then(|der| Signature::from_der(&der).ok())
            .ok_or(ServiceError::Unauthenticated(None))?;
        let key = keys
            .key(key_id.trim())
            .await?
            .ok_or(ServiceError::Unauthenticated(None))?;
        key.verify(body, &signature)
            .map_err(|_| ServiceError::Unauthenticated(None))?;
        Ok(Caller::reporter(GITHUB, ip))
    }

    /// GitLab as the caller of its token revocation API, once `authorization` (the whole
    /// `Authorization` header, no scheme) is the pre-shared `[leaks.gitlab] token`. Not found
    /// when GitLab's reports are not enabled.
    pub fn gitlab_reporter(
        &self,
        authorization: Option<&[u8]>,
        ip: Option<IpAddr>,
    ) -> ServiceResult<Caller> {
        let settings = self
            .settings
            .leaks
            .gitlab
            .as_ref()
            .ok_or(ServiceError::NotFound)?;
        match authorization {
            Some(presented) if settings.token.matches(presented) => {
                Ok(Caller::reporter(GITLAB, ip))
            }
            _ => Err(ServiceError::Unauthenticated(None)),
        }
    }

    /// Revokes the token of every working secret in `leaks` (see the module docs), one
    /// transaction per token, and says what it did with each, in order.
    pub async fn report_leaks(
        &self,
        caller: &Caller,
        leaks: &[Leak],
    ) -> ServiceResult<Vec<LeakVerdict>> {
        caller.authorize(Action::ReportLeaks)?;
        if leaks.len() > MAX_REPORTED {
            return Err(ServiceError::Invalid(
                "a report may carry at most 1000 secrets",
            ));
        }
        let mut verdicts = Vec::with_capacity(leaks.len());
        for leak in leaks {
            verdicts.push(self.report_leak(caller, leak).await?);
        }
        Ok(verdicts)
    }

    async fn report_leak(&self, caller: &Caller, leak: &Leak) -> ServiceResult<LeakVerdict> {
        let secret = leak.secret.expose().trim();
        if format::validate(secret).is_err() {
            return Ok(LeakVerdict::NotOurs);
        }
        // From the store, not the cache: a revocation acts on the record as it is now.
        let Some(found) = self.lookup_secret(secret).await? else {
            return Ok(LeakVerdict::NotOurs);
        };
        let token = found.token;
        let now = self.now();
        let works = token.revoked_at.is_none()
            && token.expires_at.is_none_or(|at| at > now)
            && found.secret_valid_until.is_none_or(|until| until > now);
        if !works {
            return Ok(LeakVerdict::Inactive(token.id));
        }
        let revoked = AuditEvent {
            at: now,
            kind: AuditKind::TokenRevoked,
            actor: caller.actor(),
            subject_user: None,
            token_id: None,
            ip: caller.ip(),
            detail: Some(LEAKED_REASON.to_owned()),
        };
        let leaked = AuditEvent {
            kind: AuditKind::TokenLeaked,
            detail: Some(leak_detail(leak)),
            ..revoked.clone()
        };
        let revocation = Revocation {
            at: now,
            by: revoked.actor.label.clone(),
            reason: Some(LEAKED_REASON.to_owned()),
        };
        let done = self
            .store
            .revoke_tokens(
                std::slice::from_ref(&token.id),
                &TokenFilter::default(),
                &revocation,
                &[revoked, leaked],
            )
            .await?;
        if done.is_empty() {
            // Revoked by someone else since the lookup.
            return Ok(LeakVerdict::Inactive(token.id));
        }
        tracing::warn!(token_id = %token.id, owner = %token.owner, reporter = %revocation.by, "leaked token revoked");
        Ok(LeakVerdict::Revoked(token.id))
    }
}

/// Where a leak was found, for the `token.leaked` event: `source: …; url: …`, each part
/// cleaned of characters that could disguise it and shortened, and left out if it holds a
/// secret.
fn leak_detail(leak: &Leak) -> String {
    let clean = |text: &str| -> Option<String> {
        let text: String = text
            .trim()
            .chars()
            .map(|c| {
                if keyward_core::is_unsafe_text_char(c) {
                    '?'
                } else {
                    c
                }
            })
            .take(MAX_PLACE_CHARS)
            .collect();
        (!text.is_empty() && !format::contains_token(&text)).then_some(text)
    };
    let source = leak.source.as_deref().and_then(clean);
    let url = leak.url.as_deref().and_then(clean);
    match (source, url) {
        (Some(source), Some(url)) => format!("source: {source}; url: {url}"),
        (Some(source), None) => format!("source: {source}"),
        (None, Some(url)) => format!("url: {url}"),
        (None, None) => "source: unknown".to_owned(),
    }
}
