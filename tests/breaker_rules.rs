//! Every breaker rule, driven by a `ManualClock`: no test sleeps.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use taskstore::{
    BreakerConfig, BreakerEventKind, BreakerRegistry, BreakerState, CallError, CallOutcome, Error,
    Event, EventKind, EventLog, EventSink, ManualClock, Record, TripReason,
};
use time::OffsetDateTime;

const START: OffsetDateTime = time::macros::datetime!(2026-01-01 00:00:00 UTC);

struct Rig {
    registry: BreakerRegistry,
    clock: ManualClock,
    log: Arc<EventLog>,
}

fn rig(config: BreakerConfig) -> Rig {
    let clock = ManualClock::new(START);
    let log = Arc::new(EventLog::new());
    let registry = BreakerRegistry::new(config)
        .unwrap()
        .with_clock(Arc::new(clock.clone()))
        .with_sink(log.clone());
    Rig {
        registry,
        clock,
        log,
    }
}

impl Rig {
    /// The breakers' transitions logged: every event but the making of a
    /// breaker (`breaker.created`, see
    /// `a_new_breaker_says_it_was_made_closed`).
    fn events(&self) -> Vec<Event> {
        self.log
            .snapshot()
            .into_iter()
            .map(|r: Record| r.event)
            .filter(|e| e.kind != BreakerEventKind::Created)
            .collect()
    }

    fn kinds(&self) -> Vec<EventKind> {
        self.events().into_iter().map(|e| e.kind).collect()
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn fail(b: &taskstore::Breaker) {
    b.try_acquire().expect("permit").failure();
}

fn succeed(b: &taskstore::Breaker) {
    b.try_acquire().expect("permit").success();
}

/// A registry says when it makes a breaker, and in what state: once, with
/// a generation after every earlier event of a breaker of that name (a
/// sink that keeps a breaker's state learns it before any transition).
#[test]
fn a_new_breaker_says_it_was_made_closed() {
    let rig = rig(BreakerConfig::default());
    let old = rig.registry.breaker("db").unwrap();
    old.force_open();
    let later = self::rig(BreakerConfig::default());
    let b = later.registry.breaker("db").unwrap();
    let _ = later.registry.breaker("db").unwrap(); // the same one: no event
    let events: Vec<Event> = later.log.snapshot().into_iter().map(|r| r.event).collect();
    assert_eq!(events.len(), 1, "{events:?}");
    let created = &events[0];
    assert_eq!(created.kind, BreakerEventKind::Created);
    assert_eq!(created.breaker_name(), Some("db"));
    assert_eq!(created.layer_from, None);
    assert_eq!(created.layer_to.as_deref(), Some("closed"));
    let forced = rig.events().pop().unwrap();
    assert!(created.breaker_generation() > forced.breaker_generation());
    // Its first transition comes after its making.
    b.force_open();
    let forced_again = later.log.snapshot().pop().unwrap().event;
    assert!(forced_again.breaker_generation() > created.breaker_generation());
}

#[test]
fn trips_on_failure_rate_once_minimum_calls_reached() {
    let rig = rig(BreakerConfig::default()
        .minimum_calls(4)
        .failure_rate_threshold(0.5));
    let b = rig.registry.breaker("upstream").unwrap();
    fail(&b);
    fail(&b);
    fail(&b);
    assert_eq!(
        b.state(),
        BreakerState::Closed,
        "three calls are below the minimum of four"
    );
    succeed(&b);
    assert_eq!(b.state(), BreakerState::Open);

    let opened = rig.events().pop().unwrap();
    assert_eq!(opened.kind, BreakerEventKind::Opened);
    assert_eq!(opened.layer_from.as_deref(), Some("closed"));
    assert_eq!(opened.layer_to.as_deref(), Some("open"));
    assert_eq!(opened.data["breaker"], "upstream");
    assert_eq!(opened.data["reason"], "failure_rate");
    assert_eq!(opened.data["calls"], 4);
    assert_eq!(opened.data["failures"], 3);
    assert_eq!(opened.data["failure_rate"], 0.75);
    assert_eq!(opened.data["open_for_ms"], 30_000);
}

#[test]
fn stays_closed_below_the_failure_rate() {
    let rig = rig(BreakerConfig::default()
        .minimum_calls(4)
        .failure_rate_threshold(0.5));
    let b = rig.registry.breaker("upstream").unwrap();
    for _ in 0..10 {
        succeed(&b);
        succeed(&b);
        fail(&b);
    }
    assert_eq!(b.state(), BreakerState::Closed);
    let health = b.health();
    assert_eq!((health.calls, health.failures), (30, 10));
    assert!(rig.events().is_empty());
}

#[test]
fn failures_leave_the_sliding_window() {
    let config = BreakerConfig::default()
        .minimum_calls(4)
        .window(secs(10))
        .window_buckets(10);
    let rig = rig(config);
    let b = rig.registry.breaker("upstream").unwrap();
    fail(&b);
    fail(&b);
    fail(&b);
    rig.clock.advance(secs(10));
    assert_eq!(
        b.health().calls,
        0,
        "the calls of ten seconds ago have left the window"
    );
    fail(&b);
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.health().calls, 1);
}

#[test]
fn trips_on_consecutive_failures_and_a_success_breaks_the_streak() {
    let rig = rig(BreakerConfig::default()
        .minimum_calls(100)
        .consecutive_failures(3));
    let b = rig.registry.breaker("upstream").unwrap();
    fail(&b);
    fail(&b);
    succeed(&b);
    fail(&b);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Closed);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Open);
    let opened = rig.events().pop().unwrap();
    assert_eq!(opened.data["reason"], "consecutive_failures");
    assert_eq!(opened.data["consecutive_failures"], 3);
}

#[test]
fn a_slow_success_counts_as_a_failure() {
    let config = BreakerConfig::default()
        .minimum_calls(100)
        .consecutive_failures(2)
        .slow_call_threshold(secs(1));
    let rig = rig(config);
    let b = rig.registry.breaker("upstream").unwrap();

    let permit = b.try_acquire().unwrap();
    rig.clock.advance(secs(1));
    permit.success(); // exactly the threshold: not slow
    assert_eq!(b.health().slow_calls, 0);

    for _ in 0..2 {
        let permit = b.try_acquire().unwrap();
        rig.clock.advance(Duration::from_millis(1_001));
        permit.success();
    }
    assert_eq!(b.state(), BreakerState::Open);
    let opened = rig.events().pop().unwrap();
    assert_eq!(opened.data["slow_calls"], 2);
    assert_eq!(opened.data["failures"], 2);
}

