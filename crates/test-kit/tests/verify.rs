//! `query-service verify` finds drift between the read model and the event
//! store. Its own binary: it needs a quiet stack while it compares.

use std::time::Duration;

use sqlx::PgPool;
use test_kit::{new_warrior, poll_until, Stack};

#[tokio::test]
async fn verify_is_clean_and_detects_a_corrupted_or_misdated_row() {
    let stack = Stack::from_env();
    let created = stack.create(&new_warrior()).await;
    let id: uuid::Uuid = created["id"].as_str().expect("id").parse().expect("UUID");
    assert_eq!(stack.get(&format!("/warrior/{id}")).await.status(), 200);
    let (clean, report) = stack.verify(Duration::from_secs(10));
    assert!(clean, "verify should be clean on a settled stack:\n{report}");

    let read_model = PgPool::connect(&stack.read_model_url).await.expect("read model");
    sqlx::query("UPDATE warriors SET name = 'Corrupted' WHERE id = $1")
        .bind(id)
        .execute(&read_model)
        .await
        .expect("corrupt a row");
    let (clean, report) = stack.verify(Duration::ZERO);
    sqlx::query("UPDATE warriors SET name = $2 WHERE id = $1")
        .bind(id)
        .bind(created["name"].as_str().expect("name"))
        .execute(&read_model)
        .await
        .expect("repair the row");
    assert!(!clean, "verify must report the corrupted row");
    assert!(report.contains(&format!("stale {id}")), "{report}");
    assert!(stack.verify(Duration::ZERO).0, "clean again once repaired");

    // A wrong creation time misplaces the warrior in the "most recently
    // created" listing.
    sqlx::query("UPDATE warriors SET created_at = created_at + interval '1 second' WHERE id = $1")
        .bind(id)
        .execute(&read_model)
        .await
        .expect("misdate a row");
    let (clean, report) = stack.verify(Duration::ZERO);
    sqlx::query("UPDATE warriors SET created_at = created_at - interval '1 second' WHERE id = $1")
        .bind(id)
        .execute(&read_model)
        .await
        .expect("repair the row");
    assert!(!clean, "verify must report the misdated row");
    assert!(report.contains(&format!("stale {id}")), "{report}");
    assert!(stack.verify(Duration::ZERO).0, "clean again once repaired");

    // The search index is part of the read model: a name lost by it is drift.
    // (Once indexed: a name still queued for the indexer is not lost.)
    let name = created["name"].as_str().expect("name").to_owned();
    poll_until(Duration::from_secs(10), "the name to be indexed", || async {
        let hits: Vec<serde_json::Value> = stack.search(&name).await.json().await.ok()?;
        hits.contains(&created).then_some(())
    })
    .await;
    sqlx::query("UPDATE warrior_names SET search_text = 'lost' WHERE id = $1")
        .bind(id)
        .execute(&read_model)
        .await
        .expect("corrupt the search index");
    let (clean, report) = stack.verify(Duration::ZERO);
    sqlx::query(
        "UPDATE warrior_names n SET search_text = w.search_text FROM warriors w WHERE n.id = $1 AND w.id = n.id",
    )
    .bind(id)
    .execute(&read_model)
    .await
    .expect("repair the search index");
    assert!(!clean, "verify must report the lost name");
    assert!(report.contains(&format!("unindexed {id}")), "{report}");
    assert!(stack.verify(Duration::ZERO).0, "clean again once repaired");
}
