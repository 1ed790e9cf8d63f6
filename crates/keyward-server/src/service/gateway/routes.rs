//! The forward-auth route table and the path normalizer it matches with.
//!
//! A route table is only as strong as its matcher: the upstream behind the proxy decodes and
//! normalizes the path it is given, so a table matched against the text the client typed can be
//! skipped by spelling the same path another way (`/%64roplets/7`, `/droplets/./7`,
//! `//droplets/7`, `/DROPLETS/7`). So the path is first put in the form RFC 3986 §6.2.2 defines
//! (percent-encoded unreserved characters decoded, the remaining escapes in upper case, dot
//! segments removed) with repeated slashes merged, and compared without regard to ASCII case;
//! a path that would stay ambiguous after that (an encoded `/`, `\`, `;` or `%`, a `;` path
//! parameter, a control character, escapes that are not UTF-8) is refused rather than guessed.
//!
//! And the table fails closed: once a deployment has routes, a request that matches none of
//! them is refused, unless the table has an explicit catch-all route (`*` on `/`).

use keyward_core::Scopes;

/// Longest original URI accepted, in bytes (nginx's default limit for a request line is 8 KiB).
pub const MAX_URI_BYTES: usize = 8192;

/// Why an original URI is refused before any route is looked up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Neither `/path` nor an absolute `http(s)://host/path`.
    #[error("the original URI must be a path starting with '/'")]
    NotAPath,
    /// Longer than [`MAX_URI_BYTES`], as sent or once normalized (every character a path may
    /// not hold is written as a three-byte escape).
    #[error("the original URI is longer than {MAX_URI_BYTES} bytes")]
    TooLong,
    /// A `%` not followed by two hexadecimal digits.
    #[error("the original URI has a '%' that is not followed by two hexadecimal digits")]
    BadEscape,
    /// Something upstreams read in different ways: an encoded `/`, `\`, `;` or `%`, a literal
    /// `\` or `;`, a control character, or bytes that are not UTF-8.
    #[error("the original URI's path is ambiguous ({0}); refused rather than guessed")]
    Ambiguous(&'static str),
}

/// Whether `b` is an RFC 3986 §2.3 unreserved character: decoding it never changes meaning.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Whether `b` may stand unencoded in an RFC 3986 §3.3 path (`pchar` and `/`).
fn allowed_in_path(b: u8) -> bool {
    unreserved(b)
        || matches!(
            b,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'/'
        )
}

