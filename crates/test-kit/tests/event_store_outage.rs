//! Lookups from a query-service that cannot reach the event store: it has
//! no way to tell whether a row it holds is the warrior's newest version,
//! so it answers only what cannot have changed since (a deletion is final).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;
use test_kit::{new_warrior, poll_until, row_version, Spare, SpareKind, Stack};

/// Nothing listens on port 1: connecting is refused at once.
const UNREACHABLE_EVENT_STORE: &str = "postgres://hammer:hammer@127.0.0.1:1/eventstore";

async fn projected_version(read_model: &PgPool, id: &str, version: i64) {
    let id = id.parse().expect("a UUID");
    poll_until(Duration::from_secs(10), "the projection of the write", || async {
        (row_version(read_model, id).await == Some(version)).then_some(())
    })
    .await;
}

/// Replaces the warrior with a new random one (a new version).
async fn rename(stack: &Stack, id: &str) {
    let renamed = stack
        .http
        .put(stack.at(&format!("/warrior/{id}")))
        .json(&new_warrior())
        .send()
        .await
        .expect("gateway reachable");
    assert_eq!(renamed.status(), StatusCode::OK);
}

#[tokio::test]
async fn without_the_event_store_a_lookup_never_serves_a_row_it_cannot_confirm_current() {
    let stack = Stack::from_env();
    stack.dev(&["up"]);
    let read_model = PgPool::connect(&stack.read_model_url).await.expect("read model");
    let live = stack.create(&new_warrior()).await;
    let live_id = live["id"].as_str().expect("id").to_owned();
    let gone = stack.create(&new_warrior()).await;
    let gone_id = gone["id"].as_str().expect("id").to_owned();
    let deleted = stack
        .http
        .delete(stack.at(&format!("/warrior/{gone_id}")))
        .send()
        .await
        .expect("gateway reachable");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    rename(&stack, &live_id).await;
    projected_version(&read_model, &live_id, 2).await;
    projected_version(&read_model, &gone_id, 2).await;
    // The rename acknowledged but not projected yet, as during any
    // projection lag: the row still holds the created version.
    sqlx::query("UPDATE warriors SET version = 1, name = $2 WHERE id = $1::uuid")
        .bind(&live_id)
        .bind(live["name"].as_str().expect("name"))
        .execute(&read_model)
        .await
        .expect("roll the row back");

    let spare = Spare::start(
        &stack,
        SpareKind::Query,
        18096,
        &[
            ("EVENT_STORE_URL", UNREACHABLE_EVENT_STORE),
            ("KAFKA_BROKERS", "127.0.0.1:1"),
        ],
    )
    .await;
    let lookup = |id: String| {
        let url = format!("{}/warrior/{id}", spare.base_url);
        let http = stack.http.clone();
        async move { http.get(url).send().await.expect("spare reachable") }
    };
    let stale = lookup(live_id.clone()).await;
    assert_eq!(
        stale.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "the row may be older than an acknowledged write: not served"
    );
    assert_eq!(
        stale.headers()["content-type"],
        "application/problem+json",
        "the 503 is a problem"
    );
    let problem: Value = stale.json().await.expect("problem JSON");
    assert!(
        problem["detail"].as_str().is_some_and(|d| d.contains("event store")),
        "the problem says why: {problem}"
    );
    assert_eq!(
        lookup(gone_id.clone()).await.status(),
        StatusCode::NOT_FOUND,
        "a deletion is final: still a 404"
    );
    spare.stop().await;

    // Leave the read model true again: a newer write replaces the row.
    rename(&stack, &live_id).await;
    projected_version(&read_model, &live_id, 3).await;
}
