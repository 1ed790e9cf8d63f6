//! When a token stops working: `30d`-style durations, an RFC 3339 time, or `never`, within the
//! deployment's lifetime policy.

use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

/// Longest grace period a regeneration may leave the old secret working (Stripe's key roll
/// allows up to a week too).
pub const MAX_GRACE: Duration = Duration::days(7);

/// Why an expiry or duration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpiryError {
    /// Not a duration, an RFC 3339 time or `never`.
    #[error(
        "{0:?} is not an expiry: use a duration such as 30d, 12h or 90m, a date (2027-01-01), an RFC 3339 time, or never"
    )]
    Malformed(String),
    /// Not a duration such as `10m`.
    #[error("{0:?} is not a duration: use a number and a unit, s, m, h, d or w (for example 10m)")]
    BadDuration(String),
    /// The time is not in the future.
    #[error("the expiry must be in the future")]
    InPast,
    /// Longer than the deployment allows.
    #[error("the expiry is beyond this deployment's maximum token lifetime of {max_days} days")]
    TooLong {
        /// The maximum lifetime in days.
        max_days: i64,
    },
    /// `never` is not allowed here.
    #[error("this deployment does not allow tokens that never expire")]
    NeverNotAllowed,
    /// A grace period longer than [`MAX_GRACE`].
    #[error("a grace period may be at most 7 days")]
    GraceTooLong,
}

/// What a person asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryRequest {
    /// This long after creation.
    In(Duration),
    /// At this time.
    At(OffsetDateTime),
    /// Never.
    Never,
}

impl ExpiryRequest {
    /// Parses `30d`, `12h`, `2w`, an RFC 3339 time, a date (`2027-01-01`: its first second,
    /// UTC, as the web page's date picker means it) or `never`.
    pub fn parse(s: &str) -> Result<Self, ExpiryError> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("never") {
            return Ok(Self::Never);
        }
        if let Ok(d) = parse_duration(s) {
            return Ok(Self::In(d));
        }
        if let Ok(at) = OffsetDateTime::parse(s, &Rfc3339) {
            return Ok(Self::At(at));
        }
        time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]"))
            .map(|date| Self::At(date.midnight().assume_utc()))
            .map_err(|_| ExpiryError::Malformed(s.chars().take(80).collect()))
    }
}

/// Parses a positive duration: a whole number and one unit of `s`, `m`, `h`, `d`, `w`.
pub fn parse_duration(s: &str) -> Result<Duration, ExpiryError> {
    let bad = || ExpiryError::BadDuration(s.chars().take(80).collect());
    let s = s.trim();
    let unit_at = s
        .len()
        .checked_sub(1)
        .filter(|&i| s.is_char_boundary(i))
        .ok_or_else(bad)?;
    let (number, unit) = s.split_at(unit_at);
    if number.is_empty() || number.len() > 9 || !number.bytes().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let n: i64 = number.parse().map_err(|_| bad())?;
    let d = match unit {
        "s" => Duration::seconds(n),
        "m" => Duration::minutes(n),
        "h" => Duration::hours(n),
        "d" => Duration::days(n),
        "w" => Duration::weeks(n),
        _ => return Err(bad()),
    };
    if d.is_positive() { Ok(d) } else { Err(bad()) }
}

/// Parses a grace period and checks it against [`MAX_GRACE`]; `0s`-like values are refused by
/// the parser, so "no grace" is the absence of one.
pub fn parse_grace(s: &str) -> Result<Duration, ExpiryError> {
    let d = parse_duration(s)?;
    if d > MAX_GRACE {
        Err(ExpiryError::GraceTooLong)
    } else {
        Ok(d)
    }
}

/// The deployment's rules for token lifetimes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifetimePolicy {
    /// The longest a token may live.
    pub max_lifetime: Duration,
    /// Whether `never` is allowed.
    pub allow_never: bool,
    /// The lifetime given when a request names none.
    pub default_lifetime: Duration,
}

impl Default for LifetimePolicy {
    fn default() -> Self {
        Self {
            max_lifetime: Duration::days(366),
            allow_never: false,
            default_lifetime: Duration::days(30),
        }
    }
}

