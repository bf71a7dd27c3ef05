//! The backend trait, its outcomes, and list queries.

use std::sync::Arc;

use serde_json::Value;
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::id::TaskId;
use crate::task::{NewTask, Outcome, Task, TaskStatus, TaskUpdate};

/// A task store backend.
///
/// Every backend keeps the invariants in the crate docs (atomic, first writer
/// wins, no lost updates, TTL from creation, bounded) and passes the shared
/// conformance suite (`taskstore::conformance`, feature `conformance`). The
/// trait is object safe: hosts hold an `Arc<dyn TaskStore>`.
pub trait TaskStore: Send + Sync {
    /// Creates a `working` task and returns it.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyExists`] for a taken host-chosen id,
    /// [`Error::TooManyActive`] at the active-task cap,
    /// [`Error::PayloadTooLarge`] over the payload cap; nothing is changed.
    fn create(&self, new: NewTask) -> Result<Task>;

    /// The task, or `Ok(None)` if it is missing or expired.
    fn get(&self, id: &TaskId) -> Result<Option<Task>>;

    /// Applies a non-terminal update. A terminal task is returned untouched as
    /// [`Transition::AlreadyTerminal`].
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a missing or expired task,
    /// [`Error::TerminalStatusInUpdate`] if the update asks for a terminal status.
    fn update(&self, id: &TaskId, update: TaskUpdate) -> Result<Transition>;

    /// Moves the task to a terminal state, unless one was reached first: then
    /// the existing task is returned untouched as [`Transition::AlreadyTerminal`].
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a missing or expired task.
    fn finish(&self, id: &TaskId, outcome: Outcome) -> Result<Transition>;

    /// One page of tasks, ordered by `created_at`, then id.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidCursor`] for a cursor this store did not hand out.
    fn list(&self, query: &ListQuery) -> Result<Page>;

    /// Deletes the task; `true` if a live (unexpired) task was deleted.
    fn delete(&self, id: &TaskId) -> Result<bool>;

    /// Deletes every expired task, active and terminal alike, and cleans up
    /// what crashed writers left behind. Returns how many tasks were deleted.
    fn sweep_expired(&self) -> Result<usize>;

    /// This handle's instance id: the owner recorded on the tasks it creates.
    fn instance_id(&self) -> &str;

    /// Renews this instance's lease on one running task. A terminal task is
    /// returned untouched as [`Transition::AlreadyTerminal`].
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a missing or expired task, [`Error::NotOwner`]
    /// if another instance owns it.
    fn renew_lease(&self, id: &TaskId) -> Result<Transition>;

    /// Fails every running task whose lease has lapsed with a structured
    /// error (`{"code": "orphaned", "owner": ..}`) and returns those tasks.
    ///
    /// Returned in listing order (`created_at`, then id). Reads active tasks
    /// only. Safe at any moment, from any process, beside
    /// live traffic: each orphan is re-checked under its lock, and first
    /// writer wins decides every race with its owner.
    fn reap_orphans(&self) -> Result<Vec<Task>>;

