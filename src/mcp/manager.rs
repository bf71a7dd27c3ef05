//! The durable task manager: `rmcp`'s `TaskManager`, with its tasks in a
//! [`TaskStore`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use rmcp::ErrorData as McpError;
use rmcp::model::{DetailedTask, InputRequest, TaskPayload};
use rmcp::task_manager::{TaskExit, TaskFuture, TaskOptions};
use serde_json::{Map, Value, json};
use tokio::sync::{oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle};

use super::convert::{jsonrpc_error, to_detailed, to_rmcp_task};
use crate::changes::Changes;
use crate::error::Error;
use crate::id::TaskId;
use crate::store::TaskStore;
use crate::task::{NewTask, Outcome, Task, TaskStatus, TaskUpdate};

/// Metadata key under which `tasks/cancel` persists the cancellation request.
pub const CANCEL_REQUESTED_KEY: &str = "mcp.cancelRequested";

/// Metadata key prefix under which `tasks/update` persists an input response
/// that arrived at an instance other than the task's owner; the key of the
/// input request follows the prefix.
pub const INPUT_RESPONSE_KEY_PREFIX: &str = "mcp.inputResponse.";

/// Timing of a [`DurableTaskManager`]'s background loop.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ManagerOptions {
    /// How often the owner looks at its running tasks in the store, to see a
    /// `tasks/cancel` or `tasks/update` that arrived at another instance
    /// (default 250 ms). Leases are renewed on these ticks too.
    pub watch_interval: Duration,
    /// How often a running task's lease is renewed; `None` (the default)
    /// renews after a third of the lease the store granted at creation.
    pub renew_interval: Option<Duration>,
    /// How often lapsed leases are reaped: their tasks are reported `failed`
    /// as orphaned (default 5 s; the first reap runs in the background just
    /// after start).
    pub reap_interval: Duration,
    /// How often expired tasks are deleted from the store (default 5 min).
    pub sweep_interval: Duration,
}

impl Default for ManagerOptions {
    fn default() -> ManagerOptions {
        ManagerOptions {
            watch_interval: Duration::from_millis(250),
            renew_interval: None,
            reap_interval: Duration::from_secs(5),
            sweep_interval: Duration::from_secs(300),
        }
    }
}

impl ManagerOptions {
    /// The default timing.
    pub fn new() -> ManagerOptions {
        ManagerOptions::default()
    }

    /// Sets [`ManagerOptions::watch_interval`].
    pub fn watch_interval(mut self, interval: Duration) -> ManagerOptions {
        self.watch_interval = interval;
        self
    }

    /// Sets [`ManagerOptions::renew_interval`].
    pub fn renew_interval(mut self, interval: Duration) -> ManagerOptions {
        self.renew_interval = Some(interval);
        self
    }

    /// Sets [`ManagerOptions::reap_interval`].
    pub fn reap_interval(mut self, interval: Duration) -> ManagerOptions {
        self.reap_interval = interval;
        self
    }

    /// Sets [`ManagerOptions::sweep_interval`].
    pub fn sweep_interval(mut self, interval: Duration) -> ManagerOptions {
        self.sweep_interval = interval;
        self
    }
}

/// A durable, multi-instance task manager for `rmcp` servers (SEP-2663).
///
/// It has the shape of `rmcp::task_manager::TaskManager` — `spawn`,
/// `get_task`, `update_task`, `cancel_task`, `running_task_count`,
/// `shutdown` — but every task lives in the store `S`, so a restarted server
/// and every other instance over the same store answer for it. The methods
/// that touch the store are `async` and run the store's blocking I/O on
/// Tokio's blocking pool. See the [module docs](crate::mcp) for the
/// semantics, and where they differ from `rmcp`'s.
///
/// Cheaply cloneable; clones share one state and one background loop, which
/// stops when the last clone and the last running operation are gone (or at
/// [`DurableTaskManager::shutdown`]).
pub struct DurableTaskManager<S: TaskStore + 'static> {
    store: Arc<S>,
    shared: Arc<Shared>,
}

