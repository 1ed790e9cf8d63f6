//! Configuration as the binary reads it: environment, config file, the data dir and key files
//! it creates, and a one-line error with exit status 2 for anything unusable.

use crate::helpers::{
    Out, Server, add_user, assert_exit_0, cli, cli_env, create_token, is_secret, listed,
};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn the_token_prefix_comes_from_the_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let acme = [("KEYWARD_TOKEN_PREFIX", "acme")];
    add_user(dir, "alice");
    let out = cli_env(
        dir,
        &acme,
        &[
            "token",
            "create",
            "--user",
            "alice",
            "--name",
            "x",
            "--scope",
            "tokens:*",
            "--scope",
            "droplet:read",
        ],
        None,
    );
    let secret = out.ok().trim_end().to_owned();
    assert!(is_secret(&secret, "acme"), "{out:?}");
    assert_eq!(cli(dir, &["token", "check", &secret], None).code(), Some(0));

    // A server with the same setting issues acme_ tokens too, and verifies both.
    let server = Server::start(dir, &acme);
    let made = server.api.create(&secret, "y", &["droplet:read"]).await;
    assert!(is_secret(&made.secret, "acme"), "{made:?}");
    server.api.assert_active(&secret).await;
    server.api.assert_active(&made.secret).await;
    assert_exit_0(&server.stop());
}

/// A configuration error: status 2, one line, nothing else, and no server started.
#[track_caller]
fn assert_config_error(out: &Out, mentions: &str) {
    let line = out.failed_cleanly(2);
    assert!(
        line.contains(mentions),
        "{line:?} should mention {mentions:?}"
    );
}

#[test]
fn an_unknown_config_key_is_refused_with_status_2() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let file = tmp.path().join("keyward.toml");
    std::fs::write(&file, "version = 1\nlistn = \"127.0.0.1:9999\"\n").unwrap();
    let config = file.to_str().unwrap();

    assert_config_error(
        &cli(&dir, &["--config", config, "token", "list"], None),
        "listn",
    );
    assert_config_error(&cli(&dir, &["--config", config, "serve"], None), "listn");
    assert_config_error(
        &cli_env(&dir, &[("KEYWARD_CONFIG", config)], &["user", "list"], None),
        "listn",
    );
    // The data dir's own keyward.toml is read too.
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("keyward.toml"),
        "version = 1\n[catalog]\ndroplet = [\"read\"]\nfoo = 1\n",
    )
    .unwrap();
    let out = cli(&dir, &["token", "list"], None);
    out.failed_cleanly(2);
    // keyward's own resources cannot be declared: `users:read` must never mean two things.
    std::fs::write(
        dir.join("keyward.toml"),
        "version = 1\n[catalog]\nusers = [\"read\"]\n",
    )
    .unwrap();
    let line = cli(&dir, &["token", "list"], None)
        .failed_cleanly(2)
        .to_owned();
    assert!(line.contains("keyward's own resource"), "{line}");

    // A file without a version, or of another version.
    std::fs::write(&file, "listen = \"127.0.0.1:9999\"\n").unwrap();
    assert_config_error(
        &cli(tmp.path(), &["--config", config, "user", "list"], None),
        "version",
    );
    std::fs::write(&file, "version = 2\n").unwrap();
    assert_config_error(
        &cli(tmp.path(), &["--config", config, "user", "list"], None),
        "version",
    );
}

#[test]
fn a_bad_server_key_is_refused_with_status_2_without_echoing_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let not_hex = "zz".repeat(32);
    let too_short = "00ff".repeat(4);
    for bad in [not_hex.as_str(), too_short.as_str()] {
        let env = [("KEYWARD_SERVER_KEY", bad)];
        for args in [
            &["user", "list"][..],
            &["serve", "--listen", "127.0.0.1:0"][..],
        ] {
            let out = cli_env(&dir, &env, args, None);
            assert_config_error(&out, "KEYWARD_SERVER_KEY");
            assert!(!out.stderr.contains(bad), "the key is echoed: {out:?}");
        }
    }
}