/// Appends `%XX` for `b`, in upper case (RFC 3986 §6.2.2.1).
fn push_escape(text: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    text.push('%');
    text.push(char::from(HEX[usize::from(b >> 4)]));
    text.push(char::from(HEX[usize::from(b & 0xf)]));
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The path of an original request URI (`X-Original-URI`, `X-Forwarded-Uri`), in the form routes
/// are matched in: no query or fragment, percent-encoded unreserved characters decoded, other
/// escapes in upper case, characters a path may not hold (a space, `"`, `{`, …) percent-encoded,
/// dot segments removed, repeated slashes merged. The result is visible ASCII starting with `/`,
/// at most [`MAX_URI_BYTES`] long, and normalizing it again gives it back unchanged.
pub fn normalize_path(uri: &str) -> Result<String, PathError> {
    if uri.len() > MAX_URI_BYTES {
        return Err(PathError::TooLong);
    }
    let path = strip_origin(uri)?;
    let path = path.split(['?', '#']).next().unwrap_or("");
    if !path.starts_with('/') {
        return Err(PathError::NotAPath);
    }

    // Pass 1: escapes. `decoded` holds the bytes the path stands for, to check they are UTF-8;
    // `text` the normalized spelling.
    let bytes = path.as_bytes();
    let mut text = String::with_capacity(path.len());
    let mut decoded = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let value = bytes
                    .get(i + 1)
                    .and_then(|&h| hex_value(h))
                    .zip(bytes.get(i + 2).and_then(|&l| hex_value(l)))
                    .map(|(h, l)| h << 4 | l)
                    .ok_or(PathError::BadEscape)?;
                match value {
                    b'/' => return Err(PathError::Ambiguous("an encoded '/'")),
                    b'\\' => return Err(PathError::Ambiguous("an encoded '\\'")),
                    b';' => return Err(PathError::Ambiguous("an encoded ';'")),
                    b'%' => return Err(PathError::Ambiguous("an encoded '%'")),
                    v if v < 0x20 || v == 0x7f => {
                        return Err(PathError::Ambiguous("an encoded control character"));
                    }
                    v if unreserved(v) => text.push(char::from(v)),
                    v => push_escape(&mut text, v),
                }
                decoded.push(value);
                i += 3;
            }
            b'\\' => return Err(PathError::Ambiguous("a '\\'")),
            b';' => return Err(PathError::Ambiguous("a ';' path parameter")),
            b if b < 0x20 || b == 0x7f => {
                return Err(PathError::Ambiguous("a control character"));
            }
            b if !b.is_ascii() => {
                return Err(PathError::Ambiguous(
                    "characters that are not percent-encoded",
                ));
            }
            // A space, `"`, `<`, `>`, `[`, `]`, `^`, `` ` ``, `{`, `|` or `}`: not allowed in a
            // path, so written as the escape an upstream would decode to the same byte; left
            // as it came, `/a b` and `/a%20b` would be two paths to the table and one upstream.
            b if !allowed_in_path(b) => {
                push_escape(&mut text, b);
                decoded.push(b);
                i += 1;
            }
            b => {
                text.push(char::from(b));
                decoded.push(b);
                i += 1;
            }
        }
    }
    if std::str::from_utf8(&decoded).is_err() {
        return Err(PathError::Ambiguous("escapes that are not UTF-8"));
    }

    // Pass 2: segments. Empty segments (repeated slashes) are merged; `.` and `..` are removed
    // as RFC 3986 §5.2.4 does, never climbing above the root.
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in text[1..].split('/') {
        trailing_slash = false;
        match segment {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(text.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || segments.is_empty() {
        out.push('/');
    }
    // Escaping may have tripled it: a result normalizing could not read back is refused.
    if out.len() > MAX_URI_BYTES {
        return Err(PathError::TooLong);
    }
    Ok(out)
}

/// The path part of an origin-form (`/a/b`) or absolute-form (`http://host/a/b`) request target.
fn strip_origin(uri: &str) -> Result<&str, PathError> {
    let lower_starts = |p: &str| {
        uri.get(..p.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(p))
    };
    for scheme in ["http://", "https://"] {
        if lower_starts(scheme) {
            let rest = &uri[scheme.len()..];
            return Ok(match rest.find(['/', '?', '#']) {
                Some(at) if rest.as_bytes()[at] == b'/' => &rest[at..],
                _ => "/",
            });
        }
    }
    Ok(uri)
}

/// Why a forward-auth route is refused at start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The method is neither `*` nor an HTTP method name.
    #[error("method {0:?} is not an HTTP method or \"*\"")]
    Method(String),
    /// `HEAD` requests follow `GET`'s route; a route of its own would be ambiguous.
    #[error("method HEAD cannot have a route of its own: HEAD requests follow GET's route")]
    Head,
    /// The path prefix does not start with `/`, holds a query or fragment, or is not already in
    /// normal form (it would never match as written).
    #[error(
        "path_prefix {0:?} must start with '/', hold no '?' or '#', and be a normalized path ({1})"
    )]
    Path(String, String),
    /// Two routes for the same method on the same prefix (compared as requests are).
    #[error("two routes for {method} {path_prefix}")]
    Duplicate {
        /// The method, or `*`.
        method: String,
        /// The prefix.
        path_prefix: String,
    },
}

