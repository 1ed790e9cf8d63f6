//! Sending the outbox's events to the deployment's webhooks, signed as the Standard Webhooks
//! specification says (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64
//! HMAC-SHA256 of "id.timestamp.body">`), so a platform verifies them with that specification's
//! libraries.
//!
//! Every instance runs one sender. Each round it moves every webhook's cursor over new events
//! (queueing a delivery per subscribed event, `WebhookStore::enqueue_deliveries`), then leases a
//! bounded number of due deliveries (`WebhookStore::claim_deliveries`: one instance at a time,
//! the oldest pending one of each token, an expired lease taken over) and sends them at once,
//! each bounded by a timeout, the answer's body never read. A delivery is at least once: a
//! failure is retried with exponential backoff (1 s doubling to an hour) until
//! `webhook_retry_for` after it was queued, then marked failed (visible at
//! `GET /v1/webhooks/deliveries`, `keyward webhook deliveries` and the
//! `keyward_webhook_deliveries_total{outcome="failed"}` metric). Everything is in the store, so
//! a restart loses nothing.

use base64::Engine as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use keyward_store::{Delivery, DeliveryOutcome};
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

use crate::Keyward;
use crate::http::wire::Event;
use crate::service::WebhookSettings;

/// How long a delivery's request may take, connecting included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a lease lasts: well past a request's timeout, so a live instance never loses one
/// mid-send; a dead instance's deliveries are taken over after it.
const LEASE: time::Duration = time::Duration::seconds(60);
/// Most deliveries one instance sends at once.
const IN_FLIGHT: u32 = 16;
/// Most events one round moves a webhook's cursor over.
const ENQUEUE_BATCH: u32 = 500;
/// How long the sender waits between rounds that found nothing more to do.
const IDLE: Duration = Duration::from_secs(1);
/// The longest wait between two tries of a delivery.
const MAX_BACKOFF_SECS: i64 = 3600;

/// One instance's webhook sender.
pub struct WebhookSender {
    keyward: Arc<Keyward>,
    client: reqwest::Client,
    /// This instance's name in leases.
    instance: String,
    urls: Vec<String>,
}

impl WebhookSender {
    /// The sender for `keyward`'s webhooks; `None` when the deployment has none.
    pub fn new(keyward: Arc<Keyward>) -> Result<Option<Self>, String> {
        if keyward.settings().webhooks.is_empty() && keyward.settings().smtp.is_none() {
            return Ok(None);
        }
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            // A redirect would send the signed event somewhere nobody configured.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("keyward/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("the HTTP client for webhooks: {e}"))?;
        let mut id = [0u8; 8];
        keyward_core::fill_random(&mut id).map_err(|e| e.to_string())?;
        let instance = keyward_core::hex(&id);
        let mut urls: Vec<String> = keyward
            .settings()
            .webhooks
            .iter()
            .map(|w| w.url.clone())
            .collect();
        if keyward.settings().smtp.is_some() {
            urls.push(crate::email::EMAIL.to_owned());
        }
        Ok(Some(Self {
            keyward,
            client,
            instance,
            urls,
        }))
    }

