//! One circuit breaker: its state machine, permits and rejections.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use crate::breaker::config::BreakerConfig;
use crate::breaker::window::{Totals, Window};
use crate::clock::Clock;
use crate::events::{Event, kinds};
use crate::sink::Notifier;

/// Where a breaker is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BreakerState {
    /// Calls go through; outcomes are counted in the window.
    Closed,
    /// Calls are rejected until the open duration has passed.
    Open,
    /// A limited number of probe calls go through; the rest are rejected.
    HalfOpen,
    /// Forced open by the host: calls are rejected until [`Breaker::reset`].
    ForcedOpen,
}

impl BreakerState {
    /// The state's name (`"closed"`, `"open"`, `"half_open"`, `"forced_open"`),
    /// as used in events' `layer_from` / `layer_to`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
            BreakerState::ForcedOpen => "forced_open",
        }
    }

    /// The state named `name`, if any.
    pub fn parse(name: &str) -> Option<BreakerState> {
        match name {
            "closed" => Some(BreakerState::Closed),
            "open" => Some(BreakerState::Open),
            "half_open" => Some(BreakerState::HalfOpen),
            "forced_open" => Some(BreakerState::ForcedOpen),
            _ => None,
        }
    }

    /// The state as a gauge value: 0 closed, 1 half-open, 2 open, 3 forced open.
    pub fn as_gauge(self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
            BreakerState::ForcedOpen => 3,
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The verdict on one call, as passed to [`EventSink::breaker_call`](crate::EventSink::breaker_call).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CallOutcome {
    /// The call succeeded in time.
    Success,
    /// The call failed.
    Failure,
    /// The call succeeded but took longer than the slow-call threshold; it
    /// counts as a failure.
    Slow,
    /// The breaker rejected the call.
    Rejected,
}

impl CallOutcome {
    /// The outcome's name (`"success"`, `"failure"`, `"slow"`, `"rejected"`).
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Success => "success",
            CallOutcome::Failure => "failure",
            CallOutcome::Slow => "slow",
            CallOutcome::Rejected => "rejected",
        }
    }
}

/// A call the breaker did not let through.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("breaker {breaker} is {state}: call rejected{}", retry_hint(*.retry_at))]
#[non_exhaustive]
pub struct Rejected {
    /// The breaker's name.
    pub breaker: Arc<str>,
    /// Its state when it rejected the call.
    pub state: BreakerState,
    /// When a call may be let through again: the end of the open duration.
    /// `None` when half-open with every probe slot taken (retry when a probe
    /// finishes) or forced open (retry after a reset).
    pub retry_at: Option<OffsetDateTime>,
}

fn retry_hint(at: Option<OffsetDateTime>) -> String {
    match at {
        Some(at) => format!(", retry at {at}"),
        None => String::new(),
    }
}

/// Why [`Breaker::call`] returned no value.
#[derive(Debug)]
pub enum CallError<E> {
    /// The breaker rejected the call; the closure did not run.
    Rejected(Rejected),
    /// The closure ran and returned this error (counted as a failure).
    Failed(E),
}

impl<E: fmt::Display> fmt::Display for CallError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Rejected(r) => r.fmt(f),
            CallError::Failed(e) => write!(f, "call failed: {e}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for CallError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CallError::Rejected(r) => Some(r),
            CallError::Failed(e) => Some(e),
        }
    }
}

/// A breaker's health, as reported by [`Breaker::health`] and
/// [`BreakerRegistry::snapshot`](crate::BreakerRegistry::snapshot).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BreakerHealth {
    /// The breaker's name.
    pub name: String,
    /// Its state.
    pub state: BreakerState,
    /// Failures / calls in the window; `None` with no calls.
    pub failure_rate: Option<f64>,
    /// Calls in the window.
    pub calls: u64,
    /// Failed calls in the window (slow calls included).
    pub failures: u64,
    /// Slow calls in the window.
    pub slow_calls: u64,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Trips in a row since it last closed.
    pub trips: u32,
    /// When it last opened, while open, half-open or forced open.
    #[serde(with = "time::serde::rfc3339::option")]
    pub opened_at: Option<OffsetDateTime>,
    /// When it will let a probe through, while open.
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_probe_at: Option<OffsetDateTime>,
    /// Probe permits held now, while half-open.
    pub probes_in_flight: u32,
    /// Probes that succeeded, while half-open.
    pub probe_successes: u32,
}

