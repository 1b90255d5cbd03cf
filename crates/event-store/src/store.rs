use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

use crate::EventStoreError;

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
        .fetch_all(&self.pool)
        .await?;

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

    /// Events that occurred at or after `since`, in position order.
    pub async fn read_since(&self, since: DateTime<Utc>) -> Result<Vec<StoredEvent>, EventStoreError> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE occurred_at >= $1 ORDER BY position");
        Ok(sqlx::query_as(&sql).bind(since).fetch_all(&self.pool).await?)
    }

    /// The database's clock, so time windows do not depend on this host's.
    pub async fn now(&self) -> Result<DateTime<Utc>, EventStoreError> {
        Ok(sqlx::query_scalar("SELECT now()").fetch_one(&self.pool).await?)
    }

    /// Events at or after `position`, in position order. Only safe as a full
    /// replay source once writers have stopped (e.g. a rebuild run against a
    /// quiet store or followed by catching up from Kafka).
    pub async fn read_all_from(&self, position: i64, limit: i64) -> Result<Vec<StoredEvent>, EventStoreError> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE position >= $1 ORDER BY position LIMIT $2");
        Ok(sqlx::query_as(&sql)
            .bind(position)
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
