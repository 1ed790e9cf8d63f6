//! Telling the platform that a token is about to expire, or has: the reminders of
//! `notify_before` (`token.expiring`, its detail naming the threshold, e.g. `7d`) and the expiry
//! itself (`token.expired`).
//!
//! Every instance scans every few seconds ([`Settings::notify_interval`]); a notice is recorded
//! in the store with its audit event in one transaction, keyed by token, notice and expiry, and a
//! second record of the same notice does nothing, so each fires once however many instances scan
//! and however often they restart. A token gets the reminder of the nearest threshold it is
//! within ([`keyward_core::NotifyBefore`]): created with twelve hours left, it gets `1d` and never
//! `7d`. Revoked tokens get neither; a regeneration that moves the expiry starts afresh.
//!
//! [`Settings::notify_interval`]: super::Settings::notify_interval

use keyward_core::{Actor, AuditEvent, AuditKind};
use keyward_store::EXPIRED_NOTICE;
use time::{Duration, OffsetDateTime};

use super::{Keyward, ServiceResult};

/// Tokens one scan reads per page.
const PAGE: u32 = 200;
/// Pages one scan reads per notice at most; the next scan goes on where this one stopped.
const PAGES: u32 = 10;
/// How far back a scan looks for expiries that passed unnoticed (every instance was down). An
/// expiry older than this when keyward first looks gets no `token.expired`: after an upgrade,
/// tokens that expired long ago are not announced all at once.
pub const EXPIRED_LOOKBACK: Duration = Duration::days(7);
/// The actor of notices: keyward itself.
pub const NOTICE_ACTOR: &str = "keyward (expiry)";

impl Keyward {
    /// Records every expiry reminder and expiry notice due now that no instance recorded yet
    /// (see the module docs); returns how many this call recorded. `keyward serve` calls it
    /// every [`super::Settings::notify_interval`].
    pub async fn send_expiry_notices(&self) -> ServiceResult<u64> {
        let now = self.now();
        let mut sent = 0;
        for window in self.settings.notify_before.windows() {
            sent += self
                .send_notices(
                    &window.label,
                    AuditKind::TokenExpiring,
                    (now + window.after, now + window.before),
                    now,
                )
                .await?;
        }
        sent += self
            .send_notices(
                EXPIRED_NOTICE,
                AuditKind::TokenExpired,
                (now - EXPIRED_LOOKBACK, now),
                now,
            )
            .await?;
        Ok(sent)
    }

    /// Records `notice` for each token expiring in `(from, to]` that lacks it.
    async fn send_notices(
        &self,
        notice: &str,
        kind: AuditKind,
        (from, to): (OffsetDateTime, OffsetDateTime),
        now: OffsetDateTime,
    ) -> ServiceResult<u64> {
        let mut sent = 0;
        for _ in 0..PAGES {
            let due = self.store.due_for_notice(notice, from, to, PAGE).await?;
            for token in &due {
                let Some(expires_at) = token.expires_at else {
                    continue;
                };
                let event = AuditEvent {
                    at: now,
                    kind,
                    actor: Actor {
                        user: None,
                        token: None,
                        label: NOTICE_ACTOR.to_owned(),
                    },
                    subject_user: Some(token.owner.clone()),
                    token_id: Some(token.id.clone()),
                    ip: None,
                    detail: (kind == AuditKind::TokenExpiring).then(|| notice.to_owned()),
                };
                // `false`: another instance was first, or the token changed meanwhile.
                if self
                    .store
                    .record_notice(&token.id, notice, expires_at, now, &event)
                    .await?
                {
                    sent += 1;
                }
            }
            // A full page may have more behind it; each token read is recorded by now (here or
            // elsewhere), so the next page starts past it.
            if due.len() < PAGE as usize {
                break;
            }
        }
        Ok(sent)
    }
}
