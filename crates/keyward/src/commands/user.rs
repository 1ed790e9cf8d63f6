//! `keyward user ...`: add and list users.

use super::output::{Table, time_or};
use super::{Ctx, describe, print, print_json, read_stdin_line};
use crate::cli::UserCommand;
use keyward::{RawSecret, UserName};
use std::process::ExitCode;

pub(super) async fn run(ctx: &Ctx, cmd: UserCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        UserCommand::Add {
            name,
            admin,
            password_stdin,
        } => {
            let name = UserName::parse(&name)?;
            let password = if password_stdin {
                // Moved, not copied: the buffer goes from one zeroizing owner to the next.
                let mut line = read_stdin_line("password")?;
                Some(RawSecret::new(std::mem::take(&mut *line)))
            } else {
                None
            };
            let user = ctx
                .keyward
                .add_user(&ctx.caller, name, admin, password.as_ref())
                .await
                .map_err(|e| describe(e, || "not found".to_owned()))?;
            let role = if user.is_admin { "admin" } else { "user" };
            print(&format!("added {role} {} ({})\n", user.name, user.id))?;
        }
        UserCommand::List { json } => {
            let users = ctx
                .keyward
                .list_users(&ctx.caller)
                .await
                .map_err(|e| describe(e, String::new))?;
            if json {
                return print_json(&users).map(|()| ExitCode::SUCCESS);
            }
            let mut table = Table::new(["NAME", "ID", "ADMIN", "CREATED", "DISABLED"]);
            for u in &users {
                table.row([
                    u.name.to_string(),
                    u.id.to_string(),
                    if u.is_admin { "yes" } else { "no" }.to_owned(),
                    time_or(Some(u.created_at), ""),
                    time_or(u.disabled_at, "-"),
                ]);
            }
            print(&table.render())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
