//! The server key guard: every token is worthless without the key that hashed it, so a server
//! that lacks the key of an active token says so loudly instead of answering `unknown` for it.
//!
//! At start-up the command line refuses to run over such a store unless told to accept a new
//! key (which revokes those tokens, on the record); while running, readiness fails as long as
//! the store holds one (another instance with another key may have made it).

use keyward_core::{AuditKind, KeyId};
use keyward_store::Revocation;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{Action, Caller, Keyward, ServiceError, ServiceResult};

/// The reason the tokens revoked by a deliberate key reset carry.
pub const KEY_RESET: &str = "server key reset";
/// How long a readiness check trusts the last look at the store's key ids.
const RECHECK_EVERY: Duration = Duration::from_secs(5);

/// Active tokens hashed under a server key this server does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingKey {
    /// The key's id, as stored beside each hash.
    pub key_id: KeyId,
    /// How many active tokens it hashed.
    pub tokens: u64,
}

/// The last look at the store's key ids, for readiness.
#[derive(Debug, Default)]
pub(super) struct KeyCheck(Mutex<Option<(Instant, Vec<MissingKey>)>>);

impl Keyward {
    /// The server key's id (what every new hash is stored under).
    pub fn key_id(&self) -> &KeyId {
        self.hasher.key_id()
    }

    /// Active tokens (neither revoked nor expired) this server cannot verify, by key id.
    pub async fn tokens_under_missing_keys(&self) -> ServiceResult<Vec<MissingKey>> {
        let found = self
            .store
            .tokens_under_other_keys(self.hasher.key_id(), self.now())
            .await?;
        Ok(found
            .into_iter()
            .map(|(key_id, tokens)| MissingKey { key_id, tokens })
            .collect())
    }

    /// Accepts a new server key on purpose: revokes every token [`Self::tokens_under_missing_keys`]
    /// finds (reason [`KEY_RESET`]), with one audit event; returns how many. An operator's act.
    pub async fn reset_server_key(&self, caller: &Caller) -> ServiceResult<u64> {
        caller.authorize(Action::ResetServerKey)?;
        let missing = self.tokens_under_missing_keys().await?;
        let now = self.now();
        let actor = caller.actor();
        let event = keyward_core::AuditEvent {
            at: now,
            kind: AuditKind::ServerKeyReset,
            subject_user: None,
            token_id: None,
            ip: caller.ip(),
            detail: Some(format!(
                "new server key {}; tokens under {} revoked",
                self.hasher.key_id(),
                describe(&missing)
            )),
            actor,
        };
        let revocation = Revocation {
            at: now,
            by: event.actor.label.clone(),
            reason: Some(KEY_RESET.to_owned()),
        };
        let revoked = self
            .store
            .revoke_under_other_keys(self.hasher.key_id(), &revocation, &event)
            .await?;
        tracing::warn!(revoked, key_id = %self.hasher.key_id(), "server key reset: tokens under other keys revoked");
        Ok(revoked)
    }

    /// [`Self::tokens_under_missing_keys`] for readiness: looked up at most every 5 s, and an
    /// error while any are found.
    pub(super) async fn check_keys(&self) -> ServiceResult<()> {
        let cached = {
            let last = self.keys.0.lock().unwrap_or_else(PoisonError::into_inner);
            last.as_ref()
                .filter(|(at, _)| at.elapsed() < RECHECK_EVERY)
                .map(|(_, missing)| missing.clone())
        };
        let missing = match cached {
            Some(missing) => missing,
            None => {
                let missing = self.tokens_under_missing_keys().await?;
                *self.keys.0.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some((Instant::now(), missing.clone()));
                missing
            }
        };
        if missing.is_empty() {
            return Ok(());
        }
        Err(ServiceError::KeyMissing(format!(
            "active tokens were hashed under a server key this instance does not have ({}); it holds {}",
            describe(&missing),
            self.hasher.key_id()
        )))
    }
}

/// `key k1 (3 tokens), key k2 (1 token)`.
pub fn describe(missing: &[MissingKey]) -> String {
    missing
        .iter()
        .map(|m| {
            format!(
                "key {} ({} token{})",
                m.key_id,
                m.tokens,
                if m.tokens == 1 { "" } else { "s" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}
