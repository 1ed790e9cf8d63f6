//! The records keyward keeps and the answers it gives: ids, names, tokens, users, verification
//! outcomes and audit events. Plain data; the rules live beside the types they govern.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use time::OffsetDateTime;

use crate::{Limits, RandomError, Scopes, fill_random};

/// A name or id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// A token name must be 1 to 100 characters without control or invisible formatting
    /// characters.
    #[error("a token name must be 1 to {max} characters, without control characters or invisible formatting characters (such as bidirectional overrides)", max = TokenName::MAX_CHARS)]
    TokenName,
    /// A name that holds a token's secret: a secret pasted where a name goes must not be stored.
    #[error("a name must not contain a token's secret; never paste a secret where a name goes")]
    HoldsSecret,
    /// A user name must be 1 to 128 of `a-z 0-9 . _ - @ +`, starting with a letter or digit
    /// (so an email address, lowercased, is a user name).
    #[error(
        "a user name must be 1 to 128 characters of a-z, 0-9, '.', '_', '-', '@' or '+', starting with a letter or digit"
    )]
    UserName,
    /// A user name must not look like a user id: `user show NAME|ID` must tell them apart.
    #[error("a user name must not start with \"usr_\": that is how user ids start")]
    UserNameLikeId,
    /// An external id must be 1 to 255 printable ASCII characters, not starting or ending with
    /// a space.
    #[error(
        "an external id must be 1 to 255 printable ASCII characters, not starting or ending with a space"
    )]
    ExternalId,
    /// Not an email address.
    #[error("{0:?} is not an email address (local@domain, at most 254 characters)")]
    Email(String),
    /// Not an id of the expected kind.
    #[error("{0:?} is not a valid id")]
    Id(String),
}

fn new_ulid(now: OffsetDateTime) -> Result<ulid::Ulid, RandomError> {
    let mut random = [0u8; 16];
    fill_random(&mut random)?;
    let ms = u64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    // 48 bits of time, 80 bits of randomness: sortable by creation, unguessable.
    Ok(ulid::Ulid::from_parts(ms, u128::from_be_bytes(random)))
}

macro_rules! public_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The text before the ULID.
            pub const PREFIX: &'static str = $prefix;

            /// A new id, sortable by `now`.
            pub fn generate(now: OffsetDateTime) -> Result<Self, RandomError> {
                Ok(Self(format!("{}{}", $prefix, new_ulid(now)?)))
            }

            /// Checks an id given by a client or read from a store. The ULID is case-insensitive
            /// (Crockford base32); the id keeps its canonical upper-case spelling, the one
            /// [`Self::generate`] writes. A ULID above 128 bits (first character past `7`) is
            /// refused, as the ULID spec asks: the decoder would drop its top bits and give
            /// another id.
            pub fn parse(s: &str) -> Result<Self, NameError> {
                let bad = || NameError::Id(s.chars().take(40).collect());
                let ulid = s.strip_prefix($prefix).ok_or_else(bad)?;
                if !ulid.starts_with(|c: char| ('0'..='7').contains(&c)) {
                    return Err(bad());
                }
                let ulid = ulid::Ulid::from_string(ulid).map_err(|_| bad())?;
                Ok(Self(format!("{}{}", $prefix, ulid)))
            }

            /// The id text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

public_id!(
    /// A token's public id, `tok_` + ULID. Not secret: it names a token in URLs and logs.
    TokenId,
    "tok_"
);
public_id!(
    /// A user's id, `usr_` + ULID.
    UserId,
    "usr_"
);
public_id!(
    /// An event's id, `evt_` + ULID: the `id` of an event in the outbox, and the `webhook-id`
    /// of its deliveries.
    EventId,
    "evt_"
);

impl TokenId {
    /// The id in 16 bytes, for tables that hold very many (the verification cache).
    pub fn pack(&self) -> PackedTokenId {
        // Every `TokenId` was checked by `parse` or made by `generate`: the text after the
        // prefix is a ULID. The nil fallback is unreachable.
        let ulid = ulid::Ulid::from_string(&self.0[Self::PREFIX.len()..]).unwrap_or_default();
        PackedTokenId(ulid.to_bytes())
    }
}

/// A [`TokenId`] in 16 bytes: its ULID. Unpacks to the same text, because ids are kept in
/// their canonical spelling. Ordered by those bytes (creation time first).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PackedTokenId([u8; 16]);

