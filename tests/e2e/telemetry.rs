//! OpenTelemetry export: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, kiln sends
//! its spans over OTLP/HTTP (protobuf) to a real receiver in the test, which
//! decodes them with OpenTelemetry's own message types.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use serde_json::json;
use tokio::sync::Notify;

use crate::helpers::{Kiln, Mode, noop_body};

/// A span as received: its name, attributes and its resource's.
#[derive(Debug, Clone)]
struct ExportedSpan {
    name: String,
    attributes: Vec<(String, String)>,
    resource: Vec<(String, String)>,
}

impl ExportedSpan {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<ExportedSpan>>>,
    arrived: Arc<Notify>,
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn pairs(attributes: &[KeyValue]) -> Vec<(String, String)> {
    attributes
        .iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

async fn receive_traces(State(collector): State<Collector>, headers: HeaderMap, body: Bytes) -> StatusCode {
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/x-protobuf")
    );
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut spans = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = pairs(
            resource_spans
                .resource
                .as_ref()
                .map_or(&[][..], |r| r.attributes.as_slice()),
        );
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                spans.push(ExportedSpan {
                    name: span.name,
                    attributes: pairs(&span.attributes),
                    resource: resource.clone(),
                });
            }
        }
    }
    collector.spans.lock().expect("spans").extend(spans);
    collector.arrived.notify_waiters();
    StatusCode::OK
}

/// An OTLP/HTTP traces receiver on a random port; answers its base URL.
async fn collector() -> (String, Collector) {
    let collector = Collector::default();
    let app = Router::new()
        .route("/v1/traces", post(receive_traces))
        .with_state(collector.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}"), collector)
}

impl Collector {
    /// Waits until the spans received so far hold one matching `wanted`.
    async fn span(&self, within: Duration, wanted: impl Fn(&ExportedSpan) -> bool) -> ExportedSpan {
        let found = tokio::time::timeout(within, async {
            loop {
                let arrived = self.arrived.notified();
                if let Some(span) = self.spans.lock().expect("spans").iter().find(|s| wanted(s)) {
                    return span.clone();
                }
                arrived.await;
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            let names: Vec<String> = self
                .spans
                .lock()
                .expect("spans")
                .iter()
                .map(|s| s.name.clone())
                .collect();
            panic!("no such span within {within:?}; received: {names:?}")
        })
    }
}

#[tokio::test]
async fn spans_of_a_trigger_and_its_run_are_exported_over_otlp_with_the_run_id() {
    let (endpoint, collector) = collector().await;
    let kiln = Kiln::builder(Mode::Dev)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("OTEL_SERVICE_NAME", "kiln-under-test")
        // Export every 100 ms instead of every 5 s.
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .spawn()
        .await;
    let id = kiln.trigger("kiln.noop", noop_body(json!({ "traced": true }))).await;
    let failing = kiln
        .trigger("kiln.fail", json!({ "payload": {}, "options": { "maxAttempts": 1 } }))
        .await;
    kiln.wait_for_status(&id, "COMPLETED", Duration::from_secs(20)).await;
    kiln.wait_for_status(&failing, "FAILED", Duration::from_secs(20)).await;

    let within = Duration::from_secs(20);
    let request = collector
        .span(within, |s| {
            s.attribute("run_id") == Some(id.as_str()) && s.name.starts_with("POST ")
        })
        .await;
    assert_eq!(request.name, "POST /api/v1/tasks/{task_id}/trigger");
    assert_eq!(request.attribute("http.route"), Some("/api/v1/tasks/{task_id}/trigger"));
    assert_eq!(request.attribute("http.response.status_code"), Some("200"));
    assert!(
        request
            .resource
            .contains(&("service.name".to_owned(), "kiln-under-test".to_owned())),
        "{:?}",
        request.resource
    );

    let run = collector
        .span(within, |s| {
            s.name == "run kiln.noop" && s.attribute("run_id") == Some(id.as_str())
        })
        .await;
    assert_eq!(run.attribute("task"), Some("kiln.noop"));
    assert_eq!(run.attribute("attempt"), Some("1"));
    assert_eq!(run.attribute("outcome"), Some("COMPLETED"));

    let failed = collector
        .span(within, |s| {
            s.name == "run kiln.fail" && s.attribute("run_id") == Some(failing.as_str())
        })
        .await;
    assert_eq!(failed.attribute("outcome"), Some("FAILED"));

    // A request that names no route is still traced, under a fixed name.
    let response = reqwest::get(kiln.url("/no/such/route")).await.expect("get");
    assert_eq!(response.status(), 404);
    let unmatched = collector
        .span(within, |s| {
            s.name == "GET unmatched" && s.attribute("http.response.status_code") == Some("404")
        })
        .await;
    assert_eq!(unmatched.attribute("http.route"), Some("unmatched"));
}
