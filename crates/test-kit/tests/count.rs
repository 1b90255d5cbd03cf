//! The live-warrior count through the gateway, alone in its test binary:
//! cargo runs test binaries one after another, so no other test creates or
//! deletes warriors meanwhile and the count can be checked exactly, once
//! the writes of the binaries before it are projected.

use std::time::Duration;

use test_kit::{new_warrior, poll_until, Stack};

#[tokio::test]
async fn count_follows_a_create_and_a_delete_exactly() {
    let stack = Stack::from_env();
    stack.wait_until_settled(Duration::from_secs(60));
    let before = stack.count().await;
    let created = stack.create(&new_warrior()).await;
    poll_until(
        Duration::from_secs(5),
        "the count to include the new warrior",
        || async { (stack.count().await == before + 1).then_some(()) },
    )
    .await;
    let id = created["id"].as_str().expect("id");
    let deleted = stack
        .http
        .delete(stack.at(&format!("/warrior/{id}")))
        .send()
        .await
        .expect("gateway reachable");
    assert_eq!(deleted.status(), 204);
    poll_until(
        Duration::from_secs(5),
        "the count to drop the deleted warrior",
        || async { (stack.count().await == before).then_some(()) },
    )
    .await;
}
