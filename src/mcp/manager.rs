//! The durable task manager: `rmcp`'s `TaskManager`, with its tasks in a
//! [`TaskStore`], and resumable tasks on top.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use rmcp::ErrorData as McpError;
use rmcp::model::DetailedTask;
use rmcp::service::{RequestContext, RoleServer};
use rmcp::task_manager::{TaskFuture, TaskOptions};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};

use super::background::background;
use super::calls::{blocking, lock};
use super::context::TaskContext;
use super::convert::to_rmcp_task;
use super::follow::follow_changes;
use super::options::{MAX_PRINCIPAL_BYTES, ManagerOptions, named, new_task, padded};
use super::protocol::PRINCIPAL_KEY;
use super::run::{Handler, Run, Shared, ShutdownReport, Stopped};
use crate::id::TaskId;
use crate::occurrences::Occurrences;
use crate::store::TaskStore;
use crate::task::{NewTask, Outcome};

/// A durable, multi-instance task manager for `rmcp` servers (SEP-2663).
///
/// It has the shape of `rmcp::task_manager::TaskManager` — `spawn`,
/// `get_task`, `update_task`, `cancel_task`, `running_task_count`,
/// `shutdown` — but every task lives in the store `S`, so a restarted server
/// and every other instance over the same store answer for it; and a
/// resumable task ([`spawn_resumable`](DurableTaskManager::spawn_resumable))
/// is resumed by another instance, or the restarted one, when its owner
/// dies. Unlike `rmcp`'s, the methods that touch the store are `async` and
/// fallible, and it needs a Tokio runtime. See the [module docs](crate::mcp)
/// for the semantics, and where they differ from `rmcp`'s.
///
/// Cheaply cloneable; clones share one state and one background loop, which
/// stops when the last clone and the last running operation are gone (or at
/// [`DurableTaskManager::shutdown`]).
pub struct DurableTaskManager<S: TaskStore + 'static> {
    store: Arc<S>,
    shared: Arc<Shared>,
    /// The principal this handle's requests act for
    /// ([`for_request`](Self::for_request),
    /// [`as_principal`](Self::as_principal)); `None` for none.
    principal: Option<Arc<str>>,
}

impl<S: TaskStore + 'static> Clone for DurableTaskManager<S> {
    fn clone(&self) -> Self {
        DurableTaskManager {
            store: Arc::clone(&self.store),
            shared: Arc::clone(&self.shared),
            principal: self.principal.clone(),
        }
    }
}

