//! The server key guard: every token is worthless without the key that hashed it, so a server
//! that lacks the key of an active token says so loudly instead of answering `unknown` for it.
//!
//! At start-up the command line refuses to run over such a store unless told to accept a new
//! key (which revokes those tokens, on the record); while running, readiness fails as long as
//! the store holds one (another instance with another key may have made it).
//!
//! The keys form a ring ([`KeyRing`]): new secrets are hashed under the first, the current key;
//! a secret presented under an older key verifies, and is moved to the current key on the spot
//! (the plaintext is in hand), so old keys drain away as their tokens are used and can then be
//! retired.

use arc_swap::Guard;
use keyward_core::{AuditEvent, AuditKind, KeyId, KeyRing, TokenHash};
use keyward_store::{Lookup, Revocation, StoreResult, StoredHash};
use std::sync::{Arc, Mutex, PoisonError};
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

/// How many active tokens a server key still verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUsage {
    /// The key's id.
    pub key_id: KeyId,
    /// Active tokens with a working secret under it.
    pub tokens: u64,
    /// Where it stands in this server's ring.
    pub role: KeyRole,
}

/// A key's place in the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    /// New secrets are hashed under it.
    Current,
    /// It only verifies what it hashed before a rotation.
    Older,
    /// Tokens use it, but this server does not have it: they answer `unknown` here.
    Missing,
}

impl KeyRole {
    /// `current`, `older` or `missing`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Current => "current",
            Self::Older => "older",
            Self::Missing => "missing",
        }
    }
}

/// The last look at the store's key ids, for readiness.
#[derive(Debug, Default)]
pub(super) struct KeyCheck(Mutex<Option<(Instant, Vec<MissingKey>)>>);

impl Keyward {
    /// The current server key's id (what every new hash is stored under).
    pub fn key_id(&self) -> KeyId {
        self.keys.load().current().key_id().clone()
    }

    /// The server keys in use now.
    pub fn key_ring(&self) -> Arc<KeyRing> {
        self.keys.load_full()
    }

    /// The ring, for one operation (an atomic load; hold it briefly).
    pub(super) fn ring(&self) -> Guard<Arc<KeyRing>> {
        self.keys.load()
    }

    /// Replaces the server keys (the ring file changed): new secrets are hashed under the new
    /// ring's first key from now on. Readiness looks at the store's key ids again at once.
    pub fn set_key_ring(&self, ring: KeyRing) {
        let ids: Vec<String> = ring.ids().map(ToString::to_string).collect();
        self.keys.store(Arc::new(ring));
        *self
            .key_check
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        tracing::info!(keys = %ids.join(" "), "server key ring loaded; the first key is current");
    }

    /// Active tokens (neither revoked nor expired) this server cannot verify, by key id.
    pub async fn tokens_under_missing_keys(&self) -> ServiceResult<Vec<MissingKey>> {
        let ring = self.key_ring();
        let found = self
            .store
            .tokens_under_other_keys(ring.current().key_id(), self.now())
            .await?;
        Ok(found
            .into_iter()
            .filter(|(key_id, _)| !ring.contains(key_id))
            .map(|(key_id, tokens)| MissingKey { key_id, tokens })
            .collect())
    }

    /// Every key of the ring (current first) and every key the store's active tokens use, with
    /// how many active tokens each still verifies.
    pub async fn key_usage(&self) -> ServiceResult<Vec<KeyUsage>> {
        let ring = self.key_ring();
        let counts = self.store.active_tokens_by_key(self.now()).await?;
        let count = |id: &KeyId| counts.iter().find(|(k, _)| k == id).map_or(0, |(_, n)| *n);
        let mut usage: Vec<KeyUsage> = ring
            .ids()
            .enumerate()
            .map(|(i, id)| KeyUsage {
                key_id: id.clone(),
                tokens: count(id),
                role: if i == 0 {
                    KeyRole::Current
                } else {
                    KeyRole::Older
                },
            })
            .collect();
        usage.extend(
            counts
                .iter()
                .filter(|(id, _)| !ring.contains(id))
                .map(|(id, n)| KeyUsage {
                    key_id: id.clone(),
                    tokens: *n,
                    role: KeyRole::Missing,
                }),
        );
        Ok(usage)
    }

