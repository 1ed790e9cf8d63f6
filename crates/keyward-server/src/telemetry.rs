//! Metrics: one process-wide Prometheus recorder, installed before the service registers its
//! counters (handles taken before installation would count into nothing).

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Latency buckets for verification, in seconds: the cached path is microseconds, a cold
/// lookup tens to hundreds of microseconds, anything past 10 ms is trouble.
const VERIFY_BUCKETS: &[f64] = &[
    0.000_002, 0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001,
    0.002_5, 0.01, 0.05, 0.25,
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
                .ok()?;
            builder.install_recorder().ok()
        })
        .as_ref()
}
