//! query-service: projects warrior events from Kafka into the read model and
//! serves lookups (reading your own writes), search and counts.

pub mod breaker;
pub mod coalesce;
pub mod config;
pub mod error;
pub mod projector;
pub mod read_model;
pub mod rebuild;
pub mod routes;
pub mod search_indexer;
pub mod verify;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use event_store::{EventStore, EventStoreError, StoredEvent};
use http_kit::PrometheusHandle;
use messaging::KafkaReadiness;
use rdkafka::producer::FutureProducer;
use shared_kernel::{Warrior, WarriorEvent};
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::breaker::Breaker;
use crate::coalesce::{CoalesceError, Coalescer};
use crate::config::Config;
use crate::error::ApiError;
use crate::projector::{AppliedBatch, Projector};
use crate::read_model::{Lookup, ReadModel};

/// Migrations of the read-model database, embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/readmodel");

/// Batched lookup queries in flight at once, per database, and their size.
/// One: a second worker took whatever single request arrived while the first
/// batch was out, so under load half the queries carried one id (mean batch
/// 10); with one, batches hold what queued during the previous round trip
/// (64 connections: 27k lookups/s and p99 4.2 ms vs 19–24k and 5.2–6.4 ms,
/// with less CPU). Also tried: two, the second sending only once it held 8
/// ids or the first was back. No gain in 9 alternated rounds (median
/// difference 0 lookups/s), 5–15% more CPU per lookup.
const LOOKUP_WORKERS: usize = 1;
const LOOKUP_MAX_BATCH: usize = 256;

/// How long lookups go straight to the event store after the read model
/// failed one (or a wait for the projection timed out), before one lookup
/// tries the normal way again.
const BREAKER_OPEN: Duration = Duration::from_secs(1);

/// How often a read-your-writes waiter re-reads without a local signal (for
/// events applied by another instance's projector).
const RYW_RECHECK: Duration = Duration::from_millis(100);

/// Everything a handler may touch, passed explicitly through axum's `State`
/// behind one `Arc`: axum clones the state for every request, and cloning
/// each field (pools, channels, producer, topic name) showed up in profiles.
pub struct AppState {
    pub read_model: ReadModel,
    /// Lookups by id and stream heads, coalesced into batched queries.
    pub rows: Coalescer<Uuid, Lookup, sqlx::Error>,
    pub heads: Coalescer<Uuid, i64, EventStoreError>,
    /// Newest events, for lookups the read model cannot answer in time.
    pub newest: Coalescer<Uuid, StoredEvent, EventStoreError>,
    /// Sends lookups straight to the event store while the read model fails.
    pub read_model_breaker: Breaker,
    /// Sends lookups of rows behind the event store straight to it while the
    /// projection is stalled (a wait for it timed out within the last second).
    pub projection_breaker: Breaker,
    pub applied: broadcast::Sender<AppliedBatch>,
    pub read_your_writes_timeout: Duration,
    /// Readiness's question to Kafka, through the dead-letter producer.
    pub kafka: KafkaReadiness,
}

impl AppState {
    /// Looks a warrior up, waiting (bounded) while the event store holds a
    /// newer version than the read model: a write that was acknowledged
    /// before this request arrived is never answered with a 404 or older
    /// data. Both reads run concurrently, so the check costs one indexed
    /// query's latency, not two.
    ///
    /// When the projection does not catch up within the bound (Kafka down,
    /// no relay running, the projector stalled) or the read model cannot be
    /// read, the answer comes from the event store itself, the source of
    /// truth: still exact, one more index probe, and no 503 for a write the
    /// client was told had succeeded. Without the event store nothing but a
    /// deletion (final) can be vouched for: every other lookup is a 503.
    pub async fn lookup_consistent(&self, id: Uuid) -> Result<Lookup, ApiError> {
        if !self.read_model_breaker.allow() {
            return self.answer_from_event_store(id, "read_model_unavailable").await;
        }
        let (lookup, head) = tokio::join!(self.row(id), self.heads.get(id));
        let head = match head {
            Ok(Some(head)) => head,
            // The event store never heard of it: nothing to wait for.
            Ok(None) => {
                return Ok(lookup.unwrap_or_else(|error| {
                    tracing::warn!(%error, "read model unavailable; the event store knows no such warrior");
                    Lookup::Unknown
                }))
            }
            // Without the head, a live row may be older than a write just
            // acknowledged, and a missing one may be a warrior just created:
            // only a deletion, which is final, can be vouched for.
            Err(error) => {
                tracing::warn!(%error, "event store unreachable; only deletions can be answered");
                return match lookup? {
                    deleted @ Lookup::Deleted { .. } => Ok(deleted),
                    Lookup::Live(_) | Lookup::Unknown => Err(ApiError::CannotConfirm),
                };
            }
        };
        let lookup = match lookup {
            Ok(lookup) => lookup,
            Err(error) => return self.instead_of_read_model(id, error).await,
        };
        if lookup.version() >= Some(head) {
            return Ok(lookup);
        }
        // Kafka down, no relay: one waiter at a time finds out whether the
        // projection moves again, the others need not wait the bound out.
        if !self.projection_breaker.allow() {
            return self.answer_from_event_store(id, "projection_stalled").await;
        }
        match self.wait_for_projection(id, head).await {
            Ok(Some(lookup)) => {
                self.projection_breaker.succeeded();
                Ok(lookup)
            }
            Ok(None) => {
                self.projection_breaker.failed();
                self.answer_from_event_store(id, "projection_behind").await
            }
            Err(error) => self.instead_of_read_model(id, error).await,
        }
    }

