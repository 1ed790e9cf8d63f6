//! Metrics: one process-wide Prometheus recorder, installed before the service registers its
//! counters (handles taken before installation would count into nothing).

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

/// Latency buckets for verification, in seconds: the cached path is microseconds, a cold
/// lookup tens to hundreds of microseconds, anything past 10 ms is trouble.
const VERIFY_BUCKETS: &[f64] = &[
    0.000_002, 0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001,
    0.002_5, 0.01, 0.05, 0.25,
];

/// Buckets for the PostgreSQL propagation delay, in seconds: milliseconds in practice, and the
/// documented bound is 1 s, so the buckets straddle it.
const PROPAGATION_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder on first call; later calls return the same handle. `None` if another
/// recorder was installed first (metrics then go there, and `/metrics` is empty).
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("keyward_verification_duration_seconds".to_owned()),
                    VERIFY_BUCKETS,
                )
                .ok()?
                // Without buckets the exporter renders a summary; the README promises a
                // histogram, which can be aggregated across instances.
                .set_buckets_for_metric(
                    Matcher::Full("keyward_revocation_propagation_seconds".to_owned()),
                    PROPAGATION_BUCKETS,
                )
                .ok()?;
            let handle = builder.install_recorder().ok()?;
            describe();
            Some(handle)
        })
        .as_ref()
}

/// Every metric keyward exports, with its `# HELP` text: the one list to extend with a new one
/// (`promtool check metrics` in CI refuses a metric without help).
const DESCRIPTIONS: &[(&str, Kind, &str)] = &[
    (
        "keyward_verifications_total",
        Kind::Counter,
        "Verifications answered, by result (active or the inactive reason, or error).",
    ),
    (
        "keyward_verification_duration_seconds",
        Kind::Histogram,
        "Time to answer a verification, sampled: one verification in 16 is timed.",
    ),
    (
        "keyward_cache_hits_total",
        Kind::Counter,
        "Verifications answered from the verification cache.",
    ),
    (
        "keyward_cache_misses_total",
        Kind::Counter,
        "Verifications whose secret was not in the verification cache.",
    ),
    (
        "keyward_unknown_tokens_ruled_out_total",
        Kind::Counter,
        "Cache misses answered unknown from the known-hash set, without reading the store.",
    ),
    (
        "keyward_store_lookups_total",
        Kind::Counter,
        "Cache misses that read the store.",
    ),
    (
        "keyward_cache_entries",
        Kind::Gauge,
        "Secrets held in the verification cache.",
    ),
    (
        "keyward_cache_warmed_total",
        Kind::Counter,
        "Entries the start-up warm-up put in the verification cache.",
    ),
    (
        "keyward_known_hashes",
        Kind::Gauge,
        "Fingerprints in the known-hash set, one per stored secret hash (two hashes rarely share one).",
    ),
    (
        "keyward_uses_unwritten",
        Kind::Gauge,
        "Token uses noted for last-used times and not yet written to the store (a flush's included).",
    ),
    (
        "keyward_http_connections_open",
        Kind::Gauge,
        "HTTP connections open now, on every listener.",
    ),
    (
        "keyward_http_connections_refused_total",
        Kind::Counter,
        "HTTP connections closed at once because the connection limit was reached.",
    ),
    (
        "keyward_http_connections_displaced_total",
        Kind::Counter,
        "Idle HTTP connections closed to make room for a new one at the connection limit.",
    ),
    (
        "keyward_http_requests_timed_out_total",
        Kind::Counter,
        "Requests answered 503 timeout because their handler ran past request_timeout.",
    ),
    (
        "keyward_revocation_propagation_seconds",
        Kind::Histogram,
        "PostgreSQL: time from a change's commit on another instance to this instance learning of it.",
    ),
];

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Hands the recorder the help text of every metric.
fn describe() {
    for &(name, kind, help) in DESCRIPTIONS {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
}

/// Cells a [`HotCounter`] spreads over; threads beyond this share cells (still correct).
const CELLS: usize = 16;

/// One cell on its own cache line, so two cores counting never share a line.
#[derive(Default)]
#[repr(align(128))]
struct Cell(AtomicU64);

/// A counter for the verification hot path. A recorder's counter is one shared atomic (two,
/// with its generation) that every core writes, so its cache line moves between cores on each
/// verification; here each thread adds to its own cell, and [`HotCounter::publish`] hands what
/// was added since the last call to the recorder's counter, before metrics are read.
pub struct HotCounter {
    cells: [Cell; CELLS],
    published: Mutex<u64>,
    counter: metrics::Counter,
}

impl HotCounter {
    /// Counts into `counter`, at each [`HotCounter::publish`].
    pub fn new(counter: metrics::Counter) -> Self {
        Self {
            cells: Default::default(),
            published: Mutex::new(0),
            counter,
        }
    }

    /// Adds one.
    pub fn increment(&self) {
        self.cells[thread_cell()].0.fetch_add(1, Ordering::Relaxed);
    }

    /// Hands the count since the last call to the recorder.
    pub fn publish(&self) {
        let total: u64 = self.cells.iter().map(|c| c.0.load(Ordering::Relaxed)).sum();
        let mut published = self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.counter.increment(total.saturating_sub(*published));
        *published = total.max(*published);
    }
}

/// This thread's cell: threads take cells in turn as they first count.
fn thread_cell() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static CELL: usize = NEXT.fetch_add(1, Ordering::Relaxed) % CELLS);
    CELL.with(|c| *c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hot_counter_publishes_what_every_thread_added() {
        let counter = HotCounter::new(metrics::Counter::noop());
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        counter.increment();
                    }
                });
            }
        });
        counter.publish();
        assert_eq!(*counter.published.lock().unwrap(), 4000);
        counter.increment();
        counter.publish();
        assert_eq!(*counter.published.lock().unwrap(), 4001);
    }
}
