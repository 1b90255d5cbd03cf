//! `query-service rebuild`: replays the event store into fresh tables and
//! swaps their content into the live read model while the service serves.
//!
//! Applying an event is idempotent and, but for a row's creation time
//! (see `apply_round`), order-independent: each row keeps the newest
//! version it saw. That makes this simple:
//! 1. replay every event, page by page, into schema `rebuild`;
//! 2. catch up with the events that committed meanwhile, in rounds, while
//!    the projector goes on (an [`event_store::CatchUp`] misses none that
//!    committed late), until a round finds little to do or stops
//!    shrinking;
//! 3. compare the rebuilt rows with the live ones, still while serving;
//! 4. lock the live tables against writers (readers go on, seeing the old
//!    rows), run a last round, and write over the live rows those that
//!    differ: the ones that differed at the comparison, the ones the last
//!    round touched, and the live ones the projector wrote since (told by
//!    their `projected_at`), in that same transaction.
//!
//! The projector's writes wait for the lock and then apply on top of the
//! rebuilt rows, so nothing that happened during the rebuild is lost. The
//! lock is held for one short round, a scan of the live rows'
//! `projected_at`, and a comparison and rewrite of the few rows found:
//! ~0.2-0.45 s at ~450k warriors under ~500 writes/s. (Where the rows written
//! since cannot be told, see `written_since`, every row is compared under
//! it: ~3-5 µs a row.) Rewriting every row under it, after a fixed minute's
//! look-back for late commits, held the projector up ~6 s under writes at
//! ~300k warriors.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use event_store::{CatchUp, CatchUpRound, EventStore, OpenTransactions, StoredEvent};
use shared_kernel::WarriorEvent;
use sqlx::postgres::PgConnectOptions;
use sqlx::{PgPool, Postgres};
use uuid::Uuid;

use crate::read_model::{Applicable, ReadModel};

/// Events read per page.
const PAGE: i64 = 5_000;
/// Catch-up rounds run while serving until one re-applies at most this many
/// events, or no fewer than the round before (a transaction left open in
/// the event store holds every round's look-back), or [`MAX_ROUNDS`] ran;
/// the last one runs under the lock.
const SMALL_ROUND: usize = 1_000;
const MAX_ROUNDS: usize = 8;
/// How much earlier than the oldest open event-store transaction a round
/// looks: a transaction shows its start a moment after taking it.
const REPORTING_SLACK: Duration = Duration::from_secs(1);
/// How far back a round looks when the event store does not show this
/// role every session: far longer than any append stays uncommitted.
const LATE_COMMIT_MARGIN: Duration = Duration::from_secs(60);

/// What a rebuild did.
#[derive(Debug)]
pub struct RebuildReport {
    pub replayed: usize,
    /// Events re-applied by the catch-up rounds run while serving, and how
    /// many rounds that took.
    pub caught_up: usize,
    pub rounds: usize,
    /// Rounds (the last one included) that looked back a fixed minute:
    /// this role could not see every event-store session's transaction.
    pub fixed_look_backs: usize,
    /// Events re-applied under the lock.
    pub caught_up_locked: usize,
    /// Rows compared under the lock, if not all of them (see [`written_since`]).
    pub compared_locked: Option<usize>,
    /// Live rows removed (no rebuilt row the same) and rebuilt rows written.
    pub removed: usize,
    pub written: usize,
    /// How long the live tables were locked against the projector.
    pub locked_for: Duration,
    /// Why the search index could not be repaired after the swap, if so.
    pub search_repair_failed: Option<String>,
    pub live_warriors: i64,
}

/// Advisory lock key held for the whole rebuild ("rebuild" in ASCII).
const REBUILD_LOCK_KEY: i64 = 0x0072_6562_7569_6c64;

pub async fn rebuild(
    live: &PgPool,
    live_options: PgConnectOptions,
    event_store: &EventStore,
    topic: &str,
) -> anyhow::Result<RebuildReport> {
    // Two rebuilds at once would fight over schema `rebuild`; the second one
    // refuses instead. The lock lives as long as this connection.
    let mut guard = live.acquire().await?;
    let exclusive: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(REBUILD_LOCK_KEY)
        .fetch_one(&mut *guard)
        .await?;
    anyhow::ensure!(exclusive, "another rebuild is running");
    let report = replay_and_swap(live, live_options, event_store, topic).await;
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(REBUILD_LOCK_KEY)
        .execute(&mut *guard)
        .await?;
    report
}

