//! The projector: consumes `warrior-events` and applies them to the read model
//! in batches, one transaction per batch.
//!
//! Exactly-once *effect*: each row remembers the newest version applied and
//! ignores anything not newer, and the consumed offsets are written in the
//! same transaction; assigned partitions start from those offsets. Kafka
//! offsets are stored (and committed in the background) only after that
//! transaction too, for monitoring. A crash at any point replays events that
//! change nothing, and never skips one. Undecodable events, and
//! events the read model refuses (tried one at a time, [`POISON_ATTEMPTS`]
//! times), go to the dead-letter topic with the reason.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext};
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use tokio::runtime::RuntimeFlavor;

use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use crate::read_model::{Applicable, PartitionOffset, ReadModel};

/// Pause before retrying a batch the read model could not take.
const BACKOFF: Duration = Duration::from_millis(500);

/// How many times the read model may refuse one event before it goes to the
/// dead-letter topic.
const POISON_ATTEMPTS: u32 = 3;

/// Consumer callbacks: starts assigned partitions where the read model's
/// rows reach, and turns librdkafka's periodic statistics into the
/// `projector_lag_events{partition}` gauge (high watermark − stored offset).
pub struct ProjectorContext {
    /// Where `projection_offsets` is read on assignment.
    pub read_model: ReadModel,
    pub topic: String,
}

impl ClientContext for ProjectorContext {
    fn stats(&self, statistics: Statistics) {
        for topic in statistics.topics.values() {
            for (partition, stats) in &topic.partitions {
                // Against the *stored* offset (set after each batch), not the
                // committed one, which trails by the auto-commit interval.
                if *partition >= 0 && stats.consumer_lag_stored >= 0 {
                    metrics::gauge!("projector_lag_events", "partition" => partition.to_string())
                        .set(stats.consumer_lag_stored as f64);
                }
            }
        }
    }
}

impl ConsumerContext for ProjectorContext {
    /// Assigned partitions start at the offsets stored with the rows (in the
    /// same transaction), not at Kafka's committed ones: those agree, or
    /// Kafka's trail by up to a second of auto-commit, except when the read
    /// model went back in time (restored from a backup, recreated empty),
    /// where resuming from Kafka skipped every event since. A partition the
    /// read model has no offset for starts at the beginning. If the read
    /// model cannot be asked, Kafka's committed offsets are used (the
    /// version check makes replays harmless either way).
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, partitions: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let outcome = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.start_where_the_rows_reach(partitions);
                if cooperative {
                    consumer.incremental_assign(partitions)
                } else {
                    consumer.assign(partitions)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS if cooperative => {
                consumer.incremental_unassign(partitions)
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => consumer.unassign(),
            other => {
                tracing::error!(error = %RDKafkaErrorCode::from(other), "Kafka rebalance failed");
                consumer.unassign()
            }
        };
        if let Err(error) = outcome {
            tracing::error!(%error, "cannot apply the Kafka rebalance");
        }
    }
}

impl ProjectorContext {
    /// Sets each assigned partition's start to the read model's stored
    /// offset. librdkafka calls this from the consumer's poll, inside the
    /// projector's task: the query blocks that worker thread briefly, once
    /// per rebalance.
    fn start_where_the_rows_reach(&self, partitions: &mut TopicPartitionList) {
        let stored = match tokio::runtime::Handle::try_current() {
            Ok(runtime) if runtime.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| runtime.block_on(self.read_model.stored_offsets(&self.topic)))
            }
            _ => {
                tracing::warn!("no multi-threaded runtime to read the stored offsets; Kafka's committed ones apply");
                return;
            }
        };
        let stored = match stored {
            Ok(stored) => stored,
            Err(error) => {
                tracing::warn!(%error, "cannot read the stored offsets; Kafka's committed ones apply");
                return;
            }
        };
        let assigned: Vec<i32> = partitions
            .elements_for_topic(&self.topic)
            .iter()
            .map(|element| element.partition())
            .collect();
        for partition in assigned {
            let start = stored
                .get(&partition)
                .map_or(Offset::Beginning, |next| Offset::Offset(*next));
            if let Err(error) = partitions.set_partition_offset(&self.topic, partition, start) {
                tracing::warn!(%error, partition, "cannot set the partition's start");
            }
        }
        tracing::info!(?stored, "assigned partitions start where the read model's rows reach");
    }
}

