//! What the gateway interfaces need from the service: forward-auth's route table and
//! authorisation, RFC 7662 introspection, and RFC 7009 revocation by secret.
//!
//! All three go through [`Keyward::verify`], the cached hot path, so they cost what a
//! `/v1/verify` costs and see a revocation on their very next call.

use keyward_core::{InactiveReason, Scopes, TokenRecord, format};
use std::net::IpAddr;

use super::{Acting, Keyward, ServiceError, ServiceResult, Verdict, VerifiedToken};

use keyward_core::scope::reserved::TOKENS_DELETE;
/// The scope a caller of RFC 7662 introspection needs.
pub use keyward_core::scope::reserved::TOKENS_INTROSPECT;

/// The audit reason of a revocation through `POST /oauth/revoke`.
pub const RFC7009_REASON: &str = "RFC 7009 revocation";

/// Why a forward-auth route is refused at start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The method is neither `*` nor an HTTP method name.
    #[error("method {0:?} is not an HTTP method or \"*\"")]
    Method(String),
    /// The path prefix does not start with `/` or holds a query or fragment.
    #[error("path_prefix {0:?} must start with '/' and hold no '?' or '#'")]
    Path(String),
    /// A route names no scope (leave the route out for authentication only).
    #[error("a route needs at least one scope")]
    NoScopes,
}

/// One row of the forward-auth route table: requests with this method (or any) under this
/// path prefix need these scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardAuthRoute {
    /// Upper-case method name; `None` for `*`.
    method: Option<String>,
    path_prefix: String,
    scopes: Scopes,
}

impl ForwardAuthRoute {
    /// A route for `method` (`"GET"`, case-insensitive, or `"*"` for any) under `path_prefix`
    /// (starts with `/`; matched on whole path segments).
    pub fn new(method: &str, path_prefix: &str, scopes: Scopes) -> Result<Self, RouteError> {
        let method = match method {
            "*" => None,
            m if !m.is_empty() && m.len() <= 32 && m.bytes().all(|b| b.is_ascii_alphabetic()) => {
                Some(m.to_ascii_uppercase())
            }
            m => return Err(RouteError::Method(m.chars().take(40).collect())),
        };
        if !path_prefix.starts_with('/') || path_prefix.contains(['?', '#']) {
            return Err(RouteError::Path(path_prefix.chars().take(200).collect()));
        }
        if scopes.is_empty() {
            return Err(RouteError::NoScopes);
        }
        Ok(Self {
            method,
            path_prefix: path_prefix.to_owned(),
            scopes,
        })
    }

    /// The scopes this route needs.
    pub fn scopes(&self) -> &Scopes {
        &self.scopes
    }

    /// Whether `path` lies under the prefix on a segment boundary: `/droplets` matches
    /// `/droplets` and `/droplets/7`, not `/dropletsx`.
    fn matches_path(&self, path: &str) -> bool {
        match path.strip_prefix(self.path_prefix.as_str()) {
            Some(rest) => {
                rest.is_empty() || self.path_prefix.ends_with('/') || rest.starts_with('/')
            }
            None => false,
        }
    }
}

/// The forward-auth route table: which scopes a proxied request needs, by method and path, so
/// a proxy config need not repeat them. Longest matching prefix wins; on equal prefixes a route
/// naming the method wins over `*`. A request no route matches needs authentication only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardAuthRoutes(Vec<ForwardAuthRoute>);

impl ForwardAuthRoutes {
    /// A table of these routes.
    pub fn new(routes: Vec<ForwardAuthRoute>) -> Self {
        Self(routes)
    }

    /// The routes, as configured.
    pub fn routes(&self) -> &[ForwardAuthRoute] {
        &self.0
    }

    /// The scopes `method` on `uri` (a path, possibly with a query) needs, if a route matches.
    pub fn required(&self, method: &str, uri: &str) -> Option<&Scopes> {
        let path = uri.split(['?', '#']).next().unwrap_or("");
        self.0
            .iter()
            .filter(|r| {
                r.method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method))
            })
            .filter(|r| r.matches_path(path))
            .max_by_key(|r| (r.path_prefix.len(), r.method.is_some()))
            .map(|r| &r.scopes)
    }
}

/// What `POST /oauth/revoke` did.
#[derive(Debug)]
pub enum SecretRevocation {
    /// The token was revoked now.
    Revoked(Box<TokenRecord>),
    /// It was already revoked: nothing changed.
    AlreadyRevoked,
    /// The text names no token (malformed or unknown): nothing to do (RFC 7009 §2.2).
    NoSuchToken,
}

impl Keyward {
    /// Forward-auth and the library's layer: `bearer` must be an active token granting every
    /// scope of `wanted`; answers with what `f` makes of the token (see
    /// [`Keyward::verify_with`]: `f` must be short and must not call into `Keyward`). The hot path: one format check, one keyed hash, one cache
    /// lookup.
    pub async fn authorize<R>(
        &self,
        bearer: Option<&str>,
        wanted: &Scopes,
        ip: Option<IpAddr>,
        f: impl FnOnce(&VerifiedToken) -> R,
    ) -> ServiceResult<R> {
        let secret = bearer.ok_or(ServiceError::Unauthenticated(None))?;
        match self.verify_with(secret, wanted, ip, f).await? {
            Ok(answer) => Ok(answer),
            Err(InactiveReason::InsufficientScope) => Err(ServiceError::MissingScope {
                needed: wanted.to_string(),
            }),
            Err(reason) => Err(ServiceError::Unauthenticated(Some(reason))),
        }
    }

