//! Configs checked and named by field, configs serialized before the count
//! window, and health snapshots serialized (even by a clock before year 0).

use super::*;

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
