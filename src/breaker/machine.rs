//! The state machine of one breaker: its shared core, its states, and the
//! transitions a verdict or the passing of time causes. Everything here runs
//! under the breaker's lock, except what the closed path reads atomically.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;

use crate::breaker::config::BreakerConfig;
use crate::breaker::window::{Totals, Verdict, Window};
use crate::clock::{Clock, whole_millis};
use crate::events::{BreakerEventKind, BreakerState, CallOutcome, Event, TripReason};
use crate::sink::Notifier;

/// Every breaker transition of this process (and every making of a
/// breaker), numbered: a breaker's generations are taken from it, so they
/// only go up, for one breaker and across breakers that share a name.
static TRANSITIONS: AtomicU64 = AtomicU64::new(0);

/// What a breaker shares with its registry: the clock, and the sink with its
/// panic count.
pub(crate) struct Env {
    pub clock: Arc<dyn Clock>,
    pub notifier: Notifier,
}

impl Env {
    /// Sends a transition, if there was one, to the sink.
    #[inline]
    pub(super) fn emit(&self, event: Option<Event>) {
        if let Some(event) = event {
            self.emit_event(event);
        }
    }

    #[inline(never)]
    fn emit_event(&self, event: Event) {
        warn_of_probe_timeouts(&event);
        self.notifier.emit(|| event);
    }

    #[inline]
    pub(super) fn call(&self, breaker: &str, outcome: CallOutcome) {
        self.notifier.breaker_call(breaker, outcome);
    }
}

/// How many reopenings in a row for a probe timeout are said (once, a
/// warning): a `probe_timeout` below what the upstream takes keeps the
/// breaker from ever closing, each probe timing out.
const PROBE_TIMEOUTS_TO_WARN: u64 = 3;

