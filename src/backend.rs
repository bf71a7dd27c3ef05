//! The seam a storage engine implements: whole tasks in, whole tasks out.
//!
//! The store's rules — first writer wins, revisions, TTL, the caps, leases,
//! reaping, events, paging — are written once, in [`Store`](crate::Store),
//! over this trait. A backend stores and retrieves whole tasks atomically and
//! knows nothing of leases or TTL beyond the fields it keeps: it is told
//! *what* to store and *when a stored version still counts as current*, never
//! *why*.
//!
//! Conditional writes make first writer wins portable, as `object_store`'s
//! `PutMode::Update` does: [`Backend::replace`] and [`Backend::remove`] act
//! only if the stored task is still the version the caller read (same
//! `createdAt` and `revision`). A SQL backend implements each in one
//! statement (`UPDATE … WHERE id = $1 AND created_at = $2 AND revision = $3`);
//! a backend with a lock of its own may override [`Backend::modify`] to
//! read, decide and write under it in one step.
//!
//! A backend written outside this crate passes the shared conformance suite
//! (`taskstore::conformance`, feature `conformance`); `tests/outside_backend.rs`
//! is one.

mod scan;

use std::fmt;
use std::sync::Arc;

use time::OffsetDateTime;

use crate::changes::ChangeFeed;
use crate::error::Result;
pub use crate::events::UnreadableAction;
use crate::id::TaskId;
use crate::task::Task;

pub(crate) use scan::join_skipped;
pub use scan::{Position, Scan, Scanned, Scope, Skipped};

/// A storage engine for tasks: the five required methods are all a backend
/// must write; the provided ones have correct defaults built on them.
///
/// Object safe, `Send + Sync`, usable as `dyn Backend`; implemented for
/// `Arc<B>`, `Box<B>` and `&B`, forwarding every method.
///
/// # Contract
///
/// - Every call is atomic: a concurrent [`load`](Backend::load) or
///   [`scan`](Backend::scan), in any process or host sharing the storage,
///   sees a task's old version or its new one, never a mix.
/// - "The stored task is still `current`" means: a task with `current.id` is
///   stored and its `created_at` and `revision` equal `current`'s (the
///   revision rises with every applied write, and `created_at` tells one
///   incarnation of an id from the next, unless the clock stood still
///   between them: a backend may compare more, as `PgStore` compares a
///   version it kept itself to the stored JSON).
/// - A returned `Ok` is as durable as the backend promises (documented by
///   each backend).
/// - A write that fails may have been applied all the same (a reply lost
///   after the commit): the rules take every failure so unless it is
///   marked as known to have changed nothing
///   ([`Error::known_to_have_changed_nothing`](crate::Error::known_to_have_changed_nothing)),
///   and then leave a failed claim to lapse rather than renew it, and undo
///   a failed create with a removal. A backend marks a failure only when
///   nothing of its call can have been applied.
/// - Where a stored task lives (for example running and finished tasks
///   apart) may follow its [`status`](Task::status); nothing else about it is
///   the backend's business.
pub trait Backend: Send + Sync {
    /// The stored version of task `id`, expired or not; `Ok(None)` if there
    /// is none.
    ///
    /// # Errors
    ///
    /// The backend's own failures, naming the task.
    fn load(&self, id: &TaskId) -> Result<Option<Task>>;

    /// The stored versions of `ids`: one result per id, in order, each what
    /// [`load`](Backend::load) of it returns. The default loads one at a
    /// time; a backend that pays a round trip per call loads them together
    /// (a renewal pass loads every task it renews).
    fn load_all(&self, ids: &[TaskId]) -> Vec<Result<Option<Task>>> {
        ids.iter().map(|id| self.load(id)).collect()
    }

    /// Stores `record` as a new task, unless a task with its id is stored
    /// (then returns it, untouched) or `max_active` non-terminal tasks are
    /// stored already.
    ///
    /// A backend documents how exactly it holds the active-task cap across
    /// processes or hosts.
    fn insert(&self, record: &Record, max_active: usize) -> Result<Insert>;

    /// Replaces `current` by `next` (same id), only if the stored task is
    /// still `current`.
    fn replace(&self, current: &Task, next: &Record) -> Result<Swap>;

    /// Removes `current`, only if the stored task is still `current`.
    fn remove(&self, current: &Task) -> Result<Swap>;

