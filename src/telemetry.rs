//! Logs and traces for the whole process: `tracing` events written to
//! stderr (text, or one JSON object per line), and, when an OTLP endpoint
//! is configured, every span exported to it with OpenTelemetry.
//!
//! Spans carry what finds a run again: the API's `request` span records
//! the `run_id` a trigger made, the worker's `run` span carries `run_id`,
//! `task` and `attempt`. Nothing here reads the environment; `config` does.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::TelemetryConfig;

/// Keeps the trace exporter alive; [`Telemetry::shutdown`] sends what it
/// still holds.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot set up the OTLP trace exporter for {endpoint}: {source}")]
pub struct TelemetryError {
    endpoint: String,
    source: opentelemetry_otlp::ExporterBuildError,
}

/// Installs the global subscriber. Must be called outside the async
/// runtime: the exporter's HTTP client runs on a thread of its own.
pub fn init(config: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let provider = match &config.traces_endpoint {
        None => None,
        Some(endpoint) => Some(tracer_provider(endpoint, &config.service_name)?),
    };
    let traces = provider
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer("kiln")));

    use std::io::IsTerminal;
    let logs = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter).with(traces);
    if config.json_logs {
        registry.with(logs.json().with_current_span(true)).init();
    } else {
        registry.with(logs).init();
    }
    if let Some(endpoint) = &config.traces_endpoint {
        tracing::info!(%endpoint, service = %config.service_name, "exporting traces over OTLP/HTTP");
    }
    Ok(Telemetry { provider })
}

fn tracer_provider(endpoint: &str, service_name: &str) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .build()
        .map_err(|source| TelemetryError {
            endpoint: endpoint.to_owned(),
            source,
        })?;
    // Spans leave in batches from the SDK's own thread (its queue and
    // delay follow OTEL_BSP_*), so a slow collector never holds up a run.
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service_name.to_owned()).build())
        .build())
}

impl Telemetry {
    /// Sends the spans not yet exported. Call outside the async runtime.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("kiln: exporting the last traces failed: {error}");
        }
    }
}
