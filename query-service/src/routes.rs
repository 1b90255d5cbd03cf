//! HTTP handlers of the query side.
//!
//! Each handler's `#[utoipa::path]` is its entry in the OpenAPI document;
//! the router is built from the same attributes (see `crate::router`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_kit::extract::{Path, Query};
use http_kit::{health, Health, Problem, Readiness};
use serde::{Deserialize, Serialize};
use shared_kernel::Warrior;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::error::ApiError;
use crate::read_model::Lookup;
use crate::AppState;

/// `{id}`: a warrior's UUID. Anything else names no warrior (404).
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct WarriorId {
    /// The warrior's id.
    id: Uuid,
}

/// Look a warrior up.
///
/// Reads your writes: once a write got its 2xx, this reflects it (waiting,
/// bounded, for the projection), never a 404 or an older version.
#[utoipa::path(
    get,
    path = "/warrior/{id}",
    operation_id = "getWarrior",
    tag = "warriors",
    params(WarriorId),
    responses(
        (status = 200, description = "The warrior.", body = Warrior,
            headers(("ETag" = String, description = "Its version, quoted: `\"3\"`"))),
        (status = 404, description = "Unknown, deleted, or not a UUID.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The event store is unavailable and the read model cannot vouch for its answer alone (or neither database answers); retry.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn get_warrior(State(app): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    match app.lookup_consistent(id).await? {
        Lookup::Live(warrior) => Ok(with_etag(&warrior)),
        Lookup::Deleted { .. } | Lookup::Unknown => Err(ApiError::NotFound),
    }
}

/// Look a warrior up (original API).
#[utoipa::path(
    get,
    path = "/api/v1/queries/warriors/{id}",
    operation_id = "getWarriorV1",
    tag = "v1",
    params(WarriorId),
    responses(
        (status = 200, description = "The warrior.", body = Warrior,
            headers(("ETag" = String, description = "Its version, quoted: `\"3\"`"))),
        (status = 404, description = "Unknown, deleted, or not a UUID.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The event store is unavailable and the read model cannot vouch for its answer alone (or neither database answers); retry.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn get_warrior_v1(state: State<Arc<AppState>>, id: Path<String>) -> Result<Response, ApiError> {
    get_warrior(state, id).await
}

/// Query of `GET /warrior`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Case-insensitive substring of the name or of any fight skill; must
    /// not be blank.
    #[param(required = true, min_length = 1, example = "katana")]
    t: Option<String>,
}

/// Query of `GET /api/v1/queries/warriors`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchParamsV1 {
    /// Case-insensitive substring of the name or of any fight skill;
    /// missing or blank: the 50 most recently created warriors.
    #[param(example = "katana")]
    t: Option<String>,
}

/// The term of a search, if it names something: not blank.
fn term(t: Option<String>) -> Option<String> {
    t.filter(|t| !t.trim().is_empty())
}

/// Search warriors.
///
/// At most 50 live warriors whose name or a fight skill contains the term,
/// ignoring case. Eventually consistent.
#[utoipa::path(
    get,
    path = "/warrior",
    operation_id = "searchWarriors",
    tag = "warriors",
    params(SearchParams),
    responses(
        (status = 200, description = "Up to 50 matching warriors.", body = Vec<Warrior>),
        (status = 400, description = "`t` is missing or blank, or the query string is malformed.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The read model is unavailable or the search took too long; retry.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn search(
    State(app): State<Arc<AppState>>,
    Query(params): Query<SearchParams>,
) -> Result<Json<Vec<Warrior>>, ApiError> {
    let term = term(params.t).ok_or(ApiError::MissingTerm)?;
    Ok(Json(search_for(&app, &term).await?))
}

/// A term holding NUL matches nothing: no stored name or skill can hold one
/// (PostgreSQL refuses NUL in text), nor can it be sent as a parameter.
async fn search_for(app: &AppState, term: &str) -> Result<Vec<Warrior>, ApiError> {
    if term.contains('\0') {
        return Ok(Vec::new());
    }
    Ok(app.read_model.search(term).await?)
}

/// Search or list warriors (original API).
///
/// As `GET /warrior?t=`, but without a term lists the 50 most recently
/// created warriors.
#[utoipa::path(
    get,
    path = "/api/v1/queries/warriors",
    operation_id = "searchWarriorsV1",
    tag = "v1",
    params(SearchParamsV1),
    responses(
        (status = 200, description = "Up to 50 warriors.", body = Vec<Warrior>),
        (status = 400, description = "The query string is malformed.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The read model is unavailable or the search took too long; retry.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn search_v1(
    State(app): State<Arc<AppState>>,
    Query(params): Query<SearchParamsV1>,
) -> Result<Json<Vec<Warrior>>, ApiError> {
    let warriors = match term(params.t) {
        Some(term) => search_for(&app, &term).await?,
        None => app.read_model.recent().await?,
    };
    Ok(Json(warriors))
}

/// Answer of the count routes.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"count": 42}))]
pub struct Count {
    /// Live warriors (created, not deleted).
    #[schema(minimum = 0)]
    count: i64,
}

/// Count warriors.
///
/// Live warriors in the read model; eventually consistent.
#[utoipa::path(
    get,
    path = "/counting-warriors",
    operation_id = "countWarriors",
    tag = "warriors",
    responses(
        (status = 200, description = "The number of live warriors.", body = Count),
        (status = 503, description = "The read model is unavailable; retry.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn count(State(app): State<Arc<AppState>>) -> Result<Json<Count>, ApiError> {
    Ok(Json(Count {
        count: app.read_model.count().await?,
    }))
}

/// Count warriors (original API).
#[utoipa::path(
    get,
    path = "/api/v1/queries/counting-warriors",
    operation_id = "countWarriorsV1",
    tag = "v1",
    responses(
        (status = 200, description = "The number of live warriors.", body = Count),
        (status = 503, description = "The read model is unavailable; retry.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn count_v1(state: State<Arc<AppState>>) -> Result<Json<Count>, ApiError> {
    count(state).await
}

/// Query side alive.
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "queryHealth",
    tag = "operations",
    responses((status = 200, description = "The process is alive.", body = Health)),
)]
pub async fn health() -> Json<Health> {
    health::alive().await
}

/// Query side alive (original API).
#[utoipa::path(
    get,
    path = "/api/v1/queries/health",
    operation_id = "queryHealthV1",
    tag = "v1",
    responses((status = 200, description = "The query side is alive.", body = Health)),
)]
pub async fn health_v1() -> Json<Health> {
    health::alive().await
}

/// Query side ready.
#[utoipa::path(
    get,
    path = "/ready",
    operation_id = "queryReady",
    tag = "operations",
    responses(
        (status = 200, description = "The read model and Kafka are reachable.", body = Readiness),
        (status = 503, description = "The read model or Kafka is unreachable.", body = Readiness),
    ),
)]
pub async fn ready(State(app): State<Arc<AppState>>) -> Readiness {
    let (database, kafka) = tokio::join!(
        health::database_answers(app.read_model.pool()),
        app.kafka.topic_reachable()
    );
    Readiness { database, kafka }
}

fn with_etag(warrior: &Warrior) -> Response {
    let mut response = Json(warrior).into_response();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", warrior.version)) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}
