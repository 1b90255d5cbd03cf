//! Event-store behaviour against a real PostgreSQL: each test gets a fresh,
//! migrated database from `#[sqlx::test]` (DATABASE_URL names the server).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use event_store::{AppendOutcome, EventStore, GroupCommitConfig, GroupCommitter, NewEvent};
use futures::future::join_all;
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::Notify;
use uuid::Uuid;

fn event(aggregate_id: Uuid, version: i64) -> NewEvent {
    NewEvent {
        event_id: Uuid::new_v4(),
        aggregate_id,
        version,
        event_type: "WarriorUpdated".into(),
        schema_version: 1,
        data: json!({"n": version}),
        metadata: json!({}),
    }
}

fn committed(outcome: &AppendOutcome) -> bool {
    matches!(outcome, AppendOutcome::Committed { .. })
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_conflict_fails_only_its_own_event(pool: PgPool) {
    let store = EventStore::new(pool);
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let outcomes = store
        .append_batch(&[event(a, 1), event(b, 1), event(a, 1)])
        .await
        .expect("append");
    assert!(committed(&outcomes[0]));
    assert!(committed(&outcomes[1]));
    assert_eq!(outcomes[2], AppendOutcome::Conflict);
    let versions: Vec<i64> = store
        .read_stream(a)
        .await
        .expect("read")
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, [1]);
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn of_fifty_concurrent_appends_at_one_version_exactly_one_commits(pool: PgPool) {
    let store = EventStore::new(pool);
    let id = Uuid::new_v4();
    store.append_batch(&[event(id, 1)]).await.expect("seed");
    let (writer, _task) = GroupCommitter::spawn(
        store.clone(),
        GroupCommitConfig::default(),
        Arc::new(Notify::new()),
        |_, _| {},
    );
    let outcomes = join_all((0..50).map(|_| writer.append(event(id, 2)))).await;
    let wins = outcomes
        .iter()
        .filter(|o| committed(o.as_ref().expect("no error")))
        .count();
    assert_eq!(wins, 1);
    assert_eq!(store.newest_events(&[id]).await.expect("head")[&id].version, 2);
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn concurrent_appends_are_grouped_into_batches(pool: PgPool) {
    let store = EventStore::new(pool);
    let largest = Arc::new(AtomicUsize::new(0));
    let seen = largest.clone();
    let (writer, _task) = GroupCommitter::spawn(
        store.clone(),
        GroupCommitConfig::default(),
        Arc::new(Notify::new()),
        move |n, _| {
            seen.fetch_max(n, Ordering::Relaxed);
        },
    );
    let outcomes = join_all((0..200).map(|_| writer.append(event(Uuid::new_v4(), 1)))).await;
    assert!(outcomes.iter().all(|o| committed(o.as_ref().expect("no error"))));
    assert!(
        largest.load(Ordering::Relaxed) > 1,
        "200 concurrent appends never shared a batch"
    );
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn with_batching_off_every_append_is_its_own_batch(pool: PgPool) {
    let store = EventStore::new(pool);
    let largest = Arc::new(AtomicUsize::new(0));
    let seen = largest.clone();
    let config = GroupCommitConfig {
        max_batch: 1,
        ..GroupCommitConfig::default()
    };
    let (writer, _task) = GroupCommitter::spawn(store, config, Arc::new(Notify::new()), move |n, _| {
        seen.fetch_max(n, Ordering::Relaxed);
    });
    join_all((0..50).map(|_| writer.append(event(Uuid::new_v4(), 1)))).await;
    assert_eq!(largest.load(Ordering::Relaxed), 1);
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn only_one_relay_holds_the_outbox_lease(pool: PgPool) {
    let store = EventStore::new(pool);
    let first = store.try_lease_outbox().await.expect("db").expect("free lease");
    assert!(store.try_lease_outbox().await.expect("db").is_none());
    first.release().await;
    let taken_over = store.try_lease_outbox().await.expect("db");
    assert!(
        taken_over.is_some(),
        "lease must be free once its holder's session ends"
    );
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn outbox_yields_each_stream_in_version_order_and_forgets_acknowledged(pool: PgPool) {
    let store = EventStore::new(pool);
    let id = Uuid::new_v4();
    for version in 1..=3 {
        store.append_batch(&[event(id, version)]).await.expect("append");
    }
    let mut lease = store.try_lease_outbox().await.expect("db").expect("lease");
    let batch = lease.next_batch(10).await.expect("outbox");
    assert_eq!(batch.iter().map(|e| e.version).collect::<Vec<_>>(), [1, 2, 3]);
    lease.acknowledge(&[batch[0].position]).await.expect("ack");
    let rest = lease.next_batch(10).await.expect("outbox");
    assert_eq!(rest.iter().map(|e| e.version).collect::<Vec<_>>(), [2, 3]);
}

/// The trap of reading a log by position: a transaction that took a lower
/// position but commits later must still be published, not skipped.
#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_late_commit_with_a_lower_position_is_still_relayed(pool: PgPool) {
    let store = EventStore::new(pool.clone());
    let slow_id = Uuid::new_v4();
    let mut slow = pool.begin().await.expect("tx");
    sqlx::query(
        "WITH e AS (INSERT INTO events (event_id, aggregate_id, version, event_type, schema_version, data)
                    VALUES ($1, $2, 1, 'WarriorCreated', 1, '{}') RETURNING position)
         INSERT INTO outbox (position) SELECT position FROM e",
    )
    .bind(Uuid::new_v4())
    .bind(slow_id)
    .execute(&mut *slow)
    .await
    .expect("insert in open transaction");

    let fast_id = Uuid::new_v4();
    store.append_batch(&[event(fast_id, 1)]).await.expect("append");
    let mut lease = store.try_lease_outbox().await.expect("db").expect("lease");
    let first = lease.next_batch(10).await.expect("outbox");
    assert_eq!(first.iter().map(|e| e.aggregate_id).collect::<Vec<_>>(), [fast_id]);
    lease.acknowledge(&[first[0].position]).await.expect("ack");

    slow.commit().await.expect("late commit");
    let second = lease.next_batch(10).await.expect("outbox");
    assert_eq!(second.iter().map(|e| e.aggregate_id).collect::<Vec<_>>(), [slow_id]);
    assert!(
        second[0].position < first[0].position,
        "the late event has the lower position"
    );
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn outbox_lag_spans_the_waiting_events_and_is_zero_once_all_are_acknowledged(pool: PgPool) {
    let store = EventStore::new(pool);
    assert_eq!(store.outbox_lag().await.expect("lag"), (0, 0.0));
    let id = Uuid::new_v4();
    for version in 1..=3 {
        store.append_batch(&[event(id, version)]).await.expect("append");
    }
    let (waiting, age) = store.outbox_lag().await.expect("lag");
    assert_eq!(waiting, 3);
    assert!(age >= 0.0, "age of the first in line: {age}");

    let mut lease = store.try_lease_outbox().await.expect("db").expect("lease");
    let batch = lease.next_batch(10).await.expect("outbox");
    lease.acknowledge(&[batch[0].position]).await.expect("ack");
    assert_eq!(store.outbox_lag().await.expect("lag").0, 2);
    let rest: Vec<i64> = batch[1..].iter().map(|e| e.position).collect();
    lease.acknowledge(&rest).await.expect("ack");
    assert_eq!(store.outbox_lag().await.expect("lag"), (0, 0.0));
}

/// Only the stream version is an arbiter of the append: a reused event id
/// (no command produces one) fails the whole batch and commits nothing.
#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_reused_event_id_fails_the_whole_batch(pool: PgPool) {
    let store = EventStore::new(pool);
    let first = event(Uuid::new_v4(), 1);
    store.append_batch(std::slice::from_ref(&first)).await.expect("append");
    let reused = NewEvent {
        aggregate_id: Uuid::new_v4(),
        ..first.clone()
    };
    let bystander = event(Uuid::new_v4(), 1);
    assert!(store.append_batch(&[reused, bystander.clone()]).await.is_err());
    assert!(store
        .read_stream(bystander.aggregate_id)
        .await
        .expect("read")
        .is_empty());
}
