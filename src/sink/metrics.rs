//! [`MetricsSink`]: events as `metrics` counters and gauges.

use crate::breaker::{BreakerState, CallOutcome};
use crate::events::{Event, kinds};
use crate::sink::EventSink;

/// Sends events to the [`metrics`] facade (whatever recorder the host
/// installed):
///
/// - `taskstore_task_events_total{kind}`: a counter per task event kind;
/// - `taskstore_breaker_transitions_total{breaker, kind}`: a counter per
///   breaker transition;
/// - `taskstore_breaker_state{breaker}`: a gauge, `0` closed, `1` half-open,
///   `2` open, `3` forced open;
/// - `taskstore_breaker_calls_total{breaker, outcome}`: a counter per call
///   verdict (`success`, `failure`, `slow`) and rejection (`rejected`);
/// - `taskstore_events_total{kind}`: every other event.
///
/// Available with the `metrics` cargo feature.
#[derive(Clone, Copy, Debug, Default)]
pub struct MetricsSink;

impl MetricsSink {
    /// A metrics sink.
    pub fn new() -> MetricsSink {
        MetricsSink
    }
}

impl EventSink for MetricsSink {
    fn emit(&self, event: &Event) {
        let kind = event.kind.to_string();
        if kinds::is_task(&kind) {
            metrics::counter!("taskstore_task_events_total", "kind" => kind).increment(1);
        } else if kinds::is_breaker(&kind) {
            let breaker = event.data["breaker"].as_str().unwrap_or("").to_owned();
            if let Some(state) = event.layer_to.as_deref().and_then(BreakerState::parse) {
                metrics::gauge!("taskstore_breaker_state", "breaker" => breaker.clone())
                    .set(f64::from(state.as_gauge()));
            }
            metrics::counter!("taskstore_breaker_transitions_total", "breaker" => breaker, "kind" => kind)
                .increment(1);
        } else {
            metrics::counter!("taskstore_events_total", "kind" => kind).increment(1);
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
