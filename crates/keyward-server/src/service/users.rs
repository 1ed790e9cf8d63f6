//! Users: adding them, reading them, disabling and enabling them — an admin's or an
//! operator's work (see [`Action::AddUser`], [`Action::ReadUsers`], [`Action::ManageUsers`]).

use keyward_core::{AuditKind, RawSecret, User, UserId, UserName};
use keyward_store::NewUser;

use super::{Action, Caller, Keyward, ServiceError, ServiceResult};

impl Keyward {
    /// Adds a user, with a password when they will sign in to the web page.
    pub async fn add_user(
        &self,
        caller: &Caller,
        name: UserName,
        is_admin: bool,
        password: Option<&RawSecret>,
    ) -> ServiceResult<User> {
        caller.authorize(Action::AddUser)?;
        let password_hash = match password {
            Some(password) => Some(
                self.passwords
                    .hash(RawSecret::new(password.expose().to_owned()))
                    .await?,
            ),
            None => None,
        };
        let now = self.now();
        let user = User {
            id: UserId::generate(now)?,
            name,
            is_admin,
            created_at: now,
            disabled_at: None,
        };
        let mut audit = self.audit(caller, AuditKind::UserAdded, now, &user.id, None);
        audit.detail = Some(format!(
            "{}{}",
            user.name,
            if is_admin { " (admin)" } else { "" }
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
        tracing::info!(user = %user.name, admin = is_admin, actor = %audit.actor.label, "user added");
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

    async fn find_user(&self, id: &UserId) -> ServiceResult<User> {
        self.store
            .user_by_id(id)
            .await?
            .ok_or(ServiceError::NotFound)
    }

    /// All users.
    pub async fn list_users(&self, caller: &Caller) -> ServiceResult<Vec<User>> {
        caller.authorize(Action::ReadUsers)?;
        Ok(self.store.list_users().await?)
    }

    /// Disables a user: they cannot sign in, their sessions end, and their tokens stop verifying
    /// at once (`owner_disabled`) without being revoked, so [`Keyward::enable_user`] brings them
    /// back. Nobody can disable themselves.
    pub async fn disable_user(&self, caller: &Caller, id: &UserId) -> ServiceResult<User> {
        caller.authorize(Action::ManageUsers)?;
        if caller.user() == Some(id) {
            return Err(ServiceError::InvalidState("you cannot disable yourself"));
        }
        self.set_disabled(caller, id, true).await
    }

    /// Enables a disabled user again; their tokens that are neither revoked nor expired work
    /// again.
    pub async fn enable_user(&self, caller: &Caller, id: &UserId) -> ServiceResult<User> {
        caller.authorize(Action::ManageUsers)?;
        self.set_disabled(caller, id, false).await
    }

    async fn set_disabled(
        &self,
        caller: &Caller,
        id: &UserId,
        disabled: bool,
    ) -> ServiceResult<User> {
        let now = self.now();
        let kind = if disabled {
            AuditKind::UserDisabled
        } else {
            AuditKind::UserEnabled
        };
        let user = self.find_user(id).await?;
        let mut event = self.audit(caller, kind, now, id, None);
        event.detail = Some(user.name.to_string());
        let user = self
            .store
            .set_user_disabled(id, disabled, now, &event)
            .await?;
        tracing::info!(user = %user.name, disabled, actor = %event.actor.label, "user disabled or enabled");
        Ok(user)
    }
}
