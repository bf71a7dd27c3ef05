//! The task model: wire-compatible with the MCP `DetailedTask` shape.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::id::TaskId;
pub use crate::status::TaskStatus;

/// A task as stored and returned.
///
/// Its JSON form is the MCP `DetailedTask` shape (`taskId`, `status`,
/// `statusMessage`, `createdAt`, `lastUpdatedAt`, `ttlMs`, `pollIntervalMs`,
/// `result`, `error`, `inputRequests`) plus the store's own fields
/// (`revision`, `metadata`, and the lease fields `owner` and `leaseExpiresAt`).
/// Durations have millisecond precision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Task {
    /// The task's id.
    #[serde(rename = "taskId")]
    pub id: TaskId,
    /// Its current status.
    pub status: TaskStatus,
    /// A human-readable note on the status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
    /// When the task was created (UTC); its TTL counts from here.
    #[serde(with = "crate::clock::stamp")]
    pub created_at: OffsetDateTime,
    /// When the task last changed (UTC).
    #[serde(with = "crate::clock::stamp")]
    pub last_updated_at: OffsetDateTime,
    /// Lifetime counted from `created_at`; `None` is unlimited.
    #[serde(rename = "ttlMs", with = "millis", default)]
    pub ttl: Option<Duration>,
    /// How often a client should poll, if the host suggests it.
    #[serde(
        rename = "pollIntervalMs",
        with = "millis",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub poll_interval: Option<Duration>,
    /// The result, once `completed`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub result: Option<Value>,
    /// The error, once `failed`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub error: Option<Value>,
    /// What the task waits for, while `input_required`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub input_requests: Option<Value>,
    /// Free-form host metadata, but for keys beginning with `mcp.`: the
    /// MCP task manager's, which a host's create or update may not set
    /// ([`Error::ReservedMetadata`](crate::Error::ReservedMetadata);
    /// FORMAT.md).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    /// Goes up by exactly one with every applied write; 1 at creation.
    pub revision: u64,
    /// The store instance that owns (runs) the task, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// When the owner's lease on the task lapses unless renewed.
    #[serde(
        default,
        with = "crate::clock::stamp::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub lease_expires_at: Option<OffsetDateTime>,
    /// The owner's open of the store: with [`owner`](Task::owner), the
    /// identity that runs the task (a process restarted with the same
    /// instance id opens anew, and is not the owner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_token: Option<String>,
    /// The owner epoch: 1 at creation, +1 each time another owner claims the
    /// task to resume it. A write fenced to an earlier epoch is refused.
    #[serde(default = "first_epoch", skip_serializing_if = "is_first_epoch")]
    pub epoch: u64,
    /// What a new owner needs to resume the task, for a resumable task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<Resume>,
}

fn first_epoch() -> u64 {
    1
}

fn is_first_epoch(epoch: &u64) -> bool {
    *epoch == 1
}

/// What a resumable task keeps so that another owner can pick it up where
/// it stopped: the kind of work (which resume handler runs it), its input,
/// its last checkpoint, and how many owners have run it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Resume {
    /// The kind of work, for example a tool's name: an instance resumes a
    /// task only with a handler for its kind.
    pub kind: String,
    /// The work's input, as it was started.
    #[serde(default)]
    pub input: Value,
    /// The last checkpoint the work saved, if any.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub checkpoint: Option<Value>,
    /// How many owners have run it (1 for the first).
    pub attempts: u32,
    /// After this many attempts, a task whose owner died is failed.
    pub max_attempts: u32,
}

/// The default number of attempts a resumable task gets.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

impl Resume {
    /// Whether another owner may still run the task: it has had fewer
    /// attempts than it may.
    pub(crate) fn has_attempts_left(&self) -> bool {
        self.attempts < self.max_attempts
    }
}

impl Task {
    /// When the task expires (`created_at + ttl`), or `None` if unlimited.
    pub fn expires_at(&self) -> Option<OffsetDateTime> {
        expiry(self.created_at, self.ttl)
    }

    /// Whether the task has expired at `now` (expiry is inclusive: a task is
    /// gone at the very instant `created_at + ttl`).
    pub fn is_expired_at(&self, now: OffsetDateTime) -> bool {
        come_by(self.expires_at().as_ref(), &now)
    }

