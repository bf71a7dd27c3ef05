//! The snapshot of `active/` kept current: from the change notices of a
//! live watch, else by the file-status proof, else by a full pass; the
//! files it could not read read again, and the names that changed revised.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::backend::{Skipped, UnreadableAction};
use crate::error::{Error, Result};
use crate::file::fs::Dir;
use crate::file::layout::{self, Area, task_name};
use crate::file::scan::{Read, note_short_of};
use crate::file::snapshot::{Staged, State};
use crate::file::stamp::{self, Stamp};
use crate::file::watch::{Change, Changes, Watch};
use crate::file::{FileBackend, codec, parallel, recovery};
use crate::id::TaskId;

/// What looking at a file of `active/` found: its entry provably current,
/// or what reading it gave (and its settled status, without a watch).
enum Look {
    Current,
    /// Gone before it was read.
    Vanished,
    Read(Read, Option<Stamp>),
    /// Read, its bytes past what the snapshot's budget had room for in
    /// this pass: its keys alone.
    Over(codec::Keys, Option<Stamp>),
}

impl FileBackend {
    /// A watch on `dir` (`active/` or `done/`) for this handle's listings:
    /// `None` for a handle built without change notices, or without a
    /// watch, and a warning the first time the kernel refuses this handle
    /// one (its listings then fall back on file status; another OS, which
    /// has no change notices, is not told).
    pub(in crate::file) fn watch(&self, dir: &Dir) -> Option<Watch> {
        use std::sync::atomic::Ordering::Relaxed;
        if !self.snapshot.watch.load(Relaxed) {
            return None;
        }
        match self.fs.watch(dir) {
            Ok(watch) => Some(watch),
            Err(e) if e.kind() == io::ErrorKind::Unsupported => None,
            Err(e) => {
                if !self.snapshot.watch_refused.swap(true, Relaxed) {
                    tracing::warn!(
                        dir = %dir.path().display(),
                        error = %e,
                        "cannot follow the store's change notices (inotify); this handle lists by file status instead, \
                         which is slower with many tasks (the limits: sysctl fs.inotify.max_user_instances and \
                         max_user_watches, and the process's open files)"
                    );
                }
                None
            }
        }
    }

    /// Brings the snapshot up to date: from the change notices if it has a
    /// live watch, else by the file-status proof; a full pass when neither
    /// holds.
    pub(in crate::file) fn refresh(&self, state: &mut State) -> Result<()> {
        if state.complete {
            match &state.watch {
                Some(watch) => match self.fs.drain(watch, self.dir(Area::Active)) {
                    Changes::Names(mut names) => {
                        // A later notice of a name a sweep took says more.
                        for (_, name) in state.unread.take().iter().flat_map(|t| t.iter()) {
                            names.entry(name.clone()).or_insert(Change::Changed);
                        }
                        self.revise(state, names);
                        return Ok(());
                    }
                    Changes::Lost => {
                        state.watch = None;
                        state.complete = false;
                    }
                },
                None => {
                    let (_, settled) = self.observe_active(stamp::clock())?;
                    if settled.is_some() && settled == state.dir {
                        return Ok(());
                    }
                    state.complete = false;
                }
            }
        }
        let active = self.dir(Area::Active);
        if state.watch.is_none() {
            // The watch first: every change after it is noticed, every one
            // before it is seen by the pass below.
            state.watch = self.watch(active);
        }
        let before = stamp::clock();
        let (status, settled) = self.observe_active(before)?;
        // The pass reads every name a sweep took, too.
        state.unread = None;
        let whole = self.full_pass(state, status, settled, before)?;
        if let Some(watch) = &state.watch {
            match self.fs.drain(watch, active) {
                Changes::Names(names) => self.revise(state, names),
                Changes::Lost => {
                    state.watch = None;
                    if !whole {
                        // The notices that would bring back a name a
                        // rename hid from the pass are lost: the pass is
                        // made again as a handle without a watch makes it
                        // (in one call if it fits).
                        let before = stamp::clock();
                        let (status, settled) = self.observe_active(before)?;
                        self.full_pass(state, status, settled, before)?;
                    }
                }
            }
        }
        state.dir = settled;
        state.complete = true;
        Ok(())
    }

    /// `active/`'s status, and the same if it had settled at `before`.
    fn observe_active(
        &self,
        before: std::time::SystemTime,
    ) -> Result<(Option<Stamp>, Option<Stamp>)> {
        let dir = self.dir(Area::Active);
        let status = self
            .fs
            .stat_dir(dir)
            .map_err(|e| Error::io("stat", dir.path(), e))?;
        Ok((Stamp::of(&status), Stamp::settled(&status, before)))
    }

