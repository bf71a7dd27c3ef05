//! The state a manager shares with its operations and background loop, and
//! one *run*: an operation this instance runs for a task, at one owner
//! epoch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rmcp::ErrorData as McpError;
use rmcp::task_manager::{TaskExit, TaskFuture};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::{Notify, watch};
use tokio::task::{AbortHandle, JoinHandle};

use super::calls::{StoreCall, blocking, lock, to_json};
use super::context::TaskContext;
use super::options::ManagerOptions;
use super::protocol::{Book, Inputs, PRINCIPAL_KEY, cancel_requested, clearing_peer_copies};
use crate::id::TaskId;
use crate::occurrences::Occurrences;
use crate::store::{TaskStore, Transition};
use crate::task::{Outcome, Resume, Task, TaskUpdate};

/// A resume handler: makes the operation that resumes a claimed task.
pub(super) type Handler = Arc<dyn Fn(TaskContext) -> TaskFuture + Send + Sync>;

/// What a manager's clones, its operations and its background loop share.
pub(super) struct Shared {
    pub store: Arc<dyn TaskStore>,
    pub options: ManagerOptions,
    /// The runs of this instance, by task.
    pub local: Mutex<HashMap<TaskId, Arc<Run>>>,
    /// Resume handlers, by kind.
    pub handlers: RwLock<HashMap<String, Handler>>,
    /// Set once shutdown begins: no new task, no claim.
    pub closing: AtomicBool,
    /// `spawn` calls between their check of `closing` and their run's start.
    pub starting: AtomicUsize,
    /// Told whenever a run ends or a start finishes (shutdown waits on it).
    pub drained: Notify,
    /// Wakes the background loop to claim at once.
    pub claim_now: Notify,
    /// What the store's clock read (`lease_now`) when the last claim pass
    /// began: a poll of an orphan whose lease lapsed before then wakes no
    /// other.
    pub claimed_at: Mutex<Option<OffsetDateTime>>,
    /// Claim passes under way: from before one sets `claimed_at` until
    /// every task it claimed is started or handed back. A poll of an
    /// orphan one may be taking leaves the orphan to it.
    pub claiming: AtomicUsize,
    /// `true` once shutdown begins (operations may watch it).
    pub shutting_down: watch::Sender<bool>,
    /// `true` once the background loop is to stop.
    pub stop: watch::Sender<bool>,
    pub background: Mutex<Option<JoinHandle<()>>>,
    /// What shutdown did to the runs it stopped.
    pub stopped: Mutex<Stopped>,
    /// The panics of the loop of claims, reaps and sweeps
    /// ([`Shared::panicked`]).
    pub maintenance_panics: Occurrences,
}

/// What [`DurableTaskManager::shutdown`](super::DurableTaskManager::shutdown)
/// did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Operations that were running when shutdown began.
    pub running: usize,
    /// Resumable tasks whose lease was released for another instance to
    /// claim at once (those with attempts left; one on its last attempt is
    /// failed).
    pub released: usize,
    /// Tasks failed with `{"code": "shutdown", ..}`.
    pub failed: usize,
    /// Operations that had not ended when shutdown returned although they
    /// were aborted (one that never yields, blocking its thread, cannot be
    /// aborted). Their tasks were released or failed all the same (unless
    /// counted in `unrecorded`); nothing an operation does afterwards is
    /// recorded.
    pub not_stopped: usize,
    /// Tasks whose end shutdown could not see recorded within its bound: a
    /// store write (the release or `shutdown` failure, or the outcome of an
    /// operation that ended in the grace) that had not returned or failed,
    /// or a `spawn` whose create had not returned. Each stays as the store
    /// has it; a write still under way may land later; once its lease
    /// lapses the task is claimed (resumable) or reaped as orphaned.
    pub unrecorded: usize,
}

