//! History: pages of the finished tasks in `done/`, in listing order.
//!
//! `done/` has no index but the expiry one, so a page must know where every
//! finished task lists (its creation time and id) and what a scan filters
//! it by (status, expiry, lease) before it can pick its tasks. Reading every
//! file for that, page after page, made a page cost all of history. A
//! finished task's file never changes (a terminal task is final, and task
//! files are never modified in place: FORMAT.md), so a handle keeps those
//! keys ([`HistoryKeys`], about 145 bytes a task) from its first listing of
//! history on, and keeps them current as the snapshot of `active/` is kept:
//! from the change notices of a watch of `done/` (`watch`), or, without
//! one, by file status (`stamp`): `done/`'s own settled status unchanged
//! proves every entry, else each file's does, and only a file whose status
//! changed is read again. Such a pass over `done/` revises what the
//! handle holds in place, not beside it: an entry whose file's status is
//! unchanged stands, a file read is known anew in its entry, and a task
//! whose file is gone is forgotten. A page then reads only its own files.
//!
//! A handle that knows nothing yet need not read every file either: a
//! finished task with a TTL has a second name in `expiring/` that carries
//! its creation time, TTL and id. Where that entry is the same inode as the
//! task's file in `done/` (by the inode number `expiring/` holds for the
//! entry, and `done/`'s listing or the file's status for the file), it says
//! where the task lists and when it expires, and only its status is
//! unknown until its file is read: by the page that returns it, or, for a
//! scan that asks for a status, before the page is picked.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::ops::Bound;
#[cfg(test)]
use std::sync::atomic::Ordering;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use crate::backend::{Scan, Skipped, UnreadableAction};
use crate::error::{Error, Result};
use crate::file::fs::Kind;
use crate::file::layout::{self, Area, task_name};
#[cfg(test)]
use crate::file::places::Places;
use crate::file::recovery::Taking;
use crate::file::scan::Read;
use crate::file::scan::short_of_resources;
use crate::file::stamp::{self, Stamp};
use crate::file::watch::{Change, Changes};
use crate::file::{FileBackend, codec, parallel, recovery};
use crate::id::TaskId;
use crate::status::TaskStatus;
use crate::task::Task;

mod known;

use self::known::{Keys, Known};

/// What a handle knows of `done/` for paging history.
#[derive(Debug, Default)]
pub(crate) struct HistoryKeys {
    known: Mutex<Known>,
    /// Finished tasks with a TTL whose file a listing read with one link:
    /// their `expiring/` entry is gone (a power loss under `Eventual`) or a
    /// copy, given back once the listing is done (see
    /// [`restore_missing_indexes`](FileBackend::restore_missing_indexes)).
    unindexed: Mutex<Vec<TaskId>>,
    /// Files of `done/` read by listings of history (tests only).
    #[cfg(test)]
    pub(super) reads: std::sync::atomic::AtomicU64,
    /// Files of `done/` whose status listings of history took (tests only).
    #[cfg(test)]
    pub(super) stats: std::sync::atomic::AtomicU64,
    /// Reads of `expiring/` by listings of history (tests only).
    #[cfg(test)]
    pub(super) index_reads: std::sync::atomic::AtomicU64,
}

#[cfg(test)]
impl HistoryKeys {
    fn read_one(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    /// Makes every id's hash alike, from a handle's first listing of
    /// history on (for the tests of the collision path).
    pub(super) fn collide_all(&self) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(known.files.is_empty(), "history is known already");
        known.places = Places::colliding(true);
    }

    /// Panics unless at most one known task is found by its hash, the rest
    /// by their id in full (after [`collide_all`](Self::collide_all): the
    /// path a collision takes is the one taken).
    pub(super) fn check_collided(&self) {
        let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        let (placed, collided) = (known.places.len(), known.places.collided());
        assert!(placed > 1, "too few tasks to collide");
        assert!(
            placed - collided <= 1,
            "the ids did not collide: {collided} of {placed} found in full"
        );
    }

