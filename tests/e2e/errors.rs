//! Every bad request gets its status and a JSON message, and leaves nothing
//! behind.

use serde_json::{Value, json};

use crate::helpers::{Kiln, Mode};

async fn expect_error(response: reqwest::Response, status: u16, mentions: &str) -> Value {
    assert_eq!(response.status().as_u16(), status);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "content-type {content_type}"
    );
    let body: Value = response.json().await.expect("json error body");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(
        message.to_lowercase().contains(&mentions.to_lowercase()),
        "error {message:?} should mention {mentions:?}"
    );
    body
}

#[tokio::test]
async fn bad_requests_are_answered_with_json_and_record_nothing() {
    let mut kiln = Kiln::builder(Mode::Serve)
        .env("KILN_MAX_PAYLOAD_BYTES", "4096")
        .spawn()
        .await;
    let trigger_url = kiln.url("/api/v1/tasks/kiln.noop/trigger");
    let http = kiln.http.clone();

    // 400: malformed JSON, and not retried by the SDK.
    let response = http
        .post(&trigger_url)
        .bearer_auth(&kiln.key)
        .body("{\"payload\": ")
        .send()
        .await
        .expect("send");
    assert_eq!(
        response.headers().get("x-should-retry").and_then(|v| v.to_str().ok()),
        Some("false")
    );
    expect_error(response, 400, "malformed JSON").await;
    let response = http
        .post(&trigger_url)
        .bearer_auth(&kiln.key)
        .send()
        .await
        .expect("send");
    expect_error(response, 400, "empty").await;
    let response = kiln
        .post(
            "/api/v1/tasks/kiln.noop/trigger",
            &json!({ "payload": "{not json", "options": { "payloadType": "application/super+json" } }),
        )
        .await;
    expect_error(response, 400, "superjson").await;

    // 401: no key, a malformed key, a well-formed key kiln never issued.
    let response = http
        .post(&trigger_url)
        .json(&json!({ "payload": {} }))
        .send()
        .await
        .expect("send");
    expect_error(response, 401, "Authorization").await;
    // Tokens too: one naming no key kiln has, one signed with the wrong
    // secret for a key it has. Every refusal reads the same, so a caller
    // cannot tell which check failed.
    let claims = |sub: &str| {
        json!({ "sub": sub, "pub": true, "scopes": ["read:all"], "exp": chrono::Utc::now().timestamp() + 600,
                "iss": kiln_core::auth::JWT_ISSUER, "aud": kiln_core::auth::JWT_AUDIENCE })
    };
    let key_id: Value = http
        .post(kiln.url("/api/v1/auth/jwt/claims"))
        .bearer_auth(&kiln.key)
        .send()
        .await
        .expect("claims")
        .json()
        .await
        .expect("json");
    let unknown_key = kiln_core::auth::sign_jwt(b"whatever", &claims("key_doesnotexist"));
    let wrong_secret = kiln_core::auth::sign_jwt(b"not-the-key", &claims(key_id["sub"].as_str().unwrap_or_default()));
    let mut answers = Vec::new();
    for key in ["nope", "tr_dev_AAAAAAAAAAAAAAAAAAAAAAAA", &unknown_key, &wrong_secret] {
        let response = http
            .get(kiln.url("/api/v1/runs"))
            .bearer_auth(key)
            .send()
            .await
            .expect("send");
        answers.push(expect_error(response, 401, "invalid or expired").await);
    }
    assert!(answers.windows(2).all(|pair| pair[0] == pair[1]), "{answers:?}");

    // 404: unknown task, unknown run, unknown route.
    let response = kiln
        .post("/api/v1/tasks/no-such-task/trigger", &json!({ "payload": {} }))
        .await;
    expect_error(response, 404, "no-such-task").await;
    for path in ["/api/v3/runs/run_doesnotexist", "/api/v3/runs/not-a-run-id"] {
        let response = http
            .get(kiln.url(path))
            .bearer_auth(&kiln.key)
            .send()
            .await
            .expect("send");
        assert_eq!(
            response.headers().get("x-should-retry").and_then(|v| v.to_str().ok()),
            Some("false")
        );
        expect_error(response, 404, "not found").await;
    }
    let response = kiln.post("/api/v2/runs/run_doesnotexist/cancel", &json!({})).await;
    expect_error(response, 404, "not found").await;
    let response = kiln.post("/api/v1/runs/run_doesnotexist/replay", &json!({})).await;
    expect_error(response, 404, "not found").await;
    let response = http.get(kiln.url("/api/v9/nothing")).send().await.expect("send");
    expect_error(response, 404, "no route").await;

    // 413: over KILN_MAX_PAYLOAD_BYTES.
    let response = kiln
        .post(
            "/api/v1/tasks/kiln.noop/trigger",
            &json!({ "payload": { "blob": "x".repeat(5000) } }),
        )
        .await;
    expect_error(response, 413, "limit").await;

    // 422: options that are well-formed JSON but invalid.
    let invalid = [
        (json!({ "maxAttempts": 0 }), "maxAttempts"),
        (json!({ "maxAttempts": "three" }), "invalid"),
        (json!({ "delay": "soon" }), "delay"),
        (json!({ "ttl": -5 }), "ttl"),
        (
            json!({ "tags": (0..11).map(|i| format!("t{i}")).collect::<Vec<_>>() }),
            "tags",
        ),
        (json!({ "metadata": [1, 2] }), "metadata"),
        (json!({ "idempotencyKeyTTL": "forever" }), "idempotencyKeyTTL"),
        (json!({ "queue": { "name": "" } }), "queue"),
        (json!({ "payloadType": "application/x-unknown" }), "unsupported"),
    ];
    for (options, mentions) in invalid {
        let response = kiln
            .post(
                "/api/v1/tasks/kiln.noop/trigger",
                &json!({ "payload": {}, "options": options }),
            )
            .await;
        expect_error(response, 422, mentions).await;
    }

    // 400 on list filters kiln cannot parse.
    let response = http
        .get(kiln.url("/api/v1/runs?filter%5Bstatus%5D=SLEEPING"))
        .bearer_auth(&kiln.key)
        .send()
        .await
        .expect("send");
    expect_error(response, 400, "SLEEPING").await;
    let response = http
        .get(kiln.url("/api/v1/runs?page%5Bsize%5D=1000"))
        .bearer_auth(&kiln.key)
        .send()
        .await
        .expect("send");
    expect_error(response, 400, "page[size]").await;

    let db = kiln.db().await;
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM runs")
        .fetch_one(&db)
        .await
        .expect("count");
    assert_eq!(runs, 0, "a refused request must not leave a run behind");
    let queues: i64 = sqlx::query_scalar("SELECT count(*) FROM queues")
        .fetch_one(&db)
        .await
        .expect("count");
    assert_eq!(queues, 0);
}

