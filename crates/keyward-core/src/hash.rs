//! The keyed hash: all a store ever keeps of a token is `HMAC-SHA256(server key, token text)` and
//! the id of the key that made it.
//!
//! A fast keyed hash is right for 256-bit random secrets (nothing to brute-force); a slow password
//! KDF would only make every API request slower. Keying it means a stolen database alone cannot
//! even confirm a guessed token. The hash input is the whole token text, prefix included, as
//! UTF-8 bytes: changing that breaks every stored token (pinned by a test vector below).

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::{RandomError, TokenSecret, fill_random};

/// Bytes in a server key.
pub const SERVER_KEY_BYTES: usize = 32;

/// The server's HMAC key. Redacted in `Debug`, zeroized on drop.
pub struct ServerKey {
    bytes: Zeroizing<[u8; SERVER_KEY_BYTES]>,
    id: KeyId,
}

/// A server key was given in the wrong form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a server key is {SERVER_KEY_BYTES} bytes written as {} hexadecimal characters", SERVER_KEY_BYTES * 2)]
pub struct BadServerKey;

impl ServerKey {
    /// A new random key from the OS CSPRNG.
    pub fn generate() -> Result<Self, RandomError> {
        let mut bytes = Zeroizing::new([0u8; SERVER_KEY_BYTES]);
        fill_random(bytes.as_mut())?;
        Ok(Self::from_bytes(bytes))
    }

    fn from_bytes(bytes: Zeroizing<[u8; SERVER_KEY_BYTES]>) -> Self {
        // The id names the key without revealing it: a hash of the key under a fixed label.
        let digest = Sha256::new_with_prefix(b"keyward key id v1\0")
            .chain_update(bytes.as_ref())
            .finalize();
        let id = KeyId(format!("k{}", hex(&digest[..6])));
        Self { bytes, id }
    }

    /// Reads a key written as hexadecimal (surrounding whitespace is ignored).
    pub fn from_hex(s: &str) -> Result<Self, BadServerKey> {
        let s = s.trim();
        if s.len() != SERVER_KEY_BYTES * 2 {
            return Err(BadServerKey);
        }
        let mut bytes = Zeroizing::new([0u8; SERVER_KEY_BYTES]);
        for (i, pair) in s.as_bytes().chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0]).ok_or(BadServerKey)?;
            let lo = hex_value(pair[1]).ok_or(BadServerKey)?;
            bytes[i] = (hi << 4) | lo;
        }
        Ok(Self::from_bytes(bytes))
    }

    /// The key as hexadecimal, for writing the key file.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex(self.bytes.as_ref()))
    }

    /// The key's public id.
    pub fn id(&self) -> &KeyId {
        &self.id
    }
}

impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerKey({}, [REDACTED])", self.id.0)
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// `bytes` in lowercase hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// The public id of a server key, stored beside each hash so keys can be rotated.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct KeyId(String);

impl KeyId {
    /// Wraps an id read back from a store.
    pub fn from_stored(s: String) -> Self {
        Self(s)
    }

    /// The id text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `HMAC-SHA256(server key, token)`. Not secret on its own, but compared in constant time anyway.
#[derive(Clone, Copy, Hash, Eq)]
#[expect(
    clippy::derived_hash_with_manual_eq,
    reason = "equality is byte equality, only in constant time; it agrees with the derived byte hash"
)]
pub struct TokenHash(pub [u8; 32]);

impl PartialEq for TokenHash {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({}…)", hex(&self.0[..4]))
    }
}

impl TokenHash {
    /// Wraps 32 bytes read back from a store; `None` if the length is wrong.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }
}

/// Hashes tokens under one server key. Keeps the HMAC state with the key already absorbed, so
/// each hash costs only the token's blocks (clone, update, finalize).
#[derive(Clone)]
pub struct TokenHasher {
    mac: Hmac<Sha256>,
    key_id: KeyId,
}

impl TokenHasher {
    /// A hasher for `key`.
    pub fn new(key: &ServerKey) -> Self {
        // HMAC accepts keys of any length; 32 bytes is always valid.
        let mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(key.bytes.as_ref()) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        Self {
            mac,
            key_id: key.id.clone(),
        }
    }

    /// The keyed hash of a token.
    pub fn hash(&self, token: &TokenSecret) -> TokenHash {
        self.hash_str(token.expose())
    }

