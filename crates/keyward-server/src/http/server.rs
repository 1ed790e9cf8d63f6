//! Serving the application over HTTP/1.1, in the clear or over TLS ([`super::tls`]): the accept
//! loop, the limits a server on a public address needs, and graceful shutdown.
//!
//! Timeouts. A connection has one deadline of its own, re-armed only when it fires, never per
//! request. A new connection's first request head must arrive within
//! [`HttpLimits::header_read_timeout`] (over TLS, the handshake counts towards it). After that,
//! the deadline checks when the connection's last request ended: once it has had no request for
//! [`HttpLimits::idle_timeout`] (waiting for a next head, or receiving one too slowly), it is
//! shut down gracefully. So pooled connections may idle longer than a stranger may take to send
//! one request. hyper's own header-read timer is not used: on a kept-alive connection it makes,
//! arms and drops a boxed timer entry for every request, a real share of a cached verification's
//! cost (BENCHMARKS.md §14). A handler that runs past [`HttpLimits::request_timeout`] is dropped
//! and answered 503 `timeout`.
//!
//! The connection cap. Past [`HttpLimits::max_connections`], a new connection displaces the one
//! idle longest (no request in flight: waiting for its first or next request), as nginx reuses its
//! idle connections when it runs out; when every connection has a request in flight, the new one
//! is closed at once. Either way the listener keeps accepting, so its backlog never fills with
//! clients waiting for nothing, and idle sockets cannot keep a working client out.
//!
//! The client's address. Every request carries its connection's peer (`ConnectInfo`); when the
//! peer is in `trusted_proxies` (decided once per connection) it also carries those ranges, and
//! only then does `ClientIp` read the forwarding headers (`client_addr.rs`).

use axum::body::Body;
use axum::http::Request;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use keyward_core::IpRange;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tower::{Service, ServiceExt as _};

use super::client_addr::{Peer, TrustedProxies};
use super::tls::Tls;
use super::{ApiError, Serves, USAGE_FLUSH_EVERY, app};
use crate::service::Keyward;

/// Default [`HttpLimits::header_read_timeout`]: a real client sends its head in one packet, so
/// 10 s is ample on a slow link and holds an idle socket a third as long as hyper's own default
/// (30 s; nginx's `client_header_timeout` is 60 s, Envoy has none unless configured).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`HttpLimits::idle_timeout`]: nginx's `keepalive_timeout`, longer than the 60 s that
/// proxies and load balancers keep idle upstream connections (nginx `keepalive_timeout` in an
/// upstream, AWS ALB), so keyward is not the side that closes a pooled connection as the proxy
/// reuses it.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// Default [`HttpLimits::request_timeout`]: every keyward request is answered in milliseconds;
/// 30 s only cuts a handler stuck behind an unreachable store or a client trickling its body.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`HttpLimits::max_connections`]: the listener `connection_limit` of Envoy's edge
/// example configuration; lowered at start to what the open-file limit allows.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Open files kept for everything but client connections (database files and pool, listeners,
/// logs) when `max_connections` is fitted to the open-file limit.
const RESERVED_FDS: u64 = 128;
/// How long the accept loop pauses after an accept error other than a dropped connection
/// (e.g. out of file descriptors), so it does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// How long a displaced connection that has served requests may take to finish writing an
/// answer before it is closed anyway.
const DISPLACED_GRACE: Duration = Duration::from_secs(1);

/// Limits on every connection of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// How long a new connection may take to send its first request head.
    pub header_read_timeout: Duration,
    /// How long a connection may wait for its next request (from the end of the last one,
    /// including the time its head takes to arrive) before it is closed. Checked by a deadline
    /// that fires at most this long after the last request ended (see the module docs).
    pub idle_timeout: Duration,
    /// How long a handler may take, reading the body included, before it is answered 503.
    pub request_timeout: Duration,
    /// How many connections a listener keeps open at once.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl HttpLimits {
    /// These limits with `max_connections` lowered, if need be, to what the process's open-file
    /// limit leaves for connections: past it, accepting fails and no connection can be let in,
    /// not even by displacing an idle one.
    fn fitted_to_open_file_limit(self) -> Self {
        let Some(soft) = rustix::process::getrlimit(rustix::process::Resource::Nofile).current
        else {
            return self;
        };
        let room = soft.saturating_sub(RESERVED_FDS.min(soft / 2)).max(1);
        let room = usize::try_from(room).unwrap_or(usize::MAX);
        if self.max_connections <= room {
            return self;
        }
        tracing::warn!(
            max_connections = self.max_connections,
            open_file_limit = soft,
            lowered_to = room,
            "max_connections is more than the open-file limit (ulimit -n, systemd LimitNOFILE=) \
             allows; raise the limit to keep more connections"
        );
        Self {
            max_connections: room,
            ..self
        }
    }
}