    /// Panics unless this handle knows the tasks `fresh` knows, in the same
    /// order and by the same keys, and leaves the same ones unreadable
    /// (`what` says after what).
    pub(super) fn check_knows_as(&self, fresh: &HistoryKeys, what: &str) {
        let knows = |keys: &HistoryKeys| {
            let known = keys.known.lock().unwrap_or_else(PoisonError::into_inner);
            let files: Vec<(TaskId, Keys)> = known
                .files
                .iter()
                .map(|((_, id), (_, keys))| (id.clone(), *keys))
                .collect();
            (files, known.unreadable.clone())
        };
        let (mine, theirs) = (knows(self), knows(fresh));
        assert_eq!(mine.0.len(), theirs.0.len(), "after {what}: tasks known");
        assert_eq!(mine, theirs, "after {what}");
    }

    /// Panics unless every task known in listing order is found by its
    /// id, at its place, and no other is.
    pub(super) fn check(&self) {
        let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        for ((at, id), (_, keys)) in &known.files {
            assert_eq!(keys.at, *at, "task {id} is out of its place");
            assert_eq!(known.places.get(id), Some(*at), "task {id} is not found");
        }
        assert_eq!(
            known.places.len(),
            known.files.len(),
            "history places tasks it does not know"
        );
    }
}

/// How many files a first pass over `done/` turns into entries between
/// two givings back of what it found of them and of their ids
/// (`list_done`): a few hundred KiB of slack at most.
const GIVE_BACK: usize = 4096;

/// The bytes of files read while listing `done/`, kept for a page.
type Kept = HashMap<TaskId, Vec<u8>>;

/// What looking at a file of `done/` found. A pass holds one per file, so
/// its stamps are boxed (as `Known` keeps them): 72 bytes, where a stamp
/// inline made it 120, and the pass's vectors of them, freed after it,
/// raised glibc's threshold for giving memory back.
enum Looked {
    /// Its settled status is the one its keys were read with: what `Known`
    /// holds of it stands.
    Known,
    /// Read: its keys, its settled status taken before (none if it had not
    /// settled), and its bytes if the scan may return it.
    Read {
        keys: Keys,
        stamp: Option<Box<Stamp>>,
        bytes: Option<Vec<u8>>,
    },
    /// Its settled status (if it had settled) and inode number (if it
    /// could be taken) say nothing yet of what it holds.
    Unproven {
        stamp: Option<Box<Stamp>>,
        ino: Option<u64>,
    },
    Gone,
    Bad(Error),
}

impl FileBackend {
    /// The tasks in `done/` that `scan` asks for, shaped: the first
    /// `scan.limit` in listing order after its position, and any whose id
    /// is in `beside` (found in `active/` too: the read rule picks between
    /// the copies); and the entries that could not be read. Only the files
    /// of the page are decoded, and only they and the files this handle
    /// does not know yet are read (see the module docs). A file that does
    /// not read, or whose task does not decode, is set aside and reported,
    /// and the next takes its place.
    pub(super) fn history(
        &self,
        scan: &Scan,
        beside: &HashSet<&TaskId>,
    ) -> Result<(Vec<Task>, Vec<Skipped>)> {
        let page = self.history_page(scan, beside);
        // Whatever became of the listing: what it read is known. Outside
        // `known`'s lock, as it waits for stripes (a process stopped while
        // it holds one keeps it for the `stripe_wait`): another listing of
        // the handle does not wait with it.
        self.restore_unindexed();
        page
    }

