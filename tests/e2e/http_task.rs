//! `kiln.http` and configured HTTP tasks against a real local HTTP server.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::any;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

use crate::helpers::{Kiln, Mode};

const SIGNING_SECRET: &str = "webhook-signing-secret";

#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone)]
struct Receiver {
    answer: StatusCode,
    received: Arc<Mutex<Vec<Received>>>,
}

/// A server on a random port that records each request and answers
/// `answer`. Answers its base URL.
async fn receiver(answer: StatusCode) -> (String, Arc<Mutex<Vec<Received>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let state = Receiver {
        answer,
        received: Arc::clone(&received),
    };
    let app = Router::new()
        .route(
            "/{*path}",
            any(
                |State(state): State<Receiver>, headers: HeaderMap, body: Bytes| async move {
                    state.received.lock().expect("lock").push(Received {
                        at: Instant::now(),
                        headers,
                        body,
                    });
                    (state.answer, axum::Json(json!({ "ok": state.answer.is_success() })))
                },
            ),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), received)
}

fn header<'a>(request: &'a Received, name: &str) -> &'a str {
    request
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// Checks `X-Kiln-Signature` as a receiving app would: over the time, the
/// method and URL it was sent to, the run id it names, and the body.
fn signature_verifies(request: &Received, method: &str, url: &str) -> bool {
    let value = header(request, "x-kiln-signature");
    let Some((t, v1)) = value.split_once(',') else {
        return false;
    };
    let (Some(timestamp), Some(signature)) = (t.strip_prefix("t="), v1.strip_prefix("v1=")) else {
        return false;
    };
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(SIGNING_SECRET.as_bytes()).expect("key");
    let run_id = header(request, "x-kiln-run-id");
    mac.update(format!("{timestamp}\n{method}\n{url}\n{run_id}\n").as_bytes());
    mac.update(&request.body);
    hex::decode(signature).is_ok_and(|sig| mac.verify_slice(&sig).is_ok())
}

async fn kiln_allowing_loopback() -> Kiln {
    Kiln::builder(Mode::Dev)
        .env("KILN_HTTP_SIGNING_SECRET", SIGNING_SECRET)
        .env("KILN_HTTP_ALLOW_PRIVATE", "true")
        .spawn()
        .await
}

/// `kiln.http` sends what any key asks for, so it is never signed: a
/// signature the app trusts cannot be had by triggering it.
#[tokio::test]
async fn kiln_http_delivers_its_request_unsigned() {
    let (base, received) = receiver(StatusCode::OK).await;
    let kiln = kiln_allowing_loopback().await;
    let payload = json!({ "url": format!("{base}/hooks/doc"), "method": "POST", "headers": { "x-app": "supermark" }, "body": { "documentId": "d1" } });
    let id = kiln.trigger("kiln.http", json!({ "payload": payload })).await;
    let run = kiln.wait_for_status(&id, "COMPLETED", Duration::from_secs(10)).await;
    assert_eq!(run["output"], json!({ "status": 200, "body": { "ok": true } }));
    let requests = received.lock().expect("lock").clone();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(
        serde_json::from_slice::<Value>(&request.body).ok(),
        Some(json!({ "documentId": "d1" }))
    );
    assert!(
        request.headers.get("x-kiln-signature").is_none(),
        "a caller-chosen request carries no signature"
    );
    assert_eq!(header(request, "x-kiln-run-id"), id);
    assert_eq!(header(request, "x-kiln-attempt"), "1");
    assert_eq!(header(request, "x-app"), "supermark");
    assert_eq!(header(request, "content-type"), "application/json");
}

#[tokio::test]
async fn kiln_http_retries_non_2xx_with_back_off() {
    let (base, received) = receiver(StatusCode::INTERNAL_SERVER_ERROR).await;
    let kiln = kiln_allowing_loopback().await;
    let id = kiln
        .trigger(
            "kiln.http",
            json!({ "payload": { "url": format!("{base}/fail") }, "options": { "maxAttempts": 3 } }),
        )
        .await;
    let run = kiln.wait_for_status(&id, "FAILED", Duration::from_secs(30)).await;
    assert_eq!(run["attemptCount"], 3);
    assert_eq!(run["error"]["name"], "HttpStatus");
    let requests = received.lock().expect("lock").clone();
    let attempts: Vec<&str> = requests.iter().map(|r| header(r, "x-kiln-attempt")).collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    // Trigger's defaults with jitter: 1–2 s, then 2–4 s. Only the lower
    // bounds are checked here, which no load can break (a retry never
    // starts early); kiln-core's unit tests and kiln-runtime's stepped
    // tests hold the exact bounds, where a busy machine cannot move them.
    let first_gap = requests[1].at - requests[0].at;
    let second_gap = requests[2].at - requests[1].at;
    assert!(first_gap >= Duration::from_millis(1000), "first back-off {first_gap:?}");
    assert!(
        second_gap >= Duration::from_millis(2000),
        "second back-off {second_gap:?}"
    );
}

