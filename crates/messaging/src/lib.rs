//! Kafka plumbing shared by the relay (producer) and the projector (consumer):
//! client settings chosen once, and the envelope's encoding on the wire.

use std::future::Future;
use std::time::{Duration, Instant};

use rdkafka::client::Client;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, FutureProducer, Producer};
use rdkafka::{ClientConfig, ClientContext};
use shared_kernel::EventEnvelope;
use thiserror::Error;

/// Header carrying the id of the HTTP request that caused the event.
pub const HEADER_REQUEST_ID: &str = "request-id";
/// Header repeating the event type, so tools can filter without parsing JSON.
pub const HEADER_EVENT_TYPE: &str = "event-type";
/// Headers added to a message sent to the dead-letter topic.
pub const HEADER_DLQ_ERROR: &str = "dlq-error";
pub const HEADER_DLQ_SOURCE: &str = "dlq-source";

/// Dead-letter topic of a topic.
pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// Longest pause between two attempts to reach a broker. librdkafka's
/// default backoff grows to 10 s while Kafka is down, so once it was back
/// the relay and the projector sat idle for up to 10 s more (a 10 s outage:
/// read model complete 9.5 s after Kafka's return, 5.9 s with this and the
/// shorter session below). One connection attempt a second is no load.
const RECONNECT_BACKOFF_MAX_MS: &str = "1000";

/// Settings of the relay's producer.
///
/// Idempotence keeps per-partition order and drops broker-side duplicates of
/// internal retries (it implies `acks=all`). murmur2 matches the Java client's
/// partitioner, so Java tools agree on which partition a warrior lives in. A
/// bounded `message.timeout.ms` makes an unreachable broker surface as an
/// error the relay retries, instead of a send that hangs for minutes. No
/// linger: the relay paces its rounds (`RELAY_ROUND_INTERVAL_MS`) and
/// enqueues a round's events at once, so waiting for more only added a
/// millisecond. (Without pacing, linger 0 cost ~130 µs of CPU per event
/// at 1,000/s against linger 1: more, smaller requests.)
pub fn producer_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("reconnect.backoff.max.ms", RECONNECT_BACKOFF_MAX_MS)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "0")
        .set("message.timeout.ms", "10000")
        .set("socket.keepalive.enable", "true");
    config
}

/// Settings of the outbox relay's producer: [`producer_config`], but a
/// message never times out, and a message failing alone stops the producer.
/// Either way the idempotent producer would drop one message of a
/// partition and still send the next ones (librdkafka's documented "gap"):
/// after a timeout during an outage, or a permanent error on one batch (the
/// topic deleted and re-created, a message over the topic's size limit).
/// The relay would then republish the dropped event after its successor,
/// out of order. Without a timeout the relay waits for Kafka, which writes
/// do not (events wait in the outbox); with the gap-less guarantee a failed
/// batch is a fatal error instead, and the relay replaces the producer and
/// publishes again from the outbox, in order.
pub fn relay_producer_config(brokers: &str) -> ClientConfig {
    let mut config = producer_config(brokers);
    config
        .set("message.timeout.ms", "0")
        .set("enable.gapless.guarantee", "true");
    config
}

/// The relay's producer properties its per-warrior order rests on
/// ([`relay_producer_config`]); operator options may not override them.
pub const RELAY_ORDERING_PROPERTIES: [&str; 5] = [
    "enable.idempotence",
    "acks",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "enable.gapless.guarantee",
];