    /// [`history`](Self::history) but for giving back the `expiring/`
    /// entries found missing, holding what the handle knows of `done/`.
    fn history_page(
        &self,
        scan: &Scan,
        beside: &HashSet<&TaskId>,
    ) -> Result<(Vec<Task>, Vec<Skipped>)> {
        let mut known = self
            .history_keys
            .known
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        known.short_of = None;
        let listed = self.list_done(&mut known, scan);
        let learned = match (&listed, scan.status) {
            (Ok(_), Some(_)) => self.learn_statuses(&mut known),
            _ => Vec::new(),
        };
        let (mut kept, mut skipped) = listed?;
        skipped.extend(learned);
        if let Some(e) = known.short_of.take() {
            self.keep_reports_once(skipped);
            return Err(e);
        }
        let start = match &scan.after {
            Some(after) => Bound::Excluded((after.created_at.into(), after.id.clone())),
            None => Bound::Unbounded,
        };
        let done = self.dir(Area::Done);
        let tasks = loop {
            // The first `limit` entries in listing order after the scan's
            // position that it asks for (those `beside` apart), and those.
            let mut chosen: Vec<(&TaskId, Keys, Option<Vec<u8>>)> = Vec::new();
            for ((_, id), &(_, keys)) in known.files.range((start.clone(), Bound::Unbounded)) {
                if chosen.len() == scan.limit {
                    break;
                }
                if keys.matches(scan) && !beside.contains(id) {
                    chosen.push((id, keys, None));
                }
            }
            let full = chosen.len() == scan.limit;
            chosen.extend(beside.iter().filter_map(|&id| {
                let &(_, keys) = known.get(id)?;
                keys.matches(scan).then_some((id, keys, None))
            }));
            if !kept.is_empty() {
                for (id, _, bytes) in &mut chosen {
                    *bytes = kept.remove(*id);
                }
            }
            let read = parallel::map(&chosen, |(id, _, bytes)| {
                let name = task_name(id);
                match bytes {
                    Some(bytes) => codec::unwrap(bytes, &done.join(&name), id).map(Some),
                    None => {
                        #[cfg(test)]
                        self.history_keys.read_one();
                        self.read_task(done, &name, id)
                    }
                }
            });
            let mut tasks = Vec::with_capacity(chosen.len());
            // What the page found of its entries: gone (`None`), or another
            // task now, with its keys (deleted and made again under its id,
            // finished, since it was looked at).
            let mut changed: Vec<(TaskId, Option<Keys>)> = Vec::new();
            // Entries known by their index entry alone, and their status.
            let mut learned: Vec<(TaskId, TaskStatus)> = Vec::new();
            // Entries whose file did not read, and what became of it.
            let mut unread: Vec<(TaskId, UnreadableAction)> = Vec::new();
            let (mut dropped, mut moved) = (false, false);
            // A file not read for want of descriptors or memory: the page
            // fails (the entry is as it was, read by the next listing).
            let mut short_of = None;
            for ((id, keys, _), read) in chosen.into_iter().zip(read) {
                let now = match read {
                    Ok(Some(task)) if keys.fits(&Keys::of(&task)) => {
                        if keys.status.is_none() {
                            learned.push((id.clone(), task.status));
                        }
                        tasks.push(scan.shape(task));
                        continue;
                    }
                    Ok(Some(task)) => {
                        moved = true;
                        Some(Keys::of(&task))
                    }
                    Ok(None) => {
                        dropped = true;
                        None
                    }
                    Err(e) if short_of_resources(&e).is_some() => {
                        short_of = short_of.or(Some(e));
                        continue;
                    }
                    Err(e) => {
                        // Left where it is and looked at by every listing,
                        // or gone (a watch, or `done/`'s status, sees it).
                        let reported =
                            recovery::set_aside_task(self, Area::Done, id, e, Taking::IfFree);
                        unread.push((id.clone(), reported.action));
                        skipped.push(reported);
                        dropped = true;
                        continue;
                    }
                };
                changed.push((id.clone(), now));
            }
            // Known no longer as they were: a moved entry takes its new place
            // without a status (the next listing reads it again), a gone one
            // leaves; and the next listing looks at `done/` again.
            if !changed.is_empty() {
                known.complete = false;
            }
            for (id, now) in changed {
                match now {
                    Some(keys) => known.insert(id, None, keys),
                    None => known.remove(&id),
                }
            }
            for (id, action) in unread {
                known.unread(&id, action);
            }
            for (id, status) in learned {
                known.learn(&id, status);
            }
            if let Some(e) = short_of {
                self.keep_reports_once(skipped);
                return Err(e);
            }
            // A page is final unless an entry moved, or one left its place
            // in a full page to the next file.
            if !moved && (!dropped || !full) {
                break tasks;
            }
        };
        Ok((tasks, skipped))
    }