/// How [`serve`] serves.
#[derive(Debug, Default)]
pub struct ServeOptions {
    /// The limits of every listener (the connection cap applies to each on its own).
    pub limits: HttpLimits,
    /// A listener that serves `/metrics` alone; when given, the main listener does not serve it.
    /// It speaks plain HTTP.
    pub metrics_listener: Option<TcpListener>,
    /// HTTPS on the main listener: the certificate and key in use, re-read while serving.
    pub tls: Option<Arc<Tls>>,
    /// The proxies whose forwarding headers name the client (`trusted_proxies`), on every
    /// listener; none believes no one's.
    pub trusted_proxies: Vec<IpRange>,
}

/// Serves the API on `listener` (and `/metrics` on `options.metrics_listener`, if given) until
/// `shutdown` resolves, then finishes in-flight requests. Writes noted token uses every few
/// seconds (and once more at the end), records expiry notices (`notify_interval`) and keeps
/// the metrics recorder's buffers bounded. With
/// `options.tls`, the main listener speaks HTTPS only and the certificate files are checked
/// for a new pair every [`super::tls::CHECK_EVERY`].
pub async fn serve(
    listener: TcpListener,
    keyward: Arc<Keyward>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    keyward.track_known_hashes();
    // In the background: the listener serves at once, misses reading the store meanwhile.
    let warm_up = keyward.settings().warm_cache.then(|| keyward.warm_cache());
    // Stopped between rounds, never inside one: a flush cut off after it took the noted uses
    // and before it wrote them would lose them.
    let upkeep_stop = Arc::new(tokio::sync::Notify::new());
    let upkeep = spawn_upkeep(Arc::clone(&keyward), Arc::clone(&upkeep_stop));
    let webhooks_stop = Arc::new(tokio::sync::Notify::new());
    let webhooks = crate::webhooks::WebhookSender::new(Arc::clone(&keyward))
        .map_err(std::io::Error::other)?
        .map(|sender| tokio::spawn(sender.run(Arc::clone(&webhooks_stop))));
    let notices_stop = Arc::new(tokio::sync::Notify::new());
    let notices = spawn_notices(Arc::clone(&keyward), Arc::clone(&notices_stop));
    let snapshots_stop = Arc::new(tokio::sync::Notify::new());
    let snapshots = keyward
        .settings()
        .cache_snapshot
        .clone()
        .map(|path| spawn_snapshots(Arc::clone(&keyward), path, Arc::clone(&snapshots_stop)));
    let limits = options.limits.fitted_to_open_file_limit();
    let trusted = TrustedProxies::new(options.trusted_proxies);
    // Every accept loop and connection holds a receiver: the send starts the shutdown, and the
    // channel closes when the last of them is done.
    let (stop_tx, stop_rx) = watch::channel(());
    let main_serves = match options.metrics_listener {
        Some(_) => Serves::AllButMetrics,
        None => Serves::All,
    };
    let metrics_stop = stop_rx.clone();
    let reload = options
        .tls
        .as_ref()
        .map(|tls| tokio::spawn(Arc::clone(tls).watch()));
    let main = accept_loop(
        listener,
        app(Arc::clone(&keyward), main_serves),
        limits,
        options.tls,
        trusted.clone(),
        stop_rx,
    );
    let metrics = async {
        if let Some(listener) = options.metrics_listener {
            let metrics_app = app(Arc::clone(&keyward), Serves::MetricsOnly);
            accept_loop(listener, metrics_app, limits, None, trusted, metrics_stop).await;
        }
    };
    let stop = async {
        shutdown.await;
        let _ = stop_tx.send(());
        stop_tx.closed().await;
    };
    tokio::join!(main, metrics, stop);
    if let Some(reload) = reload {
        reload.abort();
    }

    // `notify_one` keeps the permit if the task is mid-round, so it stops at its next select.
    upkeep_stop.notify_one();
    webhooks_stop.notify_one();
    if let Some(webhooks) = webhooks
        && let Err(e) = webhooks.await
    {
        tracing::warn!(error = %e, "the webhook sender failed");
    }
    if let Err(e) = upkeep.await {
        tracing::warn!(error = %e, "the upkeep task failed");
    }
    notices_stop.notify_one();
    if let Err(e) = notices.await {
        tracing::warn!(error = %e, "the expiry notice task failed");
    }
    // First, once no verification fills the cache any more: it takes a fraction of a second,
    // where writing the noted uses below can take seconds after a sweep of distinct tokens, and
    // a stop that runs out of time should lose neither.
    snapshots_stop.notify_one();
    if let Some(snapshots) = snapshots
        && let Err(e) = snapshots.await
    {
        tracing::warn!(error = %e, "the cache snapshot task failed");
    }
    if let Some(warm_up) = warm_up {
        // A stopping server has no use for a fuller cache.
        warm_up.abort();
        let _ = warm_up.await;
    }
    if let Some(path) = &keyward.settings().cache_snapshot {
        write_snapshot(&keyward, path, "shutdown").await;
    }
    if let Err(e) = keyward.flush_usage().await {
        tracing::warn!(error = %e, "could not record token usage at shutdown");
    }
    // After the last verification: uses leased by this instance and not spent go back.
    let budgets = keyward.give_back_leases().await;
    if budgets > 0 {
        tracing::info!(tokens = budgets, "gave back leased uses");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Writes the verification cache's snapshot to `path` and logs how it went (`when`: why now).
async fn write_snapshot(keyward: &Keyward, path: &std::path::Path, when: &'static str) {
    let started = std::time::Instant::now();
    match keyward.save_cache_snapshot(path).await {
        Ok(Some(entries)) => tracing::info!(
            entries,
            path = %path.display(),
            when,
            took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "wrote the verification cache's snapshot"
        ),
        Ok(None) => {}
        Err(e) => tracing::warn!(
            error = %e,
            when,
            "could not write the verification cache's snapshot; a start without a newer one warms from the store"
        ),
    }
}

/// Every `cache_snapshot_every` (not at the start): writes the verification cache's snapshot,
/// so that a start after a crash finds a recent one; until `stop` is notified (a snapshot under
/// way is finished first).
fn spawn_snapshots(
    keyward: Arc<Keyward>,
    path: std::path::PathBuf,
    stop: Arc<tokio::sync::Notify>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let period = keyward.settings().cache_snapshot_every;
        let mut every = tokio::time::interval_at(Instant::now() + period, period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // The stop first: the shutdown writes its own snapshot right after.
                biased;
                () = stop.notified() => return,
                _ = every.tick() => {}
            }
            write_snapshot(&keyward, &path, "periodic").await;
        }
    })
}