impl<S: TaskStore + 'static> Clone for DurableTaskManager<S> {
    fn clone(&self) -> Self {
        DurableTaskManager {
            store: Arc::clone(&self.store),
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Handle passed to a running operation: the counterpart of `rmcp`'s
/// `TaskContext`, for cancellation, mid-task input and status messages.
#[derive(Clone)]
pub struct TaskContext {
    id: TaskId,
    shared: Arc<Shared>,
    cancel: watch::Receiver<bool>,
}

struct Shared {
    store: Arc<dyn TaskStore>,
    options: ManagerOptions,
    local: Mutex<HashMap<TaskId, Local>>,
    stop: watch::Sender<bool>,
    background: Mutex<Option<JoinHandle<()>>>,
}

/// An operation this instance runs.
struct Local {
    cancel: watch::Sender<bool>,
    /// Outstanding input requests: the request as JSON, and who waits for it.
    pending: BTreeMap<String, (Value, oneshot::Sender<Value>)>,
    used_keys: HashSet<String>,
    /// Serializes this task's input-state writes, so they land in order.
    persist: Arc<tokio::sync::Mutex<()>>,
    /// The lease the store granted, if any.
    lease: Option<Duration>,
    renewed_at: Instant,
    abort: Option<AbortHandle>,
    supervisor: Option<JoinHandle<()>>,
}

impl<S: TaskStore + 'static> DurableTaskManager<S> {
    /// A manager over `store`, with the default [`ManagerOptions`].
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime (it starts its background loop).
    pub fn new(store: Arc<S>) -> Self {
        Self::with_options(store, ManagerOptions::default())
    }

    /// A manager over `store` with this timing.
    ///
    /// Starts the background loop (lease renewal, cross-instance cancel and
    /// input delivery, orphan reaping, expiry sweeps) and returns at once:
    /// the first reap runs in the background, never on the caller's path.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub fn with_options(store: Arc<S>, options: ManagerOptions) -> Self {
        let dyn_store: Arc<dyn TaskStore> = store.clone();
        let shared = Arc::new(Shared {
            store: dyn_store,
            options,
            local: Mutex::new(HashMap::new()),
            stop: watch::channel(false).0,
            background: Mutex::new(None),
        });
        let handle = tokio::spawn(background(Arc::downgrade(&shared), shared.stop.subscribe()));
        *lock(&shared.background) = Some(handle);
        follow_changes(&shared);
        DurableTaskManager { store, shared }
    }

    /// The store the tasks live in.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// Spawns an operation as a task and returns its seed state for a
    /// `CreateTaskResult`.
    ///
    /// The task is durably in the store before this returns, so `tasks/get`
    /// from any instance resolves it at once. The operation's outcome is
    /// recorded first-writer-wins: `Ok` as `completed` with the result
    /// inlined, [`TaskExit::Error`] as `failed` with the JSON-RPC error
    /// inlined, [`TaskExit::Cancelled`] as `cancelled`. A panicking or
    /// aborted operation is recorded `failed`.
    ///
    /// # Errors
    ///
    /// `-32603` (internal error) with the cause if the store cannot create
    /// the task (I/O, the active-task cap); nothing was spawned.
    pub async fn spawn<F>(
        &self,
        options: TaskOptions,
        make_future: F,
    ) -> Result<rmcp::model::Task, McpError>
    where
        F: FnOnce(TaskContext) -> TaskFuture + Send,
    {
        let mut new = NewTask::new();
        if let Some(ttl) = options.ttl_ms {
            new = new.ttl(Duration::from_millis(ttl));
        }
        if let Some(interval) = options.poll_interval_ms {
            new = new.poll_interval(Duration::from_millis(interval));
        }
        if let Some(message) = options.status_message {
            new = new.status_message(message);
        }
        let store = Arc::clone(&self.shared.store);
        let task = blocking(move || store.create(new))
            .await
            .map_err(|e| e.into_mcp(None))?;
        let seed = to_rmcp_task(&task);
        let id = task.id.clone();
        let lease = task
            .lease_expires_at
            .and_then(|until| Duration::try_from(until - task.last_updated_at).ok());
        let (cancel_tx, cancel_rx) = watch::channel(false);
        lock(&self.shared.local).insert(
            id.clone(),
            Local {
                cancel: cancel_tx,
                pending: BTreeMap::new(),
                used_keys: HashSet::new(),
                persist: Arc::default(),
                lease,
                renewed_at: Instant::now(),
                abort: None,
                supervisor: None,
            },
        );
        let context = TaskContext {
            id: id.clone(),
            shared: Arc::clone(&self.shared),
            cancel: cancel_rx,
        };
        let operation = tokio::spawn(make_future(context));
        let abort = operation.abort_handle();
        let supervisor = tokio::spawn(supervise(Arc::clone(&self.shared), id.clone(), operation));
        let mut local = lock(&self.shared.local);
        match local.get_mut(&id) {
            Some(entry) => {
                entry.abort = Some(abort);
                entry.supervisor = Some(supervisor);
            }
            // Already settled, or drained by `shutdown`: make sure it stops.
            None => abort.abort(),
        }
        Ok(seed)
    }

    /// Handles `tasks/get`: the task's current state, from the store.
    ///
    /// A running task whose owner's lease has lapsed is reaped first, so it
    /// is reported `failed` (orphaned), never as running forever. A stored
    /// error that is not a JSON-RPC error object (such as the store's
    /// `{"code": "orphaned", ..}`) is inlined as `-32603` with the stored
    /// error, whole, as its `data`.
    ///
    /// # Errors
    ///
    /// `-32602` for an unknown, invalid or expired id; `-32603` with the cause
    /// for a store error.
    pub async fn get_task(&self, task_id: &str) -> Result<DetailedTask, McpError> {
        self.shared.get_task(task_id).await
    }

    /// Handles `tasks/update`: delivers `inputResponses` to the operation.
    ///
    /// Responses for keys the task is not waiting for are ignored, as in
    /// `rmcp`. When this instance runs the task they reach the operation at
    /// once; otherwise they are persisted in the task's metadata (one key per
    /// response, [`INPUT_RESPONSE_KEY_PREFIX`] + key) and the owning instance
    /// delivers them on its next watch tick. A terminal task ignores updates.
    ///
    /// # Errors
    ///
    /// `-32602` for an unknown, invalid or expired id; `-32603` with the cause
    /// for a store error.
    pub async fn update_task(
        &self,
        task_id: &str,
        input_responses: impl IntoIterator<Item = (String, Value)>,
    ) -> Result<(), McpError> {
        let responses: Vec<(String, Value)> = input_responses.into_iter().collect();
        self.shared.update_task(task_id, responses).await
    }

    /// Handles `tasks/cancel`: cooperative cancellation (SEP-2663), persisted.
    ///
    /// Records the request in the store (metadata [`CANCEL_REQUESTED_KEY`] =
    /// `true`; an `input_required` task goes back to `working`) and
    /// acknowledges; it does not force a terminal state. The owning
    /// operation — in this instance at once, in another on its next watch
    /// tick — sees it through [`TaskContext::cancelled`] /
    /// [`TaskContext::is_cancel_requested`], and a pending
    /// [`TaskContext::request_input`] returns [`TaskExit::Cancelled`]. The
    /// operation decides the terminal status, as in `rmcp`. Cancelling a
    /// terminal task is acknowledged and changes nothing.
    ///
    /// # Errors
    ///
    /// `-32602` for an unknown, invalid or expired id; `-32603` with the cause
    /// for a store error.
    pub async fn cancel_task(&self, task_id: &str) -> Result<(), McpError> {
        self.shared.cancel_task(task_id).await
    }

    /// How many operations this instance is running now.
    pub fn running_task_count(&self) -> usize {
        lock(&self.shared.local).len()
    }

    /// Stops the background loop and aborts this instance's running
    /// operations; each of their tasks is recorded `failed` ("aborted")
    /// first-writer-wins before this returns. Tasks of other instances are
    /// untouched.
    pub async fn shutdown(&self) {
        let _ = self.shared.stop.send(true);
        let background = lock(&self.shared.background).take();
        if let Some(handle) = background {
            handle.abort();
            let _ = handle.await;
        }
        let supervisors: Vec<JoinHandle<()>> = lock(&self.shared.local)
            .values_mut()
            .filter_map(|entry| {
                if let Some(abort) = &entry.abort {
                    abort.abort();
                }
                entry.supervisor.take()
            })
            .collect();
        for supervisor in supervisors {
            let _ = supervisor.await;
        }
        lock(&self.shared.local).clear();
    }
}

