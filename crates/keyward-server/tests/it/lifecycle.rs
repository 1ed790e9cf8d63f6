//! `/v1/tokens` and `/v1/audit` over HTTP: create, verify, revoke, expire, regenerate (with and
//! without grace), self, rename, list, audit (acceptance 3).

use crate::helpers::{START, spawn_app, spawn_app_with};
use keyward_core::{ExpiryRequest, Prefix, Scopes, TokenId, TokenName};
use keyward_server::service::RegenerateOptions;
use keyward_server::{Caller, Settings};
use serde_json::{Value, json};
use time::Duration;
use time::format_description::well_known::Rfc3339;

const MANAGE: &[&str] = &["tokens:*", "droplet:*", "audit:read"];

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap()
}

fn str_list(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn create_returns_the_secret_once_and_it_verifies_active() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let admin = app.token(&alice, MANAGE).await;

    let resp = app
        .post(
            "/v1/tokens",
            &admin.secret,
            &json!({"name": "ci deploy", "scopes": ["droplet:read"], "expires": "30d"}),
        )
        .await;
    let body = resp.expect(201);
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    assert_eq!(
        body.as_object().unwrap().len(),
        2,
        "only token and secret: {body}"
    );
    let secret = body["secret"].as_str().unwrap();
    assert!(
        secret.starts_with("kwp_") && secret.len() == 4 + 43 + 6,
        "{secret}"
    );
    let token = &body["token"];
    let id = token["id"].as_str().unwrap();
    assert!(id.starts_with("tok_"), "{id}");
    assert_eq!(token["state"], "active");
    assert_eq!(token["name"], "ci deploy");
    assert_eq!(token["owner"], alice.id.as_str());
    assert_eq!(str_list(&token["scopes"]), ["droplet:read"]);
    assert_eq!(token["created_at"], rfc3339(START));
    assert_eq!(token["expires_at"], rfc3339(START + Duration::days(30)));
    assert_eq!(
        token["hint"],
        format!("kwp_…{}", &secret[secret.len() - 4..])
    );
    assert_eq!(token["revoked_at"], Value::Null);
    assert_eq!(token["last_used_at"], Value::Null);

    let v = app.verify(secret, &["droplet:read"]).await;
    assert_eq!(v["active"], true, "{v}");
    assert_eq!(v["token_id"], id);
    assert_eq!(
        v["owner"],
        json!({"id": alice.id.as_str(), "name": "alice", "external_id": null})
    );
    assert_eq!(str_list(&v["scopes"]), ["droplet:read"]);
    assert_eq!(v["expires_at"], rfc3339(START + Duration::days(30)));
    assert_eq!(app.verdict(secret, &[]).await, "active");

    assert_eq!(
        app.verdict(secret, &["droplet:delete"]).await,
        "insufficient_scope"
    );
    assert_eq!(
        app.verdict(secret, &["droplet:read", "volume:read"]).await,
        "insufficient_scope"
    );
    assert_eq!(
        app.verdict(secret, &["droplet:*"]).await,
        "insufficient_scope"
    );

    // The record is readable later, never with its secret.
    let got = app.get(&format!("/v1/tokens/{id}"), &admin.secret).await;
    let got_body = got.expect(200);
    assert_eq!(got_body["token"]["id"], id);
    assert!(
        !got.text.contains(secret) && got_body.get("secret").is_none(),
        "{}",
        got.text
    );
}

#[tokio::test]
async fn a_token_stores_its_scopes_normalized() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let admin = app.token(&alice, MANAGE).await;
    let created = app
        .post(
            "/v1/tokens",
            &admin.secret,
            &json!({"name": "x", "scopes": ["audit:read", "droplet:read", "droplet:*", "audit:*"]}),
        )
        .await;
    // `audit:*` is not within the caller's `audit:read`: refused whole, nothing stored.
    created.expect_error(403, "scope_exceeds_caller");
    let created = app
        .post(
            "/v1/tokens",
            &admin.secret,
            &json!({"name": "x", "scopes": ["droplet:read", "droplet:*", "audit:read", "droplet:delete"]}),
        )
        .await
        .expect(201);
    assert_eq!(
        str_list(&created["token"]["scopes"]),
        ["audit:read", "droplet:*"],
        "{created}"
    );
    let id = created["token"]["id"].as_str().unwrap();
    let stored = app
        .get(&format!("/v1/tokens/{id}"), &admin.secret)
        .await
        .expect(200);
    assert_eq!(
        str_list(&stored["token"]["scopes"]),
        ["audit:read", "droplet:*"]
    );
    let secret = created["secret"].as_str().unwrap();
    let v = app.verify(secret, &["droplet:read"]).await;
    assert_eq!(str_list(&v["scopes"]), ["audit:read", "droplet:*"], "{v}");
}

