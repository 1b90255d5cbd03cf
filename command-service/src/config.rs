//! Runtime configuration: every setting is a flag and an environment
//! variable, with defaults that match the local stack (`./dev up`).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

/// Validates warrior commands, appends their events to the PostgreSQL event
/// store and relays them to Kafka through a transactional outbox.
#[derive(Debug, Clone, Parser)]
#[command(name = "command-service", version, after_help = http_kit::ENVIRONMENT_HELP)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8091")]
    pub listen_addr: SocketAddr,

    /// Event-store database. Credentials come only from the environment:
    /// the default names no password (set it here or in PGPASSWORD).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://hammer@127.0.0.1:5433/eventstore"
    )]
    pub database_url: String,

    /// Size of the connection pool.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,

    /// How long a request may wait for a database connection before it gets 503.
    #[arg(long, env = "DATABASE_TIMEOUT_MS", default_value_t = 2000)]
    pub database_timeout_ms: u64,

    /// Longest any statement on the event store may run (PostgreSQL's
    /// statement_timeout), lock waits included; keep it below
    /// REQUEST_TIMEOUT_MS. A batch of appends stuck behind a lock is then
    /// rolled back and its commands answered 503 with nothing written, so a
    /// retry is safe; past the request time limit their 503 could not say
    /// whether the append would still commit. Migrations are not limited.
    #[arg(long, env = "DATABASE_STATEMENT_TIMEOUT_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub database_statement_timeout_ms: u64,

    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,

    /// Topic the events are published to.
    #[arg(long, env = "KAFKA_TOPIC", default_value = "warrior-events")]
    pub kafka_topic: String,

    /// librdkafka properties of the relay's producer, over the built-in
    /// ones: `key=value,key=value` (e.g. `linger.ms=5,debug=msg,broker`).
    /// Those the relay's ordering rests on (idempotence, acks, the message
    /// timeout, the gap-less guarantee) are refused.
    #[arg(long, env = "KAFKA_PRODUCER_OPTIONS", default_value = "")]
    pub kafka_producer_options: messaging::ClientOptions,

    /// Group concurrent appends into one statement. Off: every append is its
    /// own statement and transaction (the baseline of the benchmarks).
    #[arg(long, env = "GROUP_COMMIT", default_value_t = true, action = clap::ArgAction::Set)]
    pub group_commit: bool,

    /// Most appends committed together.
    #[arg(long, env = "APPEND_MAX_BATCH", default_value_t = 1024)]
    pub append_max_batch: usize,

    /// Snapshot a warrior every this many events (0: never).
    #[arg(long, env = "SNAPSHOT_EVERY", default_value_t = 100, value_parser = clap::value_parser!(i64).range(0..))]
    pub snapshot_every: i64,

    /// Run the outbox relay in this process (only one instance relays at a time anyway).
    #[arg(long, env = "RELAY_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub relay_enabled: bool,

    /// Most events the relay publishes per round (at least 1: with 0 the
    /// relay read nothing, forever).
    #[arg(long, env = "RELAY_BATCH", default_value_t = 1000, value_parser = clap::value_parser!(i64).range(1..))]
    pub relay_batch: i64,

    /// Shortest time between the starts of two relay rounds (0: none). Each
    /// round costs a few hundred µs of CPU across the stack whatever it
    /// carries; N caps rounds at 1,000/N a second and adds at most N ms to
    /// the projection lag (nothing to the first event after a quiet spell).
    /// 8 cut the CPU of a create by 10–25% at ~870 creates/s, for +4 ms of
    /// median lag; set 0 when lag matters more than CPU.
    #[arg(long, env = "RELAY_ROUND_INTERVAL_MS", default_value_t = 8)]
    pub relay_round_interval_ms: u64,

    /// Upper bound on any request's handling time; below nginx's 10 s
    /// `proxy_read_timeout`, so clients get this service's 503, not a 504.
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = 9_000)]
    pub request_timeout_ms: u64,
}

impl Config {
    pub fn database_timeout(&self) -> Duration {
        Duration::from_millis(self.database_timeout_ms)
    }

    pub fn relay_round_interval(&self) -> Duration {
        Duration::from_millis(self.relay_round_interval_ms)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relay_batch_below_one_is_refused() {
        for batch in ["0", "-5"] {
            let parsed = Config::try_parse_from(["command-service".to_owned(), format!("--relay-batch={batch}")]);
            assert!(parsed.is_err(), "RELAY_BATCH={batch} accepted");
        }
        let parsed = Config::try_parse_from(["command-service", "--relay-batch", "1"]).expect("1 is fine");
        assert_eq!(parsed.relay_batch, 1);
    }
}