async fn replay_and_swap(
    live: &PgPool,
    live_options: PgConnectOptions,
    event_store: &EventStore,
    topic: &str,
) -> anyhow::Result<RebuildReport> {
    sqlx::raw_sql(
        "DROP SCHEMA IF EXISTS rebuild CASCADE;
         CREATE SCHEMA rebuild;
         CREATE TABLE rebuild.warriors (LIKE public.warriors INCLUDING ALL);
         CREATE TABLE rebuild.warrior_count (LIKE public.warrior_count INCLUDING ALL);
         CREATE TABLE rebuild.search_queue (LIKE public.search_queue INCLUDING ALL);
         INSERT INTO rebuild.warrior_count (live) VALUES (0);",
    )
    .execute(live)
    .await?;
    let target_pool = PgPool::connect_with(live_options.options([("search_path", "rebuild,public")])).await?;
    let target = ReadModel::new(target_pool);

    let mut catch_up = CatchUp::begin(event_store, REPORTING_SLACK, LATE_COMMIT_MARGIN).await?;
    let everything = CatchUpRound {
        position: 0,
        since: DateTime::UNIX_EPOCH,
        fixed_look_back: false,
    };
    let replayed = apply_round(event_store, everything, &target, topic, None).await?;

    let (mut caught_up, mut rounds, mut fixed_look_backs) = (0, 0, 0);
    let mut previous = usize::MAX;
    for _ in 0..MAX_ROUNDS {
        let round = catch_up.next_round(event_store).await?;
        fixed_look_backs += usize::from(round.fixed_look_back);
        let applied = apply_round(event_store, round, &target, topic, None).await?;
        caught_up += applied;
        rounds += 1;
        if applied <= SMALL_ROUND || applied >= previous {
            break;
        }
        previous = applied;
    }
    // Statistics for comparing the tables (a merge join instead of a hash
    // join: ~20% less time).
    sqlx::query("ANALYZE rebuild.warriors").execute(live).await?;
    let columns = compared_columns(live).await?;
    // Compare the tables now, while serving (~3-5 µs a row): under the lock
    // only rows that differed then or were written since are compared again.
    let compared = match written_since(live).await? {
        Some(horizon) => Some((horizon, differing(live, &columns).await?)),
        None => None,
    };

    let mut swap = live.begin().await?;
    // Never queue behind (or ahead of) the projector for long: give up instead.
    sqlx::query("SET LOCAL lock_timeout = '10s'")
        .execute(&mut *swap)
        .await?;
    sqlx::query("LOCK TABLE public.warriors, public.warrior_count IN EXCLUSIVE MODE")
        .execute(&mut *swap)
        .await?;
    let locked = Instant::now();
    let last_round = catch_up.next_round(event_store).await?;
    fixed_look_backs += usize::from(last_round.fixed_look_back);
    let mut touched = Vec::new();
    let caught_up_locked = apply_round(event_store, last_round, &target, topic, Some(&mut touched)).await?;
    let only = match compared {
        Some((horizon, mut differing)) => {
            differing.append(&mut touched);
            Some(candidates(&mut swap, horizon, &differing).await?)
        }
        None => None,
    };
    let (removed, written) = copy_over(&mut swap, &columns, only.as_deref()).await?;
    let live_warriors = sqlx::query_scalar("SELECT live FROM public.warrior_count")
        .fetch_one(&mut *swap)
        .await?;
    swap.commit().await?;
    let locked_for = locked.elapsed();
    // The swap is done: a failed repair is reported, not a failed rebuild.
    let search_repair_failed = repair_search_index(live).await.err().map(|error| error.to_string());
    sqlx::raw_sql("DROP SCHEMA rebuild CASCADE").execute(live).await?;
    Ok(RebuildReport {
        replayed,
        caught_up,
        rounds,
        fixed_look_backs,
        caught_up_locked,
        compared_locked: only.map(|ids| ids.len()),
        removed,
        written,
        locked_for,
        search_repair_failed,
        live_warriors,
    })
}