/// One row of the forward-auth route table: requests with this method (or any) under this
/// path prefix need these scopes (none: any active token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardAuthRoute {
    /// Upper-case method name; `None` for `*`.
    method: Option<String>,
    /// Normalized, as request paths are.
    path_prefix: String,
    scopes: Scopes,
}

impl ForwardAuthRoute {
    /// A route for `method` (`"GET"`, case-insensitive, or `"*"` for any) under `path_prefix`
    /// (starts with `/`; matched on whole path segments, without regard to ASCII case). Empty
    /// `scopes` means any active token passes.
    pub fn new(method: &str, path_prefix: &str, scopes: Scopes) -> Result<Self, RouteError> {
        let method = match method {
            "*" => None,
            m if m.eq_ignore_ascii_case("head") => return Err(RouteError::Head),
            m if !m.is_empty() && m.len() <= 32 && m.bytes().all(|b| b.is_ascii_alphabetic()) => {
                Some(m.to_ascii_uppercase())
            }
            m => return Err(RouteError::Method(m.chars().take(40).collect())),
        };
        let shown = || path_prefix.chars().take(200).collect::<String>();
        if !path_prefix.starts_with('/') || path_prefix.contains(['?', '#']) {
            return Err(RouteError::Path(shown(), "not a path".to_owned()));
        }
        let normalized =
            normalize_path(path_prefix).map_err(|e| RouteError::Path(shown(), e.to_string()))?;
        Ok(Self {
            method,
            path_prefix: normalized,
            scopes,
        })
    }

    /// The scopes this route needs (empty: any active token).
    pub fn scopes(&self) -> &Scopes {
        &self.scopes
    }

    /// Whether this is the catch-all route: any method, prefix `/`.
    fn is_catch_all(&self) -> bool {
        self.method.is_none() && self.path_prefix == "/"
    }

    /// Whether the normalized `path` lies under the prefix on a segment boundary, ignoring ASCII
    /// case: `/droplets` matches `/droplets`, `/Droplets/7` and `/droplets/`, not `/dropletsx`.
    fn matches_path(&self, path: &str) -> bool {
        let prefix = self.path_prefix.as_bytes();
        let path = path.as_bytes();
        if path.len() < prefix.len() || !path[..prefix.len()].eq_ignore_ascii_case(prefix) {
            return false;
        }
        let rest = &path[prefix.len()..];
        rest.is_empty() || prefix.ends_with(b"/") || rest.starts_with(b"/")
    }
}

/// What the route table asks of one proxied request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteDecision<'a> {
    /// The deployment has no route table: any active token passes.
    NoTable,
    /// A route matched: the token needs these scopes (none: any active token).
    Needs(&'a Scopes),
    /// The table has routes and none matches (there is no catch-all): refused.
    NoRoute,
}

/// The forward-auth route table: which scopes a proxied request needs, by method and path, so
/// a proxy config need not repeat them. Longest matching prefix wins; on equal prefixes a route
/// naming the method wins over `*`; `HEAD` follows `GET`. A table with routes refuses a request
/// no route matches (add `method = "*"`, `path_prefix = "/"` for a catch-all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardAuthRoutes(Vec<ForwardAuthRoute>);

impl ForwardAuthRoutes {
    /// A table of these routes; refuses two routes for one method and prefix.
    pub fn new(routes: Vec<ForwardAuthRoute>) -> Result<Self, RouteError> {
        for (i, a) in routes.iter().enumerate() {
            if let Some(b) = routes[..i].iter().find(|b| {
                b.method == a.method && b.path_prefix.eq_ignore_ascii_case(&a.path_prefix)
            }) {
                return Err(RouteError::Duplicate {
                    method: b.method.clone().unwrap_or_else(|| "*".to_owned()),
                    path_prefix: b.path_prefix.clone(),
                });
            }
        }
        Ok(Self(routes))
    }

    /// The routes, as configured (prefixes normalized).
    pub fn routes(&self) -> &[ForwardAuthRoute] {
        &self.0
    }

