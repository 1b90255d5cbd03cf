//! Where commits can still land: the oldest transaction open in a database.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::PgPool;

/// The client transactions open in one database, as `pg_stat_activity`
/// shows them to the reading role. A transaction stamps what it writes
/// (an event's `occurred_at`, a row's `projected_at`) at or after its
/// start, so whatever commits from now on is stamped at or after
/// [`OpenTransactions::oldest_start`]: a reader that must not miss late
/// commits reads again from there. Both the event store's catch-up and the
/// read model's rebuild rely on this.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpenTransactions {
    /// The database's clock (`now()`) when read.
    pub now: DateTime<Utc>,
    /// The earliest `xact_start` of a client session, or `now` if none is
    /// open.
    pub oldest_start: DateTime<Utc>,
    /// Every session showed its state. Sessions of another role are hidden
    /// without `pg_read_all_stats`, and sessions with `track_activities`
    /// off show `disabled` and no start: then `oldest_start` proves
    /// nothing.
    pub all_shown: bool,
}

impl OpenTransactions {
    /// Reads them, in a statement of its own: a transaction that commits
    /// after this read is visible to the snapshot of a later statement.
    pub async fn read(pool: &PgPool) -> sqlx::Result<Self> {
        let (now, oldest_start, all_shown) = sqlx::query_as(
            "SELECT now(), least(now(), min(xact_start)),
                    coalesce(bool_and(state IS NOT NULL AND state <> 'disabled'), false)
             FROM pg_stat_activity
             WHERE datname = current_database() AND backend_type = 'client backend'",
        )
        .fetch_one(pool)
        .await?;
        Ok(Self {
            now,
            oldest_start,
            all_shown,
        })
    }

    /// From when a reader must look again to see every commit still to
    /// come: the oldest start less `slack` (a transaction begun but not yet
    /// showing its start). `None` when that cannot be told (not
    /// [`all_shown`](Self::all_shown)).
    pub fn horizon(&self, slack: Duration) -> Option<DateTime<Utc>> {
        self.all_shown.then(|| before(self.oldest_start, slack))
    }

    /// How long the oldest transaction has been open.
    pub fn longest_open(&self) -> TimeDelta {
        self.now - self.oldest_start
    }
}

/// `duration` before `at`, or the earliest time chrono holds.
pub(crate) fn before(at: DateTime<Utc>, duration: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(duration)
        .ok()
        .and_then(|delta| at.checked_sub_signed(delta))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("a valid time")
    }

    #[test]
    fn the_horizon_is_the_oldest_start_less_the_slack_when_every_session_shows() {
        let open = OpenTransactions {
            now: at(100),
            oldest_start: at(40),
            all_shown: true,
        };
        assert_eq!(open.horizon(Duration::from_secs(1)), Some(at(39)));
        assert_eq!(open.longest_open(), TimeDelta::seconds(60));
    }

    #[test]
    fn a_hidden_session_leaves_no_horizon() {
        let open = OpenTransactions {
            now: at(100),
            oldest_start: at(100),
            all_shown: false,
        };
        assert_eq!(open.horizon(Duration::from_secs(1)), None);
    }

    #[test]
    fn a_duration_beyond_the_calendar_gives_its_start() {
        assert_eq!(before(at(0), Duration::MAX), DateTime::<Utc>::MIN_UTC);
        assert_eq!(
            before(at(0), Duration::from_millis(1500)),
            at(-2) + TimeDelta::milliseconds(500)
        );
    }
}
