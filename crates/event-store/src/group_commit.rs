//! Group commit: one writer task drains every append waiting at that moment
//! and commits them together.
//!
//! Throughput then grows with concurrency (one round trip and one WAL flush
//! serve a whole batch) while each caller still learns only after its own
//! event is durable. When idle, a lone append is written at once: no timer,
//! so batching adds no latency.
//!
//! An append its caller gave up on (a deadline passed, the client went away)
//! before the writer took it is never written: a timeout answered "retry
//! later" must not commit behind the client's back, or its retry would write
//! the command twice. Once taken into a batch, the append's outcome is
//! waited for whatever the deadline.

use std::sync::atomic::{AtomicU8, Ordering};
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

/// Where an append stands between its caller and the writer; whoever moves
/// it out of `QUEUED` first decides whether it is written.
const QUEUED: u8 = 0;
const TAKEN: u8 = 1;
const ABANDONED: u8 = 2;

/// An append waiting for the writer.
struct Pending {
    event: NewEvent,
    reply: Reply,
    state: Arc<AtomicU8>,
}

/// Marks an append abandoned unless the writer took it first: dropped when
/// the caller's future is (client gone) or its deadline passed.
struct AbandonUnlessTaken(Arc<AtomicU8>);

impl AbandonUnlessTaken {
    /// True if the append is now abandoned (it will never be written).
    fn abandon(&self) -> bool {
        self.0
            .compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

impl Drop for AbandonUnlessTaken {
    fn drop(&mut self) {
        self.abandon();
    }
}

/// How appends reach the database: grouped by the writer task, or each in
/// its own statement straight from the caller (group commit off, the
/// baseline benchmarks compare against).
#[derive(Debug, Clone)]
pub enum Appender {
    Grouped(GroupCommitter),
    Direct { store: EventStore, committed: Arc<Notify> },
}

impl Appender {
    /// Appends one event; resolves once it is committed (or refused), or
    /// with [`EventStoreError::TimedOut`] if it was not under way within
    /// `timeout` (grouped: then it is never written).
    pub async fn append(&self, event: NewEvent, timeout: Duration) -> Result<AppendOutcome, EventStoreError> {
        match self {
            Self::Grouped(writer) => writer.append_within(event, timeout).await,
            Self::Direct { store, committed } => {
                let append = store.append_batch(std::slice::from_ref(&event));
                let outcome = tokio::time::timeout(timeout, append)
                    .await
                    .map_err(|_| EventStoreError::TimedOut(timeout))??
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
    queue: mpsc::Sender<Pending>,
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
        self.append_within(event, Duration::MAX).await
    }

    /// Like [`append`](Self::append), but gives up with
    /// [`EventStoreError::TimedOut`] if the writer has not taken the event
    /// into a batch within `timeout`; the event is then never written. An
    /// event already taken is waited for: its batch is being committed.
    pub async fn append_within(&self, event: NewEvent, timeout: Duration) -> Result<AppendOutcome, EventStoreError> {
        let deadline = tokio::time::Instant::now().checked_add(timeout);
        let (reply, outcome) = oneshot::channel();
        let state = Arc::new(AtomicU8::new(QUEUED));
        let claim = AbandonUnlessTaken(Arc::clone(&state));
        let queued = self.queue.send(Pending { event, reply, state });
        match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, queued)
                .await
                .map_err(|_| EventStoreError::TimedOut(timeout))?,
            None => queued.await,
        }
        .map_err(|_| EventStoreError::WriterStopped)?;
        tokio::pin!(outcome);
        if let Some(deadline) = deadline {
            if let Ok(answer) = tokio::time::timeout_at(deadline, &mut outcome).await {
                return answer.map_err(|_| EventStoreError::WriterStopped)?;
            }
            if claim.abandon() {
                return Err(EventStoreError::TimedOut(timeout));
            }
        }
        outcome.await.map_err(|_| EventStoreError::WriterStopped)?
    }
}

async fn run_writer(
    store: EventStore,
    max_batch: usize,
    mut rx: mpsc::Receiver<Pending>,
    committed: Arc<Notify>,
    on_batch: impl Fn(usize, Duration),
) {
    let mut events = Vec::with_capacity(max_batch);
    let mut replies = Vec::with_capacity(max_batch);
    let mut pending: Vec<Pending> = Vec::with_capacity(max_batch);
    // recv_many waits for at least one item, then takes whatever else is
    // already queued: exactly the "flush at once when nothing else waits" rule.
    while rx.recv_many(&mut pending, max_batch).await > 0 {
        pending.retain(|p| {
            p.state
                .compare_exchange(QUEUED, TAKEN, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        });
        if pending.is_empty() {
            continue;
        }
        // One order for every writer (by stream, then version), so batches of
        // two instances that both insert the same keys wait on each other in
        // the same order and cannot deadlock (which would fail both whole).
        pending.sort_unstable_by_key(|p| (p.event.aggregate_id, p.event.version));
        for Pending { event, reply, .. } in pending.drain(..) {
            events.push(event);
            replies.push(reply);
        }
        let started = Instant::now();
        let result = match store.append_batch(&events).await {
            Err(EventStoreError::OutcomeUnknown(error)) => {
                tracing::warn!(%error, batch = events.len(), "connection lost while appending; settling the batch");
                store.settle_batch(&events).await.map_err(|settling| match settling {
                    // Still unknown whether the first attempt committed.
                    EventStoreError::Database(_) => EventStoreError::OutcomeUnknown(error),
                    other => other,
                })
            }
            other => other,
        };
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
