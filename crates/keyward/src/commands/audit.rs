//! `keyward audit`: the audit trail, newest first.

use super::output::{Table, time_or};
use super::{Ctx, describe, print, print_json};
use crate::cli::AuditArgs;
use keyward::keyward_server::service::AuditEntry;
use keyward::keyward_server::service::MAX_PAGE;
use keyward::{AuditEvent, UserId, UserName};
use serde::Serialize;
use std::collections::HashMap;
use std::process::ExitCode;

/// One event as `--json` shows it: its place in the trail and the event.
#[derive(Serialize)]
struct EventView<'a> {
    seq: i64,
    #[serde(flatten)]
    event: &'a AuditEvent,
}

pub(super) async fn run(ctx: &Ctx, args: AuditArgs) -> anyhow::Result<ExitCode> {
    let subject = match &args.user {
        Some(name) => Some(ctx.user(name).await?),
        None => None,
    };
    // The service pages at most MAX_PAGE events; a larger --limit walks back page by page.
    let mut events: Vec<AuditEntry> = Vec::new();
    let mut before_seq = None;
    while events.len() < args.limit as usize {
        let want = (args.limit - events.len() as u32).min(MAX_PAGE);
        let page = ctx
            .keyward
            .audit_events(
                &ctx.caller,
                subject.as_ref().map(|u| &u.id),
                before_seq,
                want,
            )
            .await
            .map_err(|e| describe(e, String::new))?;
        before_seq = page.next;
        events.extend(page.events);
        if before_seq.is_none() {
            break;
        }
    }
    if args.json {
        let views: Vec<EventView<'_>> = events
            .iter()
            .map(|e| EventView {
                seq: e.seq,
                event: &e.event,
            })
            .collect();
        print_json(&views)?;
        return Ok(ExitCode::SUCCESS);
    }
    let names: HashMap<UserId, UserName> = ctx
        .keyward
        .all_users(&ctx.caller)
        .await
        .map_err(|e| describe(e, String::new))?
        .into_iter()
        .map(|u| (u.id, u.name))
        .collect();
    let mut table = Table::new([
        "SEQ", "AT", "EVENT", "ACTOR", "USER", "TOKEN", "IP", "DETAIL",
    ]);
    for e in &events {
        let ev = &e.event;
        table.row([
            e.seq.to_string(),
            time_or(Some(ev.at), ""),
            ev.kind.as_str().to_owned(),
            ev.actor.label.clone(),
            ev.subject_user.as_ref().map_or_else(String::new, |id| {
                names
                    .get(id)
                    .map_or_else(|| id.to_string(), ToString::to_string)
            }),
            ev.token_id
                .as_ref()
                .map_or_else(String::new, ToString::to_string),
            ev.ip.map_or_else(String::new, |ip| ip.to_string()),
            ev.detail.clone().unwrap_or_default(),
        ]);
    }
    print(&table.render())?;
    Ok(ExitCode::SUCCESS)
}
