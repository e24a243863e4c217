//! `/openapi.json` against the real routes: every operation it lists is
//! served (not the fallback's "no route", not 405), and every route the
//! API's source declares is listed.

use serde_json::Value;

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
