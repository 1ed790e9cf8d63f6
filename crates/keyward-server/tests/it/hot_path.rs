//! The verification hot path against the store beneath it, without HTTP: a cold read racing a
//! revocation, cold and warm answers agreeing, and a use noted at most once a second.
//!
//! The service runs over [`RacingStore`], a SQLite store that counts lookups (so a test can tell
//! a cache hit from a miss) and can run a revocation inside a lookup, after the read and before
//! the answer: the widest window a cold verification leaves open. No server runs, so no
//! background flusher writes uses behind the tests' backs.

use async_trait::async_trait;
use keyward_core::{
    AuditEvent, EventId, ExpiryRequest, InactiveReason, KeyId, ManualClock, Prefix, Scopes,
    ServerKey, TokenHash, TokenHasher, TokenId, TokenName, TokenRecord, TokenSecret, User, UserId,
    UserName,
};
use keyward_server::service::{Issued, UserRequest, WarmUp};
use keyward_server::{Caller, Keyward, Settings, Verdict, VerifiedToken};
use keyward_store::{
    AuditFilter, AuditStore, ChangeFeed, Changes, Delivery, DeliveryFilter, DeliveryOutcome,
    DeliveryRecord, EventStore, IdentityRecord, IdentityStore, Lookup, Maintenance, NewUser,
    NoticeStore, Page, Progress, RecentUseCursor, Regeneration, Revocation, SessionRecord,
    SessionStore, Snapshot, SqliteStore, Store, StoreOrderCursor, StoreOrderPage, StoreResult,
    StoredAuditEvent, StoredEvent, StoredHash, TokenFilter, TokenStore, Usage, UserFilter,
    UserStore, UserUpdate, WebhookStore,
};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tempfile::TempDir;
use time::{Duration, OffsetDateTime};

use crate::helpers::START;

/// Work to run inside a lookup, between the read and the answer.
type During = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A [`SqliteStore`] that counts lookups and, when armed for a hash, runs a future after reading
/// that hash and before returning what it read. Everything else is passed through.
struct RacingStore {
    inner: SqliteStore,
    lookups: AtomicUsize,
    armed: Mutex<Option<(TokenHash, During)>>,
    /// Run inside the next page read of the cache warm-up, after the read.
    armed_page: Mutex<Option<During>>,
    /// Pages the warm-up was given in store order.
    store_order_pages: AtomicUsize,
    /// Change epochs to report instead of the store's: the queued ones one per call, then the
    /// held one while there is one (a change committed and not yet announced, as between a
    /// commit and its epoch's move, or a PostgreSQL notification still on its way).
    epochs: Mutex<(std::collections::VecDeque<u64>, Option<u64>)>,
}

impl RacingStore {
    fn new(inner: SqliteStore) -> Self {
        Self {
            inner,
            lookups: AtomicUsize::new(0),
            armed: Mutex::new(None),
            armed_page: Mutex::new(None),
            store_order_pages: AtomicUsize::new(0),
            epochs: Mutex::new((std::collections::VecDeque::new(), None)),
        }
    }

    /// Reports `queued` as the change epoch, one per call, then `held` until released (`None`:
    /// the store's own).
    fn script_epochs(&self, queued: &[u64], held: Option<u64>) {
        *self.epochs.lock().unwrap() = (queued.iter().copied().collect(), held);
    }

    /// Runs `during` inside the next lookup of `hash`, once.
    fn arm(&self, hash: TokenHash, during: impl Future<Output = ()> + Send + 'static) {
        *self.armed.lock().unwrap() = Some((hash, Box::pin(during)));
    }

    /// Runs `during` inside the cache warm-up's next page read, after the read, once.
    fn arm_page(&self, during: impl Future<Output = ()> + Send + 'static) {
        *self.armed_page.lock().unwrap() = Some(Box::pin(during));
    }

    /// Whether the armed future has been taken (and so run).
    fn fired(&self) -> bool {
        self.armed.lock().unwrap().is_none()
    }

    /// Lookups so far.
    fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }

    /// Pages given in store order so far.
    fn store_order_pages(&self) -> usize {
        self.store_order_pages.load(Ordering::SeqCst)
    }
}

/// Implements a store trait for [`RacingStore`] by passing each listed method to `inner`,
/// followed by any methods written out (the ones it intercepts).
macro_rules! pass_through {
    ($trait:ident { $(fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)* } $($own:tt)*) => {
        #[async_trait]
        impl $trait for RacingStore {
            $(async fn $name(&self, $($arg: $ty),*) -> StoreResult<$ret> {
                self.inner.$name($($arg),*).await
            })*
            $($own)*
        }
    };
}

pass_through!(TokenStore {
    fn insert_token(token: &TokenRecord, hash: &StoredHash, audit: &AuditEvent, max_per_user: Option<u32>) -> ();
    fn set_limits(id: &TokenId, owner: Option<&UserId>, limits: &keyward_core::Limits, at: time::OffsetDateTime, audit: &AuditEvent) -> TokenRecord;
    fn lease_uses(id: &TokenId, now: i64, size: keyward_store::LeaseSize) -> Option<keyward_store::Lease>;
    fn return_uses(id: &TokenId, version: i64, period_start: i64, uses: u64) -> ();
    fn lease_rate(id: &TokenId, now: i64, size: keyward_store::LeaseSize) -> Option<keyward_store::Lease>;
    fn token(id: &TokenId, owner: Option<&UserId>) -> Option<TokenRecord>;
    fn list_tokens(owner: Option<&UserId>, page: &Page) -> Vec<TokenRecord>;
    fn rename_token(id: &TokenId, owner: Option<&UserId>, name: &TokenName, audit: &AuditEvent) -> TokenRecord;
    fn regenerate_token(id: &TokenId, owner: Option<&UserId>, regen: &Regeneration, audit: &AuditEvent) -> TokenRecord;
    fn revoke_token(id: &TokenId, owner: Option<&UserId>, revocation: &Revocation, audit: &AuditEvent) -> TokenRecord;
    fn matching_tokens(filter: &TokenFilter, after: Option<&TokenId>, limit: u32) -> Vec<TokenId>;
    fn revoke_tokens(ids: &[TokenId], filter: &TokenFilter, revocation: &Revocation, audit: &[AuditEvent]) -> Vec<TokenRecord>;
    fn stored_hashes(after: Option<&TokenHash>, limit: u32) -> Vec<TokenHash>;
    fn record_usage(batch: &[Usage]) -> ();
    fn rekey_secret(old: &TokenHash, new: &StoredHash, at: OffsetDateTime) -> bool;
    fn active_tokens_by_key(now: OffsetDateTime) -> Vec<(KeyId, u64)>;
    fn old_secrets_until(owner: Option<&UserId>, now: OffsetDateTime) -> Vec<(TokenId, OffsetDateTime)>;
}
    async fn secrets_by_recent_use(
        &self,
        now: OffsetDateTime,
        after: Option<&RecentUseCursor>,
        limit: u32,
    ) -> StoreResult<Vec<(TokenHash, Lookup)>> {
        let page = self.inner.secrets_by_recent_use(now, after, limit).await?;
        let during = self.armed_page.lock().unwrap().take();
        if let Some(during) = during {
            during.await;
        }
        Ok(page)
    }
    async fn secrets_in_store_order(
        &self,
        now: OffsetDateTime,
        after: Option<&StoreOrderCursor>,
        limit: u32,
        at_most: u64,
    ) -> StoreResult<Option<StoreOrderPage>> {
        let page = self
            .inner
            .secrets_in_store_order(now, after, limit, at_most)
            .await?;
        if page.is_some() {
            self.store_order_pages.fetch_add(1, Ordering::SeqCst);
        }
        let during = self.armed_page.lock().unwrap().take();
        if let Some(during) = during {
            during.await;
        }
        Ok(page)
    }
    async fn lookup(&self, hash: &TokenHash) -> StoreResult<Option<Lookup>> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let found = self.inner.lookup(hash).await?;
        let during = {
            let mut armed = self.armed.lock().unwrap();
            match armed.take() {
                Some((h, during)) if h == *hash => Some(during),
                other => {
                    *armed = other;
                    None
                }
            }
        };
        if let Some(during) = during {
            during.await;
        }
        Ok(found)
    }
);

