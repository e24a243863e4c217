//! A run's life: trigger → COMPLETED, retries, delays, ttl, idempotency,
//! cancel, replay, timeouts and concurrency limits.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::helpers::{Kiln, Mode, noop_body};

fn date(run: &Value, field: &str) -> DateTime<Utc> {
    run[field]
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|d| d.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("{field} missing in {run}"))
}

#[tokio::test]
async fn a_noop_run_completes_with_its_payload_as_output() {
    let kiln = Kiln::dev().await;
    let id = kiln
        .trigger("kiln.noop", noop_body(json!({ "hello": "world", "n": [1, 2] })))
        .await;
    assert!(id.starts_with("run_"));
    let run = kiln.wait_for_status(&id, "COMPLETED", Duration::from_secs(10)).await;
    assert_eq!(run["output"], json!({ "hello": "world", "n": [1, 2] }));
    assert_eq!(run["payload"], json!({ "hello": "world", "n": [1, 2] }));
    assert_eq!(run["attemptCount"], 1);
    assert_eq!(run["isCompleted"], true);
    assert_eq!(run["isSuccess"], true);
    assert_eq!(run["taskIdentifier"], "kiln.noop");
    // Optional fields are left out, never null.
    assert!(
        run.as_object().is_some_and(|o| o.values().all(|v| !v.is_null())),
        "{run}"
    );
}

#[tokio::test]
async fn a_thousand_runs_triggered_over_http_all_complete() {
    let mut kiln = Kiln::dev().await;
    let kiln_ref = &kiln;
    let ids: Vec<String> = futures::stream::iter(0..1000)
        .map(|i| async move { kiln_ref.trigger("kiln.noop", noop_body(json!({ "i": i }))).await })
        .buffer_unordered(32)
        .collect()
        .await;
    assert_eq!(ids.len(), 1000);
    let db = kiln.db().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (completed, total): (i64, i64) =
            sqlx::query_as("SELECT count(*) FILTER (WHERE status = 'COMPLETED'), count(*) FROM runs")
                .fetch_one(&db)
                .await
                .expect("count");
        assert_eq!(total, 1000, "every accepted trigger is recorded once");
        if completed == 1000 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {completed} of 1000 completed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wrong_output: i64 =
        sqlx::query_scalar("SELECT count(*) FROM runs WHERE output IS DISTINCT FROM payload OR attempt_count <> 1")
            .fetch_one(&db)
            .await
            .expect("count");
    assert_eq!(wrong_output, 0);
    // Redis keeps nothing for finished runs: only the set of queue names and
    // the epoch token.
    let client = redis::Client::open(crate::helpers::redis_url()).expect("redis url");
    let mut redis = client.get_multiplexed_async_connection().await.expect("redis");
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", kiln.redis_prefix))
        .query_async(&mut redis)
        .await
        .expect("keys");
    keys.sort();
    assert_eq!(
        keys,
        [
            format!("{}:epoch", kiln.redis_prefix),
            format!("{}:queues", kiln.redis_prefix)
        ]
    );
}

#[tokio::test]
async fn a_failing_run_is_retried_with_back_off_then_fails() {
    let kiln = Kiln::dev().await;
    let id = kiln
        .trigger("kiln.fail", json!({ "payload": {}, "options": { "maxAttempts": 3 } }))
        .await;
    let run = kiln.wait_for_status(&id, "FAILED", Duration::from_secs(30)).await;
    assert_eq!(run["attemptCount"], 3);
    assert_eq!(run["isFailed"], true);
    assert_eq!(run["isCompleted"], true);
    assert_eq!(run["error"]["name"], "KilnFail");
    assert_eq!(run["error"]["message"], "kiln.fail failed attempt 3");
    // Back-off of at least 1 s then 2 s (Trigger's defaults) separates the
    // three attempts.
    let elapsed = date(&run, "finishedAt") - date(&run, "startedAt");
    assert!(
        elapsed >= chrono::Duration::milliseconds(3000),
        "three attempts took only {elapsed}"
    );
}

#[tokio::test]
async fn a_non_retryable_error_fails_at_once() {
    let kiln = Kiln::dev().await;
    let id = kiln.trigger("kiln.sleep", json!({ "payload": { "ms": "soon" } })).await;
    let run = kiln.wait_for_status(&id, "FAILED", Duration::from_secs(10)).await;
    assert_eq!(run["attemptCount"], 1);
    assert_eq!(run["error"]["name"], "InvalidPayload");
}