impl fmt::Debug for PackedTokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text(), f)
    }
}

impl PackedTokenId {
    /// The id's text, built on the stack.
    pub fn text(&self) -> TokenIdText {
        let mut buf = [0u8; TOKEN_ID_LEN];
        buf[..TokenId::PREFIX.len()].copy_from_slice(TokenId::PREFIX.as_bytes());
        let mut ulid = [0u8; ulid::ULID_LEN];
        ulid::Ulid::from_bytes(self.0).array_to_str(&mut ulid);
        buf[TokenId::PREFIX.len()..].copy_from_slice(&ulid);
        TokenIdText(buf)
    }

    /// The id as an owned [`TokenId`] (allocates).
    pub fn unpack(&self) -> TokenId {
        TokenId(self.text().as_str().to_owned())
    }

    /// The 16 bytes (the ULID), for writing the id down compactly.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0
    }

    /// An id from the 16 bytes [`Self::to_bytes`] gave: every 16 bytes are a ULID.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }
}

/// Length of a token id's text: `tok_` and 26 base32 characters.
const TOKEN_ID_LEN: usize = 4 + ulid::ULID_LEN;

/// A token id's text in a fixed buffer: no allocation to put an id in an answer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenIdText([u8; TOKEN_ID_LEN]);

impl TokenIdText {
    /// The id text.
    pub fn as_str(&self) -> &str {
        // ASCII by construction (the prefix and Crockford base32); the fallback is unreachable.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for TokenIdText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for TokenIdText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for TokenIdText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Whether `c` must never appear in text keyward stores and shows to people (names, reasons):
/// control characters, and the invisible formatting characters that change how the text around
/// them is shown — bidirectional overrides and isolates (U+202E made `token list` show a spoofed
/// name), line and paragraph separators, zero-width spaces, word joiners, the byte order mark,
/// and Unicode tag characters. Zero-width joiners (U+200C, U+200D) stay: emoji sequences and
/// several scripts need them.
pub fn is_unsafe_text_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}' // soft hyphen: invisible
            | '\u{061C}' // Arabic letter mark
            | '\u{180E}' // Mongolian vowel separator
            | '\u{200B}' // zero-width space
            | '\u{200E}'..='\u{200F}' // left-to-right and right-to-left marks
            | '\u{2028}'..='\u{202E}' // line and paragraph separators, bidirectional embeddings and overrides
            | '\u{2060}'..='\u{2064}' // word joiner, invisible operators
            | '\u{2066}'..='\u{206F}' // bidirectional isolates, deprecated format characters
            | '\u{FEFF}' // zero-width no-break space (byte order mark)
            | '\u{FFF9}'..='\u{FFFB}' // interlinear annotations
            | '\u{E0000}'..='\u{E007F}' // tags
        )
}

/// A token's label, chosen by its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct TokenName(String);

impl TokenName {
    /// Longest name, in characters.
    pub const MAX_CHARS: usize = 100;

    /// Trims and checks a name.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let s = s.trim();
        let count = s.chars().count();
        if count == 0 || count > Self::MAX_CHARS || s.chars().any(is_unsafe_text_char) {
            return Err(NameError::TokenName);
        }
        if crate::format::contains_token(s) {
            return Err(NameError::HoldsSecret);
        }
        Ok(Self(s.to_owned()))
    }

    /// A name read back from a store. Names stored by earlier versions of keyward may hold
    /// characters that [`Self::parse`] refuses today (bidirectional overrides used to be
    /// accepted): they still load, and whatever shows them escapes them. Only emptiness and
    /// length are checked.
    pub fn from_stored(s: &str) -> Result<Self, NameError> {
        let count = s.chars().count();
        if count == 0 || count > Self::MAX_CHARS {
            return Err(NameError::TokenName);
        }
        Ok(Self(s.to_owned()))
    }

    /// The name text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A user's login name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct UserName(String);

impl UserName {
    /// Longest name, in bytes (all ASCII).
    pub const MAX_LEN: usize = 128;