/// The (warrior id, version) pairs of one committed batch.
pub type AppliedBatch = Arc<Vec<(Uuid, i64)>>;

/// Makes the projector's consumer from its settings: at start, and again
/// whenever the one in use is found stranded.
pub fn new_consumer(
    config: &ClientConfig,
    read_model: &ReadModel,
    topic: &str,
) -> KafkaResult<StreamConsumer<ProjectorContext>> {
    config.create_with_context(ProjectorContext {
        read_model: read_model.clone(),
        topic: topic.to_owned(),
    })
}

pub struct Projector {
    /// Shared with the blocking thread that checks it is not stranded.
    pub consumer: Arc<StreamConsumer<ProjectorContext>>,
    /// How `consumer` was made ([`new_consumer`]): to make another.
    pub consumer_config: ClientConfig,
    pub dlq_producer: FutureProducer,
    /// How `dlq_producer` was made: to stand in for it if it is stranded.
    pub dlq_config: ClientConfig,
    pub read_model: ReadModel,
    pub topic: String,
    pub max_batch: usize,
    /// Shortest time from one batch's start to the next one's.
    pub min_batch_interval: Duration,
    /// Announces the (warrior, version) pairs of every committed batch, so
    /// read-your-writes waiters re-read only when their warrior was applied.
    pub applied: broadcast::Sender<AppliedBatch>,
}

/// One consumed message, decoded or not.
struct Received {
    partition: i32,
    offset: i64,
    decoded: Result<Applicable, String>,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
}

impl Received {
    fn from_message(message: &BorrowedMessage<'_>) -> Self {
        let decoded = messaging::decode(message.payload())
            .map_err(|e| e.to_string())
            .and_then(|envelope| {
                let event = envelope.event().map_err(|e| e.to_string())?;
                Ok(Applicable {
                    aggregate_id: envelope.aggregate_id,
                    version: envelope.version,
                    occurred_at: envelope.occurred_at,
                    event,
                })
            });
        Self {
            partition: message.partition(),
            offset: message.offset(),
            decoded,
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
        }
    }
}