/// Keeps every event and call outcome it hears.
#[derive(Default)]
struct Heard {
    events: std::sync::Mutex<Vec<Event>>,
    outcomes: std::sync::Mutex<Vec<CallOutcome>>,
}

impl EventSink for Heard {
    fn emit(&self, event: &Event) {
        self.events.lock().unwrap().push(event.clone());
    }

    fn breaker_call(&self, _: &str, outcome: CallOutcome) {
        self.outcomes.lock().unwrap().push(outcome);
    }
}

#[test]
fn a_slow_failure_counts_as_slow_and_is_heard_as_a_failure() {
    // The window counts a slow call as slow whatever it returned; the sink
    // hears what the caller reported (or that a success was slow).
    let heard = Arc::new(Heard::default());
    let clock = ManualClock::new(START);
    let registry = BreakerRegistry::new(
        BreakerConfig::default()
            .minimum_calls(3)
            .failure_rate_threshold(1.0)
            .slow_call_threshold(secs(1))
            .open_duration(secs(10)),
    )
    .unwrap()
    .with_clock(Arc::new(clock.clone()))
    .with_sink(heard.clone());
    let b = registry.breaker("upstream").unwrap();
    let slow_failure = b.try_acquire().unwrap();
    clock.advance(secs(2));
    slow_failure.failure();
    let slow_success = b.try_acquire().unwrap();
    clock.advance(secs(2));
    slow_success.success();
    let health = b.health();
    assert_eq!(
        (health.calls, health.failures, health.slow_calls),
        (2, 2, 2)
    );
    assert_eq!(
        *heard.outcomes.lock().unwrap(),
        [CallOutcome::Failure, CallOutcome::Slow]
    );

    // The third failure trips it; a probe that fails slowly reopens it as a
    // slow probe.
    fail(&b);
    assert_eq!(b.state(), BreakerState::Open);
    clock.advance(secs(10));
    let probe = b.try_acquire().unwrap();
    assert!(probe.is_probe());
    clock.advance(secs(2));
    probe.failure();
    let reopened = heard.events.lock().unwrap().pop().unwrap();
    assert_eq!(reopened.kind, BreakerEventKind::Reopened);
    assert_eq!(reopened.data["reason"], TripReason::SlowProbe.as_str());
    assert_eq!(reopened.data["slow_calls"], 1);
    assert_eq!(
        reopened.data["consecutive_failures"], 1,
        "the probe's streak, not the closed state's 3"
    );
    assert_eq!(
        heard.outcomes.lock().unwrap().last(),
        Some(&CallOutcome::Failure)
    );
}

#[test]
fn open_rejects_until_the_cooldown_then_reports_half_open() {
    let rig = rig(BreakerConfig::default()
        .minimum_calls(1)
        .open_duration(secs(30)));
    let b = rig.registry.breaker("upstream").unwrap();
    fail(&b);
    let rejected = b.try_acquire().unwrap_err();
    assert_eq!(&*rejected.breaker, "upstream");
    assert_eq!(rejected.state, BreakerState::Open);
    assert_eq!(rejected.retry_at, Some(START + secs(30)));
    assert!(rejected.to_string().contains("upstream"), "{rejected}");

    rig.clock.advance(secs(30) - Duration::from_millis(1));
    assert_eq!(b.state(), BreakerState::Open);
    assert!(b.try_acquire().is_err());
    assert_eq!(b.health().next_probe_at, Some(START + secs(30)));

    rig.clock.advance(Duration::from_millis(1));
    assert_eq!(
        b.state(),
        BreakerState::HalfOpen,
        "state() reports the lapsed cooldown"
    );
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert_eq!(
        rig.kinds(),
        [BreakerEventKind::Opened, BreakerEventKind::HalfOpened],
        "open to half-open is emitted exactly once"
    );
    let half = rig.events().pop().unwrap();
    assert_eq!(half.layer_from.as_deref(), Some("open"));
    assert_eq!(half.layer_to.as_deref(), Some("half_open"));
    assert_eq!(half.data["open_for_ms"], 30_000);
}

#[test]
fn half_open_limits_probes_and_a_dropped_permit_frees_its_slot() {
    let rig = rig(BreakerConfig::default()
        .minimum_calls(1)
        .half_open_probes(2)
        .probe_successes_to_close(3));
    let b = rig.registry.breaker("upstream").unwrap();
    fail(&b);
    rig.clock.advance(secs(30));
    let p1 = b.try_acquire().unwrap();
    let p2 = b.try_acquire().unwrap();
    assert!(p1.is_probe() && p2.is_probe());
    let rejected = b.try_acquire().unwrap_err();
    assert_eq!(rejected.state, BreakerState::HalfOpen);
    assert_eq!(rejected.retry_at, None);
    assert_eq!(b.health().probes_in_flight, 2);

    drop(p1);
    assert_eq!(b.health().probes_in_flight, 1);
    let p3 = b
        .try_acquire()
        .expect("the dropped permit gave its slot back");
    p2.success();
    p3.success();
    assert_eq!(b.state(), BreakerState::HalfOpen, "two of three successes");
    succeed(&b);
    assert_eq!(b.state(), BreakerState::Closed);
}

