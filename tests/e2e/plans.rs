//! kiln plans its per-run statements and the scheduler's look-ups once per
//! connection (see docs/architecture.md, "Plans"), often while `runs` is
//! empty. Those plans must still find runs through an index when the
//! history has grown behind them: a plan that reads the whole table costs
//! nothing on an empty one and a full pass on each execution later.
//!
//! Postgres counts the tuples each table gives out (pg_stat_user_tables);
//! a backend's counts are published at the latest when it exits, so the
//! test stops kiln before it reads them.

use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;

use crate::helpers::{Kiln, Mode, noop_body};

const HISTORY: i64 = 20_000;

/// Rows `runs` has given out to scans of any kind since the database was
/// made.
async fn tuples_read(db: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT (COALESCE(seq_tup_read, 0) + COALESCE(idx_tup_fetch, 0))::int8
         FROM pg_stat_user_tables WHERE relname = 'runs'",
    )
    .fetch_one(db)
    .await
    .expect("read table statistics")
}

/// Waits until no other session is connected to this database: kiln's
/// backends have exited and published their counts.
async fn wait_for_kiln_to_disconnect(db: &PgPool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let others: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()
               AND application_name NOT LIKE 'kiln-test%'",
        )
        .fetch_one(db)
        .await
        .expect("read sessions");
        if others == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{others} sessions still connected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// HISTORY completed prod runs of kiln.noop, with ids `<prefix>00000001`…
async fn insert_finished_runs(db: &PgPool, prefix: &str) {
    sqlx::query(
        "INSERT INTO runs (id, environment, task_identifier, queue, status, payload, payload_type,
             max_attempts, attempt_count, created_at, updated_at, started_at, completed_at)
         SELECT $1 || lpad(i::text, 8, '0'), 'prod', 'kiln.noop', 'task/kiln.noop',
             'COMPLETED', '{}'::jsonb, 'application/json', 1, 1, now(), now(), now(), now()
         FROM generate_series(1, $2) AS i",
    )
    .bind(prefix)
    .bind(HISTORY)
    .execute(db)
    .await
    .expect("insert a history of finished runs");
}

/// `GET /api/v1/runs?{query}` with `key`: the ids listed and the
/// pagination.
async fn list_runs(kiln: &Kiln, key: &str, query: String) -> (Vec<String>, serde_json::Value) {
    let (status, page) = kiln
        .call_as(reqwest::Method::GET, &format!("/api/v1/runs?{query}"), key, None)
        .await;
    assert_eq!(status, 200, "{page}");
    let ids: Vec<String> = page["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|run| run["id"].as_str().map(str::to_owned))
        .collect();
    (ids, page["pagination"].clone())
}

/// The test's own connection, named so that waiting for kiln's sessions
/// to end does not wait for it.
async fn test_connection(kiln: &Kiln) -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(
            kiln.database_url
                .parse::<sqlx::postgres::PgConnectOptions>()
                .expect("database url")
                .application_name("kiln-test"),
        )
        .await
        .expect("connect to the test database")
}

/// Starts a worker that plans its statements while `runs` looks empty
/// (statistics say so) and has run one of them; answers the test's own
/// connection, which it names, so that waiting for kiln's sessions to end
/// does not wait for it, and the worker.
async fn plan_on_an_empty_table(kiln: &Kiln) -> (PgPool, crate::helpers::Process) {
    let db = test_connection(kiln).await;
    sqlx::query("VACUUM ANALYZE runs").execute(&db).await.expect("vacuum");
    let worker = kiln.spawn_worker(&[]);
    let first = kiln.trigger("kiln.noop", noop_body(json!({ "first": true }))).await;
    kiln.wait_for_status(&first, "COMPLETED", Duration::from_secs(20)).await;
    (db, worker)
}

