//! `keyward token ...`: create, list, revoke, regenerate, check.

use super::output::{Table, escaped, time_or};
use super::progress::{Interrupt, Interrupted, Meter, Unit};
use super::{Ctx, describe, print, print_json, read_stdin_line, shown};
use crate::cli::TokenCommand;
use keyward::keyward_core::Scope;
use keyward::keyward_core::{expiry, format};
use keyward::keyward_server::http::wire;
use keyward::keyward_server::service::{BulkRevokeRequest, MAX_PAGE};
use keyward::{
    ExpiryRequest, Issued, RegenerateOptions, Scopes, TokenId, TokenName, TokenRecord, TokenState,
    UserId, UserName,
};
use std::collections::HashMap;
use std::process::ExitCode;

/// A record as the API shows it (`--json` prints exactly the API's token shape, one shape for
/// both).
fn api_token(record: &TokenRecord, now: time::OffsetDateTime) -> wire::Token {
    wire::Token::new(record.clone(), now)
}

pub(super) async fn run(ctx: &Ctx, cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Create {
            user,
            name,
            scopes,
            expires,
            allow_ips,
            max_uses,
            refill,
            rate_limit,
            json,
        } => {
            let owner = ctx.user(&user).await?;
            let name = TokenName::parse(&name)?;
            let scopes = Scopes::parse(&scopes)?;
            let expires = expires.as_deref().map(ExpiryRequest::parse).transpose()?;
            let limits = keyward_core::Limits {
                allowed_ips: allow_ips
                    .iter()
                    .map(|s| keyward_core::IpRange::parse(s))
                    .collect::<Result<_, _>>()?,
                max_uses,
                refill: refill
                    .as_deref()
                    .map(keyward_core::Refill::parse)
                    .transpose()?,
                rate_limit: rate_limit
                    .as_deref()
                    .map(keyward_core::RateLimit::parse)
                    .transpose()?,
            };
            let issued = ctx
                .keyward
                .create_token(&ctx.caller, Some(&owner.id), name, scopes, expires, limits)
                .await
                .map_err(|e| describe(e, || format!("no user {}", owner.name)))?;
            show_issued(ctx, &issued, json)?;
        }
        TokenCommand::List { user, json } => list(ctx, user.as_deref(), json).await?,
        TokenCommand::Show { id, json } => {
            let token_id = token_id(&id)?;
            let token = ctx
                .keyward
                .get_token(&ctx.caller, &token_id)
                .await
                .map_err(|e| describe(e, || no_token(&id)))?;
            let now = ctx.keyward.now();
            if json {
                return print_json(&api_token(&token, now)).map(|()| ExitCode::SUCCESS);
            }
            let owner = ctx.keyward.user_by_id(&ctx.caller, &token.owner).await.ok();
            let lines = [
                ("id", token.id.to_string()),
                ("name", token.name.as_str().to_owned()),
                (
                    "owner",
                    owner
                        .as_ref()
                        .map_or_else(|| token.owner.to_string(), |u| u.name.to_string()),
                ),
                ("state", state_str(token.state(now)).to_owned()),
                ("scopes", token.scopes.to_string()),
                ("hint", token.hint.clone()),
                ("created", time_or(Some(token.created_at), "")),
                ("expires", time_or(token.expires_at, "never")),
                ("regenerated", time_or(token.regenerated_at, "-")),
                ("last used", time_or(token.last_used_at, "never")),
                (
                    "last used from",
                    token
                        .last_used_ip
                        .map_or("-".to_owned(), |ip| ip.to_string()),
                ),
                ("revoked", time_or(token.revoked_at, "-")),
                (
                    "revoked by",
                    token.revoked_by.clone().unwrap_or("-".to_owned()),
                ),
                (
                    "reason",
                    token.revoke_reason.clone().unwrap_or("-".to_owned()),
                ),
            ];
            let text: String = lines
                .iter()
                .map(|(k, v)| format!("{k:<15} {}\n", escaped(v)))
                .collect();
            print(&text)?;
        }
        TokenCommand::Rename { id, name } => {
            let token_id = token_id(&id)?;
            let name = TokenName::parse(&name)?;
            let before = ctx
                .keyward
                .get_token(&ctx.caller, &token_id)
                .await
                .map_err(|e| describe(e, || no_token(&id)))?;
            let token = ctx
                .keyward
                .rename_token(&ctx.caller, &token_id, name)
                .await
                .map_err(|e| describe(e, || no_token(&id)))?;
            print(&format!(
                "renamed {}: {} → {}\n",
                token.id,
                escaped(before.name.as_str()),
                escaped(token.name.as_str())
            ))?;
        }
        TokenCommand::Revoke {
            id: None,
            reason,
            all: _,
            user,
            created_before,
            created_after,
            scope,
            unused_since,
            dry_run,
            quiet,
        } => {
            let request = BulkRevokeRequest {
                created_before: rfc3339("created-before", created_before.as_deref())?,
                created_after: rfc3339("created-after", created_after.as_deref())?,
                unused_since: rfc3339("unused-since", unused_since.as_deref())?,
                scope: scope.as_deref().map(Scope::parse).transpose()?,
                user,
                // `--all` is how the command line asks for a bulk revocation at all.
                all: true,
            };
            revoke_in_bulk(ctx, &request, reason, dry_run, quiet).await?;
        }
        TokenCommand::Revoke {
            id: Some(id),
            reason,
            ..
        } => {
            let token_id = token_id(&id)?;
            let current = ctx
                .keyward
                .get_token(&ctx.caller, &token_id)
                .await
                .map_err(|e| describe(e, || no_token(&id)))?;
            if let Some(at) = current.revoked_at {
                anyhow::bail!(
                    "{} was already revoked at {} by {}{}; nothing changed",
                    current.id,
                    time_or(Some(at), ""),
                    escaped(current.revoked_by.as_deref().unwrap_or("?")),
                    current
                        .revoke_reason
                        .as_deref()
                        .map_or(String::new(), |r| format!(" ({})", escaped(r)))
                );
            }
            let token = ctx
                .keyward
                .revoke_token(&ctx.caller, &token_id, reason)
                .await
                .map_err(|e| describe(e, || no_token(&id)))?;
            let by = escaped(token.revoked_by.as_deref().unwrap_or("?"));
            print(&format!(
                "revoked {} ({}) by {by}\n",
                token.id,
                escaped(token.name.as_str())
            ))?;
        }
        TokenCommand::Regenerate {
            id,
            grace,
            expires,
            json,
        } => {
            let token_id = token_id(&id)?;
            let options = RegenerateOptions {
                grace: grace.as_deref().map(expiry::parse_grace).transpose()?,
                expires: expires.as_deref().map(ExpiryRequest::parse).transpose()?,
            };
            let issued = ctx
                .keyward
                .regenerate_token(&ctx.caller, &token_id, options)
                .await
                .map_err(|e| describe(e, || no_token(&id)))?;
            show_issued(ctx, &issued, json)?;
        }
        TokenCommand::Check { secret, .. } => return check(secret.as_deref()),
    }
    Ok(ExitCode::SUCCESS)
}