/// A probe that never reports (an upstream call with no timeout) holds its
/// half-open slot only for `probe_timeout`: past it the breaker reopens as
/// for a slow probe, probes again after its
/// open duration, and the hung probe's late report counts for nothing.
/// (The slot was held for ever: every call rejected, the breaker never
/// probing again.)
#[test]
fn a_probe_that_never_reports_holds_its_slot_for_the_probe_timeout_only() {
    let rig = rig(BreakerConfig::default()
        .minimum_calls(1)
        .open_duration(secs(5))
        .probe_timeout(secs(10)));
    let b = rig.registry.breaker("upstream").unwrap();
    fail(&b);
    rig.clock.advance(secs(5));
    let hung = b.try_acquire().unwrap();
    assert!(hung.is_probe());
    rig.clock.advance(secs(9));
    let rejected = b.try_acquire().unwrap_err();
    assert_eq!(
        (rejected.state, rejected.retry_at),
        (BreakerState::HalfOpen, None),
        "within its timeout the probe holds its slot"
    );
    rig.clock.advance(secs(1));
    let rejected = b.try_acquire().unwrap_err();
    assert_eq!(rejected.state, BreakerState::Open, "reopened");
    assert_eq!(rejected.retry_at, Some(START + secs(5 + 10 + 5)));
    let reopened = rig.events().into_iter().last().unwrap();
    assert_eq!(
        reopened.kind,
        EventKind::Breaker(BreakerEventKind::Reopened),
        "{reopened:?}"
    );
    rig.clock.advance(secs(5));
    let probe = b
        .try_acquire()
        .expect("a new probe after the open duration");
    probe.success();
    assert_eq!(b.state(), BreakerState::Closed);
    hung.failure();
    assert_eq!(
        b.state(),
        BreakerState::Closed,
        "the hung probe's late report counts for nothing"
    );
    // A probe reporting past its timeout, with no call between to see it
    // lapse, counts for nothing either: the breaker reopens.
    fail(&b);
    rig.clock.advance(secs(5));
    let late = b.try_acquire().unwrap();
    assert!(late.is_probe());
    rig.clock.advance(secs(10));
    late.success();
    let reopened = rig.events().into_iter().last().unwrap();
    assert_eq!(reopened.data["reason"], "probe_timed_out", "{reopened:?}");
    assert_eq!(
        b.state(),
        BreakerState::Open,
        "the late success did not close it"
    );
    // Nor does one dropped past its timeout give its slot back as if in
    // time: the breaker reopens all the same.
    rig.clock.advance(secs(5));
    let dropped = b.try_acquire().unwrap();
    assert!(dropped.is_probe());
    rig.clock.advance(secs(10));
    drop(dropped);
    assert_eq!(b.state(), BreakerState::Open, "reopened by the drop");
}

/// With more than one probe slot, a probe that never reports still holds
/// its slot for `probe_timeout` only, however often the other slot is taken
/// and given back meanwhile: past it the breaker reopens, and the event
/// counts the timed-out probe alone (not the one still within its time).
/// (The timeout counted only with every slot held, from the latest
/// hand-out: a probe cancelled every second kept the hung one's slot for
/// ever.)
#[test]
fn a_hung_probe_reopens_the_breaker_while_other_probes_come_and_go() {
    let rig = rig(BreakerConfig::default()
        .minimum_calls(1)
        .open_duration(secs(5))
        .half_open_probes(2)
        .probe_timeout(secs(10)));
    let b = rig.registry.breaker("upstream").unwrap();
    fail(&b);
    rig.clock.advance(secs(5));
    let hung = b.try_acquire().unwrap();
    assert!(hung.is_probe());
    for second in 1..10 {
        rig.clock.advance(secs(1));
        let cancelled = b.try_acquire().expect("the other slot is free");
        drop(cancelled);
        let health = b.health();
        assert_eq!(
            (health.state, health.probes_in_flight),
            (BreakerState::HalfOpen, 1),
            "{second} s after the hung probe: within its timeout"
        );
    }
    let recent = b.try_acquire().expect("the other slot is free");
    rig.clock.advance(secs(1));
    let rejected = b.try_acquire().unwrap_err();
    assert_eq!(
        (rejected.state, rejected.retry_at),
        (BreakerState::Open, Some(START + secs(5 + 10 + 5))),
        "reopened once the hung probe had held its slot for the probe timeout"
    );
    let reopened = rig.events().into_iter().last().unwrap();
    assert_eq!(reopened.kind, BreakerEventKind::Reopened, "{reopened:?}");
    assert_eq!(reopened.data["reason"], "probe_timed_out");
    assert_eq!(
        (&reopened.data["calls"], &reopened.data["slow_calls"]),
        (&1.into(), &1.into()),
        "{reopened:?}"
    );
    recent.success();
    hung.success();
    assert_eq!(
        b.state(),
        BreakerState::Open,
        "late reports count for nothing"
    );
}

/// A probe timeout counts the timed-out probes as failures (slow calls
/// are failures everywhere else), and its streak is theirs, not the one
/// left from the closed state. (It said `failures: 0`, `failure_rate: 0.0`
/// beside `slow_calls: 1`, and the closed state's streak of 3.)
#[test]
fn a_probe_timeout_counts_the_timed_out_probes_as_failures() {
    let rig = rig(BreakerConfig::default()
        .consecutive_failures(3)
        .open_duration(secs(5))
        .probe_successes_to_close(2)
        .probe_timeout(secs(10)));
    let b = rig.registry.breaker("upstream").unwrap();
    for _ in 0..3 {
        fail(&b);
    }
    assert_eq!(b.state(), BreakerState::Open);
    rig.clock.advance(secs(5));
    succeed(&b);
    let hung = b.try_acquire().unwrap();
    assert!(hung.is_probe());
    rig.clock.advance(secs(10));
    assert_eq!(b.state(), BreakerState::Open);
    let reopened = rig.events().into_iter().last().unwrap();
    assert_eq!(reopened.data["reason"], "probe_timed_out", "{reopened:?}");
    let numbers = [
        "calls",
        "failures",
        "slow_calls",
        "failure_rate",
        "consecutive_failures",
    ]
    .map(|field| (field, reopened.data[field].clone()));
    assert_eq!(
        numbers,
        [
            ("calls", 2.into()),
            ("failures", 1.into()),
            ("slow_calls", 1.into()),
            ("failure_rate", 0.5.into()),
            ("consecutive_failures", 1.into()),
        ]
    );
    drop(hung);
}

/// An open duration past what `u64` nanoseconds hold (about 584 years) is
/// kept whole, as is its growth up to `max_open_duration`. (It was cut to
/// 584 years.)
#[test]
fn an_open_duration_of_centuries_is_kept_whole() {
    let year = secs(365 * 24 * 3600);
    let config = BreakerConfig::default()
        .minimum_calls(1)
        .open_duration(year * 600)
        .open_duration_multiplier(2.0)
        .max_open_duration(year * 1500);
    config.validate().unwrap();
    let got = [1, 2, 3, u32::MAX].map(|trips| config.open_duration_after(trips));
    assert_eq!(got, [year * 600, year * 1200, year * 1500, year * 1500]);
    assert_eq!(
        BreakerConfig::default()
            .open_duration(Duration::MAX)
            .max_open_duration(Duration::MAX)
            .open_duration_after(1),
        Duration::MAX
    );
    let rig = rig(config);
    let b = rig.registry.breaker("upstream").unwrap();
    fail(&b);
    let rejected = b.try_acquire().unwrap_err();
    assert_eq!(rejected.retry_at, Some(START + year * 600));
}

