//! The token text: `<prefix>_<body><checksum>`.
//!
//! - `prefix`: chosen by the deployment (default `kwp`), `[a-z][a-z0-9]{1,15}`, so scanners can
//!   find leaked tokens;
//! - `body`: 32 bytes from the OS CSPRNG as a big-endian number in fixed-width base62 (43 chars);
//! - `checksum`: CRC32 (IEEE) of everything before it, fixed-width base62 (6 chars), so a typo or a
//!   random string is refused offline, without a database (GitHub's scheme).
//!
//! Every constant here is part of the wire format: changing one makes every issued token
//! malformed. They are pinned by the test vector at the bottom of this file.

use serde::{Deserialize, Deserializer};
use std::fmt;
use zeroize::Zeroizing;

use crate::{RandomError, fill_random};

/// The base62 alphabet, in this order. Changing it breaks every issued token.
pub const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Random bytes in a token body (256 bits).
pub const BODY_BYTES: usize = 32;
/// Length of the body in base62: the smallest n with 62^n >= 2^256.
pub const BODY_LEN: usize = 43;
/// Length of the checksum in base62: the smallest n with 62^n >= 2^32.
pub const CHECKSUM_LEN: usize = 6;
/// The separator between prefix and body.
pub const SEPARATOR: char = '_';
/// The prefix a deployment gets unless it chooses one.
pub const DEFAULT_PREFIX: &str = "kwp";
/// Shortest and longest prefix.
pub const PREFIX_LEN: std::ops::RangeInclusive<usize> = 2..=16;
/// How many trailing characters of a token its hint shows.
pub const HINT_CHARS: usize = 4;
/// The longest token text of any valid prefix; anything longer is refused without more work.
pub const MAX_TOKEN_LEN: usize = 16 + 1 + BODY_LEN + CHECKSUM_LEN;

/// Why a string is not a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The prefix is not `[a-z][a-z0-9]{1,15}`.
    #[error(
        "the prefix must be 2 to 16 characters: a lowercase letter, then lowercase letters or digits"
    )]
    BadPrefix,
    /// The shape is wrong: no separator, wrong length, or a character outside base62.
    #[error("not a keyward token: expected <prefix>_<43 base62 characters><6 base62 characters>")]
    BadShape,
    /// The shape is right but the checksum does not match.
    #[error("the token's checksum does not match: it was mistyped or truncated")]
    BadChecksum,
}

/// A deployment's token prefix, already checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix(String);

impl Prefix {
    /// Checks `s` against `[a-z][a-z0-9]{1,15}`.
    pub fn parse(s: &str) -> Result<Self, FormatError> {
        if is_valid_prefix(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(FormatError::BadPrefix)
        }
    }

