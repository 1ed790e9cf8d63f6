//! Scopes: `Scope::parse`, `Scopes::parse`, `Scopes::parse_space_separated`,
//! `Scopes::normalized`, and `Catalog::check` and `Catalog::check_known` against the sample
//! catalog; Display and JSON round trips.

use keyward_core::scope::{MAX_SCOPES, RESERVED, ScopeError};
use keyward_core::{Catalog, Scope, Scopes};
use std::sync::LazyLock;

static SAMPLE: LazyLock<Catalog> = LazyLock::new(Catalog::sample);
static EVERYTHING: LazyLock<Scope> =
    LazyLock::new(|| Scope::parse("*:*").expect("`*:*` is a scope"));

/// The sample catalog as its documentation lists it. keyward's reserved resources come from
/// [`RESERVED`] itself: they grow with the product (`events:read`, `leaks:report`, ...), and a
/// hand-kept copy here fell behind once and failed the target on `events:*`.
const SAMPLE_RESOURCES: &[(&str, &[&str])] = &[
    ("droplet", &["read", "create", "update", "delete"]),
    ("volume", &["read", "create", "update", "delete"]),
    ("account", &["read", "create", "update", "delete"]),
];

fn model_catalog() -> impl Iterator<Item = &'static (&'static str, &'static [&'static str])> {
    SAMPLE_RESOURCES.iter().chain(RESERVED)
}

/// Longest error message: the parsers quote at most 80 characters of the input (`{:?}`, so up
/// to 10 bytes each, `\u{10ffff}`), so a message never grows with what a client sent.
const MAX_ERROR_BYTES: usize = 80 * 10 + 200;

/// Whether a name is a scope part by the documented grammar: `*`, or 1 to 64 of `[a-z0-9_-]`.
fn model_part(s: &str) -> bool {
    s == "*"
        || (!s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_'))
}

/// Whether the sample catalog knows `resource:action` (either may be `*`).
fn model_known(resource: &str, action: &str) -> bool {
    match (resource, action) {
        ("*", "*") => true,
        (r, "*") => model_catalog().any(|(name, _)| *name == r),
        (r, a) => model_catalog()
            .filter(|(name, _)| r == "*" || *name == r)
            .any(|(_, actions)| actions.contains(&a)),
    }
}

/// The fuzz target: the input as one scope, as a space-separated set, and as a list of lines.
pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    check_one(&text);
    check_set(&text);
    let lines: Vec<&str> = text.split('\n').collect();
    let listed = Scopes::parse(&lines);
    assert_eq!(
        listed.is_ok(),
        lines.iter().all(|l| Scope::parse(l).is_ok()),
        "a list parses exactly when each item does: {lines:?}"
    );
    if let Ok(set) = listed {
        check_parsed_set(&set, lines.len());
    }
}

fn check_one(text: &str) {
    let parsed = Scope::parse(text);
    let model = text
        .split_once(':')
        .is_some_and(|(r, a)| model_part(r) && model_part(a));
    assert_eq!(
        parsed.is_ok(),
        model,
        "Scope::parse vs the grammar: {text:?}"
    );
    let scope = match parsed {
        Ok(scope) => scope,
        Err(e) => {
            assert!(
                e.to_string().len() <= MAX_ERROR_BYTES,
                "error too long: {e}"
            );
            return;
        }
    };
    // The grammar has one spelling per scope, so Display gives the input back.
    assert_eq!(scope.to_string(), text);
    assert_eq!(Scope::parse(&scope.to_string()).as_ref(), Ok(&scope));
    assert_eq!(format!("{}:{}", scope.resource(), scope.action()), text);
    assert!(scope.covers(&scope));
    assert!(EVERYTHING.covers(&scope));
    let json = serde_json::to_string(&scope).expect("a scope serializes");
    assert_eq!(
        serde_json::from_str::<Scope>(&json).ok().as_ref(),
        Some(&scope)
    );
    let checked = SAMPLE.check(&Scopes::new([scope.clone()]));
    assert_eq!(
        checked.is_ok(),
        model_known(scope.resource(), scope.action()),
        "catalog check vs the sample catalog: {scope} gave {checked:?}"
    );
}

fn check_set(text: &str) {
    let items: Vec<&str> = text.split_ascii_whitespace().collect();
    let parsed = Scopes::parse_space_separated(text);
    assert_eq!(parsed, Scopes::parse(&items));
    match parsed {
        Ok(set) => check_parsed_set(&set, items.len()),
        Err(e) => {
            assert!(items.iter().any(|i| Scope::parse(i).is_err()));
            assert!(
                e.to_string().len() <= MAX_ERROR_BYTES,
                "error too long: {e}"
            );
        }
    }
}

fn check_parsed_set(set: &Scopes, items: usize) {
    assert!(set.len() <= items);
    let all: Vec<&Scope> = set.iter().collect();
    assert!(
        all.windows(2).all(|w| w[0] < w[1]),
        "sorted, no duplicates: {set}"
    );
    // Display is the OAuth form, and parses back to the same set.
    assert_eq!(
        Scopes::parse_space_separated(&set.to_string()).as_ref(),
        Ok(set)
    );
    let json = serde_json::to_string(set).expect("scopes serialize");
    assert_eq!(
        serde_json::from_str::<Scopes>(&json).ok().as_ref(),
        Some(set)
    );
    assert!(set.covers_all(set));
    assert!(set.missing(set).is_empty());
    // What a token stores: the same rights, each said once, and nothing new.
    let normal = set.normalized();
    assert!(
        normal.covers_all(set) && set.covers_all(&normal),
        "{set} vs {normal}"
    );
    let kept: Vec<&Scope> = normal.iter().collect();
    assert!(
        kept.iter().all(|s| all.contains(s)),
        "{normal} is within {set}"
    );
    for s in &all {
        let covered_by_another = all.iter().any(|o| o != s && o.covers(s));
        assert_eq!(kept.contains(s), !covered_by_another, "{s} in {set}");
    }
    assert_eq!(normal.normalized(), normal);
    // What a verification may ask for: every scope known, however many.
    assert_eq!(
        SAMPLE.check_known(set).is_ok(),
        all.iter().all(|s| model_known(s.resource(), s.action())),
        "check_known vs the sample catalog: {set}"
    );
    match SAMPLE.check(set) {
        Ok(()) => {
            assert!((1..=MAX_SCOPES).contains(&set.len()));
            assert!(all.iter().all(|s| model_known(s.resource(), s.action())));
        }
        Err(ScopeError::Empty) => assert!(set.is_empty()),
        Err(ScopeError::TooMany) => assert!(set.len() > MAX_SCOPES),
        Err(ScopeError::UnknownResource { .. } | ScopeError::UnknownAction { .. }) => {
            assert!(all.iter().any(|s| !model_known(s.resource(), s.action())));
        }
        Err(e @ ScopeError::Malformed(_)) => panic!("a parsed set cannot be malformed: {e}"),
        Err(e @ ScopeError::ReservedResource(_)) => {
            panic!("checking a set never judges the catalog itself: {e}")
        }
    }
}
