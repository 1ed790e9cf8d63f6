//! The service's one error enum; the HTTP layer maps it to status codes in exactly one place.

use keyward_core::{ExpiryError, InactiveReason, LimitsError, NameError, ScopeError};
use keyward_store::StoreError;

/// Why a service call failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No credentials, or a credential that is not an active token.
    #[error("authentication required: {}", .0.map_or("no token was presented", InactiveReason::as_str))]
    Unauthenticated(Option<InactiveReason>),
    /// The credential is an active token, refused for one of its limits: `ip_not_allowed`,
    /// `usage_exceeded` or `rate_limited`.
    #[error("the token is not active: {}", .reason.as_str())]
    Limited {
        /// Which limit.
        reason: InactiveReason,
        /// Seconds until a request may succeed again, when that comes by itself.
        retry_after: Option<i64>,
        /// The rate limit's state, when the token has one.
        rate: Option<Box<crate::service::RateState>>,
    },
    /// The credential is a secret that a regeneration replaced: in its grace period it still
    /// verifies, but it cannot act.
    #[error(
        "this secret was replaced by a regeneration; it verifies until its grace period ends but cannot manage tokens"
    )]
    RotatedOut,
    /// The credential is valid but lacks a scope the call needs.
    #[error("this token lacks the scope {needed}")]
    MissingScope {
        /// The scope the call needs.
        needed: String,
    },
    /// A token tried to make or regenerate a token with rights it does not have itself.
    #[error("a token cannot grant scopes it does not hold: {}", .missing.join(", "))]
    ScopeCeiling {
        /// The scopes the caller lacks.
        missing: Vec<String>,
    },
    /// The caller is not allowed this action at all (a person who is not an admin, a token
    /// acting on users).
    #[error("{0}")]
    Forbidden(&'static str),
    /// The caller may not do this to a record it was shown by secret (RFC 7009: another
    /// owner's token, or one of its own without `tokens:delete`).
    #[error("{0}")]
    NotPermitted(&'static str),
    /// No such record, or not the caller's (never told apart).
    #[error("not found")]
    NotFound,
    /// A name was refused.
    #[error(transparent)]
    BadName(#[from] NameError),
    /// A scope was refused.
    #[error(transparent)]
    BadScope(#[from] ScopeError),
    /// A verification asked for a scope the deployment's catalog does not have: a typo in the
    /// calling API, not a right the token lacks.
    #[error("{0}; a verification may ask only for scopes of the deployment's catalog")]
    UnknownScope(ScopeError),
    /// A token's limits were refused.
    #[error(transparent)]
    BadLimits(#[from] LimitsError),
    /// An expiry or duration was refused.
    #[error(transparent)]
    BadExpiry(#[from] ExpiryError),
    /// Input the service refuses that has no more specific variant.
    #[error("{0}")]
    Invalid(&'static str),
    /// A password was refused (too short or too long).
    #[error("a password must be 12 to 1024 characters")]
    BadPassword,
    /// A name is taken.
    #[error("{0} already exists")]
    Conflict(String),
    /// The record's state forbids the change (regenerating a revoked token).
    #[error("{0}")]
    InvalidState(&'static str),
    /// The database is unreachable; the answer cannot be given safely.
    #[error("the token store is unavailable")]
    Unavailable(String),
    /// Active tokens in the store were hashed under a server key this instance does not hold:
    /// it cannot verify them (the message names the key ids and counts).
    #[error("{0}")]
    KeyMissing(String),
    /// Too many password computations are waiting; the caller should retry shortly.
    #[error("too many sign-ins or password changes at once; try again in a moment")]
    Busy,
    /// Something that should not happen; details go to the log, not the client.
    #[error("internal error")]
    Internal(String),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound,
            StoreError::Conflict(what) => Self::Conflict(what),
            StoreError::InvalidState(why) => Self::InvalidState(why),
            e @ StoreError::Unavailable { .. } => Self::Unavailable(cause(&e)),
            e @ StoreError::Corrupt { .. } => Self::Internal(cause(&e)),
            // Only the command line's long operations are interrupted, never a request.
            e @ StoreError::Interrupted => Self::Internal(cause(&e)),
        }
    }
}

/// A store error for the log, which is where its cause goes (never to the client): its message,
/// the engine's code, and every source in its chain that says more than the message already does.
fn cause(e: &StoreError) -> String {
    let mut cause = e.to_string();
    if let Some(code) = e.code() {
        cause.push_str(&format!(" (code {code})"));
    }
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        let said = inner.to_string();
        if !cause.contains(&said) {
            cause.push_str(&format!("; caused by: {said}"));
        }
        source = inner.source();
    }
    cause
}

impl From<keyward_core::RandomError> for ServiceError {
    fn from(e: keyward_core::RandomError) -> Self {
        Self::Internal(e.to_string())
    }
}

/// Results of service calls.
pub type ServiceResult<T> = Result<T, ServiceError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_error_keeps_its_message_and_code_for_the_log() {
        let err = StoreError::Unavailable {
            what: "terminating connection due to administrator command".to_owned(),
            code: Some("57P01".to_owned()),
            source: Some(Box::new(std::io::Error::other("connection reset"))),
        };
        let ServiceError::Unavailable(cause) = ServiceError::from(err) else {
            panic!("not unavailable");
        };
        assert_eq!(
            cause,
            "database unavailable: terminating connection due to administrator command \
             (code 57P01); caused by: connection reset"
        );
    }
}
