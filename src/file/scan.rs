//! Scans: the running tasks from a handle's snapshot of `active/`, kept
//! current; history from `done/` (`history`); expired history from the
//! `expiring/` index.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::backend::{Position, Scan, Scanned, Scope, Skipped, UnreadableAction};
use crate::error::{Error, Result};
use crate::file::fs::{Dir, is_short_of_resources};
use crate::file::layout::{self, Area, expiring_name, stripe, task_name};
use crate::file::moment::Moment;
use crate::file::read::newer;
use crate::file::snapshot::{MAX_DECODED, Slot, Staged, State, worth_decoding};
use crate::file::stamp::{self, Stamp};
use crate::file::watch::{Change, Changes, Watch};
use crate::file::{FileBackend, codec, parallel, recovery};
use crate::id::TaskId;
use crate::task::Task;

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

/// An entry of the snapshot a listing returns: its task decoded already,
/// or its file's bytes (or, if not kept, its file) to decode.
enum Listed<'a> {
    Decoded(Arc<Task>),
    /// With whether to keep the task decoded once read.
    Encoded(&'a Slot, Option<Stamp>, bool),
}

/// How a task file read for a listing.
pub(super) enum Read {
    Gone,
    Task { keys: codec::Keys, bytes: Vec<u8> },
    Bad(Error),
}

/// A copy of `e` if it is an I/O error for want of descriptors or memory
/// ([`is_short_of_resources`]): what a listing that met it fails with.
pub(super) fn short_of_resources(e: &Error) -> Option<Error> {
    match e {
        // The same error again (its operation, path and error code).
        Error::Io { op, path, source } if is_short_of_resources(source) => {
            Some(e.for_each_of(op, path))
        }
        _ => None,
    }
}

/// Keeps in `first` a copy of `e` ([`short_of_resources`]) unless it holds
/// one already: a pass that met one fails with the first.
pub(super) fn note_short_of(first: &mut Option<Error>, e: &Error) {
    if first.is_none() {
        *first = short_of_resources(e);
    }
}

