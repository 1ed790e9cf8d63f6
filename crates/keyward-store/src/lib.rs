//! keyward's storage seam.
//!
//! What keyward asks of a database comes in narrow traits, one per aggregate: [`TokenStore`],
//! [`UserStore`], [`IdentityStore`], [`SessionStore`], [`AuditStore`], [`EventStore`],
//! [`WebhookStore`], [`NoticeStore`], [`ChangeFeed`] and
//! [`Maintenance`] (health, dump, restore). [`Store`] is their sum, implemented for every type that implements them all,
//! so the server holds one `Arc<dyn Store>` and a caller brings the trait it uses into scope.
//!
//! Each engine implements them in its own module with its own migrations ([`SqliteStore`],
//! [`PgStore`]), laid out the same way so the two read side by side: `tokens.rs`, `users.rs`,
//! `identities.rs`, `sessions.rs`, `audit.rs`, `events.rs`, `notices.rs`, `feed.rs` and `backup.rs` hold one trait's implementation each, in
//! the trait's order, and `mod.rs` opening, closing and committing. Both run their migrations
//! through one runner (`migrate`), each under its own lock. Nothing above this crate knows which
//! engine it talks to. Every engine passes the same contract suite (`tests/it`).
//!
//! Two rules every implementation keeps:
//! - a write is acknowledged only after it is durable (committed);
//! - every committed change that can alter a verification answer (revoke, regenerate, a user
//!   disabled) appends to the change log and then advances [`ChangeFeed::change_epoch`], so every
//!   process's verification cache learns of it before its next answer (SQLite: at once, through
//!   a shared memory map; PostgreSQL: at once in the writing process, within
//!   [`postgres::PROPAGATION_BOUND`] in the others).
//!
//! Errors are one [`StoreError`], whose `Unavailable` and `Corrupt` keep the engine's error as
//! their source and its code (PostgreSQL's SQLSTATE, SQLite's extended result code).
//!
//! **SQLite's two drivers.** The SQLite engine runs on sqlx like the PostgreSQL one, except for
//! two measured paths that go to SQLite directly through rusqlite: the cold-verification point
//! read (about 7 µs against sqlx's 115 µs of thread hops; BENCHMARKS.md) and the bulk restore
//! (seconds instead of minutes for 10^6 tokens). We keep both drivers and fence rusqlite inside
//! one module, `sqlite::direct`, with its one error mapper; moving everything to rusqlite would
//! mean an async layer of our own for every write for no measured gain. The reasons are written
//! out in that module's docs.

use async_trait::async_trait;
use keyward_core::{
    AuditEvent, Email, EventId, ExternalId, KeyId, Limits, Scope, TokenHash, TokenId, TokenName,
    TokenRecord, User, UserId, UserName,
};
use std::net::IpAddr;
use std::sync::Arc;
use time::OffsetDateTime;

mod decode;
mod epoch;
mod error;
mod migrate;
mod outbox;
pub mod postgres;
pub mod sqlite;

pub use error::{BoxError, StoreError, StoreResult};
pub use migrate::AppliedMigration;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// How many replaced secrets each token keeps, the newest, whether still in their grace period
/// or past it: enough to recognise an old secret presented again (reuse detection) and bounded,
/// so a token regenerated daily for years does not carry thousands of hashes. A regeneration
/// drops older ones whose grace is over (and tells every cache through the change log).
pub const RETIRED_SECRETS_KEPT: i64 = 5;

/// The notice recorded when a token reaches its expiry (the other notices are reminder
/// thresholds, such as `7d`).
pub const EXPIRED_NOTICE: &str = "expired";

/// A token hash as stored: the keyed hash and the id of the server key that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredHash {
    /// `HMAC-SHA256(server key, token)`.
    pub hash: TokenHash,
    /// Which server key.
    pub key_id: KeyId,
}

/// A new user to add.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// The user record.
    pub user: User,
    /// Argon2id PHC string, when the user signs in with a password.
    pub password_hash: Option<String>,
}

/// Which users to list, newest first. Deleted users are never listed.
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    /// Only the user with this external id.
    pub external_id: Option<ExternalId>,
    /// Only users older than this id (the previous page's last id).
    pub before: Option<UserId>,
    /// At most this many.
    pub limit: u32,
}

/// A change to a user, applied atomically; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserUpdate {
    /// A new name.
    pub name: Option<UserName>,
    /// A new email address (`Some(None)` removes it).
    pub email: Option<Option<Email>>,
    /// A new external id (`Some(None)` removes it).
    pub external_id: Option<Option<ExternalId>>,
    /// Make an admin, or not.
    pub is_admin: Option<bool>,
    /// Disable (ending their sessions), or enable again.
    pub disabled: Option<bool>,
}

impl UserUpdate {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.email.is_none()
            && self.external_id.is_none()
            && self.is_admin.is_none()
            && self.disabled.is_none()
    }
}

/// What a hash lookup finds: the token, its owner, and how long this particular secret works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// The token the secret belongs to.
    pub token: TokenRecord,
    /// The owner's name.
    pub owner_name: UserName,
    /// The owner's external id, if the platform gave one.
    pub owner_external_id: Option<ExternalId>,
    /// Whether the owner is an admin (administrative scopes work only then).
    pub owner_admin: bool,
    /// Whether the owner is disabled.
    pub owner_disabled: bool,
    /// When this secret stops working because the token was regenerated (`None` = current
    /// secret). Set to the grace period's end at regeneration, or to the regeneration time.
    pub secret_valid_until: Option<OffsetDateTime>,
    /// When this particular secret was issued (the token's creation, or the regeneration that
    /// made it).
    pub secret_created_at: OffsetDateTime,
    /// The token's limits version: bumped whenever its limits are set, so uses leased under
    /// older limits are dropped rather than given back.
    pub limits_version: i64,
}