/// Every few seconds: writes noted uses, records the end of sign-in throttle bursts, and keeps
/// the metrics recorder's buffers bounded; until `stop` is notified.
fn spawn_upkeep(
    keyward: Arc<Keyward>,
    stop: Arc<tokio::sync::Notify>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(USAGE_FLUSH_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = stop.notified() => return,
            }
            if let Err(e) = keyward.flush_usage().await {
                tracing::warn!(error = %e, "could not record token usage; will retry");
            }
            if let Err(e) = keyward.record_ended_bursts().await {
                tracing::warn!(error = %e, "could not record the end of a sign-in throttle burst");
            }
            keyward.publish_metrics();
            // Drains recorded histogram samples into their buckets; without it they pile up in
            // memory until someone scrapes /metrics.
            if let Some(prometheus) = crate::telemetry::prometheus() {
                prometheus.run_upkeep();
            }
        }
    })
}

/// Every `notify_interval` (and once at the start): records the expiry reminders and expiry
/// notices due (`Keyward::send_expiry_notices`); until `stop` is notified. Each instance runs
/// one; the store sees to it that each notice is recorded once among them.
fn spawn_notices(
    keyward: Arc<Keyward>,
    stop: Arc<tokio::sync::Notify>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(keyward.settings().notify_interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = stop.notified() => return,
            }
            match keyward.send_expiry_notices().await {
                Ok(0) => {}
                Ok(sent) => tracing::info!(sent, "expiry notices recorded"),
                Err(e) => tracing::warn!(error = %e, "could not record expiry notices; will retry"),
            }
        }
    })
}

