//! The closed breaker: made closed, tripping on the failure rate once the
//! minimum calls are reached or on consecutive failures, slow calls, the sliding
//! window, and an owned permit that follows the same rules in another thread.

use super::*;

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