    /// Re-reads the row until the projection reaches `head`, for at most
    /// the read-your-writes bound: `None` if it did not.
    async fn wait_for_projection(&self, id: Uuid, head: i64) -> Result<Option<Lookup>, ApiError> {
        metrics::counter!("read_your_writes_waits_total").increment(1);
        let started = Instant::now();
        let deadline = started + self.read_your_writes_timeout;
        // Subscribe, then read again: an event applied in between is seen.
        let mut applied = self.applied.subscribe();
        let mut lookup = self.row(id).await?;
        // Re-read when this warrior was applied here (or we cannot tell), and
        // on a slow timer for projectors of other instances: waiters must not
        // turn every batch into a burst of queries.
        let mut next_recheck = Instant::now() + RYW_RECHECK;
        while lookup.version() < Some(head) {
            if Instant::now() >= deadline {
                return Ok(None);
            }
            let reread = tokio::select! {
                received = applied.recv() => match received {
                    Ok(batch) => batch.iter().any(|(applied_id, version)| *applied_id == id && *version >= head),
                    Err(broadcast::error::RecvError::Lagged(_)) => true,
                    Err(broadcast::error::RecvError::Closed) => {
                        tokio::time::sleep_until(next_recheck.min(deadline)).await;
                        true
                    }
                },
                () = tokio::time::sleep_until(next_recheck.min(deadline)) => true,
            };
            // A batch of other warriors arriving when the slow re-check is
            // due must not push it back another period.
            let due = Instant::now() >= next_recheck;
            if due {
                next_recheck = Instant::now() + RYW_RECHECK;
            }
            if reread || due {
                lookup = self.row(id).await?;
            }
        }
        metrics::histogram!("read_your_writes_wait_seconds").record(started.elapsed().as_secs_f64());
        Ok(Some(lookup))
    }

    /// Answers from the event store when the read model failed, unless the
    /// service is shutting down.
    async fn instead_of_read_model(&self, id: Uuid, error: ApiError) -> Result<Lookup, ApiError> {
        if matches!(error, ApiError::ShuttingDown) {
            return Err(error);
        }
        tracing::warn!(%error, "read model unavailable; answering from the event store");
        self.answer_from_event_store(id, "read_model_unavailable").await
    }

    /// The warrior as the event store holds it. Every warrior event carries
    /// the whole state (or the deletion), so the newest one is the answer.
    /// Batched like the other reads: with the read model down, every lookup
    /// comes here, and one query each would drain the pool the stream-head
    /// reads need.
    async fn answer_from_event_store(&self, id: Uuid, reason: &'static str) -> Result<Lookup, ApiError> {
        metrics::counter!("read_your_writes_fallbacks_total", "reason" => reason).increment(1);
        let newest = match self.newest.get(id).await {
            Ok(Some(newest)) => newest,
            Ok(None) => return Ok(Lookup::Unknown),
            Err(CoalesceError::Load(error)) => return Err(ApiError::EventStore(error)),
            Err(CoalesceError::Panicked) => return Err(ApiError::Internal),
            Err(CoalesceError::Closed) => return Err(ApiError::ShuttingDown),
        };
        let event = WarriorEvent::decode(&newest.event_type, newest.schema_version, &newest.data)
            .map_err(ApiError::UnreadableEvent)?;
        Ok(match event {
            WarriorEvent::Created(state) | WarriorEvent::Updated(state) => Lookup::Live(Warrior {
                id,
                name: state.name,
                dob: state.dob,
                fight_skills: state.fight_skills,
                version: newest.version,
            }),
            WarriorEvent::Deleted => Lookup::Deleted {
                version: newest.version,
            },
        })
    }

