//! Kafka down under writes: no write fails, both services say they are not
//! ready (and why), lookups still read their writes (from the event store),
//! and once Kafka is back every event reaches the topic, in per-warrior
//! order, and the read model catches up promptly.
//!
//! Its own test binary: stopping Kafka must not disturb other tests.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use test_kit::{assert_complete_and_ordered, new_warrior, poll_until, read_versions_from_topic, write_steadily, Stack};

/// Status and body of `GET /ready` on the command and the query service.
async fn readiness(stack: &Stack) -> Vec<(u16, Value)> {
    let mut answers = Vec::new();
    for base in [&stack.command, &stack.query] {
        let response = stack.http.get(format!("{base}/ready")).send().await.expect("reachable");
        let status = response.status().as_u16();
        answers.push((status, response.json().await.expect("JSON")));
    }
    answers
}

/// Lookups the query service answered from the event store because the
/// projection stayed behind, or was known to be stalled (0 before the first).
async fn fallbacks(stack: &Stack) -> u64 {
    stack
        .query_metric("read_your_writes_fallbacks_total{reason=\"projection_")
        .await as u64
}

/// With nothing reaching the read model, lookups still reflect each
/// acknowledged create, update and delete: the query service answers them
/// from the event store once its wait for the projection ends. (Lookups go
/// straight to the one query service whose counter is read.)
async fn lookups_read_their_writes_from_the_event_store(stack: &Stack) {
    let before = fallbacks(stack).await;
    let created = stack.create(&new_warrior()).await;
    let id = created["id"].as_str().expect("id");
    let path = format!("/warrior/{id}");
    let lookup = || stack.http.get(format!("{}{path}", stack.query)).send();
    let looked_up = lookup().await.expect("reachable");
    assert_eq!(looked_up.status(), 200, "an acknowledged create must be found");
    assert_eq!(looked_up.json::<Value>().await.expect("JSON"), created);

    let renamed = json!({"name": "Renamed While Kafka Is Down", "dob": "1600-01-01", "fight_skills": ["Bo"]});
    let updated = stack
        .http
        .put(stack.at(&path))
        .json(&renamed)
        .send()
        .await
        .expect("reachable");
    assert_eq!(updated.status(), 200);
    let updated: Value = updated.json().await.expect("JSON");
    assert_eq!(updated["version"], 2);
    let looked_up = lookup().await.expect("reachable");
    assert_eq!(looked_up.status(), 200);
    assert_eq!(looked_up.headers()["etag"], "\"2\"");
    assert_eq!(looked_up.json::<Value>().await.expect("JSON"), updated);

    let deleted = stack.http.delete(stack.at(&path)).send().await.expect("reachable");
    assert_eq!(deleted.status(), 204);
    let looked_up = lookup().await.expect("reachable");
    assert_eq!(looked_up.status(), 404, "an acknowledged delete must be seen");
    assert_eq!(
        fallbacks(stack).await - before,
        3,
        "each lookup was answered from the event store"
    );
}

/// From Kafka's return to a read model holding every write. The projector
/// once paused 500 ms per consumer error queued during the outage and
/// stood still for 30-120 s after Kafka was back, then ~13 s while the
/// clients' reconnect backoff grew to 10 s and the group waited out a
/// 10 s session of its pre-outage member; both are bounded lower now.
const CATCH_UP: Duration = Duration::from_secs(15);

#[tokio::test]
async fn writes_succeed_and_are_read_while_kafka_is_down_then_are_published_in_order_and_projected_promptly() {
    let stack = Stack::from_env();
    stack.dev(&["stop", "kafka"]);
    let not_ready = (503, json!({"database": true, "kafka": false}));
    assert_eq!(readiness(&stack).await, vec![not_ready.clone(), not_ready]);
    for base in [&stack.command, &stack.query] {
        let health = stack
            .http
            .get(format!("{base}/health"))
            .send()
            .await
            .expect("reachable");
        assert_eq!(health.status(), 200, "{base} must stay alive without Kafka");
    }
    lookups_read_their_writes_from_the_event_store(&stack).await;
    let written = write_steadily(&stack, &stack.command, 8, Duration::from_secs(10)).await;
    stack.dev(&["start", "kafka"]);
    let back = Instant::now();
    assert!(!written.is_empty());
    let ready = (200, json!({"database": true, "kafka": true}));
    poll_until(Duration::from_secs(60), "both services ready again", || async {
        let answers = readiness(&stack).await;
        (answers == vec![ready.clone(), ready.clone()]).then_some(())
    })
    .await;

    let seen = read_versions_from_topic(
        &stack.kafka_brokers,
        "warrior-events",
        &written,
        Duration::from_secs(90),
    )
    .await;
    assert_complete_and_ordered(&written, &seen);
    stack.wait_until_settled(CATCH_UP.saturating_sub(back.elapsed()));
    eprintln!("read model caught up {:?} after Kafka's return", back.elapsed());
}