pass_through!(UserStore {
    fn add_user(user: &NewUser, audit: &AuditEvent) -> ();
    fn user_by_name(name: &UserName) -> Option<User>;
    fn user_by_id(id: &UserId) -> Option<User>;
    fn list_users(filter: &UserFilter) -> Vec<User>;
    fn password_hash(id: &UserId) -> Option<String>;
    fn update_user(id: &UserId, update: &UserUpdate, at: OffsetDateTime, audit: &[AuditEvent]) -> User;
    fn set_password(id: &UserId, password_hash: Option<&str>, audit: &AuditEvent) -> ();
    fn delete_user(id: &UserId, revocation: &Revocation, audit: &AuditEvent) -> User;
});

pass_through!(IdentityStore {
    fn user_by_identity(issuer: &str, subject: &str) -> Option<User>;
    fn add_user_with_identity(user: &NewUser, identity: &IdentityRecord, audit: &AuditEvent) -> ();
    fn identities(user: &UserId) -> Vec<IdentityRecord>;
});

pass_through!(SessionStore {
    fn create_session(session: &SessionRecord, stale_before: OffsetDateTime, audit: &AuditEvent) -> ();
    fn session(id_hash: &TokenHash) -> Option<SessionRecord>;
    fn touch_session(id_hash: &TokenHash, at: OffsetDateTime) -> ();
    fn delete_session(id_hash: &TokenHash, audit: Option<&AuditEvent>) -> ();
    fn use_form_nonce(session: &TokenHash, nonce: &str, at: OffsetDateTime) -> bool;
});

pass_through!(AuditStore {
    fn append_audit(event: &AuditEvent) -> ();
    fn audit_events(filter: &AuditFilter) -> Vec<StoredAuditEvent>;
});

pass_through!(EventStore {
    fn events_after(after: Option<&EventId>, limit: u32) -> Vec<StoredEvent>;
});

pass_through!(WebhookStore {
    fn enqueue_deliveries(webhook: &str, patterns: &[String], at: OffsetDateTime, limit: u32) -> u64;
    fn claim_deliveries(webhooks: &[String], instance: &str, now: OffsetDateTime, lease_until: OffsetDateTime, limit: u32) -> Vec<Delivery>;
    fn finish_delivery(webhook: &str, event_seq: i64, instance: &str, outcome: &DeliveryOutcome, at: OffsetDateTime) -> ();
    fn deliveries(filter: &DeliveryFilter) -> Vec<DeliveryRecord>;
});

pass_through!(NoticeStore {
    fn due_for_notice(notice: &str, from: OffsetDateTime, to: OffsetDateTime, limit: u32) -> Vec<TokenRecord>;
    fn record_notice(token: &TokenId, notice: &str, expires_at: OffsetDateTime, at: OffsetDateTime, audit: &AuditEvent) -> bool;
});

pass_through!(ChangeFeed {
    fn changes_since(cursor: i64) -> Changes;
    fn change_cursor() -> i64;
    fn seal_cache_snapshot(seal: &[u8; 32]) -> bool;
    fn cache_snapshot_seal() -> Option<[u8; 32]>;
}
    fn change_epoch(&self) -> u64 {
        let mut epochs = self.epochs.lock().unwrap();
        let (queued, held) = &mut *epochs;
        queued
            .pop_front()
            .or(*held)
            .unwrap_or_else(|| self.inner.change_epoch())
    }
);

pass_through!(Maintenance {
    fn ping() -> ();
    fn dump() -> Snapshot;
    fn restore_watched(snapshot: &Snapshot, progress: Arc<dyn Progress>) -> ();
    fn tokens_under_other_keys(key: &KeyId, now: OffsetDateTime) -> Vec<(KeyId, u64)>;
    fn revoke_under_other_keys(keep: &[KeyId], revocation: &Revocation, audit: &AuditEvent) -> u64;
    fn drop_replaced_secrets_under(key: &KeyId, now: OffsetDateTime) -> u64;
});

/// The service over a [`RacingStore`] on a fresh SQLite file, with a manual clock.
struct Harness {
    keyward: Arc<Keyward>,
    store: Arc<RacingStore>,
    clock: Arc<ManualClock>,
    hasher: TokenHasher,
    /// The store's directory, shared by the harnesses of a [`restart`].
    dir: Arc<TempDir>,
}

/// What a verification answered, comparable: who and what an active token stands for, or why
/// the token does not work.
type Answer = Result<(TokenId, UserId, UserName, Scopes, Option<OffsetDateTime>), InactiveReason>;

fn answer(verdict: Verdict) -> Answer {
    match verdict {
        Verdict::Active(t) => Ok(describe(&t)),
        Verdict::Inactive(reason) => Err(reason),
    }
}

fn describe(t: &VerifiedToken) -> (TokenId, UserId, UserName, Scopes, Option<OffsetDateTime>) {
    (
        t.token_id(),
        t.owner_id().clone(),
        t.owner_name().clone(),
        t.scopes().clone(),
        t.expires_at(),
    )
}

/// The answer a verification of `issued` (owned by `owner`) should give when it works.
fn active(issued: &Issued, owner: &User) -> Answer {
    Ok((
        issued.token.id.clone(),
        owner.id.clone(),
        owner.name.clone(),
        issued.token.scopes.clone(),
        issued.token.expires_at,
    ))
}

fn scopes(s: &[&str]) -> Scopes {
    Scopes::parse(s).unwrap()
}

fn operator() -> Caller {
    Caller::operator("test")
}

