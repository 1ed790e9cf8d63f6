//! Single sign-on against a real OpenID provider: panva's `oidc-provider` (Node.js, pinned in
//! `tests/oidc/package-lock.json`, installed with `npm ci` there) run from the test, and the real
//! `keyward serve`, driven over HTTP the way a browser goes: to keyward, to the provider's sign-in
//! page, and back.
//!
//! Without Node.js or the installed package the tests print a notice and pass, unless
//! `KEYWARD_REQUIRE_OIDC=1` (as in CI), which makes that a failure.

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Response, StatusCode};
use serde_json::Value;
use std::io::{BufRead as _, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use tempfile::TempDir;

use crate::helpers::{Server, cli};

const CLIENT_SECRET: &str = "keyward-test-client-secret";
const PROVIDER_NAME: &str = "Test SSO";

/// The provider's directory: `provider.js`, its package files and `node_modules`.
fn provider_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// Whether the provider can run here; if not, says why (and fails under `KEYWARD_REQUIRE_OIDC`).
pub fn provider_available() -> bool {
    let node = Command::new(node_bin())
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let installed = provider_dir()
        .join("node_modules/oidc-provider/package.json")
        .is_file();
    if node && installed {
        return true;
    }
    let why = if node {
        "oidc-provider is not installed (run `npm ci` in crates/keyward/tests/oidc)"
    } else {
        "node is not installed"
    };
    assert!(
        std::env::var_os("KEYWARD_REQUIRE_OIDC").is_none_or(|v| v != "1"),
        "KEYWARD_REQUIRE_OIDC=1 but {why}"
    );
    eprintln!("skipped: {why}");
    false
}

fn node_bin() -> String {
    std::env::var("KEYWARD_NODE").unwrap_or_else(|_| "node".to_owned())
}

/// The OpenID provider, killed when dropped.
pub struct Provider {
    child: Child,
    /// Its issuer, `http://127.0.0.1:PORT`.
    pub issuer: String,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Provider {
    /// Starts the provider with keyward's client registered for `redirect_uri`.
    pub fn start(redirect_uri: &str) -> Self {
        let mut child = Command::new(node_bin())
            .arg("provider.js")
            .current_dir(provider_dir())
            .env("KEYWARD_OIDC_REDIRECT_URI", redirect_uri)
            .env("KEYWARD_OIDC_CLIENT_SECRET", CLIENT_SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the OpenID provider");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        // Drained to the end: the provider prints notices later, and a closed pipe would kill it.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the provider says where it listens");
        let issuer = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected line from the provider: {line:?}"))
            .to_owned();
        Self { child, issuer }
    }
}

/// keyward and the provider, set up for each other.
pub struct Stage {
    /// keyward's data dir.
    pub dir: PathBuf,
    _temp: TempDir,
    /// The provider (kept running).
    pub provider: Provider,
    /// keyward.
    pub server: Server,
    /// keyward's base URL.
    pub base: String,
    /// A client for keyward that follows no redirects and keeps no cookies: each test says
    /// which cookies a "browser" sends.
    pub http: reqwest::Client,
}

impl Stage {
    /// keyward with single sign-on through a fresh provider, and `extra` settings.
    pub fn start(extra: &[(&str, &str)]) -> Self {
        // The redirect URL is registered at the provider before keyward starts, so keyward's
        // port is chosen first (and freed just before keyward binds it).
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let base = format!("http://127.0.0.1:{port}");
        let provider = Provider::start(&format!("{base}/login/oidc/callback"));
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_owned();
        let mut env = vec![
            ("KEYWARD_PUBLIC_URL", base.as_str()),
            ("KEYWARD_OIDC_ISSUER", provider.issuer.as_str()),
            ("KEYWARD_OIDC_CLIENT_SECRET", CLIENT_SECRET),
            ("KEYWARD_OIDC_DISPLAY_NAME", PROVIDER_NAME),
            ("KEYWARD_OIDC_SCOPES", "openid email profile groups"),
            ("KEYWARD_OIDC_ADMIN_CLAIM", "groups"),
            ("KEYWARD_OIDC_ADMIN_VALUE", "keyward-admins"),
        ];
        env.extend_from_slice(extra);
        let server = Server::start_at(&dir, &env, &format!("127.0.0.1:{port}"));
        assert_eq!(server.base, base);
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self {
            dir,
            _temp: temp,
            provider,
            server,
            base,
            http,
        }
    }

    /// `GET /login/oidc`: the sign-in cookie and where the browser is sent.
    pub async fn start_sso(&self) -> (String, String) {
        let response = self
            .http
            .get(format!("{}/login/oidc", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let cookie = set_cookie(&response, "keyward_oidc").expect("the sign-in cookie");
        let set = all_set_cookies(&response).join("\n");
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Lax"),
            "{set}"
        );
        let location = response.headers()[LOCATION].to_str().unwrap().to_owned();
        assert!(location.starts_with(&self.provider.issuer), "{location}");
        for part in [
            "code_challenge_method=S256",
            "code_challenge=",
            "state=",
            "nonce=",
        ] {
            assert!(location.contains(part), "{part} in {location}");
        }
        (cookie, location)
    }

    /// The provider's redirect back (`callback`) as a browser sends it, with `cookie` as its
    /// sign-in cookie.
    pub async fn callback(&self, callback: &str, cookie: Option<&str>) -> Response {
        let mut request = self.http.get(callback);
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, format!("keyward_oidc={cookie}"));
        }
        request.send().await.unwrap()
    }

    /// A whole single sign-on as `login`: the session cookie.
    pub async fn sign_in(&self, login: &str) -> String {
        let (cookie, location) = self.start_sso().await;
        let back = sign_in_at_provider(&location, login).await;
        let response = self.callback(&back, Some(&cookie)).await;
        assert_eq!(response.status(), StatusCode::OK, "{login}");
        let session = set_cookie(&response, "keyward_session").expect("a session");
        let page = response.text().await.unwrap();
        assert!(page.contains("url=/tokens"), "{page}");
        session
    }

    /// A page with the session cookie.
    pub async fn page(&self, path: &str, session: &str) -> (StatusCode, String) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .header(COOKIE, format!("keyward_session={session}"))
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    }

    /// Every user, from the command line.
    pub fn users(&self) -> Vec<Value> {
        let out = cli(&self.dir, &["user", "list", "--json"], None);
        out.json().as_array().unwrap().clone()
    }

    /// The audit trail, from the command line, as text.
    pub fn audit(&self) -> String {
        cli(&self.dir, &["audit", "--json", "--limit", "200"], None)
            .ok()
            .to_owned()
    }
}

