//! Expiry reminders on a manual clock: which threshold is due when, each once, never for a
//! revoked token; and the reuse of a replaced secret after its grace period, in process.

use crate::helpers::{TestApp, spawn_app, spawn_app_with};
use keyward_core::{AuditKind, ExpiryRequest, Scopes, TokenId, TokenName, User};
use keyward_server::service::RegenerateOptions;
use keyward_server::{Caller, Settings};
use keyward_store::{AuditFilter, AuditStore, StoredAuditEvent, TokenStore};
use time::Duration;

fn operator() -> Caller {
    Caller::operator("test")
}

async fn token(app: &TestApp, owner: &User, expires: &str) -> TokenId {
    app.keyward
        .create_token(
            &operator(),
            Some(&owner.id),
            TokenName::parse("t").unwrap(),
            Scopes::parse(&["droplet:read"]).unwrap(),
            Some(ExpiryRequest::parse(expires).unwrap()),
            keyward_core::Limits::default(),
        )
        .await
        .unwrap()
        .token
        .id
}

async fn trail(app: &TestApp) -> Vec<StoredAuditEvent> {
    app.store
        .audit_events(&AuditFilter {
            limit: 1000,
            ..AuditFilter::default()
        })
        .await
        .unwrap()
}

/// The notices recorded for `token`, oldest first: thresholds, then `expired`.
async fn notices(app: &TestApp, token: &TokenId) -> Vec<String> {
    let mut found: Vec<String> = trail(app)
        .await
        .into_iter()
        .filter(|e| e.event.token_id.as_ref() == Some(token))
        .filter_map(|e| match e.event.kind {
            AuditKind::TokenExpiring => e.event.detail,
            AuditKind::TokenExpired => Some("expired".to_owned()),
            _ => None,
        })
        .collect();
    found.reverse();
    found
}

/// Scans until nothing more is due (the background scan may have been first), then once more:
/// a second scan records nothing.
async fn scan(app: &TestApp) {
    app.keyward.send_expiry_notices().await.unwrap();
    assert_eq!(app.keyward.send_expiry_notices().await.unwrap(), 0);
}

#[tokio::test]
async fn the_nearest_reminder_fires_once_then_the_expiry() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let month = token(&app, &alice, "30d").await;
    let half_day = token(&app, &alice, "12h").await;
    let revoked = token(&app, &alice, "2d").await;
    app.keyward
        .revoke_token(&operator(), &revoked, None)
        .await
        .unwrap();

    scan(&app).await;
    assert_eq!(notices(&app, &month).await, Vec::<String>::new());
    assert_eq!(
        notices(&app, &half_day).await,
        ["1d"],
        "created inside the nearest window: only that reminder"
    );

    app.advance(Duration::hours(13));
    scan(&app).await;
    assert_eq!(notices(&app, &half_day).await, ["1d", "expired"]);
    assert_eq!(notices(&app, &month).await, Vec::<String>::new());

    // Six days and 23 hours left for the month's token.
    app.advance(Duration::days(22) + Duration::hours(12));
    scan(&app).await;
    assert_eq!(notices(&app, &month).await, ["7d"]);

    app.advance(Duration::days(6));
    scan(&app).await;
    assert_eq!(notices(&app, &month).await, ["7d", "1d"]);

    app.advance(Duration::hours(23));
    scan(&app).await;
    assert_eq!(notices(&app, &month).await, ["7d", "1d", "expired"]);
    assert_eq!(notices(&app, &revoked).await, Vec::<String>::new());

    let event = trail(&app)
        .await
        .into_iter()
        .find(|e| e.event.kind == AuditKind::TokenExpiring)
        .unwrap()
        .event;
    assert_eq!(event.subject_user, Some(alice.id.clone()));
    assert_eq!(event.actor.label, "keyward (expiry)");
    assert!(event.actor.user.is_none() && event.ip.is_none());
}

#[tokio::test]
async fn a_regeneration_that_moves_the_expiry_starts_the_reminders_afresh() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let id = token(&app, &alice, "3d").await;
    scan(&app).await;
    assert_eq!(notices(&app, &id).await, ["7d"]);
    app.keyward
        .regenerate_token(
            &operator(),
            &id,
            RegenerateOptions {
                grace: None,
                expires: Some(ExpiryRequest::parse("5d").unwrap()),
            },
        )
        .await
        .unwrap();
    scan(&app).await;
    assert_eq!(notices(&app, &id).await, ["7d", "7d"]);
}

#[tokio::test]
async fn no_reminders_when_turned_off() {
    let app = spawn_app_with(Settings {
        notify_before: keyward_core::NotifyBefore::new([]),
        ..Settings::default()
    })
    .await;
    let alice = app.user("alice").await;
    let id = token(&app, &alice, "1h").await;
    scan(&app).await;
    assert_eq!(notices(&app, &id).await, Vec::<String>::new());
    app.advance(Duration::hours(1));
    scan(&app).await;
    assert_eq!(notices(&app, &id).await, ["expired"]);
}

