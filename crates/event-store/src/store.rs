use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

use crate::open_transactions::before;
use crate::{EventStoreError, OpenTransactions};

/// An event to append. `version` is the stream's expected version + 1; the
/// append only succeeds if no event of that stream holds it yet.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub aggregate_id: Uuid,
    pub version: i64,
    pub event_type: String,
    pub schema_version: i32,
    pub data: Value,
    /// Request id, idempotency key and the like: kept for audit, never interpreted.
    pub metadata: Value,
}

/// An event as stored, with its global position.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct StoredEvent {
    pub position: i64,
    pub event_id: Uuid,
    pub aggregate_id: Uuid,
    pub version: i64,
    pub event_type: String,
    pub schema_version: i32,
    pub occurred_at: DateTime<Utc>,
    pub data: Value,
    pub metadata: Value,
}

/// Result of appending one event.
#[derive(Debug, Clone, PartialEq)]
pub enum AppendOutcome {
    Committed {
        position: i64,
        occurred_at: DateTime<Utc>,
    },
    /// Another event already holds this stream version.
    Conflict,
}

/// An aggregate's folded state at `version`, stored as JSON by its owner.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct Snapshot {
    pub version: i64,
    pub state: Value,
}

/// Catches a reader up with the store in rounds, missing no event that
/// committed late, e.g. a rebuild that replayed the store page by page
/// while writes went on.
///
/// Positions are taken at insert and transactions commit out of order, so
/// "after the last position read" can skip an event; an event's
/// `occurred_at` is its transaction's start, possibly long before it
/// commits. So each round begins with a mark: the oldest start of a
/// transaction open in the event store then (the horizon), and the highest
/// position visible. An event the round cannot see yet belongs to a
/// transaction open at that mark or begun later, so it occurred at or after
/// the horizon, and the next round reads every event that did. Those were
/// all inserted after any earlier mark taken before that horizon, so the
/// read starts past that mark's position instead of at the beginning.
#[derive(Debug)]
pub struct CatchUp {
    marks: Vec<Mark>,
    /// The last mark's horizon, and whether it is a fixed look-back.
    horizon: DateTime<Utc>,
    fixed: bool,
    slack: Duration,
    fallback: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Mark {
    /// Transactions begun from this time on insert past `last_position`.
    taken_at: DateTime<Utc>,
    /// No event invisible at the mark that may still commit occurred
    /// before this.
    horizon: DateTime<Utc>,
    last_position: i64,
    /// The horizon is `fallback` ago: some session's transaction start
    /// was hidden from this role.
    fixed: bool,
}

/// What one catch-up round reads: every event after `position` that
/// occurred at or after `since`, with [`EventStore::read_page_since`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CatchUpRound {
    pub position: i64,
    pub since: DateTime<Utc>,
    /// `since` is a fixed look-back, not the oldest open transaction's
    /// start: some session was hidden from this role (see
    /// [`CatchUp::begin`]).
    pub fixed_look_back: bool,
}

impl CatchUp {
    /// Marks the store before a first full read. `slack` covers a
    /// transaction that has started but not yet shown its start in
    /// pg_stat_activity (microseconds, unless descheduled); `fallback`
    /// is how far back to look when this role cannot see every session's
    /// transaction start (another role's sessions, without
    /// pg_read_all_stats): longer than any append stays uncommitted.
    pub async fn begin(store: &EventStore, slack: Duration, fallback: Duration) -> Result<Self, EventStoreError> {
        let mark = store.mark(slack, fallback).await?;
        Ok(Self {
            marks: vec![mark],
            horizon: mark.horizon,
            fixed: mark.fixed,
            slack,
            fallback,
        })
    }

