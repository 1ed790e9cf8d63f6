//! The web page in a real browser: headless Chromium through chromedriver (Debian's `chromium`
//! and `chromium-driver`) against the real `keyward serve`. Takes the screenshots the README
//! shows (into `target/screenshots/`; `KEYWARD_UPDATE_SCREENSHOTS=1` refreshes `docs/screenshots/`).
//!
//! Without Chromium or chromedriver the test prints a notice and passes, unless
//! `KEYWARD_REQUIRE_BROWSER=1` (as in CI), which makes that a failure.

use fantoccini::{Client, ClientBuilder, Locator};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{Server, cli};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const PASSWORD: &str = "correct horse battery staple";

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = http
                .get(format!("{}/status", driver.url))
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success());
            if ready.is_some() {
                return driver;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn browser(&self, profile: &Path) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_owned(),
            serde_json::json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--hide-scrollbars", "--force-device-scale-factor=1",
                    "--window-size=1280,860",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("start a Chromium session")
    }
}

fn browser_available() -> bool {
    let present = Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists();
    if !present {
        assert!(
            std::env::var("KEYWARD_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "KEYWARD_REQUIRE_BROWSER=1 but {CHROMIUM} or {CHROMEDRIVER} is missing \
             (apt-get install chromium chromium-driver)"
        );
        eprintln!(
            "browser test skipped: {CHROMIUM} or {CHROMEDRIVER} is missing \
             (apt-get install chromium chromium-driver; KEYWARD_REQUIRE_BROWSER=1 makes this fail)"
        );
    }
    present
}

/// Where the screenshots go: the README's `docs/screenshots/` when `KEYWARD_UPDATE_SCREENSHOTS=1`,
/// otherwise `target/screenshots/`, so a test run never changes tracked files.
fn screenshots_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if std::env::var("KEYWARD_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        root.join("docs/screenshots")
    } else {
        root.join("target/screenshots")
    }
}

