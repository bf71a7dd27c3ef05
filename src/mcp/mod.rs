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
//! and `tokio` with `rt-multi-thread`, `macros` and `signal`.
//!
#![doc = concat!("```no_run\n", include_str!("../../docs/use_with_rmcp.rs"), "```")]
//!
//! # Semantics
//!
//! Where nothing is said, it is `rmcp`'s.
//!
//! - **Which client gets a task.** [`client_takes_tasks`]: one that
//!   declared the extension on a protocol revision after 2025-11-25, under
//!   which SEP-2663 does not define it (a server "MUST NOT treat this
//!   capability as enabling tasks under that protocol version"). `rmcp`
//!   3.11's `ClientCapabilities::supports_tasks` looks at the declaration
//!   alone, and its client's `serve` `initialize`s, which negotiates
//!   2025-11-25. [`require_tasks`] answers any other client `-32021`, as
//!   `tasks/get`, `tasks/update` and `tasks/cancel` must (`rmcp`'s gate
//!   of those lets a 2025-11-25 client that declared the extension in).
//! - **Whose task.** The tasks extension requires a server to check each
//!   task request, and to bind tasks to the authorization context it has.
//!   With [`ManagerOptions::principal_of`] (how a request's context maps
//!   to its principal: a bearer token's subject, say) and each handler
//!   calling through [`DurableTaskManager::for_request`], a task is bound
//!   to the principal of the request that created it, stored with it
//!   ([`PRINCIPAL_KEY`]), and `tasks/get`, `tasks/update` and
//!   `tasks/cancel` from another principal, at any instance, are answered
//!   exactly as for an unknown id; principals are compared byte for byte
//!   (no case folding, trimming or Unicode normalization: the hook gives
//!   each principal one spelling); a request acting for no principal is
//!   refused (`-32600`, `data.code = "unauthenticated"`), and so is one
//!   whose principal is whitespace alone or has leading or trailing
//!   whitespace; the operation
//!   reads the principal with [`TaskContext::principal`]. Without the hook
//!   nothing is bound, as in `rmcp`: whoever holds a task's (unguessable)
//!   id reaches it. The option's docs say what a task made without a
//!   principal means once the hook is set.
//! - **Not quite a drop-in.** The shape is `rmcp`'s, but `spawn` (and every
//!   method that touches the store) is `async` and fallible, the manager
//!   needs a Tokio runtime (it runs a background loop), and
//!   [`TaskContext::set_status_message`] is `async` and fallible too.
//! - **Durable before the handle.** [`DurableTaskManager::spawn`] returns
//!   once the task is in the store (fsynced, under the default
//!   [`Durability`](crate::Durability)), so `tasks/get` at any instance
//!   resolves it at once. Store errors answer `-32603`; a task the store
//!   refuses (too large, too deep, not valid) `-32602`.
//! - **First writer wins.** The operation's `Ok` is recorded `completed`
//!   with the `CallToolResult` inlined, [`TaskExit::Error`] `failed` with the
//!   JSON-RPC error inlined, [`TaskExit::Cancelled`] `cancelled`; a
//!   panicking or aborted operation `failed` ("task operation panicked:"
//!   and up to 1 KiB of the panic's message, which the client reads, and
//!   an error in the host's log naming the task); an outcome the store
//!   refuses (too large, too deep) `failed` with `{"code":
//!   "outcome_refused", "message"}`, a failure small enough
//!   ([`SMALL_ERROR_BYTES`](crate::SMALL_ERROR_BYTES)) that the store takes
//!   it however near the payload cap the task is. The first terminal state
//!   is final across processes. A task a host that is not an MCP server
//!   finished over a shared store is answered whatever its payload's shape:
//!   a result that is not a JSON object as a `CallToolResult` whose one
//!   text content is its JSON, an error that is not a JSON-RPC error object
//!   as `-32603` with it as `data`.
//! - **Resumable tasks.** [`DurableTaskManager::spawn_resumable`] stores the
//!   task's kind and input with it; the operation saves checkpoints with
//!   [`TaskContext::checkpoint`] (durable when it returns). When its owner
//!   dies, an instance that registered a handler for the kind
//!   ([`DurableTaskManager::register_resume`]) claims it — at start, at
//!   once on registration, then every [`ManagerOptions::reap_interval`] —
//!   and runs the handler with the stored input and last checkpoint
//!   ([`TaskContext::input`], [`TaskContext::last_checkpoint`],
//!   [`TaskContext::attempt`]). Resumption is at least once: the work
//!   between the last checkpoint and the owner's death runs again. At most
//!   [`ManagerOptions::max_attempts`] owners run a task in all; after the
//!   last one, or when no instance claims it within the store's claim
//!   grace (one lease by default; `StoreBuilder::claim_grace`), it is failed
//!   as orphaned with `{"code": "orphaned", "kind", "attempts",
//!   "maxAttempts", ..}`. A task that is not resumable is failed as
//!   orphaned once its owner's lease lapses, as before.
//! - **Fenced owners.** Each claim starts a new owner epoch, and every
//!   write the manager makes for a running operation (status, status
//!   message, checkpoint, input requests, outcome) is fenced to the epoch it
//!   runs at. An owner that was stopped or cut off and wakes after its task
//!   was claimed elsewhere has its writes refused: it stops the operation
//!   (its context is cancelled and the operation aborted) and records
//!   nothing more; [`TaskContext`] writes return `-32603` with
//!   `data.code = "fenced"`. A process restarted with the same instance id
//!   is a new owner: it cannot renew, and its writes (a retried
//!   `tasks/cancel`, say) never keep a dead task alive.
//! - **Cancel is persisted and cooperative.** `tasks/cancel` writes
//!   [`CANCEL_REQUESTED_KEY`]` = true` into the task's metadata (an
//!   `input_required` task goes back to `working`) and acknowledges. It
//!   does *not* write the terminal `cancelled` state itself (but for the
//!   exception below, at the payload cap): SEP-2663 and
//!   `rmcp` let the operation decide (it may stop as `cancelled`, fail, or
//!   finish anyway), and an operation that is still running in another
//!   process must not find its task closed under it. The owner sees the
//!   request at once when the cancel arrived at its own instance, and on its
//!   next watch tick ([`ManagerOptions::watch_interval`], 250 ms) when it
//!   arrived at another, through [`TaskContext::cancelled`] /
//!   [`TaskContext::is_cancel_requested`], just as `rmcp`'s `TaskContext`
//!   delivers it; a pending [`TaskContext::request_input`] returns
//!   [`TaskExit::Cancelled`]. A cancelled task whose owner is dead is
//!   reported by the reaper, or cancelled by the operation that resumes it,
//!   which sees the request from its first step. One exception: a task too
//!   near the payload cap to take the flag (its operation's checkpoint or
//!   status message, or its metadata, filled it) is cancelled outright,
//!   with a status message that says why if that fits, since no instance
//!   could tell its operation otherwise; the operation at the instance
//!   asked is still told, and one elsewhere is told at its next look, as
//!   for any task that ended under it (whatever it records then loses).
//! - **Input across instances and restarts.** `tasks/update` may reach any
//!   instance. The owner records a response (in [`INPUT_KEYS_KEY`]) before
//!   the operation gets it; another instance persists it in the task's
//!   metadata ([`INPUT_RESPONSE_KEY_PREFIX`] + key) for a key the stored
//!   task is waiting for, and the owner — or the instance that resumes the
//!   task after its owner died — accepts it on its next watch tick. Either
//!   way a response is durable before `tasks/update` is acknowledged.
//!   Responses for keys the task is not waiting for are ignored, as in
//!   `rmcp`; so is a second response to a key once one was accepted. A key
//!   names one request for the task's whole life: a resumed operation that
//!   asks again under a key an earlier run used, with the same request,
//!   gets the recorded answer (or waits on for it); a different request
//!   under a used key is an error; a key whose request a cancel withdrew
//!   unanswered is never asked again ([`TaskExit::Cancelled`]).
//! - **Leases and orphans.** The background loop renews the lease of every
//!   task this instance runs (after a third of the lease the store granted,
//!   or [`ManagerOptions::renew_interval`]; in one batch, and a task whose
//!   batch a store call holds up is renewed alone after a third of its
//!   lease: a write that hangs for one task, on a row lock another session
//!   holds say, holds up no other task's renewal, nor the ticks) and reaps
//!   lapsed leases every
//!   [`ManagerOptions::reap_interval`]: a task whose owner died is reported
//!   `failed` with `{"code": -32603, "message": .., "data": {"code":
//!   "orphaned", ..}}`, never unknown. `tasks/get` of a task whose lease has
//!   lapsed reaps that task, and no other, at once, if a reap would fail
//!   it now, by the reap's own rule
//!   ([`TaskStore::reap_task`](crate::TaskStore::reap_task)): a resumable
//!   one with attempts left waits for a claim, `working`, for the store's
//!   claim grace, and reads `failed` from the first `tasks/get` past it;
//!   on an instance that resumes its kind, the `tasks/get` starts a claim
//!   at once instead, whatever the grace, unless a claim pass began since
//!   the task's lease lapsed; while such a pass is under way, it reads as
//!   it stands, left to that pass. Starting a
//!   manager never waits for a scan: its loop runs in the background, and
//!   its first reap waits one
//!   [`ManagerOptions::reap_interval`], so that the resume handlers a host
//!   registers just after it starts claim their orphans first (each
//!   registration claims at once).
//! - **Graceful shutdown.** [`DurableTaskManager::shutdown`] takes no new
//!   task and claims nothing from the call on, gives running operations
//!   [`ManagerOptions::shutdown_grace`] (default 5 s) to finish, then stops
//!   the rest: a resumable task with attempts left is *released*
//!   (`TaskStore::release`: its lease lapses at once, and another instance
//!   claims it without waiting a lease), any other (one on its last
//!   attempt included: no instance may claim it) is `failed` with
//!   `{"code": "shutdown", "message", "instance", "graceMs"}`, whether or
//!   not its operation stops (one that
//!   never yields cannot be aborted; nothing it does afterwards is
//!   recorded). It returns within the grace plus
//!   [`ManagerOptions::shutdown_writes`] (2 s by default) for those final
//!   store writes, whatever the operations and the store do; a write or a
//!   `spawn` still under way then is reported
//!   ([`ShutdownReport::unrecorded`]) and its task is claimed or reaped
//!   once its lease lapses. `examples/mcp_server.rs` calls it on SIGTERM,
//!   SIGINT and the end of stdin, and exits at once on a second signal.
//! - **TTL from creation.** A task is gone for every reader at `createdAt +
//!   ttlMs` and answers `-32602`, whatever its status; its operation is
//!   aborted. (`rmcp` fails a running task at the TTL and keeps terminal
//!   ones one TTL longer; the store keeps the TTL it advertises.)
//! - **Bounds.** A `ttl_ms` below [`MIN_TTL_MS`] (1 s; `0` included) is
//!   raised to it, a `poll_interval_ms` below [`MIN_POLL_INTERVAL_MS`]
//!   (10 ms) likewise; the handle `spawn` returns says what was granted.
//!   Either one over [`MAX_WIRE_MS`] (2^53 − 1, the largest integer a
//!   JavaScript client holds) is refused with `-32602`; a longer one a task
//!   made through the store's API holds is served as it. `ttl_ms: None` is
//!   an unlimited TTL. A [`ManagerOptions::watch_interval`] below
//!   [`MIN_WATCH_INTERVAL`] (10 ms; zero included) is raised to it.
//! - **Errors.** Unknown, invalid and expired ids answer `-32602` (invalid
//!   params), with the id shortened to 160 bytes as the store shortens it,
//!   from `tasks/update` and `tasks/cancel` as from `tasks/get`: SEP-2663
//!   says servers "MUST return this error for `tasks/get`" and "SHOULD
//!   return this error for `tasks/update` and `tasks/cancel`" (its
//!   ack-only answers are for the success path, "not about suppressing
//!   errors that the server can detect at request time":
//!   `src/mcp/tests/errors.rs::unknown_and_invalid_ids_are_invalid_params`,
//!   and, with `rmcp`'s client, `tests/mcp_client/mod.rs`'s `none_reach`);
//!   store errors `-32603` with the cause in the message and in
//!   `data.cause` (but where tasks are bound to principals, a stored task
//!   that cannot be read, corrupt, too large, of a newer format, or whose
//!   own file fails to open or read while the store reads other ids, is an
//!   unknown id, its cause logged at warn with the task id: whose it is
//!   cannot be read, and the cause would tell any caller the id names a
//!   stored task; a failure of the store as a whole stays `-32603`), but
//!   for what the store refuses of a client's answer or tool call (too
//!   large, too deep, not a valid task): `-32602`, with the
//!   cause (and the task id, for an answer: a refused tool call made no
//!   task); an answer a peer cannot carry to the owner because the task is
//!   near the payload cap, though it would fit in its request's place, is
//!   the server's limit: `-32603`, `data.code = "taskFull"`.
//! - **Wrongly typed params.** A `tasks/get`, `tasks/update` or
//!   `tasks/cancel` whose `taskId` is a number, `null` or missing never
//!   reaches the manager: `rmcp` 3.11 fails to parse its params and hands
//!   the request to `ServerHandler::on_custom_request`, whose default
//!   answers `-32601` (method not found) with the method name as the
//!   message (`tests/mcp.rs` shows it with `rmcp`'s client and server). A
//!   server that wants `-32602` calls [`invalid_task_request`] from its
//!   `on_custom_request`, as the example above and
//!   `examples/mcp_server.rs` do (the extension says `-32602`).
//! - **Where store calls run.** Writes run on Tokio's blocking pool
//!   (`spawn_blocking`). A read (`tasks/get`, and the read behind
//!   `tasks/update` and `tasks/cancel`) runs on the calling worker when the
//!   store can answer it without waiting ([`Reads::Auto`], the default:
//!   [`TaskStore::try_get`](crate::TaskStore::try_get) answers for every
//!   `MemoryStore` task and for a running `FileStore` task its snapshot
//!   holds, with no change pending), and on the blocking pool otherwise;
//!   [`Reads::Blocking`] always hops, [`Reads::Inline`] never does. The
//!   answer is the same either way, as fresh (`BENCHMARKS.md` has the
//!   figures). A process that can start no thread while the blocking
//!   pool has none (its thread limit reached: `RLIMIT_NPROC`, a cgroup's
//!   `pids.max`), where `spawn_blocking` panics, runs the calls on the
//!   calling task's thread instead, blocking it, said once, and goes back
//!   to the pool once a thread can be started (tried once a second).
//!   Tokio's panic is caught for that, so a build with `panic = "abort"`
//!   still aborts there, and a panic hook sees it once each time; and a
//!   store call that blocks meanwhile (a stripe a stopped process holds)
//!   holds up that thread, so a shutdown then ends only once it returns.
//! - **Counting.** [`DurableTaskManager::running_task_count`] counts this
//!   instance's running operations.
//!
//! # Limitations
//!
//! - The operation does not run inside `rmcp`'s originating-request scope
//!   (SEP-2260 request association): `rmcp` keeps that task-local private.
//! - A task's input requests must be MCP input requests (elicitation,
//!   sampling, roots), as in `rmcp`.
//! - A release on shutdown counts as an owner: a resumable task handed over
//!   at every restart of a rolling deploy uses one attempt each time.
//! - An instance claims every resumable orphan of its kinds it finds: there
//!   is no cap on how many it takes at once.
//! - Over a `PgStore`, a task whose row another session holds locked is
//!   renewed only once the lock goes: its renewal waits for it, alone (the
//!   batch it was in renews the other tasks and commits at once, holding
//!   none of their rows). The batch's call returns with that renewal, so
//!   meanwhile the manager renews the batch's other tasks alone after a
//!   third of their lease, as for any batch held up.

mod background;
mod calls;
mod context;
mod convert;
mod follow;
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
    DEFAULT_SHUTDOWN_GRACE, DEFAULT_SHUTDOWN_WRITES, MAX_PRINCIPAL_BYTES, MAX_WIRE_MS,
    MIN_POLL_INTERVAL_MS, MIN_TTL_MS, MIN_WATCH_INTERVAL, ManagerOptions, PrincipalOf, Reads,
};
pub use self::protocol::{
    CANCEL_REQUESTED_KEY, INPUT_KEYS_KEY, INPUT_RESPONSE_KEY_PREFIX, PRINCIPAL_KEY,
};
pub use self::requests::{client_takes_tasks, invalid_task_request, require_tasks};
pub use self::run::ShutdownReport;
pub use rmcp::task_manager::{TaskExit, TaskFuture, TaskOptions};

#[cfg(test)]
mod tests;
