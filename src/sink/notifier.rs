//! How a store or a breaker registry reaches its sink: after its locks are
//! released, with panics contained and counted.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::events::{CallOutcome, Event, TaskEventKind};
use crate::sink::{EventSink, breaker_call_contained, emit_contained};
use crate::task::Task;

/// A store's optional sink and its panic count. Cheap to clone; clones share
/// the count. Callers must hold no lock when they call it.
#[derive(Clone, Default)]
pub(crate) struct Notifier {
    sink: Option<Arc<dyn EventSink>>,
    panics: Arc<AtomicU64>,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("sink", &self.sink.is_some())
            .field("panics", &self.panics())
            .finish()
    }
}

impl Notifier {
    pub(crate) fn new(sink: Arc<dyn EventSink>) -> Notifier {
        Notifier {
            sink: Some(sink),
            panics: Arc::default(),
        }
    }

    /// The same panic count with `sink` instead: a registry given a new sink
    /// keeps counting where it was.
    pub(crate) fn replacing_sink(&self, sink: Option<Arc<dyn EventSink>>) -> Notifier {
        Notifier {
            sink,
            panics: self.panics.clone(),
        }
    }

    pub(crate) fn sink(&self) -> Option<&Arc<dyn EventSink>> {
        self.sink.as_ref()
    }

    /// How many times the sink panicked.
    pub(crate) fn panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }

    /// One breaker call's verdict (on the breaker's hot path).
    #[inline]
    pub(crate) fn breaker_call(&self, breaker: &str, outcome: CallOutcome) {
        if let Some(sink) = &self.sink
            && !breaker_call_contained(sink.as_ref(), breaker, outcome)
        {
            self.panicked();
        }
    }

    pub(crate) fn emit(&self, event: impl FnOnce() -> Event) {
        if let Some(sink) = &self.sink
            && !emit_contained(sink.as_ref(), &event())
        {
            self.panicked();
        }
    }

    #[cold]
    fn panicked(&self) {
        self.panics.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("an event sink panicked; the event was dropped");
    }

    /// A task event (for an applied write, the kind is
    /// [`TaskEventKind::for_status`] of the task as written).
    pub(crate) fn task(&self, kind: TaskEventKind, task: &Task) {
        self.emit(|| Event::task(kind, task));
    }
}
