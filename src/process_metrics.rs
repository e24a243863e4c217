//! This process's counters and histograms: the Prometheus recorder behind
//! the `metrics` facade that kiln-api and kiln-runtime count with,
//! installed once at start-up, and the function that renders it for
//! `/metrics`. It holds only what this process did since it started; it
//! reads no database.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use metrics_exporter_prometheus::PrometheusBuilder;

/// Renders this process's metrics in the Prometheus text format.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Installs the recorder, with kiln's histogram buckets, and starts its
/// upkeep (which keeps histograms from growing without bound).
pub fn install() -> anyhow::Result<Render> {
    let recorder = PrometheusBuilder::new()
        .set_buckets(kiln_store::metrics::BUCKETS)
        .context("the histogram buckets")?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).context("a metrics recorder is already installed")?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(Arc::new(move || handle.render()))
}
