//! The contract every engine keeps. Each check takes a fresh [`Database`]; an engine runs the
//! whole suite with one line: `contract::contract_suite!(MyDb::fresh());`, where `fresh()` gives
//! a [`Database`] or, for an engine that may be absent on this machine, an `Option` of one
//! (`None` skips the check).

use keyward_core::{
    AuditKind, Email, ExternalId, TokenHash, TokenName, TokenRecord, UserKind, UserName,
};
use keyward_store::{
    AuditFilter, DeliveryFilter, DeliveryOutcome, DeliveryState, EXPIRED_NOTICE, IdentityRecord,
    NewUser, Page, Progress, RETIRED_SECRETS_KEPT, RecentUseCursor, Regeneration, Revocation,
    SessionRecord, Store, StoreError, StoreOrderCursor, StoreOrderPage, TokenFilter, Usage,
    UserFilter, UserUpdate,
};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use time::Duration;

use crate::fixtures::{
    Database, T0, add_token, add_user, audit, secret_and_hash, token_record, user,
};

/// Generates one `#[tokio::test]` per contract check, each on a database made by `$fresh`
/// (an expression evaluating to a future of a [`Database`]).
macro_rules! contract_suite {
    ($fresh:expr) => {
        $crate::contract::contract_suite!(@each $fresh;
            users_are_added_listed_and_found,
            a_taken_user_name_is_a_conflict,
            tokens_are_stored_and_read_back,
            tokens_list_newest_first_in_pages,
            another_owners_token_is_not_found,
            rename_changes_only_the_name,
            regenerate_replaces_the_secret_and_logs_the_old_ones,
            regenerate_refuses_revoked_and_expired_tokens,
            old_secrets_in_their_grace_period_are_listed_per_owner,
            revoke_is_idempotent,
            lookup_finds_the_token_and_its_owner,
            record_usage_keeps_the_latest_use,
            audit_events_list_newest_first_and_filter,
            changes_since_follows_cursors,
            stored_hashes_pages_through_every_hash,
            secrets_by_recent_use_page_live_secrets_latest_use_first,
            a_pruned_change_log_is_incomplete,
            a_second_handle_sees_revocations,
            a_revocation_survives_reopening,
            the_cache_snapshot_seal_is_the_last_one_kept,
            two_handles_open_a_fresh_database_at_once,
            concurrent_writers_on_two_handles_all_succeed,
            dump_and_restore_carry_everything,
            restore_refuses_a_store_that_is_not_empty,
            an_interrupted_restore_writes_nothing,
            sessions_are_created_found_touched_and_ended,
            a_form_nonce_is_used_once_per_live_session,
            disabling_a_user_ends_sessions_and_announces_their_tokens,
            external_ids_are_unique_and_found,
            an_update_changes_what_it_names_and_announces_it,
            a_password_change_ends_sessions,
            deleting_a_user_revokes_their_tokens_and_frees_the_name,
            an_identity_links_one_new_user_in_one_write,
            a_session_keeps_how_it_was_signed_in,
            tokens_under_other_keys_are_counted_and_revoked,
            events_are_written_with_their_change_and_read_in_order,
            events_are_never_skipped_by_a_reader_while_writers_commit,
            webhook_deliveries_are_queued_leased_in_order_and_finished,
            two_handles_never_lease_the_same_delivery,
            a_bulk_revocation_revokes_exactly_what_its_listing_showed,
            expiry_notices_are_recorded_once_per_token_and_expiry,
            two_handles_record_a_notice_once,
            regeneration_keeps_the_last_few_retired_secrets,
            replaced_secrets_under_a_key_are_dropped_with_it,
            creations_that_arrive_together_each_stand_or_fall_alone,
        );
    };
    (@each $fresh:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some(db) = $crate::contract::Fresh::into_fresh($fresh.await) else {
                    return;
                };
                $crate::contract::$check(&db).await;
            }
        )*
    };
}
pub(crate) use contract_suite;

/// What an engine's `fresh()` gives the suite: a database, or `None` when the engine is not
/// available on this machine (the engine's module says so, and how to run it).
pub trait Fresh {
    /// The engine's database.
    type Db: Database;
    /// The database to run a check on, if any.
    fn into_fresh(self) -> Option<Self::Db>;
}

impl<D: Database> Fresh for Option<D> {
    type Db = D;
    fn into_fresh(self) -> Option<D> {
        self
    }
}

/// How long another handle may take to see a committed change: the slowest engine's documented
/// bound (PostgreSQL's; SQLite's is zero), three times over for a loaded machine.
pub const PROPAGATION_WAIT: std::time::Duration = std::time::Duration::from_millis(
    3 * keyward_store::postgres::PROPAGATION_BOUND.as_millis() as u64,
);

/// Waits until `done` holds, failing the check if it does not within [`PROPAGATION_WAIT`].
/// Returns how long it took.
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) -> std::time::Duration {
    let start = std::time::Instant::now();
    while !done() {
        assert!(
            start.elapsed() < PROPAGATION_WAIT,
            "{what}: not within {PROPAGATION_WAIT:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    start.elapsed()
}

/// A well-formed Argon2id PHC string (the store treats it as opaque text).
const PASSWORD_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";

fn page(limit: u32) -> Page {
    Page { after: None, limit }
}

fn revocation(at: time::OffsetDateTime, reason: &str) -> Revocation {
    Revocation {
        at,
        by: "cli (root)".to_owned(),
        reason: Some(reason.to_owned()),
    }
}

fn regeneration(
    at: time::OffsetDateTime,
    grace: Duration,
) -> (Regeneration, keyward_store::StoredHash) {
    let (secret, hash) = secret_and_hash();
    let regen = Regeneration {
        new_hash: hash.clone(),
        new_hint: secret.hint(),
        new_expires_at: Some(at + Duration::days(30)),
        old_valid_until: at + grace,
        at,
    };
    (regen, hash)
}

async fn audit_count(store: &dyn Store) -> usize {
    store
        .audit_events(&AuditFilter {
            limit: 1000,
            ..AuditFilter::default()
        })
        .await
        .unwrap()
        .len()
}

async fn revoke(store: &dyn Store, token: &TokenRecord, at: time::OffsetDateTime) -> TokenRecord {
    let event = audit(
        AuditKind::TokenRevoked,
        at,
        Some(&token.owner),
        Some(&token.id),
    );
    store
        .revoke_token(&token.id, None, &revocation(at, "leaked"), &event)
        .await
        .unwrap()
}

/// Every user, in one page.
fn every_user() -> UserFilter {
    UserFilter {
        limit: 100,
        ..UserFilter::default()
    }
}

/// An update that only disables (or enables).
fn disabling(disabled: bool) -> UserUpdate {
    UserUpdate {
        disabled: Some(disabled),
        ..UserUpdate::default()
    }
}

pub async fn users_are_added_listed_and_found(db: &dyn Database) {
    let store = db.open().await;
    let store = &*store;
    let mut alice = user("alice");
    alice.is_admin = true;
    let new = NewUser {
        user: alice.clone(),
        password_hash: Some(PASSWORD_HASH.to_owned()),
    };
    store
        .add_user(
            &new,
            &audit(AuditKind::UserAdded, T0, Some(&alice.id), None),
        )
        .await
        .unwrap();
    let mut carol = user("carol");
    carol.disabled_at = Some(T0 + Duration::hours(1));
    let new = NewUser {
        user: carol.clone(),
        password_hash: None,
    };
    store
        .add_user(
            &new,
            &audit(AuditKind::UserAdded, T0, Some(&carol.id), None),
        )
        .await
        .unwrap();
    let bob = add_user(store, "bob").await;

    let names: Vec<_> = store
        .list_users(&every_user())
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name.as_str().to_owned())
        .collect();
    assert_eq!(names.len(), 3);
    assert!(
        ["alice", "bob", "carol"]
            .iter()
            .all(|n| names.contains(&(*n).to_owned()))
    );
    assert_eq!(
        store.user_by_name(&alice.name).await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(
        store.user_by_id(&carol.id).await.unwrap(),
        Some(carol.clone())
    );
    assert_eq!(store.user_by_id(&bob.id).await.unwrap(), Some(bob.clone()));
    assert_eq!(
        store
            .user_by_name(&keyward_core::UserName::parse("dave").unwrap())
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.user_by_id(&user("dave").id).await.unwrap(), None);
    assert_eq!(
        store.password_hash(&alice.id).await.unwrap().as_deref(),
        Some(PASSWORD_HASH)
    );
    assert_eq!(store.password_hash(&bob.id).await.unwrap(), None);
    assert_eq!(store.password_hash(&user("dave").id).await.unwrap(), None);

    let events = store
        .audit_events(&AuditFilter {
            limit: 10,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|e| e.event.kind == AuditKind::UserAdded));
}

pub async fn a_taken_user_name_is_a_conflict(db: &dyn Database) {
    let store = db.open().await;
    let store = &*store;
    add_user(store, "alice").await;
    let again = user("alice");
    let err = store
        .add_user(
            &NewUser {
                user: again.clone(),
                password_hash: None,
            },
            &audit(AuditKind::UserAdded, T0, Some(&again.id), None),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(ref what) if what.contains("alice")),
        "{err:?}"
    );
    assert_eq!(store.list_users(&every_user()).await.unwrap().len(), 1);
    assert_eq!(
        audit_count(store).await,
        1,
        "a refused write leaves no audit event"
    );
}

pub async fn tokens_are_stored_and_read_back(db: &dyn Database) {
    let store = db.open().await;
    let store = &*store;
    let alice = add_user(store, "alice").await;
    let (token, _) = add_token(store, &alice.id, T0).await;
    assert_eq!(
        store.token(&token.id, None).await.unwrap(),
        Some(token.clone())
    );
    assert_eq!(
        store.token(&token.id, Some(&alice.id)).await.unwrap(),
        Some(token.clone())
    );

    let (never_expires, hash) = {
        let (mut t, h) = token_record(&alice.id, T0 + Duration::seconds(1));
        t.expires_at = None;
        (t, h)
    };
    store
        .insert_token(
            &never_expires,
            &hash,
            &audit(AuditKind::TokenCreated, T0, Some(&alice.id), None),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        store.token(&never_expires.id, None).await.unwrap(),
        Some(never_expires)
    );

    let (unknown, _) = token_record(&alice.id, T0);
    assert_eq!(store.token(&unknown.id, None).await.unwrap(), None);

    let stranger = user("zed");
    let (orphan, hash) = token_record(&stranger.id, T0);
    let err = store
        .insert_token(
            &orphan,
            &hash,
            &audit(AuditKind::TokenCreated, T0, None, None),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    assert_eq!(store.token(&orphan.id, None).await.unwrap(), None);
}

pub async fn tokens_list_newest_first_in_pages(db: &dyn Database) {
    let store = db.open().await;
    let store = &*store;
    let alice = add_user(store, "alice").await;
    let bob = add_user(store, "bob").await;
    let mut alices = Vec::new();
    for i in 0..5 {
        alices.push(
            add_token(store, &alice.id, T0 + Duration::seconds(i))
                .await
                .0,
        );
    }
    let bobs = vec![
        add_token(store, &bob.id, T0 + Duration::seconds(10))
            .await
            .0,
    ];
    alices.reverse();

    let first = store.list_tokens(Some(&alice.id), &page(2)).await.unwrap();
    assert_eq!(first, alices[..2]);
    let second = store
        .list_tokens(
            Some(&alice.id),
            &Page {
                after: Some(first[1].id.clone()),
                limit: 2,
            },
        )
        .await
        .unwrap();
    assert_eq!(second, alices[2..4]);
    let last = store
        .list_tokens(
            Some(&alice.id),
            &Page {
                after: Some(second[1].id.clone()),
                limit: 2,
            },
        )
        .await
        .unwrap();
    assert_eq!(last, alices[4..]);
    let none = store
        .list_tokens(
            Some(&alice.id),
            &Page {
                after: Some(last[0].id.clone()),
                limit: 2,
            },
        )
        .await
        .unwrap();
    assert!(none.is_empty());

    assert_eq!(
        store.list_tokens(Some(&bob.id), &page(10)).await.unwrap(),
        bobs
    );
    let all = store.list_tokens(None, &page(10)).await.unwrap();
    let expected: Vec<_> = bobs.iter().chain(&alices).cloned().collect();
    assert_eq!(all, expected);
    let after_bob = store
        .list_tokens(
            None,
            &Page {
                after: Some(bobs[0].id.clone()),
                limit: 3,
            },
        )
        .await
        .unwrap();
    assert_eq!(after_bob, alices[..3]);
}

pub async fn another_owners_token_is_not_found(db: &dyn Database) {
    let store = db.open().await;
    let store = &*store;
    let alice = add_user(store, "alice").await;
    let mallory = add_user(store, "mallory").await;
    let (token, hash) = add_token(store, &alice.id, T0).await;
    let before_audit = audit_count(store).await;
    let epoch = store.change_epoch();
    let at = T0 + Duration::hours(1);
    let event = audit(
        AuditKind::TokenRenamed,
        at,
        Some(&mallory.id),
        Some(&token.id),
    );

    assert_eq!(
        store.token(&token.id, Some(&mallory.id)).await.unwrap(),
        None
    );
    assert!(
        store
            .list_tokens(Some(&mallory.id), &page(10))
            .await
            .unwrap()
            .is_empty()
    );
    let name = TokenName::parse("mine now").unwrap();
    let err = store
        .rename_token(&token.id, Some(&mallory.id), &name, &event)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    let (regen, new_hash) = regeneration(at, Duration::ZERO);
    let err = store
        .regenerate_token(&token.id, Some(&mallory.id), &regen, &event)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    let err = store
        .revoke_token(
            &token.id,
            Some(&mallory.id),
            &revocation(at, "mine"),
            &event,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");

    assert_eq!(
        store.token(&token.id, None).await.unwrap(),
        Some(token.clone())
    );
    assert_eq!(
        store
            .lookup(&hash.hash)
            .await
            .unwrap()
            .unwrap()
            .secret_valid_until,
        None
    );
    assert!(store.lookup(&new_hash.hash).await.unwrap().is_none());
    assert_eq!(
        audit_count(store).await,
        before_audit,
        "refused writes leave no audit event"
    );
    assert_eq!(
        store.change_epoch(),
        epoch,
        "refused writes announce nothing"
    );
}

pub async fn rename_changes_only_the_name(db: &dyn Database) {
    let store = db.open().await;
    let store = &*store;
    let alice = add_user(store, "alice").await;
    let (token, _) = add_token(store, &alice.id, T0).await;
    let name = TokenName::parse("laptop").unwrap();
    let event = audit(
        AuditKind::TokenRenamed,
        T0,
        Some(&alice.id),
        Some(&token.id),
    );
    let renamed = store
        .rename_token(&token.id, Some(&alice.id), &name, &event)
        .await
        .unwrap();
    assert_eq!(
        renamed,
        TokenRecord {
            name: name.clone(),
            ..token.clone()
        }
    );
    assert_eq!(
        store.token(&token.id, None).await.unwrap(),
        Some(renamed.clone())
    );
    // An admin (no owner restriction) may rename too.
    let admin_name = TokenName::parse("fleet").unwrap();
    let renamed = store
        .rename_token(&token.id, None, &admin_name, &event)
        .await
        .unwrap();
    assert_eq!(renamed.name, admin_name);
    let latest = &store
        .audit_events(&AuditFilter {
            limit: 1,
            ..AuditFilter::default()
        })
        .await
        .unwrap()[0];
    assert_eq!(latest.event.kind, AuditKind::TokenRenamed);
}

pub async fn regenerate_replaces_the_secret_and_logs_the_old_ones(db: &dyn Database) {
    let store = db.open().await;
    let store = &*store;
    let alice = add_user(store, "alice").await;
    let (token, first_hash) = add_token(store, &alice.id, T0).await;
    let cursor = store.change_cursor().await.unwrap();
    let epoch = store.change_epoch();

    // First regeneration with a one-hour grace period.
    let at = T0 + Duration::days(1);
    let (regen, second_hash) = regeneration(at, Duration::hours(1));
    let event = audit(
        AuditKind::TokenRegenerated,
        at,
        Some(&alice.id),
        Some(&token.id),
    );
    let updated = store
        .regenerate_token(&token.id, Some(&alice.id), &regen, &event)
        .await
        .unwrap();
    assert_eq!(
        updated,
        TokenRecord {
            hint: regen.new_hint.clone(),
            expires_at: regen.new_expires_at,
            regenerated_at: Some(at),
            ..token.clone()
        }
    );
    assert_eq!(
        store.token(&token.id, None).await.unwrap(),
        Some(updated.clone())
    );
    assert!(
        store.change_epoch() > epoch,
        "a regeneration advances the epoch"
    );

    let old = store.lookup(&first_hash.hash).await.unwrap().unwrap();
    assert_eq!(old.secret_valid_until, Some(at + Duration::hours(1)));
    assert_eq!(old.token, updated);
    let new = store.lookup(&second_hash.hash).await.unwrap().unwrap();
    assert_eq!(new.secret_valid_until, None);
    assert_eq!(new.token.id, token.id);
    assert_eq!(
        (old.secret_created_at, new.secret_created_at),
        (token.created_at, at),
        "each secret knows when it was issued"
    );

    let changes = store.changes_since(cursor).await.unwrap();
    assert!(changes.complete);
    let logged: HashSet<_> = changes.hashes.iter().map(|h| h.0).collect();
    assert_eq!(
        logged,
        HashSet::from([first_hash.hash.0, second_hash.hash.0]),
        "the old secret (its answer changed) and the new one (it exists now)"
    );

    // A second regeneration without grace: the first secret keeps its earlier end, the second
    // ends now, and all three are logged.
    let at2 = at + Duration::minutes(10);
    let (regen2, third_hash) = regeneration(at2, Duration::ZERO);
    let event = audit(
        AuditKind::TokenRegenerated,
        at2,
        Some(&alice.id),
        Some(&token.id),
    );
    store
        .regenerate_token(&token.id, None, &regen2, &event)
        .await
        .unwrap();
    let first = store
        .lookup(&first_hash.hash)
        .await
        .unwrap()
        .unwrap()
        .secret_valid_until;
    assert_eq!(
        first,
        Some(at + Duration::minutes(10)),
        "the earlier end wins"
    );
    assert_eq!(
        store
            .lookup(&second_hash.hash)
            .await
            .unwrap()
            .unwrap()
            .secret_valid_until,
        Some(at2)
    );
    assert_eq!(
        store
            .lookup(&third_hash.hash)
            .await
            .unwrap()
            .unwrap()
            .secret_valid_until,
        None
    );
    let later = store.changes_since(changes.cursor).await.unwrap();
    let logged: HashSet<_> = later.hashes.iter().map(|h| h.0).collect();
    assert_eq!(
        logged,
        HashSet::from([first_hash.hash.0, second_hash.hash.0, third_hash.hash.0])
    );

    let kinds: Vec<_> = store
        .audit_events(&AuditFilter {
            subject_user: Some(alice.id.clone()),
            limit: 2,
            ..AuditFilter::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event.kind)
        .collect();
    assert_eq!(
        kinds,
        [AuditKind::TokenRegenerated, AuditKind::TokenRegenerated]
    );
}

pub async fn regenerate_refuses_revoked_and_expired_tokens(db: &dyn Database) {
    let store = db.open().await;
    let store = &*store;
    let alice = add_user(store, "alice").await;
    let (revoked, _) = add_token(store, &alice.id, T0).await;
    revoke(store, &revoked, T0 + Duration::hours(1)).await;
    let (expiring, _) = add_token(store, &alice.id, T0).await;
    let after_expiry = expiring.expires_at.unwrap();

    let epoch = store.change_epoch();
    let cursor = store.change_cursor().await.unwrap();
    let audits = audit_count(store).await;

    let (regen, new_hash) = regeneration(T0 + Duration::hours(2), Duration::ZERO);
    let event = audit(
        AuditKind::TokenRegenerated,
        regen.at,
        Some(&alice.id),
        Some(&revoked.id),
    );
    let err = store
        .regenerate_token(&revoked.id, Some(&alice.id), &regen, &event)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidState(_)), "{err:?}");
    assert!(store.lookup(&new_hash.hash).await.unwrap().is_none());

    let (regen, new_hash) = regeneration(after_expiry, Duration::ZERO);
    let err = store
        .regenerate_token(&expiring.id, Some(&alice.id), &regen, &event)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::InvalidState("token has expired")),
        "{err:?}"
    );
    assert!(store.lookup(&new_hash.hash).await.unwrap().is_none());
    assert_eq!(
        store.token(&expiring.id, None).await.unwrap(),
        Some(expiring)
    );

    assert_eq!(store.change_epoch(), epoch);
    assert_eq!(store.change_cursor().await.unwrap(), cursor);
    assert_eq!(audit_count(store).await, audits);
}

