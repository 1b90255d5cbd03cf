//! An extra instance of a service, started from the release binary next to
//! the stack's own, for fault and failover tests.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::{poll_until, Stack};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpareKind {
    Command,
    Query,
}

impl SpareKind {
    fn binary(self) -> &'static str {
        match self {
            Self::Command => "command-service",
            Self::Query => "query-service",
        }
    }
}

/// A running extra instance; killed with SIGKILL when dropped.
pub struct Spare {
    pub base_url: String,
    child: Child,
}

impl Spare {
    /// Starts `kind` on `port` against the stack's databases and Kafka, with
    /// extra environment `env`, and waits until it answers `/health`.
    pub async fn start(stack: &Stack, kind: SpareKind, port: u16, env: &[(&str, &str)]) -> Self {
        let binary = format!("{}/../../target/release/{}", env!("CARGO_MANIFEST_DIR"), kind.binary());
        let database_url = match kind {
            SpareKind::Command => &stack.event_store_url,
            SpareKind::Query => &stack.read_model_url,
        };
        let mut command = Command::new(&binary);
        command
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("DATABASE_URL", database_url)
            .env("EVENT_STORE_URL", &stack.event_store_url)
            .env("KAFKA_BROKERS", &stack.kafka_brokers)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary} (cargo build --release first): {e}"));
        let base_url = format!("http://127.0.0.1:{port}");
        let spare = Self { base_url, child };
        poll_until(Duration::from_secs(20), "the spare instance to answer", || async {
            let response = stack.http.get(format!("{}/health", spare.base_url)).send().await.ok()?;
            response.status().is_success().then_some(())
        })
        .await;
        spare
    }

    /// `kill -9`.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("kill the spare instance");
    }

    /// SIGTERM, then waits for the exit: a clean goodbye, for a test's
    /// cleanup. A killed query-service stays a member of the projector's
    /// consumer group until its session times out (10 s), and the group
    /// assigns no partition meanwhile: the next test's writes waited that
    /// long to be projected.
    pub async fn stop(mut self) {
        let pid = self.child.id().expect("the spare is running");
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .expect("run kill");
        assert!(sent.success(), "SIGTERM to the spare instance");
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("the spare instance exits within 20 s of SIGTERM")
            .expect("wait for the spare instance");
    }
}