async fn harness() -> Harness {
    harness_with(Settings::default()).await
}

async fn harness_with(settings: Settings) -> Harness {
    // Process-wide and idempotent; must precede `Keyward::new`, which registers the counters.
    keyward_server::telemetry::prometheus();
    open_harness(
        Arc::new(tempfile::tempdir().unwrap()),
        Arc::new(ManualClock::new(START)),
        TokenHasher::new(&ServerKey::generate().unwrap()),
        settings,
    )
    .await
}

/// A service over a new store handle on `dir`'s database.
async fn open_harness(
    dir: Arc<TempDir>,
    clock: Arc<ManualClock>,
    hasher: TokenHasher,
    settings: Settings,
) -> Harness {
    let inner = SqliteStore::open(&dir.path().join("keyward.db"))
        .await
        .unwrap();
    let store = Arc::new(RacingStore::new(inner));
    let keyward = Keyward::new(
        Arc::clone(&store) as Arc<dyn Store>,
        clock.clone(),
        hasher.clone(),
        settings,
    )
    .await
    .unwrap();
    Harness {
        keyward: Arc::new(keyward),
        store,
        clock,
        hasher,
        dir,
    }
}

impl Harness {
    async fn user(&self, name: &str) -> User {
        self.keyward
            .create_user(
                &operator(),
                UserRequest::person(UserName::parse(name).unwrap()),
            )
            .await
            .unwrap()
    }

    async fn token(&self, owner: &User, with: &[&str], expires: Option<ExpiryRequest>) -> Issued {
        self.keyward
            .create_token(
                &operator(),
                Some(&owner.id),
                TokenName::parse("hot path").unwrap(),
                scopes(with),
                expires,
                keyward_core::Limits::default(),
            )
            .await
            .unwrap()
    }

    async fn verify(&self, secret: &str, wanted: &[&str]) -> Answer {
        self.verify_from(secret, wanted, None).await
    }

    async fn verify_from(&self, secret: &str, wanted: &[&str], ip: Option<IpAddr>) -> Answer {
        answer(
            self.keyward
                .verify(secret, &scopes(wanted), ip)
                .await
                .unwrap(),
        )
    }

    async fn record(&self, id: &TokenId) -> TokenRecord {
        self.store.token(id, None).await.unwrap().unwrap()
    }
}

#[tokio::test]
async fn a_revocation_committed_during_a_cold_read_is_seen_by_the_next_verification() {
    // Here the next verification's catch-up with the change log evicts the hash in any case; the
    // next test closes that door too.
    let h = harness().await;
    let alice = h.user("alice").await;
    let t = h.token(&alice, &["droplet:read"], None).await;
    let secret = t.secret.expose().to_owned();

    let keyward = Arc::clone(&h.keyward);
    let id = t.token.id.clone();
    h.store.arm(h.hasher.hash_str(&secret), async move {
        keyward.revoke_token(&operator(), &id, None).await.unwrap();
    });
    let first = h.verify(&secret, &[]).await;
    assert!(h.store.fired(), "the revocation ran inside the cold read");
    // The read began before the revocation was acknowledged, so either answer is right for it.
    assert!(
        first == active(&t, &alice) || first == Err(InactiveReason::Revoked),
        "{first:?}"
    );
    assert_eq!(h.verify(&secret, &[]).await, Err(InactiveReason::Revoked));
    assert_eq!(h.verify(&secret, &[]).await, Err(InactiveReason::Revoked));
}

#[tokio::test]
async fn an_entry_read_before_a_revocation_is_not_kept_even_if_another_verification_caught_up() {
    // The sharper race: while the cold read is out, the revocation commits *and* another
    // verification catches the cache up with the change log, evicting the (not yet inserted)
    // hash and moving the cache's epoch past the revocation. The next verification then finds
    // nothing new in the change log; only the rule "keep the entry out if the epoch moved during
    // the read" keeps it from answering from the stale entry.
    let h = harness().await;
    let alice = h.user("alice").await;
    let racing = h.token(&alice, &["droplet:read"], None).await;
    let other = h.token(&alice, &["droplet:read"], None).await;
    let secret = racing.secret.expose().to_owned();
    let other_secret = other.secret.expose().to_owned();
    assert_eq!(h.verify(&other_secret, &[]).await, active(&other, &alice));

    let keyward = Arc::clone(&h.keyward);
    let id = racing.token.id.clone();
    h.store.arm(h.hasher.hash_str(&secret), async move {
        keyward.revoke_token(&operator(), &id, None).await.unwrap();
        let meanwhile = keyward
            .verify(&other_secret, &Scopes::default(), None)
            .await
            .unwrap();
        assert!(matches!(meanwhile, Verdict::Active(_)));
    });
    let lookups = h.store.lookups();
    let first = h.verify(&secret, &[]).await;
    assert!(h.store.fired(), "the revocation ran inside the cold read");
    assert!(
        first == active(&racing, &alice) || first == Err(InactiveReason::Revoked),
        "{first:?}"
    );
    assert_eq!(
        h.store.lookups(),
        lookups + 1,
        "the other token was answered from the cache"
    );

    assert_eq!(
        h.verify(&secret, &[]).await,
        Err(InactiveReason::Revoked),
        "the entry read before the revocation stayed in the cache"
    );
    assert_eq!(
        h.store.lookups(),
        lookups + 2,
        "the answer after the race came from the store"
    );
    // From here the revoked entry is cached, and still revoked.
    assert_eq!(h.verify(&secret, &[]).await, Err(InactiveReason::Revoked));
    assert_eq!(h.store.lookups(), lookups + 2);
}

