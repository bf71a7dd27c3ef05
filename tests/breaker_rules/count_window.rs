//! The count window: exactly the last N calls however old, its minimum calls,
//! what it reports, cleared by closing and reset, verdicts from before a trip.

use super::*;

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
