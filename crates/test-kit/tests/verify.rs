//! `query-service verify` finds drift between the read model and the event
//! store. Its own binary: it needs a quiet stack while it compares.

use std::time::Duration;

use sqlx::PgPool;
use test_kit::{new_warrior, Stack};
use uuid::Uuid;

/// Runs `damage` on warrior `id`'s read-model rows, checks that verify
/// reports `id` as `kind`, runs `repair`, and checks that verify is clean
/// again. Both statements take the id as `$1`.
async fn reports_drift(stack: &Stack, read_model: &PgPool, id: Uuid, kind: &str, damage: &str, repair: &str) {
    sqlx::query(damage).bind(id).execute(read_model).await.expect("damage");
    let (clean, report) = stack.verify(Duration::ZERO);
    sqlx::query(repair).bind(id).execute(read_model).await.expect("repair");
    assert!(!clean, "verify must report {kind} after `{damage}`");
    assert!(report.contains(&format!("{kind} {id}")), "{report}");
    assert!(stack.verify(Duration::ZERO).0, "clean again once repaired");
}

#[tokio::test]
async fn verify_is_clean_and_detects_a_corrupted_misdated_or_unindexed_row() {
    let stack = Stack::from_env();
    let created = stack.create(&new_warrior()).await;
    let id: Uuid = created["id"].as_str().expect("id").parse().expect("UUID");
    assert_eq!(stack.get(&format!("/warrior/{id}")).await.status(), 200);
    let (clean, report) = stack.verify(Duration::from_secs(10));
    assert!(clean, "verify should be clean on a settled stack:\n{report}");
    let read_model = PgPool::connect(&stack.read_model_url).await.expect("read model");

    reports_drift(
        &stack,
        &read_model,
        id,
        "stale",
        "UPDATE warriors SET name = name || ' corrupted' WHERE id = $1",
        "UPDATE warriors SET name = left(name, -10) WHERE id = $1",
    )
    .await;
    // A wrong creation time misplaces the warrior in the "most recently
    // created" listing.
    reports_drift(
        &stack,
        &read_model,
        id,
        "stale",
        "UPDATE warriors SET created_at = created_at + interval '1 second' WHERE id = $1",
        "UPDATE warriors SET created_at = created_at - interval '1 second' WHERE id = $1",
    )
    .await;

    // The search index is part of the read model: a name lost by it is drift.
    // (Once indexed: a name still queued for the indexer is not lost.)
    let name = created["name"].as_str().expect("name").to_owned();
    stack.until_found_by(&name, &created, "the name to be indexed").await;
    reports_drift(
        &stack,
        &read_model,
        id,
        "unindexed",
        "UPDATE warrior_names SET search_text = 'lost' WHERE id = $1",
        "UPDATE warrior_names n SET search_text = w.search_text FROM warriors w WHERE n.id = $1 AND w.id = n.id",
    )
    .await;
}