    /// Whether the task is an orphan at `now`: running, and its owner's
    /// lease has lapsed (what [`TaskStore::reap`](crate::TaskStore::reap)
    /// fails, or [`TaskStore::claim`](crate::TaskStore::claim) takes over).
    pub fn is_orphan_at(&self, now: OffsetDateTime) -> bool {
        !self.is_terminal() && come_by(self.lease_expires_at.as_ref(), &now)
    }

    /// Whether the task is resumable and has attempts left: an orphan that
    /// is not may never be claimed, and a reap fails it at once.
    pub(crate) fn has_attempts_left(&self) -> bool {
        self.resume.as_ref().is_some_and(Resume::has_attempts_left)
    }

    /// Whether the task is in a terminal state.
    pub fn is_terminal(&self) -> bool {
        self.status.is_terminal()
    }

    /// The task without what it carries for its host (status message,
    /// result, error, input requests, metadata, and its resume state's
    /// input and checkpoint): which task, at which version, in which
    /// state, whose, and when it expires, and its resume state's kind and
    /// attempts, which judging it as an orphan needs
    /// ([`Orphan::judge`](crate::Orphan::judge)). What a pass that needs no
    /// more asks for (a sweep, a census, `Store::stored`: see
    /// [`Scan::payloads`](crate::backend::Scan::payloads)); its memory does
    /// not grow with the payloads.
    pub(crate) fn without_payloads(&self) -> Task {
        // Every field by name, so that a new one is placed here on purpose.
        let Task {
            id,
            status,
            status_message: _,
            created_at,
            last_updated_at,
            ttl,
            poll_interval,
            result: _,
            error: _,
            input_requests: _,
            metadata: _,
            revision,
            owner,
            lease_expires_at,
            owner_token,
            epoch,
            resume,
        } = self;
        Task {
            id: id.clone(),
            status: *status,
            status_message: None,
            created_at: *created_at,
            last_updated_at: *last_updated_at,
            ttl: *ttl,
            poll_interval: *poll_interval,
            result: None,
            error: None,
            input_requests: None,
            metadata: Map::new(),
            revision: *revision,
            owner: owner.clone(),
            lease_expires_at: *lease_expires_at,
            owner_token: owner_token.clone(),
            epoch: *epoch,
            resume: resume.as_ref().map(|resume| Resume {
                kind: resume.kind.clone(),
                input: Value::Null,
                checkpoint: None,
                attempts: resume.attempts,
                max_attempts: resume.max_attempts,
            }),
        }
    }

    /// Moves the revision on by one, for an applied write.
    ///
    /// # Errors
    ///
    /// [`Error::RevisionOverflow`](crate::Error::RevisionOverflow) at the
    /// highest revision (only a file another program wrote can be there).
    pub(crate) fn next_revision(&mut self) -> crate::Result<()> {
        self.revision =
            self.revision
                .checked_add(1)
                .ok_or_else(|| crate::Error::RevisionOverflow {
                    id: self.id.clone(),
                })?;
        Ok(())
    }

    /// Whether this is the task a claim made as `claimed`, whatever was
    /// written over it since by others (an unfenced update keeps the
    /// owner): the same incarnation, epoch and owner's token.
    pub(crate) fn is_claim_of(&self, claimed: &Task) -> bool {
        (self.id == claimed.id && self.created_at == claimed.created_at)
            && (self.epoch, &self.owner_token) == (claimed.epoch, &claimed.owner_token)
    }

    /// The order every listing uses: `created_at`, then id.
    pub(crate) fn listing_order(a: &Task, b: &Task) -> std::cmp::Ordering {
        (a.created_at, &a.id).cmp(&(b.created_at, &b.id))
    }
}

/// When a task created at `created_at` with lifetime `ttl` expires: the one
/// definition of expiry (inclusive: the task is gone at that very instant).
pub(crate) fn expiry(created_at: OffsetDateTime, ttl: Option<Duration>) -> Option<OffsetDateTime> {
    let ttl = ttl?;
    Some(created_at.saturating_add(time::Duration::try_from(ttl).unwrap_or(time::Duration::MAX)))
}