#[tokio::test]
async fn statements_planned_on_an_empty_table_do_not_scan_a_grown_history() {
    let kiln = Kiln::builder(Mode::Serve).spawn().await;
    let (db, worker) = plan_on_an_empty_table(&kiln).await;

    // A history grows that no plan has seen.
    insert_finished_runs(&db, "run_history").await;

    // A delayed run is pushed by a scheduler tick once its delay is over:
    // by the time it completes, the schedulers have looked a few times.
    let mut ids = vec![
        kiln.trigger("kiln.noop", json!({ "payload": {}, "options": { "delay": "1s" } }))
            .await,
    ];
    for i in 0..20 {
        ids.push(kiln.trigger("kiln.noop", noop_body(json!({ "i": i }))).await);
    }
    for id in &ids {
        kiln.wait_for_status(id, "COMPLETED", Duration::from_secs(20)).await;
    }
    drop(worker);
    drop(kiln);
    wait_for_kiln_to_disconnect(&db).await;

    // Each of those runs and each scheduler tick (ten a second, in two
    // processes, for over a second) reads a few rows by index; a single
    // pass over the history would read HISTORY.
    let read = tuples_read(&db).await;
    assert!(
        read < HISTORY,
        "runs gave out {read} tuples to scans while kiln ran 22 runs over a history of {HISTORY}"
    );
}

/// The same for a backlog of queued runs: statements that find runs by id
/// and check that they are still queued (a worker reading what it popped,
/// a refused push marked for later) must not walk the partial indexes of
/// queued runs, which a plan made on an empty table finds cheapest. With
/// such plans, each claim and each mark read the whole backlog, and a
/// backlog of 50,000 runs from batch triggers drained at a tenth of the
/// rate of single triggers.
#[tokio::test]
async fn statements_planned_on_an_empty_table_do_not_scan_a_grown_backlog() {
    // A window of 5 ids: most pushes are refused, and marked for later.
    let kiln = Kiln::builder(Mode::Serve).env("KILN_QUEUE_WINDOW", "5").spawn().await;
    let (db, worker) = plan_on_an_empty_table(&kiln).await;

    // A backlog no plan has seen: queued in prod and taken for a push (the
    // stale-push sweep would look at them only after 30 s).
    sqlx::query(
        "INSERT INTO runs (id, environment, task_identifier, queue, status, payload, payload_type,
             max_attempts, created_at, updated_at, enqueued_at)
         SELECT format('run_backlog%s', lpad(i::text, 8, '0')), 'prod', 'kiln.noop', 'task/kiln.noop',
             'QUEUED', '{}'::jsonb, 'application/json', 1, now(), now(), now()
         FROM generate_series(1, $1) AS i",
    )
    .bind(HISTORY)
    .execute(&db)
    .await
    .expect("insert the backlog");

    let ids: Vec<String> =
        futures::future::join_all((0..40).map(|i| kiln.trigger("kiln.noop", noop_body(json!({ "i": i }))))).await;
    for id in &ids {
        kiln.wait_for_status(id, "COMPLETED", Duration::from_secs(60)).await;
    }
    drop(worker);
    drop(kiln);
    wait_for_kiln_to_disconnect(&db).await;

    let read = tuples_read(&db).await;
    assert!(
        read < HISTORY,
        "runs gave out {read} tuples to scans while kiln ran 41 runs beside a backlog of {HISTORY}"
    );
}

