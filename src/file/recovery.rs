//! Cleaning up after crashed writers, and setting unreadable files aside in
//! a bounded quarantine; the ids of an area's task files ([`task_files`]).

mod task_files;

pub(super) use self::task_files::{task_ids, task_ids_with_inodes};

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use time::OffsetDateTime;

use crate::Durability;
use crate::backend::{Skipped, UnreadableAction};
use crate::error::{Error, Result};
use crate::file::FileBackend;
use crate::file::fs::{Dir, Fs, Kind, is_read_only};
use crate::file::layout::{self, Area, stripe, task_name};
use crate::file::lock::Pass;
use crate::file::park::writer_is_running;
use crate::file::stamp::{self, Stamp};
use crate::id::TaskId;

/// At most this many files are kept in `quarantine/`; once it is full,
/// unreadable files are left where they are (and still reported).
pub(crate) const MAX_QUARANTINED: usize = 1_000;

/// The quarantine area, and how full this handle believes it is.
#[derive(Debug)]
pub(crate) struct Quarantine {
    dir: Dir,
    /// Files in `quarantine/`, counted at open and on every move in; other
    /// processes may add some, so a full count is checked again on disk.
    count: AtomicUsize,
    /// The directory's status when it was last counted full, if it had
    /// settled then: while it stays the same, nothing was added or removed
    /// (an operator may empty it), and it is full without counting again.
    /// So a pass over many files that cannot be set aside pays one `fstat`
    /// each, not a listing of the quarantine each. One that had not settled
    /// proves nothing: a directory's times may stay the same across changes
    /// made within a tick (tmpfs).
    full: Mutex<Option<Stamp>>,
}

/// What became of a file to be set aside.
pub(super) enum Moved {
    Aside(PathBuf),
    Gone,
    Full,
}

impl Quarantine {
    pub(crate) fn new(fs: &Fs, dir: Dir) -> Quarantine {
        let count = fs.read_dir(&dir).map_or(0, |names| names.len());
        Quarantine {
            dir,
            count: AtomicUsize::new(count),
            full: Mutex::new(None),
        }
    }

    /// Makes the files moved into the quarantine so far durable there
    /// (under `Durability::Immediate`).
    fn sync(&self, store: &FileBackend) -> Result<()> {
        if store.durability != Durability::Immediate {
            return Ok(());
        }
        store
            .fs
            .sync_dir(&self.dir)
            .map_err(|e| Error::io("fsync directory", self.dir.path(), e))
    }

    /// Gives the entry `name` of `from` a name in the quarantine, as
    /// `<label>.<unix nanos>.<pid>.<seq>.<name>`, unless it is full: a
    /// second name (a hard link), which [`move_aside`] removes from `from`
    /// once the new one is durable; a directory, which cannot have two, is
    /// renamed in. A file that has a name of its label there already (a
    /// set-aside cut short between the two names by a crash or a failed
    /// fsync) keeps that one, full or not: it is never set aside twice.
    fn take_in(&self, fs: &Fs, from: &Dir, name: &OsStr, label: &str) -> io::Result<Entry> {
        let file = match fs.stat(from, name) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Entry::Gone),
            Err(e) => return Err(e),
        };
        // (A directory's links are its subdirectories', never a name here.)
        if file.nlink > 1
            && file.kind != Kind::Dir
            && let Some(there) = self.holding(fs, label, (file.dev, file.ino))?
        {
            return Ok(Entry::Linked(self.dir.join(there)));
        }
        if self.is_full(fs)? {
            return Ok(Entry::Full);
        }
        let mut attempts = 0;
        loop {
            let target = quarantined_name(name, label);
            let entered = match fs.link(from, name, &self.dir, &target) {
                Ok(()) => Entry::Linked(self.dir.join(&target)),
                // Another process's name, made the same nanosecond.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 16 => {
                    attempts += 1;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Entry::Gone),
                // A directory has one name (and a file system without hard
                // links gives none): moved in one step.
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error()) => {
                    match fs.rename(from, name, &self.dir, &target) {
                        Ok(()) => Entry::Renamed(self.dir.join(&target)),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Entry::Gone),
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            };
            self.count.fetch_add(1, Ordering::Relaxed);
            return Ok(entered);
        }
    }

    /// The name in the quarantine, of those that start with `label`, of
    /// the file `(dev, ino)`, if it has one.
    fn holding(&self, fs: &Fs, label: &str, file: (u64, u64)) -> io::Result<Option<OsString>> {
        let prefix = format!("{label}.");
        Ok(fs.read_dir(&self.dir)?.into_iter().find(|there| {
            there.as_bytes().starts_with(prefix.as_bytes())
                && fs
                    .stat(&self.dir, there)
                    .is_ok_and(|status| (status.dev, status.ino) == file)
        }))
    }

    /// Whether the quarantine holds its bound of files.
    fn is_full(&self, fs: &Fs) -> io::Result<bool> {
        if self.count.load(Ordering::Relaxed) < MAX_QUARANTINED {
            return Ok(false);
        }
        let before = stamp::clock();
        let status = fs.stat_dir(&self.dir)?;
        let stamp = Stamp::settled(&status, before);
        let mut full = self.full.lock().unwrap_or_else(PoisonError::into_inner);
        if stamp.is_some() && *full == stamp {
            return Ok(true);
        }
        // Counted after the times were taken: a change in between makes
        // the next look count again.
        let on_disk = fs.read_dir(&self.dir)?.len();
        self.count.store(on_disk, Ordering::Relaxed);
        if on_disk >= MAX_QUARANTINED {
            *full = stamp;
            return Ok(true);
        }
        *full = None;
        Ok(false)
    }
}

