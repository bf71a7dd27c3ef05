//! The store's rules, written once over any [`Backend`]: first writer wins,
//! revisions, TTL from creation, the caps, leases and reaping, events, and
//! paging.
//!
//! The rules know no files, no SQL and no locks: they read a task, decide,
//! and ask the backend to store the decision only if the task is still the
//! version they read. Backends know no leases or TTL beyond the fields they
//! store.

mod builder;
mod copy;
mod high_water;
mod maintenance;
mod preview;
mod reserved;

use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use time::OffsetDateTime;

use crate::backend::{
    Backend, Change, Decide, Insert, Modified, Record, Skipped, Swap, is_current,
};
use crate::changes::ChangeFeed;
use crate::error::{Error, Result};
use crate::events::TaskEventKind;
use crate::id::TaskId;
use crate::query::{self, ListQuery, Page};
use crate::store::{Claimed, Reaped, Renewed, Swept, TaskStore, Transition};
use crate::task::{NewTask, Outcome, Task, TaskUpdate};

use self::high_water::HighWater;

pub(crate) use self::builder::Settings;
pub use self::builder::{MAX_INSTANCE_ID_LEN, StoreBuilder};
pub use self::copy::Copied;
pub use self::preview::{Orphan, OrphanFate};

/// A task store: the store's rules over the backend `B`.
///
/// [`FileStore`](crate::FileStore) and [`MemoryStore`](crate::MemoryStore)
/// are stores over this crate's backends; [`Store::with_backend`] makes one
/// over any other. Every store implements [`TaskStore`] the same way, so
/// each rule holds on every backend alike.
pub struct Store<B> {
    backend: B,
    settings: Settings,
    /// The latest time this handle has read: the time the rules go by never
    /// goes back, even if the clock does (whatever it reads: any time
    /// `OffsetDateTime` holds, past 2262 or before 1677 too, which Unix
    /// nanoseconds in an `i64` do not).
    high_water: Mutex<Option<HighWater>>,
    /// Writes that failed and may stand all the same, of tasks this
    /// handle would own that no caller knows of: never renewed. A failed
    /// create's task is removed by the next renewal pass that can (see
    /// [`undo_create`](Store::undo_create)); a failed claim's is left to
    /// lapse (see [`disown_claim`](Store::disown_claim)).
    undone: Mutex<Vec<(Task, Undo)>>,
}

/// What becomes of a task kept in `undone`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Undo {
    /// A failed create's: removed.
    Remove,
    /// A failed claim's: its lease left to lapse, for the next claim.
    Lapse,
}

impl<B: fmt::Debug> fmt::Debug for Store<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .field("instance_id", &self.settings.lease.instance_id)
            .field("lease", &self.settings.lease.duration)
            .field("limits", &self.settings.limits)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> Store<B> {
    /// A builder for a store over `backend` (a backend written outside this
    /// crate, for example).
    pub fn with_backend(backend: B) -> StoreBuilder<B> {
        StoreBuilder::with_options(backend)
    }
}

impl<B> Store<B> {
    pub(crate) fn from_parts(backend: B, settings: Settings) -> Store<B> {
        Store {
            backend,
            settings,
            high_water: Mutex::new(None),
            undone: Mutex::new(Vec::new()),
        }
    }

    /// The backend under this store.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// How many times this handle's sink panicked (each time the event was
    /// dropped; the operation went on).
    pub fn sink_panics(&self) -> u64 {
        self.settings.notifier.panics()
    }

    /// How long this handle's leases last.
    pub fn lease_duration(&self) -> std::time::Duration {
        self.settings.lease.duration
    }

    /// The time the rules go by: the clock's, in UTC (a task's times are;
    /// a reading in another offset past the last instant UTC holds is that
    /// instant), but never earlier than a time this handle has already
    /// read. An expired task stays expired for this handle if the clock is
    /// stepped back.
    pub fn now(&self) -> OffsetDateTime {
        self.read_clock().now
    }

    /// What the clock reads, in UTC: the time another owner's lease is
    /// judged lapsed by, never later than [`now`](Self::now) (see
    /// [`TaskStore::lease_now`]).
    pub fn lease_now(&self) -> OffsetDateTime {
        self.read_clock().clock
    }