/// Says the [`PROBE_TIMEOUTS_TO_WARN`]th reopening in a row for a probe
/// timeout, by its event (told outside the breaker's lock, as the sink is):
/// the breaker, `probe_timeout`, and how long that reopening's late probes
/// had been out by the breaker's clock (`late_probes_ms`, longest first).
fn warn_of_probe_timeouts(event: &Event) {
    if event.kind != BreakerEventKind::Reopened {
        return;
    }
    let field = |name| event.data.get(name).and_then(serde_json::Value::as_u64);
    if field("probe_timeouts_in_a_row") != Some(PROBE_TIMEOUTS_TO_WARN) {
        return;
    }
    // The late probes' times, longest first, as the event has them.
    let late: Vec<String> = event
        .data
        .get("late_probes_ms")
        .and_then(serde_json::Value::as_array)
        .map(|late| late.iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    tracing::warn!(
        breaker = %event.breaker_name().unwrap_or(""),
        probe_timeout_ms = field("probe_timeout_ms").unwrap_or(0),
        late_probes_ms = %late.join(", "),
        timeouts_in_a_row = PROBE_TIMEOUTS_TO_WARN,
        "a breaker's probes time out again and again, so it cannot close: the upstream may take longer than probe_timeout (raise it above the upstream's latency, which late_probes_ms gives as the late probes took it); said again only once a probe has closed the breaker or failed outright"
    );
}

/// What the handles of one breaker share.
pub(super) struct Core {
    pub name: Arc<str>,
    pub config: BreakerConfig,
    pub env: Arc<Env>,
    /// `slow_call_threshold` in nanoseconds.
    pub slow_nanos: Option<i128>,
    /// `probe_timeout` in nanoseconds.
    probe_timeout_nanos: i128,
    /// Whether a verdict needs the time before it takes the lock: with the
    /// time window, or a slow-call threshold. Otherwise a verdict reads the
    /// clock only if it trips the breaker.
    pub timed_verdicts: bool,
    /// With a count window of N calls: (N, the fewest failures among N calls
    /// whose rate reaches the threshold), so that a full window is judged
    /// without a division.
    full_window: Option<(u64, u64)>,
    /// The generation while closed, `u64::MAX` otherwise: lets the closed
    /// path hand out permits without the lock.
    pub closed_generation: AtomicU64,
    /// The generation while closed with a full count window of successes
    /// only, which one more success would not trip (see
    /// [`Inner::quiet`]); `u64::MAX` otherwise. A success of that
    /// generation then changes nothing, and is settled without the lock.
    pub quiet_generation: AtomicU64,
    pub inner: Mutex<Inner>,
}

/// The part of a breaker behind its lock.
pub(super) struct Inner {
    pub state: State,
    /// Goes up with every transition; permits of an older one are stale.
    /// Drawn from [`TRANSITIONS`], so that it also orders this breaker's
    /// events after those of any breaker of the same name made before it.
    pub generation: u64,
    pub window: Window,
    /// Failures in a row: of the calls while closed (its trip counts
    /// them); while open, those of the trip that opened it, as its event
    /// says; of the probes while half-open (0: a failed probe reopens it).
    pub consecutive_failures: u32,
    pub trips: u32,
    /// The numbers its health gives while open or forced open (see
    /// [`totals`](Inner::totals)): open, those of the trip that opened it,
    /// as its event says them; forced open, those of the state it was
    /// forced from, as they were then.
    pub held: Totals,
    /// Reopenings in a row for a probe timeout, since it last closed (or
    /// tripped for another reason).
    pub probe_timeouts: u32,
    /// While half-open, when each probe in flight was handed out (Unix
    /// nanoseconds): one entry per held slot, in no order; empty in every
    /// other state. A probe that ends gives back an entry of its own
    /// hand-out time, which its permit keeps: probes handed out at the same
    /// moment time out together, so any one of their entries will do.
    pub probes: Vec<i128>,
    /// Whether `quiet_generation` holds `generation`: closed, the count
    /// window full of successes, and a success would leave every count as
    /// it is. Kept here so that the shared word is written only when this
    /// changes.
    pub quiet: bool,
}

#[derive(Clone, Copy, Debug)]
pub(super) enum State {
    Closed,
    Open {
        opened_at: OffsetDateTime,
        until: OffsetDateTime,
        /// `until` as Unix nanoseconds, to compare with the clock.
        until_nanos: i128,
    },
    /// The probes in flight are [`Inner::probes`].
    HalfOpen {
        opened_at: OffsetDateTime,
        successes: u32,
    },
    ForcedOpen {
        opened_at: OffsetDateTime,
    },
}

impl State {
    pub fn public(&self) -> BreakerState {
        match self {
            State::Closed => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
            State::ForcedOpen { .. } => BreakerState::ForcedOpen,
        }
    }
}

/// The time of one operation: read at most once, and only if needed.
pub(super) struct Now<'a> {
    clock: &'a Arc<dyn Clock>,
    at: Option<i128>,
}

impl<'a> Now<'a> {
    /// Not read yet.
    #[inline]
    pub fn unread(clock: &'a Arc<dyn Clock>) -> Now<'a> {
        Now { clock, at: None }
    }

    /// Unix nanoseconds.
    #[inline]
    pub fn get(&mut self) -> i128 {
        *self.at.get_or_insert_with(|| self.clock.now_unix_nanos())
    }
}

impl Core {
    /// A closed breaker, in a generation of its own, and the event of its
    /// making (stamped with that generation: it comes after every event of
    /// an earlier breaker of the same name).
    pub fn new(name: Arc<str>, config: BreakerConfig, env: Arc<Env>) -> (Core, Event) {
        let generation = next_generation();
        let created = Event::breaker_created(&name).with_breaker_generation(generation);
        let window = Window::new(&config);
        let slow_nanos = config
            .slow_call_threshold
            .map(|t| i128::try_from(t.as_nanos()).unwrap_or(i128::MAX));
        let core = Core {
            name,
            probe_timeout_nanos: i128::try_from(config.probe_timeout.as_nanos())
                .unwrap_or(i128::MAX),
            timed_verdicts: window.needs_time() || slow_nanos.is_some(),
            full_window: config.window_calls.map(|n| {
                let n = u64::from(n);
                (n, fewest_failures(n, config.failure_rate_threshold))
            }),
            slow_nanos,
            config,
            env,
            closed_generation: AtomicU64::new(generation),
            quiet_generation: AtomicU64::new(u64::MAX),
            inner: Mutex::new(Inner {
                state: State::Closed,
                generation,
                window,
                consecutive_failures: 0,
                trips: 0,
                held: Totals::default(),
                probe_timeouts: 0,
                probes: Vec::new(),
                quiet: false,
            }),
        };
        (core, created)
    }

