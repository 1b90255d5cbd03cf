//! Helpers for tests that run against the real stack started by `./dev up`
//! (or `./dev test`, which starts it): addresses from the environment, a
//! deadline-bounded poll, warrior payloads, extra service instances, and a
//! reader of what reached Kafka.

mod kafka;
mod kafka_proxy;
mod spare;

pub use kafka::{assert_complete_and_ordered, committed_offsets, read_versions_from_topic};
pub use kafka_proxy::KafkaProxy;
pub use spare::{Spare, SpareKind};

use std::future::Future;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;
use uuid::Uuid;

/// Where the running stack is, from the variables `./dev env` prints.
#[derive(Debug, Clone)]
pub struct Stack {
    pub gateway: String,
    pub command: String,
    pub query: String,
    pub event_store_url: String,
    pub read_model_url: String,
    pub kafka_brokers: String,
    pub dev_script: String,
    pub http: reqwest::Client,
}

fn var(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

impl Stack {
    pub fn from_env() -> Self {
        Self {
            gateway: var("GATEWAY_URL", "http://127.0.0.1:9999"),
            command: var("COMMAND_URL", "http://127.0.0.1:8091"),
            query: var("QUERY_URL", "http://127.0.0.1:8092"),
            event_store_url: var("EVENT_STORE_URL", "postgres://hammer:hammer@127.0.0.1:5433/eventstore"),
            read_model_url: var("READ_MODEL_URL", "postgres://hammer:hammer@127.0.0.1:5434/readmodel"),
            kafka_brokers: var("KAFKA_BROKERS", "127.0.0.1:9092"),
            dev_script: var("API_HAMMER_DEV", concat!(env!("CARGO_MANIFEST_DIR"), "/../../dev")),
            // A fresh connection per request: a kept-alive one that nginx has
            // just closed shows up as a spurious "connection reset".
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(15))
                .build()
                .expect("HTTP client"),
        }
    }

    /// `url` relative to the gateway.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.gateway)
    }

    /// POSTs a JSON value to the gateway.
    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.at(path))
            .json(body)
            .send()
            .await
            .expect("gateway reachable")
    }

    /// GETs a path from the gateway.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.at(path)).send().await.expect("gateway reachable")
    }

    /// `GET /warrior?t=term` through the gateway, the term URL-encoded.
    pub async fn search(&self, term: &str) -> reqwest::Response {
        self.http
            .get(self.at("/warrior"))
            .query(&[("t", term)])
            .send()
            .await
            .expect("gateway reachable")
    }

    /// Waits (10 s at most) until searching `term` finds `warrior` (a
    /// body as returned by create): search trails the projection by the
    /// indexer's refresh.
    pub async fn until_found_by(&self, term: &str, warrior: &Value, what: &str) {
        poll_until(Duration::from_secs(10), what, || async {
            let hits: Vec<Value> = self.search(term).await.json().await.ok()?;
            hits.contains(warrior).then_some(())
        })
        .await;
    }

    /// Creates a warrior through the gateway and returns its body.
    pub async fn create(&self, body: &Value) -> Value {
        let response = self.post_json("/warrior", body).await;
        assert_eq!(response.status(), 201, "create failed");
        response.json().await.expect("warrior JSON")
    }

    /// The live count as the gateway reports it.
    pub async fn count(&self) -> i64 {
        let body: Value = self.get("/counting-warriors").await.json().await.expect("count JSON");
        body["count"].as_i64().expect("count is a number")
    }

    /// Sum of the query service's metric series whose lines start with
    /// `prefix` (a name, or a name and the start of its labels); 0 before
    /// the first is recorded.
    pub async fn query_metric(&self, prefix: &str) -> f64 {
        self.metric_at(&self.query, prefix).await
    }

    /// [`Stack::query_metric`], of the service at `base_url`.
    pub async fn metric_at(&self, base_url: &str, prefix: &str) -> f64 {
        let text = self
            .http
            .get(format!("{base_url}/metrics"))
            .send()
            .await
            .expect("query service reachable")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .filter(|line| line.starts_with(prefix))
            .filter_map(|line| line.rsplit_once(' '))
            .map(|(_, value)| value.trim().parse::<f64>().expect("a number"))
            .sum()
    }

    /// Runs `./dev <args>` and asserts it succeeded.
    pub fn dev(&self, args: &[&str]) {
        let status = std::process::Command::new(&self.dev_script)
            .args(args)
            .status()
            .expect("dev script runs");
        assert!(status.success(), "./dev {} failed", args.join(" "));
    }
}