/// Listing by tag pages through the tag's own runs: a tag whose runs are
/// all older than a large untagged history must not make each listing
/// read that history. Walking `runs` newest first and checking each run
/// for the tag did: at ten million runs, a listing by tag and status took
/// 150–400 ms (p99) instead of 6.
#[tokio::test]
async fn listing_by_tag_reads_the_tags_runs_not_the_newer_history() {
    const TAGGED: i64 = 1_000;
    let kiln = Kiln::builder(Mode::Serve).spawn().await;
    let key = kiln.new_key("prod");
    let db = test_connection(&kiln).await;
    // The tagged runs first (ids sort by creation), then a newer history
    // without the tag.
    sqlx::query(
        "WITH tagged AS (
             INSERT INTO runs (id, environment, task_identifier, queue, status, payload, payload_type,
                 max_attempts, attempt_count, tags, created_at, updated_at, started_at, completed_at)
             SELECT format('run_a_tagged%s', lpad(i::text, 8, '0')), 'prod', 'kiln.noop', 'task/kiln.noop',
                 CASE WHEN i % 10 = 0 THEN 'FAILED' ELSE 'COMPLETED' END, '{}'::jsonb, 'application/json',
                 1, 1, ARRAY['customer-a'], now(), now(), now(), now()
             FROM generate_series(1, $1) AS i
             RETURNING id)
         INSERT INTO run_tags (tag, run_id) SELECT 'customer-a', id FROM tagged",
    )
    .bind(TAGGED)
    .execute(&db)
    .await
    .expect("insert the tagged runs");
    insert_finished_runs(&db, "run_b_history").await;
    sqlx::query("VACUUM ANALYZE runs, run_tags")
        .execute(&db)
        .await
        .expect("analyze");

    let list = |query: String| list_runs(&kiln, &key, query);
    // The completed ones, newest first: every tenth failed.
    let expected: Vec<String> = (1..=TAGGED)
        .rev()
        .filter(|i| i % 10 != 0)
        .map(|i| format!("run_a_tagged{i:08}"))
        .collect();
    let filter = "filter%5Btag%5D=customer-a&filter%5Bstatus%5D=COMPLETED&page%5Bsize%5D=25";
    let (first, pagination) = list(filter.to_owned()).await;
    assert_eq!(first, expected[..25]);
    let next = pagination["next"].as_str().expect("a next page");
    let (second, pagination) = list(format!("{filter}&page%5Bafter%5D={next}")).await;
    assert_eq!(second, expected[25..50]);
    let previous = pagination["previous"].as_str().expect("a previous page");
    let (back, _) = list(format!("{filter}&page%5Bbefore%5D={previous}")).await;
    assert_eq!(back, first);
    // Two tags: the newest of either, each run once.
    let (either, _) = list("filter%5Btag%5D=customer-a,nobody&page%5Bsize%5D=3".to_owned()).await;
    assert_eq!(
        either,
        ["run_a_tagged00001000", "run_a_tagged00000999", "run_a_tagged00000998"]
    );

    drop(kiln);
    wait_for_kiln_to_disconnect(&db).await;
    let read = tuples_read(&db).await;
    assert!(
        read < HISTORY,
        "runs gave out {read} tuples to scans for four listings by tag beside a history of {HISTORY}"
    );
}

#[tokio::test]
async fn listing_by_a_rare_status_reads_those_runs_not_the_newer_history() {
    const CANCELED: i64 = 30;
    let kiln = Kiln::builder(Mode::Serve).spawn().await;
    let key = kiln.new_key("prod");
    let db = test_connection(&kiln).await;
    // A few canceled runs, then a newer history that completed.
    sqlx::query(
        "INSERT INTO runs (id, environment, task_identifier, queue, status, payload, payload_type,
             max_attempts, attempt_count, created_at, updated_at, completed_at)
         SELECT format('run_a_canceled%s', lpad(i::text, 6, '0')), 'prod', 'kiln.noop', 'task/kiln.noop',
             'CANCELED', '{}'::jsonb, 'application/json', 1, 0, now(), now(), now()
         FROM generate_series(1, $1) AS i",
    )
    .bind(CANCELED)
    .execute(&db)
    .await
    .expect("insert the canceled runs");
    insert_finished_runs(&db, "run_b_history").await;
    sqlx::query("VACUUM ANALYZE runs").execute(&db).await.expect("analyze");

    let list = |query: String| list_runs(&kiln, &key, query);
    let expected: Vec<String> = (1..=CANCELED).rev().map(|i| format!("run_a_canceled{i:06}")).collect();
    let filter = "filter%5Bstatus%5D=CANCELED&page%5Bsize%5D=25";
    let (first, pagination) = list(filter.to_owned()).await;
    assert_eq!(first, expected[..25]);
    let next = pagination["next"].as_str().expect("a next page");
    let (second, _) = list(format!("{filter}&page%5Bafter%5D={next}")).await;
    assert_eq!(second, expected[25..]);

    drop(kiln);
    wait_for_kiln_to_disconnect(&db).await;
    let read = tuples_read(&db).await;
    assert!(
        read < HISTORY,
        "runs gave out {read} tuples to scans for two listings of canceled runs beside a history of {HISTORY}"
    );
}
