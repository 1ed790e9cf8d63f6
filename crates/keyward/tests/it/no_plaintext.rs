//! No plaintext in the logs or at rest (acceptance 2): with the server at debug level (and
//! keyward's own crates at trace), every way a secret reaches keyward — created over HTTP and
//! at the command line, verified, used as a bearer, regenerated, presented revoked, unknown or
//! mistyped — leaves no secret and no 43-character body in the server's logs, the command
//! line's stderr, or any byte of any file of the data dir.

use crate::helpers::{Made, Server, add_user, assert_exit_0, body_of, cli, contains, create_token};
use serde_json::json;
use std::path::Path;

const LOG_FILTER: &str = "debug,keyward=trace,keyward_server=trace,keyward_store=trace,keyward_core=trace,tower_http=trace";

/// Every file under `dir`, recursively, with its bytes.
fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

/// The forms a secret could leak in: whole, its body, and its body as UTF-16.
fn forms(secret: &str) -> Vec<(&'static str, Vec<u8>)> {
    let body = body_of(secret);
    vec![
        ("secret", secret.as_bytes().to_vec()),
        ("body", body.as_bytes().to_vec()),
        (
            "UTF-16 body",
            body.encode_utf16().flat_map(u16::to_le_bytes).collect(),
        ),
    ]
}

/// The text around the first occurrence of `needle`, with the needle itself masked, so a
/// failure says where the leak is without printing the secret.
fn where_it_is(haystack: &[u8], needle: &[u8]) -> String {
    let Some(at) = haystack.windows(needle.len()).position(|w| w == needle) else {
        return String::new();
    };
    let start = haystack[..at]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1)
        .max(at.saturating_sub(300));
    let end = haystack[at + needle.len()..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(haystack.len(), |p| at + needle.len() + p)
        .min(at + needle.len() + 300);
    format!(
        "{}<SECRET>{}",
        String::from_utf8_lossy(&haystack[start..at]),
        String::from_utf8_lossy(&haystack[at + needle.len()..end])
    )
}

