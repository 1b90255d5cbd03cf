//! Event-store behaviour against a real PostgreSQL: each test gets a fresh,
//! migrated database from `#[sqlx::test]` (DATABASE_URL names the server).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::DateTime;
use event_store::{AppendOutcome, CatchUp, EventStore, GroupCommitConfig, GroupCommitter, NewEvent};
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

/// A group-commit writer with the default settings.
fn writer(store: &EventStore) -> (GroupCommitter, tokio::task::JoinHandle<()>) {
    GroupCommitter::spawn(
        store.clone(),
        GroupCommitConfig::default(),
        Arc::new(Notify::new()),
        |_, _| {},
    )
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
    let (writer, _task) = writer(&store);
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
    let store = EventStore::new(pool.clone());
    assert_eq!(store.outbox_lag().await.expect("lag"), (0, 0.0));
    let id = Uuid::new_v4();
    for version in 1..=3 {
        store.append_batch(&[event(id, version)]).await.expect("append");
    }
    // Events 1 and 2 as if committed 10 and 5 minutes ago: the age is the
    // oldest waiting event's, whichever that is.
    sqlx::query(
        "UPDATE events SET occurred_at = now() - interval '5 minutes' * (3 - version)
         WHERE aggregate_id = $1 AND version < 3",
    )
    .bind(id)
    .execute(&pool)
    .await
    .expect("backdate");
    let (waiting, age) = store.outbox_lag().await.expect("lag");
    assert_eq!(waiting, 3);
    assert!((600.0..660.0).contains(&age), "age of the first in line: {age}");

    let mut lease = store.try_lease_outbox().await.expect("db").expect("lease");
    let batch = lease.next_batch(10).await.expect("outbox");
    lease.acknowledge(&[batch[0].position]).await.expect("ack");
    let (waiting, age) = store.outbox_lag().await.expect("lag");
    assert_eq!(waiting, 2);
    assert!((300.0..360.0).contains(&age), "age of the next in line: {age}");
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

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn an_append_given_up_before_the_writer_took_it_is_never_written(pool: PgPool) {
    let store = EventStore::new(pool.clone());
    let (writer, _task) = writer(&store);
    let short = std::time::Duration::from_millis(200);
    // Stall the writer: its first batch blocks on a lock of the events table.
    let mut blocker = pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .expect("lock");
    let (taken, queued) = (Uuid::new_v4(), Uuid::new_v4());
    let in_batch = tokio::spawn({
        let writer = writer.clone();
        async move { writer.append_within(event(taken, 1), short).await }
    });
    sessions_wait_for(&pool, None, 1).await;
    // Queued behind that batch, it times out before the writer takes it.
    let timed_out = writer.append_within(event(queued, 1), short).await;
    assert!(
        matches!(timed_out, Err(event_store::EventStoreError::TimedOut(_))),
        "got {timed_out:?}"
    );
    // So does a caller that goes away (its future dropped) while queued.
    let dropped = Uuid::new_v4();
    assert!(
        tokio::time::timeout(short, writer.append(event(dropped, 1)))
            .await
            .is_err(),
        "the writer is still stalled"
    );
    blocker.commit().await.expect("unlock");

    // The append taken into the stalled batch outlived its deadline: it waits
    // for the batch, which commits.
    let outcome = in_batch.await.expect("task").expect("no error");
    assert!(committed(&outcome), "got {outcome:?}");
    // Once the writer has moved on past the abandoned ones...
    let after = writer.append(event(Uuid::new_v4(), 1)).await.expect("no error");
    assert!(committed(&after));
    // ...neither of them is in the store.
    for id in [queued, dropped] {
        assert!(
            store.read_stream(id).await.expect("read").is_empty(),
            "{id} was written"
        );
    }
    assert_eq!(store.read_stream(taken).await.expect("read").len(), 1);
}

/// Starts a transaction holding an uncommitted first event of each of
/// `ids`: appends of those keys wait for it. Returns it with its id.
async fn hold_keys(pool: &PgPool, ids: &[Uuid]) -> (sqlx::Transaction<'static, sqlx::Postgres>, String) {
    let mut holder = pool.begin().await.expect("begin");
    for id in ids {
        sqlx::query(
            "INSERT INTO events (event_id, aggregate_id, version, event_type, schema_version, data, metadata)
             VALUES ($1, $2, 1, 'WarriorCreated', 1, '{}', '{}')",
        )
        .bind(Uuid::new_v4())
        .bind(id)
        .execute(&mut *holder)
        .await
        .expect("holding insert");
    }
    let xid: String = sqlx::query_scalar("SELECT pg_current_xact_id()::text")
        .fetch_one(&mut *holder)
        .await
        .expect("xid");
    (holder, xid)
}

/// Waits (bounded) until `sessions` sessions of this database wait for a
/// lock: held by transaction `xid` if given, else any (a table's, a row's).
async fn sessions_wait_for(pool: &PgPool, xid: Option<&str>, sessions: i64) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks JOIN pg_stat_activity USING (pid)
             WHERE datname = current_database() AND NOT granted
             AND ($1::text IS NULL OR (locktype = 'transactionid' AND transactionid::text = $1))",
        )
        .bind(xid)
        .fetch_one(pool)
        .await
        .expect("pg_locks");
        if waiting >= sessions {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sessions} sessions never waited for {xid:?}"
        );
        tokio::task::yield_now().await;
    }
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn two_writers_appending_the_same_keys_in_opposite_orders_do_not_deadlock(pool: PgPool) {
    let store = EventStore::new(pool.clone());
    let spawn = || writer(&store);
    let ((first, _a), (second, _b)) = (spawn(), spawn());
    let append = |writer: &GroupCommitter, id: Uuid| {
        let writer = writer.clone();
        tokio::spawn(async move { writer.append(event(id, 1)).await })
    };
    let id = |n: u128| Uuid::from_u128(n);
    let (stall, x, p, y, q) = (Uuid::new_v4(), id(1), id(2), id(3), id(4));
    let (stall_holder, stall_xid) = hold_keys(&pool, &[stall]).await;
    let (holder, _) = hold_keys(&pool, &[p, q]).await;
    // Both writers stall on one key, so that what is queued meanwhile makes
    // their next batches: x, p, y for the first; y, q, x for the second.
    let stalled = [append(&first, stall), append(&second, stall)];
    sessions_wait_for(&pool, Some(&stall_xid), 2).await;
    let queued = [
        append(&first, x),
        append(&first, p),
        append(&first, y),
        append(&second, y),
        append(&second, q),
        append(&second, x),
    ];
    stall_holder.rollback().await.expect("release the stall");
    for task in stalled {
        task.await.expect("task").expect("no error");
    }
    // In queue order, the first writer would now hold x and wait at p, the
    // second hold y and wait at q; released, each would wait for the
    // other's key: a deadlock, which fails one batch whole. Sorted, both
    // take x before y, so one of them simply waits.
    sessions_wait_for(&pool, None, 2).await;
    holder.rollback().await.expect("release p and q");

    let mut wins = 0;
    for task in queued {
        let outcome = task.await.expect("task");
        assert!(outcome.is_ok(), "a batch failed whole: {outcome:?}");
        wins += usize::from(committed(&outcome.expect("checked")));
    }
    assert_eq!(
        wins, 4,
        "p, q, and one append each of x and y commit; the others conflict"
    );
}

