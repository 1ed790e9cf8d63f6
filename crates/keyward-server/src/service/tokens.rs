//! Managing tokens: create, read, list, rename, regenerate, revoke; and reading the audit trail.
//!
//! Each use case authorizes its [`Action`] first, then acts only within the caller's reach
//! ([`Caller::reach`]: their own user's tokens, anyone's for an operator) and never beyond its ceilings: a token cannot make or regenerate a
//! token with scopes it does not hold, or one that outlives it.

use keyward_core::{
    AuditKind, ExpiryRequest, Limits, LimitsError, Scopes, TokenId, TokenName, TokenRecord,
    TokenSecret, TokenState, UserId, UserKind, format,
};
use keyward_store::{AuditFilter, Page, Regeneration, Revocation, StoredHash};
use std::collections::HashMap;
use time::{Duration, OffsetDateTime};

/// One event of the audit trail, with its position in it.
pub use keyward_store::StoredAuditEvent as AuditEntry;

use super::{Action, Caller, Keyward, MAX_PAGE, MAX_REASON_CHARS, ServiceError, ServiceResult};

/// A token just made or regenerated, with the secret that is shown this once.
pub struct Issued {
    /// The record.
    pub token: TokenRecord,
    /// The secret; exists nowhere else.
    pub secret: TokenSecret,
}

/// How to regenerate.
#[derive(Debug, Clone, Copy, Default)]
pub struct RegenerateOptions {
    /// How long the old secret keeps working (none by default); never past the old secret's
    /// own expiry, nor the acting token's.
    pub grace: Option<Duration>,
    /// A new expiry; by default the token keeps the one it has. A token acting cannot set one
    /// later than its own (the request is clamped to it).
    pub expires: Option<ExpiryRequest>,
}

/// A page of tokens, newest first.
#[derive(Debug, Clone)]
pub struct TokenPage {
    /// The tokens.
    pub tokens: Vec<TokenRecord>,
    /// Where the next page starts (pass it as `after`); `None` on the last page.
    pub next: Option<TokenId>,
}

/// A page of the audit trail, newest first.
#[derive(Debug, Clone)]
pub struct AuditPage {
    /// The events.
    pub events: Vec<AuditEntry>,
    /// Where the next page starts (pass it as `before`); `None` on the last page.
    pub next: Option<i64>,
}

/// Where the page after `records` starts: the cursor of its last record when the page is full
/// (`limit` records; more may follow), else `None`.
fn next_cursor<T, C>(records: &[T], limit: u32, cursor: impl Fn(&T) -> C) -> Option<C> {
    let full = u32::try_from(records.len()).is_ok_and(|n| n == limit);
    records.last().filter(|_| full).map(cursor)
}

impl Keyward {
    fn check_ceiling(caller: &Caller, scopes: &Scopes) -> ServiceResult<()> {
        if let Some(ceiling) = caller.scope_ceiling() {
            let missing = ceiling.missing(scopes);
            if !missing.is_empty() {
                return Err(ServiceError::ScopeCeiling {
                    missing: missing.iter().map(ToString::to_string).collect(),
                });
            }
        }
        Ok(())
    }

    /// The limits of a token the caller makes: within the acting token's own (see
    /// [`Limits::bounded_by`]: what is left unset is inherited, nothing may be looser), and with
    /// `allowed_ips` when the deployment requires them.
    async fn bound_limits(&self, caller: &Caller, limits: Limits) -> ServiceResult<Limits> {
        let limits = match caller.token_id() {
            Some(maker) => {
                let maker = self
                    .store
                    .token(maker, None)
                    .await?
                    .ok_or(ServiceError::Unauthenticated(None))?;
                limits.bounded_by(&maker.limits, maker.remaining)?
            }
            None => limits.checked()?,
        };
        if self.settings.require_allowed_ips && limits.allowed_ips.is_empty() {
            return Err(LimitsError::AllowedIpsRequired.into());
        }
        Ok(limits)
    }

