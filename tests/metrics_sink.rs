//! `MetricsSink` against a real `metrics` recorder: the counters and gauges a
//! host's exporter would see after store and breaker activity.

#![cfg(feature = "metrics")]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};
use taskstore::{
    BreakerConfig, BreakerEventKind, BreakerRegistry, BreakerState, CallError, Event, EventLog,
    EventSink, FanOut, FileStore, ManualClock, MetricsSink, NewTask, TaskStore,
};

/// A recorder that keeps every counter and gauge by name and labels.
#[derive(Default)]
struct Recorded {
    counters: Mutex<BTreeMap<String, Arc<Count>>>,
    gauges: Mutex<BTreeMap<String, Arc<Level>>>,
}

#[derive(Default)]
struct Count(AtomicU64);

#[derive(Default)]
struct Level(Mutex<f64>);

impl CounterFn for Count {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }

    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }
}

impl GaugeFn for Level {
    fn increment(&self, value: f64) {
        *self.0.lock().unwrap() += value;
    }

    fn decrement(&self, value: f64) {
        *self.0.lock().unwrap() -= value;
    }

    fn set(&self, value: f64) {
        *self.0.lock().unwrap() = value;
    }
}

/// `name{a=x,b=y}`, labels in the order given.
fn render(key: &Key) -> String {
    let labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Recorder for Recorded {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut counters = self.counters.lock().unwrap();
        Counter::from_arc(counters.entry(render(key)).or_default().clone())
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let mut gauges = self.gauges.lock().unwrap();
        Gauge::from_arc(gauges.entry(render(key)).or_default().clone())
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

impl Recorded {
    fn counter(&self, key: &str) -> u64 {
        self.counters
            .lock()
            .unwrap()
            .get(key)
            .map_or(0, |c| c.0.load(Ordering::Relaxed))
    }

    fn gauge(&self, key: &str) -> Option<f64> {
        self.gauges
            .lock()
            .unwrap()
            .get(key)
            .map(|g| *g.0.lock().unwrap())
    }
}

#[test]
fn task_events_become_counters_by_kind() {
    let recorded = Recorded::default();
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::builder(dir.path())
        .sink(Arc::new(MetricsSink::new()))
        .open()
        .unwrap();
    metrics::with_local_recorder(&recorded, || {
        let a = store.create(NewTask::new()).unwrap().id;
        let b = store.create(NewTask::new()).unwrap().id;
        let _ = store.complete(&a, serde_json::json!("ok")).unwrap();
        // A second terminal transition changes nothing and emits nothing.
        let _ = store.fail(&a, serde_json::json!("late")).unwrap();
        let _ = store.cancel(&b, None).unwrap();
        assert!(store.delete(&b).unwrap());
    });
    let count =
        |kind: &str| recorded.counter(&format!("taskstore_task_events_total{{kind={kind}}}"));
    assert_eq!(count("task.created"), 2);
    assert_eq!(count("task.completed"), 1);
    assert_eq!(count("task.failed"), 0);
    assert_eq!(count("task.cancelled"), 1);
    assert_eq!(count("task.deleted"), 1);
}

#[test]
fn breaker_calls_transitions_and_state_become_counters_and_a_gauge() {
    let recorded = Recorded::default();
    let registry = BreakerRegistry::new(
        BreakerConfig::default()
            .minimum_calls(4)
            .open_duration(Duration::from_secs(60)),
    )
    .unwrap()
    .with_sink(Arc::new(MetricsSink::new()));
    let breaker = registry.breaker("db").unwrap();
    metrics::with_local_recorder(&recorded, || {
        breaker.call(|| Ok::<_, ()>(())).unwrap();
        for _ in 0..3 {
            assert!(matches!(
                breaker.call(|| Err::<(), _>("down")),
                Err(CallError::Failed { .. })
            ));
        }
        // 3 failures in 4 calls: open; the next call is rejected.
        assert_eq!(
            recorded.gauge("taskstore_breaker_state{breaker=db}"),
            Some(2.0)
        );
        assert!(matches!(
            breaker.call(|| Ok::<_, ()>(())),
            Err(CallError::Rejected(_))
        ));
        breaker.reset();
    });
    let calls = |outcome: &str| {
        recorded.counter(&format!(
            "taskstore_breaker_calls_total{{breaker=db,outcome={outcome}}}"
        ))
    };
    assert_eq!(calls("success"), 1);
    assert_eq!(calls("failure"), 3);
    assert_eq!(calls("rejected"), 1);
    let transitions = |kind: &str| {
        recorded.counter(&format!(
            "taskstore_breaker_transitions_total{{breaker=db,kind={kind}}}"
        ))
    };
    assert_eq!(transitions("breaker.opened"), 1);
    assert_eq!(transitions("breaker.reset"), 1);
    assert_eq!(
        recorded.gauge("taskstore_breaker_state{breaker=db}"),
        Some(0.0)
    );
}

#[test]
fn host_events_named_like_ours_are_host_events() {
    let recorded = Recorded::default();
    let sink = MetricsSink::new();
    metrics::with_local_recorder(&recorded, || {
        sink.emit(&Event::new("task.foo"));
        sink.emit(&Event::new(String::from("task.foo")));
        sink.emit(
            &Event::new("breaker.foo")
                .to_layer("open")
                .field("breaker", "db"),
        );
    });
    assert_eq!(
        recorded.counter("taskstore_task_events_total{kind=task.foo}"),
        0
    );
    assert_eq!(recorded.counter("taskstore_events_total{kind=task.foo}"), 2);
    assert_eq!(
        recorded.counter("taskstore_breaker_transitions_total{breaker=db,kind=breaker.foo}"),
        0
    );
    assert_eq!(recorded.gauge("taskstore_breaker_state{breaker=db}"), None);
    assert_eq!(
        recorded.counter("taskstore_events_total{kind=breaker.foo}"),
        1
    );
}

/// Passes events on to a `MetricsSink` under `recorded` (on any thread),
/// holding up the first `breaker.opened` until told to go on.
struct HoldsUpTheOpening {
    inner: MetricsSink,
    recorded: Arc<Recorded>,
    /// Set by the held-up emit once it is waiting; then `go` lets it on.
    held: Mutex<bool>,
    wake: std::sync::Condvar,
    go: Mutex<bool>,
}

impl EventSink for HoldsUpTheOpening {
    fn emit(&self, event: &Event) {
        if event.kind.as_str() == "breaker.opened" {
            *self.held.lock().unwrap() = true;
            self.wake.notify_all();
            let mut go = self.go.lock().unwrap();
            while !*go {
                go = self.wake.wait(go).unwrap();
            }
        }
        metrics::with_local_recorder(&*self.recorded, || self.inner.emit(event));
    }
}

#[test]
fn the_state_gauge_follows_the_breakers_last_transition_whatever_order_events_arrive_in() {
    // Transitions are made under the breaker's lock and told to the sink
    // after it, so two threads' transitions can reach the sink in the
    // other order: here the opening arrives after the reset that followed
    // it. The gauge must still say closed.
    let recorded = Arc::new(Recorded::default());
    let sink = Arc::new(HoldsUpTheOpening {
        inner: MetricsSink::new(),
        recorded: Arc::clone(&recorded),
        held: Mutex::new(false),
        wake: std::sync::Condvar::new(),
        go: Mutex::new(false),
    });
    let registry = BreakerRegistry::new(BreakerConfig::default().consecutive_failures(1))
        .unwrap()
        .with_sink(sink.clone());
    let breaker = registry.breaker("db").unwrap();
    let tripping = {
        let breaker = breaker.clone();
        std::thread::spawn(move || {
            let _ = breaker.call(|| Err::<(), _>("down"));
        })
    };
    let mut held = sink.held.lock().unwrap();
    while !*held {
        held = sink.wake.wait(held).unwrap();
    }
    drop(held);
    // The breaker is open; its event is on its way. Reset it meanwhile.
    breaker.reset();
    *sink.go.lock().unwrap() = true;
    sink.wake.notify_all();
    tripping.join().unwrap();
    assert_eq!(breaker.state(), taskstore::BreakerState::Closed);
    assert_eq!(
        recorded.gauge("taskstore_breaker_state{breaker=db}"),
        Some(0.0),
        "the gauge must show the breaker closed, as it is"
    );
    // Both transitions are still counted.
    let transitions = |kind: &str| {
        recorded.counter(&format!(
            "taskstore_breaker_transitions_total{{breaker=db,kind={kind}}}"
        ))
    };
    assert_eq!(
        (transitions("breaker.opened"), transitions("breaker.reset")),
        (1, 1)
    );
}

/// A breaker made again under a name (a new registry, a restarted
/// component) moves the gauge from its first transition: generations come
/// from one count for the whole process, so the new breaker's are never
/// taken for older than the old one's.
#[test]
fn a_breaker_made_again_under_its_name_moves_the_gauge_at_once() {
    let recorded = Recorded::default();
    let sink = Arc::new(MetricsSink::new());
    let registry = || {
        BreakerRegistry::new(BreakerConfig::default())
            .unwrap()
            .with_sink(sink.clone())
    };
    let (first, second) = (registry(), registry());
    metrics::with_local_recorder(&recorded, || {
        let old = first.breaker("db").unwrap();
        for _ in 0..3 {
            old.force_open();
            old.reset();
        }
        old.force_open();
        assert_eq!(
            recorded.gauge("taskstore_breaker_state{breaker=db}"),
            Some(3.0)
        );
        // The new breaker's first transition.
        second.breaker("db").unwrap().reset();
    });
    assert_eq!(
        recorded.gauge("taskstore_breaker_state{breaker=db}"),
        Some(0.0),
        "the new breaker's reset shows"
    );
}

/// A breaker made again under a name (a new registry, a restarted
/// component) shows its state at once, before any transition of its own:
/// the old breaker's, forced open here, is not left on the gauge.
#[test]
fn a_breaker_made_again_under_its_name_shows_its_state_before_any_transition() {
    let recorded = Recorded::default();
    let sink = Arc::new(MetricsSink::new());
    let registry = || {
        BreakerRegistry::new(BreakerConfig::default())
            .unwrap()
            .with_sink(sink.clone())
    };
    let first = registry();
    metrics::with_local_recorder(&recorded, || {
        first.breaker("db").unwrap().force_open();
        assert_eq!(
            recorded.gauge("taskstore_breaker_state{breaker=db}"),
            Some(3.0)
        );
        drop(first);
        let second = registry();
        let new = second.breaker("db").unwrap();
        assert_eq!(new.state(), taskstore::BreakerState::Closed);
    });
    assert_eq!(
        recorded.gauge("taskstore_breaker_state{breaker=db}"),
        Some(0.0),
        "the new breaker is closed, and the gauge must say so"
    );
}

/// A probe that reports after `probe_timeout` is a slow call in
/// `taskstore_breaker_calls_total`, as the `breaker.reopened` event its
/// timeout caused counts it (`slow_calls`), whether its own report or an
/// earlier look at the breaker saw the timeout pass. (Its success was
/// counted as a success.)
#[test]
fn a_probe_reporting_past_its_timeout_is_a_slow_call_as_its_reopening_says() {
    let recorded = Recorded::default();
    let clock = ManualClock::new(time::macros::datetime!(2026-01-01 00:00:00 UTC));
    let log = Arc::new(EventLog::new());
    let registry = BreakerRegistry::new(
        BreakerConfig::default()
            .minimum_calls(1)
            .open_duration(Duration::from_secs(5))
            .probe_timeout(Duration::from_secs(10)),
    )
    .unwrap()
    .with_clock(Arc::new(clock.clone()))
    .with_sink(Arc::new(
        FanOut::new()
            .with_shared(log.clone())
            .with(MetricsSink::new()),
    ));
    let breaker = registry.breaker("db").unwrap();
    let reopened = || {
        let event = log.snapshot().pop().unwrap().event;
        assert_eq!(event.kind, BreakerEventKind::Reopened, "{event:?}");
        assert_eq!(event.data["reason"], "probe_timed_out");
        event.data["slow_calls"].as_u64().unwrap()
    };
    metrics::with_local_recorder(&recorded, || {
        let _ = breaker.call(|| Err::<(), _>("down"));
        // Its own report sees the timeout pass.
        clock.advance(Duration::from_secs(5));
        let late = breaker.try_acquire().unwrap();
        assert!(late.is_probe());
        clock.advance(Duration::from_secs(10));
        late.success();
        assert_eq!(reopened(), 1);
        // A look at the breaker sees it first.
        clock.advance(Duration::from_secs(5));
        let late = breaker.try_acquire().unwrap();
        clock.advance(Duration::from_secs(10));
        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(reopened(), 1);
        late.success();
    });
    let calls = |outcome: &str| {
        recorded.counter(&format!(
            "taskstore_breaker_calls_total{{breaker=db,outcome={outcome}}}"
        ))
    };
    assert_eq!(
        [calls("success"), calls("slow"), calls("failure")],
        [0, 2, 1],
        "success, slow, failure: the two late probes are slow calls"
    );
}

/// A recorder whose gauges panic at their next `set` while `panics` is
/// above 0 (counting it down), and keep every value set otherwise.
#[derive(Default)]
struct PanicsAtSet {
    inner: Recorded,
    panics: Arc<AtomicU64>,
}

struct PanickingLevel {
    level: Arc<Level>,
    panics: Arc<AtomicU64>,
}

impl GaugeFn for PanickingLevel {
    fn increment(&self, value: f64) {
        self.level.increment(value);
    }

    fn decrement(&self, value: f64) {
        self.level.decrement(value);
    }

    fn set(&self, value: f64) {
        let left = self.panics.load(Ordering::Relaxed);
        if left > 0 {
            self.panics.store(left - 1, Ordering::Relaxed);
            panic!("the recorder failed to set a gauge (expected in this test)");
        }
        self.level.set(value);
    }
}

impl Recorder for PanicsAtSet {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.inner.register_counter(key, metadata)
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let mut gauges = self.inner.gauges.lock().unwrap();
        Gauge::from_arc(Arc::new(PanickingLevel {
            level: gauges.entry(render(key)).or_default().clone(),
            panics: Arc::clone(&self.panics),
        }))
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// A recorder that panics setting the state gauge (contained: the
/// registry counts a sink panic) leaves it showing the state before only
/// until the breaker's next call or event: the sink sets it again then. (It
/// showed the breaker closed for as long as it stayed open: the sink took
/// the failed set for done, and only a later transition moved the gauge.)
#[test]
fn a_state_gauge_whose_set_panicked_is_set_at_the_next_call() {
    let recorded = PanicsAtSet::default();
    let registry = BreakerRegistry::new(
        BreakerConfig::default()
            .consecutive_failures(1)
            .open_duration(Duration::from_secs(60)),
    )
    .unwrap()
    .with_sink(Arc::new(MetricsSink::new()));
    let gauge = "taskstore_breaker_state{breaker=db}";
    metrics::with_local_recorder(&recorded, || {
        let breaker = registry.breaker("db").unwrap();
        assert_eq!(recorded.inner.gauge(gauge), Some(0.0), "made closed");
        recorded.panics.store(1, Ordering::Relaxed);
        let _ = breaker.call(|| Err::<(), _>("down"));
        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(registry.sink_panics(), 1, "the opening's set panicked");
        assert!(matches!(
            breaker.call(|| Ok::<_, ()>(())),
            Err(CallError::Rejected(_))
        ));
    });
    assert_eq!(
        recorded.inner.gauge(gauge),
        Some(2.0),
        "the rejected call's verdict set the gauge of the open breaker"
    );
}
