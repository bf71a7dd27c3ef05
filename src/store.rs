//! The trait hosts hold, and what its calls report.

use std::sync::Arc;

use serde_json::Value;

use crate::backend::Skipped;
use crate::changes::ChangeFeed;
use crate::error::{Error, Result};
use crate::id::TaskId;
use crate::query::{ListQuery, Page};
use crate::task::{NewTask, Outcome, Task, TaskUpdate};

/// A task store, as hosts hold it: an `Arc<dyn TaskStore>`.
///
/// [`Store`](crate::Store) implements it once, with the store's rules, over
/// any [`Backend`](crate::backend::Backend): [`FileStore`](crate::FileStore)
/// and [`MemoryStore`](crate::MemoryStore) are such stores. Every store keeps
/// the invariants in the crate docs (atomic, first writer wins, no lost
/// updates, TTL from creation, bounded) and passes the shared conformance
/// suite (`taskstore::conformance`, feature `conformance`).
pub trait TaskStore: Send + Sync {
    /// Creates a `working` task and returns it.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyExists`] for a taken host-chosen id,
    /// [`Error::TooManyActive`] at the active-task cap,
    /// [`Error::PayloadTooLarge`] over the payload cap,
    /// [`Error::InvalidTask`] for a TTL under a millisecond, or a task that
    /// would be expired the instant it is made (a clock at the end of
    /// time), [`Error::ReservedMetadata`] for a metadata key beginning
    /// with `mcp.` (the MCP task manager's); nothing is changed. An I/O or backend error: the stores of this crate remove
    /// what the failed write may have stored, so that no task is left
    /// (unless that removal fails too).
    fn create(&self, new: NewTask) -> Result<Task>;

    /// The task, or `Ok(None)` if it is missing or expired.
    fn get(&self, id: &TaskId) -> Result<Option<Task>>;

    /// [`get`](TaskStore::get), if this store can answer without waiting on
    /// a disk, a network or a lock held across either: `None` when it
    /// cannot (then call `get`), `Some(None)` for a missing task. An
    /// answer is what `get` would return at this instant, with every
    /// freshness guarantee of `get`; an expired task is left to `get`
    /// (`None`), which deletes it. A `MemoryStore` answers for every other; a
    /// `FileStore` answers for a running task its snapshot holds while no
    /// change notice is pending (a `get` that opens no file); a `PgStore`
    /// never does. The default never does.
    fn try_get(&self, id: &TaskId) -> Option<Option<Task>> {
        let _ = id;
        None
    }

    /// [`get`](TaskStore::get) of each of `ids`: one result per id, in
    /// order, each what `get` of it returns. The stores of this crate read
    /// them together (a `PgStore` in one statement, not a round trip per
    /// task); the default gets one at a time. A host that looks at many
    /// tasks at once (the MCP manager, at each tick, at the runs it does
    /// not renew) calls this.
    fn get_all(&self, ids: &[TaskId]) -> Vec<Result<Option<Task>>> {
        ids.iter().map(|id| self.get(id)).collect()
    }

    /// Applies a non-terminal update. A terminal task is returned untouched as
    /// [`Transition::AlreadyTerminal`].
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a missing or expired task,
    /// [`Error::TerminalStatusInUpdate`] if the update asks for a terminal status,
    /// [`Error::ReservedMetadata`] if it sets a metadata key beginning with
    /// `mcp.` (the MCP task manager's; nothing is changed).
    fn update(&self, id: &TaskId, update: TaskUpdate) -> Result<Transition>;

    /// Moves the task to a terminal state, unless one was reached first: then
    /// the existing task is returned untouched as [`Transition::AlreadyTerminal`].
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a missing or expired task.
    fn finish(&self, id: &TaskId, outcome: Outcome) -> Result<Transition>;

    /// [`finish`](TaskStore::finish), only while the task is still at owner
    /// `epoch` and this handle's (its instance id and open): once another
    /// owner has claimed it, or this handle released it, the outcome is
    /// refused as [`Transition::Fenced`] and changes nothing.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a missing or expired task.
    fn finish_fenced(&self, id: &TaskId, outcome: Outcome, epoch: u64) -> Result<Transition>;

    /// One page of tasks, ordered by `created_at`, then id. Stored entries
    /// that cannot be read are left out and reported in [`Page::skipped`].
    /// Expired tasks are left out too, and the ones the listing meets are
    /// deleted, as a sweep would (so that no clock stepped back brings them
    /// back for another handle).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidCursor`] for a cursor that does not decode (a
    /// well-formed one is a position, whoever handed it out: [`ListQuery::after`]),
    /// [`Error::InvalidQuery`] for `limit(0)`.
    fn list(&self, query: &ListQuery) -> Result<Page>;

