//! The outbox's events and the webhooks that receive them: reading events in order, the
//! deployment's webhooks, and their deliveries. Sending is `crate::webhooks`.
//!
//! Events cover every user, so reading them (and the deliveries) is an admin's right:
//! `events:read` and `webhooks:read` work only on an admin's token.

use base64::Engine as _;
use keyward_core::{EventId, valid_event_pattern};
use keyward_store::{DeliveryFilter, DeliveryRecord, DeliveryState, StoreError, StoredEvent};
use std::fmt;
use zeroize::Zeroizing;

use super::{Action, Caller, Keyward, MAX_PAGE, ServiceError, ServiceResult};

/// A webhook's signing key: the Standard Webhooks secret `whsec_<base64>`, decoded. Its
/// `Debug` shows nothing and it is zeroized on drop; it never reaches the store or a log.
#[derive(Clone)]
pub struct WebhookSecret(Zeroizing<Vec<u8>>);

impl WebhookSecret {
    /// The prefix of a Standard Webhooks secret.
    pub const PREFIX: &'static str = "whsec_";

    /// Reads `whsec_` and the base64 of a key of 24 to 64 bytes (the Standard Webhooks format).
    pub fn parse(text: &str) -> Result<Self, String> {
        let encoded = text
            .strip_prefix(Self::PREFIX)
            .ok_or("a webhook secret starts with whsec_ (the Standard Webhooks format)")?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| "a webhook secret is whsec_ followed by base64".to_owned())?;
        if !(24..=64).contains(&key.len()) {
            return Err("a webhook secret's key must be 24 to 64 bytes".to_owned());
        }
        Ok(Self(Zeroizing::new(key)))
    }

    /// The key bytes (for signing).
    pub fn key(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(redacted)")
    }
}

/// One webhook of the deployment (`[[webhooks]]`).
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Where to POST events (its identity: deliveries are kept per URL).
    pub url: String,
    /// The signing key.
    pub secret: WebhookSecret,
    /// Which event types: `*`, `token.*`, `user.deleted`, …
    pub events: Vec<String>,
}

impl WebhookSettings {
    /// Checks the settings: an `http(s)` URL without credentials in it, and patterns that each
    /// match an event type.
    pub fn check(&self) -> Result<(), String> {
        // Until the URL is known to hold no credentials, no message repeats it.
        let url = reqwest::Url::parse(&self.url).map_err(|e| format!("webhook url: {e}"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "a webhook url must not hold credentials; the secret signs each delivery"
                    .to_owned(),
            );
        }
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!(
                "webhook url {:?} must be http(s)://host/…",
                self.url
            ));
        }
        if self.events.is_empty() {
            return Err(format!("webhook {:?} subscribes to no events", self.url));
        }
        if let Some(bad) = self.events.iter().find(|p| !valid_event_pattern(p)) {
            return Err(format!(
                "webhook {:?}: {bad:?} matches no event type (use \"*\", \"token.*\" or a type such as \"user.deleted\")",
                self.url
            ));
        }
        Ok(())
    }
}

impl Keyward {
    /// Events after `after` (from the first when `None`), oldest first, at most `limit`.
    pub async fn events(
        &self,
        caller: &Caller,
        after: Option<&EventId>,
        limit: u32,
    ) -> ServiceResult<Vec<StoredEvent>> {
        caller.authorize(Action::ReadEvents)?;
        match self
            .store
            .events_after(after, limit.clamp(1, MAX_PAGE))
            .await
        {
            Err(StoreError::NotFound) => {
                Err(ServiceError::Invalid("`after` must be the id of an event"))
            }
            other => Ok(other?),
        }
    }

    /// Webhook deliveries, newest event first, in `state` when given.
    pub async fn webhook_deliveries(
        &self,
        caller: &Caller,
        state: Option<DeliveryState>,
        limit: u32,
    ) -> ServiceResult<Vec<DeliveryRecord>> {
        caller.authorize(Action::ReadDeliveries)?;
        let filter = DeliveryFilter {
            state,
            limit: limit.clamp(1, MAX_PAGE),
        };
        Ok(self.store.deliveries(&filter).await?)
    }

    /// The store, for the webhook sender (`crate::webhooks`), which acts for the deployment
    /// rather than for a caller.
    pub(crate) fn store(&self) -> &std::sync::Arc<dyn keyward_store::Store> {
        &self.store
    }
}
