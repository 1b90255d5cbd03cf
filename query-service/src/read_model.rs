//! The read model: rows shaped for lookups, search and counting, and the
//! idempotent application of events to them.

use chrono::{DateTime, NaiveDate, Utc};
use shared_kernel::{Warrior, WarriorEvent, WarriorState};
use sqlx::{FromRow, PgPool, Postgres, Transaction};
use uuid::Uuid;

/// Most rows a search or listing returns.
pub const PAGE: i64 = 50;

/// An event ready to apply, with where it came from.
#[derive(Debug, Clone)]
pub struct Applicable {
    pub aggregate_id: Uuid,
    pub version: i64,
    pub occurred_at: DateTime<Utc>,
    pub event: WarriorEvent,
}

/// Next offset to read of one partition, stored with the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffset {
    pub partition: i32,
    pub next_offset: i64,
}

#[derive(Debug, FromRow)]
struct WarriorRow {
    id: Uuid,
    name: Option<String>,
    dob: Option<NaiveDate>,
    fight_skills: Vec<String>,
    version: i64,
}

#[derive(Debug, FromRow)]
struct LookupRow {
    #[sqlx(flatten)]
    warrior: WarriorRow,
    deleted: bool,
}

impl From<WarriorRow> for Warrior {
    fn from(row: WarriorRow) -> Self {
        Self {
            id: row.id,
            name: row.name.unwrap_or_default(),
            dob: row.dob.unwrap_or_default(),
            fight_skills: row.fight_skills,
            version: row.version,
        }
    }
}

/// What the read model knows of one warrior.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Live(Warrior),
    Deleted { version: i64 },
    Unknown,
}

impl Lookup {
    /// The newest version applied, if any.
    pub fn version(&self) -> Option<i64> {
        match self {
            Self::Live(w) => Some(w.version),
            Self::Deleted { version } => Some(*version),
            Self::Unknown => None,
        }
    }
}

const WARRIOR_COLUMNS: &str = "id, name, dob, fight_skills, version";

#[derive(Debug, Clone)]
pub struct ReadModel {
    pool: PgPool,
    /// Searches run on their own (smaller, time-limited) pool, so a burst of
    /// expensive searches can never starve lookups, counts or the projector.
    search_pool: PgPool,
}

impl ReadModel {
    pub fn new(pool: PgPool) -> Self {
        Self {
            search_pool: pool.clone(),
            pool,
        }
    }

    /// Gives searches a pool of their own (a bulkhead).
    pub fn with_search_pool(self, search_pool: PgPool) -> Self {
        Self { search_pool, ..self }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn lookup(&self, id: Uuid) -> Result<Lookup, sqlx::Error> {
        let sql = format!("SELECT {WARRIOR_COLUMNS}, deleted FROM warriors WHERE id = $1");
        let row: Option<LookupRow> = sqlx::query_as(&sql).bind(id).fetch_optional(&self.pool).await?;
        Ok(match row {
            None => Lookup::Unknown,
            Some(LookupRow { deleted: true, warrior }) => Lookup::Deleted {
                version: warrior.version,
            },
            Some(LookupRow { warrior, .. }) => Lookup::Live(warrior.into()),
        })
    }

    /// Live warriors whose name or any skill contains `term`, ignoring case.
    ///
    /// Two statements, because one prepared statement gets one generic plan:
    /// terms of three characters or more use the trigram index; shorter ones
    /// have no trigram to look up (the index would be scanned whole), so they
    /// scan rows and stop at the first 50 matches, which short terms find fast.
    pub async fn search(&self, term: &str) -> Result<Vec<Warrior>, sqlx::Error> {
        let (condition, bound) = if term.chars().count() >= 3 {
            ("search_text LIKE '%' || lower($1) || '%'", escape_like(term))
        } else {
            ("strpos(search_text, lower($1)) > 0", term.to_owned())
        };
        let sql = format!("SELECT {WARRIOR_COLUMNS} FROM warriors WHERE NOT deleted AND {condition} LIMIT {PAGE}");
        let rows: Vec<WarriorRow> = sqlx::query_as(&sql).bind(bound).fetch_all(&self.search_pool).await?;
        Ok(rows.into_iter().map(Warrior::from).collect())
    }

    /// The most recently created live warriors.
    pub async fn recent(&self) -> Result<Vec<Warrior>, sqlx::Error> {
        let sql =
            format!("SELECT {WARRIOR_COLUMNS} FROM warriors WHERE NOT deleted ORDER BY created_at DESC LIMIT {PAGE}");
        let rows: Vec<WarriorRow> = sqlx::query_as(&sql).fetch_all(&self.search_pool).await?;
        Ok(rows.into_iter().map(Warrior::from).collect())
    }

    /// Live warriors, read from a counter kept with the rows: O(1).
    pub async fn count(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT live FROM warrior_count")
            .fetch_one(&self.pool)
            .await
    }

    /// Every row, tombstones included, as (warrior, deleted); for `verify`.
    pub async fn all_rows(&self) -> Result<Vec<(Warrior, bool)>, sqlx::Error> {
        let sql = format!("SELECT {WARRIOR_COLUMNS}, deleted FROM warriors");
        let rows: Vec<LookupRow> = sqlx::query_as(&sql).fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|r| (Warrior::from(r.warrior), r.deleted))
            .collect())
    }

    /// Where the projector should resume, per partition.
    pub async fn offsets(&self, topic: &str) -> Result<Vec<PartitionOffset>, sqlx::Error> {
        let rows: Vec<(i32, i64)> =
            sqlx::query_as("SELECT partition, next_offset FROM projection_offsets WHERE topic = $1")
                .bind(topic)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(partition, next_offset)| PartitionOffset { partition, next_offset })
            .collect())
    }

    /// Applies a batch in one transaction together with the offsets it
    /// reaches, so a crash leaves either all of it or none. Events older than
    /// (or equal to) a row's version are ignored: replays change nothing.
    pub async fn apply(
        &self,
        topic: &str,
        events: &[Applicable],
        offsets: &[PartitionOffset],
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let mut live_delta = 0_i64;
        for e in events {
            live_delta += match &e.event {
                WarriorEvent::Created(state) | WarriorEvent::Updated(state) => upsert(&mut tx, e, state).await?,
                WarriorEvent::Deleted => tombstone(&mut tx, e).await?,
            };
        }
        if live_delta != 0 {
            sqlx::query("UPDATE warrior_count SET live = live + $1")
                .bind(live_delta)
                .execute(&mut *tx)
                .await?;
        }
        for offset in offsets {
            sqlx::query(
                "INSERT INTO projection_offsets (topic, partition, next_offset) VALUES ($1, $2, $3)
                 ON CONFLICT (topic, partition)
                 DO UPDATE SET next_offset = GREATEST(projection_offsets.next_offset, EXCLUDED.next_offset)",
            )
            .bind(topic)
            .bind(offset.partition)
            .bind(offset.next_offset)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }
}