#[tokio::test]
async fn a_change_read_from_the_log_before_its_epoch_moved_never_lets_a_stale_entry_in() {
    // The sharpest race. The cache is caught up at epoch e0. A change (`other` revoked) moves the
    // epoch to e1 just after a cold verification of `racing` has caught up (finding nothing to
    // do) and before it reads the store. While that read is out, `racing` is revoked: committed,
    // its epoch not yet moved (as between SQLite's commit and its epoch's bump, or a PostgreSQL
    // notification on its way), and another verification catches up from e0, reading both
    // revocations from the log. Were the cold read's entry to go in because the epoch is still
    // the e1 it saw before its read, no later catch-up would name `racing` again: it would be
    // answered `active` for good. It goes in only at the epoch noted before its own catch-up.
    let h = harness().await;
    let alice = h.user("alice").await;
    let racing = h.token(&alice, &["droplet:read"], None).await;
    let other = h.token(&alice, &["droplet:read"], None).await;
    let bystander = h.token(&alice, &["droplet:read"], None).await;
    let bystander_secret = bystander.secret.expose().to_owned();
    assert_eq!(
        h.verify(&bystander_secret, &[]).await,
        active(&bystander, &alice)
    );
    let e0 = h.store.inner.change_epoch();
    h.store.script_epochs(&[], Some(e0));
    h.keyward
        .revoke_token(&operator(), &other.token.id, None)
        .await
        .unwrap();
    let e1 = h.store.inner.change_epoch();
    assert_ne!(e0, e1);
    // The cold verification's first look sees e0, every later one e1: `other`'s revocation is
    // announced right after its catch-up, and `racing`'s (below) is not until the end.
    h.store.script_epochs(&[e0], Some(e1));
    let (keyward, store) = (Arc::clone(&h.keyward), Arc::clone(&h.store));
    let id = racing.token.id.clone();
    h.store
        .arm(h.hasher.hash_str(racing.secret.expose()), async move {
            keyward.revoke_token(&operator(), &id, None).await.unwrap();
            assert_ne!(
                store.inner.change_epoch(),
                e1,
                "committed, its epoch moved in the store"
            );
            let meanwhile = keyward
                .verify(&bystander_secret, &Scopes::default(), None)
                .await
                .unwrap();
            assert!(matches!(meanwhile, Verdict::Active(_)));
        });
    let first = h.verify(racing.secret.expose(), &[]).await;
    assert!(h.store.fired(), "the revocation ran inside the cold read");
    assert!(
        first == active(&racing, &alice) || first == Err(InactiveReason::Revoked),
        "{first:?}"
    );
    // `racing`'s revocation announced.
    h.store.script_epochs(&[], None);
    assert_eq!(
        h.verify(racing.secret.expose(), &[]).await,
        Err(InactiveReason::Revoked),
        "the entry read before the revocation went into the cache"
    );
    assert_eq!(
        h.verify(other.secret.expose(), &[]).await,
        Err(InactiveReason::Revoked)
    );
}

#[tokio::test]
async fn cold_and_warm_verifications_agree() {
    let h = harness().await;
    let alice = h.user("alice").await;
    let bob = h.user("bob").await;
    let working = h.token(&alice, &["droplet:read", "volume:*"], None).await;
    let short = h
        .token(
            &alice,
            &["droplet:read"],
            Some(ExpiryRequest::In(Duration::hours(1))),
        )
        .await;
    let narrow = h.token(&alice, &["droplet:read"], None).await;
    let revoked = h.token(&alice, &["droplet:read"], None).await;
    let bobs = h.token(&bob, &["droplet:read"], None).await;
    h.keyward
        .revoke_token(&operator(), &revoked.token.id, None)
        .await
        .unwrap();
    h.keyward.disable_user(&operator(), &bob.id).await.unwrap();
    // `short` expires exactly now; the others have weeks left.
    h.clock.advance(Duration::hours(1));

    let cases: [(&str, &Issued, &[&str], Answer); 5] = [
        (
            "active",
            &working,
            &["volume:delete"],
            active(&working, &alice),
        ),
        ("expired", &short, &[], Err(InactiveReason::Expired)),
        (
            "lacking the scope",
            &narrow,
            &["droplet:update"],
            Err(InactiveReason::InsufficientScope),
        ),
        ("revoked", &revoked, &[], Err(InactiveReason::Revoked)),
        (
            "owner disabled",
            &bobs,
            &[],
            Err(InactiveReason::OwnerDisabled),
        ),
    ];
    for (what, issued, wanted, expected) in cases {
        let secret = issued.secret.expose();
        let before = h.store.lookups();
        let cold = h.verify(secret, wanted).await;
        let after_cold = h.store.lookups();
        let warm = h.verify(secret, wanted).await;
        assert_eq!(cold, expected, "{what}: cold");
        assert_eq!(warm, cold, "{what}: warm and cold differ");
        assert_eq!(
            after_cold,
            before + 1,
            "{what}: the first answer read the store"
        );
        assert_eq!(
            h.store.lookups(),
            after_cold,
            "{what}: the second was a hit"
        );
    }

    // Well-formed but no such token: unknown, however often asked.
    let unknown = TokenSecret::generate(&Prefix::default()).unwrap();
    for _ in 0..2 {
        assert_eq!(
            h.verify(unknown.expose(), &[]).await,
            Err(InactiveReason::Unknown)
        );
    }

    // `verify_with` answers with what the closure makes of the token, and runs it only for a
    // token that works.
    let secret = working.secret.expose();
    let made = h
        .keyward
        .verify_with(secret, &scopes(&["droplet:read"]), None, |t, _| {
            (t.id_text().as_str().to_owned(), t.scopes().len(), 42)
        })
        .await
        .unwrap();
    assert_eq!(made, Ok((working.token.id.as_str().to_owned(), 2, 42)));
    for (issued, wanted, reason) in [
        (
            &narrow,
            &["droplet:update"][..],
            InactiveReason::InsufficientScope,
        ),
        (&revoked, &[][..], InactiveReason::Revoked),
        (&short, &[][..], InactiveReason::Expired),
    ] {
        let mut ran = false;
        let got = h
            .keyward
            .verify_with(issued.secret.expose(), &scopes(wanted), None, |_, _| {
                ran = true;
            })
            .await
            .unwrap();
        assert_eq!(got, Err(reason));
        assert!(!ran, "the closure ran for a {reason:?} token");
    }

    // `verify` hands back an owned token describing the record.
    let Verdict::Active(token) = h
        .keyward
        .verify(secret, &Scopes::default(), None)
        .await
        .unwrap()
    else {
        panic!("the working token is refused");
    };
    assert_eq!(token.token_id(), working.token.id);
    assert_eq!(token.owner_id(), &alice.id);
    assert_eq!(token.owner_name(), &alice.name);
    assert_eq!(token.scopes(), &working.token.scopes);
    assert_eq!(token.expires_at(), working.token.expires_at);
    assert_eq!(token.expires_at(), Some(START + Duration::days(30)));
}

#[tokio::test]
async fn a_token_used_many_times_a_second_is_noted_once() {
    let h = harness().await;
    let alice = h.user("alice").await;
    let t = h.token(&alice, &["droplet:read"], None).await;
    let secret = t.secret.expose();
    assert_eq!(h.keyward.flush_usage().await.unwrap(), 0);

    h.clock.advance(Duration::minutes(10));
    let second = START + Duration::minutes(10);
    // Every use from another address: a later use noted in the same second would replace the
    // address, so the stored address tells which use was noted.
    for n in 1..=50u8 {
        let ip = IpAddr::from([192, 0, 2, n]);
        assert_eq!(
            h.verify_from(secret, &["droplet:read"], Some(ip)).await,
            active(&t, &alice)
        );
    }
    assert_eq!(h.keyward.flush_usage().await.unwrap(), 1);
    let stored = h.record(&t.token.id).await;
    assert_eq!(stored.last_used_at, Some(second));
    assert_eq!(
        stored.last_used_ip,
        Some(IpAddr::from([192, 0, 2, 1])),
        "only the first use of the second is noted"
    );
    assert_eq!(h.keyward.flush_usage().await.unwrap(), 0, "nothing left");

    // Half a second on is still the same second: not noted.
    h.clock.advance(Duration::milliseconds(500));
    h.verify_from(secret, &[], Some(IpAddr::from([192, 0, 2, 99])))
        .await
        .unwrap();
    assert_eq!(h.keyward.flush_usage().await.unwrap(), 0);

    // The next second is noted again.
    h.clock.advance(Duration::milliseconds(500));
    let ip = IpAddr::from([198, 51, 100, 7]);
    h.verify_from(secret, &[], Some(ip)).await.unwrap();
    h.verify_from(secret, &[], Some(IpAddr::from([198, 51, 100, 8])))
        .await
        .unwrap();
    assert_eq!(h.keyward.flush_usage().await.unwrap(), 1);
    let stored = h.record(&t.token.id).await;
    assert_eq!(stored.last_used_at, Some(second + Duration::seconds(1)));
    assert_eq!(stored.last_used_ip, Some(ip));
}

