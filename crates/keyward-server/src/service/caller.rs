//! Who is asking, and what they may do: the one place keyward's authorization rules live.
//!
//! Every use case of the service takes a [`Caller`] and begins with [`Caller::authorize`] for
//! its [`Action`]; handlers and commands only say which action they are about to take
//! ([`Keyward::authenticate`](super::Keyward::authenticate) checks it up front, so a request
//! that may not proceed is refused before its body is read). A caller is made by the service
//! alone (from a bearer token or a web session), except the operator at the command line, who
//! holds the store and the server key anyway.
//!
//! The rules, in one table:
//!
//! | action                         | operator | person | admin | token                         |
//! |--------------------------------|----------|--------|-------|-------------------------------|
//! | create, read, rename, regenerate, revoke tokens; read the audit trail | any user's | own | own | own, with the scope named by [`Action::scope`] |
//! | read or regenerate itself      | —        | —      | —     | itself, no scope              |
//! | revoke by secret (RFC 7009)    | any      | own    | own   | itself, or own with `tokens:delete` |
//! | introspect (RFC 7662)          | yes      | —      | —     | with `tokens:introspect`      |
//! | read metrics                   | yes      | —      | yes   | with `metrics:read`           |
//! | read, create, update, delete users | yes  | —      | yes   | an admin's, with `users:read`, `users:create`, `users:update`, `users:delete` |
//! | issue a token for any user     | yes      | —      | yes   | an admin's, with `tokens:issue` |
//! | accept a new server key        | yes      | —      | —     | —                             |
//! | revoke any user's tokens in bulk | yes    | —      | yes   | an admin's, with `tokens:revoke-any` |
//! | report leaked secrets          | yes      | yes    | yes   | with `leaks:report`           |
//!
//! A leak reporter (GitHub's secret scanning or GitLab, once its signature or pre-shared token
//! is checked) may report leaked secrets and nothing else.
//!
//! The administrative scopes (`users:*`, `tokens:issue`) work only while the token's owner is an
//! admin, however they were granted (by name or by a wildcard such as `*:*`): a demoted admin's
//! tokens lose them at once. An admin on the web page also reaches service accounts' tokens
//! (see `Keyward::find_token`).
//!
//! A token whose secret was replaced by a regeneration and is in its grace period still
//! verifies, but may take no action at all. Nothing a caller makes outlives or outranks it: a
//! token's scopes and expiry are the ceiling of what it creates or regenerates.

use keyward_core::scope::reserved::{
    AUDIT_READ, EVENTS_READ, LEAKS_REPORT, METRICS_READ, TOKENS_CREATE, TOKENS_DELETE,
    TOKENS_INTROSPECT, TOKENS_ISSUE, TOKENS_READ, TOKENS_REVOKE_ANY, TOKENS_UPDATE, USERS_CREATE,
    USERS_DELETE, USERS_READ, USERS_UPDATE, WEBHOOKS_READ,
};
use keyward_core::{Actor, Scope, Scopes, TokenId, UserId, UserName};
use std::net::IpAddr;
use time::OffsetDateTime;

use super::{Keyward, ServiceError, ServiceResult, VerifiedToken};

/// Something a caller asks to do. Each use case of the service names one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Create a token.
    CreateToken,
    /// Read tokens: one, or a page of them.
    ReadTokens,
    /// Rename a token.
    RenameToken,
    /// Give a token a new secret.
    RegenerateToken,
    /// Revoke a token by its id.
    RevokeToken,
    /// Read the audit trail.
    ReadAudit,
    /// A token reads its own record.
    ReadSelf,
    /// A token gives itself a new secret.
    RegenerateSelf,
    /// Revoke a token by its secret (RFC 7009).
    RevokeBySecret,
    /// Introspect another token (RFC 7662).
    Introspect,
    /// Read the metrics.
    ReadMetrics,
    /// Create a user.
    CreateUser,
    /// Read users.
    ReadUsers,
    /// Change a user: name, email, external id, admin flag, password, disabled.
    UpdateUser,
    /// Delete a user for good.
    DeleteUser,
    /// Issue a token for any user, with any scope of the catalog.
    IssueToken,
    /// Accept a new server key: revoke every token hashed under a key this server lacks.
    ResetServerKey,
    /// Record a change to the server key ring (a rotation, a retired key).
    ChangeServerKeys,
    /// Read the events of every user (the outbox).
    ReadEvents,
    /// Read the webhook deliveries.
    ReadDeliveries,
    /// Revoke any user's tokens that match a filter, in bulk (incident response).
    RevokeAnyTokens,
    /// Report leaked secrets: each one's token is revoked, whoever owns it.
    ReportLeaks,
}

