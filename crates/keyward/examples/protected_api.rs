//! An API protected by keyward: `GET /droplets` needs `droplet:read`, `POST /droplets` needs
//! `droplet:create`.
//!
//! ```sh
//! # in process, over the local keyward data dir (./keyward-data, or KEYWARD_DATA_DIR):
//! cargo run -p keyward --example protected_api
//! # or asking a running keyward server:
//! KEYWARD_URL=http://127.0.0.1:8080 cargo run -p keyward --example protected_api
//!
//! curl -H "authorization: Bearer $TOKEN" http://127.0.0.1:3000/droplets
//! ```
//!
//! `LISTEN` sets the address (default `127.0.0.1:3000`).

use axum::Router;
use axum::routing::get;
use keyward::verifier::{Identity, TokenVerifier};
use keyward::{Config, Flags, RemoteVerifier, Verifier, require_scope};
use std::io::Write as _;

/// The example's routes, protected by `verifier`.
pub fn router<V: TokenVerifier + Clone>(verifier: &V) -> anyhow::Result<Router> {
    let read = Router::new()
        .route("/droplets", get(list_droplets))
        .layer(require_scope(verifier, "droplet:read")?);
    let create = Router::new()
        .route("/droplets", axum::routing::post(create_droplet))
        .layer(require_scope(verifier, "droplet:create")?);
    Ok(read.merge(create))
}

async fn list_droplets(who: Identity) -> String {
    format!("droplets of {} (token {})\n", who.owner_name, who.token_id)
}

async fn create_droplet(who: Identity) -> (axum::http::StatusCode, String) {
    (
        axum::http::StatusCode::CREATED,
        format!("droplet created for {}\n", who.owner_name),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let app = match std::env::var("KEYWARD_URL") {
        Ok(url) => router(&RemoteVerifier::new(&url)?)?,
        Err(_) => {
            let config = Config::load(&Flags::default())?;
            router(&Verifier::new(keyward::open(&config).await?))?
        }
    };
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on http://{}", listener.local_addr()?)?;
    out.flush()?;
    drop(out);
    axum::serve(listener, app).await?;
    Ok(())
}
