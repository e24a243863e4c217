//! Packets through `/api/v1/packets/{path}`, as SDK 3.3 and 4.1 ask for
//! them (a task's large output up, a packet read back down): each link
//! reaches only the caller's environment's packets.

use serde_json::Value;

use crate::helpers::kiln_with_storage;

async fn link(kiln: &crate::helpers::Kiln, method: reqwest::Method, path: &str, key: &str) -> (u16, Value) {
    kiln.call_as(method, &format!("/api/v1/packets/{path}"), key, None)
        .await
}

#[tokio::test]
async fn a_packet_goes_up_and_comes_back_down_in_its_own_environment_only() {
    let (kiln, dir) = kiln_with_storage("packets-v1", &[]).await;
    let path = "run_abc/attempt_1/output.json";
    let (status, upload) = link(&kiln, reqwest::Method::PUT, path, &kiln.key).await;
    assert_eq!(status, 200, "{upload}");
    let body = br#"{"json":{"pages":[1,2,3]}}"#.to_vec();
    let stored = kiln
        .http
        .put(upload["presignedUrl"].as_str().expect("presignedUrl"))
        .body(body.clone())
        .send()
        .await
        .expect("upload");
    assert_eq!(stored.status(), 200);
    assert!(
        dir.join("_kiln/packets/dev").join(path).is_file(),
        "kept with dev's packets"
    );

    let (status, download) = link(&kiln, reqwest::Method::GET, path, &kiln.key).await;
    assert_eq!(status, 200, "{download}");
    let fetched = kiln
        .http
        .get(download["presignedUrl"].as_str().expect("presignedUrl"))
        .send()
        .await
        .expect("download");
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.bytes().await.expect("bytes").to_vec(), body);

    // Another environment's key finds no such packet, and says so in JSON.
    let prod = kiln.new_key("prod");
    let (status, answer) = link(&kiln, reqwest::Method::GET, path, &prod).await;
    assert_eq!(status, 404, "{answer}");
    assert!(
        answer["error"].as_str().is_some_and(|e| e.contains("no packet")),
        "{answer}"
    );
    // Nor does a path that was never uploaded, or one that leaves the
    // packets' folder.
    let (status, _) = link(&kiln, reqwest::Method::GET, "run_abc/attempt_1/other.json", &kiln.key).await;
    assert_eq!(status, 404);
    let (status, answer) = link(&kiln, reqwest::Method::GET, "..%2F..%2Fdev%2Fsecret.json", &kiln.key).await;
    assert_eq!(status, 400, "{answer}");
}