    /// Reads `active/` whole, reusing each entry whose file's settled status
    /// is unchanged; returns whether it was read in one call.
    ///
    /// A file renamed over while a `readdir` is under way may be missing
    /// from it (tmpfs gives the new entry a new place, behind the reader),
    /// or named twice (the old place not yet passed, the new one ahead).
    /// Without a watch, the directory is read in one call if it fits
    /// (which holds its lock: no rename comes between); if it does not,
    /// while it changed during a pass it is read again and the passes'
    /// names joined (at most four passes). With a watch, the names it
    /// reports after the pass are read too, which brings back any a rename
    /// hid; if those notices are lost, the caller makes the pass again
    /// without the watch. (A watched pass read in one call too would not
    /// need that, but its buffer, up to 8 MiB, raises glibc's sliding mmap
    /// threshold, and the process then keeps 1.5–4.5 MiB more resident at
    /// 10,000 running tasks: BENCHMARKS.md, "Resident memory".) Each id is
    /// read and counted once.
    ///
    /// `status` is the directory's before the pass, `settled` the same if
    /// it had settled at `before`.
    fn full_pass(
        &self,
        state: &mut State,
        mut status: Option<Stamp>,
        mut settled: Option<Stamp>,
        before: std::time::SystemTime,
    ) -> Result<bool> {
        const PASSES: usize = 4;
        let unwatched = state.watch.is_none();
        let (mut ids, whole, foreign) = recovery::task_ids(self, Area::Active, unwatched)?;
        // The pass tries every foreign name again: what it leaves in place
        // is what it reports.
        state.left.clear();
        foreign
            .into_iter()
            .for_each(|(name, r)| state.report_foreign(name, r));
        if unwatched && !whole {
            for _ in 1..PASSES {
                // A pass is whole if the status before it had settled and
                // is the same after it. One that had not settled proves
                // nothing: a directory's times may stay the same across
                // renames made within a tick (tmpfs), so a change during
                // the pass may leave them as they were.
                let (now, now_settled) = self.observe_active(stamp::clock())?;
                if now.is_none() || (settled.is_some() && now == status) {
                    break;
                }
                (status, settled) = (now, now_settled);
                let (more, _, foreign) = recovery::task_ids(self, Area::Active, false)?;
                foreign
                    .into_iter()
                    .for_each(|(name, r)| state.report_foreign(name, r));
                ids.join(&more);
            }
        }
        let present: HashSet<&str> = ids.iter().collect();
        let gone: Vec<TaskId> = state
            .ids()
            .filter(|id| !present.contains(id.as_str()))
            .collect();
        for id in gone {
            state.remove(&id);
            state.bad.remove(&id);
        }
        // A name the directory gave twice is read and counted once.
        let twice = present.len() < ids.spans().len();
        drop(present);
        if twice {
            ids.dedup();
        }
        let mut fresh = Vec::new();
        let id_at = |&span: &(usize, usize)| TaskId::trusted(ids.at(span));
        self.reread_all(state, ids.spans(), id_at, before, Some(&mut fresh));
        state.put_all(fresh);
        Ok(whole)
    }

    /// Reads again each file of `active/` that last failed to read for a
    /// reason that may pass (an I/O error): a file left in place is met
    /// again by the next listing, though it has not changed since.
    pub(super) fn retry_unreadable(&self, state: &mut State) {
        let again: Vec<TaskId> = state
            .bad
            .iter()
            .filter(|(_, bad)| bad.retry)
            .map(|(id, _)| id.clone())
            .collect();
        // Forgotten first: its unchanged status must not excuse a read.
        for id in &again {
            state.bad.remove(id);
        }
        self.reread_all(state, &again, TaskId::clone, stamp::clock(), None);
    }

    /// Tries again to set aside the foreign names of `active/` left in
    /// place that no pass tried since the last listing (with change
    /// notices, none does: no notice names them again), so that one is set
    /// aside once the quarantine has room.
    pub(super) fn retry_foreign(&self, state: &mut State) {
        let untried: Vec<OsString> = state
            .left
            .iter()
            .filter(|(_, left)| !left.tried)
            .map(|(name, _)| name.clone())
            .collect();
        for name in untried {
            match recovery::set_aside_foreign(self, Area::Active, &name) {
                Some(report) => state.report_foreign(name, report),
                None => state.forget_foreign(&name),
            }
        }
        for left in state.left.values_mut() {
            left.tried = false;
        }
    }

    /// Revises the entries of the files of `active/` named in notices.
    pub(in crate::file) fn revise(&self, state: &mut State, names: HashMap<OsString, Change>) {
        let mut changed = Vec::new();
        for (name, change) in names {
            match (layout::task_file_id(&name), change) {
                // Gone as of its last notice: nothing to look at.
                (Some(id), Change::Gone) => {
                    state.remove(&id);
                    state.bad.remove(&id);
                }
                (None, Change::Gone) => state.forget_foreign(&name),
                (Some(id), Change::Changed) => changed.push(id),
                // A stray file, if it is still there: set aside and reported.
                (None, Change::Changed) => {
                    match recovery::set_aside_foreign(self, Area::Active, &name) {
                        Some(report) => state.report_foreign(name, report),
                        None => state.forget_foreign(&name),
                    }
                }
            }
        }
        self.reread_all(state, &changed, TaskId::clone, stamp::clock(), None);
    }

