//! `POST /engine/v1/runs/{id}/wait/duration`, as SDK 4.x sends it from
//! inside a task for `wait.for` and `wait.until`: a waitpoint recorded
//! against an executing run of the caller's environment, given back for
//! the same idempotency key while the key lives.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::helpers::Kiln;

async fn wait(kiln: &Kiln, key: &str, run_id: &str, body: &Value) -> (u16, Value) {
    kiln.call_as(
        reqwest::Method::POST,
        &format!("/engine/v1/runs/{run_id}/wait/duration"),
        key,
        Some(body),
    )
    .await
}

/// A `Date` as `JSON.stringify` writes it.
fn js_date(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[tokio::test]
async fn an_executing_run_waits_once_per_idempotency_key_in_its_environment_only() {
    let mut kiln = Kiln::dev().await;
    let db = kiln.db().await;
    let running = kiln
        .trigger("kiln.sleep", json!({ "payload": { "ms": 120_000 } }))
        .await;
    kiln.wait_for(&running, Duration::from_secs(60), |run| run["status"] == "EXECUTING")
        .await;

    let until = js_date(Utc::now() + chrono::Duration::seconds(10));
    let (status, answer) = wait(&kiln, &kiln.key, &running, &json!({ "date": until })).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["waitUntil"], json!(until), "{answer}");
    let first = answer["waitpoint"]["id"].as_str().expect("waitpoint id").to_owned();
    assert!(first.starts_with("waitpoint_"), "{answer}");
    let recorded: (String, String, DateTime<Utc>) =
        sqlx::query_as("SELECT run_id, kind, complete_after FROM waitpoints WHERE id = $1")
            .bind(&first)
            .fetch_one(&db)
            .await
            .expect("the waitpoint is recorded");
    assert_eq!(
        (recorded.0.as_str(), recorded.1.as_str()),
        (running.as_str(), "DATETIME")
    );
    assert_eq!(js_date(recorded.2), until);

    // The same key gives the same wait back, with its own time.
    let keyed = |date: String, ttl: Option<&str>| {
        let mut body = json!({ "date": date, "idempotencyKey": "attempt-wait" });
        if let Some(ttl) = ttl {
            body["idempotencyKeyTTL"] = json!(ttl);
        }
        body
    };
    let (_, once) = wait(&kiln, &kiln.key, &running, &keyed(until.clone(), Some("5s"))).await;
    // The key was recorded before this; it expires no later than 5 s on.
    let expires = Utc::now() + chrono::Duration::milliseconds(5100);
    let later = js_date(Utc::now() + chrono::Duration::seconds(30));
    let (status, again) = wait(&kiln, &kiln.key, &running, &keyed(later.clone(), Some("5s"))).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, once, "the same waitpoint and time");
    assert_ne!(once["waitpoint"]["id"], json!(first));
    // Once the key has expired, it names a new wait.
    while Utc::now() < expires {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, fresh) = wait(&kiln, &kiln.key, &running, &keyed(later.clone(), None)).await;
    assert_ne!(fresh["waitpoint"]["id"], once["waitpoint"]["id"], "{fresh}");
    assert_eq!(fresh["waitUntil"], json!(later));

    // Another environment's key does not find the run.
    let prod = kiln.new_key("prod");
    let (status, answer) = wait(&kiln, &prod, &running, &json!({ "date": until })).await;
    assert_eq!(status, 404, "{answer}");
    // A run that is not running does not wait, and says why.
    let delayed = kiln
        .trigger("kiln.noop", json!({ "payload": {}, "options": { "delay": "1h" } }))
        .await;
    let (status, answer) = wait(&kiln, &kiln.key, &delayed, &json!({ "date": until })).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("only an executing run can wait")),
        "{answer}"
    );
    // A date that is not one is refused before anything is recorded.
    let (status, answer) = wait(&kiln, &kiln.key, &running, &json!({ "date": "next tuesday" })).await;
    assert_eq!(status, 422, "{answer}");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM waitpoints")
        .fetch_one(&db)
        .await
        .expect("count");
    assert_eq!(count, 3, "one unkeyed wait and two keyed ones");
}
