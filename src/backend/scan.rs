//! What a pass asks a backend for and gets back: a [`Scan`] of stored
//! tasks (its [`Scope`], from a [`Position`]), the batch it returns
//! ([`Scanned`]), and the entries it could not read ([`Skipped`]).

use time::OffsetDateTime;

use crate::events::UnreadableAction;
use crate::id::TaskId;
use crate::task::{Task, TaskStatus, come_by};

/// Which stored tasks [`Backend::scan`](super::Backend::scan) returns.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Scan {
    /// Non-terminal tasks only, or all.
    pub scope: Scope,
    /// Only tasks with this status, if set.
    pub status: Option<TaskStatus>,
    /// Only tasks that have expired at this instant (`created_at + ttl` at
    /// or before it), if set.
    pub expired_at: Option<OffsetDateTime>,
    /// Only tasks whose lease has lapsed at this instant (a
    /// `lease_expires_at` at or before it), if set: the candidates of a reap
    /// or a claim, which judge each one again.
    pub lapsed_at: Option<OffsetDateTime>,
    /// Only tasks after this position in listing order, if set.
    pub after: Option<Position>,
    /// Only tasks owned by this instance id ([`owns`](Scan::owns)), if
    /// set: a listing's [`ListQuery::owner`](crate::ListQuery::owner). A
    /// backend may return others too, which its caller leaves out (as the
    /// file and memory backends do); one that filters them where it reads
    /// (PostgreSQL's statement) reads and returns the owner's tasks alone.
    pub owner: Option<String>,
    /// At most this many tasks (at least 1).
    pub limit: usize,
    /// Whether the tasks come whole (the default). `false` asks for them
    /// without what they carry for their host (status message, result,
    /// error, input requests, metadata, the resume state's input and
    /// checkpoint), as [`shaped`](Scan::shaped) gives them: a pass that
    /// needs only which task at which version and in which state (a
    /// sweep, `Store::stored`) then holds a batch whose memory does not
    /// grow with the payloads. A backend may return them whole anyway.
    pub payloads: bool,
    /// Whether the caller goes on to remove what it is returned (a sweep),
    /// `false` by default: a backend may then remember what it read to
    /// spare the removal a second read (the file store's proofs), and
    /// clean up the leftovers it meets, counted in
    /// [`Scanned::cleaned`] (the file store's stale `expiring/` entries).
    /// A scan that removes nothing (a preview) keeps nothing and cleans
    /// nothing: what it leaves, the sweep counts.
    pub removes: bool,
}

impl Scan {
    /// Tasks in `scope`, from the start, `limit` at a time.
    pub fn new(scope: Scope, limit: usize) -> Scan {
        Scan {
            scope,
            status: None,
            expired_at: None,
            lapsed_at: None,
            after: None,
            owner: None,
            limit: limit.max(1),
            payloads: true,
            removes: false,
        }
    }

    /// `task` as this scan asks for it: whole, or without its payloads
    /// (see [`payloads`](Scan::payloads)).
    pub fn shaped(&self, task: &Task) -> Task {
        if self.payloads {
            task.clone()
        } else {
            task.without_payloads()
        }
    }

    /// [`shaped`](Scan::shaped), for a task the caller owns.
    pub fn shape(&self, task: Task) -> Task {
        if self.payloads {
            task
        } else {
            task.without_payloads()
        }
    }

    /// Whether `task` is one this scan asks for (position aside).
    pub fn matches(&self, task: &Task) -> bool {
        self.matches_keys(task.status, task.expires_at(), task.lease_expires_at)
    }

    /// [`matches`](Scan::matches) for a task known by its status, expiry
    /// ([`Task::expires_at`]) and lease expiry alone: for a backend that
    /// filters before it decodes a task whole. The times may be kept in any
    /// type an `OffsetDateTime` converts into that orders as the instants
    /// do (a backend may keep them smaller).
    pub fn matches_keys<T: From<OffsetDateTime> + PartialOrd>(
        &self,
        status: TaskStatus,
        expires_at: Option<T>,
        lease_expires_at: Option<T>,
    ) -> bool {
        self.keys_matcher()(status, expires_at, lease_expires_at)
    }

    /// [`matches_keys`](Scan::matches_keys), with the scan's times
    /// converted once, for a backend that filters many tasks.
    pub(crate) fn keys_matcher<'a, T: From<OffsetDateTime> + PartialOrd + 'a>(
        &'a self,
    ) -> impl Fn(TaskStatus, Option<T>, Option<T>) -> bool + 'a {
        let expired_at = self.expired_at.map(T::from);
        let lapsed_at = self.lapsed_at.map(T::from);
        move |status, expires_at, lease_expires_at| {
            (self.scope == Scope::All || !status.is_terminal())
                && self.status.is_none_or(|s| s == status)
                && expired_at
                    .as_ref()
                    .is_none_or(|at| come_by(expires_at.as_ref(), at))
                && lapsed_at
                    .as_ref()
                    .is_none_or(|at| come_by(lease_expires_at.as_ref(), at))
        }
    }

    /// Whether `task` is owned as this scan asks ([`owner`](Scan::owner)):
    /// the one place that says what an owner filter matches.
    pub fn owns(&self, task: &Task) -> bool {
        self.owner
            .as_deref()
            .is_none_or(|owner| task.owner.as_deref() == Some(owner))
    }

    /// Whether `task` comes after this scan's position.
    pub fn is_after(&self, task: &Task) -> bool {
        self.after.as_ref().is_none_or(|p| p.is_before(task))
    }
}