    /// Checks a user name as stored: the characters. Names for new users and renames go through
    /// [`Self::parse_new`], which also keeps them apart from ids.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let b = s.as_bytes();
        let ok = (1..=Self::MAX_LEN).contains(&b.len())
            && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
            && b.iter().all(|&c| {
                c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || matches!(c, b'.' | b'_' | b'-' | b'@' | b'+')
            });
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(NameError::UserName)
        }
    }

    /// Checks a name given to a new user or in a rename: [`Self::parse`], and not starting with
    /// `usr_`, the prefix of user ids (a deleted user's record keeps its id as its name, so the
    /// name is free again and never taken by mistake).
    pub fn parse_new(s: &str) -> Result<Self, NameError> {
        if s.starts_with(UserId::PREFIX) {
            return Err(NameError::UserNameLikeId);
        }
        Self::parse(s)
    }

    /// The name a deleted user's record keeps: their id, lowercased, which no new name can be.
    pub fn tombstone(id: &UserId) -> Self {
        Self(id.as_str().to_ascii_lowercase())
    }

    /// The name text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What kind of account a user is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserKind {
    /// A person: may sign in to the web page.
    #[default]
    Person,
    /// A service account (a robot): never signs in; admins manage its tokens, and it outlives
    /// the people who made it.
    Service,
}

impl UserKind {
    /// The kind as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Person => "person",
            Self::Service => "service",
        }
    }

    /// Reads a stored kind.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Person, Self::Service]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// The platform's own id for a user ("our account 4711"), unique among users, so the platform
/// needs no mapping table. Not a secret.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ExternalId(String);

impl ExternalId {
    /// Longest external id, in characters.
    pub const MAX_CHARS: usize = 255;

    /// Checks an external id: 1 to 255 printable ASCII characters (so it travels in an HTTP
    /// header as it is), not starting or ending with a space, holding no token secret. Kept
    /// exactly as given: it is the platform's key.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let ok = (1..=Self::MAX_CHARS).contains(&s.len())
            && s.bytes().all(|b| (0x20..0x7f).contains(&b))
            && !s.starts_with(' ')
            && !s.ends_with(' ');
        if !ok {
            return Err(NameError::ExternalId);
        }
        if crate::format::contains_token(s) {
            return Err(NameError::HoldsSecret);
        }
        Ok(Self(s.to_owned()))
    }

    /// The id text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ExternalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user's email address, for the platform's and keyward's messages. Checked for shape only
/// (one `@`, something on each side, no spaces or control characters, at most 254 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    /// Checks an address's shape.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let bad = || NameError::Email(s.chars().take(40).collect());
        let (local, domain) = s.split_once('@').ok_or_else(bad)?;
        let ok = s.len() <= 254
            && !local.is_empty()
            && !domain.is_empty()
            && !domain.contains('@')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !s
                .chars()
                .any(|c| c.is_whitespace() || is_unsafe_text_char(c) || c == '<' || c == '>');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(bad())
        }
    }

    /// The address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Someone (or something) who owns tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    /// Public id.
    pub id: UserId,
    /// Login name.
    pub name: UserName,
    /// A person or a service account.
    pub kind: UserKind,
    /// The platform's id for this user, if it gave one.
    pub external_id: Option<ExternalId>,
    /// Email address, if known.
    pub email: Option<Email>,
    /// Whether the user manages other users.
    pub is_admin: bool,
    /// When the user was added.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the user was disabled, if they were.
    #[serde(with = "time::serde::rfc3339::option")]
    pub disabled_at: Option<OffsetDateTime>,
}

impl User {
    /// A new user of `kind`, not an admin, with no external id or email.
    pub fn new(id: UserId, name: UserName, kind: UserKind, created_at: OffsetDateTime) -> Self {
        Self {
            id,
            name,
            kind,
            external_id: None,
            email: None,
            is_admin: false,
            created_at,
            disabled_at: None,
        }
    }
}

/// A token as stored and shown: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRecord {
    /// Public id.
    pub id: TokenId,
    /// The owning user.
    pub owner: UserId,
    /// The owner's label for it.
    pub name: TokenName,
    /// What it may do.
    pub scopes: Scopes,
    /// Prefix and last four characters of the current secret.
    pub hint: String,
    /// When it was made.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it stops working; `None` = never.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// When its secret was last regenerated.
    #[serde(with = "time::serde::rfc3339::option")]
    pub regenerated_at: Option<OffsetDateTime>,
    /// When it was last presented successfully (recorded in batches, so up to a few seconds late).
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    /// The client address of that use, when the caller passed one.
    pub last_used_ip: Option<IpAddr>,
    /// When it was revoked.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// Who revoked it.
    pub revoked_by: Option<String>,
    /// Why.
    pub revoke_reason: Option<String>,
    /// Where, how often and how fast it may be used.
    pub limits: Limits,
    /// With `limits.max_uses`: the uses the store has not yet handed out to a verifying
    /// instance (instances lease uses in batches; see the service). `None` without a count.
    pub remaining: Option<u64>,
    /// With a refill: when the current refill period began.
    #[serde(with = "time::serde::rfc3339::option")]
    pub refilled_at: Option<OffsetDateTime>,
}