/// A well-formed token that was never issued: a real prefix, body and checksum.
fn forged() -> String {
    TokenSecret::generate(&Prefix::default())
        .unwrap()
        .expose()
        .to_owned()
}

/// Waits (bounded) until the service knows every stored hash.
async fn known_hashes_loaded(keyward: &Keyward) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !keyward.known_hashes().is_ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "the known hashes did not load"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Unknown tokens cost nothing: once the set of stored hashes is loaded, a forged token is
/// answered `unknown` without a store read, and every token made since — here, by this process
/// or another one on the same database — is still found.
#[tokio::test]
async fn forged_tokens_are_answered_without_reading_the_store() {
    let h = harness().await;
    let alice = h.user("alice").await;
    let before = h.token(&alice, &["droplet:read"], None).await;
    // Before the set is loaded, a miss reads the store, as always.
    let lookups = h.store.lookups();
    assert_eq!(h.verify(&forged(), &[]).await, Err(InactiveReason::Unknown));
    assert_eq!(h.store.lookups(), lookups + 1);

    h.keyward.track_known_hashes();
    known_hashes_loaded(&h.keyward).await;
    let lookups = h.store.lookups();
    for _ in 0..1000 {
        assert_eq!(h.verify(&forged(), &[]).await, Err(InactiveReason::Unknown));
    }
    assert_eq!(
        h.store.lookups(),
        lookups,
        "no forged token reached the store"
    );

    // Tokens made before the load, by this process after it, and by another process.
    assert_eq!(
        h.verify(before.secret.expose(), &[]).await,
        active(&before, &alice)
    );
    let here = h.token(&alice, &["droplet:read"], None).await;
    assert_eq!(
        h.verify(here.secret.expose(), &[]).await,
        active(&here, &alice)
    );
    let dir = h.dir.path().join("keyward.db");
    let other = Keyward::new(
        Arc::new(SqliteStore::open(&dir).await.unwrap()),
        h.clock.clone(),
        h.hasher.clone(),
        Settings::default(),
    )
    .await
    .unwrap();
    let there = other
        .create_token(
            &operator(),
            Some(&alice.id),
            TokenName::parse("elsewhere").unwrap(),
            scopes(&["droplet:read"]),
            None,
            keyward_core::Limits::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        h.verify(there.secret.expose(), &[]).await,
        active(&there, &alice)
    );
    // And a regenerated secret.
    let regenerated = other
        .regenerate_token(&operator(), &there.token.id, Default::default())
        .await
        .unwrap();
    let answer = h.verify(regenerated.secret.expose(), &[]).await;
    assert_eq!(answer.map(|a| a.0), Ok(there.token.id.clone()));
    assert_eq!(h.keyward.known_hashes().len(), 4);
}

/// A change log cut short (a restore, or a process that slept past the retention) means the set
/// may lack hashes: it is loaded again, and misses read the store meanwhile.
#[tokio::test]
async fn a_cut_short_change_log_reloads_the_known_hashes() {
    let h = harness().await;
    let alice = h.user("alice").await;
    h.keyward.track_known_hashes();
    known_hashes_loaded(&h.keyward).await;
    let t = h.token(&alice, &["droplet:read"], None).await;
    // Another handle writes more than a day later: the entries before it are pruned, and this
    // process's cursor falls behind the pruning mark.
    let other = SqliteStore::open(&h.dir.path().join("keyward.db"))
        .await
        .unwrap();
    let later = Keyward::new(
        Arc::new(other),
        Arc::new(ManualClock::new(START + Duration::days(2))),
        h.hasher.clone(),
        Settings::default(),
    )
    .await
    .unwrap();
    let made_later = later
        .create_token(
            &operator(),
            Some(&alice.id),
            TokenName::parse("later").unwrap(),
            scopes(&["droplet:read"]),
            None,
            keyward_core::Limits::default(),
        )
        .await
        .unwrap();
    h.clock.set(START + Duration::days(2));
    assert_eq!(
        h.verify(made_later.secret.expose(), &[]).await,
        active(&made_later, &alice)
    );
    known_hashes_loaded(&h.keyward).await;
    assert_eq!(h.verify(t.secret.expose(), &[]).await, active(&t, &alice));
    let lookups = h.store.lookups();
    assert_eq!(h.verify(&forged(), &[]).await, Err(InactiveReason::Unknown));
    assert_eq!(h.store.lookups(), lookups);
}

/// Reuse detection keeps the hot path as it was: a replaced secret is one of the known hashes
/// (a forged token still costs no read), read from the store once and then answered from the
/// cache like any other, and a live token's verification is untouched.
#[tokio::test]
async fn a_replaced_secret_costs_what_any_known_secret_does() {
    let h = harness().await;
    let alice = h.user("alice").await;
    let issued = h.token(&alice, &["droplet:read"], None).await;
    let fresh = h
        .keyward
        .regenerate_token(&operator(), &issued.token.id, Default::default())
        .await
        .unwrap();
    h.keyward.track_known_hashes();
    known_hashes_loaded(&h.keyward).await;
    assert_eq!(h.keyward.known_hashes().len(), 2);

    let lookups = h.store.lookups();
    for _ in 0..100 {
        assert_eq!(
            h.verify(issued.secret.expose(), &[]).await,
            Err(InactiveReason::Revoked)
        );
    }
    assert_eq!(h.store.lookups(), lookups + 1, "read once, then cached");
    for _ in 0..1000 {
        assert_eq!(h.verify(&forged(), &[]).await, Err(InactiveReason::Unknown));
    }
    assert_eq!(
        h.store.lookups(),
        lookups + 1,
        "no forged token reached the store"
    );
    let answer = h.verify(fresh.secret.expose(), &[]).await;
    assert_eq!(answer.map(|a| a.0), Ok(issued.token.id.clone()));
}

