//! The reference for keyward's load benchmark: a bare axum server built from the same axum, hyper
//! and tokio versions as keyward, on the same runtime settings (`keyward serve`'s multi-thread
//! runtime, one worker per core), doing nothing but answer.
//!
//! `hello [ADDR]` (default `127.0.0.1:0`) prints `listening on http://ADDR` like `keyward serve`.
//! `GET /hello` answers a small JSON body; `POST /hello` reads the request body first (as
//! `POST /v1/verify` must) and answers the same. `POST /v1/verify` is `POST /hello` at keyward's
//! path, so the load script can drive it with the very request stream it sends keyward
//! (`bench/lua/verify.lua`, whose per-request Lua costs the client CPU on these shared cores).

use anyhow::Context as _;
use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use std::io::Write as _;
use std::net::SocketAddr;

const BODY: &str = r#"{"ok":true,"message":"hello"}"#;

async fn hello() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], BODY)
}

async fn hello_post(body: axum::body::Bytes) -> impl IntoResponse {
    std::hint::black_box(body);
    ([(header::CONTENT_TYPE, "application/json")], BODY)
}

fn main() -> anyhow::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:0")
        .parse()
        .context("usage: hello [ADDR]")?;
    let app = Router::new()
        .route("/hello", get(hello).post(hello_post))
        .route("/v1/verify", post(hello_post));
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on http://{}", listener.local_addr()?)?;
            out.flush()?;
            drop(out);
            axum::serve(listener, app).await?;
            Ok(())
        })
}