/// What a breaker shares with its registry: the clock, and the sink with its
/// panic count.
pub(crate) struct Env {
    pub clock: Arc<dyn Clock>,
    pub notifier: Notifier,
}

impl Env {
    /// Sends a transition, if there was one, to the sink.
    #[inline]
    fn emit(&self, event: Option<Event>) {
        if let Some(event) = event {
            self.emit_event(event);
        }
    }

    #[inline(never)]
    fn emit_event(&self, event: Event) {
        self.notifier.emit(|| event);
    }

    #[inline]
    fn call(&self, breaker: &str, outcome: CallOutcome) {
        self.notifier.breaker_call(breaker, outcome);
    }
}

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
/// - **Time**: every reading comes from the registry's [`Clock`]. With a
///   count window and no slow-call threshold, the closed path (acquire and
///   verdict) reads no time at all until a verdict trips the breaker; with
///   the time window a verdict reads it once
///   ([`Clock::now_unix_nanos`]); a slow-call threshold adds one reading at
///   acquire.
/// - **Open**: calls are rejected until the open duration has passed (it
///   grows by `open_duration_multiplier` per trip in a row, up to
///   `max_open_duration`). The first acquire or [`state`](Breaker::state)
///   after that moves it to half-open.
/// - **Half-open**: at most `half_open_probes` permits are held at once; a
///   permit dropped without a verdict gives its slot back. One failed probe
///   opens it again; `probe_successes_to_close` successes close it, clearing
///   the window (of either kind).
/// - A verdict is counted only in the state (and the generation of it) in
///   which its permit was taken: a call that started before a transition
///   does not count after it.
///
/// Every transition is emitted to the registry's sink, outside the lock,
/// with the numbers that caused it.
#[derive(Clone)]
pub struct Breaker {
    core: Arc<Core>,
}

struct Core {
    name: Arc<str>,
    config: BreakerConfig,
    env: Arc<Env>,
    /// `slow_call_threshold` in nanoseconds.
    slow_nanos: Option<i128>,
    /// Whether a verdict needs the time before it takes the lock: with the
    /// time window, or a slow-call threshold. Otherwise a verdict reads the
    /// clock only if it trips the breaker.
    timed_verdicts: bool,
    /// With a count window of N calls: (N, the fewest failures among N calls
    /// whose rate reaches the threshold), so that a full window is judged
    /// without a division.
    full_window: Option<(u64, u64)>,
    /// The generation while closed, `u64::MAX` otherwise: lets the closed
    /// path hand out permits without the lock.
    closed_generation: AtomicU64,
    inner: Mutex<Inner>,
}

struct Inner {
    state: State,
    /// Goes up with every transition; permits of an older one are stale.
    generation: u64,
    window: Window,
    consecutive_failures: u32,
    trips: u32,
}

#[derive(Clone, Copy, Debug)]
enum State {
    Closed,
    Open {
        opened_at: OffsetDateTime,
        until: OffsetDateTime,
        /// `until` as Unix nanoseconds, to compare with the clock.
        until_nanos: i128,
    },
    HalfOpen {
        opened_at: OffsetDateTime,
        in_flight: u32,
        successes: u32,
    },
    ForcedOpen {
        opened_at: OffsetDateTime,
    },
}

impl State {
    fn public(&self) -> BreakerState {
        match self {
            State::Closed => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
            State::ForcedOpen { .. } => BreakerState::ForcedOpen,
        }
    }
}

/// Permission to make one call, borrowed from its [`Breaker`]. Give it a
/// verdict with [`success`](Permit::success) or [`failure`](Permit::failure);
/// dropping it without one counts nothing and, for a half-open probe, frees
/// its slot.
///
/// Taking and settling one touches no reference count; to hold a permit
/// where the breaker cannot be borrowed (a spawned task), use
/// [`OwnedPermit`].
#[must_use = "a permit should get a verdict: success() or failure()"]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    ticket: Ticket,
}

