//! HTTP handlers: translate requests into commands and outcomes into the
//! contract's status codes and headers. No decisions are made here.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use http_kit::extract::Path;
use http_kit::{JsonBody, REQUEST_ID};
use rdkafka::producer::Producer;
use serde::Serialize;
use serde_json::{json, Value};
use shared_kernel::{parse_warrior, Warrior, WarriorDraft};
use uuid::Uuid;

use crate::commands::{today, Created, RequestMeta};
use crate::error::ApiError;
use crate::AppState;

const IDEMPOTENCY_KEY: &str = "idempotency-key";
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// `POST /warrior`: 201 once the event is committed in the event store.
pub async fn create(State(app): State<AppState>, headers: HeaderMap, body: JsonBody) -> Result<Response, ApiError> {
    let created = create_from(&app, &headers, &body).await?;
    let warrior = created.warrior();
    let location = format!("/warrior/{}", warrior.id);
    Ok(with_etag(StatusCode::CREATED, warrior, Some(location)))
}

/// `POST /api/v1/commands/warriors`: the original API's 202 variant.
pub async fn create_v1(State(app): State<AppState>, headers: HeaderMap, body: JsonBody) -> Result<Response, ApiError> {
    let created = create_from(&app, &headers, &body).await?;
    let id = created.warrior().id;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/api/v1/queries/warriors/{id}"))],
        Json(json!({"id": id, "message": "Warrior created successfully"})),
    )
        .into_response())
}

async fn create_from(app: &AppState, headers: &HeaderMap, body: &JsonBody) -> Result<Created, ApiError> {
    let draft = parse_warrior(&body.0, today())?;
    Ok(app.commands.create(&draft, &request_meta(headers)?).await?)
}

/// `PUT /warrior/{id}`: full replacement, optionally guarded by `If-Match`.
pub async fn replace(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let draft: WarriorDraft = parse_warrior(&body.0, today())?;
    let id = parse_id(&id)?;
    let warrior = app
        .commands
        .replace(id, &draft, if_match(&headers), &request_meta(&headers)?)
        .await?;
    Ok(with_etag(StatusCode::OK, &warrior, None))
}

/// `DELETE /warrior/{id}`: 204; the history stays.
pub async fn delete(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    app.commands
        .delete(id, if_match(&headers), &request_meta(&headers)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One entry of `GET /warrior/{id}/events`.
#[derive(Debug, Serialize)]
struct HistoryEntry {
    event_id: Uuid,
    #[serde(rename = "type")]
    event_type: String,
    version: i64,
    occurred_at: DateTime<Utc>,
    data: Value,
}

/// `GET /warrior/{id}/events`: the audit trail, in version order.
pub async fn history(State(app): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let events = app.commands.history(parse_id(&id)?).await?;
    let entries: Vec<HistoryEntry> = events
        .into_iter()
        .map(|e| HistoryEntry {
            event_id: e.event_id,
            event_type: e.event_type,
            version: e.version,
            occurred_at: e.occurred_at,
            data: e.data,
        })
        .collect();
    Ok(Json(entries).into_response())
}

/// `GET /health`: the process is alive.
pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /ready`: 200 only while the event store and Kafka are reachable.
pub async fn ready(State(app): State<AppState>) -> Response {
    let database = tokio::time::timeout(
        Duration::from_secs(1),
        sqlx::query("SELECT 1").execute(app.commands.store().pool()),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    let producer = app.producer.clone();
    let topic = app.topic.clone();
    let kafka = tokio::task::spawn_blocking(move || {
        producer
            .client()
            .fetch_metadata(Some(&topic), Duration::from_secs(1))
            .is_ok()
    })
    .await
    .unwrap_or(false);
    let status = if database && kafka {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({"database": database, "kafka": kafka}))).into_response()
}

fn with_etag(status: StatusCode, warrior: &Warrior, location: Option<String>) -> Response {
    let mut response = (status, Json(warrior)).into_response();
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", warrior.version)) {
        headers.insert(header::ETAG, etag);
    }
    if let Some(location) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        headers.insert(header::LOCATION, location);
    }
    response
}

/// A path id that is not a UUID names no warrior: 404, as for an unknown one.
fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| crate::commands::CommandError::NotFound.into())
}

/// `If-Match: "N"` (or `W/"N"`). A value that names no version can never
/// match; it is kept as an impossible version so the command answers 412.
fn if_match(headers: &HeaderMap) -> Option<i64> {
    let raw = headers.get(header::IF_MATCH)?.to_str().unwrap_or_default().trim();
    if raw == "*" {
        return None;
    }
    let tag = raw.strip_prefix("W/").unwrap_or(raw).trim_matches('"');
    Some(tag.parse().unwrap_or(-1))
}

fn request_meta(headers: &HeaderMap) -> Result<RequestMeta, ApiError> {
    let request_id = headers.get(REQUEST_ID).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let idempotency_key = match headers.get(IDEMPOTENCY_KEY) {
        None => None,
        Some(value) => {
            let key = value.to_str().map_err(|_| ApiError::BadIdempotencyKey)?;
            if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
                return Err(ApiError::BadIdempotencyKey);
            }
            Some(key.to_owned())
        }
    };
    Ok(RequestMeta {
        request_id,
        idempotency_key,
    })
}
