//! Durations and expiry: `parse_duration`, `expiry::parse_grace`, `ExpiryRequest::parse` and
//! `LifetimePolicy::resolve`, for any policy and any current time.
//!
//! Input: the first [`HEAD`] bytes choose the policy and the clock (through `arbitrary`), the
//! rest is the text a client sent.

use arbitrary::Unstructured;
use keyward_core::expiry::{MAX_GRACE, parse_grace};
use keyward_core::{ExpiryError, ExpiryRequest, LifetimePolicy, parse_duration};
use time::format_description::well_known::Rfc3339;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

/// Bytes of the input that choose the policy, the clock and a time near it.
pub const HEAD: usize = 32;

/// Longest error message: the parsers quote at most 80 characters of the input (`{:?}`, so up
/// to 10 bytes each, `\u{10ffff}`), so a message never grows with what a client sent.
const MAX_ERROR_BYTES: usize = 80 * 10 + 200;

/// A duration by the documented grammar: 1 to 9 digits and one of `s m h d w`, after trimming;
/// positive.
fn model_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let unit = s.chars().last()?;
    let digits = &s[..s.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = digits.parse().ok()?;
    let seconds = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        'w' => 604_800,
        _ => return None,
    };
    (n > 0).then(|| Duration::seconds(n * seconds))
}

/// What the head of the input chooses: a policy with lifetimes from a second to a thousand
/// years; a clock from 1970 to 2106 with any nanoseconds, as a real clock has; and an offset
/// from it (about 68 years either way, to the nanosecond) for requests made directly, since an
/// expiry text that lands within a second of an arbitrary clock is rare. Plain integers rather
/// than ranges, so that small and zero bytes mean small and zero values for the mutator.
fn setting(head: &[u8]) -> arbitrary::Result<(LifetimePolicy, OffsetDateTime, Duration)> {
    const YEAR: i64 = 366 * 86_400;
    let mut u = Unstructured::new(head);
    let max_lifetime = Duration::seconds(u.int_in_range(1..=1_000 * YEAR)?);
    let default_lifetime = Duration::seconds(u.int_in_range(1..=1_000 * YEAR)?);
    let allow_never = u.arbitrary()?;
    let epoch = datetime!(1970-01-01 0:00 UTC);
    let now = epoch
        + Duration::seconds(i64::from(u.arbitrary::<u32>()?))
        + Duration::nanoseconds(i64::from(u.arbitrary::<u32>()? % 1_000_000_000));
    let offset = Duration::seconds(i64::from(u.arbitrary::<i32>()?))
        + Duration::nanoseconds(i64::from(u.arbitrary::<i32>()? % 1_000_000_000));
    Ok((
        LifetimePolicy {
            max_lifetime,
            allow_never,
            default_lifetime,
        },
        now,
        offset,
    ))
}

/// The fuzz target.
pub fn check(data: &[u8]) {
    let (head, text) = data.split_at(data.len().min(HEAD));
    let text = String::from_utf8_lossy(text);
    let Ok((policy, now, offset)) = setting(head) else {
        return;
    };

    let duration = parse_duration(&text);
    assert_eq!(
        duration.as_ref().ok(),
        model_duration(&text).as_ref(),
        "{text:?}"
    );
    if let Err(e) = &duration {
        assert!(matches!(e, ExpiryError::BadDuration(_)), "{e:?}");
        assert!(
            e.to_string().len() <= MAX_ERROR_BYTES,
            "error too long: {e}"
        );
    }

    match (parse_grace(&text), &duration) {
        (Ok(g), Ok(d)) => assert!(g == *d && g <= MAX_GRACE),
        (Err(ExpiryError::GraceTooLong), Ok(d)) => assert!(*d > MAX_GRACE),
        (Err(e), Err(d)) => assert_eq!(&e, d),
        (grace, duration) => panic!("grace {grace:?} for duration {duration:?}"),
    }

    let request = ExpiryRequest::parse(&text);
    match (&request, &duration) {
        (Ok(ExpiryRequest::In(d)), Ok(expected)) => assert_eq!(d, expected),
        (Ok(ExpiryRequest::Never), Err(_)) => assert!(text.trim().eq_ignore_ascii_case("never")),
        (Ok(ExpiryRequest::At(t)), Err(_)) => {
            // An RFC 3339 time, or a date: its first second, UTC.
            let date = time::Date::parse(
                text.trim(),
                time::macros::format_description!("[year]-[month]-[day]"),
            )
            .ok()
            .map(|d| d.midnight().assume_utc());
            let at = OffsetDateTime::parse(text.trim(), &Rfc3339).ok().or(date);
            assert_eq!(at, Some(*t), "{text:?}");
        }
        (Err(e), Err(_)) => {
            assert!(matches!(e, ExpiryError::Malformed(_)), "{e:?}");
            assert!(
                e.to_string().len() <= MAX_ERROR_BYTES,
                "error too long: {e}"
            );
        }
        (request, duration) => panic!("request {request:?} for duration {duration:?}"),
    }

    if let Ok(request) = request {
        check_resolved(&policy, now, Some(request));
    }
    check_resolved(&policy, now, None);
    check_resolved(&policy, now, Some(ExpiryRequest::In(offset)));
    if let Some(at) = now.checked_add(offset) {
        check_resolved(&policy, now, Some(ExpiryRequest::At(at)));
    }
}

/// Whatever was asked, an accepted expiry lies in the future, within the policy, to the second.
fn check_resolved(policy: &LifetimePolicy, now: OffsetDateTime, request: Option<ExpiryRequest>) {
    let context = || format!("{request:?} at {now} under {policy:?}");
    match policy.resolve(request, now) {
        Ok(Some(at)) => {
            assert!(at > now, "an expiry in the past: {at} for {}", context());
            assert!(
                at - now <= policy.max_lifetime,
                "too long: {at} for {}",
                context()
            );
            assert_eq!(
                at.nanosecond(),
                0,
                "not to the second: {at} for {}",
                context()
            );
        }
        Ok(None) => assert!(
            policy.allow_never && request == Some(ExpiryRequest::Never),
            "never, for {}",
            context()
        ),
        Err(ExpiryError::NeverNotAllowed) => assert!(
            !policy.allow_never && request == Some(ExpiryRequest::Never),
            "{}",
            context()
        ),
        Err(ExpiryError::InPast | ExpiryError::TooLong { .. }) => {}
        Err(e) => panic!("resolve cannot fail with {e:?}: {}", context()),
    }
}
