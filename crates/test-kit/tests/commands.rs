//! Update, delete, optimistic concurrency, idempotency and history, through
//! the gateway against the real stack.

use futures::future::join_all;
use serde_json::{json, Value};
use std::time::Duration;

use test_kit::{new_warrior, poll_until, Stack};

async fn put(stack: &Stack, id: &str, body: &Value, if_match: Option<&str>) -> reqwest::Response {
    let mut request = stack.http.put(stack.at(&format!("/warrior/{id}"))).json(body);
    if let Some(tag) = if_match {
        request = request.header("if-match", tag);
    }
    request.send().await.expect("reachable")
}

async fn delete(stack: &Stack, id: &str, if_match: Option<&str>) -> reqwest::Response {
    let mut request = stack.http.delete(stack.at(&format!("/warrior/{id}")));
    if let Some(tag) = if_match {
        request = request.header("if-match", tag);
    }
    request.send().await.expect("reachable")
}

/// The warrior's audit trail, as the API returns it.
async fn history(stack: &Stack, id: &str) -> Vec<Value> {
    stack
        .get(&format!("/warrior/{id}/events"))
        .await
        .json()
        .await
        .expect("JSON")
}

/// Sends `n` concurrent PUTs with fresh bodies; returns their statuses.
async fn concurrent_puts(stack: &Stack, id: &str, n: usize, if_match: Option<&str>) -> Vec<u16> {
    join_all((0..n).map(|_| async move { put(stack, id, &new_warrior(), if_match).await.status().as_u16() })).await
}

fn id_of(warrior: &Value) -> String {
    warrior["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn replace_bumps_the_version_and_is_read_back() {
    let stack = Stack::from_env();
    let id = id_of(&stack.create(&new_warrior()).await);
    let replacement = json!({"name": "Renamed", "dob": "1600-01-01", "fight_skills": null});
    let response = put(&stack, &id, &replacement, Some("\"1\"")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], "\"2\"");
    let updated: Value = response.json().await.expect("JSON");
    assert_eq!(updated["version"], 2);
    assert_eq!(updated["fight_skills"], json!([]));

    // Read your writes holds for updates too, for the very first GET.
    let read: Value = stack.get(&format!("/warrior/{id}")).await.json().await.expect("JSON");
    assert_eq!(read, updated);
}

#[tokio::test]
async fn replace_is_validated_like_create() {
    let stack = Stack::from_env();
    let id = id_of(&stack.create(&new_warrior()).await);
    let response = put(&stack, &id, &json!({"name": "", "dob": "2000-01-01"}), None).await;
    assert_eq!(response.status(), 422);
    let response = put(&stack, &id, &json!({"name": "A", "dob": 1}), None).await;
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn stale_if_match_is_a_412_and_writes_nothing() {
    let stack = Stack::from_env();
    let id = id_of(&stack.create(&new_warrior()).await);
    let response = put(&stack, &id, &new_warrior(), Some("\"7\"")).await;
    assert_eq!(response.status(), 412);
    let response = delete(&stack, &id, Some("\"2\"")).await;
    assert_eq!(response.status(), 412);
    let history = history(&stack, &id).await;
    assert_eq!(history.len(), 1);
}

/// RFC 9110: If-Match may list several entity tags; any of them matching is enough.
#[tokio::test]
async fn if_match_with_a_list_applies_when_one_tag_names_the_current_version() {
    let stack = Stack::from_env();
    let id = id_of(&stack.create(&new_warrior()).await);
    assert_eq!(
        put(&stack, &id, &new_warrior(), Some("\"7\", \"1\"")).await.status(),
        200
    );
    assert_eq!(
        put(&stack, &id, &new_warrior(), Some("\"1\", W/\"3\"")).await.status(),
        412
    );
    assert_eq!(delete(&stack, &id, Some("W/\"9\", \"2\"")).await.status(), 204);
    assert_eq!(history(&stack, &id).await.len(), 3);
}

#[tokio::test]
async fn of_fifty_concurrent_puts_with_the_same_if_match_exactly_one_wins() {
    let stack = Stack::from_env();
    let id = id_of(&stack.create(&new_warrior()).await);
    let statuses = concurrent_puts(&stack, &id, 50, Some("\"1\"")).await;
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 412).count(), 49, "{statuses:?}");
    let history = history(&stack, &id).await;
    assert_eq!(history.len(), 2);
}