    /// One row of the read model, through the coalescer; tells the breaker.
    async fn row(&self, id: Uuid) -> Result<Lookup, ApiError> {
        match self.rows.get(id).await {
            Ok(found) => {
                self.read_model_breaker.succeeded();
                Ok(found.unwrap_or(Lookup::Unknown))
            }
            Err(CoalesceError::Load(error)) => {
                self.read_model_breaker.failed();
                Err(ApiError::ReadModel(error))
            }
            Err(CoalesceError::Panicked) => Err(ApiError::Internal),
            Err(CoalesceError::Closed) => Err(ApiError::ShuttingDown),
        }
    }
}

/// What the query side's OpenAPI document says besides its operations.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "api-hammer query-service",
        description = "Looks warriors up (reading your own writes), searches and counts them, from \
                       a read model projected from Kafka. Errors are `application/problem+json`.",
        license(name = "MIT")
    ),
    tags(
        (name = "warriors", description = "The warrior resource."),
        (name = "v1", description = "The original Java API's routes, kept for its clients."),
        (name = "operations", description = "Health and readiness of this service (not routed by the gateway)."),
    )
)]
struct ApiDoc;

/// Every documented route: axum routes each handler at the path and method
/// of its `#[utoipa::path]`, so the document and the router cannot differ.
fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(routes::search))
        .routes(routes!(routes::get_warrior))
        .routes(routes!(routes::count))
        .routes(routes!(routes::search_v1))
        .routes(routes!(routes::get_warrior_v1))
        .routes(routes!(routes::count_v1))
        .routes(routes!(routes::health_v1))
        .routes(routes!(routes::health))
        .routes(routes!(routes::ready))
}

/// The query side's OpenAPI document (served at `/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    router().into_openapi()
}

/// The routes, apart from how they are served.
pub fn app(state: AppState, config: &Config, metrics: PrometheusHandle) -> Router {
    let (routes, doc) = router().split_for_parts();
    let routes = routes
        .route("/openapi.json", http_kit::openapi_json(&doc))
        .with_state(Arc::new(state));
    http_kit::with_common_layers(routes, config.request_timeout(), metrics)
}

/// A pool whose connections say who they serve (`application_name` in
/// `pg_stat_activity`, and per-part CPU in `load-tests/pg_cpu.py`).
fn pool(config: &Config, url: &str, name: &str) -> anyhow::Result<PgPool> {
    Ok(pool_of(config, connect_options(url, name)?))
}

/// A [`pool`] for lookups: batches of reads by key, for which a sequential
/// or parallel scan is never the right plan. Before the first ANALYZE of a
/// freshly loaded table the planner takes each id of `= ANY($1)` to match
/// 0.5% of the rows, so a batch of 30 looked like a sixth of the event
/// store and got a parallel plan: workers forked for every batch, 5–6k
/// lookups/s instead of 23–25k until autovacuum's first analyze.
fn lookup_pool(config: &Config, url: &str, name: &str) -> anyhow::Result<PgPool> {
    Ok(pool_of(
        config,
        connect_options(url, name)?.options([("enable_seqscan", "off"), ("max_parallel_workers_per_gather", "0")]),
    ))
}

fn pool_of(config: &Config, options: PgConnectOptions) -> PgPool {
    http_kit::pool_options()
        .max_connections(config.database_max_connections)
        .acquire_timeout(config.database_timeout())
        .connect_lazy_with(options)
}

/// No JIT compilation: every query here is short, and a plan whose cost a
/// disabled scan type inflates (the search pool forbids sequential scans)
/// was JIT-compiled for 50-130 ms before running for 0.1 ms.
fn connect_options(url: &str, name: &str) -> anyhow::Result<PgConnectOptions> {
    let options: PgConnectOptions = url.parse().context("invalid database URL")?;
    Ok(options.application_name(name).options([("jit", "off")]))
}

