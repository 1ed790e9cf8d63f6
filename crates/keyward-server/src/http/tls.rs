//! HTTPS: the main listener speaks TLS with the certificate chain and private key of two PEM
//! files, re-read while the server runs.
//!
//! What is offered. TLS 1.3 and 1.2 only, with rustls' default cipher suites and key exchange
//! groups on aws-lc-rs (the provider the workspace already builds for its HTTPS client): AEAD
//! suites with forward secrecy, nothing older. ALPN offers `http/1.1`, the one protocol
//! [`serve`](super::serve) speaks. No client certificates.
//!
//! Reload. Every [`CHECK_EVERY`] both files are read; when their bytes differ from the pair last
//! looked at, the pair is parsed and checked (the key must be the certificate's) into a new
//! `ServerConfig`, which every later handshake uses; connections already open keep theirs. A
//! new `ServerConfig` comes with an empty session cache (and rustls issues no stateless
//! tickets unless told to), so no client resumes a session made under the old certificate: its
//! next connection sees the new one. A pair that does not load (a file half-written, a key of
//! another certificate, a file gone) is logged at WARN, once per distinct content, and the pair
//! in use is kept: a bad deploy never takes HTTPS down.
//!
//! A plain HTTP request sent to the HTTPS port gets `400` with the JSON error shape, in the
//! clear, saying to use `https://`, and nothing else: no route answers it (nginx and Go's
//! server do the same, so a misconfigured client or proxy learns why at once).
//!
//! The private key never reaches a log line, an error or a `Debug` output: errors about the key
//! file name the file and what is wrong with it, never its content.

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::pem::{self, PemObject as _};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use zeroize::Zeroizing;

/// How often the certificate and key files are read to see whether they changed. A new pair
/// reaches new connections within this (plus the time to read two small files).
pub const CHECK_EVERY: Duration = Duration::from_secs(5);
/// Largest certificate or key file read: a chain of a few certificates is a few KiB, so a
/// larger file is a wrong path, not a certificate.
const MAX_PEM_BYTES: u64 = 1 << 20;
/// The protocols offered by ALPN: HTTP/1.1, which is all [`serve`](super::serve) speaks.
const ALPN: &[&[u8]] = &[b"http/1.1"];
/// The answer to a plain HTTP request on the HTTPS port.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
content-type: application/json\r\n\
content-length: 98\r\n\
cache-control: no-store\r\n\
connection: close\r\n\
\r\n\
{\"error\":{\"code\":\"invalid_request\",\"message\":\"this port speaks HTTPS only: use an https:// URL\"}}\n";
/// How much of a plain HTTP request is read (and thrown away) before it is answered, so that
/// closing the socket does not reset it under the answer.
const PLAIN_HTTP_DRAIN: usize = 16 * 1024;

/// Where the certificate chain and private key are (`[tls] cert` and `key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: the server's certificate first, then any intermediates.
    pub cert: PathBuf,
    /// PEM: the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why a certificate and key cannot be served. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is larger than any certificate or key.
    #[error("{} is larger than {} KiB: not a PEM certificate or key", path.display(), MAX_PEM_BYTES / 1024)]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The certificate file holds no certificate, or one that cannot be read.
    #[error("{} is not a PEM certificate chain: {reason}", path.display())]
    Certificate {
        /// The certificate file.
        path: PathBuf,
        /// What is wrong (certificates are public: the reason may quote the file).
        reason: String,
    },
    /// The key file holds no private key, or one that cannot be used.
    #[error("{} is not a usable PEM private key: {reason}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong, never quoting the file.
        reason: &'static str,
    },
    /// The key is not the certificate's.
    #[error("the private key in {} is not the key of the certificate in {}", key.display(), cert.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
}

