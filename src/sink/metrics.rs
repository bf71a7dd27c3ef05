//! [`MetricsSink`]: events as `metrics` counters and gauges.

use std::collections::HashMap;
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
/// Available with the `metrics` cargo feature.
#[derive(Clone, Debug, Default)]
pub struct MetricsSink {
    /// The highest generation whose state the gauge shows, per breaker.
    /// Clones share it, as they share the gauges.
    shown: Arc<Mutex<HashMap<String, u64>>>,
}

impl MetricsSink {
    /// A metrics sink.
    pub fn new() -> MetricsSink {
        MetricsSink::default()
    }

    /// Sets the state gauge of `breaker` to `state`, unless it already
    /// shows a later transition's.
    fn show(&self, breaker: &str, generation: Option<u64>, state: BreakerState) {
        // Two numbers per breaker, never left half-written.
        let mut shown = self.shown.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(generation) = generation {
            match shown.get_mut(breaker) {
                Some(latest) if *latest >= generation => return,
                Some(latest) => *latest = generation,
                None => {
                    shown.insert(breaker.to_owned(), generation);
                }
            }
        }
        // Set under the lock: a later transition's value is never
        // overwritten by this one's.
        metrics::gauge!("taskstore_breaker_state", "breaker" => breaker.to_owned())
            .set(gauge(state));
    }
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
        metrics::counter!(
            "taskstore_breaker_calls_total",
            "breaker" => breaker.to_owned(),
            "outcome" => outcome.as_str()
        )
        .increment(1);
    }
}