#[test]
fn probe_successes_close_the_breaker_and_clear_the_window() {
    let rig = rig(BreakerConfig::default()
        .minimum_calls(2)
        .probe_successes_to_close(2));
    let b = rig.registry.breaker("upstream").unwrap();
    fail(&b);
    fail(&b);
    rig.clock.advance(secs(30));
    succeed(&b);
    assert_eq!(b.state(), BreakerState::HalfOpen);
    succeed(&b);
    assert_eq!(b.state(), BreakerState::Closed);
    let health = b.health();
    assert_eq!((health.calls, health.trips, health.opened_at), (0, 0, None));
    let closed = rig.events().pop().unwrap();
    assert_eq!(closed.kind, BreakerEventKind::Closed);
    assert_eq!(closed.data["probe_successes"], 2);
    assert_eq!(closed.layer_from.as_deref(), Some("half_open"));
    // The old failures are gone: one new failure does not trip it.
    fail(&b);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn a_failed_probe_reopens_with_a_growing_capped_cooldown() {
    let config = BreakerConfig::default()
        .minimum_calls(1)
        .open_duration(secs(10))
        .open_duration_multiplier(2.0)
        .max_open_duration(secs(25));
    let rig = rig(config);
    let b = rig.registry.breaker("upstream").unwrap();
    fail(&b);
    let mut cooldowns = vec![];
    for _ in 0..3 {
        let retry_at = b.try_acquire().unwrap_err().retry_at.unwrap();
        cooldowns.push((retry_at - rig.clock_now(&b)).whole_seconds());
        rig.clock.set(retry_at);
        fail(&b); // the probe fails
    }
    assert_eq!(cooldowns, [10, 20, 25]);
    let reopened = rig.events().pop().unwrap();
    assert_eq!(reopened.kind, BreakerEventKind::Reopened);
    assert_eq!(reopened.data["reason"], "failed_probe");
    assert_eq!(reopened.data["trips"], 4);

    // Closing resets the growth.
    rig.clock.advance(secs(25));
    succeed(&b);
    assert_eq!(b.state(), BreakerState::Closed);
    fail(&b);
    let retry_at = b.try_acquire().unwrap_err().retry_at.unwrap();
    assert_eq!((retry_at - rig.clock_now(&b)).whole_seconds(), 10);
}

impl Rig {
    fn clock_now(&self, _: &taskstore::Breaker) -> OffsetDateTime {
        use taskstore::Clock;
        self.clock.now()
    }
}

#[test]
fn a_verdict_from_before_a_transition_does_not_count() {
    let rig = rig(BreakerConfig::default()
        .minimum_calls(1)
        .probe_successes_to_close(1));
    let b = rig.registry.breaker("upstream").unwrap();
    let early = b.try_acquire().unwrap();
    fail(&b);
    assert_eq!(b.state(), BreakerState::Open);
    rig.clock.advance(secs(30));
    assert_eq!(b.state(), BreakerState::HalfOpen);
    early.success(); // taken while closed: must not close the half-open breaker
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert_eq!(b.health().probe_successes, 0);
}

#[test]
fn force_open_holds_until_reset() {
    let rig = rig(BreakerConfig::default());
    let b = rig.registry.breaker("upstream").unwrap();
    b.force_open();
    b.force_open();
    let rejected = b.try_acquire().unwrap_err();
    assert_eq!(
        (rejected.state, rejected.retry_at),
        (BreakerState::ForcedOpen, None)
    );
    rig.clock.advance(secs(3600));
    assert_eq!(b.state(), BreakerState::ForcedOpen);
    b.reset();
    assert_eq!(b.state(), BreakerState::Closed);
    succeed(&b);
    assert_eq!(
        rig.kinds(),
        [BreakerEventKind::ForcedOpen, BreakerEventKind::Reset]
    );
    let events = rig.events();
    assert_eq!(events[0].layer_from.as_deref(), Some("closed"));
    assert_eq!(events[1].layer_from.as_deref(), Some("forced_open"));
}

#[test]
fn reset_closes_an_open_breaker_and_clears_its_counts() {
    let rig = rig(BreakerConfig::default().minimum_calls(1));
    let b = rig.registry.breaker("upstream").unwrap();
    fail(&b);
    assert_eq!(b.state(), BreakerState::Open);
    b.reset();
    let health = b.health();
    assert_eq!(
        (health.state, health.calls, health.trips),
        (BreakerState::Closed, 0, 0)
    );
}

#[test]
fn call_counts_the_closure_and_skips_it_when_rejected() {
    let rig = rig(BreakerConfig::default().minimum_calls(3));
    let b = rig.registry.breaker("upstream").unwrap();
    assert_eq!(b.call(|| Ok::<_, String>(7)).unwrap(), 7);
    match b.call(|| Err::<u32, _>("boom".to_owned())) {
        Err(e @ CallError::Failed { .. }) => {
            // The error names the breaker, as a rejection does.
            assert_eq!(e.to_string(), "call through breaker upstream failed: boom");
            assert_eq!(e.into_failure().as_deref(), Some("boom"));
        }
        other => panic!("expected the closure's error, got {other:?}"),
    }
    match b.call(|| Err::<u32, _>("boom".to_owned())) {
        Err(CallError::Failed { breaker, .. }) => assert_eq!(&*breaker, "upstream"),
        other => panic!("expected the closure's error, got {other:?}"),
    }
    assert_eq!(b.state(), BreakerState::Open);
    let mut ran = false;
    let result = b.call(|| {
        ran = true;
        Ok::<_, String>(1)
    });
    assert!(matches!(result, Err(CallError::Rejected(_))));
    assert!(!ran, "a rejected call must not run the closure");
}

#[test]
fn the_registry_hands_out_one_breaker_per_name() {
    let rig = rig(BreakerConfig::default().minimum_calls(1));
    let a = rig.registry.breaker("db").unwrap();
    let again = rig.registry.breaker("db").unwrap();
    fail(&a);
    assert_eq!(
        again.state(),
        BreakerState::Open,
        "both handles are one breaker"
    );
    assert_eq!(
        rig.registry.breaker("cache").unwrap().state(),
        BreakerState::Closed
    );
    assert_eq!(rig.registry.len(), 2);
}

#[test]
fn the_registry_caps_the_number_of_breakers() {
    let registry = BreakerRegistry::new(BreakerConfig::default())
        .unwrap()
        .with_max_breakers(2);
    registry.breaker("a").unwrap();
    registry.breaker("b").unwrap();
    registry
        .breaker("a")
        .expect("an existing breaker is not a new one");
    match registry.breaker("c") {
        Err(Error::TooManyBreakers { name, limit }) => assert_eq!((name.as_str(), limit), ("c", 2)),
        other => panic!("expected TooManyBreakers, got {other:?}"),
    }
    assert_eq!(registry.len(), 2);
}

#[test]
fn the_registry_refuses_an_empty_or_overlong_name_and_makes_nothing() {
    use taskstore::MAX_BREAKER_NAME;
    let registry = BreakerRegistry::new(BreakerConfig::default()).unwrap();
    let longest = "n".repeat(MAX_BREAKER_NAME);
    registry
        .breaker(&longest)
        .expect("a name of the longest length is a name");
    // A name goes into every event and metric label of its breaker: one of
    // a megabyte would be copied into each, and the error echoes only its
    // head.
    let overlong = format!("{}{}", "é".repeat(40), "x".repeat(1 << 20));
    for (name, why) in [("", "empty"), (overlong.as_str(), "longer than")] {
        // An invalid config too: the error would carry the name whole.
        let invalid = BreakerConfig::default().failure_rate_threshold(2.0);
        for made in [
            registry.breaker(name),
            registry.breaker_with(name, BreakerConfig::default()),
            registry.breaker_with(name, invalid),
        ] {
            match made {
                Err(Error::InvalidBreakerName {
                    name: head,
                    len,
                    reason,
                }) => {
                    assert_eq!(len, name.len());
                    assert!(reason.contains(why), "{reason}");
                    assert!(
                        name.starts_with(head.strip_suffix("...").unwrap_or(&head)),
                        "{head:?}"
                    );
                    assert!(head.len() <= 64, "{} bytes echoed", head.len());
                }
                other => panic!("expected InvalidBreakerName, got {other:?}"),
            }
        }
    }
    let message = registry.breaker(&overlong).unwrap_err().to_string();
    assert!(message.len() < 300, "{message}");
    assert!(
        message.contains(&(1usize << 20 | 80).to_string()),
        "{message}"
    );
    assert_eq!(registry.len(), 1);
}

/// A name with a control character or a line break is refused, as a task
/// or instance id with one is: a name goes as it is into every event,
/// metric label and `tracing` field of its breaker, where a newline starts
/// a forged log line and a control character (an escape sequence, a NUL)
/// reaches a terminal or an exporter's text format. The error says which
/// character, where, and carries the name escaped. (Every such name made a
/// breaker.)
#[test]
fn the_registry_refuses_a_name_with_a_control_character_and_makes_nothing() {
    let rig = rig(BreakerConfig::default());
    for (name, character, at) in [
        ("db\n", "U+000A", 2),
        ("db\nlevel=error msg=forged", "U+000A", 2),
        ("a\rb", "U+000D", 1),
        ("\0", "U+0000", 0),
        ("tab\there", "U+0009", 3),
        ("esc\u{1b}[31m", "U+001B", 3),
        ("del\u{7f}", "U+007F", 3),
        ("nel\u{85}", "U+0085", 3),
        ("é\u{2028}", "U+2028", 2),
        ("\u{2029}", "U+2029", 0),
    ] {
        for made in [
            rig.registry.breaker(name),
            rig.registry.breaker_with(name, BreakerConfig::default()),
        ] {
            match made {
                Err(error @ Error::InvalidBreakerName { .. }) => {
                    let Error::InvalidBreakerName {
                        name: echoed,
                        len,
                        reason,
                    } = &error
                    else {
                        unreachable!()
                    };
                    assert_eq!((echoed.as_str(), *len), (name, name.len()));
                    assert_eq!(
                        reason,
                        &format!(
                            "has a control character or line break ({character}) at byte {at}"
                        )
                    );
                    let message = error.to_string();
                    assert!(
                        !message.chars().any(char::is_control),
                        "the message shows the name escaped: {message:?}"
                    );
                }
                other => panic!("{name:?}: expected InvalidBreakerName, got {other:?}"),
            }
        }
    }
    assert_eq!(rig.registry.len(), 0, "nothing was made");
    assert!(rig.log.is_empty(), "{:?}", rig.log.snapshot());
    // Any other character is a name's.
    for name in [
        "payments-api",
        "db primary",
        "https://api.example.com:443/v1",
        "zahlungsdienst-ü",
        "名前",
    ] {
        rig.registry.breaker(name).unwrap();
    }
    assert_eq!(rig.registry.len(), 5);
}

#[test]
fn breaker_with_uses_its_config_and_refuses_a_conflicting_one() {
    let registry = BreakerRegistry::new(BreakerConfig::default()).unwrap();
    let custom = BreakerConfig::default().minimum_calls(3);
    let b = registry.breaker_with("db", custom.clone()).unwrap();
    assert_eq!(b.config().minimum_calls, 3);
    registry
        .breaker_with("db", custom)
        .expect("the same config again is fine");
    // The conflict names the breaker and the first field that differs.
    let conflict = registry
        .breaker_with("db", BreakerConfig::default())
        .unwrap_err();
    assert!(
        matches!(
            &conflict,
            Error::BreakerConfigConflict { name, field: "minimum_calls" } if name == "db"
        ),
        "{conflict:?}"
    );
    assert!(
        conflict.to_string().contains("\"db\"") && conflict.to_string().contains("minimum_calls"),
        "{conflict}"
    );
    // A bad config for a named breaker names the breaker; one checked
    // alone (`validate`, a registry's default) names none.
    let invalid = registry
        .breaker_with("other", BreakerConfig::default().half_open_probes(0))
        .unwrap_err();
    assert!(
        matches!(
            &invalid,
            Error::InvalidBreakerConfig {
                breaker: Some(name),
                field: "half_open_probes",
                ..
            } if name == "other"
        ),
        "{invalid:?}"
    );
    assert!(invalid.to_string().contains("\"other\""), "{invalid}");
    assert!(matches!(
        BreakerConfig::default().half_open_probes(0).validate(),
        Err(Error::InvalidBreakerConfig { breaker: None, .. })
    ));
}

/// Every field of a config is told apart when it differs, by its own name
/// (the comparison names each field itself: one named wrong fails this).
#[test]
fn a_conflict_names_each_field_that_differs() {
    let registry = BreakerRegistry::new(BreakerConfig::default()).unwrap();
    registry.breaker("b").unwrap();
    let cases = [
        (
            BreakerConfig::default().failure_rate_threshold(0.25),
            "failure_rate_threshold",
        ),
        (
            BreakerConfig::default().window(Duration::from_secs(61)),
            "window",
        ),
        (
            BreakerConfig::default().window_buckets(11),
            "window_buckets",
        ),
        (BreakerConfig::default().window_calls(100), "window_calls"),
        (BreakerConfig::default().minimum_calls(7), "minimum_calls"),
        (
            BreakerConfig::default().consecutive_failures(3),
            "consecutive_failures",
        ),
        (
            BreakerConfig::default().slow_call_threshold(Duration::from_secs(1)),
            "slow_call_threshold",
        ),
        (
            BreakerConfig::default().open_duration(Duration::from_secs(31)),
            "open_duration",
        ),
        (
            BreakerConfig::default().open_duration_multiplier(3.0),
            "open_duration_multiplier",
        ),
        (
            BreakerConfig::default().max_open_duration(Duration::from_secs(3_601)),
            "max_open_duration",
        ),
        (
            BreakerConfig::default().half_open_probes(2),
            "half_open_probes",
        ),
        (
            BreakerConfig::default().probe_successes_to_close(2),
            "probe_successes_to_close",
        ),
        (
            BreakerConfig::default().probe_timeout(Duration::from_secs(61)),
            "probe_timeout",
        ),
    ];
    for (config, expected) in cases {
        assert_ne!(
            config,
            BreakerConfig::default(),
            "{expected}: the case changes nothing"
        );
        match registry.breaker_with("b", config) {
            Err(Error::BreakerConfigConflict { field, .. }) => assert_eq!(field, expected),
            other => panic!("{expected}: expected BreakerConfigConflict, got {other:?}"),
        }
    }
}

#[test]
fn invalid_configs_are_typed_errors_naming_the_field() {
    let cases = [
        (
            BreakerConfig::default().failure_rate_threshold(1.01),
            "failure_rate_threshold",
        ),
        (
            BreakerConfig::default().failure_rate_threshold(-0.1),
            "failure_rate_threshold",
        ),
        (
            BreakerConfig::default().failure_rate_threshold(f64::NAN),
            "failure_rate_threshold",
        ),
        (BreakerConfig::default().window(Duration::ZERO), "window"),
        // A bucket lasts at least 1 ns: 999 ns in 1,000 buckets was kept
        // as 1,000 ns, and 10 ns as 1,000 (100 times the window set).
        (
            BreakerConfig::default()
                .window(Duration::from_nanos(999))
                .window_buckets(1000),
            "window",
        ),
        (BreakerConfig::default().window_buckets(0), "window_buckets"),
        (BreakerConfig::default().minimum_calls(0), "minimum_calls"),
        (
            BreakerConfig::default().consecutive_failures(0),
            "consecutive_failures",
        ),
        (
            BreakerConfig::default().slow_call_threshold(Duration::ZERO),
            "slow_call_threshold",
        ),
        (
            BreakerConfig::default().open_duration(Duration::ZERO),
            "open_duration",
        ),
        (
            BreakerConfig::default().open_duration_multiplier(0.5),
            "open_duration_multiplier",
        ),
        (
            BreakerConfig::default().open_duration_multiplier(f64::INFINITY),
            "open_duration_multiplier",
        ),
        (
            BreakerConfig::default().max_open_duration(secs(1)),
            "max_open_duration",
        ),
        (
            BreakerConfig::default().half_open_probes(0),
            "half_open_probes",
        ),
        (
            BreakerConfig::default().probe_timeout(Duration::ZERO),
            "probe_timeout",
        ),
        (
            BreakerConfig::default().probe_successes_to_close(0),
            "probe_successes_to_close",
        ),
    ];
    assert_refused(cases);
    // A threshold of 0 would trip a breaker that saw no failure (a rate
    // of 0 reaches it): refused, as resilience4j does. (It was taken.)
    assert_refused([
        (
            BreakerConfig::default().failure_rate_threshold(0.0),
            "failure_rate_threshold",
        ),
        (
            BreakerConfig::default().failure_rate_threshold(-0.0),
            "failure_rate_threshold",
        ),
    ]);
    BreakerConfig::default()
        .failure_rate_threshold(f64::MIN_POSITIVE)
        .validate()
        .unwrap();
    BreakerConfig::default()
        .failure_rate_threshold(1.0)
        .validate()
        .unwrap();
}

#[test]
fn the_health_snapshot_serializes_every_breaker() {
    let rig = rig(BreakerConfig::default().minimum_calls(2));
    let db = rig.registry.breaker("db").unwrap();
    rig.registry.breaker("cache").unwrap();
    fail(&db);
    fail(&db);
    let report = rig.registry.snapshot();
    let names: Vec<_> = report.breakers.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["cache", "db"]);
    let json = serde_json::to_value(&report).unwrap();
    let db = &json["breakers"][1];
    assert_eq!(db["state"], "open");
    assert_eq!(db["failure_rate"], 1.0);
    assert_eq!(db["calls"], 2);
    assert_eq!(db["opened_at"], "2026-01-01T00:00:00Z");
    assert_eq!(db["next_probe_at"], "2026-01-01T00:00:30Z");
    assert_eq!(json["breakers"][0]["failure_rate"], serde_json::Value::Null);
    let back: taskstore::RegistryHealth = serde_json::from_value(json).unwrap();
    assert_eq!(back, report);
}

