//! The authorization matrix, in one place: every use case of the service that takes a caller,
//! called by every kind of caller, against the answer the rules in `service::caller` give.
//!
//! The kinds: the operator at the command line; alice, a person signed in to the web page;
//! root, an admin signed in; a token of alice's holding every reserved scope; a token of
//! alice's holding none of them; and a token of alice's whose secret was replaced by a regeneration and
//! is in its grace period. "Own" targets belong to alice — the person's and the tokens' own,
//! another user's for the admin (an admin manages users, not their tokens); "other" targets
//! belong to bob. Each cell runs against fresh targets and a fresh caller token, so no cell's
//! effect decides another's answer.

use keyward_core::{Email, RawSecret, Scopes, TokenId, TokenName, User, UserId, UserName};
use keyward_server::service::{
    Action, BulkRevokeRequest, CallerKind, Leak, LeakVerdict, RegenerateOptions, SecretRevocation,
    ServiceError, ServiceResult, SignIn, UserChanges, UserRequest,
};
use keyward_server::{Caller, Keyward};
use time::Duration;

use crate::helpers::{Minted, TestApp, spawn_app};

/// Every reserved scope, and the one the targets hold.
const EVERYTHING: &[&str] = &[
    "tokens:*",
    "audit:read",
    "metrics:read",
    "leaks:report",
    "droplet:read",
];
/// Every reserved scope an admin's token may hold, the administrative ones included.
const ADMIN_EVERYTHING: &[&str] = &[
    "tokens:*",
    "users:*",
    "events:read",
    "webhooks:read",
    "audit:read",
    "metrics:read",
    "leaks:report",
    "droplet:read",
];
/// A token must hold a scope: this one is of the deployment's catalog, not keyward's own.
const NO_RESERVED: &[&str] = &["droplet:read"];
const PASSWORD: &str = "correct horse battery staple";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Operator,
    Person,
    Admin,
    TokenAll,
    TokenNone,
    TokenGrace,
    AdminTokenAll,
    AdminTokenNone,
}

const KINDS: [Kind; 8] = [
    Kind::Operator,
    Kind::Person,
    Kind::Admin,
    Kind::TokenAll,
    Kind::TokenNone,
    Kind::TokenGrace,
    Kind::AdminTokenAll,
    Kind::AdminTokenNone,
];

/// The answer of one call, by name.
fn outcome<T>(result: ServiceResult<T>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(ServiceError::NotFound) => "not_found",
        Err(ServiceError::Forbidden(_)) => "forbidden",
        Err(ServiceError::MissingScope { .. }) => "missing_scope",
        Err(ServiceError::RotatedOut) => "rotated_out",
        Err(ServiceError::NotPermitted(_)) => "not_permitted",
        Err(ServiceError::ScopeCeiling { .. }) => "scope_ceiling",
        Err(other) => panic!("unexpected error in the matrix: {other:?}"),
    }
}

struct World {
    app: TestApp,
    alice: User,
    bob: User,
    root: User,
    person: Caller,
    admin: Caller,
}