/// Where a token stands at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenState {
    /// Works.
    Active,
    /// Past its expiry.
    Expired,
    /// Revoked.
    Revoked,
}

impl TokenRecord {
    /// The state at `now`: revocation wins over expiry.
    pub fn state(&self, now: OffsetDateTime) -> TokenState {
        if self.revoked_at.is_some() {
            TokenState::Revoked
        } else if self.expires_at.is_some_and(|at| at <= now) {
            TokenState::Expired
        } else {
            TokenState::Active
        }
    }
}

/// Why a presented token does not grant what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InactiveReason {
    /// Not a keyward token, or a bad checksum; refused before any lookup.
    Malformed,
    /// Well-formed, but no such token.
    Unknown,
    /// Past its expiry.
    Expired,
    /// Revoked, or replaced by a regeneration whose grace period is over.
    Revoked,
    /// Active, but without a scope the request needs.
    InsufficientScope,
    /// Its owner is disabled.
    OwnerDisabled,
    /// Presented from an address outside its `allowed_ips` (or from an unknown one).
    IpNotAllowed,
    /// It has no uses left (until its next refill, if it has one).
    UsageExceeded,
    /// Its rate limit is reached for the current window.
    RateLimited,
}

impl InactiveReason {
    /// The reason as it appears on the wire and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Unknown => "unknown",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
            Self::InsufficientScope => "insufficient_scope",
            Self::OwnerDisabled => "owner_disabled",
            Self::IpNotAllowed => "ip_not_allowed",
            Self::UsageExceeded => "usage_exceeded",
            Self::RateLimited => "rate_limited",
        }
    }
}

/// Who did something, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The acting user, when there is one.
    pub user: Option<UserId>,
    /// The token they acted with, when they used one.
    pub token: Option<TokenId>,
    /// A readable description: `alice`, `alice (tok_…)`, `cli (root)`.
    pub label: String,
}

