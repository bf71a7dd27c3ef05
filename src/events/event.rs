//! What happened: one [`Event`], and the names of the events the crate emits.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::task::Task;

/// One thing that happened: a task transition, a breaker transition, or
/// anything a host pushes.
///
/// `layer_from` and `layer_to` name where a transition went from and to (a
/// breaker's states, a task's statuses, or a host's own layers); `data` holds
/// the structured details, usually a JSON object.
///
/// ```
/// use taskstore::Event;
///
/// let event = Event::new("cache.miss")
///     .from_layer("memory")
///     .to_layer("disk")
///     .field("key", "user:42");
/// assert_eq!(event.kind, "cache.miss");
/// assert_eq!(event.data["key"], "user:42");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Event {
    /// What happened, as a dotted name (`"task.completed"`, `"breaker.opened"`).
    pub kind: Cow<'static, str>,
    /// Where a transition came from, if it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_from: Option<String>,
    /// Where a transition went to, if it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_to: Option<String>,
    /// Structured details; `null` when there are none.
    #[serde(default)]
    pub data: Value,
}

impl Event {
    /// An event of `kind` with no layers and no data.
    ///
    /// A `&'static str` kind costs no allocation.
    pub fn new(kind: impl Into<Cow<'static, str>>) -> Event {
        Event {
            kind: kind.into(),
            layer_from: None,
            layer_to: None,
            data: Value::Null,
        }
    }

    /// A task event: `data` carries the task's `taskId`, `status` and
    /// `revision`, and `layer_to` its status.
    ///
    /// ```
    /// use taskstore::{Event, TaskEventKind};
    /// # use taskstore::{MemoryStore, NewTask, TaskStore};
    /// # let store = MemoryStore::new();
    /// # let task = store.create(NewTask::new()).unwrap();
    /// let event = Event::task(TaskEventKind::Created, &task);
    /// assert_eq!(event.kind, "task.created");
    /// assert_eq!(event.data["status"], "working");
    /// ```
    pub fn task(kind: TaskEventKind, task: &Task) -> Event {
        Event {
            kind: Cow::Borrowed(kind.as_str()),
            layer_from: None,
            layer_to: Some(task.status.as_str().to_owned()),
            data: json!({
                "taskId": task.id.as_str(),
                "status": task.status.as_str(),
                "revision": task.revision,
            }),
        }
    }

    /// The event for a corrupt or foreign file that a store set aside.
    pub fn corrupt_set_aside(path: impl fmt::Display, reason: impl fmt::Display) -> Event {
        Event::new(TaskEventKind::CorruptSetAside.as_str())
            .field("path", path.to_string())
            .field("reason", reason.to_string())
    }

    /// Sets where the transition came from.
    #[must_use]
    pub fn from_layer(mut self, layer: impl Into<String>) -> Event {
        self.layer_from = Some(layer.into());
        self
    }

    /// Sets where the transition went to.
    #[must_use]
    pub fn to_layer(mut self, layer: impl Into<String>) -> Event {
        self.layer_to = Some(layer.into());
        self
    }

    /// Replaces the data.
    #[must_use]
    pub fn with_data(mut self, data: Value) -> Event {
        self.data = data;
        self
    }

    /// Sets one key of the data object (turning `null` or a non-object into an
    /// object first; a previous non-object value is kept under `"value"`).
    #[must_use]
    pub fn field(mut self, key: impl Into<String>, value: impl Into<Value>) -> Event {
        if !self.data.is_object() {
            let mut map = Map::new();
            let old = std::mem::take(&mut self.data);
            if !old.is_null() {
                map.insert("value".to_owned(), old);
            }
            self.data = Value::Object(map);
        }
        if let Value::Object(map) = &mut self.data {
            map.insert(key.into(), value.into());
        }
        self
    }
}

/// The task events a store emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TaskEventKind {
    /// A task was created.
    Created,
    /// A non-terminal update was applied.
    Updated,
    /// A task completed (terminal).
    Completed,
    /// A task failed (terminal).
    Failed,
    /// A task was cancelled (terminal).
    Cancelled,
    /// A task was found expired (its TTL from creation passed).
    Expired,
    /// A task was deleted.
    Deleted,
    /// A corrupt or foreign file was set aside.
    CorruptSetAside,
    /// An orphaned task (its owner's lease lapsed) was failed by the reaper.
    Reaped,
}

impl TaskEventKind {
    /// Every task event kind.
    pub const ALL: [TaskEventKind; 9] = [
        TaskEventKind::Created,
        TaskEventKind::Updated,
        TaskEventKind::Completed,
        TaskEventKind::Failed,
        TaskEventKind::Cancelled,
        TaskEventKind::Expired,
        TaskEventKind::Deleted,
        TaskEventKind::CorruptSetAside,
        TaskEventKind::Reaped,
    ];

