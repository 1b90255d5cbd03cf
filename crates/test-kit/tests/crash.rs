//! Crash safety of the command side: an acknowledged write survives a
//! `kill -9` of command-service between commit and publish, and still
//! reaches Kafka and the read model once a relay runs again.
//!
//! Its own test binary, so stopping the stack's command-service cannot
//! disturb other tests (cargo runs test binaries one after another).

use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;
use test_kit::{new_warrior, poll_until, Spare, SpareKind, Stack};

async fn outbox_holds(pool: &PgPool, id: uuid::Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox JOIN events USING (position) WHERE aggregate_id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("event store reachable")
}

#[tokio::test]
async fn event_committed_but_unpublished_at_kill_9_is_published_after_restart() {
    let stack = Stack::from_env();
    let event_store = PgPool::connect(&stack.event_store_url).await.expect("event store");

    // No relay may run while the write happens: stop the stack's instance and
    // start one with its relay switched off.
    stack.dev(&["kill9", "command-service"]);
    let spare = Spare::start(&stack, SpareKind::Command, 18091, &[("RELAY_ENABLED", "false")]).await;
    let response = stack
        .http
        .post(format!("{}/warrior", spare.base_url))
        .json(&new_warrior())
        .send()
        .await
        .expect("spare reachable");
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.expect("JSON");
    let id: uuid::Uuid = created["id"].as_str().expect("id").parse().expect("UUID");
    assert_eq!(outbox_holds(&event_store, id).await, 1, "committed, not yet published");

    spare.kill().await;
    stack.dev(&["up"]);

    let location = format!("/warrior/{id}");
    let read: Value = poll_until(Duration::from_secs(15), "the warrior to be readable", || async {
        let response = stack.get(&location).await;
        if response.status() == 200 {
            response.json().await.ok()
        } else {
            None
        }
    })
    .await;
    assert_eq!(read, created);
    poll_until(Duration::from_secs(5), "the outbox row to be acknowledged", || async {
        (outbox_holds(&event_store, id).await == 0).then_some(())
    })
    .await;
    stack.wait_until_settled(Duration::from_secs(60));
}
