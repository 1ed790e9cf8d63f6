//! Scopes: `resource:action`, with `*` on either side (`droplet:*`, `*:read`, `*:*`).
//!
//! The deployment declares its catalog of resources and actions, so a misspelt scope is refused
//! when a token is made. keyward's own rights (`tokens:*`, `audit:read`, `metrics:read`) are
//! scopes too, and are always in the catalog.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The wildcard that stands for every resource or every action.
pub const WILDCARD: &str = "*";
/// Longest resource or action name.
pub const MAX_PART_LEN: usize = 64;
/// Most scopes one token may carry.
pub const MAX_SCOPES: usize = 64;

/// keyward's own resources and actions, present in every catalog. Changing these changes what
/// existing management tokens may do. `tokens:introspect` lets a gateway call RFC 7662
/// introspection on any token it is shown (`tokens:*` includes it); `metrics:read` lets a
/// scraper read `/metrics` where the deployment requires a token for it.
///
/// `leaks:report` lets an in-house secret scanner report secrets it found, which revokes their
/// tokens whoever owns them (holding a secret is all the right a report needs, as for GitHub's
/// and GitLab's reports). `tokens:revoke-any` revokes any user's tokens in bulk.
///
/// `users:read|create|update|delete`, `tokens:issue` and `tokens:revoke-any` are administrative: only a token owned
/// by an admin may hold them by name, and a wildcard (`tokens:*`, `*:*`) grants them only
/// while its owner is an admin.
pub const RESERVED: &[(&str, &[&str])] = &[
    (
        "tokens",
        &[
            "read",
            "create",
            "update",
            "delete",
            "introspect",
            "issue",
            "revoke-any",
        ],
    ),
    ("users", &["read", "create", "update", "delete"]),
    ("audit", &["read"]),
    ("metrics", &["read"]),
    ("events", &["read"]),
    ("webhooks", &["read"]),
    ("leaks", &["report"]),
];

/// keyward's own scopes as values, for the endpoints that require them: defined once here so
/// the HTTP layer and the service name the same thing.
pub mod reserved {
    use super::Scope;
    use std::sync::LazyLock;

    /// `tokens:read`: list and read the owner's tokens.
    pub static TOKENS_READ: LazyLock<Scope> = LazyLock::new(|| Scope::reserved("tokens", "read"));
    /// `tokens:create`: make tokens (within the caller's own scopes).
    pub static TOKENS_CREATE: LazyLock<Scope> =
        LazyLock::new(|| Scope::reserved("tokens", "create"));
    /// `tokens:update`: rename and regenerate.
    pub static TOKENS_UPDATE: LazyLock<Scope> =
        LazyLock::new(|| Scope::reserved("tokens", "update"));
    /// `tokens:delete`: revoke.
    pub static TOKENS_DELETE: LazyLock<Scope> =
        LazyLock::new(|| Scope::reserved("tokens", "delete"));
    /// `tokens:introspect`: RFC 7662 introspection of any presented token.
    pub static TOKENS_INTROSPECT: LazyLock<Scope> =
        LazyLock::new(|| Scope::reserved("tokens", "introspect"));
    /// `audit:read`: the owner's audit trail.
    pub static AUDIT_READ: LazyLock<Scope> = LazyLock::new(|| Scope::reserved("audit", "read"));
    /// `metrics:read`: `/metrics`, when the deployment requires a token for it.
    pub static METRICS_READ: LazyLock<Scope> = LazyLock::new(|| Scope::reserved("metrics", "read"));
    /// `tokens:issue`: mint tokens for any user, with any scope of the catalog (admins only).
    pub static TOKENS_ISSUE: LazyLock<Scope> = LazyLock::new(|| Scope::reserved("tokens", "issue"));
    /// `tokens:revoke-any`: revoke any user's tokens in bulk (admins only).
    pub static TOKENS_REVOKE_ANY: LazyLock<Scope> =
        LazyLock::new(|| Scope::reserved("tokens", "revoke-any"));
    /// `leaks:report`: report leaked secrets, revoking their tokens whoever owns them.
    pub static LEAKS_REPORT: LazyLock<Scope> = LazyLock::new(|| Scope::reserved("leaks", "report"));
    /// `users:read`: read users (admins only).
    pub static USERS_READ: LazyLock<Scope> = LazyLock::new(|| Scope::reserved("users", "read"));
    /// `users:create`: create users (admins only).
    pub static USERS_CREATE: LazyLock<Scope> = LazyLock::new(|| Scope::reserved("users", "create"));
    /// `users:update`: change, disable and enable users (admins only).
    pub static USERS_UPDATE: LazyLock<Scope> = LazyLock::new(|| Scope::reserved("users", "update"));
    /// `users:delete`: delete users (admins only).
    pub static USERS_DELETE: LazyLock<Scope> = LazyLock::new(|| Scope::reserved("users", "delete"));