impl Action {
    /// Every action (for tests and documentation).
    pub const ALL: [Self; 22] = [
        Self::CreateToken,
        Self::ReadTokens,
        Self::RenameToken,
        Self::RegenerateToken,
        Self::RevokeToken,
        Self::ReadAudit,
        Self::ReadSelf,
        Self::RegenerateSelf,
        Self::RevokeBySecret,
        Self::Introspect,
        Self::ReadMetrics,
        Self::CreateUser,
        Self::ReadUsers,
        Self::UpdateUser,
        Self::DeleteUser,
        Self::IssueToken,
        Self::ResetServerKey,
        Self::ChangeServerKeys,
        Self::ReadEvents,
        Self::ReadDeliveries,
        Self::RevokeAnyTokens,
        Self::ReportLeaks,
    ];

    /// The scope a token needs for this action, if a token may take it with a scope.
    pub fn scope(self) -> Option<&'static Scope> {
        match self {
            Self::CreateToken => Some(&TOKENS_CREATE),
            Self::ReadTokens => Some(&TOKENS_READ),
            Self::RenameToken | Self::RegenerateToken => Some(&TOKENS_UPDATE),
            Self::RevokeToken => Some(&TOKENS_DELETE),
            Self::ReadAudit => Some(&AUDIT_READ),
            Self::Introspect => Some(&TOKENS_INTROSPECT),
            Self::ReadMetrics => Some(&METRICS_READ),
            Self::CreateUser => Some(&USERS_CREATE),
            Self::ReadUsers => Some(&USERS_READ),
            Self::UpdateUser => Some(&USERS_UPDATE),
            Self::DeleteUser => Some(&USERS_DELETE),
            Self::IssueToken => Some(&TOKENS_ISSUE),
            Self::ReadEvents => Some(&EVENTS_READ),
            Self::ReadDeliveries => Some(&WEBHOOKS_READ),
            Self::RevokeAnyTokens => Some(&TOKENS_REVOKE_ANY),
            Self::ReportLeaks => Some(&LEAKS_REPORT),
            Self::ReadSelf
            | Self::RegenerateSelf
            | Self::RevokeBySecret
            | Self::ResetServerKey
            | Self::ChangeServerKeys => None,
        }
    }

    /// Whether this action is an admin's (or an operator's): managing users, issuing tokens
    /// for others, and revoking others' tokens in bulk.
    pub fn is_administrative(self) -> bool {
        matches!(
            self,
            Self::CreateUser
                | Self::ReadUsers
                | Self::UpdateUser
                | Self::DeleteUser
                | Self::IssueToken
                | Self::ReadEvents
                | Self::ReadDeliveries
                | Self::RevokeAnyTokens
        )
    }

    /// Whether the action names the presenting token itself (so only a token can take it).
    fn on_itself(self) -> bool {
        matches!(self, Self::ReadSelf | Self::RegenerateSelf)
    }
}

/// Who is asking: one value per request or command, made by the service.
#[derive(Debug, Clone)]
pub struct Caller {
    kind: CallerKind,
    ip: Option<IpAddr>,
}

/// The kinds of caller.
#[derive(Debug, Clone)]
pub enum CallerKind {
    /// An operator at the command line: acts on any user's tokens, with no ceiling.
    Operator {
        /// The operating-system user, for the audit trail.
        os_user: String,
    },
    /// A person signed in to the web page: acts on their own tokens, with no ceiling; an admin
    /// also manages users.
    Person {
        /// Who.
        user: UserId,
        /// Their name, for the audit trail.
        name: UserName,
        /// Whether they are an admin.
        admin: bool,
    },
    /// A bearer token: acts on its owner's tokens, within its scopes and its lifetime.
    Token(TokenCaller),
    /// A leak reporter outside keyward (GitHub's secret scanning, GitLab), known by a signature
    /// or a pre-shared token rather than as a user: it may only report leaked secrets.
    Reporter {
        /// Who, for the audit trail (`GitHub secret scanning`, `GitLab`).
        name: &'static str,
    },
}