    /// `expires_at` (`None` = never), or the caller's own expiry if that comes sooner: nothing a
    /// token makes outlives it. A person or an operator has no such ceiling.
    fn clamp_expiry(caller: &Caller, expires_at: Option<OffsetDateTime>) -> Option<OffsetDateTime> {
        match (expires_at, caller.expiry_ceiling()) {
            (Some(at), Some(ceiling)) => Some(at.min(ceiling)),
            (None, ceiling) => ceiling,
            (at, None) => at,
        }
    }

    fn issue_secret(&self) -> ServiceResult<(TokenSecret, StoredHash)> {
        let secret = TokenSecret::generate(&self.settings.prefix)?;
        let ring = self.ring();
        let hash = StoredHash {
            hash: ring.current().hash(&secret),
            key_id: ring.current().key_id().clone(),
        };
        Ok((secret, hash))
    }

    /// Creates a token for `owner` (the caller's own user when `None`; an operator must name
    /// one); the secret is returned this once.
    pub async fn create_token(
        &self,
        caller: &Caller,
        owner: Option<&UserId>,
        name: TokenName,
        scopes: Scopes,
        expires: Option<ExpiryRequest>,
        limits: Limits,
    ) -> ServiceResult<Issued> {
        caller.authorize(Action::CreateToken)?;
        let owner = caller
            .reach(owner)?
            .ok_or(ServiceError::Invalid("name the token's owner"))?;
        let user = self
            .store
            .user_by_id(owner)
            .await?
            .ok_or(ServiceError::NotFound)?;
        self.settings.catalog.check(&scopes)?;
        Self::check_ceiling(caller, &scopes)?;
        self.mint(caller, &user, name, scopes, expires, limits)
            .await
    }

    /// Issues a token for any user (the platform's backend minting one for its user, or an
    /// admin for a service account): any scope of the catalog, not only the caller's own — that
    /// is what `tokens:issue` is for — but administrative scopes only for an admin, and, when a
    /// token acts, no later expiry than its own. The secret is returned this once.
    pub async fn issue_token(
        &self,
        caller: &Caller,
        owner: &UserId,
        name: TokenName,
        scopes: Scopes,
        expires: Option<ExpiryRequest>,
        limits: Limits,
    ) -> ServiceResult<Issued> {
        caller.authorize(Action::IssueToken)?;
        let user = self.find_user(owner).await?;
        self.settings.catalog.check(&scopes)?;
        self.mint(caller, &user, name, scopes, expires, limits)
            .await
    }

    /// Makes a token for `user` once the caller's rights are checked.
    async fn mint(
        &self,
        caller: &Caller,
        user: &keyward_core::User,
        name: TokenName,
        scopes: Scopes,
        expires: Option<ExpiryRequest>,
        limits: Limits,
    ) -> ServiceResult<Issued> {
        if user.disabled_at.is_some() {
            return Err(ServiceError::InvalidState("the user is disabled"));
        }
        Self::check_administrative(user, &scopes)?;
        let limits = self.bound_limits(caller, limits).await?;
        let owner = &user.id;
        let now = self.now();
        let expires_at = Self::clamp_expiry(caller, self.settings.policy.resolve(expires, now)?);
        let (secret, hash) = self.issue_secret()?;
        let token = TokenRecord {
            id: TokenId::generate(now)?,
            owner: owner.clone(),
            name,
            // Stored without a scope another one covers: the same rights, said once.
            scopes: scopes.normalized(),
            hint: secret.hint(),
            created_at: now,
            expires_at,
            regenerated_at: None,
            last_used_at: None,
            last_used_ip: None,
            revoked_at: None,
            revoked_by: None,
            revoke_reason: None,
            remaining: limits.max_uses,
            refilled_at: limits.refill.map(|_| now),
            limits,
        };
        let audit = self.audit(caller, AuditKind::TokenCreated, now, owner, Some(&token.id));
        let cap =
            (self.settings.max_tokens_per_user > 0).then_some(self.settings.max_tokens_per_user);
        self.store.insert_token(&token, &hash, &audit, cap).await?;
        tracing::info!(token_id = %token.id, owner = %owner, actor = %audit.actor.label, "token created");
        Ok(Issued { token, secret })
    }