/// Accepts connections on `listener` (over TLS with `tls`) until the stop signal, then lets the
/// connections finish.
async fn accept_loop<S>(
    listener: TcpListener,
    app: S,
    limits: HttpLimits,
    tls: Option<Arc<Tls>>,
    trusted: TrustedProxies,
    mut stop: watch::Receiver<()>,
) where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let connections = Arc::new(Connections::new(limits.max_connections));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => break,
        };
        let (stream, remote) = match accepted {
            Ok(pair) => pair,
            Err(e) if is_dropped_connection(&e) => continue,
            Err(e) => {
                tracing::error!(error = %e, "cannot accept connections");
                tokio::select! {
                    () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                    _ = stop.changed() => break,
                }
            }
        };
        // Dropping the stream closes it: every slot has a request in flight.
        let Some(admitted) = connections.admit() else {
            continue;
        };
        let first_head = Instant::now() + limits.header_read_timeout;
        let peer = Peer::new(remote, &trusted);
        match &tls {
            None => tokio::spawn(serve_connection(
                stream,
                peer,
                app.clone(),
                limits,
                admitted,
                stop.clone(),
                first_head,
            )),
            Some(tls) => tokio::spawn(serve_tls_connection(
                Arc::clone(tls),
                stream,
                peer,
                app.clone(),
                limits,
                admitted,
                stop.clone(),
                first_head,
            )),
        };
    }
}

/// A client that gave up between its handshake and our accept: nothing to report.
fn is_dropped_connection(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionRefused
    )
}

/// The TLS handshake, then [`serve_connection`]; the handshake must be done by `first_head`,
/// and is given up when the connection is displaced or the server stops.
#[expect(
    clippy::too_many_arguments,
    reason = "serve_connection's arguments and the TLS configuration"
)]
async fn serve_tls_connection<S>(
    tls: Arc<Tls>,
    stream: TcpStream,
    peer: Peer,
    app: S,
    limits: HttpLimits,
    admitted: Admitted,
    mut stop: watch::Receiver<()>,
    first_head: Instant,
) where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let handshake = tokio::select! {
        done = tls.handshake(stream) => done,
        () = tokio::time::sleep_until(first_head) => {
            tracing::debug!("no TLS handshake within header_read_timeout; closing");
            None
        }
        () = admitted.slot.displaced.notified() => None,
        _ = stop.changed() => None,
    };
    if let Some(stream) = handshake {
        serve_connection(stream, peer, app, limits, admitted, stop, first_head).await;
    }
}