    /// `events:read`: the events of every user (admins only).
    pub static EVENTS_READ: LazyLock<Scope> = LazyLock::new(|| Scope::reserved("events", "read"));
    /// `webhooks:read`: the webhook deliveries (admins only).
    pub static WEBHOOKS_READ: LazyLock<Scope> =
        LazyLock::new(|| Scope::reserved("webhooks", "read"));

    /// Whether `scope` names an administrative right by itself (a `users`, `events` or
    /// `webhooks` scope, `tokens:issue` or `tokens:revoke-any`), wildcards aside: what only an
    /// admin's token may be given.
    pub fn is_administrative(scope: &Scope) -> bool {
        matches!(scope.resource(), "users" | "events" | "webhooks")
            || (scope.resource() == "tokens" && matches!(scope.action(), "issue" | "revoke-any"))
    }
}

/// Why a scope is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// Not of the form `resource:action` with names of `[a-z0-9_-]` or `*`.
    #[error(
        "{0:?} is not a scope: expected resource:action, each lowercase letters, digits, '-', '_' or '*'"
    )]
    Malformed(String),
    /// The resource is not in the deployment's catalog.
    #[error("unknown resource {resource:?} in scope {scope:?}")]
    UnknownResource {
        /// The scope as given.
        scope: String,
        /// Its resource.
        resource: String,
    },
    /// The action is not in the catalog for that resource.
    #[error("unknown action {action:?} in scope {scope:?}")]
    UnknownAction {
        /// The scope as given.
        scope: String,
        /// Its action.
        action: String,
    },
    /// No scopes were given.
    #[error("a token needs at least one scope")]
    Empty,
    /// Too many scopes were given.
    #[error("a token may carry at most {MAX_SCOPES} scopes")]
    TooMany,
    /// A deployment's catalog names one of keyward's own resources.
    #[error(
        "{0:?} is keyward's own resource (tokens, users, audit, metrics, events, webhooks, leaks are always in the catalog); give your resource another name"
    )]
    ReservedResource(String),
}

/// One side of a scope: a name or the wildcard.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Part {
    Any,
    Name(Box<str>),
}

impl Part {
    fn parse(s: &str) -> Option<Self> {
        if s == WILDCARD {
            return Some(Self::Any);
        }
        let ok = !s.is_empty()
            && s.len() <= MAX_PART_LEN
            && s.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_');
        ok.then(|| Self::Name(s.into()))
    }

    /// Whether granting `self` grants `other` (which may itself be a wildcard).
    fn covers(&self, other: &Part) -> bool {
        match (self, other) {
            (Part::Any, _) => true,
            (Part::Name(a), Part::Name(b)) => a == b,
            (Part::Name(_), Part::Any) => false,
        }
    }

    fn as_str(&self) -> &str {
        match self {
            Part::Any => WILDCARD,
            Part::Name(n) => n,
        }
    }
}

/// A parsed scope.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope {
    resource: Part,
    action: Part,
}

impl Scope {
    /// Parses `resource:action`.
    pub fn parse(s: &str) -> Result<Self, ScopeError> {
        let malformed = || ScopeError::Malformed(truncate(s));
        let (resource, action) = s.split_once(':').ok_or_else(malformed)?;
        Ok(Self {
            resource: Part::parse(resource).ok_or_else(malformed)?,
            action: Part::parse(action).ok_or_else(malformed)?,
        })
    }