/// Where a page of [`TokenStore::secrets_by_recent_use`] ended; the next page starts after it.
/// Made from the page's last secret with [`RecentUseCursor::after`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentUseCursor {
    /// The token's last use (unix seconds), `None` if it was never used.
    last_used: Option<i64>,
    /// The token's creation (unix seconds).
    created: i64,
    token: TokenId,
    hash: TokenHash,
}

impl RecentUseCursor {
    /// The position of `hash`, a secret of `lookup`'s token, as returned by
    /// [`TokenStore::secrets_by_recent_use`]: a page that ended there goes on after it.
    pub fn after(hash: &TokenHash, lookup: &Lookup) -> Self {
        Self {
            last_used: lookup
                .token
                .last_used_at
                .map(OffsetDateTime::unix_timestamp),
            created: lookup.token.created_at.unix_timestamp(),
            token: lookup.token.id.clone(),
            hash: *hash,
        }
    }
}

/// Where a page of [`TokenStore::secrets_in_store_order`] ended; the next page starts after it.
/// Opaque: only the store that made it reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOrderCursor {
    /// The last token position the page covered (SQLite: a `tokens` rowid).
    after: i64,
    /// The last position there was when the first page was read: tokens made since then are
    /// left to verification's misses.
    end: i64,
}

impl StoreOrderCursor {
    /// After position `after`, up to `end`.
    pub(crate) fn new(after: i64, end: i64) -> Self {
        Self { after, end }
    }

    /// The last position a page of `limit` after `after` covers: positions (after, after +
    /// limit], never past `end` (a page reads at least one position).
    pub(crate) fn page_last(after: i64, end: i64, limit: u32) -> i64 {
        after.saturating_add(i64::from(limit.max(1))).min(end)
    }

    /// The page of `limit` tokens after this cursor cut into at most `parts` consecutive pieces,
    /// each a cursor and a limit for a [`TokenStore::secrets_in_store_order`] of its own, so that
    /// the pieces can be read at once (on as many threads). Together they read what one page of
    /// `limit` after this cursor reads, each secret once; the last piece's
    /// [`StoreOrderPage::next`] is where that page's next starts, the others' are to be ignored.
    pub fn pieces(&self, limit: u32, parts: u32) -> Vec<(StoreOrderCursor, u32)> {
        let last = Self::page_last(self.after, self.end, limit);
        let span = u64::try_from(last.saturating_sub(self.after))
            .unwrap_or(0)
            .max(1);
        let parts = u64::from(parts.max(1)).min(span);
        let mut after = self.after;
        (0..parts)
            .map(|i| {
                // `span / parts`, the first `span % parts` pieces one more: never 0.
                let size = span / parts + u64::from(i < span % parts);
                let piece = (
                    Self::new(after, self.end),
                    u32::try_from(size).unwrap_or(u32::MAX),
                );
                after = after.saturating_add(i64::try_from(size).unwrap_or(i64::MAX));
                piece
            })
            .collect()
    }
}

/// A page of [`TokenStore::secrets_in_store_order`].
#[derive(Debug)]
pub struct StoreOrderPage {
    /// The working secrets of the live tokens the page covered, each with what
    /// [`TokenStore::lookup`] answers for it; may be empty where the page's tokens are all
    /// revoked, expired or deleted.
    pub secrets: Vec<(TokenHash, Lookup)>,
    /// Where the next page starts; `None` after the last.
    pub next: Option<StoreOrderCursor>,
}

/// The refusal [`TokenStore::insert_token`] gives when the owner is at `max_tokens_per_user`.
pub const MAX_TOKENS_REACHED: &str =
    "the user has reached this deployment's max_tokens_per_user; revoke a token first";

/// How much of a token's budget (its remaining uses, or what is left of its rate-limit window)
/// one lease takes: a `1/divisor` share of what is left, at least one and at most `max`. A small
/// budget is handed out one at a time, so instances never strand much of it; a large one in
/// batches, so verification rarely waits on the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseSize {
    /// The share of what is left one lease takes.
    pub divisor: u64,
    /// The most one lease takes.
    pub max: u64,
}

impl LeaseSize {
    /// What one lease takes when `left` is left.
    pub fn of(&self, left: u64) -> u64 {
        if left == 0 {
            0
        } else {
            (left / self.divisor.max(1))
                .clamp(1, self.max.max(1))
                .min(left)
        }
    }
}

/// A share of a token's uses or of its rate-limit window, handed to one instance to spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// What this instance may spend (0: nothing is left).
    pub granted: u64,
    /// What the store has left after this lease.
    pub left: u64,
    /// The start (unix seconds) of the refill period or window the lease belongs to.
    pub period_start: i64,
    /// When it lapses (the next refill, or the window's end); `None` = never.
    pub period_end: Option<i64>,
    /// The token's limits version the lease was taken under.
    pub version: i64,
}

/// A token's use count as stored, and the lease [`TokenStore::lease_uses`] takes from it:
/// the arithmetic both engines share. Returns the lease and the row's new `remaining` and
/// `refilled_at`.
pub(crate) fn lease_from_uses(
    remaining: u64,
    refill: Option<(u64, i64)>,
    refilled_at: Option<i64>,
    version: i64,
    now: i64,
    size: LeaseSize,
) -> (Lease, u64, Option<i64>) {
    let (mut remaining, mut period_start, period_end) = match (refill, refilled_at) {
        (Some((amount, every)), Some(start)) if every > 0 => {
            let periods = now.saturating_sub(start).max(0) / every;
            let start = start.saturating_add(periods.saturating_mul(every));
            let remaining = if periods > 0 { amount } else { remaining };
            (remaining, Some(start), Some(start.saturating_add(every)))
        }
        _ => (remaining, refilled_at, None),
    };
    let granted = size.of(remaining);
    remaining -= granted;
    let lease = Lease {
        granted,
        left: remaining,
        period_start: period_start.unwrap_or(0),
        period_end,
        version,
    };
    if refill.is_none() {
        period_start = refilled_at;
    }
    (lease, remaining, period_start)
}

