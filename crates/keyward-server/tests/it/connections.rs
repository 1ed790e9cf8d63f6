//! Connections: the header-read, idle and request timeouts and the connection cap hold against
//! clients that open sockets and send nothing, or too little, too slowly (issue 10, finding 8).
//!
//! Each test configures timeouts of a few hundred milliseconds and waits for the server with
//! generous upper bounds; no assertion depends on a sleep being precise.

use crate::helpers::{Serving, TestApp, spawn_app_serving};
use keyward_server::Settings;
use keyward_server::http::HttpLimits;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long any test waits for something that should happen within its configured timeouts.
const GENEROUS: Duration = Duration::from_secs(10);

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

async fn spawn(limits: HttpLimits) -> TestApp {
    spawn_app_serving(
        Settings::default(),
        Serving {
            limits,
            ..Serving::default()
        },
    )
    .await
}

/// Reads until the server closes the connection (end of file or reset) and returns what it
/// sent; fails the test if it is still open after [`GENEROUS`].
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let closed = tokio::time::timeout(GENEROUS, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the server kept the connection open for {GENEROUS:?}; it sent {:?}",
        String::from_utf8_lossy(&received)
    );
    received
}

/// Whether the server closes `stream` within `within`, sending nothing.
async fn is_closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1];
    matches!(
        tokio::time::timeout(within, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// Reads one HTTP/1.1 response with a `Content-Length` body: its status and body.
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    tokio::time::timeout(GENEROUS, async {
        let mut data = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&data[..end]).into_owned();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if data.len() >= end + 4 + length {
                    let status = head[9..12].parse().unwrap();
                    let body = String::from_utf8_lossy(&data[end + 4..end + 4 + length]);
                    return (status, body.into_owned());
                }
            }
            let n = stream.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed mid-response: {:?}",
                String::from_utf8_lossy(&data)
            );
            data.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("a response within GENEROUS")
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: keyward\r\n\r\n";

/// The head of a `POST /v1/verify` announcing a 100-byte body, which the server starts reading
/// (and so answers `100 Continue`) once the handler runs.
const SLOW_VERIFY: &[u8] = b"POST /v1/verify HTTP/1.1\r\nHost: keyward\r\n\
    Content-Type: application/json\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n";

/// Opens a connection whose request is in its handler, waiting for the rest of its body.
async fn request_in_flight(app: &TestApp) -> TcpStream {
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(SLOW_VERIFY).await.unwrap();
    let mut buf = [0u8; 25];
    tokio::time::timeout(GENEROUS, stream.read_exact(&mut buf))
        .await
        .expect("100 Continue within GENEROUS")
        .unwrap();
    assert_eq!(&buf, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream
}

#[tokio::test]
async fn a_stalled_request_head_is_closed_after_the_header_read_timeout() {
    let app = spawn(HttpLimits {
        header_read_timeout: ms(300),
        ..HttpLimits::default()
    })
    .await;

    let mut half = TcpStream::connect(app.addr).await.unwrap();
    half.write_all(b"GET /heal").await.unwrap();
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    let started = Instant::now();
    read_until_closed(&mut half).await;
    read_until_closed(&mut silent).await;
    assert!(started.elapsed() < GENEROUS);

    // A client that sends its head in time is served as ever.
    let mut prompt = TcpStream::connect(app.addr).await.unwrap();
    prompt.write_all(HEALTHZ).await.unwrap();
    assert_eq!(read_response(&mut prompt).await.0, 200);
}

/// A server with a 200 ms header timeout and `idle_timeout`, and a connection to it that has
/// been answered once (kept alive).
async fn served_once(idle_timeout: Duration) -> (TestApp, TcpStream) {
    let app = spawn(HttpLimits {
        header_read_timeout: ms(200),
        idle_timeout,
        ..HttpLimits::default()
    })
    .await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(HEALTHZ).await.unwrap();
    assert_eq!(read_response(&mut stream).await.0, 200);
    (app, stream)
}

#[tokio::test]
async fn a_kept_alive_connection_outlives_the_header_timeout_and_closes_when_idle() {
    let idle_timeout = ms(1500);
    let (_app, mut stream) = served_once(idle_timeout).await;
    // Longer than the header timeout, well within the idle timeout: a proxy's pooled
    // connection is still there for its next request.
    tokio::time::sleep(ms(500)).await;
    stream.write_all(HEALTHZ).await.unwrap();
    assert_eq!(read_response(&mut stream).await.0, 200);

    let idle_from = Instant::now();
    let after = read_until_closed(&mut stream).await;
    assert!(after.is_empty(), "{:?}", String::from_utf8_lossy(&after));
    let idled = idle_from.elapsed();
    // Timers never fire early; the lower bound leaves room for the time the answer took.
    assert!(idled >= idle_timeout - ms(300), "closed after {idled:?}");
}

#[tokio::test]
async fn a_head_trickled_on_a_kept_alive_connection_is_closed_when_idle() {
    let idle_timeout = ms(800);
    let (_app, mut stream) = served_once(idle_timeout).await;
    // Half a head, then a byte now and then, never the end of it.
    let idle_from = Instant::now();
    stream.write_all(b"GET /heal").await.unwrap();
    let trickle = async {
        for byte in b"thz HTTP/1.1\r\nHost: k".iter().cycle() {
            tokio::time::sleep(ms(100)).await;
            if stream.write_all(&[*byte]).await.is_err() {
                break;
            }
        }
    };
    tokio::time::timeout(GENEROUS, trickle)
        .await
        .expect("the server closed the trickling connection");
    let idled = idle_from.elapsed();
    assert!(idled >= idle_timeout - ms(100), "closed after {idled:?}");
}

#[tokio::test]
async fn idle_connections_past_the_cap_do_not_keep_a_client_out() {
    const MAX: usize = 32;
    const IDLE: usize = 300;
    // Timeouts far longer than the test: only the cap can make room.
    let app = spawn(HttpLimits {
        header_read_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(60),
        max_connections: MAX,
        ..HttpLimits::default()
    })
    .await;
    let alice = app.user("alice").await;
    let token = app.token(&alice, &["droplet:read"]).await;

    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(app.addr).await.unwrap());
    }
    let started = Instant::now();
    let answer = tokio::time::timeout(GENEROUS, app.verify(&token.secret, &["droplet:read"]))
        .await
        .expect("/v1/verify answers within GENEROUS");
    assert_eq!(answer["active"], true, "{answer}");
    assert!(started.elapsed() < GENEROUS);

    // The idle connections beyond the cap were displaced (closed) to make that room.
    let checks: Vec<_> = idle
        .into_iter()
        .map(|mut s| tokio::spawn(async move { is_closed_within(&mut s, ms(3000)).await }))
        .collect();
    let mut closed = 0;
    for check in checks {
        closed += usize::from(check.await.unwrap());
    }
    assert!(
        closed >= IDLE - MAX,
        "{closed} of {IDLE} idle connections closed with max_connections = {MAX}"
    );
}