impl TaskContext {
    /// The id of the task this context belongs to.
    pub fn task_id(&self) -> &str {
        self.id.as_str()
    }

    /// Whether `tasks/cancel` has been received for this task, at any
    /// instance (seen here at once, or within a watch tick).
    pub fn is_cancel_requested(&self) -> bool {
        *self.cancel.borrow()
    }

    /// Resolves once `tasks/cancel` has been received for this task (at once
    /// if it already has); pair it with `tokio::select!`. An operation that
    /// stops because of it should return [`TaskExit::Cancelled`].
    pub async fn cancelled(&self) {
        let mut rx = self.cancel.clone();
        // An error means the manager dropped the task: unblock as well.
        let _ = rx.wait_for(|requested| *requested).await;
    }

    /// Surfaces a server-to-client request under `key` and waits for the
    /// client's answer, delivered through `tasks/update` at any instance.
    ///
    /// While a request is outstanding the task is `input_required` in the
    /// store, with every outstanding request in `inputRequests`. Keys are
    /// unique over the task's lifetime.
    ///
    /// # Errors
    ///
    /// [`TaskExit::Cancelled`] when the task is (or gets) cancelled;
    /// [`TaskExit::Error`] for a reused key or a store error.
    pub async fn request_input(
        &self,
        key: impl Into<String>,
        request: InputRequest,
    ) -> Result<Value, TaskExit> {
        let key = key.into();
        let request = serde_json::to_value(&request).map_err(|e| {
            McpError::internal_error(format!("unencodable input request: {e}"), None)
        })?;
        let (tx, rx) = oneshot::channel();
        {
            let mut local = lock(&self.shared.local);
            let entry = local.get_mut(&self.id).ok_or_else(|| {
                McpError::internal_error("task no longer runs in this instance", None)
            })?;
            if *entry.cancel.borrow() {
                return Err(TaskExit::Cancelled);
            }
            if !entry.used_keys.insert(key.clone()) {
                return Err(TaskExit::Error(McpError::internal_error(
                    format!("inputRequests key {key:?} was already used for this task"),
                    None,
                )));
            }
            entry.pending.insert(key, (request, tx));
        }
        self.shared
            .persist_inputs(&self.id)
            .await
            .map_err(TaskExit::Error)?;
        // The sender is dropped when the task is cancelled.
        rx.await.map_err(|_| TaskExit::Cancelled)
    }