#[tokio::test]
async fn created_token_without_expiry_gets_the_default_lifetime() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let admin = app.token(&alice, MANAGE).await;
    let body = app
        .post(
            "/v1/tokens",
            &admin.secret,
            &json!({"name": "x", "scopes": ["droplet:read"]}),
        )
        .await
        .expect(201);
    assert_eq!(
        body["token"]["expires_at"],
        rfc3339(START + Duration::days(30))
    );
}

#[tokio::test]
async fn revoke_keeps_the_record_and_the_secret_stops_working() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let admin = app.token(&alice, MANAGE).await;
    let victim = app.token(&alice, &["droplet:read"]).await;
    assert_eq!(
        app.verdict(&victim.secret, &["droplet:read"]).await,
        "active"
    );

    let resp = app
        .delete(
            &format!("/v1/tokens/{}", victim.id),
            &admin.secret,
            Some(&json!({"reason": "leaked in a CI log"})),
        )
        .await;
    let body = resp.expect(200);
    let token = &body["token"];
    assert_eq!(token["id"], victim.id.as_str());
    assert_eq!(token["state"], "revoked");
    assert_eq!(token["revoked_at"], rfc3339(START));
    assert_eq!(token["revoke_reason"], "leaked in a CI log");
    let by = token["revoked_by"].as_str().unwrap();
    assert!(
        by.contains("alice") && by.contains(&admin.id),
        "revoked_by names the actor: {by}"
    );

    assert_eq!(
        app.verdict(&victim.secret, &["droplet:read"]).await,
        "revoked"
    );
    assert_eq!(app.verdict(&victim.secret, &[]).await, "revoked");

    // Kept, revoked; and revoking again is a no-op, not a second event.
    let again = app
        .get(&format!("/v1/tokens/{}", victim.id), &admin.secret)
        .await
        .expect(200);
    assert_eq!(again["token"]["state"], "revoked");
    app.delete(&format!("/v1/tokens/{}", victim.id), &admin.secret, None)
        .await
        .expect(200);
    let revocations = app
        .audit_trail()
        .await
        .into_iter()
        .filter(|e| e.event.kind.as_str() == "token.revoked")
        .count();
    assert_eq!(revocations, 1);

    // A revoked token cannot authenticate a management call either.
    app.get("/v1/tokens/self", &victim.secret)
        .await
        .expect_error(401, "invalid_token");
}

#[tokio::test]
async fn a_revoked_token_cannot_revoke_or_be_used_for_management() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let admin = app.token(&alice, MANAGE).await;
    app.delete(&format!("/v1/tokens/{}", admin.id), &admin.secret, None)
        .await
        .expect(200);
    let resp = app.get("/v1/tokens", &admin.secret).await;
    resp.expect_error(401, "invalid_token");
    assert!(
        resp.header("www-authenticate")
            .is_some_and(|h| h.starts_with("Bearer"))
    );
}

#[tokio::test]
async fn past_expiry_the_token_is_expired() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let admin = app.token(&alice, MANAGE).await;
    let body = app
        .post(
            "/v1/tokens",
            &admin.secret,
            &json!({"name": "short", "scopes": ["droplet:read"], "expires": "1h"}),
        )
        .await
        .expect(201);
    let secret = body["secret"].as_str().unwrap().to_owned();
    let id = body["token"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        body["token"]["expires_at"],
        rfc3339(START + Duration::hours(1))
    );

    app.advance(Duration::minutes(59) + Duration::seconds(59));
    assert_eq!(app.verdict(&secret, &["droplet:read"]).await, "active");
    app.advance(Duration::seconds(1));
    assert_eq!(app.verdict(&secret, &["droplet:read"]).await, "expired");
    assert_eq!(app.verdict(&secret, &[]).await, "expired");

    let got = app
        .get(&format!("/v1/tokens/{id}"), &admin.secret)
        .await
        .expect(200);
    assert_eq!(got["token"]["state"], "expired");
    // Regenerating an expired token is refused: make a new one.
    app.post_empty(&format!("/v1/tokens/{id}/regenerate"), &admin.secret)
        .await
        .expect_error(409, "invalid_state");
}

