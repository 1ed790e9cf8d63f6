//! Revoking many tokens at once, for incident response: every token of a user, or every token
//! matching a filter, after a dry run that lists exactly what the real run then revokes.
//!
//! **Batched, not one transaction.** The real run lists the matching tokens first (what a dry
//! run shows), then revokes them [`BATCH`] at a time, each batch one transaction that writes every
//! revocation with its own audit event. A batch re-checks the filter on each token, so a token
//! revoked or changed meanwhile is left alone, and tokens made after the listing are never
//! touched. Batches keep a revocation of a million tokens from holding the store's write lock
//! for minutes, take effect as they commit (the leaked tokens stop working batch by batch rather
//! than all at the end), and let an operator stop between two batches (Ctrl-C) knowing exactly how
//! many were revoked: every committed batch stays revoked, nothing of the next one is.
//!
//! **Never everything by accident.** A filter with no condition at all (no user, no time, no
//! scope) matches every token of the deployment: it is refused unless the request says `all`.

use keyward_core::{AuditEvent, AuditKind, Scope, TokenId, UserId, UserName};
use keyward_store::{Progress, Revocation, TokenFilter};

use super::{Action, Caller, Keyward, ServiceError, ServiceResult};

/// Tokens revoked per transaction.
pub const BATCH: usize = 100;
/// Ids read per page while listing.
const LIST_PAGE: u32 = 1000;
/// The reason recorded when the request gives none.
pub const BULK_REASON: &str = "bulk revocation";

/// Which tokens to revoke in bulk, as asked: conditions that all hold (see [`TokenFilter`]).
#[derive(Debug, Clone, Default)]
pub struct BulkRevokeRequest {
    /// Only this user's tokens: a user id (`usr_…`) or name.
    pub user: Option<String>,
    /// Only tokens created before this time.
    pub created_before: Option<time::OffsetDateTime>,
    /// Only tokens created after this time.
    pub created_after: Option<time::OffsetDateTime>,
    /// Only tokens whose scopes grant this one.
    pub scope: Option<Scope>,
    /// Only tokens not used since this time.
    pub unused_since: Option<time::OffsetDateTime>,
    /// Whether a request without any condition may revoke every token of the deployment.
    pub all: bool,
}

/// What a real bulk revocation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkRevocation {
    /// How many tokens it revoked.
    pub revoked: u64,
    /// How many the listing found (more than `revoked` if some changed meanwhile, or it was
    /// stopped).
    pub listed: u64,
    /// Whether it was stopped before its end (every batch before stayed revoked).
    pub stopped: bool,
}

impl Keyward {
    /// The filter `request` names, its user resolved; refuses an empty one unless it says all.
    async fn bulk_filter(&self, request: &BulkRevokeRequest) -> ServiceResult<TokenFilter> {
        let owner = match request.user.as_deref().map(str::trim) {
            None => None,
            Some(named) => Some(self.user_by_id_or_name(named).await?),
        };
        if let Some(scope) = &request.scope {
            // A misspelt scope would match nothing and revoke nothing, silently.
            self.settings
                .catalog
                .check(&keyward_core::Scopes::new([scope.clone()]))?;
        }
        let filter = TokenFilter {
            owner,
            created_before: request.created_before,
            created_after: request.created_after,
            scope: request.scope.clone(),
            unused_since: request.unused_since,
        };
        if filter.is_empty() && !request.all {
            return Err(ServiceError::Invalid(
                "name a user or another condition, or say `all` to revoke every token of the deployment",
            ));
        }
        Ok(filter)
    }

    /// A user (deleted ones aside) by id, or by name when the text is not an id.
    async fn user_by_id_or_name(&self, named: &str) -> ServiceResult<UserId> {
        let found = match UserId::parse(named) {
            Ok(id) => self.store.user_by_id(&id).await?,
            Err(_) => match UserName::parse(named) {
                Ok(name) => self.store.user_by_name(&name).await?,
                Err(_) => None,
            },
        };
        found.map(|u| u.id).ok_or(ServiceError::NotFound)
    }

    /// Every token `filter` matches now, in id order.
    async fn list_matching(&self, filter: &TokenFilter) -> ServiceResult<Vec<TokenId>> {
        let mut ids: Vec<TokenId> = Vec::new();
        loop {
            let page = self
                .store
                .matching_tokens(filter, ids.last(), LIST_PAGE)
                .await?;
            let full = page.len() == LIST_PAGE as usize;
            ids.extend(page);
            if !full {
                return Ok(ids);
            }
        }
    }

    /// The dry run of a bulk revocation: the ids of every token it would revoke now, in id
    /// order. Writes nothing.
    pub async fn bulk_revoke_preview(
        &self,
        caller: &Caller,
        request: &BulkRevokeRequest,
    ) -> ServiceResult<Vec<TokenId>> {
        caller.authorize(Action::RevokeAnyTokens)?;
        let filter = self.bulk_filter(request).await?;
        self.list_matching(&filter).await
    }

    /// Revokes every token `request` matches, [`BATCH`] per transaction, each with its
    /// `token.revoked` audit event; `progress` is told the total and each batch, and asked
    /// before each batch whether to go on (see the module docs for why batches).
    pub async fn bulk_revoke(
        &self,
        caller: &Caller,
        request: &BulkRevokeRequest,
        reason: Option<String>,
        progress: &dyn Progress,
    ) -> ServiceResult<BulkRevocation> {
        caller.authorize(Action::RevokeAnyTokens)?;
        let reason = Self::checked_reason(reason)?.unwrap_or_else(|| BULK_REASON.to_owned());
        let filter = self.bulk_filter(request).await?;
        let ids = self.list_matching(&filter).await?;
        let listed = u64::try_from(ids.len()).unwrap_or(u64::MAX);
        progress.start(listed);
        let now = self.now();
        let audit = AuditEvent {
            at: now,
            kind: AuditKind::TokenRevoked,
            actor: caller.actor(),
            // Filled in per token by the store.
            subject_user: None,
            token_id: None,
            ip: caller.ip(),
            detail: Some(reason.clone()),
        };
        let revocation = Revocation {
            at: now,
            by: audit.actor.label.clone(),
            reason: Some(reason),
        };
        let mut revoked = 0_u64;
        for batch in ids.chunks(BATCH) {
            if progress.stopped() {
                tracing::warn!(revoked, listed, actor = %audit.actor.label, "bulk revocation stopped");
                return Ok(BulkRevocation {
                    revoked,
                    listed,
                    stopped: true,
                });
            }
            let done = self
                .store
                .revoke_tokens(batch, &filter, &revocation, std::slice::from_ref(&audit))
                .await?;
            revoked += u64::try_from(done.len()).unwrap_or(u64::MAX);
            progress.advance(u64::try_from(batch.len()).unwrap_or(u64::MAX));
        }
        tracing::info!(revoked, listed, actor = %audit.actor.label, "bulk revocation");
        Ok(BulkRevocation {
            revoked,
            listed,
            stopped: false,
        })
    }
}
