//! When a run is recorded EXECUTING: a worker starts a run at once and
//! records it only if it is still going 50 ms later, so a short run goes
//! from QUEUED straight to its outcome; a run redelivered after a worker
//! lost it is recorded before it starts. A trigger on `runs` in the test's
//! own database notes every status change, so the tests read the exact
//! path each run took.

use std::time::Duration;

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
        assert_eq!(path_of(&db, id).await, steps(&[("QUEUED", "COMPLETED")]), "run {id}");
    }
    let run = kiln.wait_for_status(&long, "COMPLETED", Duration::from_secs(20)).await;
    assert_eq!(run["attemptCount"], 1, "{run}");
    assert_eq!(
        path_of(&db, &long).await,
        steps(&[("QUEUED", "EXECUTING"), ("EXECUTING", "COMPLETED")])
    );
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
    let popped: Option<String> = redis::cmd("LPOP")
        .arg(format!("{}:queue:task/kiln.noop", kiln.redis_prefix))
        .query_async(&mut conn)
        .await
        .expect("lpop");
    assert_eq!(popped.as_deref(), Some(id.as_str()));

    let _worker = kiln.spawn_worker(&[]);
    let run = kiln.wait_for_status(&id, "COMPLETED", Duration::from_secs(30)).await;
    assert_eq!(run["attemptCount"], 1, "{run}");
    assert_eq!(
        path_of(&db, &id).await,
        steps(&[("QUEUED", "EXECUTING"), ("EXECUTING", "COMPLETED")])
    );
    let redelivered: bool = sqlx::query_scalar("SELECT redelivered FROM runs WHERE id = $1")
        .bind(&id)
        .fetch_one(&db)
        .await
        .expect("read run");
    assert!(redelivered);
}