    /// One of keyward's own fixed scopes, e.g. `("tokens", "read")`. The names are trusted
    /// constants; give only names from [`RESERVED`].
    pub fn reserved(resource: &'static str, action: &'static str) -> Self {
        Self {
            resource: Part::Name(resource.into()),
            action: Part::Name(action.into()),
        }
    }

    /// Whether holding `self` grants everything `other` grants.
    pub fn covers(&self, other: &Scope) -> bool {
        self.resource.covers(&other.resource) && self.action.covers(&other.action)
    }

    /// The resource, or `*`.
    pub fn resource(&self) -> &str {
        self.resource.as_str()
    }

    /// The action, or `*`.
    pub fn action(&self) -> &str {
        self.action.as_str()
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.resource.as_str(), self.action.as_str())
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Scope::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A set of scopes: sorted, without duplicates. Serialized as a list of strings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    /// Collects scopes, sorting and removing duplicates.
    pub fn new(scopes: impl IntoIterator<Item = Scope>) -> Self {
        // Sorted in place rather than through a set: one allocation, on the verify path too.
        let mut scopes: Vec<Scope> = scopes.into_iter().collect();
        scopes.sort_unstable();
        scopes.dedup();
        Self(scopes)
    }

    /// Parses each string as a scope.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, ScopeError> {
        items
            .iter()
            .map(|s| Scope::parse(s.as_ref()))
            .collect::<Result<Vec<_>, _>>()
            .map(Self::new)
    }

    /// Parses a space-separated list, as stored and as OAuth writes scopes.
    pub fn parse_space_separated(s: &str) -> Result<Self, ScopeError> {
        let items: Vec<&str> = s.split_ascii_whitespace().collect();
        Self::parse(&items)
    }

    /// The same rights with nothing said twice: a scope that another one here covers
    /// (`audit:read` beside `audit:*`) is left out. This is what a token stores. Administrative
    /// scopes lose nothing by it: by name or through a wildcard, they work only while the
    /// owner is an admin.
    #[must_use]
    pub fn normalized(&self) -> Self {
        // `covers` is a partial order and the set has no duplicates, so of two scopes covering
        // each other neither exists: nothing is dropped for a scope that is itself dropped
        // without a wider one staying.
        let kept = self
            .0
            .iter()
            .filter(|s| !self.0.iter().any(|other| other != *s && other.covers(s)))
            .cloned()
            .collect();
        Self(kept)
    }

    /// Whether some scope here grants `wanted`.
    pub fn covers(&self, wanted: &Scope) -> bool {
        self.0.iter().any(|have| have.covers(wanted))
    }

    /// Whether every scope of `wanted` is granted here.
    pub fn covers_all(&self, wanted: &Scopes) -> bool {
        wanted.0.iter().all(|w| self.covers(w))
    }

    /// The scopes of `wanted` not granted here.
    pub fn missing<'a>(&self, wanted: &'a Scopes) -> Vec<&'a Scope> {
        wanted.0.iter().filter(|w| !self.covers(w)).collect()
    }

    /// The scopes, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }

    /// How many scopes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Scopes {
    /// Space-separated, the OAuth form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

/// The deployment's resources and the actions each allows, plus keyward's reserved ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    resources: BTreeMap<String, BTreeSet<String>>,
}

impl Catalog {
    /// A catalog of the given resources (each with its actions) plus the reserved ones.
    /// Names that are not valid scope parts are refused, and so are keyward's own resources:
    /// a deployment's `users:read` must never mean keyward's.
    pub fn new(resources: BTreeMap<String, Vec<String>>) -> Result<Self, ScopeError> {
        let mut all: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (resource, actions) in resources {
            if RESERVED.iter().any(|(reserved, _)| *reserved == resource) {
                return Err(ScopeError::ReservedResource(resource));
            }
            for action in &actions {
                // Validate both names through the scope parser; wildcards are not catalog entries.
                let scope = Scope::parse(&format!("{resource}:{action}"))?;
                if scope.resource == Part::Any || scope.action == Part::Any {
                    return Err(ScopeError::Malformed(format!("{resource}:{action}")));
                }
            }
            all.entry(resource).or_default().extend(actions);
        }
        for (resource, actions) in RESERVED {
            all.entry((*resource).to_owned())
                .or_default()
                .extend(actions.iter().map(|a| (*a).to_owned()));
        }
        Ok(Self { resources: all })
    }