    /// Renews the lease of every running task this instance owns; returns how
    /// many were renewed. Call it well within the lease duration.
    fn renew_leases(&self) -> Result<usize> {
        let mut renewed = 0;
        for task in self.list(&ListQuery::active())?.tasks {
            if task.owner.as_deref() != Some(self.instance_id()) {
                continue;
            }
            match self.renew_lease(&task.id) {
                Ok(t) if t.is_applied() => renewed += 1,
                // Finished, deleted or expired since it was listed.
                Ok(_) | Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(renewed)
    }

    /// Completes the task with `result` (first writer wins).
    fn complete(&self, id: &TaskId, result: Value) -> Result<Transition> {
        self.finish(id, Outcome::Completed(result))
    }

    /// Fails the task with `error` (first writer wins).
    fn fail(&self, id: &TaskId, error: Value) -> Result<Transition> {
        self.finish(id, Outcome::Failed(error))
    }

    /// Cancels the task, with an optional status message (first writer wins).
    fn cancel(&self, id: &TaskId, message: Option<String>) -> Result<Transition> {
        self.finish(id, Outcome::Cancelled(message))
    }
}

macro_rules! forward_task_store {
    ($($ty:ty),*) => {$(
        impl<T: TaskStore + ?Sized> TaskStore for $ty {
            fn create(&self, new: NewTask) -> Result<Task> {
                (**self).create(new)
            }
            fn get(&self, id: &TaskId) -> Result<Option<Task>> {
                (**self).get(id)
            }
            fn update(&self, id: &TaskId, update: TaskUpdate) -> Result<Transition> {
                (**self).update(id, update)
            }
            fn finish(&self, id: &TaskId, outcome: Outcome) -> Result<Transition> {
                (**self).finish(id, outcome)
            }
            fn list(&self, query: &ListQuery) -> Result<Page> {
                (**self).list(query)
            }
            fn delete(&self, id: &TaskId) -> Result<bool> {
                (**self).delete(id)
            }
            fn sweep_expired(&self) -> Result<usize> {
                (**self).sweep_expired()
            }
            fn instance_id(&self) -> &str {
                (**self).instance_id()
            }
            fn renew_lease(&self, id: &TaskId) -> Result<Transition> {
                (**self).renew_lease(id)
            }
            fn reap_orphans(&self) -> Result<Vec<Task>> {
                (**self).reap_orphans()
            }
            fn renew_leases(&self) -> Result<usize> {
                (**self).renew_leases()
            }
        }
    )*};
}

forward_task_store!(Arc<T>, Box<T>);

/// What a mutation did.
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub enum Transition {
    /// The change was applied; this is the task as written.
    Applied(Task),
    /// The task had already reached a terminal state (the first writer won
    /// earlier); nothing was changed. This is the task as it stands.
    AlreadyTerminal(Task),
}

impl Transition {
    /// The task, either way.
    pub fn task(&self) -> &Task {
        match self {
            Transition::Applied(t) | Transition::AlreadyTerminal(t) => t,
        }
    }

    /// The task, either way, by value.
    pub fn into_task(self) -> Task {
        match self {
            Transition::Applied(t) | Transition::AlreadyTerminal(t) => t,
        }
    }

    /// Whether this call's change was applied.
    pub fn is_applied(&self) -> bool {
        matches!(self, Transition::Applied(_))
    }
}

/// Which tasks [`TaskStore::list`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct ListQuery {
    active_only: bool,
    status: Option<TaskStatus>,
    limit: Option<usize>,
    after: Option<String>,
}

impl ListQuery {
    /// Every live task, terminal ones included (reads history).
    pub fn all() -> ListQuery {
        ListQuery {
            active_only: false,
            status: None,
            limit: None,
            after: None,
        }
    }

    /// Non-terminal tasks only: its cost follows the number of active tasks,
    /// never history.
    pub fn active() -> ListQuery {
        ListQuery {
            active_only: true,
            ..ListQuery::all()
        }
    }

    /// Only tasks with this status.
    pub fn status(mut self, status: TaskStatus) -> ListQuery {
        self.status = Some(status);
        self
    }

    /// At most `limit` tasks per page (unlimited by default).
    pub fn limit(mut self, limit: usize) -> ListQuery {
        self.limit = Some(limit);
        self
    }

    /// Continues after a [`Page::next_cursor`].
    pub fn after(mut self, cursor: &str) -> ListQuery {
        self.after = Some(cursor.to_owned());
        self
    }

    /// Whether a task of this status can match (decides which areas to read).
    pub(crate) fn wants(&self, status: TaskStatus) -> bool {
        !(self.active_only && status.is_terminal()) && self.status.is_none_or(|s| s == status)
    }