/// A fresh name in the quarantine for the entry `name`:
/// `<label>.<unix nanos>.<pid>.<seq>.<name>`.
fn quarantined_name(name: &OsStr, label: &str) -> OsString {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let mut target = OsString::from(format!(
        "{label}.{}.{}.{}.",
        OffsetDateTime::now_utc().unix_timestamp_nanos(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    // The name, cut where the whole would be longer than a name may be
    // (the prefix is unique on its own): a long name is still set aside.
    let room = NAME_MAX.saturating_sub(target.len());
    target.push(OsStr::from_bytes(&name.as_bytes()[..name.len().min(room)]));
    target
}

/// What [`Quarantine::take_in`] did with an entry.
enum Entry {
    /// It has a name in the quarantine, its old name still to go.
    Linked(PathBuf),
    /// It was renamed into the quarantine (a directory).
    Renamed(PathBuf),
    Gone,
    Full,
}

/// Why a file was not set aside when the quarantine had no room.
fn quarantine_full() -> String {
    format!("the quarantine is full ({MAX_QUARANTINED} entries)")
}

impl Moved {
    /// Why the file was not moved, if it was not.
    pub(super) fn why_not(&self) -> Option<String> {
        match self {
            Moved::Aside(_) => None,
            Moved::Gone => Some("gone".to_owned()),
            Moved::Full => Some(quarantine_full()),
        }
    }
}

/// The longest name a directory entry may have (Linux's `NAME_MAX`).
const NAME_MAX: usize = 255;

/// Moves the entry `name` of `dir` into the quarantine (its name there
/// starts with `label`): where it went, or why not (gone, or the
/// quarantine full); an I/O error names the path and the operation.
///
/// Every set-aside goes through here (or [`move_aside_all`], which moves
/// several entries of one directory with one fsync of each directory for
/// all), and the move is made durable before
/// it returns (under `Durability::Immediate`), its arrival before its
/// leaving: the entry is linked into `quarantine/`, which is fsynced, then
/// unlinked from `dir`, which is fsynced. A directory is made durable by
/// its own fsync alone, and another writer's fsync of `dir` may come at
/// any moment: were the entry renamed, that fsync could make its leaving
/// durable before its arrival, and a power loss would lose it from both.
/// A crash between the two leaves it with both names, and the next
/// set-aside of it finds its name in the quarantine and only finishes the
/// move. (A directory, which cannot have two names, is renamed, then made
/// durable in both.) An area's fsync goes through its group
/// (`FileBackend::sync_changed`), which knows of its failures.
pub(super) fn move_aside(
    store: &FileBackend,
    dir: &Dir,
    name: &OsStr,
    label: &str,
) -> Result<Moved> {
    move_aside_all(store, dir, &[name], label)
        .pop()
        .expect("one result per entry")
}

/// [`move_aside`] for several entries of `dir` at once: every arrival in
/// `quarantine/` made durable by one fsync, then every old name unlinked
/// and made durable by one fsync of `dir`. Each entry's result, in order;
/// a failed fsync fails every move it was to make durable.
pub(super) fn move_aside_all(
    store: &FileBackend,
    dir: &Dir,
    names: &[&OsStr],
    label: &str,
) -> Vec<Result<Moved>> {
    let before = store.before_of(dir);
    let entered: Vec<Result<Entry>> = names
        .iter()
        .map(|name| {
            store
                .quarantine
                .take_in(&store.fs, dir, name, label)
                .map_err(|e| Error::io("set aside", dir.join(name), e))
        })
        .collect();
    let arrived = if entered
        .iter()
        .any(|e| matches!(e, Ok(Entry::Linked(_) | Entry::Renamed(_))))
    {
        store.quarantine.sync(store)
    } else {
        Ok(())
    };
    let mut left = false;
    let mut results = Vec::with_capacity(names.len());
    for (name, entered) in names.iter().zip(entered) {
        let (target, linked) = match entered {
            Ok(Entry::Linked(target)) => (target, true),
            Ok(Entry::Renamed(target)) => (target, false),
            Ok(Entry::Gone) => {
                results.push(Ok(Moved::Gone));
                continue;
            }
            Ok(Entry::Full) => {
                results.push(Ok(Moved::Full));
                continue;
            }
            Err(e) => {
                results.push(Err(e));
                continue;
            }
        };
        if let Err(e) = &arrived {
            results.push(Err(e.for_each_of("set aside", &dir.join(name))));
            continue;
        }
        if linked && let Err(e) = store.remove_if_there(dir, name) {
            results.push(Err(e));
            continue;
        }
        left = true;
        results.push(Ok(Moved::Aside(target)));
    }
    if left && let Err(e) = store.sync_changed(dir, before) {
        for (name, result) in names.iter().zip(&mut results) {
            if matches!(result, Ok(Moved::Aside(_))) {
                *result = Err(e.for_each_of("set aside", &dir.join(name)));
            }
        }
    }
    results
}

/// Whether the writer of each temp file of the tasks `ids` is gone
/// (`Ok(true)`: its stripe lock is free; `Ok(false)`: it is alive), and
/// then, if any is gone, [`settle_parked`](FileBackend::settle_parked),
/// made once for all of them after every lock was seen free: a temp file
/// whose writer is gone may be a park of a name whose change is not
/// durable yet (a batch lets go of a task's lock before its fsync), and
/// goes only once that settle returned `Ok`. One settle covers every temp
/// file found gone, however many: an open's or a sweep's clean-up
/// ([`clean_temp_files`]) and a repair's (`repair.rs`'s `remove_temps`)
/// each pay three fsyncs, not three per temp file.
pub(super) fn writers_gone<'a>(
    store: &FileBackend,
    ids: impl IntoIterator<Item = &'a TaskId>,
) -> (Vec<Result<bool>>, Result<()>) {
    let gone: Vec<Result<bool>> = ids
        .into_iter()
        .map(|id| {
            store
                .locks
                .try_lock(&store.fs, stripe(id))
                .map(|free| free.is_some())
        })
        .collect();
    let settled = if gone.iter().any(|g| matches!(g, Ok(true))) {
        store.settle_parked()
    } else {
        Ok(())
    };
    (gone, settled)
}

/// Removes temp files whose writer is gone. A writer holds its task's stripe
/// lock from creating its temp file until the rename, so a temp file whose
/// stripe is free belongs to no one. Some are parks (`park`): a previous
/// version of a task kept from being freed until the change to `active/`
/// that replaced it is durable; so they go only after an fsync of `active/`
/// made once their locks were seen free. Anything else in `tmp/` is set
/// aside, and kept to be reported (`FileBackend::take_set_aside`). One
/// entry that cannot be removed never stops the others.
///
/// Returns how many it removed of writers no longer running: a live
/// writer's park whose reclaiming thread has not got to it yet goes too
/// (the fsync made it needless), but is no crashed writer's leftover.
pub(super) fn clean_temp_files(store: &FileBackend) -> Result<usize> {
    let dir = &store.tmp;
    let names = store
        .fs
        .read_dir(dir)
        .map_err(|e| Error::io("read directory", dir.path(), e))?;
    let mut temps = Vec::new();
    let mut foreign = Vec::new();
    for name in names {
        match layout::temp_file_writer(&name) {
            Some((id, pid)) => temps.push((name, id, pid)),
            None => foreign.push(name),
        }
    }
    set_aside_foreign_temps(store, &foreign);
    let (gone, settled) = writers_gone(store, temps.iter().map(|(_, id, _)| id));
    let mut dead = Vec::new();
    for ((name, _, pid), gone) in temps.into_iter().zip(gone) {
        match gone {
            Ok(true) => dead.push((name, pid)),
            // Its writer is alive.
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(file = %dir.join(&name).display(), error = %e, "cannot lock a temp file's stripe; left for later");
            }
        }
    }
    if dead.is_empty() {
        return Ok(0);
    }
    if let Err(e) = settled {
        tracing::warn!(error = %e, "cannot fsync active/, done/ and expiring/ before removing dead writers' temp files; left for later");
        return Ok(0);
    }
    let mut removed = 0;
    let mut foreign = Vec::new();
    for (name, pid) in dead {
        match store.fs.remove_if_there(dir, &name) {
            Ok(true) if writer_is_running(pid) => {}
            Ok(true) => removed += 1,
            Ok(false) => {}
            // A directory named like a temp file, say.
            Err(e)
                if e.kind() == io::ErrorKind::IsADirectory
                    || e.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error()) =>
            {
                foreign.push(name);
            }
            Err(e) if is_read_only(&e) => {
                tracing::warn!(file = %dir.join(&name).display(), error = %e, "cannot remove a temp file (read-only store)");
                break;
            }
            // Left for a later clean-up: it is no task, and keeps no other
            // from going, nor the sweep that cleans up from its batches.
            Err(e) => {
                tracing::warn!(file = %dir.join(&name).display(), error = %e, "cannot remove a dead writer's temp file; left for later");
            }
        }
    }
    set_aside_foreign_temps(store, &foreign);
    if removed > 0 {
        tracing::info!(store = %store.root.display(), removed, "removed temp files left by crashed writers");
    }
    Ok(removed)
}

