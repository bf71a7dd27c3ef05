//! Durable, multi-instance tasks for `rmcp` servers (MCP Tasks, SEP-2663).
//!
//! `rmcp`'s `TaskManager` keeps tasks in one process's memory: a restart
//! loses them and a second instance cannot answer for them.
//! [`DurableTaskManager`] has the same shape — spawn an operation as a task,
//! answer `tasks/get`, `tasks/update`, `tasks/cancel`, count running tasks,
//! shut down — over any [`TaskStore`](crate::TaskStore). With a
//! [`FileStore`](crate::FileStore), every restart and every instance over
//! one directory sees the same tasks.
//!
//! [`to_detailed`], [`to_rmcp_task`], [`from_detailed`] and
//! [`from_rmcp_task`] convert between [`crate::Task`] and `rmcp`'s `Task` /
//! `DetailedTask` without losing an MCP field.
//!
//! # Example
//!
//! A stdio server whose tool runs as a durable task (the README's
//! "Use with rmcp" section shows the same program). The server's
//! `Cargo.toml` needs `rmcp` with its `server` and `transport-io` features
//! and `tokio` with `rt-multi-thread` and `macros`.
//!
#![doc = concat!("```no_run\n", include_str!("../../docs/use_with_rmcp.rs"), "```")]
//!
//! # Semantics
//!
//! Where nothing is said, it is `rmcp`'s.
//!
//! - **Durable before the handle.** [`DurableTaskManager::spawn`] returns
//!   once the task is in the store (fsynced, under the default
//!   [`Durability`](crate::Durability)), so `tasks/get` at any instance
//!   resolves it at once. It is `async` and fallible: store errors answer
//!   `-32603`.
//! - **First writer wins.** The operation's `Ok` is recorded `completed`
//!   with the `CallToolResult` inlined, [`TaskExit::Error`] `failed` with the
//!   JSON-RPC error inlined, [`TaskExit::Cancelled`] `cancelled`; a
//!   panicking or aborted operation `failed`. The first terminal state is
//!   final across processes.
//! - **Cancel is persisted and cooperative.** `tasks/cancel` writes
//!   [`CANCEL_REQUESTED_KEY`]` = true` into the task's metadata (an
//!   `input_required` task goes back to `working`) and acknowledges. It
//!   does *not* write the terminal `cancelled` state itself: SEP-2663 and
//!   `rmcp` let the operation decide (it may stop as `cancelled`, fail, or
//!   finish anyway), and an operation that is still running in another
//!   process must not find its task closed under it. The owner sees the
//!   request at once when the cancel arrived at its own instance, and on its
//!   next watch tick ([`ManagerOptions::watch_interval`], 250 ms) when it
//!   arrived at another, through [`TaskContext::cancelled`] /
//!   [`TaskContext::is_cancel_requested`], just as `rmcp`'s `TaskContext`
//!   delivers it; a pending [`TaskContext::request_input`] returns
//!   [`TaskExit::Cancelled`]. A cancelled task whose owner is dead is
//!   reported by the reaper (below).
//! - **Input across instances.** `tasks/update` responses reach an operation
//!   of the same instance at once. At another instance they are persisted
//!   in the task's metadata ([`INPUT_RESPONSE_KEY_PREFIX`] + key), for keys
//!   the stored task is waiting for, and the owner delivers them on its next
//!   watch tick. So a load balancer may route `tasks/update` anywhere.
//!   Responses for keys the task is not waiting for are ignored, as in
//!   `rmcp`. Delivered responses stay in the metadata until the task
//!   expires (keys are unique over a task's lifetime, so none is delivered
//!   twice).
//! - **Leases and orphans.** The background loop renews the lease of every
//!   task this instance runs (after a third of the lease the store granted,
//!   or [`ManagerOptions::renew_interval`]) and reaps lapsed leases every
//!   [`ManagerOptions::reap_interval`]: a task whose owner died is reported
//!   `failed` with `{"code": -32603, "message": .., "data": {"code":
//!   "orphaned", ..}}`, never unknown. `tasks/get` of a task whose lease has
//!   lapsed reaps at once. Starting a manager never waits for a scan: the
//!   first reap runs in the background.
//! - **TTL from creation.** A task is gone for every reader at `createdAt +
//!   ttlMs` and answers `-32602`, whatever its status; its operation is
//!   aborted. (`rmcp` fails a running task at the TTL and keeps terminal
//!   ones one TTL longer; the store keeps the TTL it advertises.)
//! - **Errors.** Unknown, invalid and expired ids answer `-32602` (invalid
//!   params); store errors `-32603` with the cause in the message and in
//!   `data.cause`.
//! - **Never blocks the runtime.** Every store call runs on Tokio's blocking
//!   pool (`spawn_blocking`).
//! - **Counting and shutdown.** [`DurableTaskManager::running_task_count`]
//!   counts this instance's running operations.
//!   [`DurableTaskManager::shutdown`] aborts them and records them `failed`
//!   before it returns, instead of leaving them to the reaper.
//!
//! # Limitations
//!
//! - The operation does not run inside `rmcp`'s originating-request scope
//!   (SEP-2260 request association): `rmcp` keeps that task-local private.
//! - [`TaskContext::set_status_message`] is `async` and fallible (it writes
//!   the store); `rmcp`'s is not.
//! - A task's input requests must be MCP input requests (elicitation,
//!   sampling, roots), as in `rmcp`.

mod calls;
mod context;
mod convert;
mod manager;
mod options;
mod protocol;
mod requests;
mod run;
mod worker;

pub use self::context::TaskContext;
pub use self::convert::{
    ConversionError, from_detailed, from_rmcp_task, status_from_rmcp, status_to_rmcp, to_detailed,
    to_rmcp_task,
};
pub use self::manager::DurableTaskManager;
pub use self::options::{
    DEFAULT_SHUTDOWN_GRACE, MAX_WIRE_MS, MIN_POLL_INTERVAL_MS, MIN_TTL_MS, ManagerOptions, Reads,
};
pub use self::protocol::{CANCEL_REQUESTED_KEY, INPUT_KEYS_KEY, INPUT_RESPONSE_KEY_PREFIX};
pub use self::requests::invalid_task_request;
pub use self::run::ShutdownReport;
pub use rmcp::task_manager::{TaskExit, TaskFuture, TaskOptions};

#[cfg(test)]
mod tests;
