//! The event model, its vocabulary, and the per-process event log.
//!
//! Events know nothing of the stores or the breakers: the vocabulary they
//! need (task event kinds, breaker states, call outcomes, trip reasons)
//! lives here, and the stores and breakers use it.

mod breaker;
mod event;
mod kind;
mod log;
mod names;
mod task;

pub use breaker::{BreakerEventKind, BreakerState, CallOutcome, TripReason};
pub use event::Event;
pub use kind::{EventKind, HostKind};
pub use log::{DEFAULT_EVENT_LOG_CAPACITY, EventLog, MAX_EVENT_LOG_CAPACITY, Record, Since};
pub use task::{TaskEventKind, UnreadableAction};