impl LifetimePolicy {
    /// Turns a request into an expiry time (`None` = never), or says why it is refused.
    pub fn resolve(
        &self,
        request: Option<ExpiryRequest>,
        now: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>, ExpiryError> {
        let at = match request.unwrap_or(ExpiryRequest::In(self.default_lifetime)) {
            ExpiryRequest::Never if self.allow_never => return Ok(None),
            ExpiryRequest::Never => return Err(ExpiryError::NeverNotAllowed),
            ExpiryRequest::In(d) => now.checked_add(d).ok_or(ExpiryError::TooLong {
                max_days: self.max_lifetime.whole_days(),
            })?,
            ExpiryRequest::At(t) => t,
        };
        // Stored and shown to the second, and truncated before the checks: truncating after
        // them turned a time within the current second into an expiry already past.
        let at = at.replace_nanosecond(0).unwrap_or(at);
        if at <= now {
            return Err(ExpiryError::InPast);
        }
        if at - now > self.max_lifetime {
            return Err(ExpiryError::TooLong {
                max_days: self.max_lifetime.whole_days(),
            });
        }
        Ok(Some(at))
    }
}

/// A duration as the config file writes it, in the largest of `d`, `h`, `m`, `s` that divides
/// it exactly: `7d`, `12h`, `90s`. [`parse_duration`] reads it back to the same value.
pub fn format_duration(d: Duration) -> String {
    let s = d.whole_seconds();
    match s {
        _ if s != 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        _ if s != 0 && s % 3_600 == 0 => format!("{}h", s / 3_600),
        _ if s != 0 && s % 60 == 0 => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

/// When a token's owner is reminded that it expires (`notify_before`): thresholds before the
/// expiry, largest first. A token gets the reminder of the nearest threshold it is within, once:
/// one with three days left gets `7d`, and later `1d`; one created with twelve hours left gets
/// only `1d` (a reminder that it expires within a week would be stale news next to the one
/// that it expires within a day).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyBefore(Vec<Duration>);

/// One threshold's window: a token whose expiry is more than `after` and at most `before` from
/// now is due for the reminder named `label`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReminderWindow {
    /// The threshold as written, e.g. `7d` (the audit event's detail).
    pub label: String,
    /// The threshold.
    pub before: Duration,
    /// The next smaller threshold, or zero: closer than this, a nearer reminder is due instead.
    pub after: Duration,
}

impl NotifyBefore {
    /// The thresholds, in any order; duplicates count once. Empty: no reminders.
    pub fn new(thresholds: impl IntoIterator<Item = Duration>) -> Self {
        let mut all: Vec<Duration> = thresholds.into_iter().filter(|d| d.is_positive()).collect();
        all.sort_unstable_by(|a, b| b.cmp(a));
        all.dedup();
        Self(all)
    }

    /// Parses thresholds written as durations (`["7d", "1d"]`).
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, ExpiryError> {
        items
            .iter()
            .map(|s| parse_duration(s.as_ref()))
            .collect::<Result<Vec<_>, _>>()
            .map(Self::new)
    }

    /// Each threshold's window, largest first (see [`ReminderWindow`]).
    pub fn windows(&self) -> Vec<ReminderWindow> {
        self.0
            .iter()
            .enumerate()
            .map(|(i, &before)| ReminderWindow {
                label: format_duration(before),
                before,
                after: self.0.get(i + 1).copied().unwrap_or(Duration::ZERO),
            })
            .collect()
    }
}

impl Default for NotifyBefore {
    /// A week and a day before (GitHub's reminders are similar).
    fn default() -> Self {
        Self::new([Duration::days(7), Duration::days(1)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);

    #[test]
    fn durations_format_back_to_themselves() {
        for (d, text) in [
            (Duration::days(7), "7d"),
            (Duration::weeks(2), "14d"),
            (Duration::hours(12), "12h"),
            (Duration::minutes(90), "90m"),
            (Duration::seconds(45), "45s"),
        ] {
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text), Ok(d));
        }
    }

    #[test]
    fn each_threshold_s_window_ends_at_the_next() {
        // Sorted, largest first, duplicates ("1w" is "7d") once.
        let n = NotifyBefore::parse(&["1d", "7d", "1w"]).unwrap();
        let windows = n.windows();
        assert_eq!(windows.len(), 2);
        assert_eq!(windows[0].label, "7d");
        assert_eq!(windows[0].before, Duration::days(7));
        // Closer than a day to its expiry, a token is in the "1d" window only.
        assert_eq!(windows[0].after, Duration::days(1));
        assert_eq!(windows[1].label, "1d");
        assert_eq!(windows[1].before, Duration::days(1));
        assert_eq!(windows[1].after, Duration::ZERO);
        assert_eq!(
            NotifyBefore::default(),
            NotifyBefore::parse(&["7d", "1d"]).unwrap()
        );
        assert!(
            NotifyBefore::parse::<&str>(&[])
                .unwrap()
                .windows()
                .is_empty()
        );
        assert!(NotifyBefore::parse(&["soon"]).is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30d"), Ok(Duration::days(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::minutes(10)));
        assert_eq!(parse_duration("2w"), Ok(Duration::weeks(2)));
        assert_eq!(parse_duration("45s"), Ok(Duration::seconds(45)));
        for bad in [
            "",
            "d",
            "0d",
            "-1d",
            "1.5d",
            "10",
            "10x",
            "1 d",
            "9999999999d",
            "1dd",
            "ü",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn requests_parse() {
        assert_eq!(ExpiryRequest::parse("never"), Ok(ExpiryRequest::Never));
        assert_eq!(
            ExpiryRequest::parse("30d"),
            Ok(ExpiryRequest::In(Duration::days(30)))
        );
        assert_eq!(
            ExpiryRequest::parse("2026-07-01T00:00:00Z"),
            Ok(ExpiryRequest::At(datetime!(2026-07-01 0:00 UTC)))
        );
        // A date is its first second, UTC, as the web page's date picker means it.
        assert_eq!(
            ExpiryRequest::parse("2027-01-01"),
            Ok(ExpiryRequest::At(datetime!(2027-01-01 0:00 UTC)))
        );
        for bad in [
            "tomorrow",
            "2027-13-01",
            "2027-02-30",
            "2027-1-1",
            "01/01/2027",
        ] {
            assert!(
                matches!(ExpiryRequest::parse(bad), Err(ExpiryError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn policy_limits_lifetime() {
        let p = LifetimePolicy::default();
        assert_eq!(p.resolve(None, NOW), Ok(Some(NOW + Duration::days(30))));
        assert_eq!(
            p.resolve(Some(ExpiryRequest::In(Duration::days(366))), NOW),
            Ok(Some(NOW + Duration::days(366)))
        );
        assert_eq!(
            p.resolve(Some(ExpiryRequest::In(Duration::days(367))), NOW),
            Err(ExpiryError::TooLong { max_days: 366 })
        );
        assert_eq!(
            p.resolve(Some(ExpiryRequest::Never), NOW),
            Err(ExpiryError::NeverNotAllowed)
        );
        assert_eq!(
            p.resolve(Some(ExpiryRequest::At(NOW)), NOW),
            Err(ExpiryError::InPast)
        );
        let open = LifetimePolicy {
            allow_never: true,
            ..p
        };
        assert_eq!(open.resolve(Some(ExpiryRequest::Never), NOW), Ok(None));
    }

    /// Found by the `expiry` fuzz target (a request of 191 ns at a clock on a whole second):
    /// the expiry was truncated to the second after it was checked, so a time within the
    /// current second was accepted and stored as a time not after now.
    #[test]
    fn an_expiry_within_the_current_second_is_in_the_past() {
        let p = LifetimePolicy::default();
        let in_past = Err(ExpiryError::InPast);
        assert_eq!(
            p.resolve(Some(ExpiryRequest::In(Duration::nanoseconds(191))), NOW),
            in_past
        );
        let now = NOW + Duration::milliseconds(500);
        let within = ExpiryRequest::parse("2026-06-01T12:00:00.9Z").unwrap();
        assert_eq!(p.resolve(Some(within), now), in_past);
        assert_eq!(
            p.resolve(Some(ExpiryRequest::In(Duration::seconds(1))), now),
            Ok(Some(NOW + Duration::seconds(1)))
        );
    }

    proptest! {
        /// What the `expiry` fuzz target checks, for `cargo test`: whatever is asked, an
        /// accepted expiry is after now, within the maximum lifetime, and to the second.
        #[test]
        fn an_accepted_expiry_is_in_the_future_and_within_policy(
            now_nanos in 0i64..1_000_000_000,
            offset_seconds in prop_oneof![-2i64..3, -100_000i64..100_000],
            offset_nanos in -999_999_999i64..1_000_000_000,
            max_seconds in 1i64..1_000_000,
            text in "[0-9]{0,10}[smhdwx]?|never|2026-06-0[12]T1[12]:00:0[0-9](\\.[0-9]{1,3})?Z",
        ) {
            let now = NOW + Duration::nanoseconds(now_nanos);
            let policy = LifetimePolicy {
                max_lifetime: Duration::seconds(max_seconds),
                ..LifetimePolicy::default()
            };
            let offset = Duration::seconds(offset_seconds) + Duration::nanoseconds(offset_nanos);
            let mut requests = vec![
                None,
                Some(ExpiryRequest::In(offset)),
                Some(ExpiryRequest::At(now + offset)),
            ];
            requests.extend(ExpiryRequest::parse(&text).ok().map(Some));
            for request in requests {
                if let Ok(Some(at)) = policy.resolve(request, now) {
                    prop_assert!(at > now, "{at} for {request:?} at {now}");
                    prop_assert!(at - now <= policy.max_lifetime);
                    prop_assert_eq!(at.nanosecond(), 0);
                }
            }
        }
    }

    #[test]
    fn grace_is_bounded() {
        assert_eq!(parse_grace("10m"), Ok(Duration::minutes(10)));
        assert_eq!(parse_grace("8d"), Err(ExpiryError::GraceTooLong));
    }
}