    /// Deletes the task; `true` if a live (unexpired) task was deleted.
    fn delete(&self, id: &TaskId) -> Result<bool>;

    /// Deletes every expired task, active and terminal alike, and cleans up
    /// what crashed writers left behind. A task that cannot be deleted, or
    /// an entry that cannot be read, is reported and the sweep goes on.
    ///
    /// The deletions are durable when it returns `Ok` with no
    /// [`errors`](Swept::errors), made so once for the whole pass: a power
    /// loss before that may bring back tasks already deleted, still expired
    /// (unless the clock is then set back before their expiry), so seen by no
    /// reader; the next sweep deletes them again. The sink hears of each
    /// (`task.expired`) once the pass has made them durable (or failed to:
    /// they are gone for every reader), with no lock of the store held; a pass
    /// that deletes more than 10,000 tells of the rest as it goes, so that its
    /// memory stays bounded.
    ///
    /// # Errors
    ///
    /// A failure of the pass as a whole (its clean-up, over PostgreSQL the
    /// check of the active-task counter; listing; making its deletions
    /// durable, which the next sweep does then), when the pass did nothing
    /// else: one that deleted or cleaned anything, or has a task missed or
    /// an entry skipped to report, returns it in [`Swept::errors`] beside
    /// its counts, so that no failure hides what was deleted.
    fn sweep(&self) -> Result<Swept>;

    /// This handle's instance id: the owner recorded on the tasks it creates.
    fn instance_id(&self) -> &str;

    /// How long this handle's leases last, if the store says (the stores of
    /// this crate do; the default is `None`). A host renews well within it.
    fn lease(&self) -> Option<std::time::Duration> {
        None
    }