/// A [`Permit`] that owns a handle to its breaker (one reference-count
/// increment when taken), so it can move into a spawned task: from
/// [`Breaker::try_acquire_owned`]. The same rules apply.
#[must_use = "a permit should get a verdict: success() or failure()"]
pub struct OwnedPermit {
    breaker: Breaker,
    ticket: Ticket,
}

/// What a permit of either kind remembers.
struct Ticket {
    generation: u64,
    probe: bool,
    /// When it was taken; read only with a slow-call threshold (the closed
    /// path leaves it 0 without one).
    started: Nanos,
    settled: bool,
}

/// Unix nanoseconds (an `i128`) kept as two 64-bit halves. With the 8-byte
/// alignment of the halves a permit is small and copied with plain moves; an
/// `i128` field (16-byte aligned) made the compiler copy permits with vector
/// moves that stall on store forwarding, a quarter of the closed path.
#[derive(Clone, Copy, Debug)]
struct Nanos {
    high: i64,
    low: u64,
}

impl Nanos {
    fn new(nanos: i128) -> Nanos {
        Nanos {
            high: (nanos >> 64) as i64,
            low: nanos as u64,
        }
    }

    fn get(self) -> i128 {
        (i128::from(self.high) << 64) | i128::from(self.low)
    }
}

/// The time of one verdict: read at most once, and only if needed.
struct Now<'a> {
    clock: &'a Arc<dyn Clock>,
    at: Option<i128>,
}

impl Now<'_> {
    fn get(&mut self) -> i128 {
        *self.at.get_or_insert_with(|| self.clock.now_unix_nanos())
    }
}