impl Actor {
    /// An operator at the command line.
    pub fn cli(os_user: &str) -> Self {
        Self {
            user: None,
            token: None,
            label: format!("cli ({os_user})"),
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditKind {
    /// A token was created.
    #[serde(rename = "token.created")]
    TokenCreated,
    /// A token was renamed.
    #[serde(rename = "token.renamed")]
    TokenRenamed,
    /// A token's limits (allowed addresses, uses, rate limit) were set.
    #[serde(rename = "token.limits_changed")]
    TokenLimitsChanged,
    /// A token's secret was regenerated.
    #[serde(rename = "token.regenerated")]
    TokenRegenerated,
    /// A token was revoked.
    #[serde(rename = "token.revoked")]
    TokenRevoked,
    /// A token's secret was reported leaked (by GitHub's secret scanning, GitLab, or an
    /// in-house scanner) and the token was revoked; the detail says where it was found.
    #[serde(rename = "token.leaked")]
    TokenLeaked,
    /// An expired token was presented.
    #[serde(rename = "token.expired_use")]
    TokenExpiredUse,
    /// A token entered a reminder window before its expiry (`notify_before`); the detail names
    /// the threshold, e.g. `7d`.
    #[serde(rename = "token.expiring")]
    TokenExpiring,
    /// A token reached its expiry (recorded once, by whichever instance sees it first).
    #[serde(rename = "token.expired")]
    TokenExpired,
    /// A secret that a regeneration replaced was presented after its grace period ended: the
    /// classic sign that it was stolen. The event carries the client address.
    #[serde(rename = "token.rotated_secret_used")]
    TokenRotatedSecretUsed,
    /// A user was added.
    #[serde(rename = "user.added")]
    UserAdded,
    /// A user signed in to the web page.
    #[serde(rename = "user.signed_in")]
    UserSignedIn,
    /// A web sign-in failed (wrong password, unknown name, disabled user, or throttled).
    #[serde(rename = "user.sign_in_failed")]
    UserSignInFailed,
    /// A user signed out of the web page.
    #[serde(rename = "user.signed_out")]
    UserSignedOut,
    /// A user was disabled: no sign-in, sessions ended, tokens refused (not revoked).
    #[serde(rename = "user.disabled")]
    UserDisabled,
    /// A disabled user was enabled again; their unrevoked, unexpired tokens work again.
    #[serde(rename = "user.enabled")]
    UserEnabled,
    /// A user's name, email, external id or admin flag changed.
    #[serde(rename = "user.updated")]
    UserUpdated,
    /// A user's password was set, changed or removed.
    #[serde(rename = "user.password_changed")]
    UserPasswordChanged,
    /// A user was deleted for good; their tokens were revoked ("owner deleted").
    #[serde(rename = "user.deleted")]
    UserDeleted,
    /// The server key was replaced on purpose (`--accept-new-key`): every active token hashed
    /// under a key the server no longer has was revoked.
    #[serde(rename = "server_key.reset")]
    ServerKeyReset,
    /// A new server key became current (`keyward key rotate`); the previous ones keep verifying
    /// until their tokens move to the new key.
    #[serde(rename = "server_key.rotated")]
    ServerKeyRotated,
    /// An old server key left the key ring (`keyward key retire`), no active token using it.
    #[serde(rename = "server_key.retired")]
    ServerKeyRetired,
    /// A user became an admin or stopped being one (the OpenID provider's claim said so).
    #[serde(rename = "user.admin_changed")]
    UserAdminChanged,
    /// Sign-ins for an account or from an address started being throttled (once per burst; the
    /// refused attempts themselves are counted, not recorded one by one).
    #[serde(rename = "sign_in.throttled")]
    SignInThrottled,
    /// A kind this release does not know, written by a newer release sharing the database
    /// during a rolling upgrade. Never written by this release; the stored kind is kept at the
    /// start of the event's detail.
    #[serde(rename = "unrecognized")]
    Unrecognized,
}

impl AuditKind {
    /// The kind as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TokenCreated => "token.created",
            Self::TokenRenamed => "token.renamed",
            Self::TokenLimitsChanged => "token.limits_changed",
            Self::TokenRegenerated => "token.regenerated",
            Self::TokenRevoked => "token.revoked",
            Self::TokenLeaked => "token.leaked",
            Self::TokenExpiredUse => "token.expired_use",
            Self::TokenExpiring => "token.expiring",
            Self::TokenExpired => "token.expired",
            Self::TokenRotatedSecretUsed => "token.rotated_secret_used",
            Self::UserAdded => "user.added",
            Self::UserSignedIn => "user.signed_in",
            Self::UserSignInFailed => "user.sign_in_failed",
            Self::UserSignedOut => "user.signed_out",
            Self::UserDisabled => "user.disabled",
            Self::UserEnabled => "user.enabled",
            Self::UserUpdated => "user.updated",
            Self::UserPasswordChanged => "user.password_changed",
            Self::UserDeleted => "user.deleted",
            Self::UserAdminChanged => "user.admin_changed",
            Self::SignInThrottled => "sign_in.throttled",
            Self::ServerKeyReset => "server_key.reset",
            Self::ServerKeyRotated => "server_key.rotated",
            Self::ServerKeyRetired => "server_key.retired",
            Self::Unrecognized => "unrecognized",
        }
    }

    /// Every kind this release writes (all but [`Self::Unrecognized`]).
    pub const KNOWN: &'static [Self] = &[
        Self::TokenCreated,
        Self::TokenRenamed,
        Self::TokenLimitsChanged,
        Self::TokenRegenerated,
        Self::TokenRevoked,
        Self::TokenLeaked,
        Self::TokenExpiredUse,
        Self::TokenExpiring,
        Self::TokenExpired,
        Self::TokenRotatedSecretUsed,
        Self::UserAdded,
        Self::UserSignedIn,
        Self::UserSignInFailed,
        Self::UserSignedOut,
        Self::UserDisabled,
        Self::UserEnabled,
        Self::UserUpdated,
        Self::UserPasswordChanged,
        Self::UserDeleted,
        Self::UserAdminChanged,
        Self::SignInThrottled,
        Self::ServerKeyReset,
        Self::ServerKeyRotated,
        Self::ServerKeyRetired,
    ];

    /// Reads a stored kind this release knows (never [`Self::Unrecognized`], which only stands
    /// for kinds it does not).
    pub fn parse(s: &str) -> Option<Self> {
        Self::KNOWN.iter().copied().find(|k| k.as_str() == s)
    }

