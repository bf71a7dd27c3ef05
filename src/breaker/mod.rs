//! Circuit breakers: a registry of named, per-process breakers.

mod circuit;
mod config;
mod registry;
mod window;

pub use circuit::{
    Breaker, BreakerHealth, BreakerState, CallError, CallOutcome, OwnedPermit, Permit, Rejected,
};
pub use config::BreakerConfig;
pub use registry::{BreakerRegistry, DEFAULT_MAX_BREAKERS, RegistryHealth};
