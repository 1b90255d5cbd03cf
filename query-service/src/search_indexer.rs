//! The search indexer: keeps `warrior_names` (the trigram-indexed names)
//! in step with the rows the projector writes.
//!
//! The projector queues the id of every row it changes in the same
//! statement as the row; this task takes queued ids in batches, off the
//! path of lookups, and indexes them. It wakes on each batch the projector
//! announces, waits a moment so that busy periods give it fuller batches,
//! and also polls now and then for ids queued by other instances or left
//! from before a crash.

use std::time::Duration;

use tokio::sync::{broadcast, watch};

use crate::projector::AppliedBatch;
use crate::read_model::ReadModel;

/// Most ids indexed per transaction. Until the cleanup that follows each
/// batch, every search also scans the batch's pending index entries: at
/// 1,000 names that slowed searches down when they were busiest.
const BATCH: i64 = 250;
/// How long to let ids gather after a wake-up.
const GATHER: Duration = Duration::from_millis(20);
/// How often to look at the queue without a wake-up.
const POLL: Duration = Duration::from_millis(500);
const BACKOFF: Duration = Duration::from_millis(500);

pub async fn run(
    read_model: ReadModel,
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
            _ = applied.recv() => tokio::time::sleep(GATHER).await,
            () = tokio::time::sleep(POLL) => {}
            _ = shutdown.changed() => break,
        }
    }
    tracing::info!("search indexer stopped");
}