#[tokio::test]
async fn a_delayed_run_starts_no_earlier_than_its_delay() {
    let kiln = Kiln::dev().await;
    let id = kiln
        .trigger("kiln.noop", json!({ "payload": {}, "options": { "delay": "2s" } }))
        .await;
    let delayed = kiln.retrieve(&id).await;
    assert_eq!(delayed["status"], "DELAYED");
    assert_eq!(delayed["isQueued"], true);
    // How late it starts depends on the machine's load; that it never
    // starts early does not.
    let run = kiln.wait_for_status(&id, "COMPLETED", Duration::from_secs(60)).await;
    let waited = date(&run, "startedAt") - date(&run, "createdAt");
    assert!(waited >= chrono::Duration::seconds(2), "started after {waited}");
    assert_eq!(
        date(&run, "delayedUntil"),
        date(&run, "createdAt") + chrono::Duration::seconds(2)
    );
}

#[tokio::test]
async fn the_same_idempotency_key_gives_the_same_run() {
    let kiln = Kiln::dev().await;
    let body = json!({ "payload": { "doc": 1 }, "options": { "idempotencyKey": "doc-1" } });
    let first = kiln.post("/api/v1/tasks/kiln.noop/trigger", &body).await;
    let first: Value = first.json().await.expect("json");
    assert!(first.get("isCached").is_none(), "{first}");
    let second: Value = kiln
        .post("/api/v1/tasks/kiln.noop/trigger", &body)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(second["id"], first["id"]);
    assert_eq!(second["isCached"], true);
    // Another task with the same key is another run.
    let other = kiln
        .trigger(
            "kiln.sleep",
            json!({ "payload": { "ms": 1 }, "options": { "idempotencyKey": "doc-1" } }),
        )
        .await;
    assert_ne!(Value::from(other), first["id"]);
}

#[tokio::test]
async fn an_idempotency_key_past_its_ttl_makes_a_new_run() {
    let kiln = Kiln::dev().await;
    // Long enough that the second trigger, sent at once, comes within it
    // even on a busy machine; the test then waits the ttl out.
    let body = json!({ "payload": {}, "options": { "idempotencyKey": "short", "idempotencyKeyTTL": "8s" } });
    let first = kiln.trigger("kiln.noop", body.clone()).await;
    let again: Value = kiln
        .post("/api/v1/tasks/kiln.noop/trigger", &body)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(again["id"], Value::from(first.clone()));
    // Wait until the key's ttl has passed, measured from the run's creation.
    let created = date(&kiln.retrieve(&first).await, "createdAt");
    kiln.wait_for_status(&first, "COMPLETED", Duration::from_secs(30)).await;
    while Utc::now() < created + chrono::Duration::milliseconds(8100) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fresh: Value = kiln
        .post("/api/v1/tasks/kiln.noop/trigger", &body)
        .await
        .json()
        .await
        .expect("json");
    assert_ne!(fresh["id"], Value::from(first));
    assert!(fresh.get("isCached").is_none());
}

#[tokio::test]
async fn a_run_not_started_within_its_ttl_expires() {
    // No worker runs: the run can only wait, then expire.
    let kiln = Kiln::builder(Mode::Serve).spawn().await;
    let id = kiln
        .trigger("kiln.noop", json!({ "payload": {}, "options": { "ttl": "1s" } }))
        .await;
    assert_eq!(kiln.retrieve(&id).await["status"], "QUEUED");
    let run = kiln.wait_for_status(&id, "EXPIRED", Duration::from_secs(10)).await;
    assert_eq!(run["isCompleted"], true);
    assert_eq!(run["isFailed"], true);
    assert_eq!(run["attemptCount"], 0);
    assert_eq!(run["ttl"], "1s");
    assert!(run.get("expiredAt").is_some());
    assert!(run.get("startedAt").is_none());
}

#[tokio::test]
async fn a_run_past_its_max_duration_times_out() {
    let kiln = Kiln::dev().await;
    let id = kiln
        .trigger(
            "kiln.sleep",
            json!({ "payload": { "ms": 60000 }, "options": { "maxDuration": 1 } }),
        )
        .await;
    let run = kiln.wait_for_status(&id, "TIMED_OUT", Duration::from_secs(10)).await;
    assert_eq!(run["isCompleted"], true);
    assert_eq!(run["attemptCount"], 1);
    assert_eq!(run["error"]["name"], "MaxDurationExceeded");
}

