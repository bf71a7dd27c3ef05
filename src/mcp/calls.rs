//! Store calls from async code, and how their failures reach the wire.

use rmcp::ErrorData as McpError;
use rmcp::model::{DetailedTask, TaskPayload};
use serde_json::{Map, Value, json};

use std::borrow::Cow;
use std::sync::Arc;

use super::convert::{jsonrpc_error, to_detailed, tool_result};
use super::options::Reads;
use crate::error::Error;
use crate::id::{TaskId, shorten};
use crate::status::TaskStatus;
use crate::store::TaskStore;
use crate::task::Task;

/// A store call's failure, before it becomes a JSON-RPC error.
pub(super) enum StoreCall {
    Store(Error),
    Unfinished(Unfinished),
}

/// A call run off the async workers ([`off_workers`]) that gave no result:
/// it panicked (the message, bounded), or its runtime shut down before it
/// ran.
#[derive(Debug)]
pub(super) struct Unfinished(String);

impl std::fmt::Display for Unfinished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl StoreCall {
    /// `-32602` for a task that does not exist (or an id that cannot name
    /// one), `-32603` with the cause for everything else.
    pub(super) fn into_mcp(self, id: Option<&TaskId>) -> McpError {
        match self {
            StoreCall::Store(Error::NotFound { id }) => unknown_task(id.as_str()),
            StoreCall::Store(e @ Error::InvalidId { .. }) => invalid_id(&e),
            StoreCall::Store(e) => McpError::internal_error(
                format!("task store error: {e}"),
                Some(json!({ "taskId": id.map(TaskId::as_str), "cause": e.to_string() })),
            ),
            StoreCall::Unfinished(e) => McpError::internal_error(
                format!("task store call did not finish: {e}"),
                Some(json!({ "taskId": id.map(TaskId::as_str) })),
            ),
        }
    }
}

impl StoreCall {
    /// [`into_mcp`](Self::into_mcp), for a call that stores what the
    /// client sent (an answer, a tool call's task): what the store refuses
    /// of it (too large, too deep, not a valid task) is the client's to
    /// fix, `-32602`, naming the task when there is one (an answer's; a
    /// tool call's task was never made, and has no id to name).
    pub(super) fn into_mcp_for_input(self, id: Option<&TaskId>) -> McpError {
        match self {
            StoreCall::Store(
                e @ (Error::PayloadTooLarge { .. }
                | Error::TooDeep { .. }
                | Error::InvalidTask { .. }),
            ) => McpError::invalid_params(
                format!("the task store refuses it: {e}"),
                Some(json!({ "taskId": id.map(TaskId::as_str), "cause": e.to_string() })),
            ),
            other => other.into_mcp(id),
        }
    }
}

impl From<Error> for StoreCall {
    fn from(e: Error) -> StoreCall {
        StoreCall::Store(e)
    }
}

/// Runs a store call off the async workers ([`off_workers`]).
pub(super) async fn blocking<T, F>(call: F) -> Result<T, StoreCall>
where
    T: Send + 'static,
    F: FnOnce() -> crate::Result<T> + Send + 'static,
{
    match off_workers(call).await {
        Ok(result) => result.map_err(StoreCall::Store),
        Err(e) => Err(StoreCall::Unfinished(e)),
    }
}

/// When a thread could last not be started for the blocking pool, if that
/// was under [`THREADS_RETRY`] ago: a process-wide state, as the limit is.
static NO_THREADS_SINCE: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);

/// How `spawn_blocking`'s panic begins when its pool has no thread and the
/// OS starts none (Tokio 1's `blocking::pool`).
const NO_THREAD_PANIC: &str = "OS can't spawn worker thread";

