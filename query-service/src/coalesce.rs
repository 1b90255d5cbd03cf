//! Coalesces concurrent point reads into one query per batch.
//!
//! Every `GET /warrior/{id}` reads one row of the read model and one stream
//! head of the event store. Sent one by one, each costs a round trip, a
//! pooled connection and a statement on each side; under a burst the pools
//! ran dry and requests timed out waiting for a connection. Here worker
//! tasks take whatever requests are queued (up to `max_batch`) and answer
//! them all with one `= ANY($1)` query. Idle, a lone request goes out at
//! once; under load batches grow and the cost per read falls, the same
//! trade as the command side's group commit. While one batch is out, the
//! next waits until it is worth a round trip ([`Batching::min_while_busy`]
//! keys) or the first is back: a second worker that sent whatever single
//! request had arrived made half the queries carry one id.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex, Notify};

type Reply<V, E> = oneshot::Sender<Result<Option<V>, Arc<E>>>;

/// Handle for submitting keys; cheap to clone.
pub struct Coalescer<K, V, E> {
    sender: mpsc::Sender<(K, Reply<V, E>)>,
}

impl<K, V, E> Clone for Coalescer<K, V, E> {
    fn clone(&self) -> Self {
        Self {
            sender: self.sender.clone(),
        }
    }
}

/// How a coalescer forms its batches.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Batches in flight at once.
    pub workers: usize,
    /// Most keys in one batch.
    pub max_batch: usize,
    /// While another batch is in flight, a batch goes out only once it holds
    /// this many keys or that batch is back (with one worker, never waits).
    pub min_while_busy: usize,
}

/// Why a coalesced read has no answer.
#[derive(Debug)]
pub enum CoalesceError<E> {
    /// The batch query failed (shared by every request of the batch).
    Load(Arc<E>),
    /// The workers are gone (shutting down).
    Closed,
}

impl<E: std::fmt::Display> std::fmt::Display for CoalesceError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Load(error) => error.fmt(f),
            Self::Closed => f.write_str("shutting down"),
        }
    }
}

impl<K, V, E> Coalescer<K, V, E>
where
    K: Eq + Hash + Clone + Send + 'static,
    V: Clone + Send + 'static,
    E: Send + Sync + 'static,
{
    /// Starts the workers of `batching`, which answer batches of keys with
    /// `load`, returning the value of every key it found. `source` labels
    /// the batch-size histogram (`lookup_batch_size`).
    pub fn spawn<F, Fut>(source: &'static str, batching: Batching, load: F) -> Self
    where
        F: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<HashMap<K, V>, E>> + Send,
    {
        let (sender, receiver) = mpsc::channel(batching.max_batch * batching.workers * 4);
        let shared = Arc::new(Workers {
            receiver: Mutex::new(receiver),
            in_flight: AtomicUsize::new(0),
            returned: Notify::new(),
        });
        let load = Arc::new(load);
        for _ in 0..batching.workers {
            let shared = Arc::clone(&shared);
            let load = Arc::clone(&load);
            tokio::spawn(async move {
                let mut batch = Vec::with_capacity(batching.max_batch);
                while shared.gather(&mut batch, batching).await {
                    let _out = InFlight::new(&shared);
                    answer(source, load.as_ref(), &mut batch).await;
                }
            });
        }
        Self { sender }
    }

    /// The value for `key`, or `None` if the loader did not find it.
    pub async fn get(&self, key: K) -> Result<Option<V>, CoalesceError<E>> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send((key, reply))
            .await
            .map_err(|_| CoalesceError::Closed)?;
        match answer.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(CoalesceError::Load(error)),
            Err(_) => Err(CoalesceError::Closed),
        }
    }
}

/// What a coalescer's workers share.
struct Workers<K, V, E> {
    receiver: Mutex<mpsc::Receiver<(K, Reply<V, E>)>>,
    /// Batches sent and not yet answered.
    in_flight: AtomicUsize,
    /// Woken each time a batch is answered.
    returned: Notify,
}

impl<K, V, E> Workers<K, V, E> {
    /// Fills `batch` with the next requests; `false` once the coalescer is
    /// dropped. The receiver stays locked meanwhile, so one worker gathers
    /// while the others wait on the database.
    async fn gather(&self, batch: &mut Vec<(K, Reply<V, E>)>, batching: Batching) -> bool {
        let mut receiver = self.receiver.lock().await;
        if receiver.recv_many(batch, batching.max_batch).await == 0 {
            return false;
        }
        while batch.len() < batching.min_while_busy {
            // Registered before the count is read: a batch answered in
            // between still wakes this wait.
            let returned = self.returned.notified();
            if self.in_flight.load(Ordering::Acquire) == 0 {
                break;
            }
            let room = batching.max_batch - batch.len();
            tokio::select! {
                received = receiver.recv_many(batch, room) => if received == 0 { break },
                () = returned => break,
            }
        }
        true
    }
}

/// Counts one batch as out until dropped, even by a panicking loader: a
/// count left behind would hold every later short batch back.
struct InFlight<'a, K, V, E>(&'a Workers<K, V, E>);

impl<'a, K, V, E> InFlight<'a, K, V, E> {
    fn new(workers: &'a Workers<K, V, E>) -> Self {
        workers.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(workers)
    }
}

impl<K, V, E> Drop for InFlight<'_, K, V, E> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.returned.notify_waiters();
    }
}

