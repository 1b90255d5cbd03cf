//! Coalesces concurrent point reads into one query per batch.
//!
//! Every `GET /warrior/{id}` reads one row of the read model and one stream
//! head of the event store. Sent one by one, each costs a round trip, a
//! pooled connection and a statement on each side; under a burst the pools
//! ran dry and requests timed out waiting for a connection. Here worker
//! tasks (the service runs one per database: a second mostly sent one-id
//! batches) take whatever requests are queued (up to `max_batch`) and answer
//! them all with one `= ANY($1)` query. Idle, a lone request goes out at
//! once; under load batches grow and the cost per read falls, the same
//! trade as the command side's group commit.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use tokio::sync::{mpsc, oneshot, Mutex};

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

/// Why a coalesced read has no answer.
#[derive(Debug)]
pub enum CoalesceError<E> {
    /// The batch query failed (shared by every request of the batch).
    Load(Arc<E>),
    /// The loader panicked while answering this request's batch (a bug;
    /// logged). The worker lives on for the next batch.
    Panicked,
    /// The workers are gone (shutting down).
    Closed,
}

impl<E: std::fmt::Display> std::fmt::Display for CoalesceError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Load(error) => error.fmt(f),
            Self::Panicked => f.write_str("the batch loader panicked"),
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
    /// Starts `workers` tasks that answer batches of at most `max_batch`
    /// keys with `load`, which returns the value of every key it found.
    /// `source` labels the batch-size histogram (`lookup_batch_size`).
    pub fn spawn<F, Fut>(source: &'static str, workers: usize, max_batch: usize, load: F) -> Self
    where
        F: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<HashMap<K, V>, E>> + Send,
    {
        let (sender, receiver) = mpsc::channel(max_batch * workers * 4);
        let receiver = Arc::new(Mutex::new(receiver));
        let load = Arc::new(load);
        for _ in 0..workers {
            let receiver = Arc::clone(&receiver);
            let load = Arc::clone(&load);
            tokio::spawn(async move {
                let mut batch = Vec::with_capacity(max_batch);
                loop {
                    // Hold the lock only while taking requests, so another
                    // worker can gather the next batch while this one waits
                    // on the database.
                    if receiver.lock().await.recv_many(&mut batch, max_batch).await == 0 {
                        return;
                    }
                    // A panic in the loader must fail its batch, not the
                    // worker: with the worker gone every later read of this
                    // source would fail until the service restarts.
                    let answered = AssertUnwindSafe(answer(source, load.as_ref(), &mut batch))
                        .catch_unwind()
                        .await;
                    if answered.is_err() {
                        tracing::error!(
                            source,
                            requests = batch.len(),
                            "a coalesced read panicked; its batch fails"
                        );
                        // Dropping the replies tells each requester.
                        batch.clear();
                    }
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
            // The worker dropped the reply unanswered: only a panic does.
            Err(_) => Err(CoalesceError::Panicked),
        }
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

    #[tokio::test]
    async fn concurrent_requests_share_batches_and_get_their_own_answers() {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let coalescer: Coalescer<u32, u32, ()> = Coalescer::spawn("test", 1, 64, move |keys: Vec<u32>| {
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
            Coalescer::spawn("test", 2, 8, |_keys: Vec<u32>| async { Err("database down") });
        match coalescer.get(1).await {
            Err(CoalesceError::Load(error)) => assert_eq!(*error, "database down"),
            other => panic!("expected the load error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_panicking_batch_fails_its_requests_and_the_worker_carries_on() {
        let coalescer: Coalescer<u32, u32, ()> = Coalescer::spawn("test", 1, 8, |keys: Vec<u32>| async move {
            assert!(!keys.contains(&13), "the loader's bug");
            Ok(keys.into_iter().map(|k| (k, k * 10)).collect())
        });
        assert!(matches!(coalescer.get(13).await, Err(CoalesceError::Panicked)));
        assert_eq!(coalescer.get(2).await.expect("the worker survived"), Some(20));
    }
}