/// Serves one connection until it closes, times out, is displaced, or shuts down gracefully.
/// Its first request head must have arrived by `first_head`.
async fn serve_connection<S, I>(
    stream: I,
    peer: Peer,
    app: S,
    limits: HttpLimits,
    admitted: Admitted,
    mut stop: watch::Receiver<()>,
    first_head: Instant,
) where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let request_slot = Arc::clone(&admitted.slot);
    let epoch = admitted.connections.epoch;
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        let busy = Busy::begin(Arc::clone(&request_slot), epoch);
        peer.mark(request.extensions_mut());
        answer(app.clone(), request, busy, limits.request_timeout)
    });
    let mut builder = http1::Builder::new();
    // No timer for hyper: the connection's own deadline below bounds waiting for a head.
    builder.header_read_timeout(None);
    let mut connection = pin!(builder.serve_connection(TokioIo::new(stream), service));
    let slot = &admitted.slot;
    let idle_timeout = limits.idle_timeout;
    // The first head's deadline, or the end of idleness from accept if that comes first.
    let first_check =
        idle_deadline(slot, epoch, idle_timeout).map_or(first_head, |idle| idle.min(first_head));
    let mut deadline = pin!(tokio::time::sleep_until(first_check));
    let mut armed = Deadline::Check;
    let mut stopping = false;
    loop {
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "connection closed with an error");
                }
                break;
            }
            () = &mut deadline => {
                if armed == Deadline::Closing {
                    break;
                }
                if !slot.served.load(Ordering::Relaxed) {
                    // The first head's deadline, or idleness from accept: nothing to finish.
                    tracing::debug!("no request head within header_read_timeout; closing");
                    break;
                }
                let now = Instant::now();
                match idle_deadline(slot, epoch, idle_timeout) {
                    // A request in flight: request_timeout bounds it; look again after it.
                    None => deadline.as_mut().reset(now + idle_timeout),
                    Some(idle) if idle > now => deadline.as_mut().reset(idle),
                    Some(_) => {
                        tracing::debug!("no request within idle_timeout; closing");
                        // Closes an idle connection (or one trickling a head) now, and gives
                        // an answer still being written a moment to finish.
                        connection.as_mut().graceful_shutdown();
                        deadline.as_mut().reset(now + DISPLACED_GRACE);
                        armed = Deadline::Closing;
                    }
                }
            }
            () = slot.displaced.notified(), if armed != Deadline::Closing => {
                tracing::debug!("idle connection displaced by a new one at max_connections");
                if !slot.served.load(Ordering::Relaxed) {
                    break;
                }
                // A response may still be on its way out: let it finish, briefly.
                connection.as_mut().graceful_shutdown();
                deadline.as_mut().reset(Instant::now() + DISPLACED_GRACE);
                armed = Deadline::Closing;
            }
            _ = stop.changed(), if !stopping => {
                // Closes an idle connection now; one with a request in flight after its answer.
                connection.as_mut().graceful_shutdown();
                stopping = true;
            }
        }
    }
}

/// What a connection's deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    /// A check: has the first head arrived, and has the connection been idle for too long?
    Check,
    /// The connection was displaced or idled out, and finishes what it is writing.
    Closing,
}

/// When the connection of `slot` will have been idle for `idle_timeout`, counted from when it
/// was accepted or its last request ended; `None` while a request is in flight.
fn idle_deadline(slot: &Slot, epoch: Instant, idle_timeout: Duration) -> Option<Instant> {
    let since = slot.idle_since.load(Ordering::Relaxed);
    (since != BUSY).then(|| epoch + Duration::from_millis(since) + idle_timeout)
}

/// Runs one request through the application within the request timeout.
async fn answer<S>(
    app: S,
    request: Request<Incoming>,
    busy: Busy,
    timeout: Duration,
) -> Result<Response, Infallible>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible>,
{
    let method = request.method().clone();
    let mut handling = pin!(app.oneshot(request.map(Body::new)));
    // An answer ready at the first poll (a cached forward-auth check, /healthz) never arms a
    // timer, which takes a clone of the runtime's handle and a timer-wheel entry: a real share
    // of such an answer's cost.
    let answered = match std::future::poll_fn(|cx| Poll::Ready(handling.as_mut().poll(cx))).await {
        Poll::Ready(answer) => Ok(answer),
        Poll::Pending => tokio::time::timeout_at(busy.started + timeout, handling).await,
    };
    drop(busy);
    match answered {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(never)) => match never {},
        Err(_elapsed) => {
            // The method only: the path may hold a secret pasted where an id belongs.
            tracing::warn!(%method, ?timeout, "a request ran past request_timeout; answered 503");
            metrics::counter!("keyward_http_requests_timed_out_total").increment(1);
            Ok(ApiError::request_timeout().into_response())
        }
    }
}

/// The open connections of one listener, for the cap.
struct Connections {
    max: usize,
    /// What [`Slot::idle_since`] counts from.
    epoch: Instant,
    open: Mutex<HashMap<u64, Arc<Slot>>>,
    next_id: AtomicU64,
    gauge: metrics::Gauge,
    displaced: metrics::Counter,
    refused: metrics::Counter,
}

/// [`Slot::idle_since`] while a request is in flight.
const BUSY: u64 = u64::MAX;