impl Stack {
    /// Runs `query-service verify --wait-ms` against the stack's databases;
    /// returns whether it found no drift, and its report.
    pub fn verify(&self, wait: Duration) -> (bool, String) {
        self.query_admin(&["verify", "--wait-ms", &wait.as_millis().to_string()])
    }

    /// Waits until every event in the event store is projected (verify is
    /// clean). Fault tests end with it, so the next test binary starts on a
    /// settled stack rather than on a projection still catching up.
    pub fn wait_until_settled(&self, deadline: Duration) {
        let (clean, report) = self.verify(deadline);
        assert!(clean, "the stack did not settle within {deadline:?}:\n{report}");
    }

    /// Runs `query-service rebuild`; returns whether it succeeded, and its report.
    pub fn rebuild(&self) -> (bool, String) {
        self.query_admin(&["rebuild"])
    }

    fn query_admin(&self, args: &[&str]) -> (bool, String) {
        let binary = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/release/query-service");
        let output = std::process::Command::new(binary)
            .args(args)
            .env("DATABASE_URL", &self.read_model_url)
            .env("EVENT_STORE_URL", &self.event_store_url)
            .env("RUST_LOG", "warn")
            .output()
            .expect("query-service binary (cargo build --release) runs");
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), report)
    }
}

/// The version of a warrior's row in the read model, if it has one.
pub async fn row_version(read_model: &sqlx::PgPool, id: Uuid) -> Option<i64> {
    sqlx::query_scalar("SELECT version FROM warriors WHERE id = $1")
        .bind(id)
        .fetch_optional(read_model)
        .await
        .expect("read model")
}

/// Polls `probe` until it yields `Some`, or panics with `what` at the deadline.
pub async fn poll_until<T, F, Fut>(deadline: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < end, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A valid create body with a name unique to this call.
pub fn new_warrior() -> Value {
    json!({
        "name": format!("Test {}", Uuid::new_v4().simple()),
        "dob": "1584-03-12",
        "fight_skills": ["Katana", "Niten Ichi-ryu"],
    })
}

/// Keeps `writers` concurrent clients writing through `base_url` for
/// `duration`: each creates a warrior, then replaces it a few times, then
/// starts over. Every write must get its 2xx. Returns each warrior's final
/// version.
pub async fn write_steadily(
    stack: &Stack,
    base_url: &str,
    writers: usize,
    duration: Duration,
) -> std::collections::HashMap<Uuid, i64> {
    const UPDATES_PER_WARRIOR: i64 = 3;
    let end = Instant::now() + duration;
    let clients = (0..writers).map(|_| async move {
        let mut written = Vec::new();
        while Instant::now() < end {
            let response = stack
                .http
                .post(format!("{base_url}/warrior"))
                .json(&new_warrior())
                .send()
                .await
                .expect("command side reachable");
            assert_eq!(response.status(), 201, "create failed during the fault");
            let body: Value = response.json().await.expect("JSON");
            let id: Uuid = body["id"].as_str().and_then(|s| s.parse().ok()).expect("id");
            for version in 1..=UPDATES_PER_WARRIOR {
                let response = stack
                    .http
                    .put(format!("{base_url}/warrior/{id}"))
                    .header("if-match", format!("\"{version}\""))
                    .json(&new_warrior())
                    .send()
                    .await
                    .expect("command side reachable");
                assert_eq!(response.status(), 200, "update failed during the fault");
            }
            written.push((id, UPDATES_PER_WARRIOR + 1));
        }
        written
    });
    futures::future::join_all(clients).await.into_iter().flatten().collect()
}
