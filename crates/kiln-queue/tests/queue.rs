//! The queue against a real Redis, each test under a prefix of its own:
//! order, the window, waking a blocked pop, new-queue notes, the epoch, and
//! environments that never share a list.

use std::time::Duration;

use kiln_queue::{Lane, Queue};

fn queue() -> Queue {
    let url = std::env::var("KILN_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("kiln-queue-test-{}", std::process::id()) + &unique();
    Queue::connect_lazy(&url, &prefix).expect("a redis url")
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("-{nanos}-{}", NEXT.fetch_add(1, Ordering::SeqCst))
}

/// The named queues' lanes in prod.
fn names(queues: &[&str]) -> Vec<Lane> {
    queues.iter().map(|q| Lane::new("prod", *q)).collect()
}

/// Pops until a delivery arrives, skipping the note that a queue appeared.
async fn pop(consumer: &mut kiln_queue::Consumer, queues: &[Lane], max: usize) -> Vec<kiln_queue::Delivery> {
    for _ in 0..3 {
        let got = consumer.pop(queues, max, Duration::from_secs(5)).await.expect("pop");
        if !got.is_empty() {
            return got;
        }
    }
    Vec::new()
}

#[tokio::test]
async fn ids_come_out_in_the_order_they_went_in() {
    let queue = queue();
    let refused = queue
        .push([("prod", "a", "run_1"), ("prod", "a", "run_2"), ("prod", "a", "run_3")])
        .await
        .expect("push");
    assert!(refused.is_empty());
    assert_eq!(queue.depth("prod", "a").await.expect("depth"), 3);
    let mut consumer = queue.consumer();
    let got = pop(&mut consumer, &names(&["a"]), 10).await;
    let ids: Vec<&str> = got.iter().map(|d| d.run_id.as_str()).collect();
    assert_eq!(ids, ["run_1", "run_2", "run_3"]);
    assert!(got.iter().all(|d| d.queue == "a"));
    assert_eq!(queue.depth("prod", "a").await.expect("depth"), 0);
}

#[tokio::test]
async fn a_full_window_refuses_the_newest_ids_and_says_which() {
    let queue = queue().with_window(2);
    let refused = queue
        .push([
            ("prod", "a", "run_1"),
            ("prod", "a", "run_2"),
            ("prod", "a", "run_3"),
            ("prod", "b", "run_4"),
        ])
        .await
        .expect("push");
    assert_eq!(refused, ["run_3"], "each queue's list holds two; b had room");
    assert_eq!(queue.depth("prod", "a").await.expect("depth"), 2);
    assert_eq!(queue.depth("prod", "b").await.expect("depth"), 1);
    assert_eq!(queue.known_lanes().await.expect("lanes"), names(&["a", "b"]));
}

#[tokio::test]
async fn a_blocked_pop_wakes_on_a_push() {
    let queue = queue();
    queue.push([("prod", "a", "run_0")]).await.expect("the queue exists");
    let mut consumer = queue.consumer();
    assert_eq!(pop(&mut consumer, &names(&["a"]), 1).await.len(), 1);
    let pusher = queue.clone();
    let push = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        pusher.push([("prod", "a", "run_1")]).await.expect("push");
    });
    // Far longer than any test waits: the id can only come back if the
    // push woke the pop; an unwoken pop would end empty after 60 s.
    let got = consumer
        .pop(&names(&["a"]), 1, Duration::from_secs(60))
        .await
        .expect("pop");
    let got = if got.is_empty() {
        // The note that a queue was pushed to can come first.
        consumer
            .pop(&names(&["a"]), 1, Duration::from_secs(60))
            .await
            .expect("pop")
    } else {
        got
    };
    assert_eq!(got.first().map(|d| d.run_id.as_str()), Some("run_1"));
    push.await.expect("pusher");
}

