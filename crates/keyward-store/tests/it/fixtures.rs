//! What the contract suite needs from an engine, and builders for the records it stores.

use async_trait::async_trait;
use keyward_core::{
    Actor, AuditEvent, AuditKind, Prefix, Scopes, ServerKey, TokenHasher, TokenId, TokenName,
    TokenRecord, TokenSecret, User, UserId, UserKind, UserName,
};
use keyward_store::{NewUser, Store, StoredHash};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

/// A fresh, empty database of one engine, living as long as the value.
#[async_trait]
pub trait Database: Send + Sync {
    /// Opens a new handle on this database, as another process would (its own connections, its
    /// own view of the change epoch).
    async fn open(&self) -> Box<dyn Store>;
    /// Another fresh, empty database of the same engine (a copy's target).
    async fn sibling(&self) -> Box<dyn Database>;
}

/// The suite's "now"; whole seconds, as the service passes times to the store.
pub const T0: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);

/// A user record named `name`, added at `T0`.
pub fn user(name: &str) -> User {
    User::new(
        UserId::generate(T0).unwrap(),
        UserName::parse(name).unwrap(),
        UserKind::Person,
        T0,
    )
}

/// An audit event of `kind` by an operator at the command line.
pub fn audit(
    kind: AuditKind,
    at: OffsetDateTime,
    subject: Option<&UserId>,
    token: Option<&TokenId>,
) -> AuditEvent {
    AuditEvent {
        at,
        kind,
        actor: Actor::cli("root"),
        subject_user: subject.cloned(),
        token_id: token.cloned(),
        ip: Some("192.0.2.7".parse().unwrap()),
        detail: None,
    }
}

/// Adds a user named `name` and returns it.
pub async fn add_user(store: &dyn Store, name: &str) -> User {
    let user = user(name);
    let new = NewUser {
        user: user.clone(),
        password_hash: None,
    };
    store
        .add_user(&new, &audit(AuditKind::UserAdded, T0, Some(&user.id), None))
        .await
        .unwrap();
    user
}

/// A fresh secret and its stored hash under a fresh server key.
pub fn secret_and_hash() -> (TokenSecret, StoredHash) {
    let key = ServerKey::generate().unwrap();
    let hasher = TokenHasher::new(&key);
    let secret = TokenSecret::generate(&Prefix::default()).unwrap();
    let hash = StoredHash {
        hash: hasher.hash(&secret),
        key_id: hasher.key_id().clone(),
    };
    (secret, hash)
}

/// A new token record for `owner` created at `at`, expiring 90 days later, and its first hash.
pub fn token_record(owner: &UserId, at: OffsetDateTime) -> (TokenRecord, StoredHash) {
    let (secret, hash) = secret_and_hash();
    let record = TokenRecord {
        id: TokenId::generate(at).unwrap(),
        owner: owner.clone(),
        name: TokenName::parse("ci deploy").unwrap(),
        scopes: Scopes::parse(&["droplet:read", "image:*"]).unwrap(),
        hint: secret.hint(),
        created_at: at,
        expires_at: Some(at + Duration::days(90)),
        regenerated_at: None,
        last_used_at: None,
        last_used_ip: None,
        revoked_at: None,
        revoked_by: None,
        revoke_reason: None,
        limits: keyward_core::Limits::default(),
        remaining: None,
        refilled_at: None,
    };
    (record, hash)
}

/// Stores a new token for `owner` created at `at` and returns it with its hash.
pub async fn add_token(
    store: &dyn Store,
    owner: &UserId,
    at: OffsetDateTime,
) -> (TokenRecord, StoredHash) {
    let (record, hash) = token_record(owner, at);
    let event = audit(AuditKind::TokenCreated, at, Some(owner), Some(&record.id));
    store
        .insert_token(&record, &hash, &event, None)
        .await
        .unwrap();
    (record, hash)
}
