//! `/metrics` after real runs: the counts a test caused are the counts it
//! reads back, in Prometheus text format; scrapes answer while Postgres is
//! locked and the triggers' pool is exhausted; a worker-only process serves
//! its own counts.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{Kiln, Mode, free_port, noop_body};

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
        sample(&text, r#"kiln_runs_triggered_total{task="kiln.noop"}"#),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"kiln_runs_triggered_total{task="kiln.fail"}"#),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"kiln_attempts_finished_total{task="kiln.noop",outcome="COMPLETED"}"#
        ),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"kiln_attempts_finished_total{task="kiln.fail",outcome="RETRYING"}"#
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"kiln_attempts_finished_total{task="kiln.fail",outcome="FAILED"}"#
        ),
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
    let age = sample(&text, r#"kiln_queue_oldest_age_seconds{queue="task/kiln.noop"}"#).expect("oldest age");
    assert!((0.0..60.0).contains(&age), "{age}");
    assert_eq!(
        sample(
            &text,
            r#"kiln_redis_ready_length{environment="dev",queue="task/kiln.noop"}"#
        ),
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

/// Scrapes never wait for the pool triggers use: with the runs table
/// locked, triggers hang holding every connection of the main pool, and
/// `/metrics` still answers, with this process's counters and the last
/// gauges it read (a scrape on the main pool would wait for a connection
/// and answer 503).
#[tokio::test]
async fn metrics_answer_while_postgres_is_locked_and_the_trigger_pool_is_exhausted() {
    let mut kiln = Kiln::builder(Mode::Dev)
        .env("KILN_DB_MAX_CONNECTIONS", "2")
        .spawn()
        .await;
    let first = kiln.trigger("kiln.noop", noop_body(json!({}))).await;
    kiln.wait_for(&first, Duration::from_secs(30), |run| run["isCompleted"] == true)
        .await;
    let warm = scrape(&kiln).await;
    assert!(sample(&warm, "kiln_workers_active").is_some(), "{warm}");

    let db = kiln.db().await;
    let mut lock = db.begin().await.expect("begin");
    sqlx::query("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock runs");
    let mut hanging = tokio::task::JoinSet::new();
    for i in 0..8 {
        let request = kiln
            .http
            .post(kiln.url("/api/v1/tasks/kiln.noop/trigger"))
            .bearer_auth(&kiln.key)
            .json(&noop_body(json!({ "n": i })));
        hanging.spawn(async move { request.send().await.map(|r| r.status().as_u16()) });
    }
    // Past the gauges' freshness, so the scrape tries Postgres again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let response = kiln
        .http
        .get(kiln.url("/metrics"))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("scrape while locked");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("body");
    assert_eq!(
        sample(&text, r#"kiln_runs_triggered_total{task="kiln.noop"}"#),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(&text, "kiln_gauges_age_seconds").is_some_and(|age| age >= 1.0),
        "{text}"
    );
    lock.rollback().await.expect("unlock");
    // Those that waited past the pool's acquire timeout answered 503; the
    // others went through once the lock was gone.
    while hanging.join_next().await.is_some() {}
}

/// `kiln worker` has no API; with KILN_METRICS_ADDR it serves its own
/// counts there, behind the same token.
#[tokio::test]
async fn a_worker_process_serves_its_own_counts() {
    let kiln = Kiln::builder(Mode::Serve)
        .env("KILN_METRICS_TOKEN", "scrape-secret-3")
        .spawn()
        .await;
    let addr = format!("127.0.0.1:{}", free_port());
    let _worker = kiln.spawn_worker(&[("KILN_METRICS_ADDR", addr.as_str())]);
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(kiln.trigger("kiln.noop", noop_body(json!({ "n": i }))).await);
    }
    for id in &ids {
        kiln.wait_for(id, Duration::from_secs(30), |run| run["isCompleted"] == true)
            .await;
    }
    let url = format!("http://{addr}/metrics");
    assert_eq!(
        kiln.http.get(&url).send().await.expect("scrape").status(),
        401,
        "the worker's metrics want the token too"
    );
    let text = kiln
        .http
        .get(&url)
        .bearer_auth("scrape-secret-3")
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    assert_eq!(
        sample(&text, r#"kiln_run_attempts_total{task="kiln.noop"}"#),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"kiln_queue_wait_seconds_count{task="kiln.noop"}"#),
        Some(3.0),
        "{text}"
    );
}

/// Live realtime requests' shape reads in this process so far.
async fn shape_reads(kiln: &Kiln) -> f64 {
    sample(&scrape(kiln).await, "kiln_realtime_shape_reads_total").unwrap_or(0.0)
}

/// Waits until the shape reads pass `before`: a live request sent since
/// has read its shape and waits on the feed.
async fn wait_for_a_read(kiln: &Kiln, before: f64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while shape_reads(kiln).await <= before {
        assert!(std::time::Instant::now() < deadline, "the live request never read");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The offset a run's shape is at now.
async fn shape_offset(kiln: &Kiln, id: &str) -> String {
    let first = kiln
        .http
        .get(kiln.url(&format!("/realtime/v1/runs/{id}?offset=-1")))
        .bearer_auth(&kiln.key)
        .send()
        .await
        .expect("first read");
    assert_eq!(first.status(), 200);
    first.headers()["electric-offset"].to_str().expect("offset").to_owned()
}

/// A live request for a run's changes after `offset`.
fn live_request(
    kiln: &Kiln,
    id: &str,
    offset: &str,
) -> impl std::future::Future<Output = reqwest::Result<reqwest::Response>> + Send + 'static {
    kiln.http
        .get(kiln.url(&format!(
            "/realtime/v1/runs/{id}?live=true&offset={offset}&handle=run-{id}"
        )))
        .bearer_auth(&kiln.key)
        .send()
}

async fn cancel(kiln: &Kiln, id: &str) {
    let answer = kiln.post(&format!("/api/v2/runs/{id}/cancel"), &json!({})).await;
    assert!(answer.status().is_success(), "cancel {id}");
}

/// Realtime by change: live subscriptions to a run that does not change
/// cost no query while they wait (a change to another run does not wake
/// them), and a change to their run wakes every one of them at once.
#[tokio::test]
async fn live_realtime_subscriptions_read_again_only_when_their_run_changes() {
    let kiln = Kiln::builder(Mode::Serve).spawn().await;

    // No worker runs in `serve`: the runs stay queued until canceled.
    let watched = kiln.trigger("kiln.sleep", json!({ "payload": { "ms": 60_000 } })).await;
    let warm_up = kiln.trigger("kiln.sleep", json!({ "payload": { "ms": 60_000 } })).await;
    let other = kiln.trigger("kiln.sleep", json!({ "payload": { "ms": 60_000 } })).await;

    // The first live request starts the process's feed; once a change
    // has come through it, the feed is listening.
    let offset = shape_offset(&kiln, &warm_up).await;
    let before = shape_reads(&kiln).await;
    let waiting = live_request(&kiln, &warm_up, &offset);
    let canceling = async {
        // Cancel once the request waits (its read is counted).
        wait_for_a_read(&kiln, before).await;
        cancel(&kiln, &warm_up).await;
    };
    let (answer, ()) = tokio::join!(waiting, canceling);
    let answer: serde_json::Value = answer.expect("live answer").json().await.expect("json");
    assert_eq!(answer[0]["value"]["status"], "CANCELED", "{answer}");

    let offset = shape_offset(&kiln, &watched).await;
    let base = shape_reads(&kiln).await;
    let subscribers: Vec<_> = (0..20)
        .map(|_| tokio::spawn(live_request(&kiln, &watched, &offset)))
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = shape_reads(&kiln).await;
        if now >= base + 20.0 {
            assert_eq!(now, base + 20.0, "one read each");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the subscribers read their shape: {now} of {}",
            base + 20.0
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Another run changes, and time passes: the subscribers do not read.
    cancel(&kiln, &other).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        shape_reads(&kiln).await,
        base + 20.0,
        "waiting subscribers read nothing while their run does not change"
    );

    cancel(&kiln, &watched).await;
    for subscriber in subscribers {
        let answer = subscriber.await.expect("task").expect("live answer");
        assert_eq!(answer.status(), 200);
        let messages: serde_json::Value = answer.json().await.expect("json");
        assert_eq!(messages[0]["headers"]["operation"], "update", "{messages}");
        assert_eq!(messages[0]["value"]["status"], "CANCELED", "{messages}");
    }
    assert_eq!(shape_reads(&kiln).await, base + 40.0, "one more read each");
}

/// Realtime by change, timed: a live subscriber hears of its run's change
/// within 100 ms of the commit (the median of ten changes; each measured
/// from the run's `updated_at`, which the writing statement sets before it
/// commits, to the answer's arrival, so each figure is an upper bound).
/// Each change comes 30 ms after the live request's read: polling every
/// 150 ms, as kiln did, would answer it about 120 ms later; the feed, a
/// few milliseconds later.
#[tokio::test]
async fn a_live_subscriber_hears_of_a_change_within_100_ms_of_its_commit() {
    let mut kiln = Kiln::builder(Mode::Serve).spawn().await;
    let db = kiln.db().await;
    let mut delays = Vec::new();
    for _ in 0..10 {
        // No worker runs in `serve`: the run stays queued until canceled.
        let id = kiln.trigger("kiln.sleep", json!({ "payload": { "ms": 60_000 } })).await;
        let offset = shape_offset(&kiln, &id).await;
        let before = shape_reads(&kiln).await;
        let live = live_request(&kiln, &id, &offset);
        let change = async {
            // Once the live request has read its shape, it waits on the feed.
            wait_for_a_read(&kiln, before).await;
            tokio::time::sleep(Duration::from_millis(30)).await;
            cancel(&kiln, &id).await;
        };
        let (answer, ()) = tokio::join!(
            async {
                let answer = live.await.expect("live answer");
                (std::time::SystemTime::now(), answer)
            },
            change
        );
        let (arrived, answer) = answer;
        let messages: serde_json::Value = answer.json().await.expect("json");
        assert_eq!(messages[0]["value"]["status"], "CANCELED", "{messages}");
        let (committed_by,): (chrono::DateTime<chrono::Utc>,) =
            sqlx::query_as("SELECT updated_at FROM runs WHERE id = $1")
                .bind(&id)
                .fetch_one(&db)
                .await
                .expect("updated_at");
        let arrived: chrono::DateTime<chrono::Utc> = arrived.into();
        delays.push((arrived - committed_by).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0);
    }
    delays.sort_by(f64::total_cmp);
    println!("commit to live answer, ms: {delays:?}");
    let median = delays[delays.len() / 2];
    assert!(
        median < 100.0,
        "median {median:.1} ms from commit to answer: {delays:?}"
    );
}
