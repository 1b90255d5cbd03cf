//! The whole CQRS path through nginx: command-service → event store →
//! outbox relay → Kafka → projector → read model → query-service.

use std::time::Duration;

use serde_json::{json, Value};
use test_kit::{new_warrior, poll_until, Stack};

/// A new name becomes searchable ~1 s after its row, within ~4 s right after
/// a burst of writes (the search indexer's duty cycle, docs/API.md).
const SEARCHABLE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn gateway_answers_health_itself() {
    let stack = Stack::from_env();
    let response = stack.get("/health").await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn created_warrior_is_readable_at_its_location_at_once() {
    let stack = Stack::from_env();
    let body = json!({"name": "Musashi", "dob": "1584-03-12", "fight_skills": ["Katana"]});
    let response = stack.post_json("/warrior", &body).await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["etag"], "\"1\"");
    let location = response.headers()["location"].to_str().expect("ASCII").to_owned();
    let created: Value = response.json().await.expect("JSON");
    let id = created["id"].as_str().expect("id");
    assert_eq!(location, format!("/warrior/{id}"));
    assert_eq!(created["name"], "Musashi");
    assert_eq!(created["dob"], "1584-03-12");
    assert_eq!(created["fight_skills"], json!(["Katana"]));
    assert_eq!(created["version"], 1);

    // Read your writes: the very first GET after the 201 must see it.
    let read = stack.get(&location).await;
    assert_eq!(read.status(), 200);
    assert_eq!(read.headers()["etag"], "\"1\"");
    let read: Value = read.json().await.expect("JSON");
    assert_eq!(read, created);
}

#[tokio::test]
async fn search_finds_a_warrior_by_name_or_skill_ignoring_case() {
    let stack = Stack::from_env();
    let marker = uuid::Uuid::new_v4().simple().to_string();
    let body =
        json!({"name": format!("Tomoe {marker}"), "dob": "1157-01-01", "fight_skills": [format!("Naginata{marker}")]});
    let created = stack.create(&body).await;
    for term in [marker.to_uppercase(), format!("naginata{marker}")] {
        let found: Vec<Value> = poll_until(SEARCHABLE, "search to find the warrior", || async {
            let hits: Vec<Value> = stack.get(&format!("/warrior?t={term}")).await.json().await.ok()?;
            (!hits.is_empty()).then_some(hits)
        })
        .await;
        assert_eq!(found, vec![created.clone()], "term {term}");
    }
}

/// `n` (at most 32) random letters a-p, unique to this run in practice.
fn unique_letters(n: usize) -> String {
    uuid::Uuid::new_v4()
        .simple()
        .to_string()
        .bytes()
        .take(n)
        .map(|b| char::from(b'a' + (b as char).to_digit(16).unwrap_or(0) as u8))
        .collect()
}

#[tokio::test]
async fn search_finds_a_name_by_words_too_short_for_a_trigram() {
    let stack = Stack::from_env();
    // Three two-letter words, unique to this run: no three letters in a row.
    let letters = unique_letters(6);
    let term = format!("{} {}-{}", &letters[..2], &letters[2..4], &letters[4..]);
    let body = json!({"name": format!("Zed {term} ø"), "dob": "1990-01-01", "fight_skills": ["Judo"]});
    let created = stack.create(&body).await;
    for term in [term.clone(), term.to_uppercase()] {
        let found: Vec<Value> = poll_until(SEARCHABLE, "search to find the warrior", || async {
            let hits: Vec<Value> = stack.search(&term).await.json().await.ok()?;
            (!hits.is_empty()).then_some(hits)
        })
        .await;
        assert_eq!(found, vec![created.clone()], "term {term:?}");
    }
}

/// Polls (bounded by [`SEARCHABLE`]) until searching `term` returns exactly
/// `warrior`: the search index follows the projection a moment behind.
async fn search_until_only(stack: &Stack, term: &str, warrior: &Value, what: &str) {
    poll_until(SEARCHABLE, what, || async {
        let hits: Vec<Value> = stack.search(term).await.json().await.ok()?;
        (hits == [warrior.clone()]).then_some(())
    })
    .await;
}

#[tokio::test]
async fn search_follows_a_rename() {
    let stack = Stack::from_env();
    let (old, new) = (
        uuid::Uuid::new_v4().simple().to_string(),
        uuid::Uuid::new_v4().simple().to_string(),
    );
    let created = stack
        .create(&json!({"name": format!("Before {old}"), "dob": "1600-01-01", "fight_skills": null}))
        .await;
    search_until_only(&stack, &old, &created, "search to find the first name").await;
    let put = stack
        .http
        .put(stack.at(&format!("/warrior/{}", created["id"].as_str().expect("id"))))
        .json(&json!({"name": format!("After {new}"), "dob": "1600-01-01", "fight_skills": null}))
        .send()
        .await
        .expect("gateway reachable");
    assert_eq!(put.status(), 200);
    let renamed: Value = put.json().await.expect("JSON");
    poll_until(SEARCHABLE, "search to find the new name only", || async {
        let by_new: Vec<Value> = stack.search(&new).await.json().await.ok()?;
        let by_old: Vec<Value> = stack.search(&old).await.json().await.ok()?;
        (by_new == vec![renamed.clone()] && by_old.is_empty()).then_some(())
    })
    .await;
}