    /// The time a lease this handle writes now runs from, never earlier
    /// than [`now`](Self::now) (see [`TaskStore::lease_from`]).
    pub fn lease_from(&self) -> OffsetDateTime {
        self.read_clock().lease_from
    }

    /// One reading of the clock: the time the rules go by
    /// ([`now`](Self::now)), and what the clock itself read.
    fn read_clock(&self) -> Reading {
        let mut high_water = self
            .high_water
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Read under the lock: the handle's readings come in the order they
        // were taken, and each is measured against the one before. A host's
        // clock may read in another offset, though `Clock` asks for UTC.
        // The monotonic clock read around the wall clock: a thread held up
        // between the readings widens the bracket, and is no step.
        let before = self.settings.clock.monotonic();
        let clock = crate::clock::in_utc(self.settings.clock.now());
        let monotonic = before
            .zip(self.settings.clock.monotonic())
            .map(|(before, after)| high_water::Bracket { before, after });
        let (now, lease_from) = high_water
            .get_or_insert_with(|| HighWater::first(clock, monotonic))
            .read(clock, monotonic);
        Reading {
            now,
            clock,
            lease_from,
        }
    }
}

/// One reading of a handle's clock ([`Store::read_clock`]), for the passes
/// that judge other owners' leases (a reap, a claim).
#[derive(Clone, Copy, Debug)]
struct Reading {
    /// The time the rules go by ([`Store::now`]): expiry is judged by it,
    /// and every time a write stamps is it.
    now: OffsetDateTime,
    /// What the clock read, never later than `now`: another owner's lease
    /// is judged lapsed by it alone. After a clock stepped forward and set
    /// right again, this handle's `now` stays ahead by the step until the
    /// clock catches up (its time never goes back), but an owner whose
    /// handle never read the step renews its leases from the right time:
    /// judged by `now`, they would look lapsed, and live work would be
    /// reaped or claimed, for as long as the step.
    clock: OffsetDateTime,
    /// What this handle's leases run from: `now`, but while the clock
    /// reads behind the time that went by (stepped back), that time, as
    /// the monotonic clock measures it ([`HighWater::read`]), so that an
    /// owner renewing while its clock is behind keeps its leases ahead of
    /// real time, and a clock set right again finds them live.
    lease_from: OffsetDateTime,
}

/// Why a write was not made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kept {
    Expired,
    Terminal,
    Fenced,
    Changed,
}

impl<B: Backend> Store<B> {
    /// The time an operation goes by: the backend's clock measured again
    /// first if that is due ([`Backend::refresh_clock`], which may do I/O),
    /// then [`now`](Self::now). Every operation that decides by the time
    /// reads it here, before anything else it does, but the writes to one
    /// task (`write`, `lease_write`), which call `refresh_clock` before the
    /// backend's `modify` and read [`now`](Self::now) in its decision, and
    /// the reads (`get`, `delete`), whose backend refreshes as it takes a
    /// connection, before they read the time.
    fn time(&self) -> OffsetDateTime {
        self.reading().now
    }

    /// The backend's [`Backend::modify`]: the one way the rules write one
    /// task by a decision on what they read. In the conformance suite's
    /// stores every decision calls the suite's hook first, which may hold
    /// it there, between the backend's read and its write
    /// ([`Settings::before_deciding`]).
    fn modify(&self, id: &TaskId, decide: &mut Decide<'_>) -> Result<Modified> {
        #[cfg(feature = "conformance")]
        if let Some(hook) = &self.settings.before_deciding.0 {
            return self.backend.modify(id, &mut |current| {
                hook(current);
                decide(current)
            });
        }
        self.backend.modify(id, decide)
    }

    /// The backend's [`Backend::replace_all`]: the one way the rules write
    /// a batch of tasks by decisions on what a scan read (a reap's, a
    /// claim's or a renewal's pass). In the conformance suite's stores the
    /// suite's hook is called first with each task the batch was decided
    /// on, and may hold the batch there, between the scan and its
    /// conditional writes ([`Settings::before_deciding`]).
    fn replace_all(&self, pairs: &[(Task, Record)]) -> Vec<Result<Swap>> {
        #[cfg(feature = "conformance")]
        if let Some(hook) = &self.settings.before_deciding.0 {
            for (current, _) in pairs {
                hook(current);
            }
        }
        self.backend.replace_all(pairs)
    }

