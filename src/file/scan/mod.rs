//! Scans: the running tasks from a handle's snapshot of `active/`, kept
//! current; history from `done/` (`history`); expired history from the
//! `expiring/` index.
//!
//! This module holds a scan's batch (the snapshot's running tasks decoded
//! a page at a time, merged with history by the read rule) and the reads
//! of single entries; [`refresh`] keeps the snapshot current, [`running`]
//! answers a `get` of a running task from it, and [`expiring`] lists and
//! tidies the `expiring/` index.

mod expiring;
mod refresh;
mod running;

pub(super) use expiring::{DueEntries, DueList};

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::sync::Arc;

use crate::backend::{Scan, Scanned, Scope, Skipped, UnreadableAction};
use crate::error::{Error, Result};
use crate::file::fs::is_short_of_resources;
use crate::file::layout::{Area, task_name};
use crate::file::lock::Pass;
use crate::file::moment::Moment;
use crate::file::read::newer;
use crate::file::snapshot::{MAX_DECODED, Slot, worth_decoding};
use crate::file::stamp::Stamp;
use crate::file::{FileBackend, codec, parallel, recovery};
use crate::id::TaskId;
use crate::task::Task;

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

/// A batch of `tasks` and `skipped` entries whose scan removed `cleaned`
/// leftovers of crashed writers.
fn scanned(tasks: Vec<Task>, skipped: Vec<Skipped>, cleaned: usize) -> Scanned {
    let mut batch = Scanned::new(tasks, skipped);
    batch.cleaned = cleaned;
    batch
}

/// Keeps in `first` a copy of `e` ([`short_of_resources`]) unless it holds
/// one already: a pass that met one fails with the first.
pub(super) fn note_short_of(first: &mut Option<Error>, e: &Error) {
    if first.is_none() {
        *first = short_of_resources(e);
    }
}

impl FileBackend {
    /// One batch of a scan: the running tasks from the snapshot of
    /// `active/`; with [`Scope::All`], the finished ones from `done/`
    /// (expired ones from the `expiring/` index when that is all the scan
    /// asks for).
    pub(super) fn scan_tasks(&self, scan: &Scan) -> Result<Scanned> {
        // Its waits for stripes: the sweep's pass in a sweep, else one of
        // its own.
        let sweep = self.locks.sweep();
        let own = Pass::default();
        let pass = sweep.as_deref().unwrap_or(&own);
        let (mut tasks, mut skipped) = self.scan_active(scan, pass)?;
        let mut cleaned = 0;
        if scan.scope == Scope::All {
            let history = match scan.expired_at {
                Some(at) => {
                    self.expired_history(scan, at, pass)
                        .map(|(history, reports, removed)| {
                            cleaned = removed;
                            (history, reports)
                        })
                }
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
                return Ok(scanned(tasks, skipped, cleaned));
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
        Ok(scanned(tasks, skipped, cleaned))
    }

    /// The running tasks (and interrupted moves, for [`Scope::All`]) the
    /// scan asks for, from the snapshot, decoded; and every file of
    /// `active/` that could not be read.
    fn scan_active(&self, scan: &Scan, pass: &Pass) -> Result<(Vec<Task>, Vec<Skipped>)> {
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
        self.set_aside_bad(untried, pass);
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
        self.set_aside_bad(untried, pass);
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

    /// Sets aside each unreadable file of `active/` in `bad`, and notes in
    /// the snapshot what became of it: gone (reported by the next listing,
    /// once) or still there (reported by every listing until it changes).
    /// Outside the snapshot's lock: setting aside takes a stripe lock, and
    /// writers take the snapshot's lock under theirs. The stripes are
    /// waited for in `pass` (the scan's, or its sweep's).
    fn set_aside_bad(&self, bad: Vec<(TaskId, Error)>, pass: &Pass) {
        let reports: Vec<(TaskId, Skipped)> = bad
            .into_iter()
            .map(|(id, err)| {
                let report = recovery::set_aside_task(
                    self,
                    Area::Active,
                    &id,
                    err,
                    recovery::Taking::Waiting(pass),
                );
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
}
