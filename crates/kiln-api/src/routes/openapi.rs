//! `GET /openapi.json`: an OpenAPI 3.0 document made from the route
//! catalogue the router itself is built from, so it lists exactly the
//! routes kiln serves. Bodies are described loosely (JSON objects, as
//! Trigger.dev's SDK sends and reads them); errors have kiln's one shape.

use std::sync::OnceLock;

use axum::Json;
use serde_json::{Map, Value, json};

use super::{Operation, catalogue};

fn parameters(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            let name = name.trim_start_matches('*');
            json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } })
        })
        .collect()
}

/// `{*key}` is a catch-all to axum; to OpenAPI it is a plain parameter.
fn openapi_path(path: &str) -> String {
    path.replace("{*", "{")
}

fn operation(op: &Operation) -> Value {
    let error = json!({ "$ref": "#/components/responses/Error" });
    let mut responses = Map::new();
    responses.insert("200".into(), json!({ "description": "OK" }));
    responses.insert("400".into(), error.clone());
    if op.authenticated {
        responses.insert("401".into(), error.clone());
    }
    responses.insert("404".into(), error.clone());
    responses.insert("503".into(), error);
    let mut value = json!({
        "summary": op.summary,
        "operationId": format!("{}{}", op.method, op.path.replace(['/', '{', '}', '*', '.'], "_")),
        "parameters": parameters(op.path),
        "responses": responses,
    });
    if op.authenticated {
        value["security"] = json!([{ "secretKey": [] }]);
    }
    if matches!(op.method, "post" | "put") {
        value["requestBody"] =
            json!({ "required": false, "content": { "application/json": { "schema": { "type": "object" } } } });
    }
    value
}

/// The document, built once.
pub fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        let (_, operations) = catalogue();
        let mut paths = Map::new();
        for op in &operations {
            let entry = paths.entry(openapi_path(op.path)).or_insert_with(|| json!({}));
            entry[op.method] = operation(op);
        }
        json!({
            "openapi": "3.0.3",
            "info": {
                "title": "kiln",
                "version": env!("CARGO_PKG_VERSION"),
                "description": "A self-hosted background-job runtime that speaks Trigger.dev's HTTP API.",
            },
            "paths": paths,
            "components": {
                "securitySchemes": {
                    "secretKey": { "type": "http", "scheme": "bearer", "description": "A key from `kiln keys create` (TRIGGER_SECRET_KEY), or a public access token where a route reads runs" }
                },
                "responses": {
                    "Error": {
                        "description": "An error, with a message that says what is wrong",
                        "content": { "application/json": { "schema": {
                            "type": "object", "required": ["error"], "properties": { "error": { "type": "string" } }
                        } } }
                    }
                }
            }
        })
    })
}

pub async fn document() -> Json<Value> {
    Json(spec().clone())
}
