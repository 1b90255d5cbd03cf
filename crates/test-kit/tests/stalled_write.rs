//! A write stuck behind a lock in the event store gets a 503 that means
//! "nothing was written": the statement limit rolls its batch back before
//! the request time limit would answer without knowing. Its own binary: it
//! locks the events table, which would stall every other test's writes.

use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::PgPool;
use test_kit::{new_warrior, Stack};

#[tokio::test]
async fn a_create_stalled_on_a_lock_is_a_503_that_wrote_nothing() {
    let stack = Stack::from_env();
    let store = PgPool::connect(&stack.event_store_url).await.expect("event store");
    let mut lock = store.begin().await.expect("begin");
    sqlx::query("LOCK TABLE events IN EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock the events table");

    let name = format!("Stalled {}", uuid::Uuid::new_v4());
    let started = Instant::now();
    let response = stack
        .http
        .post(format!("{}/warrior", stack.command))
        .json(&json!({"name": name, "dob": "1990-01-01"}))
        .send()
        .await
        .expect("command-service reachable");
    let waited = started.elapsed();
    lock.rollback().await.expect("unlock");
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    assert!(
        waited < Duration::from_secs(8),
        "answered after {waited:?}: the request time limit's 503, not the statement limit's"
    );

    // The writer appends batches one after another: once a later create is
    // acknowledged, the stalled one has committed or never will.
    stack.create(&new_warrior()).await;
    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE data->>'name' = $1")
        .bind(&name)
        .fetch_one(&store)
        .await
        .expect("event store");
    assert_eq!(written, 0, "the 503 told the client to retry a create that was written");
}
