//! command-service: validates warrior commands, appends their events to the
//! event store with group commit, and relays them to Kafka via the outbox.

pub mod commands;
pub mod config;
pub mod error;
pub mod relay;
pub mod routes;
pub mod stream_locks;

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use event_store::{Appender, EventStore, GroupCommitConfig, GroupCommitter};
use http_kit::PrometheusHandle;
use messaging::KafkaReadiness;
use rdkafka::producer::FutureProducer;
use sqlx::postgres::PgConnectOptions;
use tokio::sync::{watch, Notify};
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::commands::Commands;
use crate::config::Config;
use crate::relay::Relay;

/// Everything a handler may touch, passed explicitly through axum's `State`
/// behind one `Arc`: axum clones the state for every request, and cloning
/// each field (pools, channels, producer, topic name) showed up in profiles.
pub struct AppState {
    pub commands: Commands,
    /// Readiness's question to Kafka, through the relay's producer.
    pub kafka: KafkaReadiness,
}

/// What the command side's OpenAPI document says besides its operations.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "api-hammer command-service",
        description = "Creates, replaces and deletes warriors: every change is an event in the \
                       PostgreSQL event store, relayed to Kafka. Errors are `application/problem+json`.",
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
        .routes(routes!(routes::create))
        .routes(routes!(routes::replace, routes::delete))
        .routes(routes!(routes::history))
        .routes(routes!(routes::create_v1))
        .routes(routes!(routes::health_v1))
        .routes(routes!(routes::health))
        .routes(routes!(routes::ready))
}

/// The command side's OpenAPI document (served at `/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    router().into_openapi()
}

/// The routes, apart from how they are served (tests build it directly).
pub fn app(state: AppState, config: &Config, metrics: PrometheusHandle) -> Router {
    let (routes, doc) = router().split_for_parts();
    let routes = routes
        .route("/openapi.json", http_kit::openapi_json(&doc))
        .with_state(Arc::new(state));
    http_kit::with_common_layers(routes, config.request_timeout(), metrics)
}

/// Connects, migrates, starts the writer and the relay, and serves until a
/// shutdown signal; then drains requests and stops the relay cleanly.
pub async fn serve(config: Config, metrics: PrometheusHandle) -> anyhow::Result<()> {
    let options = config
        .database_url
        .parse::<PgConnectOptions>()
        .context("invalid DATABASE_URL")?
        .application_name("command-service");
    anyhow::ensure!(
        config.database_statement_timeout_ms < config.request_timeout_ms,
        "DATABASE_STATEMENT_TIMEOUT_MS ({}) must be below REQUEST_TIMEOUT_MS ({}): a write's 503 must mean nothing was written",
        config.database_statement_timeout_ms,
        config.request_timeout_ms
    );
    config
        .kafka_producer_options
        .refuse(&messaging::RELAY_ORDERING_PROPERTIES)
        .context("KAFKA_PRODUCER_OPTIONS")?;
    // Migrations on a connection of their own, without the pool's statement
    // limit, which would cancel a long one (an index built on a large table).
    let migrating = http_kit::pool_options()
        .max_connections(1)
        .acquire_timeout(config.database_timeout())
        .connect_lazy_with(options.clone());
    event_store::MIGRATOR
        .run(&migrating)
        .await
        .context("cannot migrate the event store")?;
    migrating.close().await;
    let pool = http_kit::pool_options()
        .max_connections(config.database_max_connections)
        .acquire_timeout(config.database_timeout())
        .connect_lazy_with(options.options([("statement_timeout", config.database_statement_timeout_ms.to_string())]));
    let store = EventStore::new(pool);

    let committed = Arc::new(Notify::new());
    let (appender, writer_task) = if config.group_commit {
        let group_commit = GroupCommitConfig {
            max_batch: config.append_max_batch,
            ..GroupCommitConfig::default()
        };
        let (writer, task) = GroupCommitter::spawn(store.clone(), group_commit, committed.clone(), |size, took| {
            metrics::histogram!("append_batch_size").record(size as f64);
            metrics::histogram!("append_batch_seconds").record(took.as_secs_f64());
        });
        (Appender::Grouped(writer), Some(task))
    } else {
        let direct = Appender::Direct {
            store: store.clone(),
            committed: committed.clone(),
        };
        (direct, None)
    };

    let producer_config = messaging::with_options(
        messaging::relay_producer_config(&config.kafka_brokers),
        &config.kafka_producer_options,
    );
    let producer: FutureProducer = producer_config.create().context("cannot create the Kafka producer")?;
    let (stop_relay, relay_stop_rx) = watch::channel(false);
    let lag_task = tokio::spawn(relay::report_lag(store.clone(), relay_stop_rx.clone()));
    let relay_task = config.relay_enabled.then(|| {
        let relay = Relay {
            store: store.clone(),
            producer: producer.clone(),
            producer_config: producer_config.clone(),
            topic: config.kafka_topic.clone(),
            batch: config.relay_batch,
            min_round_interval: config.relay_round_interval(),
            committed,
        };
        tokio::spawn(relay.run(relay_stop_rx))
    });

    let state = AppState {
        commands: Commands::new(store, appender, config.snapshot_every).with_append_timeout(config.database_timeout()),
        kafka: KafkaReadiness::new(producer, producer_config, config.kafka_topic.clone()),
    };
    let listener =
        http_kit::listen(config.listen_addr).with_context(|| format!("cannot listen on {}", config.listen_addr))?;
    tracing::info!(addr = %config.listen_addr, "command-service listening");
    let draining = http_kit::Draining::default();
    let server = axum::serve(
        draining.listener(listener)?,
        draining.apply(app(state, &config, metrics)),
    )
    .with_graceful_shutdown(draining.clone().shutdown_signal());
    draining.run(server, config.request_timeout()).await?;

    // Requests are drained; the writer ends once its last sender is gone. A
    // connection the drain gave up on may still hold a sender (through the
    // router): bounded, so shutdown cannot hang on it and the relay still
    // stops (anything it had not published stays in the outbox).
    if let Some(task) = writer_task {
        if tokio::time::timeout(config.request_timeout(), task).await.is_err() {
            tracing::warn!("the writer still had callers after the drain; stopping without waiting for them");
        }
    }
    let _ = stop_relay.send(true);
    if let Some(task) = relay_task {
        let _ = task.await;
    }
    let _ = lag_task.await;
    tracing::info!("command-service stopped");
    Ok(())
}