    /// Brings `known` up to date with `done/`: its keys are kept while they
    /// are proven current (by change notices, or by `done/`'s own settled
    /// status, or each by its file's), else read, and revised in place.
    /// Returns the bytes kept of the tasks `scan` may return, when it may
    /// return every file. Files that do not read are set aside (if corrupt)
    /// and reported.
    fn list_done(&self, known: &mut Known, scan: &Scan) -> Result<(Kept, Vec<Skipped>)> {
        let done = self.dir(Area::Done);
        if known.complete {
            let revised = match &known.watch {
                Some(watch) => match self.fs.drain(watch, done) {
                    Changes::Names(names) => Some(self.revise_done(known, names, stamp::clock())),
                    Changes::Lost => {
                        known.watch = None;
                        None
                    }
                },
                None => {
                    let before = stamp::clock();
                    let dir = self.fs.stat_dir(done).ok();
                    let dir = dir.and_then(|status| Stamp::settled(&status, before));
                    (dir.is_some() && dir == known.dir).then(Vec::new)
                }
            };
            if let Some(mut skipped) = revised {
                self.look_again_at_unreadable(known, &mut skipped);
                // A stray name left in `done/` is reported by every
                // listing: the next one looks at everything.
                known.complete = skipped.iter().all(|s| s.id.is_some());
                return Ok((HashMap::new(), skipped));
            }
            known.complete = false;
        }
        if known.watch.is_none() {
            // The watch first: every change after it is noticed, every one
            // before it is seen by the pass below.
            known.watch = self.watch(done);
        }
        let before = stamp::clock();
        let dir = self
            .fs
            .stat_dir(done)
            .ok()
            .and_then(|status| Stamp::settled(&status, before));
        // The ids in one buffer, each id made where it is used: an id and a
        // name per file, kept through the pass and freed after it, would
        // leave holes between what the handle keeps.
        let (mut ids, inodes, mut skipped) = recovery::task_ids_with_inodes(self, Area::Done)?;
        let spans = ids.spans();
        let id_at = |at: usize| TaskId::trusted(ids.at(ids.spans()[at]));
        // A scan that may return every file keeps the bytes of those it
        // returns as it reads them: there is no page to keep the others out
        // of, and they are read once.
        let keep = scan.limit >= spans.len();
        // Each file's status first: the keys known of it hold while it is
        // the file they were read from. A handle that knows nothing yet and
        // follows `done/` by its notices keeps no status (the notices say
        // what changed): the inode numbers of the listing serve.
        let mut looked = if known.files.is_empty() && known.watch.is_some() {
            inodes
                .iter()
                .map(|&ino| Looked::Unproven {
                    stamp: None,
                    ino: Some(ino),
                })
                .collect()
        } else {
            let known = &*known;
            parallel::map(spans, |&span| {
                let id = TaskId::trusted(ids.at(span));
                self.stat_done(known, &id, &task_name(&id), before)
            })
        };
        // Each file's inode number is in what was found of it now.
        drop(inodes);
        // The others are placed by their index entry, when the scan does
        // not read them all anyway (it returns every file, or asks for a
        // status). The index is read after every file's inode number was
        // taken: an entry that names inode `n` then, and a file that was
        // inode `n` before, are one file (its inode cannot have been
        // freed and reused in between while the file kept its name; a file
        // that lost it is seen by the watch, or by its status next time).
        // The index is read whole: worth it where a good part of `done/` is
        // unknown (a fresh handle), not for the few files that changed
        // since the last listing (reading them costs less).
        let unproven = looked
            .iter()
            .filter(|l| matches!(l, Looked::Unproven { .. }))
            .count();
        if !keep && scan.status.is_none() && unproven > 0 && unproven * 4 >= spans.len() {
            let index = self.history_index();
            for (at, looked) in looked.iter_mut().enumerate() {
                if let Looked::Unproven {
                    ref mut stamp,
                    ino: Some(ino),
                } = *looked
                    && let Some(Some(entry)) = index.get(&ino)
                    && let Some((created_at, expires_at)) =
                        layout::expiring_entry_of(entry, &id_at(at))
                {
                    let keys = Keys::indexed(created_at, expires_at);
                    let stamp = stamp.take();
                    *looked = Looked::Read {
                        keys,
                        stamp,
                        bytes: None,
                    };
                }
            }
        }
        let unproven: Vec<usize> = (0..spans.len())
            .filter(|&at| matches!(looked[at], Looked::Unproven { .. }))
            .collect();
        let read = parallel::map(&unproven, |&at| {
            let id = id_at(at);
            let Looked::Unproven { stamp, .. } = &looked[at] else {
                unreachable!("picked as unproven")
            };
            self.read_done(&id, &task_name(&id), stamp.clone(), keep.then_some(scan))
        });
        for (at, read) in unproven.into_iter().zip(read) {
            looked[at] = read;
        }
        let mut settled = true;
        // Those of this reading alone.
        known.unreadable.clear();
        // The files that did not read, reported in the order of the
        // directory; their places left holding nothing to know.
        for (at, found) in looked.iter_mut().enumerate() {
            if matches!(found, Looked::Bad(_)) {
                let nothing = Looked::Unproven {
                    stamp: None,
                    ino: None,
                };
                if let Looked::Bad(e) = std::mem::replace(found, nothing) {
                    skipped.push(self.unread_done(known, &id_at(at), e));
                }
            }
        }
        // A handle that knew nothing builds its map from the entries, each
        // as the map holds it, where they lie (not from a copy of them,
        // and sorted); one that knew history revises what it holds: it
        // forgets the tasks whose file is gone, and knows anew those read.
        let revise = !known.files.is_empty();
        if revise {
            forget_unlisted(known, spans.len(), |at| ids.at(ids.spans()[at]));
        }
        let mut files = Vec::new();
        if !revise {
            files.reserve_exact(looked.len());
        }
        let mut kept = HashMap::new();
        // From the last file back, what was found of the files and their
        // ids given back as the entries take them: the pass and the
        // entries are not held whole at once.
        while let Some(found) = looked.pop() {
            let at = looked.len();
            let id = || TaskId::trusted(ids.at(ids.spans()[at]));
            match found {
                // Its entry stands.
                Looked::Known => {}
                Looked::Read { keys, stamp, bytes } => {
                    settled &= stamp.is_some();
                    let id = id();
                    if let Some(bytes) = bytes {
                        kept.insert(id.clone(), bytes);
                    }
                    match revise {
                        true => known.insert(id, stamp, keys),
                        false => files.push(((keys.at, id), (stamp, keys))),
                    }
                }
                // Removed since the directory was read.
                Looked::Gone => {
                    settled = false;
                    known.remove(&id());
                }
                // Did not read: reported above.
                Looked::Unproven { .. } => {}
                Looked::Bad(_) => unreachable!("reported above"),
            }
            if at % GIVE_BACK == 0 {
                looked.shrink_to_fit();
                ids.keep_first(at);
            }
        }
        drop(ids);
        if !revise {
            known.replace(files);
        }
        if let Some(watch) = &known.watch {
            match self.fs.drain(watch, self.dir(Area::Done)) {
                Changes::Names(names) => {
                    for name in names.keys() {
                        if let Some(id) = layout::task_file_id(name) {
                            kept.remove(&id);
                        }
                    }
                    skipped.extend(self.revise_done(known, names, stamp::clock()));
                }
                Changes::Lost => known.watch = None,
            }
        }
        // Without a watch, `done/`'s status proves the entries only if each
        // was a task whose file had settled.
        known.dir = dir.filter(|_| settled && known.watch.is_none());
        known.complete = skipped.iter().all(|s| s.id.is_some())
            && (known.watch.is_some() || known.dir.is_some());
        Ok((kept, skipped))
    }