    /// The type of the event (in the outbox, the events API and webhooks) this kind of audit
    /// entry also is, if any: the changes a platform reacts to. Entries of other kinds (every
    /// sign-in attempt, a rename) stay in the audit trail only. An event type is a contract with
    /// every subscriber: never rename one.
    pub fn event_type(self) -> Option<&'static str> {
        match self {
            Self::TokenCreated => Some("token.created"),
            Self::TokenRegenerated => Some("token.regenerated"),
            Self::TokenRevoked => Some("token.revoked"),
            Self::TokenLeaked => Some("token.leaked"),
            Self::TokenExpiring => Some("token.expiring"),
            Self::TokenExpired => Some("token.expired"),
            Self::TokenRotatedSecretUsed => Some("token.rotated_secret_used"),
            Self::UserAdded => Some("user.created"),
            Self::UserDisabled => Some("user.disabled"),
            Self::UserDeleted => Some("user.deleted"),
            Self::SignInThrottled => Some("sign_in.throttled"),
            Self::TokenRenamed
            | Self::TokenLimitsChanged
            | Self::TokenExpiredUse
            | Self::UserSignedIn
            | Self::UserSignInFailed
            | Self::UserSignedOut
            | Self::UserEnabled
            | Self::UserUpdated
            | Self::UserPasswordChanged
            | Self::UserAdminChanged
            | Self::ServerKeyReset
            | Self::ServerKeyRotated
            | Self::ServerKeyRetired
            | Self::Unrecognized => None,
        }
    }

    /// Every event type this release emits.
    pub fn event_types() -> impl Iterator<Item = &'static str> {
        Self::KNOWN.iter().filter_map(|k| k.event_type())
    }
}

/// Whether the event type `ty` matches `pattern`: `*` (every type), `family.*` (every type in
/// that family, such as `token.*`), or one type exactly.
pub fn event_type_matches(pattern: &str, ty: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) if prefix.ends_with('.') => ty.starts_with(prefix),
        Some(_) => false,
        None => pattern == ty,
    }
}

/// Checks an event type pattern from configuration: `*`, `family.*`, or one type, matching at
/// least one type this release emits (a pattern that can never match is a mistake).
pub fn valid_event_pattern(pattern: &str) -> bool {
    AuditKind::event_types().any(|ty| event_type_matches(pattern, ty))
}