/// A token's rate-limit window as stored, and the lease [`TokenStore::lease_rate`] takes from
/// it. Returns the lease and the row's new `rate_window` and `rate_spent`.
pub(crate) fn lease_from_window(
    requests: u64,
    per: i64,
    window: Option<i64>,
    spent: Option<u64>,
    version: i64,
    now: i64,
    size: LeaseSize,
) -> (Lease, i64, u64) {
    let per = per.max(1);
    let current = now - now.rem_euclid(per);
    let spent = if window == Some(current) {
        spent.unwrap_or(0).min(requests)
    } else {
        0
    };
    let granted = size.of(requests - spent);
    let spent = spent + granted;
    let lease = Lease {
        granted,
        left: requests - spent,
        period_start: current,
        period_end: Some(current + per),
        version,
    };
    (lease, current, spent)
}

/// One successful use, recorded in batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// Which token.
    pub token_id: TokenId,
    /// When it was used.
    pub at: OffsetDateTime,
    /// From where, if known.
    pub ip: Option<IpAddr>,
}

/// A page of a listing, newest first.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Only records older than this id (the previous page's last id).
    pub after: Option<TokenId>,
    /// At most this many.
    pub limit: u32,
}

/// Which audit events to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only events about this user.
    pub subject_user: Option<UserId>,
    /// Only events with a sequence number below this (the previous page's last `seq`).
    pub before_seq: Option<i64>,
    /// At most this many.
    pub limit: u32,
}

/// An audit event with its position in the trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAuditEvent {
    /// Position in the trail, increasing.
    pub seq: i64,
    /// The event.
    pub event: AuditEvent,
}

/// An event in the outbox, with its position in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Position in the outbox, increasing in commit order.
    pub seq: i64,
    /// The event's id.
    pub id: EventId,
    /// Its type (`token.created`, …; see `AuditKind::event_type`).
    pub event_type: String,
    /// When it happened.
    pub at: OffsetDateTime,
    /// The token it concerns.
    pub token_id: Option<TokenId>,
    /// The user it concerns.
    pub user_id: Option<UserId>,
    /// The event's `data`: a JSON object, kept as written.
    pub data: String,
}

/// Where a webhook delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Not delivered yet: due, leased by an instance sending it, or waiting for its next try.
    Pending,
    /// The webhook answered 2xx.
    Delivered,
    /// Retries ran out; never tried again.
    Failed,
}

impl DeliveryState {
    /// The state as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    /// Reads a stored state.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Delivered, Self::Failed]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// A delivery an instance has leased and now sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The webhook's URL.
    pub webhook: String,
    /// The event to send.
    pub event: StoredEvent,
    /// How many times it was tried before.
    pub attempts: u32,
    /// When the delivery was queued (retries stop a while after it).
    pub created_at: OffsetDateTime,
}

/// How a delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The webhook answered 2xx with this status.
    Delivered {
        /// The status.
        status: u16,
    },
    /// It failed; try again at `next_attempt_at`.
    Retry {
        /// The status, if the webhook answered.
        status: Option<u16>,
        /// What went wrong, in words (never a secret).
        error: String,
        /// When to try again.
        next_attempt_at: OffsetDateTime,
    },
    /// It failed and retries ran out.
    Failed {
        /// The status, if the webhook answered.
        status: Option<u16>,
        /// What went wrong.
        error: String,
    },
}

/// A webhook delivery as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    /// The webhook's URL.
    pub webhook: String,
    /// The event.
    pub event_id: EventId,
    /// The event's type.
    pub event_type: String,
    /// Where it stands.
    pub state: DeliveryState,
    /// Attempts so far.
    pub attempts: u32,
    /// When it was queued.
    pub created_at: OffsetDateTime,
    /// When it is tried next (while pending).
    pub next_attempt_at: OffsetDateTime,
    /// When it was last tried.
    pub last_attempt_at: Option<OffsetDateTime>,
    /// The last answer's status, if the webhook answered.
    pub last_status: Option<u16>,
    /// What went wrong last, if anything did.
    pub last_error: Option<String>,
    /// When it was delivered or given up.
    pub finished_at: Option<OffsetDateTime>,
}

/// Which deliveries to list, newest event first.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// Only deliveries in this state.
    pub state: Option<DeliveryState>,
    /// At most this many.
    pub limit: u32,
}

/// The hashes whose verification answer may have changed since a cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Hashes to evict from any cache; new hashes (a token created or regenerated) are among
    /// them, so a cache that tracks which hashes exist learns of them here.
    pub hashes: Vec<TokenHash>,
    /// The cursor to ask from next time.
    pub cursor: i64,
    /// `false` if the log no longer reaches back to the cursor: the caller must drop its whole
    /// cache.
    pub complete: bool,
}

/// A regeneration, applied atomically.
#[derive(Debug, Clone)]
pub struct Regeneration {
    /// The new secret's hash.
    pub new_hash: StoredHash,
    /// The new secret's hint.
    pub new_hint: String,
    /// The token's new expiry (`None` = never).
    pub new_expires_at: Option<OffsetDateTime>,
    /// Until when the previous secret(s) keep working (the regeneration time if no grace).
    pub old_valid_until: OffsetDateTime,
    /// When.
    pub at: OffsetDateTime,
}

