//! Panics the crate contains (a sink's, an MCP operation's): their payload
//! dropped where a second panic cannot escape.

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
