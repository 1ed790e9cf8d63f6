//! The token format: `keyward_core::format::validate` and `TokenSecret::parse_str` against an
//! independent model of `<prefix>_<43 base62><6 base62 CRC32>`.

use keyward_core::format::{self, BODY_LEN, CHECKSUM_LEN, FormatError, HINT_CHARS};
use keyward_core::{Prefix, RawSecret, TokenSecret};

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Body and checksum widths as the format's description gives them (43 = ceil(256 / log2 62),
/// 6 = ceil(32 / log2 62)), not as the code under test names them.
const MODEL_BODY: usize = 43;
const MODEL_CHECKSUM: usize = 6;

/// What the format says of `s`, written from the format's description, not its code.
pub fn model(s: &[u8]) -> Result<(), FormatError> {
    let Some(sep) = s.len().checked_sub(1 + MODEL_BODY + MODEL_CHECKSUM) else {
        return Err(FormatError::BadShape);
    };
    let prefix = &s[..sep];
    let prefix_ok = (2..=16).contains(&prefix.len())
        && prefix[0].is_ascii_lowercase()
        && prefix
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !prefix_ok || s[sep] != b'_' || !s[sep + 1..].iter().all(u8::is_ascii_alphanumeric) {
        return Err(FormatError::BadShape);
    }
    let split = s.len() - MODEL_CHECKSUM;
    if checksum(&s[..split]) == s[split..] {
        Ok(())
    } else {
        Err(FormatError::BadChecksum)
    }
}

/// CRC32 (IEEE) of `text` in six base62 digits, most significant first.
pub fn checksum(text: &[u8]) -> [u8; MODEL_CHECKSUM] {
    let mut crc = u64::from(crc32fast::hash(text));
    let mut out = [b'0'; MODEL_CHECKSUM];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(crc % 62) as usize];
        crc /= 62;
    }
    out
}

/// The fuzz target: `data` as given, and again with its last six bytes replaced by the right
/// checksum, so that the accepting path is reached as often as the refusing ones.
pub fn check(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        check_str(s);
    }
    if data.len() >= CHECKSUM_LEN {
        let split = data.len() - CHECKSUM_LEN;
        let mut fixed = data.to_vec();
        fixed[split..].copy_from_slice(&checksum(&data[..split]));
        if let Ok(s) = std::str::from_utf8(&fixed) {
            check_str(s);
        }
    }
}

fn check_str(s: &str) {
    let validated = format::validate(s);
    assert_eq!(
        validated,
        model(s.as_bytes()),
        "validate disagrees with the model: {s:?}"
    );
    let parsed = TokenSecret::parse_str(s);
    assert_eq!(
        parsed.as_ref().err(),
        validated.as_ref().err(),
        "parse_str vs validate: {s:?}"
    );
    let owned = TokenSecret::parse(RawSecret::new(s.to_owned()));
    assert_eq!(
        owned.as_ref().err(),
        validated.as_ref().err(),
        "parse vs validate: {s:?}"
    );
    let Ok(token) = parsed else {
        return;
    };
    assert_eq!(token.expose(), s);
    let (prefix, rest) = s.split_once('_').expect("a valid token has a separator");
    assert_eq!(token.prefix(), prefix);
    assert!(Prefix::parse(prefix).is_ok(), "{prefix:?}");
    assert_eq!(rest.len(), BODY_LEN + CHECKSUM_LEN);
    let tail = &s[s.len() - HINT_CHARS..];
    assert_eq!(token.hint(), format!("{prefix}_…{tail}"));
    let shown = format!("{token:?}");
    assert!(!shown.contains(rest), "Debug shows the secret: {shown}");
}