    /// Records an operator's change to the ring ([`AuditKind::ServerKeyRotated`] or
    /// [`AuditKind::ServerKeyRetired`]), described by `detail` (key ids, never keys).
    pub async fn record_key_change(
        &self,
        caller: &Caller,
        kind: AuditKind,
        detail: String,
    ) -> ServiceResult<()> {
        caller.authorize(Action::ChangeServerKeys)?;
        let event = AuditEvent {
            at: self.now(),
            kind,
            actor: caller.actor(),
            subject_user: None,
            token_id: None,
            ip: caller.ip(),
            detail: Some(detail),
        };
        self.store.append_audit(&event).await?;
        Ok(())
    }

    /// Drops the replaced secrets hashed under `key`, a key leaving the ring (`keyward key
    /// retire`): a replaced secret never moves to a new key (it verifies as nothing), so once
    /// its key is gone it could not be recognised anyway. Returns how many.
    pub async fn drop_replaced_secrets_under(
        &self,
        caller: &Caller,
        key: &KeyId,
    ) -> ServiceResult<u64> {
        caller.authorize(Action::ChangeServerKeys)?;
        Ok(self
            .store
            .drop_replaced_secrets_under(key, self.now())
            .await?)
    }

    /// What the store knows of `secret` under any key of the ring, current first; a secret
    /// found under an older key is moved to the current one. For the paths that read the store
    /// directly rather than through the cache.
    pub(super) async fn lookup_secret(&self, secret: &str) -> StoreResult<Option<Lookup>> {
        let ring = self.key_ring();
        let current = ring.current().hash_str(secret);
        if let Some(found) = self.store.lookup(&current).await? {
            return Ok(Some(found));
        }
        for older in ring.older() {
            let hash = older.hash_str(secret);
            if let Some(found) = self.store.lookup(&hash).await? {
                self.rekey(hash, current, ring.current().key_id());
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Moves the secret stored as `old` (under an older key) to `new` (its hash under the current
    /// key `key_id`), off the request path and once per secret however often it is presented.
    pub(super) fn rekey(&self, old: TokenHash, new: TokenHash, key_id: &KeyId) {
        if self.rekeying.contains_key(&old) {
            return;
        }
        self.rekeying.insert(old, ());
        let store = Arc::clone(&self.store);
        let new = StoredHash {
            hash: new,
            key_id: key_id.clone(),
        };
        let at = self.now();
        tokio::spawn(async move {
            match store.rekey_secret(&old, &new, at).await {
                Ok(moved) => {
                    tracing::debug!(moved, key_id = %new.key_id, "a secret moved to the current server key");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not move a secret to the current server key; it keeps verifying under its old key");
                }
            }
        });
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
                self.key_id(),
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
            .revoke_under_other_keys(
                &self.key_ring().ids().cloned().collect::<Vec<_>>(),
                &revocation,
                &event,
            )
            .await?;
        tracing::warn!(revoked, key_id = %self.key_id(), "server key reset: tokens under other keys revoked");
        Ok(revoked)
    }

    /// [`Self::tokens_under_missing_keys`] for readiness: looked up at most every 5 s, and an
    /// error while any are found.
    pub(super) async fn check_keys(&self) -> ServiceResult<()> {
        let cached = {
            let last = self
                .key_check
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            last.as_ref()
                .filter(|(at, _)| at.elapsed() < RECHECK_EVERY)
                .map(|(_, missing)| missing.clone())
        };
        let missing = match cached {
            Some(missing) => missing,
            None => {
                let missing = self.tokens_under_missing_keys().await?;
                *self
                    .key_check
                    .0
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) =
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
            self.key_ring()
                .ids()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
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
