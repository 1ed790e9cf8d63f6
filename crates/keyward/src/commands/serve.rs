//! `keyward serve`: the HTTP API (HTTPS with `[tls]`) until SIGTERM or Ctrl-C.

use super::init_tracing;
use anyhow::Context as _;
use keyward::keyward_server::{http, telemetry};
use keyward::{Config, KeyPolicy};
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::signal::unix::{Signal, SignalKind, signal};

pub(super) async fn serve(config: &Config, policy: KeyPolicy) -> anyhow::Result<ExitCode> {
    init_tracing(&config.log);
    // Before the service is built: it takes its metric handles at construction.
    if telemetry::prometheus().is_none() {
        tracing::warn!("another metrics recorder is installed; /metrics will be empty");
    }
    // Registered before the listening line is printed, so a SIGTERM sent as soon as it is read
    // shuts down gracefully instead of killing the process.
    let terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let interrupt = signal(SignalKind::interrupt()).context("cannot handle Ctrl-C")?;

    // First: a certificate that cannot be served stops the start before anything is opened.
    let tls = match config.tls.files() {
        Some(files) => Some(Arc::new(
            http::Tls::load(files).context("cannot serve HTTPS (tls.cert, tls.key)")?,
        )),
        None => None,
    };
    let keyward = keyward::open_with(config, policy).await?;
    // Once the store is open: a start refused for another reason shows only that reason.
    if config.catalog_is_sample {
        // Loud on purpose: a deployment that never declared its scopes hands out scopes for an
        // API it does not have, and refuses every scope of the one it does.
        tracing::warn!(
            "no [catalog] is configured: tokens can carry only keyward's built-in SAMPLE scopes \
             (droplet, volume, account, each with read, create, update, delete), which are an \
             example, not your API's. Declare your API's resources and actions under [catalog] \
             in the config file, e.g. `repo = [\"read\", \"write\"]` \
             (README: Scopes)"
        );
    }
    if config.server_keys.is_none() && config.server_key.is_none() {
        // A rotation rewrites the file; the ring is taken from it without a restart.
        keyward::watch_key_file(&keyward, config.server_key_path());
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    let metrics_listener = match config.metrics.listen {
        Some(metrics_addr) => {
            let listener = tokio::net::TcpListener::bind(metrics_addr)
                .await
                .with_context(|| format!("cannot listen on {metrics_addr} (metrics.listen)"))?;
            let bound = listener
                .local_addr()
                .context("cannot read the bound metrics address")?;
            tracing::info!(addr = %bound, "serving /metrics on its own listener");
            Some(listener)
        }
        None => None,
    };
    tracing::info!(%addr, %scheme, data_dir = %config.data_dir.display(), database = %config.database, prefix = config.token_prefix.as_str(), "keyward started");
    {
        // The one line on stdout; tests and scripts read the real port from it.
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {scheme}://{addr}")
            .and_then(|()| out.flush())
            .context("cannot write to stdout")?;
    }
    let options = http::ServeOptions {
        limits: config.http,
        metrics_listener,
        tls,
        trusted_proxies: config.trusted_proxies.clone(),
    };
    http::serve(listener, keyward, options, shutdown(terminate, interrupt))
        .await
        .context("the server failed")?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown(mut terminate: Signal, mut interrupt: Signal) {
    let which = tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    };
    tracing::info!(signal = which, "shutting down");
}