    /// Begins the next round: what it must read to have everything visible
    /// now (and everything earlier rounds could not see).
    pub async fn next_round(&mut self, store: &EventStore) -> Result<CatchUpRound, EventStoreError> {
        let mark = store.mark(self.slack, self.fallback).await?;
        let position = self
            .marks
            .iter()
            .filter(|earlier| earlier.taken_at <= self.horizon)
            .map(|earlier| earlier.last_position)
            .max()
            .unwrap_or(0);
        let round = CatchUpRound {
            position,
            since: self.horizon,
            fixed_look_back: self.fixed,
        };
        self.horizon = mark.horizon;
        self.fixed = mark.fixed;
        self.marks.push(mark);
        Ok(round)
    }
}

/// Handle on the event-store database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventStore {
    pool: PgPool,
}

const EVENT_COLUMNS: &str =
    "position, event_id, aggregate_id, version, event_type, schema_version, occurred_at, data, metadata";

impl EventStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Appends a batch in one autocommit statement (one round trip) and queues
    /// the committed events in the outbox. An event whose stream version is
    /// taken is skipped and reported; it never fails the others.
    ///
    /// That constraint is the only arbiter: without a target, `ON CONFLICT`
    /// probes every unique index for every row, ~15% of the statement, and
    /// no command collides on the others (`position` comes from a sequence,
    /// `event_id` is a fresh UUIDv7). Were one ever violated, the batch would
    /// fail as a whole, committing nothing.
    ///
    /// A connection lost once the statement was sent is
    /// [`EventStoreError::OutcomeUnknown`]: see [`settle_batch`](Self::settle_batch).
    pub async fn append_batch(&self, events: &[NewEvent]) -> Result<Vec<AppendOutcome>, EventStoreError> {
        let mut event_ids = Vec::with_capacity(events.len());
        let mut aggregate_ids = Vec::with_capacity(events.len());
        let mut versions = Vec::with_capacity(events.len());
        let mut types = Vec::with_capacity(events.len());
        let mut schema_versions = Vec::with_capacity(events.len());
        let mut data = Vec::with_capacity(events.len());
        let mut metadata = Vec::with_capacity(events.len());
        for e in events {
            event_ids.push(e.event_id);
            aggregate_ids.push(e.aggregate_id);
            versions.push(e.version);
            types.push(e.event_type.as_str());
            schema_versions.push(e.schema_version);
            data.push(&e.data);
            metadata.push(&e.metadata);
        }
        // Acquired first: failing to connect sends nothing, a definite failure.
        let mut connection = self.pool.acquire().await?;
        let rows: Vec<(Uuid, i64, DateTime<Utc>)> = sqlx::query_as(
            "WITH inserted AS (
                 INSERT INTO events (event_id, aggregate_id, version, event_type, schema_version, data, metadata)
                 SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::int[], $6::jsonb[], $7::jsonb[])
                 ON CONFLICT (aggregate_id, version) DO NOTHING
                 RETURNING event_id, position, occurred_at
             ), queued AS (
                 INSERT INTO outbox (position) SELECT position FROM inserted
             )
             SELECT event_id, position, occurred_at FROM inserted",
        )
        .bind(&event_ids)
        .bind(&aggregate_ids)
        .bind(&versions)
        .bind(&types)
        .bind(&schema_versions)
        .bind(&data)
        .bind(&metadata)
        .fetch_all(&mut *connection)
        .await
        .map_err(EventStoreError::from_statement)?;

        let committed: HashMap<Uuid, (i64, DateTime<Utc>)> = rows
            .into_iter()
            .map(|(id, position, at)| (id, (position, at)))
            .collect();
        Ok(events
            .iter()
            .map(|e| match committed.get(&e.event_id) {
                Some(&(position, occurred_at)) => AppendOutcome::Committed { position, occurred_at },
                None => AppendOutcome::Conflict,
            })
            .collect())
    }

    /// Settles a batch whose [`append_batch`](Self::append_batch) ended in
    /// [`EventStoreError::OutcomeUnknown`], by appending it again. A first
    /// attempt still committing holds its rows' unique `(aggregate_id,
    /// version)` entries, so the second waits for it; an event then found
    /// stored under its own id was committed by the first attempt, and is
    /// reported committed, not as a conflict (which a command without
    /// If-Match would retry: written twice). Events of a first attempt that
    /// rolled back are appended now.
    pub async fn settle_batch(&self, events: &[NewEvent]) -> Result<Vec<AppendOutcome>, EventStoreError> {
        let mut outcomes = self.append_batch(events).await?;
        let refused: Vec<Uuid> = events
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| matches!(outcome, AppendOutcome::Conflict))
            .map(|(event, _)| event.event_id)
            .collect();
        if refused.is_empty() {
            return Ok(outcomes);
        }
        let stored: HashMap<Uuid, (i64, DateTime<Utc>)> = sqlx::query_as::<_, (Uuid, i64, DateTime<Utc>)>(
            "SELECT event_id, position, occurred_at FROM events WHERE event_id = ANY($1)",
        )
        .bind(&refused)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|(id, position, at)| (id, (position, at)))
        .collect();
        for (event, outcome) in events.iter().zip(outcomes.iter_mut()) {
            if let Some(&(position, occurred_at)) = stored.get(&event.event_id) {
                *outcome = AppendOutcome::Committed { position, occurred_at };
            }
        }
        Ok(outcomes)
    }

    /// All events of one stream, in version order.
    pub async fn read_stream(&self, aggregate_id: Uuid) -> Result<Vec<StoredEvent>, EventStoreError> {
        self.read_stream_after(aggregate_id, 0).await
    }

    /// The events of one stream with a version above `version`, in order.
    pub async fn read_stream_after(
        &self,
        aggregate_id: Uuid,
        version: i64,
    ) -> Result<Vec<StoredEvent>, EventStoreError> {
        self.read_stream_page(aggregate_id, version, i64::MAX).await
    }

    /// At most `limit` events of one stream with a version above `version`,
    /// in order: a page of a history too long to answer whole.
    pub async fn read_stream_page(
        &self,
        aggregate_id: Uuid,
        version: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, EventStoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE aggregate_id = $1 AND version > $2 ORDER BY version LIMIT $3"
        );
        Ok(sqlx::query_as(&sql)
            .bind(aggregate_id)
            .bind(version)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// The newest snapshot of a stream, if one was taken.
    pub async fn load_snapshot(&self, aggregate_id: Uuid) -> Result<Option<Snapshot>, EventStoreError> {
        Ok(
            sqlx::query_as("SELECT version, state FROM snapshots WHERE aggregate_id = $1")
                .bind(aggregate_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Stores a snapshot unless a newer one is already there.
    pub async fn save_snapshot(&self, aggregate_id: Uuid, snapshot: &Snapshot) -> Result<(), EventStoreError> {
        sqlx::query(
            "INSERT INTO snapshots (aggregate_id, version, state) VALUES ($1, $2, $3)
             ON CONFLICT (aggregate_id) DO UPDATE
                SET version = EXCLUDED.version, state = EXCLUDED.state, taken_at = now()
                WHERE snapshots.version < EXCLUDED.version",
        )
        .bind(aggregate_id)
        .bind(snapshot.version)
        .bind(&snapshot.state)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The newest event of each of these streams (absent if it has none):
    /// one query for many lookups. Enough for aggregates whose events each
    /// carry the whole state.
    pub async fn newest_events(&self, aggregate_ids: &[Uuid]) -> Result<HashMap<Uuid, StoredEvent>, EventStoreError> {
        let sql = format!(
            "SELECT DISTINCT ON (aggregate_id) {EVENT_COLUMNS} FROM events WHERE aggregate_id = ANY($1)
             ORDER BY aggregate_id, version DESC"
        );
        let rows: Vec<StoredEvent> = sqlx::query_as(&sql).bind(aggregate_ids).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|event| (event.aggregate_id, event)).collect())
    }

    /// The newest version of each of these streams (absent if it has none):
    /// one query for many concurrent read-your-writes checks.
    pub async fn head_versions(&self, aggregate_ids: &[Uuid]) -> Result<HashMap<Uuid, i64>, EventStoreError> {
        let rows: Vec<(Uuid, i64)> = sqlx::query_as(
            "SELECT aggregate_id, max(version) FROM events WHERE aggregate_id = ANY($1) GROUP BY aggregate_id",
        )
        .bind(aggregate_ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().collect())
    }

    /// The newest event of every stream: what each aggregate ends up as.
    /// Reads the whole store; meant for offline checks such as `verify`.
    pub async fn stream_heads(&self) -> Result<Vec<StoredEvent>, EventStoreError> {
        let sql = format!(
            "SELECT DISTINCT ON (aggregate_id) {EVENT_COLUMNS} FROM events ORDER BY aggregate_id, version DESC"
        );
        Ok(sqlx::query_as(&sql).fetch_all(&self.pool).await?)
    }

    /// When each stream's first event occurred: a warrior's creation time,
    /// for `verify` to check the read model's against.
    pub async fn creation_times(&self) -> Result<HashMap<Uuid, DateTime<Utc>>, EventStoreError> {
        let rows: Vec<(Uuid, DateTime<Utc>)> =
            sqlx::query_as("SELECT aggregate_id, occurred_at FROM events WHERE version = 1")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().collect())
    }

    /// A [`CatchUp`] mark, as of now.
    async fn mark(&self, slack: Duration, fallback: Duration) -> Result<Mark, EventStoreError> {
        // Sessions first, in a statement of their own: a transaction that
        // commits after they were read is then visible to the snapshot of
        // the position's statement, taken later. (Read after that snapshot,
        // as one statement would, an append committing in between was
        // neither visible nor counted as open.)
        let open = OpenTransactions::read(&self.pool).await?;
        let horizon = open.horizon(slack).unwrap_or_else(|| before(open.now, fallback));
        // The snapshot max(position) reads is taken before clock_timestamp()
        // runs: a transaction begun at or after taken_at takes its positions
        // after that snapshot.
        let (last_position, taken_at): (i64, DateTime<Utc>) =
            sqlx::query_as("SELECT coalesce(max(position), 0), clock_timestamp() FROM events")
                .fetch_one(&self.pool)
                .await?;
        Ok(Mark {
            taken_at,
            horizon,
            last_position,
            fixed: !open.all_shown,
        })
    }

    /// Up to `limit` events after `position` that occurred at or after
    /// `since`, in position order: a page of a [`CatchUp`] round, or (since
    /// the epoch) of a full replay, which must then be followed by the
    /// rounds of a [`CatchUp`] begun before it.
    pub async fn read_page_since(
        &self,
        position: i64,
        since: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, EventStoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE position > $1 AND occurred_at >= $2 ORDER BY position LIMIT $3"
        );
        Ok(sqlx::query_as(&sql)
            .bind(position)
            .bind(since)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// How far the relay is behind: the span of positions waiting in the
    /// outbox (an upper bound of the events committed but not yet on Kafka:
    /// a refused append leaves a gap in the positions) and the age in
    /// seconds of the first event in line (both 0 when none wait).
    ///
    /// Runs every few seconds in every instance, also while the relay is far
    /// behind (Kafka down), so it reads only the ends of two indexes: an
    /// exact count of a million queued rows took a parallel scan every time
    /// (joined to `events` as it once was, a fifth of the machine).
    pub async fn outbox_lag(&self) -> Result<(i64, f64), EventStoreError> {
        Ok(sqlx::query_as(
            "WITH ends AS (SELECT min(position) AS first, max(position) AS last FROM outbox)
             SELECT COALESCE(last - first + 1, 0),
                    COALESCE(EXTRACT(EPOCH FROM now() - (SELECT occurred_at FROM events WHERE position = first))::float8, 0)
             FROM ends",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    pub(crate) fn event_columns() -> &'static str {
        EVENT_COLUMNS
    }
}