impl World {
    async fn new() -> Self {
        let app = spawn_app().await;
        let kw = &app.keyward;
        let op = Caller::operator("test");
        let password = RawSecret::new(PASSWORD.to_owned());
        let add = |name: &'static str, admin: bool| {
            let op = op.clone();
            let password = &password;
            async move {
                let request = UserRequest {
                    admin,
                    password: Some(RawSecret::new(password.expose().to_owned())),
                    ..UserRequest::person(UserName::parse(name).unwrap())
                };
                kw.create_user(&op, request).await.unwrap()
            }
        };
        let alice = add("alice", false).await;
        let bob = add("bob", false).await;
        let root = add("root", true).await;
        let person = signed_in(kw, "alice").await;
        let admin = signed_in(kw, "root").await;
        Self {
            app,
            alice,
            bob,
            root,
            person,
            admin,
        }
    }

    fn kw(&self) -> &Keyward {
        &self.app.keyward
    }

    /// A fresh token of `user`'s, made by the operator.
    async fn target(&self, user: &User) -> Minted {
        self.app.token(user, &["droplet:read"]).await
    }

    /// A fresh caller of `kind` (a new token for the token kinds).
    async fn caller(&self, kind: Kind) -> Caller {
        match kind {
            Kind::Operator => Caller::operator("test"),
            Kind::Person => self.person.clone(),
            Kind::Admin => self.admin.clone(),
            Kind::TokenAll => self.token_caller(EVERYTHING).await,
            Kind::TokenNone => self.token_caller(NO_RESERVED).await,
            Kind::AdminTokenAll => self.token_caller_of(&self.root, ADMIN_EVERYTHING).await,
            Kind::AdminTokenNone => self.token_caller_of(&self.root, NO_RESERVED).await,
            Kind::TokenGrace => {
                let minted = self.app.token(&self.alice, EVERYTHING).await;
                self.kw()
                    .regenerate_token(
                        &Caller::operator("test"),
                        &TokenId::parse(&minted.id).unwrap(),
                        RegenerateOptions {
                            grace: Some(Duration::minutes(10)),
                            expires: None,
                        },
                    )
                    .await
                    .unwrap();
                let caller = self
                    .kw()
                    .identify(Some(&minted.secret), None)
                    .await
                    .unwrap();
                assert!(matches!(caller.kind(), CallerKind::Token(t) if t.in_grace));
                caller
            }
        }
    }

    async fn token_caller(&self, scopes: &[&str]) -> Caller {
        self.token_caller_of(&self.alice, scopes).await
    }

    async fn token_caller_of(&self, user: &User, scopes: &[&str]) -> Caller {
        let minted = self.app.token(user, scopes).await;
        self.kw()
            .identify(Some(&minted.secret), None)
            .await
            .unwrap()
    }
}

async fn signed_in(kw: &Keyward, name: &str) -> Caller {
    let SignIn::Ok { secret, .. } = kw
        .sign_in(name, RawSecret::new(PASSWORD.to_owned()), None)
        .await
        .unwrap()
    else {
        panic!("{name} could not sign in");
    };
    let session = kw.web_session(secret.expose()).await.unwrap().unwrap();
    session.caller(None)
}

/// One row of the matrix: a use case against an own or an other's target.
#[derive(Debug, Clone, Copy)]
enum Call {
    CreateToken {
        for_other: bool,
    },
    /// A token with an administrative scope, for the caller's own user.
    CreateAdministrativeToken,
    GetToken {
        other: bool,
    },
    OwnToken,
    ListTokens {
        of_other: bool,
    },
    RenameToken {
        other: bool,
    },
    RegenerateToken {
        other: bool,
    },
    RegenerateOwnToken,
    RevokeToken {
        other: bool,
    },
    AuditEvents {
        of_other: bool,
    },
    AddUser,
    UserByName,
    UserById,
    ListUsers,
    DisableUser,
    EnableUser,
    UpdateUser,
    DeleteUser,
    IssueToken,
    ResetServerKey,
    Introspect,
    RevokeBySecret {
        other: bool,
    },
    /// `/metrics` when the deployment requires a token asks the rule directly.
    ReadMetrics,
    Events,
    WebhookDeliveries,
    /// A bulk revocation of bob's tokens (its dry run: the same rule, and nothing revoked that
    /// another cell needs).
    BulkRevoke,
    /// Reporting a secret of bob's as leaked.
    ReportLeak,
}