    /// Whether there are no routes (every request needs only an active token).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the table has a catch-all route.
    pub fn has_catch_all(&self) -> bool {
        self.0.iter().any(ForwardAuthRoute::is_catch_all)
    }

    /// What `method` on `uri` (the original request target, possibly with a query) needs.
    /// Without a table this is [`RouteDecision::NoTable`] whatever the URI; with one, the URI
    /// must normalize (see [`normalize_path`]).
    pub fn decide(&self, method: &str, uri: &str) -> Result<RouteDecision<'_>, PathError> {
        if self.0.is_empty() {
            return Ok(RouteDecision::NoTable);
        }
        let path = normalize_path(uri)?;
        let method = if method.eq_ignore_ascii_case("HEAD") {
            "GET"
        } else {
            method
        };
        Ok(self
            .0
            .iter()
            .filter(|r| {
                r.method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method))
            })
            .filter(|r| r.matches_path(&path))
            .max_by_key(|r| (r.path_prefix.len(), r.method.is_some()))
            .map_or(RouteDecision::NoRoute, |r| RouteDecision::Needs(&r.scopes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn route(method: &str, prefix: &str, scopes: &[&str]) -> ForwardAuthRoute {
        ForwardAuthRoute::new(method, prefix, Scopes::parse(scopes).unwrap()).unwrap()
    }

    fn needs(table: &ForwardAuthRoutes, method: &str, uri: &str) -> String {
        match table.decide(method, uri) {
            Ok(RouteDecision::Needs(s)) if s.is_empty() => "(any token)".to_owned(),
            Ok(RouteDecision::Needs(s)) => s.to_string(),
            Ok(RouteDecision::NoRoute) => "(refused)".to_owned(),
            Ok(RouteDecision::NoTable) => "(no table)".to_owned(),
            Err(e) => format!("(400: {e})"),
        }
    }

    #[test]
    fn paths_normalize_as_rfc_3986_says() {
        for (raw, normal) in [
            ("/droplets/7", "/droplets/7"),
            ("/droplets/7?x=1#f", "/droplets/7"),
            ("/%64roplets/%37", "/droplets/7"),
            ("/droplets/./7", "/droplets/7"),
            ("/droplets/x/../7", "/droplets/7"),
            ("/%2e%2e/droplets/%2E/7", "/droplets/7"),
            ("//droplets///7", "/droplets/7"),
            ("/droplets/", "/droplets/"),
            ("/droplets/7/.", "/droplets/7/"),
            ("/droplets/7/..", "/droplets/"),
            ("/../../..", "/"),
            ("/", "/"),
            ("/a%20b/%c3%a9", "/a%20b/%C3%A9"),
            ("/a~b_c-d.e", "/a~b_c-d.e"),
            ("http://api.example.com/droplets/7?q", "/droplets/7"),
            ("HTTPS://api.example.com", "/"),
            ("/DROPLETS/7", "/DROPLETS/7"),
            ("/a b/%7B%7d", "/a%20b/%7B%7D"),
            ("/a\"<>[]^`{|}", "/a%22%3C%3E%5B%5D%5E%60%7B%7C%7D"),
            ("/a!$&'()*+,=:@b", "/a!$&'()*+,=:@b"),
        ] {
            assert_eq!(normalize_path(raw).as_deref(), Ok(normal), "{raw}");
            assert_eq!(
                normalize_path(normal).as_deref(),
                Ok(normal),
                "idempotent: {normal}"
            );
        }
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for raw in [
            "/droplets%2F7",
            "/droplets%2f7",
            "/droplets%5C7",
            "/droplets\\7",
            "/droplets;jsessionid=1/7",
            "/droplets%3B/7",
            "/droplets%00",
            "/droplets%0a",
            "/droplets%ff",
            "/droplets%c3",
            "/droplets%252F7",
            "/droplets%",
            "/droplets%zz",
            "/droplets\u{7f}",
            "/dröplets",
            "droplets",
            "",
            "*",
        ] {
            assert!(normalize_path(raw).is_err(), "{raw:?}");
        }
        assert_eq!(
            normalize_path(&format!("/{}", "a".repeat(MAX_URI_BYTES))),
            Err(PathError::TooLong)
        );
        // Short enough as sent, too long once each `|` is written `%7C`.
        let escaped = format!("/{}", "|".repeat(MAX_URI_BYTES / 3 + 1));
        assert!(escaped.len() <= MAX_URI_BYTES);
        assert_eq!(normalize_path(&escaped), Err(PathError::TooLong));
        let fits = format!("/{}", "|".repeat((MAX_URI_BYTES - 1) / 3));
        assert_eq!(
            normalize_path(&fits).map(|p| p.len()),
            Ok(1 + 3 * ((MAX_URI_BYTES - 1) / 3))
        );
    }

    #[test]
    fn the_longest_prefix_wins_and_a_named_method_beats_any() {
        let table = ForwardAuthRoutes::new(vec![
            route("*", "/", &["account:read"]),
            route("GET", "/droplets", &["droplet:read"]),
            route("*", "/droplets", &["droplet:update"]),
            route("delete", "/droplets/", &["droplet:delete"]),
            route("GET", "/droplets/archive", &["volume:read"]),
        ])
        .unwrap();
        let r = |m, u| needs(&table, m, u);
        assert_eq!(r("GET", "/droplets"), "droplet:read");
        assert_eq!(r("get", "/droplets?page=2"), "droplet:read");
        assert_eq!(r("POST", "/droplets"), "droplet:update");
        assert_eq!(r("DELETE", "/droplets/7"), "droplet:delete");
        assert_eq!(r("GET", "/droplets/7"), "droplet:read");
        assert_eq!(r("GET", "/droplets/archive/1"), "volume:read");
        // Segment boundaries: `/dropletsx` is not under `/droplets`.
        assert_eq!(r("GET", "/dropletsx"), "account:read");
        assert_eq!(r("GET", "/"), "account:read");
    }

    #[test]
    fn another_spelling_of_the_path_finds_the_same_route() {
        let table = ForwardAuthRoutes::new(vec![
            route("*", "/", &["account:read"]),
            route("DELETE", "/droplets/", &["droplet:delete"]),
        ])
        .unwrap();
        for uri in [
            "/droplets/7",
            "/%64roplets/7",
            "/droplets/./7",
            "/x/../droplets/7",
            "//droplets/7",
            "/droplets//7",
            "/DROPLETS/7",
            "/Droplets/7",
            "http://evil/droplets/7",
        ] {
            assert_eq!(needs(&table, "DELETE", uri), "droplet:delete", "{uri}");
        }
        for uri in ["/droplets;x=1/7", "/droplets%2F7", "/droplets\\7"] {
            assert!(needs(&table, "DELETE", uri).starts_with("(400"), "{uri}");
        }
    }

    /// Found by the `forward_auth_path` fuzz target (input `"GET\n/trop ftft3F7"`): a literal
    /// space stayed a space, so `/my files` and `/my%20files`, one path to an upstream that
    /// decodes, were two paths to the table, and one spelling skipped the other's route.
    #[test]
    fn characters_a_path_may_not_hold_have_one_spelling() {
        assert_eq!(
            normalize_path("/trop ftft3F7").as_deref(),
            Ok("/trop%20ftft3F7")
        );
        let table = ForwardAuthRoutes::new(vec![
            route("*", "/", &["account:read"]),
            route("DELETE", "/my files", &["droplet:delete"]),
        ])
        .unwrap();
        for uri in [
            "/my files/7",
            "/my%20files/7",
            "/MY%20Files/7",
            "/my%20files",
        ] {
            assert_eq!(needs(&table, "DELETE", uri), "droplet:delete", "{uri}");
        }
        let table = ForwardAuthRoutes::new(vec![
            route("*", "/", &["account:read"]),
            route("DELETE", "/my%20files", &["droplet:delete"]),
        ])
        .unwrap();
        assert_eq!(needs(&table, "DELETE", "/my files/7"), "droplet:delete");
    }

    /// The pieces paths are made of in the property below: separators, dot segments, escapes
    /// of both kinds, characters a path may not hold, and an absolute-form start.
    const PIECES: &[&str] = &[
        "/", ".", "..", "%2e", "%2F", "%41", "%c3%a9", "%ff", "a", "Droplets", " ", "?", "#", ";",
        "\\", "%", "~", "{", "http://h",
    ];

    proptest! {
        /// What the `forward_auth_path` fuzz target checks, for `cargo test`: a normalized path
        /// is visible ASCII from `/` with no empty or dot segment and no `?`, `#`, `;` or `\`,
        /// and normalizes to itself; the lower-case spelling finds the same route.
        #[test]
        fn normalized_paths_are_fixed_points(
            pieces in prop::collection::vec(prop::sample::select(PIECES), 0..12),
        ) {
            let uri = pieces.concat();
            let table = ForwardAuthRoutes::new(vec![
                route("GET", "/droplets", &["droplet:read"]),
                route("*", "/a", &["droplet:update"]),
            ])
            .unwrap();
            if let Ok(path) = normalize_path(&uri) {
                prop_assert!(path.starts_with('/'), "{uri:?} -> {path:?}");
                prop_assert!(path.bytes().all(|b| b.is_ascii_graphic()), "{path:?}");
                prop_assert!(!path.contains("//") && !path.contains(['?', '#', ';', '\\']));
                prop_assert!(path.split('/').all(|s| s != "." && s != ".."), "{path:?}");
                prop_assert_eq!(normalize_path(&path), Ok(path.clone()));
                prop_assert_eq!(
                    table.decide("GET", &uri.to_ascii_lowercase()),
                    table.decide("GET", &uri)
                );
            }
        }
    }

    #[test]
    fn without_a_catch_all_an_unmatched_request_is_refused() {
        let table =
            ForwardAuthRoutes::new(vec![route("GET", "/droplets", &["droplet:read"])]).unwrap();
        assert_eq!(needs(&table, "POST", "/droplets"), "(refused)");
        assert_eq!(needs(&table, "GET", "/volumes"), "(refused)");
        assert_eq!(needs(&table, "HEAD", "/droplets/1"), "droplet:read");
        assert!(!table.has_catch_all());
        assert_eq!(
            needs(&ForwardAuthRoutes::default(), "GET", "/"),
            "(no table)"
        );
        assert_eq!(
            needs(&ForwardAuthRoutes::default(), "GET", "not even a path"),
            "(no table)"
        );
        let open = ForwardAuthRoutes::new(vec![
            route("GET", "/droplets", &["droplet:read"]),
            route("*", "/", &[]),
        ])
        .unwrap();
        assert!(open.has_catch_all());
        assert_eq!(needs(&open, "POST", "/anything"), "(any token)");
    }

    #[test]
    fn bad_routes_are_refused() {
        let scopes = Scopes::parse(&["droplet:read"]).unwrap();
        for (method, prefix) in [
            ("GET POST", "/a"),
            ("", "/a"),
            ("G3T", "/a"),
            ("HEAD", "/a"),
            ("GET", "a"),
            ("GET", "/a?b"),
            ("GET", "/a%2Fb"),
            ("GET", "/a;b"),
        ] {
            assert!(
                ForwardAuthRoute::new(method, prefix, scopes.clone()).is_err(),
                "{method:?} {prefix:?}"
            );
        }
        let dup = ForwardAuthRoutes::new(vec![
            route("GET", "/a", &["droplet:read"]),
            route("get", "/A/./", &["droplet:read"]),
            route("GET", "/A", &["droplet:read"]),
        ]);
        assert!(matches!(dup, Err(RouteError::Duplicate { .. })), "{dup:?}");
    }
}