/// Whether the instant `at` (`None`: never) has come by `now`: the one
/// comparison of a task's expiry and of its lease's lapse, both inclusive
/// (a task is gone, and an orphan, at the very instant), for a task
/// ([`Task::is_expired_at`], [`Task::is_orphan_at`]) and for a scan's keys
/// alike, whatever type a backend keeps the instants in
/// ([`Scan::matches_keys`](crate::backend::Scan::matches_keys)).
pub(crate) fn come_by<T: PartialOrd>(at: Option<&T>, now: &T) -> bool {
    at.is_some_and(|at| at <= now)
}

/// What to create: the builder passed to [`TaskStore::create`](crate::TaskStore::create).
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct NewTask {
    pub(crate) id: Option<TaskId>,
    pub(crate) ttl: Option<Duration>,
    pub(crate) poll_interval: Option<Duration>,
    pub(crate) status_message: Option<String>,
    pub(crate) metadata: Map<String, Value>,
    /// Keys reserved for the MCP task manager, set by it alone
    /// ([`reserved_metadata`](NewTask::reserved_metadata)): the public
    /// builder writes `metadata`, where the store refuses them.
    pub(crate) reserved: Map<String, Value>,
    pub(crate) resume: Option<Resume>,
    /// [`max_attempts`](NewTask::max_attempts) as given, kept for a
    /// [`resumable`](NewTask::resumable) called after it.
    pub(crate) max_attempts: Option<u32>,
}

impl NewTask {
    /// A new `working` task with a random id and no TTL.
    pub fn new() -> NewTask {
        NewTask::default()
    }

    /// Uses a host-chosen id; creating fails with
    /// [`Error::AlreadyExists`](crate::Error::AlreadyExists) if it is taken.
    pub fn id(mut self, id: TaskId) -> NewTask {
        self.id = Some(id);
        self
    }

    /// Lifetime from creation (millisecond precision; shorter parts are dropped).
    pub fn ttl(mut self, ttl: Duration) -> NewTask {
        self.ttl = Some(truncate_to_millis(ttl));
        self
    }

    /// Suggested poll interval for clients (millisecond precision).
    pub fn poll_interval(mut self, interval: Duration) -> NewTask {
        self.poll_interval = Some(truncate_to_millis(interval));
        self
    }

    /// An initial status message.
    pub fn status_message(mut self, message: impl Into<String>) -> NewTask {
        self.status_message = Some(message.into());
        self
    }