    /// [`time`](Self::time), with what the clock itself read
    /// ([`Reading`]).
    fn reading(&self) -> Reading {
        self.backend.refresh_clock();
        self.read_clock()
    }

    /// Applies `change` to the live, non-terminal task `id`, atomically, if
    /// it is still at owner epoch `fence` and at `revision` (each when
    /// given): the path of every
    /// host write to an existing task (the lease writes go through
    /// `lease_write`, deletes and the maintenance passes their own ways).
    fn write(
        &self,
        id: &TaskId,
        fence: Option<u64>,
        revision: Option<u64>,
        renews: bool,
        mut change: impl FnMut(&mut Task, OffsetDateTime) -> Result<()>,
    ) -> Result<Transition> {
        let mut kept = None;
        self.backend.refresh_clock();
        let modified = self.modify(id, &mut |current| {
            let Reading {
                now, lease_from, ..
            } = self.read_clock();
            if let Some(why) = unwritable(current, now, fence, Some(&self.settings.lease)) {
                kept = Some(why);
                return Ok(Change::Keep);
            }
            if revision.is_some_and(|r| r != current.revision) {
                kept = Some(Kept::Changed);
                return Ok(Change::Keep);
            }
            let mut next = current.clone();
            change(&mut next, now)?;
            if renews || next.is_terminal() {
                self.settings.lease.after_write(&mut next, lease_from);
            }
            Ok(Change::Replace(
                self.settings.limits.record_over(next, current)?,
            ))
        })?;
        let transition = match modified {
            Modified::Kept(task) if kept == Some(Kept::Terminal) => {
                Transition::AlreadyTerminal(task)
            }
            Modified::Kept(task) if kept == Some(Kept::Fenced) => Transition::Fenced(task),
            Modified::Kept(task) if kept == Some(Kept::Changed) => Transition::Changed(task),
            Modified::Kept(task) => {
                self.forget_expired(vec![task]);
                return Err(Error::NotFound { id: id.clone() });
            }
            Modified::Replaced(task) => Transition::Applied(task),
            Modified::Missing | Modified::Removed(_) => {
                return Err(Error::NotFound { id: id.clone() });
            }
        };
        self.notify_transition(&transition);
        Ok(transition)
    }

    /// The event of an applied write: updated, or the terminal status reached.
    fn notify_transition(&self, transition: &Transition) {
        if let Transition::Applied(task) = transition {
            self.settings
                .notifier
                .task(TaskEventKind::for_status(task.status), task);
        }
    }

    /// Reports stored entries that could not be read (or were set aside:
    /// a backend's open reports what it met through this too).
    pub(crate) fn notify_skipped(&self, skipped: &[Skipped]) {
        for entry in skipped {
            // Contained: a host's subscriber that panicked here ended the
            // pass (or the open) that met the entry, and its event went
            // to no sink.
            crate::panics::contained(|| {
                tracing::warn!(location = %entry.location, reason = %entry.reason, action = ?entry.action, "skipped a stored entry that cannot be read");
            });
            self.settings.notifier.emit(|| entry.to_event());
        }
    }

    /// Deletes tasks found expired, as the sweep would: once a handle has
    /// seen a task expire, it is gone for good, even if a clock is later
    /// stepped back. Best effort: a task that cannot be deleted now (a
    /// read-only store) is gone for readers all the same, and the sweep
    /// tries again. A removal that may have landed and left the task gone
    /// (a reply lost) is this call's, as a sweep's is
    /// ([`Backend::remove_all`]): the task is counted and its
    /// `task.expired` event sent, since no sweep will meet it again.
    fn forget_expired(&self, expired: Vec<Task>) -> Vec<TaskId> {
        let mut deleted = Vec::new();
        if expired.is_empty() {
            return deleted;
        }
        for (task, result) in expired.iter().zip(self.backend.remove_all(&expired)) {
            match result {
                Ok(Swap::Done) => {
                    self.settings.notifier.task(TaskEventKind::Expired, task);
                    deleted.push(task.id.clone());
                }
                Ok(_) => {}
                // Contained: a host's subscriber that panicked here ended
                // the call, and the later tasks' removals went unsaid.
                Err(e) => {
                    crate::panics::contained(|| {
                        tracing::debug!(task = %task.id, error = %e, "could not delete an expired task yet");
                    });
                }
            }
        }
        deleted
    }
}