/// A term without trigrams whose characters are not ASCII letters (two CJK
/// ideographs here, unique to this run) is found through the names holding
/// one of its characters, not by reading every row.
#[tokio::test]
async fn a_term_of_rare_characters_finds_its_warrior() {
    let stack = Stack::from_env();
    let pick = |n: u128| char::from_u32(0x4E00 + (n % 0x5000) as u32).expect("a CJK ideograph");
    let seed = uuid::Uuid::new_v4().as_u128();
    let term: String = [pick(seed), pick(seed >> 32)].iter().collect();
    let created = stack
        .create(&json!({"name": format!("Li {term}"), "dob": "1600-01-01", "fight_skills": null}))
        .await;
    search_until_only(&stack, &term, &created, "search by rare characters to find the warrior").await;
}

#[tokio::test]
async fn search_answers_any_term_with_matches_only() {
    let stack = Stack::from_env();
    for term in ["!!!!", "ø", "\u{83}", "a b", "ab", "x-", "%", "_a_", "û", "🍕", "judo"] {
        let response = stack.search(term).await;
        assert_eq!(response.status(), 200, "term {term:?}");
        let hits: Vec<Value> = response.json().await.expect("JSON");
        assert!(hits.len() <= 50, "term {term:?}: {} rows", hits.len());
        let needle = term.to_lowercase();
        for hit in &hits {
            let name = hit["name"].as_str().unwrap_or_default().to_lowercase();
            let skills = hit["fight_skills"].as_array().cloned().unwrap_or_default();
            let by_skill = skills
                .iter()
                .any(|s| s.as_str().unwrap_or_default().to_lowercase().contains(&needle));
            assert!(name.contains(&needle) || by_skill, "term {term:?} matched {hit}");
        }
    }
}

/// `%` and `_` in a term are characters to find, not LIKE wildcards: a
/// warrior the wildcard reading would match (indexed first) is not returned.
#[tokio::test]
async fn search_matches_percent_and_underscore_literally() {
    let stack = Stack::from_env();
    let m = unique_letters(8);
    let decoy = stack
        .create(&json!({"name": format!("{m}Q{m} QaQ{m}"), "dob": "1600-01-01", "fight_skills": null}))
        .await;
    search_until_only(&stack, &format!("QaQ{m}"), &decoy, "search to find the decoy").await;
    let literal = stack
        .create(&json!({"name": format!("{m}%{m} _a_{m}"), "dob": "1600-01-01", "fight_skills": null}))
        .await;
    for term in [format!("{m}%{m}"), format!("_a_{m}")] {
        search_until_only(&stack, &term, &literal, "search to find only the literal match").await;
    }
}

#[tokio::test]
async fn search_without_a_term_is_a_bad_request() {
    let stack = Stack::from_env();
    for path in ["/warrior", "/warrior?t=", "/warrior?t=%20%20"] {
        let response = stack.get(path).await;
        assert_eq!(response.status(), 400, "{path}");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
    }
}

#[tokio::test]
async fn unknown_or_malformed_ids_are_not_found() {
    let stack = Stack::from_env();
    for path in [
        format!("/warrior/{}", uuid::Uuid::new_v4()),
        "/warrior/not-a-uuid".to_owned(),
    ] {
        let response = stack.get(&path).await;
        assert_eq!(response.status(), 404, "{path}");
    }
}

#[tokio::test]
async fn wrong_json_type_is_a_400_problem_with_field_details() {
    let stack = Stack::from_env();
    let response = stack
        .post_json("/warrior", &json!({"name": "A", "dob": 10, "fight_skills": "string"}))
        .await;
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let problem: Value = response.json().await.expect("JSON");
    assert_eq!(problem["status"], 400);
    assert!(problem["errors"]["dob"].is_string(), "{problem}");
    assert!(problem["errors"]["fight_skills"].is_string(), "{problem}");
}

#[tokio::test]
async fn invalid_values_are_a_422_problem_with_field_details() {
    let stack = Stack::from_env();
    let response = stack
        .post_json("/warrior", &json!({"name": "x".repeat(120), "dob": "2000-02-30"}))
        .await;
    assert_eq!(response.status(), 422);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let problem: Value = response.json().await.expect("JSON");
    assert_eq!(problem["status"], 422);
    assert!(problem["errors"]["name"].is_string(), "{problem}");
    assert!(problem["errors"]["dob"].is_string(), "{problem}");
}

