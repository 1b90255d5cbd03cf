//! `query-service verify` finds drift between the read model and the event
//! store. Its own binary: it needs a quiet stack while it compares.

use std::time::Duration;

use sqlx::PgPool;
use test_kit::{new_warrior, Stack};

#[tokio::test]
async fn verify_is_clean_and_detects_a_corrupted_row() {
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
}