pub async fn old_secrets_in_their_grace_period_are_listed_per_owner(db: &dyn Database) {
    let store = db.open().await;
    let store = &*store;
    let alice = add_user(store, "alice").await;
    let bob = add_user(store, "bob").await;
    let regenerate = |token: TokenRecord, at, grace| async move {
        let (regen, _) = regeneration(at, grace);
        let event = audit(
            AuditKind::TokenRegenerated,
            at,
            Some(&token.owner),
            Some(&token.id),
        );
        store
            .regenerate_token(&token.id, None, &regen, &event)
            .await
            .unwrap();
    };
    let at = T0 + Duration::hours(1);
    // Alice: one token rolled twice with grace (the later end counts), one rolled without
    // grace, one never rolled, one rolled with grace and then revoked. Bob: one with grace.
    let (rolled, _) = add_token(store, &alice.id, T0).await;
    regenerate(rolled.clone(), at, Duration::hours(2)).await;
    regenerate(rolled.clone(), at + Duration::minutes(5), Duration::days(1)).await;
    let (no_grace, _) = add_token(store, &alice.id, T0).await;
    regenerate(no_grace.clone(), at, Duration::ZERO).await;
    add_token(store, &alice.id, T0).await;
    let (revoked, _) = add_token(store, &alice.id, T0).await;
    regenerate(revoked.clone(), at, Duration::days(1)).await;
    revoke(store, &revoked, at + Duration::minutes(1)).await;
    let (bobs, _) = add_token(store, &bob.id, T0).await;
    regenerate(bobs.clone(), at, Duration::hours(3)).await;

    let now = at + Duration::minutes(10);
    let later = at + Duration::minutes(5) + Duration::days(1);
    assert_eq!(
        store.old_secrets_until(Some(&alice.id), now).await.unwrap(),
        vec![(rolled.id.clone(), later)],
        "only alice's unrevoked token whose old secret still works, with its latest end"
    );
    let mut everyone = vec![
        (rolled.id.clone(), later),
        (bobs.id.clone(), at + Duration::hours(3)),
    ];
    everyone.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    assert_eq!(store.old_secrets_until(None, now).await.unwrap(), everyone);
    assert_eq!(
        store
            .old_secrets_until(Some(&alice.id), later)
            .await
            .unwrap(),
        vec![],
        "at its end, the old secret no longer works"
    );
}

pub async fn revoke_is_idempotent(db: &dyn Database) {
    let store = db.open().await;
    let store = &*store;
    let alice = add_user(store, "alice").await;
    let (token, first_hash) = add_token(store, &alice.id, T0).await;
    let (regen, second_hash) = regeneration(T0 + Duration::hours(1), Duration::hours(24));
    let event = audit(
        AuditKind::TokenRegenerated,
        regen.at,
        Some(&alice.id),
        Some(&token.id),
    );
    store
        .regenerate_token(&token.id, None, &regen, &event)
        .await
        .unwrap();
    let cursor = store.change_cursor().await.unwrap();
    let epoch = store.change_epoch();

    let at = T0 + Duration::hours(2);
    let event = audit(
        AuditKind::TokenRevoked,
        at,
        Some(&alice.id),
        Some(&token.id),
    );
    let revoked = store
        .revoke_token(
            &token.id,
            Some(&alice.id),
            &revocation(at, "leaked"),
            &event,
        )
        .await
        .unwrap();
    assert_eq!(revoked.revoked_at, Some(at));
    assert_eq!(revoked.revoked_by.as_deref(), Some("cli (root)"));
    assert_eq!(revoked.revoke_reason.as_deref(), Some("leaked"));
    assert_eq!(
        store.token(&token.id, None).await.unwrap(),
        Some(revoked.clone())
    );
    assert!(store.change_epoch() > epoch);
    let changes = store.changes_since(cursor).await.unwrap();
    let logged: HashSet<_> = changes.hashes.iter().map(|h| h.0).collect();
    assert_eq!(
        logged,
        HashSet::from([first_hash.hash.0, second_hash.hash.0]),
        "every secret is logged"
    );
    for hash in [first_hash.hash, second_hash.hash] {
        assert_eq!(
            store.lookup(&hash).await.unwrap().unwrap().token.revoked_at,
            Some(at)
        );
    }

    let audits = audit_count(store).await;
    let epoch = store.change_epoch();
    let later = at + Duration::hours(1);
    let again = store
        .revoke_token(&token.id, None, &revocation(later, "again"), &event)
        .await
        .unwrap();
    assert_eq!(again, revoked, "a second revocation changes nothing");
    assert_eq!(
        audit_count(store).await,
        audits,
        "and writes no audit event"
    );
    assert_eq!(
        store.change_cursor().await.unwrap(),
        changes.cursor,
        "and logs no change"
    );
    assert_eq!(store.change_epoch(), epoch);
}

