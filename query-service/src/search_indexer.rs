//! The search indexer: keeps `warrior_names` (the trigram-indexed names)
//! in step with the rows the projector writes.
//!
//! The projector queues the id of every row it changes in the same
//! statement as the row; this task takes queued ids in batches, off the
//! path of lookups, and indexes them. Like a search engine's refresh
//! interval, it lets names gather for a while after the projector announces
//! a batch and then indexes them all at once: merging names into the
//! trigram index costs ~430 µs of database CPU per name 25 at a time, ~70 µs
//! 1,000 at a time (measured on this project's 2-core box), and at the
//! Gatling peak of 1,000 creations a second small batches took a fifth of
//! the machine. It also polls now and then for ids queued by other
//! instances or left from before a crash.

use std::time::Duration;

use tokio::sync::{broadcast, watch};

use crate::projector::AppliedBatch;
use crate::read_model::ReadModel;

/// Most ids indexed per transaction. Until the cleanup that follows each
/// batch, searches also scan the batch's pending index entries, so a batch
/// is kept to what a busy second brings.
const BATCH: i64 = 2000;
/// How often to look at the queue without a wake-up.
const POLL: Duration = Duration::from_millis(500);
const BACKOFF: Duration = Duration::from_millis(500);

/// Indexes queued names until `shutdown`, at most once per `refresh` unless
/// a backlog (a full batch) is waiting.
pub async fn run(
    read_model: ReadModel,
    refresh: Duration,
    mut applied: broadcast::Receiver<AppliedBatch>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        match read_model.index_names(BATCH).await {
            Ok(taken) => {
                metrics::histogram!("search_index_batch_size").record(taken as f64);
                if taken as i64 == BATCH {
                    continue; // more is queued
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot index names for search; retrying");
                tokio::time::sleep(BACKOFF).await;
            }
        }
        tokio::select! {
            // Lagged or closed: index anyway, the queue is the truth.
            _ = applied.recv() => {
                tokio::select! {
                    () = tokio::time::sleep(refresh) => {}
                    _ = shutdown.changed() => break,
                }
                // Batches announced while gathering are in this round.
                applied = applied.resubscribe();
            }
            () = tokio::time::sleep(POLL) => {}
            _ = shutdown.changed() => break,
        }
    }
    tracing::info!("search indexer stopped");
}