    /// The keyed hash of token text that has already been validated.
    pub fn hash_str(&self, token: &str) -> TokenHash {
        let mut mac = self.mac.clone();
        mac.update(token.as_bytes());
        TokenHash(mac.finalize().into_bytes().into())
    }

    /// A key derived from this hasher's server key for another purpose than hashing tokens:
    /// the keyed hash of `purpose` behind a label holding a NUL byte, which no token text can
    /// hold, so nothing made with it can pass for a token hash. Authenticates what keyward
    /// writes and reads back itself (the verification cache's snapshot).
    pub fn subkey(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        let mut mac = self.mac.clone();
        mac.update(b"keyward subkey v1\0");
        mac.update(purpose.as_bytes());
        Zeroizing::new(mac.finalize().into_bytes().into())
    }

    /// The id of the key this hasher uses.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }
}

impl fmt::Debug for TokenHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHasher({})", self.key_id.0)
    }
}

/// The server keys a deployment holds, in order: the first is current (every new hash is made
/// under it); the others only verify the secrets they hashed before a rotation, until those
/// move to the current key. Never empty, no key twice.
#[derive(Debug, Clone)]
pub struct KeyRing {
    hashers: Vec<TokenHasher>,
}

/// A key ring was given in the wrong form. Never shows a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRingError {
    /// No key at all.
    #[error("the key ring holds no key")]
    Empty,
    /// A line is not a key.
    #[error("line {line} is not a server key: {source}")]
    BadKey {
        /// The line's number, from 1.
        line: usize,
        /// What is wrong with it.
        source: BadServerKey,
    },
    /// The same key twice.
    #[error("key {0} is in the ring twice")]
    Duplicate(KeyId),
}

impl KeyRing {
    /// A ring of `keys`, the first current.
    pub fn new(keys: &[ServerKey]) -> Result<Self, KeyRingError> {
        check_ring(keys)?;
        Ok(Self {
            hashers: keys.iter().map(TokenHasher::new).collect(),
        })
    }

    /// The hasher of the current key.
    pub fn current(&self) -> &TokenHasher {
        &self.hashers[0]
    }

    /// The hashers of the older keys, newest first.
    pub fn older(&self) -> &[TokenHasher] {
        &self.hashers[1..]
    }

    /// Every key's id, the current first.
    pub fn ids(&self) -> impl Iterator<Item = &KeyId> {
        self.hashers.iter().map(TokenHasher::key_id)
    }

    /// Whether the ring holds the key `id`.
    pub fn contains(&self, id: &KeyId) -> bool {
        self.ids().any(|k| k == id)
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.hashers.len()
    }

    /// Always `false`: a ring holds at least one key.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl From<TokenHasher> for KeyRing {
    fn from(hasher: TokenHasher) -> Self {
        Self {
            hashers: vec![hasher],
        }
    }
}

fn check_ring(keys: &[ServerKey]) -> Result<(), KeyRingError> {
    if keys.is_empty() {
        return Err(KeyRingError::Empty);
    }
    for (i, key) in keys.iter().enumerate() {
        if keys[..i].iter().any(|k| k.id == key.id) {
            return Err(KeyRingError::Duplicate(key.id.clone()));
        }
    }
    Ok(())
}

/// Reads a key ring written one key per line in hexadecimal, the current key first. Blank lines
/// and lines starting with `#` are skipped; a single key (the older `server.key` form) is a ring
/// of one.
pub fn parse_key_ring(text: &str) -> Result<Vec<ServerKey>, KeyRingError> {
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = ServerKey::from_hex(line).map_err(|source| KeyRingError::BadKey {
            line: i + 1,
            source,
        })?;
        keys.push(key);
    }
    check_ring(&keys)?;
    Ok(keys)
}