/// The stored tasks a [`Scan`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scope {
    /// Non-terminal tasks only. Its cost must follow the number of such
    /// tasks, never history.
    Active,
    /// Every stored task.
    All,
}

/// A position in listing order: (`created_at`, id).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// The task's creation time.
    pub created_at: OffsetDateTime,
    /// The task's id.
    pub id: TaskId,
}

impl Position {
    /// The position of `task`.
    pub fn of(task: &Task) -> Position {
        Position {
            created_at: task.created_at,
            id: task.id.clone(),
        }
    }

    /// Whether `task` comes strictly after this position.
    pub fn is_before(&self, task: &Task) -> bool {
        (&self.created_at, &self.id) < (&task.created_at, &task.id)
    }
}

/// One batch of a [`Backend::scan`](super::Backend::scan).
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Scanned {
    /// The tasks, in listing order.
    pub tasks: Vec<Task>,
    /// Stored entries that could not be read, left out of `tasks`.
    pub skipped: Vec<Skipped>,
    /// Leftovers of crashed writers the scan removed as it met them (a
    /// file store's `expiring/` entries whose tasks a killed sweep had
    /// removed); a sweep counts them in
    /// [`Swept::cleaned`](crate::Swept::cleaned). [`new`](Scanned::new)
    /// makes it 0.
    pub cleaned: usize,
}

impl Scanned {
    /// A batch of `tasks` (in listing order) and `skipped` entries, that
    /// cleaned nothing up.
    pub fn new(tasks: Vec<Task>, skipped: Vec<Skipped>) -> Scanned {
        Scanned {
            tasks,
            skipped,
            cleaned: 0,
        }
    }
}

/// A stored entry a scan could not read: reported, never silently dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Skipped {
    /// The task it belongs to, if its name says.
    pub id: Option<TaskId>,
    /// Where it is: a path, or a backend's key.
    pub location: String,
    /// What is wrong with it.
    pub reason: String,
    /// What the backend did with it.
    pub action: UnreadableAction,
    /// Where it was moved, if it was set aside.
    pub moved_to: Option<String>,
}

impl Skipped {
    /// An entry at `location` that could not be read for `reason`.
    pub fn new(
        id: Option<TaskId>,
        location: impl Into<String>,
        reason: impl Into<String>,
        action: UnreadableAction,
    ) -> Skipped {
        Skipped {
            id,
            location: location.into(),
            reason: reason.into(),
            action,
            moved_to: None,
        }
    }

    /// The same, set aside at `place`.
    pub fn moved_to(mut self, place: impl Into<String>) -> Skipped {
        self.moved_to = Some(place.into());
        self
    }

    /// The `task.unreadable` event that reports it: `location`, `reason`
    /// and `action`, with `taskId` and `movedTo` when known.
    pub fn to_event(&self) -> crate::Event {
        let mut event = crate::Event::unreadable(&self.location, &self.reason, self.action);
        if let Some(id) = &self.id {
            event = event.field("taskId", id.as_str());
        }
        if let Some(place) = &self.moved_to {
            event = event.field("movedTo", place.as_str());
        }
        event
    }

    /// The entry a `task.unreadable` event reports
    /// ([`to_event`](Skipped::to_event)); `None` for any other event, or
    /// one without a location.
    pub fn from_event(event: &crate::Event) -> Option<Skipped> {
        use serde_json::Value;
        if event.kind != crate::TaskEventKind::Unreadable {
            return None;
        }
        let field = |name: &str| event.data.get(name).and_then(Value::as_str);
        let action = event
            .data
            .get("action")
            .and_then(|a| serde_json::from_value(a.clone()).ok())
            .unwrap_or(UnreadableAction::LeftInPlace);
        Some(Skipped {
            id: field("taskId").and_then(|id| TaskId::parse(id).ok()),
            location: field("location")?.to_owned(),
            reason: field("reason").unwrap_or_default().to_owned(),
            action,
            moved_to: field("movedTo").map(str::to_owned),
        })
    }
}

/// Adds the entries a batch of a pass skipped to the pass's, each location
/// once (a backend reports an entry it left in place in every batch that
/// meets it, as a file store does every file of `active/` it could not
/// read); returns those new to the pass.
pub(crate) fn join_skipped(pass: &mut Vec<Skipped>, batch: Vec<Skipped>) -> &[Skipped] {
    let start = pass.len();
    // Few entries are skipped as a rule: a look through them costs less
    // than a set built for the batch. Many (a directory full of junk the
    // quarantine has no room for) take a set, or each listing would cost
    // the square of the junk.
    if pass.len() + batch.len() <= 32 {
        for entry in batch {
            if !pass.iter().any(|kept| kept.location == entry.location) {
                pass.push(entry);
            }
        }
    } else {
        let mut seen: std::collections::HashSet<String> =
            pass.iter().map(|kept| kept.location.clone()).collect();
        for entry in batch {
            if seen.insert(entry.location.clone()) {
                pass.push(entry);
            }
        }
    }
    &pass[start..]
}