/// Sets the entries `names` of `tmp/`, which are no temp files, aside
/// together, and keeps their reports (`FileBackend::take_set_aside`).
fn set_aside_foreign_temps(store: &FileBackend, names: &[OsString]) {
    let names: Vec<&OsStr> = names.iter().map(OsString::as_os_str).collect();
    let why = "not a temp file of this store";
    for skipped in set_aside_names(store, &store.tmp, &names, "tmp", why) {
        store.keep_set_aside(skipped);
    }
}

/// Why a name in `active/` or `done/` is set aside.
const NOT_A_TASK_FILE: &str = "not a task file name";

/// Sets the entry `name` of `area`, which is not a task file name, aside
/// and reports it; `None` if it is gone.
pub(super) fn set_aside_foreign(store: &FileBackend, area: Area, name: &OsStr) -> Option<Skipped> {
    let dir = store.dir(area);
    match store.fs.stat(dir, name) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        _ => Some(set_aside_name(
            store,
            dir,
            name,
            area.name(),
            NOT_A_TASK_FILE,
        )),
    }
}

/// Sets the foreign entry `name` in `dir` aside, if the quarantine has room
/// and the store can be written; reports what became of it.
pub(super) fn set_aside_name(
    store: &FileBackend,
    dir: &Dir,
    name: &OsStr,
    label: &str,
    why: &str,
) -> Skipped {
    set_aside_names(store, dir, &[name], label, why)
        .pop()
        .expect("one report per entry")
}

