//! The README's quick start, step by step, against the real binary (acceptance 9), including
//! its promise that a revocation from the command line is seen by the running server's very
//! next verification (acceptance 8), and its end: the first admin signed in to the web page,
//! generating a token there (issue 17).

use crate::helpers::{Server, cli, is_secret, listed};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

fn at(v: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(v.as_str().unwrap(), &Rfc3339).unwrap()
}

#[tokio::test]
async fn the_readme_quick_start_walk_works_as_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keyward-data");
    let server = Server::start(&dir, &[]);
    let api = &server.api;

    // keyward user add alice --admin --password-stdin (a pipe here; a terminal is asked twice,
    // see users_cli.rs)
    let out = cli(
        &dir,
        &["user", "add", "alice", "--admin", "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
    );
    assert!(out.ok().starts_with("added admin alice (usr_"), "{out:?}");

    // TOKEN=$(keyward token create --user alice --name laptop --scope 'tokens:*' ...)
    let out = cli(
        &dir,
        &[
            "token",
            "create",
            "--user",
            "alice",
            "--name",
            "laptop",
            "--scope",
            "tokens:*",
            "--scope",
            "droplet:read",
            "--expires",
            "30d",
        ],
        None,
    );
    let stdout = out.ok();
    let token = stdout.strip_suffix('\n').expect("one line");
    assert!(
        is_secret(token, "kwp"),
        "stdout is the secret alone: {stdout:?}"
    );
    assert!(
        out.stderr.contains("will not be shown again"),
        "the warning goes to stderr: {out:?}"
    );
    assert!(
        !out.stderr.contains(token),
        "the secret is not on stderr: {out:?}"
    );

    // curl localhost:8080/v1/verify -d '{"token": ..., "scopes": ["droplet:read"]}'
    let v = api.verify(token, &["droplet:read"]).await;
    assert_eq!(v["active"], true, "{v}");
    assert_eq!(v["owner"]["name"], "alice", "{v}");
    assert!(
        v["owner"]["id"].as_str().unwrap().starts_with("usr_"),
        "{v}"
    );
    let id = v["token_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("tok_"), "{v}");
    let mut scopes: Vec<&str> = v["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    scopes.sort_unstable();
    assert_eq!(scopes, ["droplet:read", "tokens:*"], "{v}");
    let expires_at = at(&v["expires_at"]);

    // ... with droplet:delete
    assert_eq!(
        api.verify(token, &["droplet:delete"]).await,
        json!({"active": false, "reason": "insufficient_scope"})
    );

    // The token manages its owner's tokens through the API.
    let page = api.get("/v1/tokens", token).await.expect(200);
    let listed_ids: Vec<&str> = page["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed_ids, [id.as_str()], "{page}");
    assert_eq!(page["tokens"][0]["state"], "active", "{page}");
    assert!(
        !page.to_string().contains(token),
        "a listing never holds a secret"
    );
    let created = api
        .post(
            "/v1/tokens",
            token,
            &json!({"name": "ci", "scopes": ["droplet:read"], "expires": "30d"}),
        )
        .await;
    assert_eq!(created.cache_control.as_deref(), Some("no-store"));
    let created = created.expect(201);
    let ci_secret = created["secret"].as_str().unwrap().to_owned();
    let ci_id = created["token"]["id"].as_str().unwrap().to_owned();
    assert!(is_secret(&ci_secret, "kwp"), "{created}");
    assert_eq!(
        api.assert_active(&ci_secret).await["token_id"],
        ci_id.as_str()
    );

    // keyward token list --user alice (the table), and --json.
    let table = cli(&dir, &["token", "list", "--user", "alice"], None);
    let table = table.ok();
    let line = table.lines().find(|l| l.starts_with(&id)).expect("listed");
    assert!(
        line.contains("laptop") && line.contains("active") && line.contains("alice"),
        "{table}"
    );
    // The hint column, as the README says: the prefix and the last four characters.
    assert!(table.lines().next().unwrap().contains("HINT"), "{table}");
    assert!(
        line.contains(&format!("kwp_…{}", &token[token.len() - 4..])),
        "{table}"
    );
    assert!(!table.contains(token) && !table.contains(&ci_secret));
    let record = listed(&dir, &id);
    assert_eq!(record["name"], "laptop", "{record}");
    assert_eq!(record["owner"], v["owner"]["id"], "{record}");
    assert_eq!(record["state"], "active", "{record}");
    assert_eq!(
        record["hint"],
        format!("kwp_…{}", &token[token.len() - 4..])
    );
    assert!(record.get("secret").is_none(), "{record}");
    // 30d from its creation, as asked, and the server agrees with the database.
    assert_eq!(at(&record["expires_at"]), expires_at, "{record}");
    assert_eq!(
        (expires_at - at(&record["created_at"])).whole_days(),
        30,
        "{record}"
    );

    // keyward token revoke ID --reason "laptop lost", then at once the server's next check.
    let out = cli(
        &dir,
        &["token", "revoke", &id, "--reason", "laptop lost"],
        None,
    );
    assert!(out.ok().contains(&id), "{out:?}");
    assert_eq!(
        api.verify(token, &[]).await,
        json!({"active": false, "reason": "revoked"}),
        "the running server's very next verification sees the CLI's revocation"
    );
    // Not just verification: the revoked token no longer authenticates management calls.
    assert_eq!(api.get("/v1/tokens", token).await.status, 401);
    // Only that token: the one it made is untouched.
    api.assert_active(&ci_secret).await;

    // keyward audit --user alice (--json here, to read it).
    let events = cli(&dir, &["audit", "--user", "alice", "--json"], None).json();
    let events = events.as_array().unwrap();
    let find = |kind: &str, token_id: &str| {
        events
            .iter()
            .find(|e| e["kind"] == kind && e["token_id"] == token_id)
            .unwrap_or_else(|| panic!("no {kind} event for {token_id}: {events:?}"))
    };
    let made = find("token.created", &id);
    assert!(
        made["actor"]["label"]
            .as_str()
            .unwrap()
            .contains("it-operator"),
        "{made}"
    );
    find("token.created", &ci_id);
    let revoked = find("token.revoked", &id);
    assert_eq!(revoked["detail"], "laptop lost", "{revoked}");
    assert_eq!(revoked["actor"]["label"], "cli (it-operator)", "{revoked}");
    let table = cli(&dir, &["audit", "--user", "alice"], None);
    assert!(table.ok().contains("laptop lost"), "{table:?}");
    // Newest first.
    assert_eq!(events[0]["kind"], "token.revoked", "{events:?}");

    let record = listed(&dir, &id);
    assert_eq!(record["state"], "revoked", "{record}");
    assert_eq!(record["revoke_reason"], "laptop lost", "{record}");

    // Last: open http://127.0.0.1:8080/login, sign in as alice, generate a token there.
    let web = reqwest::Client::builder()
        .cookie_store(true)
        .no_proxy()
        .build()
        .unwrap();
    let base = &server.base;
    let login = web.get(format!("{base}/login")).send().await.unwrap();
    assert_eq!(login.status(), 200);
    let login = login.text().await.unwrap();
    let signed_in = web
        .post(format!("{base}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("csrf", &hidden(&login, "csrf")),
            ("username", "alice"),
            ("password", PASSWORD),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(
        signed_in.url().path(),
        "/tokens",
        "signed in, on the tokens page"
    );
    assert_eq!(signed_in.status(), 200);
    let new_page = web
        .get(format!("{base}/tokens/new"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let once = web
        .post(format!("{base}/tokens/new"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("csrf", &hidden(&new_page, "csrf")),
            ("nonce", &hidden(&new_page, "nonce")),
            ("name", "from the page"),
            ("expires", "30"),
            ("scope", "droplet:read"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(once.status(), 200);
    let once = once.text().await.unwrap();
    let at = once.find("kwp_").expect("the secret is shown once");
    let from_page = &once[at..at + token.len()];
    assert!(is_secret(from_page, "kwp"), "{from_page}");
    let v = api.assert_active(from_page).await;
    assert_eq!(v["owner"]["name"], "alice", "{v}");
}

/// The password the quick start gives alice.
const PASSWORD: &str = "correct horse battery staple";

/// The value of the hidden field `name` in a page.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name}: {html}"))
        + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

/// `application/x-www-form-urlencoded`, as a browser sends a form.
fn form(fields: &[(&str, &str)]) -> String {
    let enc = |text: &str| -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                    char::from(b).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}
