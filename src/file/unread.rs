//! A sweep's removals of the expired tasks it reads once, under their lock:
//! the running tasks whose files the handle has not read yet, and the
//! finished tasks the `expiring/` index says are due.
//!
//! A handle that meets thousands of new files at a sweep would otherwise
//! read each into its snapshot, decode it again for the sweep's batch,
//! prove it unchanged under its lock and unlink it. Here the sweep takes
//! the new names from the change notices and reads each file once, under
//! its stripe lock, and unlinks it at once if the sweep dooms the task: the
//! read under the lock is the proof, since no writer can come between. Its
//! removals are made durable with the sweep's (`pending_removals`). What it
//! leaves (tasks not doomed, terminal ones, files that do not read) goes
//! back to the snapshot, which reads it as changed, as any refresh does
//! with the names a sweep has taken meanwhile (`State::unread`).
//!
//! Only with a complete snapshot kept by a live watch, and only from
//! `parallel::MIN_SHARED` new files up (`FileBackend::large_pass`): fewer
//! are read into the snapshot as usual.
//!
//! The finished tasks due by their `expiring/` entries are read the same
//! way ([`remove_due`](FileBackend::remove_due)): each once, under every
//! stripe, and unlinked from `done/` at once, its entry left to the sweep's
//! settling (after `done/` is durable), where the scan's batches would read
//! each file, prove it unchanged under its lock with its entry and its
//! file's status, then unlink it. What it leaves (an entry that is not its
//! task's, a file that does not read, a task with a copy in `active/`) its
//! sweep's scan meets, and reports or resolves.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::sync::Arc;

use time::OffsetDateTime;

use crate::file::layout::{self, task_name};
use crate::file::scan::DueList;
use crate::file::watch::{Change, Changes};
use crate::file::{Area, FileBackend, parallel};
use crate::id::TaskId;
use crate::task::Task;

/// How many files the pass reads and removes under one taking of every
/// stripe: writers wait for one chunk at most.
const CHUNK: usize = 1_024;

/// The names of new task files a sweep took from the change notices, shared
/// by the sweep and the snapshot (`State::unread`) while the sweep reads
/// them.
pub(super) type Taken = Arc<Vec<(TaskId, OsString)>>;

impl FileBackend {
    /// Removes the running tasks `doomed` picks among the files of
    /// `active/` this handle has not read yet, and hands each to `removed`
    /// (durable once the sweep settles). Best effort: anything it cannot
    /// read, lock or remove is left to the snapshot and the sweep's batches,
    /// which report it.
    pub(super) fn remove_unread(
        &self,
        doomed: &(dyn Fn(&Task) -> bool + Sync),
        removed: &mut dyn FnMut(Task),
    ) {
        let Some(taken) = self.take_unread() else {
            return;
        };
        // Its chunks wait in the sweep's pass: once its wait for a stripe
        // ran out, the next chunks, and the sweep after them, wait no more.
        let sweep = self.locks.sweep();
        // Whether each name's file was removed, in the order of `taken`.
        let mut gone = Vec::with_capacity(taken.len());
        for chunk in taken.chunks(CHUNK) {
            let Ok(_all) = self.locks.lock_all(&self.fs, sweep.as_deref()) else {
                break;
            };
            // Every unlink from `active/` holds its task's stripe, so while
            // this pass holds them all, the only names unlinked there are
            // its own: the watch need not queue them (their entries are
            // dealt with below), and notices unlinks again before anyone
            // else can make one.
            let mut touched = self.touched();
            let unnoticed = Unnoticed::start(self);
            let tasks = parallel::map(chunk, |(id, name)| self.remove_one(id, name, doomed));
            drop(unnoticed);
            drop(_all);
            for task in tasks {
                gone.push(task.is_some());
                if let Some(task) = task {
                    touched.mark(Area::Active);
                    removed(task);
                }
            }
            // Running tasks alone: no `expiring/` entry to remove later.
            self.defer_removals(touched, None);
        }
        // The rest back to the snapshot, read now, unless a refresh has
        // read them meanwhile. A name removed unnoticed was never put in
        // the snapshot, unless a refresh read it meanwhile: then it is
        // looked at again (gone, or someone's since).
        let mut state = self.snapshot.lock();
        let ours = state
            .unread
            .as_ref()
            .is_some_and(|t| Arc::ptr_eq(t, &taken));
        if ours {
            state.unread = None;
        }
        let back = taken
            .iter()
            .zip(gone.iter().copied().chain(std::iter::repeat(false)))
            .filter(|((id, _), removed)| {
                if *removed {
                    state.get(id).is_some()
                } else {
                    ours
                }
            })
            .map(|((_, name), _)| (name.clone(), Change::Changed))
            .collect();
        self.revise(&mut state, back);
    }