    /// Gives the finished tasks listings found without their `expiring/`
    /// entry (`HistoryKeys::unindexed`) their entries back, each it can: a
    /// task whose entry cannot be given back now (its stripe held by a
    /// stopped process, say) is logged, and kept for the next listing to
    /// try again (the listing stands). The caller holds no lock of the
    /// handle's history.
    fn restore_unindexed(&self) {
        let unindexed = || {
            self.history_keys
                .unindexed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        };
        let mut ids = std::mem::take(&mut *unindexed());
        if ids.is_empty() {
            return;
        }
        ids.sort_unstable();
        ids.dedup();
        let restored = self.restore_missing_indexes(&ids);
        for (id, e) in restored.failed {
            tracing::warn!(task = %id, error = %e, "could not give a finished task its expiring/ entry back; the next listing tries again");
            unindexed().push(id);
        }
        if let Err(e) = restored.synced {
            tracing::warn!(error = %e, "could not make the expiring/ entries given back to finished tasks durable");
        }
    }

    /// Revises what `known` holds of the files of `done/` named in
    /// notices; reports those that do not read.
    fn revise_done(
        &self,
        known: &mut Known,
        names: HashMap<OsString, Change>,
        before: SystemTime,
    ) -> Vec<Skipped> {
        let mut skipped = Vec::new();
        let mut changed = Vec::new();
        for (name, change) in names {
            match (layout::task_file_id(&name), change) {
                (Some(id), Change::Gone) => known.remove(&id),
                (None, Change::Gone) => {}
                (Some(id), Change::Changed) => changed.push((id, name)),
                // A stray file, if it is still there: set aside and reported.
                (None, Change::Changed) => {
                    skipped.extend(recovery::set_aside_foreign(self, Area::Done, &name));
                }
            }
        }
        let looked = {
            let known = &*known;
            parallel::map(&changed, |(id, name)| {
                self.look_done(known, id, name, before, None)
            })
        };
        for ((id, _), looked) in changed.into_iter().zip(looked) {
            match looked {
                Looked::Known => {}
                Looked::Read { keys, stamp, .. } => known.insert(id, stamp, keys),
                Looked::Gone => known.remove(&id),
                Looked::Bad(e) => skipped.push(self.unread_done(known, &id, e)),
                Looked::Unproven { .. } => unreachable!("look_done reads an unproven file"),
            }
        }
        skipped
    }