/// Why a write to `current` at `now`, fenced to owner epoch `fence` (when
/// given), is not made, if it is not: the task has expired, is terminal
/// (first writer wins), or is another owner's: at another epoch, or, for a
/// host's write fenced by the handle holding `owner`, not that handle's (the
/// same instance id and open: a task deleted and made again under its id
/// starts at epoch 1 too, a restarted process reusing the instance id is
/// another owner, and a released task is no longer its releaser's; a lease
/// write, which checks its owner itself and says `NotOwner`, gives none).
/// The rule every write to an existing task obeys, host writes and lease
/// writes alike.
fn unwritable(
    current: &Task,
    now: OffsetDateTime,
    fence: Option<u64>,
    owner: Option<&crate::lease::Lease>,
) -> Option<Kept> {
    let another =
        |epoch: u64| epoch != current.epoch || owner.is_some_and(|owner| !owner.owns(current));
    if current.is_expired_at(now) {
        Some(Kept::Expired)
    } else if current.is_terminal() {
        Some(Kept::Terminal)
    } else if fence.is_some_and(another) {
        Some(Kept::Fenced)
    } else {
        None
    }
}

impl<B: Backend> Store<B> {
    /// A write of this handle's lease on the live, running task `id` (at
    /// owner epoch `fence`, when given): the one path of renewing and
    /// releasing. Only the owner (the same instance id and open) may.
    fn lease_write(
        &self,
        id: &TaskId,
        fence: Option<u64>,
        apply: impl Fn(&crate::lease::Lease, &mut Task, Reading) -> Result<()>,
    ) -> Result<Transition> {
        let lease = &self.settings.lease;
        let mut kept = None;
        self.backend.refresh_clock();
        let modified = self.modify(id, &mut |current| {
            let reading = self.read_clock();
            let now = reading.now;
            if let Some(why) = unwritable(current, now, fence, None) {
                kept = Some(why);
                return Ok(Change::Keep);
            }
            if self.is_undone(current) {
                // A failed create's or claim's task: no caller's to renew
                // or release.
                return Err(Error::NotFound {
                    id: current.id.clone(),
                });
            }
            if !lease.owns(current) {
                return Err(Error::NotOwner {
                    id: current.id.clone(),
                    owner: current.owner.clone(),
                });
            }
            let mut next = current.clone();
            apply(lease, &mut next, reading)?;
            Ok(Change::Replace(
                self.settings.limits.record_own(next, current)?,
            ))
        })?;
        match modified {
            Modified::Kept(task) if kept == Some(Kept::Terminal) => {
                Ok(Transition::AlreadyTerminal(task))
            }
            Modified::Kept(task) if kept == Some(Kept::Fenced) => Ok(Transition::Fenced(task)),
            Modified::Kept(task) => {
                self.forget_expired(vec![task]);
                Err(Error::NotFound { id: id.clone() })
            }
            Modified::Replaced(task) => Ok(Transition::Applied(task)),
            Modified::Missing | Modified::Removed(_) => Err(Error::NotFound { id: id.clone() }),
        }
    }
}