    /// Authenticates a caller of RFC 7662 introspection: an active token with
    /// `tokens:introspect`.
    pub async fn authenticate_introspector(
        &self,
        credential: Option<&str>,
        ip: Option<IpAddr>,
    ) -> ServiceResult<Acting> {
        self.authenticate(credential, Some(&TOKENS_INTROSPECT), ip)
            .await
    }

    /// RFC 7662: the token `secret` names if it is active, else `None` (whatever the reason:
    /// the RFC answers every inactive token alike). A successful introspection counts as a use
    /// of the token, like any verification.
    pub async fn introspect(
        &self,
        secret: &str,
        ip: Option<IpAddr>,
    ) -> ServiceResult<Option<VerifiedToken>> {
        Ok(match self.verify(secret, &Scopes::default(), ip).await? {
            Verdict::Active(token) => Some(token),
            Verdict::Inactive(_) => None,
        })
    }

    /// RFC 7009: revokes the token `secret` belongs to. The caller (`acting`) must be that
    /// token itself, or act for the same owner with `tokens:delete` (an operator may revoke
    /// any). Malformed, unknown and already revoked secrets change nothing and are not errors
    /// (§2.2); another owner's token is refused without revoking it.
    pub async fn revoke_by_secret(
        &self,
        acting: &Acting,
        secret: &str,
    ) -> ServiceResult<SecretRevocation> {
        if format::validate(secret).is_err() {
            return Ok(SecretRevocation::NoSuchToken);
        }
        let hash = self.hasher.hash_str(secret);
        // From the store, not the cache: a revocation acts on the record as it is now.
        let Some(found) = self.store.lookup(&hash).await? else {
            return Ok(SecretRevocation::NoSuchToken);
        };
        let token = found.token;
        let is_self = acting.token() == Some(&token.id);
        match &acting.within {
            Some(owner) if *owner != token.owner => {
                return Err(ServiceError::NotPermitted(
                    "this token belongs to another user",
                ));
            }
            Some(_)
                if !is_self
                    && !acting
                        .ceiling
                        .as_ref()
                        .is_some_and(|c| c.covers(&TOKENS_DELETE)) =>
            {
                return Err(ServiceError::NotPermitted(
                    "revoking another token needs the scope tokens:delete",
                ));
            }
            _ => {}
        }
        if token.revoked_at.is_some() {
            return Ok(SecretRevocation::AlreadyRevoked);
        }
        let record = self
            .revoke_token(acting, &token.id, Some(RFC7009_REASON.to_owned()))
            .await?;
        Ok(SecretRevocation::Revoked(Box::new(record)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: &str, prefix: &str, scopes: &[&str]) -> ForwardAuthRoute {
        ForwardAuthRoute::new(method, prefix, Scopes::parse(scopes).unwrap()).unwrap()
    }

    fn required(table: &ForwardAuthRoutes, method: &str, uri: &str) -> Option<String> {
        table.required(method, uri).map(ToString::to_string)
    }

    #[test]
    fn the_longest_prefix_wins_and_a_named_method_beats_any() {
        let table = ForwardAuthRoutes::new(vec![
            route("*", "/", &["account:read"]),
            route("GET", "/droplets", &["droplet:read"]),
            route("*", "/droplets", &["droplet:update"]),
            route("delete", "/droplets/", &["droplet:delete"]),
            route("GET", "/droplets/archive", &["volume:read"]),
        ]);
        let r = |m, u| required(&table, m, u);
        assert_eq!(r("GET", "/droplets").as_deref(), Some("droplet:read"));
        assert_eq!(
            r("get", "/droplets?page=2").as_deref(),
            Some("droplet:read")
        );
        assert_eq!(r("POST", "/droplets").as_deref(), Some("droplet:update"));
        assert_eq!(
            r("DELETE", "/droplets/7").as_deref(),
            Some("droplet:delete")
        );
        assert_eq!(r("GET", "/droplets/7").as_deref(), Some("droplet:read"));
        assert_eq!(
            r("GET", "/droplets/archive/1").as_deref(),
            Some("volume:read")
        );
        // Segment boundaries: `/dropletsx` is not under `/droplets`.
        assert_eq!(r("GET", "/dropletsx").as_deref(), Some("account:read"));
        assert_eq!(r("GET", "/").as_deref(), Some("account:read"));
    }

    #[test]
    fn no_matching_route_means_authentication_only() {
        let table = ForwardAuthRoutes::new(vec![route("GET", "/droplets", &["droplet:read"])]);
        assert_eq!(table.required("POST", "/droplets"), None);
        assert_eq!(table.required("GET", "/volumes"), None);
        assert_eq!(ForwardAuthRoutes::default().required("GET", "/"), None);
    }

    #[test]
    fn bad_routes_are_refused() {
        let scopes = Scopes::parse(&["droplet:read"]).unwrap();
        for (method, prefix) in [
            ("GET POST", "/a"),
            ("", "/a"),
            ("G3T", "/a"),
            ("GET", "a"),
            ("GET", "/a?b"),
        ] {
            assert!(
                ForwardAuthRoute::new(method, prefix, scopes.clone()).is_err(),
                "{method:?} {prefix:?}"
            );
        }
        assert_eq!(
            ForwardAuthRoute::new("GET", "/a", Scopes::default()),
            Err(RouteError::NoScopes)
        );
    }
}