/// A time given as `--flag TIME`, in RFC 3339.
fn rfc3339(flag: &str, text: Option<&str>) -> anyhow::Result<Option<time::OffsetDateTime>> {
    text.map(|text| {
        time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
            .map_err(|_| {
                anyhow::anyhow!(
                    "--{flag}: {} is not an RFC 3339 time such as 2026-12-01T00:00:00Z",
                    shown(text)
                )
            })
    })
    .transpose()
}

/// `token revoke --all`: the dry run prints the ids (one per line) and the count on stderr;
/// the real run shows a bar on a terminal, then one summary line.
async fn revoke_in_bulk(
    ctx: &Ctx,
    request: &BulkRevokeRequest,
    reason: Option<String>,
    dry_run: bool,
    quiet: bool,
) -> anyhow::Result<()> {
    let no_user = || format!("no user {}", shown(request.user.as_deref().unwrap_or("")));
    if dry_run {
        let ids = ctx
            .keyward
            .bulk_revoke_preview(&ctx.caller, request)
            .await
            .map_err(|e| describe(e, no_user))?;
        let text: String = ids.iter().map(|id| format!("{id}\n")).collect();
        print(&text)?;
        eprintln!(
            "{} {} would be revoked (dry run: nothing was)",
            ids.len(),
            tokens_word(ids.len())
        );
        return Ok(());
    }
    let meter = Meter::new(quiet, Unit::Tokens, Interrupt::listen()?);
    meter.spin("revoking".to_owned());
    let done = ctx
        .keyward
        .bulk_revoke(&ctx.caller, request, reason, &meter)
        .await;
    meter.finish();
    let done = done.map_err(|e| describe(e, no_user))?;
    let revoked = usize::try_from(done.revoked).unwrap_or(usize::MAX);
    if done.stopped {
        return Err(Interrupted(format!(
            "{revoked} {} of {} revoked; the others were not",
            tokens_word(revoked),
            done.listed
        ))
        .into());
    }
    print(&format!("revoked {revoked} {}\n", tokens_word(revoked)))
}