/// Settings of the projector's consumer.
///
/// Progress is recorded in the read-model database in the same transaction
/// as the rows; only then are the offsets *stored* in the client, which
/// commits stored offsets to Kafka in the background once a second and on
/// revocation or close. Committing after every batch instead flooded the
/// group coordinator: heartbeats queued behind commits, the session timed
/// out under load, and the projector stopped while the group rebalanced.
pub fn consumer_config(brokers: &str, group_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("reconnect.backoff.max.ms", RECONNECT_BACKOFF_MAX_MS)
        .set("group.id", group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // The broker answers a fetch as soon as a message arrives (long
        // polling); this only bounds an empty wait. At 5 ms an idle consumer
        // sent 200 empty fetches a second, ~0.05 cores of Kafka and client.
        .set("fetch.wait.max.ms", "100")
        // librdkafka pre-fetches up to 64 MB per consumer by default; a
        // projector applying 500-event batches needs a fraction of that.
        .set("queued.max.messages.kbytes", "4096")
        // After a Kafka restart the coordinator keeps the member from before
        // the outage until this expires, and the group (so the projector)
        // waits for it: 6 s, the broker's minimum, instead of 10. Also how
        // long a killed instance's partitions stay unread.
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000");
    config
}

/// librdkafka properties set by the operator, applied over the defaults
/// above: batching and polling trade latency for CPU, and the right point
/// depends on the deployment (README, "Operating it"). Written as
/// `key=value,key=value`; a comma not followed by a `key=` continues the
/// value, so list-valued properties such as `debug=cgrp,fetch` pass whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientOptions(Vec<(String, String)>);

/// Why the operator's options were refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ClientOptionsError {
    #[error("expected librdkafka properties as key=value,key=value; {0:?} has no key")]
    NoKey(String),
    #[error("{0} cannot be set: the relay's per-warrior order depends on its built-in value")]
    Reserved(String),
}

impl ClientOptions {
    /// Refuses options that would override any of `reserved`.
    pub fn refuse(&self, reserved: &[&str]) -> Result<(), ClientOptionsError> {
        match self.0.iter().find(|(key, _)| reserved.contains(&key.as_str())) {
            Some((key, _)) => Err(ClientOptionsError::Reserved(key.clone())),
            None => Ok(()),
        }
    }
}

impl std::str::FromStr for ClientOptions {
    type Err = ClientOptionsError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut options: Vec<(String, String)> = Vec::new();
        for piece in text.split(',').filter(|piece| !piece.trim().is_empty()) {
            match (piece.split_once('='), options.last_mut()) {
                (Some((key, value)), _) if !key.trim().is_empty() => {
                    options.push((key.trim().to_owned(), value.trim().to_owned()));
                }
                (None, Some((_, value))) => {
                    value.push(',');
                    value.push_str(piece.trim());
                }
                _ => return Err(ClientOptionsError::NoKey(piece.to_owned())),
            }
        }
        Ok(Self(options))
    }
}

/// Applies operator options over a configuration (later ones win).
/// librdkafka validates them when the client is created, so an unknown
/// property or a bad value stops the service at start with its message.
pub fn with_options(mut config: ClientConfig, options: &ClientOptions) -> ClientConfig {
    for (key, value) in &options.0 {
        config.set(key, value);
    }
    config
}

/// A message payload that is not an event envelope.
#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("message has no payload")]
    Empty,
    #[error("payload is not an event envelope: {0}")]
    Json(#[from] serde_json::Error),
}

/// Encodes an envelope as the JSON payload documented in docs/EVENTS.md.
pub fn encode(envelope: &EventEnvelope) -> Vec<u8> {
    // Serialising a struct of plain fields into a Vec cannot fail.
    serde_json::to_vec(envelope).unwrap_or_default()
}

/// Decodes a message payload into an envelope.
pub fn decode(payload: Option<&[u8]>) -> Result<EventEnvelope, DecodeError> {
    let bytes = payload.ok_or(DecodeError::Empty)?;
    Ok(serde_json::from_slice(bytes)?)
}

/// Whether the brokers answer a metadata request for `topic` within a
/// second, asked through `producer` or, if it cannot, through a new client
/// made from its `config`: the Kafka half of both services' readiness, which
/// tells whether Kafka is up, not whether one client is stranded (the relay
/// and the projector replace theirs; see [`is_stranded`]). librdkafka's
/// calls block, so they run on tokio's blocking pool. Services ask through
/// [`KafkaReadiness`], which bounds how often this runs.
pub async fn topic_reachable(producer: &FutureProducer, config: &ClientConfig, topic: &str) -> bool {
    let (producer, config, topic) = (producer.clone(), config.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || answers(producer.client(), &topic) || fresh_client_answers(&config, &topic))
        .await
        .unwrap_or(false)
}

