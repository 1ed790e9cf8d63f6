//! Regression tests, against the real binary, for what an outside attack found (issue 10):
//! memory under a flood of sign-ins, and names that spoof what the command line prints.

use crate::helpers::{Server, add_user, cli, create_token};
use std::net::{IpAddr, Ipv4Addr};

const PASSWORD: &str = "correct horse battery staple";

/// The peak resident memory of process `pid` so far (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// The sign-in form's cookie and CSRF field.
async fn sign_in_form(client: &reqwest::Client, base: &str) -> (String, String) {
    let resp = client.get(format!("{base}/login")).send().await.unwrap();
    let cookie = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|c| c.starts_with("keyward_login="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let html = resp.text().await.unwrap();
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).unwrap() + marker.len();
    let csrf = html[start..].split('"').next().unwrap().to_owned();
    (cookie, csrf)
}

/// Finding 4: Argon2 had no concurrency bound, and 150 parallel sign-ins took the server from
/// 35 MB to 1.39 GB. Passwords are now checked in a pool of one per core with a short queue;
/// memory stays flat whether the sign-ins come from one address or from many.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_parallel_sign_ins_keeps_memory_flat() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = cli(
        &data,
        &["user", "add", "alice", "--password-stdin"],
        Some(PASSWORD),
    );
    assert!(out.ok().contains("alice"), "{out:?}");
    let server = Server::start(&data, &[]);
    let base = server.base.clone();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let (cookie, csrf) = sign_in_form(&client, &base).await;
    let before = peak_rss(server.pid());

    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    // From many addresses (127.0.0.2 …), with names that are no user's: nothing but the pool
    // stands between them and Argon2. Then from one address, at a real account.
    for many in [true, false] {
        let attempts: Vec<_> = (0..150u8)
            .map(|i| {
                let source = if many {
                    IpAddr::V4(Ipv4Addr::new(127, 0, 1, i))
                } else {
                    IpAddr::V4(Ipv4Addr::LOCALHOST)
                };
                let client = reqwest::Client::builder()
                    .no_proxy()
                    .local_address(source)
                    .build()
                    .unwrap();
                let name = if many {
                    format!("nobody{i}")
                } else {
                    "alice".to_owned()
                };
                let (base, cookie, csrf) = (base.clone(), cookie.clone(), csrf.clone());
                tokio::spawn(async move {
                    let body = format!("csrf={csrf}&username={name}&password=wrong+password+{i}");
                    let resp = client
                        .post(format!("{base}/login"))
                        .header("content-type", "application/x-www-form-urlencoded")
                        .header("cookie", cookie)
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    let status = resp.status().as_u16();
                    if status == 503 || status == 429 {
                        assert!(resp.headers().contains_key("retry-after"), "{status}");
                    }
                    status
                })
            })
            .collect();
        for attempt in attempts {
            *statuses.entry(attempt.await.unwrap()).or_default() += 1;
        }
    }
    let after = peak_rss(server.pid());
    eprintln!(
        "peak RSS {} MiB before, {} MiB after 300 parallel sign-ins; answers {statuses:?}",
        before >> 20,
        after >> 20
    );
    assert!(after < 300 << 20, "peak RSS {} MiB", after >> 20);
    assert!(
        statuses.keys().all(|s| [401, 429, 503].contains(s)),
        "{statuses:?}"
    );
    // From one address at one account, at most the throttle's limit is ever checked.
    assert!(
        statuses.get(&429).copied().unwrap_or(0) >= 140,
        "{statuses:?}"
    );
    drop(server);
}

/// Finding 10: U+202E in a name made `token list` show a spoofed name. New names refuse such
/// characters; names already stored (by an older keyward) are printed escaped.
#[test]
fn the_command_line_escapes_names_that_would_spoof_the_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    add_user(&data, "alice");
    let out = cli(
        &data,
        &[
            "token",
            "create",
            "--user",
            "alice",
            "--name",
            "invoice\u{202E}fdp.exe",
            "--scope",
            "droplet:read",
        ],
        None,
    );
    let message = out.failed_cleanly(1);
    assert!(message.contains("formatting"), "{message}");

    let (made, _) = create_token(&data, "alice", "plain", &["droplet:read"]);
    let db = data.join("keyward.db");
    rename_behind_keywards_back(&db, &made.id, "invoice\u{202E}fdp.exe");
    let list = cli(&data, &["token", "list"], None);
    let text = list.ok();
    assert!(!text.contains('\u{202E}'), "{text}");
    assert!(text.contains("invoice\\u{202E}fdp.exe"), "{text}");
    let revoked = cli(&data, &["token", "revoke", &made.id], None);
    let text = revoked.ok();
    assert!(
        !text.contains('\u{202E}') && text.contains("\\u{202E}"),
        "{text}"
    );
}

/// Renames a token behind keyward's back, as an older version could have stored it.
fn rename_behind_keywards_back(db: &std::path::Path, id: &str, name: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use sqlx::ConnectOptions as _;
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(db)
            .connect()
            .await
            .unwrap();
        sqlx::query("UPDATE tokens SET name = ?1 WHERE id = ?2")
            .bind(name)
            .bind(id)
            .execute(&mut conn)
            .await
            .unwrap();
    });
}
