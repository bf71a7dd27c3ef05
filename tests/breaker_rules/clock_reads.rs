//! When a breaker reads its clock: never on the closed path with a count
//! window, only when open to reject or report, once per verdict with a time
//! window.

use super::*;

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
