//! [`TracingSink`]: events as `tracing` events.

use crate::events::{BreakerState, Event, EventKind};
use crate::sink::EventSink;

/// Sends every event to `tracing` as an event with target
/// `taskstore::events`, with the fields `kind`, `from`, `to` and `data`.
///
/// Breaker transitions that leave a breaker open or forced open are logged
/// at `WARN`, everything else at `INFO` (or at the level chosen with
/// [`level`](TracingSink::level)). Only the crate's breaker events count as
/// such (the event's [`EventKind`]), not a host event of a similar name or
/// with similar layers.
#[derive(Clone, Copy, Debug)]
pub struct TracingSink {
    level: Option<tracing::Level>,
}

impl TracingSink {
    /// A sink using the default levels.
    pub fn new() -> TracingSink {
        TracingSink { level: None }
    }

    /// Logs every event at `level`.
    #[must_use]
    pub fn level(mut self, level: tracing::Level) -> TracingSink {
        self.level = Some(level);
        self
    }

    fn level_for(&self, event: &Event) -> tracing::Level {
        self.level.unwrap_or_else(|| match &event.kind {
            EventKind::Breaker(kind)
                if matches!(
                    kind.state_after(),
                    BreakerState::Open | BreakerState::ForcedOpen
                ) =>
            {
                tracing::Level::WARN
            }
            _ => tracing::Level::INFO,
        })
    }
}

impl Default for TracingSink {
    fn default() -> TracingSink {
        TracingSink::new()
    }
}

macro_rules! emit_at {
    ($level:expr, $event:expr) => {
        tracing::event!(
            target: "taskstore::events",
            $level,
            kind = %$event.kind,
            from = $event.layer_from.as_deref(),
            to = $event.layer_to.as_deref(),
            data = %$event.data,
        )
    };
}

impl EventSink for TracingSink {
    fn emit(&self, event: &Event) {
        match self.level_for(event) {
            tracing::Level::ERROR => emit_at!(tracing::Level::ERROR, event),
            tracing::Level::WARN => emit_at!(tracing::Level::WARN, event),
            tracing::Level::INFO => emit_at!(tracing::Level::INFO, event),
            tracing::Level::DEBUG => emit_at!(tracing::Level::DEBUG, event),
            _ => emit_at!(tracing::Level::TRACE, event),
        }
    }
}
