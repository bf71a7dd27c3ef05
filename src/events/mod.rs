//! The event model and the per-process event log.

mod event;
mod log;

pub use event::{Event, TaskEventKind, kinds};
pub use log::{DEFAULT_EVENT_LOG_CAPACITY, EventLog, Record, Since};