/// Notes a use of each of `tokens`, the first the most recent (a second apart).
async fn used_in_order<'a>(h: &Harness, tokens: impl ExactSizeIterator<Item = &'a Issued>) {
    let count = tokens.len() as i64;
    let uses: Vec<Usage> = tokens
        .zip((1..=count).rev())
        .map(|(t, s)| Usage {
            token_id: t.token.id.clone(),
            at: START + Duration::seconds(s),
            ip: None,
        })
        .collect();
    h.store.record_usage(&uses).await.unwrap();
}

/// A restarted instance warms its cache from the store: every live token is then answered from
/// memory, without a store read. Read by recent use only (the store is smaller than the hottest
/// read that way), in store order only, and both.
#[tokio::test]
async fn a_warmed_cache_answers_without_reading_the_store() {
    for (hottest, read) in [(None, 20), (Some(0), 20), (Some(5), 25)] {
        warmed_cache_answers_without_reading_the_store(hottest, read).await;
    }
}

/// Warms (`hottest` first, by recent use; all of them with `None`) and checks: `read` is how
/// many secrets the warm-up reads.
async fn warmed_cache_answers_without_reading_the_store(hottest: Option<u64>, read: u64) {
    let h = harness().await;
    let alice = h.user("alice").await;
    let mut tokens = Vec::new();
    for _ in 0..20 {
        tokens.push(h.token(&alice, &["droplet:read"], None).await);
    }
    used_in_order(&h, tokens[..8].iter()).await;
    let revoked = h.token(&alice, &["droplet:read"], None).await;
    h.keyward
        .revoke_token(&operator(), &revoked.token.id, None)
        .await
        .unwrap();

    let warmed = warm(&h, hottest).await;
    assert_eq!(
        warmed,
        WarmUp {
            entries: 20,
            read,
            finished: true
        },
        "every live token, not the revoked one (hottest first: {hottest:?})"
    );
    assert_eq!(
        h.store.store_order_pages() > 0,
        hottest.is_some(),
        "read in store order past the hottest, and only then ({hottest:?})"
    );
    let lookups = h.store.lookups();
    for t in &tokens {
        assert_eq!(h.verify(t.secret.expose(), &[]).await, active(t, &alice));
    }
    assert_eq!(
        h.store.lookups(),
        lookups,
        "every answer came from the cache"
    );
    // The revoked token was not warmed: its miss reads the store, and says so.
    assert_eq!(
        h.verify(revoked.secret.expose(), &[]).await,
        Err(InactiveReason::Revoked)
    );
    assert_eq!(h.store.lookups(), lookups + 1);
}

/// A store of several pages is warmed past its first page in pieces read at once (one per core,
/// at most four): every secret once, and every answer then from the cache.
#[tokio::test]
async fn a_store_of_many_pages_is_warmed_in_pieces() {
    let h = harness().await;
    // Three pages of the warm-up's 5,000 tokens.
    let (snapshot, secrets) = keyward_bench::synthetic(&h.hasher, 12_000, 10).unwrap();
    h.store.restore(&snapshot).await.unwrap();

    let warmed = warm(&h, Some(0)).await;
    assert_eq!(
        warmed,
        WarmUp {
            entries: 12_000,
            read: 12_000,
            finished: true
        }
    );
    let parts = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    assert_eq!(
        h.store.store_order_pages(),
        1 + 2 * parts,
        "the first page whole, the two after it in {parts} pieces each"
    );
    let lookups = h.store.lookups();
    for secret in secrets.iter().step_by(97) {
        assert!(
            h.verify(secret.expose(), &[]).await.is_ok(),
            "warmed tokens are active"
        );
    }
    assert_eq!(
        h.store.lookups(),
        lookups,
        "every answer came from the cache"
    );
}

/// Warms `h`'s cache, the `hottest` most recently used first (as `keyward serve` does with
/// `None`).
async fn warm(h: &Harness, hottest: Option<u64>) -> WarmUp {
    match hottest {
        None => h.keyward.warm_cache(),
        Some(hottest) => h.keyward.warm_cache_hottest_first(hottest),
    }
    .await
    .unwrap()
}

/// A cache smaller than the store is warmed with the most recently used tokens, up to 90 % of its
/// capacity, and the rest is left to misses: the store order, which would fill it with any, is
/// not used (tried here after the 10 most recent).
#[tokio::test]
async fn the_most_recently_used_tokens_are_warmed_first() {
    for hottest in [None, Some(10)] {
        most_recently_used_tokens_are_warmed_first(hottest).await;
    }
}

async fn most_recently_used_tokens_are_warmed_first(hottest: Option<u64>) {
    let h = harness_with(Settings {
        cache_capacity: 640,
        ..Settings::default()
    })
    .await;
    let alice = h.user("alice").await;
    let mut tokens = Vec::new();
    for _ in 0..700 {
        tokens.push(h.token(&alice, &["droplet:read"], None).await);
    }
    tokens.reverse();
    used_in_order(&h, tokens.iter()).await;

    let warmed = warm(&h, hottest).await;
    // Up to 90 % of the capacity; the cache's shards hold 10 entries each, and a full one is
    // skipped (the warm-up never evicts), so it reads further, up to the end of a small store,
    // to fill the rest.
    assert!(warmed.entries <= 576 && warmed.read >= 576, "{warmed:?}");
    assert!(warmed.finished);
    // The most recent went in first, into shards with room: every one of them is cached.
    let lookups = h.store.lookups();
    for t in &tokens[..50] {
        assert_eq!(h.verify(t.secret.expose(), &[]).await, active(t, &alice));
    }
    assert_eq!(
        h.store.lookups(),
        lookups,
        "the 50 most recent were cached (hottest first: {hottest:?})"
    );
    assert_eq!(h.store.store_order_pages(), 0, "never in store order");
}

/// The warm-up never holds up verification, and never caches a stale answer: a token revoked
/// while a page is out (and the revocation caught up with by a verification, before the page's
/// entries go in) is answered revoked once the warm-up is done.
/// Read by recent use, and in store order.
#[tokio::test]
async fn a_token_revoked_while_the_warm_up_runs_is_never_answered_active() {
    for hottest in [None, Some(0)] {
        token_revoked_while_the_warm_up_runs_is_never_answered_active(hottest).await;
    }
}

