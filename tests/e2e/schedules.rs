//! Cron schedules: Trigger's schedules API over HTTP, schedules declared
//! in the tasks file, and firing — on time, and once per tick with two kiln
//! processes (API + worker) each running the firing loop.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::helpers::{Kiln, Mode, temp_dir, wait_for_count};

async fn send(kiln: &Kiln, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = kiln.http.request(method, kiln.url(path)).bearer_auth(&kiln.key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json answer"))
}

#[tokio::test]
async fn the_schedules_api_creates_lists_changes_and_deletes() {
    let kiln = Kiln::builder(Mode::Serve).spawn().await;
    use reqwest::Method;
    let (status, created) = send(
        &kiln,
        Method::POST,
        "/api/v1/schedules",
        Some(json!({ "task": "kiln.noop", "cron": "0 2 * * *", "timezone": "Europe/Berlin", "deduplicationKey": "nightly" })),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["type"], "IMPERATIVE");
    assert_eq!(created["generator"]["type"], "CRON");
    assert_eq!(created["environments"][0]["type"], "DEVELOPMENT");
    let next: DateTime<Utc> = created["nextRun"].as_str().expect("nextRun").parse().expect("date");
    assert!(next > Utc::now() && next < Utc::now() + chrono::Duration::days(1));
    // 02:00 in Berlin is 01:00 UTC in winter, 00:00 in summer.
    assert!(
        matches!(next.format("%H:%M").to_string().as_str(), "01:00" | "00:00"),
        "{next}"
    );

    for n in 0..11 {
        let (status, _) = send(
            &kiln,
            Method::POST,
            "/api/v1/schedules",
            Some(json!({ "task": "kiln.noop", "cron": format!("{n} * * * *"), "deduplicationKey": format!("k{n}") })),
        )
        .await;
        assert_eq!(status, 200);
    }
    let (_, page) = send(&kiln, Method::GET, "/api/v1/schedules?page=2&perPage=5", None).await;
    assert_eq!(
        page["pagination"],
        json!({ "currentPage": 2, "totalPages": 3, "count": 12 })
    );
    assert_eq!(page["data"].as_array().map(Vec::len), Some(5));

    let (status, updated) = send(
        &kiln,
        Method::PUT,
        &format!("/api/v1/schedules/{id}"),
        Some(json!({ "task": "kiln.noop", "cron": "*/5 * * * *", "externalId": "user_1" })),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["generator"]["expression"], "*/5 * * * *");
    assert_eq!(updated["timezone"], "UTC");
    assert_eq!(updated["externalId"], "user_1");

    let (_, paused) = send(&kiln, Method::POST, &format!("/api/v1/schedules/{id}/deactivate"), None).await;
    assert_eq!(paused["active"], false);
    assert_eq!(paused["nextRun"], Value::Null);
    let (_, resumed) = send(&kiln, Method::POST, &format!("/api/v1/schedules/{id}/activate"), None).await;
    assert_eq!(resumed["active"], true);
    assert!(resumed["nextRun"].is_string());

    for (body, needle) in [
        (json!({ "task": "kiln.noop", "cron": "0 25 * * *" }), "cron"),
        (
            json!({ "task": "kiln.noop", "cron": "0 2 * * *", "timezone": "Mars/Olympus" }),
            "Mars/Olympus",
        ),
        (json!({ "task": "no-such-task", "cron": "0 2 * * *" }), "no-such-task"),
    ] {
        let (status, answer) = send(&kiln, Method::POST, "/api/v1/schedules", Some(body)).await;
        assert_eq!(status, 422, "{answer}");
        assert!(answer["error"].as_str().is_some_and(|e| e.contains(needle)), "{answer}");
    }

    let (status, deleted) = send(&kiln, Method::DELETE, &format!("/api/v1/schedules/{id}"), None).await;
    assert_eq!((status, deleted), (200, json!({ "id": id })));
    let (status, missing) = send(&kiln, Method::GET, &format!("/api/v1/schedules/{id}"), None).await;
    assert_eq!(status, 404, "{missing}");

    let (_, zones) = send(&kiln, Method::GET, "/api/v1/timezones?excludeUtc=true", None).await;
    let zones = zones["timezones"].as_array().expect("timezones");
    assert!(zones.contains(&json!("Asia/Kolkata")));
    assert!(!zones.contains(&json!("UTC")));
}

#[tokio::test]
async fn a_schedule_fires_on_time_and_once_per_tick_with_two_kiln_processes() {
    let mut kiln = Kiln::builder(Mode::Serve).env("KILN_CRON_TICK", "100ms").spawn().await;
    let _worker = kiln.spawn_worker(&[("KILN_CRON_TICK", "100ms")]);
    let (status, schedule) = send(
        &kiln,
        reqwest::Method::POST,
        "/api/v1/schedules",
        Some(json!({ "task": "kiln.noop", "cron": "*/2 * * * * *", "externalId": "tenant-7" })),
    )
    .await;
    assert_eq!(status, 200, "{schedule}");
    let schedule_id = schedule["id"].as_str().expect("id").to_owned();
    let db = kiln.db().await;
    wait_for_count(&db, "COMPLETED", 5, Duration::from_secs(60)).await;
    send(
        &kiln,
        reqwest::Method::POST,
        &format!("/api/v1/schedules/{schedule_id}/deactivate"),
        None,
    )
    .await;

    let runs: Vec<(Value, DateTime<Utc>)> =
        sqlx::query_as("SELECT payload, created_at FROM runs WHERE task_identifier = 'kiln.noop' ORDER BY created_at")
            .fetch_all(&db)
            .await
            .expect("runs");
    assert!(runs.len() >= 5);
    let mut previous: Option<DateTime<Utc>> = None;
    for (payload, created_at) in &runs {
        assert_eq!(payload["scheduleId"], schedule_id.as_str());
        assert_eq!(payload["type"], "IMPERATIVE");
        assert_eq!(payload["externalId"], "tenant-7");
        assert_eq!(payload["timezone"], "UTC");
        let tick: DateTime<Utc> = payload["timestamp"].as_str().expect("timestamp").parse().expect("date");
        assert_eq!(tick.timestamp() % 2, 0, "ticks fall on even seconds: {tick}");
        assert_eq!(tick.timestamp_subsec_millis(), 0);
        // Never early. How late depends on the machine's load; a tick
        // missed by a stall is skipped by design, which the stepped cron
        // test in kiln-runtime checks.
        assert!(*created_at >= tick, "tick {tick} fired early, at {created_at}");
        let upcoming = payload["upcoming"].as_array().expect("upcoming");
        assert_eq!(upcoming.len(), 10);
        assert_eq!(
            upcoming[0],
            json!((tick + chrono::Duration::seconds(2)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        );
        match previous {
            // No tick fires twice: each follows the last by a whole number
            // of periods (one, unless a stall made kiln skip a tick).
            Some(last) => {
                let gap = tick - last;
                assert!(
                    gap >= chrono::Duration::seconds(2) && gap.num_seconds() % 2 == 0,
                    "ticks {last} then {tick}"
                );
                assert_eq!(
                    payload["lastTimestamp"],
                    json!(last.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                );
            }
            None => assert!(payload.get("lastTimestamp").is_none()),
        }
        previous = Some(tick);
    }
}

#[tokio::test]
async fn schedules_declared_in_the_tasks_file_are_recorded_and_kept_there() {
    let dir = temp_dir("tasks");
    let tasks_file = dir.join("kiln.toml");
    std::fs::write(
        &tasks_file,
        "[[schedules]]\ntask = \"kiln.noop\"\ncron = \"0 2 * * *\"\ntimezone = \"Asia/Kolkata\"\nenvironment = \"dev\"\n",
    )
    .expect("write tasks file");
    let mut kiln = Kiln::builder(Mode::Serve)
        .env("KILN_TASKS_FILE", tasks_file.to_string_lossy())
        .spawn()
        .await;
    let (_, listed) = send(&kiln, reqwest::Method::GET, "/api/v1/schedules", None).await;
    let declared = &listed["data"][0];
    assert_eq!(listed["pagination"]["count"], 1, "{listed}");
    assert_eq!(declared["type"], "DECLARATIVE");
    assert_eq!(declared["task"], "kiln.noop");
    assert_eq!(declared["timezone"], "Asia/Kolkata");
    let next: DateTime<Utc> = declared["nextRun"].as_str().expect("nextRun").parse().expect("date");
    assert_eq!(next.format("%H:%M").to_string(), "20:30");
    let id = declared["id"].as_str().expect("id");
    let (status, refused) = send(&kiln, reqwest::Method::DELETE, &format!("/api/v1/schedules/{id}"), None).await;
    assert_eq!(status, 422, "{refused}");
    assert!(refused["error"].as_str().is_some_and(|e| e.contains("configuration")));

    // Its deduplication key cannot rewrite it either.
    let key = declared["deduplicationKey"]
        .as_str()
        .map_or_else(|| "declared:kiln.noop:0 2 * * *:Asia/Kolkata".to_owned(), str::to_owned);
    let (status, refused) = send(
        &kiln,
        reqwest::Method::POST,
        "/api/v1/schedules",
        Some(json!({ "task": "kiln.noop", "cron": "*/2 * * * * *", "deduplicationKey": key, "externalId": "pwned" })),
    )
    .await;
    assert_eq!(status, 422, "{refused}");
    let (_, listed) = send(&kiln, reqwest::Method::GET, "/api/v1/schedules", None).await;
    assert_eq!(
        listed["data"][0]["generator"]["expression"], declared["generator"]["expression"],
        "{listed}"
    );
    assert_eq!(listed["data"][0]["externalId"], declared["externalId"], "{listed}");

    // The export cleanup is declared by default, daily at 02:00 UTC.
    let db = kiln.db().await;
    let cleanup: (String, String, String, bool) = sqlx::query_as(
        "SELECT cron, timezone, environment, active FROM schedules WHERE task_identifier = 'kiln.exports.cleanup'",
    )
    .fetch_one(&db)
    .await
    .expect("the cleanup schedule");
    assert_eq!(cleanup, ("0 2 * * *".into(), "UTC".into(), "prod".into(), true));
}
