//! Exclusive access to the outbox for one relay at a time.
//!
//! The lease is a session-level advisory lock held on a dedicated connection:
//! if the holder crashes or its connection drops, PostgreSQL releases the lock
//! and another instance takes over. All outbox reads and deletes run on that
//! same connection, so a relay that lost its lease also loses its ability to
//! act on the outbox.

use sqlx::{Connection, PgConnection};

use crate::{EventStore, EventStoreError, StoredEvent};

/// Advisory lock key of the relay ("outbox" in ASCII).
const RELAY_LOCK_KEY: i64 = 0x6f_75_74_62_6f_78;

/// Rows the relay deletes between two vacuums of the outbox.
const VACUUM_AFTER_ROWS: u64 = 2000;

/// Held by the single active relay.
#[derive(Debug)]
pub struct OutboxLease {
    conn: PgConnection,
    /// Rows deleted since the outbox was last vacuumed.
    deleted: u64,
}

impl EventStore {
    /// Tries to become the active relay. `Ok(None)`: another instance holds it.
    pub async fn try_lease_outbox(&self) -> Result<Option<OutboxLease>, EventStoreError> {
        let mut conn = self.pool().acquire().await?.detach();
        let acquired: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(RELAY_LOCK_KEY)
            .fetch_one(&mut conn)
            .await?;
        if acquired {
            // Tells the relay's session apart in pg_stat_activity. Its
            // deletes need no flush to disk before the relay goes on: one
            // lost in a crash only publishes those events again, which
            // at-least-once delivery allows (their ids are stable). Waiting
            // for the flush held up each relay cycle by a disk write. No
            // parallel workers: after an autoanalyze saw a backlog, the
            // planner read the outbox with two workers, forked at every
            // round (287 forks in 20 s of catch-up, 36 with this).
            sqlx::query(
                "SELECT set_config('application_name', current_setting('application_name') || ' relay', false), \
                        set_config('synchronous_commit', 'off', false), \
                        set_config('max_parallel_workers_per_gather', '0', false)",
            )
            .execute(&mut conn)
            .await?;
            Ok(Some(OutboxLease { conn, deleted: 0 }))
        } else {
            // Closing explicitly keeps the pool's count honest.
            let _ = conn.close().await;
            Ok(None)
        }
    }
}

impl OutboxLease {
    /// The oldest unpublished events, in commit-safe position order: per
    /// stream, a later version is always at a later position.
    pub async fn next_batch(&mut self, limit: i64) -> Result<Vec<StoredEvent>, EventStoreError> {
        // The outbox's first rows, then their events: left to the planner,
        // the join walked the events from position 1 and probed the outbox
        // for each once the outbox held a backlog of millions (its estimate
        // then says most events are in it), 0.8 s a round at 3.7M waiting
        // (1,300 events/s), against 2 ms this way.
        let sql = format!(
            "SELECT {} FROM (SELECT position FROM outbox ORDER BY position LIMIT $1) AS next \
             JOIN events USING (position) ORDER BY position",
            EventStore::event_columns()
        );
        Ok(sqlx::query_as(&sql).bind(limit).fetch_all(&mut self.conn).await?)
    }

    /// Forgets events that Kafka has acknowledged, and vacuums the outbox
    /// every [`VACUUM_AFTER_ROWS`] of them. [`Self::next_batch`] walks the
    /// outbox's index from its oldest entry, over every deleted row not yet
    /// vacuumed: autovacuum comes by once a minute at best, and at 3,500
    /// events/s each read of an outbox holding a few dozen events took 2.3 ms.
    /// (The outbox is created with `vacuum_truncate = false`, so this vacuum
    /// never waits for a lock the appends hold.)
    pub async fn acknowledge(&mut self, positions: &[i64]) -> Result<(), EventStoreError> {
        let deleted = sqlx::query("DELETE FROM outbox WHERE position = ANY($1)")
            .bind(positions)
            .execute(&mut self.conn)
            .await?
            .rows_affected();
        self.deleted += deleted;
        if self.deleted >= VACUUM_AFTER_ROWS {
            sqlx::query("VACUUM outbox").execute(&mut self.conn).await?;
            self.deleted = 0;
        }
        Ok(())
    }

    /// Gives the lease up (on shutdown) so another instance can take over at once.
    pub async fn release(self) {
        let _ = self.conn.close().await;
    }
}
