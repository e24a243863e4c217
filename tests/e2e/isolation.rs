//! Environments cannot touch each other: a dev key neither changes a prod
//! queue's limit nor takes its slots, and no trigger changes a limit the
//! operator declared or sets one that would hold a queue for good.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Kiln, Mode, kiln_bin, temp_dir};

/// A key of `environment` for `kiln`'s database.
async fn trigger_as(kiln: &Kiln, key: &str, task: &str, body: Value) -> (u16, Value) {
    let response = kiln
        .http
        .post(kiln.url(&format!("/api/v1/tasks/{task}/trigger")))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("trigger");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn status_as(kiln: &Kiln, key: &str, id: &str) -> Value {
    kiln.http
        .get(kiln.url(&format!("/api/v3/runs/{id}")))
        .bearer_auth(key)
        .send()
        .await
        .expect("retrieve")
        .json()
        .await
        .expect("json")
}

#[tokio::test]
async fn a_dev_key_cannot_change_or_fill_a_prod_queue() {
    let dir = temp_dir("isolation");
    let tasks_file = dir.join("tasks.toml");
    std::fs::write(&tasks_file, "[queues.\"declared\"]\nconcurrency_limit = 1\n").expect("tasks file");
    let mut kiln = Kiln::builder(Mode::Dev)
        .env("KILN_TASKS_FILE", tasks_file.to_string_lossy())
        .spawn()
        .await;
    let (dev, prod) = (kiln.key.clone(), kiln.new_key("prod"));

    // A limit that would hold a queue for good is refused.
    let (status, answer) = trigger_as(
        &kiln,
        &dev,
        "kiln.noop",
        json!({ "payload": {}, "options": { "queue": { "name": "task/kiln.noop", "concurrencyLimit": 0 } } }),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("queue.concurrencyLimit")),
        "{answer}"
    );

    // A declared limit stays what the operator declared.
    let (status, _) = trigger_as(
        &kiln,
        &dev,
        "kiln.noop",
        json!({ "payload": {}, "options": { "queue": { "name": "declared", "concurrencyLimit": 50 } } }),
    )
    .await;
    assert_eq!(status, 200);
    let db = kiln.db().await;
    let limits: Vec<(String, String, Option<i32>)> =
        sqlx::query_as("SELECT environment, name, concurrency_limit FROM queues ORDER BY environment, name")
            .fetch_all(&db)
            .await
            .expect("queues");
    assert!(
        limits.contains(&("dev".into(), "declared".into(), Some(1))),
        "{limits:?}"
    );
    assert!(
        limits.contains(&("prod".into(), "declared".into(), Some(1))),
        "{limits:?}"
    );

    // A dev run holding the only slot of dev's "shared" queue leaves
    // prod's "shared" queue free.
    let one_slot = |ms: u64| json!({ "payload": { "ms": ms }, "options": { "queue": { "name": "shared", "concurrencyLimit": 1 } } });
    let (status, held) = trigger_as(&kiln, &dev, "kiln.sleep", one_slot(60_000)).await;
    assert_eq!(status, 200);
    let held = held["id"].as_str().expect("id").to_owned();
    kiln.wait_for_status(&held, "EXECUTING", Duration::from_secs(30)).await;
    let (status, quick) = trigger_as(&kiln, &prod, "kiln.sleep", one_slot(10)).await;
    assert_eq!(status, 200);
    let quick = quick["id"].as_str().expect("id").to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let run = status_as(&kiln, &prod, &quick).await;
        if run["status"] == "COMPLETED" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "prod's run waits behind dev's: {run}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        kiln.retrieve(&held).await["status"],
        "EXECUTING",
        "dev's run still holds dev's slot"
    );
    // A second dev run does wait for dev's slot.
    let (_, waiting) = trigger_as(&kiln, &dev, "kiln.sleep", one_slot(10)).await;
    let waiting = waiting["id"].as_str().expect("id").to_owned();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(kiln.retrieve(&waiting).await["status"], "QUEUED");
    let canceled = kiln.post(&format!("/api/v2/runs/{held}/cancel"), &json!({})).await;
    assert!(canceled.status().is_success());
    kiln.wait_for_status(&waiting, "COMPLETED", Duration::from_secs(30))
        .await;
}