    /// Sets one metadata key. A key beginning with `mcp.` is the MCP task
    /// manager's: the create is refused with
    /// [`Error::ReservedMetadata`](crate::Error::ReservedMetadata).
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<Value>) -> NewTask {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Sets one metadata key reserved for the MCP task manager (a key
    /// beginning with `mcp.`): the manager's own writes, which the store
    /// lets through where it refuses the host's
    /// ([`metadata`](NewTask::metadata)). Crate-private, so that no host
    /// can forge them; carried on the value, so that a host's wrapper of
    /// a `TaskStore` passes them on.
    #[cfg_attr(not(any(feature = "mcp", feature = "conformance")), allow(dead_code))]
    pub(crate) fn reserved_metadata(
        mut self,
        key: impl Into<String>,
        value: impl Into<Value>,
    ) -> NewTask {
        self.reserved.insert(key.into(), value.into());
        self
    }

    /// Makes the task resumable: if its owner dies, an instance with a
    /// resume handler for `kind` claims it and runs it again from its last
    /// checkpoint, with `input` (stored with the task, counted against the
    /// payload cap).
    pub fn resumable(mut self, kind: impl Into<String>, input: Value) -> NewTask {
        let max_attempts = self.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
        self.resume = Some(Resume {
            kind: kind.into(),
            input,
            checkpoint: None,
            attempts: 1,
            max_attempts,
        });
        self
    }

    /// How many owners a resumable task may have in all (default 3, at
    /// least 1); after the last one dies, the task is failed. Given before
    /// or after [`resumable`](NewTask::resumable), alike; no effect on a
    /// task that is not resumable.
    pub fn max_attempts(mut self, attempts: u32) -> NewTask {
        let attempts = attempts.max(1);
        self.max_attempts = Some(attempts);
        if let Some(resume) = &mut self.resume {
            resume.max_attempts = attempts;
        }
        self
    }

    /// The task this builder describes, created at `now`.
    pub(crate) fn into_task(self, id: TaskId, now: OffsetDateTime) -> Task {
        let mut metadata = self.metadata;
        metadata.extend(self.reserved);
        Task {
            id,
            status: TaskStatus::Working,
            status_message: self.status_message,
            created_at: now,
            last_updated_at: now,
            ttl: self.ttl,
            poll_interval: self.poll_interval,
            result: None,
            error: None,
            input_requests: None,
            metadata,
            revision: 1,
            owner: None,
            lease_expires_at: None,
            owner_token: None,
            epoch: 1,
            resume: self.resume,
        }
    }
}

/// A non-terminal change: the builder passed to [`TaskStore::update`](crate::TaskStore::update).
///
/// Fields left unset keep their value. Metadata keys are merged.
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct TaskUpdate {
    pub(crate) status: Option<TaskStatus>,
    pub(crate) status_message: Option<String>,
    pub(crate) input_requests: Option<Value>,
    pub(crate) poll_interval: Option<Duration>,
    pub(crate) metadata: Map<String, Value>,
    /// Keys reserved for the MCP task manager, set by it alone (as
    /// [`NewTask`]'s).
    pub(crate) reserved: Map<String, Value>,
    pub(crate) checkpoint: Option<Value>,
    pub(crate) fence: Option<u64>,
    pub(crate) revision: Option<u64>,
    pub(crate) leave_lease: bool,
}

impl TaskUpdate {
    /// An update that changes nothing yet (applying it still bumps the revision).
    pub fn new() -> TaskUpdate {
        TaskUpdate::default()
    }

    /// A new non-terminal status. A terminal status makes the update fail with
    /// [`Error::TerminalStatusInUpdate`](crate::Error::TerminalStatusInUpdate):
    /// use `complete`, `fail` or `cancel`.
    ///
    /// Moving to `working` clears `input_requests` unless this update sets them.
    pub fn status(mut self, status: TaskStatus) -> TaskUpdate {
        self.status = Some(status);
        self
    }

    /// A new status message.
    pub fn status_message(mut self, message: impl Into<String>) -> TaskUpdate {
        self.status_message = Some(message.into());
        self
    }

    /// What the task waits for (usually with `status(InputRequired)`).
    pub fn input_requests(mut self, requests: Value) -> TaskUpdate {
        self.input_requests = Some(requests);
        self
    }

    /// A new suggested poll interval (millisecond precision).
    pub fn poll_interval(mut self, interval: Duration) -> TaskUpdate {
        self.poll_interval = Some(truncate_to_millis(interval));
        self
    }

    /// Sets (merges) one metadata key; other keys stay. A key beginning
    /// with `mcp.` is the MCP task manager's: the update is refused with
    /// [`Error::ReservedMetadata`](crate::Error::ReservedMetadata).
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<Value>) -> TaskUpdate {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Sets (merges) one metadata key reserved for the MCP task manager:
    /// its own writes (as [`NewTask::reserved_metadata`]).
    #[cfg_attr(not(any(feature = "mcp", feature = "conformance")), allow(dead_code))]
    pub(crate) fn reserved_metadata(
        mut self,
        key: impl Into<String>,
        value: impl Into<Value>,
    ) -> TaskUpdate {
        self.reserved.insert(key.into(), value.into());
        self
    }

    /// Saves a checkpoint of a resumable task's work: the point a new owner
    /// resumes from. A task that is not resumable has no place for it: the
    /// update is refused with
    /// [`Error::InvalidTask`](crate::Error::InvalidTask), naming the task,
    /// and changes nothing.
    pub fn checkpoint(mut self, checkpoint: Value) -> TaskUpdate {
        self.checkpoint = Some(checkpoint);
        self
    }

    /// Applies the update only while the task is still at owner `epoch` and
    /// this handle's (its instance id and open): once another owner has
    /// claimed it, or this handle released it, the update is refused as
    /// [`Transition::Fenced`](crate::Transition::Fenced) and changes nothing.
    pub fn fenced(mut self, epoch: u64) -> TaskUpdate {
        self.fence = Some(epoch);
        self
    }

    /// Applies the update only while the task is still at `revision`: if
    /// any write landed since it was read, the update is refused as
    /// [`Transition::Changed`](crate::Transition::Changed) and changes
    /// nothing, so that a caller who computed it from that version can
    /// read the task again and decide anew. (An expired, terminal or
    /// fenced task is reported as such first.)
    pub fn if_revision(mut self, revision: u64) -> TaskUpdate {
        self.revision = Some(revision);
        self
    }

    /// Leaves the task's lease as it is. A write by the handle that owns a
    /// running task renews its lease by default; a write made on someone
    /// else's behalf (a client's cancel request or answer, passed on by the
    /// owner's process) says nothing about whether the owner's work is
    /// alive, and must not keep a dead run's task from being reaped.
    pub fn leave_lease(mut self) -> TaskUpdate {
        self.leave_lease = true;
        self
    }

    /// The epoch this update is fenced to, if any.
    pub(crate) fn fence(&self) -> Option<u64> {
        self.fence
    }

    /// The revision this update expects, if any.
    pub(crate) fn expected_revision(&self) -> Option<u64> {
        self.revision
    }

    /// The terminal status this update wrongly asks for, if any.
    pub(crate) fn terminal_status(&self) -> Option<TaskStatus> {
        self.status.filter(|s| s.is_terminal())
    }

    /// Applies the update to a non-terminal task (checked by the caller).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTask`](crate::Error::InvalidTask) for a checkpoint
    /// of a task that is not resumable: it has no resume state to keep it
    /// in, and a checkpoint accepted must read back.
    pub(crate) fn apply(self, task: &mut Task, now: OffsetDateTime) -> crate::Result<()> {
        if self.checkpoint.is_some() && task.resume.is_none() {
            return Err(crate::Error::InvalidTask {
                id: task.id.clone(),
                reason: "a checkpoint is kept by a resumable task alone (`NewTask::resumable`), \
                         and this one is not: nothing was written",
            });
        }
        if let Some(status) = self.status {
            if status == TaskStatus::Working && self.input_requests.is_none() {
                task.input_requests = None;
            }
            task.status = status;
        }
        if let Some(message) = self.status_message {
            task.status_message = Some(message);
        }
        if let Some(requests) = self.input_requests {
            task.input_requests = Some(requests);
        }
        if let Some(interval) = self.poll_interval {
            task.poll_interval = Some(interval);
        }
        if let (Some(checkpoint), Some(resume)) = (self.checkpoint, &mut task.resume) {
            resume.checkpoint = Some(checkpoint);
        }
        task.metadata.extend(self.metadata);
        task.metadata.extend(self.reserved);
        task.last_updated_at = now;
        task.next_revision()
    }
}

/// How a task ends: what `complete`, `fail` and `cancel` record.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Outcome {
    /// `completed` with this result.
    Completed(Value),
    /// `failed` with this error.
    Failed(Value),
    /// `cancelled`, with an optional status message.
    Cancelled(Option<String>),
}