    /// The time this handle's TTLs go by, and every write stamps (the
    /// stores of this crate: their clock, a database server's for
    /// `PgStore`, never earlier than a time the handle read before; the
    /// default is the system clock). Another owner's lease is judged by
    /// [`lease_now`](TaskStore::lease_now).
    fn now(&self) -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc()
    }

    /// The time another owner's lease is judged lapsed by (what
    /// [`reap`](TaskStore::reap) fails and [`claim`](TaskStore::claim)
    /// takes over): what the clock reads now. Never later than
    /// [`now`](TaskStore::now), and earlier only after the clock was set
    /// back (a step forward set right: `now` stays at the latest time the
    /// handle read, while owners whose handles never read the step renew
    /// from the right time, and judged by `now` their leases would look
    /// lapsed). A host that judges a lease itself, to decide whether to ask
    /// for a reap ([`Task::is_orphan_at`]), compares against this. The
    /// default is [`now`](TaskStore::now).
    fn lease_now(&self) -> time::OffsetDateTime {
        self.now()
    }

    /// The time a lease this handle wrote now would run from (a create's, a
    /// renewal's, a claim's): [`now`](TaskStore::now), but later while the
    /// clock reads behind the time that went by (stepped back and not yet
    /// set right): then the stores of this crate carry the latest time the
    /// clock read on by its monotonic clock ([`Clock::monotonic`]), where
    /// `now` stands still, so that a live owner's leases are live when the
    /// clock is set right. A host that works out how long ago a lease of
    /// its own was granted (as the MCP manager does, to time its renewals)
    /// goes by this. The default is [`now`](TaskStore::now).
    ///
    /// [`Clock::monotonic`]: crate::Clock::monotonic
    fn lease_from(&self) -> time::OffsetDateTime {
        self.now()
    }

    /// Renews this instance's lease on one running task. A terminal task is
    /// returned untouched as [`Transition::AlreadyTerminal`].
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a missing or expired task, [`Error::NotOwner`]
    /// if another instance owns it.
    fn renew_lease(&self, id: &TaskId) -> Result<Transition>;

    /// Gives up this handle's lease on a running task it owns at owner
    /// `epoch`, so that another instance may claim it at once
    /// ([`claim`](TaskStore::claim)) instead of after the lease: the lease
    /// lapses now (the revision goes up; `lastUpdatedAt` stays). For a host
    /// that stops gracefully with resumable work under way. A task that is
    /// not resumable is reaped as orphaned by the next reap.
    ///
    /// Fenced like every owner write: once the task has left `epoch` it is
    /// refused as [`Transition::Fenced`]; a terminal task is returned
    /// untouched as [`Transition::AlreadyTerminal`].
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a missing or expired task, [`Error::NotOwner`]
    /// if this handle does not own it.
    fn release(&self, id: &TaskId, epoch: u64) -> Result<Transition>;

    /// Fails every running task whose lease has lapsed with a structured
    /// error (`{"code": "orphaned", "owner": ..}`) and returns those tasks,
    /// in listing order (`created_at`, then id), with what it could not reap.
    ///
    /// Reads active tasks only. Safe at any moment, from any process, beside
    /// live traffic: each orphan is failed only if it is still the version
    /// that was judged an orphan, and first writer wins decides every race
    /// with its owner. One orphan's failure never stops the pass.
    ///
    /// An orphan's failed version keeps everything it held (its resume
    /// state and input requests give way to the error), even at the payload
    /// cap: the store's own writes may go [`OWN_HEADROOM`](crate::OWN_HEADROOM)
    /// past it, and an orphan error always fits there. So an orphan is
    /// always reaped.
    fn reap(&self) -> Result<Reaped>;

    /// Claims every resumable orphan whose kind is in `kinds`, so that this
    /// handle resumes it: a new owner epoch, this handle as owner, a fresh
    /// lease. Returns the tasks claimed (in listing order), with what it
    /// could not claim. Every write of an earlier epoch is refused from then
    /// on, and only this handle renews the lease.
    ///
    /// Safe at any moment, from any process or host: each orphan is claimed
    /// only if it is still the version judged an orphan, so exactly one
    /// claimer wins it. A resumable orphan left unclaimed for the reaper's
    /// claim grace, or out of attempts, is failed by [`reap`](TaskStore::reap).
    fn claim(&self, kinds: &[&str]) -> Result<Claimed>;

    /// [`sweep`](TaskStore::sweep), counting the tasks deleted; a failure
    /// of its pass (the first of [`Swept::errors`]) is this call's error,
    /// whatever it deleted: a count alone cannot say it.
    fn sweep_expired(&self) -> Result<usize> {
        let swept = self.sweep()?;
        match swept.errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(swept.deleted),
        }
    }

    /// [`reap`](TaskStore::reap), returning the tasks reaped.
    fn reap_orphans(&self) -> Result<Vec<Task>> {
        Ok(self.reap()?.tasks)
    }

    /// Fails task `id` if it is an orphan that [`reap`](TaskStore::reap)
    /// would fail now, by the same rule and with the same error, and
    /// returns it as failed; `Ok(None)` if it is not one (its lease is
    /// live, it is resumable and waits for a claim, it is finished, missing
    /// or expired). For a host that met one orphan (a client's poll) and
    /// must not pay for a pass over every running task: the stores of this
    /// crate read and write that task alone. The default runs
    /// [`reap`](TaskStore::reap) and picks the task out of what it reaped.
    ///
    /// # Errors
    ///
    /// An I/O or backend error reading or writing the task.
    fn reap_task(&self, id: &TaskId) -> Result<Option<Task>> {
        Ok(self.reap()?.tasks.into_iter().find(|task| &task.id == id))
    }

    /// Renews the lease of every running task this handle owns (its
    /// instance id and open) and returns the tasks renewed (in listing
    /// order), with what it could not renew and the expired tasks it met
    /// (and deleted, as a sweep would). Call it well within the lease
    /// duration.
    ///
    /// A task that cannot be renewed keeps no other from being renewed:
    /// it is reported in [`Pass::missed`] and the pass goes on, so that a
    /// failure never hides what was renewed. A task finished, deleted or
    /// expired since it was listed, or another open's of this instance id
    /// (a process before a restart), is not this handle's to renew and is
    /// passed by.
    ///
    /// # Errors
    ///
    /// The listing's: the pass renewed nothing then.
    fn renew(&self) -> Result<Renewed> {
        let page = self.list(&ListQuery::active())?;
        let mut renewed = Renewed {
            skipped: page.skipped,
            ..Renewed::default()
        };
        for task in page.tasks {
            if task.owner.as_deref() != Some(self.instance_id()) {
                continue;
            }
            match self.renew_lease(&task.id) {
                Ok(Transition::Applied(task)) => renewed.tasks.push(task),
                Ok(_) | Err(Error::NotFound { .. } | Error::NotOwner { .. }) => {}
                Err(error) => renewed.missed.push(Missed { id: task.id, error }),
            }
        }
        Ok(renewed)
    }

    /// [`renew`](TaskStore::renew), counting the leases renewed; a task it
    /// could not renew (the first of [`Pass::missed`]) is this call's
    /// error, whatever it renewed: a count alone cannot say it.
    ///
    /// # Errors
    ///
    /// The listing's error, or the first renewal that failed; a task that
    /// cannot be renewed keeps no other from being renewed (the pass
    /// renews the rest first).
    fn renew_leases(&self) -> Result<usize> {
        let renewed = self.renew()?;
        match renewed.missed.into_iter().next() {
            Some(missed) => Err(missed.error),
            None => Ok(renewed.tasks.len()),
        }
    }

    /// Renews this instance's lease on each of `ids`: one result per id, in
    /// order, each what [`renew_lease`](TaskStore::renew_lease) of it
    /// returns. The stores of this crate write them as one batch (a file
    /// store makes them durable with one fsync, not one each); the default
    /// renews one at a time. A host that renews the tasks it runs calls
    /// this, not [`renew_leases`](TaskStore::renew_leases), which renews
    /// every task the instance owns, runs or not.
    fn renew_leases_of(&self, ids: &[TaskId]) -> Vec<Result<Transition>> {
        ids.iter().map(|id| self.renew_lease(id)).collect()
    }

    /// A new subscription to the changes any writer makes to this store,
    /// from any process or host, if its backend can tell
    /// ([`Backend::changes`](crate::backend::Backend::changes)); `None`
    /// means: poll.
    fn changes(&self) -> Option<ChangeFeed> {
        None
    }

    /// Completes the task with `result` (first writer wins).
    fn complete(&self, id: &TaskId, result: Value) -> Result<Transition> {
        self.finish(id, Outcome::Completed(result))
    }

    /// Fails the task with `error` (first writer wins).
    fn fail(&self, id: &TaskId, error: Value) -> Result<Transition> {
        self.finish(id, Outcome::Failed(error))
    }

    /// Cancels the task, with an optional status message (first writer
    /// wins); without one, the task keeps the status message it had.
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
            fn try_get(&self, id: &TaskId) -> Option<Option<Task>> {
                (**self).try_get(id)
            }
            fn get_all(&self, ids: &[TaskId]) -> Vec<Result<Option<Task>>> {
                (**self).get_all(ids)
            }
            fn update(&self, id: &TaskId, update: TaskUpdate) -> Result<Transition> {
                (**self).update(id, update)
            }
            fn finish(&self, id: &TaskId, outcome: Outcome) -> Result<Transition> {
                (**self).finish(id, outcome)
            }
            fn finish_fenced(
                &self,
                id: &TaskId,
                outcome: Outcome,
                epoch: u64,
            ) -> Result<Transition> {
                (**self).finish_fenced(id, outcome, epoch)
            }
            fn list(&self, query: &ListQuery) -> Result<Page> {
                (**self).list(query)
            }
            fn delete(&self, id: &TaskId) -> Result<bool> {
                (**self).delete(id)
            }
            fn sweep(&self) -> Result<Swept> {
                (**self).sweep()
            }
            fn sweep_expired(&self) -> Result<usize> {
                (**self).sweep_expired()
            }
            fn instance_id(&self) -> &str {
                (**self).instance_id()
            }
            fn lease(&self) -> Option<std::time::Duration> {
                (**self).lease()
            }
            fn now(&self) -> time::OffsetDateTime {
                (**self).now()
            }
            fn lease_now(&self) -> time::OffsetDateTime {
                (**self).lease_now()
            }
            fn lease_from(&self) -> time::OffsetDateTime {
                (**self).lease_from()
            }
            fn renew_lease(&self, id: &TaskId) -> Result<Transition> {
                (**self).renew_lease(id)
            }
            fn release(&self, id: &TaskId, epoch: u64) -> Result<Transition> {
                (**self).release(id, epoch)
            }
            fn reap(&self) -> Result<Reaped> {
                (**self).reap()
            }
            fn claim(&self, kinds: &[&str]) -> Result<Claimed> {
                (**self).claim(kinds)
            }
            fn reap_orphans(&self) -> Result<Vec<Task>> {
                (**self).reap_orphans()
            }
            fn reap_task(&self, id: &TaskId) -> Result<Option<Task>> {
                (**self).reap_task(id)
            }
            fn renew(&self) -> Result<Renewed> {
                (**self).renew()
            }
            fn renew_leases(&self) -> Result<usize> {
                (**self).renew_leases()
            }
            fn renew_leases_of(&self, ids: &[TaskId]) -> Vec<Result<Transition>> {
                (**self).renew_leases_of(ids)
            }
            fn changes(&self) -> Option<ChangeFeed> {
                (**self).changes()
            }
            fn complete(&self, id: &TaskId, result: Value) -> Result<Transition> {
                (**self).complete(id, result)
            }
            fn fail(&self, id: &TaskId, error: Value) -> Result<Transition> {
                (**self).fail(id, error)
            }
            fn cancel(&self, id: &TaskId, message: Option<String>) -> Result<Transition> {
                (**self).cancel(id, message)
            }
        }
    )*};
}

