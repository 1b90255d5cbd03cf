//! Group commit: one writer task drains every append waiting at that moment
//! and commits them together.
//!
//! Throughput then grows with concurrency (one round trip and one WAL flush
//! serve a whole batch) while each caller still learns only after its own
//! event is durable. When idle, a lone append is written at once: no timer,
//! so batching adds no latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

use crate::{AppendOutcome, EventStore, EventStoreError, NewEvent};

/// Tuning of the writer.
#[derive(Debug, Clone, Copy)]
pub struct GroupCommitConfig {
    /// Most events in one statement. `1` turns batching off (for comparison).
    pub max_batch: usize,
    /// Appends allowed to wait for the writer before callers queue up.
    pub queue_capacity: usize,
}

impl Default for GroupCommitConfig {
    fn default() -> Self {
        Self {
            max_batch: 1024,
            queue_capacity: 8192,
        }
    }
}

type Reply = oneshot::Sender<Result<AppendOutcome, EventStoreError>>;

/// How appends reach the database: grouped by the writer task, or each in
/// its own statement straight from the caller (group commit off, the
/// baseline benchmarks compare against).
#[derive(Debug, Clone)]
pub enum Appender {
    Grouped(GroupCommitter),
    Direct { store: EventStore, committed: Arc<Notify> },
}

impl Appender {
    /// Appends one event; resolves once it is committed (or refused).
    pub async fn append(&self, event: NewEvent) -> Result<AppendOutcome, EventStoreError> {
        match self {
            Self::Grouped(writer) => writer.append(event).await,
            Self::Direct { store, committed } => {
                let outcome = store
                    .append_batch(std::slice::from_ref(&event))
                    .await?
                    .pop()
                    .unwrap_or(AppendOutcome::Conflict);
                if matches!(outcome, AppendOutcome::Committed { .. }) {
                    committed.notify_one();
                }
                Ok(outcome)
            }
        }
    }
}

/// Front door of the writer task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct GroupCommitter {
    queue: mpsc::Sender<(NewEvent, Reply)>,
}

impl GroupCommitter {
    /// Starts the writer. `committed` is notified after every batch that
    /// committed at least one event (the outbox relay waits on it).
    /// `on_batch` sees every batch's size and how long its append took, for
    /// metrics.
    pub fn spawn(
        store: EventStore,
        config: GroupCommitConfig,
        committed: Arc<Notify>,
        on_batch: impl Fn(usize, Duration) + Send + 'static,
    ) -> (Self, JoinHandle<()>) {
        let (queue, rx) = mpsc::channel(config.queue_capacity.max(1));
        let handle = tokio::spawn(run_writer(store, config.max_batch.max(1), rx, committed, on_batch));
        (Self { queue }, handle)
    }

    /// Appends one event; resolves once it is committed (or refused).
    pub async fn append(&self, event: NewEvent) -> Result<AppendOutcome, EventStoreError> {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send((event, reply))
            .await
            .map_err(|_| EventStoreError::WriterStopped)?;
        outcome.await.map_err(|_| EventStoreError::WriterStopped)?
    }
}

async fn run_writer(
    store: EventStore,
    max_batch: usize,
    mut rx: mpsc::Receiver<(NewEvent, Reply)>,
    committed: Arc<Notify>,
    on_batch: impl Fn(usize, Duration),
) {
    let mut events = Vec::with_capacity(max_batch);
    let mut replies = Vec::with_capacity(max_batch);
    let mut pending = Vec::with_capacity(max_batch);
    // recv_many waits for at least one item, then takes whatever else is
    // already queued: exactly the "flush at once when nothing else waits" rule.
    while rx.recv_many(&mut pending, max_batch).await > 0 {
        for (event, reply) in pending.drain(..) {
            events.push(event);
            replies.push(reply);
        }
        let started = Instant::now();
        let result = store.append_batch(&events).await;
        on_batch(events.len(), started.elapsed());
        match result {
            Ok(outcomes) => {
                if outcomes.iter().any(|o| matches!(o, AppendOutcome::Committed { .. })) {
                    committed.notify_one();
                }
                for (reply, outcome) in replies.drain(..).zip(outcomes) {
                    // The caller may have given up (client went away): nothing to do.
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                tracing::warn!(%error, batch = events.len(), "append batch failed");
                for reply in replies.drain(..) {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
        events.clear();
    }
}
