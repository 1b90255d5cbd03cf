//! `GET /openapi.json`: a service's OpenAPI document, serialised once.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, MethodRouter};

/// The route serving `doc` as `application/json`.
pub fn openapi_json<S: Clone + Send + Sync + 'static>(doc: &utoipa::openapi::OpenApi) -> MethodRouter<S> {
    // Serialising a document of plain data cannot fail.
    let body = doc.to_pretty_json().unwrap_or_default();
    get(move || {
        let body = body.clone();
        async move { ([(header::CONTENT_TYPE, "application/json")], body).into_response() }
    })
}