    /// One batch of stored tasks, in listing order (`created_at`, then id),
    /// strictly after [`Scan::after`]: at most [`Scan::limit`] of them, and
    /// fewer only when no more match. Stored tasks that cannot be read are
    /// not errors here: they are left out and reported in
    /// [`Scanned::skipped`].
    fn scan(&self, scan: &Scan) -> Result<Scanned>;

    /// Reads task `id`, asks `decide` what to do with it, and does it,
    /// atomically: no write to the task lands in between.
    ///
    /// `decide` may be called more than once (each time with a newer
    /// version) and must not have side effects beyond its return value. It
    /// is not called when there is no task. It runs between the read and
    /// the write: the conformance suite holds a call there while another
    /// call runs (`src/conformance/windows.rs`), so a backend that writes a
    /// decision over a version other than the one decided on fails it.
    ///
    /// The default loads, then [`replace`](Backend::replace)s or
    /// [`remove`](Backend::remove)s, and starts again from the version a
    /// conflict returns. A backend with its own per-task lock may override it
    /// to read, decide and write under that lock.
    fn modify(&self, id: &TaskId, decide: &mut Decide<'_>) -> Result<Modified> {
        modify_from(self, self.load(id)?, decide)
    }

    /// [`replace`](Backend::replace) for many tasks at once, each on its own:
    /// one result per pair, in order. A backend that can (a SQL backend, in
    /// one statement) overrides it; the default replaces one by one. Each
    /// write is conditional on its pair's current version, as `replace`'s:
    /// the conformance suite holds a pass between its scan and this call
    /// while another call writes one of its tasks
    /// (`src/conformance/windows.rs`), so a backend that writes over the
    /// stored version instead fails it.
    fn replace_all(&self, swaps: &[(Task, Record)]) -> Vec<Result<Swap>> {
        swaps
            .iter()
            .map(|(current, next)| self.replace(current, next))
            .collect()
    }

    /// [`remove`](Backend::remove) for many tasks at once, each on its own:
    /// one result per task, in order, each removal durable when it returns.
    /// The rules call it for expired tasks alone (those a read or a pass
    /// met), which no reader sees whatever the storage still holds: an
    /// expired task is gone whoever removed it, so a backend may answer
    /// [`Swap::Done`] for one it no longer holds after a removal that may
    /// have landed (`PgStore`, after a batch whose reply was lost), and the
    /// caller then counts it, and sends its event, as its own.
    fn remove_all(&self, tasks: &[Task]) -> Vec<Result<Swap>> {
        tasks.iter().map(|task| self.remove(task)).collect()
    }

    /// [`remove_all`](Backend::remove_all) for tasks that have expired,
    /// which no reader sees whatever the storage still holds: their removals
    /// need not be durable when it returns, only once
    /// [`settle_expired`](Backend::settle_expired) has returned. A sweep
    /// removes batch after batch this way and settles once, at its end. The
    /// caller passes only expired tasks, and a task no longer held after a
    /// removal that may have landed may be answered [`Swap::Done`], as by
    /// `remove_all`: the sweep then counts it, and sends its event, as its
    /// own (two sweeps may both count one). The default is `remove_all`.
    fn remove_expired(&self, tasks: &[Task]) -> Vec<Result<Swap>> {
        self.remove_all(tasks)
    }

    /// Makes durable every removal [`remove_expired`](Backend::remove_expired),
    /// [`remove_unread`](Backend::remove_unread) or
    /// [`remove_due`](Backend::remove_due) has made on this handle.
    /// The default has nothing to settle.
    fn settle_expired(&self) -> Result<()> {
        Ok(())
    }

    /// Removes the running tasks `doomed` picks among those this handle has
    /// not read yet, reading each once (a handle that meets thousands of
    /// new tasks at a sweep), and hands each task removed to `removed`
    /// (whole, or without its payloads, as [`Scan::payloads`] allows);
    /// their removals are durable once
    /// [`settle_expired`](Backend::settle_expired) returns. Best effort:
    /// what it leaves, the sweep's scan finds. The default removes nothing.
    fn remove_unread(
        &self,
        doomed: &(dyn Fn(&Task) -> bool + Sync),
        removed: &mut dyn FnMut(Task),
    ) {
        let _ = (doomed, removed);
    }

