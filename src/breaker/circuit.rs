//! [`Breaker`]: the handle hosts hold, and the operations on a breaker.
//! The rules are in `machine.rs`, the permits in `permit.rs`.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard, PoisonError};

use crate::breaker::config::BreakerConfig;
use crate::breaker::health::BreakerHealth;
use crate::breaker::machine::{Core, Env, Inner, Now, State};
use crate::breaker::permit::{Nanos, OwnedPermit, Permit, Settlement, Ticket};
use crate::breaker::rejected::{CallError, Rejected};
use crate::breaker::window::Verdict;
use crate::events::{BreakerEventKind, BreakerState, CallOutcome, Event};

/// A named circuit breaker: a cheap, clonable handle; clones share one state.
///
/// Get one from a [`BreakerRegistry`](crate::BreakerRegistry). Before each
/// call to the protected upstream, take a [`Permit`] with
/// [`try_acquire`](Breaker::try_acquire) and give it a verdict, or let
/// [`call`](Breaker::call) do both. A `Permit` borrows its breaker, as a
/// `MutexGuard` borrows its mutex; to move a permit into a spawned task, take
/// an [`OwnedPermit`] with [`try_acquire_owned`](Breaker::try_acquire_owned).
///
/// # Rules
///
/// - **Closed**: every call goes through; each verdict is counted in the
///   sliding window: by default the calls of the last `window` of time (kept
///   in `window_buckets` buckets), or with `window_calls` set the last that
///   many calls, however old. The breaker trips open when the window holds
///   at least `minimum_calls` calls and failures / calls
///   `>= failure_rate_threshold`, or (if configured) after
///   `consecutive_failures` failures in a row. A call longer than
///   `slow_call_threshold` counts as a failure.
/// - **Time**: every reading comes from the registry's [`Clock`](crate::Clock). With a
///   count window and no slow-call threshold, the closed path (acquire and
///   verdict) reads no time at all until a verdict trips the breaker; with
///   the time window a verdict reads it once
///   ([`Clock::now_unix_nanos`](crate::Clock::now_unix_nanos)); a slow-call threshold adds one reading at
///   acquire.
/// - **Open**: calls are rejected until the open duration has passed (it
///   grows by `open_duration_multiplier` per trip in a row, up to
///   `max_open_duration`). The first acquire or [`state`](Breaker::state)
///   after that moves it to half-open.
/// - **Half-open**: at most `half_open_probes` permits are held at once; a
///   permit dropped without a verdict gives its slot back. One failed probe
///   opens it again; `probe_successes_to_close` successes close it, clearing
///   the window (of either kind). Once any probe has held its slot for
///   `probe_timeout` without reporting, it opens again (the probes past
///   the timeout count as slow calls), and late reports count for nothing
///   (a sink hears a late success as [`CallOutcome::Slow`], as the
///   reopening counted it).
/// - A verdict is counted only in the state (and the generation of it) in
///   which its permit was taken: a call that started before a transition
///   does not count after it.
///
/// Its making (`breaker.created`) and every transition are emitted to the
/// registry's sink, outside the lock, a transition with the numbers that
/// caused it.
#[derive(Clone)]
pub struct Breaker {
    core: Arc<Core>,
}

impl Breaker {
    /// A new breaker, and the event of its making for the registry to
    /// send once its lock is let go.
    pub(crate) fn new(name: Arc<str>, config: BreakerConfig, env: Arc<Env>) -> (Breaker, Event) {
        let (core, created) = Core::new(name, config, env);
        let breaker = Breaker {
            core: Arc::new(core),
        };
        (breaker, created)
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.core.name
    }

    /// Its rules.
    pub fn config(&self) -> &BreakerConfig {
        &self.core.config
    }