    /// The event of an applied write that leaves a task in `status`:
    /// updated, or the terminal status reached.
    pub fn for_status(status: crate::task::TaskStatus) -> TaskEventKind {
        use crate::task::TaskStatus;
        match status {
            TaskStatus::Completed => TaskEventKind::Completed,
            TaskStatus::Failed => TaskEventKind::Failed,
            TaskStatus::Cancelled => TaskEventKind::Cancelled,
            TaskStatus::Working | TaskStatus::InputRequired => TaskEventKind::Updated,
        }
    }

    /// The event kind string (`"task.created"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            TaskEventKind::Created => kinds::TASK_CREATED,
            TaskEventKind::Updated => kinds::TASK_UPDATED,
            TaskEventKind::Completed => kinds::TASK_COMPLETED,
            TaskEventKind::Failed => kinds::TASK_FAILED,
            TaskEventKind::Cancelled => kinds::TASK_CANCELLED,
            TaskEventKind::Expired => kinds::TASK_EXPIRED,
            TaskEventKind::Deleted => kinds::TASK_DELETED,
            TaskEventKind::CorruptSetAside => kinds::TASK_CORRUPT_SET_ASIDE,
            TaskEventKind::Reaped => kinds::TASK_REAPED,
        }
    }
}

impl fmt::Display for TaskEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `kind` strings of every event the crate emits.
pub mod kinds {
    /// A task was created.
    pub const TASK_CREATED: &str = "task.created";
    /// A non-terminal update was applied to a task.
    pub const TASK_UPDATED: &str = "task.updated";
    /// A task completed.
    pub const TASK_COMPLETED: &str = "task.completed";
    /// A task failed.
    pub const TASK_FAILED: &str = "task.failed";
    /// A task was cancelled.
    pub const TASK_CANCELLED: &str = "task.cancelled";
    /// A task expired.
    pub const TASK_EXPIRED: &str = "task.expired";
    /// A task was deleted.
    pub const TASK_DELETED: &str = "task.deleted";
    /// A corrupt or foreign file was set aside.
    pub const TASK_CORRUPT_SET_ASIDE: &str = "task.corrupt_set_aside";
    /// An orphaned task was failed by the reaper.
    pub const TASK_REAPED: &str = "task.reaped";
    /// A closed breaker tripped open.
    pub const BREAKER_OPENED: &str = "breaker.opened";
    /// An open breaker's cooldown passed: it lets probes through.
    pub const BREAKER_HALF_OPENED: &str = "breaker.half_opened";
    /// Enough probes succeeded: the breaker closed.
    pub const BREAKER_CLOSED: &str = "breaker.closed";
    /// A probe failed: the half-open breaker opened again.
    pub const BREAKER_REOPENED: &str = "breaker.reopened";
    /// The breaker was forced open by the host.
    pub const BREAKER_FORCED_OPEN: &str = "breaker.forced_open";
    /// The breaker was reset (closed, window cleared) by the host.
    pub const BREAKER_RESET: &str = "breaker.reset";

    /// Whether `kind` is a task event.
    pub fn is_task(kind: &str) -> bool {
        kind.starts_with("task.")
    }

    /// Whether `kind` is a breaker transition.
    pub fn is_breaker(kind: &str) -> bool {
        kind.starts_with("breaker.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_turns_null_into_an_object() {
        let e = Event::new("x").field("a", 1).field("b", "two");
        assert_eq!(e.data, json!({"a": 1, "b": "two"}));
        let e = Event::new("x").with_data(json!(5)).field("a", 1);
        assert_eq!(e.data, json!({"value": 5, "a": 1}));
    }

    #[test]
    fn event_round_trips_through_json() {
        let e = Event::new("breaker.opened")
            .from_layer("closed")
            .to_layer("open")
            .field("calls", 10);
        let text = serde_json::to_string(&e).unwrap();
        let back: Event = serde_json::from_str(&text).unwrap();
        assert_eq!(back, e);
        let bare: Event = serde_json::from_str(r#"{"kind":"k"}"#).unwrap();
        assert_eq!(bare, Event::new("k"));
    }

    #[test]
    fn task_kinds_have_distinct_names() {
        let mut names: Vec<_> = TaskEventKind::ALL.iter().map(|k| k.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), TaskEventKind::ALL.len());
        assert!(names.iter().all(|n| kinds::is_task(n)));
    }
}
