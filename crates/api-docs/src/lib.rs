//! The gateway's OpenAPI document: the routes nginx exposes, taken from both
//! services' own documents, plus what nginx answers itself.
//!
//! `cargo run --release -p api-docs > docs/openapi.json` regenerates the
//! committed copy that nginx serves at `/openapi.json`; a test fails while
//! the committed copy differs from what the code generates.

use utoipa::openapi::link::Link;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::{OpenApi, RefOr};
use utoipa::OpenApi as _;

/// Where the committed document lives, relative to the repository root.
pub const COMMITTED_PATH: &str = "docs/openapi.json";

/// The command that rewrites [`COMMITTED_PATH`].
pub const REGENERATE: &str = "cargo run --release -p api-docs > docs/openapi.json";

/// Whether nginx.conf routes `path` to a service. Mirrors its `location`
/// blocks; everything else (a service's `/health`, `/ready`, `/metrics`)
/// is not reachable through the gateway and is left out.
pub fn routed_by_gateway(path: &str) -> bool {
    path.starts_with("/warrior")
        || path == "/counting-warriors"
        || path.starts_with("/api/v1/commands/")
        || path.starts_with("/api/v1/queries/")
}

/// What nginx answers by itself.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "api-hammer",
        description = "Warriors, CQRS and event-sourced: writes go to the command side (event store, \
                       outbox, Kafka), reads to the query side (a read model projected from Kafka), \
                       behind one nginx gateway. Errors are `application/problem+json` (RFC 9457). \
                       Every request may carry `X-Request-Id`; it is echoed, or one is made up.",
        license(name = "MIT")
    ),
    paths(gateway_health, openapi_document),
    tags(
        (name = "warriors", description = "The warrior resource."),
        (name = "v1", description = "The original Java API's routes, kept for its clients."),
        (name = "gateway", description = "Answered by nginx itself."),
    )
)]
struct Gateway;

/// Gateway alive.
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "gatewayHealth",
    tag = "gateway",
    responses((status = 200, description = "nginx is up.", body = http_kit::Health)),
)]
#[allow(dead_code)]
fn gateway_health() {}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapiDocument",
    tag = "gateway",
    responses((status = 200, description = "The OpenAPI document of the gateway (docs/openapi.json).", content_type = "application/json", body = Object)),
)]
#[allow(dead_code)]
fn openapi_document() {}

/// The gateway's document: both services' routed operations, nginx's own,
/// and links that cross from one side to the other.
pub fn gateway_openapi() -> OpenApi {
    let mut doc = Gateway::openapi();
    for mut service in [command_service::openapi(), query_service::openapi()] {
        service.paths.paths.retain(|path, _| routed_by_gateway(path));
        // The services' own "operations" tag describes routes left out here.
        service.tags = None;
        doc.merge(service);
    }
    // A created or replaced warrior can be read at once (read your writes).
    let links = [
        ("/warrior", Method::Post, "201", "GetWarrior", "getWarrior"),
        ("/warrior/{id}", Method::Put, "200", "GetWarrior", "getWarrior"),
        (
            "/api/v1/commands/warriors",
            Method::Post,
            "202",
            "GetWarriorV1",
            "getWarriorV1",
        ),
    ];
    for (path, method, status, name, target) in links {
        let target = Link::builder()
            .operation_id(target)
            .parameter("id", "$response.body#/id")
            .build();
        link(&mut doc, path, method, status, name, RefOr::T(target));
    }
    doc
}

enum Method {
    Post,
    Put,
}

/// Adds a link to one response of one operation; panics if there is no such
/// response, so a renamed route cannot silently lose its links.
fn link(doc: &mut OpenApi, path: &str, method: Method, status: &str, name: &str, target: RefOr<Link>) {
    let item: &mut PathItem = doc
        .paths
        .paths
        .get_mut(path)
        .unwrap_or_else(|| panic!("no path {path}"));
    let operation: &mut Operation = match method {
        Method::Post => item.post.as_mut(),
        Method::Put => item.put.as_mut(),
    }
    .unwrap_or_else(|| panic!("no operation on {path}"));
    let Some(RefOr::T(response)) = operation.responses.responses.get_mut(status) else {
        panic!("no {status} response on {path}");
    };
    response.links.insert(name.to_owned(), target);
}

/// The document as committed: pretty JSON and a final newline.
pub fn render() -> String {
    let mut text = gateway_openapi()
        .to_pretty_json()
        .expect("an OpenAPI document serialises");
    text.push('\n');
    text
}
