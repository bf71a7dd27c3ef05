//! How a store or a breaker registry reaches its sink: after its locks are
//! released, with panics contained, counted and said (at most once a
//! minute while they go on).

use std::fmt;
use std::sync::Arc;

use crate::clock::{Clock, SystemClock};
use crate::events::{CallOutcome, Event, TaskEventKind};
use crate::occurrences::Occurrences;
use crate::sink::{EventSink, breaker_call_contained, emit_contained};
use crate::task::Task;

/// A store's optional sink and its panic count. Cheap to clone; clones share
/// the count. Callers must hold no lock when they call it.
#[derive(Clone)]
pub(crate) struct Notifier {
    sink: Option<Arc<dyn EventSink>>,
    panics: Arc<Occurrences>,
    /// What the warnings of panics are spaced by: the store's or the
    /// registry's clock.
    clock: Arc<dyn Clock>,
}

impl Default for Notifier {
    fn default() -> Notifier {
        Notifier {
            sink: None,
            panics: Arc::default(),
            clock: Arc::new(SystemClock),
        }
    }
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("sink", &self.sink.is_some())
            .field("panics", &self.panics())
            .finish_non_exhaustive()
    }
}

impl Notifier {
    pub(crate) fn new(sink: Arc<dyn EventSink>) -> Notifier {
        Notifier {
            sink: Some(sink),
            ..Notifier::default()
        }
    }

    /// The same panic count with `sink` instead: a registry given a new sink
    /// keeps counting where it was.
    pub(crate) fn replacing_sink(&self, sink: Option<Arc<dyn EventSink>>) -> Notifier {
        Notifier {
            sink,
            ..self.clone()
        }
    }

    /// The same sink and panic count, its warnings spaced by `clock`.
    pub(crate) fn with_clock(&self, clock: Arc<dyn Clock>) -> Notifier {
        Notifier {
            clock,
            ..self.clone()
        }
    }

    pub(crate) fn sink(&self) -> Option<&Arc<dyn EventSink>> {
        self.sink.as_ref()
    }

    /// How many times the sink panicked.
    pub(crate) fn panics(&self) -> u64 {
        self.panics.count()
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

    /// Counts a panic of the sink, and says it: the first at once, then
    /// those that follow at most once a minute by the clock, with how many
    /// there were ([`Occurrences`]).
    #[cold]
    fn panicked(&self) {
        self.panics.count_one(self.clock.as_ref(), |said| match said.since_last_warning {
            None => tracing::warn!(
                panics = said.count,
                "an event sink panicked; the event was dropped (its later panics are counted, and said at most once a minute)"
            ),
            Some(since) => tracing::warn!(
                panics = said.count,
                since_last_warning = since,
                "an event sink went on panicking; the events were dropped"
            ),
        });
    }

    /// A task event (for an applied write, the kind is
    /// [`TaskEventKind::for_status`] of the task as written).
    pub(crate) fn task(&self, kind: TaskEventKind, task: &Task) {
        self.emit(|| Event::task(kind, task));
    }
}