#[tokio::test]
async fn when_every_connection_has_a_request_in_flight_a_new_one_is_closed_at_once() {
    let app = spawn(HttpLimits {
        max_connections: 2,
        ..HttpLimits::default()
    })
    .await;
    let mut first = request_in_flight(&app).await;
    let _second = request_in_flight(&app).await;

    let mut third = TcpStream::connect(app.addr).await.unwrap();
    let _ = third.write_all(HEALTHZ).await;
    let sent = read_until_closed(&mut third).await;
    assert!(sent.is_empty(), "{:?}", String::from_utf8_lossy(&sent));

    // The requests in flight are unharmed.
    let body = format!("{:<100}", json!({"token": "kwp_nope"}).to_string());
    first.write_all(body.as_bytes()).await.unwrap();
    let (status, text) = read_response(&mut first).await;
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer, json!({"active": false, "reason": "malformed"}));
}

#[tokio::test]
async fn a_request_past_the_request_timeout_is_answered_503_timeout() {
    let request_timeout = ms(300);
    let app = spawn(HttpLimits {
        request_timeout,
        ..HttpLimits::default()
    })
    .await;

    let started = Instant::now();
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(
            b"POST /v1/verify HTTP/1.1\r\nHost: keyward\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"token\":",
        )
        .await
        .unwrap();
    let (status, text) = read_response(&mut stream).await;
    assert!(started.elapsed() >= request_timeout);
    assert_eq!(status, 503, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["code"], "timeout", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );

    // The server goes on answering.
    let answer = app.verify("kwp_nope", &[]).await;
    assert_eq!(answer["reason"], "malformed");
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_finishes_requests_in_flight() {
    let mut app = spawn(HttpLimits::default()).await;
    let mut idle = TcpStream::connect(app.addr).await.unwrap();
    let mut busy = request_in_flight(&app).await;

    let client = async {
        // Once the idle connection is closed, the server is shutting down.
        read_until_closed(&mut idle).await;
        let body = format!("{:<100}", json!({"token": "kwp_nope"}).to_string());
        busy.write_all(body.as_bytes()).await.unwrap();
        read_response(&mut busy).await
    };
    let (answer, ()) = tokio::join!(client, app.stop());
    assert_eq!(answer.0, 200, "{}", answer.1);
}
