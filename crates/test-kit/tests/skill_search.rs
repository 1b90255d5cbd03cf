//! Skill search beyond the newest rows. A test binary of its own: it creates
//! 2,000 warriors, which would push other tests' warriors out of the "50 most
//! recent" listing they look for, were they running beside it.

use std::time::Duration;

use serde_json::{json, Value};
use test_kit::{new_warrior, poll_until, Stack};

/// A skill none of the newest 2,000 warriors holds is found through the
/// search indexer's table of holders, which follows updates and deletions.
#[tokio::test]
async fn search_finds_skill_holders_beyond_the_newest_rows_and_follows_changes() {
    use futures::StreamExt;
    let stack = Stack::from_env();
    let marker = uuid::Uuid::new_v4().simple().to_string();
    let (kept, lost) = (format!("Tessen{marker}"), format!("Kusari{marker}"));
    let holder = stack
        .create(&json!({"name": "Holder", "dob": "1600-01-01", "fight_skills": [kept, lost]}))
        .await;
    let gone = stack
        .create(&json!({"name": "Gone", "dob": "1600-01-01", "fight_skills": [kept]}))
        .await;
    futures::stream::iter(0..2000)
        .for_each_concurrent(32, |_| async {
            stack.create(&new_warrior()).await;
        })
        .await;
    let changed = json!({"name": "Holder", "dob": "1600-01-01", "fight_skills": [kept]});
    let put = stack
        .http
        .put(stack.at(&format!("/warrior/{}", holder["id"].as_str().expect("id"))))
        .json(&changed)
        .send()
        .await
        .expect("gateway reachable");
    assert_eq!(put.status(), 200);
    let updated: Value = put.json().await.expect("JSON");
    let deleted = stack
        .http
        .delete(stack.at(&format!("/warrior/{}", gone["id"].as_str().expect("id"))))
        .send()
        .await
        .expect("gateway reachable");
    assert_eq!(deleted.status(), 204);

    let holders = |term: String| {
        let stack = &stack;
        async move {
            let hits: Vec<Value> = stack.search(&term).await.json().await.ok()?;
            Some(hits)
        }
    };
    poll_until(Duration::from_secs(10), "the updated holder alone", || async {
        holders(kept.clone())
            .await
            .filter(|hits| *hits == vec![updated.clone()])
    })
    .await;
    poll_until(Duration::from_secs(10), "no holder of the skill given up", || async {
        holders(lost.clone()).await.filter(Vec::is_empty)
    })
    .await;
}

/// Skills are matched case-insensitively the way the read model lowercased
/// them: a term beyond ASCII (a final sigma, a dotted capital I) is
/// lowercased by PostgreSQL too, so a skill's exact spelling finds it.
#[tokio::test]
async fn a_skill_beyond_ascii_is_found_by_its_exact_spelling() {
    let stack = Stack::from_env();
    let marker = uuid::Uuid::new_v4().simple().to_string();
    let skills = [format!("{marker}ΟΔΥΣΣΕΥΣ"), format!("İstanbul-Kılıç{marker}")];
    let created = stack
        .create(&json!({"name": "Sigma", "dob": "1600-01-01", "fight_skills": skills}))
        .await;
    for skill in &skills {
        stack
            .until_found_by(skill, &created, "the holder found by the skill as spelt")
            .await;
    }
}
