//! Users: creating, reading, changing and deleting them, and issuing tokens for them — an
//! admin's or an operator's work (see [`Action::is_administrative`]). The platform does this over
//! HTTP with an admin's token holding `users:*` and `tokens:issue`; people do it on the admin
//! pages; operators at the command line.

use keyward_core::scope::reserved::is_administrative;
use keyward_core::{
    AuditEvent, AuditKind, Email, ExternalId, RawSecret, Scopes, User, UserId, UserKind, UserName,
};
use keyward_store::{NewUser, Revocation, UserFilter, UserUpdate};

use super::{Action, Caller, CallerKind, Keyward, MAX_PAGE, ServiceError, ServiceResult};

/// The reason a deleted user's tokens carry.
pub const OWNER_DELETED: &str = "owner deleted";

/// A user to create.
#[derive(Debug)]
pub struct UserRequest {
    /// The name (see [`UserName::parse_new`]).
    pub name: UserName,
    /// A person or a service account.
    pub kind: UserKind,
    /// Whether they manage users and may hold administrative scopes.
    pub admin: bool,
    /// The platform's id for them.
    pub external_id: Option<ExternalId>,
    /// Their email address.
    pub email: Option<Email>,
    /// A password for the web page (people only).
    pub password: Option<RawSecret>,
}

impl UserRequest {
    /// A person named `name`, not an admin, with nothing else.
    pub fn person(name: UserName) -> Self {
        Self {
            name,
            kind: UserKind::Person,
            admin: false,
            external_id: None,
            email: None,
            password: None,
        }
    }
}

/// A page of users, newest first.
#[derive(Debug, Clone)]
pub struct UserPage {
    /// The users.
    pub users: Vec<User>,
    /// Where the next page starts (pass it as `before`); `None` on the last page.
    pub next: Option<UserId>,
}

/// A change to a user; `None` leaves a field as it is.
pub type UserChanges = UserUpdate;

fn no_id_like_name(name: &UserName) -> ServiceResult<()> {
    if name.as_str().starts_with(UserId::PREFIX) {
        return Err(keyward_core::NameError::UserNameLikeId.into());
    }
    Ok(())
}

impl Keyward {
    /// Creates a user: a person (with a password when they will sign in to the web page) or a
    /// service account (never a password: it cannot sign in).
    pub async fn create_user(&self, caller: &Caller, request: UserRequest) -> ServiceResult<User> {
        caller.authorize(Action::CreateUser)?;
        no_id_like_name(&request.name)?;
        if request.kind == UserKind::Service && request.password.is_some() {
            return Err(ServiceError::Invalid(
                "a service account never signs in, so it cannot have a password",
            ));
        }
        let password_hash = match request.password {
            Some(password) => Some(self.passwords.hash(password).await?),
            None => None,
        };
        let now = self.now();
        let user = User {
            external_id: request.external_id,
            email: request.email,
            is_admin: request.admin,
            ..User::new(UserId::generate(now)?, request.name, request.kind, now)
        };
        let mut audit = self.audit(caller, AuditKind::UserAdded, now, &user.id, None);
        audit.detail = Some(format!(
            "{}{}{}",
            user.name,
            if user.kind == UserKind::Service {
                " (service account)"
            } else {
                ""
            },
            if user.is_admin { " (admin)" } else { "" }
        ));
        self.store
            .add_user(
                &NewUser {
                    user: user.clone(),
                    password_hash,
                },
                &audit,
            )
            .await?;
        tracing::info!(user = %user.name, admin = user.is_admin, kind = user.kind.as_str(), actor = %audit.actor.label, "user added");
        Ok(user)
    }

    /// A user by name.
    pub async fn user_by_name(&self, caller: &Caller, name: &UserName) -> ServiceResult<User> {
        caller.authorize(Action::ReadUsers)?;
        self.store
            .user_by_name(name)
            .await?
            .ok_or(ServiceError::NotFound)
    }

