//! The map behind the verification cache: sharded, read-mostly, keyed by token hashes, values
//! stored inline (no pointer to chase, no reference count to touch on a hit), and compact: ten
//! million entries must fit in a modest machine's memory.
//!
//! Keys are HMAC-SHA256 outputs, uniformly random to anyone without the server key, so their own
//! bytes are a perfect hash: no SipHash on the hot path, and no way for a client to aim
//! collisions at one bucket. Reads take one shard's read lock (an atomic add, uncontended
//! unless a writer is in that shard). Capacity is bounded per shard; when a shard is full the
//! entry under its eviction hand goes. Eviction never affects correctness, only the hit rate:
//! the store is always asked again.
//!
//! Layout of a shard: entries (key and value) live in fixed blocks of [`BLOCK`] slots that are
//! added one at a time and never moved, so growing never copies them and never holds two
//! copies; an index of 8-byte buckets (open addressing, linear probing) maps a key to its slot.
//! Only the index doubles, at 3/4 load: between 10.7 and 21.3 bytes per entry, where a table
//! holding the entries themselves would double them (a hash map of 64-byte entries costs
//! 73–146 bytes per entry).
//!
//! An entry keeps the first 16 bytes of its key ([`Key`]), not all 32: 128 bits of an HMAC
//! output. Two stored hashes sharing them is a 2^-128 event per pair (about 10^-24 for ten
//! million tokens), and a forged token that matches one needs an HMAC output its maker cannot
//! compute without the server key; the store, which answers every miss, keeps the whole hash.

use keyward_core::TokenHash;
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{PoisonError, RwLock};

/// Shards: enough that two cores rarely meet in one lock, few enough to stay cache-friendly.
const SHARDS: usize = 64;

/// Slots per block of a shard's entry storage (the first block grows to it; later ones are
/// made at this size).
const BLOCK: usize = 1024;

/// Index buckets of an empty shard.
const MIN_BUCKETS: usize = 8;

/// The slot number of an index bucket that holds no entry.
const VACANT: u32 = u32::MAX;

/// One index bucket: where an entry lives, and 32 bits of its key. The tag is the low half of
/// the key's first eight bytes, so a bucket knows its home (`tag & mask`) without reading the
/// entry: the index grows and deletes shift without touching the entries.
#[derive(Clone, Copy)]
struct Bucket {
    tag: u32,
    slot: u32,
}

impl Bucket {
    const VACANT: Self = Self {
        tag: 0,
        slot: VACANT,
    };
}

/// What an entry keeps of `hash`: its first 16 bytes (see the module docs).
pub fn prefix_of(hash: &TokenHash) -> [u8; 16] {
    Key::of(hash).0
}

/// What an entry keeps of its token hash: the first 16 bytes (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key([u8; 16]);

impl Key {
    fn of(hash: &TokenHash) -> Self {
        let mut key = [0; 16];
        key.copy_from_slice(&hash.0[..16]);
        Self(key)
    }

    /// The index tag (see [`Bucket`]).
    fn tag(&self) -> u32 {
        u32::from_le_bytes([self.0[0], self.0[1], self.0[2], self.0[3]])
    }

    /// The shard: a different byte from the tag's, so shards don't skew buckets.
    fn shard(&self) -> usize {
        usize::from(self.0[8]) % SHARDS
    }
}

/// A key and its value, in a block.
struct Entry<V> {
    key: Key,
    value: V,
}

/// One shard: its index, its blocks of entries, and the slots freed by removals.
struct Shard<V> {
    index: Box<[Bucket]>,
    blocks: Vec<Vec<Option<Entry<V>>>>,
    free: Vec<u32>,
    len: usize,
    /// The slot eviction looks at next.
    hand: usize,
}

impl<V> Shard<V> {
    fn new() -> Self {
        Self {
            index: vec![Bucket::VACANT; MIN_BUCKETS].into_boxed_slice(),
            blocks: Vec::new(),
            free: Vec::new(),
            len: 0,
            hand: 0,
        }
    }

    /// Slots made so far, held or free (every block but the last is full).
    fn slots(&self) -> usize {
        self.blocks
            .last()
            .map_or(0, |last| (self.blocks.len() - 1) * BLOCK + last.len())
    }

    fn entry(&self, slot: u32) -> Option<&Entry<V>> {
        let slot = slot as usize;
        self.blocks.get(slot / BLOCK)?.get(slot % BLOCK)?.as_ref()
    }