async fn screenshot(b: &Client, name: &str) {
    let png = b.screenshot().await.unwrap();
    let dir = screenshots_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

async fn path(b: &Client) -> String {
    b.current_url().await.unwrap().path().to_owned()
}

async fn fill(b: &Client, id: &str, text: &str) {
    let field = b.find(Locator::Id(id)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

async fn click(b: &Client, css: &str) {
    b.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Generates a token through the form, with `limits` typed into the fields of those ids, and
/// returns the secret from the once page.
async fn generate(
    b: &Client,
    name: &str,
    scope_ids: &[&str],
    limits: &[(&str, &str)],
    shot: Option<&str>,
) -> String {
    b.goto(&format!("{}/tokens/new", base(b).await))
        .await
        .unwrap();
    fill(b, "name", name).await;
    click(b, "#expires-30").await;
    for id in scope_ids {
        click(b, &format!("#{id}")).await;
    }
    for (id, text) in limits {
        fill(b, id, text).await;
    }
    if let Some(shot) = shot {
        // The whole form in one picture, from the top.
        b.set_window_size(1280, 1280).await.unwrap();
        b.execute("window.scrollTo(0, 0)", vec![]).await.unwrap();
        screenshot(b, shot).await;
        b.set_window_size(1280, 860).await.unwrap();
    }
    click(b, "form[action='/tokens/new'] button[type=submit]").await;
    let field = b.wait().for_element(Locator::Id("secret")).await.unwrap();
    assert_eq!(
        path(b).await,
        "/tokens/new",
        "the once page is the POST's own answer"
    );
    let source = b.source().await.unwrap();
    assert!(source.contains("It will not be shown again"), "{source}");
    field
        .prop("value")
        .await
        .unwrap()
        .expect("the secret is in the field")
}

async fn base(b: &Client) -> String {
    let url = b.current_url().await.unwrap();
    format!(
        "{}://{}:{}",
        url.scheme(),
        url.host_str().unwrap(),
        url.port().unwrap()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_generates_sees_once_revokes_regenerates_and_signs_out() {
    if !browser_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = cli(
        dir.path(),
        &["user", "add", "alice", "--admin", "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
    );
    out.ok();
    let server = Server::start(dir.path(), &[]);
    let driver = Driver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let b = driver.browser(profile.path()).await;

    // Pages need a session: the browser lands on the sign-in page.
    b.goto(&format!("{}/tokens", server.base)).await.unwrap();
    assert_eq!(path(&b).await, "/login");
    fill(&b, "username", "alice").await;
    screenshot(&b, "sign-in").await;
    // Keyboard only: type the password and press Enter.
    fill(&b, "password", &format!("{PASSWORD}\u{E007}")).await;
    b.wait()
        .for_element(Locator::Css("a[href='/tokens/new']"))
        .await
        .unwrap();
    assert_eq!(path(&b).await, "/tokens");

    // Generate: a name, 30 days, two scopes.
    let first = generate(
        &b,
        "CI deploy",
        &["scope-droplet-ro", "scope-volume-all"],
        &[],
        Some("generate"),
    )
    .await;
    screenshot(&b, "once").await;
    let answer = server
        .api
        .verify(&first, &["droplet:read", "volume:create"])
        .await;
    assert_eq!(answer["active"], true, "{answer}");
    let first_id = answer["token_id"].as_str().unwrap().to_owned();
    let expires = answer["expires_at"].as_str().unwrap();
    assert!(!expires.is_empty());

    // Reloading the once page never shows the secret again.
    b.refresh().await.unwrap();
    let again = b.source().await.unwrap();
    assert!(!again.contains(&first), "the secret came back on reload");
    b.goto(&format!("{}/tokens", server.base)).await.unwrap();
    assert!(!b.source().await.unwrap().contains(&first));

    // Revoke it in the page, behind its confirmation.
    click(&b, &format!("a[href='/tokens/{first_id}/revoke']")).await;
    b.wait().for_element(Locator::Id("reason")).await.unwrap();
    assert_eq!(path(&b).await, format!("/tokens/{first_id}/revoke"));
    fill(&b, "reason", "rotated after the demo").await;
    click(&b, "button.btn-danger").await;
    b.wait()
        .for_element(Locator::Css("p.alert-ok"))
        .await
        .unwrap();
    server.api.assert_inactive(&first, "revoked").await;

    // Generate another and regenerate it: the old secret is refused, the new one works.
    let old = generate(&b, "laptop", &["scope-account-ro"], &[], None).await;
    let old_id = server.api.assert_active(&old).await["token_id"]
        .as_str()
        .unwrap()
        .to_owned();
    generate(&b, "staging monitor", &["scope-droplet-ro"], &[], None).await;
    b.goto(&format!("{}/tokens", server.base)).await.unwrap();
    click(&b, &format!("a[href='/tokens/{old_id}/regenerate']")).await;
    click(&b, "form[action$='/regenerate'] button[type=submit]").await;
    let new = b
        .wait()
        .for_element(Locator::Id("secret"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(new, old);
    server.api.assert_inactive(&old, "revoked").await;
    let answer = server.api.assert_active(&new).await;
    assert_eq!(answer["token_id"], old_id.as_str());

    b.goto(&format!("{}/tokens", server.base)).await.unwrap();
    let list = b.source().await.unwrap();
    assert!(list.contains("CI deploy") && list.contains("laptop"));
    assert!(!list.contains(&new) && !list.contains(&old));
    screenshot(&b, "tokens").await;

    // Sign out: pages send the browser back to sign in.
    click(&b, "form.signout button").await;
    b.wait().for_element(Locator::Id("password")).await.unwrap();
    assert_eq!(path(&b).await, "/login");
    b.goto(&format!("{}/tokens/new", server.base))
        .await
        .unwrap();
    assert_eq!(path(&b).await, "/login");

    b.close().await.unwrap();
    drop(driver);
    let ended = server.stop();
    for secret in [&first, &old, &new] {
        assert!(
            !ended.logs.contains(secret.as_str()),
            "a secret reached the logs"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_through_the_openid_provider() {
    if !browser_available() || !crate::sso::provider_available() {
        return;
    }
    let stage = crate::sso::Stage::start(&[]);
    let driver = Driver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let b = driver.browser(profile.path()).await;

    b.goto(&format!("{}/tokens", stage.base)).await.unwrap();
    assert_eq!(path(&b).await, "/login");
    screenshot(&b, "sign-in-sso").await;
    click(&b, "#sso").await;
    // The provider's own pages: its sign-in form, then its consent, whatever the order.
    for _ in 0..4 {
        let url = b.current_url().await.unwrap();
        if !stage
            .provider
            .issuer
            .contains(&format!(":{}", url.port().unwrap_or(0)))
        {
            break;
        }
        if let Ok(login) = b.find(Locator::Css("input[name=login]")).await {
            login.send_keys("ann").await.unwrap();
            b.find(Locator::Css("input[name=password]"))
                .await
                .unwrap()
                .send_keys("any password")
                .await
                .unwrap();
        }
        click(&b, "button[type=submit]").await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while b.current_url().await.unwrap() == url {
            assert!(
                Instant::now() < deadline,
                "the provider's page did not move on"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    b.wait()
        .for_element(Locator::Css("a[href='/tokens/new']"))
        .await
        .unwrap();
    assert_eq!(path(&b).await, "/tokens");
    let page = b.source().await.unwrap();
    assert!(page.contains("<strong>ann</strong>"), "{page}");
    assert!(page.contains("with Test SSO"), "{page}");
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_adds_a_service_account_and_issues_it_a_token() {
    if !browser_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    cli(
        dir.path(),
        &["user", "add", "root", "--admin", "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
    )
    .ok();
    let server = Server::start(dir.path(), &[]);
    let driver = Driver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let b = driver.browser(profile.path()).await;

    b.goto(&format!("{}/login", server.base)).await.unwrap();
    fill(&b, "username", "root").await;
    fill(&b, "password", &format!("{PASSWORD}\u{E007}")).await;
    b.wait()
        .for_element(Locator::Css("a[href='/admin/users']"))
        .await
        .unwrap();

    // Add the service account from the users page.
    click(&b, "a[href='/admin/users']").await;
    b.wait().for_element(Locator::Id("new-name")).await.unwrap();
    click(&b, "#new-kind-service").await;
    fill(&b, "new-name", "ci-bot").await;
    fill(&b, "new-external-id", "robot-17").await;
    click(&b, "form[action='/admin/users'] button[type=submit]").await;
    b.wait()
        .for_element(Locator::Css("p.alert-ok"))
        .await
        .unwrap();
    let users = b.source().await.unwrap();
    assert!(users.contains("robot-17") && users.contains("service account"));
    screenshot(&b, "users").await;

    // Its tokens page: generate a token for it, shown once.
    click(&b, "a[href^='/admin/users/'][href$='/tokens']").await;
    b.wait().for_element(Locator::Id("name")).await.unwrap();
    let page = path(&b).await;
    assert!(page.ends_with("/tokens"), "{page}");
    fill(&b, "name", "deploy").await;
    click(&b, "#expires-30").await;
    click(&b, "#scope-droplet-ro").await;
    click(&b, &format!("form[action='{page}'] button[type=submit]")).await;
    let secret = b
        .wait()
        .for_element(Locator::Id("secret"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .expect("the secret is in the field");
    assert_eq!(
        path(&b).await,
        page,
        "the once page is the POST's own answer"
    );
    let answer = server.api.verify(&secret, &["droplet:read"]).await;
    assert_eq!(answer["active"], true, "{answer}");
    assert_eq!(answer["owner"]["name"], "ci-bot", "{answer}");
    assert_eq!(answer["owner"]["external_id"], "robot-17", "{answer}");

    // Back on its page, the token is listed and the secret is not.
    click(&b, &format!("a.btn[href='{page}']")).await;
    b.wait().for_element(Locator::Css("th.name")).await.unwrap();
    let listed = b.source().await.unwrap();
    assert!(listed.contains("deploy") && !listed.contains(&secret));
    screenshot(&b, "service-tokens").await;

    b.close().await.unwrap();
    drop(driver);
    let ended = server.stop();
    assert!(!ended.logs.contains(&secret), "a secret reached the logs");
}

/// The widths every page is checked at: a phone's (an iPhone's 390 CSS pixels) and a desktop's.
const WIDTHS: [(u32, u32); 2] = [(390, 844), (1280, 860)];

/// What is off-screen on the page shown: the page scrolling sideways, a table scrolling inside
/// its box, any control or heading reaching past the viewport's edges, the secret not shown
/// whole. Answers `{width, problems}`.
const LAYOUT_CHECK: &str = r##"
const width = window.innerWidth;
const problems = [];
const root = document.documentElement;
if (root.scrollWidth > width) problems.push(`the page scrolls sideways: ${root.scrollWidth} > ${width}`);
const name = (el) => `${el.tagName.toLowerCase()}${el.id ? "#" + el.id : ""} "${(el.textContent || el.value || "").trim().slice(0, 40)}"`;
for (const el of document.querySelectorAll(".table-wrap, .secret-row, .buttons, .top-inner")) {
  if (el.scrollWidth > el.clientWidth + 1) problems.push(`${name(el)} overflows: ${el.scrollWidth} > ${el.clientWidth}`);
}
for (const el of document.querySelectorAll("button, a.btn, nav a, input, select, textarea, label, h1, h2, td, th, code")) {
  const r = el.getBoundingClientRect();
  if (r.width === 0 && r.height === 0) continue;
  if (getComputedStyle(el).visibility === "hidden") continue;
  if (r.left < -0.5 || r.right > width + 0.5) problems.push(`${name(el)} is off-screen: ${Math.round(r.left)}..${Math.round(r.right)} of ${width}`);
}
const secret = document.getElementById("secret");
if (secret && (secret.scrollWidth > secret.clientWidth + 1 || secret.scrollHeight > secret.clientHeight + 1)) {
  problems.push(`the secret is not shown whole: ${secret.scrollWidth}x${secret.scrollHeight} in ${secret.clientWidth}x${secret.clientHeight}`);
}
return { width, problems };
"##;

/// Checks the page shown at each of [`WIDTHS`]: a screenshot of each (`target/screenshots/layout/`,
/// never tracked) and nothing off-screen. Leaves the window at the desktop width.
async fn check_layout(b: &Client, name: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots/layout");
    std::fs::create_dir_all(&dir).unwrap();
    for (width, height) in WIDTHS {
        b.set_window_size(width, height).await.unwrap();
        b.execute("window.scrollTo(0, 0)", vec![]).await.unwrap();
        let report = b.execute(LAYOUT_CHECK, vec![]).await.unwrap();
        let shot = b.screenshot().await.unwrap();
        std::fs::write(dir.join(format!("{name}-{width}.png")), shot).unwrap();
        assert_eq!(
            report["width"],
            serde_json::json!(width),
            "{name}: the viewport is not {width} px wide"
        );
        let problems = report["problems"].as_array().unwrap();
        assert!(
            problems.is_empty(),
            "{name} at {width} px ({}): {problems:#?}",
            path(b).await
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_fits_a_phone_and_a_desktop() {
    if !browser_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    cli(
        dir.path(),
        &["user", "add", "alice", "--admin", "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
    )
    .ok();
    cli(
        dir.path(),
        &[
            "user",
            "add",
            "bob",
            "--external-id",
            "acct-20917",
            "--email",
            "bob@example.com",
        ],
        None,
    )
    .ok();
    let server = Server::start(dir.path(), &[]);
    let driver = Driver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let b = driver.browser(profile.path()).await;

    b.goto(&format!("{}/login", server.base)).await.unwrap();
    check_layout(&b, "sign-in").await;
    fill(&b, "username", "alice").await;
    fill(&b, "password", &format!("{PASSWORD}\u{E007}")).await;
    b.wait()
        .for_element(Locator::Css("a[href='/tokens/new']"))
        .await
        .unwrap();
    check_layout(&b, "tokens-empty").await;

    b.goto(&format!("{}/tokens/new", server.base))
        .await
        .unwrap();
    check_layout(&b, "generate").await;
    let deploy = generate(
        &b,
        "CI deploy",
        &["scope-droplet-ro", "scope-volume-all", "scope-account-ro"],
        &[],
        None,
    )
    .await;
    // The once page: the whole secret and its copy button, on a phone too.
    check_layout(&b, "once").await;
    let deploy_id = server.api.assert_active(&deploy).await["token_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let laptop = generate(&b, "laptop", &["scope-droplet-ro"], &[], None).await;
    let laptop_id = server.api.assert_active(&laptop).await["token_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // With every limit, the longest of addresses among them: its row must fit a phone too.
    generate(
        &b,
        "staging monitor on the second cluster",
        &["scope-droplet-ro", "scope-volume-ro"],
        &[
            (
                "allowed_ips",
                "2001:db8:1234:5678:9abc:def0:1234:5678, 203.0.113.0/24",
            ),
            ("max_uses", "1000"),
            ("refill", "1000/1d"),
            ("rate_limit", "100/1m"),
        ],
        None,
    )
    .await;
    check_layout(&b, "once-limited").await;

    // Regenerate "laptop" with a grace period, from the list's own button.
    b.goto(&format!("{}/tokens", server.base)).await.unwrap();
    click(&b, &format!("a[href='/tokens/{laptop_id}/regenerate']")).await;
    b.wait().for_element(Locator::Id("grace")).await.unwrap();
    check_layout(&b, "regenerate").await;
    click(&b, "#grace option[value='1h']").await;
    click(&b, "form[action$='/regenerate'] button[type=submit]").await;
    b.wait().for_element(Locator::Id("secret")).await.unwrap();
    check_layout(&b, "once-regenerated").await;

    // Revoke "CI deploy" from the list's own button.
    b.goto(&format!("{}/tokens", server.base)).await.unwrap();
    click(&b, &format!("a[href='/tokens/{deploy_id}/revoke']")).await;
    b.wait().for_element(Locator::Id("reason")).await.unwrap();
    check_layout(&b, "revoke").await;
    fill(&b, "reason", "rotated after the demo").await;
    click(&b, "button.btn-danger").await;
    b.wait()
        .for_element(Locator::Css("p.alert-ok"))
        .await
        .unwrap();

    // The list with an active, a regenerated (old secret in its grace period) and a revoked
    // token: on a phone, each row's buttons are on screen, and the README shows it.
    b.goto(&format!("{}/tokens", server.base)).await.unwrap();
    let list = b.source().await.unwrap();
    assert!(list.contains("Previous secret works until"), "{list}");
    assert!(list.contains("Revoked 20"), "{list}");
    assert!(
        list.contains("Limits: from 203.0.113.0/24, 2001:db8:1234:5678:9abc:def0:1234:5678/128 · "),
        "{list}"
    );
    check_layout(&b, "tokens").await;
    b.set_window_size(390, 844).await.unwrap();
    screenshot(&b, "phone-tokens").await;
    // Every row's buttons can be pressed at the phone's width without scrolling sideways.
    click(&b, &format!("a[href='/tokens/{laptop_id}/revoke']")).await;
    b.wait().for_element(Locator::Id("reason")).await.unwrap();
    b.back().await.unwrap();
    b.set_window_size(1280, 860).await.unwrap();

    // Asking to regenerate the revoked token: a page that says why, with the navigation.
    b.goto(&format!("{}/tokens/{deploy_id}/regenerate", server.base))
        .await
        .unwrap();
    assert!(b.source().await.unwrap().contains("This token is revoked"));
    check_layout(&b, "cannot-regenerate").await;

    // The admin pages.
    b.goto(&format!("{}/admin/users", server.base))
        .await
        .unwrap();
    click(&b, "#new-kind-service").await;
    fill(&b, "new-name", "ci-bot").await;
    click(&b, "form[action='/admin/users'] button[type=submit]").await;
    b.wait()
        .for_element(Locator::Css("p.alert-ok"))
        .await
        .unwrap();
    assert!(
        path(&b).await.ends_with("/admin/users"),
        "post/redirect/get"
    );
    check_layout(&b, "users").await;
    let hrefs = b
        .execute(
            "return [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'))",
            vec![],
        )
        .await
        .unwrap();
    let hrefs: Vec<String> = serde_json::from_value(hrefs).unwrap();
    let find = |suffix: &str| {
        hrefs
            .iter()
            .find(|h| h.starts_with("/admin/users/") && h.ends_with(suffix))
            .unwrap_or_else(|| panic!("no link to …{suffix} in {hrefs:?}"))
            .clone()
    };
    for (page, name) in [
        (find("/disable"), "disable"),
        (find("/delete"), "delete"),
        (find("/tokens"), "service-tokens"),
    ] {
        b.goto(&format!("{}{page}", server.base)).await.unwrap();
        check_layout(&b, name).await;
    }

    b.goto(&format!("{}/account/password", server.base))
        .await
        .unwrap();
    check_layout(&b, "password").await;
    b.goto(&format!("{}/tokenz", server.base)).await.unwrap();
    assert!(b.source().await.unwrap().contains("Not found"));
    check_layout(&b, "not-found").await;

    b.close().await.unwrap();
    drop(driver);
    let ended = server.stop();
    for secret in [&deploy, &laptop] {
        assert!(
            !ended.logs.contains(secret.as_str()),
            "a secret reached the logs"
        );
    }
}