#[tokio::test]
async fn the_data_dir_is_owner_only_and_the_key_file_0600() {
    let tmp = tempfile::tempdir().unwrap();

    // Created by the command line ...
    let dir = tmp.path().join("nested").join("data");
    add_user(&dir, "alice");
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("server.key")), 0o600);

    // ... and by the server.
    let dir = tmp.path().join("served");
    let server = Server::start(&dir, &[]);
    assert_eq!(mode(&dir), 0o700);
    let key = dir.join("server.key");
    assert_eq!(mode(&key), 0o600);
    let key_text = std::fs::read_to_string(&key).unwrap();
    assert_exit_0(&server.stop());
    assert!(!key_text.trim().is_empty(), "the key file holds the key");

    // A key file others can read is refused, rather than used.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = cli(&dir, &["user", "list"], None);
    let line = out.failed_cleanly(2);
    assert!(line.contains("chmod 600"), "{line}");
    assert!(
        !out.stderr.contains(key_text.trim()),
        "the key is echoed: {out:?}"
    );
}

/// Logs written to a pipe or a file (systemd, Docker, a log shipper) are plain text: terminal
/// colour codes there are noise at best and break parsers at worst.
#[test]
fn logs_written_to_a_pipe_carry_no_terminal_escape_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &[]);
    let ended = server.stop();
    assert_exit_0(&ended);
    assert!(ended.logs.contains("keyward started"), "{ended:?}");
    assert!(
        !ended.logs.contains('\u{1b}'),
        "ANSI escape codes in logs written to a pipe: {:?}",
        ended.logs.lines().next()
    );
}

#[tokio::test]
async fn the_http_and_metrics_settings_reach_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    add_user(dir, "ops");
    let (scraper, _) = create_token(dir, "ops", "prometheus", &["metrics:read"]);
    let (other, _) = create_token(dir, "ops", "ci", &["droplet:read"]);
    // A free port for /metrics: the main listener's port is the one printed, this one is ours.
    let metrics_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    std::fs::write(
        dir.join("keyward.toml"),
        format!(
            "version = 1\n\
             [http]\nheader_read_timeout = \"5s\"\nidle_timeout = \"1m\"\n\
             request_timeout = \"20s\"\nmax_connections = 100\n\
             [metrics]\nlisten = \"{metrics_addr}\"\nrequire_token = true\n"
        ),
    )
    .unwrap();

    let server = Server::start(dir, &[]);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let get = |url: String, bearer: Option<&str>| {
        let mut request = client.get(url);
        if let Some(b) = bearer {
            request = request.bearer_auth(b);
        }
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let metrics = format!("http://{metrics_addr}/metrics");

    let (status, body) = get(format!("{}/metrics", server.base), Some(&scraper.secret)).await;
    assert_eq!(
        status, 404,
        "the main listener does not serve /metrics: {body}"
    );
    assert_eq!(get(metrics.clone(), None).await.0, 401);
    assert_eq!(get(metrics.clone(), Some(&other.secret)).await.0, 403);
    let (status, body) = get(metrics, Some(&scraper.secret)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("keyward_http_connections_open"), "{body}");
    assert_exit_0(&server.stop());
}

#[test]
fn bad_http_and_metrics_settings_are_refused_with_status_2() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let serve = ["serve", "--listen", "127.0.0.1:0"];
    for (var, value) in [
        ("KEYWARD_HTTP_HEADER_READ_TIMEOUT", "soon"),
        ("KEYWARD_HTTP_IDLE_TIMEOUT", "0s"),
        ("KEYWARD_HTTP_REQUEST_TIMEOUT", "-1s"),
        ("KEYWARD_HTTP_MAX_CONNECTIONS", "0"),
        ("KEYWARD_METRICS_LISTEN", "localhost"),
        ("KEYWARD_METRICS_REQUIRE_TOKEN", "maybe"),
    ] {
        assert_config_error(&cli_env(&dir, &[(var, value)], &serve, None), var);
    }

    let file = tmp.path().join("keyward.toml");
    let config = file.to_str().unwrap();
    for (text, mentions) in [
        ("[http]\nidle_timeout = \"forever\"\n", "http.idle_timeout"),
        ("[http]\nmax_connections = 0\n", "http.max_connections"),
        ("[http]\ntimeout = \"1s\"\n", "timeout"),
        ("[metrics]\nlisten = \"127.0.0.1\"\n", "line 3"),
        ("[metrics]\nrequire_tokens = true\n", "require_tokens"),
    ] {
        std::fs::write(&file, format!("version = 1\n{text}")).unwrap();
        assert_config_error(&cli(&dir, &["--config", config, "serve"], None), mentions);
    }
}

