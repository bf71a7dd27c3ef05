//! The registry: one breaker per name, its cap, names refused (empty, overlong,
//! with a control character), `breaker_with` and the conflicts it names.

use super::*;

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
