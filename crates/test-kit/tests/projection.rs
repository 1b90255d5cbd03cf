//! The query side under concurrency and bad input: read your writes for many
//! concurrent clients, and poison messages diverted to the dead-letter topic.

use std::time::Duration;

use futures::future::join_all;
use futures::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};
use serde_json::Value;
use test_kit::{new_warrior, poll_until, Stack};

#[tokio::test]
async fn two_hundred_concurrent_create_then_get_pairs_never_miss_their_write() {
    let stack = Stack::from_env();
    let pairs = (0..200).map(|_| async {
        let created = stack.create(&new_warrior()).await;
        let id = created["id"].as_str().expect("id").to_owned();
        let response = stack.get(&format!("/warrior/{id}")).await;
        let status = response.status().as_u16();
        let read: Value = response.json().await.unwrap_or(Value::Null);
        (status, read == created)
    });
    let results = join_all(pairs).await;
    let not_found = results.iter().filter(|(s, _)| *s == 404).count();
    let stale = results.iter().filter(|(s, same)| *s == 200 && !same).count();
    let other = results.iter().filter(|(s, _)| *s != 200 && *s != 404).count();
    assert_eq!(
        (not_found, stale, other),
        (0, 0, 0),
        "404s, stale reads, other statuses"
    );
}

fn producer(stack: &Stack) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", &stack.kafka_brokers)
        .create()
        .expect("producer")
}

/// Creates a warrior and waits until search finds it: its event, behind
/// whatever the test put in every partition, was applied.
async fn create_and_wait_until_searchable(stack: &Stack) {
    let created = stack.create(&new_warrior()).await;
    let id = created["id"].as_str().expect("id");
    poll_until(
        Duration::from_secs(20),
        "the event behind the poison to be applied",
        || async {
            let hits: Vec<Value> = stack
                .get(&format!("/warrior?t={}", &created["name"].as_str()?[5..]))
                .await
                .json()
                .await
                .ok()?;
            hits.iter().any(|w| w["id"] == id).then_some(())
        },
    )
    .await;
}

/// Reads the dead-letter topic until `wanted` messages passed `is_ours`
/// (within 30 s); returns their `dlq-error` headers.
async fn dead_lettered(
    stack: &Stack,
    wanted: usize,
    mut is_ours: impl FnMut(&BorrowedMessage<'_>) -> bool,
) -> Vec<String> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &stack.kafka_brokers)
        .set("group.id", format!("test-dlq-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&["warrior-events.dlq"]).expect("subscribe");
    let mut stream = consumer.stream();
    let mut errors = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while errors.len() < wanted {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let message = tokio::time::timeout(remaining, stream.next())
            .await
            .expect("every poison message reaches the DLQ in time")
            .expect("stream open")
            .expect("Kafka message");
        if !is_ours(&message) {
            continue;
        }
        let headers = message.headers().expect("DLQ headers");
        let error = headers
            .iter()
            .find(|h| h.key == "dlq-error")
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        errors.push(error);
    }
    errors
}

#[tokio::test]
async fn a_poison_message_goes_to_the_dlq_and_later_events_are_still_applied() {
    let stack = Stack::from_env();
    let marker = format!("poison-{}", uuid::Uuid::new_v4());
    let dead_lettered_before = stack.query_metric("dlq_messages_total").await;
    let producer = producer(&stack);
    // One poison message in every partition, so whichever partition the next
    // warrior lands in, its event sits behind a poison message.
    for partition in 0..3 {
        let record: FutureRecord<'_, str, str> =
            FutureRecord::to("warrior-events").partition(partition).payload(&marker);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .expect("poison produced");
    }
    create_and_wait_until_searchable(&stack).await;

    let errors = dead_lettered(&stack, 3, |message| message.payload() == Some(marker.as_bytes())).await;
    assert!(
        errors.iter().all(|e| !e.is_empty()),
        "the reason travels in a header: {errors:?}"
    );
    poll_until(
        Duration::from_secs(10),
        "dlq_messages_total to count the three",
        || async { (stack.query_metric("dlq_messages_total").await >= dead_lettered_before + 3.0).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn an_event_the_read_model_refuses_goes_to_the_dlq_and_later_events_are_still_applied() {
    let stack = Stack::from_env();
    let producer = producer(&stack);
    // Well-formed events whose name holds a NUL, which PostgreSQL's text
    // refuses: they decode, so only the read model can tell. One in every
    // partition, so whichever partition the next warrior lands in, its event
    // sits behind one.
    let mut poisoned = Vec::new();
    for partition in 0..3 {
        let id = uuid::Uuid::now_v7();
        let payload = serde_json::json!({
            "event_id": uuid::Uuid::now_v7(),
            "event_type": "WarriorCreated",
            "aggregate_id": id,
            "version": 1,
            "schema_version": 2,
            "occurred_at": "2026-11-27T00:00:00Z",
            "data": {"name": "Nul\u{0}Warrior", "dob": "1990-01-01", "fight_skills": ["Judo"]},
        })
        .to_string();
        let key = id.to_string();
        let record = FutureRecord::to("warrior-events")
            .partition(partition)
            .key(&key)
            .payload(&payload);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .expect("refused event produced");
        poisoned.push(key);
    }
    create_and_wait_until_searchable(&stack).await;

    // Each once, though a redelivery could put one on the topic twice.
    let errors = dead_lettered(&stack, 3, |message| {
        let key = message.key().and_then(|k| std::str::from_utf8(k).ok());
        match poisoned.iter().position(|p| Some(p.as_str()) == key) {
            Some(index) => {
                poisoned.swap_remove(index);
                true
            }
            None => false,
        }
    })
    .await;
    for error in errors {
        assert!(
            error.contains("refused"),
            "the database's refusal travels in a header: {error:?}"
        );
    }
}