/// How long a readiness verdict about Kafka is reused.
pub const READINESS_FRESH_FOR: Duration = Duration::from_secs(1);

/// The Kafka half of a service's readiness: [`topic_reachable`], run at most
/// once per [`READINESS_FRESH_FOR`] and by one caller at a time; callers
/// that come meanwhile wait for its verdict. While Kafka is down each check blocks a
/// thread for up to two seconds and makes a new client (a handful of
/// librdkafka threads), so probes from an orchestrator and a load balancer
/// must not each start one.
pub struct KafkaReadiness {
    producer: FutureProducer,
    config: ClientConfig,
    topic: String,
    verdict: Memo,
}

impl KafkaReadiness {
    /// Asks through `producer`, made from `config`, about `topic`.
    pub fn new(producer: FutureProducer, config: ClientConfig, topic: String) -> Self {
        Self {
            producer,
            config,
            topic,
            verdict: Memo::new(READINESS_FRESH_FOR),
        }
    }

    /// Whether Kafka answers for the topic (at most [`READINESS_FRESH_FOR`] old).
    pub async fn topic_reachable(&self) -> bool {
        self.verdict
            .get(|| topic_reachable(&self.producer, &self.config, &self.topic))
            .await
    }
}

/// A yes/no answer reused while fresh; concurrent askers wait for the one
/// check in flight instead of starting their own.
struct Memo {
    fresh_for: Duration,
    last: tokio::sync::Mutex<Option<(Instant, bool)>>,
}

impl Memo {
    fn new(fresh_for: Duration) -> Self {
        Self {
            fresh_for,
            last: tokio::sync::Mutex::new(None),
        }
    }

    async fn get<F: Future<Output = bool>>(&self, check: impl FnOnce() -> F) -> bool {
        let mut last = self.last.lock().await;
        if let Some((at, verdict)) = *last {
            if at.elapsed() < self.fresh_for {
                return verdict;
            }
        }
        let verdict = check().await;
        *last = Some((Instant::now(), verdict));
        verdict
    }
}

/// How long a metadata request of [`topic_reachable`] and [`is_stranded`]
/// waits for an answer.
const METADATA_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a client may go without a message or an acknowledgement before
/// its owner checks that it is not stranded ([`is_stranded`]), and the pause
/// between checks.
pub const STRANDED_CHECK_AFTER: Duration = Duration::from_secs(3);

/// Consecutive checks that must find a client stranded before it is
/// replaced: one could catch it between a Kafka restart and its
/// reconnection.
pub const STRANDED_VERDICTS: u32 = 2;

/// Whether `client` is stranded: it cannot get `topic`'s metadata, yet a new
/// client made from the same `config` can.
///
/// librdkafka (2.10 and later, this build's 2.12 included) drops every
/// broker a metadata answer does not list, its bootstrap servers included,
/// and a broker in controlled shutdown or still starting answers with none
/// (confluentinc/librdkafka#5301, open). The client may then never connect
/// again, though Kafka is back: a CI run saw the projector wait 6 minutes
/// for an assignment after a Kafka restart, and a wedged relay producer
/// would hold events in the outbox for good. A new client starts from the
/// bootstrap servers, so the comparison tells that state from Kafka being
/// down. Blocks for up to two seconds: call it from a blocking thread.
pub fn is_stranded<C: ClientContext>(client: &Client<C>, config: &ClientConfig, topic: &str) -> bool {
    !answers(client, topic) && fresh_client_answers(config, topic)
}

