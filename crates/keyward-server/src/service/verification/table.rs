//! The map behind the verification cache: sharded, read-mostly, keyed by token hashes, values
//! stored inline (no pointer to chase, no reference count to touch on a hit).
//!
//! Keys are HMAC-SHA256 outputs, uniformly random to anyone without the server key, so their own
//! bytes are a perfect hash: no SipHash on the hot path, and no way for a client to aim
//! collisions at one bucket. Reads take one shard's read lock (an atomic add, uncontended
//! unless a writer is in that shard). Capacity is bounded per shard; when a shard is full an
//! arbitrary entry goes. Eviction never affects correctness, only the hit rate: the store is
//! always asked again.

use keyward_core::TokenHash;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{PoisonError, RwLock};

/// Shards: enough that two cores rarely meet in one lock, few enough to stay cache-friendly.
const SHARDS: usize = 64;

/// A token hash used as a map key, hashing to its own first eight bytes.
#[derive(Clone, Copy)]
struct Key(TokenHash);

// Plain byte equality, not `TokenHash`'s constant-time one: the probe sequence of any hash map
// is variable-time anyway, and what is compared is a keyed hash an outsider cannot compute, not
// the secret. The secret itself is never compared, only hashed.
impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.0.0 == other.0.0
    }
}

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0.0[..8]);
        state.write_u64(u64::from_le_bytes(first));
    }
}

/// Passes a `u64` through unchanged; only ever fed by [`Key::hash`].
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not reached through `Key`; folded so the hasher stays correct for any input.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Shard<V> = RwLock<HashMap<Key, V, BuildHasherDefault<PassThrough>>>;

/// A bounded concurrent map from token hashes to values.
pub struct HashTable<V> {
    shards: Box<[Shard<V>]>,
    per_shard: usize,
}

impl<V> HashTable<V> {
    /// A table holding at most about `capacity` entries.
    pub fn new(capacity: u64) -> Self {
        let capacity = usize::try_from(capacity).unwrap_or(usize::MAX).max(SHARDS);
        let shards = (0..SHARDS)
            .map(|_| RwLock::new(HashMap::default()))
            .collect();
        Self {
            shards,
            per_shard: capacity / SHARDS,
        }
    }

    fn shard(&self, hash: &TokenHash) -> &Shard<V> {
        // A different byte from the one the map hashes on, so shards don't skew buckets.
        &self.shards[usize::from(hash.0[8]) % SHARDS]
    }

    /// Runs `f` on the value for `hash` under the shard's read lock, or gives `f` back when
    /// there is none. `f` must not touch this table.
    pub fn get_with<R, F: FnOnce(&V) -> R>(&self, hash: &TokenHash, f: F) -> Result<R, F> {
        let shard = self
            .shard(hash)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        match shard.get(&Key(*hash)) {
            Some(value) => Ok(f(value)),
            None => Err(f),
        }
    }

    /// Inserts or replaces; makes room first if the shard is full.
    pub fn insert(&self, hash: TokenHash, value: V) {
        let mut shard = self
            .shard(&hash)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if shard.len() >= self.per_shard && !shard.contains_key(&Key(hash)) {
            let victim = shard.keys().next().copied();
            if let Some(victim) = victim {
                shard.remove(&victim);
            }
        }
        shard.insert(Key(hash), value);
    }

    /// Removes `hash`.
    pub fn remove(&self, hash: &TokenHash) {
        self.shard(hash)
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&Key(*hash));
    }

    /// Removes everything.
    pub fn clear(&self) {
        for shard in self.shards.iter() {
            shard
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
        }
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

/// The 64 bits of a token hash a [`FingerprintSet`] keeps: bytes the table and the shards do not
/// key on, so the three stay independent.
fn fingerprint(hash: &TokenHash) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&hash.0[16..24]);
    u64::from_le_bytes(bytes)
}

type FingerprintShard = RwLock<HashSet<u64, BuildHasherDefault<PassThrough>>>;