    /// Removes the finished tasks the `expiring/` index says are due at
    /// `now`, reading each file once under every stripe (1,024 entries at a
    /// time, on every worker), and hands each to `removed` (durable once
    /// the sweep settles). Best effort: what it leaves, and every entry of
    /// a pass of fewer than `parallel::MIN_SHARED` (`large_pass`), is kept
    /// for the first batch of the sweep's scan (`DueEntries`), which reads
    /// the index no more.
    pub(super) fn remove_due(&self, now: OffsetDateTime, removed: &mut dyn FnMut(Task)) {
        let Ok(due) = self.due.read(self, now) else {
            // The scan reads it again, and reports what failed.
            return;
        };
        if due.len() < self.large_pass {
            self.due.keep_left(now, due);
            return;
        }
        // Its entries go once the removals are durable, at the sweep's end
        // (`defer_removals` keeps the lock held until then).
        let hold = match self.locks.hold_batch(&self.fs) {
            Ok(hold) => hold,
            Err(e) => {
                // Kept for the scan's batches, which take the lock again
                // and report each task they then cannot remove.
                tracing::warn!(error = %e, "could not hold the batches lock; the due tasks are left to the sweep's scan");
                self.due.keep_left(now, due);
                return;
            }
        };
        // A snapshot kept by a live watch lets each chunk after the first
        // skip the fsync of `active/` while nothing moved
        // (`settle_moves_once`); a watch whose queue overflowed is set
        // again by this refresh, which the scan's first batch would make
        // anyway.
        {
            let mut state = self.snapshot.lock();
            if !state.complete {
                // Best effort: a refresh that fails leaves each chunk to
                // make `active/` durable.
                let _ = self.refresh(&mut state);
            }
        }
        let mut left: DueList = Vec::new();
        let mut touched = self.touched();
        let mut chunks = due.chunks(CHUNK);
        // In the sweep's pass, as `remove_unread`'s chunks.
        let sweep = self.locks.sweep();
        for chunk in chunks.by_ref() {
            let Ok(_all) = self.locks.lock_all(&self.fs, sweep.as_deref()) else {
                left.extend_from_slice(chunk);
                break;
            };
            // A finished task's file leaves `done/` only once `active/` is
            // durable (FORMAT.md, "Writing protocol"): skipped while
            // nothing moved since this handle last made it so.
            if self.settle_moves_once(&mut self.touched()).is_err() {
                left.extend_from_slice(chunk);
                break;
            }
            let met = parallel::map(chunk, |(position, entry)| {
                self.remove_due_one(&position.id, entry, now)
            });
            drop(_all);
            for (due, task) in chunk.iter().zip(met) {
                match task {
                    Some(task) => {
                        touched.mark(Area::Done);
                        self.remove_index(&task, &mut touched);
                        removed(task);
                    }
                    None => left.push(due.clone()),
                }
            }
        }
        for chunk in chunks {
            left.extend_from_slice(chunk);
        }
        self.defer_removals(touched, Some(&hold));
        self.due.keep_left(now, left);
    }