    /// Runs rounds until `stop` is notified (between rounds: a round's sends finish and are
    /// recorded first).
    pub async fn run(self, stop: Arc<tokio::sync::Notify>) {
        loop {
            let busy = match self.round().await {
                Ok(full) => full,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook deliveries: the store failed; will retry");
                    false
                }
            };
            // A full round goes straight on, but still stops when told: a backlog waits in
            // the store, not in the shutdown.
            let pause = if busy { Duration::ZERO } else { IDLE };
            tokio::select! {
                biased;
                () = stop.notified() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Queues new events and sends what is due; `true` if there may be more due right away.
    async fn round(&self) -> keyward_store::StoreResult<bool> {
        let store = self.keyward.store();
        let now = self.keyward.now();
        let mut more = false;
        for hook in &self.keyward.settings().webhooks {
            let read = store
                .enqueue_deliveries(&hook.url, &hook.events, now, ENQUEUE_BATCH)
                .await?;
            more |= read == u64::from(ENQUEUE_BATCH);
        }
        if self.keyward.settings().smtp.is_some() {
            let patterns: Vec<String> = crate::email::EMAIL_EVENTS
                .iter()
                .map(|t| (*t).to_owned())
                .collect();
            let read = store
                .enqueue_deliveries(crate::email::EMAIL, &patterns, now, ENQUEUE_BATCH)
                .await?;
            more |= read == u64::from(ENQUEUE_BATCH);
        }
        let due = store
            .claim_deliveries(&self.urls, &self.instance, now, now + LEASE, IN_FLIGHT)
            .await?;
        more |= due.len() == IN_FLIGHT as usize;
        let mut sends = tokio::task::JoinSet::new();
        for delivery in due {
            if delivery.webhook == crate::email::EMAIL {
                let keyward = Arc::clone(&self.keyward);
                let instance = self.instance.clone();
                sends.spawn(async move { mail(&keyward, &instance, &delivery).await });
                continue;
            }
            let Some(hook) = self
                .keyward
                .settings()
                .webhooks
                .iter()
                .find(|w| w.url == delivery.webhook)
                .cloned()
            else {
                continue;
            };
            let client = self.client.clone();
            let keyward = Arc::clone(&self.keyward);
            let instance = self.instance.clone();
            sends.spawn(async move {
                let outcome = send(&client, &hook, &delivery, keyward.now()).await;
                let outcome = judge(outcome, &delivery, keyward.now(), &keyward);
                let label = match &outcome {
                    DeliveryOutcome::Delivered { .. } => "delivered",
                    DeliveryOutcome::Retry { .. } => "retry",
                    DeliveryOutcome::Failed { .. } => "failed",
                };
                metrics::counter!("keyward_webhook_deliveries_total", "outcome" => label)
                    .increment(1);
                if let DeliveryOutcome::Failed { error, .. } = &outcome {
                    tracing::warn!(webhook = %hook.url, event = %delivery.event.id, error = %error,
                        "webhook delivery failed for good: retries ran out");
                }
                keyward
                    .store()
                    .finish_delivery(
                        &hook.url,
                        delivery.event.seq,
                        &instance,
                        &outcome,
                        keyward.now(),
                    )
                    .await
            });
        }
        while let Some(done) = sends.join_next().await {
            match done {
                Ok(Ok(())) => {}
                // The lease runs out and the delivery is sent again: at least once.
                Ok(Err(e)) => tracing::warn!(error = %e, "could not record a webhook delivery"),
                Err(e) => tracing::warn!(error = %e, "a webhook delivery task failed"),
            }
        }
        Ok(more)
    }
}

/// Sends the email a delivery calls for and records the outcome (250 sent, 204 nothing to send).
async fn mail(
    keyward: &Keyward,
    instance: &str,
    delivery: &Delivery,
) -> keyward_store::StoreResult<()> {
    let Some(smtp) = &keyward.settings().smtp else {
        return Ok(());
    };
    let event = &delivery.event;
    let attempt = crate::email::deliver(keyward, smtp, &event.event_type, &event.data)
        .await
        .map(|sent| if sent { 250 } else { 204 });
    let outcome = judge(attempt, delivery, keyward.now(), keyward);
    if let DeliveryOutcome::Failed { error, .. } = &outcome {
        tracing::warn!(event = %event.id, error = %error, "email failed for good: retries ran out");
    }
    keyward
        .store()
        .finish_delivery(
            crate::email::EMAIL,
            event.seq,
            instance,
            &outcome,
            keyward.now(),
        )
        .await
}

/// An attempt's result: the status of an answer, or why there was none.
type Attempt = Result<u16, String>;

/// Sends one delivery, signed; reads the status only (the body is never read).
async fn send(
    client: &reqwest::Client,
    hook: &WebhookSettings,
    delivery: &Delivery,
    now: OffsetDateTime,
) -> Attempt {
    let body = serde_json::to_vec(&Event::new(delivery.event.clone()))
        .map_err(|e| format!("could not encode the event: {e}"))?;
    let id = delivery.event.id.as_str();
    let timestamp = now.unix_timestamp().to_string();
    let signature = sign(hook.secret.key(), id, &timestamp, &body)?;
    let answer = client
        .post(&hook.url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", &timestamp)
        .header("webhook-signature", format!("v1,{signature}"))
        .body(body)
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                "timed out".to_owned()
            } else if e.is_connect() {
                "could not connect".to_owned()
            } else {
                format!("request failed: {}", e.without_url())
            }
        })?;
    Ok(answer.status().as_u16())
}

/// The Standard Webhooks signature: base64 of HMAC-SHA256 under the key, over
/// `{id}.{timestamp}.{body}`.
fn sign(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> Result<String, String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|e| format!("webhook key: {e}"))?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

/// What an attempt means for its delivery: delivered on 2xx; otherwise tried again after a
/// backoff, or failed once it has been retried for `webhook_retry_for`.
fn judge(
    attempt: Attempt,
    delivery: &Delivery,
    now: OffsetDateTime,
    keyward: &Keyward,
) -> DeliveryOutcome {
    let (status, error) = match attempt {
        Ok(status) if (200..300).contains(&status) => {
            return DeliveryOutcome::Delivered { status };
        }
        Ok(status) => (Some(status), format!("answered HTTP {status}")),
        Err(error) => (None, error),
    };
    if now - delivery.created_at >= keyward.settings().webhook_retry_for {
        return DeliveryOutcome::Failed { status, error };
    }
    let backoff = 1_i64
        .checked_shl(delivery.attempts.min(20))
        .unwrap_or(MAX_BACKOFF_SECS)
        .min(MAX_BACKOFF_SECS);
    DeliveryOutcome::Retry {
        status,
        error,
        next_attempt_at: now + time::Duration::seconds(backoff),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_standard_webhooks_one() {
        // The example of the Standard Webhooks specification.
        let key = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        let signature = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(signature, "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