/// A set of token hashes that answers "certainly not in the set" exactly and "perhaps in the
/// set" with a false-positive rate of about n / 2^64: it keeps 64 bits of each HMAC output (a
/// uniformly random value to anyone without the server key), 8 bytes per member plus the hash
/// set's overhead, instead of 32. Sharded like [`HashTable`]; never shrinks.
pub struct FingerprintSet {
    shards: Box<[FingerprintShard]>,
}

impl Default for FingerprintSet {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| RwLock::new(HashSet::default()))
                .collect(),
        }
    }
}

impl FingerprintSet {
    fn shard(&self, hash: &TokenHash) -> &FingerprintShard {
        &self.shards[usize::from(hash.0[9]) % SHARDS]
    }

    /// Adds every hash of `hashes`, taking each shard's lock once.
    pub fn extend(&self, hashes: &[TokenHash]) {
        let mut by_shard: Vec<Vec<u64>> = vec![Vec::new(); SHARDS];
        for hash in hashes {
            by_shard[usize::from(hash.0[9]) % SHARDS].push(fingerprint(hash));
        }
        for (shard, fingerprints) in self.shards.iter().zip(by_shard) {
            if !fingerprints.is_empty() {
                shard
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend(fingerprints);
            }
        }
    }

    /// Whether `hash` may be in the set (`false`: it certainly is not).
    pub fn may_contain(&self, hash: &TokenHash) -> bool {
        self.shard(hash)
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&fingerprint(hash))
    }

    /// Members held now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(n: u32) -> TokenHash {
        // Spread like real HMAC outputs: distinct first bytes and shard bytes.
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (n.wrapping_mul(2_654_435_761).rotate_left(i as u32) >> 3) as u8 ^ (i as u8);
        }
        bytes[..4].copy_from_slice(&n.to_le_bytes());
        bytes[8] = (n % 251) as u8;
        TokenHash(bytes)
    }

    fn get<V: Copy>(t: &HashTable<V>, h: &TokenHash) -> Option<V> {
        t.get_with(h, |v| *v).ok()
    }

    #[test]
    fn insert_get_remove_clear() {
        let t = HashTable::new(1000);
        t.insert(hash(1), "one");
        t.insert(hash(2), "two");
        assert_eq!(get(&t, &hash(1)), Some("one"));
        assert_eq!(get(&t, &hash(3)), None);
        t.insert(hash(1), "uno");
        assert_eq!(get(&t, &hash(1)), Some("uno"));
        assert_eq!(t.len(), 2);
        t.remove(&hash(1));
        assert_eq!(get(&t, &hash(1)), None);
        t.clear();
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_miss_gives_the_closure_back() {
        let t = HashTable::new(1000);
        let mut calls = 0;
        let f = t.get_with(&hash(1), |v: &u32| *v).expect_err("absent");
        t.insert(hash(1), 7);
        assert_eq!(
            t.get_with(&hash(1), |v| {
                calls += 1;
                f(v)
            })
            .ok(),
            Some(7)
        );
        assert_eq!(calls, 1);
    }

    /// A hash spread over all 32 bytes (splitmix64), as an HMAC output is.
    fn random_hash(n: u64) -> TokenHash {
        let mut state = n;
        let mut bytes = [0u8; 32];
        for chunk in bytes.chunks_mut(8) {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        TokenHash(bytes)
    }

    #[test]
    fn a_fingerprint_set_never_forgets_a_member() {
        let set = FingerprintSet::default();
        let members: Vec<TokenHash> = (0..5000).map(random_hash).collect();
        set.extend(&members[..2500]);
        for h in &members[2500..] {
            set.extend(std::slice::from_ref(h));
        }
        assert!(members.iter().all(|h| set.may_contain(h)));
        assert_eq!(set.len(), 5000);
        let strangers = (1_000_000..1_100_000)
            .map(random_hash)
            .filter(|h| set.may_contain(h))
            .count();
        assert_eq!(strangers, 0, "64-bit fingerprints of distinct hashes");
    }

    #[test]
    fn capacity_is_bounded() {
        let t = HashTable::new(128);
        for n in 0..10_000 {
            t.insert(hash(n), n);
        }
        assert!(t.len() <= 128, "{} entries", t.len());
        // The newest entry is always kept.
        assert_eq!(get(&t, &hash(9_999)), Some(9_999));
    }
}