    /// Sets the task's status message, in the store.
    ///
    /// # Errors
    ///
    /// `-32603` with the cause for a store error (a terminal task is left as
    /// it is, without error).
    pub async fn set_status_message(&self, message: impl Into<String>) -> Result<(), McpError> {
        let update = TaskUpdate::new().status_message(message);
        let store = Arc::clone(&self.shared.store);
        let id = self.id.clone();
        blocking(move || store.update(&id, update))
            .await
            .map(drop)
            .map_err(|e| e.into_mcp(Some(&self.id)))
    }
}

impl Shared {
    async fn read(&self, task_id: &str) -> Result<(TaskId, Task), McpError> {
        let id = TaskId::parse(task_id).map_err(|_| unknown_task(task_id))?;
        let store = Arc::clone(&self.store);
        let lookup = id.clone();
        let task = blocking(move || store.get(&lookup))
            .await
            .map_err(|e| e.into_mcp(Some(&id)))?
            .ok_or_else(|| unknown_task(task_id))?;
        Ok((id, task))
    }

    async fn get_task(&self, task_id: &str) -> Result<DetailedTask, McpError> {
        let (id, mut task) = self.read(task_id).await?;
        let lapsed = !task.is_terminal()
            && task
                .lease_expires_at
                .is_some_and(|at| time::OffsetDateTime::now_utc() >= at);
        if lapsed && !lock(&self.local).contains_key(&id) {
            // The reaper re-checks every lease under the task's lock.
            let store = Arc::clone(&self.store);
            blocking(move || store.reap_orphans())
                .await
                .map_err(|e| e.into_mcp(Some(&id)))?;
            task = self.read(task_id).await?.1;
        }
        to_wire(&task)
    }

