//! The limits a token carries besides its scopes and expiry: where it may be used from
//! (`allowed_ips`), how many times (`max_uses`, with an optional `refill`), and how fast
//! (`rate_limit`). Plain data and the rules between a token's limits and its maker's; counting
//! uses and requests is the service's business.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::expiry::{format_duration, parse_duration};

/// At most this many ranges in a token's `allowed_ips`.
pub const MAX_ALLOWED_IPS: usize = 64;
/// The most uses a token may be given (a bound that keeps every count exact in 63 bits).
pub const MAX_USES: u64 = 1_000_000_000_000;
/// The most requests a rate limit may allow in one window.
pub const MAX_RATE_REQUESTS: u32 = 1_000_000_000;
/// The longest rate-limit window, in seconds (a day).
pub const MAX_RATE_WINDOW_SECS: u32 = 86_400;
/// The longest refill interval, in seconds (a year).
pub const MAX_REFILL_EVERY_SECS: u64 = 366 * 86_400;

/// Why a limit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// Not an address or a CIDR range.
    #[error("{0:?} is not an IP address or CIDR range (such as 203.0.113.0/24 or 2001:db8::/32)")]
    BadIp(String),
    /// Too many ranges.
    #[error("a token may list at most {MAX_ALLOWED_IPS} allowed IP ranges")]
    TooManyIps,
    /// A use count out of range.
    #[error("max_uses must be a whole number from 1 to {MAX_USES}")]
    BadUses,
    /// Not `N/<duration>`, or out of range.
    #[error(
        "{0:?} is not a rate limit: use requests/window, such as 100/1m, with 1 to {MAX_RATE_REQUESTS} requests and a window from 1s to 1d"
    )]
    BadRate(String),
    /// Not `N/<duration>`, or out of range.
    #[error(
        "{0:?} is not a refill: use amount/interval, such as 100/1d, with an amount from 1 to {MAX_USES} and an interval from 1s to 366d"
    )]
    BadRefill(String),
    /// A refill needs a use count to refill.
    #[error("a refill needs max_uses: it sets the remaining uses back to its amount")]
    RefillWithoutUses,
    /// The deployment wants every token bound to addresses (`require_allowed_ips`).
    #[error("this deployment requires every token to have allowed_ips")]
    AllowedIpsRequired,
    /// A made token would be looser than the one that made it.
    #[error("{0}")]
    Outgrows(&'static str),
}

/// An address range: an IPv4 or IPv6 network in CIDR form. A single address is a range of one
/// (`/32`, `/128`); host bits after the prefix are cleared (`203.0.113.7/24` is
/// `203.0.113.0/24`), so equal ranges are written alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpRange(ipnet::IpNet);

impl IpRange {
    /// Parses `203.0.113.0/24`, `2001:db8::/32` or a single address.
    pub fn parse(s: &str) -> Result<Self, LimitsError> {
        let bad = || LimitsError::BadIp(s.chars().take(60).collect());
        let s = s.trim();
        let net = match s.parse::<ipnet::IpNet>() {
            Ok(net) => net,
            Err(_) => ipnet::IpNet::from(canonical(s.parse::<IpAddr>().map_err(|_| bad())?)),
        };
        Ok(Self(net.trunc()))
    }

    /// Whether `ip` lies in the range. An IPv4 address written as IPv6 (`::ffff:203.0.113.9`,
    /// as a dual-stack socket reports it) is the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&canonical(ip))
    }

    /// Whether every address of `self` lies in `outer`.
    pub fn within(&self, outer: &IpRange) -> bool {
        outer.0.contains(&self.0)
    }
}

/// `ip`, with an IPv4-mapped IPv6 address turned back into the IPv4 address it carries.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl serde::Serialize for IpRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl FromStr for IpRange {
    type Err = LimitsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Whether `ip` lies in any range of `ranges`.