#[tokio::test]
async fn kiln_http_refuses_internal_addresses_unless_allowed() {
    let (base, received) = receiver(StatusCode::OK).await;
    let kiln = Kiln::dev().await;
    let localhost = base.replace("127.0.0.1", "localhost");
    for url in [
        format!("{base}/x"),
        format!("{localhost}/x"),
        "http://169.254.169.254/latest/meta-data".into(),
    ] {
        let id = kiln.trigger("kiln.http", json!({ "payload": { "url": url } })).await;
        let run = kiln.wait_for_status(&id, "FAILED", Duration::from_secs(10)).await;
        assert_eq!(run["attemptCount"], 1, "{url}: a forbidden host is not retried");
        assert_eq!(run["error"]["name"], "ForbiddenHost", "{url}");
    }
    let id = kiln
        .trigger("kiln.http", json!({ "payload": { "url": "file:///etc/passwd" } }))
        .await;
    let run = kiln.wait_for_status(&id, "FAILED", Duration::from_secs(10)).await;
    assert_eq!(run["error"]["name"], "InvalidUrl");
    assert!(received.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn a_configured_task_posts_its_payload_to_its_url() {
    let (base, received) = receiver(StatusCode::OK).await;
    let dir = std::env::temp_dir().join(format!("kiln-tasks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join(format!("{}.toml", rand_name()));
    std::fs::write(
        &file,
        format!(
            "[[tasks]]\nid = \"send-notification\"\nurl = \"{base}/api/jobs/send-notification\"\nheaders = {{ authorization = \"Bearer ${{APP_JOBS_KEY}}\" }}\nmax_attempts = 2\n"
        ),
    )
    .expect("write tasks file");
    let kiln = Kiln::builder(Mode::Dev)
        .env("KILN_TASKS_FILE", file.display().to_string())
        .env("APP_JOBS_KEY", "jobs-key-1")
        .env("KILN_HTTP_SIGNING_SECRET", SIGNING_SECRET)
        .spawn()
        .await;
    let id = kiln
        .trigger("send-notification", json!({ "payload": { "viewId": "v1" } }))
        .await;
    let run = kiln.wait_for_status(&id, "COMPLETED", Duration::from_secs(10)).await;
    assert_eq!(run["maxAttempts"], 2);
    assert_eq!(run["queue"], "task/send-notification");
    let requests = received.lock().expect("lock").clone();
    assert_eq!(requests.len(), 1);
    assert_eq!(header(&requests[0], "authorization"), "Bearer jobs-key-1");
    assert_eq!(
        serde_json::from_slice::<Value>(&requests[0].body).ok(),
        Some(json!({ "viewId": "v1" }))
    );
    let url = format!("{base}/api/jobs/send-notification");
    assert!(
        signature_verifies(&requests[0], "POST", &url),
        "signature {:?} does not verify",
        header(&requests[0], "x-kiln-signature")
    );
    // Bound to its request: another body, URL, method or run does not verify.
    let mut tampered = requests[0].clone();
    tampered.body = Bytes::from_static(br#"{"viewId":"v2"}"#);
    assert!(!signature_verifies(&tampered, "POST", &url));
    assert!(!signature_verifies(
        &requests[0],
        "POST",
        &format!("{base}/api/jobs/send-email")
    ));
    assert!(!signature_verifies(&requests[0], "PUT", &url));
    let mut other_run = requests[0].clone();
    other_run
        .headers
        .insert("x-kiln-run-id", "run_someoneelse".parse().expect("header"));
    assert!(!signature_verifies(&other_run, "POST", &url));
}

fn rand_name() -> String {
    use rand::Rng;
    (0..10)
        .map(|_| (b'a' + rand::rng().random_range(0..26)) as char)
        .collect()
}