/// A revocation.
#[derive(Debug, Clone)]
pub struct Revocation {
    /// When.
    pub at: OffsetDateTime,
    /// Who (a readable label).
    pub by: String,
    /// Why, if said.
    pub reason: Option<String>,
}

/// Which tokens a bulk revocation reaches: every token not yet revoked (expired ones included,
/// so the set does not change with the clock between a dry run and the real one) that meets
/// every condition given. The default, no condition, matches every such token: the service
/// refuses it unless asked for everything in so many words.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenFilter {
    /// Only this user's tokens.
    pub owner: Option<UserId>,
    /// Only tokens created before this time.
    pub created_before: Option<OffsetDateTime>,
    /// Only tokens created after this time.
    pub created_after: Option<OffsetDateTime>,
    /// Only tokens whose scopes grant this one (`droplet:read` matches a token holding
    /// `droplet:read`, `droplet:*`, `*:read` or `*:*`).
    pub scope: Option<Scope>,
    /// Only tokens not used since this time (never used, or last used before it).
    pub unused_since: Option<OffsetDateTime>,
}

impl TokenFilter {
    /// Whether it has no condition at all (it matches every token not yet revoked).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The scope condition as the store tests it, on the token's space-separated scopes with a
    /// space added on each side: every spelling of a scope that grants the filter's, space
    /// delimited, four of them (repeated when fewer differ), or none without the condition.
    pub(crate) fn scope_needles(&self) -> [Option<String>; 4] {
        let Some(scope) = &self.scope else {
            return [None, None, None, None];
        };
        let (resource, action) = (scope.resource(), scope.action());
        let wild = keyward_core::scope::WILDCARD;
        let needle = |r: &str, a: &str| Some(format!(" {r}:{a} "));
        [
            needle(resource, action),
            needle(resource, wild),
            needle(wild, action),
            needle(wild, wild),
        ]
    }
}

/// The events of a bulk revocation's `audit` as written for one token it revoked: with that
/// token's id and owner.
pub(crate) fn audit_for<'a>(
    audit: &'a [AuditEvent],
    token: &'a TokenRecord,
) -> impl Iterator<Item = AuditEvent> + 'a {
    audit.iter().map(|event| AuditEvent {
        token_id: Some(token.id.clone()),
        subject_user: Some(token.owner.clone()),
        ..event.clone()
    })
}

/// A web sign-in session as stored. The store keeps a keyed hash of the session id, never the
/// id itself, so a copy of the database cannot be used to take over a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// `HMAC-SHA256(server key, session id)`.
    pub id_hash: TokenHash,
    /// Who signed in.
    pub user: UserId,
    /// When they signed in.
    pub created_at: OffsetDateTime,
    /// When the session was last used (updated at most about once a minute).
    pub last_seen_at: OffsetDateTime,
    /// When it ends however active it is.
    pub expires_at: OffsetDateTime,
    /// How they signed in: the issuer of the OpenID provider, or `None` for a password.
    pub signed_in_with: Option<String>,
}

/// A person's account at an OpenID provider, linked to a keyward user. The `(issuer, subject)`
/// pair is the provider's name for the person for good; a name or email address there may change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRecord {
    /// The provider's issuer URL, exactly as its ID tokens say it.
    pub issuer: String,
    /// The provider's `sub` for the person.
    pub subject: String,
    /// The linked user.
    pub user: UserId,
    /// When the link was made.
    pub created_at: OffsetDateTime,
}

/// One stored secret hash with everything the store keeps about it, for [`Snapshot`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashRecord {
    /// The token it belongs to.
    pub token_id: TokenId,
    /// The hash and its key id.
    pub hash: StoredHash,
    /// When the secret was made.
    pub created_at: OffsetDateTime,
    /// When it stops working (`None` = the current secret).
    pub valid_until: Option<OffsetDateTime>,
}

/// Everything a deployment needs to move to another store, as plain data: users (with password
/// hashes), tokens, every secret hash (with its key id and end), the audit trail and the links to
/// OpenID providers' accounts. Not the
/// change log: it describes one database's caches, and a new database starts its own.
///
/// Its `Debug` shows only counts: it holds password hashes.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Users, by name.
    pub users: Vec<SnapshotUser>,
    /// Tokens, by id.
    pub tokens: Vec<TokenRecord>,
    /// Hashes, by token id, then hash.
    pub hashes: Vec<HashRecord>,
    /// The audit trail, oldest first, with its sequence numbers.
    pub audit: Vec<StoredAuditEvent>,
    /// Links to OpenID providers' accounts, by issuer, then subject.
    pub identities: Vec<IdentityRecord>,
}

/// A user in a [`Snapshot`], deleted ones included (their revoked tokens still name them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotUser {
    /// The user record.
    pub user: User,
    /// Argon2id PHC string, if the user has a password.
    pub password_hash: Option<String>,
    /// When the user was deleted, if they were.
    pub deleted_at: Option<OffsetDateTime>,
}

impl Snapshot {
    /// How many rows a restore writes: the unit of its [`Progress`].
    pub fn rows(&self) -> u64 {
        [
            self.users.len(),
            self.tokens.len(),
            self.hashes.len(),
            self.audit.len(),
            self.identities.len(),
        ]
        .into_iter()
        .map(|n| u64::try_from(n).unwrap_or(u64::MAX))
        .fold(0, u64::saturating_add)
    }
}

