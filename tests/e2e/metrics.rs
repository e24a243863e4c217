//! `/metrics` after real runs: the counts a test caused are the counts it
//! reads back, in Prometheus text format.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{Kiln, Mode, noop_body};

async fn scrape(kiln: &Kiln) -> String {
    let response = reqwest::get(kiln.url("/metrics")).await.expect("scrape");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    response.text().await.expect("body")
}

/// The value of the sample `series` (name and labels, exactly).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test]
async fn metrics_count_the_runs_attempts_and_durations_a_test_caused() {
    let kiln = Kiln::builder(Mode::Dev)
        .env("KILN_RETRY_MIN_DELAY", "10ms")
        .env("KILN_RETRY_MAX_DELAY", "20ms")
        .spawn()
        .await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(kiln.trigger("kiln.noop", noop_body(json!({ "n": i }))).await);
    }
    for _ in 0..2 {
        ids.push(
            kiln.trigger("kiln.fail", json!({ "payload": {}, "options": { "maxAttempts": 2 } }))
                .await,
        );
    }
    for id in &ids {
        kiln.wait_for(id, Duration::from_secs(30), |run| run["isCompleted"] == true)
            .await;
    }
    let text = scrape(&kiln).await;
    assert_eq!(
        sample(&text, r#"kiln_runs{task="kiln.noop",status="COMPLETED"}"#),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"kiln_runs{task="kiln.fail",status="FAILED"}"#),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"kiln_run_attempts_total{task="kiln.fail"}"#),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"kiln_run_attempts_total{task="kiln.noop"}"#),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"kiln_run_duration_seconds_count{task="kiln.noop"}"#),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"kiln_run_duration_seconds_bucket{task="kiln.noop",le="+Inf"}"#),
        Some(5.0)
    );
    let within_a_minute = sample(&text, r#"kiln_run_duration_seconds_bucket{task="kiln.noop",le="60"}"#);
    assert_eq!(within_a_minute, Some(5.0), "no-op runs end within a minute: {text}");
    assert_eq!(
        sample(&text, r#"kiln_queue_wait_seconds_count{task="kiln.noop"}"#),
        Some(5.0),
        "{text}"
    );
    assert!(text.contains("# TYPE kiln_run_duration_seconds histogram"));
    assert!(sample(&text, "kiln_workers_active").is_some(), "{text}");
}

#[tokio::test]
async fn metrics_show_the_backlog_of_each_queue() {
    // No worker: triggered runs wait.
    let kiln = Kiln::builder(Mode::Serve).spawn().await;
    for i in 0..3 {
        kiln.trigger("kiln.noop", noop_body(json!({ "n": i }))).await;
    }
    let text = scrape(&kiln).await;
    assert_eq!(
        sample(&text, r#"kiln_queue_depth{queue="task/kiln.noop"}"#),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"kiln_runs{task="kiln.noop",status="QUEUED"}"#),
        Some(3.0),
        "{text}"
    );
    let age = sample(&text, r#"kiln_queue_oldest_age_seconds{queue="task/kiln.noop"}"#).expect("oldest age");
    assert!((0.0..60.0).contains(&age), "{age}");
    assert_eq!(
        sample(&text, r#"kiln_redis_ready_length{queue="task/kiln.noop"}"#),
        Some(3.0),
        "{text}"
    );
}

/// With KILN_METRICS_TOKEN set, `/metrics` answers only a scraper that
/// shows it.
#[tokio::test]
async fn metrics_behind_a_token_answer_only_with_it() {
    let kiln = Kiln::builder(Mode::Serve)
        .env("KILN_METRICS_TOKEN", "scrape-secret-1")
        .spawn()
        .await;
    let get = |token: Option<&str>| {
        let mut request = kiln.http.get(kiln.url("/metrics"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.expect("metrics").status().as_u16() }
    };
    assert_eq!(get(None).await, 401);
    assert_eq!(get(Some("scrape-secret-2")).await, 401);
    assert_eq!(
        get(Some(kiln.key.as_str())).await,
        401,
        "an API key is not the scrape token"
    );
    assert_eq!(get(Some("scrape-secret-1")).await, 200);
}
