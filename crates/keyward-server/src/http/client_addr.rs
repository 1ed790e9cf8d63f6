//! The client's address: the connection's peer, or, when the peer is a proxy of the deployment
//! (`trusted_proxies`), the address that proxy says it forwarded the request for.
//!
//! Anyone can send `X-Forwarded-For`, so a forwarding header proves something only when a
//! trusted proxy passes it on: from any other peer the headers are ignored and the peer is the
//! client. From a trusted peer the forwarding headers are read: `Forwarded` (RFC 7239),
//! `X-Forwarded-For` and `X-Real-IP`. Each header's addresses are a chain of hops: the client
//! first, then each proxy appends the address it received the request from, and the peer itself
//! is the last hop. Walking from the right, an address in a trusted range is a proxy of the deployment and
//! is passed over; the first that is not is the client. Everything left of it was written by
//! that client (or by proxies the deployment does not run) and may be forged, so it is never
//! read.
//!
//! Failing closed. A hop that names no address — `unknown`, an obfuscated `_name`, a `Forwarded`
//! element without `for`, text that is not an address, a second `X-Real-IP` — reached before the
//! client is found makes the client unknown (`None`), never the next address along: a token's
//! address allowlist refuses an unknown client. When every hop is trusted the client is the
//! left-most (a request made from inside the deployment). When more than one of the headers
//! arrives, each must name the same client, or the client is unknown: a proxy that sets one
//! header and passes on another the client wrote must not let the client choose which is read.

use axum::extract::ConnectInfo;
use axum::http::header::FORWARDED;
use axum::http::{Extensions, HeaderMap, HeaderName};
use keyward_core::IpRange;
use keyward_core::limits::{canonical, in_any};
use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// The de-facto standard header: `client, proxy1, proxy2`.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// nginx's convention: the one address the proxy received the request from.
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The address ranges whose peers' forwarding headers are believed (`trusted_proxies`).
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies(Arc<[IpRange]>);

impl TrustedProxies {
    /// These ranges; none trusts no one.
    pub(crate) fn new(ranges: Vec<IpRange>) -> Self {
        Self(ranges.into())
    }

    /// The ranges.
    pub(crate) fn ranges(&self) -> &[IpRange] {
        &self.0
    }
}

/// A connection's peer, as every request on it is told: its address, and the trusted ranges when
/// that address is in one of them. Whether the peer is trusted is decided once per connection,
/// so a request from any other peer costs what it did before there were trusted proxies.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    addr: SocketAddr,
    /// `Some` only when `addr` is in a trusted range.
    proxies: Option<TrustedProxies>,
}

impl Peer {
    /// The peer `addr` of a connection, with the deployment's trusted ranges.
    pub(crate) fn new(addr: SocketAddr, trusted: &TrustedProxies) -> Self {
        let proxies = in_any(trusted.ranges(), addr.ip()).then(|| trusted.clone());
        Self { addr, proxies }
    }

    /// Tells a request where it came from: `ConnectInfo` with the peer's address, and, from a
    /// trusted proxy, the [`TrustedProxies`] that [`client_ip`] then reads the headers with.
    pub(crate) fn mark(&self, extensions: &mut Extensions) {
        extensions.insert(ConnectInfo(self.addr));
        if let Some(proxies) = &self.proxies {
            extensions.insert(proxies.clone());
        }
    }
}

/// The client of a request that [`Peer::mark`] marked; `None` when it is unknown (a request
/// that came through no listener, or a forwarding chain that does not say).
pub(crate) fn client_ip(extensions: &Extensions, headers: &HeaderMap) -> Option<IpAddr> {
    let ConnectInfo(peer) = extensions.get::<ConnectInfo<SocketAddr>>()?;
    match extensions.get::<TrustedProxies>() {
        None => Some(canonical(peer.ip())),
        Some(trusted) => client_addr(peer.ip(), trusted.ranges(), headers),
    }
}

