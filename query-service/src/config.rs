//! Runtime configuration: every setting is a flag and an environment
//! variable, with defaults that match the local stack (`./dev up`).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Projects warrior events from Kafka into the read model and serves
/// lookups, search and counts.
#[derive(Debug, Clone, Parser)]
#[command(name = "query-service", version, after_help = http_kit::ENVIRONMENT_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Serve HTTP and run the projector (the default).
    Serve,
    /// Replay the event store into fresh tables and swap them in, while serving.
    Rebuild,
    /// Compare the read model with the event store; exit 1 on any drift.
    Verify {
        /// Keep re-checking up to this long while drift remains (the
        /// projection may still be catching up).
        #[arg(long, default_value_t = 0)]
        wait_ms: u64,
    },
}

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8092", global = true)]
    pub listen_addr: SocketAddr,

    /// Read-model database. Credentials come only from the environment:
    /// the defaults name no password (set it here or in PGPASSWORD).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://hammer@127.0.0.1:5434/readmodel",
        global = true
    )]
    pub database_url: String,

    /// Event-store database: consulted to tell "not projected yet" from "unknown".
    #[arg(
        long,
        env = "EVENT_STORE_URL",
        default_value = "postgres://hammer@127.0.0.1:5433/eventstore",
        global = true
    )]
    pub event_store_url: String,

    /// Size of each connection pool.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16, global = true)]
    pub database_max_connections: u32,

    /// Connections reserved for searches (a separate pool).
    #[arg(long, env = "SEARCH_MAX_CONNECTIONS", default_value_t = 6, global = true)]
    pub search_max_connections: u32,

    /// A search running longer is cancelled (503) rather than holding a connection.
    #[arg(long, env = "SEARCH_TIMEOUT_MS", default_value_t = 1000, global = true)]
    pub search_timeout_ms: u64,

    /// How long a search may wait for a connection of its pool before it
    /// gets 503: longer than other requests' wait, so that a burst of
    /// searches queues (and slows) rather than fails.
    #[arg(long, env = "SEARCH_QUEUE_TIMEOUT_MS", default_value_t = 5000, global = true)]
    pub search_queue_timeout_ms: u64,

    /// How long a request may wait for a database connection before it gets 503.
    #[arg(long, env = "DATABASE_TIMEOUT_MS", default_value_t = 2000, global = true)]
    pub database_timeout_ms: u64,

    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092", global = true)]
    pub kafka_brokers: String,

    /// Topic the events are read from.
    #[arg(long, env = "KAFKA_TOPIC", default_value = "warrior-events", global = true)]
    pub kafka_topic: String,

    /// Consumer group of the projector.
    #[arg(long, env = "KAFKA_GROUP", default_value = "warrior-read-projection", global = true)]
    pub kafka_group: String,

    /// librdkafka properties of the projector's consumer, over the built-in
    /// ones: `key=value,key=value` (e.g. `fetch.wait.max.ms=5,debug=cgrp,fetch`).
    #[arg(long, env = "KAFKA_CONSUMER_OPTIONS", default_value = "", global = true)]
    pub kafka_consumer_options: messaging::ClientOptions,

    /// Most events applied in one read-model transaction.
    #[arg(long, env = "PROJECTOR_BATCH", default_value_t = 500, global = true)]
    pub projector_batch: usize,

    /// Shortest time between the starts of two projector batches. Each
    /// batch costs ~0.4 ms of CPU whatever its size; this caps batches at
    /// 1,000/N a second and adds at most N ms to the projection lag.
    #[arg(long, env = "PROJECTOR_BATCH_INTERVAL_MS", default_value_t = 2, global = true)]
    pub projector_batch_interval_ms: u64,

    /// How long new or renamed warriors may take to become searchable: the
    /// search indexer gathers names this long before indexing them in one
    /// batch (as Elasticsearch's 1 s refresh interval does). Indexing 1,000
    /// names at once costs a sixth per name of indexing them 25 at a time.
    #[arg(long, env = "SEARCH_REFRESH_MS", default_value_t = 1000, global = true)]
    pub search_refresh_ms: u64,

    /// Longest a lookup waits for the projection to catch up with a write
    /// that was already acknowledged (read your writes) before it answers
    /// from the event store instead. The projection is ~10-20 ms behind
    /// under load, so this only bounds faults (Kafka down, no relay).
    #[arg(long, env = "READ_YOUR_WRITES_TIMEOUT_MS", default_value_t = 500, global = true)]
    pub read_your_writes_timeout_ms: u64,

    /// Upper bound on any request's handling time; below nginx's 10 s
    /// `proxy_read_timeout`, so clients get this service's 503, not a 504.
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = 9_000, global = true)]
    pub request_timeout_ms: u64,
}

impl Config {
    pub fn database_timeout(&self) -> Duration {
        Duration::from_millis(self.database_timeout_ms)
    }

    pub fn projector_batch_interval(&self) -> Duration {
        Duration::from_millis(self.projector_batch_interval_ms)
    }

    pub fn search_refresh(&self) -> Duration {
        Duration::from_millis(self.search_refresh_ms)
    }

    pub fn read_your_writes_timeout(&self) -> Duration {
        Duration::from_millis(self.read_your_writes_timeout_ms)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}
