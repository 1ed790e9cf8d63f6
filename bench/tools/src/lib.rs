//! Helpers shared by keyward's benchmarks (the `seed` tool and `cargo bench`): synthetic stores
//! of any size, built in memory and written through [`keyward_store::Maintenance::restore`] in one
//! transaction.

use keyward_core::{
    Clock as _, Prefix, Scopes, SystemClock, TokenHasher, TokenId, TokenName, TokenRecord,
    TokenSecret, User, UserId, UserKind, UserName,
};
use keyward_store::{HashRecord, Snapshot, SnapshotUser, StoredHash};
use time::Duration;

/// A store's worth of `tokens` active tokens, `per_user` to a user, each with the scopes
/// `droplet:read volume:*` and 30 days to live, hashed with `hasher`; and their secrets, in the
/// order of `snapshot.tokens`.
pub fn synthetic(
    hasher: &TokenHasher,
    tokens: usize,
    per_user: usize,
) -> anyhow::Result<(Snapshot, Vec<TokenSecret>)> {
    let now = SystemClock.now().replace_nanosecond(0)?;
    let prefix = Prefix::default();
    let scopes = Scopes::parse(&["droplet:read", "volume:*"])?;
    let users: Vec<User> = (0..tokens.div_ceil(per_user).max(1))
        .map(|i| {
            Ok(User::new(
                UserId::generate(now)?,
                UserName::parse(&format!("bench{i}"))?,
                UserKind::Person,
                now,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut snapshot = Snapshot {
        users: Vec::new(),
        tokens: Vec::with_capacity(tokens),
        hashes: Vec::with_capacity(tokens),
        audit: Vec::new(),
        identities: Vec::new(),
    };
    let mut secrets = Vec::with_capacity(tokens);
    for i in 0..tokens {
        let secret = TokenSecret::generate(&prefix)?;
        let id = TokenId::generate(now)?;
        snapshot.hashes.push(HashRecord {
            token_id: id.clone(),
            hash: StoredHash {
                hash: hasher.hash(&secret),
                key_id: hasher.key_id().clone(),
            },
            created_at: now,
            valid_until: None,
        });
        snapshot.tokens.push(TokenRecord {
            id,
            owner: users[i / per_user].id.clone(),
            name: TokenName::parse(&format!("bench {i}"))?,
            scopes: scopes.clone(),
            hint: secret.hint(),
            created_at: now,
            expires_at: Some(now + Duration::days(30)),
            regenerated_at: None,
            last_used_at: None,
            last_used_ip: None,
            revoked_at: None,
            revoked_by: None,
            revoke_reason: None,
            limits: keyward_core::Limits::default(),
            remaining: None,
            refilled_at: None,
        });
        secrets.push(secret);
    }
    snapshot.users = users
        .into_iter()
        .map(|user| SnapshotUser {
            user,
            password_hash: None,
            deleted_at: None,
        })
        .collect();
    Ok((snapshot, secrets))
}
