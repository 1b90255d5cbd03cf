//! The projector starts assigned partitions where the read model's rows
//! reach (the offsets stored with them), not where Kafka's committed offsets
//! say: a read model restored to an earlier point catches up by itself. Its
//! own binary: it stops query-service.

use std::time::Duration;

use sqlx::PgPool;
use test_kit::{new_warrior, poll_until, row_version, Stack};

/// The projector's topic and consumer group (the services' defaults).
const TOPIC: &str = "warrior-events";
const GROUP: &str = "warrior-read-projection";

#[tokio::test]
async fn a_read_model_restored_to_an_earlier_point_is_caught_up_from_its_own_offsets() {
    let stack = Stack::from_env();
    stack.dev(&["up"]);
    let read_model = PgPool::connect(&stack.read_model_url).await.expect("read model");
    let created = stack.create(&new_warrior()).await;
    let id: uuid::Uuid = created["id"].as_str().expect("id").parse().expect("UUID");
    poll_until(Duration::from_secs(10), "the row to be projected", || async {
        row_version(&read_model, id).await
    })
    .await;

    // As if restored from a backup taken a little earlier: the warrior's row
    // is gone and the stored offsets are back where they were then. Kafka's
    // committed offsets, meanwhile, are past its event.
    stack.dev(&["stop", "query-service"]);
    let stored: Vec<(i32, i64)> =
        sqlx::query_as("SELECT partition, next_offset FROM projection_offsets WHERE topic = $1 ORDER BY partition")
            .bind(TOPIC)
            .fetch_all(&read_model)
            .await
            .expect("stored offsets");
    assert!(!stored.is_empty(), "the read model stored no offsets");
    let partitions: Vec<i32> = stored.iter().map(|(partition, _)| *partition).collect();
    let committed = test_kit::committed_offsets(&stack.kafka_brokers, GROUP, TOPIC, &partitions);
    assert_eq!(committed.len(), stored.len());
    for ((partition, next), (kafka_partition, kafka)) in stored.iter().zip(&committed) {
        assert_eq!(partition, kafka_partition);
        assert!(
            kafka.is_some_and(|kafka| kafka >= *next),
            "partition {partition}: Kafka's committed offset {kafka:?} is not past the rows' {next}, \
             so a restart would re-read the event without the stored offsets"
        );
    }
    let mut restore = read_model.begin().await.expect("begin");
    for statement in [
        "DELETE FROM warrior_names WHERE id = $1",
        "DELETE FROM warriors WHERE id = $1",
    ] {
        sqlx::query(statement)
            .bind(id)
            .execute(&mut *restore)
            .await
            .expect("forget the warrior");
    }
    sqlx::query("UPDATE warrior_count SET live = live - 1")
        .execute(&mut *restore)
        .await
        .expect("count");
    // Nothing else writes meanwhile: its event is among the last few of its partition.
    sqlx::query("UPDATE projection_offsets SET next_offset = GREATEST(next_offset - 100, 0)")
        .execute(&mut *restore)
        .await
        .expect("rewind the offsets");
    restore.commit().await.expect("restore");
    stack.dev(&["start", "query-service"]);

    poll_until(Duration::from_secs(30), "the row projected again", || async {
        row_version(&read_model, id).await
    })
    .await;
    let (clean, report) = stack.verify(Duration::from_secs(10));
    assert!(clean, "{report}");
}
