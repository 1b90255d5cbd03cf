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
    /// The connection failed after the statement was sent (lost, or the
    /// server shut down): it may have committed. The group-commit writer
    /// settles such a batch ([`crate::EventStore::settle_batch`]); this
    /// reaches a caller only when that failed too.
    #[error("event store connection lost while appending; the outcome is unknown: {0}")]
    OutcomeUnknown(#[source] Arc<sqlx::Error>),
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

impl EventStoreError {
    /// A statement error after which the statement may still have
    /// committed: the connection broke (I/O, a protocol error, SQLSTATE
    /// class 08) or the server shut it down (57P01-57P04). Any other
    /// failure of an autocommit statement rolled it back.
    pub(crate) fn from_statement(error: sqlx::Error) -> Self {
        let unknown = match &error {
            sqlx::Error::Io(_) | sqlx::Error::Protocol(_) => true,
            sqlx::Error::Database(db) => db
                .code()
                .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
            _ => false,
        };
        if unknown {
            Self::OutcomeUnknown(Arc::new(error))
        } else {
            Self::Database(Arc::new(error))
        }
    }
}