#[tokio::test]
async fn health_and_readiness() {
    let kiln = Kiln::builder(Mode::Serve).spawn().await;
    let health = kiln.http.get(kiln.url("/healthz")).send().await.expect("send");
    assert_eq!(health.status(), 200);
    let ready: Value = kiln
        .http
        .get(kiln.url("/readyz"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["postgres"]["ok"], true);
    assert_eq!(ready["redis"]["ok"], true);
}

/// `/readyz` needs no key: a part that does not answer is a `false`, never
/// the driver's words (hosts, ports, users).
#[tokio::test]
async fn readiness_says_what_is_down_and_nothing_about_it() {
    let redis = crate::helpers::RedisServer::start().await;
    let port = redis.port();
    let kiln = Kiln::builder(Mode::Serve).redis(&redis.url).spawn().await;
    redis.stop();
    let answer = kiln.http.get(kiln.url("/readyz")).send().await.expect("send");
    assert_eq!(answer.status(), 503);
    let text = answer.text().await.expect("body");
    let ready: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        ready,
        json!({ "status": "unavailable", "postgres": { "ok": true }, "redis": { "ok": false } })
    );
    assert!(
        !text.contains(&port.to_string()) && !text.contains("127.0.0.1"),
        "{text}"
    );
}

/// A signed upload link takes a packet, so its body is held to the payload
/// limit: past it, 413 and nothing stored.
#[tokio::test]
async fn an_upload_link_refuses_a_body_past_the_payload_limit() {
    let (kiln, dir) = crate::helpers::kiln_with_storage("uploads", &[("KILN_MAX_PAYLOAD_BYTES", "65536")]).await;
    let link: Value = kiln
        .http
        .put(kiln.url("/api/v2/packets/big/blob.json"))
        .bearer_auth(&kiln.key)
        .send()
        .await
        .expect("link")
        .json()
        .await
        .expect("json");
    let url = link["presignedUrl"].as_str().expect("presignedUrl").to_owned();
    // Just past the limit, so the whole body is sent before the answer
    // comes (a server that stops reading a refused body may close on a
    // client still writing a much larger one).
    let refused = kiln
        .http
        .put(&url)
        .body(vec![b'x'; 65536 + 100])
        .send()
        .await
        .expect("upload");
    assert_eq!(refused.status(), 413);
    let answer: Value = refused.json().await.expect("a JSON error");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("KILN_MAX_PAYLOAD_BYTES")),
        "{answer}"
    );
    assert!(!dir.join("_kiln/packets/dev/big/blob.json").exists(), "nothing stored");

    let stored = kiln
        .http
        .put(&url)
        .body(b"{\"small\":true}".to_vec())
        .send()
        .await
        .expect("upload");
    assert_eq!(stored.status(), 200);
    assert!(dir.join("_kiln/packets/dev/big/blob.json").is_file());
}

/// Text Postgres cannot store (a NUL character) is the client's error,
/// answered 422 and never a 500; a host's attempt result holding one
/// likewise.
#[tokio::test]
async fn a_nul_character_is_refused_as_unstorable_input() {
    let kiln = Kiln::dev().await;
    let response = kiln
        .post(
            "/api/v1/tasks/kiln.noop/trigger",
            &json!({ "payload": { "text": "before\u{0}after" } }),
        )
        .await;
    expect_error(response, 422, "NUL").await;
    let response = kiln
        .post(
            "/worker/v1/register",
            &json!({ "host": { "hostname": "a\u{0}b", "slots": 1 }, "sdk": { "version": "4.1.2" }, "tasks": [] }),
        )
        .await;
    expect_error(response, 422, "NUL").await;
    let response = kiln
        .post(
            "/worker/v1/claim",
            &json!({ "workerId": "host_\u{0}", "free": 1, "waitSeconds": 0 }),
        )
        .await;
    expect_error(response, 404, "no task host").await;
    // The refused trigger cost no one else their run.
    let id = kiln
        .trigger("kiln.noop", json!({ "payload": { "text": "fine" } }))
        .await;
    kiln.wait_for_status(&id, "COMPLETED", std::time::Duration::from_secs(60))
        .await;
}