/// The reuse events of `token`.
async fn reuses(app: &TestApp, token: &str) -> Vec<StoredAuditEvent> {
    trail(app)
        .await
        .into_iter()
        .filter(|e| {
            e.event.kind == AuditKind::TokenRotatedSecretUsed
                && e.event.token_id.as_ref().map(TokenId::as_str) == Some(token)
        })
        .collect()
}

/// Waits (bounded) for the event written off the request path.
async fn until_reused(app: &TestApp, token: &str) -> Vec<StoredAuditEvent> {
    for _ in 0..200 {
        let found = reuses(app, token).await;
        if !found.is_empty() {
            return found;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("no token.rotated_secret_used for {token}");
}

#[tokio::test]
async fn an_old_secret_is_fine_in_its_grace_and_reported_after_it() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let old = app.token(&alice, &["droplet:read"]).await;
    let id = TokenId::parse(&old.id).unwrap();
    let new = app
        .keyward
        .regenerate_token(
            &operator(),
            &id,
            RegenerateOptions {
                grace: Some(Duration::minutes(10)),
                expires: None,
            },
        )
        .await
        .unwrap();
    let verify_from = |secret: String, ip: &'static str| {
        let app = &app;
        async move {
            app.request(
                reqwest::Method::POST,
                "/v1/verify",
                None,
                Some(&serde_json::json!({"token": secret, "ip": ip})),
            )
            .await
            .expect(200)
        }
    };
    let during = verify_from(old.secret.clone(), "203.0.113.9").await;
    assert_eq!(during["active"], true);
    app.advance(Duration::minutes(10));
    for _ in 0..5 {
        let after = verify_from(old.secret.clone(), "203.0.113.9").await;
        assert_eq!(
            after,
            serde_json::json!({"active": false, "reason": "revoked"})
        );
    }
    let found = until_reused(&app, &old.id).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(reuses(&app, &old.id).await.len(), 1, "once a minute");
    assert_eq!(found[0].event.ip, Some("203.0.113.9".parse().unwrap()));
    assert_eq!(found[0].event.subject_user, Some(alice.id.clone()));
    // Not revoked unless configured.
    assert_eq!(app.verdict(new.secret.expose(), &[]).await, "active");

    // A minute later, once more.
    app.advance(Duration::seconds(61));
    verify_from(old.secret.clone(), "198.51.100.4").await;
    for _ in 0..200 {
        if reuses(&app, &old.id).await.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(reuses(&app, &old.id).await.len(), 2);
}

#[tokio::test]
async fn an_expired_token_s_old_secret_is_not_a_reuse() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let regenerate = |id: TokenId| {
        let app = &app;
        async move {
            app.keyward
                .regenerate_token(
                    &operator(),
                    &id,
                    RegenerateOptions {
                        grace: Some(Duration::minutes(10)),
                        expires: None,
                    },
                )
                .await
                .unwrap();
        }
    };
    let dead = app
        .keyward
        .create_token(
            &operator(),
            Some(&alice.id),
            TokenName::parse("short").unwrap(),
            Scopes::parse(&["droplet:read"]).unwrap(),
            Some(ExpiryRequest::parse("2h").unwrap()),
            keyward_core::Limits::default(),
        )
        .await
        .unwrap();
    regenerate(dead.token.id.clone()).await;
    let live = app.token(&alice, &["droplet:read"]).await;
    regenerate(TokenId::parse(&live.id).unwrap()).await;
    app.advance(Duration::hours(3));

    assert_eq!(app.verdict(dead.secret.expose(), &[]).await, "revoked");
    // The live token's old secret is a reuse: once it is recorded, the dead one's would be too.
    assert_eq!(app.verdict(&live.secret, &[]).await, "revoked");
    until_reused(&app, &live.id).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(reuses(&app, dead.token.id.as_str()).await.is_empty());
}

#[tokio::test]
async fn revoke_on_reuse_revokes_the_token() {
    let app = spawn_app_with(Settings {
        revoke_on_reuse: true,
        ..Settings::default()
    })
    .await;
    let alice = app.user("alice").await;
    let old = app.token(&alice, &["droplet:read"]).await;
    let id = TokenId::parse(&old.id).unwrap();
    let new = app
        .keyward
        .regenerate_token(&operator(), &id, RegenerateOptions::default())
        .await
        .unwrap();
    // Presented while its grace (none) is over: revoked, and so is the token.
    assert_eq!(app.verdict(&old.secret, &[]).await, "revoked");
    until_reused(&app, &old.id).await;
    for _ in 0..200 {
        if app.verdict(new.secret.expose(), &[]).await == "revoked" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(app.verdict(new.secret.expose(), &[]).await, "revoked");
    let record = app.store.token(&id, None).await.unwrap().unwrap();
    assert_eq!(
        record.revoke_reason.as_deref(),
        Some("rotated secret reused")
    );
    assert_eq!(
        record.revoked_by.as_deref(),
        Some("keyward (reuse detection)")
    );
    // A revoked token's old secret is not news: no second event, even a minute later.
    app.advance(Duration::minutes(2));
    assert_eq!(app.verdict(&old.secret, &[]).await, "revoked");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(reuses(&app, &old.id).await.len(), 1);
}