/// Counts of what shutdown did to stopped runs, and of the ends written
/// while it was closing that never landed.
#[derive(Debug, Default)]
pub(super) struct Stopped {
    pub released: usize,
    pub failed: usize,
    /// Recording writes of runs' ends (an outcome, a stop) that failed for
    /// good while closing: their runs are gone from the local set.
    pub unrecorded: usize,
}

/// How a run is ending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ending {
    /// Running; its outcome will be recorded.
    Running,
    /// The operation ended; its supervisor is recording its outcome.
    Recording,
    /// Another instance claimed the task: nothing of this run is recorded.
    Lost,
    /// Started while shutting down (a spawn or claim that raced it): its
    /// operation is aborted at once and its supervisor records the release
    /// (resumable, with attempts left) or the `shutdown` failure.
    Shutdown,
    /// Still running when the grace ran out: shutdown aborted it and
    /// records the release or the `shutdown` failure itself, whether or not
    /// the operation stops. Nothing else of the run is written.
    Stopped,
}

/// One operation this instance runs for a task, at one owner epoch.
pub(super) struct Run {
    pub id: TaskId,
    /// The owner epoch every write of this run is fenced to.
    pub epoch: u64,
    /// The resume state the run started from, for a resumable task.
    pub resume: Option<Resume>,
    /// The task's principal as stored ([`PRINCIPAL_KEY`]), if it has
    /// one: written at its create, never after.
    pub principal: Option<Value>,
    /// `true` once cancellation was requested (or the run was lost).
    pub cancel: watch::Sender<bool>,
    /// The input state; its lock serializes the run's input writes.
    pub inputs: tokio::sync::Mutex<Inputs>,
    /// The lease the store granted, if any.
    pub lease: Option<Duration>,
    pub state: Mutex<RunState>,
}

pub(super) struct RunState {
    pub ending: Ending,
    pub renewed_at: Instant,
    /// Since when a renewal of the run's lease has been under way in a
    /// batch with others': the run joins no other batch meanwhile.
    pub batched: Option<Instant>,
    /// A renewal of the run's lease alone is under way.
    pub renewing_alone: bool,
    /// Since when a look at the run's task (a read, or acting on what a
    /// read or a renewal found) has been under way: no watch tick starts
    /// another.
    pub looking: Option<Instant>,
    pub abort: Option<AbortHandle>,
    pub supervisor: Option<JoinHandle<()>>,
}

impl Run {
    /// A run of `task` as stored (just created, or just claimed, read at
    /// `now`, the time the store's leases run from:
    /// [`TaskStore::lease_from`]), by a store whose leases last `lease`
    /// (if it says).
    ///
    /// Its renewals count from when the store granted the lease, not from
    /// now: a claim pass of many orphans grants every lease at the time it
    /// read before its scan, and may have taken most of a lease since. By
    /// the time the store's leases run from, not its `now`, which stands
    /// still while its clock reads behind (stepped back) as the leases run
    /// on: the lease would look granted just then.
    pub fn of(task: &Task, lease: Option<Duration>, now: OffsetDateTime) -> Arc<Run> {
        // A store that does not say: what is left of the lease the create
        // or the claim just gave the task (granted now, as far as the run
        // can tell).
        let granted_ago = lease
            .zip(task.lease_expires_at)
            .and_then(|(lease, until)| until.checked_sub(lease.try_into().ok()?))
            .and_then(|granted| Duration::try_from(now - granted).ok())
            .unwrap_or_default();
        let lease = lease
            .or_else(|| Duration::try_from(task.lease_expires_at? - now).ok())
            .filter(|lease| !lease.is_zero());
        let at = Instant::now();
        Arc::new(Run {
            id: task.id.clone(),
            epoch: task.epoch,
            resume: task.resume.clone(),
            principal: task.metadata.get(PRINCIPAL_KEY).cloned(),
            // A cancel requested before this run started (while no one ran
            // the task): the operation knows from its first step.
            cancel: watch::channel(cancel_requested(task)).0,
            inputs: tokio::sync::Mutex::new(Inputs {
                book: Book::of(task),
                revision: task.revision,
                ..Inputs::default()
            }),
            lease,
            state: Mutex::new(RunState {
                ending: Ending::Running,
                renewed_at: at.checked_sub(granted_ago).unwrap_or(at),
                batched: None,
                renewing_alone: false,
                looking: None,
                abort: None,
                supervisor: None,
            }),
        })
    }

