//! The outbox relay: publishes committed events to Kafka, at least once, in
//! per-warrior order, and forgets them only once Kafka acknowledged them.
//!
//! Only the holder of the outbox lease relays; other instances wait and take
//! over when the holder's database session ends. Kafka being down never
//! affects writes: events simply wait in the outbox.
//!
//! The producer never gives up on a message (`message.timeout.ms=0`, see
//! [`messaging::relay_producer_config`]): with a timeout, a message that
//! timed out during an outage was skipped while the next one of the same
//! partition went out, and its republication then landed after its
//! successor. A producer that hits a fatal error is replaced.

use std::sync::Arc;
use std::time::Duration;

use event_store::{EventStore, EventStoreError, OutboxLease, StoredEvent};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer, PurgeConfig};
use rdkafka::ClientConfig;
use shared_kernel::EventEnvelope;
use sqlx::postgres::PgListener;
use thiserror::Error;
use tokio::sync::{watch, Notify};

/// How long an idle relay sleeps when no wake-up arrives (a safety net only).
const IDLE_POLL: Duration = Duration::from_millis(500);
/// How often the relay lag gauges are refreshed.
const LAG_REPORT_INTERVAL: Duration = Duration::from_secs(2);
/// Pause after a failure before trying again.
const BACKOFF: Duration = Duration::from_millis(500);