impl Projector {
    /// Consumes until `shutdown` turns true. Batches form by themselves:
    /// the first message is applied at once, and whatever arrives while a
    /// batch is being applied makes the next batch (up to `max_batch`), the
    /// way group commit works, but batches start at most every
    /// `min_batch_interval`: each costs ~0.4 ms of CPU whatever its size,
    /// and without the floor a trickle of events made batches of 1.7 events.
    /// (A 1 ms gap timer used to end each batch: ~2.7 ms of the 7 ms between
    /// the relay's send and the row at 1,000 events/s.)
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        self.consumer.subscribe(&[&self.topic])?;
        let mut batch: Vec<Received> = Vec::new();
        let mut quiet_since = tokio::time::Instant::now();
        let mut stranded_verdicts = 0;
        while !*shutdown.borrow() {
            if batch.is_empty() {
                // No pause after a consumer error: librdkafka retries by
                // itself and queues each failed reconnect as an error event
                // ahead of the messages it fetches once Kafka is back. A
                // 500 ms pause per error drained that backlog at two a
                // second: after a 10 s Kafka outage the projection stood
                // still for 30-50 s (once over 2 min) with Kafka up.
                tokio::select! {
                    message = self.consumer.recv() => {
                        if message.is_ok() {
                            quiet_since = tokio::time::Instant::now();
                            stranded_verdicts = 0;
                        }
                        take(&mut batch, message);
                    }
                    () = tokio::time::sleep_until(quiet_since + messaging::STRANDED_CHECK_AFTER) => {
                        quiet_since = tokio::time::Instant::now();
                        stranded_verdicts = if self.consumer_stranded().await { stranded_verdicts + 1 } else { 0 };
                        if stranded_verdicts >= messaging::STRANDED_VERDICTS {
                            self.replace_consumer();
                            stranded_verdicts = 0;
                        }
                    }
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            let next_start = tokio::time::Instant::now() + self.min_batch_interval;
            let apply = self.process(std::mem::take(&mut batch), &mut shutdown);
            tokio::pin!(apply);
            let mut done = false;
            let mut gathering = true;
            let applied = loop {
                tokio::select! {
                    biased;
                    applied = &mut apply, if !done => {
                        if !applied || tokio::time::Instant::now() >= next_start {
                            break applied;
                        }
                        // A timer firing in the past still waits for the next tick.
                        done = true;
                    }
                    () = tokio::time::sleep_until(next_start), if done => break true,
                    // Cancel-safe: a message is taken off the queue only
                    // when this future completes.
                    message = self.consumer.recv(), if gathering && batch.len() < self.max_batch => {
                        gathering = take(&mut batch, message);
                    }
                }
            };
            if !applied {
                break;
            }
            quiet_since = tokio::time::Instant::now();
        }
        tracing::info!("projector stopped");
        Ok(())
    }

    /// Whether the consumer is stranded ([`messaging::is_stranded`]).
    async fn consumer_stranded(&self) -> bool {
        let consumer = Arc::clone(&self.consumer);
        let (config, topic) = (self.consumer_config.clone(), self.topic.clone());
        tokio::task::spawn_blocking(move || messaging::is_stranded(consumer.client(), &config, &topic))
            .await
            .unwrap_or(false)
    }

    /// A new dead-letter producer if `producer` is stranded
    /// ([`messaging::is_stranded`]).
    async fn dlq_stand_in(&self, producer: &FutureProducer) -> Option<FutureProducer> {
        let (checked, config, topic) = (
            producer.clone(),
            self.dlq_config.clone(),
            messaging::dlq_topic(&self.topic),
        );
        let stranded =
            tokio::task::spawn_blocking(move || messaging::is_stranded(checked.client(), &config, &topic)).await;
        if !stranded.unwrap_or(false) {
            return None;
        }
        metrics::counter!("kafka_clients_replaced_total", "client" => "dead_letter").increment(1);
        tracing::warn!("the dead-letter producer reached no broker while a new client did (librdkafka#5301)");
        self.dlq_config.create().ok()
    }

    /// Swaps a stranded consumer for a new one, which joins the group and
    /// starts its partitions where the read model's rows reach, like any
    /// newly assigned consumer. Nothing is lost: the stranded one had no
    /// batch in hand. If no consumer can be made, the stranded one stays
    /// and the next checks try again.
    fn replace_consumer(&mut self) {
        let fresh = match new_consumer(&self.consumer_config, &self.read_model, &self.topic) {
            Ok(fresh) => fresh,
            Err(error) => {
                tracing::error!(%error, "cannot make a Kafka consumer to replace the stranded one");
                return;
            }
        };
        if let Err(error) = fresh.subscribe(&[&self.topic]) {
            tracing::error!(%error, "the replacement Kafka consumer cannot subscribe");
            return;
        }
        let stranded = std::mem::replace(&mut self.consumer, Arc::new(fresh));
        // Dropping a consumer closes it, which waits to leave its group:
        // forever, for one that reaches no broker. A thread of its own, not
        // tokio's blocking pool, which the runtime waits for at exit.
        let (hand_over, handed) = std::sync::mpsc::channel();
        let closing = std::thread::Builder::new()
            .name("stranded-consumer-close".into())
            .spawn(move || drop(handed.recv()));
        match closing {
            Ok(_) => drop(hand_over.send(stranded)),
            Err(error) => {
                tracing::warn!(%error, "no thread to close the stranded consumer on; it stays open");
                std::mem::forget(stranded);
            }
        }
        metrics::counter!("kafka_clients_replaced_total", "client" => "projector").increment(1);
        tracing::warn!("the Kafka consumer reached no broker while a new client did (librdkafka#5301): replaced it");
    }

    /// Applies one batch; returns false if shutdown interrupted it (nothing
    /// of it is then committed, so it will be consumed again).
    async fn process(&self, batch: Vec<Received>, shutdown: &mut watch::Receiver<bool>) -> bool {
        let offsets = next_offsets(&batch);
        let mut events = Vec::with_capacity(batch.len());
        let mut origins = Vec::with_capacity(batch.len());
        for received in batch {
            let origin = Origin {
                partition: received.partition,
                offset: received.offset,
                key: received.key,
                payload: received.payload,
            };
            match received.decoded {
                Ok(event) => {
                    events.push(event);
                    origins.push(origin);
                }
                Err(reason) => {
                    if !self.dead_letter(&origin, &reason, shutdown).await {
                        return false;
                    }
                }
            }
        }
        loop {
            match self.read_model.apply(&self.topic, &events, &offsets).await {
                Ok(()) => break,
                Err(error) if refuses_data(&error) => {
                    tracing::warn!(%error, "the read model refuses an event of this batch; applying one by one");
                    match self
                        .apply_one_by_one(std::mem::take(&mut events), std::mem::take(&mut origins), shutdown)
                        .await
                    {
                        Some(applied) => events = applied,
                        None => return false,
                    }
                    // The good events are in; what is left is storing the offsets.
                    match self.read_model.apply(&self.topic, &[], &offsets).await {
                        Ok(()) => break,
                        Err(error) => {
                            tracing::warn!(%error, "cannot store the batch's offsets; retrying");
                            if !pause(BACKOFF, shutdown).await {
                                return false;
                            }
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot apply batch to the read model; retrying");
                    if !pause(BACKOFF, shutdown).await {
                        return false;
                    }
                }
            }
        }
        metrics::histogram!("projector_batch_size").record(events.len() as f64);
        metrics::counter!("projector_events_applied_total").increment(events.len() as u64);
        // No receiver (nobody waiting) is fine.
        let _ = self
            .applied
            .send(Arc::new(events.iter().map(|e| (e.aggregate_id, e.version)).collect()));
        self.store_offsets(&offsets);
        true
    }

    /// Applies the events of a batch the read model refused one at a time
    /// (offsets aside), in order, so one poison event cannot hold the others
    /// back. An event refused [`POISON_ATTEMPTS`] times goes to the
    /// dead-letter topic with the database's error; an outage (anything but
    /// a refusal of the data) is waited out, never dead-lettered. Returns the
    /// events applied, or `None` if shutdown interrupted.
    async fn apply_one_by_one(
        &self,
        events: Vec<Applicable>,
        origins: Vec<Origin>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<Vec<Applicable>> {
        let mut applied = Vec::with_capacity(events.len());
        for (event, origin) in events.into_iter().zip(origins) {
            let mut refusals = 0;
            loop {
                match self
                    .read_model
                    .apply(&self.topic, std::slice::from_ref(&event), &[])
                    .await
                {
                    Ok(()) => {
                        applied.push(event);
                        break;
                    }
                    Err(error) if refuses_data(&error) => {
                        refusals += 1;
                        if refusals >= POISON_ATTEMPTS {
                            let reason = format!("the read model refused it {refusals} times: {error}");
                            if !self.dead_letter(&origin, &reason, shutdown).await {
                                return None;
                            }
                            break;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot apply an event to the read model; retrying");
                        if !pause(BACKOFF, shutdown).await {
                            return None;
                        }
                    }
                }
            }
        }
        Some(applied)
    }

    /// Records progress in Kafka too, for monitoring and as the restart
    /// point: stored here, committed by the client in the background.
    fn store_offsets(&self, offsets: &[PartitionOffset]) {
        let mut list = TopicPartitionList::new();
        for o in offsets {
            if let Err(error) = list.add_partition_offset(&self.topic, o.partition, Offset::Offset(o.next_offset)) {
                tracing::warn!(%error, "bad offset");
            }
        }
        // Fails for partitions revoked meanwhile; their new owner resumes
        // from the last committed offset and replays harmlessly.
        if let Err(error) = self.consumer.store_offsets(&list) {
            tracing::debug!(%error, "cannot store offsets; the database keeps the truth");
        }
    }

    /// Sends a poison message to the dead-letter topic, with the reason and
    /// its origin in headers, so the projector can move past it. Retries
    /// until Kafka takes it: the offset must not pass a message that is in
    /// neither the read model nor the dead-letter topic. False if shutdown
    /// came first (the message is then consumed again after the restart).
    async fn dead_letter(&self, message: &Origin, reason: &str, shutdown: &mut watch::Receiver<bool>) -> bool {
        let Origin { partition, offset, .. } = *message;
        tracing::error!(
            partition,
            offset,
            reason,
            "poison message sent to the dead-letter topic"
        );
        let source = format!("{}/{partition}/{offset}", self.topic);
        let dlq = messaging::dlq_topic(&self.topic);
        let mut producer = self.dlq_producer.clone();
        loop {
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: messaging::HEADER_DLQ_ERROR,
                    value: Some(reason),
                })
                .insert(Header {
                    key: messaging::HEADER_DLQ_SOURCE,
                    value: Some(source.as_str()),
                });
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&dlq).headers(headers);
            if let Some(key) = message.key.as_deref() {
                record = record.key(key);
            }
            if let Some(payload) = message.payload.as_deref() {
                record = record.payload(payload);
            }
            match producer.send(record, Duration::from_secs(10)).await {
                Ok(_) => {
                    metrics::counter!("dlq_messages_total").increment(1);
                    return true;
                }
                Err((error, _)) => {
                    metrics::counter!("dlq_write_failures_total").increment(1);
                    tracing::error!(%error, source, "could not write to the dead-letter topic; retrying");
                    if !pause(BACKOFF, shutdown).await {
                        return false;
                    }
                    // Rare enough that this one poison message's retries may
                    // use a producer of their own: the shared one also
                    // answers readiness, which asks a new client anyway.
                    if let Some(fresh) = self.dlq_stand_in(&producer).await {
                        producer = fresh;
                    }
                }
            }
        }
    }
}

/// Where a consumed message came from, and its bytes: what the dead-letter
/// topic gets if it turns out to be poison.
struct Origin {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
}

/// Whether the read model refused the data itself (PostgreSQL's classes 22,
/// data exception, e.g. a NUL in a name; 23, integrity; 54, program limit,
/// e.g. an index row too large): the same event fails the same way on every
/// try. Anything else (connections, timeouts, shutdowns, deadlocks) is an
/// outage to wait out, not a reason to drop an event.
fn refuses_data(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(error) => error
            .code()
            .is_some_and(|code| ["22", "23", "54"].iter().any(|class| code.starts_with(class))),
        _ => false,
    }
}

/// Sleeps `duration` unless shutdown comes first; false if it did.
async fn pause(duration: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(duration) => true,
        _ = shutdown.changed() => false,
    }
}

/// Adds a consumed message to `batch`; false (logged) for a consumer error.
fn take(batch: &mut Vec<Received>, message: KafkaResult<BorrowedMessage<'_>>) -> bool {
    match message {
        Ok(message) => {
            batch.push(Received::from_message(&message));
            true
        }
        Err(error) => {
            tracing::warn!(%error, "Kafka consumer error");
            false
        }
    }
}

/// Last offset + 1 per partition: the next offset to read.
fn next_offsets(batch: &[Received]) -> Vec<PartitionOffset> {
    let mut offsets: Vec<PartitionOffset> = Vec::new();
    for r in batch {
        match offsets.iter_mut().find(|o| o.partition == r.partition) {
            Some(o) => o.next_offset = o.next_offset.max(r.offset + 1),
            None => offsets.push(PartitionOffset {
                partition: r.partition,
                next_offset: r.offset + 1,
            }),
        }
    }
    offsets
}