    async fn update_task(
        &self,
        task_id: &str,
        responses: Vec<(String, Value)>,
    ) -> Result<(), McpError> {
        let id = TaskId::parse(task_id).map_err(|_| unknown_task(task_id))?;
        let delivered = {
            let mut local = lock(&self.local);
            local.get_mut(&id).map(|entry| {
                let mut delivered = false;
                for (key, value) in &responses {
                    if let Some((_, tx)) = entry.pending.remove(key) {
                        // The receiver is gone if the operation moved on.
                        let _ = tx.send(value.clone());
                        delivered = true;
                    }
                }
                delivered
            })
        };
        match delivered {
            Some(true) => return self.persist_inputs(&id).await,
            // Ours, but nothing to deliver: still answer -32602 if it is gone.
            Some(false) => return self.read(task_id).await.map(drop),
            None => {}
        }
        let (id, task) = self.read(task_id).await?;
        if task.is_terminal() {
            return Ok(());
        }
        let outstanding = task.input_requests.as_ref().and_then(Value::as_object);
        let mut update = TaskUpdate::new();
        let mut any = false;
        for (key, value) in responses {
            if outstanding.is_some_and(|o| o.contains_key(&key)) {
                update = update.metadata(format!("{INPUT_RESPONSE_KEY_PREFIX}{key}"), value);
                any = true;
            }
        }
        if !any {
            return Ok(());
        }
        let store = Arc::clone(&self.store);
        let target = id.clone();
        blocking(move || store.update(&target, update))
            .await
            .map(drop)
            .map_err(|e| e.into_mcp(Some(&id)))
    }

    async fn cancel_task(&self, task_id: &str) -> Result<(), McpError> {
        let (id, task) = self.read(task_id).await?;
        if task.is_terminal() {
            return Ok(());
        }
        let mut update = TaskUpdate::new().metadata(CANCEL_REQUESTED_KEY, true);
        if task.status == TaskStatus::InputRequired {
            update = update.status(TaskStatus::Working);
        }
        let store = Arc::clone(&self.store);
        let target = id.clone();
        blocking(move || store.update(&target, update))
            .await
            .map(drop)
            .map_err(|e| e.into_mcp(Some(&id)))?;
        self.signal_cancel(&id);
        Ok(())
    }

    /// Tells a local operation that cancellation was requested and wakes its
    /// pending input requests (their senders are dropped).
    fn signal_cancel(&self, id: &TaskId) {
        if let Some(entry) = lock(&self.local).get_mut(id) {
            entry.cancel.send_replace(true);
            entry.pending.clear();
        }
    }

    /// Writes the local task's outstanding input requests to the store:
    /// `input_required` with them, or back to `working` when none is left.
    async fn persist_inputs(&self, id: &TaskId) -> Result<(), McpError> {
        let Some(order) = lock(&self.local).get(id).map(|e| Arc::clone(&e.persist)) else {
            return Ok(());
        };
        let _in_order = order.lock().await;
        let Some(pending) = lock(&self.local).get(id).map(|entry| {
            entry
                .pending
                .iter()
                .map(|(key, (request, _))| (key.clone(), request.clone()))
                .collect::<Map<String, Value>>()
        }) else {
            return Ok(());
        };
        let update = if pending.is_empty() {
            TaskUpdate::new().status(TaskStatus::Working)
        } else {
            TaskUpdate::new()
                .status(TaskStatus::InputRequired)
                .input_requests(Value::Object(pending))
        };
        let store = Arc::clone(&self.store);
        let target = id.clone();
        blocking(move || store.update(&target, update))
            .await
            .map(drop)
            .map_err(|e| e.into_mcp(Some(id)))
    }

    /// One watch tick: reads (or renews) every local task and acts on what
    /// other instances persisted — a cancel request, input responses — or on
    /// the task having ended or expired under the operation.
    async fn watch(&self) {
        let now = Instant::now();
        let renew_every = self.options.renew_interval;
        let probes: Vec<(TaskId, bool)> = lock(&self.local)
            .iter()
            .map(|(id, entry)| {
                let every = renew_every.or(entry.lease.map(|l| l / 3));
                let renew =
                    every.is_some_and(|every| now.duration_since(entry.renewed_at) >= every);
                (id.clone(), renew)
            })
            .collect();
        if probes.is_empty() {
            return;
        }
        let store = Arc::clone(&self.store);
        let Ok(seen) = tokio::task::spawn_blocking(move || {
            probes
                .into_iter()
                .map(|(id, renew)| {
                    let seen = if renew {
                        store.renew_lease(&id).map(|t| Some(t.into_task()))
                    } else {
                        store.get(&id)
                    };
                    (id, renew, seen)
                })
                .collect::<Vec<_>>()
        })
        .await
        else {
            return;
        };
        for (id, renewed, seen) in seen {
            match seen {
                Ok(Some(task)) => {
                    if renewed && let Some(entry) = lock(&self.local).get_mut(&id) {
                        entry.renewed_at = now;
                    }
                    self.observe(&id, &task).await;
                }
                Ok(None) | Err(Error::NotFound { .. }) => {
                    // Expired (TTL) or deleted: nobody can see an outcome any
                    // more, so stop the operation, as rmcp does at TTL.
                    if let Some(entry) = lock(&self.local).get(&id)
                        && let Some(abort) = &entry.abort
                    {
                        abort.abort();
                    }
                }
                Err(e) => tracing::warn!(task = %id, error = %e, "task store watch failed"),
            }
        }
    }

