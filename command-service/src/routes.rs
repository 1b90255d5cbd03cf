//! HTTP handlers: translate requests into commands and outcomes into the
//! contract's status codes and headers. No decisions are made here.
//!
//! Each handler's `#[utoipa::path]` is its entry in the OpenAPI document;
//! the router is built from the same attributes (see `crate::router`), so a
//! route cannot exist without its documentation or the other way round.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use http_kit::extract::{Path, Query};
use http_kit::{health, Health, JsonBody, Problem, Readiness, REQUEST_ID};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared_kernel::openapi::WarriorInput;
use shared_kernel::{parse_warrior, IdempotencyKey, Warrior, WarriorDraft};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::commands::{today, Created, RequestMeta};
use crate::error::ApiError;
use crate::AppState;

const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Create a warrior.
///
/// Answers 201 once the `WarriorCreated` event is committed in the event
/// store. With an `Idempotency-Key`, a repeat with the same body returns the
/// first answer (same id) and appends nothing.
#[utoipa::path(
    post,
    path = "/warrior",
    operation_id = "createWarrior",
    tag = "warriors",
    params(IdempotencyKeyParam),
    request_body(content = WarriorInput, content_type = "application/json"),
    responses(
        (status = 201, description = "Created (or replayed for a repeated Idempotency-Key).", body = Warrior,
            headers(
                ("Location" = String, description = "`/warrior/{id}` of the new warrior"),
                ("ETag" = String, description = "Its version, quoted: `\"1\"`"),
            ),
            links(
                ("ReplaceWarrior" = (operation_id = "replaceWarrior", parameters(("id" = "$response.body#/id")))),
                ("DeleteWarrior" = (operation_id = "deleteWarrior", parameters(("id" = "$response.body#/id")))),
                ("WarriorHistory" = (operation_id = "warriorHistory", parameters(("id" = "$response.body#/id")))),
            )),
        (status = 400, description = "Body is not JSON, not an object, or a field has the wrong JSON type; or a malformed Idempotency-Key.", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Content-Type missing or not JSON.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid values (every bad field is listed in `errors`), or an Idempotency-Key reused with a different body.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The event store is unavailable; retry.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn create(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let created = create_from(&app, &headers, &body).await?;
    let warrior = created.warrior();
    let location = format!("/warrior/{}", warrior.id);
    Ok(with_etag(StatusCode::CREATED, warrior, Some(location)))
}

/// Answer of `POST /api/v1/commands/warriors`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"id": "6f1c0c3e-2b8a-4d5e-9f4b-0a1b2c3d4e5f", "message": "Warrior created successfully"}))]
pub struct CreatedV1 {
    id: Uuid,
    message: &'static str,
}

/// Create a warrior (original API).
///
/// As `POST /warrior`, answered the original Java API's way: 202 with the
/// id and where to read the warrior.
#[utoipa::path(
    post,
    path = "/api/v1/commands/warriors",
    operation_id = "createWarriorV1",
    tag = "v1",
    params(IdempotencyKeyParam),
    request_body(content = WarriorInput, content_type = "application/json"),
    responses(
        (status = 202, description = "Created; committed in the event store.", body = CreatedV1,
            headers(("Location" = String, description = "`/api/v1/queries/warriors/{id}`"))),
        (status = 400, description = "Body is not JSON, not an object, or a field has the wrong JSON type; or a malformed Idempotency-Key.", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Content-Type missing or not JSON.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid values (every bad field is listed in `errors`), or an Idempotency-Key reused with a different body.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The event store is unavailable; retry.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn create_v1(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let created = create_from(&app, &headers, &body).await?;
    let id = created.warrior().id;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/api/v1/queries/warriors/{id}"))],
        Json(CreatedV1 {
            id,
            message: "Warrior created successfully",
        }),
    )
        .into_response())
}

async fn create_from(app: &AppState, headers: &HeaderMap, body: &JsonBody) -> Result<Created, ApiError> {
    // The header first: a bad Idempotency-Key is a 400 naming it (as
    // documented), whatever the body holds.
    let meta = create_meta(headers)?;
    let draft = parse_warrior(&body.0, today())?;
    Ok(app.commands.create(&draft, &meta).await?)
}

/// Replace a warrior.
///
/// Full replacement, validated like a create. With `If-Match` it applies
/// only on top of that version; without, on top of the latest.
#[utoipa::path(
    put,
    path = "/warrior/{id}",
    operation_id = "replaceWarrior",
    tag = "warriors",
    params(WarriorId, IfMatch),
    request_body(content = WarriorInput, content_type = "application/json"),
    responses(
        (status = 200, description = "Replaced; the body has the new version.", body = Warrior,
            headers(("ETag" = String, description = "The new version, quoted"))),
        (status = 400, description = "Body is not JSON, not an object, or a field has the wrong JSON type.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such warrior (unknown, deleted, or not a UUID).", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Too many concurrent changes to this warrior; retry.", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "`If-Match` does not name the current version; nothing was written.", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Content-Type missing or not JSON.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid values; every bad field is listed in `errors`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The event store is unavailable; retry.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn replace(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let draft: WarriorDraft = parse_warrior(&body.0, today())?;
    let warrior = app
        .commands
        .replace(id, &draft, if_match(&headers).as_deref(), &request_meta(&headers))
        .await?;
    Ok(with_etag(StatusCode::OK, &warrior, None))
}

/// Delete a warrior.
///
/// Later lookups answer 404; the history stays readable.
#[utoipa::path(
    delete,
    path = "/warrior/{id}",
    operation_id = "deleteWarrior",
    tag = "warriors",
    params(WarriorId, IfMatch),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "No such warrior (unknown, already deleted, or not a UUID).", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Too many concurrent changes to this warrior; retry.", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "`If-Match` does not name the current version; nothing was written.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The event store is unavailable; retry.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn delete(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    app.commands
        .delete(id, if_match(&headers).as_deref(), &request_meta(&headers))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One entry of `GET /warrior/{id}/events`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "event_id": "0b6f4c1e-8d2a-4e3b-9c5d-7a1f2e3d4c5b",
    "type": "WarriorCreated",
    "version": 1,
    "occurred_at": "2026-11-25T10:00:00Z",
    "data": {"name": "Musashi", "dob": "1584-03-12", "fight_skills": ["Katana"]}
}))]
pub struct HistoryEntry {
    event_id: Uuid,
    /// `WarriorCreated`, `WarriorUpdated` or `WarriorDeleted`.
    #[serde(rename = "type")]
    event_type: String,
    #[schema(minimum = 1)]
    version: i64,
    occurred_at: DateTime<Utc>,
    /// The event's payload (see docs/EVENTS.md); `{}` for a deletion.
    #[schema(value_type = Object)]
    data: Value,
}

