//! `query-service verify`: compares the read model with the event store,
//! the source of truth, and reports every difference.

use std::collections::HashMap;
use std::fmt;

use event_store::EventStore;
use shared_kernel::{WarriorAggregate, WarriorEvent};
use uuid::Uuid;

use crate::read_model::{ContentsRow, ReadModel};

/// Differences between what the event store says and what the read model holds.
#[derive(Debug, Default, PartialEq)]
pub struct Drift {
    /// Live in the event store, absent or deleted in the read model.
    pub missing: Vec<Uuid>,
    /// Live in the read model, unknown or deleted in the event store.
    pub extra: Vec<Uuid>,
    /// Present in both, with another version, other data or another
    /// creation time.
    pub stale: Vec<Uuid>,
    /// Rows whose searchable name is missing or wrong, with no fix queued
    /// (the read model's own consistency: search would miss or misfind them).
    pub unindexed: Vec<Uuid>,
    /// Live warriors per the event store, and the read model's counter.
    pub expected_count: i64,
    pub counted: i64,
    /// Warriors compared.
    pub checked: usize,
}

impl Drift {
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty()
            && self.extra.is_empty()
            && self.stale.is_empty()
            && self.unindexed.is_empty()
            && self.expected_count == self.counted
    }
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "checked {} warriors: {} missing, {} extra, {} stale, {} unindexed; count {} (expected {})",
            self.checked,
            self.missing.len(),
            self.extra.len(),
            self.stale.len(),
            self.unindexed.len(),
            self.counted,
            self.expected_count
        )?;
        for (kind, ids) in [
            ("missing", &self.missing),
            ("extra", &self.extra),
            ("stale", &self.stale),
            ("unindexed", &self.unindexed),
        ] {
            for id in ids.iter().take(10) {
                writeln!(f, "  {kind} {id}")?;
            }
        }
        Ok(())
    }
}

/// Compares both stores once.
pub async fn verify(event_store: &EventStore, read_model: &ReadModel) -> anyhow::Result<Drift> {
    // The read model first: every row in it was projected from an event that
    // was already committed, so an event-store read taken afterwards holds
    // them all, and writes racing the comparison can only look "missing" or
    // "stale" (the projection lagging), never "extra".
    let contents = read_model.contents().await?;
    let mut expected: HashMap<Uuid, WarriorAggregate> = HashMap::new();
    for head in event_store.stream_heads().await? {
        let event = WarriorEvent::decode(&head.event_type, head.schema_version, &head.data)?;
        let mut aggregate = WarriorAggregate::default();
        aggregate.apply(head.version, &event);
        expected.insert(head.aggregate_id, aggregate);
    }
    let mut drift = Drift {
        checked: expected.len(),
        expected_count: expected.values().filter(|a| a.is_live()).count() as i64,
        counted: contents.counted,
        unindexed: contents.unindexed,
        ..Drift::default()
    };
    let created = event_store.creation_times().await?;
    let mut seen: HashMap<Uuid, ContentsRow> = contents.rows.into_iter().map(|row| (row.warrior.id, row)).collect();
    for (id, aggregate) in &expected {
        let row = seen.remove(id);
        match (aggregate.state.as_ref(), row) {
            (Some(_), None) => drift.missing.push(*id),
            (Some(_), Some(row)) if row.deleted => drift.missing.push(*id),
            (
                Some(state),
                Some(ContentsRow {
                    warrior, created_at, ..
                }),
            ) => {
                let same = warrior.version == aggregate.version
                    && warrior.name == state.name
                    && warrior.dob == state.dob
                    && warrior.fight_skills == state.fight_skills
                    && created.get(id) == Some(&created_at);
                if !same {
                    drift.stale.push(*id);
                }
            }
            (None, Some(row)) if !row.deleted => drift.extra.push(*id),
            (None, Some(row)) if row.warrior.version != aggregate.version => drift.stale.push(*id),
            (None, _) => {}
        }
    }
    drift
        .extra
        .extend(seen.into_iter().filter(|(_, row)| !row.deleted).map(|(id, _)| id));
    Ok(drift)
}
