use std::sync::Arc;

use thiserror::Error;

/// Failures of the event store. Version conflicts are not errors: they are an
/// expected outcome of optimistic concurrency, see [`crate::AppendOutcome`].
#[derive(Debug, Clone, Error)]
pub enum EventStoreError {
    /// The database could not be reached or refused the statement. Shared by
    /// every command of a failed batch, hence the `Arc`.
    #[error("event store database error: {0}")]
    Database(#[source] Arc<sqlx::Error>),
    /// No answer within the caller's deadline (e.g. the database is down and
    /// connection attempts are timing out).
    #[error("event store did not answer within {0:?}")]
    TimedOut(std::time::Duration),
    /// The group-commit writer task is gone (the service is shutting down).
    #[error("event store writer has stopped")]
    WriterStopped,
}

impl From<sqlx::Error> for EventStoreError {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(Arc::new(error))
    }
}