/// A bearer token acting.
#[derive(Debug, Clone)]
pub struct TokenCaller {
    /// The token.
    pub id: TokenId,
    /// Its owner.
    pub owner: UserId,
    /// The owner's name, for the audit trail.
    pub owner_name: UserName,
    /// What it may do, and the most a token it makes may carry.
    pub scopes: Scopes,
    /// When it stops working, and the latest a token it makes may live (`None` = never).
    pub expires_at: Option<OffsetDateTime>,
    /// Whether the presented secret was replaced by a regeneration and is in its grace period:
    /// it verifies, and may take no action.
    pub in_grace: bool,
    /// Whether its owner is an admin: administrative scopes work only then.
    pub owner_admin: bool,
}

impl Caller {
    /// An operator at the command line.
    pub fn operator(os_user: &str) -> Self {
        Self {
            kind: CallerKind::Operator {
                os_user: os_user.to_owned(),
            },
            ip: None,
        }
    }

    /// A leak reporter (made by the service once its signature or pre-shared token checks).
    pub(super) fn reporter(name: &'static str, ip: Option<IpAddr>) -> Self {
        Self {
            kind: CallerKind::Reporter { name },
            ip,
        }
    }

    /// A person signed in to the web page (made by the service from a session).
    pub(super) fn person(user: &keyward_core::User, ip: Option<IpAddr>) -> Self {
        Self {
            kind: CallerKind::Person {
                user: user.id.clone(),
                name: user.name.clone(),
                admin: user.is_admin,
            },
            ip,
        }
    }

    /// A bearer token (made by the service from a verified secret).
    pub(super) fn token(token: &VerifiedToken, in_grace: bool, ip: Option<IpAddr>) -> Self {
        Self {
            kind: CallerKind::Token(TokenCaller {
                id: token.token_id(),
                owner: token.owner_id().clone(),
                owner_name: token.owner_name().clone(),
                scopes: token.scopes().clone(),
                expires_at: token.expires_at(),
                in_grace,
                owner_admin: token.owner_admin(),
            }),
            ip,
        }
    }

    /// What kind of caller this is.
    pub fn kind(&self) -> &CallerKind {
        &self.kind
    }

    /// From where (the client address), if known.
    pub fn ip(&self) -> Option<IpAddr> {
        self.ip
    }

    /// The user acting: the person, or the token's owner; `None` for an operator. Also whose
    /// records the caller reaches (`None`: everyone's; see [`Self::reach`]).
    pub fn user(&self) -> Option<&UserId> {
        match &self.kind {
            // A reporter may take no action that reaches anyone's records (see `authorize`).
            CallerKind::Operator { .. } | CallerKind::Reporter { .. } => None,
            CallerKind::Person { user, .. } => Some(user),
            CallerKind::Token(t) => Some(&t.owner),
        }
    }

    /// The token acting, if a token is.
    pub fn token_id(&self) -> Option<&TokenId> {
        match &self.kind {
            CallerKind::Token(t) => Some(&t.id),
            _ => None,
        }
    }

    /// Whose records a use case that may name a user acts on: an operator reaches the user
    /// named (everyone when `named` is `None`); anyone else reaches only their own user, and
    /// naming another is answered as if that user did not exist.
    pub fn reach<'a>(&'a self, named: Option<&'a UserId>) -> ServiceResult<Option<&'a UserId>> {
        if matches!(self.kind, CallerKind::Reporter { .. }) {
            // `user()` is `None` for a reporter too, but it reaches no one's records.
            return Err(ServiceError::Forbidden(
                "a leak reporter may only report leaked secrets",
            ));
        }
        match (self.user(), named) {
            (Some(own), Some(named)) if own != named => Err(ServiceError::NotFound),
            (Some(own), _) => Ok(Some(own)),
            (None, named) => Ok(named),
        }
    }

    /// Who, for the audit trail.
    pub fn actor(&self) -> Actor {
        match &self.kind {
            CallerKind::Operator { os_user } => Actor::cli(os_user),
            CallerKind::Reporter { name } => Actor {
                user: None,
                token: None,
                label: (*name).to_owned(),
            },
            CallerKind::Person { user, name, .. } => Actor {
                user: Some(user.clone()),
                token: None,
                label: name.to_string(),
            },
            CallerKind::Token(t) => Actor {
                user: Some(t.owner.clone()),
                token: Some(t.id.clone()),
                label: format!("{} ({})", t.owner_name, t.id),
            },
        }
    }

    /// The most rights a token made or regenerated by this caller may carry: a token's own
    /// scopes; `None` when a person or an operator acts.
    pub fn scope_ceiling(&self) -> Option<&Scopes> {
        match &self.kind {
            CallerKind::Token(t) => Some(&t.scopes),
            _ => None,
        }
    }

