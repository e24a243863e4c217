//! `/openapi.json` against the real routes: every operation it lists is
//! served (not the fallback's "no route", not 405), every route the API's
//! source declares is listed, and schemathesis finds no answer that breaks
//! the document.

use serde_json::{Value, json};

use crate::helpers::{Kiln, Mode};

/// The path with each `{param}` filled in.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|segment| if segment.starts_with('{') { "x" } else { segment })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn openapi_lists_every_route_and_every_listed_operation_is_served() {
    let kiln = Kiln::builder(Mode::Serve).spawn().await;
    let response = reqwest::get(kiln.url("/openapi.json")).await.expect("get");
    assert_eq!(response.status(), 200);
    let spec: Value = response.json().await.expect("json");
    assert_eq!(spec["openapi"], "3.0.3");
    let paths = spec["paths"].as_object().expect("paths");

    let mut operations = 0;
    for (path, methods) in paths {
        for (method, operation) in methods.as_object().expect("methods") {
            operations += 1;
            assert!(
                operation["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{method} {path}"
            );
            let url = kiln.url(&concrete(path));
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let answer = kiln
                .http
                .request(method.clone(), &url)
                .bearer_auth(&kiln.key)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .expect("request");
            let status = answer.status();
            let body = answer.text().await.unwrap_or_default();
            assert_ne!(status, 405, "{method} {path} is served");
            assert!(
                !body.contains("no route for"),
                "{method} {path} is served: {status} {body}"
            );
        }
    }
    assert!(operations >= 30, "{operations} operations");

    // Every route the source declares is in the document.
    let source = [
        include_str!("../../crates/kiln-api/src/routes/mod.rs"),
        include_str!("../../crates/kiln-api/src/lib.rs"),
    ]
    .concat();
    let declared: Vec<String> = source
        .split(".route(")
        .skip(1)
        .filter_map(|rest| rest.trim_start().strip_prefix('"').and_then(|r| r.split('"').next()))
        .map(|path| path.replace("{*", "{"))
        .collect();
    assert!(declared.len() >= 25, "{declared:?}");
    for path in &declared {
        assert!(paths.contains_key(path), "{path} is served but not in /openapi.json");
    }
}

/// schemathesis (from PyPI) generates requests from `/openapi.json`, valid
/// and invalid, against a real kiln with a run, a batch and a schedule to
/// find: no answer is a 5xx, and every answer's status, media type and
/// body are those the document gives.
#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_answer_the_document_does_not_describe() {
    let st = std::env::var("KILN_TEST_SCHEMATHESIS")
        .unwrap_or_else(|_| panic!("KILN_TEST_SCHEMATHESIS names schemathesis's `st`; scripts/test installs it"));
    let kiln = Kiln::builder(Mode::Dev).spawn().await;
    let run = kiln.trigger("kiln.noop", json!({ "payload": { "n": 1 } })).await;
    let batch: Value = kiln
        .post(
            "/api/v2/tasks/batch",
            &json!({ "items": [{ "task": "kiln.noop", "payload": {} }] }),
        )
        .await
        .json()
        .await
        .expect("batch answer");
    let schedule: Value = kiln
        .post(
            "/api/v1/schedules",
            &json!({ "task": "kiln.noop", "cron": "0 * * * *" }),
        )
        .await
        .json()
        .await
        .expect("schedule answer");
    let dir = crate::helpers::temp_dir("schemathesis");
    let config = dir.join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            "[parameters]\nrun_id = {run:?}\nbatch_id = {batch:?}\nschedule_id = {schedule:?}\ntask_id = \"kiln.noop\"\n",
            batch = batch["id"].as_str().expect("batch id"),
            schedule = schedule["id"].as_str().expect("schedule id"),
        ),
    )
    .expect("config");
    let output = tokio::process::Command::new(&st)
        .arg("--config-file")
        .arg(&config)
        .args(["run", &kiln.url("/openapi.json")])
        .args(["--header", &format!("Authorization: Bearer {}", kiln.key)])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-examples",
            "40",
            "--seed",
            "20261207",
            "--request-timeout",
            "60",
            "--no-color",
            "--warnings",
            "off",
        ])
        // NDJSON bodies are written by tests/e2e/schemathesis_hooks.py.
        .env("PYTHONPATH", concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e"))
        .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
        .current_dir(&dir)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {st}: {e}"));
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let spec: Value = reqwest::get(kiln.url("/openapi.json"))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let operations: usize = spec["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|methods| methods.as_object().map_or(0, serde_json::Map::len))
        .sum();
    // schemathesis leaves out the route that serves the document itself.
    let tested = operations - 1;
    assert!(
        report.contains(&format!("Tested: {tested}")),
        "every one of the {tested} operations besides /openapi.json was tested:\n{report}"
    );
}