impl World {
    async fn call(&self, call: Call, caller: &Caller) -> &'static str {
        let kw = self.kw();
        let owner = |other: bool| if other { &self.bob } else { &self.alice };
        let target_id = |minted: &Minted| TokenId::parse(&minted.id).unwrap();
        let name = || TokenName::parse("matrix").unwrap();
        match call {
            Call::CreateToken { for_other } => {
                // The operator must name an owner; the others make their own unless told whose.
                let whose: Option<&UserId> = match (caller.kind(), for_other) {
                    (_, true) => Some(&self.bob.id),
                    (CallerKind::Operator { .. }, false) => Some(&self.alice.id),
                    (_, false) => None,
                };
                let scopes = Scopes::parse(&["tokens:read"]).unwrap();
                outcome(
                    kw.create_token(
                        caller,
                        whose,
                        name(),
                        scopes,
                        None,
                        keyward_core::Limits::default(),
                    )
                    .await,
                )
            }
            Call::CreateAdministrativeToken => {
                let whose =
                    matches!(caller.kind(), CallerKind::Operator { .. }).then_some(&self.alice.id);
                let scopes = Scopes::parse(&["users:read"]).unwrap();
                outcome(
                    kw.create_token(
                        caller,
                        whose,
                        name(),
                        scopes,
                        None,
                        keyward_core::Limits::default(),
                    )
                    .await,
                )
            }
            Call::GetToken { other } => {
                let t = self.target(owner(other)).await;
                outcome(kw.get_token(caller, &target_id(&t)).await)
            }
            Call::OwnToken => outcome(kw.own_token(caller).await),
            Call::ListTokens { of_other } => {
                let whose = of_other.then_some(&self.bob.id);
                outcome(kw.list_tokens(caller, whose, None, 10).await)
            }
            Call::RenameToken { other } => {
                let t = self.target(owner(other)).await;
                outcome(kw.rename_token(caller, &target_id(&t), name()).await)
            }
            Call::RegenerateToken { other } => {
                let t = self.target(owner(other)).await;
                let options = RegenerateOptions::default();
                outcome(kw.regenerate_token(caller, &target_id(&t), options).await)
            }
            Call::RegenerateOwnToken => outcome(
                kw.regenerate_own_token(caller, RegenerateOptions::default())
                    .await,
            ),
            Call::RevokeToken { other } => {
                let t = self.target(owner(other)).await;
                outcome(kw.revoke_token(caller, &target_id(&t), None).await)
            }
            Call::AuditEvents { of_other } => {
                let whose = of_other.then_some(&self.bob.id);
                outcome(kw.audit_events(caller, whose, None, 10).await)
            }
            Call::AddUser => {
                let name = UserName::parse(&format!("new-{}", unique_suffix())).unwrap();
                outcome(kw.create_user(caller, UserRequest::person(name)).await)
            }
            Call::UserByName => outcome(
                kw.user_by_name(caller, &UserName::parse("bob").unwrap())
                    .await,
            ),
            Call::UserById => outcome(kw.user_by_id(caller, &self.bob.id).await),
            Call::ListUsers => outcome(kw.list_users(caller, None, None, 10).await),
            Call::DisableUser => {
                let answer = outcome(kw.disable_user(caller, &self.bob.id).await);
                // Leave bob enabled for the next cell.
                kw.enable_user(&Caller::operator("test"), &self.bob.id)
                    .await
                    .unwrap();
                answer
            }
            Call::EnableUser => {
                kw.disable_user(&Caller::operator("test"), &self.bob.id)
                    .await
                    .unwrap();
                let answer = outcome(kw.enable_user(caller, &self.bob.id).await);
                // Leave bob enabled for the next cell.
                kw.enable_user(&Caller::operator("test"), &self.bob.id)
                    .await
                    .unwrap();
                answer
            }
            Call::UpdateUser => {
                let changes = UserChanges {
                    email: Some(Some(Email::parse("bob@example.com").unwrap())),
                    ..UserChanges::default()
                };
                outcome(kw.update_user(caller, &self.bob.id, changes).await)
            }
            Call::DeleteUser => {
                let name = UserName::parse(&format!("gone-{}", unique_suffix())).unwrap();
                let doomed = kw
                    .create_user(&Caller::operator("test"), UserRequest::person(name))
                    .await
                    .unwrap();
                outcome(kw.delete_user(caller, &doomed.id).await)
            }
            Call::IssueToken => {
                let scopes = Scopes::parse(&["droplet:read"]).unwrap();
                outcome(
                    kw.issue_token(
                        caller,
                        &self.bob.id,
                        name(),
                        scopes,
                        None,
                        keyward_core::Limits::default(),
                    )
                    .await,
                )
            }
            Call::ResetServerKey => outcome(kw.reset_server_key(caller).await),
            Call::Introspect => {
                let t = self.target(&self.bob).await;
                outcome(kw.introspect(caller, &t.secret).await)
            }
            Call::ReadMetrics => outcome(caller.authorize(Action::ReadMetrics)),
            Call::Events => outcome(kw.events(caller, None, 10).await),
            Call::WebhookDeliveries => outcome(kw.webhook_deliveries(caller, None, 10).await),
            Call::BulkRevoke => {
                let request = BulkRevokeRequest {
                    user: Some("bob".to_owned()),
                    ..BulkRevokeRequest::default()
                };
                outcome(kw.bulk_revoke_preview(caller, &request).await)
            }
            Call::ReportLeak => {
                let t = self.target(&self.bob).await;
                let leak = Leak {
                    secret: RawSecret::new(t.secret.clone()),
                    url: None,
                    source: None,
                };
                let answer = kw.report_leaks(caller, &[leak]).await;
                if let Ok(done) = &answer {
                    assert!(matches!(done[..], [LeakVerdict::Revoked(_)]), "{done:?}");
                }
                outcome(answer)
            }
            Call::RevokeBySecret { other } => {
                let t = self.target(owner(other)).await;
                let answer = kw.revoke_by_secret(caller, &t.secret).await;
                if let Ok(done) = &answer {
                    assert!(matches!(done, SecretRevocation::Revoked(_)), "{done:?}");
                }
                outcome(answer)
            }
        }
    }
}