    /// One token, if it is within the caller's reach.
    pub async fn get_token(&self, caller: &Caller, id: &TokenId) -> ServiceResult<TokenRecord> {
        caller.authorize(Action::ReadTokens)?;
        self.find_token(caller, id).await
    }

    /// The presenting token's own record.
    pub async fn own_token(&self, caller: &Caller) -> ServiceResult<TokenRecord> {
        caller.authorize(Action::ReadSelf)?;
        let id = caller.token_id().ok_or(ServiceError::NotFound)?;
        self.find_token(caller, id).await
    }

    /// The record of `id` if the caller reaches it, whatever it may do with it: its own
    /// user's tokens (anyone's for an operator), and for an admin on the web page a service
    /// account's too. Later writes name the owner found here, so the store checks it again in
    /// the same statement.
    async fn find_token(&self, caller: &Caller, id: &TokenId) -> ServiceResult<TokenRecord> {
        if let Some(token) = self.store.token(id, caller.user()).await? {
            return Ok(token);
        }
        if Self::is_admin_person(caller)
            && let Some(token) = self.store.token(id, None).await?
            && self.is_service_account(&token.owner).await?
        {
            return Ok(token);
        }
        Err(ServiceError::NotFound)
    }

    async fn is_service_account(&self, id: &UserId) -> ServiceResult<bool> {
        Ok(self
            .store
            .user_by_id(id)
            .await?
            .is_some_and(|u| u.kind == UserKind::Service))
    }

    /// Whose tokens a listing reaches: [`Caller::reach`], and for an admin on the web page a
    /// service account named.
    async fn reach_owner(
        &self,
        caller: &Caller,
        named: Option<&UserId>,
    ) -> ServiceResult<Option<UserId>> {
        match caller.reach(named) {
            Ok(owner) => Ok(owner.cloned()),
            Err(ServiceError::NotFound)
                if Self::is_admin_person(caller)
                    && let Some(named) = named
                    && self.is_service_account(named).await? =>
            {
                Ok(Some(named.clone()))
            }
            Err(e) => Err(e),
        }
    }

    /// A page of tokens, newest first, starting after `after`: the caller's own, or for an
    /// operator `owner`'s (everyone's if `None`); see [`Caller::reach`]. `limit` is clamped to 1..=[`MAX_PAGE`].
    pub async fn list_tokens(
        &self,
        caller: &Caller,
        owner: Option<&UserId>,
        after: Option<TokenId>,
        limit: u32,
    ) -> ServiceResult<TokenPage> {
        caller.authorize(Action::ReadTokens)?;
        let owner = self.reach_owner(caller, owner).await?;
        let limit = limit.clamp(1, MAX_PAGE);
        let tokens = self
            .store
            .list_tokens(owner.as_ref(), &Page { after, limit })
            .await?;
        let next = next_cursor(&tokens, limit, |t| t.id.clone());
        Ok(TokenPage { tokens, next })
    }

    /// The tokens whose previous secret still works (a regeneration's grace period), each with
    /// when it stops: among the caller's own, or for an operator `owner`'s (everyone's if
    /// `None`), as [`Self::list_tokens`] reaches them.
    pub async fn old_secrets_until(
        &self,
        caller: &Caller,
        owner: Option<&UserId>,
    ) -> ServiceResult<HashMap<TokenId, OffsetDateTime>> {
        caller.authorize(Action::ReadTokens)?;
        let owner = self.reach_owner(caller, owner).await?;
        let found = self
            .store
            .old_secrets_until(owner.as_ref(), self.now())
            .await?;
        Ok(found.into_iter().collect())
    }

    /// Renames a token.
    pub async fn rename_token(
        &self,
        caller: &Caller,
        id: &TokenId,
        name: TokenName,
    ) -> ServiceResult<TokenRecord> {
        caller.authorize(Action::RenameToken)?;
        let current = self.find_token(caller, id).await?;
        let now = self.now();
        let mut audit = self.audit(
            caller,
            AuditKind::TokenRenamed,
            now,
            &current.owner,
            Some(id),
        );
        audit.detail = Some(format!("{} → {}", current.name.as_str(), name.as_str()));
        Ok(self
            .store
            .rename_token(id, Some(&current.owner), &name, &audit)
            .await?)
    }

