//! People at the web page: signing in with a password, sessions, CSRF tokens, one-time form
//! nonces, sign-in throttling, and disabling users.
//!
//! - A session id is 256 bits from the OS CSPRNG, given to the browser once in a cookie; the
//!   store keeps only `HMAC(server key, "keyward session v1\0" + id)`.
//! - A session's CSRF token is derived from its id under the server key (a synchronizer token
//!   that needs no storage): a page can embed it, and only the holder of the cookie can have it.
//! - Sessions end after [`SESSION_IDLE`] without use or [`SESSION_MAX`] after sign-in,
//!   whichever comes first, at sign-out, and when the user is disabled.
//! - Failed sign-ins are counted per account name and per client address over a sliding
//!   [`SIGN_IN_WINDOW`]; at [`SIGN_IN_LIMIT`] failures further attempts are refused without the
//!   password being checked, until the window slides past them. The counters are in memory, per
//!   instance (with N instances behind a balancer the limit is at most N times as loose).
//! - The answer never tells whether a name exists: unknown names are checked against a dummy
//!   Argon2id hash, so they take as long as known ones.

use keyward_core::{Actor, AuditEvent, AuditKind, RawSecret, TokenHash, User, UserId, UserName};
use keyward_store::SessionRecord;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::sync::{LazyLock, Mutex};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use super::{Acting, Keyward, ServiceError, ServiceResult, password};

/// A session ends after this long without a request.
pub const SESSION_IDLE: Duration = Duration::hours(12);
/// A session ends this long after sign-in, however active.
pub const SESSION_MAX: Duration = Duration::days(7);
/// A session's last use is written at most this often.
const TOUCH_EVERY: Duration = Duration::minutes(1);
/// Failed sign-ins allowed per account name, and per client address, within [`SIGN_IN_WINDOW`].
pub const SIGN_IN_LIMIT: usize = 10;
/// The sliding window failed sign-ins are counted over.
pub const SIGN_IN_WINDOW: Duration = Duration::minutes(1);
/// How many names and addresses the throttle tracks before it forgets quiet ones.
const THROTTLE_KEYS: usize = 100_000;
/// Random bytes in a session id (hex in the cookie) and in a form nonce.
const SESSION_ID_BYTES: usize = 32;
const NONCE_BYTES: usize = 16;

/// A session id as the browser holds it. Only ever in the `Set-Cookie` header; redacted in
/// `Debug`, zeroized on drop.
pub struct SessionSecret(Zeroizing<String>);

impl SessionSecret {
    /// The cookie value.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SessionSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionSecret([REDACTED])")
    }
}

/// A signed-in person, for one request. `Debug` leaves out the CSRF token.
#[derive(Clone)]
pub struct WebSession {
    /// Who.
    pub user: User,
    /// The session's stored hash (names it for sign-out and form nonces).
    pub id_hash: TokenHash,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
}

impl fmt::Debug for WebSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSession")
            .field("user", &self.user)
            .field("id_hash", &self.id_hash)
            .field("csrf", &"[REDACTED]")
            .finish()
    }
}

impl WebSession {
    /// The person acting on their own tokens, from `ip`: no scope ceiling, only their tokens.
    pub fn acting(&self, ip: Option<IpAddr>) -> Acting {
        Acting {
            within: Some(self.user.id.clone()),
            actor: Actor {
                user: Some(self.user.id.clone()),
                token: None,
                label: self.user.name.to_string(),
            },
            ip,
            ceiling: None,
            expiry_ceiling: None,
        }
    }

    /// An admin acting on users (any user's record, not their tokens).
    pub fn acting_as_admin(&self, ip: Option<IpAddr>) -> Acting {
        Acting {
            within: None,
            ..self.acting(ip)
        }
    }
}

/// How a sign-in went. The two refusals are shown the same way whether or not the name exists.
pub enum SignIn {
    /// Signed in: set this cookie.
    Ok {
        /// The new session id, for the cookie.
        secret: SessionSecret,
        /// Who signed in.
        user: User,
    },
    /// Wrong name or password, or a disabled user.
    Refused,
    /// Too many failures for this name or address; the password was not checked.
    Throttled,
}

/// Failed sign-ins per key (`user:NAME`, `ip:ADDR`), as unix seconds, oldest first.
#[derive(Default)]
pub(super) struct SignInThrottle {
    failures: Mutex<HashMap<String, VecDeque<i64>>>,
}

impl SignInThrottle {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, VecDeque<i64>>) -> T) -> T {
        let mut map = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut map)
    }

    fn blocked(&self, keys: &[String], now: i64) -> bool {
        let since = now - SIGN_IN_WINDOW.whole_seconds();
        self.with(|map| {
            keys.iter().any(|k| {
                map.get_mut(k).is_some_and(|times| {
                    while times.front().is_some_and(|&t| t <= since) {
                        times.pop_front();
                    }
                    times.len() >= SIGN_IN_LIMIT
                })
            })
        })
    }

    fn fail(&self, keys: &[String], now: i64) {
        let since = now - SIGN_IN_WINDOW.whole_seconds();
        self.with(|map| {
            if map.len() >= THROTTLE_KEYS {
                map.retain(|_, times| times.back().is_some_and(|&t| t > since));
            }
            for key in keys {
                let times = map.entry(key.clone()).or_default();
                times.push_back(now);
                // Never more than the limit matters; keep memory per key bounded.
                while times.len() > SIGN_IN_LIMIT {
                    times.pop_front();
                }
            }
        });
    }

    fn clear(&self, key: &str) {
        self.with(|map| map.remove(key));
    }
}

