//! People at the web page: signing in with a password or through an OpenID provider (`oidc`),
//! sessions, CSRF tokens, one-time form nonces and sign-in throttling.
//!
//! - A session id is 256 bits from the OS CSPRNG, given to the browser once in a cookie; the
//!   store keeps only `HMAC(server key, "keyward session v1\0" + id)`.
//! - A session's CSRF token is derived from its id under the server key (a synchronizer token
//!   that needs no storage): a page can embed it, and only the holder of the cookie can have it.
//! - Sessions end after [`SESSION_IDLE`] without use or [`SESSION_MAX`] after sign-in,
//!   whichever comes first, at sign-out, and when the user is disabled.
//! - Failed sign-ins are counted per account name and per client address over a sliding
//!   [`SIGN_IN_WINDOW`] (see the `throttle` module): each attempt reserves its place before the
//!   password is checked, and at [`SIGN_IN_LIMIT`] failures further attempts are refused without
//!   the password being checked, until the window slides past them. The counters are in memory,
//!   per instance (with N instances behind a balancer the limit is at most N times as loose).
//! - Passwords are checked in a bounded pool ([`PasswordPool`]): memory stays
//!   flat however many sign-ins arrive at once, and the surplus is told to retry.
//! - The answer never tells whether a name exists: unknown names are checked against a dummy
//!   Argon2id hash, so they take as long as known ones. The audit trail never holds what was
//!   typed for a name that is not a user's (it may be a password typed into the wrong field):
//!   only "unknown user" and a keyed hash of it, enough to see repeated attempts.

use keyward_core::{
    Actor, AuditEvent, AuditKind, RawSecret, TokenHash, User, UserId, UserName, hex,
};
use keyward_store::SessionRecord;
use std::fmt;
use std::net::IpAddr;
use std::sync::LazyLock;
use subtle::ConstantTimeEq as _;
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

pub mod oidc;
mod password;
mod throttle;

pub use password::{PASSWORD_CHARS, PasswordPool, RETRY_AFTER_SECS};
pub(super) use throttle::SignInThrottle;
use throttle::{Burst, Reservation, ThrottleSubject};
pub use throttle::{SIGN_IN_LIMIT, SIGN_IN_WINDOW};

use super::{Caller, Keyward, ServiceError, ServiceResult};

/// A session ends after this long without a request.
pub const SESSION_IDLE: Duration = Duration::hours(12);
/// A session ends this long after sign-in, however active.
pub const SESSION_MAX: Duration = Duration::days(7);
/// A session's last use is written at most this often.
const TOUCH_EVERY: Duration = Duration::minutes(1);
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
    /// How they signed in, as the page says it: `password`, or the OpenID provider's name.
    pub method: String,
}

impl fmt::Debug for WebSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSession")
            .field("user", &self.user)
            .field("id_hash", &self.id_hash)
            .field("csrf", &"[REDACTED]")
            .field("method", &self.method)
            .finish()
    }
}

impl WebSession {
    /// The signed-in person as a caller, from `ip`.
    pub fn caller(&self, ip: Option<IpAddr>) -> Caller {
        Caller::person(&self.user, ip)
    }
}

/// How long a sign-in form (its signed cookie) may be used.
pub const SIGN_IN_FORM_LIFETIME: Duration = Duration::hours(1);

/// A sign-in form's pre-session CSRF pair.
#[derive(Clone)]
pub struct SignInForm {
    /// The `keyward_login` cookie: nonce, expiry and a MAC under the server key.
    pub cookie: String,
    /// What the form's hidden `csrf` field must carry: derived from the cookie's nonce.
    pub field: String,
}

impl fmt::Debug for SignInForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SignInForm([REDACTED])")
    }
}

/// A sign-in attempt's place in the throttle, given back when dropped unless [`Reserved::keep`]
/// is called (the attempt failed and counts).
struct Reserved<'a> {
    keyward: &'a Keyward,
    keys: &'a [String],
    at: i64,
    keep: bool,
}

impl Reserved<'_> {
    /// The attempt failed: its place stays counted.
    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if !self.keep {
            self.keyward.throttle.release(self.keys, self.at);
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
    /// Password sign-in is off (single sign-on only); nothing was checked or recorded.
    PasswordsOff,
}