/// A secret with one body character changed: well-formed but for its checksum.
fn mistyped(secret: &str) -> String {
    let mut chars: Vec<char> = secret.chars().collect();
    chars[10] = if chars[10] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

#[tokio::test]
async fn no_secret_reaches_the_logs_or_the_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start(&dir, &[("KEYWARD_LOG", LOG_FILTER)]);
    let api = &server.api;
    let mut secrets: Vec<String> = Vec::new();
    let mut cli_stderr = String::new();
    let mut ids_in_server_logs: Vec<String> = Vec::new();

    add_user(&dir, "alice");
    let (admin, out) = create_token(&dir, "alice", "admin", &["tokens:*", "droplet:*"]);
    cli_stderr.push_str(&out.stderr);
    secrets.push(admin.secret.clone());
    let plain = cli(
        &dir,
        &[
            "token",
            "create",
            "--user",
            "alice",
            "--name",
            "plain",
            "--scope",
            "droplet:read",
        ],
        None,
    );
    let plain_secret = plain.ok().trim_end().to_owned();
    cli_stderr.push_str(&plain.stderr);
    secrets.push(plain_secret.clone());

    // Created over HTTP.
    let mut http: Vec<Made> = Vec::new();
    for name in ["h1", "h2", "h3"] {
        let m = api
            .create(&admin.secret, name, &["droplet:read", "tokens:read"])
            .await;
        secrets.push(m.secret.clone());
        ids_in_server_logs.push(m.id.clone());
        http.push(m);
    }

    // Verified, with enough and too few scopes.
    for s in secrets.clone() {
        api.assert_active(&s).await;
        api.verify(&s, &["droplet:delete"]).await;
    }
    // Used as bearer for management calls.
    api.get("/v1/tokens", &admin.secret).await.expect(200);
    api.get("/v1/tokens/self", &http[0].secret)
        .await
        .expect(200);
    api.get(&format!("/v1/tokens/{}", http[1].id), &admin.secret)
        .await
        .expect(200);
    api.call(
        reqwest::Method::PATCH,
        &format!("/v1/tokens/{}", http[1].id),
        Some(&admin.secret),
        Some(&json!({"name": "renamed"})),
    )
    .await
    .expect(200);
    api.get("/v1/audit", &admin.secret).await;

    // Regenerated over HTTP (with a grace period, so two hashes are stored), by itself, and at
    // the command line.
    let r = api
        .post(
            &format!("/v1/tokens/{}/regenerate", http[0].id),
            &admin.secret,
            &json!({"grace_period": "1h"}),
        )
        .await
        .expect(200);
    let h0b = r["secret"].as_str().unwrap().to_owned();
    secrets.push(h0b.clone());
    api.assert_active(&h0b).await;
    api.assert_active(&http[0].secret).await;
    let r = api
        .post("/v1/tokens/self/regenerate", &http[2].secret, &json!({}))
        .await
        .expect(200);
    let h2b = r["secret"].as_str().unwrap().to_owned();
    secrets.push(h2b.clone());
    let regen = cli(&dir, &["token", "regenerate", &http[1].id], None);
    let h1b = regen.ok().trim_end().to_owned();
    cli_stderr.push_str(&regen.stderr);
    secrets.push(h1b.clone());
    api.assert_active(&h1b).await;

    // Presented revoked, replaced, unknown (well-formed, from another data dir) and mistyped.
    api.delete(&format!("/v1/tokens/{}", http[2].id), &admin.secret)
        .await
        .expect(200);
    api.assert_inactive(&h2b, "revoked").await;
    assert_eq!(api.get("/v1/tokens", &h2b).await.status, 401);
    api.assert_inactive(&http[2].secret, "revoked").await;
    api.assert_inactive(&http[1].secret, "revoked").await;
    let elsewhere = tmp.path().join("elsewhere");
    add_user(&elsewhere, "bob");
    let (stranger, out) = create_token(&elsewhere, "bob", "x", &["droplet:read"]);
    cli_stderr.push_str(&out.stderr);
    secrets.push(stranger.secret.clone());
    api.assert_inactive(&stranger.secret, "unknown").await;
    assert_eq!(api.get("/v1/tokens", &stranger.secret).await.status, 401);
    let typo = mistyped(&admin.secret);
    secrets.push(typo.clone());
    api.assert_inactive(&typo, "malformed").await;
    assert_eq!(api.get("/v1/tokens", &typo).await.status, 401);
    // In a body the server refuses.
    api.call(
        reqwest::Method::POST,
        "/v1/verify",
        None,
        Some(&json!({"token": admin.secret, "unexpected": true})),
    )
    .await;
    // Revoked at the command line while the server runs.
    let out = cli(&dir, &["token", "revoke", &ids_in_server_logs[0]], None);
    out.ok();
    cli_stderr.push_str(&out.stderr);
    api.assert_inactive(&h0b, "revoked").await;

    let ended = server.stop();
    assert_exit_0(&ended);
    let logs = ended.logs;

    // The logs are populated enough that a leak would show.
    assert!(logs.contains("DEBUG"), "no debug line in the logs:\n{logs}");
    assert!(logs.lines().count() > 20, "too few log lines:\n{logs}");
    for id in &ids_in_server_logs {
        assert!(
            logs.contains(id.as_str()),
            "token id {id} not logged:\n{logs}"
        );
    }

    let mut places: Vec<(String, Vec<u8>)> = vec![
        ("the server's stderr".to_owned(), logs.into_bytes()),
        (
            "the command line's stderr".to_owned(),
            cli_stderr.into_bytes(),
        ),
    ];
    let files = files_under(&dir);
    let all_files: Vec<u8> = files.iter().flat_map(|(_, b)| b.clone()).collect();
    for id in &ids_in_server_logs {
        assert!(
            contains(&all_files, id.as_bytes()),
            "token id {id} not found in the data dir: the scan reads nothing useful"
        );
    }
    // The database, and the verification cache the clean shutdown wrote beside it.
    for file in ["keyward.db", "keyward.db-cache"] {
        assert!(
            files.iter().any(|(name, _)| name.ends_with(file)),
            "{file}: {:?}",
            files.iter().map(|(n, _)| n).collect::<Vec<_>>()
        );
    }
    places.extend(files);

    for secret in &secrets {
        for (form, needle) in forms(secret) {
            for (place, bytes) in &places {
                assert!(
                    !contains(bytes, &needle),
                    "the {form} of a secret (hint …{}) is in {place}: {}",
                    &secret[secret.len() - 4..],
                    where_it_is(bytes, &needle)
                );
            }
        }
    }
}

/// A client that puts a secret where an id belongs (`GET /v1/tokens/kwp_...`, a copy-paste
/// slip) or in a query string must not have it written to the logs either: request paths are
/// logged at debug level.
#[tokio::test]
async fn a_secret_misplaced_in_the_url_is_not_logged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    add_user(dir, "alice");
    let (admin, _) = create_token(dir, "alice", "admin", &["tokens:*"]);
    let server = Server::start(dir, &[("KEYWARD_LOG", LOG_FILTER)]);
    let api = &server.api;
    let r = api
        .get(&format!("/v1/tokens/{}", admin.secret), &admin.secret)
        .await;
    assert_eq!(r.status, 404, "{r:?}");
    api.get(&format!("/v1/tokens?after={}", admin.secret), &admin.secret)
        .await;
    api.call(
        reqwest::Method::GET,
        &format!("/v1/verify?token={}", admin.secret),
        None,
        None,
    )
    .await;
    let ended = server.stop();
    assert_exit_0(&ended);
    assert!(ended.logs.contains("DEBUG"), "{}", ended.logs);
    for (form, needle) in forms(&admin.secret) {
        let logs = ended.logs.as_bytes();
        assert!(
            !contains(logs, &needle),
            "the {form} of a secret sent in a URL is in the server's logs: {}",
            where_it_is(logs, &needle)
        );
    }
}