impl<B: Backend> Store<B> {
    /// After a failed insert: removes what it may have stored all the same
    /// (a file renamed into place before a failed directory fsync, a
    /// database's commit whose reply was lost), so that a create that fails
    /// leaves no task, which its handle would own and renew and, with an id
    /// the store chose, nobody could name. Only that very version goes
    /// (another writer's task under the id stays). If the removal fails too
    /// (the server out of reach), the task is kept in `undone`: never
    /// renewed, and removed by the next renewal pass that can
    /// ([`settle_undone`](Store::settle_undone)). An insert whose failure
    /// is known to have changed nothing (`failure`,
    /// [`Error::changed_nothing`]) left nothing to undo.
    fn undo_create(&self, record: &Record, failure: &Error) {
        if failure.changed_nothing() {
            return;
        }
        if let Err(e) = self.remove_undone(record.task()) {
            // Contained: a host's subscriber that panicked here left the
            // task unkept, in the store for good, owned by a handle that
            // never renews it and never removes it.
            crate::panics::contained(|| {
                tracing::warn!(task = %record.task().id, error = %e, "a failed create may have left its task; removed later");
            });
            self.keep_undone(record.task().clone(), Undo::Remove);
        }
    }

    /// After a failed claim of `next`'s task: the claim's version may
    /// stand all the same (a file renamed into place before a failed
    /// directory fsync), a task this handle would own that no caller runs.
    /// Never renewed by this handle, its lease lapses and the next claim
    /// takes it (no write is tried on a store that just failed one).
    pub(super) fn disown_claim(&self, next: Task) {
        self.keep_undone(next, Undo::Lapse);
    }

    /// A claim of task `id` by this handle landed: a failed claim's version
    /// kept for it is no longer what it holds.
    pub(super) fn forget_disowned(&self, id: &TaskId) {
        let mut undone = self.undone.lock().unwrap_or_else(PoisonError::into_inner);
        undone.retain(|(task, undo)| !(*undo == Undo::Lapse && task.id == *id));
    }

    fn keep_undone(&self, task: Task, undo: Undo) {
        let mut undone = self.undone.lock().unwrap_or_else(PoisonError::into_inner);
        // Bounded: past it the oldest is left to the reaper, as any task
        // its owner no longer renews.
        if undone.len() >= MAX_UNDONE {
            undone.remove(0);
        }
        undone.push((task, undo));
    }

    /// Whether `task` is the very version of a failed create's or claim's
    /// task kept in `undone` ([`undo_create`](Store::undo_create),
    /// [`disown_claim`](Store::disown_claim)).
    fn is_undone(&self, task: &Task) -> bool {
        let undone = self.undone.lock().unwrap_or_else(PoisonError::into_inner);
        undone.iter().any(|(u, undo)| match undo {
            Undo::Remove => is_current(task, u),
            Undo::Lapse => task.is_claim_of(u),
        })
    }

    /// Removes the tasks of creates that failed and could not be undone
    /// then; those it still cannot remove stay for the next try (and
    /// [`is_undone`](Store::is_undone) keeps every write of this handle's
    /// leases off them). A failed claim's version is forgotten once the
    /// store no longer holds it (another instance claimed or reaped the
    /// task, or it was deleted): its lease lapsing is not enough, as an
    /// owner may renew a lapsed lease no one took.
    pub(crate) fn settle_undone(&self) {
        let lock = || self.undone.lock().unwrap_or_else(PoisonError::into_inner);
        // Taken out: the removals (each may wait on a server out of reach)
        // hold up no failing create meanwhile.
        let mut left = std::mem::take(&mut *lock());
        if left.is_empty() {
            return;
        }
        left.retain(|(task, undo)| match undo {
            Undo::Remove => self.remove_undone(task).is_err(),
            // Kept when it cannot be read now: the next pass looks again.
            Undo::Lapse => self.backend.load(&task.id).map_or(true, |stored| {
                stored.is_some_and(|s| !s.is_terminal() && s.is_claim_of(task))
            }),
        });
        lock().extend(left);
    }

