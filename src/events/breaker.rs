//! The breakers' vocabulary, as the events and sinks need it: states, call
//! outcomes, transitions and the reasons a breaker trips.

use crate::events::names::named;

/// Where a breaker is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BreakerState {
    /// Calls go through; outcomes are counted in the window.
    Closed,
    /// Calls are rejected until the open duration has passed.
    Open,
    /// A limited number of probe calls go through; the rest are rejected.
    HalfOpen,
    /// Forced open by the host: calls are rejected until
    /// [`Breaker::reset`](crate::Breaker::reset).
    ForcedOpen,
}

named!(BreakerState {
    Closed => "closed",
    Open => "open",
    HalfOpen => "half_open",
    ForcedOpen => "forced_open",
});

/// The verdict on one call, as passed to
/// [`EventSink::breaker_call`](crate::EventSink::breaker_call).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CallOutcome {
    /// The call succeeded in time.
    Success,
    /// The call failed.
    Failure,
    /// The call succeeded but took longer than the slow-call threshold, or
    /// (a half-open probe) than the probe timeout; it counts as a failure.
    Slow,
    /// The breaker rejected the call.
    Rejected,
}

named!(CallOutcome {
    Success => "success",
    Failure => "failure",
    Slow => "slow",
    Rejected => "rejected",
});

/// A breaker's making and its transitions: the `kind` of its events
/// ([`EventKind::Breaker`](crate::EventKind::Breaker)).
///
/// Each one ends in one state ([`state_after`](BreakerEventKind::state_after),
/// the event's `layer_to`); the state a transition left is the event's
/// `layer_from` (none for [`Created`](BreakerEventKind::Created)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BreakerEventKind {
    /// A registry made the breaker: it starts closed. A sink that keeps
    /// each breaker's state learns it here, before any transition, also
    /// when another breaker of the same name (of a registry dropped since,
    /// say) was left in another state.
    Created,
    /// A closed breaker tripped open.
    Opened,
    /// An open breaker's cooldown passed: it lets probes through.
    HalfOpened,
    /// Enough probes succeeded: the breaker closed.
    Closed,
    /// A probe failed, took longer than the slow-call threshold, or held
    /// its slot past the probe timeout: the half-open breaker opened again
    /// (the data's `reason` says which).
    Reopened,
    /// The host forced the breaker open.
    ForcedOpen,
    /// The host reset the breaker (closed, window cleared).
    Reset,
}

named!(BreakerEventKind {
    Created => "breaker.created",
    Opened => "breaker.opened",
    HalfOpened => "breaker.half_opened",
    Closed => "breaker.closed",
    Reopened => "breaker.reopened",
    ForcedOpen => "breaker.forced_open",
    Reset => "breaker.reset",
});

impl BreakerEventKind {
    /// The state the breaker is in after this transition.
    pub const fn state_after(self) -> BreakerState {
        match self {
            BreakerEventKind::Opened | BreakerEventKind::Reopened => BreakerState::Open,
            BreakerEventKind::HalfOpened => BreakerState::HalfOpen,
            BreakerEventKind::Created | BreakerEventKind::Closed | BreakerEventKind::Reset => {
                BreakerState::Closed
            }
            BreakerEventKind::ForcedOpen => BreakerState::ForcedOpen,
        }
    }
}

/// Why a breaker opened: the `reason` in the data of
/// [`Opened`](BreakerEventKind::Opened) and
/// [`Reopened`](BreakerEventKind::Reopened) events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TripReason {
    /// The window's failure rate reached the threshold.
    FailureRate,
    /// The configured number of failures in a row was reached.
    ConsecutiveFailures,
    /// A half-open probe failed.
    FailedProbe,
    /// A half-open probe took longer than the slow-call threshold, whatever
    /// it returned (a slow failure too: the slow call is what reopens).
    SlowProbe,
    /// A half-open probe held its slot past the probe timeout
    /// (`BreakerConfig::probe_timeout`) without reporting.
    ProbeTimedOut,
}

named!(TripReason {
    FailureRate => "failure_rate",
    ConsecutiveFailures => "consecutive_failures",
    FailedProbe => "failed_probe",
    SlowProbe => "slow_probe",
    ProbeTimedOut => "probe_timed_out",
});