/// The TLS side of the HTTPS listener: the configuration new handshakes use, replaced when the
/// files change.
pub struct Tls {
    files: TlsFiles,
    config: ArcSwap<ServerConfig>,
    /// The pair last looked at by [`Tls::check`], served or refused.
    seen: Mutex<Seen>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

/// The two files' content, or why they could not be read.
#[derive(PartialEq, Eq)]
enum Seen {
    Pair(Pair),
    Unreadable(String),
}

/// The bytes of both files, as read.
#[derive(PartialEq, Eq)]
struct Pair {
    cert: Vec<u8>,
    key: Zeroizing<Vec<u8>>,
}

/// What [`Tls::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// The files are as they were last looked at.
    Unchanged,
    /// A new pair is served to new connections.
    Loaded,
    /// The files changed but cannot be served; the pair in use is kept.
    Refused,
}

impl Tls {
    /// Reads and checks the pair, ready to serve. The error names the file at fault.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let pair = read_pair(&files)?;
        let (config, fingerprint) = server_config(&files, &pair)?;
        tracing::info!(cert = %files.cert.display(), sha256 = %fingerprint, "loaded the TLS certificate");
        Ok(Self {
            files,
            config: ArcSwap::from_pointee(config),
            seen: Mutex::new(Seen::Pair(pair)),
        })
    }

    /// The files served.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Reads the files and, if they changed since last looked at, serves the new pair to new
    /// connections; a pair that cannot be served is logged at WARN (once) and the one in use
    /// kept. Blocking: reads two files.
    pub fn check(&self) -> Reload {
        let now = match read_pair(&self.files) {
            Ok(pair) => Seen::Pair(pair),
            Err(e) => Seen::Unreadable(e.to_string()),
        };
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if *seen == now {
            return Reload::Unchanged;
        }
        let outcome = match &now {
            Seen::Unreadable(why) => {
                tracing::warn!(error = %why, "the TLS certificate or key cannot be read; still serving the one loaded before");
                Reload::Refused
            }
            Seen::Pair(pair) => match server_config(&self.files, pair) {
                Ok((config, fingerprint)) => {
                    self.config.store(Arc::new(config));
                    tracing::info!(cert = %self.files.cert.display(), sha256 = %fingerprint, "loaded a new TLS certificate; new connections get it");
                    Reload::Loaded
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the TLS certificate or key changed but cannot be served; still serving the one loaded before");
                    Reload::Refused
                }
            },
        };
        *seen = now;
        outcome
    }

    /// Calls [`Tls::check`] every [`CHECK_EVERY`], forever (the caller aborts the task).
    pub(super) async fn watch(self: Arc<Self>) {
        let mut every = tokio::time::interval(CHECK_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is at once: the pair was read when it was loaded.
        every.tick().await;
        loop {
            every.tick().await;
            let tls = Arc::clone(&self);
            if let Err(e) = tokio::task::spawn_blocking(move || tls.check()).await {
                tracing::warn!(error = %e, "the TLS certificate check failed");
            }
        }
    }

    /// The TLS handshake on a new connection, with the configuration in use now. `None` when
    /// the connection is not served: the handshake failed, or it was a plain HTTP request
    /// (answered with a 400 that says to use HTTPS).
    pub(super) async fn handshake(&self, stream: TcpStream) -> Option<TlsStream<TcpStream>> {
        let mut first = [0u8; 1];
        match stream.peek(&mut first).await {
            Ok(1) => {}
            _ => return None,
        }
        // A TLS connection starts with a handshake record (22); an HTTP/1 request with its
        // method, in capitals.
        if first[0].is_ascii_uppercase() {
            metrics::counter!("keyward_tls_plain_http_refused_total").increment(1);
            refuse_plain_http(stream).await;
            return None;
        }
        let acceptor = TlsAcceptor::from(self.config.load_full());
        match acceptor.accept(stream).await {
            Ok(stream) => Some(stream),
            Err(e) => {
                metrics::counter!("keyward_tls_handshake_failures_total").increment(1);
                tracing::debug!(error = %e, "TLS handshake failed");
                None
            }
        }
    }
}

