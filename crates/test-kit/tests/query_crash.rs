//! `kill -9` of query-service in the middle of a stream of creates: after a
//! restart the count is exact and the read model matches the event store.
//! Its own binary: no other writer may run while the count is compared.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use test_kit::{new_warrior, poll_until, Stack};

const CREATES: usize = 5_000;

#[tokio::test]
async fn kill_9_of_query_service_mid_stream_loses_and_doubles_nothing() {
    let stack = Stack::from_env();
    stack.dev(&["up"]);
    let before = stack.count().await;
    let done = AtomicUsize::new(0);
    let creates = futures::stream::iter(0..CREATES)
        .map(|_| async {
            let response = stack
                .http
                .post(format!("{}/warrior", stack.command))
                .json(&new_warrior())
                .send()
                .await
                .expect("command-service reachable");
            assert_eq!(response.status(), 201);
            done.fetch_add(1, Ordering::Relaxed);
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>();
    let crash = async {
        poll_until(Duration::from_secs(60), "a fifth of the creates", || async {
            (done.load(Ordering::Relaxed) >= CREATES / 5).then_some(())
        })
        .await;
        stack.dev(&["kill9", "query-service"]);
        stack.dev(&["up"]);
    };
    tokio::join!(creates, crash);

    let expected = before + CREATES as i64;
    poll_until(Duration::from_secs(60), "the count to reach every create", || async {
        (stack.count().await == expected).then_some(())
    })
    .await;
    let (clean, report) = stack.verify(Duration::from_secs(10));
    assert!(clean, "{report}");
}
