//! [`FanOut`]: one sink that forwards to several.

use std::fmt;
use std::sync::Arc;

use crate::clock::{Clock, SystemClock};
use crate::events::{CallOutcome, Event};
use crate::occurrences::Occurrences;
use crate::sink::{EventSink, breaker_call_contained, emit_contained};

/// Forwards every event to each of its sinks in order. A sink that panics is
/// contained, counted ([`panics`](FanOut::panics)) and logged as a warning
/// naming its place among the sinks (from 0): at the first panic, then at
/// most once a minute by its [clock](FanOut::with_clock), with the panics
/// counted so far and since the warning before, as a store says its own
/// sink's. The others still get the event. The store or registry the
/// fan-out is given sees no panic: its own count of sink panics stays 0,
/// and this one is the count to watch.
///
/// ```
/// use std::sync::Arc;
/// use taskstore::{Event, EventLog, EventSink, FanOut, TracingSink};
///
/// let log = Arc::new(EventLog::new());
/// let sink = FanOut::new().with(log.clone()).with(TracingSink::new());
/// sink.emit(&Event::new("hello"));
/// assert_eq!(log.len(), 1);
/// ```
pub struct FanOut {
    sinks: Vec<Arc<dyn EventSink>>,
    panics: Occurrences,
    /// What the warnings of panics are spaced by.
    clock: Arc<dyn Clock>,
}

impl Default for FanOut {
    fn default() -> FanOut {
        FanOut {
            sinks: Vec::new(),
            panics: Occurrences::default(),
            clock: Arc::new(SystemClock),
        }
    }
}

impl FanOut {
    /// A fan-out with no sinks yet.
    pub fn new() -> FanOut {
        FanOut::default()
    }

    /// Spaces the warnings of its sinks' panics by `clock` (the system
    /// clock unless set): a test's [`ManualClock`](crate::ManualClock), or
    /// the clock the store or registry above it goes by.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> FanOut {
        self.clock = clock;
        self
    }

    /// Adds a sink.
    #[must_use]
    pub fn with(mut self, sink: impl EventSink + 'static) -> FanOut {
        self.sinks.push(Arc::new(sink));
        self
    }

    /// Adds a shared sink.
    #[must_use]
    pub fn with_shared(mut self, sink: Arc<dyn EventSink>) -> FanOut {
        self.sinks.push(sink);
        self
    }

    /// How many sinks it forwards to.
    pub fn len(&self) -> usize {
        self.sinks.len()
    }

    /// Whether it forwards to no sink at all.
    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// How many times one of its sinks panicked.
    pub fn panics(&self) -> u64 {
        self.panics.count()
    }

    fn count(&self, sink: usize, ok: bool) {
        if !ok {
            self.panicked(sink);
        }
    }

    #[cold]
    fn panicked(&self, sink: usize) {
        self.panics
            .count_one(self.clock.as_ref(), |said| match said.since_last_warning {
                None => tracing::warn!(
                    sink,
                    panics = said.count,
                    "a sink of a FanOut panicked; it missed the event (later panics are counted, and said at most once a minute)"
                ),
                Some(since) => tracing::warn!(
                    sink,
                    panics = said.count,
                    since_last_warning = since,
                    "a sink of a FanOut went on panicking; it missed the events"
                ),
            });
    }
}

impl EventSink for FanOut {
    fn emit(&self, event: &Event) {
        for (n, sink) in self.sinks.iter().enumerate() {
            self.count(n, emit_contained(&**sink, event));
        }
    }

    fn breaker_call(&self, breaker: &str, outcome: CallOutcome) {
        for (n, sink) in self.sinks.iter().enumerate() {
            self.count(n, breaker_call_contained(&**sink, breaker, outcome));
        }
    }
}

impl fmt::Debug for FanOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FanOut")
            .field("sinks", &self.sinks.len())
            .field("panics", &self.panics())
            .finish()
    }
}