/// Why a relay round stopped relaying.
#[derive(Debug, Error)]
enum RelayError {
    #[error(transparent)]
    Store(#[from] EventStoreError),
    /// The producer can send nothing more (e.g. an idempotence sequence
    /// broken by the broker); only a new producer can.
    #[error("Kafka producer failed fatally: {0}")]
    FatalProducer(String),
    /// The producer reaches no broker though a new client does.
    #[error("Kafka producer stranded")]
    StrandedProducer,
}

/// Why `publish` stopped before every event was acknowledged.
enum PublishFailure {
    Kafka(KafkaError),
    /// The producer is stranded: its events were purged, none can follow.
    Stranded,
}

/// What the relay needs; built once in `main`.
pub struct Relay {
    pub store: EventStore,
    pub producer: FutureProducer,
    /// How `producer` was made: to make another after a fatal error.
    pub producer_config: ClientConfig,
    pub topic: String,
    pub batch: i64,
    /// Shortest time from one round's start to the next one's.
    pub min_round_interval: Duration,
    /// Notified by this process's writer after each commit.
    pub committed: Arc<Notify>,
}

impl Relay {
    /// Runs until `shutdown` turns true, then flushes the producer.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let forwarder = tokio::spawn(forward_notifications(
            self.store.clone(),
            Arc::clone(&self.committed),
            shutdown.clone(),
        ));
        while !*shutdown.borrow() {
            match self.store.try_lease_outbox().await {
                Ok(Some(lease)) => {
                    tracing::info!("outbox lease acquired: this instance relays");
                    match self.relay(lease, &mut shutdown).await {
                        Ok(()) => {}
                        Err(RelayError::Store(error)) => {
                            tracing::warn!(%error, "relay lost its lease or its database; retrying");
                        }
                        Err(RelayError::FatalProducer(reason)) => {
                            tracing::error!(
                                reason,
                                "Kafka producer failed fatally; lease released, replacing the producer"
                            );
                            self.replace_producer();
                        }
                        Err(RelayError::StrandedProducer) => {
                            tracing::warn!(
                                "the Kafka producer reached no broker while a new client did \
                                 (librdkafka#5301); lease released, replacing the producer"
                            );
                            metrics::counter!("kafka_clients_replaced_total", "client" => "relay").increment(1);
                            self.replace_producer();
                        }
                    }
                }
                Ok(None) => tracing::debug!("another instance relays"),
                Err(error) => tracing::warn!(%error, "cannot reach the event store"),
            }
            tokio::select! {
                _ = shutdown.changed() => {}
                () = tokio::time::sleep(BACKOFF) => {}
            }
        }
        forwarder.abort();
        if let Err(error) = self.producer.flush(Duration::from_secs(5)) {
            tracing::warn!(%error, "producer flush on shutdown failed");
        }
    }

    /// A new producer from the same settings; the events the old one held
    /// are still in the outbox and go out again, in order, from the next
    /// lease.
    fn replace_producer(&mut self) {
        match self.producer_config.create() {
            Ok(producer) => self.producer = producer,
            Err(error) => tracing::error!(%error, "cannot create a new Kafka producer"),
        }
    }

    /// Publishes what the outbox holds, then sleeps until a commit wakes it.
    /// Wake-ups coalesce (one stored permit), so the commits that arrive
    /// while a batch is being published cost one more read of the outbox,
    /// not one each: under a stream of single-row commits the relay read an
    /// empty outbox twice per event.
    ///
    /// Rounds start at most every `min_round_interval`. A round costs the
    /// same few hundred µs of CPU whether it carries one event or ten (an
    /// outbox read and delete, a Kafka produce request, the fetch it
    /// answers, a projector batch). At ~870 creates/s through the gateway
    /// an 8 ms floor cut the machine's CPU per create, end to end, by
    /// 10–25%, for +4 ms of median projection lag (docs/BENCHMARKS.md has
    /// Gatling runs with and without it). The first event after a quiet
    /// spell goes at once.
    async fn relay(&self, mut lease: OutboxLease, shutdown: &mut watch::Receiver<bool>) -> Result<(), RelayError> {
        let mut next_start = tokio::time::Instant::now();
        while !*shutdown.borrow() {
            // Only a floor still ahead is waited for: a timer already due
            // would still wait for the timer's next tick (up to 1 ms).
            if next_start > tokio::time::Instant::now() {
                tokio::select! {
                    () = tokio::time::sleep_until(next_start) => {}
                    _ = shutdown.changed() => continue,
                }
            }
            next_start = tokio::time::Instant::now() + self.min_round_interval;
            let batch = lease.next_batch(self.batch).await?;
            if !batch.is_empty() {
                let (delivered, failure) = self.publish(&batch, shutdown).await;
                metrics::counter!("relay_published_total").increment(delivered.len() as u64);
                if !delivered.is_empty() {
                    lease.acknowledge(&delivered).await?;
                }
                if let Some(failure) = failure {
                    let error = match failure {
                        PublishFailure::Stranded => {
                            lease.release().await;
                            return Err(RelayError::StrandedProducer);
                        }
                        PublishFailure::Kafka(error) => error,
                    };
                    if let Some((_, reason)) = self.producer.client().fatal_error() {
                        lease.release().await;
                        return Err(RelayError::FatalProducer(reason));
                    }
                    if *shutdown.borrow() {
                        break;
                    }
                    tracing::warn!(%error, pending = batch.len() - delivered.len(), "publishing to Kafka failed; will retry");
                    tokio::time::sleep(BACKOFF).await;
                    continue;
                }
            }
            if (batch.len() as i64) < self.batch {
                tokio::select! {
                    () = self.committed.notified() => {}
                    () = tokio::time::sleep(IDLE_POLL) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
        lease.release().await;
        Ok(())
    }

    /// Sends a batch; returns the positions Kafka acknowledged and the first error.
    /// Messages are enqueued strictly in batch order, which the idempotent
    /// producer preserves per partition. Waits for Kafka as long as it takes
    /// (messages never time out), unless shutdown comes first (what was
    /// acknowledged by then is returned, the rest stays in the outbox) or
    /// the producer turns out stranded: then it is purged, so none of its
    /// events can reach Kafka after their republished successors.
    async fn publish(
        &self,
        batch: &[StoredEvent],
        shutdown: &mut watch::Receiver<bool>,
    ) -> (Vec<i64>, Option<PublishFailure>) {
        let mut in_flight: Vec<(i64, DeliveryFuture)> = Vec::with_capacity(batch.len());
        let mut failure = None;
        for event in batch {
            let key = event.aggregate_id.to_string();
            let payload = messaging::encode(&envelope(event));
            let mut headers = OwnedHeaders::new().insert(Header {
                key: messaging::HEADER_EVENT_TYPE,
                value: Some(event.event_type.as_str()),
            });
            if let Some(request_id) = event.metadata.get("request_id").and_then(|v| v.as_str()) {
                headers = headers.insert(Header {
                    key: messaging::HEADER_REQUEST_ID,
                    value: Some(request_id),
                });
            }
            let record = FutureRecord::to(&self.topic)
                .key(&key)
                .payload(&payload)
                .headers(headers);
            match self.producer.send_result(record) {
                Ok(delivery) => in_flight.push((event.position, delivery)),
                Err((error, _)) => {
                    // Stop enqueueing: later events of the same warrior must not overtake this one.
                    failure = Some(PublishFailure::Kafka(error));
                    break;
                }
            }
        }
        let mut delivered = Vec::with_capacity(in_flight.len());
        let mut stranded_verdicts = 0;
        for (position, mut delivery) in in_flight {
            let outcome = loop {
                let waited = tokio::select! {
                    outcome = &mut delivery => Some(outcome),
                    _ = shutdown.wait_for(|stop| *stop) => break None,
                    () = tokio::time::sleep(messaging::STRANDED_CHECK_AFTER) => None,
                };
                if let Some(outcome) = waited {
                    break Some(outcome);
                }
                stranded_verdicts = if self.producer_stranded().await {
                    stranded_verdicts + 1
                } else {
                    0
                };
                if stranded_verdicts >= messaging::STRANDED_VERDICTS {
                    self.producer.purge(PurgeConfig::default().queue().inflight());
                    return (delivered, Some(PublishFailure::Stranded));
                }
            };
            match outcome {
                Some(Ok(Ok(_))) => {
                    delivered.push(position);
                    stranded_verdicts = 0;
                }
                Some(Ok(Err((error, _)))) => {
                    failure.get_or_insert(PublishFailure::Kafka(error));
                }
                Some(Err(_)) => {
                    failure.get_or_insert(PublishFailure::Kafka(KafkaError::Canceled));
                }
                None => {
                    failure.get_or_insert(PublishFailure::Kafka(KafkaError::Canceled));
                    break;
                }
            }
        }
        (delivered, failure)
    }

    /// Whether the producer is stranded ([`messaging::is_stranded`]).
    async fn producer_stranded(&self) -> bool {
        let (producer, config, topic) = (self.producer.clone(), self.producer_config.clone(), self.topic.clone());
        tokio::task::spawn_blocking(move || messaging::is_stranded(producer.client(), &config, &topic))
            .await
            .unwrap_or(false)
    }
}

/// Keeps `relay_lag_events` (committed, not yet on Kafka) and
/// `relay_lag_seconds` (age of the oldest of them) current, whichever
/// instance relays.
pub async fn report_lag(store: EventStore, mut shutdown: watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        match store.outbox_lag().await {
            Ok((events, seconds)) => {
                metrics::gauge!("relay_lag_events").set(events as f64);
                metrics::gauge!("relay_lag_seconds").set(seconds);
            }
            Err(error) => tracing::debug!(%error, "cannot read the outbox lag"),
        }
        tokio::select! {
            () = tokio::time::sleep(LAG_REPORT_INTERVAL) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Turns the event store's `outbox` notifications (commits of any instance)
/// into wake-ups of the relay. Notifications missed while the listening
/// connection is down are covered by the relay's idle poll.
async fn forward_notifications(store: EventStore, wake: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    let mut listener = loop {
        match listen(&store).await {
            Ok(listener) => break listener,
            Err(error) => tracing::warn!(%error, "cannot LISTEN for commits; relying on the idle poll meanwhile"),
        }
        tokio::select! {
            () = tokio::time::sleep(BACKOFF) => {}
            _ = shutdown.changed() => return,
        }
    };
    loop {
        tokio::select! {
            received = listener.recv() => match received {
                Ok(_) => wake.notify_one(),
                Err(error) => {
                    // PgListener reconnects on the next call; avoid spinning meanwhile.
                    tracing::debug!(%error, "LISTEN connection lost");
                    tokio::time::sleep(BACKOFF).await;
                    wake.notify_one();
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}

async fn listen(store: &EventStore) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(store.pool()).await?;
    listener.listen("outbox").await?;
    Ok(listener)
}

/// The wire form of a stored event.
pub fn envelope(event: &StoredEvent) -> EventEnvelope {
    EventEnvelope {
        event_id: event.event_id,
        event_type: event.event_type.clone(),
        aggregate_id: event.aggregate_id,
        version: event.version,
        schema_version: event.schema_version,
        occurred_at: event.occurred_at,
        data: event.data.clone(),
    }
}