/// Answers a plain HTTP request on the HTTPS port and closes the connection.
async fn refuse_plain_http(mut stream: TcpStream) {
    let mut request = vec![0u8; PLAIN_HTTP_DRAIN];
    if stream.read(&mut request).await.is_err() {
        return;
    }
    if stream.write_all(PLAIN_HTTP_ANSWER).await.is_ok() {
        let _ = stream.shutdown().await;
    }
}

/// Reads both files, each bounded by [`MAX_PEM_BYTES`].
fn read_pair(files: &TlsFiles) -> Result<Pair, TlsError> {
    Ok(Pair {
        cert: read_bounded(&files.cert)?,
        key: Zeroizing::new(read_bounded(&files.key)?),
    })
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, TlsError> {
    let read = |source| TlsError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(TlsError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

/// The rustls configuration serving `pair`, and the SHA-256 fingerprint of its certificate.
fn server_config(files: &TlsFiles, pair: &Pair) -> Result<(ServerConfig, String), TlsError> {
    let certificate = |reason: String| TlsError::Certificate {
        path: files.cert.clone(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(&pair.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| certificate(e.to_string()))?;
    let Some(leaf) = chain.first() else {
        return Err(certificate(
            "no \"BEGIN CERTIFICATE\" section found".to_owned(),
        ));
    };
    let fingerprint = fingerprint(leaf);
    let key_error = |reason| TlsError::Key {
        path: files.key.clone(),
        reason,
    };
    // The parser's own message may quote the file: only its kind is said.
    let key = PrivateKeyDer::from_pem_slice(&pair.key).map_err(|e| {
        key_error(match e {
            pem::Error::NoItemsFound => {
                "no \"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\" section found"
            }
            pem::Error::Base64Decode(_) => "a section is not valid base64",
            pem::Error::MissingSectionEnd { .. } => "a section has no END line",
            pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed",
            _ => "the file is not PEM",
        })
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|_| key_error("the crypto provider refuses TLS 1.2 and 1.3"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
            },
            rustls::Error::InvalidCertificate(why) => certificate(format!("{why:?}")),
            _ => key_error("not an RSA, ECDSA or Ed25519 key that this server can use"),
        })?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok((config, fingerprint))
}

/// `AB:CD:…`, as `openssl x509 -noout -fingerprint -sha256` prints it.
fn fingerprint(certificate: &CertificateDer<'_>) -> String {
    Sha256::digest(certificate.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_http_answer_is_the_json_error_shape_with_its_length() {
        let text = std::str::from_utf8(PLAIN_HTTP_ANSWER).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
        assert!(
            head.contains(&format!("content-length: {}\r\n", body.len())),
            "{head} / {}",
            body.len()
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "invalid_request");
        assert!(
            json["error"]["message"]
                .as_str()
                .unwrap()
                .contains("https://")
        );
    }

    #[test]
    fn files_that_are_not_pem_are_refused_naming_the_file_and_never_quoting_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let files = TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        };
        let missing = Tls::load(files.clone()).unwrap_err().to_string();
        assert!(missing.starts_with("cannot read ") && missing.contains("cert.pem"));

        std::fs::write(&cert, "hello").unwrap();
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nsecret-material\n").unwrap();
        let no_cert = Tls::load(files.clone()).unwrap_err().to_string();
        assert!(no_cert.contains("cert.pem is not a PEM certificate chain"));

        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nMIIBmDCCAT+gAwIBAgIU\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let bad_key = Tls::load(files.clone()).unwrap_err().to_string();
        assert!(bad_key.contains("key.pem is not a usable PEM private key"));
        assert!(!bad_key.contains("secret-material"), "{bad_key}");

        std::fs::write(&key, vec![b'A'; (MAX_PEM_BYTES + 1) as usize]).unwrap();
        let large = Tls::load(files).unwrap_err().to_string();
        assert!(large.contains("key.pem is larger than 1024 KiB"), "{large}");
    }
}