    /// The sample catalog a fresh deployment gets: `droplet`, `volume`, `account` ×
    /// `read/create/update/delete`.
    pub fn sample() -> Self {
        let crud = || {
            ["read", "create", "update", "delete"]
                .map(String::from)
                .to_vec()
        };
        let resources = ["droplet", "volume", "account"]
            .into_iter()
            .map(|r| (r.to_owned(), crud()))
            .collect();
        Self::new(resources).unwrap_or_else(|_| Self {
            resources: BTreeMap::new(),
        })
    }

    /// Checks that every scope names known resources and actions (wildcards allowed), that there
    /// is at least one and not too many.
    pub fn check(&self, scopes: &Scopes) -> Result<(), ScopeError> {
        if scopes.is_empty() {
            return Err(ScopeError::Empty);
        }
        if scopes.len() > MAX_SCOPES {
            return Err(ScopeError::TooMany);
        }
        scopes.iter().try_for_each(|s| self.check_one(s))
    }

    /// Checks that every scope names known resources and actions (wildcards allowed), however
    /// many there are: for the scopes a verification asks for, where a scope outside the catalog
    /// is a typo in the calling API rather than a right the token lacks.
    pub fn check_known(&self, scopes: &Scopes) -> Result<(), ScopeError> {
        scopes.iter().try_for_each(|s| self.check_one(s))
    }

    fn check_one(&self, scope: &Scope) -> Result<(), ScopeError> {
        let unknown_action = || ScopeError::UnknownAction {
            scope: scope.to_string(),
            action: scope.action().to_owned(),
        };
        match (&scope.resource, &scope.action) {
            (Part::Any, Part::Any) => Ok(()),
            (Part::Any, Part::Name(a)) => {
                let known = self
                    .resources
                    .values()
                    .any(|actions| actions.contains(a.as_ref()));
                if known { Ok(()) } else { Err(unknown_action()) }
            }
            (Part::Name(r), action) => {
                let actions =
                    self.resources
                        .get(r.as_ref())
                        .ok_or_else(|| ScopeError::UnknownResource {
                            scope: scope.to_string(),
                            resource: r.to_string(),
                        })?;
                match action {
                    Part::Any => Ok(()),
                    Part::Name(a) if actions.contains(a.as_ref()) => Ok(()),
                    Part::Name(_) => Err(unknown_action()),
                }
            }
        }
    }

    /// Resources and their actions, in order (for pages and docs).
    pub fn resources(&self) -> impl Iterator<Item = (&str, impl Iterator<Item = &str>)> {
        self.resources
            .iter()
            .map(|(r, a)| (r.as_str(), a.iter().map(String::as_str)))
    }
}

