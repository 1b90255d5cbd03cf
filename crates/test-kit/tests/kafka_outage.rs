//! Kafka down under writes: no write fails, and once Kafka is back every
//! event reaches the topic, in per-warrior order.
//!
//! Its own test binary: stopping Kafka must not disturb other tests.

use std::time::Duration;

use test_kit::{assert_complete_and_ordered, read_versions_from_topic, write_steadily, Stack};

#[tokio::test]
async fn writes_succeed_while_kafka_is_down_and_are_published_in_order_after() {
    let stack = Stack::from_env();
    stack.dev(&["stop", "kafka"]);
    let written = write_steadily(&stack, &stack.command, 8, Duration::from_secs(10)).await;
    stack.dev(&["start", "kafka"]);
    assert!(!written.is_empty());

    let seen = read_versions_from_topic(
        &stack.kafka_brokers,
        "warrior-events",
        &written,
        Duration::from_secs(90),
    )
    .await;
    assert_complete_and_ordered(&written, &seen);
    stack.wait_until_settled(Duration::from_secs(120));
}