#[tokio::test]
async fn fifty_concurrent_puts_without_if_match_all_apply_in_sequence() {
    let stack = Stack::from_env();
    let id = id_of(&stack.create(&new_warrior()).await);
    let statuses = concurrent_puts(&stack, &id, 50, None).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let history = history(&stack, &id).await;
    let versions: Vec<i64> = history
        .iter()
        .map(|e| e["version"].as_i64().expect("version"))
        .collect();
    assert_eq!(versions, (1..=51).collect::<Vec<_>>());
}

/// A long history comes a page at a time, each naming the next in `Link`.
#[tokio::test]
async fn history_pages_follow_their_next_links_to_the_end() {
    let stack = Stack::from_env();
    let id = stack.create(&new_warrior()).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    for n in 2..=5 {
        let body = json!({"name": format!("Page {n}"), "dob": "1990-01-01"});
        assert_eq!(put(&stack, &id, &body, None).await.status(), 200);
    }
    let mut versions = Vec::new();
    let mut next = Some(format!("/warrior/{id}/events?limit=2"));
    let mut pages = 0;
    while let Some(path) = next.take() {
        let response = stack.get(&path).await;
        assert_eq!(response.status(), 200, "{path}");
        next = response.headers().get("link").map(|link| {
            let link = link.to_str().expect("ASCII");
            let target = link
                .strip_prefix('<')
                .and_then(|rest| rest.strip_suffix(">; rel=\"next\""))
                .unwrap_or_else(|| panic!("a next link: {link}"));
            target.to_owned()
        });
        let page: Vec<Value> = response.json().await.expect("JSON");
        versions.extend(page.iter().map(|event| event["version"].as_i64().expect("version")));
        pages += 1;
    }
    assert_eq!(versions, [1, 2, 3, 4, 5]);
    assert_eq!(pages, 3);

    let past_the_end = stack.get(&format!("/warrior/{id}/events?after_version=5")).await;
    assert_eq!(past_the_end.status(), 200);
    assert!(past_the_end.headers().get("link").is_none());
    assert_eq!(
        past_the_end.json::<Vec<Value>>().await.expect("JSON"),
        Vec::<Value>::new()
    );
    let unknown = uuid::Uuid::now_v7();
    assert_eq!(
        stack
            .get(&format!("/warrior/{unknown}/events?after_version=3"))
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn history_parameters_out_of_range_are_a_400_naming_them() {
    let stack = Stack::from_env();
    let id = stack.create(&new_warrior()).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("after_version=-1", "after_version"),
    ] {
        let response = stack.get(&format!("/warrior/{id}/events?{query}")).await;
        assert_eq!(response.status(), 400, "{query}");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        let problem: Value = response.json().await.expect("JSON");
        assert!(problem["errors"][field].is_string(), "{query}: {problem}");
    }
}

#[tokio::test]
async fn delete_hides_the_warrior_but_keeps_its_history() {
    let stack = Stack::from_env();
    let id = id_of(&stack.create(&new_warrior()).await);
    assert_eq!(delete(&stack, &id, Some("\"1\"")).await.status(), 204);
    // Read your writes: the first GET after the 204 already says 404.
    assert_eq!(stack.get(&format!("/warrior/{id}")).await.status(), 404);
    assert_eq!(delete(&stack, &id, None).await.status(), 404);
    assert_eq!(put(&stack, &id, &new_warrior(), None).await.status(), 404);

    let history = history(&stack, &id).await;
    let types: Vec<&str> = history.iter().map(|e| e["type"].as_str().expect("type")).collect();
    assert_eq!(types, ["WarriorCreated", "WarriorDeleted"]);
    for event in &history {
        for field in ["event_id", "version", "occurred_at", "data"] {
            assert!(event.get(field).is_some(), "{field} missing in {event}");
        }
    }
}

#[tokio::test]
async fn unknown_warriors_cannot_be_changed() {
    let stack = Stack::from_env();
    let id = uuid::Uuid::new_v4().to_string();
    assert_eq!(put(&stack, &id, &new_warrior(), None).await.status(), 404);
    assert_eq!(delete(&stack, &id, None).await.status(), 404);
    assert_eq!(stack.get(&format!("/warrior/{id}/events")).await.status(), 404);
}

#[tokio::test]
async fn a_retried_post_with_the_same_idempotency_key_creates_once() {
    let stack = Stack::from_env();
    let key = uuid::Uuid::new_v4().to_string();
    let body = new_warrior();
    let send = |body: Value| {
        let stack = &stack;
        let key = key.clone();
        async move {
            stack
                .http
                .post(stack.at("/warrior"))
                .header("idempotency-key", key)
                .json(&body)
                .send()
                .await
                .expect("reachable")
        }
    };
    let first = send(body.clone()).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.expect("JSON");
    let again = send(body.clone()).await;
    assert_eq!(again.status(), 201);
    let again: Value = again.json().await.expect("JSON");
    assert_eq!(again, first);

    let id = id_of(&first);
    let history = history(&stack, &id).await;
    assert_eq!(history.len(), 1, "a repeat must append nothing");

    let other = send(new_warrior()).await;
    assert_eq!(other.status(), 422);
    assert_eq!(other.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn a_malformed_idempotency_key_is_refused_on_both_create_routes() {
    let stack = Stack::from_env();
    let too_long = "k".repeat(256);
    // With a valid body, and with an invalid one: the key is judged first.
    let bodies = [
        json!({"name": format!("idem-{}", uuid::Uuid::new_v4()), "dob": "2000-01-01", "fight_skills": ["Judo"]}),
        json!({"name": ""}),
    ];
    for path in ["/warrior", "/api/v1/commands/warriors"] {
        for (key, body) in ["a\tb", "order\t42", too_long.as_str()]
            .into_iter()
            .flat_map(|key| bodies.iter().map(move |body| (key, body)))
        {
            let response = stack
                .http
                .post(stack.at(path))
                .header("idempotency-key", key)
                .json(body)
                .send()
                .await
                .expect("reachable");
            assert_eq!(response.status(), 400, "{path} with key {key:?} and {body}");
            assert_eq!(response.headers()["content-type"], "application/problem+json");
            let problem: Value = response.json().await.expect("JSON");
            assert!(problem["errors"]["Idempotency-Key"].is_string(), "{problem}");
        }
    }
}

/// An event of the Java seed's first schema (camelCase `fightSkills`),
/// stored as it was then: every reader shows it in today's shape.
#[tokio::test]
async fn a_schema_1_event_reads_in_the_current_shape_on_both_sides() {
    let stack = Stack::from_env();
    let store = sqlx::PgPool::connect(&stack.event_store_url)
        .await
        .expect("event store");
    let id = uuid::Uuid::now_v7();
    sqlx::query(
        "WITH e AS (INSERT INTO events (event_id, aggregate_id, version, event_type, schema_version, data)
                    VALUES ($1, $2, 1, 'WarriorCreated', 1, $3) RETURNING position)
         INSERT INTO outbox (position) SELECT position FROM e",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(id)
    .bind(json!({"name": "Ching Shih", "dob": "1775-01-01", "fightSkills": ["Jian"]}))
    .execute(&store)
    .await
    .expect("insert a schema-1 event");

    let history = history(&stack, &id.to_string()).await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["data"]["fight_skills"], json!(["Jian"]), "{history:?}");
    assert!(history[0]["data"].get("fightSkills").is_none(), "{history:?}");

    let warrior: Value = stack.get(&format!("/warrior/{id}")).await.json().await.expect("JSON");
    assert_eq!(warrior["fight_skills"], json!(["Jian"]), "{warrior}");
    assert_eq!(warrior["version"], 1);
    // The lookup above may have been answered from the event store (read
    // your writes); the projector's own reading shows in the read model.
    let read_model = sqlx::PgPool::connect(&stack.read_model_url).await.expect("read model");
    let projected: Vec<String> = poll_until(Duration::from_secs(10), "the projector to apply it", || async {
        sqlx::query_scalar("SELECT fight_skills FROM warriors WHERE id = $1")
            .bind(id)
            .fetch_optional(&read_model)
            .await
            .expect("read model")
    })
    .await;
    assert_eq!(projected, ["Jian"]);

    // Replacing it builds on the upcast state like any other warrior.
    let replaced = put(
        &stack,
        &id.to_string(),
        &json!({"name": "Ching Shih", "dob": "1775-01-01"}),
        Some("\"1\""),
    )
    .await;
    assert_eq!(replaced.status(), 200);
}
