//! The worker API a task host speaks (`/worker/v1/…`), driven over HTTP
//! as `kiln task-host` drives it: a host registers an app's tasks, kiln
//! accepts triggers of them (and only in the host's environment), its own
//! workers leave their runs alone, and the host claims, renews and
//! reports attempts, with the SDK's retry decision honoured.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::Kiln;

async fn call(kiln: &Kiln, path: &str, body: &Value) -> (u16, Value) {
    kiln.call_as(Method::POST, path, &kiln.key, Some(body)).await
}

/// Registers a host serving `email.send` (3 attempts) and `kiln.noop`
/// (which kiln serves itself); answers the host's id.
async fn register(kiln: &Kiln) -> String {
    let (status, answer) = call(
        kiln,
        "/worker/v1/register",
        &json!({
            "host": { "hostname": "app-1", "pid": 42, "slots": 4 },
            "sdk": { "version": "4.1.2" },
            "tasks": [
                { "id": "email.send", "filePath": "trigger/email.ts", "exportName": "sendEmail",
                  "retry": { "maxAttempts": 3 }, "maxDuration": 60 },
                { "id": "kiln.noop", "filePath": "trigger/noop.ts" },
            ],
        }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["served"], json!(["email.send"]));
    assert_eq!(answer["servedByKiln"], json!(["kiln.noop"]), "kiln's own task wins");
    answer["workerId"].as_str().expect("a host id").to_owned()
}

async fn claim(kiln: &Kiln, host: &str) -> Vec<Value> {
    let (status, answer) = call(
        kiln,
        "/worker/v1/claim",
        &json!({ "workerId": host, "free": 5, "waitSeconds": 20 }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    answer["runs"].as_array().expect("runs").clone()
}

async fn complete(kiln: &Kiln, host: &str, run_id: &str, attempt: i64, result: Value) -> Value {
    let (status, answer) = call(
        kiln,
        &format!("/worker/v1/runs/{run_id}/complete"),
        &json!({ "workerId": host, "attempt": attempt, "result": result }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    answer
}

#[tokio::test]
async fn a_host_serves_the_tasks_it_registers_and_its_results_are_recorded() {
    let kiln = Kiln::dev().await;
    let (status, answer) = call(&kiln, "/api/v1/tasks/email.send/trigger", &json!({ "payload": {} })).await;
    assert_eq!(status, 404, "nobody serves email.send yet: {answer}");
    assert!(
        answer["error"].as_str().unwrap_or_default().contains("task host"),
        "the refusal says how to serve it: {answer}"
    );

    let host = register(&kiln).await;
    let (status, tasks) = kiln.call_as(Method::GET, "/api/v1/tasks", &kiln.key, None).await;
    assert_eq!(status, 200, "{tasks}");
    let served_by = |id: &str| {
        tasks["tasks"]
            .as_array()
            .and_then(|all| all.iter().find(|t| t["id"] == id))
            .map(|t| (t["servedBy"].clone(), t["host"]["hostname"].clone()))
    };
    assert_eq!(served_by("email.send"), Some((json!("host"), json!("app-1"))));
    assert_eq!(served_by("kiln.noop"), Some((json!("kiln"), Value::Null)));

    // A run of a host task: kiln's own worker (running in `kiln dev`)
    // would fail it at once for want of a handler; the host gets it.
    let run_id = kiln
        .trigger(
            "email.send",
            json!({ "payload": { "to": "ada@example.com" }, "options": { "tags": ["team_1"] } }),
        )
        .await;
    let claimed = claim(&kiln, &host).await;
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    let execution = &claimed[0]["execution"];
    assert_eq!(claimed[0]["runId"], run_id.as_str());
    assert_eq!(claimed[0]["attempt"], 1);
    assert_eq!(
        execution["task"],
        json!({ "id": "email.send", "filePath": "trigger/email.ts", "exportName": "sendEmail" })
    );
    assert_eq!(execution["run"]["payload"], r#"{"to":"ada@example.com"}"#);
    assert_eq!(execution["run"]["payloadType"], "application/json");
    assert_eq!(execution["run"]["tags"], json!(["team_1"]));
    assert_eq!(execution["run"]["maxAttempts"], 3);
    assert_eq!(execution["run"]["maxDuration"], 60);
    assert_eq!(execution["attempt"]["number"], 1);
    assert_eq!(execution["environment"]["type"], "DEVELOPMENT");
    assert_eq!(kiln.retrieve(&run_id).await["status"], "EXECUTING");

    let (status, beat) = call(
        &kiln,
        &format!("/worker/v1/runs/{run_id}/heartbeat"),
        &json!({ "workerId": host }),
    )
    .await;
    assert_eq!((status, beat["cancel"].clone()), (200, json!(false)), "{beat}");

    let answer = complete(
        &kiln,
        &host,
        &run_id,
        1,
        json!({
            "ok": true, "id": run_id,
            "output": r#"{"sent":true}"#, "outputType": "application/json",
            "flushedMetadata": { "data": r#"{"progress":1}"#, "dataType": "application/json" },
        }),
    )
    .await;
    assert_eq!(answer["recorded"], true);
    let run = kiln.retrieve(&run_id).await;
    assert_eq!(run["status"], "COMPLETED", "{run}");
    assert_eq!(run["output"], json!({ "sent": true }));
    assert_eq!(run["metadata"]["progress"], 1);

    // A retry the SDK decided on, then an error it says not to retry
    // (AbortTaskRunError): FAILED after the second attempt, with 3 allowed.
    let run_id = kiln
        .trigger("email.send", json!({ "payload": { "to": "bob@example.com" } }))
        .await;
    assert_eq!(claim(&kiln, &host).await.len(), 1);
    complete(
        &kiln,
        &host,
        &run_id,
        1,
        json!({
            "ok": false, "id": run_id,
            "error": { "type": "BUILT_IN_ERROR", "name": "Error", "message": "smtp said 451", "stackTrace": "Error: smtp said 451\n    at run" },
            "retry": { "timestamp": 0, "delay": 300 },
        }),
    )
    .await;
    let run = kiln.retrieve(&run_id).await;
    assert_eq!(run["status"], "QUEUED", "a retry goes back to the queue: {run}");
    let again = claim(&kiln, &host).await;
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0]["attempt"], 2);
    assert_eq!(again[0]["execution"]["attempt"]["number"], 2);
    complete(
        &kiln,
        &host,
        &run_id,
        2,
        json!({
            "ok": false, "id": run_id, "skippedRetrying": true,
            "error": { "type": "CUSTOM_ERROR", "raw": "{}", "name": "AbortTaskRunError", "message": "no such mailbox" },
            "retry": { "timestamp": 0, "delay": 300 },
        }),
    )
    .await;
    let run = kiln.retrieve(&run_id).await;
    assert_eq!(run["status"], "FAILED", "{run}");
    assert_eq!(run["attemptCount"], 2);
    assert_eq!(run["error"]["message"], "no such mailbox");

    // A run past its maxDuration ends TIMED_OUT, not retried.
    let run_id = kiln.trigger("email.send", json!({ "payload": {} })).await;
    assert_eq!(claim(&kiln, &host).await.len(), 1);
    complete(
        &kiln,
        &host,
        &run_id,
        1,
        json!({
            "ok": false, "id": run_id,
            "error": { "type": "INTERNAL_ERROR", "code": "MAX_DURATION_EXCEEDED", "message": "Run exceeded maximum compute time" },
            "retry": { "timestamp": 0, "delay": 300 },
        }),
    )
    .await;
    assert_eq!(kiln.retrieve(&run_id).await["status"], "TIMED_OUT");

    // A canceled run: the next heartbeat tells the host to stop.
    let run_id = kiln.trigger("email.send", json!({ "payload": {} })).await;
    assert_eq!(claim(&kiln, &host).await.len(), 1);
    let (status, _) = call(&kiln, &format!("/api/v2/runs/{run_id}/cancel"), &json!({})).await;
    assert_eq!(status, 200);
    let (_, beat) = call(
        &kiln,
        &format!("/worker/v1/runs/{run_id}/heartbeat"),
        &json!({ "workerId": host }),
    )
    .await;
    assert_eq!(beat["cancel"], true, "{beat}");
    // What the host did shows in /metrics, and `kiln doctor` names it.
    let scraped = kiln
        .http
        .get(kiln.url("/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics");
    assert!(scraped.contains("kiln_task_hosts_alive 1"), "{scraped}");
    assert!(
        scraped
            .lines()
            .any(|l| l.starts_with("kiln_host_runs_claimed_total") && l.contains("hostname=\"app-1\"")),
        "{scraped}"
    );
    assert!(
        scraped
            .lines()
            .any(|l| l.starts_with("kiln_host_attempts_finished_total") && l.contains("outcome=\"TIMED_OUT\"")),
        "{scraped}"
    );
    let doctor = std::process::Command::new(crate::helpers::kiln_bin())
        .arg("doctor")
        .envs(kiln.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("kiln doctor");
    let said = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        said.contains("ok       task hosts: 1 task(s) served by app-1 (dev, SDK 4.1.2)"),
        "{said}"
    );

    let late = complete(
        &kiln,
        &host,
        &run_id,
        1,
        json!({ "ok": true, "id": run_id, "output": "1", "outputType": "application/json" }),
    )
    .await;
    assert_eq!(late["recorded"], false, "a canceled run keeps its status");
    assert_eq!(kiln.retrieve(&run_id).await["status"], "CANCELED");
}

#[tokio::test]
async fn a_host_is_seen_only_in_its_own_environment() {
    let kiln = Kiln::dev().await;
    let host = register(&kiln).await;
    let prod = kiln.new_key("prod");
    let (status, answer) = kiln
        .call_as(
            Method::POST,
            "/api/v1/tasks/email.send/trigger",
            &prod,
            Some(&json!({ "payload": {} })),
        )
        .await;
    assert_eq!(status, 404, "the dev host serves dev only: {answer}");
    let (status, answer) = kiln
        .call_as(
            Method::POST,
            "/worker/v1/claim",
            &prod,
            Some(&json!({ "workerId": host, "free": 1, "waitSeconds": 0 })),
        )
        .await;
    assert_eq!(status, 404, "a prod key cannot use a dev host: {answer}");
    let run_id = kiln.trigger("email.send", json!({ "payload": {} })).await;
    assert_eq!(claim(&kiln, &host).await.len(), 1);
    let (status, _) = kiln
        .call_as(
            Method::POST,
            &format!("/worker/v1/runs/{run_id}/complete"),
            &prod,
            Some(&json!({ "workerId": host, "attempt": 1, "result": { "ok": true } })),
        )
        .await;
    assert_eq!(status, 404);
    let (_, tasks) = kiln.call_as(Method::GET, "/api/v1/tasks", &prod, None).await;
    assert!(
        tasks["tasks"]
            .as_array()
            .is_some_and(|t| t.iter().all(|t| t["id"] != "email.send")),
        "{tasks}"
    );
    let (status, answer) = call(
        &kiln,
        "/worker/v1/claim",
        &json!({ "workerId": "host_nobody", "free": 1 }),
    )
    .await;
    assert_eq!(status, 404, "{answer}");
    let (status, answer) = call(
        &kiln,
        "/worker/v1/register",
        &json!({ "host": { "hostname": "old", "slots": 1 }, "sdk": { "version": "2.3.0" }, "tasks": [] }),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["error"].as_str().unwrap_or_default().contains("2.3.0"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_run_whose_host_vanished_is_claimed_again_after_its_lease() {
    let kiln = Kiln::dev().await;
    let host = register(&kiln).await;
    let run_id = kiln.trigger("email.send", json!({ "payload": {} })).await;
    assert_eq!(claim(&kiln, &host).await.len(), 1);
    // No heartbeat: the host died. Its lease lapses, the run is retried.
    let mut deadline = 0;
    let again = loop {
        let runs = claim(&kiln, &host).await;
        if let Some(run) = runs.into_iter().next() {
            break run;
        }
        deadline += 1;
        assert!(
            deadline < 8,
            "the run never came back: {}",
            kiln.retrieve(&run_id).await
        );
    };
    assert_eq!(again["runId"], run_id.as_str());
    assert_eq!(again["attempt"], 2);
}

#[tokio::test]
async fn a_hosts_scheduled_task_fires_on_its_cron_and_goes_when_the_code_drops_it() {
    let kiln = Kiln::dev().await;
    let manifest = |schedule: Value| {
        json!({
            "host": { "hostname": "app-1", "slots": 1 },
            "sdk": { "version": "4.1.2" },
            "tasks": [{ "id": "reports.nightly", "filePath": "trigger/reports.ts", "schedule": schedule }],
        })
    };
    let (status, answer) = call(&kiln, "/worker/v1/register", &manifest(json!({ "cron": "* * * * *" }))).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["schedules"], 1);
    let host = answer["workerId"].as_str().expect("host id").to_owned();
    let (_, listed) = kiln.call_as(Method::GET, "/api/v1/schedules", &kiln.key, None).await;
    let schedules = listed["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(schedules.len(), 1, "{listed}");
    assert_eq!(schedules[0]["task"], "reports.nightly");
    assert_eq!(schedules[0]["type"], "DECLARATIVE");

    // Its next minute: a run the host claims, with Trigger's scheduled
    // payload.
    let mut fired = None;
    for _ in 0..5 {
        if let Some(run) = claim(&kiln, &host).await.into_iter().next() {
            fired = Some(run);
            break;
        }
    }
    let fired = fired.expect("the schedule fired within its minute");
    let payload: Value =
        serde_json::from_str(fired["execution"]["run"]["payload"].as_str().unwrap_or("null")).expect("a JSON payload");
    assert_eq!(payload["type"], "DECLARATIVE", "{payload}");
    assert_eq!(payload["scheduleId"], schedules[0]["id"]);

    // The app's code drops the cron: the schedule goes with it.
    let (status, answer) = call(&kiln, "/worker/v1/register", &manifest(Value::Null)).await;
    assert_eq!((status, answer["schedules"].clone()), (200, json!(0)), "{answer}");
    let (_, listed) = kiln.call_as(Method::GET, "/api/v1/schedules", &kiln.key, None).await;
    assert_eq!(listed["data"], json!([]), "{listed}");

    let (status, answer) = call(&kiln, "/worker/v1/register", &manifest(json!({ "cron": "every day" }))).await;
    assert_eq!(status, 422, "a cron that does not parse: {answer}");
}
