//! Panics the crate contains (a sink's, an MCP operation's, a host's
//! `tracing` subscriber's): their payload dropped where a second panic
//! cannot escape.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Drops a caught panic's `payload` under a containment of its own: a
/// payload whose `Drop` panics (`panic_any` of such a value) would
/// otherwise unwind from the drop into whoever contained the first panic.
/// One that panics again is leaked.
pub(crate) fn drop_payload(payload: Box<dyn Any + Send>) {
    if let Err(again) = catch_unwind(AssertUnwindSafe(|| drop(payload))) {
        std::mem::forget(again);
    }
}

/// Runs `call`, containing a panic: whether it returned. The panic's
/// payload is dropped under a containment of its own ([`drop_payload`]).
/// For a call into a host's code that the caller must go on past: a sink,
/// or a line logged where a panic would cost more than the line (a host's
/// `tracing` subscriber with a bug).
pub(crate) fn contained(call: impl FnOnce()) -> bool {
    let Err(payload) = catch_unwind(AssertUnwindSafe(call)) else {
        return true;
    };
    drop_payload(payload);
    false
}