    pub fn ending(&self) -> Ending {
        lock(&self.state).ending
    }
}

/// What a fenced write of a run did.
pub(super) enum RunWrite {
    /// Applied: the task's revision now.
    Applied(u64),
    /// Asked for a revision the task has left: nothing was written. The
    /// task as it stands.
    Changed(Box<Task>),
    /// The task is terminal: nothing was written.
    Terminal,
    /// Another instance claimed the task: the run is lost.
    Lost(Box<Task>),
    /// Shutdown stopped the run and recorded its task: nothing was written.
    Stopped,
}

impl Shared {
    /// Starts `make_future` as run `run`, with a supervisor that records
    /// its outcome.
    pub fn launch<F>(self: &Arc<Self>, run: Arc<Run>, make_future: F)
    where
        F: FnOnce(TaskContext) -> TaskFuture,
    {
        let replaced = lock(&self.local).insert(run.id.clone(), Arc::clone(&run));
        if let Some(old) = replaced {
            // This handle claimed back a task whose earlier run it had not
            // yet seen lost.
            self.lose(&old, None);
        }
        let context = TaskContext::new(Arc::clone(self), Arc::clone(&run));
        // A handler that panics building its future (before its first
        // step) fails the task as a panicking operation does, on the
        // supervisor: not through the caller (a spawn, or the background
        // loop resuming a claim), and not leaving a run with no supervisor.
        let future =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| make_future(context)))
                .unwrap_or_else(|panic| Box::pin(async move { std::panic::resume_unwind(panic) }));
        let operation = tokio::spawn(future);
        let abort = operation.abort_handle();
        let supervisor = tokio::spawn(supervise(Arc::clone(self), Arc::clone(&run), operation));
        let mut state = lock(&run.state);
        state.abort = Some(abort.clone());
        state.supervisor = Some(supervisor);
        if self.closing.load(Ordering::SeqCst) && state.ending == Ending::Running {
            // Started while shutting down (a spawn that raced it).
            state.ending = Ending::Shutdown;
        }
        if state.ending != Ending::Running {
            abort.abort();
        }
    }

    /// Marks `run` lost to another instance (now at `now`, if known):
    /// cancels its context, stops its operation, and forgets it. Nothing of
    /// it is recorded from here on.
    pub fn lose(&self, run: &Arc<Run>, now: Option<&Task>) {
        let first = {
            let mut state = lock(&run.state);
            // A run shutdown stopped stays stopped (its task recorded by
            // shutdown, nothing more of it written): a tick that read it
            // before then may find it lost after.
            let first = !matches!(state.ending, Ending::Lost | Ending::Stopped);
            if state.ending != Ending::Stopped {
                state.ending = Ending::Lost;
            }
            if let Some(abort) = &state.abort {
                abort.abort();
            }
            first
        };
        run.cancel.send_replace(true);
        if first {
            // Contained: the run is forgotten after, and a claim pass's
            // look that lost it looks at its other tasks.
            crate::panics::contained(|| {
                tracing::warn!(
                    task = %run.id,
                    epoch = run.epoch,
                    now_epoch = now.map(|t| t.epoch),
                    owner = now.and_then(|t| t.owner.as_deref()),
                    "another instance took the task over: its operation here is stopped and nothing more of it is recorded"
                );
            });
        }
        self.forget(run);
    }

    /// Removes `run` from the local runs (if it is still the task's run).
    pub fn forget(&self, run: &Arc<Run>) {
        let mut local = lock(&self.local);
        if local.get(&run.id).is_some_and(|r| Arc::ptr_eq(r, run)) {
            local.remove(&run.id);
        }
        drop(local);
        self.drained.notify_waiters();
    }

    /// The run of task `id` here, if any.
    pub fn run_of(&self, id: &TaskId) -> Option<Arc<Run>> {
        lock(&self.local).get(id).cloned()
    }

    /// Writes `update` for `run`, fenced to its epoch; a fenced write loses
    /// the run.
    pub async fn write(&self, run: &Arc<Run>, update: TaskUpdate) -> Result<RunWrite, StoreCall> {
        if run.ending() == Ending::Stopped {
            // Released or failed by shutdown: an owner's write would renew
            // the lease a release gave up.
            return Ok(RunWrite::Stopped);
        }
        let store = Arc::clone(&self.store);
        let id = run.id.clone();
        let update = update.fenced(run.epoch);
        let written = blocking(move || store.update(&id, update)).await?;
        Ok(self.judge(run, written))
    }

    /// Writes `next` as `run`'s input state, on the condition that the
    /// stored task is still the revision `inputs` was read from or last
    /// written as. Applied: `inputs` holds `next` and the new revision.
    /// Refused because another write landed first (`Changed`): `inputs`
    /// holds the state as stored now, for the caller to decide again from
    /// (a cancel among what landed means the run is to stop).
    pub async fn write_book(
        &self,
        run: &Arc<Run>,
        inputs: &mut Inputs,
        next: Book,
        accepted: &[(String, Value)],
    ) -> Result<RunWrite, StoreCall> {
        let update = clearing_peer_copies(next.update(), accepted);
        let written = self.write(run, update.if_revision(inputs.revision)).await?;
        match &written {
            RunWrite::Applied(revision) => {
                inputs.book = next;
                inputs.revision = *revision;
            }
            RunWrite::Changed(now) => {
                let stored = Book::of(now);
                inputs.deliver_recorded(&stored);
                inputs.book = stored;
                inputs.revision = now.revision;
            }
            RunWrite::Terminal | RunWrite::Lost(_) | RunWrite::Stopped => {}
        }
        Ok(written)
    }

    /// What a fenced write's transition means for `run`.
    fn judge(&self, run: &Arc<Run>, written: Transition) -> RunWrite {
        match written {
            Transition::Applied(task) => RunWrite::Applied(task.revision),
            Transition::Changed(task) => RunWrite::Changed(Box::new(task)),
            Transition::AlreadyTerminal(_) => RunWrite::Terminal,
            Transition::Fenced(task) => {
                self.lose(run, Some(&task));
                RunWrite::Lost(Box::new(task))
            }
        }
    }

    /// The error an operation gets for a write after shutdown stopped its
    /// run.
    pub fn stopped_error(&self, run: &Run) -> McpError {
        McpError::internal_error(
            format!(
                "task {} was stopped: instance {} shut down and recorded it; this run may no longer write it",
                run.id,
                self.store.instance_id()
            ),
            Some(json!({ "taskId": run.id.as_str(), "code": "shutdown" })),
        )
    }

    /// The error an operation gets for a write of a lost run.
    pub fn lost_error(run: &Run, now: &Task) -> McpError {
        McpError::internal_error(
            format!(
                "task {} was taken over by instance {} (epoch {}): this run (epoch {}) may no longer write it",
                run.id,
                now.owner.as_deref().unwrap_or("(unknown)"),
                now.epoch,
                run.epoch
            ),
            Some(
                json!({ "taskId": run.id.as_str(), "code": "fenced", "epoch": run.epoch, "taskEpoch": now.epoch }),
            ),
        )
    }

    /// Whether shutdown has begun.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }
}

