//! The stores' vocabulary, as the events and sinks need it: what happened to
//! a task, and what a store did with a task it could not read.

use crate::events::names::named;
use crate::task::TaskStatus;

/// What happened to a task: the `kind` of the events a store emits
/// ([`EventKind::Task`](crate::EventKind::Task)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
    /// A task was found expired (its TTL from creation passed) and deleted.
    Expired,
    /// A task was deleted.
    Deleted,
    /// A stored task could not be read (corrupt, or of an unknown format);
    /// see [`Event::unreadable`](crate::Event::unreadable).
    Unreadable,
    /// An orphaned task (its owner's lease lapsed) was failed by the reaper.
    Reaped,
    /// A resumable orphan was claimed by a new owner, to resume it.
    Claimed,
}

named!(TaskEventKind {
    Created => "task.created",
    Updated => "task.updated",
    Completed => "task.completed",
    Failed => "task.failed",
    Cancelled => "task.cancelled",
    Expired => "task.expired",
    Deleted => "task.deleted",
    Unreadable => "task.unreadable",
    Reaped => "task.reaped",
    Claimed => "task.claimed",
});

impl TaskEventKind {
    /// The event of an applied write that left a task in `status`: the
    /// terminal status it reached, or [`Updated`](TaskEventKind::Updated).
    ///
    /// ```
    /// use taskstore::{TaskEventKind, TaskStatus};
    ///
    /// assert_eq!(TaskEventKind::for_status(TaskStatus::Failed), TaskEventKind::Failed);
    /// assert_eq!(TaskEventKind::for_status(TaskStatus::InputRequired), TaskEventKind::Updated);
    /// ```
    pub const fn for_status(status: TaskStatus) -> TaskEventKind {
        match status {
            TaskStatus::Completed => TaskEventKind::Completed,
            TaskStatus::Failed => TaskEventKind::Failed,
            TaskStatus::Cancelled => TaskEventKind::Cancelled,
            TaskStatus::Working | TaskStatus::InputRequired => TaskEventKind::Updated,
        }
    }
}

/// What a store did with a stored task it could not read: the `action` in
/// the data of an [`Unreadable`](TaskEventKind::Unreadable) event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UnreadableAction {
    /// Moved out of the way (the file backend's `quarantine/`), never
    /// deleted: it no longer hides or blocks the other tasks.
    SetAside,
    /// Left where it is, for example because the error may pass (an I/O
    /// error); it is skipped for now and met again on the next read.
    LeftInPlace,
}

named!(UnreadableAction {
    SetAside => "setAside",
    LeftInPlace => "leftInPlace",
});