    /// Looks again at each file `known` holds as left unreadable, but those
    /// `skipped` reports already, as at a change notice: a file that reads
    /// now is known by its keys, one gone is forgotten, and one that still
    /// does not read is reported again.
    fn look_again_at_unreadable(&self, known: &mut Known, skipped: &mut Vec<Skipped>) {
        if known.unreadable.is_empty() {
            return;
        }
        let reported: HashSet<&TaskId> = skipped.iter().filter_map(|s| s.id.as_ref()).collect();
        let again: HashMap<OsString, Change> = known
            .unreadable
            .iter()
            .filter(|id| !reported.contains(id))
            .map(|id| (task_name(id), Change::Changed))
            .collect();
        skipped.extend(self.revise_done(known, again, stamp::clock()));
    }

    /// Sets aside the file of finished task `id`, which did not read (`e`),
    /// or leaves it in place if it cannot be moved, as `known` then knows
    /// it ([`Known::unread`]); keeps `e` if it is for want of descriptors or
    /// memory (the listing fails with it). The report.
    fn unread_done(&self, known: &mut Known, id: &TaskId, e: Error) -> Skipped {
        known.note_short_of(&e);
        let reported = recovery::set_aside_task(self, Area::Done, id, e, Taking::IfFree);
        known.unread(id, reported.action);
        reported
    }

    /// Reads the files of the tasks `known` places by their index entry
    /// alone, for their status (a scan asks for one); reports those that
    /// do not read. A file that is another task now takes its place.
    fn learn_statuses(&self, known: &mut Known) -> Vec<Skipped> {
        let unread: Vec<(TaskId, Option<Box<Stamp>>, Keys)> = known
            .files
            .iter()
            .filter(|(_, (_, keys))| keys.status.is_none())
            .map(|((_, id), (stamp, keys))| (id.clone(), stamp.clone(), *keys))
            .collect();
        let read = parallel::map(&unread, |(id, stamp, _)| {
            self.read_done(id, &task_name(id), stamp.clone(), None)
        });
        let mut skipped = Vec::new();
        for ((id, stamp, keys), read) in unread.into_iter().zip(read) {
            match read {
                Looked::Read { keys: now, .. } if keys.fits(&now) => known.insert(id, stamp, now),
                looked => {
                    // Known no longer as it was: the next listing looks at
                    // `done/` again.
                    known.complete = false;
                    match looked {
                        Looked::Read { keys: now, .. } => known.insert(id, None, now),
                        Looked::Bad(e) => skipped.push(self.unread_done(known, &id, e)),
                        _ => known.remove(&id),
                    }
                }
            }
        }
        skipped
    }

