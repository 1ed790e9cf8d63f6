//! The web page over HTTP: sessions, CSRF, ownership, the once page, throttling, headers.
//!
//! A small cookie-keeping client drives the pages like a browser without JavaScript and keeps
//! every response, so a test can check what each one carried.

use keyward_core::{RawSecret, UserName};
use keyward_server::Caller;
use keyward_server::service::UserRequest;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use std::collections::BTreeMap;
use time::Duration;

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

const PASSWORD: &str = "correct horse battery staple";

/// One recorded exchange.
#[derive(Debug)]
struct Seen {
    what: String,
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

/// A browser without JavaScript: keeps cookies, follows no redirects, records every response.
struct Browser<'a> {
    app: &'a TestApp,
    client: reqwest::Client,
    cookies: BTreeMap<String, String>,
    seen: Vec<Seen>,
}

impl<'a> Browser<'a> {
    fn new(app: &'a TestApp) -> Self {
        Self {
            app,
            client: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: BTreeMap::new(),
            seen: Vec::new(),
        }
    }

    async fn send(&mut self, what: String, req: reqwest::RequestBuilder) -> &Seen {
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let req = if cookie.is_empty() {
            req
        } else {
            req.header("cookie", cookie)
        };
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        for c in headers.get_all(SET_COOKIE) {
            let c = c.to_str().unwrap();
            let (pair, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = pair.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), v.to_owned());
            }
        }
        let body = resp.text().await.unwrap();
        self.seen.push(Seen {
            what,
            status,
            headers,
            body,
        });
        self.seen.last().unwrap()
    }

    async fn get(&mut self, path: &str) -> &Seen {
        let req = self.client.get(format!("{}{path}", self.app.base));
        self.send(format!("GET {path}"), req).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> &Seen {
        let req = self
            .client
            .post(format!("{}{path}", self.app.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(urlencode(form));
        self.send(format!("POST {path}"), req).await
    }

    /// Signs in through the form; asserts it worked.
    async fn sign_in(&mut self, name: &str, password: &str) {
        let csrf = field(&self.get("/login").await.body, "csrf");
        let done = self
            .post(
                "/login",
                &[("csrf", &csrf), ("username", name), ("password", password)],
            )
            .await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
        assert_eq!(location(done), "/tokens");
    }

    /// The session's CSRF token, from the tokens page.
    async fn csrf(&mut self) -> String {
        field(&self.get("/tokens").await.body, "csrf")
    }
}

/// `application/x-www-form-urlencoded`, as a browser sends a form.
fn urlencode(form: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                    char::from(b).to_string()
                }
                b' ' => "+".to_owned(),
                b => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    form.iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The value of the hidden field `name` in a page.
fn field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no field {name} in {html}"))
        + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

/// The secret shown on a once page.
fn shown_secret(html: &str) -> String {
    let marker = "aria-describedby=\"copy-status\">";
    let start = html.find(marker).expect("a once page shows a secret") + marker.len();
    html[start..].split('<').next().unwrap().to_owned()
}

fn location(seen: &Seen) -> &str {
    seen.headers.get(LOCATION).unwrap().to_str().unwrap()
}

async fn person(app: &TestApp, name: &str, admin: bool) -> keyward_core::User {
    app.keyward
        .create_user(
            &Caller::operator("test"),
            UserRequest {
                admin,
                password: Some(RawSecret::new(PASSWORD.to_owned())),
                ..UserRequest::person(UserName::parse(name).unwrap())
            },
        )
        .await
        .unwrap()
}

/// Generates a token through the form; returns the once page.
async fn generate<'b>(b: &'b mut Browser<'_>, name: &str, scopes: &[&str]) -> &'b Seen {
    let form = b.get("/tokens/new").await.body.clone();
    let (csrf, nonce) = (field(&form, "csrf"), field(&form, "nonce"));
    let mut fields = vec![
        ("csrf", csrf.as_str()),
        ("nonce", nonce.as_str()),
        ("name", name),
        ("expires", "30"),
    ];
    fields.extend(scopes.iter().map(|s| ("scope", *s)));
    b.post("/tokens/new", &fields).await
}

fn assert_security_headers(seen: &Seen) {
    let h = |name: &str| {
        seen.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("{} lacks {name}", seen.what))
    };
    assert_eq!(
        h("content-security-policy"),
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    );
    assert_eq!(h("x-frame-options"), "DENY");
    assert_eq!(h("referrer-policy"), "no-referrer");
    assert_eq!(h("x-content-type-options"), "nosniff");
}

#[tokio::test]
async fn a_scripted_session_shows_each_secret_on_its_once_page_only() {
    let app = spawn_app().await;
    person(&app, "alice", true).await;
    let mut b = Browser::new(&app);
    assert_eq!(location(b.get("/tokens").await), "/login");
    b.get("/static/keyward.css").await;
    b.get("/static/copy.js").await;
    b.sign_in("alice", PASSWORD).await;

    let once = generate(&mut b, "ci deploy", &["droplet:read", "volume:*"]).await;
    assert_eq!(once.status, StatusCode::OK, "{}", once.body);
    assert_eq!(
        once.headers.get("cache-control").unwrap(),
        "no-store",
        "the once page is never cached"
    );
    assert!(once.body.contains("will not be shown again"));
    let first = shown_secret(&once.body);
    let once_at = b.seen.len() - 1;
    assert_eq!(app.verdict(&first, &["droplet:read"]).await, "active");

    // A reload re-sends the form: no second token, and no secret.
    let replay_form: Vec<(String, String)> = {
        let form = b.get("/tokens/new").await.body.clone();
        vec![
            ("csrf".into(), field(&form, "csrf")),
            ("nonce".into(), field(&form, "nonce")),
            ("name".into(), "twice".into()),
            ("expires".into(), "30".into()),
            ("scope".into(), "droplet:read".into()),
        ]
    };
    let pairs: Vec<(&str, &str)> = replay_form
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(b.post("/tokens/new", &pairs).await.status, StatusCode::OK);
    let replay = b.post("/tokens/new", &pairs).await;
    assert_eq!(replay.status, StatusCode::CONFLICT);
    assert!(replay.body.contains("shown once"), "{}", replay.body);
    let twice_at = b.seen.len() - 2;

    let tokens = b.get("/tokens").await.body.clone();
    assert!(tokens.contains("ci deploy") && tokens.contains("twice"));
    assert_eq!(
        tokens.matches("class=\"name\"").count(),
        2,
        "two tokens, not three"
    );
    let id = {
        let start = tokens.find("/tokens/tok_").unwrap() + "/tokens/".len();
        tokens[start..start + 30].to_owned()
    };

    // Regenerate the newest ("twice"), then revoke "ci deploy".
    let confirm = b
        .get(&format!("/tokens/{id}/regenerate"))
        .await
        .body
        .clone();
    let regen = b
        .post(
            &format!("/tokens/{id}/regenerate"),
            &[
                ("csrf", &field(&confirm, "csrf")),
                ("nonce", &field(&confirm, "nonce")),
                ("grace", ""),
            ],
        )
        .await;
    assert_eq!(regen.status, StatusCode::OK, "{}", regen.body);
    assert_eq!(regen.headers.get("cache-control").unwrap(), "no-store");
    let second = shown_secret(&regen.body);
    let regen_at = b.seen.len() - 1;
    assert_eq!(app.verdict(&second, &[]).await, "active");

    let all = app
        .keyward
        .list_tokens(&Caller::operator("test"), None, None, 10)
        .await
        .unwrap();
    let deploy = all
        .tokens
        .iter()
        .find(|t| t.name.as_str() == "ci deploy")
        .unwrap();
    let confirm = b
        .get(&format!("/tokens/{}/revoke", deploy.id))
        .await
        .body
        .clone();
    let revoked = b
        .post(
            &format!("/tokens/{}/revoke", deploy.id),
            &[("csrf", &field(&confirm, "csrf")), ("reason", "test")],
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK);
    assert!(revoked.body.contains("Revoked"));
    assert_eq!(app.verdict(&first, &[]).await, "revoked");

    b.get("/admin/users").await;
    b.get("/tokens/new").await;
    b.get("/nope-not-a-page").await;
    let csrf = b.csrf().await;
    b.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(location(b.get("/tokens").await), "/login");

    for (i, seen) in b.seen.iter().enumerate() {
        for (secret, allowed) in [(&first, once_at), (&second, regen_at)] {
            let body_has = seen.body.contains(secret.as_str());
            assert_eq!(
                body_has,
                i == allowed,
                "{} ({i}) and the secret shown at {allowed}",
                seen.what
            );
            let in_headers = seen
                .headers
                .iter()
                .any(|(_, v)| v.to_str().unwrap_or("").contains(secret.as_str()));
            assert!(!in_headers, "{} has a secret in a header", seen.what);
        }
        if i != twice_at && !seen.what.starts_with("GET /nope") {
            assert_security_headers(seen);
        }
    }
}

#[tokio::test]
async fn forms_without_the_csrf_token_are_refused() {
    let app = spawn_app().await;
    person(&app, "alice", false).await;
    let mut b = Browser::new(&app);

    // The sign-in form needs the token set with it.
    let refused = b
        .post("/login", &[("username", "alice"), ("password", PASSWORD)])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(!b.cookies.contains_key("keyward_session"));
    b.sign_in("alice", PASSWORD).await;
    let before = app.snapshot().await;

    let form = b.get("/tokens/new").await.body.clone();
    let nonce = field(&form, "nonce");
    for csrf in [None, Some(""), Some("0".repeat(64).as_str()), Some("nope")] {
        let mut fields = vec![
            ("nonce", nonce.as_str()),
            ("name", "x"),
            ("expires", "30"),
            ("scope", "droplet:read"),
        ];
        fields.extend(csrf.map(|c| ("csrf", c)));
        let r = b.post("/tokens/new", &fields).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "csrf {csrf:?}");
        assert_security_headers(r);
    }
    assert_eq!(b.post("/logout", &[]).await.status, StatusCode::FORBIDDEN);
    // Without a form at all (`curl -X POST /logout`), or with another content type: still 403,
    // as the README says, not 400.
    let bare = b.client.post(format!("{}/logout", app.base));
    let r = b.send("POST /logout (no body)".to_owned(), bare).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_security_headers(r);
    let json = b
        .client
        .post(format!("{}/logout", app.base))
        .header("content-type", "application/json")
        .body("{}");
    let r = b.send("POST /logout (JSON)".to_owned(), json).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(app.snapshot().await, before, "nothing was done");
    // Still signed in.
    assert_eq!(b.get("/tokens").await.status, StatusCode::OK);

    // Another session's token is not this session's.
    let mut other = Browser::new(&app);
    other.sign_in("alice", PASSWORD).await;
    let theirs = other.csrf().await;
    let r = b
        .post(
            "/tokens/new",
            &[
                ("csrf", &theirs),
                ("nonce", &nonce),
                ("name", "x"),
                ("expires", "30"),
                ("scope", "droplet:read"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn another_users_token_answers_404() {
    let app = spawn_app().await;
    person(&app, "alice", false).await;
    let bob = person(&app, "bob", false).await;
    let bobs = app.token(&bob, &["droplet:read"]).await;
    let mut b = Browser::new(&app);
    b.sign_in("alice", PASSWORD).await;
    let csrf = b.csrf().await;
    for path in [
        format!("/tokens/{}/revoke", bobs.id),
        format!("/tokens/{}/regenerate", bobs.id),
        "/tokens/tok_nonsense/revoke".to_owned(),
    ] {
        let r = b.get(&path).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert!(r.body.contains("Not found"));
        assert_security_headers(r);
        let r = b
            .post(&path, &[("csrf", &csrf), ("nonce", &"a".repeat(32))])
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
    }
    assert_eq!(app.verdict(&bobs.secret, &[]).await, "active");
    // Admin pages do not exist for non-admins.
    assert_eq!(b.get("/admin/users").await.status, StatusCode::NOT_FOUND);
    let r = b
        .post(
            &format!("/admin/users/{}/disable", bob.id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(app.verdict(&bobs.secret, &[]).await, "active");
}

#[tokio::test]
async fn the_eleventh_wrong_password_in_a_minute_is_refused_without_checking() {
    let app = spawn_app().await;
    person(&app, "alice", false).await;
    let mut b = Browser::new(&app);
    let csrf = field(&b.get("/login").await.body, "csrf");
    let attempt = |password: &'static str| {
        [
            ("csrf", csrf.clone()),
            ("username", "alice".to_owned()),
            ("password", password.to_owned()),
        ]
    };
    for i in 0..10 {
        let form = attempt("wrong password!!");
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = b.post("/login", &pairs).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "attempt {i}");
        assert!(r.body.contains("Incorrect username or password."));
        app.advance(Duration::seconds(1));
    }
    // The 11th is refused even with the right password: it was not checked.
    let form = attempt(PASSWORD);
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = b.post("/login", &pairs).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(!b.cookies.contains_key("keyward_session"));

    // Once the window has slid past the failures, the right password works again.
    app.advance(Duration::seconds(60));
    let r = b.post("/login", &pairs).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(b.cookies.contains_key("keyward_session"));

    let kinds: Vec<String> = app
        .audit_trail()
        .await
        .iter()
        .map(|e| e.event.kind.as_str().to_owned())
        .collect();
    // Ten failures, and the start of a throttle burst on each of the two keys (this account,
    // this address).
    assert_eq!(
        kinds.iter().filter(|k| *k == "user.sign_in_failed").count(),
        10
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "sign_in.throttled").count(),
        2
    );
    assert_eq!(kinds.iter().filter(|k| *k == "user.signed_in").count(), 1);
}

#[tokio::test]
async fn failures_are_also_throttled_per_client_address_and_never_tell_who_exists() {
    let app = spawn_app().await;
    person(&app, "alice", false).await;
    let mut b = Browser::new(&app);
    let csrf = field(&b.get("/login").await.body, "csrf");
    let mut answers = Vec::new();
    for i in 0..10 {
        // Unknown names and a known one with a wrong password look the same.
        let name = if i % 2 == 0 {
            format!("nobody{i}")
        } else {
            "alice".to_owned()
        };
        let r = b
            .post(
                "/login",
                &[
                    ("csrf", &csrf),
                    ("username", &name),
                    ("password", "wrong password!!"),
                ],
            )
            .await;
        answers.push((r.status, r.body.replace(&name, "NAME")));
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    // This address has failed 10 times: another account is refused from it too.
    person(&app, "carol", false).await;
    let r = b
        .post(
            "/login",
            &[
                ("csrf", &csrf),
                ("username", "carol"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn disabling_a_user_signs_them_out_and_suspends_their_tokens() {
    let app = spawn_app().await;
    person(&app, "root", true).await;
    let bob = person(&app, "bob", false).await;
    let token = app.token(&bob, &["droplet:read"]).await;
    let mut bobs = Browser::new(&app);
    bobs.sign_in("bob", PASSWORD).await;

    let mut admin = Browser::new(&app);
    admin.sign_in("root", PASSWORD).await;
    let users = admin.get("/admin/users").await.body.clone();
    assert!(users.contains("bob"));
    let confirm = admin
        .get(&format!("/admin/users/{}/disable", bob.id))
        .await
        .body
        .clone();
    let r = admin
        .post(
            &format!("/admin/users/{}/disable", bob.id),
            &[("csrf", &field(&confirm, "csrf"))],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("Disabled bob"));

    assert_eq!(app.verdict(&token.secret, &[]).await, "owner_disabled");
    assert_eq!(location(bobs.get("/tokens").await), "/login");
    let csrf = field(&bobs.get("/login").await.body, "csrf");
    let r = bobs
        .post(
            "/login",
            &[("csrf", &csrf), ("username", "bob"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "same answer as a wrong password"
    );

    let csrf = admin.csrf().await;
    let r = admin
        .post(
            &format!("/admin/users/{}/enable", bob.id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(app.verdict(&token.secret, &[]).await, "active");
    let kinds: Vec<String> = app
        .audit_trail()
        .await
        .iter()
        .map(|e| e.event.kind.as_str().to_owned())
        .collect();
    assert!(kinds.contains(&"user.disabled".to_owned()));
    assert!(kinds.contains(&"user.enabled".to_owned()));

    // Adding a user from the page.
    let r = admin
        .post(
            "/admin/users",
            &[("csrf", &csrf), ("name", "dave"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let mut dave = Browser::new(&app);
    dave.sign_in("dave", PASSWORD).await;
    let r = admin
        .post(
            "/admin/users",
            &[("csrf", &csrf), ("name", "eve"), ("password", "short")],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn sessions_end_after_12_idle_hours_and_bad_input_is_a_friendly_page() {
    let app = spawn_app().await;
    person(&app, "alice", false).await;
    let mut b = Browser::new(&app);
    b.sign_in("alice", PASSWORD).await;
    app.advance(Duration::hours(11));
    assert_eq!(b.get("/tokens").await.status, StatusCode::OK);

    let csrf = b.csrf().await;
    let form = b.get("/tokens/new").await.body.clone();
    let nonce = field(&form, "nonce");
    for fields in [
        vec![("name", ""), ("expires", "30"), ("scope", "droplet:read")],
        vec![("name", "x"), ("expires", "30")],
        vec![("name", "x"), ("expires", "999"), ("scope", "droplet:read")],
        vec![
            ("name", "x"),
            ("expires", "custom"),
            ("expires_on", "1999-01-01"),
            ("scope", "droplet:read"),
        ],
        vec![
            ("name", "x"),
            ("expires", "never"),
            ("scope", "droplet:read"),
        ],
        vec![("name", "x"), ("expires", "30"), ("scope", "nope:read")],
    ] {
        let mut all = vec![("csrf", csrf.as_str()), ("nonce", nonce.as_str())];
        all.extend(fields.iter().copied());
        let r = b.post("/tokens/new", &all).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{fields:?}: {}", r.body);
        assert!(r.body.contains("alert-error"), "{fields:?}");
    }
    let r = b
        .send(
            "bad body".into(),
            b.client
                .post(format!("{}/tokens/new", app.base))
                .header("content-type", "application/json")
                .body("{}"),
        )
        .await;
    assert!(r.status.is_client_error(), "{}", r.status);
    // A path that is not UTF-8 is the friendly not-found page, not a plain-text rejection.
    for path in ["/tokens/%FF/revoke", "/tokens/%C3%28/regenerate"] {
        let r = b.get(path).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert!(
            r.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{path}"
        );
        assert!(r.body.contains("Not found"), "{path}");
    }

    app.advance(Duration::hours(12));
    assert_eq!(
        location(b.get("/tokens").await),
        "/login",
        "idle for 12 hours"
    );
}

/// The sign-in form's cookie and CSRF field, as a browser gets them.
async fn sign_in_form(app: &TestApp) -> (String, String) {
    let mut b = Browser::new(app);
    let csrf = field(&b.get("/login").await.body, "csrf");
    let cookie = format!("keyward_login={}", b.cookies["keyward_login"]);
    (cookie, csrf)
}

/// Posts a sign-in form with these exact cookie and fields; the status.
async fn post_sign_in(
    client: &reqwest::Client,
    base: &str,
    cookie: &str,
    fields: &[(&str, &str)],
    extra: &[(&str, &str)],
) -> StatusCode {
    let mut req = client
        .post(format!("{base}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", cookie)
        .body(urlencode(fields));
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap().status()
}

/// Finding 4: the throttle was checked before the failure was recorded, so 60 parallel wrong
/// passwords were all checked. Each attempt now reserves its place first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_wrong_passwords_check_at_most_the_limit() {
    let app = spawn_app().await;
    person(&app, "alice", false).await;
    let (cookie, csrf) = sign_in_form(&app).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let attempts: Vec<_> = (0..60)
        .map(|_| {
            let (client, base, cookie, csrf) = (
                client.clone(),
                app.base.clone(),
                cookie.clone(),
                csrf.clone(),
            );
            tokio::spawn(async move {
                post_sign_in(
                    &client,
                    &base,
                    &cookie,
                    &[
                        ("csrf", &csrf),
                        ("username", "alice"),
                        ("password", "wrong password!!"),
                    ],
                    &[],
                )
                .await
            })
        })
        .collect();
    let (mut checked, mut busy, mut throttled) = (0, 0, 0);
    for attempt in attempts {
        match attempt.await.unwrap() {
            StatusCode::UNAUTHORIZED => checked += 1,
            // Queued too long behind the password pool: not checked, place given back.
            StatusCode::SERVICE_UNAVAILABLE => busy += 1,
            StatusCode::TOO_MANY_REQUESTS => throttled += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert!(checked <= 10, "{checked} passwords checked");
    assert_eq!((checked + busy, throttled), (10, 50));
}

/// Finding 5: every throttled attempt wrote an audit row, unauthenticated (about 1,400 a
/// second). A burst now writes one event when it starts and one with its count when it ends.
#[tokio::test]
async fn a_throttled_flood_writes_a_few_audit_events() {
    let app = spawn_app().await;
    person(&app, "alice", false).await;
    let (cookie, csrf) = sign_in_form(&app).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let attempt = |name: &'static str| {
        let (client, base, cookie, csrf) = (&client, &app.base, &cookie, &csrf);
        async move {
            post_sign_in(
                client,
                base,
                cookie,
                &[
                    ("csrf", csrf),
                    ("username", name),
                    ("password", "wrong password!!"),
                ],
                &[],
            )
            .await
        }
    };
    for _ in 0..10 {
        assert_eq!(attempt("alice").await, StatusCode::UNAUTHORIZED);
    }
    let before = app.audit_trail().await.len();
    for i in 0..300 {
        let name = if i % 2 == 0 { "alice" } else { "mallory" };
        assert_eq!(attempt(name).await, StatusCode::TOO_MANY_REQUESTS);
    }
    let during = app.audit_trail().await;
    assert!(
        during.len() - before <= 2,
        "{} events for 300 throttled attempts",
        during.len() - before
    );
    // When the window has slid past, each burst is summed up once.
    app.advance(Duration::seconds(61));
    app.keyward.record_ended_bursts().await.unwrap();
    app.keyward.record_ended_bursts().await.unwrap();
    let after = app.audit_trail().await;
    let added = &after[..after.len() - before];
    assert!(added.len() <= 4, "{added:#?}");
    let details: Vec<&str> = added
        .iter()
        .filter_map(|e| e.event.detail.as_deref())
        .collect();
    assert!(
        details
            .iter()
            .any(|d| d.contains("throttle burst over: 300 attempts refused")),
        "{details:?}"
    );
}

/// Finding 6: the name typed for an unknown user was stored verbatim, so a password typed into
/// the wrong field sat in the audit trail. Now: "unknown user" and a keyed hash.
#[tokio::test]
async fn what_is_typed_for_an_unknown_name_never_reaches_the_audit_trail() {
    let app = spawn_app().await;
    person(&app, "alice", false).await;
    let (cookie, csrf) = sign_in_form(&app).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for typed in [
        "hunter2-my-real-password",
        "Tr0ub4dor&3 Secret",
        "hunter2-my-real-password",
    ] {
        let status = post_sign_in(
            &client,
            &app.base,
            &cookie,
            &[
                ("csrf", &csrf),
                ("username", typed),
                ("password", "whatever password"),
            ],
            &[],
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let trail = format!("{:?}", app.audit_trail().await);
    for typed in ["hunter2", "Tr0ub4dor", "tr0ub4dor"] {
        assert!(!trail.contains(typed), "{typed} in {trail}");
    }
    let failed: Vec<_> = app
        .audit_trail()
        .await
        .into_iter()
        .filter(|e| e.event.kind.as_str() == "user.sign_in_failed")
        .collect();
    assert_eq!(failed.len(), 3);
    for e in &failed {
        assert_eq!(e.event.actor.label, "web sign-in (unknown user)");
        assert!(
            e.event
                .detail
                .as_deref()
                .unwrap()
                .starts_with("unknown user (name hash "),
            "{e:?}"
        );
    }
    // The same text gives the same hash, so repeated attempts can be told apart.
    assert_eq!(failed[0].event.detail, failed[2].event.detail);
    assert_ne!(failed[0].event.detail, failed[1].event.detail);
}

/// `s` with its first character changed.
fn flip_first(s: &str) -> String {
    let first = if s.starts_with('0') { '1' } else { '0' };
    format!("{first}{}", &s[1..])
}

/// Finding 9: the sign-in form's double-submit accepted any matching cookie and field, so a
/// sibling site could plant its own pair (login CSRF by cookie tossing).
#[tokio::test]
async fn the_sign_in_form_needs_a_cookie_this_server_signed() {
    let app = spawn_app().await;
    person(&app, "alice", false).await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let sign_in = |cookie: String, csrf: String, extra: Vec<(&'static str, &'static str)>| {
        let (client, base) = (&client, &app.base);
        async move {
            post_sign_in(
                client,
                base,
                &cookie,
                &[
                    ("csrf", &csrf),
                    ("username", "alice"),
                    ("password", PASSWORD),
                ],
                &extra,
            )
            .await
        }
    };
    // A pair made up by the attacker (the old scheme's shape, and the new one's).
    let made_up = "0123456789abcdef0123456789abcdef";
    assert_eq!(
        sign_in(
            format!("keyward_login={made_up}"),
            made_up.to_owned(),
            vec![]
        )
        .await,
        StatusCode::FORBIDDEN
    );
    let forged = format!("{made_up}.9999999999.{made_up}");
    assert_eq!(
        sign_in(
            format!("keyward_login={forged}"),
            made_up.to_owned(),
            vec![]
        )
        .await,
        StatusCode::FORBIDDEN
    );
    // A real pair, tampered with.
    let (cookie, csrf) = sign_in_form(&app).await;
    let tampered = cookie.replacen('.', ".1", 1);
    assert_eq!(
        sign_in(tampered, csrf.clone(), vec![]).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        sign_in(cookie.clone(), flip_first(&csrf), vec![]).await,
        StatusCode::FORBIDDEN
    );
    // A real pair, sent from a sibling site (the cookie-tossing case) or another site.
    for site in ["same-site", "cross-site"] {
        assert_eq!(
            sign_in(cookie.clone(), csrf.clone(), vec![("sec-fetch-site", site)]).await,
            StatusCode::FORBIDDEN,
            "{site}"
        );
    }
    // A real pair, expired.
    app.advance(Duration::hours(1));
    assert_eq!(
        sign_in(cookie.clone(), csrf.clone(), vec![]).await,
        StatusCode::FORBIDDEN
    );
    // A fresh real pair from this site works.
    let (cookie, csrf) = sign_in_form(&app).await;
    assert_eq!(
        sign_in(cookie, csrf, vec![("sec-fetch-site", "same-origin")]).await,
        StatusCode::SEE_OTHER
    );
}

/// Forms of a signed-in person are refused when the browser says another site sent them, even
/// with the right CSRF token.
#[tokio::test]
async fn session_forms_from_another_site_are_refused() {
    let app = spawn_app().await;
    let alice = person(&app, "alice", false).await;
    let t = app.token(&alice, &["droplet:read"]).await;
    let mut b = Browser::new(&app);
    b.sign_in("alice", PASSWORD).await;
    let csrf = b.csrf().await;
    let cookie = b
        .cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let status = client
        .post(format!("{}/tokens/{}/revoke", app.base, t.id))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", cookie)
        .header("sec-fetch-site", "same-site")
        .body(urlencode(&[("csrf", &csrf)]))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(app.verdict(&t.secret, &[]).await, "active");
}

// ---------------------------------------------------------------------------- admin pages

async fn service_account(app: &TestApp, name: &str) -> keyward_core::User {
    app.keyward
        .create_user(
            &Caller::operator("test"),
            UserRequest {
                kind: keyward_core::UserKind::Service,
                ..UserRequest::person(UserName::parse(name).unwrap())
            },
        )
        .await
        .unwrap()
}

async fn stored_user(app: &TestApp, name: &str) -> Option<keyward_core::User> {
    app.keyward
        .user_by_name(&Caller::operator("test"), &UserName::parse(name).unwrap())
        .await
        .ok()
}

/// Whether the users page lists `name` in its table.
fn lists_user(html: &str, name: &str) -> bool {
    html.contains(&format!("<th scope=\"row\" class=\"name\">{name}</th>"))
}

#[tokio::test]
async fn admins_add_people_and_service_accounts_and_change_admin_rights() {
    let app = spawn_app().await;
    let root = person(&app, "root", true).await;
    let mut b = Browser::new(&app);
    b.sign_in("root", PASSWORD).await;
    let csrf = b.csrf().await;

    let r = b
        .post(
            "/admin/users",
            &[
                ("csrf", &csrf),
                ("kind", "person"),
                ("name", "carol"),
                ("external_id", "acct-4711"),
                ("email", "carol@example.com"),
                ("password", PASSWORD),
            ],
        )
        .await;
    // Post/redirect/get: the answer sends the browser to the users page, which says who was
    // added; reloading that page sends nothing again.
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let carol = stored_user(&app, "carol").await.unwrap();
    assert_eq!(location(r), format!("/admin/users?added={}", carol.id));
    let r = b.get(&format!("/admin/users?added={}", carol.id)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("Added carol."), "{}", r.body);
    assert!(lists_user(&r.body, "carol"));
    assert!(r.body.contains("acct-4711") && r.body.contains("carol@example.com"));
    assert_eq!(carol.kind, keyward_core::UserKind::Person);
    assert_eq!(carol.external_id.unwrap().as_str(), "acct-4711");
    assert_eq!(carol.email.unwrap().as_str(), "carol@example.com");
    assert!(!carol.is_admin);
    Browser::new(&app).sign_in("carol", PASSWORD).await;
    // A cursor that names nobody (or not a user id) adds no notice.
    let r = b.get("/admin/users?added=usr_nonsense").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(!r.body.contains("alert-ok"), "{}", r.body);

    let r = b
        .post(
            "/admin/users",
            &[("csrf", &csrf), ("kind", "service"), ("name", "ci-bot")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let to = location(r).to_owned();
    let r = b.get(&to).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        r.body.contains("Added the service account ci-bot."),
        "{}",
        r.body
    );
    let bot = stored_user(&app, "ci-bot").await.unwrap();
    assert_eq!(bot.kind, keyward_core::UserKind::Service);
    assert!(r.body.contains("service account"));
    assert!(
        r.body
            .contains(&format!("href=\"/admin/users/{}/tokens\"", bot.id)),
        "a service account's row links to its tokens"
    );
    assert!(
        !r.body
            .contains(&format!("href=\"/admin/users/{}/tokens\"", carol.id)),
        "a person's does not"
    );

    // Refusals show on the page with the service's message, and keep what was typed.
    let refused = [
        (
            vec![
                ("kind", "service"),
                ("name", "deploy-bot"),
                ("password", PASSWORD),
            ],
            StatusCode::BAD_REQUEST,
            "a service account never signs in, so it cannot have a password",
        ),
        (
            vec![
                ("kind", "person"),
                ("name", "carol"),
                ("password", PASSWORD),
            ],
            StatusCode::CONFLICT,
            "already exists",
        ),
        (
            vec![("name", "Not A Name")],
            StatusCode::BAD_REQUEST,
            "Not A Name",
        ),
        (
            vec![("name", "dora"), ("external_id", "tab\there")],
            StatusCode::BAD_REQUEST,
            "external id",
        ),
        (
            vec![("name", "dora"), ("email", "not-an-address")],
            StatusCode::BAD_REQUEST,
            "not-an-address",
        ),
    ];
    for (fields, status, message) in refused {
        let mut form = vec![("csrf", csrf.as_str())];
        form.extend(fields.iter().copied());
        let r = b.post("/admin/users", &form).await;
        assert_eq!(r.status, status, "{fields:?}: {}", r.body);
        assert!(
            r.body.contains("alert-error") && r.body.contains(message),
            "{fields:?}: {}",
            r.body
        );
        if fields.contains(&("name", "dora")) {
            assert!(
                r.body.contains("value=\"dora\""),
                "the form keeps what was typed"
            );
        }
        assert_security_headers(r);
    }
    assert!(stored_user(&app, "deploy-bot").await.is_none());
    assert!(stored_user(&app, "dora").await.is_none());

    // Make an admin, then not.
    let r = b
        .post(
            &format!("/admin/users/{}/make-admin", carol.id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("carol is now an admin."));
    assert!(stored_user(&app, "carol").await.unwrap().is_admin);
    assert!(r.body.contains(&format!(
        "action=\"/admin/users/{}/remove-admin\"",
        carol.id
    )));
    let r = b
        .post(
            &format!("/admin/users/{}/remove-admin", carol.id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("carol is no longer an admin."));
    assert!(!stored_user(&app, "carol").await.unwrap().is_admin);

    // Nobody demotes themselves; without the CSRF token nothing happens.
    let r = b
        .post(
            &format!("/admin/users/{}/remove-admin", root.id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(
        r.body
            .contains("you cannot remove your own admin rights; ask another admin"),
        "{}",
        r.body
    );
    assert!(stored_user(&app, "root").await.unwrap().is_admin);
    let before = app.snapshot().await;
    for path in [
        format!("/admin/users/{}/make-admin", carol.id),
        format!("/admin/users/{}/delete", carol.id),
        format!("/admin/users/{}/tokens", bot.id),
    ] {
        let r = b
            .post(&path, &[("name", "x"), ("scope", "droplet:read")])
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
    }
    let r = b
        .post(
            "/admin/users",
            &[("kind", "service"), ("name", "sneaky-bot")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(app.snapshot().await, before, "nothing was done");
}

#[tokio::test]
async fn deleting_a_user_revokes_every_token_of_theirs() {
    let app = spawn_app().await;
    let root = person(&app, "root", true).await;
    let bob = person(&app, "bob", false).await;
    let token = app.token(&bob, &["droplet:read"]).await;
    let mut b = Browser::new(&app);
    b.sign_in("root", PASSWORD).await;
    assert!(lists_user(&b.get("/admin/users").await.body, "bob"));

    let confirm = b
        .get(&format!("/admin/users/{}/delete", bob.id))
        .await
        .body
        .clone();
    assert!(
        confirm.contains("Every token of theirs is revoked"),
        "{confirm}"
    );
    assert!(confirm.contains("This cannot be undone"));
    let csrf = field(&confirm, "csrf");

    // Deleting yourself is refused with the reason.
    let r = b
        .post(
            &format!("/admin/users/{}/delete", root.id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.body.contains("you cannot delete yourself"), "{}", r.body);
    assert!(stored_user(&app, "root").await.is_some());

    let r = b
        .post(
            &format!("/admin/users/{}/delete", bob.id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("Deleted bob"), "{}", r.body);
    assert!(!lists_user(&r.body, "bob"));
    assert!(stored_user(&app, "bob").await.is_none());
    assert_eq!(app.verdict(&token.secret, &[]).await, "revoked");
    let record = app
        .keyward
        .list_tokens(&Caller::operator("test"), None, None, 10)
        .await
        .unwrap()
        .tokens
        .into_iter()
        .find(|t| t.id.as_str() == token.id)
        .unwrap();
    assert_eq!(record.revoke_reason.as_deref(), Some("owner deleted"));

    // Gone: its pages are not found.
    assert_eq!(
        b.get(&format!("/admin/users/{}/delete", bob.id))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

/// The generate form on `html` filled in: a name, 30 days, one scope.
fn token_fields(html: &str, name: &str, scope: &str) -> Vec<(String, String)> {
    vec![
        ("csrf".to_owned(), field(html, "csrf")),
        ("nonce".to_owned(), field(html, "nonce")),
        ("name".to_owned(), name.to_owned()),
        ("expires".to_owned(), "30".to_owned()),
        ("scope".to_owned(), scope.to_owned()),
    ]
}

#[tokio::test]
async fn a_service_accounts_page_issues_its_tokens_once_and_revokes_them() {
    let app = spawn_app().await;
    let root = person(&app, "root", true).await;
    let bot = service_account(&app, "ci-bot").await;
    let mut b = Browser::new(&app);
    b.sign_in("root", PASSWORD).await;
    let page_path = format!("/admin/users/{}/tokens", bot.id);

    let page = b.get(&page_path).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("has no active tokens"));
    let owned = token_fields(&page.body.clone(), "deploy", "droplet:read");
    let send: Vec<(&str, &str)> = owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();

    let once = b.post(&page_path, &send).await;
    assert_eq!(once.status, StatusCode::OK, "{}", once.body);
    assert_eq!(once.headers.get("cache-control").unwrap(), "no-store");
    assert!(once.body.contains("will not be shown again"));
    assert!(once.body.contains(&format!("href=\"{page_path}\"")));
    let secret = shown_secret(&once.body);
    let once_at = b.seen.len() - 1;
    let answer = app.verify(&secret, &["droplet:read"]).await;
    assert_eq!(answer["active"], true, "{answer}");
    assert_eq!(answer["owner"]["name"], "ci-bot", "{answer}");

    // Sent again (a reload): no second token.
    let replay = b.post(&page_path, &send).await;
    assert_eq!(replay.status, StatusCode::CONFLICT);
    assert!(replay.body.contains("shown once"));

    // Administrative scopes are for admins' tokens only: refused on the form, kept filled.
    let fresh = b.get(&page_path).await.body.clone();
    let admin_scope = token_fields(&fresh, "robot admin", "users:read");
    let admin_scope: Vec<(&str, &str)> = admin_scope
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let r = b.post(&page_path, &admin_scope).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(
        r.body.contains("can only be given to an admin"),
        "{}",
        r.body
    );
    assert!(r.body.contains("value=\"robot admin\""));

    let listed = b.get(&page_path).await.body.clone();
    assert_eq!(listed.matches("class=\"name\"").count(), 1, "{listed}");
    let tokens = app
        .keyward
        .list_tokens(&Caller::operator("test"), Some(&bot.id), None, 10)
        .await
        .unwrap()
        .tokens;
    let [token] = tokens.as_slice() else {
        panic!("one token: {tokens:?}")
    };
    let revoke_path = format!("{page_path}/{}/revoke", token.id);
    assert!(
        listed.contains(&format!("href=\"{revoke_path}\"")),
        "{listed}"
    );
    assert!(!listed.contains("/regenerate"));

    let confirm = b.get(&revoke_path).await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(confirm.body.contains(&format!("action=\"{revoke_path}\"")));
    let csrf = field(&confirm.body.clone(), "csrf");
    let r = b
        .post(&revoke_path, &[("csrf", &csrf), ("reason", "rotated")])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("Revoked “deploy”"), "{}", r.body);
    assert_eq!(app.verdict(&secret, &[]).await, "revoked");

    // Only service accounts have this page; a token of anyone else is not found under it.
    let mine = app.token(&root, &["droplet:read"]).await;
    for path in [
        format!("/admin/users/{}/tokens", root.id),
        format!("{page_path}/{}/revoke", mine.id),
        "/admin/users/usr_nonsense/tokens".to_owned(),
    ] {
        assert_eq!(b.get(&path).await.status, StatusCode::NOT_FOUND, "{path}");
    }
    let r = b
        .post(
            &format!("{page_path}/{}/revoke", mine.id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(app.verdict(&mine.secret, &[]).await, "active");

    for (i, seen) in b.seen.iter().enumerate() {
        assert_eq!(
            seen.body.contains(secret.as_str()),
            i == once_at,
            "{} ({i})",
            seen.what
        );
    }
}

#[tokio::test]
async fn non_admins_find_no_admin_page() {
    let app = spawn_app().await;
    person(&app, "alice", false).await;
    let bob = person(&app, "bob", false).await;
    let bot = service_account(&app, "ci-bot").await;
    let bots = app.token(&bot, &["droplet:read"]).await;
    let mut b = Browser::new(&app);
    b.sign_in("alice", PASSWORD).await;
    let csrf = b.csrf().await;
    let nonce = field(&b.get("/tokens/new").await.body.clone(), "nonce");
    let before = app.snapshot().await;

    let tokens = format!("/admin/users/{}/tokens", bot.id);
    let revoke = format!("{tokens}/{}/revoke", bots.id);
    for path in [
        "/admin/users".to_owned(),
        "/admin/users?before=usr_nonsense".to_owned(),
        format!("/admin/users/{}/delete", bob.id),
        tokens.clone(),
        revoke.clone(),
    ] {
        let r = b.get(&path).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "GET {path}");
        assert!(r.body.contains("Not found"));
    }
    for path in [
        "/admin/users".to_owned(),
        format!("/admin/users/{}/make-admin", bob.id),
        format!("/admin/users/{}/remove-admin", bob.id),
        format!("/admin/users/{}/delete", bob.id),
        tokens,
        revoke,
    ] {
        let r = b
            .post(
                &path,
                &[
                    ("csrf", &csrf),
                    ("nonce", &nonce),
                    ("kind", "service"),
                    ("name", "sneaky-bot"),
                    ("expires", "30"),
                    ("scope", "droplet:read"),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "POST {path}");
    }
    assert_eq!(app.snapshot().await, before, "nothing was done");
    assert_eq!(app.verdict(&bots.secret, &[]).await, "active");
}

#[tokio::test]
async fn the_users_page_pages_newest_first() {
    let app = spawn_app().await;
    person(&app, "root", true).await;
    for i in 0..100 {
        // Ids order by time: each a second apart, so "newest first" has one answer.
        app.advance(Duration::seconds(1));
        service_account(&app, &format!("bot-{i:03}")).await;
    }
    let mut b = Browser::new(&app);
    b.sign_in("root", PASSWORD).await;
    let first = b.get("/admin/users").await.body.clone();
    assert_eq!(first.matches("<th scope=\"row\"").count(), 100);
    assert!(lists_user(&first, "bot-099") && !lists_user(&first, "root"));
    let marker = "href=\"/admin/users?before=";
    let start = first.find(marker).expect("a next page link") + "href=\"".len();
    let next = first[start..].split('"').next().unwrap().to_owned();
    let second = b.get(&next).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.body.matches("<th scope=\"row\"").count(), 1);
    assert!(lists_user(&second.body, "root"));
    assert!(!second.body.contains(marker), "the last page has no next");
    assert!(second.body.contains("href=\"/admin/users\">First page"));
}

#[tokio::test]
async fn a_person_who_is_not_an_admin_is_told_why_an_administrative_scope_is_refused() {
    let app = spawn_app().await;
    person(&app, "alice", false).await;
    let mut b = Browser::new(&app);
    b.sign_in("alice", PASSWORD).await;
    let refused = generate(&mut b, "sneaky", &["users:read"]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert!(
        refused.body.contains("can only be given to an admin"),
        "{}",
        refused.body
    );
    assert!(!refused.body.contains("will not be shown again"));
    // The form is shown again, with a fresh nonce: a token without it is made as usual.
    let once = generate(&mut b, "fine", &["droplet:read"]).await;
    assert_eq!(once.status, StatusCode::OK, "{}", once.body);
}

/// A time as the pages show it.
fn page_time(at: time::OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute()
    )
}

/// The table row of the token named `name` in a tokens page.
fn token_row<'h>(html: &'h str, name: &str) -> &'h str {
    let start = html
        .find(&format!("<bdi>{name}</bdi></th>"))
        .unwrap_or_else(|| panic!("no row for {name} in {html}"));
    let end = html[start..].find("</tr>").unwrap() + start;
    &html[start..end]
}

/// The id of the token named `name` (from the store).
async fn token_id(app: &TestApp, name: &str) -> String {
    let all = app
        .keyward
        .list_tokens(&Caller::operator("test"), None, None, 100)
        .await
        .unwrap();
    all.tokens
        .iter()
        .find(|t| t.name.as_str() == name)
        .unwrap()
        .id
        .to_string()
}

#[tokio::test]
async fn the_list_says_when_a_token_was_revoked_and_until_when_an_old_secret_works() {
    let app = spawn_app().await;
    person(&app, "alice", false).await;
    let mut b = Browser::new(&app);
    b.sign_in("alice", PASSWORD).await;
    generate(&mut b, "rolled", &["droplet:read"]).await;
    generate(&mut b, "lost", &["droplet:read"]).await;
    let (rolled, lost) = (token_id(&app, "rolled").await, token_id(&app, "lost").await);

    // Regenerate with a one-hour grace period: the list says until when the old one works.
    let confirm = b
        .get(&format!("/tokens/{rolled}/regenerate"))
        .await
        .body
        .clone();
    let regen = b
        .post(
            &format!("/tokens/{rolled}/regenerate"),
            &[
                ("csrf", &field(&confirm, "csrf")),
                ("nonce", &field(&confirm, "nonce")),
                ("grace", "1h"),
            ],
        )
        .await;
    assert_eq!(regen.status, StatusCode::OK, "{}", regen.body);
    let until = page_time(app.keyward.now() + Duration::hours(1));
    let list = b.get("/tokens").await.body.clone();
    assert!(
        token_row(&list, "rolled").contains(&format!("Previous secret works until {until}")),
        "{}",
        token_row(&list, "rolled")
    );
    assert!(!token_row(&list, "lost").contains("Previous secret"));

    // Revoke the other: its row says when, not when it would have expired, and offers nothing.
    let csrf = b.csrf().await;
    let r = b
        .post(
            &format!("/tokens/{lost}/revoke"),
            &[("csrf", &csrf), ("reason", "laptop lost")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let revoked_at = page_time(app.keyward.now());
    let list = b.get("/tokens").await.body.clone();
    let row = token_row(&list, "lost");
    assert!(row.contains(&format!("Revoked {revoked_at}")), "{row}");
    assert!(!row.contains("Expires") && !row.contains("days)"), "{row}");
    assert!(
        !row.contains("/regenerate") && !row.contains("/revoke"),
        "{row}"
    );

    // Asking to regenerate it anyway: a page with the navigation and a sentence, 409, and the
    // form's nonce is not spent on it.
    let csrf = b.csrf().await;
    let nonce = field(&b.get("/tokens/new").await.body, "nonce");
    b.get(&format!("/tokens/{lost}/regenerate")).await;
    b.post(
        &format!("/tokens/{lost}/regenerate"),
        &[("csrf", &csrf), ("nonce", &nonce), ("grace", "")],
    )
    .await;
    for seen in &b.seen[b.seen.len() - 2..] {
        assert_eq!(seen.status, StatusCode::CONFLICT, "{}", seen.what);
        assert!(
            seen.body.contains("This token is revoked")
                && seen.body.contains(&format!(
                    "“lost” was revoked on {revoked_at}, so it cannot be regenerated."
                )),
            "{}",
            seen.body
        );
        assert!(
            seen.body.contains("class=\"signout\"") && seen.body.contains("href=\"/tokens\""),
            "the page has the navigation: {}",
            seen.body
        );
        assert!(!seen.body.contains("is revoked; create"), "{}", seen.body);
        assert_security_headers(seen);
    }

    // After the grace period, the note is gone.
    app.advance(Duration::hours(1) + Duration::seconds(1));
    let list = b.get("/tokens").await.body.clone();
    assert!(!list.contains("Previous secret"), "{list}");
}

#[tokio::test]
async fn browsers_get_html_for_unknown_addresses_and_api_clients_json() {
    let app = spawn_app().await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let browser_accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let send = |method: reqwest::Method, path: &str, accept: Option<&str>| {
        let req = client.request(method, format!("{}{path}", app.base));
        let req = match accept {
            Some(a) => req.header("accept", a),
            None => req,
        };
        async move {
            let r = req.send().await.unwrap();
            let status = r.status();
            let headers = r.headers().clone();
            Seen {
                what: status.to_string(),
                status,
                headers,
                body: r.text().await.unwrap(),
            }
        }
    };
    use reqwest::Method;
    for (method, path, status, heading) in [
        (Method::GET, "/tokenz", StatusCode::NOT_FOUND, "Not found"),
        (
            Method::GET,
            "/v1/tokenz",
            StatusCode::NOT_FOUND,
            "Not found",
        ),
        (
            Method::DELETE,
            "/tokens",
            StatusCode::METHOD_NOT_ALLOWED,
            "Not allowed here",
        ),
        (
            Method::GET,
            "/logout",
            StatusCode::METHOD_NOT_ALLOWED,
            "Not allowed here",
        ),
    ] {
        let page = send(method.clone(), path, Some(browser_accept)).await;
        assert_eq!(page.status, status, "{method} {path}");
        assert!(
            page.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{method} {path}"
        );
        assert!(
            page.body.contains(&format!("<h1>{heading}</h1>")),
            "{}",
            page.body
        );
        assert_security_headers(&page);
        assert_eq!(page.headers["cache-control"], "no-store");
        for accept in [
            None,
            Some("application/json"),
            Some("*/*"),
            Some("text/html;q=0"),
        ] {
            let api = send(method.clone(), path, accept).await;
            assert_eq!(api.status, status, "{method} {path} {accept:?}");
            let json: serde_json::Value = serde_json::from_str(&api.body)
                .unwrap_or_else(|e| panic!("{method} {path} {accept:?}: {e}: {}", api.body));
            assert!(json["error"]["code"].is_string(), "{json}");
        }
    }
}

#[tokio::test]
async fn a_person_changes_their_own_password_and_their_other_sessions_end() {
    let app = spawn_app().await;
    person(&app, "alice", false).await;
    let mut here = Browser::new(&app);
    here.sign_in("alice", PASSWORD).await;
    let mut elsewhere = Browser::new(&app);
    elsewhere.sign_in("alice", PASSWORD).await;

    let page = here.get("/account/password").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("aria-current=\"page\">Password</a>"));
    assert!(page.body.contains("minlength=\"12\""), "{}", page.body);
    let csrf = field(&page.body, "csrf");
    let new_password = "a much longer new passphrase";

    // Refusals: each says why, changes nothing, and keeps the person signed in.
    for (form, status, why) in [
        (
            vec![
                ("current", PASSWORD),
                ("new", new_password),
                ("repeat", "something else"),
            ],
            StatusCode::BAD_REQUEST,
            "The two new passwords are not the same.",
        ),
        (
            vec![("current", PASSWORD), ("new", "short"), ("repeat", "short")],
            StatusCode::BAD_REQUEST,
            "The new password must be 12 to 1024 characters long.",
        ),
        (
            vec![
                ("current", "not my password"),
                ("new", new_password),
                ("repeat", new_password),
            ],
            StatusCode::BAD_REQUEST,
            "Your current password is not right.",
        ),
    ] {
        let mut fields = vec![("csrf", csrf.as_str())];
        fields.extend(form);
        let r = here.post("/account/password", &fields).await;
        assert_eq!(r.status, status, "{}", r.body);
        assert!(r.body.contains(why), "{}", r.body);
        assert!(r.body.contains("alert-error"));
        assert_security_headers(r);
    }
    let no_csrf = here
        .post(
            "/account/password",
            &[
                ("current", PASSWORD),
                ("new", new_password),
                ("repeat", new_password),
            ],
        )
        .await;
    assert_eq!(no_csrf.status, StatusCode::FORBIDDEN);
    assert_eq!(elsewhere.get("/tokens").await.status, StatusCode::OK);

    let done = here
        .post(
            "/account/password",
            &[
                ("csrf", &csrf),
                ("current", PASSWORD),
                ("new", new_password),
                ("repeat", new_password),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(location(done), "/account/password?changed=1");
    assert!(
        done.headers
            .get_all(SET_COOKIE)
            .iter()
            .any(|c| c.to_str().unwrap().starts_with("keyward_session=")),
        "a new session replaces this one"
    );
    let after = here.get("/account/password?changed=1").await;
    assert_eq!(after.status, StatusCode::OK, "still signed in here");
    assert!(
        after.body.contains("Your password was changed."),
        "{}",
        after.body
    );
    assert_eq!(
        location(elsewhere.get("/tokens").await),
        "/login",
        "the other session has ended"
    );
    Browser::new(&app).sign_in("alice", new_password).await;
    let kinds: Vec<String> = app
        .audit_trail()
        .await
        .iter()
        .map(|e| e.event.kind.as_str().to_owned())
        .collect();
    assert!(
        kinds.contains(&"user.password_changed".to_owned()),
        "{kinds:?}"
    );

    // Guessing the current password through an open session is throttled like signing in.
    let csrf = field(&here.get("/account/password").await.body, "csrf");
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let r = here
            .post(
                "/account/password",
                &[
                    ("csrf", &csrf),
                    ("current", "a wrong guess here"),
                    ("new", new_password),
                    ("repeat", new_password),
                ],
            )
            .await;
        statuses.push(r.status);
    }
    assert_eq!(
        statuses.last(),
        Some(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::BAD_REQUEST)
            .count()
            <= 10,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn a_scope_group_with_one_action_offers_one_choice() {
    let app = spawn_app().await;
    person(&app, "alice", true).await;
    let mut b = Browser::new(&app);
    b.sign_in("alice", PASSWORD).await;
    let form = b.get("/tokens/new").await.body.clone();
    assert_eq!(
        form.matches("name=\"scope\" value=\"audit:").count(),
        1,
        "{form}"
    );
    assert!(form.contains("name=\"scope\" value=\"audit:read\""));
    assert!(!form.contains("value=\"audit:*\""));
    // A resource with several actions keeps its shortcuts.
    assert!(form.contains("value=\"droplet:*\"") && form.contains("value=\"droplet:read\""));
    let once = generate(&mut b, "auditor", &["audit:read"]).await;
    assert_eq!(once.status, StatusCode::OK, "{}", once.body);
    let secret = shown_secret(&once.body);
    assert_eq!(app.verdict(&secret, &["audit:read"]).await, "active");
}

/// `fields` as the borrowed pairs [`Browser::post`] sends.
fn borrowed(fields: &[(String, String)]) -> Vec<(&str, &str)> {
    fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// `POST /v1/verify` of `secret` for `droplet:read`, from `ip` if given.
async fn verify_from(app: &TestApp, secret: &str, ip: Option<&str>) -> serde_json::Value {
    let mut body = serde_json::json!({"token": secret, "scopes": ["droplet:read"]});
    if let Some(ip) = ip {
        body["ip"] = serde_json::json!(ip);
    }
    app.request(reqwest::Method::POST, "/v1/verify", None, Some(&body))
        .await
        .expect(200)
}

/// Every limit, as a person types them into the form.
const LIMITS: [(&str, &str); 4] = [
    (
        "allowed_ips",
        "203.0.113.7/24, 2001:db8::/32\r\n198.51.100.4",
    ),
    ("max_uses", "100"),
    ("refill", "100/1d"),
    ("rate_limit", "100/1m"),
];

#[tokio::test]
async fn the_generate_form_gives_a_token_every_limit() {
    let app = spawn_app().await;
    let alice = person(&app, "alice", false).await;
    let mut b = Browser::new(&app);
    b.sign_in("alice", PASSWORD).await;
    let form = b.get("/tokens/new").await.body.clone();
    for id in ["allowed_ips", "max_uses", "refill", "rate_limit"] {
        assert!(
            form.contains(&format!("<label for=\"{id}\">")),
            "{id}: {form}"
        );
        assert!(form.contains(&format!("id=\"{id}\" name=\"{id}\"")), "{id}");
        assert!(
            form.contains(&format!("aria-describedby=\"{id}-help\"")),
            "{id}"
        );
    }
    assert!(!form.contains(" required>"), "no limit is required here");

    let mut fields = token_fields(&form, "limited", "droplet:read");
    fields.extend(LIMITS.map(|(k, v)| (k.to_owned(), v.to_owned())));
    let once = b.post("/tokens/new", &borrowed(&fields)).await;
    assert_eq!(once.status, StatusCode::OK, "{}", once.body);
    let shown = "from 198.51.100.4/32, 203.0.113.0/24, 2001:db8::/32 · 100 uses left, refill 100/1d · rate limit 100/1m";
    assert!(once.body.contains(shown), "{}", once.body);
    let secret = shown_secret(&once.body);

    // The limits hold: an address outside the allowlist (or none) is refused and spends nothing.
    for ip in [Some("203.0.114.1"), Some("2001:db9::1"), None] {
        let v = verify_from(&app, &secret, ip).await;
        assert_eq!(v["active"], false, "{ip:?}: {v}");
        assert_eq!(v["reason"], "ip_not_allowed", "{ip:?}: {v}");
    }
    let v = verify_from(&app, &secret, Some("203.0.113.200")).await;
    assert_eq!(v["active"], true, "{v}");
    assert_eq!(v["remaining"], 99, "{v}");
    assert_eq!(v["ratelimit"]["limit"], 100, "{v}");
    assert_eq!(v["ratelimit"]["remaining"], 99, "{v}");
    assert_eq!(
        verify_from(&app, &secret, Some("2001:db8:5::1")).await["remaining"],
        98
    );

    // The API reads them back as it would have stored them itself.
    let reader = app.token(&alice, &["tokens:read"]).await;
    let id = token_id(&app, "limited").await;
    let token = app
        .get(&format!("/v1/tokens/{id}"), &reader.secret)
        .await
        .expect(200)["token"]
        .clone();
    assert_eq!(
        token["allowed_ips"],
        serde_json::json!(["198.51.100.4/32", "203.0.113.0/24", "2001:db8::/32"]),
        "{token}"
    );
    assert_eq!(token["max_uses"], 100, "{token}");
    assert_eq!(
        token["refill"],
        serde_json::json!({"amount": 100, "every": "1d"})
    );
    assert_eq!(
        token["rate_limit"],
        serde_json::json!({"requests": 100, "per": "1m"})
    );

    // The list says them under the scopes; a token without limits says nothing.
    let list = b.get("/tokens").await.body.clone();
    let row = token_row(&list, "limited");
    assert!(
        row.contains("Limits: from 198.51.100.4/32, 203.0.113.0/24, 2001:db8::/32 · "),
        "{row}"
    );
    assert!(
        row.contains(" uses left, refill 100/1d · rate limit 100/1m"),
        "{row}"
    );
    generate(&mut b, "plain", &["droplet:read"]).await;
    let list = b.get("/tokens").await.body.clone();
    assert!(!token_row(&list, "plain").contains("Limits:"), "{list}");
}

#[tokio::test]
async fn bad_limits_on_the_generate_form_are_refused_and_make_nothing() {
    let app = spawn_app().await;
    person(&app, "alice", false).await;
    let mut b = Browser::new(&app);
    b.sign_in("alice", PASSWORD).await;
    let mut form = b.get("/tokens/new").await.body.clone();
    let before = app.snapshot().await;
    for (bad, says) in [
        (
            [("allowed_ips", "10.0.0.0/33 192.0.2.1")].as_slice(),
            "is not an IP address or CIDR range",
        ),
        (&[("rate_limit", "100 per minute")], "is not a rate limit"),
        (&[("rate_limit", "100/2d")], "is not a rate limit"),
        (&[("refill", "100/1d")], "A refill needs maximum uses"),
        (&[("max_uses", "10"), ("refill", "0/1d")], "is not a refill"),
        (&[("max_uses", "0")], "Maximum uses must be a whole number"),
        (
            &[("max_uses", "ten")],
            "Maximum uses must be a whole number",
        ),
    ] {
        let mut fields = token_fields(&form, "limited", "droplet:read");
        fields.extend(bad.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let r = b.post("/tokens/new", &borrowed(&fields)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad:?}: {}", r.body);
        let alert = r
            .body
            .split("role=\"alert\">")
            .nth(1)
            .unwrap_or_else(|| panic!("{bad:?}: no alert in {}", r.body));
        assert!(alert.contains(says), "{bad:?}: {alert}");
        // The form again, with what was typed.
        assert!(r.body.contains("value=\"limited\""), "{bad:?}");
        assert!(r.body.contains("value=\"droplet:read\" checked"), "{bad:?}");
        for (name, value) in bad {
            let kept = if *name == "allowed_ips" {
                format!(">{value}</textarea>")
            } else {
                format!("value=\"{value}\" aria-describedby=\"{name}-help\"")
            };
            assert!(r.body.contains(&kept), "{bad:?}: {kept} not in {}", r.body);
        }
        assert!(!r.body.contains("will not be shown again"));
        form = r.body.clone();
    }
    assert_eq!(app.snapshot().await, before, "nothing was made");

    // The nonce of a refused form was not spent: the same form, corrected, makes the token.
    let mut fields = token_fields(&form, "limited", "droplet:read");
    fields.extend(LIMITS.map(|(k, v)| (k.to_owned(), v.to_owned())));
    let once = b.post("/tokens/new", &borrowed(&fields)).await;
    assert_eq!(once.status, StatusCode::OK, "{}", once.body);
}

#[tokio::test]
async fn a_deployment_that_requires_allowed_ips_says_so_on_both_forms() {
    let app = spawn_app_with(keyward_server::Settings {
        require_allowed_ips: true,
        ..keyward_server::Settings::default()
    })
    .await;
    person(&app, "root", true).await;
    let bot = service_account(&app, "ci-bot").await;
    let mut b = Browser::new(&app);
    b.sign_in("root", PASSWORD).await;
    let service_page = format!("/admin/users/{}/tokens", bot.id);
    for path in ["/tokens/new", service_page.as_str()] {
        let form = b.get(path).await.body.clone();
        assert!(
            form.contains("spellcheck=\"false\" aria-describedby=\"allowed_ips-help\" required>"),
            "{form}"
        );
        let before = app.snapshot().await;
        // The service refuses it (a browser would not send it): the form says why.
        let r = b
            .post(
                path,
                &borrowed(&token_fields(&form, "anywhere", "droplet:read")),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.body);
        assert!(
            r.body
                .contains("This deployment requires every token to have allowed IP addresses."),
            "{path}: {}",
            r.body
        );
        assert!(r.body.contains("value=\"anywhere\""), "{path}");
        assert_eq!(app.snapshot().await, before, "{path}: nothing was made");

        let mut fields = token_fields(&r.body.clone(), "bound", "droplet:read");
        fields.push(("allowed_ips".to_owned(), "192.0.2.0/24".to_owned()));
        let once = b.post(path, &borrowed(&fields)).await;
        assert_eq!(once.status, StatusCode::OK, "{path}: {}", once.body);
        let secret = shown_secret(&once.body);
        assert_eq!(
            verify_from(&app, &secret, Some("192.0.2.9")).await["active"],
            true
        );
        assert_eq!(
            verify_from(&app, &secret, Some("198.51.100.1")).await["reason"],
            "ip_not_allowed"
        );
    }
}

#[tokio::test]
async fn a_service_accounts_form_gives_its_tokens_limits() {
    let app = spawn_app().await;
    person(&app, "root", true).await;
    let bot = service_account(&app, "ci-bot").await;
    let mut b = Browser::new(&app);
    b.sign_in("root", PASSWORD).await;
    let path = format!("/admin/users/{}/tokens", bot.id);
    let page = b.get(&path).await.body.clone();
    let before = app.snapshot().await;

    let mut fields = token_fields(&page, "deploy", "droplet:read");
    fields.push(("allowed_ips".to_owned(), "10.0.0.0/33".to_owned()));
    let r = b.post(&path, &borrowed(&fields)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(
        r.body.contains("is not an IP address or CIDR range"),
        "{}",
        r.body
    );
    assert!(r.body.contains(">10.0.0.0/33</textarea>"), "{}", r.body);
    assert_eq!(app.snapshot().await, before, "nothing was made");

    let mut fields = token_fields(&r.body.clone(), "deploy", "droplet:read");
    fields.extend(LIMITS.map(|(k, v)| (k.to_owned(), v.to_owned())));
    let once = b.post(&path, &borrowed(&fields)).await;
    assert_eq!(once.status, StatusCode::OK, "{}", once.body);
    let secret = shown_secret(&once.body);
    assert_eq!(
        verify_from(&app, &secret, Some("203.0.114.1")).await["reason"],
        "ip_not_allowed"
    );
    assert_eq!(
        verify_from(&app, &secret, Some("198.51.100.4")).await["remaining"],
        99
    );
    let tokens = app
        .keyward
        .list_tokens(&Caller::operator("test"), Some(&bot.id), None, 10)
        .await
        .unwrap()
        .tokens;
    let [token] = tokens.as_slice() else {
        panic!("one token: {tokens:?}")
    };
    assert_eq!(token.limits.allowed_ips.len(), 3);
    assert_eq!(token.limits.max_uses, Some(100));
    assert_eq!(
        token.limits.refill.map(|r| r.to_string()).as_deref(),
        Some("100/1d")
    );
    assert_eq!(
        token.limits.rate_limit.map(|r| r.to_string()).as_deref(),
        Some("100/1m")
    );
    let listed = b.get(&path).await.body.clone();
    assert!(
        token_row(&listed, "deploy").contains("rate limit 100/1m"),
        "{listed}"
    );
}

#[tokio::test]
async fn a_person_at_the_cap_on_tokens_is_told_so_on_the_form() {
    let app = spawn_app_with(keyward_server::Settings {
        max_tokens_per_user: 1,
        ..keyward_server::Settings::default()
    })
    .await;
    person(&app, "alice", false).await;
    let mut b = Browser::new(&app);
    b.sign_in("alice", PASSWORD).await;
    let first = generate(&mut b, "first", &["droplet:read"]).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let second = generate(&mut b, "second", &["droplet:read"]).await;
    assert_eq!(second.status, StatusCode::CONFLICT, "{}", second.body);
    assert!(
        second.body.contains("revoke a token first"),
        "{}",
        second.body
    );
    assert!(second.body.contains("value=\"second\""), "the form, kept");
}
