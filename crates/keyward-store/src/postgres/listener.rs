//! The change feed: how one instance learns, without polling on every verification, that another
//! instance changed a verification answer.
//!
//! Every write that appends to the change log also calls `pg_notify('keyward_changes', ...)` in
//! its transaction, so PostgreSQL delivers the notification to every listener when (and only if)
//! the change commits. The payload is `"<last change seq> <commit time in unix ms>"`.
//!
//! Each [`PgStore`](super::PgStore) keeps a `Feed` (the in-memory epoch that
//! [`ChangeFeed::change_epoch`](crate::ChangeFeed::change_epoch) reads) and one background task on its own
//! connection (`LISTEN keyward_changes`, `application_name` `keyward-listener-<pid>-<n>`) that
//! advances the epoch:
//! - on every notification for a change this process has not announced itself;
//! - on a heartbeat every [`HEARTBEAT_INTERVAL`], which reads the change log's end on the same
//!   connection and advances the epoch if it moved (a notification lost on a live connection is
//!   caught there), and which fails if it gets no answer within [`HEARTBEAT_TIMEOUT`];
//! - once after every (re)connection, when `LISTEN` is in place again.
//!
//! While the listener's connection is lost, `Feed::load` returns a new value on every call, so a
//! cache never trusts itself: every verification reads the change log from the database (correct
//! while the database answers, an error — and a 503 — while it does not).
//!
//! **The bound.** A change committed at time T reaches this instance's epoch (or puts it in the
//! "lost" state) by T + [`PROPAGATION_BOUND`]: the heartbeat that starts after T starts within
//! `max(HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT)` and answers within `HEARTBEAT_TIMEOUT`. The next
//! verification after that reads the change log first. A notification normally arrives within
//! milliseconds; the observed delay is the `keyward_revocation_propagation_seconds` histogram.

use keyward_core::{Clock as _, SystemClock};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::{MissedTickBehavior, timeout};

/// The notification channel. Changing it splits a deployment that runs two versions at once.
pub(super) const CHANNEL: &str = "keyward_changes";

/// How often the listener checks the change log's end on its own connection.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);

/// How long a heartbeat query may take before the connection counts as lost.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(500);

/// The longest time between a change's commit and the moment every instance's epoch has moved
/// past it (or the instance distrusts its cache because its listener is down).
pub const PROPAGATION_BOUND: Duration = Duration::from_millis(1000);

const _: () = assert!(
    PROPAGATION_BOUND.as_millis()
        >= if HEARTBEAT_INTERVAL.as_millis() > HEARTBEAT_TIMEOUT.as_millis() {
            HEARTBEAT_INTERVAL.as_millis()
        } else {
            HEARTBEAT_TIMEOUT.as_millis()
        } + HEARTBEAT_TIMEOUT.as_millis(),
    "the documented bound must cover a heartbeat interval plus one heartbeat query"
);

/// How long connecting the listener (and issuing `LISTEN`) may take per attempt.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The longest pause between reconnection attempts.
const MAX_RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// The change log's end: the highest sequence number ever appended (or pruned).
pub(super) const LOG_END_SQL: &str = "SELECT pruned_through, \
     greatest(pruned_through, coalesce((SELECT max(seq) FROM changes), 0)) AS log_end \
     FROM change_log WHERE id = 1";

/// One process's view of the change feed.
#[derive(Debug, Default)]
pub(super) struct Feed {
    epoch: AtomicU64,
    /// The listener's connection is down: the epoch must not be trusted.
    lost: AtomicBool,
    /// The highest change-log sequence number this process has announced (its epoch moved
    /// after that change committed), so its own notifications do not move the epoch again.
    announced: AtomicI64,
}

impl Feed {
    /// The epoch as [`ChangeFeed::change_epoch`](crate::ChangeFeed::change_epoch) reports it: one atomic
    /// load while connected; a fresh value on every call while the listener is down.
    pub(super) fn load(&self) -> u64 {
        if self.lost.load(Ordering::Acquire) {
            self.epoch.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            self.epoch.load(Ordering::Acquire)
        }
    }