/// The aggregates of every event one catch-up round reads.
async fn read_round(store: &EventStore, catch_up: &mut CatchUp) -> Vec<Uuid> {
    let round = catch_up.next_round(store).await.expect("a mark");
    let page = store
        .read_page_since(round.position, round.since, 100)
        .await
        .expect("a page");
    page.into_iter().map(|e| e.aggregate_id).collect()
}

#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_catch_up_reads_an_event_that_commits_after_higher_positions_were_read(pool: PgPool) {
    let store = EventStore::new(pool.clone());
    let (late, early) = (Uuid::new_v4(), Uuid::new_v4());
    // A transaction takes a position and stays open while a later one commits.
    let mut open = pool.begin().await.expect("begin");
    let late_position: i64 = sqlx::query_scalar(
        "INSERT INTO events (event_id, aggregate_id, version, event_type, schema_version, data)
         VALUES ($1, $2, 1, 'WarriorUpdated', 1, '{}') RETURNING position",
    )
    .bind(Uuid::new_v4())
    .bind(late)
    .fetch_one(&mut *open)
    .await
    .expect("insert");
    let outcomes = store.append_batch(&[event(early, 1)]).await.expect("append");
    let AppendOutcome::Committed {
        position: early_position,
        ..
    } = outcomes[0]
    else {
        panic!("the append commits");
    };
    assert!(
        late_position < early_position,
        "the trap: the open one holds the lower position"
    );

    // No slack: the open transaction alone must hold the horizon back.
    let mut catch_up = CatchUp::begin(&store, Duration::ZERO, Duration::from_secs(60))
        .await
        .expect("a mark");
    let replayed = store
        .read_page_since(0, DateTime::UNIX_EPOCH, 100)
        .await
        .expect("replay");
    assert_eq!(replayed.iter().map(|e| e.aggregate_id).collect::<Vec<_>>(), [early]);
    assert!(
        !read_round(&store, &mut catch_up).await.contains(&late),
        "still uncommitted"
    );
    open.commit().await.expect("commit");
    assert!(
        read_round(&store, &mut catch_up).await.contains(&late),
        "the next round reads the late commit, below positions already read"
    );
}