#[tokio::test]
async fn a_consumer_hears_of_a_new_queue() {
    let queue = queue();
    let mut consumer = queue.consumer();
    assert!(!consumer.take_queues_changed());
    queue.push([("prod", "fresh", "run_1")]).await.expect("push");
    // Watching no queue with ids, the pop takes the note instead.
    let got = consumer
        .pop(&names(&["other"]), 1, Duration::from_secs(60))
        .await
        .expect("pop");
    assert!(got.is_empty());
    assert!(consumer.take_queues_changed(), "told to refresh its queues");
    assert!(!consumer.take_queues_changed(), "told once");
    assert_eq!(queue.known_lanes().await.expect("lanes"), names(&["fresh"]));
}

#[tokio::test]
async fn the_epoch_is_set_once_and_kept() {
    let queue = queue();
    assert_eq!(queue.epoch("first").await.expect("epoch"), "first");
    assert_eq!(queue.epoch("second").await.expect("epoch"), "first", "an epoch stays");
}

#[tokio::test]
async fn a_pop_spreads_over_queues_so_none_starves() {
    let queue = queue();
    let busy: Vec<(&str, String)> = (0..50).map(|i| ("busy", format!("run_b{i}"))).collect();
    queue
        .push(busy.iter().map(|(q, id)| ("prod", *q, id.as_str())))
        .await
        .expect("push");
    queue.push([("prod", "quiet", "run_q")]).await.expect("push");
    let mut consumer = queue.consumer();
    let queues = names(&["busy", "quiet"]);
    let mut seen_quiet = false;
    for _ in 0..4 {
        let got = pop(&mut consumer, &queues, 1).await;
        seen_quiet |= got.iter().any(|d| d.queue == "quiet");
    }
    assert!(seen_quiet, "the quiet queue got a turn while the busy one had 50 ids");
}

#[tokio::test]
async fn environments_never_share_a_list_so_a_flood_in_one_holds_back_nothing_in_the_other() {
    let queue = queue().with_window(10);
    let flood: Vec<String> = (0..25).map(|i| format!("run_dev{i}")).collect();
    let refused = queue
        .push(flood.iter().map(|id| ("dev", "task/send", id.as_str())))
        .await
        .expect("push");
    assert_eq!(refused.len(), 15, "dev's lane is full at its window");
    let refused = queue.push([("prod", "task/send", "run_prod")]).await.expect("push");
    assert!(refused.is_empty(), "prod's lane has its own window");
    assert_eq!(queue.depth("dev", "task/send").await.expect("depth"), 10);
    assert_eq!(queue.depth("prod", "task/send").await.expect("depth"), 1);
    assert_eq!(
        queue.known_lanes().await.expect("lanes"),
        [Lane::new("dev", "task/send"), Lane::new("prod", "task/send")]
    );

    let lanes = [Lane::new("dev", "task/send"), Lane::new("prod", "task/send")];
    let mut consumer = queue.consumer();
    let mut prod_after = None;
    for popped in 1..=4 {
        let got = pop(&mut consumer, &lanes, 1).await;
        if let Some(delivery) = got.iter().find(|d| d.environment == "prod") {
            assert_eq!(delivery.run_id, "run_prod");
            assert_eq!(delivery.queue, "task/send");
            prod_after = Some(popped);
            break;
        }
        assert!(
            got.iter()
                .all(|d| d.environment == "dev" && d.run_id.starts_with("run_dev"))
        );
    }
    assert!(
        prod_after.is_some_and(|n| n <= 2),
        "prod's run came out within two pops, not behind dev's ten: {prod_after:?}"
    );
}

#[tokio::test]
async fn a_consumer_hears_of_a_new_queue_pushed_just_after_redis_lost_its_scripts() {
    let queue = queue();
    let mut consumer = queue.consumer();
    let url = std::env::var("KILN_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let mut admin = redis::Client::open(url)
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    // As after a restart: the push's first sending fails for want of its
    // script, yet the rest of its pipeline already added the lane.
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut admin)
        .await
        .expect("script flush");
    queue.push([("prod", "fresh", "run_1")]).await.expect("push");
    let got = consumer
        .pop(&names(&["other"]), 1, Duration::from_secs(60))
        .await
        .expect("pop");
    assert!(got.is_empty());
    assert!(consumer.take_queues_changed(), "told to refresh its queues");
}
