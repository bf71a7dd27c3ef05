#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(rust_2018_idioms)]

pub mod backend;
mod breaker;
mod changes;
mod clock;
#[cfg(feature = "conformance")]
pub mod conformance;
mod error;
mod events;
mod file;
mod id;
mod lease;
mod limits;
#[cfg(feature = "mcp")]
pub mod mcp;
mod memory;
mod occurrences;
mod panics;
#[cfg(feature = "postgres")]
mod pg;
mod query;
mod rules;
mod sink;
mod status;
mod store;
mod task;

pub use crate::breaker::{
    Breaker, BreakerConfig, BreakerHealth, BreakerRegistry, CallError, DEFAULT_MAX_BREAKERS,
    MAX_BREAKER_NAME, OwnedPermit, Permit, RegistryHealth, Rejected,
};
pub use crate::changes::{ChangeFeed, ChangeSource, Changes};
pub use crate::clock::{Clock, ManualClock, SteadyClock, SystemClock};
pub use crate::error::{Error, Result};
pub use crate::events::{
    BreakerEventKind, BreakerState, CallOutcome, DEFAULT_EVENT_LOG_CAPACITY, Event, EventKind,
    EventLog, HostKind, MAX_EVENT_LOG_CAPACITY, Record, Since, TaskEventKind, TripReason,
    UnreadableAction,
};
pub use crate::file::{
    Census, Durability, FileBackend, FileCheck, FileOptions, FileStore, FileStoreBuilder, Problem,
    ProblemKind, Repair, RepairAction, RepairOutcome, Repairs, Report, Severity, StaleEntry, Usage,
};
#[cfg(feature = "fault-injection")]
pub use crate::file::{Count, Fault, FaultInjector, FaultMode, FsEvent, FsOp, Pause, Recorder};
pub use crate::id::{InvalidId, MAX_ID_LEN, TaskId};
pub use crate::lease::DEFAULT_LEASE;
pub use crate::limits::{
    DEFAULT_MAX_ACTIVE, DEFAULT_MAX_PAYLOAD_BYTES, LARGEST_TASK, MAX_DEPTH, MAX_MAX_PAYLOAD_BYTES,
    MIN_MAX_PAYLOAD_BYTES, OWN_HEADROOM, SMALL_ERROR_BYTES,
};
pub use crate::memory::{MemoryBackend, MemoryStore};
#[cfg(feature = "postgres")]
pub use crate::pg::{
    DEFAULT_POOL_SIZE, DEFAULT_POOL_WAIT, DEFAULT_SCHEMA, PgBackend, PgOptions, PgStore,
    PgStoreBuilder, ServerTime, TimeSource,
};
#[cfg(feature = "postgres")]
#[doc(hidden)]
pub use crate::pg::{PgStatements, pg_statements};
pub use crate::query::{ListQuery, Page};
pub use crate::rules::{Copied, MAX_INSTANCE_ID_LEN, Orphan, OrphanFate, Store, StoreBuilder};
#[cfg(feature = "metrics")]
pub use crate::sink::MetricsSink;
pub use crate::sink::{
    EventSink, FanOut, JsonLinesSink, TracingSink, breaker_call_contained, emit_contained,
};
pub use crate::status::TaskStatus;
pub use crate::store::{Claimed, Missed, Pass, Reaped, Renewed, Swept, TaskStore, Transition};
pub use crate::task::{DEFAULT_MAX_ATTEMPTS, NewTask, Outcome, Resume, Task, TaskUpdate};