    /// Asks to make one call. The permit borrows the breaker.
    ///
    /// # Errors
    ///
    /// [`Rejected`] while open (with the time to retry), forced open, or
    /// half-open with every probe slot taken.
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit<'_>, Rejected> {
        let ticket = self.acquire()?;
        Ok(Permit::new(self, ticket))
    }

    /// Asks to make one call, like [`try_acquire`](Breaker::try_acquire), for
    /// a permit that holds its own handle to the breaker and can be moved
    /// into a spawned task.
    ///
    /// # Errors
    ///
    /// As [`try_acquire`](Breaker::try_acquire).
    pub fn try_acquire_owned(&self) -> Result<OwnedPermit, Rejected> {
        let ticket = self.acquire()?;
        Ok(OwnedPermit::new(self.clone(), ticket))
    }

    /// The closed path, without the lock; the others in
    /// [`acquire_not_closed`](Breaker::acquire_not_closed).
    #[inline]
    fn acquire(&self) -> Result<Ticket, Rejected> {
        let core = &*self.core;
        let generation = core.closed_generation.load(Ordering::Acquire);
        if generation == u64::MAX {
            return self.acquire_not_closed();
        }
        let started = match core.slow_nanos {
            Some(_) => Nanos::new(core.env.clock.now_unix_nanos()),
            None => Nanos::new(0),
        };
        Ok(Ticket::new(generation, false, started))
    }

    #[inline(never)]
    fn acquire_not_closed(&self) -> Result<Ticket, Rejected> {
        let core = &*self.core;
        // Only an open breaker needs the time (has its open duration
        // passed?), and a permit if calls are timed.
        let mut now = Now::unread(&core.env.clock);
        let mut inner = self.lock();
        let event = inner.advance(core, &mut now);
        let result = match inner.state {
            State::Closed => Ok(false),
            State::HalfOpen { .. } if inner.probes_in_flight() < core.config.half_open_probes => {
                inner.probes.push(now.get());
                Ok(true)
            }
            State::HalfOpen { .. } => Err(None),
            State::Open { until, .. } => Err(Some(until)),
            State::ForcedOpen { .. } => Err(None),
        };
        let generation = inner.generation;
        let state = inner.state.public();
        drop(inner);
        core.env.emit(event);
        match result {
            Ok(probe) => {
                // A probe keeps its hand-out time to give its slot back.
                let started = if probe || core.slow_nanos.is_some() {
                    now.get()
                } else {
                    0
                };
                Ok(Ticket::new(generation, probe, Nanos::new(started)))
            }
            Err(retry_at) => {
                core.env.call(&core.name, CallOutcome::Rejected);
                Err(Rejected {
                    breaker: core.name.clone(),
                    state,
                    retry_at,
                })
            }
        }
    }

    /// Runs `f` if the breaker lets the call through, and counts its result.
    ///
    /// # Errors
    ///
    /// [`CallError::Rejected`] if the call was not let through (`f` did not
    /// run); [`CallError::Failed`] with `f`'s error (and the breaker's name)
    /// otherwise. If `f` panics,
    /// the permit is dropped without a verdict.
    pub fn call<T, E>(&self, f: impl FnOnce() -> Result<T, E>) -> Result<T, CallError<E>> {
        let permit = self.try_acquire().map_err(CallError::Rejected)?;
        match f() {
            Ok(value) => {
                permit.success();
                Ok(value)
            }
            Err(e) => {
                permit.failure();
                Err(CallError::Failed {
                    breaker: Arc::clone(&self.core.name),
                    error: e,
                })
            }
        }
    }

    /// Its state now. An open breaker whose open duration has passed becomes
    /// half-open here (and says so to the sink), as on the next acquire.
    pub fn state(&self) -> BreakerState {
        let mut now = Now::unread(&self.core.env.clock);
        let mut inner = self.lock();
        let event = inner.advance(&self.core, &mut now);
        let state = inner.state.public();
        drop(inner);
        self.core.env.emit(event);
        state
    }

    /// Its health now (moving it to half-open first if due, like [`state`](Breaker::state)).
    pub fn health(&self) -> BreakerHealth {
        let mut now = Now::unread(&self.core.env.clock);
        let mut inner = self.lock();
        let event = inner.advance(&self.core, &mut now);
        let totals = inner.totals(|| now.get());
        let (opened_at, next_probe_at, probes_in_flight, probe_successes) = match inner.state {
            State::Closed => (None, None, 0, 0),
            State::Open {
                opened_at, until, ..
            } => (Some(opened_at), Some(until), 0, 0),
            State::HalfOpen {
                opened_at,
                successes,
            } => (Some(opened_at), None, inner.probes_in_flight(), successes),
            State::ForcedOpen { opened_at } => (Some(opened_at), None, 0, 0),
        };
        let health = BreakerHealth {
            name: self.core.name.to_string(),
            state: inner.state.public(),
            failure_rate: totals.failure_rate(),
            calls: totals.calls,
            failures: totals.failures,
            slow_calls: totals.slow,
            consecutive_failures: inner.consecutive_failures,
            trips: inner.trips,
            opened_at,
            next_probe_at,
            probes_in_flight,
            probe_successes,
        };
        drop(inner);
        self.core.env.emit(event);
        health
    }

    /// Opens the breaker until [`reset`](Breaker::reset), whatever its state.
    pub fn force_open(&self) {
        let now = self.core.env.clock.now();
        let mut inner = self.lock();
        let from = inner.state.public();
        let event = (from != BreakerState::ForcedOpen).then(|| {
            let trips = inner.trips;
            // Forced open, its health gives these as they are now.
            inner.held = inner.totals(|| now.unix_timestamp_nanos());
            inner
                .set_state(
                    &self.core,
                    State::ForcedOpen { opened_at: now },
                    BreakerEventKind::ForcedOpen,
                    from,
                )
                .field("trips", trips)
        });
        drop(inner);
        self.core.env.emit(event);
    }

    /// Closes the breaker, clearing its window, failure streak and trip count.
    pub fn reset(&self) {
        let mut inner = self.lock();
        let from = inner.state.public();
        inner.window.clear();
        inner.consecutive_failures = 0;
        inner.trips = 0;
        let event = inner.set_state(&self.core, State::Closed, BreakerEventKind::Reset, from);
        drop(inner);
        self.core.env.emit(Some(event));
    }

    /// Ends `ticket` as `settlement` says. The one settle path of both
    /// kinds of permit.
    pub(super) fn settle(&self, ticket: &mut Ticket, settlement: Settlement) {
        ticket.settled = true;
        let core = &*self.core;
        let failed = match settlement {
            Settlement::Success => false,
            Settlement::Failure => true,
            Settlement::Dropped => {
                // Only a probe slot needs giving back; a probe dropped
                // past its timeout reopens the breaker first, as one that
                // reports late does.
                if ticket.probe {
                    let mut now = Now::unread(&core.env.clock);
                    let mut inner = self.lock();
                    let expired = inner.expire_probes(core, &mut now);
                    if inner.generation == ticket.generation {
                        inner.release_probe(ticket.started.get());
                    }
                    drop(inner);
                    core.env.emit(expired);
                }
                return;
            }
        };
        // Read before the lock when the verdict needs it; otherwise only a
        // trip reads it, under the lock.
        let mut now = Now::unread(&core.env.clock);
        if core.timed_verdicts {
            now.get();
        }
        let slow = match core.slow_nanos {
            Some(threshold) => now.get().saturating_sub(ticket.started.get()) > threshold,
            None => false,
        };
        // A probe past its timeout is a slow call, as the reopening its
        // timeout causes (below, or before) counts it.
        let slow = slow || (ticket.probe && core.probe_timed_out(ticket.started.get(), now.get()));
        // The window counts a slow call as slow whatever it returned; the
        // sink hears what the caller reported, or that a success was slow.
        let (verdict, outcome) = match (failed, slow) {
            (false, false) => (Verdict::Success, CallOutcome::Success),
            (false, true) => (Verdict::Slow, CallOutcome::Slow),
            (true, false) => (Verdict::Failure, CallOutcome::Failure),
            (true, true) => (Verdict::Slow, CallOutcome::Failure),
        };
        // A success of a quiet generation changes nothing: it is settled
        // without the lock. The load is where it counts (in its generation,
        // as the rules ask); a verdict that changes a count, under the lock,
        // ends the quiet before the lock is let go.
        if verdict == Verdict::Success
            && core.quiet_generation.load(Ordering::Acquire) == ticket.generation
        {
            core.env.call(&core.name, outcome);
            return;
        }
        let mut inner = self.lock();
        // A probe reporting after its timeout reopened the breaker counts
        // for nothing (its generation is gone by then).
        let expired = if ticket.probe {
            inner.expire_probes(core, &mut now)
        } else {
            None
        };
        let event = if inner.generation == ticket.generation {
            if ticket.probe {
                inner.release_probe(ticket.started.get());
            }
            inner.verdict(core, &mut now, verdict)
        } else {
            None
        };
        drop(inner);
        core.env.emit(expired);
        core.env.emit(event);
        core.env.call(&core.name, outcome);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing user-supplied runs under this lock; a poisoned one is whole.
        self.core
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("name", &self.core.name)
            .field("state", &self.lock().state.public())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::breaker::config::BreakerConfig;
    use crate::breaker::registry::BreakerRegistry;
    use crate::clock::Swinging;

    /// A breaker judging slow calls never panics on a host's clock whose
    /// readings lie as far apart as `i128` holds: a call timed across such
    /// readings is slow or not, not an overflow (its start subtracted from
    /// its end overflowed).
    #[test]
    fn timing_a_call_never_overflows_on_a_clock_at_the_ends_of_i128() {
        let registry = BreakerRegistry::new(
            BreakerConfig::default().slow_call_threshold(Duration::from_secs(1)),
        )
        .unwrap()
        .with_clock(std::sync::Arc::new(Swinging::default()));
        let breaker = registry.breaker("upstream").unwrap();
        for _ in 0..4 {
            if let Ok(permit) = breaker.try_acquire() {
                permit.success();
            }
        }
        assert!(breaker.health().slow_calls > 0, "{:?}", breaker.health());
    }
}