    /// Whether the listener is connected.
    pub(super) fn is_connected(&self) -> bool {
        !self.lost.load(Ordering::Acquire)
    }

    /// A write by this process ending at change `seq` has committed (or may have).
    pub(super) fn committed(&self, seq: i64) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.announced.fetch_max(seq, Ordering::AcqRel);
    }

    /// The change log is known to reach `seq`. Changes are appended in commit order, so if this
    /// process already announced `seq` or later, a change up to `seq` committed before that
    /// announcement and every cache that caught up since has seen it.
    fn observed(&self, seq: i64) {
        if self.announced.fetch_max(seq, Ordering::AcqRel) < seq {
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Something changed, but the notification did not say what: announce it.
    fn unknown_change(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The listener's connection is gone.
    fn lost(&self) {
        self.lost.store(true, Ordering::Release);
    }

    /// `LISTEN` is in place again and the log reaches `end`. The epoch moves before the lost
    /// flag clears, so a cache that caught up while the listener was down (possibly before
    /// `LISTEN` was back, missing a change that no notification will repeat) sees a new value.
    fn resynced(&self, end: i64) {
        self.announced.fetch_max(end, Ordering::AcqRel);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.lost.store(false, Ordering::Release);
    }
}

/// Why the listener gave up on its connection.
#[derive(Debug, thiserror::Error)]
enum Lost {
    #[error("the connection closed")]
    Closed,
    #[error("heartbeat got no answer within {HEARTBEAT_TIMEOUT:?}")]
    HeartbeatTimedOut,
    #[error(transparent)]
    Failed(#[from] sqlx::Error),
}

/// Connects a listener, issues `LISTEN`, and reads the change log's end on that connection:
/// every change after that end is notified to it.
pub(super) async fn connect(options: &PgConnectOptions) -> Result<(PgListener, i64), sqlx::Error> {
    let attempt = async {
        // A pool of one, so PgListener keeps its connection; it never reconnects by itself
        // (eager_reconnect off, and a lost listener is dropped), because a silent reconnect
        // would hide the notifications missed in between.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options.clone())
            .await?;
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.eager_reconnect(false);
        listener.ignore_pool_close_event(true);
        listener.listen(CHANNEL).await?;
        let end = log_end(&mut listener).await?;
        Ok((listener, end))
    };
    match timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(connected) => connected,
        Err(_) => Err(sqlx::Error::PoolTimedOut),
    }
}

async fn log_end(listener: &mut PgListener) -> Result<i64, sqlx::Error> {
    let (_, end): (i64, i64) = sqlx::query_as(LOG_END_SQL).fetch_one(listener).await?;
    Ok(end)
}

/// Starts following the feed on a connected `listener` whose log end was `end`; reconnects for
/// as long as the task lives.
pub(super) fn spawn(
    feed: Arc<Feed>,
    options: PgConnectOptions,
    listener: PgListener,
    end: i64,
) -> tokio::task::JoinHandle<()> {
    feed.resynced(end);
    tokio::spawn(async move {
        let delay = metrics::histogram!("keyward_revocation_propagation_seconds");
        let mut listener = listener;
        loop {
            let lost = follow(&feed, &mut listener, &delay).await;
            feed.lost();
            tracing::warn!(
                error = %lost,
                "change feed connection lost; every verification reads the change log until it is back"
            );
            drop(listener);
            listener = reconnect(&feed, &options).await;
            tracing::info!("change feed reconnected");
        }
    })
}

/// Follows notifications and heartbeats until the connection fails.
async fn follow(feed: &Feed, listener: &mut PgListener, delay: &metrics::Histogram) -> Lost {
    let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            // `try_recv` is cancel-safe: it consumes a message only once it is whole.
            received = listener.try_recv() => match received {
                Ok(Some(notification)) => {
                    match parse_payload(notification.payload()) {
                        Some((seq, committed_ms)) => {
                            feed.observed(seq);
                            delay.record(seconds_since(committed_ms));
                        }
                        None => feed.unknown_change(),
                    }
                }
                Ok(None) => return Lost::Closed,
                Err(e) => return Lost::Failed(e),
            },
            _ = heartbeat.tick() => match timeout(HEARTBEAT_TIMEOUT, log_end(listener)).await {
                Ok(Ok(end)) => feed.observed(end),
                Ok(Err(e)) => return Lost::Failed(e),
                Err(_) => return Lost::HeartbeatTimedOut,
            },
        }
    }
}