/// Most events in one answer of `GET /warrior/{id}/events`: a history can
/// grow without bound (every `PUT` adds an event), an answer must not.
pub const HISTORY_PAGE_MAX: i64 = 1_000;

/// Query of `GET /warrior/{id}/events`: which page of the history. Read as
/// text and parsed here, so that a value that is not a number is refused
/// naming its parameter, as one out of range is.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// Only events with a higher version (default 0: from the first).
    #[param(value_type = Option<i64>, minimum = 0, example = 0)]
    after_version: Option<String>,
    /// Most events to answer (default and maximum 1,000).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000, example = 100)]
    limit: Option<String>,
}

impl HistoryParams {
    /// (after_version, limit), or which parameter is unacceptable.
    fn page(&self) -> Result<(i64, i64), ApiError> {
        let after_version = number_in(self.after_version.as_deref(), "after_version", 0, 0..=i64::MAX)?;
        let limit = number_in(self.limit.as_deref(), "limit", HISTORY_PAGE_MAX, 1..=HISTORY_PAGE_MAX)?;
        Ok((after_version, limit))
    }
}

/// A whole-number query parameter within `range` (`default` when absent).
fn number_in(
    raw: Option<&str>,
    field: &'static str,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
) -> Result<i64, ApiError> {
    let Some(raw) = raw else { return Ok(default) };
    match raw.parse::<i64>() {
        Ok(value) if range.contains(&value) => Ok(value),
        _ if *range.end() == i64::MAX => Err(ApiError::BadQuery {
            field,
            reason: format!("must be a whole number of at least {}", range.start()),
        }),
        _ => Err(ApiError::BadQuery {
            field,
            reason: format!("must be a whole number from {} to {}", range.start(), range.end()),
        }),
    }
}

/// A warrior's history.
///
/// The audit trail from the event store, in version order; kept after a
/// deletion. Answered a page at a time (1,000 events unless `limit` says
/// fewer): when later events exist, a `Link` header names the next page
/// (`rel="next"`).
#[utoipa::path(
    get,
    path = "/warrior/{id}/events",
    operation_id = "warriorHistory",
    tag = "warriors",
    params(WarriorId, HistoryParams),
    responses(
        (status = 200, description = "The warrior's events above `after_version`, oldest first, at most `limit`.", body = Vec<HistoryEntry>,
            headers(("Link" = String, description = "`<…/events?after_version=N&limit=M>; rel=\"next\"` when later events exist."))),
        (status = 400, description = "`after_version` or `limit` is out of range or not a number.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such warrior ever existed (or not a UUID).", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The event store is unavailable; retry.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn history(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(params): Query<HistoryParams>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let (after_version, limit) = params.page()?;
    let page = app.commands.history(id, after_version, limit).await?;
    let next = match (page.more, page.events.last()) {
        (true, Some(last)) => Some(format!(
            "</warrior/{id}/events?after_version={}&limit={limit}>; rel=\"next\"",
            last.version
        )),
        _ => None,
    };
    let entries: Vec<HistoryEntry> = page
        .events
        .into_iter()
        .map(|e| HistoryEntry {
            event_id: e.event_id,
            event_type: e.event_type,
            version: e.version,
            occurred_at: e.occurred_at,
            data: e.data,
        })
        .collect();
    let mut response = Json(entries).into_response();
    if let Some(link) = next.and_then(|link| HeaderValue::from_str(&link).ok()) {
        response.headers_mut().insert(header::LINK, link);
    }
    Ok(response)
}

/// Command side alive.
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "commandHealth",
    tag = "operations",
    responses((status = 200, description = "The process is alive.", body = Health)),
)]
pub async fn health() -> Json<Health> {
    health::alive().await
}

