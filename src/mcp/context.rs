//! The handle a running operation gets: cancellation, input, status
//! messages, checkpoints, and what a resumed operation resumes from.

use std::sync::Arc;

use rmcp::ErrorData as McpError;
use rmcp::model::InputRequest;
use rmcp::task_manager::TaskExit;
use serde_json::Value;
use tokio::sync::{oneshot, watch};

use super::protocol::{Ask, KeyRecord, cancel_requested, fingerprint};
use super::run::{Run, RunWrite, Shared};
use crate::task::TaskUpdate;

/// Handle passed to a running operation: the counterpart of `rmcp`'s
/// `TaskContext`, for cancellation, mid-task input and status messages,
/// and, for a resumable task, its input and checkpoints.
///
/// Every write through it is fenced to the owner epoch the operation runs
/// at: once another instance has claimed the task, writes are refused
/// (`-32603` with `data.code = "fenced"`) and the operation is stopped.
/// Once shutdown has stopped the run and recorded its task (released or
/// failed), writes are refused too (`data.code = "shutdown"`).
#[derive(Clone)]
pub struct TaskContext {
    shared: Arc<Shared>,
    run: Arc<Run>,
    cancel: watch::Receiver<bool>,
}

static NULL: Value = Value::Null;

impl TaskContext {
    pub(super) fn new(shared: Arc<Shared>, run: Arc<Run>) -> TaskContext {
        let cancel = run.cancel.subscribe();
        TaskContext {
            shared,
            run,
            cancel,
        }
    }

    /// The id of the task this context belongs to.
    pub fn task_id(&self) -> &str {
        self.run.id.as_str()
    }

    /// The owner epoch this operation runs at: 1 for the first run, one more
    /// for each claim.
    pub fn epoch(&self) -> u64 {
        self.run.epoch
    }

    /// The kind of a resumable task (the resume handler that runs it), or
    /// `None` for a task that is not resumable.
    pub fn kind(&self) -> Option<&str> {
        self.run.resume.as_ref().map(|r| r.kind.as_str())
    }

    /// The input a resumable task was started with (`null` for a task that
    /// is not resumable).
    pub fn input(&self) -> &Value {
        self.run.resume.as_ref().map_or(&NULL, |r| &r.input)
    }

    /// The last checkpoint saved when this run started: `None` for a first
    /// run, or a resumed one whose predecessors saved none.
    pub fn last_checkpoint(&self) -> Option<&Value> {
        self.run.resume.as_ref().and_then(|r| r.checkpoint.as_ref())
    }

    /// Which attempt this run is: 1 for the first run, 2 for the first
    /// resumption, and so on (1 for a task that is not resumable).
    pub fn attempt(&self) -> u32 {
        self.run.resume.as_ref().map_or(1, |r| r.attempts)
    }

    /// The principal the task is bound to: the one of the request that
    /// created it ([`ManagerOptions::principal_of`](super::ManagerOptions::principal_of)),
    /// in a resumed run as in the first; `None` for a task bound to none.
    /// The operation acts for it (a call it makes downstream on the
    /// principal's behalf, say).
    pub fn principal(&self) -> Option<&str> {
        self.run.principal.as_ref().and_then(Value::as_str)
    }

    /// Whether this run resumes work an earlier owner started.
    pub fn is_resumed(&self) -> bool {
        self.attempt() > 1
    }

    /// Saves a checkpoint: the point a new owner resumes from if this one
    /// dies ([`last_checkpoint`](TaskContext::last_checkpoint)). Durable
    /// when it returns. Does nothing for a task that is not resumable.
    ///
    /// # Errors
    ///
    /// `-32603` for a store error, over the payload cap, once another
    /// instance has claimed the task (`data.code = "fenced"`; the operation
    /// is being stopped), or once shutdown stopped the run (`data.code =
    /// "shutdown"`).
    pub async fn checkpoint(&self, checkpoint: Value) -> Result<(), McpError> {
        if self.run.resume.is_none() {
            return Ok(());
        }
        self.write(TaskUpdate::new().checkpoint(checkpoint)).await
    }

    /// Sets the task's status message, in the store.
    ///
    /// # Errors
    ///
    /// `-32603` with the cause for a store error, once another instance
    /// has claimed the task, or once shutdown stopped the run (a terminal
    /// task is left as it is, without error).
    pub async fn set_status_message(&self, message: impl Into<String>) -> Result<(), McpError> {
        self.write(TaskUpdate::new().status_message(message)).await
    }

    async fn write(&self, update: TaskUpdate) -> Result<(), McpError> {
        match self.shared.write(&self.run, update).await {
            Ok(RunWrite::Applied(_) | RunWrite::Terminal) => Ok(()),
            Ok(RunWrite::Lost(now)) => Err(Shared::lost_error(&self.run, &now)),
            Ok(RunWrite::Stopped) => Err(self.shared.stopped_error(&self.run)),
            // Only the input state's writes ask for a revision.
            Ok(RunWrite::Changed(_)) => Err(McpError::internal_error(
                format!(
                    "a write of task {} was refused for a revision it did not ask for",
                    self.run.id
                ),
                None,
            )),
            Err(e) => Err(e.into_mcp(Some(&self.run.id))),
        }
    }