#[tokio::test]
async fn a_name_or_skill_that_shows_nothing_is_blank() {
    let stack = Stack::from_env();
    let response = stack
        .post_json(
            "/warrior",
            &json!({"name": "\u{200b}\u{feff}", "dob": "2000-01-01", "fight_skills": ["Judo", "\u{2060} "]}),
        )
        .await;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.expect("JSON");
    assert_eq!(
        problem["errors"]["name"], "must contain a non-blank character",
        "{problem}"
    );
    assert!(problem["errors"]["fight_skills[1]"].is_string(), "{problem}");
}

#[tokio::test]
async fn body_that_is_not_json_is_a_400() {
    let stack = Stack::from_env();
    let response = stack
        .http
        .post(stack.at("/warrior"))
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .expect("reachable");
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn missing_or_foreign_content_type_is_a_415() {
    let stack = Stack::from_env();
    let body = new_warrior().to_string();
    let plain = stack
        .http
        .post(stack.at("/warrior"))
        .body(body.clone())
        .send()
        .await
        .expect("reachable");
    assert_eq!(plain.status(), 415);
    let text = stack
        .http
        .post(stack.at("/warrior"))
        .header("content-type", "text/plain")
        .body(body)
        .send()
        .await
        .expect("reachable");
    assert_eq!(text.status(), 415);
}

#[tokio::test]
async fn body_over_64_kib_is_a_413() {
    let stack = Stack::from_env();
    let body = json!({"name": "A", "dob": "2000-01-01", "padding": "x".repeat(70 * 1024)});
    let response = stack.post_json("/warrior", &body).await;
    assert_eq!(response.status(), 413);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn versioned_routes_keep_the_original_api() {
    let stack = Stack::from_env();
    let response = stack.post_json("/api/v1/commands/warriors", &new_warrior()).await;
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().expect("ASCII").to_owned();
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["message"], "Warrior created successfully");
    let id = body["id"].as_str().expect("id");
    assert_eq!(location, format!("/api/v1/queries/warriors/{id}"));

    let read = stack.get(&location).await;
    assert_eq!(read.status(), 200);
    let read: Value = read.json().await.expect("JSON");
    assert_eq!(read["id"], id);

    let recent: Vec<Value> = poll_until(Duration::from_secs(5), "the recent listing to show it", || async {
        let list: Vec<Value> = stack.get("/api/v1/queries/warriors").await.json().await.ok()?;
        list.iter().any(|w| w["id"] == id).then_some(list)
    })
    .await;
    assert!(recent.len() <= 50);

    for path in [
        "/api/v1/queries/counting-warriors",
        "/api/v1/commands/health",
        "/api/v1/queries/health",
    ] {
        assert_eq!(stack.get(path).await.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn camel_case_skills_alias_is_accepted_and_answered_in_snake_case() {
    let stack = Stack::from_env();
    let created = stack
        .create(&json!({"name": "Ching Shih", "dob": "1775-01-01", "fightSkills": ["Jian"]}))
        .await;
    assert_eq!(created["fight_skills"], json!(["Jian"]));
    assert!(created.get("fightSkills").is_none());
}

#[tokio::test]
async fn hostile_bodies_get_4xx_problems() {
    let stack = Stack::from_env();
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"{\"name\":\"\xff\xfe\",\"dob\":\"2000-01-01\"}".to_vec(), 400),
        (nested.into_bytes(), 413),
        (
            format!("{{\"a\":{}1{}}}", "{\"a\":".repeat(200), "}".repeat(200)).into_bytes(),
            400,
        ),
        (vec![b'x'; 1024 * 1024], 413),
    ];
    for (body, expected) in cases {
        let len = body.len();
        let response = stack
            .http
            .post(stack.at("/warrior"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("reachable");
        assert_eq!(response.status(), expected, "body of {len} bytes");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
    }
}

#[tokio::test]
async fn garbage_paths_and_methods_get_4xx_problems() {
    let stack = Stack::from_env();
    let cases = [
        ("GET", "/nope", 404),
        ("GET", "/warrior/a/b/c", 404),
        ("PATCH", "/warrior", 405),
        ("DELETE", "/counting-warriors", 405),
        ("POST", "/api/v1/queries/warriors", 405),
    ];
    for (method, path, expected) in cases {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let response = stack
            .http
            .request(method.clone(), stack.at(path))
            .send()
            .await
            .expect("reachable");
        assert_eq!(response.status(), expected, "{method} {path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{method} {path}"
        );
    }
}