/// Every `Set-Cookie` of a response.
fn all_set_cookies(response: &Response) -> Vec<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// The value a response sets for cookie `name`, unless it clears it.
fn set_cookie(response: &Response, name: &str) -> Option<String> {
    all_set_cookies(response).iter().find_map(|c| {
        let value = c.strip_prefix(&format!("{name}="))?.split(';').next()?;
        (!value.is_empty()).then(|| value.to_owned())
    })
}

/// Signs in at the provider's own sign-in pages as `login` (any password does), from the
/// authorization URL keyward sent the browser to, up to the redirect back to keyward: returns
/// that callback URL, not yet followed.
pub async fn sign_in_at_provider(location: &str, login: &str) -> String {
    let provider = reqwest::Client::builder()
        .no_proxy()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            if attempt.url().path() == "/login/oidc/callback" {
                attempt.stop()
            } else {
                attempt.follow()
            }
        }))
        .build()
        .unwrap();
    let origin = location.split('/').take(3).collect::<Vec<_>>().join("/");
    let mut response = provider.get(location).send().await.unwrap();
    for _ in 0..4 {
        if response.status() == StatusCode::SEE_OTHER || response.status() == StatusCode::FOUND {
            let back = response.headers()[LOCATION].to_str().unwrap().to_owned();
            assert!(back.contains("/login/oidc/callback"), "{back}");
            return back;
        }
        let page = response.text().await.unwrap();
        let action = between(&page, "action=\"", "\"").expect("a form at the provider");
        let prompt = between(&page, "name=\"prompt\" value=\"", "\"").unwrap_or("consent");
        let mut form = vec![("prompt", prompt)];
        if prompt == "login" {
            form.extend([("login", login), ("password", "any password")]);
        }
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let target = if action.starts_with('/') {
            format!("{origin}{action}")
        } else {
            action.to_owned()
        };
        response = provider
            .post(target)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
    }
    panic!("the provider did not send the browser back");
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A callback URL with its `state` replaced.
fn with_state(callback: &str, state: &str) -> String {
    let (path, query) = callback.split_once('?').unwrap();
    let query: Vec<String> = query
        .split('&')
        .map(|pair| {
            if pair.starts_with("state=") {
                format!("state={state}")
            } else {
                pair.to_owned()
            }
        })
        .collect();
    format!("{path}?{}", query.join("&"))
}