pub async fn lookup_finds_the_token_and_its_owner(db: &dyn Database) {
    let store = db.open().await;
    let store = &*store;
    let mut carol = user("carol");
    carol.disabled_at = Some(T0);
    let new = NewUser {
        user: carol.clone(),
        password_hash: None,
    };
    store
        .add_user(
            &new,
            &audit(AuditKind::UserAdded, T0, Some(&carol.id), None),
        )
        .await
        .unwrap();
    let alice = add_user(store, "alice").await;
    let (token, hash) = add_token(store, &alice.id, T0).await;
    let (carols, carols_hash) = add_token(store, &carol.id, T0).await;

    let found = store.lookup(&hash.hash).await.unwrap().unwrap();
    assert_eq!(found.token, token);
    assert_eq!(found.owner_name, alice.name);
    assert!(!found.owner_disabled);
    assert_eq!(found.secret_valid_until, None);
    let found = store.lookup(&carols_hash.hash).await.unwrap().unwrap();
    assert_eq!(found.token, carols);
    assert!(found.owner_disabled);

    assert!(store.lookup(&TokenHash([7; 32])).await.unwrap().is_none());
    assert!(
        store
            .lookup(&secret_and_hash().1.hash)
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn record_usage_keeps_the_latest_use(db: &dyn Database) {
    let store = db.open().await;
    let store = &*store;
    let alice = add_user(store, "alice").await;
    let (a, _) = add_token(store, &alice.id, T0).await;
    let (b, _) = add_token(store, &alice.id, T0).await;
    let (unknown, _) = token_record(&alice.id, T0);
    let ip1 = "198.51.100.1".parse().unwrap();
    let ip2 = "2001:db8::2".parse().unwrap();
    let t = |s: i64| T0 + Duration::seconds(s);

    store.record_usage(&[]).await.unwrap();
    store
        .record_usage(&[
            Usage {
                token_id: a.id.clone(),
                at: t(10),
                ip: Some(ip1),
            },
            Usage {
                token_id: a.id.clone(),
                at: t(5),
                ip: Some(ip2),
            },
            Usage {
                token_id: b.id.clone(),
                at: t(3),
                ip: Some(ip2),
            },
            Usage {
                token_id: unknown.id.clone(),
                at: t(3),
                ip: None,
            },
        ])
        .await
        .unwrap();
    let a_now = store.token(&a.id, None).await.unwrap().unwrap();
    assert_eq!(
        (a_now.last_used_at, a_now.last_used_ip),
        (Some(t(10)), Some(ip1))
    );
    let b_now = store.token(&b.id, None).await.unwrap().unwrap();
    assert_eq!(
        (b_now.last_used_at, b_now.last_used_ip),
        (Some(t(3)), Some(ip2))
    );

    // An older batch (another writer that flushed late) does not move a use backwards.
    store
        .record_usage(&[Usage {
            token_id: a.id.clone(),
            at: t(7),
            ip: Some(ip2),
        }])
        .await
        .unwrap();
    let a_now = store.token(&a.id, None).await.unwrap().unwrap();
    assert_eq!(
        (a_now.last_used_at, a_now.last_used_ip),
        (Some(t(10)), Some(ip1))
    );

    store
        .record_usage(&[Usage {
            token_id: a.id.clone(),
            at: t(20),
            ip: None,
        }])
        .await
        .unwrap();
    let a_now = store.token(&a.id, None).await.unwrap().unwrap();
    assert_eq!(
        (a_now.last_used_at, a_now.last_used_ip),
        (Some(t(20)), None)
    );
    assert_eq!(store.token(&unknown.id, None).await.unwrap(), None);

    // A batch larger than one write transaction holds (SQLite writes a few thousand to one):
    // its first and last uses are both recorded.
    let mut many: Vec<Usage> = (0..5_000)
        .map(|_| Usage {
            token_id: token_record(&alice.id, T0).0.id,
            at: t(30),
            ip: None,
        })
        .collect();
    many[0].token_id = b.id.clone();
    many[4_999].token_id = a.id.clone();
    store.record_usage(&many).await.unwrap();
    for id in [&a.id, &b.id] {
        let now = store.token(id, None).await.unwrap().unwrap();
        assert_eq!(now.last_used_at, Some(t(30)));
    }
}

pub async fn audit_events_list_newest_first_and_filter(db: &dyn Database) {
    let store = db.open().await;
    let store = &*store;
    let alice = user("alice");
    let bob = user("bob");
    let mut appended = Vec::new();
    for i in 0..6 {
        let subject = if i % 2 == 0 { &alice.id } else { &bob.id };
        let mut event = audit(
            AuditKind::TokenExpiredUse,
            T0 + Duration::seconds(i),
            Some(subject),
            None,
        );
        event.detail = Some(format!("event {i}"));
        event.ip = (i == 3).then(|| "2001:db8::1".parse().unwrap());
        store.append_audit(&event).await.unwrap();
        appended.push(event);
    }
    let mut no_subject = audit(AuditKind::TokenExpiredUse, T0, None, None);
    no_subject.actor.label = "anonymous".to_owned();
    store.append_audit(&no_subject).await.unwrap();
    appended.push(no_subject);

    let all = store
        .audit_events(&AuditFilter {
            limit: 100,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let events: Vec<_> = all.iter().map(|e| e.event.clone()).collect();
    let mut newest_first = appended.clone();
    newest_first.reverse();
    assert_eq!(events, newest_first);
    assert!(all.windows(2).all(|w| w[0].seq > w[1].seq));

    let alices = store
        .audit_events(&AuditFilter {
            subject_user: Some(alice.id.clone()),
            limit: 2,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let details: Vec<_> = alices
        .iter()
        .map(|e| e.event.detail.as_deref().unwrap())
        .collect();
    assert_eq!(details, ["event 4", "event 2"]);
    let rest = store
        .audit_events(&AuditFilter {
            subject_user: Some(alice.id.clone()),
            before_seq: Some(alices[1].seq),
            limit: 10,
        })
        .await
        .unwrap();
    let details: Vec<_> = rest
        .iter()
        .map(|e| e.event.detail.as_deref().unwrap())
        .collect();
    assert_eq!(details, ["event 0"]);

    let older = store
        .audit_events(&AuditFilter {
            before_seq: Some(all[1].seq),
            limit: 2,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(older, all[2..4]);
}

pub async fn changes_since_follows_cursors(db: &dyn Database) {
    let store = db.open().await;
    let store = &*store;
    assert_eq!(store.change_cursor().await.unwrap(), 0);
    let empty = store.changes_since(0).await.unwrap();
    assert!(empty.complete && empty.hashes.is_empty());
    assert_eq!(empty.cursor, 0);

    let alice = add_user(store, "alice").await;
    let epoch = store.change_epoch();
    let (one, one_hash) = add_token(store, &alice.id, T0).await;
    assert!(
        store.change_epoch() > epoch,
        "a new hash is announced: caches keep the set of hashes that exist"
    );
    let (two, two_hash) = add_token(store, &alice.id, T0).await;
    let created = store.changes_since(0).await.unwrap();
    assert!(created.complete);
    assert_eq!(created.hashes, [one_hash.hash, two_hash.hash]);
    assert_eq!(created.cursor, store.change_cursor().await.unwrap());

    revoke(store, &one, T0 + Duration::minutes(1)).await;
    let first = store.changes_since(created.cursor).await.unwrap();
    assert!(first.complete);
    assert_eq!(first.hashes, [one_hash.hash]);
    assert_eq!(first.cursor, store.change_cursor().await.unwrap());
    assert!(first.cursor > created.cursor);

    let nothing = store.changes_since(first.cursor).await.unwrap();
    assert!(nothing.complete && nothing.hashes.is_empty());
    assert_eq!(nothing.cursor, first.cursor);

    revoke(store, &two, T0 + Duration::minutes(2)).await;
    let second = store.changes_since(first.cursor).await.unwrap();
    assert!(second.complete);
    assert_eq!(second.hashes, [two_hash.hash]);
    assert!(second.cursor > first.cursor);
    assert_eq!(
        store.changes_since(0).await.unwrap().hashes,
        [one_hash.hash, two_hash.hash, one_hash.hash, two_hash.hash]
    );

    // A cursor from beyond the log's end belongs to another database: start over.
    let foreign = store.changes_since(second.cursor + 100).await.unwrap();
    assert!(!foreign.complete);
    assert_eq!(foreign.cursor, second.cursor);
}

pub async fn stored_hashes_pages_through_every_hash(db: &dyn Database) {
    let store = db.open().await;
    let store = &*store;
    assert!(store.stored_hashes(None, 10).await.unwrap().is_empty());
    let alice = add_user(store, "alice").await;
    let mut expected = Vec::new();
    for i in 0..7 {
        let (token, hash) = add_token(store, &alice.id, T0).await;
        expected.push(hash.hash);
        if i % 3 == 0 {
            let (regen, new_hash) = regeneration(T0 + Duration::minutes(1), Duration::ZERO);
            let event = audit(AuditKind::TokenRegenerated, T0, None, Some(&token.id));
            store
                .regenerate_token(&token.id, None, &regen, &event)
                .await
                .unwrap();
            expected.push(new_hash.hash);
        }
        if i % 2 == 0 {
            revoke(store, &token, T0 + Duration::minutes(2)).await;
        }
    }
    expected.sort_by_key(|h| h.0);
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = store.stored_hashes(after.as_ref(), 3).await.unwrap();
        assert!(page.len() <= 3);
        after = page.last().copied();
        paged.extend(page);
        if after.is_none() {
            break;
        }
    }
    assert_eq!(
        paged, expected,
        "every hash, of every state, once, in byte order"
    );
    // Every one of them reached the change log: a cache that started empty knows them all.
    let logged: HashSet<[u8; 32]> = store
        .changes_since(0)
        .await
        .unwrap()
        .hashes
        .iter()
        .map(|h| h.0)
        .collect();
    assert!(expected.iter().all(|h| logged.contains(&h.0)));
}

pub async fn secrets_by_recent_use_page_live_secrets_latest_use_first(db: &dyn Database) {
    let store = db.open().await;
    let store = &*store;
    let now = T0 + Duration::minutes(20);
    assert!(
        store
            .secrets_by_recent_use(now, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let alice = add_user(store, "alice").await;
    let bob = add_user(store, "bob").await;
    // Created a second apart, so creation orders them.
    let at = |s: i64| T0 + Duration::seconds(s);
    let (used_early, used_early_hash) = add_token(store, &alice.id, at(1)).await;
    let (used_late, used_late_hash) = add_token(store, &bob.id, at(2)).await;
    let (used_early_too, used_early_too_hash) = add_token(store, &alice.id, at(3)).await;
    let (_, never_hash) = add_token(store, &alice.id, at(4)).await;
    let (_, never_newer_hash) = add_token(store, &bob.id, at(5)).await;
    // Regenerated with a grace period still running at `now`: both secrets work.
    let (in_grace, in_grace_old) = add_token(store, &alice.id, at(6)).await;
    let (regen, in_grace_new) = regeneration(at(60), Duration::hours(1));
    let event = audit(
        AuditKind::TokenRegenerated,
        at(60),
        None,
        Some(&in_grace.id),
    );
    store
        .regenerate_token(&in_grace.id, None, &regen, &event)
        .await
        .unwrap();
    // Regenerated without one: only the new secret works.
    let (retired, _retired_old) = add_token(store, &alice.id, at(7)).await;
    let (regen, retired_new) = regeneration(at(60), Duration::ZERO);
    let event = audit(AuditKind::TokenRegenerated, at(60), None, Some(&retired.id));
    store
        .regenerate_token(&retired.id, None, &regen, &event)
        .await
        .unwrap();
    // Revoked, and expired at `now`: skipped, used or not.
    let (revoked, _) = add_token(store, &alice.id, at(8)).await;
    revoke(store, &revoked, at(70)).await;
    let (mut expired, expired_hash) = token_record(&alice.id, at(9));
    expired.expires_at = Some(now);
    let event = audit(AuditKind::TokenCreated, at(9), None, Some(&expired.id));
    store
        .insert_token(&expired, &expired_hash, &event, None)
        .await
        .unwrap();
    let used = |token: &TokenRecord, minutes: i64| Usage {
        token_id: token.id.clone(),
        at: T0 + Duration::minutes(minutes),
        ip: None,
    };
    store
        .record_usage(&[
            used(&used_early, 5),
            used(&used_late, 10),
            used(&used_early_too, 5),
            used(&in_grace, 7),
            used(&revoked, 15),
            used(&expired, 15),
        ])
        .await
        .unwrap();

    let mut in_grace_hashes = [in_grace_old.hash, in_grace_new.hash];
    in_grace_hashes.sort_by_key(|h| std::cmp::Reverse(h.0));
    let expected = [
        used_late_hash.hash,
        in_grace_hashes[0],
        in_grace_hashes[1],
        // A tie in last use: the newer token first.
        used_early_too_hash.hash,
        used_early_hash.hash,
        // Never used, newest first.
        retired_new.hash,
        never_newer_hash.hash,
        never_hash.hash,
    ];
    for limit in [1, 2, 3, 5, 100] {
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .secrets_by_recent_use(now, after.as_ref(), limit)
                .await
                .unwrap();
            assert!(page.len() <= limit as usize);
            let Some((hash, lookup)) = page.last() else {
                break;
            };
            after = Some(RecentUseCursor::after(hash, lookup));
            paged.extend(page);
        }
        let hashes: Vec<TokenHash> = paged.iter().map(|(hash, _)| *hash).collect();
        assert_eq!(hashes, expected, "pages of {limit}");
        for (hash, found) in &paged {
            assert_eq!(
                Some(found),
                store.lookup(hash).await.unwrap().as_ref(),
                "what lookup answers"
            );
        }
    }
    store_order_pages_the_same_secrets(store, now, &expected).await;
}

/// `secrets_in_store_order` gives the secrets `secrets_by_recent_use` gives (`expected`), with
/// what `lookup` answers, in pages of at most `limit` tokens, whenever the store holds no more
/// than `at_most` secrets; never when it holds more. A store without that order (PostgreSQL)
/// answers `None` whatever `at_most`.
async fn store_order_pages_the_same_secrets(
    store: &dyn Store,
    now: time::OffsetDateTime,
    expected: &[TokenHash],
) {
    let stored = store.stored_hashes(None, 1_000).await.unwrap().len() as u64;
    assert!(stored > expected.len() as u64, "revoked and retired too");
    assert!(
        store
            .secrets_in_store_order(now, None, 100, stored - 1)
            .await
            .unwrap()
            .is_none(),
        "more stored than the cache takes"
    );
    if store
        .secrets_in_store_order(now, None, 100, stored)
        .await
        .unwrap()
        .is_none()
    {
        assert!(
            store
                .secrets_in_store_order(now, None, 100, u64::MAX)
                .await
                .unwrap()
                .is_none(),
            "a store without a store order never has one"
        );
        return;
    }
    let expected: HashSet<TokenHash> = expected.iter().copied().collect();
    for limit in [1, 2, 3, 100] {
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let Some(page) = store
                .secrets_in_store_order(now, after.as_ref(), limit, stored)
                .await
                .unwrap()
            else {
                panic!("pages stopped after the first was given (pages of {limit})");
            };
            let tokens: HashSet<_> = page
                .secrets
                .iter()
                .map(|(_, l)| l.token.id.clone())
                .collect();
            assert!(tokens.len() <= limit as usize, "pages of {limit} tokens");
            paged.extend(page.secrets);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let hashes: HashSet<TokenHash> = paged.iter().map(|(hash, _)| *hash).collect();
        assert_eq!(
            hashes.len(),
            paged.len(),
            "each secret once, pages of {limit}"
        );
        assert_eq!(hashes, expected, "pages of {limit}");
        for (hash, found) in &paged {
            assert_eq!(
                Some(found),
                store.lookup(hash).await.unwrap().as_ref(),
                "what lookup answers"
            );
        }
    }
    // Past the first page, a page read as pieces (as the warm-up reads them, each on its own)
    // gives what the whole page gives.
    for (limit, parts) in [(1, 2), (2, 3), (5, 2), (100, 3), (100, 200)] {
        let first = store_order_page(store, now, None, limit, stored).await;
        let mut paged = first.secrets;
        let mut after = first.next;
        while let Some(cursor) = after {
            let pieces = cursor.pieces(limit, parts);
            assert!(
                !pieces.is_empty() && pieces.len() <= parts as usize,
                "at most {parts} pieces"
            );
            assert!(pieces.iter().all(|(_, piece)| *piece > 0), "no empty piece");
            let whole = store_order_page(store, now, Some(&cursor), limit, stored).await;
            let mut read = Vec::new();
            let mut next = None;
            for (piece, piece_limit) in &pieces {
                let page = store_order_page(store, now, Some(piece), *piece_limit, stored).await;
                read.extend(page.secrets);
                next = page.next;
            }
            let hashes = |page: &[(TokenHash, _)]| page.iter().map(|(h, _)| *h).collect::<Vec<_>>();
            assert_eq!(
                hashes(&read),
                hashes(&whole.secrets),
                "a page of {limit} in {parts} pieces"
            );
            assert_eq!(next, whole.next, "the last piece ends where the page does");
            paged.extend(read);
            after = next;
        }
        let hashes: HashSet<TokenHash> = paged.iter().map(|(hash, _)| *hash).collect();
        assert_eq!(hashes.len(), paged.len(), "each secret once, pieces");
        assert_eq!(hashes, expected, "pages of {limit} in {parts} pieces");
    }
}

/// A page of `secrets_in_store_order` from a store that has that order.
async fn store_order_page(
    store: &dyn Store,
    now: time::OffsetDateTime,
    after: Option<&StoreOrderCursor>,
    limit: u32,
    stored: u64,
) -> StoreOrderPage {
    let Some(page) = store
        .secrets_in_store_order(now, after, limit, stored)
        .await
        .unwrap()
    else {
        panic!("a store with a store order answered none");
    };
    page
}

pub async fn a_pruned_change_log_is_incomplete(db: &dyn Database) {
    let store = db.open().await;
    let store = &*store;
    let alice = add_user(store, "alice").await;
    let (one, _) = add_token(store, &alice.id, T0).await;
    let (two, two_hash) = add_token(store, &alice.id, T0).await;
    revoke(store, &one, T0).await;
    let after_one = store.change_cursor().await.unwrap();

    // More than a day later, the next logged change prunes the first.
    revoke(store, &two, T0 + Duration::hours(25)).await;
    let from_start = store.changes_since(0).await.unwrap();
    assert!(!from_start.complete, "entries after cursor 0 were pruned");
    assert_eq!(from_start.hashes, [two_hash.hash]);
    let caught_up = store.changes_since(after_one).await.unwrap();
    assert!(caught_up.complete, "nothing after this cursor was pruned");
    assert_eq!(caught_up.hashes, [two_hash.hash]);
    assert_eq!(caught_up.cursor, from_start.cursor);
    assert!(
        store
            .changes_since(from_start.cursor)
            .await
            .unwrap()
            .complete
    );
}

pub async fn a_second_handle_sees_revocations(db: &dyn Database) {
    let first = db.open().await;
    let second = db.open().await;
    let alice = add_user(&*first, "alice").await;
    let (token, hash) = add_token(&*first, &alice.id, T0).await;
    assert_eq!(
        second.token(&token.id, None).await.unwrap(),
        Some(token.clone())
    );
    // Read once before the revocation, so a reused connection must not answer from then.
    assert_eq!(
        second.lookup(&hash.hash).await.unwrap().map(|l| l.token),
        Some(token.clone())
    );

    let epoch = second.change_epoch();
    let cursor = second.change_cursor().await.unwrap();
    revoke(&*first, &token, T0 + Duration::minutes(1)).await;
    eventually("the other handle's epoch advanced", || {
        second.change_epoch() > epoch
    })
    .await;
    let changes = second.changes_since(cursor).await.unwrap();
    assert!(changes.complete);
    assert_eq!(changes.hashes, [hash.hash]);
    assert!(
        second
            .lookup(&hash.hash)
            .await
            .unwrap()
            .unwrap()
            .token
            .revoked_at
            .is_some()
    );

    let epoch = first.change_epoch();
    let (regen, _) = regeneration(T0, Duration::ZERO);
    let (other, _) = add_token(&*second, &alice.id, T0).await;
    let event = audit(
        AuditKind::TokenRegenerated,
        T0,
        Some(&alice.id),
        Some(&other.id),
    );
    second
        .regenerate_token(&other.id, None, &regen, &event)
        .await
        .unwrap();
    eventually("and the other way round", || first.change_epoch() > epoch).await;
}

pub async fn a_revocation_survives_reopening(db: &dyn Database) {
    let store = db.open().await;
    let alice = add_user(&*store, "alice").await;
    let (token, hash) = add_token(&*store, &alice.id, T0).await;
    let revoked = revoke(&*store, &token, T0 + Duration::minutes(1)).await;
    drop(store);

    let reopened = db.open().await;
    assert_eq!(
        reopened.token(&token.id, None).await.unwrap(),
        Some(revoked.clone())
    );
    assert_eq!(
        reopened.lookup(&hash.hash).await.unwrap().unwrap().token,
        revoked
    );
    assert_eq!(
        reopened.changes_since(0).await.unwrap().hashes,
        [hash.hash, hash.hash],
        "created, then revoked"
    );
}

pub async fn the_cache_snapshot_seal_is_the_last_one_kept(db: &dyn Database) {
    let store = db.open().await;
    assert_eq!(store.cache_snapshot_seal().await.unwrap(), None);
    if !store.seal_cache_snapshot(&[1; 32]).await.unwrap() {
        // A store that keeps no seal (shared by many instances) never has one.
        assert_eq!(store.cache_snapshot_seal().await.unwrap(), None);
        return;
    }
    assert_eq!(store.cache_snapshot_seal().await.unwrap(), Some([1; 32]));
    assert!(store.seal_cache_snapshot(&[2; 32]).await.unwrap());
    drop(store);
    let reopened = db.open().await;
    assert_eq!(reopened.cache_snapshot_seal().await.unwrap(), Some([2; 32]));
    // A store restored from a dump starts without one.
    let sibling = db.sibling().await;
    let restored = sibling.open().await;
    restored
        .restore(&reopened.dump().await.unwrap())
        .await
        .unwrap();
    assert_eq!(restored.cache_snapshot_seal().await.unwrap(), None);
}

pub async fn two_handles_open_a_fresh_database_at_once(db: &dyn Database) {
    let (first, second) = tokio::join!(db.open(), db.open());
    let alice = add_user(&*first, "alice").await;
    assert_eq!(second.user_by_id(&alice.id).await.unwrap(), Some(alice));
    second.ping().await.unwrap();
}

pub async fn concurrent_writers_on_two_handles_all_succeed(db: &dyn Database) {
    // Two handles stand for two processes; each write reads before it writes (regenerate
    // checks the token's state first), the pattern that fails with SQLITE_BUSY unless a write
    // transaction takes the write lock up front.
    const TOKENS: usize = 48;
    let handles: [Arc<dyn Store>; 2] = [Arc::from(db.open().await), Arc::from(db.open().await)];
    let alice = add_user(&*handles[0], "alice").await;
    let mut tokens = Vec::new();
    for i in 0..TOKENS {
        let at = T0 + Duration::seconds(i64::try_from(i).unwrap());
        tokens.push(add_token(&*handles[0], &alice.id, at).await.0);
    }
    let cursor = handles[1].change_cursor().await.unwrap();
    let at = T0 + Duration::hours(1);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, token) in tokens.iter().cloned().enumerate() {
        let store = Arc::clone(&handles[i % 2]);
        tasks.spawn(async move {
            if i % 3 == 0 {
                revoke(&*store, &token, at).await;
            } else {
                let (regen, _) = regeneration(at, Duration::ZERO);
                let event = audit(
                    AuditKind::TokenRegenerated,
                    at,
                    Some(&token.owner),
                    Some(&token.id),
                );
                store
                    .regenerate_token(&token.id, None, &regen, &event)
                    .await
                    .unwrap();
            }
            let usage = Usage {
                token_id: token.id.clone(),
                at,
                ip: None,
            };
            store.record_usage(&[usage]).await.unwrap();
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let changes = handles[0].changes_since(cursor).await.unwrap();
    assert!(changes.complete);
    assert_eq!(
        changes.hashes.len(),
        TOKENS / 3 + 2 * (TOKENS - TOKENS / 3),
        "a revoked token logs its hash, a regenerated one its old and its new hash"
    );
    let listed = handles[1].list_tokens(None, &page(100)).await.unwrap();
    assert_eq!(
        listed.iter().filter(|t| t.revoked_at.is_some()).count(),
        TOKENS / 3
    );
    assert_eq!(
        listed.iter().filter(|t| t.regenerated_at.is_some()).count(),
        TOKENS - TOKENS / 3
    );
    assert!(listed.iter().all(|t| t.last_used_at == Some(at)));
}

/// Fills a store with one of everything a snapshot carries: an admin with a password, a
/// disabled user, an active, a revoked, a used and a regenerated (in grace) token, and their
/// audit events.
pub async fn populate(store: &dyn Store) -> Vec<TokenHash> {
    let mut admin = user("root");
    admin.is_admin = true;
    store
        .add_user(
            &NewUser {
                user: admin.clone(),
                password_hash: Some(PASSWORD_HASH.to_owned()),
            },
            &audit(AuditKind::UserAdded, T0, Some(&admin.id), None),
        )
        .await
        .unwrap();
    let mut gone = user("gone");
    gone.disabled_at = Some(T0 + Duration::hours(2));
    store
        .add_user(
            &NewUser {
                user: gone.clone(),
                password_hash: None,
            },
            &audit(AuditKind::UserAdded, T0, Some(&gone.id), None),
        )
        .await
        .unwrap();
    let alice = add_user(store, "alice").await;
    let ann = user("ann@example.com");
    store
        .add_user_with_identity(
            &NewUser {
                user: ann.clone(),
                password_hash: None,
            },
            &identity(ISSUER, "ann-sub", &ann.id),
            &audit(AuditKind::UserAdded, T0, Some(&ann.id), None),
        )
        .await
        .unwrap();
    let (_active, active_hash) = add_token(store, &alice.id, T0).await;
    let (revoked, revoked_hash) = add_token(store, &alice.id, T0 + Duration::seconds(1)).await;
    revoke(store, &revoked, T0 + Duration::minutes(5)).await;
    let (used, used_hash) = add_token(store, &gone.id, T0 + Duration::seconds(2)).await;
    store
        .record_usage(&[Usage {
            token_id: used.id.clone(),
            at: T0 + Duration::minutes(1),
            ip: Some("2001:db8::9".parse().unwrap()),
        }])
        .await
        .unwrap();
    let (rolled, old_hash) = add_token(store, &admin.id, T0 + Duration::seconds(3)).await;
    let (regen, new_hash) = regeneration(T0 + Duration::minutes(10), Duration::hours(1));
    let event = audit(
        AuditKind::TokenRegenerated,
        regen.at,
        Some(&admin.id),
        Some(&rolled.id),
    );
    store
        .regenerate_token(&rolled.id, None, &regen, &event)
        .await
        .unwrap();
    vec![
        active_hash.hash,
        revoked_hash.hash,
        used_hash.hash,
        old_hash.hash,
        new_hash.hash,
    ]
}

pub async fn dump_and_restore_carry_everything(db: &dyn Database) {
    let source = db.open().await;
    let hashes = populate(&*source).await;
    let snapshot = source.dump().await.unwrap();
    assert_eq!(snapshot.users.len(), 4);
    assert_eq!(snapshot.tokens.len(), 4);
    assert_eq!(snapshot.hashes.len(), 5);
    assert_eq!(snapshot.audit.len(), 4 + 4 + 1 + 1);
    assert_eq!(snapshot.identities.len(), 1);
    assert_eq!(
        format!("{snapshot:?}"),
        "Snapshot { users: 4, tokens: 4, hashes: 5, audit: 10, identities: 1 }",
        "Debug shows no password hash"
    );

    // The target is another database of the same engine (the cross-engine copy is the
    // PostgreSQL module's to test, since it needs both engines).
    let target_db = db.sibling().await;
    let target = target_db.open().await;
    let epoch = target.change_epoch();
    target.restore(&snapshot).await.unwrap();
    assert!(target.change_epoch() > epoch, "a restore is announced");
    assert_eq!(target.dump().await.unwrap(), snapshot);
    for hash in &hashes {
        assert_eq!(
            target.lookup(hash).await.unwrap(),
            source.lookup(hash).await.unwrap()
        );
    }
    let root = snapshot
        .users
        .iter()
        .find(|u| u.user.name.as_str() == "root")
        .unwrap()
        .user
        .id
        .clone();
    assert_eq!(
        target.password_hash(&root).await.unwrap().as_deref(),
        Some(PASSWORD_HASH)
    );
    let ann = &snapshot.identities[0];
    assert_eq!(
        target
            .user_by_identity(ISSUER, "ann-sub")
            .await
            .unwrap()
            .map(|u| u.id),
        Some(ann.user.clone()),
        "the link is carried"
    );
    // The change log is not carried; instead a restore tells every cache on the target to
    // start over (a cache from before it sees an incomplete log) and announces it.
    let restored = target.changes_since(0).await.unwrap();
    assert!(
        !restored.complete,
        "caches from before the restore start over"
    );
    assert!(restored.hashes.is_empty());
    assert!(
        target
            .changes_since(restored.cursor)
            .await
            .unwrap()
            .complete
    );
    // New audit events follow the carried ones.
    store_one_more_event(&*target).await;
    let newest = target
        .audit_events(&AuditFilter {
            limit: 1,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert!(newest[0].seq > snapshot.audit.last().unwrap().seq);
}

async fn store_one_more_event(store: &dyn Store) {
    store
        .append_audit(&audit(AuditKind::TokenExpiredUse, T0, None, None))
        .await
        .unwrap();
}

pub async fn restore_refuses_a_store_that_is_not_empty(db: &dyn Database) {
    let source = db.open().await;
    populate(&*source).await;
    let snapshot = source.dump().await.unwrap();

    let err = source.restore(&snapshot).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidState(_)), "{err:?}");
    assert_eq!(source.dump().await.unwrap(), snapshot, "nothing written");

    // Even a lone audit event makes a store non-empty.
    let target_db = db.sibling().await;
    let target = target_db.open().await;
    store_one_more_event(&*target).await;
    let err = target.restore(&snapshot).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidState(_)), "{err:?}");
    assert!(target.list_users(&every_user()).await.unwrap().is_empty());
}

/// Counts rows and says stop after `after` of them, as Ctrl-C at the command line does.
struct StopAfter {
    after: u64,
    total: AtomicU64,
    done: AtomicU64,
}

impl Progress for StopAfter {
    fn start(&self, total: u64) {
        self.total.store(total, Ordering::SeqCst);
    }
    fn advance(&self, done: u64) {
        self.done.fetch_add(done, Ordering::SeqCst);
    }
    fn stopped(&self) -> bool {
        self.done.load(Ordering::SeqCst) >= self.after
    }
}

pub async fn an_interrupted_restore_writes_nothing(db: &dyn Database) {
    let source = db.open().await;
    populate(&*source).await;
    let snapshot = source.dump().await.unwrap();
    assert!(snapshot.rows() > 3, "{snapshot:?}");

    let target_db = db.sibling().await;
    let target = target_db.open().await;
    let stop = Arc::new(StopAfter {
        after: 3,
        total: AtomicU64::new(0),
        done: AtomicU64::new(0),
    });
    let err = target
        .restore_watched(&snapshot, Arc::clone(&stop) as Arc<dyn Progress>)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Interrupted), "{err:?}");
    assert_eq!(stop.total.load(Ordering::SeqCst), snapshot.rows());
    assert_eq!(stop.done.load(Ordering::SeqCst), 3, "stopped where told");
    assert_eq!(
        target.dump().await.unwrap(),
        keyward_store::Snapshot::default(),
        "the rows written before the stop were rolled back"
    );

    // Unwatched, the same restore then writes everything.
    target.restore(&snapshot).await.unwrap();
    assert_eq!(target.dump().await.unwrap(), snapshot);
}

fn session_for(user: &keyward_core::UserId, at: time::OffsetDateTime) -> SessionRecord {
    let (_, hash) = secret_and_hash();
    SessionRecord {
        id_hash: hash.hash,
        user: user.clone(),
        created_at: at,
        last_seen_at: at,
        expires_at: at + Duration::days(7),
        signed_in_with: None,
    }
}

/// The issuer of the identities these checks link.
const ISSUER: &str = "https://accounts.example.com";

fn identity(issuer: &str, subject: &str, user: &keyward_core::UserId) -> IdentityRecord {
    IdentityRecord {
        issuer: issuer.to_owned(),
        subject: subject.to_owned(),
        user: user.clone(),
        created_at: T0,
    }
}

fn new_user(user: &keyward_core::User) -> NewUser {
    NewUser {
        user: user.clone(),
        password_hash: None,
    }
}

pub async fn an_identity_links_one_new_user_in_one_write(db: &dyn Database) {
    let store = db.open().await;
    let store = &*store;
    let ann = user("ann@example.com");
    let added = audit(AuditKind::UserAdded, T0, Some(&ann.id), None);
    let before = audit_count(store).await;
    store
        .add_user_with_identity(&new_user(&ann), &identity(ISSUER, "s-1", &ann.id), &added)
        .await
        .unwrap();
    assert_eq!(audit_count(store).await, before + 1);
    assert_eq!(
        store.user_by_identity(ISSUER, "s-1").await.unwrap(),
        Some(ann.clone())
    );
    assert_eq!(store.user_by_identity(ISSUER, "s-2").await.unwrap(), None);
    assert_eq!(
        store
            .user_by_identity("https://other.example.com", "s-1")
            .await
            .unwrap(),
        None,
        "a subject is the provider's own: another issuer's is another person"
    );
    assert_eq!(
        store.identities(&ann.id).await.unwrap(),
        vec![identity(ISSUER, "s-1", &ann.id)]
    );

    // A linked identity is not linked twice: neither the second user nor its event is written.
    let again = user("ann2");
    let err = store
        .add_user_with_identity(
            &new_user(&again),
            &identity(ISSUER, "s-1", &again.id),
            &added,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(store.user_by_name(&again.name).await.unwrap(), None);
    assert_eq!(audit_count(store).await, before + 1);

    // A taken name is not taken over: the identity stays unlinked.
    let namesake = user("ann@example.com");
    let err = store
        .add_user_with_identity(
            &new_user(&namesake),
            &identity(ISSUER, "s-2", &namesake.id),
            &added,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(store.user_by_identity(ISSUER, "s-2").await.unwrap(), None);

    // The identity must be the new user's.
    let bob = user("bob");
    let err = store
        .add_user_with_identity(&new_user(&bob), &identity(ISSUER, "s-3", &ann.id), &added)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidState(_)), "{err:?}");
    assert_eq!(store.user_by_name(&bob.name).await.unwrap(), None);
}

pub async fn a_session_keeps_how_it_was_signed_in(db: &dyn Database) {
    let store = db.open().await;
    let store = &*store;
    let alice = add_user(store, "alice").await;
    let signed_in = audit(AuditKind::UserSignedIn, T0, Some(&alice.id), None);
    let password = session_for(&alice.id, T0);
    let mut sso = session_for(&alice.id, T0);
    sso.signed_in_with = Some(ISSUER.to_owned());
    for session in [&password, &sso] {
        store
            .create_session(session, T0 - Duration::hours(12), &signed_in)
            .await
            .unwrap();
        assert_eq!(
            store.session(&session.id_hash).await.unwrap().as_ref(),
            Some(session)
        );
    }
}

pub async fn sessions_are_created_found_touched_and_ended(db: &dyn Database) {
    let store = db.open().await;
    let store = &*store;
    let alice = add_user(store, "alice").await;
    let session = session_for(&alice.id, T0);
    let signed_in = audit(AuditKind::UserSignedIn, T0, Some(&alice.id), None);
    let before = audit_count(store).await;
    store
        .create_session(&session, T0 - Duration::hours(12), &signed_in)
        .await
        .unwrap();
    assert_eq!(
        audit_count(store).await,
        before + 1,
        "the sign-in is recorded"
    );
    assert_eq!(
        store.session(&session.id_hash).await.unwrap(),
        Some(session.clone())
    );

    store
        .touch_session(&session.id_hash, T0 + Duration::minutes(5))
        .await
        .unwrap();
    // Touching never moves a session back in time.
    store.touch_session(&session.id_hash, T0).await.unwrap();
    let touched = store.session(&session.id_hash).await.unwrap().unwrap();
    assert_eq!(touched.last_seen_at, T0 + Duration::minutes(5));
    assert_eq!(touched.created_at, T0);

    // A new sign-in sweeps sessions that went stale.
    let later = T0 + Duration::days(1);
    let other = session_for(&alice.id, later);
    store
        .create_session(&other, later - Duration::hours(12), &signed_in)
        .await
        .unwrap();
    assert_eq!(store.session(&session.id_hash).await.unwrap(), None);
    assert!(store.session(&other.id_hash).await.unwrap().is_some());

    let signed_out = audit(AuditKind::UserSignedOut, later, Some(&alice.id), None);
    store
        .delete_session(&other.id_hash, Some(&signed_out))
        .await
        .unwrap();
    assert_eq!(store.session(&other.id_hash).await.unwrap(), None);
    store.delete_session(&other.id_hash, None).await.unwrap();
    let stranger = session_for(&keyward_core::UserId::generate(T0).unwrap(), T0);
    assert!(
        store
            .create_session(&stranger, T0, &signed_in)
            .await
            .is_err(),
        "a session needs a real user"
    );
}

pub async fn a_form_nonce_is_used_once_per_live_session(db: &dyn Database) {
    let store = db.open().await;
    let store = &*store;
    let alice = add_user(store, "alice").await;
    let one = session_for(&alice.id, T0);
    let two = session_for(&alice.id, T0);
    let event = audit(AuditKind::UserSignedIn, T0, Some(&alice.id), None);
    for s in [&one, &two] {
        store.create_session(s, T0, &event).await.unwrap();
    }
    assert!(store.use_form_nonce(&one.id_hash, "n1", T0).await.unwrap());
    assert!(
        !store.use_form_nonce(&one.id_hash, "n1", T0).await.unwrap(),
        "replayed"
    );
    assert!(store.use_form_nonce(&one.id_hash, "n2", T0).await.unwrap());
    assert!(
        store.use_form_nonce(&two.id_hash, "n1", T0).await.unwrap(),
        "per session"
    );

    store.delete_session(&one.id_hash, None).await.unwrap();
    assert!(
        !store.use_form_nonce(&one.id_hash, "n3", T0).await.unwrap(),
        "an ended session has no fresh nonces"
    );
}

pub async fn disabling_a_user_ends_sessions_and_announces_their_tokens(db: &dyn Database) {
    let store = db.open().await;
    let store = &*store;
    let alice = add_user(store, "alice").await;
    let bob = add_user(store, "bob").await;
    let (_, hash) = add_token(store, &alice.id, T0).await;
    let (regenerated, _) = add_token(store, &alice.id, T0).await;
    let (regen, new_hash) = regeneration(T0, Duration::hours(1));
    let event = audit(
        AuditKind::TokenRegenerated,
        T0,
        Some(&alice.id),
        Some(&regenerated.id),
    );
    store
        .regenerate_token(&regenerated.id, None, &regen, &event)
        .await
        .unwrap();
    let (_, bobs_hash) = add_token(store, &bob.id, T0).await;
    let alices_session = session_for(&alice.id, T0);
    let bobs_session = session_for(&bob.id, T0);
    let signed_in = audit(AuditKind::UserSignedIn, T0, None, None);
    store
        .create_session(&alices_session, T0, &signed_in)
        .await
        .unwrap();
    store
        .create_session(&bobs_session, T0, &signed_in)
        .await
        .unwrap();

    let cursor = store.change_cursor().await.unwrap();
    let epoch = store.change_epoch();
    let at = T0 + Duration::minutes(1);
    let disabled = store
        .update_user(
            &alice.id,
            &disabling(true),
            at,
            &[audit(AuditKind::UserDisabled, at, Some(&alice.id), None)],
        )
        .await
        .unwrap();
    assert_eq!(disabled.disabled_at, Some(at));
    assert!(store.change_epoch() > epoch, "caches hear of it at once");
    let changes = store.changes_since(cursor).await.unwrap();
    let changed: HashSet<_> = changes.hashes.iter().copied().collect();
    assert_eq!(changes.hashes.len(), 3, "every hash of every token of hers");
    assert!(changed.contains(&hash.hash) && changed.contains(&new_hash.hash));
    assert!(!changed.contains(&bobs_hash.hash));
    let found = store.lookup(&hash.hash).await.unwrap().unwrap();
    assert!(found.owner_disabled);
    assert_eq!(found.token.revoked_at, None, "suspended, not revoked");
    assert_eq!(store.session(&alices_session.id_hash).await.unwrap(), None);
    assert!(
        store
            .session(&bobs_session.id_hash)
            .await
            .unwrap()
            .is_some()
    );

    // Disabling again keeps the first time.
    let again = store
        .update_user(
            &alice.id,
            &disabling(true),
            at + Duration::hours(1),
            &[audit(AuditKind::UserDisabled, at, Some(&alice.id), None)],
        )
        .await
        .unwrap();
    assert_eq!(again.disabled_at, Some(at));

    let cursor = store.change_cursor().await.unwrap();
    let enabled = store
        .update_user(
            &alice.id,
            &disabling(false),
            at + Duration::hours(2),
            &[audit(AuditKind::UserEnabled, at, Some(&alice.id), None)],
        )
        .await
        .unwrap();
    assert_eq!(enabled.disabled_at, None);
    assert_eq!(store.changes_since(cursor).await.unwrap().hashes.len(), 3);
    assert!(
        !store
            .lookup(&hash.hash)
            .await
            .unwrap()
            .unwrap()
            .owner_disabled
    );
    assert_eq!(store.user_by_id(&alice.id).await.unwrap(), Some(enabled));

    let nobody = keyward_core::UserId::generate(T0).unwrap();
    assert!(matches!(
        store
            .update_user(
                &nobody,
                &disabling(true),
                at,
                &[audit(AuditKind::UserDisabled, at, None, None)],
            )
            .await,
        Err(StoreError::NotFound)
    ));
}

pub async fn external_ids_are_unique_and_found(db: &dyn Database) {
    let store = db.open().await;
    let store = &*store;
    let external = ExternalId::parse("account 4711").unwrap();
    let mut alice = user("alice");
    alice.external_id = Some(external.clone());
    alice.email = Some(Email::parse("alice@example.com").unwrap());
    alice.kind = UserKind::Service;
    let event = audit(AuditKind::UserAdded, T0, Some(&alice.id), None);
    let new = NewUser {
        user: alice.clone(),
        password_hash: None,
    };
    store.add_user(&new, &event).await.unwrap();
    assert_eq!(
        store.user_by_id(&alice.id).await.unwrap().as_ref(),
        Some(&alice),
        "kind, external id and email come back"
    );
    add_user(store, "bob").await;

    let mut again = user("carol");
    again.external_id = Some(external.clone());
    let err = store
        .add_user(
            &NewUser {
                user: again,
                password_hash: None,
            },
            &event,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(ref what) if what.contains("4711")),
        "{err:?}"
    );

    let found = store
        .list_users(&UserFilter {
            external_id: Some(external),
            ..every_user()
        })
        .await
        .unwrap();
    assert_eq!(found, [alice.clone()]);
    let none = store
        .list_users(&UserFilter {
            external_id: Some(ExternalId::parse("4712").unwrap()),
            ..every_user()
        })
        .await
        .unwrap();
    assert!(none.is_empty());
}

pub async fn an_update_changes_what_it_names_and_announces_it(db: &dyn Database) {
    let store = db.open().await;
    let store = &*store;
    let alice = add_user(store, "alice").await;
    let bob = add_user(store, "bob").await;
    let (_, hash) = add_token(store, &alice.id, T0).await;
    let cursor = store.change_cursor().await.unwrap();
    let at = T0 + Duration::minutes(1);
    let update = UserUpdate {
        name: Some(UserName::parse("alice.smith").unwrap()),
        email: Some(Some(Email::parse("alice@example.com").unwrap())),
        external_id: Some(Some(ExternalId::parse("4711").unwrap())),
        is_admin: Some(true),
        disabled: None,
    };
    let events = [
        audit(AuditKind::UserUpdated, at, Some(&alice.id), None),
        audit(AuditKind::UserUpdated, at, Some(&alice.id), None),
    ];
    let updated = store
        .update_user(&alice.id, &update, at, &events)
        .await
        .unwrap();
    assert_eq!(updated.name.as_str(), "alice.smith");
    assert_eq!(updated.external_id.as_ref().unwrap().as_str(), "4711");
    assert!(updated.is_admin);
    assert_eq!(updated.disabled_at, None);
    assert_eq!(
        store.changes_since(cursor).await.unwrap().hashes,
        [hash.hash],
        "caches drop what they knew of the owner"
    );
    let found = store.lookup(&hash.hash).await.unwrap().unwrap();
    assert_eq!(found.owner_name.as_str(), "alice.smith");
    assert_eq!(found.owner_external_id.unwrap().as_str(), "4711");
    assert!(found.owner_admin);
    assert_eq!(audit_count(store).await, 2 + 1 + 2, "both events written");

    // Removing the email and external id; the name is kept.
    let removed = store
        .update_user(
            &alice.id,
            &UserUpdate {
                email: Some(None),
                external_id: Some(None),
                ..UserUpdate::default()
            },
            at,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(removed.email, None);
    assert_eq!(removed.external_id, None);
    assert_eq!(removed.name.as_str(), "alice.smith");

    // Taking bob's name is a conflict that writes nothing.
    let err = store
        .update_user(
            &alice.id,
            &UserUpdate {
                name: Some(bob.name.clone()),
                is_admin: Some(false),
                ..UserUpdate::default()
            },
            at,
            &[audit(AuditKind::UserUpdated, at, Some(&alice.id), None)],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert!(store.user_by_id(&alice.id).await.unwrap().unwrap().is_admin);
    assert_eq!(audit_count(store).await, 5);
}

pub async fn a_password_change_ends_sessions(db: &dyn Database) {
    let store = db.open().await;
    let store = &*store;
    let alice = add_user(store, "alice").await;
    let session = session_for(&alice.id, T0);
    let event = audit(AuditKind::UserSignedIn, T0, Some(&alice.id), None);
    store.create_session(&session, T0, &event).await.unwrap();
    let changed = audit(AuditKind::UserPasswordChanged, T0, Some(&alice.id), None);
    store
        .set_password(&alice.id, Some(PASSWORD_HASH), &changed)
        .await
        .unwrap();
    assert_eq!(
        store.password_hash(&alice.id).await.unwrap().as_deref(),
        Some(PASSWORD_HASH)
    );
    assert_eq!(store.session(&session.id_hash).await.unwrap(), None);
    store.set_password(&alice.id, None, &changed).await.unwrap();
    assert_eq!(store.password_hash(&alice.id).await.unwrap(), None);
    let nobody = user("nobody");
    assert!(matches!(
        store.set_password(&nobody.id, None, &changed).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn deleting_a_user_revokes_their_tokens_and_frees_the_name(db: &dyn Database) {
    let store = db.open().await;
    let store = &*store;
    let mut alice = user("alice");
    alice.external_id = Some(ExternalId::parse("4711").unwrap());
    let added = audit(AuditKind::UserAdded, T0, Some(&alice.id), None);
    let new = NewUser {
        user: alice.clone(),
        password_hash: Some(PASSWORD_HASH.to_owned()),
    };
    store.add_user(&new, &added).await.unwrap();
    let bob = add_user(store, "bob").await;
    let (token, hash) = add_token(store, &alice.id, T0).await;
    let (_, bobs_hash) = add_token(store, &bob.id, T0).await;
    let session = session_for(&alice.id, T0);
    store.create_session(&session, T0, &added).await.unwrap();
    let cursor = store.change_cursor().await.unwrap();
    let epoch = store.change_epoch();

    let at = T0 + Duration::minutes(1);
    let revocation = Revocation {
        at,
        by: "root (cli)".to_owned(),
        reason: Some("owner deleted".to_owned()),
    };
    let deleted = audit(AuditKind::UserDeleted, at, Some(&alice.id), None);
    let gone = store
        .delete_user(&alice.id, &revocation, &deleted)
        .await
        .unwrap();
    assert_eq!(gone, alice, "the user as they were");
    assert!(store.change_epoch() > epoch, "caches hear of it at once");
    assert_eq!(
        store.changes_since(cursor).await.unwrap().hashes,
        [hash.hash]
    );
    let found = store.lookup(&hash.hash).await.unwrap().unwrap();
    assert_eq!(found.token.revoked_at, Some(at));
    assert_eq!(found.token.revoke_reason.as_deref(), Some("owner deleted"));
    assert_eq!(found.token.id, token.id);
    assert!(
        store
            .lookup(&bobs_hash.hash)
            .await
            .unwrap()
            .unwrap()
            .token
            .revoked_at
            .is_none()
    );
    assert_eq!(store.session(&session.id_hash).await.unwrap(), None);
    assert_eq!(store.user_by_id(&alice.id).await.unwrap(), None);
    assert_eq!(store.user_by_name(&alice.name).await.unwrap(), None);
    assert_eq!(store.password_hash(&alice.id).await.unwrap(), None);
    assert_eq!(store.list_users(&every_user()).await.unwrap(), [bob]);
    assert!(matches!(
        store.delete_user(&alice.id, &revocation, &deleted).await,
        Err(StoreError::NotFound)
    ));

    // The name and the external id are free again; the id is not reused.
    let mut again = user("alice");
    again.external_id = Some(ExternalId::parse("4711").unwrap());
    let new = NewUser {
        user: again.clone(),
        password_hash: None,
    };
    store.add_user(&new, &added).await.unwrap();
    assert_ne!(again.id, alice.id);

    // A dump carries the deleted user, so their revoked tokens still have an owner.
    let snapshot = store.dump().await.unwrap();
    let tombstone = snapshot
        .users
        .iter()
        .find(|u| u.user.id == alice.id)
        .unwrap();
    assert_eq!(tombstone.deleted_at, Some(at));
    assert_eq!(tombstone.password_hash, None);
    let sibling = db.sibling().await;
    let target = sibling.open().await;
    target.restore(&snapshot).await.unwrap();
    assert_eq!(target.dump().await.unwrap(), snapshot);
}

pub async fn tokens_under_other_keys_are_counted_and_revoked(db: &dyn Database) {
    let store = db.open().await;
    let store = &*store;
    let alice = add_user(store, "alice").await;
    // Each fixture token is hashed under a key of its own.
    let (mine, my_hash) = add_token(store, &alice.id, T0).await;
    let (revoked, revoked_hash) = add_token(store, &alice.id, T0).await;
    let (other, other_hash) = add_token(store, &alice.id, T0).await;
    let key = &my_hash.key_id;
    let event = audit(
        AuditKind::TokenRevoked,
        T0,
        Some(&alice.id),
        Some(&revoked.id),
    );
    let revocation = Revocation {
        at: T0,
        by: "test".to_owned(),
        reason: None,
    };
    store
        .revoke_token(&revoked.id, None, &revocation, &event)
        .await
        .unwrap();
    let _ = revoked_hash;

    let found = store.tokens_under_other_keys(key, T0).await.unwrap();
    assert_eq!(
        found,
        [(other_hash.key_id.clone(), 1)],
        "revoked tokens do not count"
    );
    // Asked from the other key's side: of the two questions, one finds a key below the key
    // asked about and the other a key above it, so both of the query's ranges are read.
    assert_eq!(
        store
            .tokens_under_other_keys(&other_hash.key_id, T0)
            .await
            .unwrap(),
        [(key.clone(), 1)]
    );
    // Past every expiry, nothing counts.
    let later = T0 + Duration::days(91);
    assert!(
        store
            .tokens_under_other_keys(key, later)
            .await
            .unwrap()
            .is_empty()
    );

    let cursor = store.change_cursor().await.unwrap();
    let reset = Revocation {
        at: T0 + Duration::minutes(1),
        by: "root (cli)".to_owned(),
        reason: Some("server key reset".to_owned()),
    };
    let event = audit(AuditKind::TokenRevoked, T0, None, None);
    let n = store
        .revoke_under_other_keys(std::slice::from_ref(key), &reset, &event)
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert!(
        store
            .tokens_under_other_keys(key, T0)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.changes_since(cursor).await.unwrap().hashes,
        [other_hash.hash],
        "caches hear of it"
    );
    let gone = store.token(&other.id, None).await.unwrap().unwrap();
    assert_eq!(gone.revoke_reason.as_deref(), Some("server key reset"));
    let kept = store.token(&mine.id, None).await.unwrap().unwrap();
    assert_eq!(kept.revoked_at, None, "the server's own key's tokens stay");
}

/// Every event in the outbox, oldest first.
async fn all_events(store: &dyn Store) -> Vec<keyward_store::StoredEvent> {
    store.events_after(None, 10_000).await.unwrap()
}

pub async fn events_are_written_with_their_change_and_read_in_order(db: &dyn Database) {
    let store = db.open().await;
    let alice = add_user(&*store, "alice").await;
    let (token, _) = add_token(&*store, &alice.id, T0).await;
    // Not events: a rename, a failed sign-in. A write refused writes no event either.
    store
        .rename_token(
            &token.id,
            None,
            &TokenName::parse("renamed").unwrap(),
            &audit(
                AuditKind::TokenRenamed,
                T0,
                Some(&alice.id),
                Some(&token.id),
            ),
        )
        .await
        .unwrap();
    store
        .append_audit(&audit(
            AuditKind::UserSignInFailed,
            T0,
            Some(&alice.id),
            None,
        ))
        .await
        .unwrap();
    let again = keyward_store::NewUser {
        user: user("alice"),
        password_hash: None,
    };
    assert!(matches!(
        store
            .add_user(&again, &audit(AuditKind::UserAdded, T0, None, None))
            .await,
        Err(StoreError::Conflict(_))
    ));
    let mut revoked = audit(
        AuditKind::TokenRevoked,
        T0,
        Some(&alice.id),
        Some(&token.id),
    );
    revoked.detail = Some("rotated out".to_owned());
    store
        .revoke_token(&token.id, None, &revocation(T0, "rotated out"), &revoked)
        .await
        .unwrap();
    store
        .append_audit(&audit(AuditKind::SignInThrottled, T0, None, None))
        .await
        .unwrap();

    let events = all_events(&*store).await;
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "user.created",
            "token.created",
            "token.revoked",
            "sign_in.throttled"
        ]
    );
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(
        events
            .iter()
            .all(|e| e.id.as_str().starts_with("evt_") && e.at == T0)
    );
    let revoked = &events[2];
    assert_eq!(revoked.token_id.as_ref(), Some(&token.id));
    assert_eq!(revoked.user_id.as_ref(), Some(&alice.id));
    let data: serde_json::Value = serde_json::from_str(&revoked.data).unwrap();
    assert_eq!(
        data,
        serde_json::json!({
            "token_id": token.id.as_str(),
            "user_id": alice.id.as_str(),
            "ip": "192.0.2.7",
            "detail": "rotated out",
            "actor": {"label": "cli (root)"},
        })
    );

    // Paging: after an event, exactly the ones that follow it.
    let after = store.events_after(Some(&events[0].id), 2).await.unwrap();
    assert_eq!(after, events[1..3]);
    let last = events.last().unwrap();
    assert!(
        store
            .events_after(Some(&last.id), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let unknown = keyward_core::EventId::generate(T0).unwrap();
    assert!(matches!(
        store.events_after(Some(&unknown), 10).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn events_are_never_skipped_by_a_reader_while_writers_commit(db: &dyn Database) {
    // Writers on two handles commit events concurrently while a reader follows the outbox page
    // by page: whatever order transactions commit in, the reader must see every event (an
    // event that committed after the reader moved past its seq would be lost for good).
    const TOKENS: usize = 60;
    let handles: [Arc<dyn Store>; 2] = [Arc::from(db.open().await), Arc::from(db.open().await)];
    let alice = add_user(&*handles[0], "alice").await;
    let reader = db.open().await;
    let mut seen = Vec::new();
    let mut cursor: Option<keyward_core::EventId> = None;
    let mut tasks = tokio::task::JoinSet::new();
    // Half are token creations, half user additions: the latter touch nothing but the users,
    // the audit trail and the outbox, so only the outbox's own ordering keeps them in line.
    for i in 0..TOKENS {
        let store = Arc::clone(&handles[i % 2]);
        let owner = alice.id.clone();
        tasks.spawn(async move {
            if i % 2 == 0 {
                add_token(&*store, &owner, T0).await;
            } else {
                add_user(&*store, &format!("user{i}")).await;
            }
        });
    }
    loop {
        let finished = tasks.is_empty();
        let page = reader.events_after(cursor.as_ref(), 7).await.unwrap();
        if let Some(last) = page.last() {
            cursor = Some(last.id.clone());
        }
        let empty = page.is_empty();
        seen.extend(page.into_iter().map(|e| e.id));
        if finished && empty {
            break;
        }
        while let Some(done) = tasks.try_join_next() {
            done.unwrap();
        }
        tokio::task::yield_now().await;
    }
    let all: Vec<_> = all_events(&*reader)
        .await
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(all.len(), TOKENS + 1);
    assert_eq!(seen, all, "the reader missed or reordered events");
}

pub async fn webhook_deliveries_are_queued_leased_in_order_and_finished(db: &dyn Database) {
    let store = db.open().await;
    let hook = "https://platform.example/hooks".to_owned();
    let hooks = std::slice::from_ref(&hook);
    let patterns = vec!["token.*".to_owned()];
    let alice = add_user(&*store, "alice").await;
    // A webhook seen for the first time starts after the newest event.
    assert_eq!(
        store
            .enqueue_deliveries(&hook, &patterns, T0, 100)
            .await
            .unwrap(),
        0
    );
    let (first, _) = add_token(&*store, &alice.id, T0).await;
    revoke(&*store, &first, T0).await;
    let (second, _) = add_token(&*store, &alice.id, T0).await;
    add_user(&*store, "bob").await;
    assert_eq!(
        store
            .enqueue_deliveries(&hook, &patterns, T0, 100)
            .await
            .unwrap(),
        4
    );
    // Enqueueing again queues nothing twice.
    assert_eq!(
        store
            .enqueue_deliveries(&hook, &patterns, T0, 100)
            .await
            .unwrap(),
        0
    );
    let lease = T0 + Duration::seconds(30);
    // Per token in order: `first`'s revocation waits for its creation; `second` is free.
    let claimed = store
        .claim_deliveries(hooks, "a", T0, lease, 10)
        .await
        .unwrap();
    let got: Vec<_> = claimed
        .iter()
        .map(|d| {
            (
                d.event.event_type.as_str(),
                d.event.token_id.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("token.created", first.id.clone()),
            ("token.created", second.id.clone())
        ]
    );
    assert!(claimed.iter().all(|d| d.webhook == hook && d.attempts == 0));
    // Leased: no one else gets them, nor another webhook's worker.
    assert!(
        store
            .claim_deliveries(hooks, "b", T0, lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let other = ["https://elsewhere.example/".to_owned()];
    assert!(
        store
            .claim_deliveries(&other, "b", T0, lease, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // `first`'s creation fails once and waits; the revocation still waits behind it.
    let retry_at = T0 + Duration::seconds(10);
    store
        .finish_delivery(
            &hook,
            claimed[0].event.seq,
            "a",
            &DeliveryOutcome::Retry {
                status: Some(503),
                error: "503 Service Unavailable".to_owned(),
                next_attempt_at: retry_at,
            },
            T0,
        )
        .await
        .unwrap();
    assert!(
        store
            .claim_deliveries(hooks, "b", T0, lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let again = store
        .claim_deliveries(hooks, "b", retry_at, retry_at + Duration::seconds(30), 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].event, claimed[0].event);
    assert_eq!(again[0].attempts, 1);
    store
        .finish_delivery(
            &hook,
            again[0].event.seq,
            "b",
            &DeliveryOutcome::Delivered { status: 204 },
            retry_at,
        )
        .await
        .unwrap();
    // Now the revocation is next for `first`. Its lease by "a" runs out and "b" takes over.
    let revocation = store
        .claim_deliveries(hooks, "a", retry_at, retry_at + Duration::seconds(30), 10)
        .await
        .unwrap();
    assert_eq!(revocation.len(), 1);
    assert_eq!(revocation[0].event.event_type, "token.revoked");
    let later = retry_at + Duration::seconds(31);
    let taken = store
        .claim_deliveries(hooks, "b", later, later + Duration::seconds(30), 10)
        .await
        .unwrap();
    let taken: Vec<_> = taken.iter().map(|d| d.event.seq).collect();
    assert!(taken.contains(&revocation[0].event.seq), "{taken:?}");
    // "a" answers late: its lease is gone, so its word no longer counts, and "b" keeps its own.
    store
        .finish_delivery(
            &hook,
            revocation[0].event.seq,
            "a",
            &DeliveryOutcome::Retry {
                status: None,
                error: "timed out".to_owned(),
                next_attempt_at: later,
            },
            later,
        )
        .await
        .unwrap();
    assert!(
        store
            .claim_deliveries(hooks, "c", later, later + Duration::seconds(30), 10)
            .await
            .unwrap()
            .iter()
            .all(|d| d.event.seq != revocation[0].event.seq),
        "a stale lease holder gave the delivery away"
    );
    store
        .finish_delivery(
            &hook,
            revocation[0].event.seq,
            "b",
            &DeliveryOutcome::Failed {
                status: None,
                error: "connection refused".to_owned(),
            },
            later,
        )
        .await
        .unwrap();
    // A finished delivery stays as it is.
    store
        .finish_delivery(
            &hook,
            revocation[0].event.seq,
            "b",
            &DeliveryOutcome::Delivered { status: 200 },
            later,
        )
        .await
        .unwrap();

    let failed = store
        .deliveries(&DeliveryFilter {
            state: Some(DeliveryState::Failed),
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    let failed = &failed[0];
    assert_eq!(failed.event_id, revocation[0].event.id);
    assert_eq!(failed.event_type, "token.revoked");
    assert_eq!(failed.webhook, hook);
    assert_eq!(failed.attempts, 1);
    assert_eq!(failed.last_error.as_deref(), Some("connection refused"));
    assert_eq!(failed.finished_at, Some(later));
    let all = store
        .deliveries(&DeliveryFilter {
            state: None,
            limit: 10,
        })
        .await
        .unwrap();
    let states: Vec<_> = all.iter().map(|d| d.state).collect();
    assert_eq!(
        states,
        [
            DeliveryState::Pending,
            DeliveryState::Failed,
            DeliveryState::Delivered
        ]
    );
    assert_eq!(all[2].last_status, Some(204));
    assert_eq!(all[2].attempts, 2);
}

pub async fn two_handles_never_lease_the_same_delivery(db: &dyn Database) {
    const TOKENS: usize = 40;
    let handles: [Arc<dyn Store>; 2] = [Arc::from(db.open().await), Arc::from(db.open().await)];
    let hook = "https://platform.example/hooks".to_owned();
    let patterns = vec!["*".to_owned()];
    handles[0]
        .enqueue_deliveries(&hook, &patterns, T0, 100)
        .await
        .unwrap();
    let alice = add_user(&*handles[0], "alice").await;
    for _ in 0..TOKENS {
        add_token(&*handles[0], &alice.id, T0).await;
    }
    // Both handles move the cursor at once: each event is queued once.
    let (a, b) = tokio::join!(
        handles[0].enqueue_deliveries(&hook, &patterns, T0, 1000),
        handles[1].enqueue_deliveries(&hook, &patterns, T0, 1000),
    );
    assert_eq!(a.unwrap() + b.unwrap(), TOKENS as u64 + 1);
    let mut claimed = Vec::new();
    for round in 0..20 {
        let lease = T0 + Duration::seconds(60);
        let (a, b) = tokio::join!(
            handles[0].claim_deliveries(std::slice::from_ref(&hook), "a", T0, lease, 3),
            handles[1].claim_deliveries(std::slice::from_ref(&hook), "b", T0, lease, 3),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        if a.is_empty() && b.is_empty() && round > 0 {
            break;
        }
        claimed.extend(a.into_iter().chain(b).map(|d| d.event.seq));
    }
    let unique: HashSet<_> = claimed.iter().copied().collect();
    assert_eq!(unique.len(), claimed.len(), "a delivery was leased twice");
    assert_eq!(unique.len(), TOKENS + 1);
}

/// A token for `owner` created at `at` with `scopes`.
async fn add_scoped_token(
    store: &dyn Store,
    owner: &keyward_core::UserId,
    at: time::OffsetDateTime,
    scopes: &[&str],
) -> TokenRecord {
    let (mut record, hash) = token_record(owner, at);
    record.scopes = keyward_core::Scopes::parse(scopes).unwrap();
    let event = audit(AuditKind::TokenCreated, at, Some(owner), Some(&record.id));
    store
        .insert_token(&record, &hash, &event, None)
        .await
        .unwrap();
    record
}

/// Stores a token for `owner` created at `T0` that expires at `expires_at`.
async fn add_token_expiring(
    store: &dyn Store,
    owner: &keyward_core::UserId,
    expires_at: Option<time::OffsetDateTime>,
) -> TokenRecord {
    let (mut record, hash) = token_record(owner, T0);
    record.expires_at = expires_at;
    let event = audit(AuditKind::TokenCreated, T0, Some(owner), Some(&record.id));
    store
        .insert_token(&record, &hash, &event, None)
        .await
        .unwrap();
    record
}

/// Every id `filter` matches, one page at a time (pages of two, to cross page boundaries).
async fn all_matching(store: &dyn Store, filter: &TokenFilter) -> Vec<keyward_core::TokenId> {
    let mut all = Vec::new();
    loop {
        let page = store.matching_tokens(filter, all.last(), 2).await.unwrap();
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

pub async fn a_bulk_revocation_revokes_exactly_what_its_listing_showed(db: &dyn Database) {
    let store = db.open().await;
    let store = &*store;
    let alice = add_user(store, "alice").await;
    let bob = add_user(store, "bob").await;
    let hour = Duration::hours(1);
    let old = add_scoped_token(store, &alice.id, T0, &["droplet:read"]).await;
    let wide = add_scoped_token(store, &alice.id, T0 + hour, &["droplet:*"]).await;
    let used = add_scoped_token(store, &alice.id, T0 + 2 * hour, &["volume:read"]).await;
    let gone = add_scoped_token(store, &alice.id, T0 + 3 * hour, &["droplet:read"]).await;
    let bobs = add_scoped_token(store, &bob.id, T0, &["*:*"]).await;
    revoke(store, &gone, T0 + 3 * hour).await;
    store
        .record_usage(&[Usage {
            token_id: used.id.clone(),
            at: T0 + 4 * hour,
            ip: None,
        }])
        .await
        .unwrap();
    let alices = TokenFilter {
        owner: Some(alice.id.clone()),
        ..TokenFilter::default()
    };
    let ids = |tokens: &[&TokenRecord]| tokens.iter().map(|t| t.id.clone()).collect::<Vec<_>>();

    // Each condition narrows; a revoked token never matches; ids come in order.
    assert_eq!(
        all_matching(store, &alices).await,
        ids(&[&old, &wide, &used])
    );
    assert_eq!(
        all_matching(store, &TokenFilter::default()).await.len(),
        4,
        "no condition: every token not yet revoked"
    );
    let scoped = |scope: &str| TokenFilter {
        scope: Some(keyward_core::Scope::parse(scope).unwrap()),
        ..alices.clone()
    };
    assert_eq!(
        all_matching(store, &scoped("droplet:read")).await,
        ids(&[&old, &wide]),
        "a wildcard grants the scope"
    );
    assert_eq!(
        all_matching(store, &scoped("droplet:delete")).await,
        ids(&[&wide])
    );
    assert_eq!(
        all_matching(
            store,
            &TokenFilter {
                scope: Some(keyward_core::Scope::parse("volume:delete").unwrap()),
                ..TokenFilter::default()
            }
        )
        .await,
        ids(&[&bobs]),
        "*:* grants everything"
    );
    let window = TokenFilter {
        created_after: Some(T0),
        created_before: Some(T0 + 2 * hour),
        ..alices.clone()
    };
    assert_eq!(all_matching(store, &window).await, ids(&[&wide]));
    let unused = TokenFilter {
        unused_since: Some(T0 + 3 * hour),
        ..alices.clone()
    };
    assert_eq!(all_matching(store, &unused).await, ids(&[&old, &wide]));

    // The dry run's list is what the real run revokes, each with its own audit event, and
    // every cache hears of it.
    let listed = all_matching(store, &alices).await;
    let cursor = store.change_cursor().await.unwrap();
    let audit_before = audit_count(store).await;
    let at = T0 + 5 * hour;
    let event = audit(AuditKind::TokenRevoked, at, None, None);
    let revoked = store
        .revoke_tokens(&listed, &alices, &revocation(at, "incident 7"), &[event])
        .await
        .unwrap();
    assert_eq!(
        revoked.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
        listed
    );
    assert!(
        revoked
            .iter()
            .all(|t| t.revoked_at == Some(at) && t.revoke_reason.as_deref() == Some("incident 7"))
    );
    assert_eq!(audit_count(store).await, audit_before + 3);
    let trail = store
        .audit_events(&AuditFilter {
            limit: 3,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let mut audited: Vec<_> = trail
        .iter()
        .map(|e| {
            assert_eq!(e.event.kind, AuditKind::TokenRevoked);
            assert_eq!(e.event.subject_user.as_ref(), Some(&alice.id));
            e.event.token_id.clone().unwrap()
        })
        .collect();
    audited.sort();
    assert_eq!(audited, listed);
    assert_eq!(
        store.changes_since(cursor).await.unwrap().hashes.len(),
        3,
        "every revoked token's hash goes to the change log"
    );
    assert!(all_matching(store, &alices).await.is_empty());
    assert!(
        store
            .token(&bobs.id, None)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_none()
    );

    // Ids the filter no longer matches (revoked since, or never matching) are left alone.
    let again = store
        .revoke_tokens(
            &[listed[0].clone(), bobs.id.clone()],
            &alices,
            &revocation(at, "again"),
            &[audit(AuditKind::TokenRevoked, at, None, None)],
        )
        .await
        .unwrap();
    assert!(again.is_empty());
    assert_eq!(audit_count(store).await, audit_before + 3);
    assert!(
        store
            .token(&bobs.id, None)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_none()
    );
}

fn notice_event(token: &TokenRecord, detail: &str) -> keyward_core::AuditEvent {
    keyward_core::AuditEvent {
        detail: Some(detail.to_owned()),
        ..audit(
            AuditKind::TokenExpiring,
            T0,
            Some(&token.owner),
            Some(&token.id),
        )
    }
}

pub async fn expiry_notices_are_recorded_once_per_token_and_expiry(db: &dyn Database) {
    let store = db.open().await;
    let store = &*store;
    let alice = add_user(store, "alice").await;
    let soon = add_token_expiring(store, &alice.id, Some(T0 + Duration::days(3))).await;
    let later = add_token_expiring(store, &alice.id, Some(T0 + Duration::days(2))).await;
    let _far = add_token_expiring(store, &alice.id, Some(T0 + Duration::days(30))).await;
    let _never = add_token_expiring(store, &alice.id, None).await;
    let revoked = add_token_expiring(store, &alice.id, Some(T0 + Duration::days(4))).await;
    revoke(store, &revoked, T0).await;
    let (from, to) = (T0 + Duration::days(1), T0 + Duration::days(7));

    let due = store.due_for_notice("7d", from, to, 10).await.unwrap();
    let ids: Vec<_> = due.iter().map(|t| t.id.clone()).collect();
    assert_eq!(
        ids,
        [later.id.clone(), soon.id.clone()],
        "soonest first; neither the revoked, the far nor the endless token"
    );
    assert_eq!(
        store.due_for_notice("7d", from, to, 1).await.unwrap().len(),
        1,
        "at most the limit"
    );

    let before = audit_count(store).await;
    let at = T0 + Duration::minutes(1);
    let expiry = soon.expires_at.unwrap();
    assert!(
        store
            .record_notice(&soon.id, "7d", expiry, at, &notice_event(&soon, "7d"))
            .await
            .unwrap()
    );
    assert_eq!(audit_count(store).await, before + 1, "with its audit event");
    assert!(
        !store
            .record_notice(&soon.id, "7d", expiry, at, &notice_event(&soon, "7d"))
            .await
            .unwrap(),
        "once"
    );
    let other = db.open().await;
    assert!(
        !other
            .record_notice(&soon.id, "7d", expiry, at, &notice_event(&soon, "7d"))
            .await
            .unwrap(),
        "once across handles"
    );
    assert_eq!(
        audit_count(store).await,
        before + 1,
        "no event for a repeat"
    );
    let due = store.due_for_notice("7d", from, to, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].id, later.id);
    // Another notice of the same token is its own.
    assert_eq!(
        store
            .due_for_notice("1d", T0 + Duration::days(2), T0 + Duration::days(3), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        store
            .record_notice(
                &soon.id,
                EXPIRED_NOTICE,
                expiry,
                at,
                &notice_event(&soon, "x")
            )
            .await
            .unwrap()
    );

    // Never for a revoked token, nor for an expiry that has moved.
    assert!(
        !store
            .record_notice(
                &revoked.id,
                "7d",
                revoked.expires_at.unwrap(),
                at,
                &notice_event(&revoked, "7d")
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_notice(
                &later.id,
                "7d",
                expiry + Duration::hours(1),
                at,
                &notice_event(&later, "7d")
            )
            .await
            .unwrap()
    );
    assert_eq!(audit_count(store).await, before + 2);

    // A regeneration that moves the expiry starts the reminders afresh.
    let (mut regen, _) = regeneration(T0 + Duration::hours(1), Duration::ZERO);
    regen.new_expires_at = Some(T0 + Duration::days(5));
    let event = audit(
        AuditKind::TokenRegenerated,
        T0,
        Some(&alice.id),
        Some(&soon.id),
    );
    store
        .regenerate_token(&soon.id, None, &regen, &event)
        .await
        .unwrap();
    let due = store.due_for_notice("7d", from, to, 10).await.unwrap();
    let ids: HashSet<_> = due.iter().map(|t| t.id.clone()).collect();
    assert_eq!(ids, HashSet::from([soon.id.clone(), later.id.clone()]));
}

pub async fn two_handles_record_a_notice_once(db: &dyn Database) {
    let store = db.open().await;
    let alice = add_user(&*store, "alice").await;
    let token = add_token_expiring(&*store, &alice.id, Some(T0 + Duration::days(1))).await;
    let expiry = token.expires_at.unwrap();
    let before = audit_count(&*store).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..3 {
        let handle: Arc<dyn Store> = Arc::from(db.open().await);
        let token = token.clone();
        tasks.spawn(async move {
            let event = notice_event(&token, "1d");
            handle
                .record_notice(&token.id, "1d", expiry, T0, &event)
                .await
                .unwrap()
        });
    }
    let mut recorded = Vec::new();
    while let Some(done) = tasks.join_next().await {
        recorded.push(done.unwrap());
    }
    assert_eq!(
        recorded.iter().filter(|r| **r).count(),
        1,
        "exactly one handle records it: {recorded:?}"
    );
    assert_eq!(audit_count(&*store).await, before + 1);
}

pub async fn regeneration_keeps_the_last_few_retired_secrets(db: &dyn Database) {
    let store = db.open().await;
    let store = &*store;
    let alice = add_user(store, "alice").await;
    let (token, first) = add_token(store, &alice.id, T0).await;
    let mut hashes = vec![first.hash];
    let mut at = T0;
    let mut cursor = store.change_cursor().await.unwrap();
    let mut dropped_logged = Vec::new();
    for _ in 0..8 {
        at += Duration::minutes(1);
        let (regen, hash) = regeneration(at, Duration::ZERO);
        let event = audit(
            AuditKind::TokenRegenerated,
            at,
            Some(&alice.id),
            Some(&token.id),
        );
        store
            .regenerate_token(&token.id, None, &regen, &event)
            .await
            .unwrap();
        hashes.push(hash.hash);
        let changes = store.changes_since(cursor).await.unwrap();
        dropped_logged.extend(changes.hashes);
        cursor = changes.cursor;
    }
    let kept = usize::try_from(RETIRED_SECRETS_KEPT).unwrap();
    // Nine secrets: the current one, the last few replaced ones, and the rest dropped.
    let (dropped, known) = hashes.split_at(hashes.len() - 1 - kept);
    for hash in known {
        assert!(store.lookup(hash).await.unwrap().is_some());
    }
    for hash in dropped {
        assert!(store.lookup(hash).await.unwrap().is_none(), "dropped");
        assert!(dropped_logged.contains(hash), "a dropped hash is logged");
    }
    let stored = store.stored_hashes(None, 100).await.unwrap();
    assert_eq!(stored.len(), kept + 1);
}

pub async fn replaced_secrets_under_a_key_are_dropped_with_it(db: &dyn Database) {
    let store = db.open().await;
    let store = &*store;
    let alice = add_user(store, "alice").await;
    let (token, first) = add_token(store, &alice.id, T0).await;
    let at = T0 + Duration::minutes(1);
    let (regen, second) = regeneration(at, Duration::hours(1));
    let event = audit(
        AuditKind::TokenRegenerated,
        at,
        Some(&alice.id),
        Some(&token.id),
    );
    store
        .regenerate_token(&token.id, None, &regen, &event)
        .await
        .unwrap();
    // In its grace period it still works: kept.
    assert_eq!(
        store
            .drop_replaced_secrets_under(&first.key_id, at)
            .await
            .unwrap(),
        0
    );
    assert!(store.lookup(&first.hash).await.unwrap().is_some());
    // The current secret is never dropped.
    let later = at + Duration::hours(2);
    assert_eq!(
        store
            .drop_replaced_secrets_under(&second.key_id, later)
            .await
            .unwrap(),
        0
    );
    let cursor = store.change_cursor().await.unwrap();
    let epoch = store.change_epoch();
    assert_eq!(
        store
            .drop_replaced_secrets_under(&first.key_id, later)
            .await
            .unwrap(),
        1
    );
    assert!(store.lookup(&first.hash).await.unwrap().is_none());
    assert!(store.lookup(&second.hash).await.unwrap().is_some());
    assert!(store.change_epoch() > epoch, "announced");
    let changes = store.changes_since(cursor).await.unwrap();
    assert_eq!(changes.hashes, [first.hash]);
}

/// Creations that arrive together (which an engine may commit together) each stand or fall on
/// their own: the owner's cap refuses exactly those past it, a clash refuses only itself, and
/// every other one is stored and found.
pub async fn creations_that_arrive_together_each_stand_or_fall_alone(db: &dyn Database) {
    const CAP: u32 = 10;
    let store: Arc<dyn Store> = Arc::from(db.open().await);
    let alice = add_user(&*store, "alice").await;
    let bob = add_user(&*store, "bob").await;
    // Twice the same token of bob's: one is stored, the other is a conflict.
    let twice = token_record(&bob.id, T0);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let (record, hash) = match i {
            1 | 3 => twice.clone(),
            _ if i % 2 == 0 => token_record(&alice.id, T0),
            _ => token_record(&bob.id, T0),
        };
        let cap = (record.owner == alice.id).then_some(CAP);
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let event = audit(
                AuditKind::TokenCreated,
                T0,
                Some(&record.owner),
                Some(&record.id),
            );
            let stored = store.insert_token(&record, &hash, &event, cap).await;
            (record, hash, stored)
        });
    }
    let (mut alices, mut refused, mut bobs, mut conflicts) = (0, 0, 0, 0);
    while let Some(done) = tasks.join_next().await {
        let (record, hash, stored) = done.unwrap();
        match stored {
            Ok(()) => {
                let found = store.lookup(&hash.hash).await.unwrap().unwrap();
                assert_eq!(found.token.id, record.id);
                if record.owner == alice.id {
                    alices += 1;
                } else {
                    bobs += 1;
                }
            }
            Err(StoreError::InvalidState(why)) => {
                assert_eq!(why, keyward_store::MAX_TOKENS_REACHED);
                assert_eq!(record.owner, alice.id);
                refused += 1;
            }
            Err(StoreError::Conflict(_)) => {
                assert_eq!(record.id, twice.0.id);
                conflicts += 1;
            }
            Err(e) => panic!("creation failed: {e}"),
        }
    }
    assert_eq!((alices, refused), (CAP, 20 - CAP));
    assert_eq!((bobs, conflicts), (19, 1));
    for (owner, count) in [(&alice.id, CAP), (&bob.id, 19)] {
        let listed = store.list_tokens(Some(owner), &page(100)).await.unwrap();
        assert_eq!(listed.len(), count as usize);
    }
    let created = store
        .audit_events(&AuditFilter {
            limit: 1000,
            ..AuditFilter::default()
        })
        .await
        .unwrap()
        .iter()
        .filter(|e| e.event.kind == AuditKind::TokenCreated)
        .count();
    assert_eq!(
        created,
        (CAP + 19) as usize,
        "one audit event per stored token"
    );
}