/// How long calls run on their task's own thread after a thread could not
/// be started, before one is tried again.
const THREADS_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs `call` off the async workers, on Tokio's blocking pool: the one way
/// the manager's store calls leave them. When the pool has no thread and
/// the OS starts none (a process at its thread limit: `RLIMIT_NPROC`, a
/// cgroup's `pids.max`), `spawn_blocking` panics; the call then runs on
/// this task's own thread, blocking it, and so do the calls after it
/// until a thread can be started again (tried, without a panic, once
/// [`THREADS_RETRY`] has passed), which is said once each time it starts.
/// Any other panic of `spawn_blocking` (called outside a runtime, say)
/// goes on as it was.
/// A call that panics is [`Unfinished`] with its message.
pub(super) async fn off_workers<T, F>(call: F) -> Result<T, Unfinished>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (sent, result) = tokio::sync::oneshot::channel();
    // Taken by whichever runs it: the pool, or this task after a spawn
    // that panicked (whose job the pool may still run, once it has a
    // thread again, and then finds taken).
    let job = Arc::new(std::sync::Mutex::new(Some((call, sent))));
    let queued = Arc::clone(&job);
    let spawned = pool_has_threads()
        && std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            drop(tokio::task::spawn_blocking(move || run(&queued)));
        }))
        .map_err(|panic| {
            let message = super::run::panic_message(&*panic);
            if !message.starts_with(NO_THREAD_PANIC) {
                std::panic::resume_unwind(panic);
            }
            crate::panics::drop_payload(panic);
            no_threads(&message);
        })
        .is_ok();
    if !spawned {
        run(&job);
    }
    // The pool's is then the one hold left on a job not yet run: a pool
    // that drops it unrun (its runtime shut down) drops `sent` with it,
    // which ends the wait below, rather than this one keeping it for ever.
    drop(job);
    match result.await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(panic)) => {
            let message = super::run::panic_message(&*panic);
            crate::panics::drop_payload(panic);
            Err(Unfinished(format!("it panicked: {message}")))
        }
        Err(_) => Err(Unfinished("its runtime shut down before it ran".to_owned())),
    }
}

/// A call of [`off_workers`] and where its result goes, taken by whichever
/// runs it first.
type Job<F, T> =
    std::sync::Mutex<Option<(F, tokio::sync::oneshot::Sender<std::thread::Result<T>>)>>;

/// Runs the call of `job` unless it was taken.
fn run<T, F: FnOnce() -> T>(job: &Job<F, T>) {
    let taken = lock(job).take();
    if let Some((call, sent)) = taken {
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(call));
        let _ = sent.send(ran);
    }
}

/// Whether calls go to the blocking pool: no thread failed to start
/// lately, or one can be started again now.
fn pool_has_threads() -> bool {
    let since = *lock(&NO_THREADS_SINCE);
    match since {
        None => true,
        Some(at) if at.elapsed() < THREADS_RETRY => false,
        // Joined: the pool may need the one thread its limit allows.
        Some(_) => match std::thread::Builder::new()
            .spawn(|| ())
            .map(|probe| probe.join())
        {
            Ok(_) => {
                *lock(&NO_THREADS_SINCE) = None;
                tracing::info!(
                    "threads can be started again: the task store's calls go back to Tokio's blocking pool"
                );
                true
            }
            Err(e) => {
                no_threads(&e.to_string());
                false
            }
        },
    }
}

/// Notes that no thread could be started now (`error` says why), said
/// when it starts.
fn no_threads(error: &str) {
    let mut since = lock(&NO_THREADS_SINCE);
    if since.is_none() {
        tracing::warn!(%error, "cannot start a thread for the task store's calls; they run on the async task's own thread, blocking it, until one can be started");
    }
    *since = Some(std::time::Instant::now());
}

/// A store `get` of task `id`, where [`Reads`] says: on the calling worker
/// (always, or when the store answers without waiting), or on the blocking
/// pool.
pub(super) async fn get(
    reads: Reads,
    store: &Arc<dyn TaskStore>,
    id: &TaskId,
) -> Result<Option<Task>, StoreCall> {
    match reads {
        Reads::Inline => return store.get(id).map_err(StoreCall::Store),
        Reads::Auto => {
            if let Some(found) = store.try_get(id) {
                return Ok(found);
            }
        }
        Reads::Blocking => {}
    }
    let (store, id) = (Arc::clone(store), id.clone());
    blocking(move || store.get(&id)).await
}

/// [`get`] of each of `ids` in one store call
/// ([`TaskStore::get_all`]: one statement for a `PgStore`), where [`Reads`]
/// says; with [`Reads::Auto`], on the calling worker if the store answers
/// each without waiting. Fails only when the call gave no answer at all
/// ([`Unfinished`]).
pub(super) async fn get_all(
    reads: Reads,
    store: &Arc<dyn TaskStore>,
    ids: Vec<TaskId>,
) -> Result<Vec<crate::Result<Option<Task>>>, Unfinished> {
    match reads {
        Reads::Inline => return Ok(store.get_all(&ids)),
        Reads::Auto => {
            let answered: Option<Vec<_>> = ids.iter().map(|id| store.try_get(id)).collect();
            if let Some(found) = answered {
                return Ok(found.into_iter().map(Ok).collect());
            }
        }
        Reads::Blocking => {}
    }
    let store = Arc::clone(store);
    off_workers(move || store.get_all(&ids)).await
}

