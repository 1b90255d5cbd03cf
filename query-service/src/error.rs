//! The one place where query-side failures become HTTP responses.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use event_store::EventStoreError;
use http_kit::Problem;
use shared_kernel::UnknownEventType;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ApiError {
    #[error("no such warrior")]
    NotFound,
    #[error("query parameter t must contain a non-blank search term")]
    MissingTerm,
    #[error("the event store is unavailable; retry later")]
    EventStore(#[source] Arc<EventStoreError>),
    /// 503, not 500: an event of a newer schema than this build knows is
    /// readable by a newer query-service; retrying there (or after the
    /// upgrade) succeeds. (Deploy readers first: docs/EVENTS.md.)
    #[error("the event store holds an event this build cannot read")]
    UnreadableEvent(#[source] UnknownEventType),
    #[error("cannot tell whether this warrior was just created: the event store is unreachable; retry later")]
    CannotConfirmAbsence,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    ReadModel(Arc<sqlx::Error>),
    #[error("the service is shutting down")]
    ShuttingDown,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match &self {
            Self::NotFound => Problem::new(StatusCode::NOT_FOUND, self.to_string()),
            Self::MissingTerm => Problem::typed(
                StatusCode::BAD_REQUEST,
                "missing-term",
                "Missing search term",
                self.to_string(),
            )
            .with_errors(serde_json::json!({"t": "is required and must not be blank"})),
            Self::CannotConfirmAbsence | Self::ShuttingDown => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, self.to_string())
            }
            Self::EventStore(error) => {
                tracing::error!(%error, "the event store could not answer a lookup the read model could not serve");
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, self.to_string())
            }
            Self::UnreadableEvent(error) => {
                tracing::error!(%error, "a lookup met an event this build cannot decode");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the warrior cannot be read right now; retry later",
                )
            }
            Self::Database(error) => read_model_unavailable(error),
            Self::ReadModel(error) => read_model_unavailable(error),
        };
        problem.into_response()
    }
}

/// Logged in full here, never shown to the client.
fn read_model_unavailable(error: &sqlx::Error) -> Problem {
    tracing::error!(%error, "read model unavailable");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the read model is unavailable; retry later",
    )
}