pub fn in_any(ranges: &[IpRange], ip: IpAddr) -> bool {
    ranges.iter().any(|r| r.contains(ip))
}

/// At most `requests` successful verifications in each window of `per_secs` seconds. Windows
/// are fixed and aligned to the unix epoch: a `100/1m` limit allows 100 in each calendar minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed in one window.
    pub requests: u32,
    /// The window's length in seconds.
    pub per_secs: u32,
}

impl RateLimit {
    /// A limit from its parts, checked against the bounds.
    pub fn new(requests: u64, per: &str) -> Result<Self, LimitsError> {
        let bad = || LimitsError::BadRate(format!("{requests}/{per}"));
        let per_secs = parse_duration(per).map_err(|_| bad())?.whole_seconds();
        let per_secs = u32::try_from(per_secs)
            .ok()
            .filter(|&s| s <= MAX_RATE_WINDOW_SECS)
            .ok_or_else(bad)?;
        let requests = u32::try_from(requests)
            .ok()
            .filter(|r| (1..=MAX_RATE_REQUESTS).contains(r))
            .ok_or_else(bad)?;
        Ok(Self { requests, per_secs })
    }

    /// Parses `requests/window`: `100/1m`, `20/10s`.
    pub fn parse(s: &str) -> Result<Self, LimitsError> {
        let bad = || LimitsError::BadRate(s.chars().take(40).collect());
        let (n, per) = s.trim().split_once('/').ok_or_else(bad)?;
        let n = parse_count(n).ok_or_else(bad)?;
        Self::new(n, per).map_err(|_| bad())
    }

    /// The window as the config file writes durations (`1m`, `10s`).
    pub fn per(&self) -> String {
        format_duration(time::Duration::seconds(i64::from(self.per_secs)))
    }

    /// The start of the window holding unix second `now`.
    pub fn window_start(&self, now: i64) -> i64 {
        now - now.rem_euclid(i64::from(self.per_secs))
    }

    /// Whether `self` allows no more than `other` on average: requests per second no higher.
    pub fn no_faster_than(&self, other: &RateLimit) -> bool {
        u64::from(self.requests) * u64::from(other.per_secs)
            <= u64::from(other.requests) * u64::from(self.per_secs)
    }
}

impl serde::Serialize for RateLimit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut out = s.serialize_struct("RateLimit", 2)?;
        out.serialize_field("requests", &self.requests)?;
        out.serialize_field("per", &self.per())?;
        out.end()
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.requests, self.per())
    }
}

/// Every `every_secs` seconds (aligned to the token's creation), the remaining uses are set
/// back to `amount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refill {
    /// The remaining uses after each refill.
    pub amount: u64,
    /// Seconds between refills.
    pub every_secs: u64,
}

impl Refill {
    /// A refill from its parts, checked against the bounds.
    pub fn new(amount: u64, every: &str) -> Result<Self, LimitsError> {
        let bad = || LimitsError::BadRefill(format!("{amount}/{every}"));
        let every_secs = parse_duration(every).map_err(|_| bad())?.whole_seconds();
        let every_secs = u64::try_from(every_secs)
            .ok()
            .filter(|&s| s <= MAX_REFILL_EVERY_SECS)
            .ok_or_else(bad)?;
        if !(1..=MAX_USES).contains(&amount) {
            return Err(bad());
        }
        Ok(Self { amount, every_secs })
    }

    /// Parses `amount/interval`: `100/1d`.
    pub fn parse(s: &str) -> Result<Self, LimitsError> {
        let bad = || LimitsError::BadRefill(s.chars().take(40).collect());
        let (n, every) = s.trim().split_once('/').ok_or_else(bad)?;
        let n = parse_count(n).ok_or_else(bad)?;
        Self::new(n, every).map_err(|_| bad())
    }

    /// The interval as the config file writes durations (`1d`).
    pub fn every(&self) -> String {
        format_duration(time::Duration::seconds(
            i64::try_from(self.every_secs).unwrap_or(i64::MAX),
        ))
    }