    /// Acts on the stored state of a task this instance runs.
    async fn observe(&self, id: &TaskId, task: &Task) {
        if task.is_terminal() || task.metadata.get(CANCEL_REQUESTED_KEY) == Some(&Value::Bool(true))
        {
            // Ended elsewhere (reaped, cancelled through the store) or asked
            // to cancel: let the operation stop; its outcome, if any, loses.
            let had_pending = lock(&self.local)
                .get(id)
                .is_some_and(|e| !e.pending.is_empty());
            self.signal_cancel(id);
            if had_pending && !task.is_terminal() {
                let _ = self.persist_inputs(id).await;
            }
            return;
        }
        let delivered = {
            let mut local = lock(&self.local);
            let Some(entry) = local.get_mut(id) else {
                return;
            };
            let keys: Vec<String> = entry.pending.keys().cloned().collect();
            let mut delivered = false;
            for key in keys {
                if let Some(value) = task
                    .metadata
                    .get(&format!("{INPUT_RESPONSE_KEY_PREFIX}{key}"))
                    && let Some((_, tx)) = entry.pending.remove(&key)
                {
                    let _ = tx.send(value.clone());
                    delivered = true;
                }
            }
            delivered
        };
        if delivered && let Err(e) = self.persist_inputs(id).await {
            tracing::warn!(task = %id, error = %e, "could not persist input state");
        }
    }

    async fn reap(&self) {
        let store = Arc::clone(&self.store);
        match blocking(move || store.reap_orphans()).await {
            Ok(reaped) => {
                for task in reaped {
                    tracing::info!(task = %task.id, owner = ?task.owner, "reaped orphaned task");
                }
            }
            Err(e) => tracing::warn!(error = %e.into_mcp(None), "reaping orphans failed"),
        }
    }

    async fn sweep(&self) {
        let store = Arc::clone(&self.store);
        if let Err(e) = blocking(move || store.sweep_expired()).await {
            tracing::warn!(error = %e.into_mcp(None), "sweeping expired tasks failed");
        }
    }
}

/// Runs the operation to its end and records the outcome.
async fn supervise(
    shared: Arc<Shared>,
    id: TaskId,
    operation: JoinHandle<Result<rmcp::model::CallToolResult, TaskExit>>,
) {
    let outcome = match operation.await {
        Ok(Ok(result)) => Outcome::Completed(to_json(&result)),
        Ok(Err(TaskExit::Cancelled)) => Outcome::Cancelled(None),
        Ok(Err(TaskExit::Error(error))) => Outcome::Failed(to_json(&error)),
        Err(join) => {
            let why = if join.is_panic() {
                "task operation panicked"
            } else {
                "task operation was aborted"
            };
            Outcome::Failed(to_json(&McpError::internal_error(why, None)))
        }
    };
    let store = Arc::clone(&shared.store);
    let target = id.clone();
    match blocking(move || store.finish(&target, outcome)).await {
        Ok(_) | Err(StoreCall::Store(Error::NotFound { .. })) => {}
        Err(e) => {
            tracing::error!(task = %id, error = %e.into_mcp(Some(&id)), "could not record task outcome")
        }
    }
    lock(&shared.local).remove(&id);
}

