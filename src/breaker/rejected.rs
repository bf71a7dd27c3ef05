//! What a caller gets back when a breaker does not run its call.

use std::fmt;
use std::sync::Arc;

use time::OffsetDateTime;

use crate::events::BreakerState;

/// A call the breaker did not let through.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("breaker {breaker} is {state}: call rejected{}", retry_hint(*.retry_at))]
#[non_exhaustive]
pub struct Rejected {
    /// The breaker's name.
    pub breaker: Arc<str>,
    /// Its state when it rejected the call.
    pub state: BreakerState,
    /// When a call may be let through again: the end of the open duration.
    /// `None` when half-open with every probe slot taken (retry when a probe
    /// finishes) or forced open (retry after a reset).
    pub retry_at: Option<OffsetDateTime>,
}

fn retry_hint(at: Option<OffsetDateTime>) -> String {
    match at {
        Some(at) => format!(", retry at {at}"),
        None => String::new(),
    }
}

/// Why [`Breaker::call`](crate::Breaker::call) returned no value. Either
/// way it names the breaker.
#[derive(Debug)]
pub enum CallError<E> {
    /// The breaker rejected the call; the closure did not run.
    Rejected(Rejected),
    /// The closure ran and returned `error` (counted as a failure).
    Failed {
        /// The breaker's name.
        breaker: Arc<str>,
        /// The closure's error.
        error: E,
    },
}

impl<E> CallError<E> {
    /// The closure's error, if it ran and failed.
    pub fn into_failure(self) -> Option<E> {
        match self {
            CallError::Rejected(_) => None,
            CallError::Failed { error, .. } => Some(error),
        }
    }
}

impl<E: fmt::Display> fmt::Display for CallError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Rejected(r) => r.fmt(f),
            CallError::Failed { breaker, error } => {
                write!(f, "call through breaker {breaker} failed: {error}")
            }
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for CallError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CallError::Rejected(r) => Some(r),
            CallError::Failed { error, .. } => Some(error),
        }
    }
}