    /// A user by id.
    pub async fn user_by_id(&self, caller: &Caller, id: &UserId) -> ServiceResult<User> {
        caller.authorize(Action::ReadUsers)?;
        self.find_user(id).await
    }

    pub(super) async fn find_user(&self, id: &UserId) -> ServiceResult<User> {
        self.store
            .user_by_id(id)
            .await?
            .ok_or(ServiceError::NotFound)
    }

    /// A page of users, newest first, before `before`; only the one with `external_id` when
    /// given. `limit` is clamped to 1..=[`MAX_PAGE`].
    pub async fn list_users(
        &self,
        caller: &Caller,
        external_id: Option<ExternalId>,
        before: Option<UserId>,
        limit: u32,
    ) -> ServiceResult<UserPage> {
        caller.authorize(Action::ReadUsers)?;
        let limit = limit.clamp(1, MAX_PAGE);
        let users = self
            .store
            .list_users(&UserFilter {
                external_id,
                before,
                limit,
            })
            .await?;
        let full = u32::try_from(users.len()).is_ok_and(|n| n == limit);
        let next = users.last().filter(|_| full).map(|u| u.id.clone());
        Ok(UserPage { users, next })
    }

    /// Every user, page after page (for an operator's listing or a name lookup table).
    pub async fn all_users(&self, caller: &Caller) -> ServiceResult<Vec<User>> {
        let mut users = Vec::new();
        let mut before = None;
        loop {
            let page = self.list_users(caller, None, before, MAX_PAGE).await?;
            users.extend(page.users);
            match page.next {
                Some(next) => before = Some(next),
                None => return Ok(users),
            }
        }
    }

    /// Changes a user in one write: name, email, external id, admin flag, disabled. Nobody
    /// disables or demotes themselves (or the user whose token is acting), so an admin cannot
    /// lock the last door behind them by mistake.
    pub async fn update_user(
        &self,
        caller: &Caller,
        id: &UserId,
        changes: UserChanges,
    ) -> ServiceResult<User> {
        caller.authorize(Action::UpdateUser)?;
        if changes.is_empty() {
            return Err(ServiceError::Invalid("name at least one field to change"));
        }
        if let Some(name) = &changes.name {
            no_id_like_name(name)?;
        }
        if caller.user() == Some(id) {
            if changes.disabled == Some(true) {
                return Err(ServiceError::InvalidState("you cannot disable yourself"));
            }
            if changes.is_admin == Some(false) {
                return Err(ServiceError::InvalidState(
                    "you cannot remove your own admin rights; ask another admin",
                ));
            }
        }
        let current = self.find_user(id).await?;
        let now = self.now();
        let mut events = Vec::new();
        let mut changed = Vec::new();
        if let Some(name) = changes.name.as_ref().filter(|n| **n != current.name) {
            changed.push(format!("name {} → {}", current.name, name));
        }
        if changes
            .email
            .as_ref()
            .is_some_and(|email| *email != current.email)
        {
            changed.push("email".to_owned());
        }
        if changes
            .external_id
            .as_ref()
            .is_some_and(|external| *external != current.external_id)
        {
            changed.push("external id".to_owned());
        }
        if let Some(admin) = changes.is_admin.filter(|a| *a != current.is_admin) {
            changed.push(if admin { "made admin" } else { "admin removed" }.to_owned());
        }
        if !changed.is_empty() {
            let mut event = self.audit(caller, AuditKind::UserUpdated, now, id, None);
            event.detail = Some(format!("{}: {}", current.name, changed.join(", ")));
            events.push(event);
        }
        if let Some(disabled) = changes
            .disabled
            .filter(|d| *d != current.disabled_at.is_some())
        {
            let kind = if disabled {
                AuditKind::UserDisabled
            } else {
                AuditKind::UserEnabled
            };
            let mut event = self.audit(caller, kind, now, id, None);
            event.detail = Some(current.name.to_string());
            events.push(event);
        }
        let user = self.store.update_user(id, &changes, now, &events).await?;
        tracing::info!(user = %user.name, actor = %caller.actor().label, "user changed");
        Ok(user)
    }

