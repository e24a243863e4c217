//! `kiln task-host` running a real Trigger.dev project
//! (`tests/task-host/app`: its own `trigger.config.ts`, TypeScript task
//! files with a path alias, SDK 4.1.2 from npm) against a real kiln: every
//! feature task's run ends as the SDK decided, seen through kiln's API.
//! `scripts/test` installs the project's packages (`npm ci`).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Kiln, kiln_bin, temp_dir};
use crate::task_host_app::{Host, Sdk, app_copy};

/// Waits until no process of the host on `app` is left, up to 30 s.
async fn no_worker_outlives_its_supervisor(app: &Path) {
    let script = app.join(".kiln/kiln-task-host.mjs").to_string_lossy().into_owned();
    let gone_by = Instant::now() + Duration::from_secs(30);
    loop {
        let left = Command::new("pgrep").args(["-f", &script]).output().expect("pgrep");
        if left.stdout.is_empty() {
            return;
        }
        assert!(
            Instant::now() < gone_by,
            "worker children outlived their supervisor: {}",
            String::from_utf8_lossy(&left.stdout)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_end(kiln: &Kiln, host: &Host, run_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let run = kiln.retrieve(run_id).await;
        if run["isCompleted"] == true || run["status"] == "FAILED" || run["status"] == "TIMED_OUT" {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "run {run_id} never ended: {run}\nhost log:\n{}",
            host.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_apps_own_task_files_run_on_kiln_through_the_host_on_sdk_4_1() {
    every_feature_runs(Sdk::Own).await;
}

#[tokio::test]
async fn an_apps_own_task_files_run_on_kiln_through_the_host_on_sdk_3_3() {
    every_feature_runs(Sdk::V3).await;
}

#[tokio::test]
async fn an_apps_own_task_files_run_on_kiln_through_the_host_on_the_latest_sdk() {
    every_feature_runs(Sdk::Latest).await;
}

/// A local HTTP server answering each request with the next of
/// `statuses` (the last one from then on), and a JSON body; counts what it
/// was asked.
async fn answering(statuses: Vec<u16>) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&asked);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let status = statuses.get(n).or(statuses.last()).copied().unwrap_or(200);
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut request = vec![0u8; 16 * 1024];
                let _ = socket.read(&mut request).await;
                let body = format!(r#"{{"answer":{n}}}"#);
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    (url, asked)
}

/// Each feature task of the sample project, through the host on `sdk`.
async fn every_feature_runs(sdk: Sdk) {
    let mut kiln = Kiln::dev().await;
    let db = kiln.db().await;
    // The app's own database and mail service, for the e-mail task.
    sqlx::raw_sql(
        r#"CREATE TABLE "Team" (id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL, "trialEndedNotifiedAt" TIMESTAMPTZ);
           INSERT INTO "Team" (id, name, email) VALUES ('team_1', 'Acme', 'owner@acme.test')"#,
    )
    .execute(&db)
    .await
    .expect("the app's table");
    let (mail_url, mails) = answering(vec![503]).await;
    let (flaky_url, flaky_asked) = answering(vec![500, 500, 200]).await;
    let app = app_copy("task-host-features", sdk);
    let host = Host::start_with(
        &kiln,
        &app,
        4,
        &[
            ("APP_DATABASE_URL", kiln.database_url.clone()),
            ("APP_MAIL_URL", mail_url),
        ],
    )
    .await;

    let (status, tasks) = kiln
        .call_as(reqwest::Method::GET, "/api/v1/tasks", &kiln.key, None)
        .await;
    assert_eq!(status, 200);
    let hosted: Vec<&str> = tasks["tasks"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|t| t["servedBy"] == "host")
                .filter_map(|t| t["id"].as_str())
                .collect()
        })
        .unwrap_or_default();
    for id in [
        "host.hello",
        "host.aborts",
        "host.flaky",
        "host.sleeps",
        "host.slow",
        "host.parent",
        "host.long",
        "host.waits-for-children",
        "host.retry-fetch",
        "host.send-trial-expired-email",
    ] {
        assert!(hosted.contains(&id), "{id} is served by the host: {tasks}");
    }

    let (_, listed) = kiln
        .call_as(reqwest::Method::GET, "/api/v1/schedules", &kiln.key, None)
        .await;
    assert!(
        listed["data"].as_array().is_some_and(|all| all
            .iter()
            .any(|s| s["task"] == "host.nightly" && s["generator"]["expression"] == "0 3 * * *")),
        "the schedules.task cron is kiln's to fire: {listed}"
    );

    let hello = kiln
        .trigger("host.hello", json!({ "payload": { "name": "Ada" } }))
        .await;
    let aborts = kiln.trigger("host.aborts", json!({ "payload": {} })).await;
    let flaky = kiln.trigger("host.flaky", json!({ "payload": {} })).await;
    let sleeps = kiln.trigger("host.sleeps", json!({ "payload": {} })).await;
    let slow = kiln.trigger("host.slow", json!({ "payload": {} })).await;
    let parent = kiln
        .trigger("host.parent", json!({ "payload": { "name": "Grace" } }))
        .await;
    let waits = kiln
        .trigger("host.waits-for-children", json!({ "payload": { "name": "Lin" } }))
        .await;
    let fetches = kiln
        .trigger("host.retry-fetch", json!({ "payload": { "url": flaky_url } }))
        .await;
    let email = kiln
        .trigger(
            "host.send-trial-expired-email",
            json!({ "payload": { "teamId": "team_1" } }),
        )
        .await;
    let large = kiln
        .trigger("host.large-output", json!({ "payload": { "kib": 300 } }))
        .await;

    let run = wait_for_end(&kiln, &host, &hello).await;
    assert_eq!(run["status"], "COMPLETED", "{run}");
    assert_eq!(
        run["output"],
        json!({ "greeting": "Hello, Ada!" }),
        "the path alias resolved"
    );
    assert_eq!(run["metadata"]["progress"], 0.5, "{run}");
    assert_eq!(run["metadata"]["stage"], "greeting");
    // The progress as a realtime subscription (subscribeToRun) reads it.
    let (status, shape) = kiln
        .call_as(
            reqwest::Method::GET,
            &format!("/realtime/v1/runs/{hello}?offset=-1"),
            &kiln.key,
            None,
        )
        .await;
    assert_eq!(status, 200, "{shape}");
    let seen: Vec<Value> = shape
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|message| message["value"]["metadata"].as_str())
        .filter_map(|text| serde_json::from_str(text).ok())
        .collect();
    assert!(
        seen.iter().any(|metadata| metadata["progress"] == 0.5),
        "the realtime feed carries the task's metadata.set: {shape}"
    );
    let (status, logs) = kiln
        .call_as(
            reqwest::Method::GET,
            &format!("/api/v1/runs/{hello}/logs"),
            &kiln.key,
            None,
        )
        .await;
    assert_eq!(status, 200, "{logs}");
    let greeting = logs["logs"]
        .as_array()
        .and_then(|lines| lines.iter().find(|line| line["message"] == "greeting"))
        .unwrap_or_else(|| {
            panic!(
                "logger.info reached the run's logs: {logs}\nhost log:\n{}",
                host.log_text()
            )
        });
    assert_eq!(greeting["level"], "info");
    assert_eq!(greeting["attributes"]["name"], "Ada");

    let run = wait_for_end(&kiln, &host, &aborts).await;
    assert_eq!(run["status"], "FAILED", "{run}");
    assert_eq!(run["attemptCount"], 1, "AbortTaskRunError is not retried: {run}");
    assert_eq!(run["error"]["message"], "the mailbox does not exist");

    let run = wait_for_end(&kiln, &host, &flaky).await;
    assert_eq!(run["status"], "COMPLETED", "{run}");
    assert_eq!(run["attemptCount"], 2, "{run}");
    assert_eq!(run["output"], json!({ "attempt": 2 }));

    let run = wait_for_end(&kiln, &host, &slow).await;
    assert_eq!(run["status"], "TIMED_OUT", "{run}");

    let run = wait_for_end(&kiln, &host, &parent).await;
    assert_eq!(run["status"], "COMPLETED", "{run}");
    let child = run["output"]["child"].as_str().expect("the child's id").to_owned();
    let child_run = wait_for_end(&kiln, &host, &child).await;
    assert_eq!(child_run["output"], json!({ "greeting": "Hello, Grace!" }));
    assert_eq!(child_run["relatedRuns"]["parent"]["id"], parent.as_str(), "{child_run}");

    let run = wait_for_end(&kiln, &host, &waits).await;
    assert_eq!(run["status"], "COMPLETED", "{run}");
    assert_eq!(
        run["output"],
        json!({
            "one": "Hello, Lin!",
            "failed": "the mailbox does not exist",
            "batch": ["Hello, one!", "Hello, two!"],
        }),
        "the parent went on with its children's ends"
    );
    assert_eq!(
        run["relatedRuns"]["children"].as_array().map(Vec::len),
        Some(4),
        "{run}"
    );

    let run = wait_for_end(&kiln, &host, &fetches).await;
    assert_eq!(run["status"], "COMPLETED", "{run}");
    assert_eq!(
        run["output"],
        json!({ "status": 200, "body": { "answer": 2 } }),
        "{run}"
    );
    assert_eq!(flaky_asked.load(Ordering::SeqCst), 3, "two 500s, then the 200");
    assert_eq!(run["attemptCount"], 1, "retry.fetch retried inside one attempt");

    let run = wait_for_end(&kiln, &host, &email).await;
    assert_eq!(run["status"], "COMPLETED", "a mail failure is soft: {run}");
    assert_eq!(run["output"], json!({ "sent": false }));
    assert_eq!(mails.load(Ordering::SeqCst), 1, "the mail service was asked once");
    let notified: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar(r#"SELECT "trialEndedNotifiedAt" FROM "Team" WHERE id = 'team_1'"#)
            .fetch_one(&db)
            .await
            .expect("team");
    assert!(notified.is_some(), "the task wrote the app's database");
    let (_, logs) = kiln
        .call_as(
            reqwest::Method::GET,
            &format!("/api/v1/runs/{email}/logs"),
            &kiln.key,
            None,
        )
        .await;
    assert!(
        logs["logs"].as_array().is_some_and(|lines| lines
            .iter()
            .any(|l| l["level"] == "warn" && l["attributes"]["status"] == 503)),
        "the failure was logged: {logs}"
    );

    let run = wait_for_end(&kiln, &host, &large).await;
    assert_eq!(run["status"], "COMPLETED", "{}", run["error"]);
    assert_eq!(
        run["output"]["text"].as_str().map(str::len),
        Some(300 * 1024),
        "a 300 KiB output came back through its packet"
    );

    let run = wait_for_end(&kiln, &host, &sleeps).await;
    assert_eq!(run["status"], "COMPLETED", "{run}");
    let waited = run["output"]["waitedMs"].as_u64().unwrap_or(0);
    assert!(waited >= 8_000, "wait.for waited {waited} ms");

    // Its worker children, reused and idle now, go when it is SIGKILLed.
    let mut host = host;
    let _ = host.child.kill();
    let _ = host.child.wait();
    no_worker_outlives_its_supervisor(&app).await;
}

#[tokio::test]
async fn a_killed_host_loses_no_run_and_a_stopped_one_finishes_its_own() {
    let mut kiln = Kiln::dev().await;
    let app = app_copy("task-host-faults", Sdk::Own);
    let mut host = Host::start(&kiln, &app, 2).await;

    // kiln no longer knows the host where its key works (as after a
    // database restore): the host registers again, and its tasks run on.
    let db = kiln.db().await;
    sqlx::query("UPDATE task_hosts SET environment = 'prod'")
        .execute(&db)
        .await
        .expect("forget the host");
    let again = kiln.trigger("host.long", json!({ "payload": { "ms": 10 } })).await;
    let run = wait_for_end(&kiln, &host, &again).await;
    assert_eq!(run["status"], "COMPLETED", "{run}");
    assert!(host.log_text().contains("registering again"), "{}", host.log_text());

    // SIGKILL mid-run: the run comes back after its lease, on a new host.
    let lost = kiln.trigger("host.long", json!({ "payload": { "ms": 3_000 } })).await;
    kiln.wait_for_status(&lost, "EXECUTING", Duration::from_secs(60)).await;
    // SIGKILL to the host's supervisor: its worker children go with it,
    // the one running the attempt too, rather than lingering.
    let _ = host.child.kill();
    let _ = host.child.wait();
    no_worker_outlives_its_supervisor(&app).await;
    let host = Host::start(&kiln, &app, 2).await;
    let run = wait_for_end(&kiln, &host, &lost).await;
    assert_eq!(run["status"], "COMPLETED", "{run}");
    assert_eq!(run["attemptCount"], 2, "{run}");

    // Canceled runs give their slots back, even from a task that ignores
    // the SDK's cancel signal: both slots are taken, both runs canceled,
    // and a third run still gets to run.
    let mut canceled = Vec::new();
    for _ in 0..2 {
        canceled.push(kiln.trigger("host.long", json!({ "payload": { "ms": 600_000 } })).await);
    }
    for id in &canceled {
        kiln.wait_for_status(id, "EXECUTING", Duration::from_secs(60)).await;
        let response = kiln.post(&format!("/api/v2/runs/{id}/cancel"), &json!({})).await;
        assert_eq!(response.status(), 200);
    }
    let after = kiln.trigger("host.long", json!({ "payload": { "ms": 10 } })).await;
    let run = wait_for_end(&kiln, &host, &after).await;
    assert_eq!(run["status"], "COMPLETED", "{run}");
    for id in &canceled {
        assert_eq!(kiln.retrieve(id).await["status"], "CANCELED");
    }

    // SIGTERM: running attempts finish and are recorded; nothing is left
    // EXECUTING.
    let draining: Vec<String> = {
        let mut ids = Vec::new();
        for _ in 0..2 {
            ids.push(kiln.trigger("host.long", json!({ "payload": { "ms": 4_000 } })).await);
        }
        ids
    };
    for id in &draining {
        kiln.wait_for_status(id, "EXECUTING", Duration::from_secs(60)).await;
    }
    host.terminate();
    for id in &draining {
        let run = wait_for_end(&kiln, &host, id).await;
        assert_eq!(run["status"], "COMPLETED", "{run}");
        assert_eq!(run["attemptCount"], 1, "finished by the stopping host: {run}");
    }
}

#[test]
fn the_host_command_names_what_is_missing_and_prints_its_script() {
    let app = temp_dir("task-host-cli");
    let run = |env: &[(&str, &str)]| {
        let output = Command::new(kiln_bin())
            .args(["task-host", "--app"])
            .arg(&app)
            .env_remove("TRIGGER_API_URL")
            .env_remove("TRIGGER_SECRET_KEY")
            .envs(env.iter().copied())
            .output()
            .expect("kiln task-host");
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    assert!(run(&[]).contains("TRIGGER_API_URL"));
    let both = [
        ("TRIGGER_API_URL", "http://127.0.0.1:1"),
        ("TRIGGER_SECRET_KEY", "tr_dev_x"),
    ];
    let said = run(&[both[0], both[1], ("KILN_HOST_SLOTS", "0")]);
    assert!(said.contains("KILN_HOST_SLOTS"), "{said}");
    let said = run(&[both[0], both[1], ("KILN_HOST_GRACE_SECS", "soon")]);
    assert!(said.contains("KILN_HOST_GRACE_SECS"), "{said}");
    // An app without the SDK: the host itself says so, naming the folder.
    let said = run(&both);
    assert!(said.contains("no @trigger.dev/sdk"), "{said}");

    let printed = Command::new(kiln_bin())
        .args(["task-host", "--print-script"])
        .output()
        .expect("kiln task-host --print-script");
    assert!(printed.status.success());
    let script = String::from_utf8_lossy(&printed.stdout);
    assert!(
        script.starts_with("// kiln's task host"),
        "{}",
        &script[..80.min(script.len())]
    );
    assert!(script.contains("/worker/v1/claim"));
}