#[tokio::test]
async fn expiry_given_as_an_rfc3339_time_is_kept_to_the_second() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let admin = app.token(&alice, MANAGE).await;
    let at = START + Duration::days(10);
    let body = app
        .post(
            "/v1/tokens",
            &admin.secret,
            &json!({"name": "dated", "scopes": ["droplet:read"], "expires": rfc3339(at)}),
        )
        .await
        .expect(201);
    assert_eq!(body["token"]["expires_at"], rfc3339(at));
    app.advance(Duration::days(10));
    assert_eq!(
        app.verdict(body["secret"].as_str().unwrap(), &[]).await,
        "expired"
    );
}

#[tokio::test]
async fn regenerate_replaces_the_secret_and_keeps_the_token() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let admin = app.token(&alice, MANAGE).await;
    let old = app
        .token_named(&alice, "deploy", &["droplet:read", "droplet:update"])
        .await;
    let before = app
        .get(&format!("/v1/tokens/{}", old.id), &admin.secret)
        .await
        .expect(200)["token"]
        .clone();

    // Cached, so the regeneration has to evict it.
    assert_eq!(app.verdict(&old.secret, &["droplet:read"]).await, "active");
    app.advance(Duration::hours(1));
    let resp = app
        .post_empty(&format!("/v1/tokens/{}/regenerate", old.id), &admin.secret)
        .await;
    let body = resp.expect(200);
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    let new_secret = body["secret"].as_str().unwrap();
    assert_ne!(new_secret, old.secret);
    let token = &body["token"];
    assert_eq!(token["id"], old.id.as_str());
    assert_eq!(token["name"], "deploy");
    assert_eq!(token["scopes"], before["scopes"]);
    assert_eq!(token["created_at"], before["created_at"]);
    assert_eq!(token["state"], "active");
    assert_eq!(token["regenerated_at"], rfc3339(START + Duration::hours(1)));
    assert_eq!(
        token["hint"],
        format!("kwp_…{}", &new_secret[new_secret.len() - 4..])
    );
    assert_ne!(token["hint"], before["hint"]);
    // The token keeps its expiry: a regeneration is no way to extend a lifetime.
    assert_eq!(token["expires_at"], before["expires_at"]);

    assert_eq!(app.verdict(&old.secret, &["droplet:read"]).await, "revoked");
    let v = app.verify(new_secret, &["droplet:read"]).await;
    assert_eq!(v["active"], true, "{v}");
    assert_eq!(v["token_id"], old.id.as_str());
}

#[tokio::test]
async fn with_a_grace_period_both_secrets_work_until_it_ends() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let admin = app.token(&alice, MANAGE).await;
    let old = app.token(&alice, &["droplet:read"]).await;
    // Warm the cache with the old secret: the regeneration must still reach it.
    assert_eq!(app.verdict(&old.secret, &["droplet:read"]).await, "active");

    let body = app
        .post(
            &format!("/v1/tokens/{}/regenerate", old.id),
            &admin.secret,
            &json!({"grace_period": "10m"}),
        )
        .await
        .expect(200);
    let new_secret = body["secret"].as_str().unwrap();
    assert_eq!(app.verdict(&old.secret, &["droplet:read"]).await, "active");
    assert_eq!(app.verdict(new_secret, &["droplet:read"]).await, "active");

    app.advance(Duration::minutes(9) + Duration::seconds(59));
    assert_eq!(app.verdict(&old.secret, &["droplet:read"]).await, "active");
    assert_eq!(app.verdict(new_secret, &["droplet:read"]).await, "active");

    app.advance(Duration::seconds(1));
    assert_eq!(app.verdict(&old.secret, &["droplet:read"]).await, "revoked");
    assert_eq!(app.verdict(new_secret, &["droplet:read"]).await, "active");
}