impl Outcome {
    /// The terminal status this outcome leads to.
    pub fn status(&self) -> TaskStatus {
        match self {
            Outcome::Completed(_) => TaskStatus::Completed,
            Outcome::Failed(_) => TaskStatus::Failed,
            Outcome::Cancelled(_) => TaskStatus::Cancelled,
        }
    }

    /// Applies the outcome to a non-terminal task (checked by the caller).
    /// A finished task keeps no resume state: nobody will resume it.
    pub(crate) fn apply(self, task: &mut Task, now: OffsetDateTime) -> crate::Result<()> {
        task.status = self.status();
        task.input_requests = None;
        task.resume = None;
        match self {
            Outcome::Completed(result) => task.result = Some(result),
            Outcome::Failed(error) => task.error = Some(error),
            Outcome::Cancelled(message) => {
                if message.is_some() {
                    task.status_message = message;
                }
            }
        }
        task.last_updated_at = now;
        task.next_revision()
    }
}

/// A payload field that is present is `Some`, even when it holds JSON
/// `null`: `Some(Value::Null)` reads back as written (an absent field is
/// `None`, by `default`).
pub(crate) fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

fn truncate_to_millis(d: Duration) -> Duration {
    Duration::from_millis(crate::clock::whole_millis(d))
}

/// `Option<Duration>` as whole milliseconds (or `null`).
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(crate::clock::whole_millis(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Task {
        let at = time::macros::datetime!(2026-01-02 03:04:05.123456789 UTC);
        NewTask::new()
            .ttl(Duration::from_millis(60_500))
            .poll_interval(Duration::from_millis(250))
            .metadata("tool", "slow")
            .into_task(TaskId::parse("t1").unwrap(), at)
    }

    #[test]
    fn a_task_without_payloads_keeps_its_version_state_and_expiry() {
        let at = time::macros::datetime!(2026-01-02 03:04:05.123456789 UTC);
        let mut task = NewTask::new()
            .ttl(Duration::from_secs(60))
            .poll_interval(Duration::from_millis(250))
            .status_message("waiting")
            .metadata("tool", "slow")
            .resumable("render", json!({"page": 3}))
            .into_task(TaskId::parse("t1").unwrap(), at);
        task.status = TaskStatus::Completed;
        task.result = Some(json!({"content": "x".repeat(1000)}));
        task.error = Some(json!("no"));
        task.input_requests = Some(json!({"q": 1}));
        task.revision = 7;
        task.epoch = 2;
        task.owner = Some("a".into());
        task.owner_token = Some("b".into());
        task.lease_expires_at = Some(at);
        let head = task.without_payloads();
        let mut expected = task.clone();
        expected.status_message = None;
        expected.result = None;
        expected.error = None;
        expected.input_requests = None;
        expected.metadata.clear();
        let resume = expected.resume.as_mut().unwrap();
        resume.input = Value::Null;
        resume.checkpoint = None;
        assert_eq!(head, expected);
        assert!(crate::backend::is_current(&head, &task));
        assert_eq!(head.expires_at(), task.expires_at());
        // A scan shapes by what it asks for.
        let mut scan = crate::backend::Scan::new(crate::backend::Scope::All, 1);
        assert_eq!(scan.shaped(&task), task);
        assert_eq!(scan.shape(task.clone()), task);
        scan.payloads = false;
        assert_eq!(scan.shaped(&task), expected);
        assert_eq!(scan.shape(task), expected);
    }

    #[test]
    fn json_is_the_mcp_shape() {
        let task = sample();
        let v = serde_json::to_value(&task).unwrap();
        assert_eq!(v["taskId"], "t1");
        assert_eq!(v["status"], "working");
        assert_eq!(v["ttlMs"], 60_500);
        assert_eq!(v["pollIntervalMs"], 250);
        assert_eq!(v["createdAt"], "2026-01-02T03:04:05.123456789Z");
        assert_eq!(v["revision"], 1);
        assert!(v.get("result").is_none());
        let back: Task = serde_json::from_value(v).unwrap();
        assert_eq!(back, task);
    }

    #[test]
    fn unlimited_ttl_is_null() {
        let task = NewTask::new().into_task(TaskId::new(), OffsetDateTime::UNIX_EPOCH);
        let v = serde_json::to_value(&task).unwrap();
        assert_eq!(v["ttlMs"], json!(null));
        assert_eq!(task.expires_at(), None);
    }

    #[test]
    fn expiry_is_inclusive() {
        let task = sample();
        let at = task.expires_at().unwrap();
        assert!(!task.is_expired_at(at - time::Duration::nanoseconds(1)));
        assert!(task.is_expired_at(at));
    }

    #[test]
    fn moving_to_working_clears_input_requests() {
        let mut task = sample();
        let now = task.created_at;
        TaskUpdate::new()
            .status(TaskStatus::InputRequired)
            .input_requests(json!({"q": 1}))
            .apply(&mut task, now)
            .unwrap();
        assert_eq!(task.input_requests, Some(json!({"q": 1})));
        TaskUpdate::new()
            .status(TaskStatus::Working)
            .apply(&mut task, now)
            .unwrap();
        assert_eq!(task.input_requests, None);
        assert_eq!(task.revision, 3);
    }
}