/// An Argon2id hash nobody's password matches, checked for unknown names so that a refusal takes
/// as long whether or not the name exists.
static DUMMY_HASH: LazyLock<Option<String>> = LazyLock::new(|| {
    password::hash_password(&RawSecret::new("keyward dummy password".to_owned())).ok()
});

fn random_hex(bytes: usize) -> ServiceResult<Zeroizing<String>> {
    let mut buf = Zeroizing::new(vec![0u8; bytes]);
    keyward_core::fill_random(&mut buf)?;
    Ok(Zeroizing::new(hex(&buf)))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0x0f)]])
        .map(char::from)
        .collect()
}

fn is_hex(s: &str, bytes: usize) -> bool {
    s.len() == bytes * 2 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Keyward {
    fn session_hash(&self, secret: &str) -> TokenHash {
        self.hasher
            .hash_str(&format!("keyward session v1\0{secret}"))
    }

    fn csrf_for(&self, secret: &str) -> String {
        hex(&self
            .hasher
            .hash_str(&format!("keyward csrf v1\0{secret}"))
            .0)
    }

    fn sign_in_event(
        &self,
        kind: AuditKind,
        at: OffsetDateTime,
        user: Option<&UserId>,
        label: &str,
        ip: Option<IpAddr>,
        detail: Option<&str>,
    ) -> AuditEvent {
        AuditEvent {
            at,
            kind,
            actor: Actor {
                user: user.cloned(),
                token: None,
                label: label.to_owned(),
            },
            subject_user: user.cloned(),
            token_id: None,
            ip,
            detail: detail.map(str::to_owned),
        }
    }

    /// Signs `name` in with `password` from `ip`; see the module docs for the rules.
    pub async fn sign_in(
        &self,
        name: &str,
        password: RawSecret,
        ip: Option<IpAddr>,
    ) -> ServiceResult<SignIn> {
        let now = self.now();
        // What was typed, made safe for the audit trail (a name is at most 64 characters).
        let typed: String = name
            .trim()
            .chars()
            .filter(|c| !c.is_control())
            .take(64)
            .collect();
        let account_key = format!("user:{}", typed.to_lowercase());
        let mut keys = vec![account_key.clone()];
        keys.extend(ip.map(|ip| format!("ip:{ip}")));
        let user = match UserName::parse(&typed) {
            Ok(name) => self.store.user_by_name(&name).await?,
            Err(_) => None,
        };
        let label = format!("web sign-in ({typed})");

        if self.throttle.blocked(&keys, now.unix_timestamp()) {
            let event = self.sign_in_event(
                AuditKind::UserSignInFailed,
                now,
                user.as_ref().map(|u| &u.id),
                &label,
                ip,
                Some("throttled: too many failed sign-ins"),
            );
            self.store.append_audit(&event).await?;
            tracing::warn!(ip = ?ip, "sign-in throttled");
            return Ok(SignIn::Throttled);
        }

        let stored = match &user {
            Some(u) => self.store.password_hash(&u.id).await?,
            None => None,
        };
        let has_hash = stored.is_some();
        let phc = stored
            .or_else(|| DUMMY_HASH.clone())
            .ok_or_else(|| ServiceError::Internal("no dummy password hash".to_owned()))?;
        // Argon2 takes tens of milliseconds of CPU: off the async workers.
        let matched =
            tokio::task::spawn_blocking(move || password::verify_password(&password, &phc))
                .await
                .map_err(|e| ServiceError::Internal(format!("password check failed: {e}")))?;

        let user = match user {
            Some(u) if matched && has_hash && u.disabled_at.is_none() => u,
            user => {
                self.throttle.fail(&keys, now.unix_timestamp());
                let why = match &user {
                    Some(u) if matched && u.disabled_at.is_some() => "the user is disabled",
                    Some(_) => "wrong password",
                    None => "unknown user",
                };
                let event = self.sign_in_event(
                    AuditKind::UserSignInFailed,
                    now,
                    user.as_ref().map(|u| &u.id),
                    &label,
                    ip,
                    Some(why),
                );
                self.store.append_audit(&event).await?;
                return Ok(SignIn::Refused);
            }
        };

        let secret = SessionSecret(random_hex(SESSION_ID_BYTES)?);
        let record = SessionRecord {
            id_hash: self.session_hash(secret.expose()),
            user: user.id.clone(),
            created_at: now,
            last_seen_at: now,
            expires_at: now + SESSION_MAX,
        };
        let event = self.sign_in_event(
            AuditKind::UserSignedIn,
            now,
            Some(&user.id),
            user.name.as_str(),
            ip,
            None,
        );
        self.store
            .create_session(&record, now - SESSION_IDLE, &event)
            .await?;
        self.throttle.clear(&account_key);
        tracing::info!(user = %user.name, "signed in");
        Ok(SignIn::Ok { secret, user })
    }

    /// The live session a cookie names, if any. Ends (deletes) one that has expired or whose
    /// user is disabled or gone.
    pub async fn web_session(&self, secret: &str) -> ServiceResult<Option<WebSession>> {
        if !is_hex(secret, SESSION_ID_BYTES) {
            return Ok(None);
        }
        let id_hash = self.session_hash(secret);
        let Some(record) = self.store.session(&id_hash).await? else {
            return Ok(None);
        };
        let now = self.now();
        let user = self.store.user_by_id(&record.user).await?;
        let live = now < record.expires_at && now - record.last_seen_at < SESSION_IDLE;
        let user = match user {
            Some(u) if live && u.disabled_at.is_none() => u,
            _ => {
                self.store.delete_session(&id_hash, None).await?;
                return Ok(None);
            }
        };
        if now - record.last_seen_at >= TOUCH_EVERY {
            self.store.touch_session(&id_hash, now).await?;
        }
        Ok(Some(WebSession {
            user,
            id_hash,
            csrf: self.csrf_for(secret),
        }))
    }

    /// Whether `submitted` is `session`'s CSRF token (compared in constant time).
    pub fn csrf_matches(&self, session: &WebSession, submitted: &str) -> bool {
        let expected = session.csrf.as_bytes();
        let given = submitted.as_bytes();
        // Equal lengths are public (every token is 64 hex characters); the bytes are compared
        // without an early exit.
        expected.len() == given.len()
            && expected
                .iter()
                .zip(given)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// A fresh one-time nonce for a form that must act only once.
    pub fn new_form_nonce(&self) -> ServiceResult<String> {
        Ok(random_hex(NONCE_BYTES)?.to_string())
    }

    /// Uses up a form's nonce: `true` the first time it is presented within the session.
    pub async fn use_form_nonce(&self, session: &WebSession, nonce: &str) -> ServiceResult<bool> {
        if !is_hex(nonce, NONCE_BYTES) {
            return Ok(false);
        }
        Ok(self
            .store
            .use_form_nonce(&session.id_hash, nonce, self.now())
            .await?)
    }

    /// Ends a session (sign-out).
    pub async fn sign_out(&self, session: &WebSession, ip: Option<IpAddr>) -> ServiceResult<()> {
        let event = self.sign_in_event(
            AuditKind::UserSignedOut,
            self.now(),
            Some(&session.user.id),
            session.user.name.as_str(),
            ip,
            None,
        );
        self.store
            .delete_session(&session.id_hash, Some(&event))
            .await?;
        Ok(())
    }

    /// Disables a user: they cannot sign in, their sessions end, and their tokens stop verifying
    /// at once (`owner_disabled`) without being revoked, so [`Keyward::enable_user`] brings them
    /// back. Nobody can disable themselves.
    pub async fn disable_user(&self, acting: &Acting, id: &UserId) -> ServiceResult<User> {
        if acting.actor.user.as_ref() == Some(id) {
            return Err(ServiceError::InvalidState("you cannot disable yourself"));
        }
        self.set_disabled(acting, id, true).await
    }

    /// Enables a disabled user again; their tokens that are neither revoked nor expired work
    /// again.
    pub async fn enable_user(&self, acting: &Acting, id: &UserId) -> ServiceResult<User> {
        self.set_disabled(acting, id, false).await
    }

    async fn set_disabled(
        &self,
        acting: &Acting,
        id: &UserId,
        disabled: bool,
    ) -> ServiceResult<User> {
        let now = self.now();
        let kind = if disabled {
            AuditKind::UserDisabled
        } else {
            AuditKind::UserEnabled
        };
        let user = self.user_by_id(id).await?;
        let mut event = self.audit(acting, kind, now, id, None);
        event.detail = Some(user.name.to_string());
        let user = self
            .store
            .set_user_disabled(id, disabled, now, &event)
            .await?;
        tracing::info!(user = %user.name, disabled, actor = %acting.actor.label, "user disabled or enabled");
        Ok(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttle_counts_failures_in_a_sliding_window() {
        let throttle = SignInThrottle::default();
        let keys = ["user:alice".to_owned()];
        for i in 0..SIGN_IN_LIMIT {
            assert!(!throttle.blocked(&keys, 100), "attempt {i}");
            throttle.fail(&keys, 100);
        }
        assert!(throttle.blocked(&keys, 100));
        assert!(throttle.blocked(&keys, 159));
        assert!(!throttle.blocked(&keys, 160), "a minute later");
        assert!(!throttle.blocked(&["user:bob".to_owned()], 100));
    }

    #[test]
    fn nonces_and_ids_are_hex_of_the_right_length() {
        let id = random_hex(SESSION_ID_BYTES).unwrap();
        assert!(is_hex(&id, SESSION_ID_BYTES));
        assert!(!is_hex("zz", 1));
        assert_ne!(*id, *random_hex(SESSION_ID_BYTES).unwrap());
    }
}