    fn entry_mut(&mut self, slot: u32) -> Option<&mut Option<Entry<V>>> {
        let slot = slot as usize;
        self.blocks.get_mut(slot / BLOCK)?.get_mut(slot % BLOCK)
    }

    fn mask(&self) -> usize {
        self.index.len() - 1
    }

    /// The bucket and slot of `key`, or `None`. Terminates: the index is never full.
    fn find(&self, key: &Key) -> Option<(usize, u32)> {
        let tag = key.tag();
        let mask = self.mask();
        let mut at = tag as usize & mask;
        loop {
            let bucket = self.index[at];
            if bucket.slot == VACANT {
                return None;
            }
            if bucket.tag == tag && self.entry(bucket.slot).is_some_and(|e| e.key == *key) {
                return Some((at, bucket.slot));
            }
            at = (at + 1) & mask;
        }
    }

    /// The first vacant bucket on `tag`'s probe path.
    fn vacancy(index: &[Bucket], tag: u32) -> usize {
        let mask = index.len() - 1;
        let mut at = tag as usize & mask;
        while index[at].slot != VACANT {
            at = (at + 1) & mask;
        }
        at
    }

    fn insert(&mut self, key: Key, value: V, capacity: usize) {
        if let Some((_, slot)) = self.find(&key) {
            if let Some(entry) = self.entry_mut(slot) {
                *entry = Some(Entry { key, value });
            }
            return;
        }
        if self.len >= capacity {
            self.evict_one();
        }
        if (self.len + 1) * 4 > self.index.len() * 3 {
            self.grow_index();
        }
        let slot = self.store(Entry { key, value });
        let tag = key.tag();
        let at = Self::vacancy(&self.index, tag);
        self.index[at] = Bucket { tag, slot };
        self.len += 1;
    }

    /// Puts `entry` in a free slot, or in a new one at the end.
    fn store(&mut self, entry: Entry<V>) -> u32 {
        if let Some(slot) = self.free.pop()
            && let Some(vacant) = self.entry_mut(slot)
        {
            *vacant = Some(entry);
            return slot;
        }
        let slots = self.slots();
        match self.blocks.last_mut() {
            Some(block) if block.len() < BLOCK => block.push(Some(entry)),
            _ => {
                // The first block grows as a vector does (a small cache stays small); the
                // following ones are made whole, so a large cache never copies its entries.
                let mut block = if self.blocks.is_empty() {
                    Vec::new()
                } else {
                    Vec::with_capacity(BLOCK)
                };
                block.push(Some(entry));
                self.blocks.push(block);
            }
        }
        // Fits: a shard never holds more than `u32::MAX - 1` slots (its capacity is checked
        // in `HashTable::new`).
        u32::try_from(slots).unwrap_or(VACANT - 1)
    }

    fn grow_index(&mut self) {
        let mut index = vec![Bucket::VACANT; self.index.len() * 2].into_boxed_slice();
        for bucket in self.index.iter().filter(|b| b.slot != VACANT) {
            let at = Self::vacancy(&index, bucket.tag);
            index[at] = *bucket;
        }
        self.index = index;
    }

    fn remove(&mut self, key: &Key) {
        let Some((at, slot)) = self.find(key) else {
            return;
        };
        if let Some(entry) = self.entry_mut(slot) {
            *entry = None;
        }
        self.free.push(slot);
        self.len -= 1;
        self.close_gap(at);
    }

    /// Empties bucket `at`, shifting back the buckets after it that probed past it (so no probe
    /// path is ever broken by a vacant bucket: deletion without tombstones).
    fn close_gap(&mut self, mut gap: usize) {
        let mask = self.mask();
        let mut at = gap;
        loop {
            at = (at + 1) & mask;
            let bucket = self.index[at];
            if bucket.slot == VACANT {
                break;
            }
            let home = bucket.tag as usize & mask;
            // The bucket may fill the gap when the gap lies on its path from home to here.
            if at.wrapping_sub(home) & mask >= at.wrapping_sub(gap) & mask {
                self.index[gap] = bucket;
                gap = at;
            }
        }
        self.index[gap] = Bucket::VACANT;
    }

    /// Removes the entry under the eviction hand (the next held slot after it).
    fn evict_one(&mut self) {
        let slots = self.slots();
        for _ in 0..slots {
            let slot = self.hand % slots;
            self.hand = slot + 1;
            let key = self.entry(slot as u32).map(|e| e.key);
            if let Some(key) = key {
                self.remove(&key);
                return;
            }
        }
    }
}