    /// Reads finished task `id`'s file in `done/`, the caller holding every
    /// stripe, and unlinks it if it holds the task its `expiring/` entry
    /// `entry` names (the same creation time and TTL), finished and expired
    /// at `now`, with no copy in `active/`: the task removed, without its
    /// payloads. Anything else is left to the scan: a stale entry, a file
    /// that does not read (set aside and reported there), a copy in
    /// `active/` (a terminal move cut short: the read rule picks).
    fn remove_due_one(&self, id: &TaskId, entry: &OsStr, now: OffsetDateTime) -> Option<Task> {
        let name = task_name(id);
        let task = self.read_task(self.dir(Area::Done), &name, id).ok()??;
        if !task.is_terminal() || !task.is_expired_at(now) || !layout::is_entry_of(entry, &task) {
            return None;
        }
        match self.fs.stat(self.dir(Area::Active), &name) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            _ => return None,
        }
        match self.remove_name(Area::Done, id) {
            Ok(removed) => removed.then(|| task.without_payloads()),
            Err(e) => {
                tracing::debug!(task = %id, error = %e, "cannot remove an expired task yet; left to the sweep's batches");
                None
            }
        }
    }

    /// Stops (`false`) or resumes (`true`) the watch's noticing of unlinks
    /// from `active/`: whether it did. A watch that cannot resume is ended
    /// (the next refresh makes a full pass).
    fn notice_unlinks(&self, notice: bool) -> bool {
        let mut state = self.snapshot.lock();
        let Some(watch) = &state.watch else {
            return false;
        };
        if watch.notice_unlinks(self.dir(Area::Active), notice) {
            return true;
        }
        if notice {
            state.watch = None;
            state.complete = false;
        }
        false
    }

    /// The names of new task files the change notices give, if there are
    /// enough to read here, kept in `State::unread` meanwhile; the other
    /// notices are applied to the snapshot as a refresh would.
    pub(super) fn take_unread(&self) -> Option<Taken> {
        let mut state = self.snapshot.lock();
        if !state.complete {
            return None;
        }
        let active = self.dir(Area::Active);
        let names = match state
            .watch
            .as_ref()
            .map(|watch| self.fs.drain(watch, active))
        {
            Some(Changes::Names(names)) => names,
            Some(Changes::Lost) => {
                // As a refresh: the next one makes a full pass.
                state.watch = None;
                state.complete = false;
                return None;
            }
            None => return None,
        };
        // Names another sweep took and has not put back: read now.
        let mut rest: HashMap<OsString, Change> = state
            .unread
            .take()
            .map(|taken| {
                taken
                    .iter()
                    .map(|(_, name)| (name.clone(), Change::Changed))
                    .collect()
            })
            .unwrap_or_default();
        let mut unread = Vec::new();
        for (name, change) in names {
            match (change, layout::task_file_id(&name)) {
                (Change::Changed, Some(id))
                    if state.get(&id).is_none()
                        && !state.bad.contains_key(&id)
                        && !rest.contains_key(&name)
                        && !self.unresolved.may_have_two(&id) =>
                {
                    unread.push((id, name));
                }
                _ => {
                    rest.insert(name, change);
                }
            }
        }
        if unread.len() < self.large_pass {
            rest.extend(unread.drain(..).map(|(_, name)| (name, Change::Changed)));
        }
        self.revise(&mut state, rest);
        if unread.is_empty() {
            return None;
        }
        let taken = Arc::new(unread);
        state.unread = Some(Arc::clone(&taken));
        Some(taken)
    }

    /// Reads task `id`'s file `name` in `active/`, the caller holding every
    /// stripe, and removes it if it holds a running task `doomed` picks:
    /// the task removed, without its payloads.
    fn remove_one(
        &self,
        id: &TaskId,
        name: &OsString,
        doomed: &(dyn Fn(&Task) -> bool + Sync),
    ) -> Option<Task> {
        let task = self.read_task(self.dir(Area::Active), name, id).ok()??;
        if task.is_terminal() || !doomed(&task) {
            return None;
        }
        match self.remove_name(Area::Active, id) {
            // Held until the chunk is done: without what the sweep does
            // not need, as its scans ask for it.
            Ok(removed) => removed.then(|| task.without_payloads()),
            Err(e) => {
                tracing::debug!(task = %id, error = %e, "cannot remove an expired task yet; left to the sweep's batches");
                None
            }
        }
    }
}

/// The handle's watch not noticing unlinks from `active/`, until dropped
/// (also when a worker of the pass panics): the caller holds every stripe
/// from before it starts until after it is dropped, so the only unlinks
/// there meanwhile are its own, and it deals with their entries itself
/// (`remove_unread` here, a large removal batch in `write/remove.rs`).
pub(super) struct Unnoticed<'a>(Option<&'a FileBackend>);

impl<'a> Unnoticed<'a> {
    pub(super) fn start(backend: &'a FileBackend) -> Unnoticed<'a> {
        Unnoticed(backend.notice_unlinks(false).then_some(backend))
    }
}

impl Drop for Unnoticed<'_> {
    fn drop(&mut self) {
        if let Some(backend) = self.0 {
            backend.notice_unlinks(true);
            if std::thread::panicking() {
                // The pass did not deal with the entries of all it
                // removed: the next listing makes a full pass.
                backend.snapshot.lock().complete = false;
            }
        }
    }
}
