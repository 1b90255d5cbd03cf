//! What each command does to the event store, independent of HTTP.
//!
//! Every decision rests on the database's unique `(aggregate_id, version)`:
//! a command loads the aggregate, decides, and appends `version + 1`. If
//! someone else appended first, the append comes back as a conflict and the
//! command either reports it (`If-Match` was given) or decides again.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use event_store::{AppendOutcome, Appender, EventStore, EventStoreError, NewEvent, Snapshot, StoredEvent};
use serde_json::{json, Value};
use shared_kernel::{
    IdempotencyKey, UnknownEventType, Warrior, WarriorAggregate, WarriorDraft, WarriorEvent, WarriorState,
    SCHEMA_VERSION,
};
use thiserror::Error;
use uuid::Uuid;

use crate::stream_locks::StreamLocks;

/// Events of one warrior's history, in version order.
#[derive(Debug)]
pub struct HistoryPage {
    pub events: Vec<StoredEvent>,
    /// Later events exist beyond this page.
    pub more: bool,
}

/// Namespace for ids derived from idempotency keys (UUIDv5).
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x8f1d_3c2a_5b4e_4f60_9a7d_0e21_c3b4_a596);

/// How often a command without `If-Match` re-decides after losing a race:
/// only to writers in other instances (see [`StreamLocks`]).
const MAX_ATTEMPTS: usize = 16;

/// Why a command did not happen.
#[derive(Debug, Error)]
pub enum CommandError {
    #[error("warrior not found")]
    NotFound,
    #[error("warrior is at version {current}")]
    VersionMismatch { current: i64 },
    #[error("idempotency key was already used with a different body")]
    IdempotencyKeyReused,
    #[error("gave up after {MAX_ATTEMPTS} conflicting attempts")]
    TooMuchContention,
    #[error(transparent)]
    Store(#[from] EventStoreError),
    /// A stored event this build cannot read: the store needs attention.
    #[error("unreadable event in the store: {0}")]
    Unreadable(#[from] UnknownEventType),
}

/// Context recorded with each event, for audit and tracing.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    pub request_id: Option<String>,
    pub idempotency_key: Option<IdempotencyKey>,
}

impl RequestMeta {
    fn to_json(&self) -> Value {
        let mut meta = serde_json::Map::new();
        if let Some(id) = &self.request_id {
            meta.insert("request_id".into(), json!(id));
        }
        if let Some(key) = &self.idempotency_key {
            meta.insert("idempotency_key".into(), json!(key.as_str()));
        }
        Value::Object(meta)
    }
}

/// Whether a create wrote a new warrior or replayed an earlier identical one.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    New(Warrior),
    Replayed(Warrior),
}

impl Created {
    pub fn warrior(&self) -> &Warrior {
        match self {
            Self::New(w) | Self::Replayed(w) => w,
        }
    }
}

/// The command side's use cases.
#[derive(Debug, Clone)]
pub struct Commands {
    store: EventStore,
    appender: Appender,
    /// Take a snapshot every this many events; 0 turns snapshots off.
    snapshot_every: i64,
    /// Longest a command waits for the writer to take its append.
    append_timeout: Duration,
    /// Queues this instance's writes without `If-Match` per warrior.
    locks: Arc<StreamLocks>,
}

impl Commands {
    pub fn new(store: EventStore, appender: Appender, snapshot_every: i64) -> Self {
        Self {
            store,
            appender,
            snapshot_every,
            append_timeout: Duration::from_secs(10),
            locks: Arc::default(),
        }
    }

    /// Bounds how long an append may queue for the writer. With the event
    /// store down, each group-commit attempt waits out the pool's connect
    /// timeout, and a command queued behind one attempt waited for two (4 s
    /// for a 2 s setting); now it gets its 503 on time, and is never written
    /// (a 503 says "retry": a late commit would make the retry a duplicate).
    /// An append already taken into a batch waits for that batch's outcome.
    pub fn with_append_timeout(self, append_timeout: Duration) -> Self {
        Self { append_timeout, ..self }
    }