/// What [`HashTable::insert_prefix_if_room`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// The entry went in.
    Yes,
    /// The key had an entry already, which stays.
    Present,
    /// The key's shard is full: nothing went in.
    Full,
    /// The entry's check failed (it may be stale): nothing went in.
    Stale,
}

/// A bounded concurrent map from token hashes to values.
pub struct HashTable<V> {
    shards: Box<[RwLock<Shard<V>>]>,
    per_shard: usize,
}

impl<V> HashTable<V> {
    /// A table holding at most about `capacity` entries.
    pub fn new(capacity: u64) -> Self {
        let capacity = usize::try_from(capacity).unwrap_or(usize::MAX).max(SHARDS);
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::new())).collect(),
            // Slot numbers are u32, VACANT excluded.
            per_shard: (capacity / SHARDS).min(VACANT as usize - 1),
        }
    }

    fn shard(&self, key: &Key) -> &RwLock<Shard<V>> {
        &self.shards[key.shard()]
    }

    /// Runs `f` on the value for `hash` under the shard's read lock, or gives `f` back when
    /// there is none. `f` must not touch this table.
    pub fn get_with<R, F: FnOnce(&V) -> R>(&self, hash: &TokenHash, f: F) -> Result<R, F> {
        let key = Key::of(hash);
        let shard = self
            .shard(&key)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        match shard.find(&key).and_then(|(_, slot)| shard.entry(slot)) {
            Some(entry) => Ok(f(&entry.value)),
            None => Err(f),
        }
    }

    /// Inserts or replaces; makes room first if the shard is full.
    #[cfg(test)]
    pub fn insert(&self, hash: TokenHash, value: V) {
        self.insert_if(hash, value, || true);
    }

    /// Inserts or replaces (making room first if the shard is full) if `fresh()` holds when
    /// called under the shard's write lock; returns whether it did. So no reader ever sees an
    /// entry that failed its check, not even for an instant: the check and the insert are one
    /// step to anyone who locks the shard, as a removal does. `fresh` must not touch this table.
    pub fn insert_if(&self, hash: TokenHash, value: V, fresh: impl FnOnce() -> bool) -> bool {
        let key = Key::of(&hash);
        let mut shard = self
            .shard(&key)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if !fresh() {
            return false;
        }
        shard.insert(key, value, self.per_shard);
        true
    }

    /// Inserts when `hash` is absent, its shard has room and `fresh()` holds (checked under the
    /// shard's write lock, as in [`Self::insert_if`]), evicting nothing; returns whether it did.
    /// For filling the cache ahead of need (the start-up warming), which must not push out what
    /// is already there.
    pub fn insert_if_room(&self, hash: TokenHash, value: V, fresh: impl FnOnce() -> bool) -> bool {
        self.insert_prefix_if_room(prefix_of(&hash), value, fresh) == Inserted::Yes
    }

    /// [`Self::insert_if_room`] by what an entry keeps of its key, the first 16 bytes: for
    /// entries read back from where [`Self::for_each_in`] wrote them down.
    pub fn insert_prefix_if_room(
        &self,
        prefix: [u8; 16],
        value: V,
        fresh: impl FnOnce() -> bool,
    ) -> Inserted {
        let key = Key(prefix);
        let mut shard = self
            .shard(&key)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if shard.find(&key).is_some() {
            return Inserted::Present;
        }
        if shard.len >= self.per_shard {
            return Inserted::Full;
        }
        if !fresh() {
            return Inserted::Stale;
        }
        shard.insert(key, value, self.per_shard);
        Inserted::Yes
    }

    /// Removes `hash`.
    pub fn remove(&self, hash: &TokenHash) {
        let key = Key::of(hash);
        self.shard(&key)
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
    }

    /// Removes everything, and gives the memory back.
    pub fn clear(&self) {
        for shard in self.shards.iter() {
            *shard.write().unwrap_or_else(PoisonError::into_inner) = Shard::new();
        }
    }

    /// How many shards the table has (see [`Self::for_each_in`]).
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// Runs `f` on every entry of shard `shard` (below [`Self::shards`]), with what it keeps of
    /// its key (the first 16 bytes), under that shard's read lock.
    pub fn for_each_in(&self, shard: usize, mut f: impl FnMut([u8; 16], &V)) {
        let Some(shard) = self.shards.get(shard) else {
            return;
        };
        let shard = shard.read().unwrap_or_else(PoisonError::into_inner);
        for entry in shard.blocks.iter().flatten().flatten() {
            f(entry.key.0, &entry.value);
        }
    }

    /// Runs `f` on every entry, one shard at a time (see [`Self::for_each_in`]): entries
    /// inserted or removed meanwhile may or may not be seen.
    #[cfg(test)]
    pub fn for_each(&self, mut f: impl FnMut([u8; 16], &V)) {
        for shard in 0..self.shards() {
            self.for_each_in(shard, &mut f);
        }
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).len)
            .sum()
    }
}

