//! A PostgreSQL event store.
//!
//! * Appends are checked by the database (`UNIQUE (aggregate_id, version)`):
//!   two writers expecting the same version cannot both win.
//! * Each appended event is queued in an outbox table by the same statement,
//!   so publishing can never miss a committed event nor see a rolled-back one.
//! * [`GroupCommitter`] turns many concurrent appends into one round trip.

mod error;
mod group_commit;
mod open_transactions;
mod outbox;
mod store;

pub use error::EventStoreError;
pub use group_commit::{Appender, GroupCommitConfig, GroupCommitter};
pub use open_transactions::OpenTransactions;
pub use outbox::OutboxLease;
pub use store::{AppendOutcome, CatchUp, CatchUpRound, EventStore, NewEvent, Snapshot, StoredEvent};

/// Migrations of the event-store database, embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/eventstore");
