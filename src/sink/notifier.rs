//! How a store or a breaker registry reaches its sink: after its locks are
//! released, with panics contained, counted and said (at most once a
//! minute while they go on).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::clock::{Clock, SystemClock};
use crate::events::{CallOutcome, Event, TaskEventKind};
use crate::sink::{EventSink, breaker_call_contained, emit_contained};
use crate::task::Task;

/// How long after a warning of its sink's panics a notifier stays quiet
/// about the panics that follow (counting them), in nanoseconds: a minute.
const WARN_AGAIN_AFTER_NANOS: i128 = 60 * 1_000_000_000;

/// A store's optional sink and its panic count. Cheap to clone; clones share
/// the count. Callers must hold no lock when they call it.
#[derive(Clone)]
pub(crate) struct Notifier {
    sink: Option<Arc<dyn EventSink>>,
    panics: Arc<Panics>,
    /// What the warnings of panics are spaced by: the store's or the
    /// registry's clock.
    clock: Arc<dyn Clock>,
}

/// The sink's panics: how many, and when they were last said.
#[derive(Default)]
struct Panics {
    count: AtomicU64,
    said: Mutex<Said>,
}

/// The last warning of the sink's panics.
#[derive(Default)]
struct Said {
    /// When (the clock's Unix nanoseconds); `None` before the first panic.
    at: Option<i128>,
    /// The panics counted by then.
    count: u64,
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
        self.panics.count.load(Ordering::Relaxed)
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
    /// there were (a sink that panics at every event would flood the log).
    /// A clock stepped back by more than a minute says the next one at once.
    #[cold]
    fn panicked(&self) {
        let now = self.clock.now_unix_nanos();
        // Two numbers, never left half-written.
        let mut said = self
            .panics
            .said
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Counted under the lock, so that the counts said only go up.
        let count = self.panics.count.fetch_add(1, Ordering::Relaxed) + 1;
        match said.at {
            None => tracing::warn!(
                panics = count,
                "an event sink panicked; the event was dropped (its later panics are counted, and said at most once a minute)"
            ),
            Some(at) if now.saturating_sub(at).abs() < WARN_AGAIN_AFTER_NANOS => return,
            Some(_) => tracing::warn!(
                panics = count,
                since_last_warning = count - said.count,
                "an event sink went on panicking; the events were dropped"
            ),
        }
        *said = Said {
            at: Some(now),
            count,
        };
    }

    /// A task event (for an applied write, the kind is
    /// [`TaskEventKind::for_status`] of the task as written).
    pub(crate) fn task(&self, kind: TaskEventKind, task: &Task) {
        self.emit(|| Event::task(kind, task));
    }
}