/// Watches a long operation (a restore, a backup): told its size and how far it got, and
/// asked between units whether to go on. An operation told to stop writes nothing that stays
/// (it rolls back, or removes its partial file) and returns [`StoreError::Interrupted`].
///
/// Called from the thread doing the work, once per unit: keep every method cheap.
pub trait Progress: Send + Sync {
    /// The operation's size, once known, in its units (rows for a restore, bytes for a backup).
    fn start(&self, total: u64);
    /// `done` more units are written.
    fn advance(&self, done: u64);
    /// Whether to stop now (the operator pressed Ctrl-C).
    fn stopped(&self) -> bool;
}

/// Before each unit of a watched operation: [`StoreError::Interrupted`] if told to stop.
pub(crate) fn go_on(progress: &dyn Progress) -> StoreResult<()> {
    if progress.stopped() {
        Err(StoreError::Interrupted)
    } else {
        Ok(())
    }
}

/// A [`Progress`] that shows nothing and never stops.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unwatched;

impl Progress for Unwatched {
    fn start(&self, _total: u64) {}
    fn advance(&self, _done: u64) {}
    fn stopped(&self) -> bool {
        false
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("users", &self.users.len())
            .field("tokens", &self.tokens.len())
            .field("hashes", &self.hashes.len())
            .field("audit", &self.audit.len())
            .field("identities", &self.identities.len())
            .finish()
    }
}

/// Tokens and their secrets. Methods that take an `owner` act only on that user's tokens and
/// answer [`StoreError::NotFound`] for anyone else's, so ownership is checked in the same
/// statement that reads or writes (no check-then-act gap). Methods that take an [`AuditEvent`]
/// write it in the same transaction as the change.
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Stores a new token and its first hash. With `max_per_user`, refuses
    /// ([`StoreError::InvalidState`]) when the owner already has that many tokens neither
    /// revoked nor expired at the token's creation, counted in the same transaction (on
    /// PostgreSQL under the owner's row lock, so concurrent creations on many instances cannot
    /// both slip under the cap).
    async fn insert_token(
        &self,
        token: &TokenRecord,
        hash: &StoredHash,
        audit: &AuditEvent,
        max_per_user: Option<u32>,
    ) -> StoreResult<()>;

    /// Sets a token's limits, its remaining uses to its `max_uses` (a fresh count), its refill
    /// period to start at `at`, and its rate-limit window afresh; bumps its limits version (so
    /// uses leased before are dropped, never given back) and logs its hashes, so every cache
    /// learns the new limits. Refuses a revoked token ([`StoreError::InvalidState`]).
    async fn set_limits(
        &self,
        id: &TokenId,
        owner: Option<&UserId>,
        limits: &Limits,
        at: OffsetDateTime,
        audit: &AuditEvent,
    ) -> StoreResult<TokenRecord>;

    /// Hands this instance a share of a token's remaining uses (see [`LeaseSize`]), applying a
    /// refill that is due at `now` (unix seconds) first. `None` when the token has no use
    /// count (its limits changed since the caller read them). Atomic: the uses leased by all
    /// instances together never exceed what the token has.
    async fn lease_uses(
        &self,
        id: &TokenId,
        now: i64,
        size: LeaseSize,
    ) -> StoreResult<Option<Lease>>;

    /// Gives back `uses` leased and not spent (at shutdown), if the token's limits version is
    /// still `version` and its refill period still began at `period_start`; otherwise they are
    /// dropped (a token's uses are never more than it was given).
    async fn return_uses(
        &self,
        id: &TokenId,
        version: i64,
        period_start: i64,
        uses: u64,
    ) -> StoreResult<()>;

    /// Hands this instance a share of what is left of a token's rate-limit window holding
    /// `now` (unix seconds). `None` when the token has no rate limit.
    async fn lease_rate(
        &self,
        id: &TokenId,
        now: i64,
        size: LeaseSize,
    ) -> StoreResult<Option<Lease>>;

    /// A token by id, limited to `owner`'s when given.
    async fn token(&self, id: &TokenId, owner: Option<&UserId>)
    -> StoreResult<Option<TokenRecord>>;

    /// Tokens newest first, limited to `owner`'s when given.
    async fn list_tokens(
        &self,
        owner: Option<&UserId>,
        page: &Page,
    ) -> StoreResult<Vec<TokenRecord>>;

    /// Renames a token; returns the updated record.
    async fn rename_token(
        &self,
        id: &TokenId,
        owner: Option<&UserId>,
        name: &TokenName,
        audit: &AuditEvent,
    ) -> StoreResult<TokenRecord>;

    /// Gives a token a new secret; previous secrets work until `old_valid_until`, and of those
    /// whose end has passed, only the newest [`RETIRED_SECRETS_KEPT`] replaced secrets are kept
    /// (the rest are dropped, through the change log). Refuses a
    /// revoked token, or one expired at `regen.at`, with [`StoreError::InvalidState`].
    async fn regenerate_token(
        &self,
        id: &TokenId,
        owner: Option<&UserId>,
        regen: &Regeneration,
        audit: &AuditEvent,
    ) -> StoreResult<TokenRecord>;

    /// Revokes a token (all its secrets). Revoking a revoked token changes nothing and returns
    /// it as it is, without a new audit event.
    async fn revoke_token(
        &self,
        id: &TokenId,
        owner: Option<&UserId>,
        revocation: &Revocation,
        audit: &AuditEvent,
    ) -> StoreResult<TokenRecord>;

    /// The ids of the tokens `filter` matches, in id order, after `after`, at most `limit`: a
    /// bulk revocation's list, page by page (its dry run shows exactly this).
    async fn matching_tokens(
        &self,
        filter: &TokenFilter,
        after: Option<&TokenId>,
        limit: u32,
    ) -> StoreResult<Vec<TokenId>>;

    /// Revokes, in one transaction, each token of `ids` that `filter` still matches (a token
    /// revoked or changed since it was listed is left as it is), writing for each the events of
    /// `audit` with the token's id and owner filled in. Returns the tokens revoked, in the order
    /// of `ids`. Their hashes go to the change log like any revocation.
    async fn revoke_tokens(
        &self,
        ids: &[TokenId],
        filter: &TokenFilter,
        revocation: &Revocation,
        audit: &[AuditEvent],
    ) -> StoreResult<Vec<TokenRecord>>;

    /// Tokens (limited to `owner`'s when given) that are not revoked and whose previous secret
    /// still works at `now`, after a regeneration with a grace period: each with the end of its
    /// latest-ending previous secret, by token id.
    async fn old_secrets_until(
        &self,
        owner: Option<&UserId>,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<(TokenId, OffsetDateTime)>>;

    /// Finds the token a hash belongs to (any state: the caller decides what it means).
    async fn lookup(&self, hash: &TokenHash) -> StoreResult<Option<Lookup>>;

    /// Every stored hash (of any token, in any state) above `after`, in byte order, at most
    /// `limit`: a cache pages through them to know which hashes exist at all.
    async fn stored_hashes(
        &self,
        after: Option<&TokenHash>,
        limit: u32,
    ) -> StoreResult<Vec<TokenHash>>;

    /// The working secrets of live tokens, most recently used token first, each with what
    /// [`Self::lookup`] answers for it: for a cache to warm itself with what is likely to be
    /// verified next. Every current secret, and every replaced one still in its grace period at
    /// `now`, of tokens neither revoked nor expired at `now`. Ordered by the token's last use,
    /// latest first, tokens never used last; then by the token's creation, newest first; then by
    /// token id and hash, descending. At most `limit`, after `after` (the previous page's last,
    /// [`RecentUseCursor::after`]). Read through an index, so every page costs about the same.
    async fn secrets_by_recent_use(
        &self,
        now: OffsetDateTime,
        after: Option<&RecentUseCursor>,
        limit: u32,
    ) -> StoreResult<Vec<(TokenHash, Lookup)>>;

    /// The working secrets of live tokens (as [`Self::secrets_by_recent_use`] reads them) in
    /// the order the store keeps its tokens, which it reads several times faster than by recent
    /// use (no index walk, each table page read once): for a cache that can hold every secret,
    /// where the order does not matter once the most recently used are in. Pages of at most
    /// `limit` tokens (every working secret of each), after `after` (the previous page's
    /// [`StoreOrderPage::next`]). `None` where the store holds more than `at_most` secrets (of
    /// any token, in any state: checked on the first page), so a cache that could not hold them
    /// all keeps the most recently used order; and from a store without a cheaper order
    /// (PostgreSQL, whose warm-up reads by recent use only).
    async fn secrets_in_store_order(
        &self,
        now: OffsetDateTime,
        after: Option<&StoreOrderCursor>,
        limit: u32,
        at_most: u64,
    ) -> StoreResult<Option<StoreOrderPage>>;

    /// Records a batch of uses; for each token keeps the latest use across all writers.
    async fn record_usage(&self, batch: &[Usage]) -> StoreResult<()>;

    /// Moves one secret to another server key: the stored hash `old` becomes `new` (same token,
    /// same validity), and both go to the change log so every cache forgets the old and learns
    /// the new. `false` when no secret has the hash `old` (another instance moved it first).
    async fn rekey_secret(
        &self,
        old: &TokenHash,
        new: &StoredHash,
        at: OffsetDateTime,
    ) -> StoreResult<bool>;

    /// Active tokens (neither revoked nor expired at `now`) with a working secret, counted per
    /// key id of that secret (a token with secrets under two keys counts under both).
    async fn active_tokens_by_key(&self, now: OffsetDateTime) -> StoreResult<Vec<(KeyId, u64)>>;
}

