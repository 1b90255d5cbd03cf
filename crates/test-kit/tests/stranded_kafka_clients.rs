//! A Kafka client stranded by librdkafka (confluentinc/librdkafka#5301): a
//! metadata answer listing no broker, as a broker in controlled shutdown
//! gives, can make a client drop every broker it knows, its bootstrap
//! servers included, and never connect again. A CI run saw the projector
//! wait 6 minutes for partitions after a Kafka restart. Both services must
//! notice a stranded client, replace it, and lose nothing.
//!
//! The stack's own services step aside for a command-service and a
//! query-service that reach Kafka through a proxy able to hide the brokers
//! from metadata answers. They refresh metadata every 100 ms, so hidden
//! answers reach them without a Kafka restart. Whether a client strands is
//! a race inside librdkafka, so the fault repeats until both have been
//! replaced at least once: here the consumer stranded in 10 rounds of 10,
//! the producer in 2-3 of 10 (so 25 rounds leave a ~0.1% chance of a
//! false failure; most runs end within 4).
//!
//! Its own test binary: it stops the stack's services.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::PgPool;
use test_kit::{poll_until, row_version, write_steadily, KafkaProxy, Spare, SpareKind, Stack};
use uuid::Uuid;

/// Rounds of the fault before giving up on both clients stranding.
const ROUNDS: usize = 25;
/// How long brokers stay hidden once the first hidden answer went out: the
/// fault itself, not a wait for something.
const HIDDEN_FOR: Duration = Duration::from_secs(5);
/// Two stranded verdicts three seconds apart, and a few seconds to spare.
const REPLACED_WITHIN: Duration = Duration::from_secs(15);

/// Replacements of stranded clients a service reported, by client.
async fn replaced(stack: &Stack, base_url: &str, client: &str) -> f64 {
    stack
        .metric_at(
            base_url,
            &format!("kafka_clients_replaced_total{{client=\"{client}\"}}"),
        )
        .await
}

/// Brings the stack's own services back whether the test passes or not.
struct RestoreStack<'a>(&'a Stack);

impl Drop for RestoreStack<'_> {
    fn drop(&mut self) {
        self.0.dev(&["up"]);
    }
}

#[tokio::test]
async fn stranded_relay_producer_and_projector_consumer_are_replaced_and_nothing_is_lost() {
    let stack = Stack::from_env();
    stack.dev(&["up"]);
    let _restore = RestoreStack(&stack);
    stack.dev(&["stop", "command-service"]);
    stack.dev(&["stop", "query-service"]);
    let proxy = KafkaProxy::start(&stack.kafka_brokers).await;
    let refresh_often = "topic.metadata.refresh.interval.ms=100";
    let command = Spare::start(
        &stack,
        SpareKind::Command,
        18095,
        &[
            ("KAFKA_BROKERS", &proxy.address),
            ("KAFKA_PRODUCER_OPTIONS", refresh_often),
        ],
    )
    .await;
    let query = Spare::start(
        &stack,
        SpareKind::Query,
        18096,
        &[
            ("KAFKA_BROKERS", &proxy.address),
            ("KAFKA_CONSUMER_OPTIONS", refresh_often),
        ],
    )
    .await;

    let mut written: HashMap<Uuid, i64> = HashMap::new();
    let mut rounds = 0;
    while replaced(&stack, &command.base_url, "relay").await < 1.0
        || replaced(&stack, &query.base_url, "projector").await < 1.0
    {
        rounds += 1;
        assert!(
            rounds <= ROUNDS,
            "after {ROUNDS} rounds, relay replaced {} times, projector {} times",
            replaced(&stack, &command.base_url, "relay").await,
            replaced(&stack, &query.base_url, "projector").await
        );
        let before = (
            replaced(&stack, &command.base_url, "relay").await,
            replaced(&stack, &query.base_url, "projector").await,
        );
        // Writes while the brokers are hidden leave events waiting for the
        // relay's producer, which it then checks.
        let writes = write_steadily(&stack, &command.base_url, 2, HIDDEN_FOR + Duration::from_secs(2));
        let fault = async {
            let hidden_before = proxy.hidden_answers();
            proxy.hide_brokers(true);
            poll_until(Duration::from_secs(10), "a metadata answer without brokers", || async {
                (proxy.hidden_answers() > hidden_before).then_some(())
            })
            .await;
            tokio::time::sleep(HIDDEN_FOR).await;
            proxy.hide_brokers(false);
        };
        let (round_writes, ()) = tokio::join!(writes, fault);
        written.extend(round_writes);
        // A stranded client is replaced within REPLACED_WITHIN; one that is
        // not stranded needs nothing. Either way the round ends when the
        // projection has caught up with this round's writes.
        let read_model = PgPool::connect(&stack.read_model_url).await.expect("read model");
        let deadline = tokio::time::Instant::now() + REPLACED_WITHIN + Duration::from_secs(15);
        for (id, version) in &written {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            poll_until(remaining, "every acknowledged write in the read model", || async {
                (row_version(&read_model, *id).await == Some(*version)).then_some(())
            })
            .await;
        }
        eprintln!(
            "round {rounds}: relay replaced {} -> {}, projector {} -> {}",
            before.0,
            replaced(&stack, &command.base_url, "relay").await,
            before.1,
            replaced(&stack, &query.base_url, "projector").await
        );
    }

    for base_url in [&command.base_url, &query.base_url] {
        let ready = stack
            .http
            .get(format!("{base_url}/ready"))
            .send()
            .await
            .expect("reachable");
        assert_eq!(ready.status(), 200, "{base_url} ready once its clients were replaced");
    }
    command.stop().await;
    query.stop().await;
}