/// [`set_aside_name`] for several entries of `dir`, moved together
/// ([`move_aside_all`]): each one's report, in order.
pub(super) fn set_aside_names(
    store: &FileBackend,
    dir: &Dir,
    names: &[&OsStr],
    label: &str,
    why: &str,
) -> Vec<Skipped> {
    if names.is_empty() {
        return Vec::new();
    }
    let moved = move_aside_all(store, dir, names, label);
    names
        .iter()
        .zip(moved)
        .map(|(name, moved)| report_set_aside(store, dir, name, why, moved))
        .collect()
}

/// What became of the foreign entry `name` of `dir` that was to be set
/// aside, as a report.
fn report_set_aside(
    store: &FileBackend,
    dir: &Dir,
    name: &OsStr,
    why: &str,
    moved: Result<Moved>,
) -> Skipped {
    let path = dir.join(name);
    let report =
        |reason: String, action| Skipped::new(None, path.display().to_string(), reason, action);
    match moved {
        Ok(Moved::Aside(target)) => {
            tracing::warn!(file = %path.display(), reason = why, "set aside a file that is not a readable task");
            report(why.to_owned(), UnreadableAction::SetAside)
                .moved_to(target.display().to_string())
        }
        Ok(Moved::Gone) => report(why.to_owned(), UnreadableAction::LeftInPlace),
        Ok(Moved::Full) => {
            tracing::warn!(file = %path.display(), reason = why, "quarantine full: left an unreadable file in place");
            report(
                format!("{why}; not set aside: {}", quarantine_full()),
                UnreadableAction::LeftInPlace,
            )
        }
        Err(e) => {
            // Moved, but not made durable (a failed fsync): set aside all
            // the same, and said so, as `set_aside_task` tells.
            let moved = matches!(
                store.fs.stat(dir, name),
                Err(gone) if gone.kind() == io::ErrorKind::NotFound
            );
            tracing::warn!(file = %path.display(), reason = why, error = %e, moved, "could not set aside an unreadable file durably");
            if moved {
                report(format!("{why}; {e}"), UnreadableAction::SetAside)
            } else {
                report(
                    format!("{why}; not set aside: {e}"),
                    UnreadableAction::LeftInPlace,
                )
            }
        }
    }
}