/// A name suffix no earlier cell used.
fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed).to_string()
}

/// The matrix: for each use case, the answer for each kind of caller, in the order of `KINDS`:
/// operator, person, admin, a person's token with every reserved scope, with none, in grace, an
/// admin's token with every reserved scope (the administrative ones too), and with none.
/// `OWN` rows act on the caller's own tokens; `ALICES` rows on a token of alice's.
const MATRIX: &[(Call, [&str; 8])] = {
    const OWN: [&str; 8] = [
        "ok",
        "ok",
        "ok",
        "ok",
        "missing_scope",
        "rotated_out",
        "ok",
        "missing_scope",
    ];
    const ALICES: [&str; 8] = [
        "ok",
        "ok",
        "not_found",
        "ok",
        "missing_scope",
        "rotated_out",
        "not_found",
        "missing_scope",
    ];
    const OTHER: [&str; 8] = [
        "ok",
        "not_found",
        "not_found",
        "not_found",
        "missing_scope",
        "rotated_out",
        "not_found",
        "missing_scope",
    ];
    const SELF_ONLY: [&str; 8] = [
        "forbidden",
        "forbidden",
        "forbidden",
        "ok",
        "ok",
        "rotated_out",
        "ok",
        "ok",
    ];
    // A non-admin's token lacks an administrative scope even under a wildcard (`tokens:*`).
    const ADMINS: [&str; 8] = [
        "ok",
        "forbidden",
        "ok",
        "missing_scope",
        "missing_scope",
        "rotated_out",
        "ok",
        "missing_scope",
    ];
    &[
        (Call::CreateToken { for_other: false }, OWN),
        (Call::CreateToken { for_other: true }, OTHER),
        (
            Call::CreateAdministrativeToken,
            [
                "forbidden",
                "forbidden",
                "ok",
                "scope_ceiling",
                "missing_scope",
                "rotated_out",
                "ok",
                "missing_scope",
            ],
        ),
        (Call::GetToken { other: false }, ALICES),
        (Call::GetToken { other: true }, OTHER),
        (Call::OwnToken, SELF_ONLY),
        (Call::ListTokens { of_other: false }, OWN),
        (Call::ListTokens { of_other: true }, OTHER),
        (Call::RenameToken { other: false }, ALICES),
        (Call::RenameToken { other: true }, OTHER),
        (Call::RegenerateToken { other: false }, ALICES),
        (Call::RegenerateToken { other: true }, OTHER),
        (Call::RegenerateOwnToken, SELF_ONLY),
        (Call::RevokeToken { other: false }, ALICES),
        (Call::RevokeToken { other: true }, OTHER),
        (Call::AuditEvents { of_other: false }, OWN),
        (Call::AuditEvents { of_other: true }, OTHER),
        (Call::AddUser, ADMINS),
        (Call::UserByName, ADMINS),
        (Call::UserById, ADMINS),
        (Call::ListUsers, ADMINS),
        (Call::DisableUser, ADMINS),
        (Call::EnableUser, ADMINS),
        (Call::UpdateUser, ADMINS),
        (Call::DeleteUser, ADMINS),
        (Call::IssueToken, ADMINS),
        // Events and deliveries cover every user: an admin's.
        (Call::Events, ADMINS),
        (Call::WebhookDeliveries, ADMINS),
        (Call::BulkRevoke, ADMINS),
        // Holding the secret is the right: anyone's token, by anyone allowed to report.
        (Call::ReportLeak, OWN),
        // Whoever holds the data dir holds the key; nobody else may drop tokens for it.
        (
            Call::ResetServerKey,
            [
                "ok",
                "forbidden",
                "forbidden",
                "forbidden",
                "forbidden",
                "forbidden",
                "forbidden",
                "forbidden",
            ],
        ),
        (
            Call::Introspect,
            [
                "ok",
                "forbidden",
                "forbidden",
                "ok",
                "missing_scope",
                "rotated_out",
                "ok",
                "missing_scope",
            ],
        ),
        (
            Call::RevokeBySecret { other: false },
            [
                "ok",
                "ok",
                "not_permitted",
                "ok",
                "not_permitted",
                "rotated_out",
                "not_permitted",
                "not_permitted",
            ],
        ),
        (
            Call::RevokeBySecret { other: true },
            [
                "ok",
                "not_permitted",
                "not_permitted",
                "not_permitted",
                "not_permitted",
                "rotated_out",
                "not_permitted",
                "not_permitted",
            ],
        ),
        (
            Call::ReadMetrics,
            [
                "ok",
                "forbidden",
                "ok",
                "ok",
                "missing_scope",
                "rotated_out",
                "ok",
                "missing_scope",
            ],
        ),
    ]
};