/// One open connection, as the cap sees it.
struct Slot {
    /// Milliseconds from [`Connections::epoch`] to when the connection was accepted or its last
    /// request ended; [`BUSY`] while a request is in flight.
    idle_since: AtomicU64,
    /// Whether a request head has arrived.
    served: AtomicBool,
    /// Told when a new connection takes this one's place.
    displaced: Notify,
}

impl Connections {
    fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            epoch: Instant::now(),
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            gauge: metrics::gauge!("keyward_http_connections_open"),
            displaced: metrics::counter!("keyward_http_connections_displaced_total"),
            refused: metrics::counter!("keyward_http_connections_refused_total"),
        }
    }

    /// A place for a new connection: a free one, or the one of the connection idle longest,
    /// which is told to close. `None` when every connection has a request in flight.
    fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let slot = Arc::new(Slot {
            idle_since: AtomicU64::new(millis_since(self.epoch, Instant::now())),
            served: AtomicBool::new(false),
            displaced: Notify::new(),
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.len() >= self.max {
            let idlest = open
                .iter()
                .map(|(id, slot)| (slot.idle_since.load(Ordering::Relaxed), *id))
                .filter(|(since, _)| *since != BUSY)
                .min();
            let Some(displaced) = idlest.and_then(|(_, id)| open.remove(&id)) else {
                self.refused.increment(1);
                tracing::debug!(max_connections = self.max, "refused a connection: all busy");
                return None;
            };
            displaced.displaced.notify_one();
            self.displaced.increment(1);
        }
        open.insert(id, Arc::clone(&slot));
        self.gauge.increment(1.0);
        Some(Admitted {
            id,
            slot,
            connections: Arc::clone(self),
        })
    }
}

/// A connection's place; given back when the connection ends.
struct Admitted {
    id: u64,
    slot: Arc<Slot>,
    connections: Arc<Connections>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        // A displaced connection's place was taken already.
        self.connections
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
        self.connections.gauge.decrement(1.0);
    }
}

/// A request in flight: its connection is busy (not to be displaced) until this is dropped.
struct Busy {
    slot: Arc<Slot>,
    started: Instant,
    epoch: Instant,
}

impl Busy {
    fn begin(slot: Arc<Slot>, epoch: Instant) -> Self {
        // It also sets the request's deadline.
        let started = Instant::now();
        slot.served.store(true, Ordering::Relaxed);
        slot.idle_since.store(BUSY, Ordering::Relaxed);
        Self {
            slot,
            started,
            epoch,
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        // Idle from the answer on: the idle deadline and displacement count from here.
        let ended = millis_since(self.epoch, Instant::now());
        self.slot.idle_since.store(ended, Ordering::Relaxed);
    }
}

/// Whole milliseconds from `epoch` to `at`, below [`BUSY`].
fn millis_since(epoch: Instant, at: Instant) -> u64 {
    u64::try_from(at.duration_since(epoch).as_millis()).map_or(BUSY - 1, |ms| ms.min(BUSY - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_open(connections: &Connections, admitted: &Admitted) -> bool {
        connections.open.lock().unwrap().contains_key(&admitted.id)
    }

    #[test]
    fn the_connection_idle_longest_makes_room_and_a_busy_one_never_does() {
        let connections = Arc::new(Connections::new(2));
        let a = connections.admit().unwrap();
        let b = connections.admit().unwrap();
        a.slot.idle_since.store(5, Ordering::Relaxed);
        b.slot.idle_since.store(3, Ordering::Relaxed);

        let c = connections.admit().unwrap();
        assert!(is_open(&connections, &a) && is_open(&connections, &c));
        assert!(!is_open(&connections, &b), "b was idle longest");
        drop(b);
        assert!(
            is_open(&connections, &a),
            "a displaced connection closing frees no other place"
        );

        a.slot.idle_since.store(BUSY, Ordering::Relaxed);
        c.slot.idle_since.store(BUSY, Ordering::Relaxed);
        assert!(connections.admit().is_none(), "every connection is busy");
        drop(c);
        let d = connections.admit().unwrap();
        assert!(is_open(&connections, &a) && is_open(&connections, &d));
    }
}
