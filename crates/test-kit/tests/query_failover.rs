//! Two query-service instances in the projector's consumer group: when one
//! is killed its partitions move to the other, and nothing is lost or
//! applied twice. Its own binary: it kills the stack's query-service.

use std::time::Duration;

use test_kit::{write_steadily, Spare, SpareKind, Stack};

#[tokio::test]
async fn partitions_move_to_the_survivor_and_nothing_is_lost_or_doubled() {
    let stack = Stack::from_env();
    stack.dev(&["up"]);
    let before = stack.count().await;
    let spare = Spare::start(&stack, SpareKind::Query, 18094, &[]).await;

    let writes = write_steadily(&stack, &stack.command, 4, Duration::from_secs(6));
    let kill = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        stack.dev(&["kill9", "query-service"]);
    };
    let (written, ()) = tokio::join!(writes, kill);

    // Only the spare projects now: the read model must come to hold every
    // write at its last version (verify compares it with the event store;
    // lookups would not tell, they answer from the event store when the
    // projection lags), and the count each create once.
    let (clean, report) = stack.verify(Duration::from_secs(30));
    assert!(clean, "the survivor did not project every write: {report}");
    let count: serde_json::Value = stack
        .http
        .get(format!("{}/counting-warriors", spare.base_url))
        .send()
        .await
        .expect("spare reachable")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        count["count"].as_i64(),
        Some(before + written.len() as i64),
        "nothing lost or doubled"
    );

    spare.stop().await;
    stack.dev(&["up"]);
}
