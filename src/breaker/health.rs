//! [`BreakerHealth`]: one breaker's state and numbers, for a health endpoint.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::events::BreakerState;

/// A breaker's health, as reported by [`Breaker::health`](crate::Breaker::health) and
/// [`BreakerRegistry::snapshot`](crate::BreakerRegistry::snapshot).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BreakerHealth {
    /// The breaker's name.
    pub name: String,
    /// Its state.
    pub state: BreakerState,
    /// `failures / calls`; `None` with no calls.
    ///
    /// This and `calls`, `failures` and `slow_calls` are the numbers of
    /// the state it is in, as its events say them: closed, its window's
    /// (the calls it judges its failure rate over); open, those of the trip
    /// that opened it (its event's `calls`, `failures`, `slow_calls` and
    /// `failure_rate`: the window's that tripped it, or the probes' that
    /// reopened it), however long it stays open; half-open, its probes'
    /// (the successes so far, none failed: a failed probe reopens it);
    /// forced open, those of the state it was forced from, as they were
    /// when it was forced.
    pub failure_rate: Option<f64>,
    /// Calls counted (see `failure_rate` for which, by state).
    pub calls: u64,
    /// Failed calls of those (slow calls included).
    pub failures: u64,
    /// Slow calls of those.
    pub slow_calls: u64,
    /// Failures in a row, of the state it is in, as its events say them:
    /// closed, of its calls (it trips at `consecutive_failures`, when set);
    /// open, those of the trip that opened it (the calls' that tripped it,
    /// or the failed or timed-out probes' that reopened it: its event's
    /// `consecutive_failures`); half-open, of its probes, so 0 (a failed
    /// probe reopens it); forced open, as they were when it was forced.
    pub consecutive_failures: u32,
    /// Trips in a row since it last closed.
    pub trips: u32,
    /// When it last opened, while open, half-open or forced open (written
    /// as RFC 3339: a time before year 0 as its first instant).
    #[serde(with = "crate::clock::held_rfc3339::option")]
    pub opened_at: Option<OffsetDateTime>,
    /// When it will let a probe through, while open.
    #[serde(with = "crate::clock::held_rfc3339::option")]
    pub next_probe_at: Option<OffsetDateTime>,
    /// Probe permits held now, while half-open.
    pub probes_in_flight: u32,
    /// Probes that succeeded, while half-open.
    pub probe_successes: u32,
}
