//! Circuit breakers: a registry of named, per-process breakers.
//!
//! The vocabulary that events carry (states, call outcomes, transitions,
//! trip reasons) lives in `events`; breakers use it and report through
//! `sink`, which know nothing of breakers.

mod circuit;
mod config;
mod health;
mod machine;
mod permit;
mod registry;
mod rejected;
mod window;

pub use circuit::Breaker;
pub use config::BreakerConfig;
pub use health::BreakerHealth;
pub use permit::{OwnedPermit, Permit};
pub use registry::{BreakerRegistry, DEFAULT_MAX_BREAKERS, MAX_BREAKER_NAME, RegistryHealth};
pub use rejected::{CallError, Rejected};