/// How a signed-in person's change of their own password went.
pub enum PasswordChange {
    /// Changed. Every session of theirs has ended, the one they changed it in too; this new
    /// session replaces it (set its cookie), so they stay signed in here and nowhere else.
    Changed(SessionSecret),
    /// The current password given was wrong (it counts against the sign-in throttle).
    WrongPassword,
    /// Too many wrong passwords for this account lately; nothing was checked.
    Throttled,
    /// They have no password to change (they sign in through the OpenID provider).
    NoPassword,
}

/// An Argon2id hash nobody's password matches, checked for unknown names so that a refusal takes
/// as long whether or not the name exists (made with the crate's default parameters, as every
/// stored hash is).
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    "$argon2id$v=19$m=19456,t=2,p=1$a2V5d2FyZCBkdW1teQ$hFLWyqDDMzRWH5gc2zrOU2yL5zU6RqtO1P/Ex1P1ZqE"
        .to_owned()
});

fn random_hex(bytes: usize) -> ServiceResult<Zeroizing<String>> {
    let mut buf = Zeroizing::new(vec![0u8; bytes]);
    keyward_core::fill_random(&mut buf)?;
    Ok(Zeroizing::new(hex(&buf)))
}

/// A session id's stored form under one server key.
fn session_hash_under(hasher: &keyward_core::TokenHasher, secret: &str) -> TokenHash {
    hasher.hash_str(&format!("keyward session v1\0{secret}"))
}

