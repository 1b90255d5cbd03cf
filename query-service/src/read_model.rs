//! The read model: rows shaped for lookups, search and counting, and the
//! idempotent application of events to them.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use shared_kernel::{Warrior, WarriorEvent};
use sqlx::{FromRow, PgPool, Postgres, QueryBuilder, Transaction};
use uuid::Uuid;

/// Most rows a search or listing returns.
pub const PAGE: i64 = 50;

/// How much of a search term is looked up in the trigram index.
const INDEX_PIECE_CHARS: usize = 8;

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
    /// Skills come from a small vocabulary: the matching ones are looked up
    /// first, and rows holding any of them are found through the array
    /// index. Names are found through their trigram index, queried with only
    /// the first [`INDEX_PIECE_CHARS`] characters of the term: a GIN lookup
    /// costs about one posting list per trigram, so a 50-letter term cost
    /// 2 ms where its first 8 letters, already selective, cost 0.2 ms; the
    /// whole term is then checked on those few rows. Terms under three
    /// characters have no trigram and scan rows until 50 match.
    pub async fn search(&self, term: &str) -> Result<Vec<Warrior>, sqlx::Error> {
        let skills: Vec<String> =
            sqlx::query_scalar("SELECT name_lower FROM skill_names WHERE strpos(name_lower, lower($1)) > 0")
                .bind(term)
                .fetch_all(&self.search_pool)
                .await?;
        let piece: String = term.chars().take(INDEX_PIECE_CHARS).collect();
        let mut sql = QueryBuilder::new(format!(
            "SELECT {WARRIOR_COLUMNS} FROM warriors WHERE NOT deleted AND (("
        ));
        if piece.chars().count() >= 3 {
            sql.push("search_text LIKE '%' || lower(")
                .push_bind(escape_like(&piece))
                .push(") || '%' AND ");
        }
        sql.push("strpos(search_text, lower(").push_bind(term).push(")) > 0)");
        if !skills.is_empty() {
            sql.push(" OR skills_lower && ").push_bind(skills);
        }
        sql.push(format!(") LIMIT {PAGE}"));
        let rows: Vec<WarriorRow> = sql.build_query_as().fetch_all(&self.search_pool).await?;
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
    ///
    /// Events carry the full state, so only each warrior's newest event of
    /// the batch matters; the rest is written with two set-based statements
    /// (states, tombstones) whatever the batch size.
    pub async fn apply(
        &self,
        topic: &str,
        events: &[Applicable],
        offsets: &[PartitionOffset],
    ) -> Result<(), sqlx::Error> {
        let (states, tombstones): (Vec<&Applicable>, Vec<&Applicable>) = newest_per_warrior(events)
            .into_iter()
            .partition(|e| !matches!(e.event, WarriorEvent::Deleted));
        let mut tx = self.pool.begin().await?;
        let live_delta = upsert_states(&mut tx, &states).await? - bury(&mut tx, &tombstones).await?;
        if live_delta != 0 {
            sqlx::query("UPDATE warrior_count SET live = live + $1")
                .bind(live_delta)
                .execute(&mut *tx)
                .await?;
        }
        if !offsets.is_empty() {
            let partitions: Vec<i32> = offsets.iter().map(|o| o.partition).collect();
            let next: Vec<i64> = offsets.iter().map(|o| o.next_offset).collect();
            sqlx::query(
                "INSERT INTO projection_offsets (topic, partition, next_offset)
                 SELECT $1, * FROM UNNEST($2::int[], $3::bigint[])
                 ON CONFLICT (topic, partition)
                 DO UPDATE SET next_offset = GREATEST(projection_offsets.next_offset, EXCLUDED.next_offset)",
            )
            .bind(topic)
            .bind(&partitions)
            .bind(&next)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }
}

/// The newest event of each warrior in a batch.
fn newest_per_warrior(events: &[Applicable]) -> Vec<&Applicable> {
    let mut newest: HashMap<Uuid, &Applicable> = HashMap::with_capacity(events.len());
    for e in events {
        newest
            .entry(e.aggregate_id)
            .and_modify(|kept| {
                if kept.version < e.version {
                    *kept = e;
                }
            })
            .or_insert(e);
    }
    newest.into_values().collect()
}

/// Writes each warrior's state where it is newer than the row's. Returns
/// how many new live rows appeared (for the count).
async fn upsert_states(tx: &mut Transaction<'_, Postgres>, events: &[&Applicable]) -> Result<i64, sqlx::Error> {
    if events.is_empty() {
        return Ok(0);
    }
    let mut ids = Vec::with_capacity(events.len());
    let mut versions = Vec::with_capacity(events.len());
    let mut names = Vec::with_capacity(events.len());
    let mut dobs = Vec::with_capacity(events.len());
    let mut skills = Vec::with_capacity(events.len());
    let mut times = Vec::with_capacity(events.len());
    for e in events {
        if let WarriorEvent::Created(state) | WarriorEvent::Updated(state) = &e.event {
            ids.push(e.aggregate_id);
            versions.push(e.version);
            names.push(state.name.as_str());
            dobs.push(state.dob);
            // Ragged arrays cannot be unnested as text[][]; JSON arrays can.
            skills.push(serde_json::json!(state.fight_skills));
            times.push(e.occurred_at);
        }
    }
    let inserted: Vec<bool> = sqlx::query_scalar(
        "INSERT INTO warriors (id, version, deleted, name, dob, fight_skills, skills_lower, search_text,
                               created_at, updated_at, projected_at)
         SELECT id, version, false, name, dob, skills, ARRAY(SELECT DISTINCT lower(x) FROM unnest(skills) AS x),
                lower(name), at, at, clock_timestamp()
         FROM (SELECT id, version, name, dob, ARRAY(SELECT jsonb_array_elements_text(s)) AS skills, at
               FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::date[], $5::jsonb[], $6::timestamptz[])
                    AS t(id, version, name, dob, s, at)) AS input
         ON CONFLICT (id) DO UPDATE
            SET version = EXCLUDED.version, name = EXCLUDED.name, dob = EXCLUDED.dob,
                fight_skills = EXCLUDED.fight_skills, skills_lower = EXCLUDED.skills_lower,
                search_text = EXCLUDED.search_text,
                updated_at = EXCLUDED.updated_at, projected_at = EXCLUDED.projected_at
            WHERE warriors.version < EXCLUDED.version AND NOT warriors.deleted
         RETURNING (xmax = 0)",
    )
    .bind(&ids)
    .bind(&versions)
    .bind(&names)
    .bind(&dobs)
    .bind(&skills)
    .bind(&times)
    .fetch_all(&mut **tx)
    .await?;
    sqlx::query(
        // Sorted, so two projectors inserting the same new skills cannot deadlock.
        "INSERT INTO skill_names
         SELECT name FROM (SELECT DISTINCT lower(jsonb_array_elements_text(s)) AS name FROM UNNEST($1::jsonb[]) AS s) AS d
         ORDER BY name
         ON CONFLICT DO NOTHING",
    )
    .bind(&skills)
    .execute(&mut **tx)
    .await?;
    Ok(inserted.iter().filter(|i| **i).count() as i64)
}

