//! Reads back what the relay published, to check delivery and order.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::Value;
use tokio::time::Instant;
use uuid::Uuid;

/// Reads `topic` from the beginning (with a throwaway consumer group) until
/// every warrior in `expected` has shown its expected number of versions, or
/// `deadline` passes. Returns, per warrior, the versions in the order they
/// appear on the topic (re-deliveries included).
pub async fn read_versions_from_topic(
    brokers: &str,
    topic: &str,
    expected: &HashMap<Uuid, i64>,
    deadline: Duration,
) -> HashMap<Uuid, Vec<i64>> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("test-reader-{}", Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut seen: HashMap<Uuid, Vec<i64>> = HashMap::new();
    let mut complete: HashSet<Uuid> = HashSet::new();
    let end = Instant::now() + deadline;
    let mut stream = consumer.stream();
    while complete.len() < expected.len() {
        let remaining = end.saturating_duration_since(Instant::now());
        let Ok(Some(message)) = tokio::time::timeout(remaining, stream.next()).await else {
            break;
        };
        let message = message.expect("Kafka message");
        let Some(envelope) = message.payload().and_then(|p| serde_json::from_slice::<Value>(p).ok()) else {
            continue;
        };
        let (Some(id), Some(version)) = (
            envelope["aggregate_id"].as_str().and_then(|s| s.parse::<Uuid>().ok()),
            envelope["version"].as_i64(),
        ) else {
            continue;
        };
        if let Some(&last) = expected.get(&id) {
            seen.entry(id).or_default().push(version);
            if version == last {
                complete.insert(id);
            }
        }
    }
    seen
}

/// Checks delivery and per-warrior order: the first appearances of each
/// warrior's versions must be exactly 1, 2, …, last. Re-deliveries (at least
/// once) may repeat a version later.
pub fn assert_complete_and_ordered(expected: &HashMap<Uuid, i64>, seen: &HashMap<Uuid, Vec<i64>>) {
    for (id, &last) in expected {
        let versions = seen.get(id).unwrap_or_else(|| panic!("no event of {id} reached Kafka"));
        let mut first_seen = Vec::new();
        for v in versions {
            if !first_seen.contains(v) {
                first_seen.push(*v);
            }
        }
        assert_eq!(
            first_seen,
            (1..=last).collect::<Vec<_>>(),
            "events of {id} missing or out of order"
        );
    }
}

/// The offsets consumer group `group` has committed for `partitions` of
/// `topic` (`None` where it has none), read from the group coordinator
/// without joining the group, so its members are not disturbed.
pub fn committed_offsets(brokers: &str, group: &str, topic: &str, partitions: &[i32]) -> Vec<(i32, Option<i64>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut wanted = TopicPartitionList::new();
    for &partition in partitions {
        wanted.add_partition(topic, partition);
    }
    let committed = consumer
        .committed_offsets(wanted, Duration::from_secs(10))
        .expect("committed offsets");
    committed
        .elements()
        .iter()
        .map(|element| {
            let offset = match element.offset() {
                Offset::Offset(offset) => Some(offset),
                _ => None,
            };
            (element.partition(), offset)
        })
        .collect()
}