/// Writes a warrior's state if `e` is newer than what the row holds.
/// Returns the change in live warriors (1 when a new live row appeared).
async fn upsert(tx: &mut Transaction<'_, Postgres>, e: &Applicable, state: &WarriorState) -> Result<i64, sqlx::Error> {
    let inserted: Option<bool> = sqlx::query_scalar(
        "INSERT INTO warriors (id, version, deleted, name, dob, fight_skills, search_text, created_at, updated_at, projected_at)
         VALUES ($1, $2, false, $3, $4, $5, lower($3) || chr(31) || lower(array_to_string($5, chr(31))), $6, $6, clock_timestamp())
         ON CONFLICT (id) DO UPDATE
            SET version = EXCLUDED.version, name = EXCLUDED.name, dob = EXCLUDED.dob,
                fight_skills = EXCLUDED.fight_skills, search_text = EXCLUDED.search_text,
                updated_at = EXCLUDED.updated_at, projected_at = EXCLUDED.projected_at
            WHERE warriors.version < EXCLUDED.version AND NOT warriors.deleted
         RETURNING (xmax = 0)",
    )
    .bind(e.aggregate_id)
    .bind(e.version)
    .bind(&state.name)
    .bind(state.dob)
    .bind(&state.fight_skills)
    .bind(e.occurred_at)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(i64::from(inserted == Some(true)))
}

/// Marks a warrior deleted if `e` is newer than what the row holds; the row
/// stays as a tombstone so late, older events cannot resurrect it.
async fn tombstone(tx: &mut Transaction<'_, Postgres>, e: &Applicable) -> Result<i64, sqlx::Error> {
    let inserted: Option<bool> = sqlx::query_scalar(
        "INSERT INTO warriors (id, version, deleted, created_at, updated_at, projected_at)
         VALUES ($1, $2, true, $3, $3, clock_timestamp())
         ON CONFLICT (id) DO UPDATE
            SET version = EXCLUDED.version, deleted = true, updated_at = EXCLUDED.updated_at,
                projected_at = EXCLUDED.projected_at
            WHERE warriors.version < EXCLUDED.version AND NOT warriors.deleted
         RETURNING (xmax = 0)",
    )
    .bind(e.aggregate_id)
    .bind(e.version)
    .bind(e.occurred_at)
    .fetch_optional(&mut **tx)
    .await?;
    // A live row turned into a tombstone: one fewer. A fresh tombstone: no change.
    Ok(if inserted == Some(false) { -1 } else { 0 })
}

/// Makes `term` match literally inside a LIKE pattern.
fn escape_like(term: &str) -> String {
    let mut escaped = String::with_capacity(term.len());
    for c in term.chars() {
        if matches!(c, '\\' | '%' | '_') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(escape_like("50%_off\\"), "50\\%\\_off\\\\");
        assert_eq!(escape_like("Katana"), "Katana");
    }
}
