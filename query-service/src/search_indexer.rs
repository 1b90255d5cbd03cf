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
//!
//! Merging a batch into the trigram index costs about the same whatever its
//! size once it holds a thousand names (~200 ms of database CPU at 150k
//! warriors: the work is per distinct trigram, and a thousand random names
//! touch most of them). So rounds also keep to a duty cycle: the next one
//! starts no sooner than [`PAUSE_PER_WORK`] times the last one's duration
//! after it began (at most [`MAX_WORK_PAUSE`]). At a few creates a second,
//! names are searchable `refresh` after their row; at ~900 a second the
//! indexer takes ~2,300 names every ~3 s instead of ~900 every second, and
//! its database CPU per create fell from 206-226 µs to 122-124 µs.

use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::projector::AppliedBatch;
use crate::read_model::ReadModel;

/// Most ids indexed per transaction. Until the cleanup that follows each
/// batch, searches also scan the batch's pending index entries, so a batch
/// is kept to what a few busy seconds bring.
const BATCH: i64 = 5000;
/// The next round starts no sooner than this many times the last round's
/// duration after it began: the indexer keeps to about a twentieth of the
/// time under a heavy write load.
const PAUSE_PER_WORK: u32 = 20;
/// Bound of that pause, so names never wait much longer than this.
const MAX_WORK_PAUSE: Duration = Duration::from_secs(3);
/// How often to look at the queue without a wake-up.
const POLL: Duration = Duration::from_millis(500);
const BACKOFF: Duration = Duration::from_millis(500);

/// Indexes queued names until `shutdown`, at most once per `refresh` and
/// within the duty cycle, unless a backlog (a full batch) is waiting.
/// Shutdown waits for the round in hand only: a backlog of millions of names
/// (a catch-up) stays queued for the next start.
pub async fn run(
    read_model: ReadModel,
    refresh: Duration,
    mut applied: broadcast::Receiver<AppliedBatch>,
    mut shutdown: watch::Receiver<bool>,
) {
    while !*shutdown.borrow() {
        let started = Instant::now();
        let indexed = read_model.index_names(BATCH).await;
        let earliest = started + (started.elapsed() * PAUSE_PER_WORK).min(MAX_WORK_PAUSE);
        match indexed {
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
                    () = tokio::time::sleep_until((Instant::now() + refresh).max(earliest)) => {}
                    _ = shutdown.changed() => break,
                }
                // Batches announced while gathering are in this round.
                applied = applied.resubscribe();
            }
            () = tokio::time::sleep_until((Instant::now() + POLL).max(earliest)) => {}
            _ = shutdown.changed() => break,
        }
    }
    tracing::info!("search indexer stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::PgPool;

    /// With a backlog, rounds follow each other without a pause; shutdown
    /// used to be looked at only in the pauses, so a stopping service went
    /// on indexing a catch-up's millions of names until it was killed.
    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn shutdown_leaves_a_backlog_queued(pool: PgPool) {
        sqlx::query("INSERT INTO search_queue SELECT gen_random_uuid() FROM generate_series(1, $1)")
            .bind(3 * BATCH)
            .execute(&pool)
            .await
            .expect("queue ids");
        let (stop, shutdown) = watch::channel(false);
        let (_applied, applied) = broadcast::channel(1);
        stop.send(true).expect("the indexer's receiver is alive");

        tokio::time::timeout(
            Duration::from_secs(30),
            run(ReadModel::new(pool.clone()), Duration::ZERO, applied, shutdown),
        )
        .await
        .expect("the indexer stops");

        let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM search_queue")
            .fetch_one(&pool)
            .await
            .expect("count");
        assert!(
            queued >= 2 * BATCH,
            "at most one round after shutdown, {queued} ids left"
        );
    }
}