    /// Whether any terminal task can match: if not, history is never read.
    pub(crate) fn wants_terminal(&self) -> bool {
        [
            TaskStatus::Completed,
            TaskStatus::Failed,
            TaskStatus::Cancelled,
        ]
        .into_iter()
        .any(|s| self.wants(s))
    }

    /// Whether any non-terminal task can match.
    pub(crate) fn wants_active(&self) -> bool {
        [TaskStatus::Working, TaskStatus::InputRequired]
            .into_iter()
            .any(|s| self.wants(s))
    }

    /// The decoded cursor, checked before any work is done.
    pub(crate) fn cursor(&self) -> Result<Option<Cursor>> {
        self.after.as_deref().map(Cursor::decode).transpose()
    }

    /// Orders the matching live tasks and cuts one page.
    ///
    /// `tasks` may hold anything the backend read; filtering by status, expiry
    /// and cursor happens here so every backend pages identically.
    pub(crate) fn page(&self, mut tasks: Vec<Task>, now: OffsetDateTime) -> Result<Page> {
        let cursor = self.cursor()?;
        tasks.retain(|t| {
            self.wants(t.status)
                && !t.is_expired_at(now)
                && cursor.as_ref().is_none_or(|c| c.is_before(t))
        });
        tasks.sort_by(Task::listing_order);
        let next_cursor = match self.limit {
            Some(limit) if tasks.len() > limit => {
                tasks.truncate(limit);
                tasks.last().map(|t| Cursor::after(t).encode())
            }
            _ => None,
        };
        Ok(Page { tasks, next_cursor })
    }
}

/// One page of a listing.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Page {
    /// The tasks, ordered by `created_at`, then id.
    pub tasks: Vec<Task>,
    /// Pass to [`ListQuery::after`] for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// A position in the (`created_at`, id) order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cursor {
    created_at_ns: i128,
    id: TaskId,
}

impl Cursor {
    const PREFIX: &'static str = "c1.";

    fn after(task: &Task) -> Cursor {
        Cursor {
            created_at_ns: task.created_at.unix_timestamp_nanos(),
            id: task.id.clone(),
        }
    }

    fn is_before(&self, task: &Task) -> bool {
        (self.created_at_ns, &self.id) < (task.created_at.unix_timestamp_nanos(), &task.id)
    }

    fn encode(&self) -> String {
        format!("{}{}.{}", Cursor::PREFIX, self.created_at_ns, self.id)
    }

    fn decode(raw: &str) -> Result<Cursor> {
        let invalid = || Error::InvalidCursor {
            cursor: raw.chars().take(200).collect(),
        };
        let rest = raw.strip_prefix(Cursor::PREFIX).ok_or_else(invalid)?;
        let (nanos, id) = rest.split_once('.').ok_or_else(invalid)?;
        let created_at_ns: i128 = nanos.parse().map_err(|_| invalid())?;
        OffsetDateTime::from_unix_timestamp_nanos(created_at_ns).map_err(|_| invalid())?;
        let id = TaskId::parse(id).map_err(|_| invalid())?;
        Ok(Cursor { created_at_ns, id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let c = Cursor {
            created_at_ns: 1_700_000_000_123_456_789,
            id: TaskId::parse("a.b.c").unwrap(),
        };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        for bad in [
            "",
            "c1.",
            "c1.12",
            "c1.x.abc",
            "c2.1.abc",
            "c1.1./x",
            "c1.99999999999999999999999999999.a",
        ] {
            assert!(
                matches!(Cursor::decode(bad), Err(Error::InvalidCursor { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn query_scopes() {
        assert!(!ListQuery::active().wants_terminal());
        assert!(ListQuery::all().wants_terminal());
        assert!(
            !ListQuery::all()
                .status(TaskStatus::Working)
                .wants_terminal()
        );
        assert!(!ListQuery::all().status(TaskStatus::Failed).wants_active());
        assert!(
            !ListQuery::active()
                .status(TaskStatus::Failed)
                .wants_active()
        );
    }
}