/// Asserts a refusal: the sign-in page, `status`, saying `says`, and no session.
#[track_caller]
fn refused(status: StatusCode, cookies: &[String], page: &str, want: StatusCode, says: &str) {
    assert_eq!(status, want, "{page}");
    assert!(page.contains("Sign in to keyward"), "{page}");
    assert!(page.contains(says), "{says:?} in {page}");
    assert!(
        cookies
            .iter()
            .all(|c| !c.starts_with("keyward_session=") || c.starts_with("keyward_session=;")),
        "no session: {cookies:?}"
    );
}

async fn read(response: Response) -> (StatusCode, Vec<String>, String) {
    let status = response.status();
    let cookies = all_set_cookies(&response);
    (status, cookies, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_sign_in_creates_the_person_and_the_next_finds_them() {
    if !provider_available() {
        return;
    }
    let stage = Stage::start(&[]);
    let login = stage
        .http
        .get(format!("{}/login", stage.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(login.contains("Sign in with Test SSO"), "{login}");
    assert!(login.contains("name=\"password\""), "{login}");

    let session = stage.sign_in("ann").await;
    let (status, tokens) = stage.page("/tokens", &session).await;
    assert_eq!(status, StatusCode::OK);
    assert!(tokens.contains("<strong>ann</strong>"), "{tokens}");
    assert!(tokens.contains("with Test SSO"), "{tokens}");
    // The provider's groups claim holds the admin value.
    assert_eq!(stage.page("/admin/users", &session).await.0, StatusCode::OK);

    let users = stage.users();
    assert_eq!(users.len(), 1, "{users:?}");
    assert_eq!(users[0]["name"], "ann");
    assert_eq!(users[0]["is_admin"], true);

    // Again, in another browser: the same person, through the link.
    let again = stage.sign_in("ann").await;
    assert_ne!(again, session);
    assert_eq!(stage.page("/tokens", &again).await.0, StatusCode::OK);
    assert_eq!(stage.users().len(), 1);

    // No usable preferred_username: the email address, lowercased, is the name; not an admin.
    let cy = stage.sign_in("cy-sub").await;
    let (status, tokens) = stage.page("/tokens", &cy).await;
    assert_eq!(status, StatusCode::OK);
    assert!(tokens.contains("cy+ci@example.com"), "{tokens}");
    assert_eq!(
        stage.page("/admin/users", &cy).await.0,
        StatusCode::NOT_FOUND
    );

    let audit = stage.audit();
    assert!(audit.contains("first sign-in"), "{audit}");
    assert_eq!(
        audit.matches("\"user.signed_in\"").count(),
        3,
        "every sign-in is recorded: {audit}"
    );
    assert!(audit.contains(&stage.provider.issuer), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sign_in_lands_on_the_sign_in_page_without_a_session() {
    if !provider_available() {
        return;
    }
    let stage = Stage::start(&[]);

    // A code used twice: the second time the provider refuses it.
    let (cookie, location) = stage.start_sso().await;
    let back = sign_in_at_provider(&location, "ann").await;
    let (status, ..) = read(stage.callback(&back, Some(&cookie)).await).await;
    assert_eq!(status, StatusCode::OK);
    let (status, cookies, page) = read(stage.callback(&back, Some(&cookie)).await).await;
    refused(
        status,
        &cookies,
        &page,
        StatusCode::UNAUTHORIZED,
        "used already",
    );

    // A state that is not the cookie's.
    let (cookie, location) = stage.start_sso().await;
    let back = sign_in_at_provider(&location, "ann").await;
    let (status, cookies, page) = read(
        stage
            .callback(&with_state(&back, "0000"), Some(&cookie))
            .await,
    )
    .await;
    refused(
        status,
        &cookies,
        &page,
        StatusCode::UNAUTHORIZED,
        "started in another browser",
    );

    // The way back from a sign-in another browser started: its cookie, or none, will not do.
    let (_, location_a) = stage.start_sso().await;
    let (cookie_b, _) = stage.start_sso().await;
    let back_a = sign_in_at_provider(&location_a, "ann").await;
    for cookie in [Some(cookie_b.as_str()), None] {
        let (status, cookies, page) = read(stage.callback(&back_a, cookie).await).await;
        refused(
            status,
            &cookies,
            &page,
            StatusCode::UNAUTHORIZED,
            "started in another browser",
        );
    }

    // The provider said no, for this browser's own sign-in.
    let (cookie, location) = stage.start_sso().await;
    let state = between(&location, "state=", "&").unwrap();
    let denied = format!(
        "{}/login/oidc/callback?error=access_denied&state={state}",
        stage.base
    );
    let (status, cookies, page) = read(stage.callback(&denied, Some(&cookie)).await).await;
    refused(
        status,
        &cookies,
        &page,
        StatusCode::UNAUTHORIZED,
        "did not sign you in (access_denied)",
    );

    // A user of that name who is not linked is not taken over.
    crate::helpers::add_user(&stage.dir, "bob");
    let (cookie, location) = stage.start_sso().await;
    let back = sign_in_at_provider(&location, "bob").await;
    let (status, cookies, page) = read(stage.callback(&back, Some(&cookie)).await).await;
    refused(
        status,
        &cookies,
        &page,
        StatusCode::FORBIDDEN,
        "named bob already exists",
    );

    // A disabled user: disabled by ann, an admin through the provider's claim.
    let cy = stage.sign_in("cy-sub").await;
    drop(cy);
    let cy_id = stage
        .users()
        .iter()
        .find(|u| u["name"] == "cy+ci@example.com")
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .unwrap();
    let ann = stage.sign_in("ann").await;
    let (_, confirm) = stage
        .page(&format!("/admin/users/{cy_id}/disable"), &ann)
        .await;
    let csrf = between(&confirm, "name=\"csrf\" value=\"", "\"").unwrap();
    let disabled = stage
        .http
        .post(format!("{}/admin/users/{cy_id}/disable", stage.base))
        .header(COOKIE, format!("keyward_session={ann}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert!(disabled.status().is_success() || disabled.status().is_redirection());
    let (cookie, location) = stage.start_sso().await;
    let back = sign_in_at_provider(&location, "cy-sub").await;
    let (status, cookies, page) = read(stage.callback(&back, Some(&cookie)).await).await;
    refused(
        status,
        &cookies,
        &page,
        StatusCode::FORBIDDEN,
        "account is disabled",
    );

    let audit = stage.audit();
    assert!(audit.contains("\"user.sign_in_failed\""), "{audit}");
    assert!(audit.contains("is disabled"), "{audit}");
    assert!(audit.contains("already exists"), "{audit}");
    assert!(stage.server.logs().contains("single sign-on"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_on_the_way_back_is_answered_with_the_sign_in_page() {
    if !provider_available() {
        return;
    }
    let stage = Stage::start(&[]);
    let (cookie, _) = stage.start_sso().await;
    let long = "a".repeat(20_000);
    let queries = [
        String::new(),
        "?".to_owned(),
        "?code=".to_owned(),
        "?state=".to_owned(),
        "?code=x&state=y".to_owned(),
        "?code=x&code=y&state=z&state=w".to_owned(),
        "?error=access_denied".to_owned(),
        "?error=%3Cscript%3Ealert(1)%3C/script%3E".to_owned(),
        "?%ZZ=%ZZ&&&=&code".to_owned(),
        "?code=%00%FF%FE&state=%C3%28".to_owned(),
        format!("?code={long}&state={long}"),
        "?code=x&state=y&iss=http://evil.example".to_owned(),
    ];
    let cookies = [
        Some(cookie.as_str()),
        None,
        Some("junk"),
        Some("a.b.c"),
        Some(""),
    ];
    for query in &queries {
        for sent in cookies {
            let url = format!("{}/login/oidc/callback{query}", stage.base);
            let (status, set, page) = read(stage.callback(&url, sent).await).await;
            assert!(
                status.is_client_error(),
                "{status} for {query:?} with {sent:?}"
            );
            assert!(page.contains("Sign in to keyward"), "{page}");
            assert!(!page.contains("<script>alert"), "{page}");
            assert!(set.iter().all(|c| !c.starts_with("keyward_session=")));
        }
    }
    assert!(!stage.server.logs().contains("panicked"));
    // 60 failures from one address: the first ten are recorded, then one event for the burst,
    // and a real sign-in from there is refused until the minute has passed.
    let audit = stage.audit();
    let failed = audit.matches("\"user.sign_in_failed\"").count();
    assert!((10..=12).contains(&failed), "{failed} events: {audit}");
    assert!(audit.contains("throttled"), "{audit}");
    let (cookie, location) = stage.start_sso().await;
    let back = sign_in_at_provider(&location, "ann").await;
    let (status, cookies, page) = read(stage.callback(&back, Some(&cookie)).await).await;
    refused(
        status,
        &cookies,
        &page,
        StatusCode::TOO_MANY_REQUESTS,
        "Too many failed sign-ins",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_create_users_only_linked_people_sign_in() {
    if !provider_available() {
        return;
    }
    let stage = Stage::start(&[("KEYWARD_OIDC_CREATE_USERS", "false")]);
    let (cookie, location) = stage.start_sso().await;
    let back = sign_in_at_provider(&location, "ann").await;
    let (status, cookies, page) = read(stage.callback(&back, Some(&cookie)).await).await;
    refused(
        status,
        &cookies,
        &page,
        StatusCode::FORBIDDEN,
        "not linked to a keyward user",
    );
    assert!(stage.users().is_empty());
    assert!(stage.audit().contains("\"user.sign_in_failed\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_password_sign_in_the_page_offers_single_sign_on_only() {
    if !provider_available() {
        return;
    }
    let stage = Stage::start(&[("KEYWARD_OIDC_PASSWORD_SIGN_IN", "false")]);
    // The operator's command line is unaffected.
    let out = cli(
        &stage.dir,
        &["user", "add", "pat", "--password-stdin"],
        Some("correct horse battery staple\n"),
    );
    out.ok();

    let login = stage
        .http
        .get(format!("{}/login", stage.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(login.contains("Sign in with Test SSO"), "{login}");
    assert!(!login.contains("name=\"password\""), "{login}");

    let posted = stage
        .http
        .post(format!("{}/login", stage.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("csrf=x&username=pat&password=correct+horse+battery+staple")
        .send()
        .await
        .unwrap();
    let (status, cookies, page) = read(posted).await;
    refused(
        status,
        &cookies,
        &page,
        StatusCode::FORBIDDEN,
        "password is turned off",
    );

    // Single sign-on still works.
    let session = stage.sign_in("ann").await;
    assert_eq!(stage.page("/tokens", &session).await.0, StatusCode::OK);
}