/// Users, their passwords and whether they may act. Deleted users are gone from every method
/// here ([`StoreError::NotFound`], or not listed). Methods that take an [`AuditEvent`] write it
/// in the same transaction as the change.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Adds a user; [`StoreError::Conflict`] if the name or the external id is taken.
    async fn add_user(&self, user: &NewUser, audit: &AuditEvent) -> StoreResult<()>;

    /// A user by name.
    async fn user_by_name(&self, name: &UserName) -> StoreResult<Option<User>>;

    /// A user by id.
    async fn user_by_id(&self, id: &UserId) -> StoreResult<Option<User>>;

    /// Users newest first, as `filter` says.
    async fn list_users(&self, filter: &UserFilter) -> StoreResult<Vec<User>>;

    /// A user's password hash (Argon2id PHC string), if they have one.
    async fn password_hash(&self, id: &UserId) -> StoreResult<Option<String>>;

    /// Changes a user, returning the updated record; [`StoreError::Conflict`] if the new name or
    /// external id is taken. Disabling ends all their sessions and keeps the first time if they
    /// were disabled already. Any change sends every hash of their tokens to the change log, so
    /// every cache drops what it knew of the owner at once: a disabled owner's tokens answer
    /// `owner_disabled` (not revoked: enabling makes them work again), a renamed owner or a new
    /// external id shows in the next answer, and a demoted admin's tokens lose their
    /// administrative rights. [`StoreError::NotFound`] for an unknown user.
    async fn update_user(
        &self,
        id: &UserId,
        update: &UserUpdate,
        at: OffsetDateTime,
        audit: &[AuditEvent],
    ) -> StoreResult<User>;

    /// Sets (or, with `None`, removes) a user's password hash; ends their sessions when it
    /// changes, so a password changed after a theft locks the thief out.
    async fn set_password(
        &self,
        id: &UserId,
        password_hash: Option<&str>,
        audit: &AuditEvent,
    ) -> StoreResult<()>;

    /// Deletes a user for good, in one transaction: every token of theirs not yet revoked is
    /// revoked as `revocation` says, their sessions end, every hash of their tokens goes to the
    /// change log, and their record keeps only its id (the name becomes the lowercased id, so
    /// it is free again; external id, email and password are dropped). Returns the user as they
    /// were. [`StoreError::NotFound`] for an unknown or already deleted user.
    async fn delete_user(
        &self,
        id: &UserId,
        revocation: &Revocation,
        audit: &AuditEvent,
    ) -> StoreResult<User>;
}

