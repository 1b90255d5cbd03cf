//! The one place where command-side failures become HTTP responses.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use event_store::EventStoreError;
use http_kit::Problem;
use shared_kernel::InputError;
use thiserror::Error;

use crate::commands::CommandError;

#[derive(Debug, Error)]
pub enum ApiError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("Idempotency-Key {0}")]
    BadIdempotencyKey(&'static str),
    /// A query parameter out of its range.
    #[error("query parameter {field} {reason}")]
    BadQuery { field: &'static str, reason: String },
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match self {
            Self::Input(InputError::Malformed { detail, errors }) => {
                let problem = Problem::typed(
                    StatusCode::BAD_REQUEST,
                    "malformed-body",
                    "Malformed request body",
                    detail,
                );
                if errors.is_empty() {
                    problem
                } else {
                    problem.with_errors(errors)
                }
            }
            Self::Input(InputError::Invalid { errors }) => Problem::typed(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-warrior",
                "Invalid warrior",
                "one or more fields have unacceptable values",
            )
            .with_errors(errors),
            Self::BadIdempotencyKey(reason) => Problem::new(StatusCode::BAD_REQUEST, self.to_string())
                .with_errors(serde_json::json!({"Idempotency-Key": reason})),
            Self::BadQuery { field, ref reason } => Problem::typed(
                StatusCode::BAD_REQUEST,
                "malformed-query",
                "Malformed query string",
                self.to_string(),
            )
            .with_errors(serde_json::json!({ field: reason })),
            Self::Command(error) => return command_problem(error).into_response(),
        };
        problem.into_response()
    }
}

fn command_problem(error: CommandError) -> Problem {
    match error {
        CommandError::NotFound => Problem::new(StatusCode::NOT_FOUND, "no such warrior"),
        CommandError::VersionMismatch { current } => Problem::typed(
            StatusCode::PRECONDITION_FAILED,
            "version-mismatch",
            "Version mismatch",
            format!("If-Match does not name the current version ({current}); nothing was written"),
        ),
        CommandError::IdempotencyKeyReused => Problem::typed(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "Idempotency key reused",
            "this Idempotency-Key was first used with a different body",
        )
        .with_errors(serde_json::json!({"Idempotency-Key": "already used with a different body"})),
        CommandError::TooMuchContention => Problem::new(
            StatusCode::CONFLICT,
            "too many concurrent changes to this warrior; retry",
        ),
        CommandError::Unreadable(error) => {
            tracing::error!(%error, "unreadable event in the event store");
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
        CommandError::Store(error @ EventStoreError::OutcomeUnknown(_)) => {
            tracing::error!(%error, "a write's outcome is unknown");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the event store's connection was lost while this write was committing: it may have been \
                 applied; look before retrying (GET), or retry with the same Idempotency-Key or If-Match",
            )
        }
        CommandError::Store(error) => {
            // Logged in full here, never shown to the client.
            tracing::error!(%error, "event store unavailable");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the event store is unavailable; retry later",
            )
        }
    }
}
