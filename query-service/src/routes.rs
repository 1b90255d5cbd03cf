//! HTTP handlers of the query side.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_kit::extract::{Path, Query};
use serde::Deserialize;
use serde_json::{json, Value};
use shared_kernel::Warrior;
use uuid::Uuid;

use crate::error::ApiError;
use crate::read_model::Lookup;
use crate::AppState;

/// `GET /warrior/{id}`: 404 if unknown, deleted or not a UUID.
pub async fn get_warrior(State(app): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    match app.lookup_consistent(id).await? {
        Lookup::Live(warrior) => Ok(with_etag(&warrior)),
        Lookup::Deleted { .. } | Lookup::Unknown => Err(ApiError::NotFound),
    }
}

#[derive(Debug, Deserialize)]
pub struct SearchParams {
    t: Option<String>,
}

/// `GET /warrior?t=term`: at most 50 live warriors matching the term.
pub async fn search(
    State(app): State<AppState>,
    Query(params): Query<SearchParams>,
) -> Result<Json<Vec<Warrior>>, ApiError> {
    let term = params.t.filter(|t| !t.trim().is_empty()).ok_or(ApiError::MissingTerm)?;
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

/// `GET /api/v1/queries/warriors?t=`: as search, but without a term lists
/// the 50 most recently created warriors.
pub async fn search_v1(
    State(app): State<AppState>,
    Query(params): Query<SearchParams>,
) -> Result<Json<Vec<Warrior>>, ApiError> {
    let warriors = match params.t.filter(|t| !t.trim().is_empty()) {
        Some(term) => search_for(&app, &term).await?,
        None => app.read_model.recent().await?,
    };
    Ok(Json(warriors))
}

/// `GET /counting-warriors`: live warriors in the read model.
pub async fn count(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"count": app.read_model.count().await?})))
}

/// `GET /health`: the process is alive.
pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /ready`: 200 only while the read model and Kafka are reachable.
pub async fn ready(State(app): State<AppState>) -> Response {
    let database = tokio::time::timeout(
        Duration::from_secs(1),
        sqlx::query("SELECT 1").execute(app.read_model.pool()),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    let kafka = app.kafka_reachable().await;
    let status = if database && kafka {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({"database": database, "kafka": kafka}))).into_response()
}

fn with_etag(warrior: &Warrior) -> Response {
    let mut response = Json(warrior).into_response();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", warrior.version)) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}