/// Runs the operation to its end and records what it came to, fenced to
/// the run's epoch: its outcome; for a run stopped by shutdown, a release
/// (resumable) or a `shutdown` failure; for a lost run, nothing.
async fn supervise(
    shared: Arc<Shared>,
    run: Arc<Run>,
    operation: JoinHandle<Result<rmcp::model::CallToolResult, TaskExit>>,
) {
    let joined = operation.await;
    let ending = {
        let mut state = lock(&run.state);
        if state.ending == Ending::Running {
            state.ending = Ending::Recording;
        }
        state.ending
    };
    let record = match (joined, ending) {
        // Shutdown recorded it (or another instance runs it now).
        (_, Ending::Lost | Ending::Stopped) => None,
        (Ok(Ok(result)), _) => Some(Record::Finish(Outcome::Completed(to_json(&result)))),
        (Ok(Err(TaskExit::Cancelled)), _) => Some(Record::Finish(Outcome::Cancelled(None))),
        (Ok(Err(TaskExit::Error(error))), _) => {
            Some(Record::Finish(Outcome::Failed(to_json(&error))))
        }
        (Err(join), Ending::Shutdown) if join.is_cancelled() => Some(Record::stop(&shared, &run)),
        (Err(join), _) => {
            let why = match join.try_into_panic() {
                Ok(panic) => {
                    let why = format!("task operation panicked: {}", panic_message(&*panic));
                    // A payload whose drop panics must not end this
                    // supervisor, leaving the run unrecorded.
                    crate::panics::drop_payload(panic);
                    why
                }
                Err(_) => "task operation was aborted".to_owned(),
            };
            // The client reads it in the task's error; the host's log
            // names the task (a panic's own message names a thread).
            tracing::error!(task = %run.id, error = %why, "a task's operation ended without an outcome");
            Some(Record::Finish(Outcome::Failed(to_json(
                &McpError::internal_error(why, None),
            ))))
        }
    };
    if let Some(record) = record {
        shared.record(&run, record, ending).await;
    }
    shared.forget(&run);
}

