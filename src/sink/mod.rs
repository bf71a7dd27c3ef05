//! Where events go: the [`EventSink`] trait and the shipped sinks.

mod fanout;
mod json_lines;
#[cfg(feature = "metrics")]
mod metrics;
mod notifier;
mod tracing;

use std::sync::Arc;

pub use fanout::FanOut;
pub use json_lines::JsonLinesSink;
#[cfg(feature = "metrics")]
pub use metrics::MetricsSink;
pub use tracing::TracingSink;

pub(crate) use notifier::Notifier;

use crate::events::{CallOutcome, Event, EventLog};

/// Receives every event: task transitions, breaker transitions, and anything
/// the host emits.
///
/// The crate calls sinks outside its locks and contains their panics (see
/// [`emit_contained`]), so a sink may fail without breaking the caller. It
/// runs on the thread that emitted the event, inside the store's or the
/// breaker's call: a sink that waits holds that call up (the shipped sinks
/// never wait on a reader; a `JsonLinesSink` drops the line a full pipe
/// has no room for). Containing a panic needs it to unwind: in a host built with
/// `panic = "abort"`, a sink that panics ends the process. The trait is
/// object safe: stores and registries hold an `Arc<dyn EventSink>`.
pub trait EventSink: Send + Sync {
    /// Receives one event.
    fn emit(&self, event: &Event);

    /// Receives the verdict of one breaker call (or a rejection).
    ///
    /// Calls are too frequent to become [`Event`]s; this hook lets counting
    /// sinks such as `MetricsSink` see them. The default ignores them.
    fn breaker_call(&self, breaker: &str, outcome: CallOutcome) {
        let _ = (breaker, outcome);
    }
}

/// Calls `sink.emit(event)`, containing a panic: returns `false` if the sink
/// panicked, `true` otherwise. The caller goes on either way.
pub fn emit_contained(sink: &dyn EventSink, event: &Event) -> bool {
    crate::panics::contained(|| sink.emit(event))
}

/// Calls `sink.breaker_call(breaker, outcome)`, containing a panic: returns
/// `false` if the sink panicked.
pub fn breaker_call_contained(sink: &dyn EventSink, breaker: &str, outcome: CallOutcome) -> bool {
    crate::panics::contained(|| sink.breaker_call(breaker, outcome))
}

impl<S: EventSink + ?Sized> EventSink for Arc<S> {
    fn emit(&self, event: &Event) {
        (**self).emit(event);
    }

    fn breaker_call(&self, breaker: &str, outcome: CallOutcome) {
        (**self).breaker_call(breaker, outcome);
    }
}

impl<S: EventSink + ?Sized> EventSink for Box<S> {
    fn emit(&self, event: &Event) {
        (**self).emit(event);
    }

    fn breaker_call(&self, breaker: &str, outcome: CallOutcome) {
        (**self).breaker_call(breaker, outcome);
    }
}

impl<S: EventSink + ?Sized> EventSink for &S {
    fn emit(&self, event: &Event) {
        (**self).emit(event);
    }

    fn breaker_call(&self, breaker: &str, outcome: CallOutcome) {
        (**self).breaker_call(breaker, outcome);
    }
}

/// The log keeps a copy of every event it is sent.
impl EventSink for EventLog<Event> {
    fn emit(&self, event: &Event) {
        self.push(event.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Panicky;

    impl EventSink for Panicky {
        fn emit(&self, _: &Event) {
            panic!("sink failure (expected in this test)");
        }
    }

    #[test]
    fn emit_contained_reports_a_panic() {
        assert!(!emit_contained(&Panicky, &Event::new("x")));
        let log = EventLog::new();
        assert!(emit_contained(&log, &Event::new("x")));
        assert_eq!(log.len(), 1);
    }

    #[test]
    fn blanket_impls_forward() {
        let log = Arc::new(EventLog::new());
        let boxed: Box<dyn EventSink> = Box::new(log.clone());
        boxed.emit(&Event::new("a"));
        fn emit_through(sink: impl EventSink) {
            sink.emit(&Event::new("b"));
        }
        emit_through(&*log);
        assert_eq!(log.len(), 2);
    }
}