forward_task_store!(Arc<T>, Box<T>, &T);

/// What a mutation did.
#[derive(Clone, Debug, PartialEq)]
#[must_use]
#[non_exhaustive]
pub enum Transition {
    /// The change was applied; this is the task as written.
    Applied(Task),
    /// The task had already reached a terminal state (the first writer won
    /// earlier); nothing was changed. This is the task as it stands.
    AlreadyTerminal(Task),
    /// The write was fenced to an owner epoch the task has left (another
    /// owner claimed it to resume it), or the task is not this handle's
    /// (another instance's, another open's of the same instance id, or
    /// released by this handle); nothing was changed. This is the task as
    /// it stands.
    Fenced(Task),
    /// The update asked for a revision
    /// ([`TaskUpdate::if_revision`](crate::TaskUpdate::if_revision)) the
    /// task has left: another write landed first; nothing was changed.
    /// This is the task as it stands.
    Changed(Task),
}

impl Transition {
    /// The task, whatever the outcome.
    pub fn task(&self) -> &Task {
        match self {
            Transition::Applied(t)
            | Transition::AlreadyTerminal(t)
            | Transition::Fenced(t)
            | Transition::Changed(t) => t,
        }
    }

    /// The task, whatever the outcome, by value.
    pub fn into_task(self) -> Task {
        match self {
            Transition::Applied(t)
            | Transition::AlreadyTerminal(t)
            | Transition::Fenced(t)
            | Transition::Changed(t) => t,
        }
    }

