//! The metadata keys a host may not write: those the MCP task manager
//! keeps in a task (FORMAT.md), the binding of a task to its principal
//! among them.
//!
//! **Invariant:** a host's `create` and `update` set no key beginning with
//! [`RESERVED_PREFIX`]; the manager's own writes carry theirs apart
//! (`NewTask::reserved_metadata`, `TaskUpdate::reserved_metadata`,
//! crate-private), and every store, over every backend, checks here before
//! it reads or writes anything.
//! **Rationale:** the manager's cancel request, input answers and the
//! principal a task is bound to are its protocol: a host's write of
//! `mcp.principal` would rebind a task to another principal, or unbind it.
//! What a task already holds is never refused (a write merges keys), and a
//! copy of a store (`Store::copy_from`) copies every field as it is.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::id::TaskId;

/// The prefix of the metadata keys reserved for the MCP task manager.
pub(crate) const RESERVED_PREFIX: &str = "mcp.";

/// Whether metadata key `key` is reserved for the MCP task manager: it
/// begins with [`RESERVED_PREFIX`], byte for byte.
pub(crate) fn is_reserved(key: &str) -> bool {
    key.starts_with(RESERVED_PREFIX)
}

/// Refuses the host's `metadata` of `operation` (`"create"`, `"update"`)
/// of task `id` if it sets a reserved key, naming the first such key.
///
/// # Errors
///
/// [`Error::ReservedMetadata`].
pub(super) fn host_metadata(
    operation: &'static str,
    id: &TaskId,
    metadata: &Map<String, Value>,
) -> Result<()> {
    match metadata.keys().find(|key| is_reserved(key)) {
        Some(key) => Err(Error::ReservedMetadata {
            op: operation,
            id: id.clone(),
            key: crate::id::shorten(key),
        }),
        None => Ok(()),
    }
}
