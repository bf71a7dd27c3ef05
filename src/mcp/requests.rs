//! The peer's side of the protocol: answering `tasks/get`, `tasks/update`
//! and `tasks/cancel` for any task in the store, and what `rmcp` answers
//! before a request reaches the manager.

use std::sync::Arc;

use rmcp::ErrorData as McpError;
use rmcp::model::{ClientCapabilities, CustomRequest, DetailedTask, ProtocolVersion};
use rmcp::service::{RequestContext, RoleServer};
use serde_json::{Value, json};

use super::calls::{StoreCall, blocking, get, parse_id, to_wire, unknown_task};
use super::protocol::{
    MAX_RESPONSE_DEPTH, bound_to, cancel_requested, cancel_update, reaches, responses_update,
    too_deep, unanswered,
};
use super::run::Shared;
use crate::error::Error;
use crate::id::{TaskId, shorten};
use crate::status::TaskStatus;
use crate::store::Transition;
use crate::task::{Outcome, Task};

/// The status message of a task cancelled outright by `tasks/cancel`.
const CANCELLED_AT_CAP: &str = "cancelled by tasks/cancel: the task was too near the payload \
                                cap to carry the request to its operation";

impl Shared {
    /// The task, from the store, for a request acting for `principal`:
    /// `-32602` if it is missing or expired, the id cannot name one, or it
    /// is bound to another principal (the same answer: [`reaches`]); where
    /// tasks are bound to principals (a [`PrincipalOf`](super::PrincipalOf)
    /// hook, or a request acting for one), likewise if the stored task
    /// cannot be read ([`unreadable`](Self::unreadable)), whose cause is
    /// logged instead.
    pub async fn read(
        &self,
        principal: Option<&str>,
        task_id: &str,
    ) -> Result<(TaskId, Task), McpError> {
        let id = parse_id(task_id)?;
        let bound = principal.is_some() || self.options.principal_of.is_some();
        let task = match get(self.options.reads, &self.store, &id).await {
            Ok(task) => task,
            // Whose it is cannot be read: no request reaches it, and its
            // cause would tell any caller that the id names a stored task.
            Err(StoreCall::Store(e)) if bound => {
                if !self.unreadable(&e, &id).await {
                    return Err(StoreCall::Store(e).into_mcp(Some(&id)));
                }
                tracing::warn!(
                    task = %id,
                    error = %e,
                    "a task request names a stored task that cannot be read: answered as an \
                     unknown task (its principal cannot be read either)"
                );
                None
            }
            Err(e) => return Err(e.into_mcp(Some(&id))),
        };
        let task = task
            .filter(|task| reaches(task, principal))
            .ok_or_else(|| unknown_task(task_id))?;
        Ok((id, task))
    }

    /// Whether `e`, of a read of task `id`, says that a stored task is
    /// there and cannot be read: corrupt, larger than any task file, or of
    /// a newer format; or its own file failed to open or read (an I/O
    /// error naming that file: `EIO`, `EACCES`) while the store reads an id
    /// that names no task, so that the failure is the file's, which only a
    /// stored task has. A failure of the store as a whole (a directory it
    /// cannot search, a device gone, a database away) fails that read too,
    /// or names no task's file, and is not one: it reaches the client.
    async fn unreadable(&self, e: &Error, id: &TaskId) -> bool {
        match e {
            Error::Corrupt { .. }
            | Error::FileTooLarge { .. }
            | Error::UnsupportedFormat { .. } => true,
            Error::Io { path, .. } if crate::file::is_task_file(path, id) => {
                let none = TaskId::new();
                get(self.options.reads, &self.store, &none).await.is_ok()
            }
            _ => false,
        }
    }

    pub async fn get_task(
        &self,
        principal: Option<&str>,
        task_id: &str,
    ) -> Result<DetailedTask, McpError> {
        let (id, mut task) = self.read(principal, task_id).await?;
        if task.is_orphan_at(self.store.lease_now()) && self.run_of(&id).is_none() {
            if task.has_attempts_left()
                && task.resume.as_ref().is_some_and(|r| self.resumes(&r.kind))
            {
                if self.may_claim(&task) {
                    // A resumable orphan this instance resumes, that no
                    // claim pass has had the chance to take: a claim now,
                    // on the background loop, whatever its claim grace (a
                    // claim comes before a reap there too).
                    self.claim_now.notify_one();
                    return to_wire(&task);
                }
                if self.claim_under_way() {
                    // One may be taking it: left to that pass, as it
                    // stands (a poll once it is over finds the task
                    // claimed, or judges it by the reap's rule).
                    return to_wire(&task);
                }
            }
            // That task alone, judged by the reap's own rule under its
            // lock: failed now if a reap would fail it (not resumable, out
            // of attempts, or resumable and past its claim grace with no
            // claim), as it stands if not (a resumable orphan within its
            // grace waits for a claim, `working`).
            let store = Arc::clone(&self.store);
            let target = id.clone();
            let reaped = blocking(move || store.reap_task(&target))
                .await
                .map_err(|e| e.into_mcp(Some(&id)))?;
            task = match reaped {
                Some(reaped) => reaped,
                // Not one a reap fails (within its claim grace; or
                // renewed, claimed, finished or reaped by another since):
                // as it stands.
                None => self.read(principal, task_id).await?.1,
            };
        }
        to_wire(&task)
    }

