//! Every breaker rule, driven by a `ManualClock`: no test sleeps.

use std::sync::Arc;
use std::time::Duration;

use taskstore::{
    BreakerConfig, BreakerRegistry, BreakerState, CallError, Error, Event, EventLog, ManualClock,
    Record, kinds,
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
    fn events(&self) -> Vec<Event> {
        self.log
            .snapshot()
            .into_iter()
            .map(|r: Record| r.event)
            .collect()
    }

    fn kinds(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .map(|e| e.kind.into_owned())
            .collect()
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
    assert_eq!(opened.kind, kinds::BREAKER_OPENED);
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
        [kinds::BREAKER_OPENED, kinds::BREAKER_HALF_OPENED],
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
    assert_eq!(closed.kind, kinds::BREAKER_CLOSED);
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
    assert_eq!(reopened.kind, kinds::BREAKER_REOPENED);
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
        [kinds::BREAKER_FORCED_OPEN, kinds::BREAKER_RESET]
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
        Err(CallError::Failed(e)) => assert_eq!(e, "boom"),
        other => panic!("expected the closure's error, got {other:?}"),
    }
    match b.call(|| Err::<u32, _>("boom".to_owned())) {
        Err(CallError::Failed(_)) => {}
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
fn breaker_with_uses_its_config_and_refuses_a_conflicting_one() {
    let registry = BreakerRegistry::new(BreakerConfig::default()).unwrap();
    let custom = BreakerConfig::default().minimum_calls(3);
    let b = registry.breaker_with("db", custom.clone()).unwrap();
    assert_eq!(b.config().minimum_calls, 3);
    registry
        .breaker_with("db", custom)
        .expect("the same config again is fine");
    assert!(matches!(
        registry.breaker_with("db", BreakerConfig::default()),
        Err(Error::BreakerConfigConflict { name }) if name == "db"
    ));
    assert!(matches!(
        registry.breaker_with("other", BreakerConfig::default().half_open_probes(0)),
        Err(Error::InvalidBreakerConfig {
            field: "half_open_probes",
            ..
        })
    ));
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
            BreakerConfig::default().probe_successes_to_close(0),
            "probe_successes_to_close",
        ),
    ];
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
    BreakerConfig::default()
        .failure_rate_threshold(0.0)
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