    /// Removes the finished tasks expired at `now` that the storage's own
    /// index of expiry names, reading each once, under its lock, for the
    /// task it hands to `removed` (without its payloads); their removals
    /// are durable once [`settle_expired`](Backend::settle_expired)
    /// returns. Called by a sweep after
    /// [`remove_unread`](Backend::remove_unread). Best effort: what it
    /// leaves, the sweep's scan finds. The default removes nothing.
    fn remove_due(&self, now: OffsetDateTime, removed: &mut dyn FnMut(Task)) {
        let _ = (now, removed);
    }

    /// Cleans up what crashed writers left behind (temp files, half-finished
    /// moves), adding each leftover cleaned to `cleaned` as it goes: a
    /// failure part way keeps the count of what it cleaned before it, which
    /// the sweep reports beside the failure ([`Swept::errors`](crate::Swept::errors)).
    /// Called by every sweep. The default has nothing to clean.
    fn clean_up(&self, _cleaned: &mut usize) -> Result<()> {
        Ok(())
    }

    /// A new subscription to the changes every writer makes to this
    /// storage, if the backend can tell (a database's notifications); the
    /// default has none, and hosts poll.
    fn changes(&self) -> Option<ChangeFeed> {
        None
    }

    /// Called by the rules before an operation reads the time it goes by: a
    /// backend whose clock is measured (a database server's) measures it
    /// again here if that is due, so that the operation's decision goes by
    /// the new reading, not by one from before a suspend of the host. May
    /// do I/O (one round trip, never a wait for a connection); never
    /// called by [`Store::now`](crate::Store::now), which does none. The
    /// default does nothing: a backend that wraps another forwards it, as
    /// it forwards [`try_load`](Backend::try_load) and
    /// [`changes`](Backend::changes).
    fn refresh_clock(&self) {}

    /// The largest task (its JSON, in bytes) this backend can store: a
    /// store over it lowers its payload cap to leave
    /// [`OWN_HEADROOM`](crate::OWN_HEADROOM) under it, so that every task
    /// the store accepts can be renewed, claimed, reaped and finished
    /// there (the store's own changes take a task at most the headroom
    /// past the cap). A task stored past it (under a larger cap, by an
    /// earlier version) is taken as it is: its changes are the rules' as
    /// for any task, and a change the backend cannot hold is its error.
    /// The default, `usize::MAX`, says the backend has no limit of its own
    /// (no store writes a task past [`LARGEST_TASK`](crate::LARGEST_TASK)
    /// anyway); a backend that holds less in one task (a database's limit
    /// on one value or one message) says so here, and a backend that wraps
    /// another forwards it. Read once, when the store is made: under
    /// [`MIN_MAX_PAYLOAD_BYTES`](crate::MIN_MAX_PAYLOAD_BYTES) and the
    /// headroom (8 KiB) no store can be made over it
    /// ([`Error::InvalidConfig`](crate::Error::InvalidConfig), field `largest_task`).
    fn largest_task(&self) -> usize {
        usize::MAX
    }

    /// [`load`](Backend::load), if the backend can answer without waiting
    /// on a disk, a network or a lock held across either: `None` when it
    /// cannot (then [`load`](Backend::load) answers), `Some(None)` for no
    /// stored task. An answer is what `load` would return at this instant,
    /// as fresh. The default cannot.
    fn try_load(&self, id: &TaskId) -> Option<Option<Task>> {
        let _ = id;
        None
    }
}

/// What [`Backend::modify`] asks of its decision.
pub type Decide<'a> = dyn FnMut(&Task) -> Result<Change> + 'a;

/// [`Backend::modify`]'s loop from `current`, a version read: decides,
/// replaces or removes it only if unchanged, and starts again from the
/// version a conflict returns.
pub(crate) fn modify_from<B: Backend + ?Sized>(
    backend: &B,
    mut current: Option<Task>,
    decide: &mut Decide<'_>,
) -> Result<Modified> {
    loop {
        let Some(task) = current else {
            return Ok(Modified::Missing);
        };
        let swap = match decide(&task)? {
            Change::Keep => return Ok(Modified::Kept(task)),
            Change::Replace(next) => match backend.replace(&task, &next)? {
                Swap::Done => return Ok(Modified::Replaced(next.into_task())),
                swap => swap,
            },
            Change::Remove => match backend.remove(&task)? {
                Swap::Done => return Ok(Modified::Removed(task)),
                swap => swap,
            },
        };
        current = match swap {
            Swap::Changed(now) => now,
            Swap::Done => unreachable!("handled above"),
        };
    }
}