/// Whether a new client made from `config` gets `topic`'s metadata. The
/// same kind of client as the one it stands in for, so its settings apply
/// without warnings; it sends nothing, and the consumer, without a group,
/// has none to leave when dropped.
fn fresh_client_answers(config: &ClientConfig, topic: &str) -> bool {
    if config.get("group.id").is_some() {
        config
            .clone()
            .remove("group.id")
            .create::<BaseConsumer>()
            .is_ok_and(|probe| answers(probe.client(), topic))
    } else {
        config
            .create::<BaseProducer>()
            .is_ok_and(|probe| answers(probe.client(), topic))
    }
}

/// Whether `client` gets metadata listing a broker: a broker shutting down
/// answers, with none, and a client asking it then is no better off.
fn answers<C: ClientContext>(client: &Client<C>, topic: &str) -> bool {
    client
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .is_ok_and(|metadata| !metadata.brokers().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts its runs; each takes a moment, so concurrent askers overlap it.
    async fn counted(runs: &AtomicUsize, verdict: bool) -> bool {
        runs.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
        verdict
    }

    #[tokio::test]
    async fn concurrent_askers_share_one_check_while_its_verdict_is_fresh() {
        let memo = Memo::new(Duration::from_secs(60));
        let runs = AtomicUsize::new(0);
        let answers = futures::future::join_all((0..10).map(|_| memo.get(|| counted(&runs, false)))).await;
        assert_eq!(answers, [false; 10]);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_stale_verdict_is_checked_again() {
        let memo = Memo::new(Duration::ZERO);
        let runs = AtomicUsize::new(0);
        assert!(!memo.get(|| counted(&runs, false)).await);
        assert!(
            memo.get(|| counted(&runs, true)).await,
            "the new verdict, not the old one"
        );
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn envelope_round_trips() {
        let envelope = EventEnvelope {
            event_id: uuid::Uuid::new_v4(),
            event_type: "WarriorDeleted".into(),
            aggregate_id: uuid::Uuid::new_v4(),
            version: 3,
            schema_version: 1,
            occurred_at: chrono::Utc::now(),
            data: serde_json::json!({}),
        };
        assert_eq!(decode(Some(&encode(&envelope))).expect("decodes"), envelope);
    }

    #[test]
    fn options_are_key_value_pairs_applied_over_the_defaults() {
        let options: ClientOptions = "linger.ms=5, fetch.min.bytes = 1024 ,debug=cgrp,fetch"
            .parse()
            .expect("valid");
        let config = with_options(producer_config("b:9092"), &options);
        assert_eq!(config.get("linger.ms"), Some("5"));
        assert_eq!(config.get("fetch.min.bytes"), Some("1024"));
        assert_eq!(config.get("debug"), Some("cgrp,fetch"));
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!("".parse::<ClientOptions>(), Ok(ClientOptions::default()));
        assert!("linger.ms".parse::<ClientOptions>().is_err());
        assert!("=5".parse::<ClientOptions>().is_err());
    }

    #[test]
    fn the_relay_fails_rather_than_leave_a_gap_and_its_ordering_cannot_be_overridden() {
        let config = relay_producer_config("b:9092");
        assert_eq!(config.get("enable.gapless.guarantee"), Some("true"));
        assert_eq!(config.get("message.timeout.ms"), Some("0"));
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        let reordering: ClientOptions = "linger.ms=5,delivery.timeout.ms=30000".parse().expect("valid");
        assert_eq!(
            reordering.refuse(&RELAY_ORDERING_PROPERTIES),
            Err(ClientOptionsError::Reserved("delivery.timeout.ms".to_owned()))
        );
        let tuning: ClientOptions = "linger.ms=5,debug=msg".parse().expect("valid");
        assert_eq!(tuning.refuse(&RELAY_ORDERING_PROPERTIES), Ok(()));
    }

    #[test]
    fn garbage_is_a_decode_error() {
        assert!(matches!(decode(None), Err(DecodeError::Empty)));
        assert!(matches!(decode(Some(b"{")), Err(DecodeError::Json(_))));
    }
}
