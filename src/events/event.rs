//! What happened: one [`Event`], and its constructors for the crate's kinds.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::events::breaker::{BreakerEventKind, BreakerState};
use crate::events::kind::EventKind;
use crate::events::task::{TaskEventKind, UnreadableAction};
use crate::task::Task;

/// The data key of a breaker event that holds the breaker's name.
const BREAKER: &str = "breaker";
const GENERATION: &str = "generation";
/// The data key of a `task.expired` event that holds when the task
/// expired.
const EXPIRED_AT: &str = "expiredAt";

/// One thing that happened: a task transition, a breaker transition, or
/// anything a host pushes.
///
/// `layer_from` and `layer_to` name where a transition went from and to (a
/// breaker's states, a task's statuses, or a host's own layers), for people
/// and log readers; `kind` says what happened, as a type; `data` holds the
/// structured details, usually a JSON object.
///
/// ```
/// use taskstore::{Event, EventKind};
///
/// let event = Event::new("cache.miss")
///     .from_layer("memory")
///     .to_layer("disk")
///     .field("key", "user:42");
/// assert!(matches!(event.kind, EventKind::Host(_)));
/// assert_eq!(event.data["key"], "user:42");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Event {
    /// What happened; written as its name (`"task.completed"`,
    /// `"breaker.opened"`, a host's `"cache.miss"`).
    pub kind: EventKind,
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
    /// A host's `&'static str` kind costs no allocation. A name of one of
    /// the crate's kinds gives that kind (see [`EventKind`]).
    pub fn new(kind: impl Into<EventKind>) -> Event {
        Event {
            kind: kind.into(),
            layer_from: None,
            layer_to: None,
            data: Value::Null,
        }
    }

    /// A task event: `data` carries the task's `taskId`, `status` and
    /// `revision`, and `layer_to` its status. A
    /// [`task.expired`](TaskEventKind::Expired) event's carries when the
    /// task expired too, `expiredAt` (`createdAt` plus `ttlMs`, RFC 3339).
    ///
    /// ```
    /// use std::time::Duration;
    /// use taskstore::{Event, TaskEventKind};
    /// # use taskstore::{MemoryStore, NewTask, TaskStore};
    /// # let store = MemoryStore::new();
    /// # let task = store.create(NewTask::new().ttl(Duration::from_secs(60))).unwrap();
    /// let event = Event::task(TaskEventKind::Created, &task);
    /// assert_eq!(event.kind, TaskEventKind::Created);
    /// assert_eq!(event.data["status"], "working");
    /// assert_eq!(event.data.get("expiredAt"), None);
    /// let event = Event::task(TaskEventKind::Expired, &task);
    /// assert!(event.data["expiredAt"].is_string());
    /// ```
    pub fn task(kind: TaskEventKind, task: &Task) -> Event {
        let mut data = json!({
            "taskId": task.id.as_str(),
            "status": task.status.as_str(),
            "revision": task.revision,
        });
        if kind == TaskEventKind::Expired
            && let Some(at) = task.expires_at()
            && let Ok(at) = at.format(&Rfc3339)
        {
            data[EXPIRED_AT] = Value::String(at);
        }
        Event {
            kind: EventKind::Task(kind),
            layer_from: None,
            layer_to: Some(task.status.as_str().to_owned()),
            data,
        }
    }

    /// A stored task that a store could not read
    /// ([`TaskEventKind::Unreadable`]): `data` carries its `location` (a
    /// path, a key), the `reason` and the `action` taken. Backends add their
    /// own details with [`field`](Event::field).
    ///
    /// ```
    /// use taskstore::{Event, TaskEventKind, UnreadableAction};
    ///
    /// let event = Event::unreadable("/store/active/x.json", "truncated", UnreadableAction::SetAside);
    /// assert_eq!(event.kind, TaskEventKind::Unreadable);
    /// assert_eq!(event.data["action"], "setAside");
    /// ```
    pub fn unreadable(
        location: impl fmt::Display,
        reason: impl fmt::Display,
        action: UnreadableAction,
    ) -> Event {
        Event::new(TaskEventKind::Unreadable).with_data(json!({
            "location": location.to_string(),
            "reason": reason.to_string(),
            "action": action,
        }))
    }

    /// A breaker transition of the breaker named `breaker` out of `from`:
    /// `layer_from` is `from`, `layer_to` the state the transition ends in,
    /// and `data` carries the breaker's name (see
    /// [`breaker_name`](Event::breaker_name)).
    ///
    /// ```
    /// use taskstore::{BreakerEventKind, BreakerState, Event};
    ///
    /// let event = Event::breaker(BreakerEventKind::Opened, "db", BreakerState::Closed);
    /// assert_eq!(event.layer_to.as_deref(), Some("open"));
    /// assert_eq!(event.breaker_name(), Some("db"));
    /// ```
    pub fn breaker(kind: BreakerEventKind, breaker: &str, from: BreakerState) -> Event {
        Event::new(kind)
            .from_layer(from.as_str())
            .to_layer(kind.state_after().as_str())
            .field(BREAKER, breaker)
    }

    /// The making of the breaker named `breaker`
    /// ([`BreakerEventKind::Created`]): `layer_to` is the state it starts
    /// in, and there is no `layer_from`.
    pub(crate) fn breaker_created(breaker: &str) -> Event {
        let kind = BreakerEventKind::Created;
        Event::new(kind)
            .to_layer(kind.state_after().as_str())
            .field(BREAKER, breaker)
    }

    /// When the task of a [`task.expired`](TaskEventKind::Expired) event
    /// expired (see [`task`](Event::task)); `None` for other events.
    ///
    /// ```
    /// use std::time::Duration;
    /// use taskstore::{Event, TaskEventKind};
    /// # use taskstore::{MemoryStore, NewTask, TaskStore};
    /// # let store = MemoryStore::new();
    /// # let task = store.create(NewTask::new().ttl(Duration::from_secs(60))).unwrap();
    /// let event = Event::task(TaskEventKind::Expired, &task);
    /// assert_eq!(event.expired_at(), task.expires_at());
    /// ```
    pub fn expired_at(&self) -> Option<OffsetDateTime> {
        match self.kind {
            EventKind::Task(TaskEventKind::Expired) => {
                OffsetDateTime::parse(self.data.get(EXPIRED_AT)?.as_str()?, &Rfc3339).ok()
            }
            _ => None,
        }
    }

    /// The revision of the task a task event is about (the version its
    /// change made, or the one it found: an expiry, a deletion); `None` for
    /// other events and for `task.unreadable`.
    ///
    /// A store tells its sink after the task's lock is released, so the
    /// events of two threads' writes to one task can arrive in the other
    /// order (a later `task.completed` before the `task.updated` it
    /// followed): a sink that keeps a task's latest state keeps the event
    /// of the highest revision, as one keeps a breaker's by
    /// [`breaker_generation`](Self::breaker_generation). (A task deleted
    /// and made again under its id starts again at 1, with its
    /// `task.created`; each handle tells its own sink of its own writes
    /// alone.)
    pub fn task_revision(&self) -> Option<u64> {
        match self.kind {
            EventKind::Task(TaskEventKind::Unreadable) => None,
            EventKind::Task(_) => self.data.get("revision")?.as_u64(),
            _ => None,
        }
    }

    /// The name of the breaker a breaker event is about; `None` for other
    /// events (and for a breaker event made without one).
    pub fn breaker_name(&self) -> Option<&str> {
        match self.kind {
            EventKind::Breaker(_) => self.data.get(BREAKER)?.as_str(),
            _ => None,
        }
    }

    /// The generation a breaker's transition put it in; `None` for other
    /// events (and for breaker events made without one, by a host).
    ///
    /// A breaker's generations only go up, also across breakers of the same
    /// name in one process. Breakers tell their sinks outside their lock,
    /// so two threads' transitions can arrive in the other order: a sink
    /// that keeps a breaker's latest state keeps the event of the highest
    /// generation, as `MetricsSink` (feature `metrics`) does.
    pub fn breaker_generation(&self) -> Option<u64> {
        match self.kind {
            EventKind::Breaker(_) => self.data.get(GENERATION)?.as_u64(),
            _ => None,
        }
    }

    /// Stamps a breaker event with the generation of its transition.
    pub(crate) fn with_breaker_generation(self, generation: u64) -> Event {
        self.field(GENERATION, generation)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::breaker::{CallOutcome, TripReason};

    #[test]
    fn field_turns_null_into_an_object() {
        let e = Event::new("x").field("a", 1).field("b", "two");
        assert_eq!(e.data, json!({"a": 1, "b": "two"}));
        let e = Event::new("x").with_data(json!(5)).field("a", 1);
        assert_eq!(e.data, json!({"value": 5, "a": 1}));
    }

    #[test]
    fn event_round_trips_through_json() {
        let e =
            Event::breaker(BreakerEventKind::Opened, "db", BreakerState::Closed).field("calls", 10);
        let text = serde_json::to_string(&e).unwrap();
        let back: Event = serde_json::from_str(&text).unwrap();
        assert_eq!(back, e);
        let bare: Event = serde_json::from_str(r#"{"kind":"k"}"#).unwrap();
        assert_eq!(bare, Event::new("k"));
    }

    /// The names of every value of a vocabulary, checked to be distinct and
    /// written alike by `Display` and serde, and read back by serde.
    fn names<T>(all: &[T]) -> Vec<String>
    where
        T: Copy + fmt::Display + fmt::Debug + PartialEq + Serialize + for<'de> Deserialize<'de>,
    {
        let mut names = vec![];
        for &value in all {
            let name = value.to_string();
            assert_eq!(serde_json::to_value(value).unwrap(), json!(name));
            let back: T = serde_json::from_value(json!(name)).unwrap();
            assert_eq!(back, value);
            names.push(name);
        }
        let mut distinct = names.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), names.len(), "{names:?}");
        names
    }

    #[test]
    fn display_and_serde_agree_on_every_name() {
        for name in names(TaskEventKind::all()) {
            assert!(matches!(EventKind::from(name), EventKind::Task(_)));
        }
        for name in names(BreakerEventKind::all()) {
            assert!(matches!(EventKind::from(name), EventKind::Breaker(_)));
        }
        names(BreakerState::all());
        names(CallOutcome::all());
        names(TripReason::all());
        names(UnreadableAction::all());
        assert!(serde_json::from_value::<TaskEventKind>(json!("created")).is_err());
    }

    #[test]
    fn a_name_has_one_kind() {
        for &kind in TaskEventKind::all() {
            let via_name = EventKind::from(kind.as_str());
            assert_eq!(via_name, EventKind::Task(kind));
            let back: EventKind = serde_json::from_value(json!(kind.as_str())).unwrap();
            assert_eq!(back, via_name);
        }
        for name in [
            "task.foo",
            "task.",
            "breaker.open",
            "task.created ",
            "cache.miss",
            "",
        ] {
            let kind = EventKind::from(name);
            assert!(matches!(kind, EventKind::Host(_)), "{name:?}");
            assert_eq!(kind.to_string(), name);
            assert_eq!(EventKind::from(name.to_owned()), kind);
        }
    }

    #[test]
    fn breaker_events_end_where_their_kind_says() {
        for &kind in BreakerEventKind::all() {
            let e = Event::breaker(kind, "db", BreakerState::HalfOpen);
            assert_eq!(e.layer_to.as_deref(), Some(kind.state_after().as_str()));
            assert_eq!(e.breaker_name(), Some("db"));
        }
        assert_eq!(
            Event::new("cache.miss")
                .field("breaker", "db")
                .breaker_name(),
            None
        );
    }
}