    /// The names of the `expiring/` index by inode number (`None` for an
    /// inode with more than one name: it places nothing). Empty if the
    /// index cannot be read: each file is read instead.
    fn history_index(&self) -> HashMap<u64, Option<OsString>> {
        #[cfg(test)]
        self.history_keys
            .index_reads
            .fetch_add(1, Ordering::Relaxed);
        let entries = match self.fs.read_dir_inodes(self.expiring.dir()) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::debug!(error = %e, "could not read expiring/; reading the files of done/ instead");
                return HashMap::new();
            }
        };
        let mut index = HashMap::with_capacity(entries.len());
        for (name, ino) in entries {
            index
                .entry(ino)
                .and_modify(|twice: &mut Option<OsString>| *twice = None)
                .or_insert(Some(name));
        }
        index
    }

    /// What task `id`'s file `name` in `done/` holds, as far as a listing
    /// needs to know: read only if its settled status is not the one its
    /// keys in `known` were read with; its bytes kept if `keep` (a scan)
    /// may return it.
    fn look_done(
        &self,
        known: &Known,
        id: &TaskId,
        name: &OsStr,
        before: SystemTime,
        keep: Option<&Scan>,
    ) -> Looked {
        match self.stat_done(known, id, name, before) {
            Looked::Unproven { stamp, .. } => self.read_done(id, name, stamp, keep),
            looked => looked,
        }
    }

    /// What the status of task `id`'s file `name` in `done/` (settled
    /// since `before`) proves: the keys `known` holds of it, if it is the
    /// file they were read from; else nothing yet.
    fn stat_done(&self, known: &Known, id: &TaskId, name: &OsStr, before: SystemTime) -> Looked {
        #[cfg(test)]
        self.history_keys.stats.fetch_add(1, Ordering::Relaxed);
        let status = match self.fs.stat(self.dir(Area::Done), name) {
            Ok(status) => status,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Looked::Gone,
            // Its read reports it.
            Err(_) => {
                return Looked::Unproven {
                    stamp: None,
                    ino: None,
                };
            }
        };
        let stamp = Stamp::settled(&status, before);
        if let Some(stamp) = &stamp
            && let Some((Some(was), _)) = known.get(id)
            && **was == *stamp
        {
            return Looked::Known;
        }
        Looked::Unproven {
            stamp: stamp.map(Box::new),
            // Only a regular file is a task's file (and the inode of an
            // index entry).
            ino: (status.kind == Kind::File).then_some(status.ino),
        }
    }

    /// Task `id`'s file `name` in `done/`, read for its keys (`stamp`: its
    /// settled status, taken before); its bytes kept if `keep` (a scan)
    /// may return it.
    fn read_done(
        &self,
        id: &TaskId,
        name: &OsStr,
        stamp: Option<Box<Stamp>>,
        keep: Option<&Scan>,
    ) -> Looked {
        #[cfg(test)]
        self.history_keys.read_one();
        match self.read_entry_linked(Area::Done, name, id) {
            (Read::Task { keys, bytes }, links) => {
                let keys = Keys::read(&keys);
                let bytes = keep.is_some_and(|scan| keys.matches(scan)).then_some(bytes);
                // A finished task with a TTL has a second name, its entry:
                // without it, no sweep would find the task.
                if links == 1 && keys.expires_at.is_some() {
                    self.history_keys
                        .unindexed
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(id.clone());
                }
                Looked::Read { keys, stamp, bytes }
            }
            (Read::Gone, _) => Looked::Gone,
            (Read::Bad(e), _) => Looked::Bad(e),
        }
    }
}

/// Makes `known` forget each task whose file a listing of `done/` does
/// not name: `listed` of its `count` ids. They are looked up in an order
/// of their places in the listing (4 bytes a file), not copied.
fn forget_unlisted<'a>(known: &mut Known, count: usize, listed: impl Fn(usize) -> &'a str) {
    let mut order: Vec<u32> = (0..count)
        .map(|at| u32::try_from(at).expect("fewer than 2^32 files in done/"))
        .collect();
    let id_at = |at: &u32| listed(*at as usize);
    order.sort_unstable_by(|a, b| id_at(a).cmp(id_at(b)));
    known.forget_unless(|id| {
        order
            .binary_search_by(|at| id_at(at).cmp(id.as_str()))
            .is_ok()
    });
}

#[cfg(test)]
mod tests {
    /// The sizes history's memory is reckoned with (a finished task's keys
    /// and file status, beside its id, in a map slot; and what a first pass
    /// holds per file while it runs; BENCHMARKS.md's `rss/history` row).
    #[test]
    fn a_finished_tasks_keys_take_40_bytes_and_with_their_status_48() {
        assert_eq!(size_of::<super::Keys>(), 40);
        assert_eq!(size_of::<super::known::Held>(), 48);
        assert_eq!(size_of::<super::Looked>(), 72);
    }
}