    /// The prefix text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Prefix {
    fn default() -> Self {
        Self(DEFAULT_PREFIX.to_owned())
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_valid_prefix(s: &str) -> bool {
    is_valid_prefix_bytes(s.as_bytes())
}

fn is_valid_prefix_bytes(b: &[u8]) -> bool {
    PREFIX_LEN.contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

fn is_base62(c: u8) -> bool {
    c.is_ascii_alphanumeric()
}

/// Encodes a big-endian unsigned number in exactly `out.len()` base62 digits (most significant
/// first), padding with `0`. The caller sizes `out` so that the number always fits.
fn encode_base62_fixed(number: &[u8], out: &mut [u8]) {
    let mut n: Zeroizing<Vec<u8>> = Zeroizing::new(number.to_vec());
    for slot in out.iter_mut().rev() {
        // Long division of n by 62, in place; the remainder is the next digit.
        let mut rem: u32 = 0;
        for byte in n.iter_mut() {
            let acc = (rem << 8) | u32::from(*byte);
            *byte = (acc / 62) as u8;
            rem = acc % 62;
        }
        *slot = ALPHABET[rem as usize];
    }
}

fn checksum_of(prefix_and_body: &[u8]) -> [u8; CHECKSUM_LEN] {
    // Same digits as `encode_base62_fixed` on the big-endian bytes, without allocating: this
    // runs on every verification.
    let mut crc = crc32fast::hash(prefix_and_body);
    let mut out = [0u8; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(crc % 62) as usize];
        crc /= 62;
    }
    out
}

/// Checks the shape and checksum of `s` without allocating; the first gate on the hot path.
pub fn validate(s: &str) -> Result<(), FormatError> {
    let bytes = s.as_bytes();
    // Body and checksum have fixed widths, so the separator's place is known: no search.
    let sep = bytes
        .len()
        .checked_sub(1 + BODY_LEN + CHECKSUM_LEN)
        .ok_or(FormatError::BadShape)?;
    if bytes.len() > MAX_TOKEN_LEN
        || bytes[sep] != SEPARATOR as u8
        || !is_valid_prefix_bytes(&bytes[..sep])
    {
        return Err(FormatError::BadShape);
    }
    // No short-circuit: a branch-free pass the compiler can vectorise.
    let rest = &bytes[sep + 1..];
    if !rest.iter().fold(true, |ok, &c| ok & is_base62(c)) {
        return Err(FormatError::BadShape);
    }
    let split = bytes.len() - CHECKSUM_LEN;
    // A plain comparison: both sides come from the caller's own input, nothing secret is in it.
    if checksum_of(&bytes[..split]) == bytes[split..] {
        Ok(())
    } else {
        Err(FormatError::BadChecksum)
    }
}

/// Whether `text` holds a well-formed token of any prefix (shape and checksum): a secret pasted
/// into a name or a reason, which must not be stored. A random string passes the checksum once in
/// 2^32, so this refuses next to nothing else.
pub fn contains_token(text: &str) -> bool {
    let bytes = text.as_bytes();
    let tail = 1 + BODY_LEN + CHECKSUM_LEN;
    bytes.iter().enumerate().any(|(sep, &b)| {
        b == SEPARATOR as u8
            && sep + tail <= bytes.len()
            && PREFIX_LEN.clone().any(|len| {
                sep.checked_sub(len)
                    .and_then(|start| std::str::from_utf8(&bytes[start..sep + tail]).ok())
                    .is_some_and(|candidate| validate(candidate).is_ok())
            })
    })
}

/// A secret string as it arrives, not yet checked: zeroized on drop, redacted in `Debug`, and
/// with no `Display` or `Serialize`, so it cannot end up in a log or a response by accident.
pub struct RawSecret(Zeroizing<String>);

impl RawSecret {
    /// Wraps a string that holds (or may hold) a secret.
    pub fn new(s: String) -> Self {
        Self(Zeroizing::new(s))
    }

    /// The text, for checking or hashing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RawSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RawSecret([REDACTED])")
    }
}

impl<'de> Deserialize<'de> for RawSecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::new)
    }
}

/// A well-formed token with a valid checksum. The plaintext lives only here: zeroized on drop,
/// redacted in `Debug`, no `Display`, no `Serialize`. Reading it takes an explicit [`expose`].
///
/// [`expose`]: TokenSecret::expose
pub struct TokenSecret(Zeroizing<String>);

impl TokenSecret {
    /// Makes a new token with 256 bits from the OS CSPRNG.
    pub fn generate(prefix: &Prefix) -> Result<Self, RandomError> {
        let mut body = Zeroizing::new([0u8; BODY_BYTES]);
        fill_random(body.as_mut())?;
        let p = prefix.as_str();
        let mut text = Zeroizing::new(vec![0u8; p.len() + 1 + BODY_LEN + CHECKSUM_LEN]);
        text[..p.len()].copy_from_slice(p.as_bytes());
        text[p.len()] = SEPARATOR as u8;
        let body_start = p.len() + 1;
        encode_base62_fixed(body.as_ref(), &mut text[body_start..body_start + BODY_LEN]);
        let split = body_start + BODY_LEN;
        let checksum = checksum_of(&text[..split]);
        text[split..].copy_from_slice(&checksum);
        let mut owned = String::with_capacity(text.len());
        // Every byte written above is ASCII.
        owned.extend(text.iter().map(|&b| char::from(b)));
        Ok(Self(Zeroizing::new(owned)))
    }

    /// Checks a presented string; on success the secret takes ownership of it.
    pub fn parse(raw: RawSecret) -> Result<Self, FormatError> {
        validate(raw.expose())?;
        Ok(Self(raw.0))
    }

    /// Checks a borrowed string, copying it into a new secret on success.
    pub fn parse_str(s: &str) -> Result<Self, FormatError> {
        validate(s)?;
        Ok(Self(Zeroizing::new(s.to_owned())))
    }

    /// The plaintext. Call only to hash it or to hand it to the person who created it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The token's prefix.
    pub fn prefix(&self) -> &str {
        self.0.split_once(SEPARATOR).map_or("", |(p, _)| p)
    }

