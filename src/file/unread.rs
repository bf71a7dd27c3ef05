//! A sweep's removal of the expired running tasks whose files the handle
//! has not read yet.
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
//! `parallel::MIN_SHARED` new files up: fewer are read into the snapshot as
//! usual.

use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::Arc;

use crate::file::layout;
use crate::file::watch::{Change, Changes};
use crate::file::write::Touched;
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
        // Whether each name's file was removed, in the order of `taken`.
        let mut gone = Vec::with_capacity(taken.len());
        for chunk in taken.chunks(CHUNK) {
            let Ok(_all) = self.locks.lock_all(&self.fs) else {
                break;
            };
            // Every unlink from `active/` holds its task's stripe, so while
            // this pass holds them all, the only names unlinked there are
            // its own: the watch need not queue them (their entries are
            // dealt with below), and notices unlinks again before anyone
            // else can make one.
            let unnoticed = Unnoticed::start(self);
            let tasks = parallel::map(chunk, |(id, name)| self.remove_one(id, name, doomed));
            drop(unnoticed);
            drop(_all);
            let mut touched = Touched::default();
            for task in tasks {
                gone.push(task.is_some());
                if let Some(task) = task {
                    touched.mark(Area::Active);
                    removed(task);
                }
            }
            self.defer_removals(touched);
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
        let names = match state.watch.as_ref().map(|watch| watch.drain()) {
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
        if unread.len() < parallel::MIN_SHARED {
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
/// (`remove_unread` here, a large removal batch in `write.rs`).
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
