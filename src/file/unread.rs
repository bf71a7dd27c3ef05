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

use crate::file::layout::{self, task_name};
use crate::file::watch::{Change, Changes};
use crate::file::write::Touched;
use crate::file::{Area, FileBackend, codec, parallel};
use crate::id::TaskId;
use crate::task::Task;

/// How many files a share of the pass reads and removes under one taking of
/// every stripe: writers wait for one chunk at most.
const CHUNK: usize = 1_024;

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
        let unread = self.take_unread();
        if unread.is_empty() {
            return;
        }
        let mut gone: Vec<OsString> = Vec::new();
        for chunk in unread.chunks(CHUNK) {
            let Ok(_all) = self.locks.lock_all(&self.fs) else {
                break;
            };
            let shares = parallel::shares(
                chunk,
                |_, _| false,
                |share| self.remove_share(share, doomed),
            );
            drop(_all);
            let mut touched = Touched::default();
            for (tasks, share_touched) in shares {
                touched.absorb(share_touched);
                for task in tasks {
                    gone.push(task_name(&task.id));
                    removed(task);
                }
            }
            self.defer_removals(touched);
        }
        // The rest back to the snapshot, read now; the names removed are
        // gone (their notices say so again at the next drain).
        let mut state = self.snapshot.lock();
        let mut back = std::mem::take(&mut state.unread);
        for name in &gone {
            back.remove(name);
        }
        let back = back
            .into_iter()
            .map(|name| (name, Change::Changed))
            .collect();
        self.revise(&mut state, back);
    }

    /// The names of new task files the change notices give, if there are
    /// enough to read here, kept in `State::unread` meanwhile; the other
    /// notices are applied to the snapshot as a refresh would.
    pub(super) fn take_unread(&self) -> Vec<(TaskId, OsString)> {
        let mut state = self.snapshot.lock();
        if !state.complete {
            return Vec::new();
        }
        let names = match state.watch.as_ref().map(|watch| watch.drain()) {
            Some(Changes::Names(names)) => names,
            Some(Changes::Lost) => {
                // As a refresh: the next one makes a full pass.
                state.watch = None;
                state.complete = false;
                return Vec::new();
            }
            None => return Vec::new(),
        };
        let mut rest: HashMap<OsString, Change> = std::mem::take(&mut state.unread)
            .into_iter()
            .map(|name| (name, Change::Changed))
            .collect();
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
        state
            .unread
            .extend(unread.iter().map(|(_, name)| name.clone()));
        unread
    }

    /// Reads each file of `share`, the caller holding every stripe, and
    /// removes the running tasks `doomed` picks: the tasks removed, and what
    /// their removal touched.
    fn remove_share(
        &self,
        share: &[(TaskId, OsString)],
        doomed: &(dyn Fn(&Task) -> bool + Sync),
    ) -> (Vec<Task>, Touched) {
        let active = self.dir(Area::Active);
        let mut touched = Touched::default();
        let mut tasks = Vec::new();
        for (id, name) in share {
            let Ok(Some(bytes)) = self.read_bytes(active, name) else {
                continue;
            };
            let Ok(task) = codec::unwrap(&bytes, &active.join(name), id) else {
                continue;
            };
            if task.is_terminal() || !doomed(&task) {
                continue;
            }
            match self.remove_name(Area::Active, id) {
                Ok(true) => {
                    touched.mark(Area::Active);
                    tasks.push(task);
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(task = %id, error = %e, "cannot remove an expired task yet; left to the sweep's batches");
                }
            }
        }
        (tasks, touched)
    }
}
