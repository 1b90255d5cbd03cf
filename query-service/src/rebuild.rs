//! `query-service rebuild`: replays the event store into fresh tables and
//! swaps their content into the live read model while the service serves.
//!
//! Applying an event is idempotent and order-independent (each row keeps
//! the newest version it saw), which makes this simple:
//! 1. replay every event, page by page, into schema `rebuild`;
//! 2. lock the live tables against writers (readers go on, seeing the old
//!    rows), re-apply every event that occurred since the rebuild started
//!    (minus a margin covering transactions that committed late), and copy
//!    the rebuilt rows over the live ones in that same transaction.
//!
//! The projector's writes wait for the lock and then apply on top of the
//! rebuilt rows, so nothing that happened during the rebuild is lost.

use std::time::Duration;

use event_store::{EventStore, StoredEvent};
use shared_kernel::WarriorEvent;
use sqlx::postgres::PgConnectOptions;
use sqlx::{PgPool, Postgres};

use crate::read_model::{Applicable, ReadModel};

/// Events read per replay round.
const PAGE: i64 = 5_000;
/// How far before the start the final catch-up looks back: far longer than
/// any append statement stays uncommitted.
const LATE_COMMIT_MARGIN: Duration = Duration::from_secs(60);

/// What a rebuild did.
#[derive(Debug)]
pub struct RebuildReport {
    pub replayed: usize,
    pub caught_up: usize,
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

    let started = event_store.now().await?;
    let mut replayed = 0;
    let mut position = 0;
    loop {
        let page = event_store.read_all_from(position, PAGE).await?;
        let Some(last) = page.last() else { break };
        position = last.position + 1;
        replayed += page.len();
        target.apply(topic, &applicable(&page)?, &[]).await?;
    }

    let mut swap = live.begin().await?;
    // Never queue behind (or ahead of) the projector for long: give up instead.
    sqlx::query("SET LOCAL lock_timeout = '10s'")
        .execute(&mut *swap)
        .await?;
    sqlx::query("LOCK TABLE public.warriors, public.warrior_count IN EXCLUSIVE MODE")
        .execute(&mut *swap)
        .await?;
    let margin = chrono::Duration::from_std(LATE_COMMIT_MARGIN)?;
    let recent = event_store.read_since(started - margin).await?;
    target.apply(topic, &applicable(&recent)?, &[]).await?;
    copy_over(&mut swap).await?;
    let live_warriors = sqlx::query_scalar("SELECT live FROM public.warrior_count")
        .fetch_one(&mut *swap)
        .await?;
    swap.commit().await?;
    sqlx::raw_sql("DROP SCHEMA rebuild CASCADE").execute(live).await?;
    Ok(RebuildReport {
        replayed,
        caught_up: recent.len(),
        live_warriors,
    })
}

async fn copy_over(swap: &mut sqlx::Transaction<'_, Postgres>) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM public.warriors").execute(&mut **swap).await?;
    sqlx::query("INSERT INTO public.warriors SELECT * FROM rebuild.warriors")
        .execute(&mut **swap)
        .await?;
    sqlx::query("UPDATE public.warrior_count SET live = (SELECT live FROM rebuild.warrior_count)")
        .execute(&mut **swap)
        .await?;
    // Names of warriors gone from the rebuilt rows leave the search index
    // now; names the rebuilt rows spell differently are queued for the
    // indexer, so search is never held up by the swap's lock. (Queueing
    // every row instead kept the indexer busy for minutes after a rebuild.)
    sqlx::query(
        "DELETE FROM public.warrior_names n
         WHERE NOT EXISTS (SELECT 1 FROM public.warriors w WHERE w.id = n.id AND NOT w.deleted)",
    )
    .execute(&mut **swap)
    .await?;
    sqlx::query(
        "INSERT INTO public.search_queue
         SELECT w.id FROM public.warriors w LEFT JOIN public.warrior_names n USING (id)
         WHERE NOT w.deleted AND n.search_text IS DISTINCT FROM w.search_text
         ON CONFLICT DO NOTHING",
    )
    .execute(&mut **swap)
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