impl<S: TaskStore + 'static> DurableTaskManager<S> {
    /// The state its runs share (for the tests).
    #[cfg(test)]
    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// A manager over `store`, with the default [`ManagerOptions`].
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime (it starts its background loop).
    pub fn new(store: Arc<S>) -> Self {
        Self::with_options(store, ManagerOptions::default())
    }

    /// A manager over `store` with these options.
    ///
    /// Starts the background loop (lease renewal, cross-instance cancel and
    /// input delivery, claims of resumable orphans, orphan reaping, expiry
    /// sweeps) and returns at once: the first claim and reap run in the
    /// background, never on the caller's path.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub fn with_options(store: Arc<S>, options: ManagerOptions) -> Self {
        if let Some(lease) = store
            .lease()
            .filter(|lease| options.watch_pause() >= *lease)
        {
            // Renewals run on the watch ticks: every lease would lapse
            // between two (a test may mean it, to hold an instance still).
            tracing::warn!(
                watch_interval_ms = options.watch_pause().as_millis(),
                lease_ms = lease.as_millis(),
                "the watch interval is as long as the store's lease or longer: leases are renewed on its ticks, so they lapse between them, and peers may reap or claim tasks this manager runs"
            );
        }
        let dyn_store: Arc<dyn TaskStore> = store.clone();
        let shared = Arc::new(Shared {
            store: dyn_store,
            options,
            local: Mutex::new(HashMap::new()),
            handlers: RwLock::new(HashMap::new()),
            closing: AtomicBool::new(false),
            starting: AtomicUsize::new(0),
            drained: Notify::new(),
            claim_now: Notify::new(),
            claimed_at: Mutex::new(None),
            claiming: AtomicUsize::new(0),
            shutting_down: watch::channel(false).0,
            stop: watch::channel(false).0,
            background: Mutex::new(None),
            stopped: Mutex::new(Stopped::default()),
            maintenance_panics: Occurrences::default(),
        });
        let handle = tokio::spawn(background(Arc::downgrade(&shared), shared.stop.subscribe()));
        *lock(&shared.background) = Some(handle);
        follow_changes(&shared);
        DurableTaskManager {
            store,
            shared,
            principal: None,
        }
    }

    /// This manager, for the request `context` belongs to: its `spawn`,
    /// `get_task`, `update_task` and `cancel_task` act for the principal
    /// [`ManagerOptions::principal_of`] maps the request to (none without
    /// that hook, or if it finds none: the calls are then refused, if the
    /// hook is set). Call it in each `ServerHandler` method that creates
    /// or reaches a task, with that method's context:
    ///
    /// ```no_run
    /// # use rmcp::model::{GetTaskParams, GetTaskResult};
    /// # use rmcp::service::{RequestContext, RoleServer};
    /// # use rmcp::ErrorData as McpError;
    /// # async fn get_task(
    /// #     tasks: &taskstore::mcp::DurableTaskManager<taskstore::FileStore>,
    /// #     request: GetTaskParams,
    /// #     context: RequestContext<RoleServer>,
    /// # ) -> Result<GetTaskResult, McpError> {
    /// let tasks = tasks.for_request(&context);
    /// Ok(GetTaskResult::new(tasks.get_task(&request.task_id).await?))
    /// # }
    /// ```
    ///
    /// A clone (cheap); the manager's state is shared.
    #[must_use]
    pub fn for_request(&self, context: &RequestContext<RoleServer>) -> Self {
        let principal = self
            .shared
            .options
            .principal_of
            .as_ref()
            .and_then(|of| of.of(context));
        DurableTaskManager {
            principal: principal.map(Arc::from),
            ..self.clone()
        }
    }

    /// This manager, acting for `principal` (an empty string, or one of
    /// whitespace alone, is none): for a host that authenticates its
    /// requests outside `rmcp`'s context. The host's word is taken;
    /// everything else is as for [`for_request`](Self::for_request) (a
    /// principal with leading or trailing whitespace is refused).
    #[must_use]
    pub fn as_principal(&self, principal: impl Into<String>) -> Self {
        DurableTaskManager {
            principal: named(principal.into()).map(Arc::from),
            ..self.clone()
        }
    }

    /// The principal this handle's requests act for, for `operation` (of
    /// task `task_id`, if it names one).
    ///
    /// # Errors
    ///
    /// `-32600`, `data.code = "unauthenticated"`, if the manager binds
    /// tasks to principals ([`ManagerOptions::principal_of`]) and this
    /// handle acts for none, or if it acts for one with leading or
    /// trailing whitespace; `-32600`, `data.code = "principalTooLong"`,
    /// if it acts for one over [`MAX_PRINCIPAL_BYTES`].
    fn principal(&self, operation: &str, task_id: Option<&str>) -> Result<Option<&str>, McpError> {
        let refused = |why: String, code: &str| {
            let what = match task_id {
                Some(id) => format!("{operation} of task {}", crate::id::shorten(id)),
                None => operation.to_owned(),
            };
            McpError::invalid_request(
                format!("{what} refused: {why}"),
                Some(json!({
                    "code": code,
                    "operation": operation,
                    "taskId": task_id.map(crate::id::shorten),
                })),
            )
        };
        match &self.principal {
            None if self.shared.options.principal_of.is_some() => Err(refused(
                "the request acts for no principal, and this server binds each task to the \
                 principal of the request that created it"
                    .to_owned(),
                "unauthenticated",
            )),
            Some(principal) if principal.len() > MAX_PRINCIPAL_BYTES => Err(refused(
                format!(
                    "the request's principal is {} bytes, over the {MAX_PRINCIPAL_BYTES} a task \
                     is bound to",
                    principal.len()
                ),
                "principalTooLong",
            )),
            Some(principal) if padded(principal) => Err(refused(
                "the request's principal has leading or trailing whitespace, which this server \
                 neither trims nor takes as a principal of its own"
                    .to_owned(),
                "unauthenticated",
            )),
            principal => Ok(principal.as_deref()),
        }
    }

    /// The store the tasks live in.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// Spawns an operation as a task and returns its seed state for a
    /// `CreateTaskResult`.
    ///
    /// The task is durably in the store before this returns, so `tasks/get`
    /// from any instance resolves it at once. Through a handle that acts for
    /// a principal ([`for_request`](Self::for_request),
    /// [`as_principal`](Self::as_principal)) it is bound to that principal,
    /// by the same create. The operation's outcome is
    /// recorded first-writer-wins: `Ok` as `completed` with the result
    /// inlined, [`TaskExit::Error`](super::TaskExit::Error) as `failed` with
    /// the JSON-RPC error inlined,
    /// [`TaskExit::Cancelled`](super::TaskExit::Cancelled) as `cancelled`. A
    /// panicking or aborted operation is recorded `failed`.
    ///
    /// Dropped before it returns (a host's timeout, a request dropped with
    /// its connection), it runs nothing: once the create under way returns,
    /// its task is recorded `failed` with `{"code": "abandoned", ..}` (no
    /// one holds its id), and until then a [`shutdown`](Self::shutdown)
    /// counts that create as unrecorded.
    ///
    /// `options.ttl_ms` and `options.poll_interval_ms` are held to their
    /// bounds: below [`MIN_TTL_MS`](super::MIN_TTL_MS) /
    /// [`MIN_POLL_INTERVAL_MS`](super::MIN_POLL_INTERVAL_MS) they are raised
    /// (the returned handle says what was granted); over
    /// [`MAX_WIRE_MS`](super::MAX_WIRE_MS) they are refused.
    ///
    /// # Errors
    ///
    /// `-32602` for an option over its bound; `-32600`
    /// (`data.code = "unauthenticated"`) if the manager binds tasks to
    /// principals ([`ManagerOptions::principal_of`]) and this handle acts
    /// for none; `-32603` with the cause if the
    /// store cannot create the task (I/O, the active-task cap) or the
    /// manager is shutting down (`data.code = "shutdown"`); nothing was
    /// spawned.
    pub async fn spawn<F>(
        &self,
        options: TaskOptions,
        make_future: F,
    ) -> Result<rmcp::model::Task, McpError>
    where
        F: FnOnce(TaskContext) -> TaskFuture + Send,
    {
        let new = new_task(&options)?;
        self.start("spawn", new, make_future).await
    }

    /// Spawns an operation as a *resumable* task of `kind` (a tool's name,
    /// say) with `input`: as [`spawn`](DurableTaskManager::spawn), and the
    /// kind and input are stored with the task (counted against the store's
    /// payload cap). The operation saves checkpoints with
    /// [`TaskContext::checkpoint`]. If this instance dies (or shuts down)
    /// before the task ends, an instance with a resume handler for `kind`
    /// ([`register_resume`](DurableTaskManager::register_resume)) claims it
    /// and runs the handler from the last checkpoint, up to
    /// [`ManagerOptions::max_attempts`] owners in all; with no handler for
    /// `kind` anywhere, the task is failed as orphaned after the store's
    /// claim grace.
    ///
    /// `make_future` runs the first attempt; it is usually the same code as
    /// the handler registered for `kind`.
    ///
    /// # Errors
    ///
    /// As [`spawn`](DurableTaskManager::spawn).
    pub async fn spawn_resumable<F>(
        &self,
        kind: impl Into<String>,
        input: Value,
        options: TaskOptions,
        make_future: F,
    ) -> Result<rmcp::model::Task, McpError>
    where
        F: FnOnce(TaskContext) -> TaskFuture + Send,
    {
        let new = new_task(&options)?
            .resumable(kind, input)
            .max_attempts(self.shared.options.max_attempts);
        self.start("spawn_resumable", new, make_future).await
    }

    /// Registers the handler that resumes tasks of `kind` whose owner died:
    /// from now on this instance claims them (at once, then on every reap
    /// tick) and runs `handler` for each, with a [`TaskContext`] holding
    /// the task's input and last checkpoint. A later registration for the
    /// same kind replaces the handler. Register within
    /// [`ManagerOptions::reap_interval`](super::ManagerOptions::reap_interval)
    /// of the manager's start: its first reap fails the orphans whose claim
    /// grace has passed and that no handler claimed.
    pub fn register_resume<H>(&self, kind: impl Into<String>, handler: H)
    where
        H: Fn(TaskContext) -> TaskFuture + Send + Sync + 'static,
    {
        let handler: Handler = Arc::new(handler);
        match self.shared.handlers.write() {
            Ok(mut handlers) => handlers.insert(kind.into(), handler),
            Err(poisoned) => poisoned.into_inner().insert(kind.into(), handler),
        };
        self.shared.claim_now.notify_one();
    }

    async fn start<F>(
        &self,
        operation: &str,
        new: NewTask,
        make_future: F,
    ) -> Result<rmcp::model::Task, McpError>
    where
        F: FnOnce(TaskContext) -> TaskFuture + Send,
    {
        // Bound with its create: no instance ever sees it unbound.
        let new = match self.principal(operation, None)? {
            Some(principal) => new.reserved_metadata(PRINCIPAL_KEY, principal),
            None => new,
        };
        let shared = &self.shared;
        shared.starting.fetch_add(1, Ordering::SeqCst);
        // Counted as starting until the launch below, or, if this future
        // is dropped first, until the task the create made is failed.
        let starting = Arc::new(Starting(Arc::clone(shared)));
        if shared.is_closing() {
            return Err(McpError::internal_error(
                format!(
                    "instance {} is shutting down and takes no new tasks",
                    shared.store.instance_id()
                ),
                Some(json!({ "code": "shutdown" })),
            ));
        }
        let creation = Arc::new(Mutex::new(Creation::Running));
        let mut abandon = Abandon {
            creation: Arc::clone(&creation),
            store: Arc::clone(&shared.store),
            starting: Arc::clone(&starting),
            armed: true,
        };
        let store = Arc::clone(&shared.store);
        let held = Arc::clone(&starting);
        let created = blocking(move || {
            let _held = held;
            let created = store.create(new);
            let mut state = lock(&creation);
            if matches!(*state, Creation::Abandoned) {
                drop(state);
                if let Ok(task) = &created {
                    fail_abandoned(&*store, &task.id, task.epoch);
                }
            } else {
                *state = Creation::Made(created.as_ref().ok().map(|t| (t.id.clone(), t.epoch)));
            }
            created
        })
        .await;
        // The create's outcome reached this caller: nothing to abandon.
        abandon.armed = false;
        let task = created.map_err(|e| e.into_mcp_for_input(None))?;
        let seed = to_rmcp_task(&task);
        shared.launch(
            Run::of(&task, shared.store.lease(), shared.store.lease_from()),
            make_future,
        );
        drop(starting);
        Ok(seed)
    }

    /// Handles `tasks/get`: the task's current state, from the store.
    ///
    /// A running task whose owner's lease has lapsed is reaped first if a
    /// reap would fail it now ([`TaskStore::reap_task`], the reap's own
    /// rule), so it is reported `failed` (orphaned), never as running
    /// forever: a resumable one with attempts left stays `working` while it
    /// waits to be claimed, within the store's claim grace (or while this
    /// instance, which resumes its kind, claims it). A stored
    /// error that is not a JSON-RPC error object (such as the store's
    /// `{"code": "orphaned", ..}`) is inlined as `-32603` with the stored
    /// error, whole, as its `data`.
    ///
    /// # Errors
    ///
    /// `-32602` for an unknown, invalid or expired id (shortened in the
    /// message), and, just so, for a task bound to another principal than
    /// this handle acts for ([`ManagerOptions::principal_of`]), and, where
    /// tasks are bound, for a stored task that cannot be read, its own file
    /// failing to open or read among them (its cause logged at warn);
    /// `-32600`
    /// (`unauthenticated`) where tasks are bound and this handle acts for
    /// none; `-32603` with the cause for a store error.
    pub async fn get_task(&self, task_id: &str) -> Result<DetailedTask, McpError> {
        let principal = self.principal("tasks/get", Some(task_id))?;
        self.shared.get_task(principal, task_id).await
    }

    /// Handles `tasks/update`: delivers `inputResponses` to the operation.
    ///
    /// Responses for keys the task is not waiting for are ignored, as in
    /// `rmcp`, and so is a second answer to a key another instance has
    /// already taken an answer for (the first stands, as `rmcp` delivers the
    /// first). When this instance runs the task it records them and they
    /// reach the operation at once; otherwise they are persisted in the
    /// task's metadata (one key per response,
    /// [`INPUT_RESPONSE_KEY_PREFIX`](super::INPUT_RESPONSE_KEY_PREFIX) +
    /// key) and the owning instance — or the one that resumes the task —
    /// accepts them on its next watch tick. Either way a response is durable
    /// before this returns. A terminal task ignores updates.
    ///
    /// # Errors
    ///
    /// `-32602` for an unknown, invalid or expired id (or one bound to
    /// another principal, as for [`get_task`](Self::get_task)), or an
    /// answer the store refuses on its own (too large, too deep); `-32600`
    /// as for [`get_task`](Self::get_task); `-32603` with the
    /// cause for a store error, and (`data.code = "taskFull"`) for an answer
    /// this instance cannot carry to the task's owner because the task is
    /// too near the payload cap (the instance running it takes it).
    pub async fn update_task(
        &self,
        task_id: &str,
        input_responses: impl IntoIterator<Item = (String, Value)>,
    ) -> Result<(), McpError> {
        let principal = self.principal("tasks/update", Some(task_id))?;
        let responses: Vec<(String, Value)> = input_responses.into_iter().collect();
        self.shared.update_task(principal, task_id, responses).await
    }

    /// Handles `tasks/cancel`: cooperative cancellation (SEP-2663), persisted
    /// (but for a task too near the payload cap to take the request: it is
    /// cancelled outright; see the [module docs](crate::mcp)).
    ///
    /// Records the request in the store (metadata
    /// [`CANCEL_REQUESTED_KEY`](super::CANCEL_REQUESTED_KEY) = `true`; an
    /// `input_required` task goes back to `working`) and acknowledges; it
    /// does not force a terminal state (but at the payload cap, above). The
    /// owning operation — in this
    /// instance at once, in another on its next watch tick — sees it through
    /// [`TaskContext::cancelled`] / [`TaskContext::is_cancel_requested`],
    /// and a pending [`TaskContext::request_input`] returns
    /// [`TaskExit::Cancelled`](super::TaskExit::Cancelled). The operation
    /// decides the terminal status, as in `rmcp` (but at the payload cap).
    /// Cancelling a terminal task
    /// is acknowledged and changes nothing. The write is not the owner's: it
    /// never renews the task's lease.
    ///
    /// # Errors
    ///
    /// `-32602` for an unknown, invalid or expired id (or one bound to
    /// another principal), `-32600`, as for [`get_task`](Self::get_task);
    /// `-32603` with the cause for a store error.
    pub async fn cancel_task(&self, task_id: &str) -> Result<(), McpError> {
        let principal = self.principal("tasks/cancel", Some(task_id))?;
        self.shared.cancel_task(principal, task_id).await
    }

    /// How many operations this instance is running now.
    pub fn running_task_count(&self) -> usize {
        lock(&self.shared.local).len()
    }

    /// Shuts down gracefully, within a stated bound: from the call on, no
    /// new task is spawned (`spawn` answers `-32603`, `data.code =
    /// "shutdown"`) and no orphan claimed; running operations get
    /// [`ManagerOptions::shutdown_grace`] to finish (their outcomes are
    /// recorded as usual, leases renewed, cancels delivered;
    /// [`TaskContext::shutting_down`] tells them); then each one left is
    /// stopped (aborted), and shutdown records its task *released* if it is
    /// resumable with attempts left (its lease lapses at once: another
    /// instance claims it without waiting a lease) or `failed` with
    /// `{"code": "shutdown", "message", "instance", "graceMs"}` (inlined on
    /// the wire as `-32603` with that as `data`; a task on its last attempt
    /// too, which no instance may claim) — whether or not the operation
    /// stops: one that
    /// never yields (it blocks its thread) cannot be aborted, and nothing
    /// it does afterwards is recorded.
    ///
    /// Returns by [`ManagerOptions::shutdown_grace`] plus
    /// [`ManagerOptions::shutdown_writes`] (the time the final store writes
    /// get, 2 s by default), whatever the operations and the store do: a
    /// write or a `spawn`'s create that has not returned by then is counted
    /// in [`ShutdownReport::unrecorded`] and left to land (or not); its
    /// task is claimed or reaped once its lease lapses. The report says
    /// what it did. Tasks of other instances are untouched.
    pub async fn shutdown(&self) -> ShutdownReport {
        self.shared.shutdown().await
    }
}