// ---- the count window (`window_calls`) and reading the clock ----

#[test]
fn the_count_window_judges_exactly_the_last_n_calls_however_old() {
    let rig = rig(BreakerConfig::default()
        .window_calls(4)
        .minimum_calls(4)
        .failure_rate_threshold(0.75));
    let b = rig.registry.breaker("upstream").unwrap();
    fail(&b);
    fail(&b);
    succeed(&b);
    succeed(&b); // [F F S S]: 0.5
    assert_eq!(b.state(), BreakerState::Closed);

    rig.clock.advance(secs(24 * 3600));
    let health = b.health();
    assert_eq!(
        (health.calls, health.failures),
        (4, 2),
        "a day later the count window still holds the last four calls"
    );

    fail(&b); // [F S S F]: the first failure left
    fail(&b); // [S S F F]: the second one left
    assert_eq!(b.state(), BreakerState::Closed);
    let health = b.health();
    assert_eq!((health.calls, health.failures), (4, 2));
    rig.clock.advance(secs(3 * 3600));
    fail(&b); // [S F F F]: 0.75
    assert_eq!(b.state(), BreakerState::Open);
    let opened = rig.events().pop().unwrap();
    assert_eq!(opened.data["reason"], "failure_rate");
    assert_eq!(opened.data["calls"], 4);
    assert_eq!(opened.data["failures"], 3);
    assert_eq!(opened.data["failure_rate"], 0.75);
    assert_eq!(
        opened.data["retry_at"], "2026-01-02T03:00:30Z",
        "the trip is stamped with the clock's time"
    );
}