#[test]
fn migrate_says_which_migrations_it_applied() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let first = cli(dir, &["migrate"], None);
    let text = first.ok();
    assert!(
        text.starts_with("applied 11 migrations to sqlite://"),
        "{text}"
    );
    assert!(
        text.contains("0001_initial")
            && text.contains("0006_events")
            && text.contains("0008_expiry_notices")
            && text.contains("0009_token_limits")
            && text.contains("0010_recent_use")
            && text.contains("0011_secret_validity")
            && text.contains("0012_cache_seal"),
        "{text}"
    );
    let again = cli(dir, &["migrate"], None);
    assert!(
        again.ok().contains("already up to date; nothing to apply"),
        "{again:?}"
    );
}

#[test]
fn a_catalog_naming_keywards_own_resources_is_refused_at_load() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for (resource, line) in [
        ("tokens", "tokens = [\"read\", \"mint\"]"),
        ("audit", "audit = [\"read\"]"),
        ("users", "users = [\"list\"]"),
        ("metrics", "metrics = [\"read\"]"),
    ] {
        let file = dir.join("keyward.toml");
        std::fs::write(
            &file,
            format!("version = 1\n[catalog]\nrepo = [\"read\"]\n{line}\n"),
        )
        .unwrap();
        for args in [&["user", "list"][..], &["serve", "--listen", "127.0.0.1:0"]] {
            let out = cli(dir, args, None);
            let message = out.failed_cleanly(2);
            assert!(
                message.contains("[catalog]")
                    && message.contains(&format!("\"{resource}\" is keyward's own resource")),
                "{args:?}: {message}"
            );
        }
    }
}

#[tokio::test]
async fn serve_warns_loudly_when_the_catalog_is_the_built_in_sample() {
    let tmp = tempfile::tempdir().unwrap();
    let sample = tmp.path().join("sample");
    let server = Server::start(&sample, &[]);
    // Written before the listening line, but read from the pipe by another thread: wait for it.
    let mut logs = server.logs();
    let waited = std::time::Instant::now();
    while !logs.contains("keyward started") && waited.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(20));
        logs = server.logs();
    }
    let warning = logs
        .lines()
        .find(|l| l.contains("WARN") && l.contains("[catalog]"))
        .unwrap_or_else(|| panic!("no warning about the sample catalog: {logs}"));
    assert!(
        warning.contains("SAMPLE") && warning.contains("droplet, volume, account"),
        "{warning}"
    );
    drop(server);

    let own = tmp.path().join("own");
    std::fs::create_dir_all(&own).unwrap();
    std::fs::write(
        own.join("keyward.toml"),
        "version = 1\n[catalog]\nrepo = [\"read\", \"write\"]\n",
    )
    .unwrap();
    let server = Server::start(&own, &[]);
    let waited = std::time::Instant::now();
    while !server.logs().contains("keyward started") && waited.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        server.logs().contains("keyward started"),
        "{}",
        server.logs()
    );
    assert!(!server.logs().contains("SAMPLE"), "{}", server.logs());
}

#[tokio::test]
async fn trusted_proxies_reach_the_server_and_a_bad_one_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    add_user(dir, "alice");
    let (behind, _) = create_token(dir, "alice", "behind", &["droplet:read"]);
    let (direct, _) = create_token(dir, "alice", "direct", &["droplet:read"]);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let call = |base: &str, secret: &str| {
        client
            .get(format!("{base}/v1/tokens/self"))
            .bearer_auth(secret)
            .header("x-forwarded-for", "203.0.113.9")
            .send()
    };

    // This test is the trusted proxy; the address it forwards for is the token's last use.
    let server = Server::start(dir, &[("KEYWARD_TRUSTED_PROXIES", "127.0.0.1/32")]);
    assert_eq!(
        call(&server.base, &behind.secret).await.unwrap().status(),
        200
    );
    assert_exit_0(&server.stop());
    assert_eq!(listed(dir, &behind.id)["last_used_ip"], "203.0.113.9");

    // Trusting no one, the same header changes nothing.
    let server = Server::start(dir, &[]);
    assert_eq!(
        call(&server.base, &direct.secret).await.unwrap().status(),
        200
    );
    assert_exit_0(&server.stop());
    assert_eq!(listed(dir, &direct.id)["last_used_ip"], "127.0.0.1");

    let serve = ["serve", "--listen", "127.0.0.1:0"];
    assert_config_error(
        &cli_env(
            dir,
            &[("KEYWARD_TRUSTED_PROXIES", "10.0.0.0/8,proxy")],
            &serve,
            None,
        ),
        "KEYWARD_TRUSTED_PROXIES: \"proxy\" is not an IP address",
    );
}
