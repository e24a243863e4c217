//! When a run is recorded EXECUTING: a worker starts a run at once and
//! records it only if it is still going 50 ms later, so a short run goes
//! from QUEUED straight to its outcome; a run redelivered after a worker
//! lost it is recorded before it starts. A trigger on `runs` in the test's
//! own database notes every status change, so the tests read the exact
//! path each run took.

use std::time::Duration;

use kiln_core::RunStatus;
use kiln_core::status::can_move;
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::{Kiln, Mode, noop_body, redis_url};

async fn note_transitions(db: &PgPool) {
    sqlx::raw_sql(
        "CREATE TABLE transitions (seq bigserial PRIMARY KEY, run_id text NOT NULL,
             old_status text NOT NULL, new_status text NOT NULL);
         CREATE FUNCTION note_transition() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF OLD.status IS DISTINCT FROM NEW.status THEN
                 INSERT INTO transitions (run_id, old_status, new_status) VALUES (NEW.id, OLD.status, NEW.status);
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER runs_transitions AFTER UPDATE ON runs FOR EACH ROW EXECUTE FUNCTION note_transition();",
    )
    .execute(db)
    .await
    .expect("install the transitions trigger");
}

async fn path_of(db: &PgPool, run_id: &str) -> Vec<(String, String)> {
    sqlx::query_as("SELECT old_status, new_status FROM transitions WHERE run_id = $1 ORDER BY seq")
        .bind(run_id)
        .fetch_all(db)
        .await
        .expect("read transitions")
}

fn steps(path: &[(&str, &str)]) -> Vec<(String, String)> {
    path.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
}

#[tokio::test]
async fn a_short_run_goes_from_queued_to_completed_and_a_longer_one_is_recorded_executing() {
    let mut kiln = Kiln::builder(Mode::Serve).spawn().await;
    let db = kiln.db().await;
    note_transitions(&db).await;
    let mut short = Vec::new();
    for i in 0..10 {
        short.push(kiln.trigger("kiln.noop", noop_body(json!({ "i": i }))).await);
    }
    let long = kiln.trigger("kiln.sleep", json!({ "payload": { "ms": 400 } })).await;
    let _worker = kiln.spawn_worker(&[]);

    for id in &short {
        let run = kiln.wait_for_status(id, "COMPLETED", Duration::from_secs(20)).await;
        assert_eq!(run["attemptCount"], 1, "{run}");
        let started = run["startedAt"].as_str().expect("startedAt");
        let finished = run["finishedAt"].as_str().expect("finishedAt");
        assert!(started <= finished, "{run}");
        // Straight from QUEUED when it ended within RECORD_AFTER of its
        // start, as a noop does on an idle machine; a loaded machine may
        // stall it past that, and then it is recorded first. Either way
        // each move is one the state machine allows.
        let path = path_of(&db, id).await;
        assert!(
            path == steps(&[("QUEUED", "COMPLETED")])
                || path == steps(&[("QUEUED", "EXECUTING"), ("EXECUTING", "COMPLETED")]),
            "run {id}: {path:?}"
        );
        assert_allowed(&path);
    }
    let run = kiln.wait_for_status(&long, "COMPLETED", Duration::from_secs(20)).await;
    assert_eq!(run["attemptCount"], 1, "{run}");
    // 400 ms is eight times RECORD_AFTER: always recorded.
    assert_eq!(
        path_of(&db, &long).await,
        steps(&[("QUEUED", "EXECUTING"), ("EXECUTING", "COMPLETED")])
    );
}

/// Every move a run made is one `kiln_core::status::TRANSITIONS` (and so
/// `docs/state-machine.md`) allows.
fn assert_allowed(path: &[(String, String)]) {
    for (old, new) in path {
        let (Ok(from), Ok(to)) = (old.parse::<RunStatus>(), new.parse::<RunStatus>()) else {
            panic!("unknown status in {old} -> {new}");
        };
        assert!(can_move(from, to), "{old} -> {new} is not in the state machine");
    }
}

#[tokio::test]
async fn a_run_lost_with_its_worker_is_recorded_executing_before_it_starts_again() {
    let mut kiln = Kiln::builder(Mode::Serve).env("KILN_REQUEUE_AFTER", "1s").spawn().await;
    let db = kiln.db().await;
    note_transitions(&db).await;
    let id = kiln.trigger("kiln.noop", noop_body(json!({ "lost": true }))).await;

    // A worker popped the id and died before recording anything.
    let client = redis::Client::open(redis_url()).expect("redis url");
    let mut conn = client.get_multiplexed_async_connection().await.expect("redis");
    // The push follows the trigger's answer: wait until it is there.
    let key = format!("{}:queue:dev:task/kiln.noop", kiln.redis_prefix);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let popped = loop {
        let popped: Option<String> = redis::cmd("LPOP").arg(&key).query_async(&mut conn).await.expect("lpop");
        if popped.is_some() || tokio::time::Instant::now() > deadline {
            break popped;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(popped.as_deref(), Some(id.as_str()));

    let _worker = kiln.spawn_worker(&[]);
    // The stale-push sweep finds the run after a second, and then every
    // two seconds; a loaded machine may start the worker late.
    let run = kiln.wait_for_status(&id, "COMPLETED", Duration::from_secs(90)).await;
    assert_eq!(run["attemptCount"], 1, "{run}");
    assert_eq!(
        path_of(&db, &id).await,
        steps(&[("QUEUED", "EXECUTING"), ("EXECUTING", "COMPLETED")])
    );
    assert_allowed(&path_of(&db, &id).await);
    let redelivered: bool = sqlx::query_scalar("SELECT redelivered FROM runs WHERE id = $1")
        .bind(&id)
        .fetch_one(&db)
        .await
        .expect("read run");
    assert!(redelivered);
}