#[tokio::test]
async fn revoking_during_a_grace_period_stops_both_secrets() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let admin = app.token(&alice, MANAGE).await;
    let old = app.token(&alice, &["droplet:read"]).await;
    let body = app
        .post(
            &format!("/v1/tokens/{}/regenerate", old.id),
            &admin.secret,
            &json!({"grace_period": "1h"}),
        )
        .await
        .expect(200);
    let new_secret = body["secret"].as_str().unwrap();
    assert_eq!(app.verdict(&old.secret, &[]).await, "active");
    app.delete(&format!("/v1/tokens/{}", old.id), &admin.secret, None)
        .await
        .expect(200);
    assert_eq!(app.verdict(&old.secret, &[]).await, "revoked");
    assert_eq!(app.verdict(new_secret, &[]).await, "revoked");
}

#[tokio::test]
async fn regenerating_a_revoked_token_is_a_conflict() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let admin = app.token(&alice, MANAGE).await;
    let t = app.token(&alice, &["droplet:read"]).await;
    app.delete(&format!("/v1/tokens/{}", t.id), &admin.secret, None)
        .await
        .expect(200);
    let before = app.snapshot().await;
    app.post_empty(&format!("/v1/tokens/{}/regenerate", t.id), &admin.secret)
        .await
        .expect_error(409, "invalid_state");
    assert_eq!(app.snapshot().await, before);
    assert_eq!(app.verdict(&t.secret, &[]).await, "revoked");
}

#[tokio::test]
async fn a_token_reads_and_regenerates_itself_without_any_scope() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bot = app
        .token_named(&alice, "automation", &["droplet:read"])
        .await;

    let me = app.get("/v1/tokens/self", &bot.secret).await.expect(200);
    assert_eq!(me["token"]["id"], bot.id.as_str());
    assert_eq!(me["token"]["name"], "automation");
    assert_eq!(me["token"]["state"], "active");
    assert!(me.get("secret").is_none());

    let resp = app
        .post_empty("/v1/tokens/self/regenerate", &bot.secret)
        .await;
    let body = resp.expect(200);
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    let rotated = body["secret"].as_str().unwrap().to_owned();
    assert_eq!(body["token"]["id"], bot.id.as_str());
    assert_eq!(app.verdict(&bot.secret, &[]).await, "revoked");
    assert_eq!(app.verdict(&rotated, &["droplet:read"]).await, "active");

    // The new secret is the token now: it can rotate again, with a grace period this time.
    let body = app
        .post(
            "/v1/tokens/self/regenerate",
            &rotated,
            &json!({"grace_period": "5m"}),
        )
        .await
        .expect(200);
    let third = body["secret"].as_str().unwrap();
    assert_eq!(app.verdict(&rotated, &[]).await, "active");
    assert_eq!(app.verdict(third, &[]).await, "active");
    app.advance(Duration::minutes(5));
    assert_eq!(app.verdict(&rotated, &[]).await, "revoked");
    assert_eq!(
        app.get("/v1/tokens/self", third).await.expect(200)["token"]["id"],
        bot.id.as_str()
    );
}

#[tokio::test]
async fn rename_changes_only_the_name() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let admin = app.token(&alice, MANAGE).await;
    let t = app.token_named(&alice, "old name", &["droplet:read"]).await;
    let before = app
        .get(&format!("/v1/tokens/{}", t.id), &admin.secret)
        .await
        .expect(200)["token"]
        .clone();

    let body = app
        .patch(
            &format!("/v1/tokens/{}", t.id),
            &admin.secret,
            &json!({"name": "  new name  "}),
        )
        .await
        .expect(200);
    assert_eq!(body["token"]["name"], "new name");
    let after = app
        .get(&format!("/v1/tokens/{}", t.id), &admin.secret)
        .await
        .expect(200)["token"]
        .clone();
    assert_eq!(after["name"], "new name");
    let mut expected = before.clone();
    expected["name"] = json!("new name");
    assert_eq!(after, expected, "only the name changed");
    assert_eq!(app.verdict(&t.secret, &["droplet:read"]).await, "active");
}

