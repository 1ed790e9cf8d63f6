//! The forward-auth path normalizer and route table: `normalize_path` and
//! `ForwardAuthRoutes::decide`.
//!
//! Input: `METHOD\nURI`, or a bare URI (then the method is `GET`).

use keyward_core::Scopes;
use keyward_server::service::gateway::{
    ForwardAuthRoute, ForwardAuthRoutes, MAX_URI_BYTES, RouteDecision, normalize_path,
};
use std::sync::LazyLock;

/// A table like a deployment's: named methods beside `*`, nested prefixes, a trailing slash, a
/// route that needs no scope, and no catch-all.
static TABLE: LazyLock<ForwardAuthRoutes> = LazyLock::new(|| {
    let route = |method: &str, prefix: &str, scopes: &[&str]| {
        let scopes = Scopes::parse(scopes).expect("the table's scopes parse");
        ForwardAuthRoute::new(method, prefix, scopes).expect("the table's routes are valid")
    };
    ForwardAuthRoutes::new(vec![
        route("GET", "/droplets", &["droplet:read"]),
        route("*", "/droplets", &["droplet:update"]),
        route("DELETE", "/droplets/", &["droplet:delete"]),
        route("GET", "/droplets/archive", &["volume:read"]),
        route("*", "/volumes/%C3%A9t%C3%A9", &["volume:update"]),
        route("POST", "/public", &[]),
    ])
    .expect("the table has no duplicates")
});

/// Whether `b` is an RFC 3986 unreserved character (never left percent-encoded).
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The fuzz target.
pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (method, uri) = match text.split_once('\n') {
        Some((method, uri)) if method.len() <= 16 => (method, uri),
        _ => ("GET", &*text),
    };
    if let Ok(path) = normalize_path(uri) {
        check_normal(uri, &path);
    }
    check_decision(method, uri);
    check_route_from(method, uri);
}

/// What a normalized path looks like, and that it is a fixed point.
fn check_normal(uri: &str, path: &str) {
    let context = || format!("{uri:?} -> {path:?}");
    assert!(path.starts_with('/'), "{}", context());
    assert!(!path.contains("//"), "{}", context());
    assert!(
        !path.contains(['?', '#', ';', '\\']),
        "a character that belongs to no path: {}",
        context()
    );
    assert!(
        path.bytes().all(|b| b.is_ascii_graphic()),
        "not visible ASCII: {}",
        context()
    );
    assert!(
        path.split('/')
            .all(|segment| segment != "." && segment != ".."),
        "a dot segment: {}",
        context()
    );
    // Escapes are upper case and never stand for an unreserved character, and what they stand
    // for is UTF-8.
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).expect("an escape has two digits");
            assert!(
                hex.iter()
                    .all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(h)),
                "{}",
                context()
            );
            let value = u8::from_str_radix(std::str::from_utf8(hex).unwrap_or("zz"), 16)
                .expect("checked hex digits");
            assert!(
                !unreserved(value),
                "an escaped unreserved byte: {}",
                context()
            );
            decoded.push(value);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    assert!(std::str::from_utf8(&decoded).is_ok(), "{}", context());
    assert_eq!(
        normalize_path(path).as_deref(),
        Ok(path),
        "normalizing twice changed it: {}",
        context()
    );
}

/// Another spelling of the same request finds the same route.
fn check_decision(method: &str, uri: &str) {
    let decision = TABLE.decide(method, uri);
    let normalized = normalize_path(uri);
    assert_eq!(
        decision.is_ok(),
        normalized.is_ok(),
        "{method:?} {uri:?}: {decision:?} but {normalized:?}"
    );
    let (Ok(decision), Ok(path)) = (decision, normalized) else {
        return;
    };
    let same = |other: &str, how: &str| {
        assert_eq!(
            TABLE.decide(method, other),
            Ok(decision),
            "{how} {other:?} decides otherwise than {uri:?} ({method:?})"
        );
    };
    same(&path, "the normalized path");
    same(&uri.to_ascii_lowercase(), "the lower-case spelling");
    if uri.len() + 20 <= MAX_URI_BYTES {
        if !uri.contains(['?', '#']) {
            same(&format!("{uri}?x=1#y"), "with a query");
        }
        if uri.starts_with('/') {
            same(
                &format!("https://api.example.com{uri}"),
                "the absolute form",
            );
        }
    }
    if method.eq_ignore_ascii_case("HEAD") {
        assert_eq!(TABLE.decide("GET", uri), Ok(decision), "HEAD follows GET");
    }
    if let RouteDecision::NoTable = decision {
        panic!("a table with routes answered NoTable");
    }
}

/// A route made from a prefix matches that prefix.
fn check_route_from(method: &str, prefix: &str) {
    let Ok(route) = ForwardAuthRoute::new(method, prefix, Scopes::default()) else {
        return;
    };
    let table = ForwardAuthRoutes::new(vec![route.clone()]).expect("one route is no duplicate");
    let asked = if method == "*" { "PATCH" } else { method };
    assert_eq!(
        table.decide(asked, prefix),
        Ok(RouteDecision::Needs(route.scopes())),
        "a route for {method:?} {prefix:?} does not match its own prefix"
    );
    assert!(ForwardAuthRoutes::new(vec![route.clone(), route]).is_err());
}