#[test]
fn the_count_window_waits_for_minimum_calls() {
    let rig = rig(BreakerConfig::default().window_calls(10).minimum_calls(5));
    let b = rig.registry.breaker("upstream").unwrap();
    for _ in 0..4 {
        fail(&b);
    }
    assert_eq!(
        b.state(),
        BreakerState::Closed,
        "four failures are below the minimum of five"
    );
    fail(&b);
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(rig.events().pop().unwrap().data["calls"], 5);
}

#[test]
fn the_count_window_reports_calls_failures_and_slow_calls() {
    let rig = rig(BreakerConfig::default()
        .window_calls(3)
        .minimum_calls(3)
        .failure_rate_threshold(1.0)
        .slow_call_threshold(secs(1)));
    let b = rig.registry.breaker("upstream").unwrap();
    let slow = b.try_acquire().unwrap();
    rig.clock.advance(secs(2));
    slow.success();
    fail(&b);
    succeed(&b);
    let health = b.health();
    assert_eq!(
        (health.calls, health.failures, health.slow_calls),
        (3, 2, 1)
    );
    assert_eq!(health.failure_rate, Some(2.0 / 3.0));
    succeed(&b); // the slow call leaves
    let health = b.health();
    assert_eq!(
        (health.calls, health.failures, health.slow_calls),
        (3, 1, 0)
    );
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn closing_and_reset_clear_the_count_window() {
    let rig = rig(BreakerConfig::default().window_calls(10).minimum_calls(2));
    let b = rig.registry.breaker("upstream").unwrap();
    fail(&b);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Open);
    rig.clock.advance(secs(30));
    succeed(&b); // the probe closes it
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.health().calls, 0, "closing cleared the window");
    fail(&b);
    assert_eq!(
        b.state(),
        BreakerState::Closed,
        "the failures before the trip are gone"
    );
    fail(&b);
    assert_eq!(b.state(), BreakerState::Open);

    b.reset();
    assert_eq!(b.health().calls, 0, "reset cleared the window");
    fail(&b);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn a_verdict_from_before_a_trip_does_not_count_in_the_count_window() {
    let rig = rig(BreakerConfig::default().window_calls(5).minimum_calls(1));
    let b = rig.registry.breaker("upstream").unwrap();
    let early = b.try_acquire().unwrap();
    let earlier = b.try_acquire().unwrap();
    fail(&b);
    assert_eq!(b.state(), BreakerState::Open);
    rig.clock.advance(secs(30));
    succeed(&b); // the probe closes it: a new generation of closed
    assert_eq!(b.state(), BreakerState::Closed);
    early.failure(); // taken before the trip: must not count, nor trip it
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.health().calls, 0);
    earlier.success();
    assert_eq!(b.health().calls, 0);
}