impl FileBackend {
    /// A watch on `dir` (`active/` or `done/`) for this handle's listings:
    /// `None` for a handle built without change notices, or without a
    /// watch, and a warning the first time the kernel refuses this handle
    /// one (its listings then fall back on file status; another OS, which
    /// has no change notices, is not told).
    pub(super) fn watch(&self, dir: &Dir) -> Option<Watch> {
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

    /// One batch of a scan: the running tasks from the snapshot of
    /// `active/`; with [`Scope::All`], the finished ones from `done/`
    /// (expired ones from the `expiring/` index when that is all the scan
    /// asks for).
    pub(super) fn scan_tasks(&self, scan: &Scan) -> Result<Scanned> {
        let (mut tasks, mut skipped) = self.scan_active(scan)?;
        if scan.scope == Scope::All {
            let history = match scan.expired_at {
                Some(at) => self.expired_history(scan, at),
                None => {
                    let beside: HashSet<&TaskId> = tasks.iter().map(|t| &t.id).collect();
                    self.history(scan, &beside)
                }
            };
            let (history, reports) = match history {
                Ok(history) => history,
                Err(e) => {
                    // What the running tasks' part reports once is the
                    // next scan's to report.
                    self.keep_reports_once(skipped);
                    return Err(e);
                }
            };
            skipped.extend(reports);
            if history.is_empty() && self.unresolved.is_empty() {
                // The snapshot's tasks alone, in its listing order (a sweep
                // of running tasks, say): nothing to merge or sort.
                tasks.retain(|t| scan.matches(t) && scan.is_after(t));
                return Ok(Scanned::new(tasks, skipped));
            }
            // A task in both areas (a terminal move under way) is listed
            // once, by the read rule.
            let mut by_id: HashMap<TaskId, Task> =
                tasks.drain(..).map(|t| (t.id.clone(), t)).collect();
            for task in history {
                match by_id.get(&task.id) {
                    Some(active) if !newer(&task, active) => {}
                    _ => {
                        by_id.insert(task.id.clone(), task);
                    }
                }
            }
            tasks = by_id
                .into_values()
                .filter(|t| scan.matches(t) && scan.is_after(t))
                .collect();
            tasks.sort_unstable_by(Task::listing_order);
            tasks.truncate(scan.limit);
        }
        Ok(Scanned::new(tasks, skipped))
    }

    /// The running tasks (and interrupted moves, for [`Scope::All`]) the
    /// scan asks for, from the snapshot, decoded; and every file of
    /// `active/` that could not be read.
    fn scan_active(&self, scan: &Scan) -> Result<(Vec<Task>, Vec<Skipped>)> {
        // Set aside what the last refreshes found unreadable.
        let untried: Vec<(TaskId, Error)> = {
            let mut state = self.snapshot.lock();
            state.short_of = None;
            self.refresh(&mut state)?;
            self.retry_unreadable(&mut state);
            // A file it could not read for want of descriptors or memory:
            // every file may fail so, and a listing without them (each
            // reported unreadable) would answer as if they were not there.
            if let Some(e) = state.short_of.take() {
                return Err(e);
            }
            self.retry_foreign(&mut state);
            state
                .bad
                .iter_mut()
                .filter(|(_, bad)| !bad.tried)
                .map(|(id, bad)| {
                    bad.tried = true;
                    (
                        id.clone(),
                        Error::corrupt(&bad.report.location, &bad.report.reason),
                    )
                })
                .collect()
        };
        self.set_aside_bad(untried);
        let mut state = self.snapshot.lock();
        let mut skipped: Vec<Skipped> = state.reported.take();
        // The reports a listing makes once: kept for the next if this one
        // fails.
        let once = skipped.len();
        skipped.extend(state.left.values().map(|left| left.report.clone()));
        skipped.extend(state.bad.values().map(|b| b.report.clone()));
        let mut tasks = Vec::new();
        let mut undecodable = Vec::new();
        let mut short_of = None;
        let few = state.active() <= MAX_DECODED;
        // Entries are taken as many as the page still needs (a task decoded
        // already as it is), the others decoded side by side when there
        // are many; an entry that yields no task (undecodable, gone, or
        // overruled by the read rule) leaves room that more entries fill.
        let mut decoded = Vec::new();
        #[cfg(test)]
        let mut decodes = 0;
        let mut entries = state.select(scan);
        loop {
            let want = scan.limit.saturating_sub(tasks.len());
            let page: Vec<Listed<'_>> = entries
                .by_ref()
                .take(want)
                .map(|(slot, entry)| match state.decoded(slot) {
                    Some(task) => Listed::Decoded(Arc::clone(task)),
                    None => Listed::Encoded(slot, entry.stamp(), few && worth_decoding(slot)),
                })
                .collect();
            if page.is_empty() {
                break;
            }
            let read: Vec<Option<Result<Option<Task>>>> =
                parallel::map(&page, |listed| match listed {
                    Listed::Decoded(_) => None,
                    Listed::Encoded(slot, _, keep) => {
                        let id = slot.id();
                        let task = match slot.bytes() {
                            Some(bytes) => {
                                let path = self.dir(Area::Active).join(task_name(&id));
                                codec::unwrap(bytes, &path, &id).map(Some)
                            }
                            // Read now: a task deleted and made again under
                            // its id since is another task, in another place
                            // of the order (the next refresh puts it there),
                            // not this slot's; a version the scan does not
                            // ask for (finished since, its terminal version
                            // in `active/` mid-move) is left to the next
                            // refresh too, as a task gone since.
                            None => self.read(Area::Active, &id).map(|task| {
                                task.filter(|t| {
                                    Moment::from(t.created_at) == slot.created_at()
                                        && scan.matches(t)
                                })
                            }),
                        };
                        // Shaped as decoded, so that the page never holds
                        // what the scan does not ask for; whole where the
                        // snapshot keeps it decoded (shaped below).
                        Some(task.map(|t| t.map(|t| if *keep { t } else { scan.shape(t) })))
                    }
                });
            for (listed, read) in page.into_iter().zip(read) {
                let (slot, stamp, keep, task) = match (listed, read) {
                    (Listed::Decoded(task), _) => {
                        tasks.extend(self.by_read_rule(
                            scan.shaped(&task),
                            scan,
                            &mut skipped,
                            &mut short_of,
                        ));
                        continue;
                    }
                    (Listed::Encoded(slot, stamp, keep), Some(task)) => (slot, stamp, keep, task),
                    (Listed::Encoded(..), None) => unreachable!("every encoded entry is decoded"),
                };
                #[cfg(test)]
                {
                    decodes += 1;
                }
                match task {
                    Ok(Some(mut task)) => {
                        if keep {
                            decoded.push((slot.created_at(), Arc::new(task.clone())));
                            task = scan.shape(task);
                        }
                        tasks.extend(self.by_read_rule(task, scan, &mut skipped, &mut short_of));
                    }
                    Ok(None) => {} // gone since: the next refresh sees it
                    Err(e) if short_of_resources(&e).is_some() => note_short_of(&mut short_of, &e),
                    Err(e) => undecodable.push((slot.id(), e, stamp)),
                }
            }
        }
        drop(entries);
        if let Some(e) = short_of {
            // The entry is as it was, its file unread: the next listing
            // reads it, and makes the reports this one took.
            for report in skipped.drain(..once) {
                state.report(report);
            }
            return Err(e);
        }
        for (created_at, task) in &decoded {
            state.keep_decoded(*created_at, task);
        }
        #[cfg(test)]
        {
            state.decodes += decodes;
        }
        #[cfg(test)]
        {
            state.hits += 1;
        }
        if undecodable.is_empty() {
            return Ok((tasks, skipped));
        }
        // Files whose keys read but whose task does not decode: set aside
        // now, as a file that does not read at all would have been.
        let ids: Vec<TaskId> = undecodable.iter().map(|(id, ..)| id.clone()).collect();
        let mut untried = Vec::new();
        for (id, e, stamp) in undecodable {
            self.mark_unreadable(&mut state, &id, &e, stamp);
            if let Some(bad) = state.bad.get_mut(&id) {
                bad.tried = true;
            }
            untried.push((id, e));
        }
        drop(state);
        self.set_aside_bad(untried);
        let mut state = self.snapshot.lock();
        skipped.append(&mut state.reported.take());
        skipped.extend(
            ids.iter()
                .filter_map(|id| Some(state.bad.get(id)?.report.clone())),
        );
        Ok((tasks, skipped))
    }

    /// The task `scan` lists for `task`, read from `active/`, by the read
    /// rule: on a store whose `open` could not resolve every task left in
    /// both areas, a running copy may have a terminal one in `done/` that
    /// overrules it (so `list` shows what `get` answers). `None`: the task
    /// the rule picks is not one the scan asks for, or is gone, or a copy
    /// could not be read (then reported in `skipped`, naming the file that
    /// failed, or, for want of descriptors or memory, kept in `short_of` to
    /// fail the listing as the page's own reads do). `task` comes shaped
    /// for the scan already; a copy from `done/` is shaped here.
    fn by_read_rule(
        &self,
        task: Task,
        scan: &Scan,
        skipped: &mut Vec<Skipped>,
        short_of: &mut Option<Error>,
    ) -> Option<Task> {
        if !self.unresolved.may_have_two(&task.id) {
            return Some(task);
        }
        match self.find(&task.id) {
            Ok(Some(found)) => (scan.matches(&found.task) && scan.is_after(&found.task))
                .then(|| scan.shape(found.task)),
            Ok(None) => None,
            Err(e) if short_of_resources(&e).is_some() => {
                note_short_of(short_of, &e);
                None
            }
            Err(e) => {
                // Either copy may be the one that failed.
                let location = match e.path() {
                    Some(path) => path.to_owned(),
                    None => self.dir(Area::Done).join(task_name(&task.id)),
                };
                skipped.push(Skipped::new(
                    Some(task.id),
                    location.display().to_string(),
                    e.to_string(),
                    UnreadableAction::LeftInPlace,
                ));
                None
            }
        }
    }

    /// Reads again each file of `active/` that last failed to read for a
    /// reason that may pass (an I/O error): a file left in place is met
    /// again by the next listing, though it has not changed since.
    fn retry_unreadable(&self, state: &mut State) {
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

    /// Sets aside each unreadable file of `active/` in `bad`, and notes in
    /// the snapshot what became of it: gone (reported by the next listing,
    /// once) or still there (reported by every listing until it changes).
    /// Outside the snapshot's lock: setting aside takes a stripe lock, and
    /// writers take the snapshot's lock under theirs.
    fn set_aside_bad(&self, bad: Vec<(TaskId, Error)>) {
        let reports: Vec<(TaskId, Skipped)> = bad
            .into_iter()
            .map(|(id, err)| {
                let report = recovery::set_aside_task(self, Area::Active, &id, err);
                (id, report)
            })
            .collect();
        let mut state = self.snapshot.lock();
        for (id, report) in reports {
            match report.action {
                UnreadableAction::SetAside => {
                    state.bad.remove(&id);
                    state.report(report);
                }
                _ => {
                    if let Some(bad) = state.bad.get_mut(&id) {
                        bad.report = report;
                    }
                }
            }
        }
    }

    /// Running task `id` as the snapshot holds it, if the snapshot is kept
    /// current by change notices and holds the task's bytes: a `get` that
    /// opens no file. The notices of every write that returned before this
    /// call are queued by then (the kernel queues them inside the write's
    /// own system call), so this sees each such write as a file read would.
    /// `None` means: read the files (the task is terminal, elsewhere, or
    /// the snapshot cannot vouch for it, or `open` could not resolve its
    /// copies in both areas).
    pub(super) fn load_running(&self, id: &TaskId) -> Result<Option<Task>> {
        if self.unresolved.may_have_two(id) {
            return Ok(None);
        }
        let held = {
            let mut state = self.snapshot.lock();
            if !state.complete || state.watch.is_none() {
                return Ok(None);
            }
            self.refresh(&mut state)?;
            if state.watch.is_none() {
                return Ok(None);
            }
            match held(&state, id) {
                Some(held) => held,
                None => return Ok(None),
            }
        };
        Ok(self.decode_held(id, held))
    }

    /// [`load_running`](FileBackend::load_running), only if it needs no
    /// file read and no wait: the snapshot is free (no other thread is
    /// listing or refreshing it), kept current by change notices, and no
    /// notice is pending (so nothing was written since it was last brought
    /// up to date: the same proof a drain that finds nothing gives).
    /// `None` means: call `load_running` (or read the files).
    pub(super) fn load_running_at_once(&self, id: &TaskId) -> Option<Task> {
        if self.unresolved.may_have_two(id) {
            return None;
        }
        let held = {
            let state = self.snapshot.try_lock()?;
            if !state.complete || !state.watch.as_ref()?.is_quiet() {
                return None;
            }
            held(&state, id)?
        };
        self.decode_held(id, held)
    }

    /// A task the snapshot held, decoded.
    fn decode_held(&self, id: &TaskId, held: Held) -> Option<Task> {
        let task = match held {
            Held::Decoded(task) => Some(task),
            Held::Bytes(bytes) => {
                let path = self.dir(Area::Active).join(task_name(id));
                codec::unwrap(&bytes, &path, id).ok()
            }
        };
        #[cfg(test)]
        if task.is_some() {
            self.snapshot.lock().gets += 1;
        }
        task
    }

    /// Brings the snapshot up to date: from the change notices if it has a
    /// live watch, else by the file-status proof; a full pass when neither
    /// holds.
    pub(super) fn refresh(&self, state: &mut State) -> Result<()> {
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

    /// Tries again to set aside the foreign names of `active/` left in
    /// place that no pass tried since the last listing (with change
    /// notices, none does: no notice names them again), so that one is set
    /// aside once the quarantine has room.
    fn retry_foreign(&self, state: &mut State) {
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
    pub(super) fn revise(&self, state: &mut State, names: HashMap<OsString, Change>) {
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
    fn mark_unreadable(&self, state: &mut State, id: &TaskId, e: &Error, stamp: Option<Stamp>) {
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

    /// Reads the file `name` of `area` for a listing: its keys and
    /// revision (the task is not decoded), and its bytes.
    pub(super) fn read_entry(&self, area: Area, name: &OsStr, id: &TaskId) -> Read {
        self.read_entry_linked(area, name, id).0
    }

    /// [`read_entry`](Self::read_entry), with the file's number of links
    /// when it was read (0 if it was not).
    pub(super) fn read_entry_linked(&self, area: Area, name: &OsStr, id: &TaskId) -> (Read, u64) {
        let dir = self.dir(area);
        let (bytes, links) = match self.read_linked_within(dir, name, codec::LARGEST_FILE) {
            Ok(Some(read)) => read,
            Ok(None) => return (Read::Gone, 0),
            Err(e) => return (Read::Bad(e), 0),
        };
        let path = dir.join(name);
        match codec::keys(&bytes, &path, id) {
            Ok(keys) => (Read::Task { keys, bytes }, links),
            Err(e) => (Read::Bad(e), links),
        }
    }

    /// The tasks in `done/` expired at `at` that `scan` asks for, found from
    /// the `expiring/` index: the entries' names say where each lists and
    /// when it expires, so only the tasks returned are read, and the
    /// directory is read once per pass ([`DueEntries`]). Entries that are no
    /// longer their task's file (a crash between a move's steps) are
    /// removed.
    fn expired_history(
        &self,
        scan: &Scan,
        at: time::OffsetDateTime,
    ) -> Result<(Vec<Task>, Vec<Skipped>)> {
        let due = self.due.entries(self, scan, at)?;
        let start = scan.after.as_ref().map_or(0, |after| {
            due.partition_point(|(position, _)| position <= after)
        });
        let (mut tasks, mut skipped, mut stale) = (Vec::new(), Vec::new(), Vec::new());
        let mut looked = start;
        while tasks.len() < scan.limit && looked < due.len() {
            // As many entries as the page still needs, read on every worker
            // (an entry found stale or unreadable leaves its place to the
            // next window), then taken in listing order.
            let window = &due[looked..due.len().min(looked + scan.limit - tasks.len())];
            looked += window.len();
            let met = parallel::map(window, |(position, index)| {
                self.meet_indexed(&position.id, index, scan)
            });
            for ((position, index), met) in window.iter().zip(met) {
                let id = &position.id;
                match met {
                    Indexed::Task(task) => {
                        if scan.removes {
                            self.proofs.remember(&task, index);
                        }
                        tasks.push(task);
                    }
                    Indexed::Copy(task) => tasks.push(task),
                    Indexed::Stale => stale.push((id.clone(), index.clone())),
                    Indexed::Gone => {}
                    Indexed::Unreadable(e) => {
                        skipped.push(recovery::set_aside_task(self, Area::Done, id, e));
                    }
                }
            }
        }
        if let Err(e) = self.drop_stale_indexes(&stale) {
            // Housekeeping: the entries stay for the next pass to try
            // again, and the tasks found are the pass's all the same.
            tracing::warn!(store = %self.root.display(), error = %e, "could not remove stale expiring/ entries");
        }
        if looked == due.len() {
            // The pass is through: nothing to keep for its next batch.
            self.due.end();
        }
        Ok((tasks, skipped))
    }

    /// The task in `done/` whose `expiring/` entry is `index`, read if the
    /// entry is still its file (a hard link), shaped as `scan` asks; or if
    /// the file holds the very task the entry names (a store copied without
    /// its hard links). A file that cannot be looked at is reported, and
    /// its entry kept: it is no sign that the entry is stale.
    fn meet_indexed(&self, id: &TaskId, index: &OsStr, scan: &Scan) -> Indexed {
        let done = self.dir(Area::Done);
        let name = task_name(id);
        let linked = match self.entry_link(index, id) {
            Link::Same => true,
            Link::Other => false,
            Link::Unknown(path, e) => return Indexed::Unreadable(Error::io("stat", path, e)),
        };
        match self.read_task(done, &name, id) {
            Ok(Some(task)) if linked => Indexed::Task(scan.shape(task)),
            Ok(Some(task)) if layout::is_entry_of(index, &task) => Indexed::Copy(scan.shape(task)),
            Ok(Some(_)) => Indexed::Stale,
            Ok(None) if linked => Indexed::Gone,
            Ok(None) => Indexed::Stale,
            Err(e) => Indexed::Unreadable(e),
        }
    }

    /// Whether the `expiring/` entry `index` is still the file
    /// `done/<id>.json`: one inode under both names. Then it is the file
    /// the entry was linked from, unchanged since (task files never change
    /// in place, and a linked inode cannot be reused); else the entry is
    /// stale, or the file gone, or either cannot be looked at.
    pub(super) fn entry_is_file(&self, index: &OsStr, id: &TaskId) -> bool {
        matches!(self.entry_link(index, id), Link::Same)
    }

    /// How the `expiring/` entry `index` stands to the file
    /// `done/<id>.json`.
    fn entry_link(&self, index: &OsStr, id: &TaskId) -> Link {
        let done = self.dir(Area::Done);
        let name = task_name(id);
        let look = |dir: &Dir, name: &OsStr| match self.fs.stat(dir, name) {
            Ok(status) => Ok(Some((status.dev, status.ino))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Link::Unknown(dir.join(name), e)),
        };
        match (look(self.expiring.dir(), index), look(done, &name)) {
            (Err(unknown), _) | (_, Err(unknown)) => unknown,
            (Ok(Some(entry)), Ok(Some(file))) if entry == file => Link::Same,
            _ => Link::Other,
        }
    }

    /// Removes each `expiring/` entry `(id, index)`, under its task's lock,
    /// that is still not the file of its task in `done/` (nor of one in
    /// `active/` on its way there), after an fsync of `done/` made with
    /// those locks held: an entry is stale once its task's file is gone
    /// from `done/`, which may be before that removal is durable (another
    /// handle's sweep settles its removals at its end, or failed to), and a
    /// power loss must not bring the file back without its entry.
    pub(super) fn drop_stale_indexes(&self, entries: &[(TaskId, OsString)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        // After a failed fsync of `done/` this handle cannot tell a removal
        // from it durable (a power loss may bring the file back), so the
        // entries stay, and the caller hears so (a repair would report
        // them removed): a stale one is harmless, a finished task come
        // back without its entry would never be swept.
        if self.area(Area::Done).has_failed() {
            return Err(Error::io(
                "remove stale entries of",
                self.root.join("expiring"),
                std::io::Error::other(
                    "an fsync of done/ failed earlier on this handle: a removal it may have \
                     lost could come back, so its entry stays until the store is opened again",
                ),
            ));
        }
        // Every stripe of the entries held at once (in stripe order, the
        // lock order), so that what is judged under them holds through the
        // fsync below: a removal of a task's file from `done/` is made
        // under its lock, so one made before the lock is covered by the
        // fsync, and none comes after it until the entry is gone.
        let mut stripes: Vec<usize> = entries.iter().map(|(id, _)| stripe(id)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let _guards = self.locks.lock_each(&self.fs, &stripes)?;
        let stale: Vec<&(TaskId, OsString)> = entries
            .iter()
            .filter(|(id, index)| self.index_is_stale(id, index))
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        self.sync(Area::Done, self.area(Area::Done).before())?;
        // One entry that cannot go keeps no other from going: the first
        // error is returned once all were tried.
        let mut first = None;
        for (_, index) in stale {
            if let Err(e) = self.remove_index_entry(index) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Removes the `expiring/` entry `index` of task `id` if it is still
    /// not the file of the task in `done/` (nor of one in `active/`); the
    /// caller holds the task's lock, and has made durable any removal of
    /// the task's file from `done/` (see
    /// [`drop_stale_indexes`](Self::drop_stale_indexes)), or moved it into
    /// `quarantine/` and made that durable (a set-aside).
    pub(super) fn drop_stale_index_locked(&self, id: &TaskId, index: &OsStr) -> Result<()> {
        if !self.index_is_stale(id, index) {
            return Ok(());
        }
        self.remove_index_entry(index)
    }

    /// Removes the `expiring/` entry `index` (gone already is as good).
    fn remove_index_entry(&self, index: &OsStr) -> Result<()> {
        match self.fs.remove(self.expiring.dir(), index) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", self.expiring.dir().join(index), e)),
        }
    }

    /// Whether the `expiring/` entry `index` of task `id` is there and is
    /// not the file of the task in `done/`, nor of one in `active/` on its
    /// way there, nor names the task `done/` holds (a store copied without
    /// its hard links); final only under the task's lock. A file that
    /// cannot be looked at or read for now leaves the entry not stale:
    /// only a file known gone or another task's makes it so.
    pub(super) fn index_is_stale(&self, id: &TaskId, index: &OsStr) -> bool {
        let file = task_name(id);
        let Ok(entry) = self.fs.stat(self.expiring.dir(), index) else {
            return false;
        };
        for area in [Area::Done, Area::Active] {
            match self.fs.stat(self.dir(area), &file) {
                Ok(task) if (task.dev, task.ino) == (entry.dev, entry.ino) => return false,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(_) => return false,
            }
        }
        match self.read_task(self.dir(Area::Done), &file, id) {
            Ok(Some(task)) => !layout::is_entry_of(index, &task),
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// Whether the finished `task`, whose file is `done/<id>.json`, has a
    /// TTL and lacks its `expiring/` entry (so no sweep would find it).
    /// Final only under the task's lock.
    pub(super) fn index_is_missing(&self, task: &Task) -> bool {
        let Some(index) = expiring_name(task) else {
            return false;
        };
        let file = self.fs.stat(self.dir(Area::Done), &task_name(&task.id));
        let entry = self.fs.stat(self.expiring.dir(), &index);
        match (file, entry) {
            (Ok(file), Ok(entry)) => (file.dev, file.ino) != (entry.dev, entry.ino),
            (Ok(_), Err(_)) => true,
            (Err(_), _) => false,
        }
    }
}

/// What a sweep's scan met at an `expiring/` entry.
// One per entry of a window, taken apart in order at once: a box would add
// an allocation per task read.
#[allow(clippy::large_enum_variant)]
enum Indexed {
    /// The task, its file still the entry's.
    Task(Task),
    /// The task the entry names, its file another inode (the entry a copy,
    /// not a link): taken without a proof.
    Copy(Task),
    /// The entry is no longer its task's file.
    Stale,
    /// The file went between the entry's check and the read.
    Gone,
    /// The file does not read as a task.
    Unreadable(Error),
}

/// How an `expiring/` entry stands to its task's file in `done/`.
enum Link {
    /// One inode under both names.
    Same,
    /// Another inode, or either name gone.
    Other,
    /// Either could not be looked at: the path, and why.
    Unknown(std::path::PathBuf, io::Error),
}

/// What the snapshot holds of a running task.
// Made once per `get` and taken apart at once: a box would add an
// allocation to the path it exists to keep short.
#[allow(clippy::large_enum_variant)]
enum Held {
    /// Decoded already.
    Decoded(Task),
    /// Its file's bytes.
    Bytes(Vec<u8>),
}

/// Running task `id` as `state` holds it, if it holds it whole.
fn held(state: &State, id: &TaskId) -> Option<Held> {
    match state.get(id) {
        Some((slot, entry)) if !entry.status.is_terminal() => {
            match (state.decoded(slot), slot.bytes()) {
                (Some(task), _) => Some(Held::Decoded(Task::clone(task))),
                (None, Some(bytes)) => Some(Held::Bytes(bytes.to_vec())),
                (None, None) => None,
            }
        }
        _ => None,
    }
}

/// The `expiring/` entries due at an instant, in listing order, kept from a
/// pass's first batch for the batches that go on from it: a sweep of
/// finished tasks reads the directory once, not once per batch of 1,024
/// (which made a sweep of many finished tasks grow with their square).
///
/// A scan from the start (no position: a pass's first batch) reads the
/// directory; one that goes on from a position at the same instant uses
/// what the last read kept. An entry a batch removed lists before the next
/// batch's position; one made since the pass began (a task that finished
/// meanwhile, already expired) is left to the next pass, as a task created
/// behind a pass's position is. A sweep's [`remove_due`] reads the
/// directory before its first batch and keeps the entries it left: that
/// first batch starts from them. Freed when a pass is through, or when the
/// sweep settles.
///
/// [`remove_due`]: FileBackend::remove_due
#[derive(Debug, Default)]
pub(super) struct DueEntries {
    kept: Mutex<Option<Due>>,
    /// How many times the directory was read.
    #[cfg(test)]
    pub(super) reads: std::sync::atomic::AtomicUsize,
}

/// The entries [`DueEntries`] keeps, and the instant they are due at.
#[derive(Debug)]
struct Due {
    at: time::OffsetDateTime,
    entries: Arc<DueList>,
    /// What a sweep's `remove_due` left, for its first batch.
    left: bool,
}

/// The `expiring/` entries due at an instant, in listing order: where each
/// task lists, and the entry's name.
pub(super) type DueList = Vec<(Position, OsString)>;

impl DueEntries {
    /// The entries of `expiring/` due at `at`, in listing order, for `scan`.
    fn entries(
        &self,
        backend: &FileBackend,
        scan: &Scan,
        at: time::OffsetDateTime,
    ) -> Result<Arc<DueList>> {
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(due) = kept
            .as_mut()
            .filter(|due| due.at == at && (scan.after.is_some() || due.left))
        {
            due.left = false;
            return Ok(Arc::clone(&due.entries));
        }
        let entries = Arc::new(self.read(backend, at)?);
        *kept = Some(Due {
            at,
            entries: Arc::clone(&entries),
            left: false,
        });
        Ok(entries)
    }

    /// Reads the entries of `expiring/` due at `at`, in listing order.
    pub(super) fn read(&self, backend: &FileBackend, at: time::OffsetDateTime) -> Result<DueList> {
        let names = backend
            .fs
            .read_dir(backend.expiring.dir())
            .map_err(|e| Error::io("read directory", backend.expiring.dir().path(), e))?;
        #[cfg(test)]
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut entries: DueList = names
            .into_iter()
            .filter_map(|name| {
                let (position, expires) = layout::expiring_entry(&name)?;
                expires.is_some_and(|x| x <= at).then_some((position, name))
            })
            .collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(entries)
    }

    /// Keeps `entries`, due at `at`, for the next pass's first batch.
    pub(super) fn keep_left(&self, at: time::OffsetDateTime, entries: DueList) {
        *self.kept.lock().unwrap_or_else(PoisonError::into_inner) = Some(Due {
            at,
            entries: Arc::new(entries),
            left: true,
        });
    }

    /// Frees what is kept: the pass is through.
    pub(super) fn end(&self) {
        *self.kept.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}