/// Redis keeps a list per environment's queue: a dev backlog that fills
/// its window neither keeps a prod run of the same queue out of Redis nor
/// runs in front of it.
#[tokio::test]
async fn a_dev_backlog_in_redis_does_not_stand_in_front_of_a_prod_run() {
    let mut kiln = Kiln::builder(Mode::Serve).env("KILN_QUEUE_WINDOW", "5").spawn().await;
    let (dev, prod) = (kiln.key.clone(), kiln.new_key("prod"));
    for n in 0..20 {
        let (status, _) = trigger_as(&kiln, &dev, "kiln.noop", json!({ "payload": { "n": n } })).await;
        assert_eq!(status, 200);
    }
    let (status, answer) = trigger_as(&kiln, &prod, "kiln.noop", json!({ "payload": {} })).await;
    assert_eq!(status, 200, "{answer}");
    let prod_run = answer["id"].as_str().expect("id").to_owned();

    let mut redis = redis::Client::open(crate::helpers::redis_url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let lane = |environment: &str| format!("{}:queue:{environment}:task/kiln.noop", kiln.redis_prefix);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let dev_length: u64 = redis::cmd("LLEN")
            .arg(lane("dev"))
            .query_async(&mut redis)
            .await
            .expect("llen");
        let prod_length: u64 = redis::cmd("LLEN")
            .arg(lane("prod"))
            .query_async(&mut redis)
            .await
            .expect("llen");
        if (dev_length, prod_length) == (5, 1) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dev's lane holds {dev_length} (its window is 5), prod's {prod_length}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // One run at a time: lanes take turns, so at most one dev run starts
    // before prod's.
    let _worker = kiln.spawn_worker(&[("KILN_WORKER_CONCURRENCY", "1")]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while status_as(&kiln, &prod, &prod_run).await["status"] != "COMPLETED" {
        assert!(std::time::Instant::now() < deadline, "prod's run never completed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let db = kiln.db().await;
    let dev_before: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM runs WHERE environment = 'dev'
           AND started_at < (SELECT started_at FROM runs WHERE id = $1)",
    )
    .bind(&prod_run)
    .fetch_one(&db)
    .await
    .expect("count");
    assert!(dev_before <= 1, "{dev_before} dev runs started before prod's");
}

/// With the default roots (dev under `dev/`, prod at the top), a key of one
/// environment can neither read, overwrite nor delete the other's objects,
/// nor kiln's own, and is not told whether they exist.
#[tokio::test]
async fn a_dev_key_cannot_reach_prod_objects_or_kilns_own() {
    let dir = temp_dir("isolation-objects");
    let kiln = Kiln::builder(Mode::Dev)
        .env("KILN_STORAGE_DIR", dir.to_string_lossy())
        .env("KILN_STORAGE_ROOT_DEV", "dev/")
        .env("KILN_STORAGE_ROOT_PROD", "")
        .spawn()
        .await;
    let (dev, prod) = (kiln.key.clone(), kiln.new_key("prod"));
    crate::helpers::put_object(&dir, "tenant-a/contract.txt", b"prod's contract");
    crate::helpers::put_object(&dir, "_kiln/packets/prod/pending/p.json", b"{\"prodPayload\":1}");
    crate::helpers::put_object(&dir, "dev/notes.txt", b"dev's notes");

    // A dev export names prod's keys: they are dev's keys, which do not
    // exist; kiln's own and prod's root are refused outright.
    for (files, output, expected) in [
        (
            json!([{ "key": "tenant-a/contract.txt" }]),
            "loot.zip",
            "MissingSourceFile",
        ),
        (
            json!([{ "key": "_kiln/packets/prod/pending/p.json" }]),
            "loot.zip",
            "InvalidPayload",
        ),
        (
            json!([{ "key": "notes.txt" }]),
            "_kiln/packets/prod/pending/p.json",
            "InvalidPayload",
        ),
    ] {
        let (status, answer) = trigger_as(
            &kiln,
            &dev,
            "kiln.export.zip",
            json!({ "payload": { "files": files, "output": { "key": output } } }),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        let id = answer["id"].as_str().expect("id").to_owned();
        let run = kiln
            .wait_for(&id, Duration::from_secs(30), |r| r["isCompleted"] == true)
            .await;
        assert_eq!(run["status"], "FAILED", "{run}");
        assert_eq!(run["error"]["name"], expected, "{run}");
        let message = run["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.contains("prod's"), "{message}");
    }
    // A dev export of dev's own file lands in dev's part.
    let (_, answer) = trigger_as(
        &kiln,
        &dev,
        "kiln.export.zip",
        json!({ "payload": { "files": [{ "key": "notes.txt" }], "output": { "key": "tenant-a/contract.txt" } } }),
    )
    .await;
    let id = answer["id"].as_str().expect("id").to_owned();
    let run = kiln.wait_for_status(&id, "COMPLETED", Duration::from_secs(30)).await;
    assert_eq!(run["output"]["key"], "tenant-a/contract.txt", "{run}");
    assert!(dir.join("dev/tenant-a/contract.txt").is_file(), "written in dev's part");
    assert_eq!(
        std::fs::read(dir.join("tenant-a/contract.txt")).expect("prod's object"),
        b"prod's contract",
        "prod's object is untouched"
    );
    assert_eq!(
        std::fs::read(dir.join("_kiln/packets/prod/pending/p.json")).expect("packet"),
        b"{\"prodPayload\":1}"
    );

    // A prod key cannot reach into dev's part either.
    let (_, answer) = trigger_as(
        &kiln,
        &prod,
        "kiln.export.zip",
        json!({ "payload": { "files": [{ "key": "dev/notes.txt" }], "output": { "key": "prod-copy.zip" } } }),
    )
    .await;
    let id = answer["id"].as_str().expect("id").to_owned();
    let run = {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let run = status_as(&kiln, &prod, &id).await;
            if run["isCompleted"] == true {
                break run;
            }
            assert!(std::time::Instant::now() < deadline, "{run}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert_eq!(run["status"], "FAILED", "{run}");
    assert_eq!(run["error"]["name"], "InvalidPayload");
}

/// A revoked key stops working within the key cache's lifetime, and so do
/// the public tokens it signed; `kiln keys list` shows it revoked.
#[tokio::test]
async fn a_revoked_key_and_its_tokens_are_refused() {
    let kiln = Kiln::builder(Mode::Serve)
        .env("KILN_KEY_CACHE_TTL", "200ms")
        .spawn()
        .await;
    let prod = kiln.new_key("prod");
    let cli = |args: &[&str]| {
        let output = Command::new(kiln_bin())
            .args(args)
            .envs(kiln.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("kiln keys");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let runs = |key: String| {
        let request = kiln.http.get(kiln.url("/api/v1/runs")).bearer_auth(key).send();
        async move { request.await.expect("list").status().as_u16() }
    };
    assert_eq!(runs(prod.clone()).await, 200);
    let token: Value = kiln
        .http
        .post(kiln.url("/api/v1/auth/jwt/claims"))
        .bearer_auth(&prod)
        .send()
        .await
        .expect("claims")
        .json()
        .await
        .expect("json");
    let key_id = token["sub"].as_str().expect("sub").to_owned();
    // A public token as the SDK signs it with that key.
    let public = kiln_core::auth::sign_jwt(
        prod.as_bytes(),
        &json!({
            "sub": key_id, "pub": true, "scopes": ["read:all"],
            "iss": kiln_core::auth::JWT_ISSUER, "aud": kiln_core::auth::JWT_AUDIENCE,
            "exp": chrono::Utc::now().timestamp() + 900,
        }),
    );
    // Listing needs a secret key: 403 says the token itself was accepted.
    assert_eq!(runs(public.clone()).await, 403);

    let (ok, listed) = cli(&["keys", "list"]);
    assert!(
        ok && listed.lines().any(|l| l.starts_with(&key_id) && l.ends_with("live")),
        "{listed}"
    );
    let (ok, said) = cli(&["keys", "revoke", &key_id]);
    assert!(ok, "{said}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while runs(prod.clone()).await != 401 {
        assert!(std::time::Instant::now() < deadline, "the revoked key still works");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (ok, listed) = cli(&["keys", "list"]);
    assert!(
        ok && listed.lines().any(|l| l.starts_with(&key_id) && l.contains("revoked")),
        "{listed}"
    );
    let (ok, _) = cli(&["keys", "revoke", &key_id]);
    assert!(!ok, "a key is revoked once");
    // The dev key made with the kiln is untouched.
    assert_eq!(runs(kiln.key.clone()).await, 200);
}

/// Every route that names a run, a batch or a schedule, called with a dev
/// key on prod's: each answers as for one that does not exist, and prod's
/// things are unchanged afterwards.
#[tokio::test]
async fn a_dev_key_finds_nothing_of_prods_through_any_route() {
    let kiln = Kiln::builder(Mode::Serve).spawn().await;
    let (dev, prod) = (kiln.key.clone(), kiln.new_key("prod"));
    let call = |method: reqwest::Method, path: String, key: String, body: Option<Value>| {
        let mut request = kiln.http.request(method, kiln.url(&path)).bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.expect("request");
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        }
    };
    use reqwest::Method;
    // Prod's things: a delayed run, a batch, a schedule.
    let (_, run) = trigger_as(
        &kiln,
        &prod,
        "kiln.noop",
        json!({ "payload": { "secret": "prod-payload" }, "options": { "delay": "1h", "tags": ["prod-tag"] } }),
    )
    .await;
    let run_id = run["id"].as_str().expect("run id").to_owned();
    let (status, batch) = call(
        Method::POST,
        "/api/v1/tasks/batch".into(),
        prod.clone(),
        Some(json!({ "items": [{ "task": "kiln.noop", "payload": {}, "options": { "delay": "1h" } }] })),
    )
    .await;
    assert_eq!(status, 200, "{batch}");
    let batch: Value = serde_json::from_str(&batch).expect("json");
    let batch_id = batch["id"].as_str().expect("batch id").to_owned();
    let (status, schedule) = call(
        Method::POST,
        "/api/v1/schedules".into(),
        prod.clone(),
        Some(json!({ "task": "kiln.noop", "cron": "0 3 * * *", "externalId": "prod-schedule" })),
    )
    .await;
    assert_eq!(status, 200, "{schedule}");
    let schedule: Value = serde_json::from_str(&schedule).expect("json");
    let schedule_id = schedule["id"].as_str().expect("schedule id").to_owned();

    let attempts: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/api/v3/runs/{run_id}"), None),
        (Method::POST, format!("/api/v2/runs/{run_id}/cancel"), None),
        (Method::POST, format!("/api/v1/runs/{run_id}/replay"), None),
        (
            Method::POST,
            format!("/api/v1/runs/{run_id}/reschedule"),
            Some(json!({ "delay": "2h" })),
        ),
        (
            Method::POST,
            format!("/api/v1/runs/{run_id}/tags"),
            Some(json!({ "tags": ["dev-tag"] })),
        ),
        (Method::GET, format!("/realtime/v1/runs/{run_id}"), None),
        (
            Method::PUT,
            format!("/api/v1/runs/{run_id}/metadata"),
            Some(json!({ "operations": [{ "type": "set", "key": "owner", "value": "dev" }] })),
        ),
        (Method::GET, format!("/api/v1/runs/{run_id}/metadata"), None),
        (Method::GET, format!("/api/v1/runs/{run_id}/logs"), None),
        (
            Method::POST,
            format!("/engine/v1/runs/{run_id}/wait/duration"),
            Some(json!({ "date": "2030-01-01T00:00:00.000Z" })),
        ),
        (Method::GET, format!("/api/v1/batches/{batch_id}"), None),
        (Method::GET, format!("/api/v2/batches/{batch_id}"), None),
        (Method::GET, format!("/api/v1/schedules/{schedule_id}"), None),
        (
            Method::PUT,
            format!("/api/v1/schedules/{schedule_id}"),
            Some(json!({ "task": "kiln.noop", "cron": "* * * * *" })),
        ),
        (
            Method::POST,
            format!("/api/v1/schedules/{schedule_id}/deactivate"),
            None,
        ),
        (Method::POST, format!("/api/v1/schedules/{schedule_id}/activate"), None),
        (Method::DELETE, format!("/api/v1/schedules/{schedule_id}"), None),
    ];
    for (method, path, body) in attempts {
        let (status, text) = call(method.clone(), path.clone(), dev.clone(), body).await;
        assert_eq!(status, 404, "{method} {path} with a dev key: {text}");
        assert!(
            !text.contains("prod-payload") && !text.contains("prod-schedule"),
            "{method} {path}: {text}"
        );
    }
    // A log line a dev key sends for prod's run is not kept.
    let line = json!({ "resourceLogs": [{ "scopeLogs": [{ "logRecords": [{
        "severityNumber": 9, "body": { "stringValue": "from dev" },
        "attributes": [{ "key": "$metadata.ctx.run.id", "value": { "stringValue": run_id } }] }] }] }] });
    let (status, _) = call(Method::POST, "/otel/v1/logs".into(), dev.clone(), Some(line)).await;
    assert_eq!(status, 200);
    let (_, logs) = call(Method::GET, format!("/api/v1/runs/{run_id}/logs"), prod.clone(), None).await;
    assert!(!logs.contains("from dev"), "{logs}");
    // Lists and tag subscriptions do not show prod's either.
    for path in ["/api/v1/runs", "/api/v1/schedules", "/realtime/v1/runs?tags=prod-tag"] {
        let (_, text) = call(Method::GET, path.into(), dev.clone(), None).await;
        assert!(
            !text.contains(&run_id) && !text.contains(&schedule_id),
            "{path}: {text}"
        );
    }
    // Prod's things are as they were.
    let (_, text) = call(Method::GET, format!("/api/v3/runs/{run_id}"), prod.clone(), None).await;
    let run: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(run["status"], "DELAYED");
    assert_eq!(run["tags"], json!(["prod-tag"]));
    let (_, text) = call(
        Method::GET,
        format!("/api/v1/schedules/{schedule_id}"),
        prod.clone(),
        None,
    )
    .await;
    let schedule: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(schedule["generator"]["expression"], "0 3 * * *");
    assert_eq!(schedule["active"], true);
}

/// A key Postgres did not know is refused again for a few seconds without
/// asking it: a client repeating a bad key costs no query. Shown with
/// Postgres cut off, where asking would answer 503.
#[tokio::test]
async fn a_repeated_unknown_key_is_refused_without_asking_postgres() {
    let proxy = crate::helpers::TcpProxy::start("127.0.0.1:5432").await;
    let kiln = Kiln::builder(Mode::Serve).postgres_port(proxy.port).spawn().await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let status = |key: &'static str| {
        let request = http.get(kiln.url("/api/v1/runs")).bearer_auth(key).send();
        async move { request.await.expect("list").status().as_u16() }
    };
    // Well-formed keys (24 characters after the prefix) kiln never issued.
    let unknown = "tr_prod_AAAAAAAAAAAAAAAAAAAAAAAA";
    assert_eq!(status(unknown).await, 401);
    proxy.cut();
    assert_eq!(status(unknown).await, 401, "answered from memory");
    assert_eq!(
        status("tr_prod_BBBBBBBBBBBBBBBBBBBBBBBB").await,
        503,
        "a key not seen before needs Postgres"
    );
    proxy.restore();
}

/// The worker is not dumpable: a process of the worker's own user (which a
/// document process that escaped its containment would be) cannot read the
/// worker's environment, and with it the database URL and the secret, from
/// `/proc`. The worker runs as `nobody` here, as it would in a container:
/// a root worker is out of reach of any process without capabilities
/// anyway.
#[tokio::test]
async fn a_process_of_the_workers_own_user_cannot_read_its_secrets_from_proc() {
    let kiln = Kiln::builder(Mode::Serve).spawn().await;
    let as_nobody = ["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"];
    let wrapper: Vec<&str> = std::iter::once("setpriv").chain(as_nobody).collect();
    let worker = kiln.spawn_worker_through(&wrapper, &[("KILN_OFFICE_WARM_UP", "false")]);
    let log_path = worker.log_path.clone();
    // The containment probe logs after the worker made itself non-dumpable.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log_path).is_ok_and(|log| log.contains("document processes start contained")) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker did not start: {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let read = Command::new("setpriv")
        .args(as_nobody)
        .arg("cat")
        .arg(format!("/proc/{}/environ", worker.child.id()))
        .output()
        .expect("setpriv");
    let seen = String::from_utf8_lossy(&read.stdout);
    assert!(
        !read.status.success() && !seen.contains("DATABASE_URL"),
        "a process of the worker's user read its environment: {seen}"
    );
}

/// One key cannot hold an unbounded number of live realtime requests open
/// (each reads Postgres while it waits): past KILN_REALTIME_MAX_PER_KEY the
/// next is answered 429 with a JSON reason, and a place frees when a
/// subscriber goes away.
#[tokio::test]
async fn live_realtime_requests_past_the_per_key_cap_are_refused_until_one_closes() {
    // No worker: the run stays QUEUED, so live requests wait for a change.
    let kiln = Kiln::builder(Mode::Serve)
        .env("KILN_REALTIME_MAX_PER_KEY", "2")
        .spawn()
        .await;
    let run_id = kiln.trigger("kiln.noop", json!({ "payload": {} })).await;
    let first = kiln
        .http
        .get(kiln.url(&format!("/realtime/v1/runs/{run_id}?offset=-1")))
        .bearer_auth(&kiln.key)
        .send()
        .await
        .expect("first read");
    let offset = first.headers()["electric-offset"].to_str().expect("offset").to_owned();
    let live_url = kiln.url(&format!("/realtime/v1/runs/{run_id}?live=true&offset={offset}"));
    let live = || kiln.http.get(&live_url).bearer_auth(&kiln.key).send();

    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(tokio::spawn(live()));
    }
    // The two are held open; a third waits its turn or is refused.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let refused = loop {
        let third = tokio::time::timeout(Duration::from_millis(500), live()).await;
        if let Ok(Ok(answer)) = third
            && answer.status() == 429
        {
            break answer;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a third live request was never refused"
        );
    };
    let reason: Value = refused.json().await.expect("a JSON error");
    assert!(reason.to_string().contains("KILN_REALTIME_MAX_PER_KEY"), "{reason}");
    // A subscriber goes away: its place is free again.
    held.pop().expect("held").abort();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match tokio::time::timeout(Duration::from_millis(500), live()).await {
            // Still waiting for a change: it was let in.
            Err(_) => break,
            Ok(Ok(answer)) if answer.status() != 429 => break,
            _ => assert!(
                tokio::time::Instant::now() < deadline,
                "the place of a closed subscription was never freed"
            ),
        }
    }
}