#[test]
fn an_owned_permit_moves_into_a_thread_and_follows_the_same_rules() {
    let rig = rig(BreakerConfig::default().window_calls(5).minimum_calls(1));
    let b = rig.registry.breaker("upstream").unwrap();
    let stale = b.try_acquire_owned().unwrap();
    let permit = b.try_acquire_owned().unwrap();
    assert!(!permit.is_probe());
    std::thread::spawn(move || permit.failure()).join().unwrap();
    assert_eq!(b.state(), BreakerState::Open);
    rig.clock.advance(secs(30));
    let probe = b.try_acquire_owned().unwrap();
    assert!(probe.is_probe());
    assert!(b.try_acquire_owned().is_err(), "one probe slot");
    drop(probe);
    assert_eq!(
        b.health().probes_in_flight,
        0,
        "a dropped probe frees its slot"
    );
    stale.success(); // taken while closed: does not close the half-open breaker
    assert_eq!(b.state(), BreakerState::HalfOpen);
    let probe = b.try_acquire_owned().unwrap();
    assert_eq!(probe.breaker().name(), "upstream");
    probe.success();
    assert_eq!(b.state(), BreakerState::Closed);
}

/// A `ManualClock` that counts how often it is read.
#[derive(Debug)]
struct CountingClock {
    inner: ManualClock,
    now: AtomicU64,
    nanos: AtomicU64,
}

impl CountingClock {
    /// (reads of `now`, reads of `now_unix_nanos`).
    fn reads(&self) -> (u64, u64) {
        (self.now.load(SeqCst), self.nanos.load(SeqCst))
    }
}

impl taskstore::Clock for CountingClock {
    fn now(&self) -> OffsetDateTime {
        self.now.fetch_add(1, SeqCst);
        self.inner.now()
    }

    fn now_unix_nanos(&self) -> i128 {
        self.nanos.fetch_add(1, SeqCst);
        self.inner.now_unix_nanos()
    }
}

fn counting_rig(config: BreakerConfig) -> (Rig, Arc<CountingClock>) {
    let clock = ManualClock::new(START);
    let counting = Arc::new(CountingClock {
        inner: clock.clone(),
        now: AtomicU64::new(0),
        nanos: AtomicU64::new(0),
    });
    let log = Arc::new(EventLog::new());
    let registry = BreakerRegistry::new(config)
        .unwrap()
        .with_clock(counting.clone())
        .with_sink(log.clone());
    (
        Rig {
            registry,
            clock,
            log,
        },
        counting,
    )
}

#[test]
fn the_closed_path_reads_no_clock_with_a_count_window() {
    let (rig, clock) = counting_rig(
        BreakerConfig::default()
            .window_calls(100)
            .minimum_calls(100)
            .consecutive_failures(5),
    );
    let b = rig.registry.breaker("upstream").unwrap();
    for i in 0..1_000 {
        let permit = b.try_acquire().unwrap();
        if i % 4 == 0 {
            permit.failure();
        } else {
            permit.success();
        }
        drop(b.try_acquire().unwrap()); // no verdict
        let _ = b.call(|| Ok::<_, ()>(i));
    }
    assert_eq!(
        clock.reads(),
        (0, 0),
        "no acquire or verdict read the clock"
    );
    assert!(rig.events().is_empty());

    for _ in 0..4 {
        fail(&b);
    }
    assert_eq!(clock.reads(), (0, 0));
    fail(&b); // the fifth failure in a row trips it
    assert_eq!(
        clock.reads(),
        (0, 1),
        "the trip read the time once, to stamp it"
    );
    let opened = rig.events().pop().unwrap();
    assert_eq!(opened.data["reason"], "consecutive_failures");
    assert_eq!(opened.data["retry_at"], "2026-01-01T00:00:30Z");
    assert_eq!(
        b.try_acquire().unwrap_err().retry_at,
        Some(START + secs(30))
    );
}