#[tokio::test]
async fn list_pages_newest_first() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let admin = app.token(&alice, MANAGE).await;
    let mut ids = vec![admin.id.clone()];
    for i in 0..5 {
        app.advance(Duration::seconds(1));
        ids.push(
            app.token_named(&alice, &format!("t{i}"), &["droplet:read"])
                .await
                .id,
        );
    }
    ids.reverse(); // newest first

    let all = app.get("/v1/tokens", &admin.secret).await.expect(200);
    let listed: Vec<&str> = all["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ids);
    assert_eq!(all["next"], Value::Null);
    assert!(
        all["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["state"] == "active" && t.get("secret").is_none())
    );

    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/tokens?limit=2&after={a}"),
            None => "/v1/tokens?limit=2".to_owned(),
        };
        let page = app.get(&path, &admin.secret).await.expect(200);
        pages += 1;
        let tokens = page["tokens"].as_array().unwrap();
        assert!(tokens.len() <= 2);
        paged.extend(tokens.iter().map(|t| t["id"].as_str().unwrap().to_owned()));
        match page["next"].as_str() {
            Some(next) => {
                assert_eq!(tokens.len(), 2);
                assert_eq!(Some(next), tokens.last().and_then(|t| t["id"].as_str()));
                after = Some(next.to_owned());
            }
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(paged, ids);

    let one = app
        .get("/v1/tokens?limit=1", &admin.secret)
        .await
        .expect(200);
    assert_eq!(one["tokens"].as_array().unwrap().len(), 1);
    assert_eq!(one["next"], ids[0].as_str());
}

#[tokio::test]
async fn audit_shows_the_callers_events_with_actor_and_reason() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let admin = app.token(&alice, MANAGE).await;
    let created = app
        .post(
            "/v1/tokens",
            &admin.secret,
            &json!({"name": "audited", "scopes": ["droplet:read"]}),
        )
        .await
        .expect(201);
    let id = created["token"]["id"].as_str().unwrap().to_owned();
    app.post(
        &format!("/v1/tokens/{id}/regenerate"),
        &admin.secret,
        &json!({"grace_period": "10m"}),
    )
    .await
    .expect(200);
    app.delete(
        &format!("/v1/tokens/{id}"),
        &admin.secret,
        Some(&json!({"reason": "no longer needed"})),
    )
    .await
    .expect(200);

    let audit = app.get("/v1/audit", &admin.secret).await.expect(200);
    let events = audit["events"].as_array().unwrap();
    let about: Vec<&Value> = events
        .iter()
        .filter(|e| e["token_id"] == id.as_str())
        .collect();
    let kinds: Vec<&str> = about.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["token.revoked", "token.regenerated", "token.created"],
        "newest first: {audit}"
    );
    for e in &about {
        assert_eq!(e["actor"]["user"], alice.id.as_str(), "{e}");
        assert_eq!(e["actor"]["token"], admin.id.as_str(), "{e}");
        assert!(
            e["actor"]["label"].as_str().unwrap().contains("alice"),
            "{e}"
        );
        assert_eq!(e["subject_user"], alice.id.as_str());
        assert_eq!(e["ip"], "127.0.0.1", "the client address is recorded: {e}");
        assert_eq!(e["at"], rfc3339(START));
    }
    assert_eq!(about[0]["detail"], "no longer needed");
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seqs:?}"
    );
    // The user's own `user.added` and the operator-made admin token are there too.
    assert!(events.iter().any(|e| e["kind"] == "user.added"));
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "token.created" && e["token_id"] == admin.id.as_str())
    );

    let page = app
        .get("/v1/audit?limit=2", &admin.secret)
        .await
        .expect(200);
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    let next = page["next"].as_i64().unwrap();
    let rest = app
        .get(&format!("/v1/audit?limit=100&before={next}"), &admin.secret)
        .await
        .expect(200);
    assert_eq!(rest["events"].as_array().unwrap().len(), events.len() - 2);
    assert_eq!(rest["next"], Value::Null);
}

#[tokio::test]
async fn audit_needs_audit_read() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let t = app.token(&alice, &["tokens:*"]).await;
    app.get("/v1/audit", &t.secret)
        .await
        .expect_error(403, "insufficient_scope");
}