/// A panic's message, as `panic!` gives it (a string), bounded: a payload
/// of another type says so.
pub(super) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    /// The most of a message kept, in bytes.
    const KEEP: usize = 1_024;
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a payload that is not a string)");
    crate::id::bounded(message, KEEP)
}

/// What is recorded for a run.
#[derive(Clone)]
pub(super) enum Record {
    Finish(Outcome),
    Release,
}

impl Record {
    /// What shutdown records for a run it stops: a release for a resumable
    /// task another owner may still run, the `shutdown` failure for any
    /// other (a task on its last attempt included: no instance may claim
    /// it, and the client would read it orphaned).
    pub fn stop(shared: &Shared, run: &Run) -> Record {
        if run.resume.as_ref().is_some_and(Resume::has_attempts_left) {
            Record::Release
        } else {
            Record::Finish(Outcome::Failed(shutdown_error(shared, run)))
        }
    }

    /// Writes it for `run`, fenced to the run's epoch (a blocking call).
    pub fn write(self, store: &dyn TaskStore, run: &Run) -> crate::Result<Transition> {
        self.write_at(store, &run.id, run.epoch)
    }

    /// Writes it for task `id`, fenced to owner `epoch` (a blocking call).
    pub fn write_at(
        self,
        store: &dyn TaskStore,
        id: &TaskId,
        epoch: u64,
    ) -> crate::Result<Transition> {
        match self {
            Record::Finish(outcome) => store.finish_fenced(id, outcome, epoch),
            Record::Release => store.release(id, epoch),
        }
    }

    /// Whether it stops the run for shutdown (a release or the `shutdown`
    /// failure), and which.
    pub fn stops(&self) -> Option<Stop> {
        match self {
            Record::Release => Some(Stop::Released),
            Record::Finish(Outcome::Failed(e)) if e["code"] == "shutdown" => Some(Stop::Failed),
            Record::Finish(_) => None,
        }
    }
}