/// The background loop: watch ticks, reaps and sweeps, until stopped or
/// until nothing refers to the manager any more.
async fn background(shared: Weak<Shared>, mut stop: watch::Receiver<bool>) {
    let mut next_reap = Instant::now();
    let mut next_sweep = Instant::now();
    loop {
        let Some(this) = shared.upgrade() else { return };
        let now = Instant::now();
        this.watch().await;
        if now >= next_reap {
            this.reap().await;
            next_reap = now + this.options.reap_interval;
        }
        if now >= next_sweep {
            this.sweep().await;
            next_sweep = now + this.options.sweep_interval;
        }
        let pause = this.options.watch_interval;
        drop(this);
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}

/// If the store has a change feed, a thread of its own waits on it and each
/// change to a task this instance runs triggers an immediate watch of that
/// task (a `tasks/cancel` sent to another instance is seen at once, not on
/// the next tick); polling goes on beside it as the fallback. The thread
/// stops with the manager.
fn follow_changes(shared: &Arc<Shared>) {
    let Some(mut feed) = shared.store.changes() else {
        return;
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Changes>();
    let stop = shared.stop.subscribe();
    let spawned = std::thread::Builder::new()
        .name("taskstore-changes".to_owned())
        .spawn(move || {
            while !*stop.borrow() && !tx.is_closed() {
                let changes = feed.wait(Duration::from_millis(500));
                if changes != Changes::Tasks(Vec::new()) && tx.send(changes).is_err() {
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not follow the store's changes; polling only");
        return;
    }
    let weak = Arc::downgrade(shared);
    tokio::spawn(async move {
        while let Some(changes) = rx.recv().await {
            let Some(this) = weak.upgrade() else { return };
            match changes {
                Changes::Tasks(ids) => this.watch_changed(ids).await,
                _ => this.watch().await,
            }
        }
    });
}

impl Shared {
    /// Reads the tasks among `ids` this instance runs and acts on them, as a
    /// watch tick would (without renewing).
    async fn watch_changed(&self, ids: Vec<TaskId>) {
        let ours: Vec<TaskId> = {
            let local = lock(&self.local);
            ids.into_iter()
                .filter(|id| local.contains_key(id))
                .collect()
        };
        for id in ours {
            let store = Arc::clone(&self.store);
            let target = id.clone();
            if let Ok(Some(task)) = blocking(move || store.get(&target)).await {
                self.observe(&id, &task).await;
            }
        }
    }
}

/// A store call's failure, before it becomes a JSON-RPC error.
enum StoreCall {
    Store(Error),
    Join(tokio::task::JoinError),
}

impl StoreCall {
    /// `-32602` for a task that does not exist (or an id that cannot name
    /// one), `-32603` with the cause for everything else.
    fn into_mcp(self, id: Option<&TaskId>) -> McpError {
        match self {
            StoreCall::Store(Error::NotFound { id }) => unknown_task(id.as_str()),
            StoreCall::Store(Error::InvalidId { id, .. }) => unknown_task(&id),
            StoreCall::Store(e) => McpError::internal_error(
                format!("task store error: {e}"),
                Some(json!({ "taskId": id.map(TaskId::as_str), "cause": e.to_string() })),
            ),
            StoreCall::Join(e) => McpError::internal_error(
                format!("task store call did not finish: {e}"),
                Some(json!({ "taskId": id.map(TaskId::as_str) })),
            ),
        }
    }
}

/// Runs a store call on Tokio's blocking pool, off the async workers.
async fn blocking<T, F>(call: F) -> Result<T, StoreCall>
where
    T: Send + 'static,
    F: FnOnce() -> crate::Result<T> + Send + 'static,
{
    match tokio::task::spawn_blocking(call).await {
        Ok(result) => result.map_err(StoreCall::Store),
        Err(e) => Err(StoreCall::Join(e)),
    }
}

fn to_wire(task: &Task) -> Result<DetailedTask, McpError> {
    let mut detailed = to_detailed(task).map_err(|e| {
        McpError::internal_error(
            format!("task store holds a task MCP cannot carry: {e}"),
            Some(json!({ "taskId": task.id.as_str(), "cause": e.to_string() })),
        )
    })?;
    if let TaskPayload::Failed { error } = &mut detailed.payload {
        *error = jsonrpc_error(std::mem::take(error));
    }
    Ok(detailed)
}

fn unknown_task(task_id: &str) -> McpError {
    McpError::invalid_params(format!("unknown task: {task_id}"), None)
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    match serde_json::to_value(value) {
        Ok(v @ Value::Object(_)) => v,
        _ => Value::Object(Map::new()),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code path panics while holding these locks; recover regardless.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
