//! The committed docs/openapi.json (what nginx serves) must be what the code
//! generates, and must cover exactly the routes nginx sends to the services.

use std::path::PathBuf;

use serde_json::Value;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn committed_document_is_up_to_date() {
    let path = repo_root().join(api_docs::COMMITTED_PATH);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = api_docs::render();
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map_or_else(|| "its end".to_owned(), |i| format!("line {}", i + 1));
        panic!(
            "{} is out of date (first difference at {line}); regenerate it with:\n    {}",
            path.display(),
            api_docs::REGENERATE
        );
    }
}

#[test]
fn document_covers_the_public_routes_and_nothing_else() {
    let doc: Value = serde_json::from_str(&api_docs::render()).expect("JSON");
    let mut routes: Vec<String> = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            routes.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    routes.sort();
    let expected = [
        "DELETE /warrior/{id}",
        "GET /api/v1/commands/health",
        "GET /api/v1/queries/counting-warriors",
        "GET /api/v1/queries/health",
        "GET /api/v1/queries/warriors",
        "GET /api/v1/queries/warriors/{id}",
        "GET /counting-warriors",
        "GET /health",
        "GET /openapi.json",
        "GET /warrior",
        "GET /warrior/{id}",
        "GET /warrior/{id}/events",
        "POST /api/v1/commands/warriors",
        "POST /warrior",
        "PUT /warrior/{id}",
    ];
    assert_eq!(routes, expected);
}

#[test]
fn operation_ids_are_unique() {
    let doc: Value = serde_json::from_str(&api_docs::render()).expect("JSON");
    let mut ids: Vec<&str> = doc["paths"]
        .as_object()
        .expect("paths")
        .values()
        .flat_map(|item| item.as_object().expect("path item").values())
        .map(|op| op["operationId"].as_str().expect("operationId"))
        .collect();
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count, "duplicate operationId");
}

/// `routed_by_gateway` mirrors nginx.conf's locations; this catches a
/// location renamed on one side only.
#[test]
fn nginx_routes_what_the_document_lists() {
    let conf = std::fs::read_to_string(repo_root().join("nginx.conf")).expect("nginx.conf");
    for location in [
        "location /warrior {",
        "location ~ ^/warrior/[^/]+/events$ {",
        "location = /counting-warriors {",
        "location /api/v1/commands/ {",
        "location /api/v1/queries/ {",
        "location = /health {",
        "location = /openapi.json {",
    ] {
        assert!(conf.contains(location), "nginx.conf has no `{location}`");
    }
    assert!(!api_docs::routed_by_gateway("/ready"));
    assert!(!api_docs::routed_by_gateway("/metrics"));
}
