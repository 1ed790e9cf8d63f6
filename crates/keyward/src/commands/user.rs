//! `keyward user ...`: add, show, list, disable, enable, delete users; set passwords and the
//! admin flag.

use super::output::{Table, time_or};
use super::{Ctx, describe, print, print_json, read_new_password, shown};
use crate::cli::UserCommand;
use anyhow::Context as _;
use keyward::{RawSecret, UserName};
use keyward_core::{Email, ExternalId, User, UserId, UserKind};
use keyward_server::ServiceError;
use keyward_server::service::{UserChanges, UserRequest};
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::process::ExitCode;

/// The user named by `text`: an id (`usr_…`) or a name.
pub(super) async fn find(ctx: &Ctx, text: &str) -> anyhow::Result<User> {
    let not_found = || format!("no such user: {}", shown(text));
    let found = match UserId::parse(text) {
        Ok(id) => ctx.keyward.user_by_id(&ctx.caller, &id).await,
        Err(_) => {
            let name = UserName::parse(text).map_err(|_| anyhow::anyhow!(not_found()))?;
            ctx.keyward.user_by_name(&ctx.caller, &name).await
        }
    };
    found.map_err(|e| describe(e, not_found))
}

/// A new password from stdin: typed twice without echo on a terminal, a pipe's first line.
fn password_from_stdin() -> anyhow::Result<RawSecret> {
    // Moved, not copied: the buffer goes from one zeroizing owner to the next.
    let mut line = read_new_password()?;
    Ok(RawSecret::new(std::mem::take(&mut *line)))
}

fn describe_user(u: &User) -> String {
    let role = match (u.kind, u.is_admin) {
        (UserKind::Service, true) => "service account (admin)",
        (UserKind::Service, false) => "service account",
        (UserKind::Person, true) => "admin",
        (UserKind::Person, false) => "user",
    };
    format!("{role} {} ({})", u.name, u.id)
}

/// Asks the operator to type `name` to confirm, on a terminal; elsewhere `--yes` is required.
fn confirm(name: &str, what: &str) -> anyhow::Result<()> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("{what} cannot be undone; pass --yes to confirm");
    }
    let mut err = std::io::stderr().lock();
    write!(
        err,
        "{what} cannot be undone. Type the user's name ({name}) to confirm: "
    )
    .and_then(|()| err.flush())
    .context("cannot write to stderr")?;
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the confirmation")?;
    if line.trim() != name {
        anyhow::bail!("not confirmed; nothing was changed");
    }
    Ok(())
}

pub(super) async fn run(ctx: &Ctx, cmd: UserCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        UserCommand::Add {
            name,
            admin,
            service,
            external_id,
            email,
            password_stdin,
        } => {
            let request = UserRequest {
                name: UserName::parse_new(&name)?,
                kind: if service {
                    UserKind::Service
                } else {
                    UserKind::Person
                },
                admin,
                external_id: external_id.as_deref().map(ExternalId::parse).transpose()?,
                email: email.as_deref().map(Email::parse).transpose()?,
                password: password_stdin.then(password_from_stdin).transpose()?,
            };
            let user = ctx
                .keyward
                .create_user(&ctx.caller, request)
                .await
                .map_err(|e| match e {
                    ServiceError::Conflict(what) if password_stdin => anyhow::anyhow!(
                        "{what} already exists; to set or change a password: keyward user password {}",
                        shown(&name)
                    ),
                    e => describe(e, || "not found".to_owned()),
                })?;
            print(&format!("added {}\n", describe_user(&user)))?;
        }
        UserCommand::Show { user, json } => {
            let user = find(ctx, &user).await?;
            if json {
                return print_json(&user).map(|()| ExitCode::SUCCESS);
            }
            let kind = user.kind.as_str();
            let lines = [
                ("id", user.id.to_string()),
                ("name", user.name.to_string()),
                ("kind", kind.to_owned()),
                ("admin", if user.is_admin { "yes" } else { "no" }.to_owned()),
                (
                    "external id",
                    user.external_id.map_or("-".to_owned(), |e| e.to_string()),
                ),
                (
                    "email",
                    user.email.map_or("-".to_owned(), |e| e.to_string()),
                ),
                ("created", time_or(Some(user.created_at), "")),
                ("disabled", time_or(user.disabled_at, "-")),
            ];
            let text: String = lines
                .iter()
                .map(|(k, v)| format!("{k:<12} {}\n", super::output::escaped(v)))
                .collect();
            print(&text)?;
        }
        UserCommand::List { json } => {
            let users = ctx
                .keyward
                .all_users(&ctx.caller)
                .await
                .map_err(|e| describe(e, String::new))?;
            if json {
                return print_json(&users).map(|()| ExitCode::SUCCESS);
            }
            let mut table = Table::new([
                "NAME",
                "ID",
                "KIND",
                "ADMIN",
                "EXTERNAL ID",
                "CREATED",
                "DISABLED",
            ]);
            for u in &users {
                table.row([
                    u.name.to_string(),
                    u.id.to_string(),
                    u.kind.as_str().to_owned(),
                    if u.is_admin { "yes" } else { "no" }.to_owned(),
                    u.external_id
                        .as_ref()
                        .map_or("-".to_owned(), ToString::to_string),
                    time_or(Some(u.created_at), ""),
                    time_or(u.disabled_at, "-"),
                ]);
            }
            print(&table.render())?;
        }
        UserCommand::Disable { user } => {
            let user = find(ctx, &user).await?;
            let user = ctx
                .keyward
                .disable_user(&ctx.caller, &user.id)
                .await
                .map_err(|e| describe(e, String::new))?;
            print(&format!(
                "disabled {}: signed out, tokens refused until enabled again\n",
                describe_user(&user)
            ))?;
        }
        UserCommand::Enable { user } => {
            let user = find(ctx, &user).await?;
            let user = ctx
                .keyward
                .enable_user(&ctx.caller, &user.id)
                .await
                .map_err(|e| describe(e, String::new))?;
            print(&format!("enabled {}\n", describe_user(&user)))?;
        }
        UserCommand::Delete { user, yes } => {
            let user = find(ctx, &user).await?;
            if !yes {
                confirm(user.name.as_str(), &format!("deleting {}", user.name))?;
            }
            let user = ctx
                .keyward
                .delete_user(&ctx.caller, &user.id)
                .await
                .map_err(|e| describe(e, String::new))?;
            print(&format!(
                "deleted {}; every token of theirs is revoked (\"owner deleted\")\n",
                describe_user(&user)
            ))?;
        }
        UserCommand::Password {
            user,
            // Stdin is where the password comes from either way.
            password_stdin: _,
        } => {
            let user = find(ctx, &user).await?;
            if user.kind == UserKind::Service {
                // Before asking for it: a service account never signs in.
                anyhow::bail!(
                    "{} is a service account: it never signs in, so it has no password",
                    user.name
                );
            }
            let password = password_from_stdin()?;
            ctx.keyward
                .set_password(&ctx.caller, &user.id, Some(password))
                .await
                .map_err(|e| describe(e, String::new))?;
            print(&format!(
                "password set for {}; their sessions ended\n",
                describe_user(&user)
            ))?;
        }
        UserCommand::SetAdmin { user, admin } => {
            let user = find(ctx, &user).await?;
            let changes = UserChanges {
                is_admin: Some(admin),
                ..UserChanges::default()
            };
            let user = ctx
                .keyward
                .update_user(&ctx.caller, &user.id, changes)
                .await
                .map_err(|e| describe(e, String::new))?;
            print(&format!("{}\n", describe_user(&user)))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