/// A stored task in the wire's shape. A stored error that is not a
/// JSON-RPC error object is inlined as `-32603` with it as `data`
/// ([`jsonrpc_error`]); a stored result that is not a JSON object (a host
/// that is not an MCP server finished the task) is carried as a tool
/// result with its JSON as text ([`tool_result`]), so that a task a host
/// that is not an MCP server finished can be read over MCP. (An
/// `input_required` task whose `inputRequests` are not MCP input requests
/// still cannot: `-32603`.) A failed task's `statusMessage` is its error's
/// message, if the error has one.
pub(super) fn to_wire(task: &Task) -> Result<DetailedTask, McpError> {
    let carried = match task.status {
        TaskStatus::Completed if !task.result.as_ref().is_some_and(Value::is_object) => {
            let mut task = task.clone();
            let result = task.result.take().unwrap_or(Value::Null);
            task.result = Some(Value::Object(tool_result(result)));
            Cow::Owned(task)
        }
        TaskStatus::Failed if !task.error.as_ref().is_some_and(Value::is_object) => {
            let mut task = task.clone();
            let error = task.error.take().unwrap_or(Value::Null);
            task.error = Some(Value::Object(jsonrpc_error(error)));
            Cow::Owned(task)
        }
        _ => Cow::Borrowed(task),
    };
    let mut detailed = to_detailed(&carried).map_err(|e| {
        McpError::internal_error(
            format!("task store holds a task MCP cannot carry: {e}"),
            Some(json!({ "taskId": task.id.as_str(), "cause": e.to_string() })),
        )
    })?;
    if let TaskPayload::Failed { error } = &mut detailed.payload {
        *error = jsonrpc_error(Value::Object(std::mem::take(error)));
        // The tasks extension: a failed task's `statusMessage` SHOULD carry
        // diagnostic information about the failure. The stored error's own
        // message says why (a JSON-RPC error's, the reaper's "was
        // abandoned"), where the stored status message is the last one of
        // its working life; an error without one leaves that as it is.
        if let Some(message) = failure_message(task.error.as_ref()) {
            detailed.task.status_message = Some(message.to_owned());
        }
    }
    Ok(detailed)
}

/// The message of a stored error: the error itself if it is a string,
/// else its string `message`.
fn failure_message(error: Option<&Value>) -> Option<&str> {
    match error? {
        Value::String(message) => Some(message),
        error => error.get("message")?.as_str(),
    }
}

/// `-32602` for a task that does not exist; the id is shortened as the
/// store shortens ids in its own errors.
pub(super) fn unknown_task(task_id: &str) -> McpError {
    McpError::invalid_params(format!("unknown task: {}", shorten(task_id)), None)
}

/// `-32602` for an id that cannot name a task (the store's error, which
/// shortens it).
pub(super) fn invalid_id(error: &impl std::fmt::Display) -> McpError {
    McpError::invalid_params(format!("unknown task: {error}"), None)
}

/// A task id from the wire: `-32602` if it cannot name a task.
pub(super) fn parse_id(task_id: &str) -> Result<TaskId, McpError> {
    TaskId::parse(task_id).map_err(|e| invalid_id(&e))
}

/// `value` as a JSON object (an empty one if it is not one).
pub(super) fn to_json<T: serde::Serialize>(value: &T) -> Value {
    match serde_json::to_value(value) {
        Ok(v @ Value::Object(_)) => v,
        _ => Value::Object(Map::new()),
    }
}

pub(super) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // No code path panics while holding these locks; recover regardless.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    use super::off_workers;

    /// A call handed to the blocking pool of a runtime that shut down
    /// drops it unrun: the call is [`super::Unfinished`] ("its runtime shut
    /// down before it ran"), as a `JoinError` said before, and does not
    /// wait for ever for a result nothing will send.
    #[test]
    fn a_call_whose_runtime_shut_down_before_it_ran_is_unfinished() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let handle = runtime.handle().clone();
        drop(runtime);
        let _entered = handle.enter();
        let mut call = std::pin::pin!(off_workers(|| 1));
        match call.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Err(e)) => {
                assert_eq!(e.to_string(), "its runtime shut down before it ran");
            }
            other => panic!("the call's result, once its runtime shut down: {other:?}"),
        }
    }
}