/// A task as the rules hand it to a backend: checked against the store's
/// caps, with the JSON it is stored as.
///
/// Only the rules make one, so a backend cannot store an unchecked task.
/// `json` is `serde_json`'s encoding of `task`: a backend that stores bytes
/// stores these, and decoding them gives `task` back.
#[derive(Clone, PartialEq)]
pub struct Record {
    task: Task,
    json: Vec<u8>,
}

impl Record {
    pub(crate) fn new(task: Task, json: Vec<u8>) -> Record {
        Record { task, json }
    }

    /// The task.
    pub fn task(&self) -> &Task {
        &self.task
    }

    /// The task's JSON encoding, as checked against the payload cap.
    pub fn json(&self) -> &[u8] {
        &self.json
    }

    /// The task, by value.
    pub fn into_task(self) -> Task {
        self.task
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("task", &self.task.id)
            .field("revision", &self.task.revision)
            .field("json_bytes", &self.json.len())
            .finish()
    }
}

/// What [`Backend::insert`] did.
#[derive(Clone, Debug, PartialEq)]
// Returned once per call, beside I/O: a task moved by value costs nothing
// next to it, and a box would cost an allocation.
#[allow(clippy::large_enum_variant)]
#[non_exhaustive]
pub enum Insert {
    /// The task was stored.
    Done,
    /// A task with this id is stored (expired or not); nothing was changed.
    Exists(Task),
    /// `max_active` non-terminal tasks are stored; nothing was changed.
    Full,
}

/// What a conditional [`Backend::replace`] or [`Backend::remove`] did.
#[derive(Clone, Debug, PartialEq)]
// Returned once per call, beside I/O: a task moved by value costs nothing
// next to it, and a box would cost an allocation.
#[allow(clippy::large_enum_variant)]
#[non_exhaustive]
pub enum Swap {
    /// The stored task was the expected version; the change was made.
    Done,
    /// The stored task is no longer the expected version (it is this one, or
    /// `None` if there is none); nothing was changed.
    Changed(Option<Task>),
}

/// What a decision passed to [`Backend::modify`] asks for.
#[derive(Clone, Debug)]
// Returned once per call, beside I/O: a task moved by value costs nothing
// next to it, and a box would cost an allocation.
#[allow(clippy::large_enum_variant)]
#[non_exhaustive]
pub enum Change {
    /// Leave the task as it is.
    Keep,
    /// Store this version instead.
    Replace(Record),
    /// Remove the task.
    Remove,
}

/// What [`Backend::modify`] did.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Modified {
    /// There is no task with this id.
    Missing,
    /// The decision kept the task: this is it.
    Kept(Task),
    /// The decision's version was stored: this is it.
    Replaced(Task),
    /// The task was removed: this is what it was.
    Removed(Task),
}

macro_rules! forward_backend {
    ($($ty:ty),*) => {$(
        impl<B: Backend + ?Sized> Backend for $ty {
            fn load(&self, id: &TaskId) -> Result<Option<Task>> {
                (**self).load(id)
            }
            fn load_all(&self, ids: &[TaskId]) -> Vec<Result<Option<Task>>> {
                (**self).load_all(ids)
            }
            fn insert(&self, record: &Record, max_active: usize) -> Result<Insert> {
                (**self).insert(record, max_active)
            }
            fn replace(&self, current: &Task, next: &Record) -> Result<Swap> {
                (**self).replace(current, next)
            }
            fn remove(&self, current: &Task) -> Result<Swap> {
                (**self).remove(current)
            }
            fn scan(&self, scan: &Scan) -> Result<Scanned> {
                (**self).scan(scan)
            }
            fn modify(&self, id: &TaskId, decide: &mut Decide<'_>) -> Result<Modified> {
                (**self).modify(id, decide)
            }
            fn replace_all(&self, swaps: &[(Task, Record)]) -> Vec<Result<Swap>> {
                (**self).replace_all(swaps)
            }
            fn remove_all(&self, tasks: &[Task]) -> Vec<Result<Swap>> {
                (**self).remove_all(tasks)
            }
            fn remove_expired(&self, tasks: &[Task]) -> Vec<Result<Swap>> {
                (**self).remove_expired(tasks)
            }
            fn settle_expired(&self) -> Result<()> {
                (**self).settle_expired()
            }
            fn remove_unread(
                &self,
                doomed: &(dyn Fn(&Task) -> bool + Sync),
                removed: &mut dyn FnMut(Task),
            ) {
                (**self).remove_unread(doomed, removed)
            }
            fn remove_due(&self, now: OffsetDateTime, removed: &mut dyn FnMut(Task)) {
                (**self).remove_due(now, removed)
            }
            fn clean_up(&self, cleaned: &mut usize) -> Result<()> {
                (**self).clean_up(cleaned)
            }
            fn changes(&self) -> Option<ChangeFeed> {
                (**self).changes()
            }
            fn refresh_clock(&self) {
                (**self).refresh_clock()
            }
            fn largest_task(&self) -> usize {
                (**self).largest_task()
            }
            fn try_load(&self, id: &TaskId) -> Option<Option<Task>> {
                (**self).try_load(id)
            }
        }
    )*};
}