    /// Whether a probe handed out at `handed_out` has held its slot past the
    /// probe timeout at `at` (Unix nanoseconds): such a probe is a slow
    /// call, in the reopening its timeout causes and in its own report.
    pub fn probe_timed_out(&self, handed_out: i128, at: i128) -> bool {
        at.saturating_sub(handed_out) >= self.probe_timeout_nanos
    }

    /// Whether the window's failure rate trips the breaker: at least
    /// `minimum_calls` calls and failures / calls `>= failure_rate_threshold`.
    fn rate_trips(&self, totals: Totals) -> bool {
        if totals.calls < u64::from(self.config.minimum_calls) {
            return false;
        }
        if totals.failures == 0 {
            // The rate is 0.0, under every threshold a config may have.
            return false;
        }
        match self.full_window {
            Some((calls, failures)) if totals.calls == calls => totals.failures >= failures,
            _ => totals.failure_rate().unwrap_or(0.0) >= self.config.failure_rate_threshold,
        }
    }
}

/// The next number of [`TRANSITIONS`].
fn next_generation() -> u64 {
    TRANSITIONS.fetch_add(1, Ordering::Relaxed) + 1
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
    /// Makes the transition `kind` into `state`, and returns its event,
    /// stamped with the new generation (sinks that keep only the latest
    /// state order one breaker's events by it: they are told outside the
    /// lock, and may arrive in another order).
    pub fn set_state(
        &mut self,
        core: &Core,
        state: State,
        kind: BreakerEventKind,
        from: BreakerState,
    ) -> Event {
        // Before the generation moves on: a success settled without the lock
        // from now on is of a generation no longer quiet.
        self.set_quiet(core, false);
        // Probes in flight belong to the generation that ends here.
        self.probes.clear();
        self.state = state;
        match state {
            State::Closed => self.probe_timeouts = 0,
            // Its probes have not failed yet.
            State::HalfOpen { .. } => self.consecutive_failures = 0,
            State::Open { .. } | State::ForcedOpen { .. } => {}
        }
        self.generation = next_generation();
        let closed = if matches!(state, State::Closed) {
            self.generation
        } else {
            u64::MAX
        };
        core.closed_generation.store(closed, Ordering::Release);
        Event::breaker(kind, &core.name, from).with_breaker_generation(self.generation)
    }

    /// Publishes whether a success of the current generation changes
    /// nothing, if that changed.
    #[inline]
    fn set_quiet(&mut self, core: &Core, quiet: bool) {
        if self.quiet != quiet {
            self.quiet = quiet;
            let generation = if quiet { self.generation } else { u64::MAX };
            core.quiet_generation.store(generation, Ordering::Release);
        }
    }

    /// Whether one more success, counted now, would change nothing: closed,
    /// a count window full of successes (the success replaces the oldest,
    /// itself a success), no failure streak, and a window that does not trip
    /// the breaker as it is (the totals stay as they are). Then counting it
    /// can be skipped without anyone being able to tell, which
    /// `Breaker::settle` does without taking the lock. Any verdict that
    /// would change a count still takes the lock.
    #[inline]
    fn quiet(&self, core: &Core, totals: Totals) -> bool {
        matches!(&self.window, Window::Count(w) if w.full_of_successes())
            && matches!(self.state, State::Closed)
            && self.consecutive_failures == 0
            && !core.rate_trips(totals)
    }

    /// The numbers of the state it is in, as its events say them (what
    /// its health gives): closed, its window's (`now`, Unix nanoseconds,
    /// read if the window needs the time); open, those of the trip that
    /// opened it (the window is left as it was, and its time passing
    /// changes nothing); half-open, its probes' (the successes so far: a
    /// failed probe reopens it); forced open, as they were when it was
    /// forced.
    pub fn totals(&mut self, now: impl FnOnce() -> i128) -> Totals {
        match self.state {
            State::Closed => self.window.totals(now),
            State::HalfOpen { successes, .. } => Totals {
                calls: u64::from(successes),
                failures: 0,
                slow: 0,
            },
            State::Open { .. } | State::ForcedOpen { .. } => self.held,
        }
    }

    /// Probe slots held now, while half-open.
    pub fn probes_in_flight(&self) -> u32 {
        u32::try_from(self.probes.len()).unwrap_or(u32::MAX)
    }

    /// Gives back the slot of a probe of the current generation, handed out
    /// at `handed_out`.
    pub fn release_probe(&mut self, handed_out: i128) {
        if let Some(slot) = self.probes.iter().position(|&at| at == handed_out) {
            self.probes.swap_remove(slot);
        }
    }

    /// Half-open → open once any probe has held its slot for the probe
    /// timeout without reporting: before any permit is handed out or
    /// refused, and before a probe's report or drop counts (one that comes
    /// after the timeout is then of a generation gone). Each probe past the
    /// timeout counts as a slow call, so as a failure, as a slow probe's
    /// report would. Its event says how long each of them had been out
    /// (`late_probes_ms`, longest first, by the clock: the latency of a
    /// probe whose late report reopens it, at least that of the others).
    pub fn expire_probes(&mut self, core: &Core, now: &mut Now<'_>) -> Option<Event> {
        let State::HalfOpen { successes, .. } = self.state else {
            return None;
        };
        // With no probe in flight there is nothing to time out, and no
        // need to read the clock.
        let oldest = *self.probes.iter().min()?;
        let at = now.get();
        let timed_out = |handed_out: i128| core.probe_timed_out(handed_out, at);
        if !timed_out(oldest) {
            return None;
        }
        // How long each late probe has been out, by the clock, longest
        // first: the latency of one reporting late now, at least that of
        // the others.
        let mut late: Vec<u64> = self
            .probes
            .iter()
            .filter(|&&handed_out| timed_out(handed_out))
            .map(|&handed_out| {
                let nanos = at.saturating_sub(handed_out);
                whole_millis(Duration::from_nanos(
                    u64::try_from(nanos).unwrap_or(u64::MAX),
                ))
            })
            .collect();
        late.sort_unstable_by(|a, b| b.cmp(a));
        let count = late.len() as u64;
        let totals = Totals {
            calls: u64::from(successes) + count,
            failures: count,
            slow: count,
        };
        let reopened = (BreakerEventKind::Reopened, BreakerState::HalfOpen);
        let event = self.trip(core, at, reopened, TripReason::ProbeTimedOut, totals);
        Some(
            event
                .field("probe_timeout_ms", millis(core.config.probe_timeout))
                .field("probe_timeouts_in_a_row", self.probe_timeouts)
                .field("late_probes_ms", late),
        )
    }

    /// Open → half-open once the open duration has passed; half-open →
    /// open once its probes have timed out ([`expire_probes`](Self::expire_probes)).
    pub fn advance(&mut self, core: &Core, now: &mut Now<'_>) -> Option<Event> {
        if matches!(self.state, State::HalfOpen { .. }) {
            return self.expire_probes(core, now);
        }
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
        let event = self.set_state(
            core,
            State::HalfOpen {
                opened_at,
                successes: 0,
            },
            BreakerEventKind::HalfOpened,
            BreakerState::Open,
        );
        Some(
            event
                .field("opened_at", rfc3339(opened_at))
                .field("open_for_ms", millis(until - opened_at))
                .field("trips", self.trips)
                .field("probes", core.config.half_open_probes),
        )
    }

    /// Counts a verdict of the current generation; returns the transition it
    /// caused. A probe's slot is given back first, by
    /// [`release_probe`](Self::release_probe).
    #[inline]
    pub fn verdict(&mut self, core: &Core, now: &mut Now<'_>, verdict: Verdict) -> Option<Event> {
        let config = &core.config;
        match &mut self.state {
            State::Closed => {
                let totals = self.window.record(|| now.get(), verdict);
                self.consecutive_failures = if verdict.failed() {
                    self.consecutive_failures.saturating_add(1)
                } else {
                    0
                };
                let reason = if config
                    .consecutive_failures
                    .is_some_and(|n| self.consecutive_failures >= n)
                {
                    TripReason::ConsecutiveFailures
                } else if core.rate_trips(totals) {
                    TripReason::FailureRate
                } else {
                    // A failure never leaves the window full of successes.
                    let quiet = verdict == Verdict::Success && self.quiet(core, totals);
                    self.set_quiet(core, quiet);
                    return None;
                };
                let opened = (BreakerEventKind::Opened, BreakerState::Closed);
                Some(self.trip(core, now.get(), opened, reason, totals))
            }
            State::HalfOpen { successes, .. } => {
                let reason = match verdict {
                    Verdict::Success => None,
                    Verdict::Failure => Some(TripReason::FailedProbe),
                    Verdict::Slow => Some(TripReason::SlowProbe),
                };
                if let Some(reason) = reason {
                    let totals = Totals {
                        calls: u64::from(*successes) + 1,
                        failures: 1,
                        slow: u64::from(verdict == Verdict::Slow),
                    };
                    let reopened = (BreakerEventKind::Reopened, BreakerState::HalfOpen);
                    return Some(self.trip(core, now.get(), reopened, reason, totals));
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
                let event = self.set_state(
                    core,
                    State::Closed,
                    BreakerEventKind::Closed,
                    BreakerState::HalfOpen,
                );
                Some(
                    event
                        .field("probe_successes", successes)
                        .field("trips", trips),
                )
            }
            // Permits are never handed out while open.
            State::Open { .. } | State::ForcedOpen { .. } => None,
        }
    }

    /// Opens the breaker at `now` (Unix nanoseconds) by the transition
    /// `(kind, from)`; its event gets the numbers. A reopening reports the
    /// probes' numbers, its streak too: a half-open breaker reopens at its
    /// first failed (or timed-out) probes, so they are the failures in a
    /// row; the streak left from the closed state caused the trip before.
    fn trip(
        &mut self,
        core: &Core,
        now: i128,
        (kind, from): (BreakerEventKind, BreakerState),
        reason: TripReason,
        totals: Totals,
    ) -> Event {
        self.trips = self.trips.saturating_add(1);
        self.probe_timeouts = match reason {
            TripReason::ProbeTimedOut => self.probe_timeouts.saturating_add(1),
            _ => 0,
        };
        let streak = match from {
            BreakerState::HalfOpen => u32::try_from(totals.failures).unwrap_or(u32::MAX),
            _ => self.consecutive_failures,
        };
        // Open, its health says the streak and the numbers its event does.
        self.consecutive_failures = streak;
        self.held = totals;
        let open_for = core.config.open_duration_after(self.trips);
        let now = crate::clock::at_unix_nanos(now);
        let until =
            now.saturating_add(time::Duration::try_from(open_for).unwrap_or(time::Duration::MAX));
        self.set_state(
            core,
            State::Open {
                opened_at: now,
                until,
                until_nanos: until.unix_timestamp_nanos(),
            },
            kind,
            from,
        )
        .field("reason", reason.as_str())
        .field("calls", totals.calls)
        .field("failures", totals.failures)
        .field("slow_calls", totals.slow)
        .field("failure_rate", totals.failure_rate())
        .field("failure_rate_threshold", core.config.failure_rate_threshold)
        .field("minimum_calls", core.config.minimum_calls)
        .field("consecutive_failures", streak)
        .field("trips", self.trips)
        .field("open_for_ms", millis(open_for))
        .field("retry_at", rfc3339(until))
    }
}

/// `d` in whole milliseconds: none if it is negative.
fn millis(d: impl TryInto<Duration>) -> u64 {
    d.try_into().map_or(0, whole_millis)
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

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