#[tokio::test]
async fn a_revocation_by_another_process_is_seen_by_the_next_verification() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let t = app.token(&alice, &["droplet:read"]).await;
    // Cached in the server.
    assert_eq!(app.verdict(&t.secret, &["droplet:read"]).await, "active");
    assert_eq!(app.verdict(&t.secret, &["droplet:read"]).await, "active");

    let cli = app.second_process().await;
    let id = TokenId::parse(&t.id).unwrap();
    cli.revoke_token(
        &Caller::operator("root"),
        &id,
        Some("from the command line".to_owned()),
    )
    .await
    .unwrap();
    assert_eq!(app.verdict(&t.secret, &["droplet:read"]).await, "revoked");
    assert_eq!(app.verdict(&t.secret, &[]).await, "revoked");
}

#[tokio::test]
async fn a_regeneration_by_another_process_is_seen_by_the_next_verification() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let t = app.token(&alice, &["droplet:read"]).await;
    assert_eq!(app.verdict(&t.secret, &[]).await, "active");

    let cli = app.second_process().await;
    let id = TokenId::parse(&t.id).unwrap();
    let issued = cli
        .regenerate_token(&Caller::operator("root"), &id, Default::default())
        .await
        .unwrap();
    assert_eq!(app.verdict(&t.secret, &[]).await, "revoked");
    assert_eq!(
        app.verdict(issued.secret.expose(), &["droplet:read"]).await,
        "active"
    );
}

#[tokio::test]
async fn the_deployment_sets_the_prefix_and_may_allow_never() {
    let mut settings = Settings {
        prefix: Prefix::parse("acme").unwrap(),
        ..Settings::default()
    };
    settings.policy.allow_never = true;
    let app = spawn_app_with(settings).await;
    let alice = app.user("alice").await;
    let admin = app.token(&alice, MANAGE).await;
    assert!(admin.secret.starts_with("acme_"), "{}", admin.secret);

    // A token asking for "never" gets its own expiry: nothing it makes outlives it.
    let clamped = app
        .post(
            "/v1/tokens",
            &admin.secret,
            &json!({"name": "forever?", "scopes": ["droplet:read"], "expires": "never"}),
        )
        .await
        .expect(201);
    assert_eq!(
        clamped["token"]["expires_at"],
        rfc3339(START + Duration::days(30))
    );
    // An operator (or a person on the web page) is bound only by the deployment's policy.
    let issued = app
        .keyward
        .create_token(
            &Caller::operator("test"),
            Some(&alice.id),
            TokenName::parse("forever").unwrap(),
            Scopes::parse(&["droplet:read"]).unwrap(),
            Some(ExpiryRequest::Never),
            keyward_core::Limits::default(),
        )
        .await
        .unwrap();
    let secret = issued.secret.expose();
    assert!(
        secret.starts_with("acme_") && secret.len() == 5 + 43 + 6,
        "{secret}"
    );
    assert_eq!(issued.token.expires_at, None);
    assert_eq!(
        issued.token.hint,
        format!("acme_…{}", &secret[secret.len() - 4..])
    );
    app.advance(Duration::days(3650));
    let v = app.verify(secret, &["droplet:read"]).await;
    assert_eq!(v["active"], true, "{v}");
    assert_eq!(v["expires_at"], Value::Null);
    // The operator regenerating keeps "never".
    let regenerated = app
        .keyward
        .regenerate_token(
            &Caller::operator("test"),
            &issued.token.id,
            RegenerateOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(regenerated.token.expires_at, None);
    let id = issued.token.id.as_str();
    let regen = app
        .post_empty(&format!("/v1/tokens/{id}/regenerate"), &admin.secret)
        .await;
    // The admin token (30 days) has long expired.
    regen.expect_error(401, "invalid_token");
    // A fresh admin token may regenerate it, but cannot leave it living longer than itself.
    let admin = app.token(&alice, MANAGE).await;
    let regen = app
        .post_empty(&format!("/v1/tokens/{id}/regenerate"), &admin.secret)
        .await
        .expect(200);
    assert_eq!(
        regen["token"]["expires_at"],
        rfc3339(START + Duration::days(3650 + 30))
    );
}