forward_backend!(Arc<B>, Box<B>, &B);

/// Whether `stored` is still the version `expected` of its task: the same
/// incarnation (`created_at`) at the same revision. The test of
/// [`Backend::replace`] and [`Backend::remove`].
pub fn is_current(stored: &Task, expected: &Task) -> bool {
    stored.id == expected.id
        && stored.created_at == expected.created_at
        && stored.revision == expected.revision
}

#[cfg(test)]
mod forward_tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::memory::MemoryBackend;

    /// A backend that counts the provided methods a host's wrapper must
    /// not lose: [`Backend::refresh_clock`], [`Backend::try_load`] and
    /// [`Backend::load_all`]; and it holds smaller tasks than the default
    /// ([`Backend::largest_task`]), which they must say too.
    #[derive(Default)]
    struct Counting {
        inner: MemoryBackend,
        refreshed: AtomicUsize,
        tried: AtomicUsize,
        loaded_all: AtomicUsize,
    }

    impl Backend for Counting {
        fn load(&self, id: &TaskId) -> Result<Option<Task>> {
            self.inner.load(id)
        }
        fn insert(&self, record: &Record, max_active: usize) -> Result<Insert> {
            self.inner.insert(record, max_active)
        }
        fn replace(&self, current: &Task, next: &Record) -> Result<Swap> {
            self.inner.replace(current, next)
        }
        fn remove(&self, current: &Task) -> Result<Swap> {
            self.inner.remove(current)
        }
        fn scan(&self, scan: &Scan) -> Result<Scanned> {
            self.inner.scan(scan)
        }
        fn refresh_clock(&self) {
            self.refreshed.fetch_add(1, Ordering::SeqCst);
        }
        fn try_load(&self, id: &TaskId) -> Option<Option<Task>> {
            self.tried.fetch_add(1, Ordering::SeqCst);
            self.inner.try_load(id)
        }
        fn load_all(&self, ids: &[TaskId]) -> Vec<Result<Option<Task>>> {
            self.loaded_all.fetch_add(1, Ordering::SeqCst);
            self.inner.load_all(ids)
        }
        fn largest_task(&self) -> usize {
            1 << 20
        }
    }

    /// `Arc`, `Box` and `&` of a backend forward its provided methods
    /// (a provided method left out of the forwarding would fall back to the
    /// default, silently: a `PgBackend` behind an `Arc` measuring its
    /// clock never).
    #[test]
    fn wrappers_forward_the_provided_methods() {
        fn call(backend: &dyn Backend) {
            backend.refresh_clock();
            backend.try_load(&TaskId::new());
            backend.load_all(&[TaskId::new()]);
            assert_eq!(backend.largest_task(), 1 << 20);
        }
        let counting = Arc::new(Counting::default());
        call(&Arc::clone(&counting));
        call(&Box::new(Arc::clone(&counting)));
        call(&&*counting);
        assert_eq!(counting.refreshed.load(Ordering::SeqCst), 3);
        assert_eq!(counting.tried.load(Ordering::SeqCst), 3);
        assert_eq!(counting.loaded_all.load(Ordering::SeqCst), 3);
    }
}