/// Writes `keys` as [`parse_key_ring`] reads them: one per line, in order.
pub fn format_key_ring(keys: &[ServerKey]) -> Zeroizing<String> {
    let mut text = Zeroizing::new(String::with_capacity(
        keys.len() * (SERVER_KEY_BYTES * 2 + 1),
    ));
    for key in keys {
        text.push_str(&key.to_hex());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const SAMPLE: &str = "kwp_003aUlTJC7tjlCTQj2uNU3MFagCXG9LRKRcwGkBIDlf2mnIEQ";

    #[test]
    fn known_answer_vector() {
        // Computed independently: python3 -c "import hmac,hashlib;
        // print(hmac.new(bytes(range(32)), SAMPLE.encode(), hashlib.sha256).hexdigest())"
        let key = ServerKey::from_hex(KEY_HEX).unwrap();
        let hasher = TokenHasher::new(&key);
        let token = TokenSecret::parse_str(SAMPLE).unwrap();
        assert_eq!(hex(&hasher.hash(&token).0), HMAC_OF_SAMPLE);
    }

    const HMAC_OF_SAMPLE: &str = "b0bcb55f8ad9f137a5fb9f71e885d153b3b72e461a936c7bca8528d1929106b9";

    #[test]
    fn key_round_trips_through_hex_and_has_a_stable_id() {
        let key = ServerKey::from_hex(KEY_HEX).unwrap();
        assert_eq!(key.to_hex().as_str(), KEY_HEX);
        let again = ServerKey::from_hex(&KEY_HEX.to_uppercase()).unwrap();
        assert_eq!(key.id(), again.id());
        assert_eq!(key.id().as_str().len(), 13);
        let other = ServerKey::generate().unwrap();
        assert_ne!(key.id(), other.id());
    }

    #[test]
    fn a_subkey_is_fixed_by_key_and_purpose_and_is_no_token_hash() {
        let hasher = TokenHasher::new(&ServerKey::from_hex(KEY_HEX).unwrap());
        let other = TokenHasher::new(&ServerKey::generate().unwrap());
        let a = hasher.subkey("cache snapshot");
        assert_eq!(*a, *hasher.subkey("cache snapshot"));
        assert_ne!(*a, *hasher.subkey("cache snapshot "));
        assert_ne!(*a, *other.subkey("cache snapshot"));
        // python3 -c "import hmac,hashlib; print(hmac.new(bytes(range(32)),
        // b'keyward subkey v1\\0cache snapshot', hashlib.sha256).hexdigest())"
        assert_eq!(hex(a.as_ref()), SUBKEY_OF_CACHE_SNAPSHOT);
        assert_ne!(*a, hasher.hash_str("cache snapshot").0);
    }

    const SUBKEY_OF_CACHE_SNAPSHOT: &str =
        "474c28f26c644524bdf48bcc8e6ee9abeab45c6905971ab4b28075466cfb5476";

    #[test]
    fn bad_keys_are_refused() {
        for bad in ["", "00", &KEY_HEX[1..], &format!("{}zz", &KEY_HEX[2..])] {
            assert!(ServerKey::from_hex(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn debug_redacts_the_key() {
        let key = ServerKey::from_hex(KEY_HEX).unwrap();
        assert!(!format!("{key:?}").contains("0001020304"));
    }

    #[test]
    fn a_ring_reads_back_in_order_and_refuses_empty_duplicate_and_bad_lines() {
        let a = ServerKey::generate().unwrap();
        let b = ServerKey::from_hex(KEY_HEX).unwrap();
        let text = format_key_ring(&[a, b]);
        let keys = parse_key_ring(&format!("# a comment\n\n{}", text.as_str())).unwrap();
        let ring = KeyRing::new(&keys).unwrap();
        assert_eq!(ring.len(), 2);
        assert_eq!(ring.older()[0].key_id(), keys[1].id());
        assert_eq!(ring.current().key_id(), keys[0].id());
        assert!(ring.contains(keys[1].id()));
        // The older single-key file is a ring of one.
        assert_eq!(parse_key_ring(KEY_HEX).unwrap().len(), 1);
        assert_eq!(
            parse_key_ring("\n# only\n").unwrap_err(),
            KeyRingError::Empty
        );
        let twice = format!("{KEY_HEX}\n{}\n", KEY_HEX.to_uppercase());
        assert!(matches!(
            parse_key_ring(&twice),
            Err(KeyRingError::Duplicate(_))
        ));
        let bad = parse_key_ring(&format!("{KEY_HEX}\nnot-a-key-{KEY_HEX}\n")).unwrap_err();
        assert_eq!(
            bad,
            KeyRingError::BadKey {
                line: 2,
                source: BadServerKey
            }
        );
        // The error names the line, never its text.
        assert!(!bad.to_string().contains(KEY_HEX));
    }

    #[test]
    fn different_keys_give_different_hashes() {
        let token = TokenSecret::parse_str(SAMPLE).unwrap();
        let a = TokenHasher::new(&ServerKey::generate().unwrap()).hash(&token);
        let b = TokenHasher::new(&ServerKey::generate().unwrap()).hash(&token);
        assert_ne!(a, b);
    }
}