/// Command side alive (original API).
#[utoipa::path(
    get,
    path = "/api/v1/commands/health",
    operation_id = "commandHealthV1",
    tag = "v1",
    responses((status = 200, description = "The command side is alive.", body = Health)),
)]
pub async fn health_v1() -> Json<Health> {
    health::alive().await
}

/// Command side ready.
#[utoipa::path(
    get,
    path = "/ready",
    operation_id = "commandReady",
    tag = "operations",
    responses(
        (status = 200, description = "The event store and Kafka are reachable.", body = Readiness),
        (status = 503, description = "The event store or Kafka is unreachable.", body = Readiness),
    ),
)]
pub async fn ready(State(app): State<Arc<AppState>>) -> Readiness {
    let (database, kafka) = tokio::join!(
        health::database_answers(app.commands.store().pool()),
        app.kafka.topic_reachable()
    );
    Readiness { database, kafka }
}

/// `{id}`: a warrior's UUID. Anything else names no warrior (404).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct WarriorId {
    /// The warrior's id.
    id: Uuid,
}

/// `If-Match` on `PUT` and `DELETE`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IfMatch {
    /// `"N"` (or `W/"N"`, or a list such as `"1", "2"`): apply only if the
    /// current version is one of them, else 412 and nothing is written. `*`
    /// or absent: apply on top of the latest.
    #[param(rename = "If-Match", required = false, example = "\"1\"")]
    if_match: String,
}

/// `Idempotency-Key` on creates.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IdempotencyKeyParam {
    /// 1 to 255 visible ASCII characters. A repeat with the same body gets
    /// the first answer and appends nothing; the same key with a different
    /// body gets 422. Anything else is a 400.
    #[param(
        rename = "Idempotency-Key",
        required = false,
        min_length = 1,
        max_length = 255,
        pattern = "^[!-~]([ -~]*[!-~])?$"
    )]
    idempotency_key: String,
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

/// The versions `If-Match` accepts: a list of `"N"` (or `W/"N"`) entity
/// tags, in one header or several (RFC 9110); `None` without the header or
/// with `*`. A tag that names no version can never match, so it adds
/// nothing: with none left the list is empty and the command answers 412.
fn if_match(headers: &HeaderMap) -> Option<Vec<i64>> {
    let values: Vec<&str> = headers
        .get_all(header::IF_MATCH)
        .iter()
        .map(|value| value.to_str().unwrap_or_default())
        .collect();
    if values.is_empty() || values.iter().any(|value| value.trim() == "*") {
        return None;
    }
    Some(
        values
            .iter()
            .flat_map(|value| value.split(','))
            .filter_map(|tag| {
                let tag = tag.trim();
                tag.strip_prefix("W/").unwrap_or(tag).trim_matches('"').parse().ok()
            })
            .collect(),
    )
}

/// What every write records besides its event: the request id.
fn request_meta(headers: &HeaderMap) -> RequestMeta {
    RequestMeta {
        request_id: headers.get(REQUEST_ID).and_then(|v| v.to_str().ok()).map(str::to_owned),
        idempotency_key: None,
    }
}

/// [`request_meta`] and, for creates only, the `Idempotency-Key` (PUT and
/// DELETE are idempotent by nature; a key sent with them is ignored, as the
/// contract defines keys for POST).
fn create_meta(headers: &HeaderMap) -> Result<RequestMeta, ApiError> {
    let idempotency_key = headers
        .get(IDEMPOTENCY_KEY)
        .map(|value| IdempotencyKey::parse(value.as_bytes()).map_err(ApiError::BadIdempotencyKey))
        .transpose()?;
    Ok(RequestMeta {
        idempotency_key,
        ..request_meta(headers)
    })
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn with_if_match(values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::IF_MATCH, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn if_match_reads_lists_weak_tags_and_several_headers() {
        assert_eq!(if_match(&HeaderMap::new()), None);
        assert_eq!(if_match(&with_if_match(&["*"])), None);
        assert_eq!(if_match(&with_if_match(&["\"3\""])), Some(vec![3]));
        assert_eq!(if_match(&with_if_match(&["W/\"3\""])), Some(vec![3]));
        assert_eq!(if_match(&with_if_match(&["\"1\", W/\"2\""])), Some(vec![1, 2]));
        assert_eq!(if_match(&with_if_match(&["\"1\"", "\"4\""])), Some(vec![1, 4]));
    }

    #[test]
    fn an_if_match_naming_no_version_matches_nothing() {
        assert_eq!(if_match(&with_if_match(&["\"abc\""])), Some(vec![]));
        assert_eq!(if_match(&with_if_match(&[""])), Some(vec![]));
    }
}
