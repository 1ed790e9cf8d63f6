//! What the gateway interfaces need from the service: forward-auth's route table and
//! authorisation, RFC 7662 introspection, and RFC 7009 revocation by secret.
//!
//! All three go through [`Keyward::verify`], the cached hot path, so they cost what a
//! `/v1/verify` costs and see a revocation on their very next call.

use keyward_core::{InactiveReason, Scopes, TokenRecord, format};
use std::net::IpAddr;

use super::{
    Action, Allowance, Caller, Keyward, ServiceError, ServiceResult, Verdict, VerifiedToken,
};

mod routes;
pub use routes::{
    ForwardAuthRoute, ForwardAuthRoutes, MAX_URI_BYTES, PathError, RouteDecision, RouteError,
    normalize_path,
};

/// The audit reason of a revocation through `POST /oauth/revoke`.
pub const RFC7009_REASON: &str = "RFC 7009 revocation";

/// What `POST /oauth/revoke` did.
#[derive(Debug)]
pub enum SecretRevocation {
    /// The token was revoked now.
    Revoked(Box<TokenRecord>),
    /// It was already revoked: nothing changed.
    AlreadyRevoked,
    /// The text names no token (malformed or unknown): nothing to do (RFC 7009 §2.2).
    NoSuchToken,
}

impl Keyward {
    /// Forward-auth and the library's layer: `bearer` must be an active token granting every
    /// scope of `wanted`; answers with what `f` makes of the token (see
    /// [`Keyward::verify_with`]: `f` must be short and must not call into `Keyward`). The hot path: one format check, one keyed hash, one cache
    /// lookup.
    pub async fn authorize<R>(
        &self,
        bearer: Option<&str>,
        wanted: &Scopes,
        ip: Option<IpAddr>,
        f: impl FnOnce(&VerifiedToken, &Allowance) -> R,
    ) -> ServiceResult<R> {
        let secret = bearer.ok_or(ServiceError::Unauthenticated(None))?;
        match self.verify_limited_with(secret, wanted, ip, f).await? {
            Ok(answer) => Ok(answer),
            Err((InactiveReason::InsufficientScope, _)) => Err(ServiceError::MissingScope {
                needed: wanted.to_string(),
            }),
            Err((reason, allowance)) => Err(self.refusal(reason, &allowance)),
        }
    }

    /// RFC 7662: the token `secret` names if it is active, else `None` (whatever the reason:
    /// the RFC answers every inactive token alike). A successful introspection counts as a use
    /// of the token, like any verification.
    /// The caller (see [`Keyward::authenticate`]) must be allowed [`Action::Introspect`].
    pub async fn introspect(
        &self,
        caller: &Caller,
        secret: &str,
    ) -> ServiceResult<Option<VerifiedToken>> {
        caller.authorize(Action::Introspect)?;
        Ok(
            match self.verify(secret, &Scopes::default(), caller.ip()).await? {
                Verdict::Active(token) => Some(token),
                Verdict::Inactive(_) => None,
            },
        )
    }

    /// RFC 7009: revokes the token `secret` belongs to. The caller must be that token itself,
    /// or act for the same owner and be allowed to revoke others (a token needs
    /// `tokens:delete`; an operator may revoke any). Malformed, unknown and already revoked secrets change nothing and are not errors
    /// (§2.2); another owner's token is refused without revoking it.
    pub async fn revoke_by_secret(
        &self,
        caller: &Caller,
        secret: &str,
    ) -> ServiceResult<SecretRevocation> {
        caller.authorize(Action::RevokeBySecret)?;
        if format::validate(secret).is_err() {
            return Ok(SecretRevocation::NoSuchToken);
        }
        // From the store, not the cache: a revocation acts on the record as it is now.
        let Some(found) = self.lookup_secret(secret).await? else {
            return Ok(SecretRevocation::NoSuchToken);
        };
        let token = found.token;
        let is_self = caller.token_id() == Some(&token.id);
        match caller.user() {
            Some(owner) if *owner != token.owner => {
                return Err(ServiceError::NotPermitted(
                    "this token belongs to another user",
                ));
            }
            Some(_) if !is_self && !caller.may_revoke_others() => {
                return Err(ServiceError::NotPermitted(
                    "revoking another token needs the scope tokens:delete",
                ));
            }
            _ => {}
        }
        if token.revoked_at.is_some() {
            return Ok(SecretRevocation::AlreadyRevoked);
        }
        let record = self
            .revoke(caller, &token.id, Some(RFC7009_REASON.to_owned()))
            .await?;
        Ok(SecretRevocation::Revoked(Box::new(record)))
    }
}