    /// Whether `tasks/cancel` has been received for this task, at any
    /// instance (seen here at once, or within a watch tick), or the task was
    /// taken over by another instance.
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

    /// Whether the manager is shutting down: the operation has the
    /// manager's grace period to finish (a resumable one may save a
    /// checkpoint), then it is stopped.
    pub fn is_shutting_down(&self) -> bool {
        *self.shared.shutting_down.borrow()
    }

    /// Resolves once the manager begins to shut down.
    pub async fn shutting_down(&self) {
        let mut rx = self.shared.shutting_down.subscribe();
        let _ = rx.wait_for(|closing| *closing).await;
    }

    /// Surfaces a server-to-client request under `key` and waits for the
    /// client's answer, delivered through `tasks/update` at any instance.
    ///
    /// While a request is outstanding the task is `input_required` in the
    /// store, with every outstanding request in `inputRequests`. A key names
    /// one request for the task's whole life, across restarts and owners:
    /// a resumed operation that asks again under a key an earlier run used,
    /// with the same request, gets the answer the client gave (at once), or
    /// waits on for it if none came yet; it never asks the client twice.
    ///
    /// # Errors
    ///
    /// [`TaskExit::Cancelled`] when the task is (or gets) cancelled or taken
    /// over by another instance (a resumed run knows of a cancel requested
    /// before it started from its first step), or when `key` was asked
    /// before and withdrawn unanswered by a cancel; [`TaskExit::Error`] for
    /// a key this run
    /// already asked under, a key used before for a different request, or
    /// a store error.
    pub async fn request_input(
        &self,
        key: impl Into<String>,
        request: InputRequest,
    ) -> Result<Value, TaskExit> {
        let key = key.into();
        let request = serde_json::to_value(&request).map_err(|e| {
            McpError::internal_error(
                format!(
                    "the input request for key {key:?} of task {} cannot be encoded: {e}",
                    self.run.id
                ),
                None,
            )
        })?;
        let print = fingerprint(&request);
        let (tx, rx) = oneshot::channel();
        {
            let mut inputs = self.run.inputs.lock().await;
            if *self.cancel.borrow() {
                return Err(TaskExit::Cancelled);
            }
            if !inputs.asked.insert(key.clone()) {
                return Err(reused(&self.run.id, &key, "was already used for this task"));
            }
            // Decided from the input state as stored; decided again if
            // another write lands before this one.
            loop {
                let mut next = inputs.book.clone();
                match next.ask(&key, &print) {
                    Ask::Answered(response) => return Ok(response),
                    Ask::Conflict => {
                        return Err(reused(
                            &self.run.id,
                            &key,
                            "was used for a different request earlier in this task's life",
                        ));
                    }
                    // Withdrawn by a cancel: the client saw this key once and
                    // will not see it again.
                    Ask::Withdrawn => return Err(TaskExit::Cancelled),
                    Ask::Rejoin => {}
                    Ask::New => {
                        next.keys.insert(
                            key.clone(),
                            KeyRecord {
                                fingerprint: print.clone(),
                                response: None,
                            },
                        );
                        next.outstanding.insert(key.clone(), request.clone());
                    }
                }
                if next == inputs.book {
                    break;
                }
                match self
                    .shared
                    .write_book(&self.run, &mut inputs, next, &[])
                    .await
                {
                    Ok(RunWrite::Applied(_)) => break,
                    // A cancel landed first: its withdrawal stands.
                    Ok(RunWrite::Changed(now)) if cancel_requested(&now) => {
                        return Err(TaskExit::Cancelled);
                    }
                    Ok(RunWrite::Changed(_)) => {}
                    Ok(RunWrite::Terminal | RunWrite::Lost(_) | RunWrite::Stopped) => {
                        return Err(TaskExit::Cancelled);
                    }
                    Err(e) => {
                        inputs.asked.remove(&key);
                        return Err(TaskExit::Error(e.into_mcp(Some(&self.run.id))));
                    }
                }
            }
            inputs.waiters.insert(key.clone(), tx);
        }
        // A response may wait in the store already: persisted by a peer
        // while no one ran the task, or since.
        self.shared.look(&self.run).await;
        // The sender is dropped when the task is cancelled or lost.
        rx.await.map_err(|_| TaskExit::Cancelled)
    }
}

fn reused(id: &crate::id::TaskId, key: &str, why: &str) -> TaskExit {
    TaskExit::Error(McpError::internal_error(
        format!("inputRequests key {key:?} of task {id} {why}"),
        None,
    ))
}
