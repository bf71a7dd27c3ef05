//! The open and half-open breaker: rejections until the cooldown, probes and
//! their slots and timeouts, growing capped cooldowns, verdicts from before a
//! transition, forcing open, reset, and `call`.

use super::*;

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

/// A breaker's health says the failures in a row of the state it is in,
/// as its events do: open, the streak of the trip that opened it (the
/// closed calls', or the probes' that reopened it); half-open, its probes'
/// (0: a failed probe reopens it); closed, its calls'. (Open and half-open,
/// it said the closed calls' streak left from before the trip: 3 while
/// half-open with no probe failed, 3 after a reopening whose event said 1.)
#[test]
fn the_health_streak_is_the_one_of_the_state_it_is_in() {
    let rig = rig(BreakerConfig::default()
        .consecutive_failures(3)
        .open_duration(secs(5)));
    let b = rig.registry.breaker("upstream").unwrap();
    let streak = || {
        let health = b.health();
        (health.state, health.consecutive_failures)
    };
    fail(&b);
    fail(&b);
    assert_eq!(streak(), (BreakerState::Closed, 2));
    fail(&b);
    assert_eq!(
        streak(),
        (BreakerState::Open, 3),
        "the streak that opened it"
    );
    rig.clock.advance(secs(5));
    assert_eq!(streak(), (BreakerState::HalfOpen, 0), "no probe failed");
    fail(&b);
    let reopened = rig.events().into_iter().last().unwrap();
    assert_eq!(reopened.data["consecutive_failures"], 1, "{reopened:?}");
    assert_eq!(streak(), (BreakerState::Open, 1), "as its reopening says");
    rig.clock.advance(secs(5));
    succeed(&b);
    assert_eq!(streak(), (BreakerState::Closed, 0));
    fail(&b);
    assert_eq!(streak(), (BreakerState::Closed, 1));
}

/// A breaker's health gives the numbers (`calls`, `failures`,
/// `slow_calls`, `failure_rate`) of the state it is in, as its events do:
/// closed, its window's; open, those of the trip that opened it (its
/// event's, which the time window's passing does not wear away); half-open,
/// its probes' (the successes so far, none failed: a failed probe reopens
/// it); forced open, those of the state it was forced from, as they were.
/// (Open and half-open, it gave the closed window's numbers left from
/// before the first trip: 0 calls once the minute of the window had passed
/// while open, 4 calls, 2 failed, while half-open with one probe through,
/// and after a reopening whose event said 2 calls, 1 failed.)
#[test]
fn the_health_numbers_are_those_of_the_state_it_is_in() {
    let rig = rig(BreakerConfig::default()
        .minimum_calls(4)
        .failure_rate_threshold(0.5)
        .open_duration(secs(90))
        .probe_successes_to_close(2));
    let b = rig.registry.breaker("upstream").unwrap();
    let numbers = || {
        let health = b.health();
        let numbers = (health.calls, health.failures, health.slow_calls);
        (health.state, numbers, health.failure_rate)
    };
    let said_by = |event: &Event| {
        let field = |name: &str| event.data[name].as_u64().unwrap();
        let numbers = (field("calls"), field("failures"), field("slow_calls"));
        (numbers, event.data["failure_rate"].as_f64())
    };
    succeed(&b);
    succeed(&b);
    fail(&b);
    assert_eq!(
        numbers(),
        (BreakerState::Closed, (3, 1, 0), Some(1.0 / 3.0))
    );
    fail(&b);
    let opened = rig.events().into_iter().last().unwrap();
    assert_eq!(said_by(&opened), ((4, 2, 0), Some(0.5)));
    assert_eq!(numbers(), (BreakerState::Open, (4, 2, 0), Some(0.5)));
    rig.clock.advance(secs(61));
    assert_eq!(
        numbers(),
        (BreakerState::Open, (4, 2, 0), Some(0.5)),
        "the trip's, the window's minute past"
    );
    rig.clock.advance(secs(29));
    assert_eq!(numbers(), (BreakerState::HalfOpen, (0, 0, 0), None));
    succeed(&b);
    assert_eq!(
        numbers(),
        (BreakerState::HalfOpen, (1, 0, 0), Some(0.0)),
        "one probe through"
    );
    fail(&b);
    let reopened = rig.events().into_iter().last().unwrap();
    assert_eq!(said_by(&reopened), ((2, 1, 0), Some(0.5)));
    assert_eq!(
        numbers(),
        (BreakerState::Open, (2, 1, 0), Some(0.5)),
        "as its reopening says"
    );
    b.force_open();
    assert_eq!(
        numbers(),
        (BreakerState::ForcedOpen, (2, 1, 0), Some(0.5)),
        "as they were when it was forced"
    );
    b.reset();
    assert_eq!(numbers(), (BreakerState::Closed, (0, 0, 0), None));
    fail(&b);
    b.force_open();
    rig.clock.advance(secs(61));
    assert_eq!(
        numbers(),
        (BreakerState::ForcedOpen, (1, 1, 0), Some(1.0)),
        "forced from closed: its window's as they were"
    );
}