    pub async fn update_task(
        self: &Arc<Self>,
        principal: Option<&str>,
        task_id: &str,
        responses: Vec<(String, Value)>,
    ) -> Result<(), McpError> {
        let id = parse_id(task_id)?;
        // Refused here, whichever instance: the owner records a response
        // two levels down, where the store would refuse it.
        if let Some((key, depth)) = too_deep(&responses) {
            return Err(McpError::invalid_params(
                format!(
                    "the response for input key {key:?} of task {} nests {depth} levels deep, \
                     over the {MAX_RESPONSE_DEPTH} a response may",
                    shorten(task_id)
                ),
                Some(json!({"key": key, "depth": depth, "limit": MAX_RESPONSE_DEPTH})),
            ));
        }
        if let Some(run) = self.run_of(&id) {
            // The task's principal, as the run started from it (no write
            // changes it): another's request hears of no task, here as at
            // a peer.
            if !bound_to(run.principal.as_ref(), principal) {
                return Err(unknown_task(task_id));
            }
            // The owner: accept and deliver; a response is durable before
            // the operation or the client hears of it.
            if self
                .accept(&run, responses.clone())
                .await
                .map_err(|e| e.into_mcp_for_input(Some(&id)))?
            {
                return Ok(());
            }
            // Nothing outstanding here, or the run was just lost: answer
            // as a peer.
        }
        let (id, mut task) = self.read(principal, task_id).await?;
        loop {
            if task.is_terminal() {
                return Ok(());
            }
            let Some(update) = responses_update(&task, &responses) else {
                return Ok(());
            };
            let store = Arc::clone(&self.store);
            let target = id.clone();
            let written = blocking(move || store.update(&target, update)).await;
            match written.map_err(|e| peer_refusal(e, &task, &responses))? {
                // Another write landed first: decide again on it.
                Transition::Changed(now) => task = now,
                _ => break,
            }
        }
        // A run of this instance that just started may wait for it.
        if let Some(run) = self.run_of(&id) {
            self.look(&run).await;
        }
        Ok(())
    }

    pub async fn cancel_task(
        &self,
        principal: Option<&str>,
        task_id: &str,
    ) -> Result<(), McpError> {
        let (id, task) = self.read(principal, task_id).await?;
        if task.is_terminal() {
            return Ok(());
        }
        // Asked already (a client's retry): the stored task says so, and
        // nothing clears it; nothing to write.
        let asked = cancel_requested(&task) && task.status != TaskStatus::InputRequired;
        let recorded = if asked {
            Ok(())
        } else {
            self.record_cancel(&id, &task).await
        };
        // The operation this instance runs is told whatever the store did:
        // the client asked for it here.
        if let Some(run) = self.run_of(&id) {
            self.signal_cancel(&run, true).await;
        }
        recorded
    }

    /// Writes `tasks/cancel`'s request into task `id` (read as `task`).
    async fn record_cancel(&self, id: &TaskId, task: &Task) -> Result<(), McpError> {
        let store = Arc::clone(&self.store);
        let target = id.clone();
        let update = cancel_update(task);
        let recorded = blocking(move || match store.update(&target, update) {
            // Too near the payload cap to take the request's flag: no
            // instance could tell its operation, so it is cancelled
            // outright (the operation, stopped, finishes it no other way);
            // without the message that says why if even that does not fit
            // (the finished task sheds its lease, resume state and
            // requests, but keeps its metadata).
            Err(Error::PayloadTooLarge { .. }) => {
                let why = Outcome::Cancelled(Some(CANCELLED_AT_CAP.to_owned()));
                match store.finish(&target, why) {
                    Err(Error::PayloadTooLarge { .. }) => {
                        store.finish(&target, Outcome::Cancelled(None)).map(drop)
                    }
                    other => other.map(drop),
                }
            }
            other => other.map(drop),
        })
        .await;
        recorded.map_err(|e| e.into_mcp(Some(id)))
    }
}

