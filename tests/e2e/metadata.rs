//! A run's metadata changed through the API as the SDK changes it from
//! inside a task (`PUT /api/v1/runs/{id}/metadata` with its own, its
//! parent's and its root's operations), and runs triggered with
//! `parentRunId`, as a trigger made inside a task sends it.

use serde_json::{Value, json};

use crate::helpers::Kiln;

async fn put_metadata(kiln: &Kiln, key: &str, run_id: &str, body: &Value) -> (u16, Value) {
    kiln.call_as(
        reqwest::Method::PUT,
        &format!("/api/v1/runs/{run_id}/metadata"),
        key,
        Some(body),
    )
    .await
}

async fn get_metadata(kiln: &Kiln, key: &str, run_id: &str) -> (u16, Value) {
    kiln.call_as(
        reqwest::Method::GET,
        &format!("/api/v1/runs/{run_id}/metadata"),
        key,
        None,
    )
    .await
}

/// A run that stays unfinished for the test's length.
fn waiting(parent: Option<&str>) -> Value {
    let mut options = json!({ "delay": "1h", "metadata": { "stage": "queued" } });
    if let Some(parent) = parent {
        options["parentRunId"] = json!(parent);
    }
    json!({ "payload": {}, "options": options })
}

#[tokio::test]
async fn the_sdks_metadata_flush_changes_the_run_its_parent_and_its_root() {
    let kiln = Kiln::dev().await;
    let key = kiln.key.clone();
    let root = kiln.trigger("kiln.noop", waiting(None)).await;
    let parent = kiln.trigger("kiln.noop", waiting(Some(&root))).await;
    let child = kiln.trigger("kiln.noop", waiting(Some(&parent))).await;
    let retrieved = kiln.retrieve(&child).await;
    assert_eq!(retrieved["relatedRuns"]["parent"]["id"], json!(parent), "{retrieved}");
    assert_eq!(retrieved["depth"], 2, "{retrieved}");

    // What StandardMetadataManager flushes after metadata.set, append,
    // increment, metadata.parent.append and metadata.root.increment.
    let (status, answer) = put_metadata(
        &kiln,
        &key,
        &child,
        &json!({
            "operations": [
                { "type": "set", "key": "progress", "value": 0.5 },
                { "type": "set", "key": "$.status.text", "value": "3 / 6 pages" },
                { "type": "append", "key": "logs", "value": "started" },
                { "type": "increment", "key": "pages", "value": 3 },
                { "type": "delete", "key": "stage" },
            ],
            "parentOperations": [{ "type": "append", "key": "children", "value": child }],
            "rootOperations": [{ "type": "increment", "key": "pagesDone", "value": 3 }],
        }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let expected = json!({
        "progress": 0.5,
        "status": { "text": "3 / 6 pages" },
        "logs": ["started"],
        "pages": 3,
    });
    assert_eq!(answer["metadata"], expected);
    assert_eq!(get_metadata(&kiln, &key, &child).await.1["metadata"], expected);
    assert_eq!(kiln.retrieve(&child).await["metadata"], expected);
    assert_eq!(
        get_metadata(&kiln, &key, &parent).await.1["metadata"],
        json!({ "stage": "queued", "children": [child] })
    );
    assert_eq!(
        get_metadata(&kiln, &key, &root).await.1["metadata"],
        json!({ "stage": "queued", "pagesDone": 3 })
    );

    // A second flush adds to the first; the root's own flush reaches itself.
    let (status, _) = put_metadata(
        &kiln,
        &key,
        &child,
        &json!({ "operations": [{ "type": "increment", "key": "pages", "value": 3 }],
                 "rootOperations": [{ "type": "increment", "key": "pagesDone", "value": 3 }] }),
    )
    .await;
    assert_eq!(status, 200);
    let (status, answer) = put_metadata(
        &kiln,
        &key,
        &root,
        &json!({ "rootOperations": [{ "type": "set", "key": "done", "value": true }] }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["metadata"],
        json!({ "stage": "queued", "pagesDone": 6, "done": true })
    );
    assert_eq!(get_metadata(&kiln, &key, &child).await.1["metadata"]["pages"], 6);

    // `metadata.replace` sends the whole object.
    let (status, answer) = put_metadata(&kiln, &key, &parent, &json!({ "metadata": { "fresh": 1 } })).await;
    assert_eq!(status, 200);
    assert_eq!(answer["metadata"], json!({ "fresh": 1 }));
}

#[tokio::test]
async fn metadata_is_refused_where_it_cannot_change() {
    let kiln = Kiln::dev().await;
    let key = kiln.key.clone();
    let prod = kiln.new_key("prod");
    let run = kiln.trigger("kiln.noop", waiting(None)).await;
    let set = json!({ "operations": [{ "type": "set", "key": "a", "value": 1 }] });

    // Another environment's key finds no such run, and cannot parent one.
    assert_eq!(put_metadata(&kiln, &prod, &run, &set).await.0, 404);
    assert_eq!(get_metadata(&kiln, &prod, &run).await.0, 404);
    let response = kiln
        .http
        .post(kiln.url("/api/v1/tasks/kiln.noop/trigger"))
        .bearer_auth(&prod)
        .json(&waiting(Some(&run)))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 422);
    let answer: Value = response.json().await.expect("json");
    assert!(
        answer["error"].as_str().unwrap_or_default().contains("parentRunId"),
        "{answer}"
    );
    assert_eq!(
        get_metadata(&kiln, &key, &run).await.1["metadata"],
        json!({ "stage": "queued" })
    );

    // Past Trigger's 256 KiB: refused whole, nothing changed.
    let big = "x".repeat(300 * 1024);
    let (status, answer) = put_metadata(
        &kiln,
        &key,
        &run,
        &json!({ "operations": [{ "type": "set", "key": "a", "value": 1 }, { "type": "set", "key": "big", "value": big }] }),
    )
    .await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(
        get_metadata(&kiln, &key, &run).await.1["metadata"],
        json!({ "stage": "queued" })
    );

    // An operation of a type the SDK never sends is a bad request.
    let (status, _) = put_metadata(
        &kiln,
        &key,
        &run,
        &json!({ "operations": [{ "type": "explode", "key": "a" }] }),
    )
    .await;
    assert!(status == 400 || status == 422, "answered {status}");

    // A finished run's metadata stays as it finished.
    let done = kiln.trigger("kiln.noop", json!({ "payload": {} })).await;
    kiln.wait_for_status(&done, "COMPLETED", std::time::Duration::from_secs(30))
        .await;
    let (status, answer) = put_metadata(&kiln, &key, &done, &set).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap_or_default().contains("COMPLETED"),
        "{answer}"
    );
}