    /// A non-secret hint to tell tokens apart: the prefix and the last four characters,
    /// e.g. `kwp_…x7Qa`. Those are the low-order end of the checksum (the CRC32 in base62),
    /// not of the body: they show about 24 bits of a function of the body, so at least
    /// 256 − 24 of the body's bits stay unknown.
    pub fn hint(&self) -> String {
        let tail = &self.0[self.0.len() - HINT_CHARS..];
        format!("{}{SEPARATOR}…{tail}", self.prefix())
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenSecret({}_[REDACTED])", self.prefix())
    }
}

#[cfg(test)]
mod contains_tests {
    use super::*;

    #[test]
    fn a_token_anywhere_in_a_text_is_found() {
        let token = TokenSecret::generate(&Prefix::default()).unwrap();
        let t = token.expose();
        for text in [
            t.to_owned(),
            format!("my token {t} for ci"),
            format!("x{t}"),
            format!("{t}é"),
            format!("é{t}"),
        ] {
            assert!(contains_token(&text), "{text}");
        }
        let other = TokenSecret::generate(&Prefix::parse("acme").unwrap()).unwrap();
        assert!(contains_token(&format!("old: {}", other.expose())));
        assert!(!contains_token(&t[1..]), "cut short");
        assert!(!contains_token(&t[..t.len() - 1]));
        assert!(!contains_token("kwp_ci deploy token"));
        assert!(!contains_token(""));
        let mut typo = t.to_owned().into_bytes();
        typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
        assert!(!contains_token(std::str::from_utf8(&typo).unwrap()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // A fixed sample token: body = bytes 0..32, prefix kwp. Pins alphabet, widths and checksum;
    // computed independently (Python: int.from_bytes + zlib.crc32), not by this code.
    const SAMPLE: &str = "kwp_003aUlTJC7tjlCTQj2uNU3MFagCXG9LRKRcwGkBIDlf2mnIEQ";

    fn sample_from_bytes(prefix: &str, body: &[u8; 32]) -> String {
        let mut text = format!("{prefix}_").into_bytes();
        let mut enc = [0u8; BODY_LEN];
        encode_base62_fixed(body, &mut enc);
        text.extend_from_slice(&enc);
        let sum = checksum_of(&text);
        text.extend_from_slice(&sum);
        String::from_utf8(text).unwrap()
    }

    #[test]
    fn known_answer_vector() {
        let body: [u8; 32] = std::array::from_fn(|i| i as u8);
        assert_eq!(sample_from_bytes("kwp", &body), SAMPLE);
        assert_eq!(validate(SAMPLE), Ok(()));
    }

    #[test]
    fn base62_is_fixed_width() {
        let mut out = [0u8; BODY_LEN];
        encode_base62_fixed(&[0u8; 32], &mut out);
        assert_eq!(&out, &[b'0'; BODY_LEN]);
        encode_base62_fixed(&[0xff; 32], &mut out);
        assert!(out.iter().all(|&c| is_base62(c)));
        assert_ne!(out[0], b'0', "2^256-1 needs all 43 digits");
        let mut sum = [0u8; CHECKSUM_LEN];
        encode_base62_fixed(&0u32.to_be_bytes(), &mut sum);
        assert_eq!(&sum, b"000000");
        encode_base62_fixed(&u32::MAX.to_be_bytes(), &mut sum);
        assert_eq!(&sum, b"4gfFC3");
    }

    #[test]
    fn generated_tokens_parse_and_have_the_fixed_length() {
        let prefix = Prefix::default();
        for _ in 0..200 {
            let t = TokenSecret::generate(&prefix).unwrap();
            assert_eq!(t.expose().len(), 3 + 1 + BODY_LEN + CHECKSUM_LEN);
            assert!(t.expose().starts_with("kwp_"));
            assert_eq!(validate(t.expose()), Ok(()));
            assert!(TokenSecret::parse(RawSecret::new(t.expose().to_owned())).is_ok());
        }
    }

    #[test]
    fn prefix_is_configurable() {
        let prefix = Prefix::parse("acme2").unwrap();
        let t = TokenSecret::generate(&prefix).unwrap();
        assert!(t.expose().starts_with("acme2_"));
        assert_eq!(t.prefix(), "acme2");
        assert_eq!(validate(t.expose()), Ok(()));
        for bad in [
            "",
            "a",
            "A1",
            "1ab",
            "ab_c",
            "abcdefghijklmnopq",
            "ab-c",
            "ümlaut",
        ] {
            assert_eq!(Prefix::parse(bad), Err(FormatError::BadPrefix), "{bad:?}");
        }
        assert!(Prefix::parse("ab").is_ok());
        assert!(Prefix::parse("abcdefghijklmnop").is_ok());
    }

    #[test]
    fn every_single_character_change_fails_the_checksum() {
        let sample = SAMPLE.as_bytes();
        let body_start = 4;
        for i in body_start..sample.len() {
            for &c in ALPHABET.iter() {
                if c == sample[i] {
                    continue;
                }
                let mut changed = sample.to_vec();
                changed[i] = c;
                let s = String::from_utf8(changed).unwrap();
                assert_eq!(
                    validate(&s),
                    Err(FormatError::BadChecksum),
                    "position {i} -> {}",
                    c as char
                );
            }
        }
        // A change in the prefix is either a bad shape or a bad checksum, never accepted.
        for i in 0..3 {
            for c in b'a'..=b'z' {
                if c == sample[i] {
                    continue;
                }
                let mut changed = sample.to_vec();
                changed[i] = c;
                let s = String::from_utf8(changed).unwrap();
                assert!(validate(&s).is_err(), "prefix position {i}");
            }
        }
    }

    #[test]
    fn wrong_shapes_are_refused() {
        let cut = &SAMPLE[..SAMPLE.len() - 1];
        for bad in [
            "",
            "kwp_",
            "kwp",
            "kwp_abc",
            cut,
            "kwp-003aUlTJC7tjlCTQj2uNU3MFagCXG9LRKRcwGkBIDlf2mnIEQ",
        ] {
            assert_eq!(validate(bad), Err(FormatError::BadShape), "{bad:?}");
        }
        let long = format!("{SAMPLE}x");
        assert_eq!(validate(&long), Err(FormatError::BadShape));
        let with_space = SAMPLE.replacen('0', " ", 1);
        assert_eq!(validate(&with_space), Err(FormatError::BadShape));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let t = TokenSecret::generate(&Prefix::default()).unwrap();
        let shown = format!("{t:?}");
        assert!(!shown.contains(&t.expose()[4..]));
        let raw = RawSecret::new(t.expose().to_owned());
        assert!(!format!("{raw:?}").contains(&t.expose()[4..]));
    }

    #[test]
    fn hint_is_prefix_and_last_four() {
        let t = TokenSecret::parse_str(SAMPLE).unwrap();
        assert_eq!(t.hint(), "kwp_…nIEQ");
    }

    proptest! {
        #[test]
        fn random_strings_never_panic(s in ".{0,120}") {
            let _ = validate(&s);
        }

        /// What the `token_format` fuzz target checks, for `cargo test`: near-valid tokens
        /// (any prefix-like text, a body, a checksum that is right or not) are accepted by
        /// `validate` and `parse_str` alike, and a valid one hints its prefix and last four.
        #[test]
        fn validate_and_parse_agree_and_the_hint_is_prefix_and_last_four(
            prefix in "[a-z0-9_]{0,18}",
            body in "[0-9A-Za-z]{43}",
            repair in any::<bool>(),
        ) {
            let mut s = format!("{prefix}_{body}");
            let sum = if repair { checksum_of(s.as_bytes()) } else { *b"000000" };
            s.push_str(std::str::from_utf8(&sum).unwrap());
            let parsed = TokenSecret::parse_str(&s);
            prop_assert_eq!(validate(&s), parsed.as_ref().map(|_| ()).map_err(|e| *e));
            prop_assert_eq!(parsed.is_ok(), repair && Prefix::parse(&prefix).is_ok());
            if let Ok(t) = parsed {
                prop_assert_eq!(t.prefix(), prefix.as_str());
                prop_assert_eq!(t.hint(), format!("{prefix}_…{}", &s[s.len() - 4..]));
            }
        }

        #[test]
        fn random_base62_bodies_fail_unless_checksum_matches(body in "[0-9A-Za-z]{49}") {
            let s = format!("kwp_{body}");
            let ok = validate(&s).is_ok();
            let expected = checksum_of(&s.as_bytes()[..s.len() - CHECKSUM_LEN]);
            prop_assert_eq!(ok, expected[..] == s.as_bytes()[s.len() - CHECKSUM_LEN..]);
        }
    }
}