    /// Rebuilds a warrior by folding its events, starting from its snapshot
    /// when there is one, so long histories load in bounded time.
    pub async fn load(&self, id: Uuid) -> Result<WarriorAggregate, CommandError> {
        let mut aggregate = match self.snapshot_every {
            0 => WarriorAggregate::default(),
            _ => self
                .store
                .load_snapshot(id)
                .await?
                // A snapshot this build cannot read is only a lost shortcut.
                .and_then(|s| serde_json::from_value(s.state).ok())
                .unwrap_or_default(),
        };
        for stored in self.store.read_stream_after(id, aggregate.version).await? {
            let event = WarriorEvent::decode(&stored.event_type, stored.schema_version, &stored.data)?;
            aggregate.apply(stored.version, &event);
        }
        Ok(aggregate)
    }

    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// Creates a warrior. With an idempotency key the id is derived from the
    /// key, so a repeat collides with the first attempt in the database
    /// itself: no window in which two racing repeats could both create.
    /// Otherwise the id is time-ordered (UUIDv7), see [`new_key`].
    pub async fn create(&self, draft: &WarriorDraft, meta: &RequestMeta) -> Result<Created, CommandError> {
        let id = match &meta.idempotency_key {
            Some(key) => Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, key.as_str().as_bytes()),
            None => new_key(),
        };
        let event = WarriorEvent::Created(WarriorState::from(draft));
        match self.append(id, 1, &event, meta).await? {
            AppendOutcome::Committed { .. } => Ok(Created::New(Warrior::from_draft(id, 1, draft))),
            AppendOutcome::Conflict => self.replay_create(id, draft).await,
        }
    }

    /// A repeated idempotent create: same body, same answer; else refused.
    async fn replay_create(&self, id: Uuid, draft: &WarriorDraft) -> Result<Created, CommandError> {
        let first = self.store.read_stream_page(id, 0, 1).await?.into_iter().next();
        let first = first
            .map(|e| WarriorEvent::decode(&e.event_type, e.schema_version, &e.data))
            .transpose()?;
        if first == Some(WarriorEvent::Created(WarriorState::from(draft))) {
            Ok(Created::Replayed(Warrior::from_draft(id, 1, draft)))
        } else {
            Err(CommandError::IdempotencyKeyReused)
        }
    }

    /// Replaces a live warrior's data.
    pub async fn replace(
        &self,
        id: Uuid,
        draft: &WarriorDraft,
        if_match: Option<&[i64]>,
        meta: &RequestMeta,
    ) -> Result<Warrior, CommandError> {
        let event = WarriorEvent::Updated(WarriorState::from(draft));
        let version = self.append_on_live(id, &event, if_match, meta).await?;
        Ok(Warrior::from_draft(id, version, draft))
    }

    /// Deletes a live warrior; returns the version of the deletion event.
    pub async fn delete(&self, id: Uuid, if_match: Option<&[i64]>, meta: &RequestMeta) -> Result<i64, CommandError> {
        self.append_on_live(id, &WarriorEvent::Deleted, if_match, meta).await
    }

    /// A page of the audit trail of a warrior (deleted ones included): at
    /// most `limit` events above `after_version`, each event's data in the
    /// current schema (older events upcast, as every reader sees them).
    pub async fn history(&self, id: Uuid, after_version: i64, limit: i64) -> Result<HistoryPage, CommandError> {
        let mut events = self.store.read_stream_page(id, after_version, limit + 1).await?;
        let more = events.len() as i64 > limit;
        events.truncate(limit as usize);
        if events.is_empty() && (after_version == 0 || self.store.head_versions(&[id]).await?.is_empty()) {
            return Err(CommandError::NotFound);
        }
        let events = events
            .into_iter()
            .map(|event| {
                let data = WarriorEvent::decode(&event.event_type, event.schema_version, &event.data)?.data();
                Ok(StoredEvent {
                    data,
                    schema_version: SCHEMA_VERSION,
                    ..event
                })
            })
            .collect::<Result<_, CommandError>>()?;
        Ok(HistoryPage { events, more })
    }

    /// Appends `event` on top of a live stream, re-deciding after lost races
    /// unless the caller pinned the versions it accepts with `If-Match`.
    async fn append_on_live(
        &self,
        id: Uuid,
        event: &WarriorEvent,
        if_match: Option<&[i64]>,
        meta: &RequestMeta,
    ) -> Result<i64, CommandError> {
        // With If-Match a lost race is the answer (412), so no need to queue.
        let _turn = match if_match {
            None => Some(self.locks.lock(id).await),
            Some(_) => None,
        };
        for _ in 0..MAX_ATTEMPTS {
            let mut aggregate = self.load(id).await?;
            if !aggregate.is_live() {
                return Err(CommandError::NotFound);
            }
            let current = aggregate.version;
            if let Some(expected) = if_match {
                if !expected.contains(&current) {
                    return Err(CommandError::VersionMismatch { current });
                }
            }
            match self.append(id, current + 1, event, meta).await? {
                AppendOutcome::Committed { .. } => {
                    aggregate.apply(current + 1, event);
                    self.maybe_snapshot(id, &aggregate).await;
                    return Ok(current + 1);
                }
                AppendOutcome::Conflict if if_match.is_some() => {
                    return Err(CommandError::VersionMismatch { current: current + 1 })
                }
                AppendOutcome::Conflict => continue,
            }
        }
        Err(CommandError::TooMuchContention)
    }

    /// Stores a snapshot every `snapshot_every` versions. Best effort: a
    /// failure costs only speed, never correctness, so it is logged, not returned.
    async fn maybe_snapshot(&self, id: Uuid, aggregate: &WarriorAggregate) {
        if self.snapshot_every == 0 || aggregate.version % self.snapshot_every != 0 {
            return;
        }
        let Ok(state) = serde_json::to_value(aggregate) else {
            return;
        };
        let snapshot = Snapshot {
            version: aggregate.version,
            state,
        };
        if let Err(error) = self.store.save_snapshot(id, &snapshot).await {
            tracing::warn!(%error, %id, "could not store a snapshot");
        }
    }

    async fn append(
        &self,
        id: Uuid,
        version: i64,
        event: &WarriorEvent,
        meta: &RequestMeta,
    ) -> Result<AppendOutcome, EventStoreError> {
        let event = NewEvent {
            event_id: new_key(),
            aggregate_id: id,
            version,
            event_type: event.event_type().to_owned(),
            schema_version: SCHEMA_VERSION,
            data: event.data(),
            metadata: meta.to_json(),
        };
        self.appender.append(event, self.append_timeout).await
    }
}

/// Today's date, the upper bound of a date of birth.
pub fn today() -> chrono::NaiveDate {
    Utc::now().date_naive()
}

/// A new warrior or event id. Time-ordered (UUIDv7) so the event store's
/// unique indexes on `event_id` and `(aggregate_id, version)`, and the read
/// model's primary key, grow at one end: with random (v4) ids each append
/// touched a random leaf page of each index, and once the indexes outgrew
/// shared buffers every append read and evicted pages (a third of the
/// event store's CPU per batch at 5M events, in index probes).
fn new_key() -> Uuid {
    Uuid::now_v7()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_keys_grow_so_index_inserts_land_at_one_end() {
        let keys: Vec<Uuid> = (0..1_000).map(|_| new_key()).collect();
        assert!(keys.windows(2).all(|pair| pair[0] < pair[1]));
    }
}
