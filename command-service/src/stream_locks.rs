//! One writer at a time per warrior, within this instance, for writes that
//! re-decide after a lost race (`PUT`/`DELETE` without `If-Match`).
//!
//! Group commit appends a batch in one statement, so of N concurrent writers
//! to one warrior only one wins each round and the rest load and try again:
//! N² attempts, and past the retry bound a `409` the contract does not allow
//! ("the change applies on top of the latest version"; 50 concurrent PUTs
//! gave 19 of them). Queued here, each writer loads the version its
//! predecessor wrote and appends once. Writers in other instances can still
//! race; the retry loop settles those few.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};
use uuid::Uuid;

/// One warrior's queue, and how many writers hold or await it.
#[derive(Debug, Default)]
struct Lane {
    turn: Arc<AsyncMutex<()>>,
    writers: usize,
}

/// The lanes in use, one per warrior being written; a lane goes when its
/// last writer is done (or gave up waiting), so the map stays as small as
/// the number of warriors written at this moment.
#[derive(Debug, Default)]
pub struct StreamLocks {
    lanes: Mutex<HashMap<Uuid, Lane>>,
}

/// A writer's place in a warrior's lane: its turn once [`StreamLocks::lock`]
/// returned. Dropped, the next writer proceeds; dropped while still waiting
/// (a cancelled request), it leaves the queue.
#[derive(Debug)]
pub struct StreamGuard<'a> {
    locks: &'a StreamLocks,
    id: Uuid,
    turn: Option<OwnedMutexGuard<()>>,
}

impl StreamLocks {
    /// Waits for the writers of `id` queued before this one.
    pub async fn lock(&self, id: Uuid) -> StreamGuard<'_> {
        let turn = {
            let mut lanes = self.lanes();
            let lane = lanes.entry(id).or_default();
            lane.writers += 1;
            Arc::clone(&lane.turn)
        };
        // Counted from here on: if this wait is cancelled, the guard's drop
        // takes the writer out again.
        let mut guard = StreamGuard {
            locks: self,
            id,
            turn: None,
        };
        guard.turn = Some(turn.lock_owned().await);
        guard
    }

    /// How many warriors have a lane now.
    pub fn len(&self) -> usize {
        self.lanes().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Nothing panics while the map is locked, so a poisoned lock still
    /// holds a consistent map.
    fn lanes(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Lane>> {
        self.lanes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for StreamGuard<'_> {
    fn drop(&mut self) {
        drop(self.turn.take());
        let mut lanes = self.locks.lanes();
        if let Some(lane) = lanes.get_mut(&self.id) {
            lane.writers -= 1;
            if lane.writers == 0 {
                lanes.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn writers_of_one_warrior_take_turns_and_others_do_not_wait() {
        let locks = StreamLocks::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let first = locks.lock(a).await;
        let other = tokio::time::timeout(Duration::from_secs(1), locks.lock(b)).await;
        assert!(other.is_ok(), "a different warrior must not wait");
        drop(other);

        let second = locks.lock(a);
        tokio::pin!(second);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), &mut second)
                .await
                .is_err(),
            "the same warrior must wait for the first writer"
        );
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(1), second).await;
        assert!(second.is_ok(), "released lanes let the next writer in");
    }

    #[tokio::test]
    async fn lanes_are_forgotten_once_nobody_holds_or_awaits_them() {
        let locks = StreamLocks::default();
        let id = Uuid::now_v7();
        let first = locks.lock(id).await;
        let waiter = {
            let locks = &locks;
            async move { drop(locks.lock(id).await) }
        };
        tokio::pin!(waiter);
        assert!(tokio::time::timeout(Duration::from_millis(20), &mut waiter)
            .await
            .is_err());
        drop(first);
        assert_eq!(locks.len(), 1, "the waiter still needs the lane");
        waiter.await;
        assert!(locks.is_empty());
    }

    #[tokio::test]
    async fn a_writer_that_gives_up_waiting_leaves_no_lane_behind() {
        let locks = StreamLocks::default();
        let id = Uuid::now_v7();
        let first = locks.lock(id).await;
        let gave_up = tokio::time::timeout(Duration::from_millis(20), locks.lock(id)).await;
        assert!(gave_up.is_err(), "the second writer waits for the first");
        drop(first);
        assert!(locks.is_empty(), "{} lanes left", locks.len());
        let again = tokio::time::timeout(Duration::from_secs(1), locks.lock(id)).await;
        assert!(again.is_ok(), "the warrior can be written again");
        drop(again);

        // Given its turn, but cancelled before it could take it.
        let first = locks.lock(id).await;
        let mut waiter = Box::pin(locks.lock(id));
        assert!(tokio::time::timeout(Duration::from_millis(20), &mut waiter)
            .await
            .is_err());
        drop(first);
        drop(waiter);
        assert!(locks.is_empty(), "{} lanes left", locks.len());
    }
}