/// How [`set_aside_task`] takes the stripe of the file it sets aside.
#[derive(Clone, Copy, Debug)]
pub(super) enum Taking<'a> {
    /// Waiting for it as a call of the pass does (until the pass's
    /// deadline at most; a stripe found stuck in it, not at all:
    /// `lock::Pass`): a scan's set-asides, in its own pass or its sweep's.
    Waiting(&'a Pass),
    /// Only if no one holds it: a listing of history, which holds its
    /// handle's history meanwhile (every other listing of the handle would
    /// wait with it), leaves the file of a held stripe in place, reported,
    /// and the next listing looks at it again.
    IfFree,
}

/// Reports task `id`'s file in `area`, which failed to read as `err`,
/// setting it aside if it is corrupt and still is under its lock, taken
/// as `taking` says.
///
/// A file that cannot be read for now (an I/O error), is of a newer format,
/// or is larger than any task file is left in place: it may be readable
/// later, or by a newer `taskstore`. So is a corrupt file the store cannot move (read-only, or the
/// quarantine is full), or whose stripe it cannot take. Never an error:
/// one bad file never fails a pass.
pub(super) fn set_aside_task(
    store: &FileBackend,
    area: Area,
    id: &TaskId,
    err: Error,
    taking: Taking<'_>,
) -> Skipped {
    let path = store.dir(area).join(task_name(id));
    let report = |reason: String, action| {
        Skipped::new(Some(id.clone()), path.display().to_string(), reason, action)
    };
    if !matches!(err, Error::Corrupt { .. }) {
        return report(err.to_string(), UnreadableAction::LeftInPlace);
    }
    let taken = match taking {
        Taking::Waiting(pass) => store
            .locks
            .lock_in(&store.fs, stripe(id), Some(pass))
            .map(Some),
        Taking::IfFree => store.locks.try_lock(&store.fs, stripe(id)),
    };
    let guard = match taken {
        Ok(Some(guard)) => guard,
        Ok(None) => {
            let held = store.locks.held(
                stripe(id),
                "another handle or process held it, and a listing does not wait for it \
                 (the next sets the file aside)",
            );
            return report(
                format!("{err}; not set aside: {held}"),
                UnreadableAction::LeftInPlace,
            );
        }
        Err(e) => {
            return report(
                format!("{err}; not set aside: {e}"),
                UnreadableAction::LeftInPlace,
            );
        }
    };
    let result = match store.read(area, id) {
        Err(e @ Error::Corrupt { .. }) => match set_aside_locked(store, area, id, &e.to_string()) {
            Ok(Moved::Aside(target)) => report(e.to_string(), UnreadableAction::SetAside)
                .moved_to(target.display().to_string()),
            Ok(Moved::Gone) => report(e.to_string(), UnreadableAction::LeftInPlace),
            Ok(Moved::Full) => report(
                format!("{e}; not set aside: {}", quarantine_full()),
                UnreadableAction::LeftInPlace,
            ),
            // Not moved, or moved but an index entry of it not removed.
            Err(move_error) => {
                let moved = matches!(
                    store.fs.stat(store.dir(area), &task_name(id)),
                    Err(e) if e.kind() == io::ErrorKind::NotFound
                );
                let action = if moved {
                    UnreadableAction::SetAside
                } else {
                    UnreadableAction::LeftInPlace
                };
                report(format!("{e}; {move_error}"), action)
            }
        },
        Err(e) => report(e.to_string(), UnreadableAction::LeftInPlace),
        // Repaired or removed meanwhile.
        Ok(_) => report(err.to_string(), UnreadableAction::LeftInPlace),
    };
    drop(guard);
    result
}