    /// Whether this call's change was applied.
    pub fn is_applied(&self) -> bool {
        matches!(self, Transition::Applied(_))
    }
}

/// What a [`TaskStore::sweep`] did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Swept {
    /// Expired tasks deleted.
    pub deleted: usize,
    /// Leftovers of crashed writers cleaned up (temp files, half-finished
    /// moves, and the `expiring/` entries of a file store whose tasks a
    /// killed sweep removed, which go in this sweep's scans); a file
    /// store's first sweep counts the temp files its open removed, and the
    /// tasks it found with names in both `active/` and `done/` and
    /// resolved, too.
    pub cleaned: usize,
    /// Stored entries that could not be read (left out, reported).
    pub skipped: Vec<Skipped>,
    /// Expired tasks that could not be deleted, and why.
    pub missed: Vec<Missed>,
    /// Failures of the pass as a whole beside what it did, in the order
    /// met: its clean-up (over PostgreSQL, the check of the active-task
    /// counter), a listing of its batches, making its deletions durable.
    /// A sweep that did anything (deleted, cleaned, or has a task missed
    /// or an entry skipped to report) returns them here; one that did
    /// nothing fails with the first.
    pub errors: Vec<Error>,
}

impl Swept {
    /// Whether this sweep did anything to report: deleted or cleaned, or
    /// missed a task or skipped an entry. One that did not fails with the
    /// first of its [`errors`](Swept::errors), if any.
    pub(crate) fn did_anything(&self) -> bool {
        self.deleted > 0 || self.cleaned > 0 || !self.missed.is_empty() || !self.skipped.is_empty()
    }
}

/// What a pass over the running tasks did: the orphans a
/// [`TaskStore::reap`] failed ([`Reaped`]) or a [`TaskStore::claim`]
/// claimed ([`Claimed`]), the tasks a [`TaskStore::renew`] renewed
/// ([`Renewed`]).
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Pass {
    /// The tasks as this pass left them, in listing order.
    pub tasks: Vec<Task>,
    /// Stored entries that could not be read (left out, reported).
    pub skipped: Vec<Skipped>,
    /// Tasks the pass could not handle, and why.
    pub missed: Vec<Missed>,
    /// The expired tasks the pass met and deleted, as a sweep would (a reap
    /// and a claim read running tasks whose lease lapsed, a renewal every
    /// running one, expired ones among them).
    pub expired: Vec<TaskId>,
}

/// What a [`TaskStore::reap`] did: the orphans it failed.
pub type Reaped = Pass;

/// What a [`TaskStore::claim`] did: the orphans it claimed.
pub type Claimed = Pass;

/// What a [`TaskStore::renew`] did: the tasks whose lease it renewed.
pub type Renewed = Pass;

/// A task a pass (a sweep, a reap, a claim, a renewal) could not handle;
/// the pass went on without it.
#[derive(Debug)]
#[non_exhaustive]
pub struct Missed {
    /// The task.
    pub id: TaskId,
    /// Why.
    pub error: Error,
}