#[tokio::test]
async fn every_use_case_answers_every_kind_of_caller_as_the_rules_say() {
    let world = World::new().await;
    let mut wrong = Vec::new();
    for (call, expected) in MATRIX {
        for (kind, expected) in KINDS.iter().zip(expected) {
            let caller = world.caller(*kind).await;
            let got = world.call(*call, &caller).await;
            if got != *expected {
                wrong.push(format!(
                    "{call:?} by {kind:?}: expected {expected}, got {got}"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test]
async fn a_token_revokes_itself_by_secret_without_any_scope() {
    let world = World::new().await;
    let minted = world.app.token(&world.alice, NO_RESERVED).await;
    let caller = world
        .kw()
        .identify(Some(&minted.secret), None)
        .await
        .unwrap();
    let done = world.kw().revoke_by_secret(&caller, &minted.secret).await;
    assert!(matches!(done, Ok(SecretRevocation::Revoked(_))), "{done:?}");
}

#[tokio::test]
async fn a_person_who_is_not_an_admin_cannot_add_users() {
    // A person who is not an admin, with a valid session, is refused by the service itself:
    // nothing outside it (an extractor, a handler) has to remember to check.
    let world = World::new().await;
    let answer = world
        .kw()
        .create_user(
            &world.person,
            UserRequest {
                admin: true,
                ..UserRequest::person(UserName::parse("mallory").unwrap())
            },
        )
        .await;
    assert_eq!(outcome(answer), "forbidden");
    assert!(
        world
            .kw()
            .all_users(&Caller::operator("test"))
            .await
            .unwrap()
            .iter()
            .all(|u| u.name.as_str() != "mallory")
    );
}