/// How shutdown stopped a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stop {
    Released,
    Failed,
}

impl Shared {
    /// Records `record` for `run`. An outcome the store refuses as a value
    /// (over the payload cap, nested too deep, not encodable) can never be
    /// stored: the task is failed instead, with why
    /// (`{"code": "outcome_refused", ..}`, a small failure the store takes
    /// over any task, even one its status message or metadata filled to
    /// the cap), not left running until its lease lapses and then reported
    /// orphaned (or, resumable, run again to the same end). A write that
    /// failed for a cause that may pass (I/O, the database) is tried again, [`RECORD_TRIES`] times in all, its
    /// waits doubling from [`RECORD_RETRY`], while the run's lease is still
    /// renewed, during shutdown too (which returns by its bound whatever
    /// the tries; one that fails for good then is counted in its report's
    /// `unrecorded`).
    async fn record(&self, run: &Arc<Run>, mut record: Record, ending: Ending) {
        let stop = record.stops().filter(|_| ending == Ending::Shutdown);
        let (mut wait, mut tries, mut refused) = (RECORD_RETRY, 1, false);
        loop {
            let store = Arc::clone(&self.store);
            let target = Arc::clone(run);
            let attempt = record.clone();
            let written = blocking(move || attempt.write(&*store, &target)).await;
            match written {
                Err(StoreCall::Store(
                    e @ (crate::Error::PayloadTooLarge { .. }
                    | crate::Error::TooDeep { .. }
                    | crate::Error::Encode { .. }),
                )) if !refused => {
                    tracing::warn!(task = %run.id, error = %e, "the store refused the task's outcome; recording its failure instead");
                    record = Record::Finish(Outcome::Failed(refused_error(run, &e)));
                    refused = true;
                }
                // Tried again: during shutdown a bounded number of times
                // (its grace bounds it); else for as long as the run holds
                // the task (its lease renewed meanwhile), however long the
                // store is away.
                Err(StoreCall::Store(
                    ref e @ (crate::Error::Io { .. } | crate::Error::Backend { .. }),
                )) if tries < RECORD_TRIES
                    || (!self.is_closing() && run.ending() == Ending::Recording) =>
                {
                    tracing::warn!(task = %run.id, error = %e, attempt = tries, "a store write recording the task failed; trying again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(RECORD_RETRY_MAX);
                    tries += 1;
                }
                written => {
                    if !self.recorded(run, stop, written) && self.is_closing() {
                        lock(&self.stopped).unrecorded += 1;
                    }
                    return;
                }
            }
        }
    }

    /// Acts on what a recording write of `run` came to, and counts a
    /// shutdown `stop` that applied; `false` if the write failed (the
    /// error is logged).
    pub fn recorded(
        &self,
        run: &Arc<Run>,
        stop: Option<Stop>,
        written: Result<Transition, StoreCall>,
    ) -> bool {
        match written {
            Ok(Transition::Applied(_)) => {
                let mut stopped = lock(&self.stopped);
                match stop {
                    Some(Stop::Released) => stopped.released += 1,
                    Some(Stop::Failed) => stopped.failed += 1,
                    None => {}
                }
                true
            }
            Ok(Transition::Fenced(task)) => {
                self.lose(run, Some(&task));
                true
            }
            Ok(Transition::AlreadyTerminal(_))
            | Err(StoreCall::Store(crate::Error::NotFound { .. })) => true,
            // Recording writes ask for no revision.
            Ok(Transition::Changed(_)) => {
                tracing::error!(task = %run.id, "a recording write was refused for a revision it did not ask for");
                false
            }
            Err(e) => {
                tracing::error!(task = %run.id, error = %e.into_mcp(Some(&run.id)), "a store write recording the task failed");
                false
            }
        }
    }
}

/// How many times in all a recording write that failed for a cause that
/// may pass is made during shutdown (outside it, as long as the run holds
/// its task).
const RECORD_TRIES: u32 = 6;
/// The first wait before a recording write is tried again (then doubling:
/// 3.1 s in all over [`RECORD_TRIES`], up to [`RECORD_RETRY_MAX`]).
const RECORD_RETRY: Duration = Duration::from_millis(100);
/// The longest wait between two tries of a recording write.
const RECORD_RETRY_MAX: Duration = Duration::from_secs(2);

/// The error of a task whose outcome the store refused as a value: a small
/// one ([`small_error`]), which the store takes however near the payload
/// cap the task is.
fn refused_error(run: &Run, refused: &crate::Error) -> Value {
    let message = format!(
        "task {} ended, but the store refused its outcome: {refused}",
        run.id
    );
    small_error(json!({ "code": "outcome_refused", "message": message }))
}

/// `error`, its `message` cut short as need be for it to be a small
/// failure ([`SMALL_ERROR_BYTES`](crate::SMALL_ERROR_BYTES)), which the
/// store takes over any task, however near the payload cap.
pub(super) fn small_error(mut error: Value) -> Value {
    let Some(message) = error["message"].as_str().map(str::to_owned) else {
        return error;
    };
    let mut keep = message.len().min(crate::SMALL_ERROR_BYTES);
    loop {
        error["message"] = Value::from(crate::id::bounded(&message, keep));
        if crate::limits::is_small_error(&error) || keep == 0 {
            return error;
        }
        keep /= 2;
    }
}

/// The error of a task that was still running when its instance shut down.
fn shutdown_error(shared: &Shared, run: &Run) -> Value {
    let instance = shared.store.instance_id();
    json!({
        "code": "shutdown",
        "message": format!(
            "task {} was stopped: instance {instance} shut down before it finished",
            run.id
        ),
        "instance": instance,
        "graceMs": crate::clock::whole_millis(shared.options.shutdown_grace),
    })
}

#[cfg(test)]
mod panic_tests {
    use super::panic_message;