fn is_hex(s: &str, bytes: usize) -> bool {
    s.len() == bytes * 2 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Keyward {
    fn session_hash(&self, secret: &str) -> TokenHash {
        session_hash_under(self.ring().current(), secret)
    }

    fn csrf_for(&self, secret: &str) -> String {
        hex(&self
            .ring()
            .current()
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

    /// A keyed hash of a name that is no user's, for the audit trail: repeated attempts with the
    /// same text can be told apart without the text (it may be a password) being kept.
    fn unknown_name_hash(&self, typed: &str) -> String {
        let hash = self.ring().current().hash_str(&format!(
            "keyward sign-in name v1\0{}",
            typed.to_lowercase()
        ));
        hex(&hash.0[..8])
    }

    /// Signs `name` in with `password` from `ip`; see the module docs for the rules.
    pub async fn sign_in(
        &self,
        name: &str,
        password: RawSecret,
        ip: Option<IpAddr>,
    ) -> ServiceResult<SignIn> {
        if !self.password_sign_in() {
            return Ok(SignIn::PasswordsOff);
        }
        let now = self.now();
        let at = now.unix_timestamp();
        // What was typed, bounded (a user name is at most 64 characters); only ever kept in
        // memory, as a throttle key.
        let typed: String = name
            .trim()
            .chars()
            .filter(|c| !c.is_control())
            .take(64)
            .collect();
        let account_key = format!("user:{}", typed.to_lowercase());
        let mut keys = vec![account_key.clone()];
        keys.extend(ip.map(|ip| format!("ip:{ip}")));
        let lookup = || async {
            match UserName::parse(&typed) {
                Ok(name) => self.store.user_by_name(&name).await,
                Err(_) => Ok(None),
            }
        };

        // The throttle first: a throttled attempt costs no database read and no hash.
        let mut subjects = vec![ThrottleSubject::Account(None)];
        subjects.extend(ip.map(ThrottleSubject::Address));
        if let Reservation::Throttled { started } = self.throttle.reserve(&keys, &subjects, at) {
            if !started.is_empty() {
                let user = lookup().await?;
                for i in started {
                    let subject = match subjects.get(i) {
                        Some(ThrottleSubject::Address(addr)) => ThrottleSubject::Address(*addr),
                        _ => ThrottleSubject::Account(user.as_ref().map(|u| u.id.clone())),
                    };
                    let mut event = self.throttle_event(
                        &subject,
                        user.as_ref(),
                        &typed,
                        now,
                        ip,
                        "throttled: too many failed sign-ins; further refusals are counted until \
                         the burst ends",
                    );
                    // The start of a burst is an event; the refusals in it are counted.
                    event.kind = AuditKind::SignInThrottled;
                    self.store.append_audit(&event).await?;
                }
            }
            tracing::warn!(ip = ?ip, "sign-in throttled");
            return Ok(SignIn::Throttled);
        }
        // From here the attempt counts as a failure, unless it succeeds or is never checked.
        let reserved = Reserved {
            keyward: self,
            keys: &keys,
            at,
            keep: false,
        };

        let user = lookup().await?;
        let stored = match &user {
            Some(u) => self.store.password_hash(&u.id).await?,
            None => None,
        };
        let has_hash = stored.is_some();
        let phc = stored.unwrap_or_else(|| DUMMY_HASH.clone());
        let matched = self.passwords.verify(password, phc).await?;

        let user = match user {
            // A service account never signs in, whatever a restored row may hold.
            Some(u)
                if matched
                    && has_hash
                    && u.disabled_at.is_none()
                    && u.kind == keyward_core::UserKind::Person =>
            {
                u
            }
            user => {
                reserved.keep();
                let (label, why) = match &user {
                    Some(u) if matched && u.disabled_at.is_some() => {
                        (u.name.to_string(), "the user is disabled".to_owned())
                    }
                    Some(u) if u.kind == keyward_core::UserKind::Service => (
                        u.name.to_string(),
                        "a service account cannot sign in".to_owned(),
                    ),
                    Some(u) => (u.name.to_string(), "wrong password".to_owned()),
                    None => (
                        "web sign-in (unknown user)".to_owned(),
                        format!(
                            "unknown user (name hash {})",
                            self.unknown_name_hash(&typed)
                        ),
                    ),
                };
                let event = self.sign_in_event(
                    AuditKind::UserSignInFailed,
                    now,
                    user.as_ref().map(|u| &u.id),
                    &label,
                    ip,
                    Some(&why),
                );
                self.store.append_audit(&event).await?;
                return Ok(SignIn::Refused);
            }
        };

        let secret = self.start_session(&user, None, None, ip).await?;
        drop(reserved);
        self.throttle.clear(&account_key);
        tracing::info!(user = %user.name, "signed in");
        Ok(SignIn::Ok { secret, user })
    }

    /// Starts a session for `user`, who signed in with a password (`signed_in_with` `None`) or
    /// through the OpenID provider `signed_in_with`, and records the sign-in (with `detail`).
    async fn start_session(
        &self,
        user: &User,
        signed_in_with: Option<&str>,
        detail: Option<&str>,
        ip: Option<IpAddr>,
    ) -> ServiceResult<SessionSecret> {
        let now = self.now();
        let secret = SessionSecret(random_hex(SESSION_ID_BYTES)?);
        let record = SessionRecord {
            id_hash: self.session_hash(secret.expose()),
            user: user.id.clone(),
            created_at: now,
            last_seen_at: now,
            expires_at: now + SESSION_MAX,
            signed_in_with: signed_in_with.map(str::to_owned),
        };
        let event = self.sign_in_event(
            AuditKind::UserSignedIn,
            now,
            Some(&user.id),
            user.name.as_str(),
            ip,
            detail,
        );
        self.store
            .create_session(&record, now - SESSION_IDLE, &event)
            .await?;
        Ok(secret)
    }

    /// The audit event for a throttle burst on `subject`.
    fn throttle_event(
        &self,
        subject: &ThrottleSubject,
        user: Option<&User>,
        typed: &str,
        at: OffsetDateTime,
        ip: Option<IpAddr>,
        detail: &str,
    ) -> AuditEvent {
        let (user_id, label, ip, detail) = match subject {
            ThrottleSubject::Address(addr) => (
                None,
                format!("web sign-in from {addr}"),
                Some(*addr),
                format!("{detail} (this address)"),
            ),
            ThrottleSubject::Account(id) => {
                let label = match user {
                    Some(u) => u.name.to_string(),
                    None if id.is_some() => "web sign-in".to_owned(),
                    None => "web sign-in (unknown user)".to_owned(),
                };
                let detail = match (user, id) {
                    (None, None) if !typed.is_empty() => format!(
                        "{detail} (this account; name hash {})",
                        self.unknown_name_hash(typed)
                    ),
                    _ => format!("{detail} (this account)"),
                };
                (id.clone(), label, ip, detail)
            }
        };
        self.sign_in_event(
            AuditKind::UserSignInFailed,
            at,
            user_id.as_ref(),
            &label,
            ip,
            Some(&detail),
        )
    }

    /// Records every throttle burst that is over: one event each, with how many attempts it
    /// refused. Called every few seconds by the server's upkeep.
    pub async fn record_ended_bursts(&self) -> ServiceResult<usize> {
        let now = self.now();
        let ended = self.throttle.ended_bursts(now.unix_timestamp());
        for Burst {
            subject,
            first,
            last,
            refused,
        } in &ended
        {
            let user = match subject {
                ThrottleSubject::Account(Some(id)) => self.store.user_by_id(id).await?,
                _ => None,
            };
            let detail = format!(
                "throttle burst over: {refused} attempt{} refused unchecked between {} and {}",
                if *refused == 1 { "" } else { "s" },
                crate::service::unix_time(*first),
                crate::service::unix_time(*last),
            );
            let event = self.throttle_event(subject, user.as_ref(), "", now, None, &detail);
            self.store.append_audit(&event).await?;
        }
        Ok(ended.len())
    }

    /// The live session a cookie names, if any. Ends (deletes) one that has expired or whose
    /// user is disabled or gone.
    pub async fn web_session(&self, secret: &str) -> ServiceResult<Option<WebSession>> {
        if !is_hex(secret, SESSION_ID_BYTES) {
            return Ok(None);
        }
        // Under the current key, else under an older one: a rotation signs nobody out.
        let ring = self.key_ring();
        let mut found = None;
        for hasher in std::iter::once(ring.current()).chain(ring.older()) {
            let id_hash = session_hash_under(hasher, secret);
            if let Some(record) = self.store.session(&id_hash).await? {
                found = Some((id_hash, record));
                break;
            }
        }
        let Some((id_hash, record)) = found else {
            return Ok(None);
        };
        let now = self.now();
        let user = self.store.user_by_id(&record.user).await?;
        let live = now < record.expires_at && now - record.last_seen_at < SESSION_IDLE;
        let user = match user {
            Some(u)
                if live && u.disabled_at.is_none() && u.kind == keyward_core::UserKind::Person =>
            {
                u
            }
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
            method: self.sign_in_method_name(record.signed_in_with.as_deref()),
        }))
    }

    /// Whether `submitted` is `session`'s CSRF token (compared in constant time).
    pub fn csrf_matches(&self, session: &WebSession, submitted: &str) -> bool {
        // Lengths are public (every token is 64 hex characters).
        bool::from(session.csrf.as_bytes().ct_eq(submitted.as_bytes()))
    }

    /// A new sign-in form: the cookie that goes with it and the token its hidden field carries.
    /// There is no session yet to bind the form to, so the cookie is signed with the server key
    /// and expires: a client cannot make one up (or plant one made up on a sibling domain), only
    /// get one from this server, and the form's token is derived from it.
    pub fn new_sign_in_form(&self) -> ServiceResult<SignInForm> {
        let nonce = random_hex(NONCE_BYTES)?;
        let expires = self.now().unix_timestamp() + SIGN_IN_FORM_LIFETIME.whole_seconds();
        let payload = format!("{}.{expires}", nonce.as_str());
        let mac = self.sign_in_mac("cookie", &payload);
        Ok(SignInForm {
            field: self.sign_in_mac("field", &nonce),
            cookie: format!("{payload}.{mac}"),
        })
    }

    /// The sign-in form a cookie of [`Self::new_sign_in_form`] stands for, if it is one of this
    /// server's and has not expired.
    pub fn sign_in_form(&self, cookie: &str) -> Option<SignInForm> {
        let (payload, mac) = cookie.rsplit_once('.')?;
        let (nonce, expires) = payload.split_once('.')?;
        let expires: i64 = expires.parse().ok()?;
        let valid = is_hex(nonce, NONCE_BYTES)
            && bool::from(
                self.sign_in_mac("cookie", payload)
                    .as_bytes()
                    .ct_eq(mac.as_bytes()),
            )
            && self.now().unix_timestamp() < expires;
        valid.then(|| SignInForm {
            field: self.sign_in_mac("field", nonce),
            cookie: cookie.to_owned(),
        })
    }

    fn sign_in_mac(&self, purpose: &str, text: &str) -> String {
        hex(&self
            .ring()
            .current()
            .hash_str(&format!("keyward sign-in form {purpose} v1\0{text}"))
            .0[..16])
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

    /// Whether the signed-in person has a password (people who sign in only through the OpenID
    /// provider have none).
    pub async fn has_password(&self, session: &WebSession) -> ServiceResult<bool> {
        Ok(self.store.password_hash(&session.user.id).await?.is_some())
    }

    /// Changes the signed-in person's own password: `current` must be their password now, and
    /// `new` is held to the same length rule as every password ([`ServiceError::BadPassword`]).
    /// Wrong current passwords count against the account's sign-in throttle, so a session left
    /// open cannot be used to guess it. On success every session of theirs ends (the store does
    /// that with any password change) and a new one starts in its place.
    pub async fn change_own_password(
        &self,
        session: &WebSession,
        current: RawSecret,
        new: RawSecret,
        ip: Option<IpAddr>,
    ) -> ServiceResult<PasswordChange> {
        let user = &session.user;
        let Some(phc) = self.store.password_hash(&user.id).await? else {
            return Ok(PasswordChange::NoPassword);
        };
        if !password::PASSWORD_CHARS.contains(&new.expose().chars().count()) {
            return Err(ServiceError::BadPassword);
        }
        let now = self.now();
        let at = now.unix_timestamp();
        let keys = [format!("user:{}", user.name.as_str().to_lowercase())];
        let subjects = [ThrottleSubject::Account(Some(user.id.clone()))];
        if let Reservation::Throttled { started } = self.throttle.reserve(&keys, &subjects, at) {
            if !started.is_empty() {
                let mut event = self.throttle_event(
                    &subjects[0],
                    Some(user),
                    "",
                    now,
                    ip,
                    "throttled: too many wrong passwords; further refusals are counted until the \
                     burst ends",
                );
                // The start of a burst is an event; the refusals in it are counted.
                event.kind = AuditKind::SignInThrottled;
                self.store.append_audit(&event).await?;
            }
            return Ok(PasswordChange::Throttled);
        }
        let reserved = Reserved {
            keyward: self,
            keys: &keys,
            at,
            keep: false,
        };
        if !self.passwords.verify(current, phc).await? {
            reserved.keep();
            let event = self.sign_in_event(
                AuditKind::UserSignInFailed,
                now,
                Some(&user.id),
                user.name.as_str(),
                ip,
                Some("wrong current password when changing it"),
            );
            self.store.append_audit(&event).await?;
            return Ok(PasswordChange::WrongPassword);
        }
        let hash = self.passwords.hash(new).await?;
        let event = self.sign_in_event(
            AuditKind::UserPasswordChanged,
            now,
            Some(&user.id),
            user.name.as_str(),
            ip,
            Some(&format!("{}: password changed by themselves", user.name)),
        );
        self.store
            .set_password(&user.id, Some(&hash), &event)
            .await?;
        drop(reserved);
        let secret = self
            .start_session(user, None, Some("after changing their password"), ip)
            .await?;
        tracing::info!(user = %user.name, "password changed by its owner");
        Ok(PasswordChange::Changed(secret))
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dummy_hash_is_a_real_hash_with_the_default_parameters() {
        // A hash that did not parse would be refused without any work, and unknown names would
        // answer faster than known ones.
        let parsed = argon2::PasswordHash::new(&DUMMY_HASH).unwrap();
        let params = argon2::Params::try_from(&parsed).unwrap();
        let default = argon2::Params::default();
        assert_eq!(
            (params.m_cost(), params.t_cost(), params.p_cost()),
            (default.m_cost(), default.t_cost(), default.p_cost())
        );
        assert_eq!(parsed.hash.map(|h| h.len()), Some(32));
    }

    #[test]
    fn nonces_and_ids_are_hex_of_the_right_length() {
        let id = random_hex(SESSION_ID_BYTES).unwrap();
        assert!(is_hex(&id, SESSION_ID_BYTES));
        assert!(!is_hex("zz", 1));
        assert_ne!(*id, *random_hex(SESSION_ID_BYTES).unwrap());
    }
}