/// A batch whose connection was lost after it committed: settling it finds
/// its own events and reports them committed, where appending again would
/// call them conflicts (and a command without If-Match would then write
/// its change a second time). A rival's event at the same version stays a
/// conflict.
#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn settling_a_committed_batch_reports_its_events_committed(pool: PgPool) {
    let store = EventStore::new(pool);
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let batch = [event(a, 1), event(b, 1)];
    let first = store.append_batch(&batch).await.expect("append");
    assert!(first.iter().all(committed));
    assert_eq!(
        store.append_batch(&batch).await.expect("append again"),
        [AppendOutcome::Conflict, AppendOutcome::Conflict],
        "appended again, the batch's own events look like conflicts"
    );
    assert_eq!(store.settle_batch(&batch).await.expect("settle"), first);
    assert_eq!(
        store.settle_batch(&[event(a, 1)]).await.expect("settle a rival"),
        [AppendOutcome::Conflict]
    );
}

/// The server ends the writer's connection in the middle of its statement
/// (an administrator's terminate, a restart): the writer settles the batch,
/// and the caller learns its event committed, once.
#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_batch_whose_connection_is_lost_is_settled_and_written_once(pool: PgPool) {
    sqlx::raw_sql(
        "CREATE SEQUENCE lose_connection_once;
         CREATE FUNCTION lose_connection_once() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF nextval('lose_connection_once') = 1 THEN
                 PERFORM pg_terminate_backend(pg_backend_pid());
             END IF;
             RETURN NULL;
         END $$;
         CREATE TRIGGER lose_connection_once AFTER INSERT ON events
             FOR EACH STATEMENT EXECUTE FUNCTION lose_connection_once();",
    )
    .execute(&pool)
    .await
    .expect("install the trigger");
    let store = EventStore::new(pool.clone());
    let (writer, _task) = writer(&store);
    let id = Uuid::new_v4();
    let outcome = writer.append(event(id, 1)).await.expect("settled, not an error");
    assert!(committed(&outcome), "{outcome:?}");
    let attempts: i64 = sqlx::query_scalar("SELECT last_value FROM lose_connection_once")
        .fetch_one(&pool)
        .await
        .expect("sequence");
    assert_eq!(attempts, 2, "the first attempt lost its connection, the second wrote");
    let (events, queued): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM events WHERE aggregate_id = $1),
                (SELECT count(*) FROM outbox JOIN events USING (position) WHERE aggregate_id = $1)",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .expect("counts");
    assert_eq!((events, queued), (1, 1));
}