#[tokio::test]
async fn a_canceled_delayed_run_never_starts() {
    let kiln = Kiln::dev().await;
    let id = kiln
        .trigger("kiln.noop", json!({ "payload": {}, "options": { "delay": "1s" } }))
        .await;
    let answer: Value = kiln
        .post(&format!("/api/v2/runs/{id}/cancel"), &json!({}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(answer["id"], Value::from(id.clone()));
    let run = kiln.retrieve(&id).await;
    assert_eq!(run["status"], "CANCELED");
    assert_eq!(run["isCancelled"], true);
    assert_eq!(run["isCompleted"], true);
    // Past its delay, a no-op sentinel triggered afterwards completes, and the
    // canceled run still has not started.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let sentinel = kiln.trigger("kiln.noop", noop_body(json!({}))).await;
    kiln.wait_for_status(&sentinel, "COMPLETED", Duration::from_secs(10))
        .await;
    let run = kiln.retrieve(&id).await;
    assert_eq!(run["status"], "CANCELED");
    assert_eq!(run["attemptCount"], 0);
    assert!(run.get("startedAt").is_none());
}

#[tokio::test]
async fn canceling_an_executing_run_stops_it() {
    // One slot: the next run can start only once the canceled handler has
    // let go of it.
    let mut kiln = Kiln::builder(Mode::Dev)
        .env("KILN_WORKER_CONCURRENCY", "1")
        .spawn()
        .await;
    let id = kiln.trigger("kiln.sleep", json!({ "payload": { "ms": 60000 } })).await;
    kiln.wait_for_status(&id, "EXECUTING", Duration::from_secs(10)).await;
    kiln.post(&format!("/api/v2/runs/{id}/cancel"), &json!({})).await;
    let run = kiln.wait_for_status(&id, "CANCELED", Duration::from_secs(5)).await;
    assert_eq!(run["attemptCount"], 1);
    // The worker lets go of it: its lease is cleared and no retry follows.
    let db = kiln.db().await;
    // The 60 s sleep held the only slot: a run after it starts, and ends,
    // only if the worker stopped the canceled handler.
    let next = kiln.trigger("kiln.noop", noop_body(json!({}))).await;
    kiln.wait_for_status(&next, "COMPLETED", Duration::from_secs(30)).await;
    let (status, lease): (String, Option<DateTime<Utc>>) =
        sqlx::query_as("SELECT status, lease_expires_at FROM runs WHERE id = $1")
            .bind(&id)
            .fetch_one(&db)
            .await
            .expect("row");
    assert_eq!(status, "CANCELED");
    assert!(lease.is_none());
}

#[tokio::test]
async fn replay_makes_a_new_run_with_the_same_payload() {
    let kiln = Kiln::dev().await;
    let id = kiln
        .trigger(
            "kiln.noop",
            json!({ "payload": { "x": 42 }, "options": { "tags": ["doc_1"] } }),
        )
        .await;
    kiln.wait_for_status(&id, "COMPLETED", Duration::from_secs(10)).await;
    let answer: Value = kiln
        .post(&format!("/api/v1/runs/{id}/replay"), &json!({}))
        .await
        .json()
        .await
        .expect("json");
    let replay = answer["id"].as_str().expect("id").to_owned();
    assert_ne!(replay, id);
    let run = kiln
        .wait_for_status(&replay, "COMPLETED", Duration::from_secs(10))
        .await;
    assert_eq!(run["output"], json!({ "x": 42 }));
    assert_eq!(run["tags"], json!(["doc_1"]));
    assert_eq!(run["replayedFrom"], Value::from(id));
}

#[tokio::test]
async fn a_queue_concurrency_limit_holds() {
    let mut kiln = Kiln::dev().await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        let body =
            json!({ "payload": { "ms": 300 }, "options": { "queue": { "name": "limited", "concurrencyLimit": 2 } } });
        ids.push(kiln.trigger("kiln.sleep", body).await);
    }
    for id in &ids {
        kiln.wait_for_status(id, "COMPLETED", Duration::from_secs(20)).await;
    }
    let db = kiln.db().await;
    let spans: Vec<(DateTime<Utc>, DateTime<Utc>)> =
        sqlx::query_as("SELECT started_at, completed_at FROM runs WHERE queue = 'limited'")
            .fetch_all(&db)
            .await
            .expect("rows");
    assert_eq!(spans.len(), 6);
    let most_at_once = spans
        .iter()
        .map(|(start, _)| spans.iter().filter(|(s, e)| s <= start && start < e).count())
        .max()
        .unwrap_or(0);
    assert_eq!(
        most_at_once, 2,
        "runs of a queue limited to 2 overlapped {most_at_once} at a time"
    );
}

#[tokio::test]
async fn a_concurrency_key_gets_its_own_slots() {
    let mut kiln = Kiln::dev().await;
    // Triggered together, each long enough that the first of each key
    // still runs when the other key's first starts, however slow the
    // machine is to start them.
    let ids = futures::future::join_all(["a", "a", "b", "b"].map(|key| {
        let body = json!({ "payload": { "ms": 3000 }, "options": { "queue": { "name": "per-user", "concurrencyLimit": 1 }, "concurrencyKey": key } });
        kiln.trigger("kiln.sleep", body)
    }))
    .await;
    for id in &ids {
        kiln.wait_for_status(id, "COMPLETED", Duration::from_secs(60)).await;
    }
    let db = kiln.db().await;
    let spans: Vec<(String, DateTime<Utc>, DateTime<Utc>)> =
        sqlx::query_as("SELECT concurrency_key, started_at, completed_at FROM runs")
            .fetch_all(&db)
            .await
            .expect("rows");
    let overlapping = |same_key: bool| {
        spans.iter().any(|(k1, s1, e1)| {
            spans
                .iter()
                .any(|(k2, s2, e2)| (s1, e1) != (s2, e2) && (k1 == k2) == same_key && s1 < e2 && s2 < e1)
        })
    };
    assert!(!overlapping(true), "two runs with one key ran at once: {spans:?}");
    assert!(
        overlapping(false),
        "runs with different keys never ran together: {spans:?}"
    );
}

#[tokio::test]
async fn runs_list_filters_and_pages() {
    let kiln = Kiln::dev().await;
    let mut tagged = Vec::new();
    for i in 0..5 {
        tagged.push(
            kiln.trigger(
                "kiln.noop",
                json!({ "payload": { "i": i }, "options": { "tags": ["doc_7"] } }),
            )
            .await,
        );
    }
    let untagged = kiln.trigger("kiln.noop", noop_body(json!({}))).await;
    for id in tagged.iter().chain([&untagged]) {
        kiln.wait_for_status(id, "COMPLETED", Duration::from_secs(10)).await;
    }
    let page = |query: String| {
        let kiln = &kiln;
        async move {
            let response = kiln
                .http
                .get(kiln.url(&format!("/api/v1/runs?{query}")))
                .bearer_auth(&kiln.key)
                .send()
                .await
                .expect("list");
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.expect("json")
        }
    };
    let first = page("filter%5Btag%5D=doc_7&filter%5Bstatus%5D=COMPLETED&page%5Bsize%5D=3".into()).await;
    let ids: Vec<&str> = first["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    let mut newest_first = tagged.clone();
    newest_first.reverse();
    assert_eq!(ids, newest_first[..3].iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(first["data"][0]["env"]["name"], "Development");
    let next = first["pagination"]["next"].as_str().expect("next cursor");
    let second = page(format!("filter%5Btag%5D=doc_7&page%5Bsize%5D=3&page%5Bafter%5D={next}")).await;
    let ids: Vec<&str> = second["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(ids, newest_first[3..].iter().map(String::as_str).collect::<Vec<_>>());
    assert!(second["pagination"].get("next").is_none());
    let none = page("filter%5Bstatus%5D=FAILED".into()).await;
    assert_eq!(none["data"], json!([]));
}

#[tokio::test]
async fn the_trigger_answer_carries_a_token_for_the_run() {
    let kiln = Kiln::dev().await;
    let response = kiln
        .post("/api/v1/tasks/kiln.noop/trigger", &noop_body(json!({})))
        .await;
    let token = response
        .headers()
        .get("x-trigger-jwt")
        .and_then(|v| v.to_str().ok())
        .expect("x-trigger-jwt")
        .to_owned();
    let answer: Value = response.json().await.expect("json");
    let claims = kiln_core_jwt::verify(&kiln.key, &token);
    let id = answer["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(claims["scopes"], json!([format!("read:runs:{id}")]));
    assert_eq!(claims["pub"], true);

    // The token reads its run, and nothing else.
    let get = |path: String, bearer: String| {
        let kiln = &kiln;
        async move {
            kiln.http
                .get(kiln.url(&path))
                .bearer_auth(bearer)
                .send()
                .await
                .expect("send")
                .status()
                .as_u16()
        }
    };
    assert_eq!(get(format!("/api/v3/runs/{id}"), token.clone()).await, 200);
    let other = kiln.trigger("kiln.noop", noop_body(json!({}))).await;
    assert_eq!(get(format!("/api/v3/runs/{other}"), token.clone()).await, 403);
    assert_eq!(get("/api/v1/runs".into(), token.clone()).await, 403);
    let trigger = kiln
        .http
        .post(kiln.url("/api/v1/tasks/kiln.noop/trigger"))
        .bearer_auth(&token)
        .json(&noop_body(json!({})))
        .send()
        .await
        .expect("send");
    assert_eq!(trigger.status(), 403);
    // A token whose claims were changed no longer verifies.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let widened = json!({ "sub": claims["sub"], "pub": true, "scopes": ["read:all"], "exp": claims["exp"] });
    parts[1] = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, widened.to_string());
    assert_eq!(get(format!("/api/v3/runs/{other}"), parts.join(".")).await, 401);
}

/// HS256 verification written out here, independent of kiln's own code.
mod kiln_core_jwt {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use hmac::{Hmac, Mac};
    use serde_json::Value;

    pub fn verify(secret: &str, token: &str) -> Value {
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3, "a JWT has three parts");
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("hmac key");
        mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).expect("base64 signature");
        mac.verify_slice(&signature)
            .expect("the token verifies with the secret key");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("base64 claims")).expect("claims json")
    }
}

#[tokio::test]
async fn a_delayed_run_can_be_rescheduled_and_only_a_delayed_one() {
    let kiln = Kiln::dev().await;
    let id = kiln
        .trigger("kiln.noop", json!({ "payload": {}, "options": { "delay": "1h" } }))
        .await;
    let response = kiln
        .post(&format!("/api/v1/runs/{id}/reschedule"), &json!({ "delay": "1s" }))
        .await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["status"], "DELAYED");
    let moved = date(&answer, "delayedUntil") - date(&answer, "createdAt");
    assert!(
        moved < chrono::Duration::seconds(60),
        "delayedUntil moved to {moved} after creation"
    );
    let run = kiln.wait_for_status(&id, "COMPLETED", Duration::from_secs(15)).await;
    assert!(date(&run, "startedAt") >= date(&answer, "delayedUntil"));
    let again = kiln
        .post(&format!("/api/v1/runs/{id}/reschedule"), &json!({ "delay": "1h" }))
        .await;
    assert_eq!(again.status(), 400, "a completed run cannot be rescheduled");
    let bad = kiln
        .post(
            &format!("/api/v1/runs/{id}/reschedule"),
            &json!({ "delay": "whenever" }),
        )
        .await;
    assert_eq!(bad.status(), 422);
}

#[tokio::test]
async fn tags_can_be_added_up_to_ten_and_are_listed() {
    let kiln = Kiln::builder(Mode::Serve).spawn().await;
    let id = kiln
        .trigger("kiln.noop", json!({ "payload": {}, "options": { "tags": ["a"] } }))
        .await;
    let answer: Value = kiln
        .post(&format!("/api/v1/runs/{id}/tags"), &json!({ "tags": ["a", "b", "c"] }))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(answer["message"], "Successfully set 2 new tags.");
    assert_eq!(kiln.retrieve(&id).await["tags"], json!(["a", "b", "c"]));
    let listed: Value = kiln
        .http
        .get(kiln.url("/api/v1/runs?filter%5Btag%5D=c"))
        .bearer_auth(&kiln.key)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["data"][0]["id"], Value::from(id.clone()));
    let too_many: Vec<String> = (0..8).map(|i| format!("t{i}")).collect();
    let response = kiln
        .post(&format!("/api/v1/runs/{id}/tags"), &json!({ "tags": too_many }))
        .await;
    assert_eq!(response.status(), 422);
    assert_eq!(
        kiln.retrieve(&id).await["tags"],
        json!(["a", "b", "c"]),
        "a refused request changes nothing"
    );
}
