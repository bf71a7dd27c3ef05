//! [`MetricsSink`]: events as `metrics` counters and gauges.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::events::{BreakerState, CallOutcome, Event, EventKind};
use crate::sink::EventSink;

/// Sends events to the [`metrics`] facade (whatever recorder the host
/// installed):
///
/// - `taskstore_task_events_total{kind}`: a counter per task event kind;
/// - `taskstore_breaker_transitions_total{breaker, kind}`: a counter per
///   breaker transition, and of the breakers made (`breaker.created`);
/// - `taskstore_breaker_state{breaker}`: a gauge, `0` closed, `1` half-open,
///   `2` open, `3` forced open: the state of the breaker's latest transition
///   (or its making) by [generation](Event::breaker_generation), whatever
///   order two threads' transitions reach the sink in; a breaker made again
///   under a name shows closed from its making, whatever state the one
///   before it was left in;
/// - `taskstore_breaker_calls_total{breaker, outcome}`: a counter per call
///   verdict (`success`, `failure`, `slow`) and rejection (`rejected`);
/// - `taskstore_events_total{kind}`: every host event.
///
/// Events are told apart by their [`EventKind`]: a host event named
/// `"task.foo"` is a host event.
///
/// A recorder that panics setting the state gauge (contained, and counted
/// as a sink panic by the store or registry) leaves it showing the state
/// before only until the next breaker call or event this sink is told of:
/// it sets every gauge whose set did not return again then (the state it
/// was to show, unless a later transition's has been shown since).
///
/// # One sink per process
///
/// The metrics are the recorder's, for the whole process, named by breaker
/// name alone. Counters add up whatever sinks count them. A gauge shows one
/// state: give one `MetricsSink` (or clones of it, which share what each
/// gauge shows) to every store and registry of the process. Two sinks
/// made apart each keep their own record of the latest transition shown,
/// so one's late event can put back on the gauge a state the other has
/// moved past; and breakers of two registries under one name share one
/// gauge, which shows the state of whichever transitioned last: name the
/// breakers of a process apart (a prefix per registry) to see each.
///
/// Available with the `metrics` cargo feature.
#[derive(Clone, Debug, Default)]
pub struct MetricsSink {
    /// What the state gauges show. Clones share it, as they share the
    /// gauges.
    shown: Arc<Mutex<Shown>>,
    /// Whether some gauge's set did not return (`Shown::unset` is not
    /// empty): read by every call's verdict without the lock.
    some_unset: Arc<AtomicBool>,
}

/// What the state gauges show.
#[derive(Debug, Default)]
struct Shown {
    /// The highest generation whose state the gauge shows, per breaker.
    generations: HashMap<String, u64>,
    /// The gauges whose last set did not return (the recorder panicked),
    /// with the state each is to show.
    unset: HashMap<String, BreakerState>,
}

impl MetricsSink {
    /// A metrics sink.
    pub fn new() -> MetricsSink {
        MetricsSink::default()
    }

    /// Sets the state gauge of `breaker` to `state`, unless it already
    /// shows a later transition's.
    fn show(&self, breaker: &str, generation: Option<u64>, state: BreakerState) {
        // Each breaker's entries are written whole, and a set that panics
        // leaves its gauge in `unset`: the lock's state is sound whatever
        // a set did.
        let mut shown = self.shown.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(generation) = generation {
            match shown.generations.get_mut(breaker) {
                Some(latest) if *latest >= generation => return,
                Some(latest) => *latest = generation,
                None => {
                    shown.generations.insert(breaker.to_owned(), generation);
                }
            }
        }
        // Set under the lock: a later transition's value is never
        // overwritten by this one's.
        shown.unset.insert(breaker.to_owned(), state);
        self.some_unset.store(true, Ordering::Relaxed);
        set_gauge(breaker, state);
        shown.unset.remove(breaker);
        self.some_unset
            .store(!shown.unset.is_empty(), Ordering::Relaxed);
    }

    /// Sets again every gauge whose set panicked, if any did: the state
    /// each is to show.
    #[inline]
    fn set_unset(&self) {
        if self.some_unset.load(Ordering::Relaxed) {
            self.set_unset_now();
        }
    }

    #[cold]
    fn set_unset_now(&self) {
        let mut shown = self.shown.lock().unwrap_or_else(PoisonError::into_inner);
        // Each one leaves `unset` once its set has returned.
        while let Some((breaker, &state)) = shown.unset.iter().next() {
            let breaker = breaker.clone();
            set_gauge(&breaker, state);
            shown.unset.remove(&breaker);
        }
        self.some_unset.store(false, Ordering::Relaxed);
    }
}

/// Sets the state gauge of `breaker` to show `state`.
fn set_gauge(breaker: &str, state: BreakerState) {
    metrics::gauge!("taskstore_breaker_state", "breaker" => breaker.to_owned()).set(gauge(state));
}

/// The value of `taskstore_breaker_state`.
fn gauge(state: BreakerState) -> f64 {
    match state {
        BreakerState::Closed => 0.0,
        BreakerState::HalfOpen => 1.0,
        BreakerState::Open => 2.0,
        BreakerState::ForcedOpen => 3.0,
    }
}

impl EventSink for MetricsSink {
    fn emit(&self, event: &Event) {
        self.set_unset();
        match &event.kind {
            EventKind::Task(kind) => {
                metrics::counter!("taskstore_task_events_total", "kind" => kind.as_str())
                    .increment(1);
            }
            EventKind::Breaker(kind) => {
                let breaker = event.breaker_name().unwrap_or("").to_owned();
                self.show(&breaker, event.breaker_generation(), kind.state_after());
                metrics::counter!(
                    "taskstore_breaker_transitions_total",
                    "breaker" => breaker,
                    "kind" => kind.as_str()
                )
                .increment(1);
            }
            EventKind::Host(kind) => {
                metrics::counter!("taskstore_events_total", "kind" => kind.as_str().to_owned())
                    .increment(1);
            }
        }
    }

    fn breaker_call(&self, breaker: &str, outcome: CallOutcome) {
        self.set_unset();
        metrics::counter!(
            "taskstore_breaker_calls_total",
            "breaker" => breaker.to_owned(),
            "outcome" => outcome.as_str()
        )
        .increment(1);
    }
}