/// A coalescer answering lookups by id with one batched query on `handle`,
/// a cheap-to-clone database handle (see [`coalesce`]).
fn lookup_coalescer<H, V, E, F, Fut>(source: &'static str, handle: H, load: F) -> Coalescer<Uuid, V, E>
where
    H: Clone + Send + Sync + 'static,
    V: Clone + Send + 'static,
    E: Send + Sync + 'static,
    F: Fn(H, Vec<Uuid>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<HashMap<Uuid, V>, E>> + Send,
{
    Coalescer::spawn(source, LOOKUP_WORKERS, LOOKUP_MAX_BATCH, move |ids| {
        load(handle.clone(), ids)
    })
}

/// `query-service rebuild`: see [`rebuild`].
pub async fn run_rebuild(config: Config) -> anyhow::Result<()> {
    let live_options: PgConnectOptions = config.database_url.parse().context("invalid DATABASE_URL")?;
    let live = PgPool::connect_with(live_options.clone()).await?;
    MIGRATOR.run(&live).await.context("cannot migrate the read model")?;
    let event_store = EventStore::new(pool(&config, &config.event_store_url, "query-service rebuild")?);
    let report = rebuild::rebuild(&live, live_options, &event_store, &config.kafka_topic).await?;
    println!(
        "rebuilt from {} events; caught up with {} in {} round(s) while serving and {} under the swap's lock; \
         the swap removed {} rows and wrote {}, holding the tables {} ms; {} live warriors",
        report.replayed,
        report.caught_up,
        report.rounds,
        report.caught_up_locked,
        report.removed,
        report.written,
        report.locked_for.as_millis(),
        report.live_warriors
    );
    match report.compared_locked {
        Some(rows) => println!(
            "the swap compared {rows} rows under the lock: those differing or written since a comparison made while serving"
        ),
        None => println!(
            "the swap compared every row under the lock: this read-model role cannot see every session in \
             pg_stat_activity (grant it pg_read_all_stats), or a transaction there was open for over a minute"
        ),
    }
    if let Some(error) = &report.search_repair_failed {
        println!(
            "repairing the search index after the swap failed ({error}); the swap is done: \
             `query-service verify` lists any name left unindexed, and another rebuild repairs it"
        );
    }
    if report.fixed_look_backs > 0 {
        println!(
            "{} round(s) looked back a fixed minute: this event-store role cannot see every session's \
             transaction in pg_stat_activity (grant it pg_read_all_stats)",
            report.fixed_look_backs
        );
    }
    Ok(())
}

/// `query-service verify`: compares until clean or `wait` has passed; prints
/// the last comparison and returns whether it was clean.
pub async fn run_verify(config: Config, wait: Duration) -> anyhow::Result<bool> {
    let read_model = ReadModel::new(pool(&config, &config.database_url, "query-service verify")?);
    let event_store = EventStore::new(pool(&config, &config.event_store_url, "query-service verify")?);
    let deadline = Instant::now() + wait;
    // A comparison of a large store outlasts a short wait by itself; a
    // second one still tells the projection's lag from a drift.
    let mut compared_before = false;
    loop {
        let drift = verify::verify(&event_store, &read_model).await?;
        if drift.is_clean() || (Instant::now() >= deadline && compared_before) {
            print!("{drift}");
            return Ok(drift.is_clean());
        }
        compared_before = true;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Connects, migrates, starts the projector, and serves until a shutdown
/// signal; then drains requests and stops the projector between batches.
pub async fn serve(config: Config, metrics: PrometheusHandle) -> anyhow::Result<()> {
    // Migrations (whole-table statements) plan as PostgreSQL likes, not as lookups do.
    MIGRATOR
        .run(&pool(&config, &config.database_url, "query-service migrations")?)
        .await
        .context("cannot migrate the read model")?;
    let read_pool = lookup_pool(&config, &config.database_url, "query-service")?;
    let search_options = connect_options(&config.database_url, "query-service search")?;
    let search_pool = http_kit::pool_options()
        .max_connections(config.search_max_connections)
        .acquire_timeout(Duration::from_millis(config.search_queue_timeout_ms))
        // Generic plans only, without sequential scans. A plan made for the
        // actual values guesses how many rows a rare term or skill matches
        // (45,823 estimated, 24 found), and with LIMIT 50 it then walks every
        // row hoping to stop early: 160 ms to 850 ms against 0.2 to 3 ms
        // through the trigram or array index. The generic plan keeps to the
        // indexes, and costs no planning per search. The one search that can
        // only scan (a term without a trigram) allows it for itself.
        // No parallel workers either: the generic plan of a search without
        // trigrams forked two for every search.
        .connect_lazy_with(search_options.options([
            ("statement_timeout", config.search_timeout_ms.to_string()),
            ("enable_seqscan", "off".to_owned()),
            ("plan_cache_mode", "force_generic_plan".to_owned()),
            ("max_parallel_workers_per_gather", "0".to_owned()),
        ]));
    let read_model = ReadModel::new(read_pool).with_search_pool(search_pool);
    // The projector (and the search indexer) write through connections of
    // their own: under load the projector must never queue behind lookups
    // for the shared pool (it did, fell behind, and read-your-writes lookups
    // then waited on it).
    let projector_pool = http_kit::pool_options()
        .max_connections(2)
        .acquire_timeout(config.database_timeout())
        .connect_lazy_with(connect_options(&config.database_url, "query-service projector")?);
    let event_store = EventStore::new(lookup_pool(&config, &config.event_store_url, "query-service")?);

    // Statistics feed the lag gauges; the operator's options come last, so
    // they can change any setting, this one included.
    let mut consumer_config = messaging::consumer_config(&config.kafka_brokers, &config.kafka_group);
    consumer_config.set("statistics.interval.ms", "5000");
    let consumer_config = messaging::with_options(consumer_config, &config.kafka_consumer_options);
    let consumer = projector::new_consumer(
        &consumer_config,
        &ReadModel::new(projector_pool.clone()),
        &config.kafka_topic,
    )
    .context("cannot create the Kafka consumer")?;
    let producer_config = messaging::producer_config(&config.kafka_brokers);
    let producer: FutureProducer = producer_config.create().context("cannot create the Kafka producer")?;
    let (applied, _) = broadcast::channel(256);
    let (stop_projector, projector_stop_rx) = watch::channel(false);
    let projector = Projector {
        consumer: Arc::new(consumer),
        consumer_config,
        dlq_producer: producer.clone(),
        dlq_config: producer_config.clone(),
        read_model: ReadModel::new(projector_pool.clone()),
        topic: config.kafka_topic.clone(),
        max_batch: config.projector_batch,
        min_batch_interval: config.projector_batch_interval(),
        applied: applied.clone(),
    };
    let indexer_task = tokio::spawn(search_indexer::run(
        ReadModel::new(projector_pool),
        config.search_refresh(),
        applied.subscribe(),
        projector_stop_rx.clone(),
    ));
    let projector_task = tokio::spawn(projector.run(projector_stop_rx));

    let rows = lookup_coalescer("read_model", read_model.clone(), |read_model, ids| async move {
        read_model.lookup_many(&ids).await
    });
    let heads = lookup_coalescer("event_store", event_store.clone(), |event_store, ids| async move {
        event_store.head_versions(&ids).await
    });
    let newest = lookup_coalescer("event_store_newest", event_store, |event_store, ids| async move {
        event_store.newest_events(&ids).await
    });
    let state = AppState {
        read_model,
        rows,
        heads,
        newest,
        read_model_breaker: Breaker::new(BREAKER_OPEN, config.database_timeout() * 2),
        projection_breaker: Breaker::new(
            BREAKER_OPEN,
            config.read_your_writes_timeout() + config.database_timeout() * 2,
        ),
        applied,
        read_your_writes_timeout: config.read_your_writes_timeout(),
        kafka: KafkaReadiness::new(producer, producer_config, config.kafka_topic.clone()),
    };
    let listener =
        http_kit::listen(config.listen_addr).with_context(|| format!("cannot listen on {}", config.listen_addr))?;
    tracing::info!(addr = %config.listen_addr, "query-service listening");
    let draining = http_kit::Draining::default();
    let server = axum::serve(
        draining.listener(listener)?,
        draining.apply(app(state, &config, metrics)),
    )
    .with_graceful_shutdown(draining.clone().shutdown_signal());
    draining.run(server, config.request_timeout()).await?;

    let _ = stop_projector.send(true);
    match projector_task.await {
        Ok(Err(error)) => tracing::error!(%error, "projector failed"),
        Err(error) => tracing::error!(%error, "projector panicked"),
        Ok(Ok(())) => {}
    }
    if let Err(error) = indexer_task.await {
        tracing::error!(%error, "search indexer panicked");
    }
    tracing::info!("query-service stopped");
    Ok(())
}
