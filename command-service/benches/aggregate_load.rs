//! Loading a warrior with a 1,000-event history, with and without snapshots.
//!
//! Run with `load-tests/aggregate-load.sh` (needs the event-store PostgreSQL of
//! `./dev up`; DATABASE_URL overrides). Prints the median and p99 of each way
//! and their ratio, measured in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use command_service::commands::{Commands, RequestMeta};
use event_store::{Appender, EventStore, GroupCommitConfig, GroupCommitter};
use shared_kernel::{DateOfBirth, FightSkill, FightSkills, WarriorDraft, WarriorName};
use sqlx::postgres::PgPoolOptions;
use tokio::sync::Notify;

const EVENTS: usize = 1_000;
const SNAPSHOT_EVERY: i64 = 100;
const ROUNDS: usize = 300;

fn draft(i: usize) -> WarriorDraft {
    let today = NaiveDate::from_ymd_opt(2026, 1, 1).expect("valid date");
    WarriorDraft {
        name: WarriorName::parse(&format!("Warrior {i}")).expect("valid name"),
        dob: DateOfBirth::parse("1600-01-01", today).expect("valid date"),
        fight_skills: FightSkills::new(vec![FightSkill::parse("Katana").expect("valid skill")]).expect("one skill"),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn time_loads(commands: &Commands, id: uuid::Uuid) -> (Duration, Duration) {
    let mut samples = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let aggregate = commands.load(id).await.expect("load");
        samples.push(started.elapsed());
        assert_eq!(aggregate.version, EVENTS as i64);
    }
    samples.sort();
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://hammer:hammer@127.0.0.1:5433/eventstore".to_owned());
    let pool = PgPoolOptions::new().max_connections(4).connect(&url).await?;
    event_store::MIGRATOR.run(&pool).await?;
    let store = EventStore::new(pool);
    let (writer, _task) = GroupCommitter::spawn(
        store.clone(),
        GroupCommitConfig::default(),
        Arc::new(Notify::new()),
        |_, _| {},
    );
    let with_snapshots = Commands::new(store.clone(), Appender::Grouped(writer.clone()), SNAPSHOT_EVERY);
    let without_snapshots = Commands::new(store, Appender::Grouped(writer), 0);

    let meta = RequestMeta::default();
    let id = with_snapshots.create(&draft(0), &meta).await?.warrior().id;
    for i in 1..EVENTS {
        with_snapshots.replace(id, &draft(i), None, &meta).await?;
    }

    // Interleave the two ways, twice, so machine noise hits both alike.
    let mut rows = Vec::new();
    for _ in 0..2 {
        rows.push(("events only", time_loads(&without_snapshots, id).await));
        rows.push(("snapshot + tail", time_loads(&with_snapshots, id).await));
    }
    println!("loading one warrior with {EVENTS} events ({ROUNDS} loads per row, snapshot every {SNAPSHOT_EVERY})");
    for (name, (p50, p99)) in &rows {
        println!(
            "{name:>16}: p50 {:>8.3} ms   p99 {:>8.3} ms",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
    }
    let median = |name: &str| {
        let mut v: Vec<f64> = rows
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, (p50, _))| p50.as_secs_f64())
            .collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "speed-up of snapshots (p50 ratio): {:.1}x",
        median("events only") / median("snapshot + tail")
    );
    Ok(())
}
