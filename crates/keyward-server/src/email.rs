//! Email to tokens' owners (`[smtp]`), another consumer of the outbox beside the webhooks: it
//! rides the same durable delivery queue (`WebhookStore`, under the key [`EMAIL`]), so a message
//! is sent at least once, retried with the same backoff, and never lost to a restart.
//!
//! Which events mail whom is `message`: one arm per event type. A message names the token
//! and what happened, never a secret.

use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use serde_json::Value;
use std::fmt;

use crate::Keyward;

/// The delivery queue's key for email (never a webhook's URL: it has no scheme).
pub const EMAIL: &str = "email:owners";

/// The event types that may be emailed.
pub const EMAIL_EVENTS: &[&str] = &["token.revoked", "token.expiring", "token.leaked"];

/// `[smtp]`: where mail goes out, and from whom.
#[derive(Clone)]
pub struct SmtpSettings {
    /// `smtp://host:port` (plain, or `?tls=required` for STARTTLS), `smtps://host:port` (TLS),
    /// with `user:password@` for authentication. Holds a password: never shown.
    pub url: String,
    /// The sender, e.g. `keyward <keyward@example.com>`.
    pub from: String,
}

impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("url", &"[REDACTED]")
            .field("from", &self.from)
            .finish()
    }
}

impl SmtpSettings {
    /// Checks the URL and the sender.
    pub fn check(&self) -> Result<(), String> {
        self.from
            .parse::<Mailbox>()
            .map_err(|e| format!("smtp.from {:?}: {e}", self.from))?;
        self.transport().map(|_| ())
    }

    fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
        Ok(AsyncSmtpTransport::<Tokio1Executor>::from_url(&self.url)
            // The error may repeat the URL, which may hold a password: not shown.
            .map_err(|_| "smtp.url is not an smtp:// or smtps:// URL".to_owned())?
            .timeout(Some(std::time::Duration::from_secs(10)))
            .build())
    }
}

/// The subject and text to send the owner for an event, if it is one they are told of.
fn message(event_type: &str, data: &Value) -> Option<(String, String)> {
    let field = |key: &str| data.get(key).and_then(Value::as_str).unwrap_or_default();
    let actor = data.get("actor").cloned().unwrap_or(Value::Null);
    let by = actor
        .get("label")
        .and_then(Value::as_str)
        .unwrap_or("someone");
    match event_type {
        // Revoked by someone else (the owner knows what they did themselves); a leak's
        // revocation is told by its own `token.leaked` message.
        "token.revoked"
            if actor.get("user_id").and_then(Value::as_str) != Some(field("user_id"))
                && field("detail") != crate::service::leaks::LEAKED_REASON =>
        {
            Some((
                format!("Your token {} was revoked", field("token_id")),
                format!(
                    "Your keyward token {} was revoked by {by}{}.\n\nIt no longer works. If you \
                     still need one, create a new token.\n",
                    field("token_id"),
                    match field("detail") {
                        "" => String::new(),
                        why => format!(" (reason: {why})"),
                    }
                ),
            ))
        }
        "token.expiring" => Some((
            format!("Your token {} expires soon", field("token_id")),
            format!(
                "Your keyward token {} expires within {}.\n\nIf you still need it, create a \
                 new token (or regenerate this one) before then.\n",
                field("token_id"),
                match field("detail") {
                    "" => "a few days",
                    within => within,
                }
            ),
        )),
        "token.leaked" => Some((
            format!("Your token {} leaked and was revoked", field("token_id")),
            format!(
                "Your keyward token {} was found where it should not be{}, and keyward revoked \
                 it at once.\n\nIt no longer works. Create a new token, keep it out of code and \
                 logs, and look at what used the old one.\n",
                field("token_id"),
                match field("detail") {
                    "" => String::new(),
                    place => format!(" ({place})"),
                }
            ),
        )),
        _ => None,
    }
}

/// Sends the message an event calls for, if any: `Ok(true)` sent, `Ok(false)` nothing to send
/// (not an event the owner is told of, or no address), `Err` why sending failed.
pub(crate) async fn deliver(
    keyward: &Keyward,
    smtp: &SmtpSettings,
    event_type: &str,
    data: &str,
) -> Result<bool, String> {
    let data: Value = serde_json::from_str(data).unwrap_or(Value::Null);
    let Some((subject, text)) = message(event_type, &data) else {
        return Ok(false);
    };
    let Some(owner) = data
        .get("user_id")
        .and_then(Value::as_str)
        .and_then(|id| keyward_core::UserId::parse(id).ok())
    else {
        return Ok(false);
    };
    let user = keyward
        .store()
        .user_by_id(&owner)
        .await
        .map_err(|e| format!("could not read the owner: {e}"))?;
    let Some(address) = user.and_then(|u| u.email) else {
        return Ok(false);
    };
    let to: Mailbox = address
        .as_str()
        .parse()
        .map_err(|e| format!("the owner's address: {e}"))?;
    let from: Mailbox = smtp.from.parse().map_err(|e| format!("smtp.from: {e}"))?;
    let mail = Message::builder()
        .from(from)
        .to(to)
        .subject(subject)
        .body(text)
        .map_err(|e| format!("could not build the message: {e}"))?;
    smtp.transport()?
        .send(mail)
        .await
        .map_err(|e| format!("SMTP: {e}"))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_revocation_by_someone_else_is_mailed() {
        let by_admin = serde_json::json!({"token_id": "tok_1", "user_id": "usr_a",
            "actor": {"label": "root", "user_id": "usr_r"}, "detail": "left the team"});
        let (subject, text) = message("token.revoked", &by_admin).unwrap();
        assert!(subject.contains("tok_1") && text.contains("root") && text.contains("left"));
        let by_owner = serde_json::json!({"token_id": "tok_1", "user_id": "usr_a",
            "actor": {"label": "alice", "user_id": "usr_a"}});
        assert!(message("token.revoked", &by_owner).is_none());
        assert!(message("token.created", &by_admin).is_none());
    }
}