/// The client of a request from `peer` with `headers`, believing the forwarding headers only of
/// peers in `trusted` (see the module docs); `None` when the chain does not say who it is.
/// IPv4 addresses written as IPv6 (`::ffff:203.0.113.9`) come back as IPv4.
pub(crate) fn client_addr(
    peer: IpAddr,
    trusted: &[IpRange],
    headers: &HeaderMap,
) -> Option<IpAddr> {
    let peer = canonical(peer);
    if !in_any(trusted, peer) {
        return Some(peer);
    }
    let mut named = None;
    for hops in [
        forwarded_hops(headers),
        x_forwarded_for_hops(headers),
        x_real_ip_hops(headers),
    ]
    .into_iter()
    .flatten()
    {
        let client = client_of(hops, trusted, peer);
        if named.is_some_and(|other| other != client) {
            return None;
        }
        named = Some(client);
    }
    named.unwrap_or(Some(peer))
}

/// The client a chain of `hops` names: the right-most hop outside `trusted`, or the left-most
/// when every hop is trusted; `None` when a hop reached before it names no address.
fn client_of(hops: Vec<Option<IpAddr>>, trusted: &[IpRange], peer: IpAddr) -> Option<IpAddr> {
    let mut leftmost = peer;
    for hop in hops.into_iter().rev() {
        let addr = canonical(hop?);
        if !in_any(trusted, addr) {
            return Some(addr);
        }
        leftmost = addr;
    }
    Some(leftmost)
}

/// The hops a forwarding header names, left to right (`None` for a hop that names no address),
/// or `None` when it was not sent. Lines of one header are one list, in the order they arrived
/// (RFC 9110 §5.3); a header that names no hop at all is one hop that names no address.
fn hops_or_unknown(hops: Vec<Option<IpAddr>>) -> Vec<Option<IpAddr>> {
    if hops.is_empty() { vec![None] } else { hops }
}

/// The hops of `Forwarded` (see [`hops_or_unknown`]).
fn forwarded_hops(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    if !headers.contains_key(FORWARDED) {
        return None;
    }
    let mut hops = Vec::new();
    for line in &headers.get_all(FORWARDED) {
        for element in split_unquoted(line.as_bytes(), b',') {
            // Empty list elements are not elements (RFC 9110 §5.6.1).
            if !element.trim_ascii().is_empty() {
                hops.push(forwarded_for(element));
            }
        }
    }
    Some(hops_or_unknown(hops))
}

/// The hops of `X-Forwarded-For` (see [`hops_or_unknown`]).
fn x_forwarded_for_hops(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    if !headers.contains_key(&X_FORWARDED_FOR) {
        return None;
    }
    let mut hops = Vec::new();
    for line in &headers.get_all(&X_FORWARDED_FOR) {
        for element in line.as_bytes().split(|&b| b == b',') {
            let element = element.trim_ascii();
            if !element.is_empty() {
                hops.push(node(element, Syntax::Lenient));
            }
        }
    }
    Some(hops_or_unknown(hops))
}

/// The one hop of `X-Real-IP` (see [`hops_or_unknown`]).
fn x_real_ip_hops(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let mut lines = headers.get_all(&X_REAL_IP).into_iter();
    let first = lines.next()?;
    // Two copies: which one the proxy wrote is anyone's guess.
    let hop = match lines.next() {
        Some(_) => None,
        None => node(first.as_bytes().trim_ascii(), Syntax::Lenient),
    };
    Some(vec![hop])
}

/// The address of one `Forwarded` element's `for` parameter (RFC 7239 §4); `None` when the
/// element has no `for`, has it twice (§4: a parameter occurs at most once per element), is
/// malformed, or its node is not an address.
fn forwarded_for(element: &[u8]) -> Option<IpAddr> {
    let mut found = None;
    for pair in split_unquoted(element, b';') {
        let pair = pair.trim_ascii();
        if pair.is_empty() {
            continue;
        }
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (name, value) = pair.split_at(eq);
        if name.is_empty() || !name.iter().copied().all(is_tchar) {
            return None;
        }
        let value = parameter_value(value.get(1..)?)?;
        if name.eq_ignore_ascii_case(b"for") {
            if found.is_some() {
                return None;
            }
            found = Some(value);
        }
    }
    node(&found?, Syntax::Forwarded)
}