    /// Whether `self` gives no more uses over time than `other`: an amount no larger and a
    /// rate of uses no higher.
    pub fn no_more_than(&self, other: &Refill) -> bool {
        self.amount <= other.amount
            && u128::from(self.amount) * u128::from(other.every_secs)
                <= u128::from(other.amount) * u128::from(self.every_secs)
    }
}

impl serde::Serialize for Refill {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut out = s.serialize_struct("Refill", 2)?;
        out.serialize_field("amount", &self.amount)?;
        out.serialize_field("every", &self.every())?;
        out.end()
    }
}

impl fmt::Display for Refill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.amount, self.every())
    }
}

fn parse_count(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() || s.len() > 13 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A token's limits. The default is none: usable from anywhere, any number of times, at any
/// rate.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Limits {
    /// The addresses it works from; empty = anywhere.
    pub allowed_ips: Vec<IpRange>,
    /// How many successful verifications it has in all (`None` = unlimited). With a refill,
    /// the uses of the first period.
    pub max_uses: Option<u64>,
    /// How its uses come back.
    pub refill: Option<Refill>,
    /// How fast it may be used.
    pub rate_limit: Option<RateLimit>,
}

impl Limits {
    /// Whether there is no limit at all.
    pub fn is_empty(&self) -> bool {
        self.allowed_ips.is_empty()
            && self.max_uses.is_none()
            && self.refill.is_none()
            && self.rate_limit.is_none()
    }

    /// Whether anything is counted (uses or a rate): verification then spends from a budget.
    pub fn counts(&self) -> bool {
        self.max_uses.is_some() || self.rate_limit.is_some()
    }

    /// Checks the limits on their own: bounds, and a refill only with uses. Duplicated
    /// ranges are dropped and the list sorted, so equal lists are stored alike.
    pub fn checked(mut self) -> Result<Self, LimitsError> {
        self.allowed_ips
            .sort_by_key(|r| (r.0.addr(), r.0.prefix_len()));
        self.allowed_ips.dedup();
        if self.allowed_ips.len() > MAX_ALLOWED_IPS {
            return Err(LimitsError::TooManyIps);
        }
        if self.max_uses.is_some_and(|n| !(1..=MAX_USES).contains(&n)) {
            return Err(LimitsError::BadUses);
        }
        if self.refill.is_some() && self.max_uses.is_none() {
            return Err(LimitsError::RefillWithoutUses);
        }
        Ok(self)
    }

    /// Whether a request from `ip` may use the token. With an allowlist, an unknown address is
    /// refused (fail closed).
    pub fn allows_ip(&self, ip: Option<IpAddr>) -> bool {
        self.allowed_ips.is_empty() || ip.is_some_and(|ip| in_any(&self.allowed_ips, ip))
    }