/// Sets task `id`'s file in `area` aside; the caller holds its stripe lock.
/// Where it went, or `Ok(None)` if it is gone, or the quarantine is full.
///
/// Every set-aside of a task file goes through here (a listing's, a sweep's,
/// a write's of a damaged copy, `repair`'s), and it takes the task out of
/// the store as a delete does: the file goes into `quarantine/`, and the
/// `expiring/` entries that were other names of it (a finished task with a
/// TTL is linked there, FORMAT.md) and are now no task's file are removed
/// with it, once the move is durable ([`move_aside`] makes it so), as
/// every stale entry goes only after its file's removal is (see
/// [`FileBackend::drop_stale_indexes`]): a power loss must not bring the
/// file back without its entry.
pub(super) fn set_aside_locked(
    store: &FileBackend,
    area: Area,
    id: &TaskId,
    why: &str,
) -> Result<Moved> {
    let dir = store.dir(area);
    let name = task_name(id);
    // Its other names, found before it moves; only a file with more than
    // one name has any, so expiring/ is read only for those.
    let links = match store.fs.stat(dir, &name) {
        Ok(file) if file.nlink > 1 => index_links(store, id, (file.dev, file.ino))?,
        _ => Vec::new(),
    };
    let moved = move_aside(store, dir, &name, area.name())?;
    if let Moved::Aside(_) = moved {
        tracing::warn!(file = %dir.join(&name).display(), reason = why, "set aside a file that is not a readable task");
        drop_index_links(store, id, &links)?;
    }
    Ok(moved)
}

/// The `expiring/` entries of task `id` that are the file `(dev, ino)`.
fn index_links(store: &FileBackend, id: &TaskId, file: (u64, u64)) -> Result<Vec<OsString>> {
    let names = store
        .fs
        .read_dir(store.expiring.dir())
        .map_err(|e| Error::io("read directory", store.expiring.dir().path(), e))?;
    Ok(names
        .into_iter()
        .filter(|name| layout::expiring_entry(name).is_some_and(|(at, _)| at.id == *id))
        .filter(|name| {
            store
                .fs
                .stat(store.expiring.dir(), name)
                .is_ok_and(|entry| (entry.dev, entry.ino) == file)
        })
        .collect())
}

/// Removes those of `links` (entries of task `id` in `expiring/`) that are
/// no task's file now (the task's lock is held): the other copy of an
/// interrupted move may still be theirs.
fn drop_index_links(store: &FileBackend, id: &TaskId, links: &[OsString]) -> Result<()> {
    links
        .iter()
        .try_for_each(|name| store.drop_stale_index_locked(id, name))
}