    /// Sets a token's limits (allowed addresses, uses and refill, rate limit), starting its
    /// counts afresh. A token acting may set only limits within its own (nothing outgrows its
    /// maker, and a token cannot loosen its own limits).
    /// `change` makes the new limits from the token's current ones.
    pub async fn set_token_limits(
        &self,
        caller: &Caller,
        id: &TokenId,
        change: impl FnOnce(&Limits) -> Result<Limits, LimitsError>,
    ) -> ServiceResult<TokenRecord> {
        caller.authorize(Action::RenameToken)?;
        let current = self.find_token(caller, id).await?;
        let limits = self.bound_limits(caller, change(&current.limits)?).await?;
        let now = self.now();
        let mut audit = self.audit(
            caller,
            AuditKind::TokenLimitsChanged,
            now,
            &current.owner,
            Some(id),
        );
        audit.detail = Some(describe_limits(&limits));
        Ok(self
            .store
            .set_limits(id, Some(&current.owner), &limits, now, &audit)
            .await?)
    }

    /// Gives a token a new secret, keeping its id, name and scopes. The old secret stops working
    /// now, or when the grace period ends.
    pub async fn regenerate_token(
        &self,
        caller: &Caller,
        id: &TokenId,
        options: RegenerateOptions,
    ) -> ServiceResult<Issued> {
        caller.authorize(Action::RegenerateToken)?;
        self.regenerate(caller, id, options).await
    }

    /// The presenting token gives itself a new secret (for automation): it needs no scope, as
    /// the new secret has exactly the old one's rights.
    pub async fn regenerate_own_token(
        &self,
        caller: &Caller,
        options: RegenerateOptions,
    ) -> ServiceResult<Issued> {
        caller.authorize(Action::RegenerateSelf)?;
        let id = caller.token_id().ok_or(ServiceError::NotFound)?.clone();
        self.regenerate(caller, &id, options).await
    }

    async fn regenerate(
        &self,
        caller: &Caller,
        id: &TokenId,
        options: RegenerateOptions,
    ) -> ServiceResult<Issued> {
        let current = self.find_token(caller, id).await?;
        Self::check_ceiling(caller, &current.scopes)?;
        let now = self.now();
        match current.state(now) {
            TokenState::Active => {}
            TokenState::Revoked => {
                return Err(ServiceError::InvalidState(
                    "the token is revoked; create a new one",
                ));
            }
            TokenState::Expired => {
                return Err(ServiceError::InvalidState(
                    "the token has expired; create a new one",
                ));
            }
        }
        // The token keeps its expiry unless asked for another; either way, a token acting here
        // cannot give it one later than its own.
        let new_expires_at = match (options.expires, current.expires_at) {
            (Some(request), _) => self.settings.policy.resolve(Some(request), now)?,
            (None, None) => self
                .settings
                .policy
                .resolve(Some(ExpiryRequest::Never), now)?,
            (None, Some(current_expiry)) => Some(current_expiry),
        };
        let new_expires_at = Self::clamp_expiry(caller, new_expires_at);
        // The old secret works no longer than it would have without the regeneration.
        let grace_ends = match options.grace {
            None => now,
            Some(grace) => {
                let wanted = now + grace;
                Self::clamp_expiry(caller, current.expires_at).map_or(wanted, |end| wanted.min(end))
            }
        };
        let (secret, new_hash) = self.issue_secret()?;
        let regen = Regeneration {
            new_hash,
            new_hint: secret.hint(),
            new_expires_at,
            old_valid_until: grace_ends,
            at: now,
        };
        let mut audit = self.audit(
            caller,
            AuditKind::TokenRegenerated,
            now,
            &current.owner,
            Some(id),
        );
        audit.detail = (grace_ends > now).then(|| {
            format!(
                "old secret valid for {} more seconds",
                (grace_ends - now).whole_seconds()
            )
        });
        let token = self
            .store
            .regenerate_token(id, Some(&current.owner), &regen, &audit)
            .await?;
        tracing::info!(token_id = %id, actor = %audit.actor.label, "token regenerated");
        Ok(Issued { token, secret })
    }