/// A parameter's value: a token, or a quoted string with its quotes and escapes removed.
/// Unquoted, any visible character is accepted (`for=192.0.2.1:80`, which RFC 7239 says to
/// quote): the node must still be an address, and the delimiters were already split on.
fn parameter_value(value: &[u8]) -> Option<Cow<'_, [u8]>> {
    let Some(quoted) = value.strip_prefix(b"\"") else {
        let visible = !value.is_empty() && value.iter().all(|&b| b.is_ascii_graphic() && b != b'"');
        return visible.then_some(Cow::Borrowed(value));
    };
    let mut text = Vec::with_capacity(quoted.len());
    let mut bytes = quoted.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'\\' => text.push(*bytes.next()?),
            // The closing quote ends the value.
            b'"' => return bytes.as_slice().is_empty().then_some(Cow::Owned(text)),
            _ => text.push(b),
        }
    }
    // No closing quote.
    None
}

/// RFC 9110 §5.6.2 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// How strictly a node is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Syntax {
    /// RFC 7239 §6: an IPv6 address only in brackets.
    Forwarded,
    /// `X-Forwarded-For` and `X-Real-IP`, which have no specification: a bare IPv6 address too
    /// (nginx writes them so).
    Lenient,
}

/// The address of a node: `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]`,
/// `[2001:db8::1]:4711` (the port, numeric or obfuscated, is dropped); `None` for `unknown`, an
/// obfuscated `_name` and anything else.
fn node(text: &[u8], syntax: Syntax) -> Option<IpAddr> {
    let text = std::str::from_utf8(text).ok()?;
    if let Some(bracketed) = text.strip_prefix('[') {
        let (addr, rest) = bracketed.split_once(']')?;
        if !rest.is_empty() {
            port(rest.strip_prefix(':')?)?;
        }
        return addr.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if syntax == Syntax::Lenient
        && let Ok(addr) = text.parse::<Ipv6Addr>()
    {
        return Some(IpAddr::V6(addr));
    }
    let addr = match text.split_once(':') {
        Some((addr, rest)) => {
            port(rest)?;
            addr
        }
        None => text,
    };
    addr.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

/// A node's port (RFC 7239 §6): a number, or an obfuscated `_name`.
fn port(text: &str) -> Option<()> {
    let number = text.parse::<u16>().is_ok() && text.bytes().all(|b| b.is_ascii_digit());
    let obfuscated = text.strip_prefix('_').is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    });
    (number || obfuscated).then_some(())
}