/// Links between keyward users and their accounts at an OpenID provider (single sign-on). Methods
/// that take an [`AuditEvent`] write it in the same transaction as the change.
#[async_trait]
pub trait IdentityStore: Send + Sync {
    /// The user linked to the provider's `(issuer, subject)`, if any.
    async fn user_by_identity(&self, issuer: &str, subject: &str) -> StoreResult<Option<User>>;

    /// Adds `new` and links `identity` to it (whose `user` must be `new`'s id), in one
    /// transaction with `audit`: [`StoreError::Conflict`], and nothing written, if the name is
    /// taken or the identity is linked already.
    async fn add_user_with_identity(
        &self,
        new: &NewUser,
        identity: &IdentityRecord,
        audit: &AuditEvent,
    ) -> StoreResult<()>;

    /// A user's links, by issuer, then subject.
    async fn identities(&self, user: &UserId) -> StoreResult<Vec<IdentityRecord>>;
}

/// Web sign-in sessions and the one-time nonces of their forms.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new web session and records the sign-in, in one transaction. Deletes sessions
    /// last seen before `stale_before` or past their end, so the table needs no janitor.
    async fn create_session(
        &self,
        session: &SessionRecord,
        stale_before: OffsetDateTime,
        audit: &AuditEvent,
    ) -> StoreResult<()>;

    /// A session by the hash of its id (expired or not: the caller decides).
    async fn session(&self, id_hash: &TokenHash) -> StoreResult<Option<SessionRecord>>;

    /// Notes that a session was used at `at`.
    async fn touch_session(&self, id_hash: &TokenHash, at: OffsetDateTime) -> StoreResult<()>;

    /// Ends a session (and its form nonces); with an audit event, records why in the same
    /// transaction. Ending a session that is gone is not an error.
    async fn delete_session(
        &self,
        id_hash: &TokenHash,
        audit: Option<&AuditEvent>,
    ) -> StoreResult<()>;

    /// Uses up a form's one-time `nonce` within a session: `true` the first time, `false` if it
    /// was used before (a replayed form), so an action runs once however often it is re-sent.
    async fn use_form_nonce(
        &self,
        session: &TokenHash,
        nonce: &str,
        at: OffsetDateTime,
    ) -> StoreResult<bool>;
}

/// The audit trail.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends an event to the audit trail on its own.
    async fn append_audit(&self, event: &AuditEvent) -> StoreResult<()>;

    /// Lists audit events newest first.
    async fn audit_events(&self, filter: &AuditFilter) -> StoreResult<Vec<StoredAuditEvent>>;
}

/// The outbox: every event, in the order the changes that made them committed. Events are
/// written by the writes that make them (in the same transaction as the change and its audit
/// entry, for the kinds `AuditKind::event_type` names), never on their own.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Events after the event `after` (from the first when `None`), oldest first, at most
    /// `limit`. [`StoreError::NotFound`] if no event has the id `after`. A reader that pages
    /// through never misses an event: one committed later never sorts before one already read.
    async fn events_after(
        &self,
        after: Option<&EventId>,
        limit: u32,
    ) -> StoreResult<Vec<StoredEvent>>;
}