#[test]
fn only_an_open_breaker_reads_the_clock_to_reject_or_report() {
    let (rig, clock) = counting_rig(BreakerConfig::default().window_calls(10).minimum_calls(10));
    let b = rig.registry.breaker("upstream").unwrap();
    // Closed with a count window: state and health need no time.
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.health().calls, 0);
    assert_eq!(clock.reads(), (0, 0));
    // Forced open: rejected until a reset, whatever the time.
    b.force_open();
    let reads = clock.reads();
    for _ in 0..10 {
        let rejected = b.try_acquire().unwrap_err();
        assert_eq!(rejected.state, BreakerState::ForcedOpen);
        assert_eq!(b.state(), BreakerState::ForcedOpen);
    }
    assert_eq!(
        clock.reads(),
        reads,
        "a forced-open rejection reads no clock"
    );
    // Open after a trip: each rejection asks whether the open duration has
    // passed, once; and when it has, the breaker half-opens.
    b.reset();
    for _ in 0..10 {
        fail(&b);
    }
    let reads = clock.reads();
    assert!(b.try_acquire().is_err());
    assert_eq!(clock.reads(), (reads.0, reads.1 + 1));
    rig.clock.advance(secs(30));
    assert!(b.try_acquire().unwrap().is_probe());
}

#[test]
fn the_time_window_reads_the_clock_once_per_verdict() {
    let (rig, clock) = counting_rig(BreakerConfig::default().minimum_calls(100));
    let b = rig.registry.breaker("upstream").unwrap();
    for _ in 0..50 {
        succeed(&b);
        drop(b.try_acquire().unwrap());
    }
    assert_eq!(
        clock.reads(),
        (0, 50),
        "one reading per verdict, none per acquire"
    );

    let (rig, clock) = counting_rig(
        BreakerConfig::default()
            .window_calls(10)
            .slow_call_threshold(secs(1)),
    );
    let b = rig.registry.breaker("upstream").unwrap();
    for _ in 0..50 {
        succeed(&b);
    }
    assert_eq!(
        clock.reads(),
        (0, 100),
        "a slow-call threshold times each call: one reading at acquire, one at the verdict"
    );
}

#[test]
fn count_window_configs_are_checked() {
    let cases = [
        (BreakerConfig::default().window_calls(0), "window_calls"),
        (
            BreakerConfig::default().window_calls(100_001),
            "window_calls",
        ),
        (
            BreakerConfig::default().window_calls(5),
            "minimum_calls", // the default 10 could never be reached
        ),
    ];
    assert_refused(cases);
    for config in [
        BreakerConfig::default().window_calls(1).minimum_calls(1),
        BreakerConfig::default().window_calls(10),
        BreakerConfig::default().window_calls(100_000),
        // The time window is unused then, as its docs say: not checked.
        BreakerConfig::default()
            .window_calls(10)
            .window(Duration::ZERO)
            .window_buckets(0),
    ] {
        config.validate().unwrap();
    }
    // The count window is part of the config a breaker is compared by.
    let registry = BreakerRegistry::new(BreakerConfig::default()).unwrap();
    registry
        .breaker_with("db", BreakerConfig::default().window_calls(100))
        .unwrap();
    assert!(matches!(
        registry.breaker_with("db", BreakerConfig::default()),
        Err(Error::BreakerConfigConflict { .. })
    ));
}

#[test]
fn a_config_serialized_before_the_count_window_still_deserializes() {
    // `BreakerConfig::default()` as serialized before `window_calls` existed.
    let old = r#"{
        "failure_rate_threshold": 0.5,
        "window": {"secs": 60, "nanos": 0},
        "window_buckets": 10,
        "minimum_calls": 10,
        "consecutive_failures": null,
        "slow_call_threshold": null,
        "open_duration": {"secs": 30, "nanos": 0},
        "open_duration_multiplier": 1.0,
        "max_open_duration": {"secs": 300, "nanos": 0},
        "half_open_probes": 1,
        "probe_successes_to_close": 1
    }"#;
    let config: BreakerConfig = serde_json::from_str(old).unwrap();
    assert_eq!(config, BreakerConfig::default());
    assert_eq!(config.window_calls, None, "the time window, as before");

    let counted = BreakerConfig::default().window_calls(100);
    let json = serde_json::to_value(&counted).unwrap();
    assert_eq!(json["window_calls"], 100);
    assert_eq!(
        serde_json::from_value::<BreakerConfig>(json).unwrap(),
        counted
    );
}

/// Each config is refused, by `validate` and by the registry, naming `field`.
fn assert_refused<const N: usize>(cases: [(BreakerConfig, &str); N]) {
    for (config, field) in cases {
        match config.validate() {
            Err(Error::InvalidBreakerConfig { field: got, .. }) => assert_eq!(got, field),
            other => panic!("{field}: expected InvalidBreakerConfig, got {other:?}"),
        }
        assert!(matches!(
            BreakerRegistry::new(config),
            Err(Error::InvalidBreakerConfig { .. })
        ));
    }
}

/// A breaker's health and its registry's report serialize whatever its
/// clock reads: a time before year 0, which RFC 3339 cannot write, is
/// written as its first instant (`0000-01-01T00:00:00Z`), as an event
/// log's records are; the breaker's timing goes by the reading itself.
/// (The report did not serialize: "The year component cannot be
/// formatted into the requested format.")
#[test]
fn health_taken_by_a_clock_before_year_0_serializes() {
    let early = time::macros::datetime!(-0100-06-01 00:00:00 UTC);
    let rig = rig(BreakerConfig::default()
        .failure_rate_threshold(1.0)
        .minimum_calls(1));
    rig.clock.set(early);
    let breaker = rig.registry.breaker("db").unwrap();
    fail(&breaker);
    assert_eq!(breaker.state(), BreakerState::Open);
    let health = breaker.health();
    assert_eq!(health.opened_at, Some(early), "kept as read");
    let written = serde_json::to_value(&health).unwrap();
    assert_eq!(written["opened_at"], "0000-01-01T00:00:00Z");
    let report = serde_json::to_value(rig.registry.snapshot()).unwrap();
    assert_eq!(report["at"], "0000-01-01T00:00:00Z");
    assert_eq!(report["breakers"][0]["opened_at"], "0000-01-01T00:00:00Z");
    // Its timing is the reading's: the open duration from then.
    rig.clock
        .set(early + BreakerConfig::default().open_duration);
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
}
