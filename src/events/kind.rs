//! [`EventKind`]: what an event is, as a type.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::events::breaker::BreakerEventKind;
use crate::events::task::TaskEventKind;

/// What an event is: one of the crate's own kinds, or a host's.
///
/// Each kind has one name, written by `Display` and serde alike: the
/// crate's are dotted (`"task.created"`, `"breaker.opened"`), a host's is
/// whatever the host chose. Converting a name ([`From<&'static str>`],
/// [`From<String>`], or deserializing) gives the crate's kind if the name
/// is one of the crate's, and a [`HostKind`] otherwise, so a name has
/// exactly one `EventKind` and a host event named `"task.foo"` is not a
/// task event.
///
/// ```
/// use taskstore::{BreakerEventKind, EventKind, TaskEventKind};
///
/// assert_eq!(EventKind::from("task.created"), TaskEventKind::Created);
/// assert_eq!(EventKind::from(BreakerEventKind::Opened).to_string(), "breaker.opened");
/// let host = EventKind::from("task.foo");
/// assert!(matches!(host, EventKind::Host(_)));
/// assert_eq!(host.to_string(), "task.foo");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// Something happened to a task (emitted by the stores).
    Task(TaskEventKind),
    /// A breaker changed state (emitted by the breakers).
    Breaker(BreakerEventKind),
    /// A host's own kind.
    Host(HostKind),
}

/// The name of a host's own event kind: any name that is not one of the
/// crate's kinds. Made by converting a name into an [`EventKind`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostKind(Cow<'static, str>);

impl HostKind {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HostKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl EventKind {
    /// Its name, as `Display` and serde write it.
    pub fn as_str(&self) -> &str {
        match self {
            EventKind::Task(kind) => kind.as_str(),
            EventKind::Breaker(kind) => kind.as_str(),
            EventKind::Host(kind) => kind.as_str(),
        }
    }

    /// The kind named `name`: the crate's if it is one of its names, else a
    /// host's.
    fn named(name: Cow<'static, str>) -> EventKind {
        if let Some(kind) = EventKind::crate_kind(&name) {
            return kind;
        }
        EventKind::Host(HostKind(name))
    }

    /// The crate's kind of that exact name, if any.
    fn crate_kind(name: &str) -> Option<EventKind> {
        TaskEventKind::from_name(name)
            .map(EventKind::Task)
            .or_else(|| BreakerEventKind::from_name(name).map(EventKind::Breaker))
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<TaskEventKind> for EventKind {
    fn from(kind: TaskEventKind) -> EventKind {
        EventKind::Task(kind)
    }
}

impl From<BreakerEventKind> for EventKind {
    fn from(kind: BreakerEventKind) -> EventKind {
        EventKind::Breaker(kind)
    }
}

/// Without an allocation.
impl From<&'static str> for EventKind {
    fn from(name: &'static str) -> EventKind {
        EventKind::named(Cow::Borrowed(name))
    }
}

impl From<String> for EventKind {
    fn from(name: String) -> EventKind {
        EventKind::named(Cow::Owned(name))
    }
}

impl From<Cow<'static, str>> for EventKind {
    fn from(name: Cow<'static, str>) -> EventKind {
        EventKind::named(name)
    }
}

impl PartialEq<TaskEventKind> for EventKind {
    fn eq(&self, other: &TaskEventKind) -> bool {
        matches!(self, EventKind::Task(kind) if kind == other)
    }
}

impl PartialEq<BreakerEventKind> for EventKind {
    fn eq(&self, other: &BreakerEventKind) -> bool {
        matches!(self, EventKind::Breaker(kind) if kind == other)
    }
}

impl Serialize for EventKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<EventKind, D::Error> {
        String::deserialize(deserializer).map(EventKind::from)
    }
}
