//! `keyward events`: every user's events in order (optionally following new ones), and
//! `keyward webhook deliveries`: where each webhook delivery stands.

use super::output::{Table, escaped, time_or};
use super::{Ctx, describe, print, print_json};
use crate::cli::{DeliveriesArgs, EventsArgs};
use anyhow::Context as _;
use keyward::keyward_core::EventId;
use keyward::keyward_server::http::wire::{Event, WebhookDelivery};
use keyward::keyward_server::service::MAX_PAGE;
use keyward::keyward_store::DeliveryState;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

/// How often `--follow` asks for new events.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

pub(super) async fn events(ctx: &Ctx, args: EventsArgs) -> anyhow::Result<ExitCode> {
    let mut after = args
        .after
        .as_deref()
        .map(EventId::parse)
        .transpose()
        .map_err(|_| anyhow::anyhow!("--after must be an event id (evt_…)"))?;
    let mut left = args.limit;
    let mut table_started = false;
    loop {
        let want = left.map_or(MAX_PAGE, |n| n.min(MAX_PAGE));
        let page = ctx
            .keyward
            .events(&ctx.caller, after.as_ref(), want)
            .await
            .map_err(|e| describe(e, String::new))?;
        let got = u32::try_from(page.len()).unwrap_or(u32::MAX);
        if let Some(last) = page.last() {
            after = Some(last.id.clone());
        }
        let events: Vec<Event> = page.into_iter().map(Event::new).collect();
        if args.json {
            // One event a line, exactly as the API and webhooks send it.
            let mut out = std::io::stdout().lock();
            for event in &events {
                serde_json::to_writer(&mut out, event).context("cannot write to stdout")?;
                out.write_all(b"\n").context("cannot write to stdout")?;
            }
            out.flush().context("cannot write to stdout")?;
        } else if !events.is_empty() || !table_started {
            print(&render(&events, !table_started))?;
            table_started = true;
        }
        left = left.map(|n| n.saturating_sub(got));
        if left == Some(0) {
            break;
        }
        if got < want {
            if !args.follow {
                break;
            }
            tokio::time::sleep(FOLLOW_EVERY).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Events as table rows, with the header on the first page only.
fn render(events: &[Event], header: bool) -> String {
    let mut table = Table::new(["ID", "TIMESTAMP", "TYPE", "TOKEN", "USER", "ACTOR"]);
    for e in events {
        let field = |key: &str| {
            e.data
                .get(key)
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let actor = e
            .data
            .get("actor")
            .and_then(|a| a.get("label"))
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        table.row([
            e.id.to_string(),
            time_or(Some(e.timestamp), ""),
            e.event_type.clone(),
            field("token_id"),
            field("user_id"),
            escaped(actor),
        ]);
    }
    let text = table.render();
    if header {
        text
    } else {
        text.split_once('\n')
            .map_or(text.clone(), |(_, rows)| rows.to_owned())
    }
}

pub(super) async fn deliveries(ctx: &Ctx, args: DeliveriesArgs) -> anyhow::Result<ExitCode> {
    let state = args
        .state
        .as_deref()
        .map(|s| {
            DeliveryState::parse(s)
                .ok_or_else(|| anyhow::anyhow!("--state must be pending, delivered or failed"))
        })
        .transpose()?;
    let records = ctx
        .keyward
        .webhook_deliveries(&ctx.caller, state, args.limit)
        .await
        .map_err(|e| describe(e, String::new))?;
    let deliveries: Vec<WebhookDelivery> = records.into_iter().map(Into::into).collect();
    if args.json {
        print_json(&deliveries)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new([
        "EVENT", "TYPE", "WEBHOOK", "STATE", "ATTEMPTS", "LAST TRY", "STATUS", "ERROR",
    ]);
    for d in &deliveries {
        table.row([
            d.event_id.to_string(),
            d.event_type.clone(),
            escaped(&d.webhook),
            d.state.clone(),
            d.attempts.to_string(),
            time_or(d.last_attempt_at, ""),
            d.last_status.map_or_else(String::new, |s| s.to_string()),
            escaped(d.last_error.as_deref().unwrap_or_default()),
        ]);
    }
    print(&table.render())?;
    Ok(ExitCode::SUCCESS)
}