    /// Disables a user: they cannot sign in, their sessions end, and their tokens stop verifying
    /// at once (`owner_disabled`) without being revoked, so [`Keyward::enable_user`] brings them
    /// back. Nobody can disable themselves.
    pub async fn disable_user(&self, caller: &Caller, id: &UserId) -> ServiceResult<User> {
        self.update_user(
            caller,
            id,
            UserChanges {
                disabled: Some(true),
                ..UserChanges::default()
            },
        )
        .await
    }

    /// Enables a disabled user again; their tokens that are neither revoked nor expired work
    /// again.
    pub async fn enable_user(&self, caller: &Caller, id: &UserId) -> ServiceResult<User> {
        self.update_user(
            caller,
            id,
            UserChanges {
                disabled: Some(false),
                ..UserChanges::default()
            },
        )
        .await
    }

    /// Sets a person's password (or removes it with `None`); their sessions end. A service
    /// account never has one.
    pub async fn set_password(
        &self,
        caller: &Caller,
        id: &UserId,
        password: Option<RawSecret>,
    ) -> ServiceResult<()> {
        caller.authorize(Action::UpdateUser)?;
        let user = self.find_user(id).await?;
        if user.kind == UserKind::Service && password.is_some() {
            return Err(ServiceError::Invalid(
                "a service account never signs in, so it cannot have a password",
            ));
        }
        let hash = match password {
            Some(password) => Some(self.passwords.hash(password).await?),
            None => None,
        };
        let now = self.now();
        let mut event = self.audit(caller, AuditKind::UserPasswordChanged, now, id, None);
        event.detail = Some(format!(
            "{}: password {}",
            user.name,
            if hash.is_some() { "set" } else { "removed" }
        ));
        self.store.set_password(id, hash.as_deref(), &event).await?;
        tracing::info!(user = %user.name, actor = %event.actor.label, "password changed");
        Ok(())
    }

    /// Deletes a user for good: every token of theirs is revoked at once, on every instance,
    /// with the reason [`OWNER_DELETED`]; their sessions end; the audit trail keeps their id.
    /// The name (and external id) may be used again; the id never is. Nobody deletes
    /// themselves.
    pub async fn delete_user(&self, caller: &Caller, id: &UserId) -> ServiceResult<User> {
        caller.authorize(Action::DeleteUser)?;
        if caller.user() == Some(id) {
            return Err(ServiceError::InvalidState("you cannot delete yourself"));
        }
        let now = self.now();
        let mut event: AuditEvent = self.audit(caller, AuditKind::UserDeleted, now, id, None);
        let revocation = Revocation {
            at: now,
            by: event.actor.label.clone(),
            reason: Some(OWNER_DELETED.to_owned()),
        };
        let current = self.find_user(id).await?;
        event.detail = Some(current.name.to_string());
        let user = self.store.delete_user(id, &revocation, &event).await?;
        tracing::info!(user = %user.name, user_id = %user.id, actor = %event.actor.label, "user deleted; their tokens revoked");
        Ok(user)
    }

    /// Refuses administrative scopes (`users:*`, `tokens:issue`) for a token whose owner is not
    /// an admin.
    pub(super) fn check_administrative(owner: &User, scopes: &Scopes) -> ServiceResult<()> {
        if !owner.is_admin && scopes.iter().any(is_administrative) {
            return Err(ServiceError::Forbidden(
                "users:* and tokens:issue can only be given to an admin's tokens",
            ));
        }
        Ok(())
    }

    /// Whether `caller` is an admin signed in to the web page (who reaches service accounts'
    /// tokens as well as their own).
    pub(super) fn is_admin_person(caller: &Caller) -> bool {
        matches!(caller.kind(), CallerKind::Person { admin: true, .. })
    }
}