/// Applies to `target` every event `round` covers, page by page; returns
/// how many that was. Pages go by position, and transactions commit out of
/// order: a warrior's create can come after its later events, which the
/// rows' version guard then ignores, so each page also backdates the rows
/// it creates. The warriors of the events applied go to `touched`, if given.
async fn apply_round(
    event_store: &EventStore,
    round: CatchUpRound,
    target: &ReadModel,
    topic: &str,
    mut touched: Option<&mut Vec<Uuid>>,
) -> anyhow::Result<usize> {
    let mut position = round.position;
    let mut applied = 0;
    loop {
        let page = event_store.read_page_since(position, round.since, PAGE).await?;
        let Some(last) = page.last() else { break };
        position = last.position;
        applied += page.len();
        let events = applicable(&page)?;
        target.apply(topic, &events, &[]).await?;
        target.backdate_creations(&events).await?;
        if let Some(touched) = touched.as_deref_mut() {
            touched.extend(events.iter().map(|e| e.aggregate_id));
        }
    }
    Ok(applied)
}

/// `ROW(table.column, ...)` of `columns`, for comparing whole rows.
fn row_of(columns: &[String], table: &str) -> String {
    let qualified: Vec<String> = columns.iter().map(|c| format!("{table}.{c}")).collect();
    format!("ROW({})", qualified.join(", "))
}

/// Where live rows written from now on can be told apart by their
/// `projected_at`: the oldest start of a transaction open in the read model,
/// less [`REPORTING_SLACK`]. The projector stamps every row it writes with
/// its clock time, so a row written by a transaction that commits later is
/// stamped at or after this. `None` when this role cannot see every
/// session's transaction, or one has been open over [`LATE_COMMIT_MARGIN`]
/// (every row written since would be compared again, found by a scan):
/// then the swap compares every row. (A row edited by hand, unstamped, in
/// the seconds before the lock is not compared again: verify reports it.)
async fn written_since(live: &PgPool) -> sqlx::Result<Option<DateTime<Utc>>> {
    let open = OpenTransactions::read(live).await?;
    let recent = open
        .longest_open()
        .to_std()
        .is_ok_and(|open_for| open_for < LATE_COMMIT_MARGIN);
    Ok(open.horizon(REPORTING_SLACK).filter(|_| recent))
}

/// Ids of the warriors whose live and rebuilt rows differ (or exist on one
/// side only).
async fn differing(live: &PgPool, columns: &[String]) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(&format!(
        "SELECT coalesce(w.id, r.id) FROM public.warriors w FULL JOIN rebuild.warriors r ON r.id = w.id
         WHERE {} IS DISTINCT FROM {}",
        row_of(columns, "w"),
        row_of(columns, "r")
    ))
    .fetch_all(live)
    .await
}

/// The rows the swap must compare: `known` (those that differed when
/// compared while serving, and those the rebuild wrote since) and the live
/// ones written since `horizon` ([`written_since`]).
async fn candidates(
    swap: &mut sqlx::Transaction<'_, Postgres>,
    horizon: DateTime<Utc>,
    known: &[Uuid],
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "SELECT id FROM public.warriors WHERE projected_at >= $1
         UNION SELECT unnest($2::uuid[])",
    )
    .bind(horizon)
    .bind(known)
    .fetch_all(&mut **swap)
    .await
}

/// The columns of `warriors` that [`copy_over`] compares: all but
/// `projected_at` (when the row was written), quoted.
async fn compared_columns(live: &PgPool) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT quote_ident(column_name) FROM information_schema.columns
         WHERE table_schema = 'public' AND table_name = 'warriors' AND column_name <> 'projected_at'
         ORDER BY ordinal_position",
    )
    .fetch_all(live)
    .await
}