/// Counts a `spawn` as starting while any holder of it lives: the `spawn`
/// until it launched its run, and, if it was dropped before its create
/// returned (a host's timeout, a request dropped with its connection), the
/// create and what fails the task it made.
struct Starting(Arc<Shared>);

impl Drop for Starting {
    fn drop(&mut self) {
        self.0.starting.fetch_sub(1, Ordering::SeqCst);
        self.0.drained.notify_waiters();
    }
}

/// Where a `spawn`'s create stands, between the `spawn` and the thread
/// that runs the create.
enum Creation {
    /// Under way.
    Running,
    /// The `spawn` was dropped first: the create's thread fails what it
    /// makes.
    Abandoned,
    /// Returned (the task made, if it was: its id and epoch), its outcome
    /// not yet taken by the `spawn`.
    Made(Option<(TaskId, u64)>),
}

/// Fails the task a dropped `spawn`'s create made, which no one holds the
/// id of and nothing runs: it would otherwise show `working`, and a
/// resumable one be claimed and run, for a caller that never got its id.
/// Runs with no async runtime (on the create's thread, or a thread of its
/// own), so that a runtime shutting down cannot drop it.
struct Abandon {
    creation: Arc<Mutex<Creation>>,
    store: Arc<dyn TaskStore>,
    starting: Arc<Starting>,
    /// Until the create's outcome reached the `spawn`.
    armed: bool,
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let was = std::mem::replace(&mut *lock(&self.creation), Creation::Abandoned);
        if let Creation::Made(Some((id, epoch))) = was {
            // Made, but its outcome never reached the `spawn`.
            let store = Arc::clone(&self.store);
            let held = Arc::clone(&self.starting);
            let task = id.clone();
            let spawned = std::thread::Builder::new()
                .name("taskstore-abandon".to_owned())
                .spawn(move || {
                    let _held = held;
                    fail_abandoned(&*store, &id, epoch);
                });
            if let Err(e) = spawned {
                tracing::warn!(
                    task = %task,
                    error = %e,
                    "a spawn was dropped as its create returned, and no thread could fail its \
                     task: it is reaped, or claimed if it is resumable, once its lease lapses"
                );
            }
        }
        // `Running`: the create's thread fails what it makes.
    }
}

/// Fails task `id`, made at `epoch` by a `spawn` dropped before it returned
/// the id, so never run. Fenced to that epoch: a task another instance
/// claimed meanwhile is its own.
fn fail_abandoned(store: &dyn TaskStore, id: &TaskId, epoch: u64) {
    let error = json!({
        "code": "abandoned",
        "message": "the spawn that made this task was dropped before it returned the task's id, \
                    so the task was not run",
        "instance": store.instance_id(),
    });
    match store.finish_fenced(id, Outcome::Failed(error), epoch) {
        Ok(t) if t.is_applied() => tracing::warn!(
            task = %id,
            "a spawn was dropped before its create returned: its task was failed, unrun"
        ),
        Ok(t) => tracing::warn!(
            task = %id,
            status = %t.task().status,
            "a spawn was dropped before its create returned; its task was taken on meanwhile"
        ),
        Err(e) => tracing::warn!(
            task = %id,
            error = %e,
            "a spawn was dropped before its create returned, and its task could not be \
             failed: it is reaped, or claimed if it is resumable, once its lease lapses"
        ),
    }
}