    /// Removes a failed create's task if it is stored. What holds its id
    /// and is no readable task (corrupt, or larger than any task file) is
    /// not it: the task was a well-formed record within this handle's cap,
    /// so nothing of it is there, and the occupant is left to
    /// `verify` and `repair` (removing it again at every renewal pass would
    /// read it each time, and fail the same way).
    fn remove_undone(&self, task: &Task) -> Result<()> {
        match self.backend.remove(task) {
            Err(Error::Corrupt { .. } | Error::FileTooLarge { .. }) | Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `task` with its lease renewed by this handle from `lease_from` (the
    /// pass's reading: [`Reading::lease_from`]), as stored (the store's own
    /// write: `record_own`).
    fn renewed(&self, task: &Task, lease_from: OffsetDateTime) -> Result<Record> {
        let mut next = task.clone();
        self.settings.lease.renew(&mut next, lease_from)?;
        self.settings.limits.record_own(next, task)
    }
}

/// The most failed creates a handle keeps to undo later.
const MAX_UNDONE: usize = 1_024;

impl<B: Backend> TaskStore for Store<B> {
    fn create(&self, new: NewTask) -> Result<Task> {
        let id = new.id.clone().unwrap_or_else(TaskId::new);
        // The time first, whatever comes of the call: a handle's time never
        // goes back, and every call moves it on alike.
        // One reading for the task's times and its lease.
        let at = self.reading();
        let now = at.now;
        reserved::host_metadata("create", &id, &new.metadata)?;
        if new.ttl.is_some_and(|ttl| ttl < Duration::from_millis(1)) {
            return Err(Error::InvalidTask {
                id,
                reason: "a ttl under 1 ms would have it expired the instant it was made: \
                         give at least 1 ms, or none for no limit",
            });
        }
        let mut task = new.into_task(id.clone(), now);
        if task.is_expired_at(now) {
            // Its expiry saturated at the end of time (a clock there).
            return Err(Error::InvalidTask {
                id,
                reason: "it would be expired the instant it was made: its clock is at the \
                         last instant a time can hold",
            });
        }
        self.settings.lease.own(&mut task, at.lease_from);
        let record: Record = self.settings.limits.record(task)?;
        let mut freed = false;
        loop {
            let inserted = self
                .backend
                .insert(&record, self.settings.limits.max_active);
            match inserted.inspect_err(|e| self.undo_create(&record, e))? {
                Insert::Done => break,
                Insert::Exists(current) => {
                    if !current.is_expired_at(now) {
                        return Err(Error::AlreadyExists { id });
                    }
                    // An expired task is gone for every reader; its record
                    // makes way (unless it changed meanwhile: then look again).
                    if self.backend.remove(&current)? == Swap::Done {
                        self.settings
                            .notifier
                            .task(TaskEventKind::Expired, &current);
                    }
                }
                // An id already taken is that, full or not (a backend may
                // count before it looks for the id).
                Insert::Full
                    if self
                        .backend
                        .load(&id)?
                        .is_some_and(|current| !current.is_expired_at(now)) =>
                {
                    return Err(Error::AlreadyExists { id });
                }
                Insert::Full if !freed => {
                    // Expired tasks still count until deleted: delete them
                    // and try once more.
                    freed = true;
                    self.free_expired_active(now)?;
                }
                Insert::Full => {
                    return Err(Error::TooManyActive {
                        op: "create",
                        id,
                        limit: self.settings.limits.max_active,
                    });
                }
            }
        }
        let task = record.into_task();
        self.settings.notifier.task(TaskEventKind::Created, &task);
        Ok(task)
    }

    fn get(&self, id: &TaskId) -> Result<Option<Task>> {
        let Some(task) = self.backend.load(id)? else {
            return Ok(None);
        };
        if task.is_expired_at(self.now()) {
            self.forget_expired(vec![task]);
            return Ok(None);
        }
        Ok(Some(task))
    }

    fn get_all(&self, ids: &[TaskId]) -> Vec<Result<Option<Task>>> {
        let loaded = self.backend.load_all(ids);
        // Read once a task is found, as `get` reads it (a handle keeps the
        // time it read: its time never goes back).
        let mut now = None;
        let mut expired: Vec<Task> = Vec::new();
        let found = loaded
            .into_iter()
            .map(|loaded| match loaded? {
                Some(task) if task.is_expired_at(*now.get_or_insert_with(|| self.now())) => {
                    // Deleted as `get` deletes it, once for an id given twice.
                    if !expired.iter().any(|t| t.id == task.id) {
                        expired.push(task);
                    }
                    Ok(None)
                }
                found => Ok(found),
            })
            .collect();
        self.forget_expired(expired);
        found
    }

    fn try_get(&self, id: &TaskId) -> Option<Option<Task>> {
        match self.backend.try_load(id)? {
            // `get` deletes an expired task it meets: a write, left to it.
            Some(task) if task.is_expired_at(self.now()) => None,
            found => Some(found),
        }
    }

    fn update(&self, id: &TaskId, update: TaskUpdate) -> Result<Transition> {
        if let Some(status) = update.terminal_status() {
            return Err(Error::TerminalStatusInUpdate {
                id: id.clone(),
                status,
            });
        }
        reserved::host_metadata("update", id, &update.metadata)?;
        self.write(
            id,
            update.fence(),
            update.expected_revision(),
            !update.leave_lease,
            |task, now| update.clone().apply(task, now),
        )
    }

    fn finish(&self, id: &TaskId, outcome: Outcome) -> Result<Transition> {
        self.write(id, None, None, true, |task, now| {
            outcome.clone().apply(task, now)
        })
    }

    fn finish_fenced(&self, id: &TaskId, outcome: Outcome, epoch: u64) -> Result<Transition> {
        self.write(id, Some(epoch), None, true, |task, now| {
            outcome.clone().apply(task, now)
        })
    }

    fn list(&self, query: &ListQuery) -> Result<Page> {
        let now = self.time();
        let mut expired = Vec::new();
        let page = query::list(&self.backend, query, now, &mut expired)?;
        self.notify_skipped(&page.skipped);
        self.forget_expired(expired);
        Ok(page)
    }

    fn delete(&self, id: &TaskId) -> Result<bool> {
        let removed = self.modify(id, &mut |_| Ok(Change::Remove))?;
        let Modified::Removed(task) = removed else {
            return Ok(false);
        };
        if task.is_expired_at(self.now()) {
            self.settings.notifier.task(TaskEventKind::Expired, &task);
            return Ok(false);
        }
        self.settings.notifier.task(TaskEventKind::Deleted, &task);
        Ok(true)
    }

    fn sweep(&self) -> Result<Swept> {
        self.sweep_at(self.time())
    }

    fn instance_id(&self) -> &str {
        &self.settings.lease.instance_id
    }

    fn now(&self) -> OffsetDateTime {
        Store::<B>::now(self)
    }

    fn lease_now(&self) -> OffsetDateTime {
        Store::<B>::lease_now(self)
    }

    fn lease_from(&self) -> OffsetDateTime {
        Store::<B>::lease_from(self)
    }

    fn lease(&self) -> Option<std::time::Duration> {
        Some(self.settings.lease.duration)
    }

    fn renew_lease(&self, id: &TaskId) -> Result<Transition> {
        self.lease_write(id, None, |lease, task, at| lease.renew(task, at.lease_from))
    }

    fn release(&self, id: &TaskId, epoch: u64) -> Result<Transition> {
        let released =
            // Lapsed by what the clock reads, as every other owner's lease is
            // judged ([`Reading`]): an orphan at once, for every handle.
            self.lease_write(id, Some(epoch), |lease, task, at| lease.release(task, at.clock))?;
        if let Transition::Applied(task) = &released {
            // Contained: a host's subscriber that panicked here turned a
            // release made into a panic, and the MCP manager's hand-back
            // said the task could not be handed back.
            crate::panics::contained(|| {
                tracing::info!(task = %task.id, epoch, "released a task for another instance to claim");
            });
        }
        Ok(released)
    }

    fn reap(&self) -> Result<Reaped> {
        self.reap_at(self.reading())
    }

    fn reap_task(&self, id: &TaskId) -> Result<Option<Task>> {
        // As `write` does: the time is read in the decision, under the
        // backend's atomic read-decide-write.
        self.backend.refresh_clock();
        self.reap_one(id)
    }

    fn claim(&self, kinds: &[&str]) -> Result<Claimed> {
        self.claim_at(self.reading(), kinds)
    }

    fn renew(&self) -> Result<Renewed> {
        self.renew_all()
    }

    fn renew_leases_of(&self, ids: &[TaskId]) -> Vec<Result<Transition>> {
        self.renew_some(ids)
    }

    fn changes(&self) -> Option<ChangeFeed> {
        self.backend.changes()
    }
}