/// Makes the live rows equal to the rebuilt ones, writing only those that
/// differ in `columns` ([`compared_columns`]):
/// removes the live rows without an equal rebuilt row, then inserts the
/// rebuilt rows without a live one. Returns (removed, written).
async fn copy_over(
    swap: &mut sqlx::Transaction<'_, Postgres>,
    columns: &[String],
    only: Option<&[Uuid]>,
) -> anyhow::Result<(usize, usize)> {
    let (live_rows, rebuilt_rows) = match only {
        Some(_) => ("w.id = ANY($1) AND", "r.id = ANY($1) AND"),
        None => ("", ""),
    };
    let removing = format!(
        "DELETE FROM public.warriors w
         WHERE {live_rows} NOT EXISTS (SELECT 1 FROM rebuild.warriors r WHERE r.id = w.id AND {} IS NOT DISTINCT FROM {})
         RETURNING w.id",
        row_of(columns, "w"),
        row_of(columns, "r")
    );
    let writing = format!(
        "INSERT INTO public.warriors
         SELECT r.* FROM rebuild.warriors r
         WHERE {rebuilt_rows} NOT EXISTS (SELECT 1 FROM public.warriors w WHERE w.id = r.id)
         RETURNING id"
    );
    let (mut removing, mut writing) = (sqlx::query_scalar(&removing), sqlx::query_scalar(&writing));
    if let Some(ids) = only {
        (removing, writing) = (removing.bind(ids), writing.bind(ids));
    }
    let removed: Vec<Uuid> = removing.fetch_all(&mut **swap).await?;
    let written: Vec<Uuid> = writing.fetch_all(&mut **swap).await?;
    sqlx::query("UPDATE public.warrior_count SET live = (SELECT live FROM rebuild.warrior_count)")
        .execute(&mut **swap)
        .await?;
    // The written rows are queued for the indexer, so search is never held
    // up by the swap's lock, and names of warriors gone from the rebuilt
    // rows leave the index now. Queue rows are locked even where they exist
    // (as the projector does, see APPLY_BATCH): an indexer round that took
    // one meanwhile would index the name it read before the swap. Queue
    // rows first, then names: an indexer round locks them in that order.
    let touched: Vec<Uuid> = removed.iter().chain(&written).copied().collect();
    sqlx::query(
        "INSERT INTO public.search_queue SELECT DISTINCT unnest($1::uuid[])
         ON CONFLICT (id) DO UPDATE SET id = EXCLUDED.id WHERE false",
    )
    .bind(&touched)
    .execute(&mut **swap)
    .await?;
    sqlx::query(
        "DELETE FROM public.warrior_names n
         WHERE n.id = ANY($1) AND NOT EXISTS (SELECT 1 FROM public.warriors w WHERE w.id = n.id AND NOT w.deleted)",
    )
    .bind(&removed)
    .execute(&mut **swap)
    .await?;
    Ok((removed.len(), written.len()))
}

/// Repairs the search index against the swapped rows, once the lock is
/// released: removes the names of warriors no longer live and queues the
/// warriors whose indexed name differs from their row's, including names
/// the index lost before the rebuild (verify's "unindexed"). An indexer
/// round that read a name from before the swap either committed before
/// this reads the names (its name differs: queued again) or is still
/// deleting the queue row, which this insert then waits for. Its
/// statements take rows in no fixed order, so a concurrent indexer round
/// or projector batch can deadlock with one: it is tried three times.
async fn repair_search_index(live: &PgPool) -> sqlx::Result<()> {
    let mut attempt = 1;
    loop {
        match repair_search_index_once(live).await {
            Err(error) if attempt < 3 => {
                tracing::warn!(%error, attempt, "repairing the search index after the swap failed; trying again");
                attempt += 1;
            }
            done => return done,
        }
    }
}

async fn repair_search_index_once(live: &PgPool) -> sqlx::Result<()> {
    sqlx::query(
        "DELETE FROM public.warrior_names n
         WHERE NOT EXISTS (SELECT 1 FROM public.warriors w WHERE w.id = n.id AND NOT w.deleted)",
    )
    .execute(live)
    .await?;
    sqlx::query(
        "INSERT INTO public.search_queue
         SELECT w.id FROM public.warriors w LEFT JOIN public.warrior_names n USING (id)
         WHERE NOT w.deleted AND n.search_text IS DISTINCT FROM w.search_text
         ON CONFLICT DO NOTHING",
    )
    .execute(live)
    .await?;
    Ok(())
}

fn applicable(events: &[StoredEvent]) -> anyhow::Result<Vec<Applicable>> {
    events
        .iter()
        .map(|e| {
            Ok(Applicable {
                aggregate_id: e.aggregate_id,
                version: e.version,
                occurred_at: e.occurred_at,
                event: WarriorEvent::decode(&e.event_type, e.schema_version, &e.data)?,
            })
        })
        .collect()
}
