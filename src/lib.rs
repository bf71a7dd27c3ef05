#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(rust_2018_idioms)]

mod clock;
#[cfg(feature = "conformance")]
pub mod conformance;
mod error;
mod file;
mod id;
mod lease;
mod limits;
#[cfg(feature = "mcp")]
pub mod mcp;
mod memory;
mod store;
mod task;

pub use crate::clock::{Clock, ManualClock, SystemClock};
pub use crate::error::{Error, Result};
pub use crate::file::{Durability, FileStore, FileStoreBuilder, FsOp};
#[cfg(feature = "fault-injection")]
pub use crate::file::{Fault, FaultInjector};
pub use crate::id::{MAX_ID_LEN, TaskId};
pub use crate::lease::DEFAULT_LEASE;
pub use crate::limits::{DEFAULT_MAX_ACTIVE, DEFAULT_MAX_PAYLOAD_BYTES};
pub use crate::memory::MemoryStore;
pub use crate::store::{ListQuery, Page, TaskStore, Transition};
pub use crate::task::{NewTask, Outcome, Task, TaskStatus, TaskUpdate};