/// Passes a [`Fingerprint`]'s own hash through: its bytes are already uniformly random.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not reached through `Fingerprint`; folded so the hasher stays correct for any input.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The 48 bits of a token hash a [`FingerprintSet`] keeps: bytes the table and the shards do not
/// key on, so the three stay independent. Six bytes with no alignment, so a hash set slot is
/// seven with its control byte.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Fingerprint([u8; 6]);

impl Fingerprint {
    fn of(hash: &TokenHash) -> Self {
        let mut bytes = [0; 6];
        bytes.copy_from_slice(&hash.0[16..22]);
        Self(bytes)
    }
}

impl Hash for Fingerprint {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The hash set takes its bucket from the low bits and its control byte from the top
        // seven: the 48 bits, and their first 16 again on top.
        let [a, b, c, d, e, f] = self.0;
        state.write_u64(u64::from_le_bytes([a, b, c, d, e, f, a, b]));
    }
}

type FingerprintShard = RwLock<HashSet<Fingerprint, BuildHasherDefault<PassThrough>>>;

/// A set of token hashes that answers "certainly not in the set" exactly and "perhaps in the
/// set" with a false-positive rate of about n / 2^54: in each of its 64 shards it keeps 48 bits
/// of each HMAC output (a uniformly random value to anyone without the server key), 6 bytes per
/// member plus the hash set's control byte and spare room, instead of 32. A false positive costs
/// one store read, never an answer; two members sharing a fingerprint (about one chance in
/// 400 that any pair does at ten million members) count once in [`Self::len`]. Sharded like
/// [`HashTable`]; never shrinks.
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
        let mut by_shard: Vec<Vec<Fingerprint>> = vec![Vec::new(); SHARDS];
        for hash in hashes {
            by_shard[usize::from(hash.0[9]) % SHARDS].push(Fingerprint::of(hash));
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
            .contains(&Fingerprint::of(hash))
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
        assert_eq!(
            strangers, 0,
            "48-bit fingerprints in 64 shards of distinct hashes"
        );
    }

    /// A key whose index tag is one of a few values (long clusters, equal tags, wrapped probe
    /// paths) and whose shard is one of two, so the probing and the deletion's back-shift are
    /// exercised where they are hardest.
    fn crowded_hash(tag: u8, n: u16) -> TokenHash {
        let mut bytes = [0u8; 32];
        bytes[0] = tag;
        bytes[8] = (n % 2) as u8;
        bytes[10..12].copy_from_slice(&n.to_le_bytes());
        TokenHash(bytes)
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u16, u32),
        Remove(u8, u16),
        Clear,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        // Tags 0..16 and 248..=255: clusters that wrap around the end of a small index.
        let tag = prop_oneof![0u8..16, 248u8..=255];
        prop_oneof![
            20 => (tag.clone(), 0u16..300, any::<u32>()).prop_map(|(t, n, v)| Op::Insert(t, n, v)),
            10 => (tag, 0u16..300).prop_map(|(t, n)| Op::Remove(t, n)),
            1 => Just(Op::Clear),
        ]
    }

    proptest::proptest! {
        #[test]
        fn the_table_answers_as_a_map_does(ops in proptest::collection::vec(op(), 1..600)) {
            let table = HashTable::new(1_000_000);
            let mut model = std::collections::HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(t, n, v) => {
                        table.insert(crowded_hash(t, n), v);
                        model.insert((t, n), v);
                    }
                    Op::Remove(t, n) => {
                        table.remove(&crowded_hash(t, n));
                        model.remove(&(t, n));
                    }
                    Op::Clear => {
                        table.clear();
                        model.clear();
                    }
                }
                proptest::prop_assert_eq!(table.len(), model.len());
            }
            for t in (0u8..16).chain(248..=255) {
                for n in 0..300 {
                    proptest::prop_assert_eq!(get(&table, &crowded_hash(t, n)), model.get(&(t, n)).copied());
                }
            }
            // Every entry is visited once, by what it keeps of its key, and an empty table
            // given them by those bytes answers the same.
            let mut seen = std::collections::HashMap::new();
            table.for_each(|prefix, v| {
                assert!(seen.insert(prefix, *v).is_none(), "visited twice");
            });
            let expected: std::collections::HashMap<_, _> = model
                .iter()
                .map(|(&(t, n), &v)| (prefix_of(&crowded_hash(t, n)), v))
                .collect();
            proptest::prop_assert_eq!(&seen, &expected);
            let copy = HashTable::new(1_000_000);
            for (&prefix, &v) in &seen {
                proptest::prop_assert_eq!(copy.insert_prefix_if_room(prefix, v, || true), Inserted::Yes);
                proptest::prop_assert_eq!(
                    copy.insert_prefix_if_room(prefix, v, || true),
                    Inserted::Present,
                    "never over an entry"
                );
            }
            for (&(t, n), &v) in &model {
                proptest::prop_assert_eq!(get(&copy, &crowded_hash(t, n)), Some(v));
            }
        }
    }

    #[test]
    fn freed_slots_are_reused_and_blocks_are_never_copied() {
        let t = HashTable::new(1_000_000);
        let keys: Vec<TokenHash> = (0..150_000).map(random_hash).collect();
        for (n, k) in keys.iter().enumerate() {
            t.insert(*k, n);
        }
        let slots = |t: &HashTable<usize>| -> usize {
            t.shards.iter().map(|s| s.read().unwrap().slots()).sum()
        };
        assert_eq!(slots(&t), 150_000);
        for k in &keys[..50_000] {
            t.remove(k);
        }
        for (n, k) in (150_000..200_000).map(random_hash).enumerate() {
            t.insert(k, n);
        }
        assert_eq!(t.len(), 150_000);
        // The new entries fill the freed slots; a shard adds slots only for the new entries it
        // got beyond those it freed (about a thousand over the 64 shards).
        assert!(slots(&t) < 152_000, "{} slots", slots(&t));
        for shard in t.shards.iter() {
            let shard = shard.read().unwrap();
            let (last, full) = shard.blocks.split_last().unwrap();
            assert!(
                full.iter()
                    .all(|b| b.len() == BLOCK && b.capacity() == BLOCK)
            );
            assert!(last.capacity() <= BLOCK);
        }
        assert!(
            keys[50_000..]
                .iter()
                .enumerate()
                .all(|(n, k)| get(&t, k) == Some(n + 50_000))
        );
    }

    #[test]
    fn the_freshness_check_runs_where_no_reader_can_see_the_entry() {
        let t = HashTable::new(1000);
        let h = hash(1);
        let locked = |t: &HashTable<u32>, h: &TokenHash| t.shard(&Key::of(h)).try_read().is_err();
        // The check runs while the shard is locked, so a reader waits for its outcome...
        assert!(t.insert_if(h, 1, || locked(&t, &h)));
        assert_eq!(get(&t, &h), Some(1));
        // ...and an entry that fails it is never there, not even replacing an older one.
        assert!(!t.insert_if(h, 2, || false));
        assert_eq!(get(&t, &h), Some(1), "a stale entry replaced a fresh one");
        let other = hash(2);
        assert_eq!(
            t.insert_prefix_if_room(prefix_of(&other), 3, || !locked(&t, &other)),
            Inserted::Stale
        );
        assert!(!t.insert_if_room(other, 3, || false));
        assert_eq!(get(&t, &other), None);
        assert!(t.insert_if_room(other, 4, || locked(&t, &other)));
        assert_eq!(get(&t, &other), Some(4));
        // An entry already there or a full shard is answered before the check is run.
        assert_eq!(
            t.insert_prefix_if_room(prefix_of(&other), 5, || panic!("checked for nothing")),
            Inserted::Present
        );
    }

    #[test]
    fn filling_ahead_of_need_never_evicts() {
        let t = HashTable::new(128);
        let shard_mates: Vec<TokenHash> = (0..100u32)
            .map(|n| {
                let mut h = random_hash(u64::from(n));
                h.0[8] = 0;
                h
            })
            .collect();
        // Two entries per shard: the first two of the same shard go in, the rest find no room.
        assert!(t.insert_if_room(shard_mates[0], 0, || true));
        assert!(t.insert_if_room(shard_mates[1], 1, || true));
        assert!(!t.insert_if_room(shard_mates[2], 2, || true));
        assert!(
            !t.insert_if_room(shard_mates[0], 9, || true),
            "present: not replaced"
        );
        assert_eq!(get(&t, &shard_mates[0]), Some(0));
        assert_eq!(get(&t, &shard_mates[1]), Some(1));
        assert_eq!(get(&t, &shard_mates[2]), None);
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