/// `text` split at each `delimiter` outside a quoted string (RFC 9110 §5.6.4, with its
/// backslash escapes). An unclosed quote runs to the end, where the value it starts is then
/// refused.
fn split_unquoted(text: &[u8], delimiter: u8) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let text = rest?;
        let (mut quoted, mut escaped) = (false, false);
        for (i, &b) in text.iter().enumerate() {
            if escaped {
                escaped = false;
            } else if quoted && b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                quoted = !quoted;
            } else if !quoted && b == delimiter {
                let (part, after) = text.split_at(i);
                rest = after.get(1..);
                return Some(part);
            }
        }
        rest = None;
        Some(text)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ranges(list: &[&str]) -> Vec<IpRange> {
        list.iter().map(|r| IpRange::parse(r).unwrap()).collect()
    }

    /// The deployment of most tests: proxies in 10.0.0.0/8 and on loopback.
    fn trusted() -> Vec<IpRange> {
        ranges(&["10.0.0.0/8", "127.0.0.1/32", "fd00::/8"])
    }

    fn headers(lines: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// The client of a request from `peer` with these headers, under [`trusted`].
    fn client(peer: &str, lines: &[(&str, &str)]) -> Option<String> {
        client_addr(ip(peer), &trusted(), &headers(lines)).map(|a| a.to_string())
    }

    fn some(addr: &str) -> Option<String> {
        Some(addr.to_owned())
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        for lines in [
            &[][..],
            &[("x-forwarded-for", "203.0.113.9")],
            &[("forwarded", "for=203.0.113.9")],
            &[("x-real-ip", "203.0.113.9")],
            &[("x-forwarded-for", "unknown, garbage")],
        ] {
            assert_eq!(
                client("198.51.100.4", lines),
                some("198.51.100.4"),
                "{lines:?}"
            );
        }
        assert_eq!(
            client("2001:db8::4", &[("x-forwarded-for", "203.0.113.9")]),
            some("2001:db8::4")
        );
        // With no trusted ranges at all, even loopback is only itself.
        let none = client_addr(
            ip("127.0.0.1"),
            &[],
            &headers(&[("x-forwarded-for", "203.0.113.9")]),
        );
        assert_eq!(none, Some(ip("127.0.0.1")));
    }

    #[test]
    fn a_trusted_peer_without_forwarding_headers_is_the_client() {
        assert_eq!(client("10.1.2.3", &[]), some("10.1.2.3"));
        assert_eq!(
            client("10.1.2.3", &[("x-forwarded-proto", "https")]),
            some("10.1.2.3")
        );
    }

    #[test]
    fn x_forwarded_for_gives_the_right_most_untrusted_address() {
        assert_eq!(
            client("127.0.0.1", &[("x-forwarded-for", "203.0.113.9")]),
            some("203.0.113.9")
        );
        // Through two proxies of the deployment.
        assert_eq!(
            client("127.0.0.1", &[("x-forwarded-for", "203.0.113.9, 10.0.0.5")]),
            some("203.0.113.9")
        );
        assert_eq!(
            client("10.0.0.1", &[("x-forwarded-for", "2001:db8::9")]),
            some("2001:db8::9")
        );
        assert_eq!(
            client(
                "fd00::1",
                &[("x-forwarded-for", "[2001:db8::9]:4711,fd00::2")]
            ),
            some("2001:db8::9")
        );
        assert_eq!(
            client("127.0.0.1", &[("x-forwarded-for", " 203.0.113.9:4711 ")]),
            some("203.0.113.9")
        );
    }

    #[test]
    fn addresses_a_client_wrote_left_of_its_own_are_never_read() {
        // The client sent `X-Forwarded-For: 192.0.2.66`; the proxy appended the real address.
        assert_eq!(
            client(
                "127.0.0.1",
                &[("x-forwarded-for", "192.0.2.66, 10.9.9.9, 203.0.113.9")]
            ),
            some("203.0.113.9")
        );
        // Garbage or `unknown` left of the client does not matter either.
        assert_eq!(
            client(
                "127.0.0.1",
                &[("x-forwarded-for", "unknown, ;drop, 203.0.113.9")]
            ),
            some("203.0.113.9")
        );
        assert_eq!(
            client(
                "127.0.0.1",
                &[("forwarded", "for=unknown, for=\"_hidden\", for=203.0.113.9")]
            ),
            some("203.0.113.9")
        );
    }

    #[test]
    fn header_lines_are_one_list_in_the_order_they_arrived() {
        let lines = [
            ("x-forwarded-for", "192.0.2.66"),
            ("x-forwarded-for", "203.0.113.9, 10.0.0.7"),
            ("x-forwarded-for", "10.0.0.8"),
        ];
        assert_eq!(client("10.0.0.1", &lines), some("203.0.113.9"));
        let lines = [
            ("x-forwarded-for", "10.0.0.7"),
            ("x-forwarded-for", "203.0.113.9"),
        ];
        assert_eq!(client("10.0.0.1", &lines), some("203.0.113.9"));
        let lines = [
            ("forwarded", "for=192.0.2.66"),
            ("forwarded", "for=203.0.113.9;proto=https, for=10.0.0.7"),
        ];
        assert_eq!(client("10.0.0.1", &lines), some("203.0.113.9"));
    }

    #[test]
    fn forwarded_is_read_as_rfc_7239_writes_it() {
        for (value, expected) in [
            ("for=203.0.113.9", "203.0.113.9"),
            ("For=\"203.0.113.9\"", "203.0.113.9"),
            ("for=\"203.0.113.9:4711\"", "203.0.113.9"),
            ("for=203.0.113.9:4711", "203.0.113.9"),
            ("for=\"203.0.113.9:_port\"", "203.0.113.9"),
            ("for=\"[2001:db8:cafe::17]\"", "2001:db8:cafe::17"),
            ("for=\"[2001:db8:cafe::17]:4711\"", "2001:db8:cafe::17"),
            ("for=[2001:db8::7]", "2001:db8::7"),
            ("for=192.0.2.60;proto=http;by=203.0.113.43", "192.0.2.60"),
            ("proto=https; for=192.0.2.60 ;host=\"a;b,c\"", "192.0.2.60"),
            ("for=\"\\203.0.113.9\"", "203.0.113.9"),
            ("for=192.0.2.43, for=\"[fd00::17]\"", "192.0.2.43"),
            ("for=192.0.2.43,, for=10.0.0.2,", "192.0.2.43"),
            ("for=\"[::ffff:192.0.2.43]\"", "192.0.2.43"),
        ] {
            assert_eq!(
                client("10.0.0.1", &[("forwarded", value)]),
                some(expected),
                "{value}"
            );
        }
    }

    #[test]
    fn each_forwarding_header_is_read_alone_and_together_they_must_agree() {
        let apart = [
            ("x-real-ip", "198.51.100.3"),
            ("x-forwarded-for", "198.51.100.2"),
            ("forwarded", "for=198.51.100.1"),
        ];
        for one in &apart {
            let named = one.1.trim_start_matches("for=");
            assert_eq!(client("10.0.0.1", &[*one]), some(named));
        }
        // A proxy that sets one header and passes on another the client wrote: who is it?
        assert_eq!(client("10.0.0.1", &apart), None);
        assert_eq!(client("10.0.0.1", &apart[..2]), None);
        assert_eq!(client("10.0.0.1", &apart[1..]), None);
        // The client's forged `Forwarded` beside the chain nginx appended to.
        assert_eq!(
            client(
                "10.0.0.1",
                &[
                    ("forwarded", "for=192.0.2.66"),
                    ("x-forwarded-for", "192.0.2.66, 198.51.100.2"),
                ]
            ),
            None
        );
        // Headers that name the same client, each in its own way, agree.
        let together = [
            ("x-real-ip", "198.51.100.2"),
            ("x-forwarded-for", "192.0.2.66, 198.51.100.2, 10.0.0.2"),
            ("forwarded", "for=198.51.100.2"),
        ];
        assert_eq!(client("10.0.0.1", &together), some("198.51.100.2"));
        assert_eq!(
            client("10.0.0.1", &[("x-real-ip", "[2001:db8::3]:80")]),
            some("2001:db8::3")
        );
    }

    #[test]
    fn a_hop_that_names_no_address_before_the_client_makes_it_unknown() {
        for (name, value) in [
            ("x-forwarded-for", "203.0.113.9, unknown"),
            ("x-forwarded-for", "203.0.113.9, 10.0.0.2, bogus"),
            ("x-forwarded-for", "203.0.113.9, 10.0.0.2:99999"),
            ("x-forwarded-for", "203.0.113.9, [2001:db8::1"),
            (
                "x-forwarded-for",
                "203.0.113.9, 2001:db8::1:80:80:80:80:80:80",
            ),
            ("x-forwarded-for", "203.0.113.9, 010.0.0.1"),
            ("x-forwarded-for", "203.0.113.9 10.0.0.2"),
            ("x-forwarded-for", ""),
            ("x-forwarded-for", " , "),
            ("x-real-ip", "203.0.113.9, 198.51.100.1"),
            ("x-real-ip", "unknown"),
            ("x-real-ip", ""),
            ("forwarded", "for=203.0.113.9, for=unknown"),
            ("forwarded", "for=203.0.113.9, for=_hidden"),
            ("forwarded", "for=203.0.113.9, for=\"_hidden:80\""),
            // An element without `for` is a hop that does not say.
            ("forwarded", "for=203.0.113.9, proto=https"),
            ("forwarded", "for=203.0.113.9, by=10.0.0.1"),
            // IPv6 must be bracketed; a port in brackets or out of range is no address.
            ("forwarded", "for=\"2001:db8::1\""),
            ("forwarded", "for=\"[2001:db8::1:80]:x\""),
            // Malformed elements: a parameter twice, no `=`, an unclosed or stray quote,
            // a bad parameter name.
            ("forwarded", "for=203.0.113.9;for=198.51.100.1"),
            ("forwarded", "for=203.0.113.9;secure"),
            ("forwarded", "for=\"203.0.113.9"),
            ("forwarded", "for=\"203.0.113.9\"x"),
            ("forwarded", "for=203.0\"113.9"),
            ("forwarded", "f r=203.0.113.9"),
            ("forwarded", "for="),
            ("forwarded", ""),
        ] {
            assert_eq!(
                client("10.0.0.1", &[(name, value)]),
                None,
                "{name}: {value}"
            );
        }
        // Whatever the client wrote to the left never rescues it.
        assert_eq!(
            client(
                "10.0.0.1",
                &[("x-forwarded-for", "203.0.113.9, unknown, 10.0.0.2")]
            ),
            None
        );
    }

    #[test]
    fn x_real_ip_twice_is_unknown() {
        let twice = [("x-real-ip", "203.0.113.9"), ("x-real-ip", "203.0.113.9")];
        assert_eq!(client("10.0.0.1", &twice), None);
        assert_eq!(
            client("10.0.0.1", &[("x-real-ip", "203.0.113.9")]),
            some("203.0.113.9")
        );
    }

    #[test]
    fn when_every_hop_is_trusted_the_left_most_is_the_client() {
        assert_eq!(
            client(
                "10.0.0.1",
                &[("x-forwarded-for", "10.0.0.3, 127.0.0.1, 10.0.0.2")]
            ),
            some("10.0.0.3")
        );
        assert_eq!(
            client(
                "127.0.0.1",
                &[("forwarded", "for=\"[fd00::5]:80\", for=10.0.0.2")]
            ),
            some("fd00::5")
        );
    }

    #[test]
    fn ipv4_mapped_addresses_are_ipv4() {
        // A dual-stack listener reports an IPv4 peer as ::ffff:a.b.c.d.
        assert_eq!(
            client("::ffff:127.0.0.1", &[("x-forwarded-for", "203.0.113.9")]),
            some("203.0.113.9")
        );
        assert_eq!(client("::ffff:198.51.100.4", &[]), some("198.51.100.4"));
        assert_eq!(
            client(
                "127.0.0.1",
                &[("x-forwarded-for", "203.0.113.9, ::ffff:10.0.0.2")]
            ),
            some("203.0.113.9")
        );
        assert_eq!(
            client("127.0.0.1", &[("x-forwarded-for", "::ffff:203.0.113.9")]),
            some("203.0.113.9")
        );
    }

    #[test]
    fn text_that_is_not_utf8_is_no_address() {
        let mut map = HeaderMap::new();
        map.append(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"203.0.113.9, \xff10.0.0.2").unwrap(),
        );
        assert_eq!(client_addr(ip("10.0.0.1"), &trusted(), &map), None);
        let mut map = HeaderMap::new();
        map.append(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"\xff, 203.0.113.9").unwrap(),
        );
        assert_eq!(
            client_addr(ip("10.0.0.1"), &trusted(), &map),
            Some(ip("203.0.113.9"))
        );
    }

    #[test]
    fn a_peer_is_marked_trusted_only_when_it_is() {
        let trusted = TrustedProxies::new(trusted());
        let spoofed = headers(&[("x-forwarded-for", "203.0.113.9")]);
        let from = |peer: &str| {
            let mut extensions = Extensions::new();
            Peer::new(SocketAddr::new(ip(peer), 4711), &trusted).mark(&mut extensions);
            client_ip(&extensions, &spoofed).map(|a| a.to_string())
        };
        assert_eq!(from("127.0.0.1"), some("203.0.113.9"));
        assert_eq!(from("198.51.100.4"), some("198.51.100.4"));
        assert_eq!(from("::ffff:198.51.100.4"), some("198.51.100.4"));
        let nobody = TrustedProxies::default();
        let mut extensions = Extensions::new();
        Peer::new("127.0.0.1:4711".parse().unwrap(), &nobody).mark(&mut extensions);
        assert!(extensions.get::<TrustedProxies>().is_none());
        assert_eq!(client_ip(&extensions, &spoofed), Some(ip("127.0.0.1")));
        assert_eq!(client_ip(&Extensions::new(), &spoofed), None);
    }
}
