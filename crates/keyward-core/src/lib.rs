//! keyward's core: everything about tokens that needs no I/O.
//!
//! - [`format`](mod@format): the token text `<prefix>_<body><checksum>` and the secret type that holds it;
//! - [`hash`]: the server key and the keyed hash (HMAC-SHA256) that is all a store ever keeps;
//! - [`scope`]: `resource:action` scopes with wildcards, and the deployment's catalog;
//! - [`expiry`]: expiry requests, durations and the deployment's lifetime policy;
//! - [`limits`]: where, how often and how fast a token may be used;
//! - [`model`]: ids, names, token and user records, verification outcomes, audit events;
//! - [`clock`]: the injected clock, so tests control time instead of sleeping.
//!
//! This crate has no I/O, no HTTP and no SQL; the only outside effect is reading the OS CSPRNG.

pub mod clock;
pub mod expiry;
pub mod format;
pub mod hash;
pub mod limits;
pub mod model;
pub mod scope;

pub use clock::{Clock, ManualClock, SystemClock};
pub use expiry::{
    ExpiryError, ExpiryRequest, LifetimePolicy, NotifyBefore, ReminderWindow, format_duration,
    parse_duration,
};
pub use format::{FormatError, Prefix, RawSecret, TokenSecret};
pub use hash::{
    KeyId, KeyRing, KeyRingError, ServerKey, TokenHash, TokenHasher, format_key_ring, hex,
    parse_key_ring,
};
pub use limits::{IpRange, Limits, LimitsError, RateLimit, Refill};
pub use model::{
    Actor, AuditEvent, AuditKind, Email, EventId, ExternalId, InactiveReason, NameError,
    PackedTokenId, TokenId, TokenIdText, TokenName, TokenRecord, TokenState, User, UserId,
    UserKind, UserName, event_type_matches, is_unsafe_text_char, valid_event_pattern,
};
pub use scope::{Catalog, Scope, ScopeError, Scopes};

/// The OS random number generator failed; nothing secret can be made without it.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed: {0}")]
pub struct RandomError(String);

/// Fills `buf` from the OS CSPRNG (the only randomness keyward uses).
pub fn fill_random(buf: &mut [u8]) -> Result<(), RandomError> {
    getrandom::fill(buf).map_err(|e| RandomError(e.to_string()))
}
