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
    #[error("cannot confirm this warrior's newest version: the event store is unreachable; retry later")]
    CannotConfirm,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    ReadModel(Arc<sqlx::Error>),
    #[error("the service is shutting down")]
    ShuttingDown,
    /// A bug inside the service (already logged where it happened).
    #[error("internal error")]
    Internal,
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
            Self::CannotConfirm | Self::ShuttingDown => Problem::new(StatusCode::SERVICE_UNAVAILABLE, self.to_string()),
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
            Self::Internal => Problem::new(StatusCode::INTERNAL_SERVER_ERROR, self.to_string()),
            Self::Database(error) => read_model_unavailable(error),
            Self::ReadModel(error) => read_model_unavailable(error),
        };
        problem.into_response()
    }
}

/// Logged in full here, never shown to the client. A search that ran out
/// of its time limit (`SEARCH_TIMEOUT_MS`, PostgreSQL's statement timeout,
/// 57014) is told apart: the read model is up, that search was too slow.
fn read_model_unavailable(error: &sqlx::Error) -> Problem {
    let timed_out = matches!(error, sqlx::Error::Database(e) if e.code().as_deref() == Some("57014"));
    if timed_out {
        tracing::warn!(%error, "a search ran out of its time limit");
        return Problem::typed(
            StatusCode::SERVICE_UNAVAILABLE,
            "search-timeout",
            "Search took too long",
            "the search ran out of its time limit; retry, or search a longer or rarer term",
        );
    }
    tracing::error!(%error, "read model unavailable");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the read model is unavailable; retry later",
    )
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use sqlx::error::{DatabaseError, ErrorKind};

    use super::*;

    /// What PostgreSQL answers when a statement outlives `statement_timeout`.
    #[derive(Debug)]
    struct StatementTimeout;

    impl std::fmt::Display for StatementTimeout {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.message())
        }
    }

    impl std::error::Error for StatementTimeout {}

    impl DatabaseError for StatementTimeout {
        fn message(&self) -> &str {
            "canceling statement due to statement timeout"
        }

        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed("57014"))
        }

        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }

        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }

        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }

        fn kind(&self) -> ErrorKind {
            ErrorKind::Other
        }
    }

    async fn problem_type(error: ApiError) -> String {
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(response.into_body(), 4096).await.expect("body");
        let problem: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        problem["type"].as_str().unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn a_search_out_of_time_is_told_apart_from_an_unavailable_read_model() {
        let timed_out = ApiError::Database(sqlx::Error::Database(Box::new(StatementTimeout)));
        assert!(problem_type(timed_out).await.ends_with("search-timeout"));
        let down = ApiError::Database(sqlx::Error::PoolTimedOut);
        assert!(!problem_type(down).await.ends_with("search-timeout"));
    }
}