    /// Revokes a token. The record stays, revoked, for the audit trail; revoking twice is a no-op.
    pub async fn revoke_token(
        &self,
        caller: &Caller,
        id: &TokenId,
        reason: Option<String>,
    ) -> ServiceResult<TokenRecord> {
        caller.authorize(Action::RevokeToken)?;
        self.revoke(caller, id, reason).await
    }

    /// [`Self::revoke_token`] once the caller is known to be allowed (also used by the RFC 7009
    /// revocation, which has rules of its own).
    pub(super) async fn revoke(
        &self,
        caller: &Caller,
        id: &TokenId,
        reason: Option<String>,
    ) -> ServiceResult<TokenRecord> {
        let reason = Self::checked_reason(reason)?;
        let current = self.find_token(caller, id).await?;
        let now = self.now();
        let mut audit = self.audit(
            caller,
            AuditKind::TokenRevoked,
            now,
            &current.owner,
            Some(id),
        );
        audit.detail.clone_from(&reason);
        let revocation = Revocation {
            at: now,
            by: audit.actor.label.clone(),
            reason,
        };
        let token = self
            .store
            .revoke_token(id, Some(&current.owner), &revocation, &audit)
            .await?;
        tracing::info!(token_id = %id, actor = %audit.actor.label, "token revoked");
        Ok(token)
    }

    /// A revocation reason as given, trimmed (`None` if empty), or why it is refused.
    pub(super) fn checked_reason(reason: Option<String>) -> ServiceResult<Option<String>> {
        Ok(
            match reason
                .map(|r| r.trim().to_owned())
                .filter(|r| !r.is_empty())
            {
                Some(r)
                    if r.chars().count() > MAX_REASON_CHARS
                        || r.chars().any(keyward_core::is_unsafe_text_char) =>
                {
                    return Err(ServiceError::Invalid(
                        "a reason must be at most 500 characters, without control characters or invisible formatting characters",
                    ));
                }
                // A secret pasted as the reason would be kept in the record and the audit trail.
                Some(r) if format::contains_token(&r) => {
                    return Err(ServiceError::Invalid(
                        "a reason must not contain a token's secret; never paste a secret where text goes",
                    ));
                }
                r => r,
            },
        )
    }

    /// A page of the audit trail, newest first, before `before_seq`: the caller's own events,
    /// or for an operator `subject`'s (all if `None`); see [`Caller::reach`]. `limit` is clamped to 1..=[`MAX_PAGE`].
    pub async fn audit_events(
        &self,
        caller: &Caller,
        subject: Option<&UserId>,
        before_seq: Option<i64>,
        limit: u32,
    ) -> ServiceResult<AuditPage> {
        caller.authorize(Action::ReadAudit)?;
        let subject_user = caller.reach(subject)?.cloned();
        let limit = limit.clamp(1, MAX_PAGE);
        let filter = AuditFilter {
            subject_user,
            before_seq,
            limit,
        };
        let events = self.store.audit_events(&filter).await?;
        let next = next_cursor(&events, limit, |e| e.seq);
        Ok(AuditPage { events, next })
    }
}

/// Limits in a line, for the audit trail: `allowed_ips 10.0.0.0/8; max_uses 100 (refill 100/1d);
/// rate_limit 10/1s`, or `none`.
fn describe_limits(limits: &Limits) -> String {
    let mut parts = Vec::new();
    if !limits.allowed_ips.is_empty() {
        let ips: Vec<String> = limits.allowed_ips.iter().map(ToString::to_string).collect();
        parts.push(format!("allowed_ips {}", ips.join(" ")));
    }
    if let Some(max) = limits.max_uses {
        match limits.refill {
            Some(refill) => parts.push(format!("max_uses {max} (refill {refill})")),
            None => parts.push(format!("max_uses {max}")),
        }
    }
    if let Some(rate) = limits.rate_limit {
        parts.push(format!("rate_limit {rate}"));
    }
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join("; ")
    }
}