async fn token_revoked_while_the_warm_up_runs_is_never_answered_active(hottest: Option<u64>) {
    let h = harness().await;
    let alice = h.user("alice").await;
    let racing = h.token(&alice, &["droplet:read"], None).await;
    let other = h.token(&alice, &["droplet:read"], None).await;
    let quiet = h.token(&alice, &["droplet:read"], None).await;
    used_in_order(&h, [&racing, &other, &quiet].into_iter()).await;

    let keyward = Arc::clone(&h.keyward);
    let (id, other_secret) = (racing.token.id.clone(), other.secret.expose().to_owned());
    let (tx, rx) = tokio::sync::oneshot::channel();
    h.store.arm_page(async move {
        keyward.revoke_token(&operator(), &id, None).await.unwrap();
        // Verification works while the warm-up is under way (from the store), and catches the
        // cache up past the revocation before the page is cached.
        let meanwhile = keyward
            .verify(&other_secret, &Scopes::default(), None)
            .await
            .unwrap();
        tx.send(matches!(meanwhile, Verdict::Active(_))).unwrap();
    });
    let warmed = warm(&h, hottest).await;
    assert!(rx.await.unwrap(), "answered active during the warm-up");
    assert!(warmed.finished);
    assert_eq!(warmed.entries, 1, "only the quiet token: {warmed:?}");
    assert_eq!(
        h.store.store_order_pages() > 0,
        hottest.is_some(),
        "the racing page was read in the order asked for ({hottest:?})"
    );

    let lookups = h.store.lookups();
    assert_eq!(
        h.verify(racing.secret.expose(), &[]).await,
        Err(InactiveReason::Revoked)
    );
    assert_eq!(
        h.verify(other.secret.expose(), &[]).await,
        active(&other, &alice)
    );
    assert_eq!(
        h.verify(quiet.secret.expose(), &[]).await,
        active(&quiet, &alice)
    );
    assert_eq!(
        h.store.lookups(),
        lookups + 1,
        "only the revoked token read the store; the others were cached"
    );
}

/// The service of a restart of `h`: a new store handle on the same file (the first stays open,
/// as another process's would), the same server key unless `hasher` is given, and `settings`.
async fn restart(h: &Harness, hasher: Option<TokenHasher>, settings: Settings) -> Harness {
    let hasher = hasher.unwrap_or_else(|| h.hasher.clone());
    open_harness(Arc::clone(&h.dir), h.clock.clone(), hasher, settings).await
}

/// Where `h`'s snapshot is written, and the settings that read it back at start-up.
fn snapshot_settings(h: &Harness) -> (std::path::PathBuf, Settings) {
    let path = h.dir.path().join("keyward.db-cache");
    let settings = Settings {
        cache_snapshot: Some(path.clone()),
        ..Settings::default()
    };
    (path, settings)
}

