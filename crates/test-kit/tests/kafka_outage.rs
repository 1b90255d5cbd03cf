//! Kafka down under writes: no write fails, both services say they are not
//! ready (and why), and once Kafka is back every event reaches the topic, in
//! per-warrior order, and the read model catches up promptly.
//!
//! Its own test binary: stopping Kafka must not disturb other tests.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use test_kit::{assert_complete_and_ordered, poll_until, read_versions_from_topic, write_steadily, Stack};

/// Status and body of `GET /ready` on the command and the query service.
async fn readiness(stack: &Stack) -> Vec<(u16, Value)> {
    let mut answers = Vec::new();
    for base in [&stack.command, &stack.query] {
        let response = stack.http.get(format!("{base}/ready")).send().await.expect("reachable");
        let status = response.status().as_u16();
        answers.push((status, response.json().await.expect("JSON")));
    }
    answers
}

/// From Kafka's return to a read model holding every write. The projector
/// once paused 500 ms per consumer error queued during the outage and
/// stood still for 30-120 s after Kafka was back, then ~13 s while the
/// clients' reconnect backoff grew to 10 s and the group waited out a
/// 10 s session of its pre-outage member; both are bounded lower now.
const CATCH_UP: Duration = Duration::from_secs(15);

#[tokio::test]
async fn writes_succeed_while_kafka_is_down_then_are_published_in_order_and_projected_promptly() {
    let stack = Stack::from_env();
    stack.dev(&["stop", "kafka"]);
    let not_ready = (503, json!({"database": true, "kafka": false}));
    assert_eq!(readiness(&stack).await, vec![not_ready.clone(), not_ready]);
    for base in [&stack.command, &stack.query] {
        let health = stack
            .http
            .get(format!("{base}/health"))
            .send()
            .await
            .expect("reachable");
        assert_eq!(health.status(), 200, "{base} must stay alive without Kafka");
    }
    let written = write_steadily(&stack, &stack.command, 8, Duration::from_secs(10)).await;
    stack.dev(&["start", "kafka"]);
    let back = Instant::now();
    assert!(!written.is_empty());
    let ready = (200, json!({"database": true, "kafka": true}));
    poll_until(Duration::from_secs(60), "both services ready again", || async {
        let answers = readiness(&stack).await;
        (answers == vec![ready.clone(), ready.clone()]).then_some(())
    })
    .await;

    let seen = read_versions_from_topic(
        &stack.kafka_brokers,
        "warrior-events",
        &written,
        Duration::from_secs(90),
    )
    .await;
    assert_complete_and_ordered(&written, &seen);
    stack.wait_until_settled(CATCH_UP.saturating_sub(back.elapsed()));
    eprintln!("read model caught up {:?} after Kafka's return", back.elapsed());
}