/// Reconnects with growing pauses until it succeeds; the epoch stays untrusted meanwhile.
async fn reconnect(feed: &Feed, options: &PgConnectOptions) -> PgListener {
    let mut pause = Duration::from_millis(50);
    let mut attempts = 0u32;
    loop {
        match connect(options).await {
            Ok((listener, end)) => {
                feed.resynced(end);
                return listener;
            }
            Err(e) => {
                attempts += 1;
                if attempts == 1 {
                    tracing::warn!(error = %e, "change feed cannot reconnect yet; retrying");
                } else {
                    tracing::debug!(error = %e, attempts, "change feed reconnection failed");
                }
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_RECONNECT_PAUSE);
    }
}

/// Reads `"<seq> <unix ms>"`.
fn parse_payload(payload: &str) -> Option<(i64, i64)> {
    let (seq, ms) = payload.split_once(' ')?;
    Some((seq.parse().ok()?, ms.parse().ok()?))
}

/// Seconds from a unix-ms time stamp (the database's clock) to now (ours), never negative: the
/// two clocks may disagree by a little. A measurement of real delay between machines, so the
/// real clock, never an injected one.
fn seconds_since(unix_ms: i64) -> f64 {
    let now_ms = SystemClock.now().unix_timestamp_nanos() / 1_000_000;
    let elapsed_ms = now_ms.saturating_sub(i128::from(unix_ms)).max(0);
    // Precision is irrelevant for a delay in the millisecond-to-second range.
    #[expect(
        clippy::cast_precision_loss,
        reason = "a delay of milliseconds to seconds"
    )]
    let seconds = elapsed_ms as f64 / 1000.0;
    seconds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_carries_the_sequence_and_the_commit_time() {
        assert_eq!(
            parse_payload("42 1767225600123"),
            Some((42, 1_767_225_600_123))
        );
        assert_eq!(parse_payload("42"), None);
        assert_eq!(parse_payload("x 1"), None);
        assert_eq!(parse_payload(""), None);
    }

    #[test]
    fn a_delay_is_never_negative() {
        let future_ms = (SystemClock.now().unix_timestamp() + 60) * 1000;
        assert!(seconds_since(future_ms) == 0.0);
        let past_ms = (SystemClock.now().unix_timestamp() - 2) * 1000;
        assert!(seconds_since(past_ms) >= 1.0);
    }

    #[test]
    fn own_announcements_do_not_move_the_epoch_twice() {
        let feed = Feed::default();
        feed.committed(5);
        let after_commit = feed.load();
        feed.observed(5);
        feed.observed(3);
        assert_eq!(feed.load(), after_commit, "already announced");
        feed.observed(6);
        assert_eq!(feed.load(), after_commit + 1, "a change from elsewhere");
    }

    #[test]
    fn a_lost_feed_never_repeats_a_value_and_resyncing_moves_on() {
        let feed = Feed::default();
        let before = feed.load();
        feed.lost();
        assert!(!feed.is_connected());
        let seen: Vec<u64> = (0..5).map(|_| feed.load()).collect();
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
        assert!(seen[0] > before);
        feed.resynced(0);
        assert!(feed.is_connected());
        let steady = feed.load();
        assert!(
            steady > seen[4],
            "a cache synced while lost must catch up again"
        );
        assert_eq!(feed.load(), steady);
    }
}
