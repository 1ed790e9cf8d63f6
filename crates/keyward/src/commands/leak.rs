//! `keyward leak report`: secrets an in-house scanner found, from stdin, one per line.

use super::{Ctx, describe, print};
use crate::cli::LeakCommand;
use anyhow::Context as _;
use keyward::keyward_core::RawSecret;
use keyward::keyward_server::service::leaks::MAX_REPORTED;
use keyward::keyward_server::service::{Leak, LeakVerdict};
use std::io::BufRead as _;
use std::process::ExitCode;

pub(super) async fn run(ctx: &Ctx, cmd: LeakCommand) -> anyhow::Result<ExitCode> {
    let LeakCommand::Report { source } = cmd;
    let mut leaks = Vec::new();
    for line in std::io::stdin().lock().lines() {
        // Each line may be a live secret: held zeroized, never echoed.
        let line = zeroize::Zeroizing::new(line.context("cannot read the secrets from stdin")?);
        let secret = line.trim();
        if !secret.is_empty() {
            leaks.push(Leak {
                secret: RawSecret::new(secret.to_owned()),
                url: None,
                source: source.clone(),
            });
        }
    }
    if leaks.is_empty() {
        anyhow::bail!("no secrets on stdin (one per line)");
    }
    let (mut ours, mut revoked) = (0_usize, 0_usize);
    for chunk in leaks.chunks(MAX_REPORTED) {
        let verdicts = ctx
            .keyward
            .report_leaks(&ctx.caller, chunk)
            .await
            .map_err(|e| describe(e, String::new))?;
        ours += verdicts.iter().filter(|v| v.is_ours()).count();
        revoked += verdicts
            .iter()
            .filter(|v| matches!(v, LeakVerdict::Revoked(_)))
            .count();
    }
    print(&format!(
        "{ours} of {} secrets were keyward tokens; {revoked} revoked now\n",
        leaks.len()
    ))?;
    Ok(ExitCode::SUCCESS)
}