impl Breaker {
    pub(crate) fn new(name: Arc<str>, config: BreakerConfig, env: Arc<Env>) -> Breaker {
        let window = Window::new(&config);
        let slow_nanos = config
            .slow_call_threshold
            .map(|t| i128::try_from(t.as_nanos()).unwrap_or(i128::MAX));
        Breaker {
            core: Arc::new(Core {
                name,
                timed_verdicts: window.needs_time() || slow_nanos.is_some(),
                full_window: config.window_calls.map(|n| {
                    let n = u64::from(n);
                    (n, fewest_failures(n, config.failure_rate_threshold))
                }),
                slow_nanos,
                config,
                env,
                closed_generation: AtomicU64::new(0),
                inner: Mutex::new(Inner {
                    state: State::Closed,
                    generation: 0,
                    window,
                    consecutive_failures: 0,
                    trips: 0,
                }),
            }),
        }
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
        Ok(Permit {
            breaker: self,
            ticket,
        })
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
        Ok(OwnedPermit {
            breaker: self.clone(),
            ticket,
        })
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
        let mut now = Now {
            clock: &core.env.clock,
            at: None,
        };
        let mut inner = self.lock();
        let event = inner.advance(core, &mut now);
        let result = match &mut inner.state {
            State::Closed => Ok(false),
            State::HalfOpen { in_flight, .. } if *in_flight < core.config.half_open_probes => {
                *in_flight += 1;
                Ok(true)
            }
            State::HalfOpen { .. } => Err(None),
            State::Open { until, .. } => Err(Some(*until)),
            State::ForcedOpen { .. } => Err(None),
        };
        let generation = inner.generation;
        let state = inner.state.public();
        drop(inner);
        core.env.emit(event);
        match result {
            Ok(probe) => {
                let started = match core.slow_nanos {
                    Some(_) => now.get(),
                    None => 0,
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
    /// run); [`CallError::Failed`] with `f`'s error otherwise. If `f` panics,
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
                Err(CallError::Failed(e))
            }
        }
    }

    /// Its state now. An open breaker whose open duration has passed becomes
    /// half-open here (and says so to the sink), as on the next acquire.
    pub fn state(&self) -> BreakerState {
        let mut now = Now {
            clock: &self.core.env.clock,
            at: None,
        };
        let mut inner = self.lock();
        let event = inner.advance(&self.core, &mut now);
        let state = inner.state.public();
        drop(inner);
        self.core.env.emit(event);
        state
    }

    /// Its health now (moving it to half-open first if due, like [`state`](Breaker::state)).
    pub fn health(&self) -> BreakerHealth {
        let mut now = Now {
            clock: &self.core.env.clock,
            at: None,
        };
        let mut inner = self.lock();
        let event = inner.advance(&self.core, &mut now);
        let totals = inner.window.totals(|| now.get());
        let (opened_at, next_probe_at, probes_in_flight, probe_successes) = match inner.state {
            State::Closed => (None, None, 0, 0),
            State::Open {
                opened_at, until, ..
            } => (Some(opened_at), Some(until), 0, 0),
            State::HalfOpen {
                opened_at,
                in_flight,
                successes,
            } => (Some(opened_at), None, in_flight, successes),
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
            inner.set_state(&self.core, State::ForcedOpen { opened_at: now });
            self.event(kinds::BREAKER_FORCED_OPEN, from, BreakerState::ForcedOpen)
                .field("trips", inner.trips)
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
        inner.set_state(&self.core, State::Closed);
        drop(inner);
        self.core.env.emit(Some(self.event(
            kinds::BREAKER_RESET,
            from,
            BreakerState::Closed,
        )));
    }

    /// Gives `ticket` its verdict (`None`: dropped without one). The one
    /// settle path of both kinds of permit.
    fn settle(&self, ticket: &mut Ticket, ok: Option<bool>) {
        ticket.settled = true;
        let core = &*self.core;
        let Some(ok) = ok else {
            // Dropped without a verdict: only a probe slot needs giving back.
            if ticket.probe {
                let mut inner = self.lock();
                let generation = inner.generation;
                if let State::HalfOpen { in_flight, .. } = &mut inner.state
                    && generation == ticket.generation
                {
                    *in_flight = in_flight.saturating_sub(1);
                }
            }
            return;
        };
        // Read before the lock when the verdict needs it; otherwise only a
        // trip reads it, under the lock.
        let mut now = Now {
            clock: &core.env.clock,
            at: None,
        };
        if core.timed_verdicts {
            now.get();
        }
        let slow = match core.slow_nanos {
            Some(threshold) => now.get() - ticket.started.get() > threshold,
            None => false,
        };
        let failed = !ok || slow;
        let outcome = match (ok, slow) {
            (false, _) => CallOutcome::Failure,
            (true, true) => CallOutcome::Slow,
            (true, false) => CallOutcome::Success,
        };
        let mut inner = self.lock();
        let event = if inner.generation == ticket.generation {
            inner.verdict(self, &mut now, failed, slow)
        } else {
            None
        };
        drop(inner);
        core.env.emit(event);
        core.env.call(&core.name, outcome);
    }

    fn event(&self, kind: &'static str, from: BreakerState, to: BreakerState) -> Event {
        Event::new(kind)
            .from_layer(from.as_str())
            .to_layer(to.as_str())
            .field("breaker", &*self.core.name)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing user-supplied runs under this lock; a poisoned one is whole.
        self.core
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Core {
    /// Whether the window's failure rate trips the breaker: at least
    /// `minimum_calls` calls and failures / calls `>= failure_rate_threshold`.
    fn rate_trips(&self, totals: Totals) -> bool {
        if totals.calls < u64::from(self.config.minimum_calls) {
            return false;
        }
        if totals.failures == 0 {
            // The rate is 0.0, without a division.
            return self.config.failure_rate_threshold <= 0.0;
        }
        match self.full_window {
            Some((calls, failures)) if totals.calls == calls => totals.failures >= failures,
            _ => totals.failure_rate().unwrap_or(0.0) >= self.config.failure_rate_threshold,
        }
    }
}

/// The fewest failures `f` among `calls` calls (`> 0`) with
/// `f / calls >= threshold`, computed as [`Core::rate_trips`] does (`calls +
/// 1` if none). The rate grows with `f`, so a binary search finds it.
fn fewest_failures(calls: u64, threshold: f64) -> u64 {
    let (mut low, mut high) = (0, calls + 1);
    while low < high {
        let mid = low + (high - low) / 2;
        if mid as f64 / calls as f64 >= threshold {
            high = mid;
        } else {
            low = mid + 1;
        }
    }
    low
}

impl Inner {
    fn set_state(&mut self, core: &Core, state: State) {
        self.state = state;
        self.generation += 1;
        let closed = if matches!(state, State::Closed) {
            self.generation
        } else {
            u64::MAX
        };
        core.closed_generation.store(closed, Ordering::Release);
    }

    /// Open → half-open once the open duration has passed (`now` in Unix
    /// nanoseconds).
    fn advance(&mut self, core: &Core, now: &mut Now<'_>) -> Option<Event> {
        let State::Open {
            opened_at,
            until,
            until_nanos,
        } = self.state
        else {
            return None;
        };
        if now.get() < until_nanos {
            return None;
        }
        self.set_state(
            core,
            State::HalfOpen {
                opened_at,
                in_flight: 0,
                successes: 0,
            },
        );
        Some(
            Event::new(kinds::BREAKER_HALF_OPENED)
                .from_layer(BreakerState::Open.as_str())
                .to_layer(BreakerState::HalfOpen.as_str())
                .field("breaker", &*core.name)
                .field("opened_at", rfc3339(opened_at))
                .field("open_for_ms", millis(until - opened_at))
                .field("trips", self.trips)
                .field("probes", core.config.half_open_probes),
        )
    }

    /// Counts a verdict of the current generation; returns the transition it caused.
    fn verdict(
        &mut self,
        breaker: &Breaker,
        now: &mut Now<'_>,
        failed: bool,
        slow: bool,
    ) -> Option<Event> {
        let core = &*breaker.core;
        let config = &core.config;
        match &mut self.state {
            State::Closed => {
                let totals = self.window.record(|| now.get(), failed, slow);
                self.consecutive_failures = if failed {
                    self.consecutive_failures + 1
                } else {
                    0
                };
                let reason = if config
                    .consecutive_failures
                    .is_some_and(|n| self.consecutive_failures >= n)
                {
                    "consecutive_failures"
                } else if core.rate_trips(totals) {
                    "failure_rate"
                } else {
                    return None;
                };
                let event = breaker.event(
                    kinds::BREAKER_OPENED,
                    BreakerState::Closed,
                    BreakerState::Open,
                );
                Some(self.trip(core, now.get(), event, reason, totals))
            }
            State::HalfOpen {
                in_flight,
                successes,
                ..
            } => {
                *in_flight = in_flight.saturating_sub(1);
                if failed {
                    let totals = Totals {
                        calls: u64::from(*successes) + 1,
                        failures: 1,
                        slow: u64::from(slow),
                    };
                    let event = breaker.event(
                        kinds::BREAKER_REOPENED,
                        BreakerState::HalfOpen,
                        BreakerState::Open,
                    );
                    return Some(self.trip(
                        core,
                        now.get(),
                        event,
                        if slow { "slow_probe" } else { "failed_probe" },
                        totals,
                    ));
                }
                *successes += 1;
                if *successes < config.probe_successes_to_close {
                    return None;
                }
                let successes = *successes;
                let trips = self.trips;
                self.window.clear();
                self.consecutive_failures = 0;
                self.trips = 0;
                self.set_state(core, State::Closed);
                Some(
                    breaker
                        .event(
                            kinds::BREAKER_CLOSED,
                            BreakerState::HalfOpen,
                            BreakerState::Closed,
                        )
                        .field("probe_successes", successes)
                        .field("trips", trips),
                )
            }
            // Permits are never handed out while open.
            State::Open { .. } | State::ForcedOpen { .. } => None,
        }
    }

    fn trip(
        &mut self,
        core: &Core,
        now: i128,
        event: Event,
        reason: &str,
        totals: Totals,
    ) -> Event {
        self.trips = self.trips.saturating_add(1);
        let open_for = core.config.open_duration_after(self.trips);
        let now = datetime(now);
        let until =
            now.saturating_add(time::Duration::try_from(open_for).unwrap_or(time::Duration::MAX));
        self.set_state(
            core,
            State::Open {
                opened_at: now,
                until,
                until_nanos: until.unix_timestamp_nanos(),
            },
        );
        event.with_data(json!({
            "breaker": &*core.name,
            "reason": reason,
            "calls": totals.calls,
            "failures": totals.failures,
            "slow_calls": totals.slow,
            "failure_rate": totals.failure_rate(),
            "failure_rate_threshold": core.config.failure_rate_threshold,
            "minimum_calls": core.config.minimum_calls,
            "consecutive_failures": self.consecutive_failures,
            "trips": self.trips,
            "open_for_ms": millis(open_for),
            "retry_at": rfc3339(until),
        }))
    }
}

impl Ticket {
    fn new(generation: u64, probe: bool, started: Nanos) -> Ticket {
        Ticket {
            generation,
            probe,
            started,
            settled: false,
        }
    }
}

impl<'a> Permit<'a> {
    /// The call succeeded (it counts as a failure if it was slower than the
    /// slow-call threshold).
    #[inline]
    pub fn success(mut self) {
        self.breaker.settle(&mut self.ticket, Some(true));
    }

    /// The call failed.
    #[inline]
    pub fn failure(mut self) {
        self.breaker.settle(&mut self.ticket, Some(false));
    }

    /// Whether this permit is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.ticket.probe
    }

    /// The breaker it was taken from.
    pub fn breaker(&self) -> &'a Breaker {
        self.breaker
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.ticket.settled {
            self.breaker.settle(&mut self.ticket, None);
        }
    }
}

impl OwnedPermit {
    /// The call succeeded (it counts as a failure if it was slower than the
    /// slow-call threshold).
    pub fn success(mut self) {
        self.breaker.settle(&mut self.ticket, Some(true));
    }

    /// The call failed.
    pub fn failure(mut self) {
        self.breaker.settle(&mut self.ticket, Some(false));
    }

    /// Whether this permit is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.ticket.probe
    }

    /// The breaker it was taken from.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }
}

impl Drop for OwnedPermit {
    fn drop(&mut self) {
        if !self.ticket.settled {
            self.breaker.settle(&mut self.ticket, None);
        }
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

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("breaker", &self.breaker.core.name)
            .field("probe", &self.ticket.probe)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for OwnedPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedPermit")
            .field("breaker", &self.breaker.core.name)
            .field("probe", &self.ticket.probe)
            .finish_non_exhaustive()
    }
}

fn millis(d: impl TryInto<Duration>) -> u64 {
    d.try_into().ok().map_or(0, |d: Duration| {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
    })
}

/// Unix nanoseconds as a date, clamped to the dates `time` can hold.
fn datetime(unix_nanos: i128) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(unix_nanos).unwrap_or_else(|_| {
        let edge = if unix_nanos < 0 {
            time::PrimitiveDateTime::MIN
        } else {
            time::PrimitiveDateTime::MAX
        };
        edge.assume_utc()
    })
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanos_keep_every_i128() {
        for n in [
            0,
            1,
            -1,
            i128::MIN,
            i128::MAX,
            1_767_225_600_000_000_000,
            -42 << 70,
        ] {
            assert_eq!(Nanos::new(n).get(), n);
        }
    }

    #[test]
    fn fewest_failures_agrees_with_dividing() {
        for calls in [1u64, 2, 3, 7, 10, 99, 100, 101, 1_000, 100_000] {
            for threshold in [0.0, 0.1, 0.25, 1.0 / 3.0, 0.5, 0.7, 0.75, 0.9, 0.999, 1.0] {
                let divided = (0..=calls)
                    .find(|&f| f as f64 / calls as f64 >= threshold)
                    .unwrap_or(calls + 1);
                assert_eq!(
                    fewest_failures(calls, threshold),
                    divided,
                    "{calls} calls, threshold {threshold}"
                );
            }
        }
    }
}