    /// The latest a token made or regenerated by this caller may expire, and the latest a
    /// grace period may run to: a token's own expiry (as Vault caps a child token's TTL at its
    /// parent's); `None` when a person or an operator acts, or the token never expires.
    pub fn expiry_ceiling(&self) -> Option<OffsetDateTime> {
        match &self.kind {
            CallerKind::Token(t) => t.expires_at,
            _ => None,
        }
    }

    /// Whether this caller may take `action` at all. What it may take it on (whose tokens, up
    /// to which ceiling) is decided by the use case, from [`Self::reach`] and the ceilings.
    pub fn authorize(&self, action: Action) -> ServiceResult<()> {
        match &self.kind {
            CallerKind::Operator { .. } => {}
            // Whoever holds the data dir holds the key; nobody else decides to drop tokens.
            _ if matches!(action, Action::ResetServerKey | Action::ChangeServerKeys) => {
                return Err(ServiceError::Forbidden(
                    "only an operator at the command line may change the server keys",
                ));
            }
            _ => {}
        }
        match &self.kind {
            CallerKind::Operator { .. } | CallerKind::Person { .. } if action.on_itself() => Err(
                ServiceError::Forbidden("only a token can act on itself; name the token instead"),
            ),
            CallerKind::Operator { .. } => Ok(()),
            // Introspection is the gateways' interface: a token with `tokens:introspect`.
            CallerKind::Person { .. } if action == Action::Introspect => Err(
                ServiceError::Forbidden("only a token can do this; present one as a bearer token"),
            ),
            CallerKind::Person { admin: false, .. }
                if action.is_administrative() || action == Action::ReadMetrics =>
            {
                Err(ServiceError::Forbidden("only an admin may do this"))
            }
            CallerKind::Person { .. } => Ok(()),
            CallerKind::Reporter { .. } if action == Action::ReportLeaks => Ok(()),
            CallerKind::Reporter { .. } => Err(ServiceError::Forbidden(
                "a leak reporter may only report leaked secrets",
            )),
            CallerKind::Token(t) if t.in_grace => Err(ServiceError::RotatedOut),
            // A non-admin's token lacks an administrative scope however it was granted.
            CallerKind::Token(t) => match action.scope() {
                Some(needed)
                    if !t.scopes.covers(needed)
                        || (action.is_administrative() && !t.owner_admin) =>
                {
                    Err(ServiceError::MissingScope {
                        needed: needed.to_string(),
                    })
                }
                _ => Ok(()),
            },
        }
    }

    /// Whether this caller may revoke another of its owner's tokens by secret: a token needs
    /// `tokens:delete` for any token but itself.
    pub(super) fn may_revoke_others(&self) -> bool {
        match &self.kind {
            CallerKind::Token(t) => t.scopes.covers(&TOKENS_DELETE),
            CallerKind::Reporter { .. } => false,
            CallerKind::Operator { .. } | CallerKind::Person { .. } => true,
        }
    }
}

impl Keyward {
    /// The caller behind a bearer token, if it may take `action`: [`Self::identify`], then
    /// [`Caller::authorize`].
    pub async fn authenticate(
        &self,
        bearer: Option<&str>,
        ip: Option<IpAddr>,
        action: Action,
    ) -> ServiceResult<Caller> {
        let caller = self.identify(bearer, ip).await?;
        caller.authorize(action)?;
        Ok(caller)
    }

    /// The caller behind a bearer token, whatever it may do: the token must be active. A
    /// secret in the grace period after a regeneration identifies its token too, marked
    /// [`TokenCaller::in_grace`], and may take no action.
    pub async fn identify(
        &self,
        bearer: Option<&str>,
        ip: Option<IpAddr>,
    ) -> ServiceResult<Caller> {
        let secret = bearer.ok_or(ServiceError::Unauthenticated(None))?;
        self.verify_entry_with(secret, &Scopes::default(), ip, |entry, _| {
            Caller::token(entry.token(), entry.rotated_out(), ip)
        })
        .await?
        .map_err(|(reason, allowance)| self.refusal(reason, &allowance))
    }

    /// Whether a request for the metrics may be answered: always, unless the deployment
    /// requires a token (`[metrics] require_token`); then the bearer token must be allowed
    /// [`Action::ReadMetrics`].
    pub async fn authorize_metrics(
        &self,
        bearer: Option<&str>,
        ip: Option<IpAddr>,
    ) -> ServiceResult<()> {
        if self.settings.metrics_require_token {
            self.authenticate(bearer, ip, Action::ReadMetrics).await?;
        }
        Ok(())
    }
}