    /// Reads the file of each task of `items` (its id made by `id_of`) in
    /// `active/` into the snapshot, unless its settled status proves the
    /// entry current; the tasks read are put in `fresh` if given (a full
    /// pass puts them all in at once). The files are read side by side when
    /// there are many (a handle that meets thousands of new tasks at once),
    /// then put in one by one. Each task's id (and file name) is made where
    /// it is used and dropped at once, so that nothing of them is left
    /// between the bytes the snapshot keeps.
    fn reread_all<T: Sync>(
        &self,
        state: &mut State,
        items: &[T],
        id_of: impl Fn(&T) -> TaskId + Sync,
        before: std::time::SystemTime,
        mut fresh: Option<&mut Vec<Staged>>,
    ) {
        let looked = {
            let state = &*state;
            // The byte budget spent as the files are read, so that a pass
            // over files larger in all than the snapshot keeps never holds
            // them all at once (a fresh handle's first listing of 300 MB of
            // tasks held 300 MB).
            let room = AtomicUsize::new(state.room_for(items.iter().map(&id_of)));
            parallel::map(items, |item| match self.look(state, &id_of(item), before) {
                Look::Read(Read::Task { keys, bytes }, stamp)
                    if room
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                            left.checked_sub(bytes.len())
                        })
                        .is_err() =>
                {
                    Look::Over(keys, stamp)
                }
                look => look,
            })
        };
        for (item, look) in items.iter().zip(looked) {
            self.put_looked(state, &id_of(item), look, fresh.as_deref_mut());
        }
    }

    /// What task `id`'s file in `active/` holds now, as far as the snapshot
    /// needs to know: read only if its settled status does not prove the
    /// entry current.
    fn look(&self, state: &State, id: &TaskId, before: std::time::SystemTime) -> Look {
        let name = &task_name(id);
        // With a watch, its notices prove entries current: no stamp is kept
        // (`State::put`), so none is taken.
        let stamp = if state.watch.is_some() {
            None
        } else {
            match self.fs.stat(self.dir(Area::Active), name) {
                Ok(status) => Stamp::settled(&status, before),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Look::Vanished,
                // The read below reports it.
                Err(_) => None,
            }
        };
        if stamp.is_some() {
            let known = state
                .get(id)
                .map(|(_, e)| e.stamp())
                .or_else(|| state.bad.get(id).map(|b| b.stamp));
            if known == Some(stamp) {
                return Look::Current;
            }
        }
        Look::Read(self.read_entry(Area::Active, name, id), stamp)
    }

    /// Puts in the snapshot what [`look`](Self::look) found of task `id`.
    fn put_looked(
        &self,
        state: &mut State,
        id: &TaskId,
        look: Look,
        fresh: Option<&mut Vec<Staged>>,
    ) {
        let (read, stamp) = match look {
            Look::Current => {
                #[cfg(test)]
                {
                    state.reused += 1;
                }
                return;
            }
            Look::Vanished => (Read::Gone, None),
            Look::Over(keys, stamp) => {
                #[cfg(test)]
                {
                    state.reads += 1;
                }
                match fresh {
                    Some(fresh) => fresh.push(state.stage(id, &keys, None, stamp)),
                    None => state.put(id, &keys, None, stamp),
                }
                return;
            }
            Look::Read(read, stamp) => {
                #[cfg(test)]
                {
                    state.reads += 1;
                }
                (read, stamp)
            }
        };
        match read {
            Read::Gone => {
                state.remove(id);
                state.bad.remove(id);
            }
            Read::Task { keys, bytes } => match fresh {
                Some(fresh) => fresh.push(state.stage(id, &keys, Some(bytes), stamp)),
                None => state.put(id, &keys, Some(bytes), stamp),
            },
            Read::Bad(e) => {
                self.mark_unreadable(state, id, &e, stamp);
                if !matches!(e, Error::Corrupt { .. }) {
                    // Never set aside: may be readable later.
                    if let Some(bad) = state.bad.get_mut(id) {
                        bad.tried = true;
                    }
                }
            }
        }
    }

    /// Marks running task `id`'s file unreadable in `state` (`e`, and the
    /// status it was read at), reported as left where it is: what every
    /// listing reports until a listing sets it aside, or it changes. One
    /// that failed for a reason that may pass (an I/O error) is read again
    /// by every listing ([`retry_unreadable`](Self::retry_unreadable)),
    /// whichever read met it: a refresh's, or a page's of a task whose
    /// bytes the snapshot does not keep.
    pub(super) fn mark_unreadable(
        &self,
        state: &mut State,
        id: &TaskId,
        e: &Error,
        stamp: Option<Stamp>,
    ) {
        let location = self.dir(Area::Active).join(task_name(id));
        let report = Skipped::new(
            Some(id.clone()),
            location.display().to_string(),
            e.to_string(),
            UnreadableAction::LeftInPlace,
        );
        state.mark_bad(id, report, stamp);
        if let Some(bad) = state.bad.get_mut(id) {
            bad.retry = matches!(e, Error::Io { .. });
        }
        note_short_of(&mut state.short_of, e);
    }
}
