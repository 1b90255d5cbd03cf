//! A circuit breaker for what lookups depend on: the read model's database,
//! and the projection keeping up.
//!
//! With the read model's PostgreSQL down, every lookup waited out the pool's
//! connect timeout (2 s) before answering from the event store; with Kafka
//! down, every lookup of a fresh write waited out the read-your-writes bound.
//! After such a failure the breaker sends lookups straight to the event
//! store for a while, then lets a single lookup try the normal way; its
//! outcome closes the breaker or opens it again. The event store's answer is
//! exact, so a breaker open too long costs only event-store load, never
//! correctness.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    /// Lookups go straight to the event store until then.
    Open {
        until: Instant,
    },
    /// One lookup is trying the normal way. If it never reports (its request
    /// was cancelled), another may try once `until` has passed.
    Probing {
        until: Instant,
    },
}

/// Shared by all lookups of one service.
#[derive(Debug)]
pub struct Breaker {
    open_for: Duration,
    probe_for: Duration,
    state: Mutex<State>,
    /// `state` is `Closed`: the common case, read without the lock (every
    /// lookup asks). Written only under the lock.
    closed: AtomicBool,
}

impl Breaker {
    /// `open_for`: how long lookups go straight to the event store after a
    /// failure; `probe_for`: how long a probe may take before another is
    /// allowed (longer than the timeouts it can meet).
    pub fn new(open_for: Duration, probe_for: Duration) -> Self {
        Self {
            open_for,
            probe_for,
            state: Mutex::new(State::Closed),
            closed: AtomicBool::new(true),
        }
    }

    /// Whether this lookup should go the normal way.
    pub fn allow(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.allow_at(Instant::now())
    }

    /// The normal way worked.
    pub fn succeeded(&self) {
        if !self.closed.load(Ordering::Acquire) {
            let mut state = self.state();
            *state = State::Closed;
            self.closed.store(true, Ordering::Release);
        }
    }

    /// The normal way failed.
    pub fn failed(&self) {
        self.failed_at(Instant::now());
    }

    fn allow_at(&self, now: Instant) -> bool {
        let mut state = self.state();
        match *state {
            State::Closed => true,
            State::Open { until } | State::Probing { until } if now >= until => {
                *state = State::Probing {
                    until: now + self.probe_for,
                };
                true
            }
            State::Open { .. } | State::Probing { .. } => false,
        }
    }

    fn failed_at(&self, now: Instant) {
        let mut state = self.state();
        *state = State::Open {
            until: now + self.open_for,
        };
        self.closed.store(false, Ordering::Release);
    }

    /// The state, even if a holder panicked: it is a plain value, always valid.
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: Duration = Duration::from_secs(1);
    const PROBE: Duration = Duration::from_secs(5);

    #[test]
    fn a_failure_sends_lookups_elsewhere_until_one_probe_is_let_through() {
        let breaker = Breaker::new(OPEN, PROBE);
        let start = Instant::now();
        assert!(breaker.allow_at(start));
        breaker.failed_at(start);
        assert!(!breaker.allow_at(start + OPEN / 2));
        assert!(
            breaker.allow_at(start + OPEN),
            "one probe once the breaker's time is up"
        );
        assert!(!breaker.allow_at(start + OPEN), "only one probe at a time");
    }

    #[test]
    fn the_probe_decides() {
        let breaker = Breaker::new(OPEN, PROBE);
        let start = Instant::now();
        breaker.failed_at(start);
        assert!(breaker.allow_at(start + OPEN));
        breaker.succeeded();
        assert!(breaker.allow_at(start + OPEN));
        assert!(
            breaker.allow_at(start + OPEN),
            "closed again: every lookup reads the read model"
        );

        breaker.failed_at(start + OPEN);
        assert!(breaker.allow_at(start + OPEN * 2));
        breaker.failed_at(start + OPEN * 2);
        assert!(
            !breaker.allow_at(start + OPEN * 2),
            "a failed probe opens the breaker again"
        );
    }

    #[test]
    fn a_probe_that_never_reports_is_replaced() {
        let breaker = Breaker::new(OPEN, PROBE);
        let start = Instant::now();
        breaker.failed_at(start);
        assert!(breaker.allow_at(start + OPEN));
        assert!(!breaker.allow_at(start + OPEN + PROBE / 2));
        assert!(
            breaker.allow_at(start + OPEN + PROBE),
            "another probe after the first one's time"
        );
    }
}
