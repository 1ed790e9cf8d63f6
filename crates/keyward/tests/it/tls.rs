//! HTTPS (issue 18): the real binary serving `[tls]` with certificates the test issues from a
//! CA of its own (`openssl`, as Debian ships it), to a client that verifies them against that
//! CA and nothing else.

use crate::helpers::{Api, Server, add_user, assert_exit_0, cli, create_token};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The reload promise: a new pair reaches new connections within this.
const RELOAD_BOUND: Duration = Duration::from_secs(30);
/// How often the test looks for the new certificate.
const POLL: Duration = Duration::from_millis(250);

/// Runs `openssl ARGS` (split at spaces) in `dir`, asserting success.
#[track_caller]
fn openssl(dir: &Path, args: &str) {
    let out = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A certificate authority of the test's own.
struct Ca {
    dir: PathBuf,
    pem: Vec<u8>,
}

/// A server certificate the CA issued, with its key.
struct Leaf {
    cert: PathBuf,
    key: PathBuf,
    /// The certificate, DER: what a client sees in the handshake.
    der: Vec<u8>,
}

impl Ca {
    fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        openssl(
            dir,
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
             -out ca.pem -days 2 -subj /CN=keyward-test-ca \
             -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign",
        );
        Self {
            dir: dir.to_owned(),
            pem: std::fs::read(dir.join("ca.pem")).unwrap(),
        }
    }

    /// A certificate for 127.0.0.1 and localhost, named `name`, with this serial.
    fn issue(&self, name: &str, serial: u32) -> Leaf {
        let ext = self.dir.join(format!("{name}.ext"));
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            &self.dir,
            &format!(
                "req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {name}.key \
                 -out {name}.csr -subj /CN={name}"
            ),
        );
        openssl(
            &self.dir,
            &format!(
                "x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -set_serial {serial} \
                 -days 2 -extfile {name}.ext -out {name}.pem"
            ),
        );
        openssl(
            &self.dir,
            &format!("x509 -in {name}.pem -outform DER -out {name}.der"),
        );
        Leaf {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
            der: std::fs::read(self.dir.join(format!("{name}.der"))).unwrap(),
        }
    }

    /// A client that trusts this CA alone, reports the server's certificate, and opens a new
    /// connection per request (so each request is a new handshake; sessions may resume).
    fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .tls_certs_only([reqwest::Certificate::from_pem(&self.pem).unwrap()])
            .tls_info(true)
            .pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap()
    }
}

/// Copies `from` over `to` the way deploy tools do: a temporary file, then a rename.
fn install(from: &Path, to: &Path) {
    let tmp = to.with_extension("new");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

/// A data dir whose `keyward.toml` serves `tls/cert.pem` and `tls/key.pem`, holding `leaf`.
fn data_dir_serving(root: &Path, leaf: &Leaf) -> (PathBuf, PathBuf, PathBuf) {
    let data = root.join("data");
    let tls = root.join("tls");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&tls).unwrap();
    let (cert, key) = (tls.join("cert.pem"), tls.join("key.pem"));
    install(&leaf.cert, &cert);
    install(&leaf.key, &key);
    std::fs::write(
        data.join("keyward.toml"),
        format!(
            "version = 1\n[tls]\ncert = {:?}\nkey = {:?}\n",
            cert.to_str().unwrap(),
            key.to_str().unwrap()
        ),
    )
    .unwrap();
    (data, cert, key)
}

/// `GET /healthz` over a new connection: the certificate the server presented.
async fn presented(client: &reqwest::Client, base: &str) -> Vec<u8> {
    let resp = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("the TLS info of the connection")
        .to_vec()
}