/// One entry of the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEvent {
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// What.
    pub kind: AuditKind,
    /// Who did it.
    pub actor: Actor,
    /// The user the event concerns (a token's owner, or the added user).
    pub subject_user: Option<UserId>,
    /// The token it concerns.
    pub token_id: Option<TokenId>,
    /// The client address, when known.
    pub ip: Option<IpAddr>,
    /// A free-text reason or detail (a revocation reason, a new name).
    pub detail: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn ids_are_prefixed_ulids_and_parse_back() {
        let now = datetime!(2026-06-01 12:00 UTC);
        let id = TokenId::generate(now).unwrap();
        assert!(id.as_str().starts_with("tok_"));
        assert_eq!(id.as_str().len(), 30);
        assert_eq!(TokenId::parse(id.as_str()).unwrap(), id);
        assert!(TokenId::parse("usr_01J0000000000000000000000").is_err());
        assert!(TokenId::parse("tok_nope").is_err());
        assert!(UserId::parse(UserId::generate(now).unwrap().as_str()).is_ok());
        let later = TokenId::generate(now + time::Duration::seconds(1)).unwrap();
        assert!(later > id, "ids sort by creation time");
    }

    #[test]
    fn ids_are_canonical_and_pack_to_the_same_text() {
        let now = datetime!(2026-06-01 12:00 UTC);
        for _ in 0..100 {
            let id = TokenId::generate(now).unwrap();
            assert_eq!(id.pack().text().as_str(), id.as_str());
            assert_eq!(id.pack().unpack(), id);
        }
        for overflowing in [
            "tok_81JD8X0VQ5R6M8A5C3E7F9G1HK",
            "tok_g1jd8x0vq5r6m8a5c3e7f9g1hk",
        ] {
            assert!(TokenId::parse(overflowing).is_err(), "{overflowing}");
        }
        assert!(TokenId::parse("tok_71JD8X0VQ5R6M8A5C3E7F9G1HK").is_ok());
        let lower = TokenId::parse("tok_01jd8x0vq5r6m8a5c3e7f9g1hk").unwrap();
        assert_eq!(lower.as_str(), "tok_01JD8X0VQ5R6M8A5C3E7F9G1HK");
        assert_eq!(lower.pack().text().as_str(), lower.as_str());
        assert_eq!(
            serde_json::to_string(&lower.pack().text()).unwrap(),
            "\"tok_01JD8X0VQ5R6M8A5C3E7F9G1HK\""
        );
    }

    #[test]
    fn event_types_and_patterns() {
        assert_eq!(AuditKind::UserAdded.event_type(), Some("user.created"));
        assert_eq!(AuditKind::UserSignInFailed.event_type(), None);
        for kind in AuditKind::KNOWN {
            assert_eq!(AuditKind::parse(kind.as_str()), Some(*kind));
        }
        assert!(event_type_matches("*", "user.deleted"));
        assert!(event_type_matches("token.*", "token.revoked"));
        assert!(!event_type_matches("token.*", "user.deleted"));
        assert!(!event_type_matches("tok*", "token.revoked"));
        assert!(event_type_matches("user.deleted", "user.deleted"));
        assert!(valid_event_pattern("token.*") && valid_event_pattern("sign_in.throttled"));
        for bad in ["token.nope", "nope.*", "tok*", "", "token.created*"] {
            assert!(!valid_event_pattern(bad), "{bad}");
        }
    }

    #[test]
    fn token_names() {
        assert_eq!(
            TokenName::parse("  ci deploy ").unwrap().as_str(),
            "ci deploy"
        );
        assert!(TokenName::parse("déploiement 🚀").is_ok());
        assert!(TokenName::parse(&"é".repeat(100)).is_ok());
        for bad in [
            "",
            "   ",
            "a\nb",
            "\u{0}",
            "invoice\u{202E}fdp.exe",
            "a\u{2066}b\u{2069}",
            "a\u{200F}b",
            "a\u{200B}b",
            "a\u{2028}b",
            "a\u{FEFF}b",
            "a\u{E0041}b",
            "a\u{85}b",
        ] {
            assert!(TokenName::parse(bad).is_err(), "{bad:?}");
        }
        // Joiners stay: emoji sequences need them.
        assert!(TokenName::parse("family 👨\u{200D}👩\u{200D}👧").is_ok());
        assert!(TokenName::parse(&"a".repeat(101)).is_err());
    }

    #[test]
    fn user_names() {
        for ok in [
            "alice",
            "bob.smith",
            "ci-bot_2",
            "7",
            "ada+ci@example.com",
            &"a".repeat(128),
        ] {
            assert!(UserName::parse_new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Alice", "-bob", "a b", "ü", "@ada", &"a".repeat(129)] {
            assert!(UserName::parse(bad).is_err(), "{bad:?}");
        }
        // Names never look like ids; a deleted user's record keeps its id as its name.
        let id = UserId::parse("usr_01J00000000000000000000000").unwrap();
        let tombstone = UserName::tombstone(&id);
        assert!(
            UserName::parse(tombstone.as_str()).is_ok(),
            "it still loads"
        );
        assert_eq!(
            UserName::parse_new(tombstone.as_str()),
            Err(NameError::UserNameLikeId)
        );
    }

    #[test]
    fn external_ids_and_emails() {
        for ok in ["4711", "account 4711", "a:b/c?d=e", &"x".repeat(255)] {
            assert_eq!(ExternalId::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            " 4711",
            "4711 ",
            "tab\there",
            "ü",
            "line\nbreak",
            &"x".repeat(256),
        ] {
            assert!(ExternalId::parse(bad).is_err(), "{bad:?}");
        }
        for ok in ["ada@example.com", "a.b+c@sub.example.org"] {
            assert!(Email::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "a@b@c",
            "a b@c.d",
            "ada@.com",
            "<a@b.c>",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn audit_kinds_round_trip() {
        for k in [
            AuditKind::TokenCreated,
            AuditKind::TokenRevoked,
            AuditKind::UserAdded,
            AuditKind::TokenExpiredUse,
            AuditKind::UserSignedIn,
            AuditKind::UserSignInFailed,
            AuditKind::UserSignedOut,
            AuditKind::UserDisabled,
            AuditKind::UserEnabled,
            AuditKind::UserUpdated,
            AuditKind::UserPasswordChanged,
            AuditKind::UserDeleted,
        ] {
            assert_eq!(AuditKind::parse(k.as_str()), Some(k));
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
    }
}