impl Default for Catalog {
    fn default() -> Self {
        Self::sample()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(x: &str) -> Scope {
        Scope::parse(x).unwrap()
    }

    fn set(xs: &[&str]) -> Scopes {
        Scopes::parse(xs).unwrap()
    }

    #[test]
    fn parse_and_display_round_trip() {
        for x in [
            "droplet:read",
            "droplet:*",
            "*:read",
            "*:*",
            "my-res_2:do-it",
        ] {
            assert_eq!(s(x).to_string(), x);
        }
        for bad in [
            "",
            "droplet",
            ":read",
            "droplet:",
            "Droplet:read",
            "a:b:c",
            "drop let:read",
            "ü:read",
            "**:read",
        ] {
            assert!(Scope::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Scope::parse(&format!("{}:read", "a".repeat(65))).is_err());
    }

    #[test]
    fn a_normalized_set_drops_what_another_scope_covers() {
        let n = |xs: &[&str]| set(xs).normalized().to_string();
        assert_eq!(n(&["audit:*", "audit:read"]), "audit:*");
        assert_eq!(
            n(&["droplet:read", "*:read", "volume:create"]),
            "*:read volume:create"
        );
        assert_eq!(n(&["*:*", "tokens:issue", "droplet:read"]), "*:*");
        assert_eq!(n(&["droplet:*", "*:read"]), "*:read droplet:*");
        assert_eq!(n(&["droplet:read"]), "droplet:read");
        assert_eq!(n(&[]), "");
        // The same rights, both ways, and normalizing twice changes nothing.
        let full = set(&[
            "droplet:*",
            "droplet:read",
            "*:read",
            "volume:read",
            "audit:read",
        ]);
        let normal = full.normalized();
        assert!(normal.covers_all(&full) && full.covers_all(&normal));
        assert_eq!(normal.normalized(), normal);
    }

    #[test]
    fn check_known_refuses_only_what_the_catalog_lacks() {
        let catalog = Catalog::sample();
        assert!(catalog.check_known(&Scopes::default()).is_ok());
        assert!(
            catalog
                .check_known(&set(&["droplet:read", "*:read"]))
                .is_ok()
        );
        assert!(matches!(
            catalog.check_known(&set(&["dropplet:read"])),
            Err(ScopeError::UnknownResource { .. })
        ));
        assert!(matches!(
            catalog.check_known(&set(&["droplet:reed"])),
            Err(ScopeError::UnknownAction { .. })
        ));
    }

    #[test]
    fn wildcards_cover() {
        assert!(s("droplet:*").covers(&s("droplet:read")));
        assert!(s("*:read").covers(&s("volume:read")));
        assert!(s("*:*").covers(&s("droplet:*")));
        assert!(s("droplet:*").covers(&s("droplet:*")));
        assert!(!s("droplet:read").covers(&s("droplet:*")));
        assert!(!s("droplet:read").covers(&s("volume:read")));
        assert!(!s("*:read").covers(&s("droplet:create")));
        assert!(!s("droplet:*").covers(&s("*:read")));
    }

    #[test]
    fn sets_cover_and_report_what_is_missing() {
        let have = set(&["droplet:*", "volume:read"]);
        assert!(have.covers_all(&set(&["droplet:create", "volume:read"])));
        assert!(!have.covers_all(&set(&["volume:create"])));
        let wanted = set(&["volume:create", "droplet:read"]);
        let missing: Vec<String> = have
            .missing(&wanted)
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(missing, ["volume:create"]);
    }

    #[test]
    fn scopes_are_sorted_and_deduplicated() {
        let x = set(&["volume:read", "droplet:read", "volume:read"]);
        assert_eq!(x.to_string(), "droplet:read volume:read");
        assert_eq!(
            Scopes::parse_space_separated(" droplet:read  volume:read ").unwrap(),
            x
        );
    }

    #[test]
    fn catalog_refuses_unknown_names_and_keeps_reserved_ones() {
        let c = Catalog::sample();
        assert!(
            c.check(&set(&[
                "droplet:read",
                "tokens:create",
                "audit:read",
                "metrics:read",
                "*:read",
                "volume:*",
                "*:*"
            ]))
            .is_ok()
        );
        assert!(matches!(
            c.check(&set(&["dropplet:read"])),
            Err(ScopeError::UnknownResource { .. })
        ));
        assert!(matches!(
            c.check(&set(&["droplet:reed"])),
            Err(ScopeError::UnknownAction { .. })
        ));
        assert!(matches!(
            c.check(&set(&["*:fly"])),
            Err(ScopeError::UnknownAction { .. })
        ));
        assert!(matches!(
            c.check(&set(&["audit:delete"])),
            Err(ScopeError::UnknownAction { .. })
        ));
        assert!(matches!(
            c.check(&set(&["metrics:write"])),
            Err(ScopeError::UnknownAction { .. })
        ));
        assert_eq!(c.check(&Scopes::default()), Err(ScopeError::Empty));
        let many: Vec<String> = (0..65).map(|i| format!("r{i}:read")).collect();
        let big = Catalog::new(
            many.iter()
                .map(|s| {
                    (
                        s.split(':').next().unwrap().to_owned(),
                        vec!["read".to_owned()],
                    )
                })
                .collect(),
        )
        .unwrap();
        assert_eq!(
            big.check(&Scopes::parse(&many).unwrap()),
            Err(ScopeError::TooMany)
        );
    }

    #[test]
    fn introspection_is_a_reserved_scope_in_every_catalog() {
        let empty = Catalog::new(BTreeMap::new()).unwrap();
        for catalog in [Catalog::sample(), empty] {
            assert!(catalog.check(&set(&["tokens:introspect"])).is_ok());
            assert!(catalog.check(&set(&["*:introspect"])).is_ok());
        }
        assert!(s("tokens:*").covers(&s("tokens:introspect")));
        assert!(!s("tokens:read").covers(&s("tokens:introspect")));
        let reserved = Scope::reserved("tokens", "introspect");
        assert_eq!(reserved, s("tokens:introspect"));
        // A deployment cannot take a reserved name, nor add to it: its catalog is refused.
        for resource in ["tokens", "users", "audit", "metrics", "leaks"] {
            let custom: BTreeMap<String, Vec<String>> =
                [(resource.to_owned(), vec!["list".to_owned()])].into();
            assert_eq!(
                Catalog::new(custom).unwrap_err(),
                ScopeError::ReservedResource(resource.to_owned())
            );
        }
    }

    proptest! {
        /// What the `scopes` fuzz target checks, for `cargo test`: a scope has one spelling,
        /// so Display gives the input back; a set prints in the OAuth form and parses back;
        /// the catalog refuses with a reason, never as malformed.
        #[test]
        fn scopes_round_trip_through_their_display(text in "[a-z0-9*:_ -]{0,24}") {
            if let Ok(scope) = Scope::parse(&text) {
                prop_assert_eq!(scope.to_string(), text.clone());
                prop_assert!(scope.covers(&scope));
            }
            if let Ok(set) = Scopes::parse_space_separated(&text) {
                prop_assert_eq!(Scopes::parse_space_separated(&set.to_string()), Ok(set.clone()));
                prop_assert!(set.covers_all(&set));
                let checked = Catalog::sample().check(&set);
                prop_assert!(!matches!(checked, Err(ScopeError::Malformed(_))), "{:?}", checked);
            }
        }
    }

    #[test]
    fn every_reserved_scope_value_is_in_the_reserved_table_and_every_catalog() {
        let empty = Catalog::new(BTreeMap::new()).unwrap();
        for scope in [
            &*reserved::TOKENS_READ,
            &*reserved::TOKENS_CREATE,
            &*reserved::TOKENS_UPDATE,
            &*reserved::TOKENS_DELETE,
            &*reserved::TOKENS_INTROSPECT,
            &*reserved::AUDIT_READ,
            &*reserved::METRICS_READ,
            &*reserved::TOKENS_REVOKE_ANY,
            &*reserved::LEAKS_REPORT,
        ] {
            assert!(
                RESERVED.iter().any(|(resource, actions)| {
                    *resource == scope.resource() && actions.contains(&scope.action())
                }),
                "{scope}"
            );
            assert_eq!(&s(&scope.to_string()), scope);
            let alone = Scopes::new([scope.clone()]);
            assert!(empty.check(&alone).is_ok(), "{scope}");
        }
        assert!(s("metrics:*").covers(&reserved::METRICS_READ));
        assert!(!s("tokens:*").covers(&reserved::METRICS_READ));
    }

    #[test]
    fn catalog_refuses_bad_names_in_config() {
        let bad: BTreeMap<String, Vec<String>> =
            [("Droplet".to_owned(), vec!["read".to_owned()])].into();
        assert!(Catalog::new(bad).is_err());
        let wildcard: BTreeMap<String, Vec<String>> =
            [("droplet".to_owned(), vec!["*".to_owned()])].into();
        assert!(Catalog::new(wildcard).is_err());
    }
}