/// Snapshots are written while the server runs: verifications fill the cache (misses, then
/// hits) and tokens are revoked all along, and the last snapshot, written while revocations
/// were still coming, loads into a start whose every answer is the store's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_written_among_verifications_and_revocations_keeps_nothing_stale() {
    const TOKENS: usize = 200;
    let h = harness().await;
    let (path, settings) = snapshot_settings(&h);
    let alice = h.user("alice").await;
    let mut tokens = Vec::new();
    for _ in 0..TOKENS {
        tokens.push(h.token(&alice, &["droplet:read"], None).await);
    }
    let secrets: Arc<Vec<String>> = Arc::new(
        tokens
            .iter()
            .map(|t| t.secret.expose().to_owned())
            .collect(),
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let verifiers: Vec<_> = (0..2)
        .map(|k| {
            let (keyward, secrets, stop) = (
                Arc::clone(&h.keyward),
                Arc::clone(&secrets),
                Arc::clone(&stop),
            );
            tokio::spawn(async move {
                let mut n = k * 7;
                while !stop.load(Ordering::Relaxed) {
                    let secret = &secrets[n % secrets.len()];
                    keyward
                        .verify(secret, &Scopes::default(), None)
                        .await
                        .unwrap();
                    n += 1;
                    // A hit never awaits: without this the two would hold both workers.
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    // Every other token revoked, one at a time, beside the verifications: the first half while
    // snapshots are written, the second after the last one (of tokens it holds as active).
    let revoked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (go_on, second_half) = tokio::sync::oneshot::channel::<()>();
    let revoker = {
        let (keyward, revoked) = (Arc::clone(&h.keyward), Arc::clone(&revoked));
        let ids: Vec<TokenId> = tokens
            .iter()
            .skip(1)
            .step_by(2)
            .map(|t| t.token.id.clone())
            .collect();
        tokio::spawn(async move {
            let (first, second) = ids.split_at(ids.len() / 2);
            for id in first {
                keyward.revoke_token(&operator(), id, None).await.unwrap();
                revoked.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
            second_half.await.unwrap();
            for id in second {
                keyward.revoke_token(&operator(), id, None).await.unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    let mut last = 0;
    while revoked.load(Ordering::Relaxed) < TOKENS / 4 {
        last = h.keyward.save_cache_snapshot(&path).await.unwrap().unwrap();
    }
    go_on.send(()).unwrap();
    revoker.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    for verifier in verifiers {
        verifier.await.unwrap();
    }
    assert!(last > 0, "the last snapshot held entries");

    let r = restart(&h, None, settings).await;
    warm(&r, None).await;
    for (n, t) in tokens.iter().enumerate() {
        let store_says = if n % 2 == 1 {
            Err(InactiveReason::Revoked)
        } else {
            active(t, &alice)
        };
        assert_eq!(
            r.verify(t.secret.expose(), &[]).await,
            store_says,
            "token {n}"
        );
    }
}

/// A snapshot written at shutdown fills the next start's cache without reading the store: a
/// warmed cache's snapshot leaves the warm-up nothing to read. What changed after it was
/// written (a revocation by another process while the server was down) is left out, and so is
/// every token with limits (its counts live in the store).
#[tokio::test]
async fn a_snapshot_fills_the_next_start_s_cache_and_leaves_out_what_changed_since() {
    let h = harness().await;
    let (path, settings) = snapshot_settings(&h);
    let alice = h.user("alice").await;
    let bob = h.user("bob").await;
    let kept = h.token(&alice, &["droplet:read"], None).await;
    let also_kept = h.token(&bob, &["volume:read", "droplet:read"], None).await;
    let revoked_while_down = h.token(&alice, &["droplet:read"], None).await;
    let limited = h
        .keyward
        .create_token(
            &operator(),
            Some(&alice.id),
            TokenName::parse("limited").unwrap(),
            scopes(&["droplet:read"]),
            None,
            keyward_core::Limits {
                max_uses: Some(10),
                ..keyward_core::Limits::default()
            },
        )
        .await
        .unwrap();
    let revoked_before = h.token(&bob, &["droplet:read"], None).await;
    h.keyward
        .revoke_token(&operator(), &revoked_before.token.id, None)
        .await
        .unwrap();
    let finished = warm(&h, None).await;
    assert!(finished.finished);
    // The warm-up reads live tokens only; a verification caches a revoked one too.
    assert_eq!(
        h.verify(revoked_before.secret.expose(), &[]).await,
        Err(InactiveReason::Revoked)
    );
    assert_eq!(
        h.keyward.save_cache_snapshot(&path).await.unwrap(),
        Some(4),
        "every cached secret but the limited token's"
    );

    // While the server is down, another process revokes a token and disables an owner.
    let other = restart(&h, None, Settings::default()).await;
    other
        .keyward
        .revoke_token(&operator(), &revoked_while_down.token.id, None)
        .await
        .unwrap();
    let carol = other.user("carol").await;
    let disabled_while_down = other.token(&carol, &["droplet:read"], None).await;
    let r = restart(&h, None, settings.clone()).await;
    assert_eq!(
        r.verify(disabled_while_down.secret.expose(), &[]).await,
        active(&disabled_while_down, &carol)
    );
    // The first snapshot less the token revoked since, and carol's, cached by its verification.
    assert!(warm(&r, None).await.finished);
    assert_eq!(r.keyward.save_cache_snapshot(&path).await.unwrap(), Some(4));
    drop(r);
    other
        .keyward
        .update_user(
            &operator(),
            &carol.id,
            keyward_server::service::UserChanges {
                disabled: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let r = restart(&h, None, settings).await;
    assert_eq!(
        warm(&r, None).await,
        WarmUp {
            entries: 3,
            read: 0,
            finished: true
        },
        "the snapshot's entries, less the one changed since, and no store read"
    );
    let lookups = r.store.lookups();
    assert_eq!(
        r.verify(kept.secret.expose(), &[]).await,
        active(&kept, &alice)
    );
    assert_eq!(
        r.verify(also_kept.secret.expose(), &["volume:read"]).await,
        active(&also_kept, &bob)
    );
    assert_eq!(
        r.verify(revoked_before.secret.expose(), &[]).await,
        Err(InactiveReason::Revoked)
    );
    assert_eq!(r.store.lookups(), lookups, "answered from the snapshot");
    assert_eq!(
        r.verify(revoked_while_down.secret.expose(), &[]).await,
        Err(InactiveReason::Revoked)
    );
    assert_eq!(
        r.verify(disabled_while_down.secret.expose(), &[]).await,
        Err(InactiveReason::OwnerDisabled)
    );
    assert_eq!(
        r.verify(limited.secret.expose(), &[]).await,
        active(&limited, &alice)
    );
    assert_eq!(
        r.store.lookups(),
        lookups + 3,
        "the two changed since and the limited one are read from the store"
    );
}

/// A snapshot is loaded once, only under the server key it was written with, unchanged, and
/// only the last one its own database was sealed for; otherwise the warm-up reads the store as
/// if there were none. Whatever comes of it, the file is removed once read.
#[tokio::test]
async fn a_snapshot_is_loaded_once_under_its_key_unchanged_and_sealed_last() {
    let h = harness().await;
    let (path, settings) = snapshot_settings(&h);
    let alice = h.user("alice").await;
    let token = h.token(&alice, &["droplet:read"], None).await;
    assert!(warm(&h, None).await.finished);
    let from_the_store = WarmUp {
        entries: 1,
        read: 1,
        finished: true,
    };
    let from_the_snapshot = WarmUp {
        entries: 1,
        read: 0,
        finished: true,
    };
    let save = || async {
        assert_eq!(h.keyward.save_cache_snapshot(&path).await.unwrap(), Some(1));
        std::fs::read(&path).unwrap()
    };
    let start = || async { warm(&restart(&h, None, settings.clone()).await, None).await };

    save().await;
    let r = restart(&h, None, settings.clone()).await;
    assert_eq!(warm(&r, None).await, from_the_snapshot);
    assert!(!path.exists(), "removed once read");
    assert_eq!(
        r.verify(token.secret.expose(), &[]).await,
        active(&token, &alice)
    );
    assert_eq!(r.store.lookups(), 0, "answered from the snapshot");

    // Once: put back (as a crash of the run that loaded it would leave it), it is not loaded.
    let written = save().await;
    assert_eq!(start().await, from_the_snapshot);
    std::fs::write(&path, &written).unwrap();
    assert_eq!(start().await, from_the_store, "not loaded twice");

    // Under another server key (the MAC fails).
    save().await;
    let other_key = TokenHasher::new(&ServerKey::generate().unwrap());
    let r = restart(&h, Some(other_key), settings.clone()).await;
    assert_eq!(
        warm(&r, None).await,
        from_the_store,
        "not loaded under another key"
    );
    assert!(!path.exists(), "a refused file is removed too");

    // Changed by a single bit.
    let mut changed = save().await;
    let middle = changed.len() / 2;
    changed[middle] ^= 0x40;
    std::fs::write(&path, &changed).unwrap();
    assert_eq!(
        start().await,
        from_the_store,
        "a changed file is not loaded"
    );

    // An older snapshot put back after a later one was written.
    let older = save().await;
    save().await;
    std::fs::write(&path, &older).unwrap();
    assert_eq!(
        start().await,
        from_the_store,
        "a superseded file is not loaded"
    );

    // Another database's, over a database with a seal of its own.
    let other = harness().await;
    let (other_path, other_settings) = snapshot_settings(&other);
    assert_eq!(
        other
            .keyward
            .save_cache_snapshot(&other_path)
            .await
            .unwrap(),
        Some(0)
    );
    std::fs::write(&other_path, save().await).unwrap();
    let r = restart(&other, Some(h.hasher.clone()), other_settings).await;
    assert_eq!(
        warm(&r, None).await.entries,
        0,
        "another database's snapshot is not loaded"
    );
}

/// A snapshot older than what the change log still holds (pruned a day after its entries) is
/// not loaded: what changed since could not be known.
#[tokio::test]
async fn a_snapshot_behind_a_pruned_change_log_is_not_loaded() {
    let h = harness().await;
    let (path, settings) = snapshot_settings(&h);
    let alice = h.user("alice").await;
    let token = h.token(&alice, &["droplet:read"], None).await;
    let revoked = h.token(&alice, &["droplet:read"], None).await;
    assert_eq!(
        h.verify(token.secret.expose(), &[]).await,
        active(&token, &alice)
    );
    assert_eq!(
        h.verify(revoked.secret.expose(), &[]).await,
        active(&revoked, &alice)
    );
    // Complete: loaded, it would leave the warm-up nothing to read.
    assert!(warm(&h, None).await.finished);
    assert_eq!(h.keyward.save_cache_snapshot(&path).await.unwrap(), Some(2));
    h.clock.advance(Duration::days(2));
    h.keyward
        .revoke_token(&operator(), &revoked.token.id, None)
        .await
        .unwrap();
    h.clock.advance(Duration::days(2));
    // A later write prunes the log past the revocation.
    h.token(&alice, &["droplet:read"], None).await;
    h.keyward
        .revoke_token(&operator(), &token.token.id, None)
        .await
        .unwrap();
    let r = restart(&h, None, settings).await;
    let warmed = warm(&r, None).await;
    assert!(
        warmed.read > 0 && warmed.read == warmed.entries,
        "{warmed:?}: all read from the store"
    );
    assert_eq!(
        r.verify(revoked.secret.expose(), &[]).await,
        Err(InactiveReason::Revoked)
    );
}