async fn answer<K, V, E, F, Fut>(source: &'static str, load: &F, batch: &mut Vec<(K, Reply<V, E>)>)
where
    K: Eq + Hash + Clone,
    V: Clone,
    F: Fn(Vec<K>) -> Fut,
    Fut: Future<Output = Result<HashMap<K, V>, E>>,
{
    let mut seen = HashSet::with_capacity(batch.len());
    let keys: Vec<K> = batch
        .iter()
        .filter(|(key, _)| seen.insert(key.clone()))
        .map(|(key, _)| key.clone())
        .collect();
    metrics::histogram!("lookup_batch_size", "source" => source).record(keys.len() as f64);
    match load(keys).await {
        Ok(found) => {
            for (key, reply) in batch.drain(..) {
                // A requester that gave up (timeout, disconnect) is fine.
                let _ = reply.send(Ok(found.get(&key).cloned()));
            }
        }
        Err(error) => {
            let error = Arc::new(error);
            for (_, reply) in batch.drain(..) {
                let _ = reply.send(Err(Arc::clone(&error)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE_WORKER: Batching = Batching {
        workers: 1,
        max_batch: 64,
        min_while_busy: 1,
    };

    /// The keys of each batch a test loader was given, in order.
    type Batches = mpsc::UnboundedReceiver<Vec<u32>>;

    /// A coalescer with two workers whose batches wait for 3 keys while
    /// another is out. Its loader reports each batch (keys sorted) on the
    /// returned channel, and the batch holding key 0 is answered only once
    /// `release` is notified.
    fn pipelined() -> (Coalescer<u32, u32, ()>, Batches, Arc<Notify>) {
        let (calls, batches) = mpsc::unbounded_channel();
        let release = Arc::new(Notify::new());
        let held = Arc::clone(&release);
        let batching = Batching {
            workers: 2,
            max_batch: 64,
            min_while_busy: 3,
        };
        let coalescer = Coalescer::spawn("test", batching, move |mut keys: Vec<u32>| {
            keys.sort_unstable();
            calls.send(keys.clone()).expect("test alive");
            let held = Arc::clone(&held);
            async move {
                if keys.contains(&0) {
                    held.notified().await;
                }
                Ok(keys.into_iter().map(|k| (k, k)).collect())
            }
        });
        (coalescer, batches, release)
    }

    /// `coalescer.get(key)` in a task of its own.
    fn spawn_get(
        coalescer: &Coalescer<u32, u32, ()>,
        key: u32,
    ) -> tokio::task::JoinHandle<Result<Option<u32>, CoalesceError<()>>> {
        let coalescer = coalescer.clone();
        tokio::spawn(async move { coalescer.get(key).await })
    }

    #[tokio::test]
    async fn while_a_batch_is_out_the_next_goes_once_it_holds_enough_keys() {
        let (coalescer, mut batches, release) = pipelined();
        let first = spawn_get(&coalescer, 0);
        assert_eq!(batches.recv().await, Some(vec![0]));
        let mut others = Vec::new();
        for k in 1..=3u32 {
            others.push(spawn_get(&coalescer, k));
            // Each key reaches the worker on its own: a worker that sent
            // what it had would send this one alone.
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
        }
        // Not one batch per key as they arrive: the three go out together,
        // and are answered while the first batch is still out.
        assert_eq!(batches.recv().await, Some(vec![1, 2, 3]));
        for (k, other) in (1..=3u32).zip(others) {
            assert_eq!(other.await.expect("task").expect("lookup"), Some(k));
        }
        assert!(!first.is_finished());
        release.notify_one();
        assert_eq!(first.await.expect("task").expect("lookup"), Some(0));
    }

    #[tokio::test]
    async fn a_short_batch_goes_when_the_batch_out_is_back() {
        let (coalescer, mut batches, release) = pipelined();
        let first = spawn_get(&coalescer, 0);
        assert_eq!(batches.recv().await, Some(vec![0]));
        let second = spawn_get(&coalescer, 1);
        release.notify_one();
        assert_eq!(first.await.expect("task").expect("lookup"), Some(0));
        assert_eq!(batches.recv().await, Some(vec![1]));
        assert_eq!(second.await.expect("task").expect("lookup"), Some(1));
    }

    #[tokio::test]
    async fn concurrent_requests_share_batches_and_get_their_own_answers() {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let coalescer: Coalescer<u32, u32, ()> = Coalescer::spawn("test", ONE_WORKER, move |keys: Vec<u32>| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move { Ok(keys.into_iter().filter(|k| k % 2 == 0).map(|k| (k, k * 10)).collect()) }
        });
        let answers = futures::future::join_all((0..100u32).map(|k| {
            let coalescer = coalescer.clone();
            async move { (k, coalescer.get(k).await.expect("lookup")) }
        }))
        .await;
        for (k, answer) in answers {
            assert_eq!(answer, (k % 2 == 0).then_some(k * 10), "key {k}");
        }
        assert!(calls.load(std::sync::atomic::Ordering::SeqCst) < 100);
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_of_its_requests() {
        let coalescer: Coalescer<u32, u32, &'static str> =
            Coalescer::spawn("test", ONE_WORKER, |_keys: Vec<u32>| async { Err("database down") });
        match coalescer.get(1).await {
            Err(CoalesceError::Load(error)) => assert_eq!(*error, "database down"),
            other => panic!("expected the load error, got {other:?}"),
        }
    }
}