fn tokens_word(n: usize) -> &'static str {
    if n == 1 { "token" } else { "tokens" }
}

fn no_token(id: &str) -> String {
    format!("no token {}", shown(id))
}

/// An id that cannot be a token's id names no token; said the same way as an unknown one.
fn token_id(id: &str) -> anyhow::Result<TokenId> {
    TokenId::parse(id.trim()).map_err(|_| anyhow::anyhow!(no_token(id)))
}

/// The secret alone on stdout (so `$(keyward token create ...)` captures exactly it), and the
/// warning on stderr where it cannot end up in that capture.
fn show_issued(ctx: &Ctx, issued: &Issued, json: bool) -> anyhow::Result<()> {
    let now = ctx.keyward.now();
    if json {
        // The API's own answer to create and regenerate; the only place a secret is serialized.
        let answer =
            wire::IssuedTokenResponse::new(issued.token.clone(), issued.secret.expose(), now);
        print_json(&answer)?;
    } else {
        let mut line =
            zeroize::Zeroizing::new(String::with_capacity(issued.secret.expose().len() + 1));
        line.push_str(issued.secret.expose());
        line.push('\n');
        print(&line)?;
    }
    let expires = issued.token.expires_at.map_or_else(
        || "never expires".to_owned(),
        |at| format!("expires {}", time_or(Some(at), "")),
    );
    eprintln!(
        "warning: this secret will not be shown again and cannot be recovered; store it now (token {}, \"{}\", {expires})",
        issued.token.id,
        escaped(issued.token.name.as_str())
    );
    Ok(())
}

async fn list(ctx: &Ctx, user: Option<&str>, json: bool) -> anyhow::Result<()> {
    let owner = match user {
        Some(name) => Some(ctx.user(name).await?),
        None => None,
    };
    let mut tokens: Vec<TokenRecord> = Vec::new();
    let mut after = None;
    loop {
        let page = ctx
            .keyward
            .list_tokens(&ctx.caller, owner.as_ref().map(|u| &u.id), after, MAX_PAGE)
            .await
            .map_err(|e| describe(e, || "no such user".to_owned()))?;
        after = page.next;
        tokens.extend(page.tokens);
        if after.is_none() {
            break;
        }
    }
    let names: HashMap<UserId, UserName> = match &owner {
        Some(u) => [(u.id.clone(), u.name.clone())].into(),
        None => ctx
            .keyward
            .all_users(&ctx.caller)
            .await
            .map_err(|e| describe(e, String::new))?
            .into_iter()
            .map(|u| (u.id, u.name))
            .collect(),
    };
    let now = ctx.keyward.now();
    if json {
        let records: Vec<wire::Token> = tokens.iter().map(|t| api_token(t, now)).collect();
        return print_json(&records);
    }
    let mut table = Table::new([
        "ID",
        "OWNER",
        "NAME",
        "HINT",
        "SCOPES",
        "STATE",
        "EXPIRES",
        "LAST USED",
    ]);
    for t in &tokens {
        table.row([
            t.id.to_string(),
            names
                .get(&t.owner)
                .map_or_else(|| t.owner.to_string(), ToString::to_string),
            t.name.as_str().to_owned(),
            t.hint.clone(),
            t.scopes.to_string(),
            state_str(t.state(now)).to_owned(),
            time_or(t.expires_at, "never"),
            time_or(t.last_used_at, "never"),
        ]);
    }
    print(&table.render())
}

fn state_str(state: TokenState) -> &'static str {
    match state {
        TokenState::Active => "active",
        TokenState::Expired => "expired",
        TokenState::Revoked => "revoked",
    }
}

/// `keyward token check`: the format and checksum only, offline. The token comes from stdin
/// unless it is given as an argument other than `-`.
pub(super) fn check(arg: Option<&str>) -> anyhow::Result<ExitCode> {
    let from_stdin;
    let secret: &str = match arg {
        None | Some("-") => {
            from_stdin = read_stdin_line("token")?;
            from_stdin.trim()
        }
        Some(arg) => arg.trim(),
    };
    match format::validate(secret) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(reason) => {
            // The reason only: the input may be a real secret with a typo.
            eprintln!("keyward: {reason}");
            Ok(ExitCode::FAILURE)
        }
    }
}