/// A `probe_timeout` shorter than the upstream takes keeps a breaker from
/// ever closing: each probe times out and reopens it. The third timeout
/// in a row is said once, a warning naming the breaker and the timeout,
/// and the streak restarts when the breaker closes: a later run of
/// timeouts is said again. (Nothing said it: the breaker stayed open, its
/// events saying `probe_timed_out` to whatever sink was there.)
#[test]
fn probes_that_time_out_again_and_again_are_said_once() {
    let rig = rig(BreakerConfig::default()
        .minimum_calls(1)
        .open_duration(secs(5))
        .probe_timeout(secs(10)));
    let b = rig.registry.breaker("upstream").unwrap();
    // Probes that report only after the timeout: an upstream slower than it.
    let time_out = || {
        rig.clock.advance(secs(5));
        let probe = b.try_acquire().unwrap();
        assert!(probe.is_probe());
        rig.clock.advance(secs(10));
        probe.success();
        assert_eq!(b.state(), BreakerState::Open);
    };
    let logged = common::Logged::default();
    let said = || {
        logged
            .warnings_of("probe_timeout")
            .iter()
            .map(|w| {
                ["breaker", "probe_timeout_ms", "timeouts_in_a_row"]
                    .map(|field| w.field(field).unwrap_or("-").to_owned())
            })
            .collect::<Vec<_>>()
    };
    let warning = ["upstream", "10000", "3"].map(str::to_owned);
    tracing::subscriber::with_default(logged.clone(), || {
        fail(&b);
        time_out();
        time_out();
        assert_eq!(said(), Vec::<[String; 3]>::new(), "two in a row");
        time_out();
        assert_eq!(said(), std::slice::from_ref(&warning), "the third");
        for _ in 0..5 {
            time_out();
        }
        assert_eq!(said(), std::slice::from_ref(&warning), "said once");
        rig.clock.advance(secs(5));
        succeed(&b);
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b);
        for _ in 0..3 {
            time_out();
        }
    });
    assert_eq!(said(), [warning.clone(), warning], "a new run, said again");
}

/// The warning of probes that time out again and again gives how long the
/// late probes took, by the breaker's clock, beside the timeout: what to
/// raise `probe_timeout` above. Each reopening for a probe timeout says
/// its late probes' times too (`late_probes_ms`, longest first: a probe
/// that reported late, its latency; one that had not reported yet, how
/// long it had been out). Here probes of 11 s and 12 s against a timeout
/// of 10 s, then two at once, out 13 s and 12 s when the first reports.
/// (The warning named the breaker and the timeout alone.)
#[test]
fn the_warning_of_probes_timing_out_gives_their_latency() {
    let rig = rig(BreakerConfig::default()
        .minimum_calls(1)
        .open_duration(secs(5))
        .half_open_probes(2)
        .probe_timeout(secs(10)));
    let b = rig.registry.breaker("upstream").unwrap();
    let late = |event: &Event| event.data["late_probes_ms"].clone();
    let logged = common::Logged::default();
    tracing::subscriber::with_default(logged.clone(), || {
        fail(&b);
        for took in [11, 12] {
            rig.clock.advance(secs(5));
            let probe = b.try_acquire().unwrap();
            rig.clock.advance(secs(took));
            probe.success();
            let reopened = rig.events().into_iter().last().unwrap();
            assert_eq!(late(&reopened), serde_json::json!([took * 1_000]));
        }
        rig.clock.advance(secs(5));
        let first = b.try_acquire().unwrap();
        rig.clock.advance(secs(1));
        let second = b.try_acquire().unwrap();
        rig.clock.advance(secs(12));
        first.success();
        drop(second);
        assert_eq!(b.state(), BreakerState::Open);
    });
    let reopened = rig.events().into_iter().last().unwrap();
    assert_eq!(late(&reopened), serde_json::json!([13_000, 12_000]));
    let warnings = logged.warnings_of("probe_timeout");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let field = |name| warnings[0].field(name).unwrap_or("-");
    assert_eq!(
        [
            field("breaker"),
            field("probe_timeout_ms"),
            field("late_probes_ms")
        ],
        ["upstream", "10000", "13000, 12000"],
        "{warnings:?}"
    );
}