    /// A string payload is kept up to 1 KiB, cut on a character boundary
    /// and marked; another payload says it is not a string.
    #[test]
    fn a_panics_message_is_kept_bounded() {
        let short: Box<dyn std::any::Any + Send> = Box::new("cannot parse");
        assert_eq!(panic_message(&*short), "cannot parse");
        let long: Box<dyn std::any::Any + Send> = Box::new("é".repeat(1_500));
        let kept = panic_message(&*long);
        assert!(
            kept.ends_with("...") && kept.len() <= 1_024 + 3,
            "{}",
            kept.len()
        );
        assert_eq!(kept.len(), 1_024 + 3, "1,024 bytes: 512 characters of two");
        let other: Box<dyn std::any::Any + Send> = Box::new(42_u32);
        assert_eq!(panic_message(&*other), "(a payload that is not a string)");
    }

    /// The `outcome_refused` error is a small failure, whatever the task's
    /// id and the store's error: the store takes it over any task.
    #[test]
    fn an_outcome_refused_error_is_small_whatever_it_names() {
        let task: crate::Task = serde_json::from_value(serde_json::json!({
            "taskId": "q".repeat(crate::MAX_ID_LEN),
            "status": "working",
            "createdAt": "2026-01-01T00:00:00Z", "lastUpdatedAt": "2026-01-01T00:00:00Z",
            "ttlMs": null, "revision": 1,
        }))
        .unwrap();
        let run = super::Run::of(&task, None, time::OffsetDateTime::now_utc());
        let refused = crate::Error::Encode {
            id: task.id.clone(),
            source: <serde_json::Error as serde::de::Error>::custom("\"\u{1}".repeat(2_000)),
        };
        let error = super::refused_error(&run, &refused);
        let size = serde_json::to_vec(&error).unwrap().len();
        assert!(size <= crate::SMALL_ERROR_BYTES, "{size}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(task.id.as_str()), "{message}");
    }
}