/// Waits (bounded) until the server's logs contain `needle`.
async fn logged(server: &Server, needle: &str) {
    let deadline = Instant::now() + RELOAD_BOUND;
    while !server.logs().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "{needle:?} not logged within {RELOAD_BOUND:?}: {}",
            server.logs()
        );
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_verifies_tokens_and_takes_a_new_certificate_without_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new(&tmp.path().join("ca"));
    let (one, two) = (ca.issue("keyward-one", 1001), ca.issue("keyward-two", 1002));
    assert_ne!(one.der, two.der);
    let (data, cert, key) = data_dir_serving(tmp.path(), &one);
    add_user(&data, "alice");
    let (token, _) = create_token(&data, "alice", "ci", &["droplet:read"]);

    let server = Server::start(&data, &[]);
    assert!(
        server.base.starts_with("https://127.0.0.1:"),
        "{}",
        server.base
    );
    let pid = server.pid();
    let client = ca.client();
    assert_eq!(presented(&client, &server.base).await, one.der);
    let api = Api::with_client(&server.base, client.clone());
    let verdict = api.verify(&token.secret, &["droplet:read"]).await;
    assert_eq!(verdict["active"], true, "{verdict}");
    assert_eq!(verdict["owner"]["name"], "alice", "{verdict}");
    assert!(
        server.logs().contains("loaded the TLS certificate"),
        "{}",
        server.logs()
    );

    // The client really verifies: one trusting another CA refuses this server.
    let stranger = Ca::new(&tmp.path().join("other-ca")).client();
    let refused = stranger
        .get(format!("{}/healthz", server.base))
        .send()
        .await;
    assert!(refused.is_err(), "{refused:?}");

    // A certificate whose key is not beside it yet: refused with a warning, the old pair kept.
    install(&two.cert, &cert);
    logged(
        &server,
        "cannot be served; still serving the one loaded before",
    )
    .await;
    assert_eq!(presented(&client, &server.base).await, one.der);

    // Its key arrives: new connections get the new certificate, same process, within the bound.
    install(&two.key, &key);
    let installed = Instant::now();
    loop {
        if presented(&client, &server.base).await == two.der {
            break;
        }
        assert!(
            installed.elapsed() < RELOAD_BOUND,
            "still the old certificate after {RELOAD_BOUND:?}: {}",
            server.logs()
        );
        tokio::time::sleep(POLL).await;
    }
    eprintln!(
        "new certificate served {:?} after the key was installed",
        installed.elapsed()
    );
    assert_eq!(server.pid(), pid);
    assert!(server.logs().contains("loaded a new TLS certificate"));
    api.assert_active(&token.secret).await;

    let logs = server.logs();
    let key_pem = std::fs::read_to_string(&two.key).unwrap();
    let key_body = key_pem.lines().nth(1).unwrap();
    assert!(!logs.contains(key_body), "the private key is in the logs");
    assert!(!logs.contains(&token.secret), "the token is in the logs");
    assert_exit_0(&server.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_the_https_port_is_refused_not_served() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new(&tmp.path().join("ca"));
    let (data, _, _) = data_dir_serving(tmp.path(), &ca.issue("keyward", 7));
    let server = Server::start(&data, &[]);
    let addr = server.base.strip_prefix("https://").unwrap().to_owned();

    let answer = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let mut answer = Vec::new();
        // Ends when the server closes the connection (a timeout would be an error here).
        stream.read_to_end(&mut answer).unwrap();
        String::from_utf8(answer).unwrap()
    })
    .await
    .unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 400 "), "{answer}");
    let error: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(error["error"]["code"], "invalid_request", "{answer}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("https://"),
        "{answer}"
    );

    // The port still serves HTTPS.
    let healthz = ca
        .client()
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200);
    assert_exit_0(&server.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_over_https_sets_a_secure_session_cookie() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new(&tmp.path().join("ca"));
    let (data, _, _) = data_dir_serving(tmp.path(), &ca.issue("keyward", 8));
    let password = "correct horse battery staple";
    cli(
        &data,
        &["user", "add", "alice", "--password-stdin"],
        Some(password),
    )
    .ok();
    let server = Server::start(&data, &[]);
    let client = ca.client();

    let form = client
        .get(format!("{}/login", server.base))
        .send()
        .await
        .unwrap();
    let login_cookie = set_cookies(&form)
        .into_iter()
        .find(|c| c.starts_with("keyward_login="))
        .expect("the sign-in form's cookie");
    assert!(login_cookie.contains("; Secure"), "{login_cookie}");
    let html = form.text().await.unwrap();
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).unwrap() + marker.len();
    let csrf = html[start..].split('"').next().unwrap();

    let signed_in = client
        .post(format!("{}/login", server.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", login_cookie.split(';').next().unwrap())
        .body(format!(
            "csrf={csrf}&username=alice&password={}",
            password.replace(' ', "+")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303, "signed in and sent to /tokens");
    let session = set_cookies(&signed_in)
        .into_iter()
        .find(|c| c.starts_with("keyward_session="))
        .expect("the session cookie");
    for attribute in ["; Secure", "; HttpOnly", "; SameSite=Strict"] {
        assert!(session.contains(attribute), "{attribute}: {session}");
    }
    assert_exit_0(&server.stop());
}

fn set_cookies(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_certificate_without_its_key_or_a_bad_pair_refuses_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new(&tmp.path().join("ca"));
    let (one, two) = (ca.issue("keyward-one", 1), ca.issue("keyward-two", 2));
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let serve = |config: String| {
        std::fs::write(data.join("keyward.toml"), format!("version = 1\n{config}")).unwrap();
        cli(&data, &["serve", "--listen", "127.0.0.1:0"], None)
    };
    let tls = |cert: &Path, key: &Path| format!("[tls]\ncert = {cert:?}\nkey = {key:?}\n");

    let out = serve(format!("[tls]\ncert = {:?}\n", one.cert));
    let line = out.failed_cleanly(2);
    assert!(
        line.contains("tls.cert is set but tls.key is not"),
        "{line}"
    );
    assert!(line.contains("KEYWARD_TLS_KEY"), "{line}");

    let out = serve(tls(&one.cert, &two.key));
    let line = out.failed_cleanly(2);
    assert!(line.contains("cannot serve HTTPS"), "{line}");
    assert!(
        line.contains(&format!(
            "the private key in {} is not the key of the certificate in {}",
            two.key.display(),
            one.cert.display()
        )),
        "{line}"
    );

    // A key where the certificate belongs: the certificate file is named.
    let out = serve(tls(&one.key, &one.key));
    let line = out.failed_cleanly(2);
    assert!(
        line.contains(&format!(
            "{} is not a PEM certificate chain",
            one.key.display()
        )),
        "{line}"
    );
    let key_pem = std::fs::read_to_string(&one.key).unwrap();
    assert!(!line.contains(key_pem.lines().nth(1).unwrap()), "{line}");

    let missing = tmp.path().join("nowhere.pem");
    let out = serve(tls(&one.cert, &missing));
    let line = out.failed_cleanly(2);
    assert!(
        line.contains(&format!("cannot read {}", missing.display())),
        "{line}"
    );
}