/// A peer's answer to `task` the store refused, as the client hears of
/// it. A peer's copy of an answer grows the task, where the instance
/// running it takes the answer in place of its request: an answer that
/// would fit in the request's place is refused for the server's limit
/// (`-32603`); one too large even there is the client's (`-32602`).
fn peer_refusal(e: StoreCall, task: &Task, responses: &[(String, Value)]) -> McpError {
    let id = &task.id;
    let StoreCall::Store(Error::PayloadTooLarge { size, limit, .. }) = &e else {
        return e.into_mcp_for_input(Some(id));
    };
    let requests: usize = unanswered(task, responses)
        .map(|(_, _, request)| serde_json::to_vec(request).map_or(0, |b| b.len()))
        .sum();
    if size.saturating_sub(requests) > *limit {
        return e.into_mcp_for_input(Some(id));
    }
    McpError::internal_error(
        format!(
            "task {id} is too near the payload limit of {limit} bytes for this instance to \
             carry the answer to its owner (it would be {size} bytes); the instance running \
             the task takes it"
        ),
        Some(json!({"taskId": id.as_str(), "code": "taskFull", "size": size, "limit": limit})),
    )
}

/// Whether the client of the request `context` belongs to may be answered
/// with a task (a `CreateTaskResult`): it declared the tasks extension, on
/// the request or (in a session) at `initialize`, and the protocol revision
/// in use defines the extension, a revision after 2025-11-25. Under
/// 2025-11-25 and before, SEP-2663 says servers "MUST NOT treat this
/// capability as enabling tasks under that protocol version; requests
/// proceed as if the client had declared no task capability at all";
/// `rmcp` 3.11's own test (`ClientCapabilities::supports_tasks`, and its
/// gate of `tasks/*`) looks at the declaration only, and a client that
/// `initialize`s (`rmcp`'s `serve`) negotiates 2025-11-25.
///
/// ```no_run
/// # use rmcp::model::ClientCapabilities;
/// # use rmcp::service::{RequestContext, RoleServer};
/// # use rmcp::ErrorData as McpError;
/// # fn call_tool(context: RequestContext<RoleServer>) -> Result<(), McpError> {
/// if !taskstore::mcp::client_takes_tasks(&context) {
///     let tasks = ClientCapabilities::builder().enable_tasks().build();
///     return Err(McpError::missing_required_client_capability(tasks));
/// }
/// # Ok(())
/// # }
/// ```
pub fn client_takes_tasks(context: &RequestContext<RoleServer>) -> bool {
    let declared = context
        .client_capabilities()
        .is_some_and(|c| c.supports_tasks());
    let defined = context
        .protocol_version()
        .is_some_and(|v| v.as_str() > ProtocolVersion::V_2025_11_25.as_str());
    declared && defined
}

/// `-32021` (Missing Required Client Capability, naming the tasks
/// extension) unless [`client_takes_tasks`]: what a request that needs
/// tasks (a tool that runs only as a task; `tasks/get`, `tasks/update`,
/// `tasks/cancel`) answers any other client. SEP-2663: "Servers MUST
/// return this error for non-declaring clients issuing `tasks/get`,
/// `tasks/update`, and `tasks/cancel` requests", and a client on
/// 2025-11-25 that declared the extension is one ("requests proceed as if
/// the client had declared no task capability at all"), which `rmcp`
/// 3.11's own gate of `tasks/*` lets through.
///
/// # Errors
///
/// The `-32021` error, for a client that does not take tasks.
pub fn require_tasks(context: &RequestContext<RoleServer>) -> Result<(), McpError> {
    if client_takes_tasks(context) {
        return Ok(());
    }
    Err(McpError::missing_required_client_capability(
        ClientCapabilities::builder().enable_tasks().build(),
    ))
}

/// What `rmcp` does with a `tasks/get`, `tasks/update` or `tasks/cancel`
/// whose params do not parse (a `taskId` that is a number, `null` or
/// missing): it hands the request to `ServerHandler::on_custom_request`,
/// whose default answers `-32601` (method not found) with the method as the
/// message. A server that calls this from its `on_custom_request` answers
/// `-32602` (invalid params) instead, naming the method and what is wrong;
/// for any other method it returns `None`.
///
/// ```no_run
/// # use rmcp::model::{CustomRequest, CustomResult, ErrorCode};
/// # use rmcp::ErrorData as McpError;
/// # fn on_custom_request(request: CustomRequest) -> Result<CustomResult, McpError> {
/// if let Some(error) = taskstore::mcp::invalid_task_request(&request) {
///     return Err(error);
/// }
/// Err(McpError::new(ErrorCode::METHOD_NOT_FOUND, request.method, None))
/// # }
/// ```
pub fn invalid_task_request(request: &CustomRequest) -> Option<McpError> {
    let method = request.method.as_str();
    if !matches!(method, "tasks/get" | "tasks/update" | "tasks/cancel") {
        return None;
    }
    let why = match request.params.as_ref().and_then(|p| p.get("taskId")) {
        None => "`taskId` is missing".to_owned(),
        Some(Value::String(_)) => "the params do not match the method's schema".to_owned(),
        Some(other) => format!(
            "`taskId` must be a string, not {}",
            shorten(&other.to_string())
        ),
    };
    Some(McpError::invalid_params(
        format!("invalid {method} params: {why}"),
        Some(json!({ "method": method })),
    ))
}