/// Marks warriors deleted where the deletion is newer than the row; the row
/// stays as a tombstone (version only, data cleared, so a tombstone is the
/// same however the events were batched) and late, older events cannot
/// resurrect it. Returns
/// how many live rows became tombstones (a fresh tombstone was never counted).
async fn bury(tx: &mut Transaction<'_, Postgres>, events: &[&Applicable]) -> Result<i64, sqlx::Error> {
    if events.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = events.iter().map(|e| e.aggregate_id).collect();
    let versions: Vec<i64> = events.iter().map(|e| e.version).collect();
    let times: Vec<DateTime<Utc>> = events.iter().map(|e| e.occurred_at).collect();
    let inserted: Vec<bool> = sqlx::query_scalar(
        "INSERT INTO warriors (id, version, deleted, created_at, updated_at, projected_at)
         SELECT id, version, true, at, at, clock_timestamp()
         FROM UNNEST($1::uuid[], $2::bigint[], $3::timestamptz[]) AS t(id, version, at)
         ON CONFLICT (id) DO UPDATE
            SET version = EXCLUDED.version, deleted = true, updated_at = EXCLUDED.updated_at,
                projected_at = EXCLUDED.projected_at,
                name = NULL, dob = NULL, fight_skills = '{}', skills_lower = '{}', search_text = ''
            WHERE warriors.version < EXCLUDED.version AND NOT warriors.deleted
         RETURNING (xmax = 0)",
    )
    .bind(&ids)
    .bind(&versions)
    .bind(&times)
    .fetch_all(&mut **tx)
    .await?;
    Ok(inserted.iter().filter(|i| !**i).count() as i64)
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

    fn event(id: Uuid, version: i64, event: WarriorEvent) -> Applicable {
        Applicable {
            aggregate_id: id,
            version,
            occurred_at: Utc::now(),
            event,
        }
    }

    #[test]
    fn only_the_newest_event_of_each_warrior_is_kept() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let batch = vec![
            event(a, 1, WarriorEvent::Deleted),
            event(b, 2, WarriorEvent::Deleted),
            event(a, 3, WarriorEvent::Deleted),
            event(a, 2, WarriorEvent::Deleted),
        ];
        let mut kept: Vec<(Uuid, i64)> = newest_per_warrior(&batch)
            .iter()
            .map(|e| (e.aggregate_id, e.version))
            .collect();
        kept.sort();
        let mut expected = vec![(a, 3), (b, 2)];
        expected.sort();
        assert_eq!(kept, expected);
    }

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(escape_like("50%_off\\"), "50\\%\\_off\\\\");
        assert_eq!(escape_like("Katana"), "Katana");
    }
}