/// Webhook deliveries of the outbox's events: queued per webhook, leased by one instance at a
/// time, kept with their outcome.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Queues a delivery to `webhook` (its URL) for each event past the webhook's cursor whose
    /// type matches one of `patterns`, reading at most `limit` events, and moves the cursor past
    /// them; returns how many events it read. A webhook seen for the first time starts after
    /// the newest event. Instances doing this at once for one webhook take turns.
    async fn enqueue_deliveries(
        &self,
        webhook: &str,
        patterns: &[String],
        at: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<u64>;

    /// Leases up to `limit` due deliveries to any of `webhooks` for `instance` until
    /// `lease_until`: pending, due at `now`, not leased by another instance (or its lease
    /// expired), and the oldest pending delivery of their token (or user) to their webhook, so
    /// each token's events go out in order and no two instances send one at once.
    async fn claim_deliveries(
        &self,
        webhooks: &[String],
        instance: &str,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<Delivery>>;

    /// Records how `instance`'s attempt at a pending delivery ended and ends its lease. A
    /// delivery no longer pending (finished), or leased by another instance since (this one's
    /// lease ran out and was taken over), is left as it is: only the lease holder's word counts,
    /// so one instance sends an event at a time.
    async fn finish_delivery(
        &self,
        webhook: &str,
        event_seq: i64,
        instance: &str,
        outcome: &DeliveryOutcome,
        at: OffsetDateTime,
    ) -> StoreResult<()>;

    /// Deliveries, newest event first, as `filter` says.
    async fn deliveries(&self, filter: &DeliveryFilter) -> StoreResult<Vec<DeliveryRecord>>;
}

/// The change log and the epoch that announces it: how verification caches learn that an answer
/// may have changed (see the crate docs for the rule every write keeps).
#[async_trait]
pub trait ChangeFeed: Send + Sync {
    /// A number that advances after every committed change in the change log, cheap enough to
    /// read on every verification (no I/O). Seen from any process using the same database: at
    /// once in the writing process, and within the engine's propagation bound in the others.
    /// While an engine cannot vouch for it (PostgreSQL's listener is down), it returns a new
    /// value on every call, so a cache reads the change log before every answer.
    fn change_epoch(&self) -> u64;

    /// The change log after `cursor` (`0` = from the start).
    async fn changes_since(&self, cursor: i64) -> StoreResult<Changes>;

    /// The change log's current end, to start a cache from.
    async fn change_cursor(&self) -> StoreResult<i64>;

    /// Keeps `seal` as the seal of the verification cache's snapshot (replacing the one before),
    /// so that only the snapshot written with it is ever loaded over this database. `false`
    /// when this store keeps no seal (a store shared by many instances: PostgreSQL), and so
    /// takes no snapshot.
    async fn seal_cache_snapshot(&self, seal: &[u8; 32]) -> StoreResult<bool>;

    /// The seal [`Self::seal_cache_snapshot`] kept last, if any.
    async fn cache_snapshot_seal(&self) -> StoreResult<Option<[u8; 32]>>;
}

/// Notices about a token's expiry (reminders before it, and the expiry itself), each recorded
/// once per token and expiry however many instances look: the record is inserted with its audit
/// event in one transaction, and a second insert of the same notice does nothing.
#[async_trait]
pub trait NoticeStore: Send + Sync {
    /// Tokens not revoked whose expiry is after `from` and at most `to`, for which `notice` was
    /// not recorded at that expiry: soonest expiry first, at most `limit` (read through an index
    /// on the expiry).
    async fn due_for_notice(
        &self,
        notice: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<TokenRecord>>;

    /// Records `notice` for `token` expiring at `expires_at`, with `audit` in the same
    /// transaction: `false`, and nothing written, when it was recorded already (by this or
    /// another instance), or the token was revoked or its expiry moved meanwhile.
    async fn record_notice(
        &self,
        token: &TokenId,
        notice: &str,
        expires_at: OffsetDateTime,
        at: OffsetDateTime,
        audit: &AuditEvent,
    ) -> StoreResult<bool>;
}

/// The store as a whole: health, and moving everything to another store.
#[async_trait]
pub trait Maintenance: Send + Sync {
    /// Checks that the database answers (for `/readyz`).
    async fn ping(&self) -> StoreResult<()>;

    /// Reads everything a [`Snapshot`] carries, in one transaction (a consistent view while
    /// others write).
    async fn dump(&self) -> StoreResult<Snapshot>;

    /// Active tokens (neither revoked nor expired at `now`) with a working secret hashed under
    /// a server key other than `key`, counted per key id: tokens a server holding only `key`
    /// cannot verify. Reads only the hashes under other keys (an index on the key id).
    async fn tokens_under_other_keys(
        &self,
        key: &KeyId,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<(KeyId, u64)>>;

    /// Revokes, in one transaction with `audit`, every active token with a working secret under
    /// a key none of `keep` is (the server's ring, current key first: a deliberate reset of the
    /// server key, those tokens can never verify again); returns how many. Their hashes go to
    /// the change log like any revocation. `keep` must not be empty.
    async fn revoke_under_other_keys(
        &self,
        keep: &[KeyId],
        revocation: &Revocation,
        audit: &AuditEvent,
    ) -> StoreResult<u64>;

    /// Drops every replaced secret (one whose end has passed at `now`) hashed under `key`, in
    /// one transaction, each dropped hash going to the change log; returns how many. For a key
    /// leaving the ring: what reuse detection could still recognise under it goes with it.
    /// Current secrets are kept, whatever their token's state.
    async fn drop_replaced_secrets_under(
        &self,
        key: &KeyId,
        now: OffsetDateTime,
    ) -> StoreResult<u64>;

    /// Writes `snapshot` into this store in one transaction, keeping every id, time and audit
    /// sequence number. Refuses, with [`StoreError::InvalidState`] and without writing, a store
    /// that already holds a user, a token or an audit event.
    async fn restore(&self, snapshot: &Snapshot) -> StoreResult<()> {
        self.restore_watched(snapshot, Arc::new(Unwatched)).await
    }

    /// [`Maintenance::restore`], telling `progress` of every row written (its size is
    /// [`Snapshot::rows`]) and asking it before each row whether to go on: when it says stop, the
    /// transaction is rolled back (the store stays empty) and the answer is
    /// [`StoreError::Interrupted`].
    async fn restore_watched(
        &self,
        snapshot: &Snapshot,
        progress: Arc<dyn Progress>,
    ) -> StoreResult<()>;
}

/// Everything keyward asks of a database: the sum of the per-aggregate traits, so a caller that
/// holds an `Arc<dyn Store>` can use any of them (with the trait in scope). Implemented for every
/// type that implements them all; an engine implements the parts, never this.
pub trait Store:
    TokenStore
    + UserStore
    + IdentityStore
    + SessionStore
    + AuditStore
    + EventStore
    + WebhookStore
    + NoticeStore
    + ChangeFeed
    + Maintenance
    + Send
    + Sync
    + 'static
{
}

impl<T> Store for T where
    T: TokenStore
        + UserStore
        + IdentityStore
        + SessionStore
        + AuditStore
        + EventStore
        + WebhookStore
        + NoticeStore
        + ChangeFeed
        + Maintenance
        + Send
        + Sync
        + 'static
{
}