    /// The limits of a token made by a token whose limits are `maker` and which has
    /// `maker_remaining` uses left: what `self` leaves unset is taken from the maker, and what
    /// it sets must lie within the maker's — every range inside one of the maker's, a rate no
    /// higher, no more uses than the maker has left, a refill no more generous. Nothing
    /// outgrows its maker.
    pub fn bounded_by(
        mut self,
        maker: &Limits,
        maker_remaining: Option<u64>,
    ) -> Result<Self, LimitsError> {
        if !maker.allowed_ips.is_empty() {
            if self.allowed_ips.is_empty() {
                self.allowed_ips = maker.allowed_ips.clone();
            } else if !self
                .allowed_ips
                .iter()
                .all(|r| maker.allowed_ips.iter().any(|outer| r.within(outer)))
            {
                return Err(LimitsError::Outgrows(
                    "every allowed IP range must lie within the allowed IP ranges of the token that makes it",
                ));
            }
        }
        if let Some(rate) = maker.rate_limit {
            match self.rate_limit {
                None => self.rate_limit = Some(rate),
                Some(mine) if !mine.no_faster_than(&rate) || mine.requests > rate.requests => {
                    return Err(LimitsError::Outgrows(
                        "the rate limit must be no higher than that of the token that makes it",
                    ));
                }
                Some(_) => {}
            }
        }
        if maker.max_uses.is_some() {
            let left = maker_remaining.unwrap_or(0);
            match (self.max_uses, maker.refill, self.refill) {
                (None, _, _) => {
                    self.max_uses = Some(left.max(1));
                    self.refill = maker.refill;
                    if left == 0 {
                        return Err(LimitsError::Outgrows(
                            "the token that makes it has no uses left",
                        ));
                    }
                }
                (Some(n), _, _) if n > left => {
                    return Err(LimitsError::Outgrows(
                        "max_uses must be no more than the uses the token that makes it has left",
                    ));
                }
                (Some(_), None, Some(_)) => {
                    return Err(LimitsError::Outgrows(
                        "a token whose uses do not refill cannot make one whose uses do",
                    ));
                }
                (Some(_), Some(outer), Some(mine)) if !mine.no_more_than(&outer) => {
                    return Err(LimitsError::Outgrows(
                        "the refill must give no more uses than that of the token that makes it",
                    ));
                }
                (Some(_), _, _) => {}
            }
        }
        self.checked()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_parse_normalize_and_match() {
        let r = IpRange::parse("203.0.113.7/24").unwrap();
        assert_eq!(r.to_string(), "203.0.113.0/24");
        assert!(r.contains(ip("203.0.113.200")));
        assert!(!r.contains(ip("203.0.114.1")));
        assert!(r.contains(ip("::ffff:203.0.113.9")), "IPv4-mapped IPv6");
        let one = IpRange::parse("198.51.100.4").unwrap();
        assert_eq!(one.to_string(), "198.51.100.4/32");
        assert!(one.contains(ip("198.51.100.4")) && !one.contains(ip("198.51.100.5")));
        let v6 = IpRange::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:1::9")) && !v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("203.0.113.1")));
        assert_eq!(IpRange::parse("::1").unwrap().to_string(), "::1/128");
        for bad in [
            "",
            "300.1.1.1",
            "10.0.0.0/33",
            "2001:db8::/129",
            "x/8",
            "10.0.0.0/",
            "1.2.3.4 5",
        ] {
            assert!(IpRange::parse(bad).is_err(), "{bad}");
        }
        assert!(
            IpRange::parse("10.1.0.0/16")
                .unwrap()
                .within(&IpRange::parse("10.0.0.0/8").unwrap())
        );
        assert!(
            !IpRange::parse("10.0.0.0/8")
                .unwrap()
                .within(&IpRange::parse("10.1.0.0/16").unwrap())
        );
    }

    #[test]
    fn rates_and_refills_parse_and_print_back() {
        let r = RateLimit::parse("100/1m").unwrap();
        assert_eq!((r.requests, r.per_secs), (100, 60));
        assert_eq!(r.to_string(), "100/1m");
        assert_eq!(r.window_start(125), 120);
        assert_eq!(RateLimit::parse("20/10s").unwrap().to_string(), "20/10s");
        for bad in [
            "100",
            "0/1m",
            "1/0s",
            "10/2d",
            "x/1m",
            "1/1y",
            "-1/1m",
            "2000000000/1s",
        ] {
            assert!(RateLimit::parse(bad).is_err(), "{bad}");
        }
        let f = Refill::parse("100/1d").unwrap();
        assert_eq!((f.amount, f.every_secs), (100, 86_400));
        assert_eq!(f.to_string(), "100/1d");
        assert!(Refill::parse("0/1d").is_err() && Refill::parse("5/400d").is_err());
        assert!(
            RateLimit::parse("10/1s")
                .unwrap()
                .no_faster_than(&RateLimit::parse("600/1m").unwrap())
        );
        assert!(
            !RateLimit::parse("11/1s")
                .unwrap()
                .no_faster_than(&RateLimit::parse("600/1m").unwrap())
        );
    }

    #[test]
    fn allowlists_fail_closed_without_an_address() {
        let open = Limits::default();
        assert!(open.allows_ip(None));
        let bound = Limits {
            allowed_ips: vec![IpRange::parse("10.0.0.0/8").unwrap()],
            ..Limits::default()
        };
        assert!(bound.allows_ip(Some(ip("10.2.3.4"))));
        assert!(!bound.allows_ip(Some(ip("11.2.3.4"))));
        assert!(!bound.allows_ip(None));
    }

    #[test]
    fn checked_sorts_dedups_and_bounds() {
        let l = Limits {
            allowed_ips: ["10.0.0.0/8", "1.2.3.4", "10.9.9.9/8"]
                .iter()
                .map(|s| IpRange::parse(s).unwrap())
                .collect(),
            ..Limits::default()
        }
        .checked()
        .unwrap();
        assert_eq!(l.allowed_ips.len(), 2);
        assert_eq!(l.allowed_ips[0].to_string(), "1.2.3.4/32");
        let refill_only = Limits {
            refill: Some(Refill::parse("5/1d").unwrap()),
            ..Limits::default()
        };
        assert_eq!(refill_only.checked(), Err(LimitsError::RefillWithoutUses));
        let zero = Limits {
            max_uses: Some(0),
            ..Limits::default()
        };
        assert_eq!(zero.checked(), Err(LimitsError::BadUses));
    }

    #[test]
    fn nothing_outgrows_its_maker() {
        let maker = Limits {
            allowed_ips: vec![IpRange::parse("10.0.0.0/8").unwrap()],
            max_uses: Some(100),
            refill: None,
            rate_limit: Some(RateLimit::parse("10/1s").unwrap()),
        };
        // Unset limits are inherited.
        let child = Limits::default().bounded_by(&maker, Some(40)).unwrap();
        assert_eq!(child.allowed_ips, maker.allowed_ips);
        assert_eq!(child.max_uses, Some(40));
        assert_eq!(child.rate_limit, maker.rate_limit);
        // Tighter ones are kept.
        let tight = Limits {
            allowed_ips: vec![IpRange::parse("10.1.0.0/16").unwrap()],
            max_uses: Some(5),
            refill: None,
            rate_limit: Some(RateLimit::parse("5/1s").unwrap()),
        };
        assert_eq!(tight.clone().bounded_by(&maker, Some(40)).unwrap(), tight);
        // Looser ones are refused.
        let wider = Limits {
            allowed_ips: vec![IpRange::parse("0.0.0.0/0").unwrap()],
            ..Limits::default()
        };
        assert!(matches!(
            wider.bounded_by(&maker, Some(40)),
            Err(LimitsError::Outgrows(_))
        ));
        let faster = Limits {
            rate_limit: Some(RateLimit::parse("100/10s").unwrap()),
            ..Limits::default()
        };
        assert!(
            faster.bounded_by(&maker, Some(40)).is_err(),
            "a burst above the maker's"
        );
        let more = Limits {
            max_uses: Some(41),
            ..Limits::default()
        };
        assert!(more.bounded_by(&maker, Some(40)).is_err());
        let refilling = Limits {
            max_uses: Some(5),
            refill: Some(Refill::parse("5/1d").unwrap()),
            ..Limits::default()
        };
        assert!(refilling.bounded_by(&maker, Some(40)).is_err());
        assert!(
            Limits::default().bounded_by(&maker, Some(0)).is_err(),
            "no uses left"
        );
        // A maker without limits bounds nothing.
        let free = Limits::default()
            .bounded_by(&Limits::default(), None)
            .unwrap();
        assert!(free.is_empty());
    }
}
