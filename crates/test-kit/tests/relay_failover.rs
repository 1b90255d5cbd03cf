//! Two command-service instances: exactly one relays at a time; when it is
//! killed the other takes over, and nothing is lost or reordered.
//!
//! Its own test binary: it kills the stack's command-service.

use std::time::Duration;

use sqlx::PgPool;
use test_kit::{
    assert_complete_and_ordered, poll_until, read_versions_from_topic, write_steadily, Spare, SpareKind, Stack,
};

/// Backends holding the relay's advisory lock (key "outbox" in ASCII).
async fn relay_lock_holders(pool: &PgPool) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_locks
         WHERE locktype = 'advisory' AND granted AND objsubid = 1
           AND ((classid::bigint << 32) | objid::bigint) = x'6f7574626f78'::bigint",
    )
    .fetch_all(pool)
    .await
    .expect("event store reachable")
}

#[tokio::test]
async fn only_one_instance_relays_and_the_other_takes_over_when_it_dies() {
    let stack = Stack::from_env();
    let event_store = PgPool::connect(&stack.event_store_url).await.expect("event store");
    stack.dev(&["up"]);
    let spare = Spare::start(&stack, SpareKind::Command, 18093, &[]).await;

    let holders = relay_lock_holders(&event_store).await;
    assert_eq!(holders.len(), 1, "exactly one relay holds the lease: {holders:?}");
    let first_holder = holders[0];

    // Write through the spare while the stack's instance (the first holder,
    // started earlier) is killed mid-stream.
    let writes = write_steadily(&stack, &spare.base_url, 4, Duration::from_secs(4));
    let kill = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        stack.dev(&["kill9", "command-service"]);
    };
    let (written, ()) = tokio::join!(writes, kill);

    let new_holder = poll_until(Duration::from_secs(10), "the spare to take the lease over", || async {
        let holders = relay_lock_holders(&event_store).await;
        assert!(holders.len() <= 1, "two relays at once: {holders:?}");
        holders.first().copied().filter(|pid| *pid != first_holder)
    })
    .await;
    assert_ne!(new_holder, first_holder);

    let seen = read_versions_from_topic(
        &stack.kafka_brokers,
        "warrior-events",
        &written,
        Duration::from_secs(60),
    )
    .await;
    assert_complete_and_ordered(&written, &seen);

    spare.kill().await;
    stack.dev(&["up"]);
    stack.wait_until_settled(Duration::from_secs(60));
}
