//! The `expiring/` index: the expired tasks a sweep's scan asks for, found
//! from the entries' names and read only as the page needs them; the
//! entries due at an instant kept for a pass's batches; stale entries told
//! from live ones and removed, and missing ones noticed.

use std::ffi::{OsStr, OsString};
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use crate::backend::{Position, Scan, Skipped};
use crate::error::{Error, Result};
use crate::file::fs::Dir;
use crate::file::layout::{self, Area, expiring_name, stripe, task_name};
use crate::file::lock::Pass;
use crate::file::{FileBackend, parallel, recovery};
use crate::id::TaskId;
use crate::task::Task;

impl FileBackend {
    /// The tasks in `done/` expired at `at` that `scan` asks for, found from
    /// the `expiring/` index: the entries' names say where each lists and
    /// when it expires, so only the tasks returned are read, and the
    /// directory is read once per pass ([`DueEntries`]). Entries that are no
    /// longer their task's file (a crash between a move's steps, a sweep
    /// killed before its end removed the entries of the files it removed)
    /// are removed by a scan that removes ([`Scan::removes`]: a sweep's),
    /// and counted, the third of what comes back; a dry run's
    /// (`Store::expired`) leaves them for the sweep to remove and count.
    pub(super) fn expired_history(
        &self,
        scan: &Scan,
        at: time::OffsetDateTime,
        pass: &Pass,
    ) -> Result<(Vec<Task>, Vec<Skipped>, usize)> {
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
                    Indexed::Stale if scan.removes => stale.push((id.clone(), index.clone())),
                    Indexed::Stale | Indexed::Gone => {}
                    Indexed::Unreadable(e) => {
                        skipped.push(recovery::set_aside_task(
                            self,
                            Area::Done,
                            id,
                            e,
                            recovery::Taking::Waiting(pass),
                        ));
                    }
                }
            }
        }
        let (removed, dropped) = self.drop_stale_indexes(&stale, Some(pass));
        if let Err(e) = dropped {
            // Housekeeping: the entries stay for the next pass to try
            // again, and the tasks found are the pass's all the same.
            tracing::warn!(store = %self.root.display(), error = %e, "could not remove stale expiring/ entries");
        }
        if looked == due.len() {
            // The pass is through: nothing to keep for its next batch.
            self.due.end();
        }
        Ok((tasks, skipped, removed))
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
            Ok(link) => link == Link::Same,
            Err(e) => return Indexed::Unreadable(e),
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
    pub(in crate::file) fn entry_is_file(&self, index: &OsStr, id: &TaskId) -> bool {
        matches!(self.entry_link(index, id), Ok(Link::Same))
    }

    /// How the `expiring/` entry `index` stands to the file
    /// `done/<id>.json`, both looked at ([`inode`](Self::inode): a name
    /// not there is gone, any other failure to look at either is the
    /// error, naming it).
    fn entry_link(&self, index: &OsStr, id: &TaskId) -> Result<Link> {
        let entry = self.inode(self.expiring.dir(), index)?;
        let file = self.inode(self.dir(Area::Done), &task_name(id))?;
        Ok(match (entry, file) {
            (_, None) => Link::NoFile,
            (None, Some(_)) => Link::NoEntry,
            (Some(entry), Some(file)) if entry == file => Link::Same,
            (Some(_), Some(_)) => Link::Other,
        })
    }

    /// The inode (device and number) `name` in `dir` names: `None` if the
    /// name is not there (`NotFound`); any other failure to look at it
    /// (`EACCES`, `EIO`) is the error, naming the path: no sign that the
    /// name is gone.
    fn inode(&self, dir: &Dir, name: &OsStr) -> Result<Option<(u64, u64)>> {
        match self.fs.stat(dir, name) {
            Ok(status) => Ok(Some((status.dev, status.ino))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("stat", dir.join(name), e)),
        }
    }

    /// Removes each `expiring/` entry `(id, index)`, under its task's lock,
    /// that is still not the file of its task in `done/` (nor of one in
    /// `active/` on its way there), after an fsync of `done/` made with
    /// those locks held: an entry is stale once its task's file is gone
    /// from `done/`, which may be before that removal is durable (another
    /// handle's sweep settles its removals at its end, or failed to), and a
    /// power loss must not bring the file back without its entry. How many
    /// it removed (an entry gone meanwhile is not counted), beside the first
    /// error, once every entry was tried. The locks are waited for in
    /// `pass` (a sweep's scan's), or in a pass of their own.
    pub(in crate::file) fn drop_stale_indexes(
        &self,
        entries: &[(TaskId, OsString)],
        pass: Option<&Pass>,
    ) -> (usize, Result<()>) {
        if entries.is_empty() {
            return (0, Ok(()));
        }
        // After a failed fsync of `done/` this handle cannot tell a removal
        // from it durable (a power loss may bring the file back), so the
        // entries stay, and the caller hears so (a repair would report
        // them removed): a stale one is harmless, a finished task come
        // back without its entry would never be swept.
        if self.area(Area::Done).has_failed() {
            return (
                0,
                Err(Error::io(
                    "remove stale entries of",
                    self.root.join("expiring"),
                    std::io::Error::other(
                        "an fsync of done/ failed earlier on this handle: a removal it may have \
                     lost could come back, so its entry stays until the store is opened again",
                    ),
                )),
            );
        }
        // Every stripe of the entries held at once (in stripe order, the
        // lock order), so that what is judged under them holds through the
        // fsync below: a removal of a task's file from `done/` is made
        // under its lock, so one made before the lock is covered by the
        // fsync, and none comes after it until the entry is gone.
        let mut stripes: Vec<usize> = entries.iter().map(|(id, _)| stripe(id)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let _guards = match self.locks.lock_each(&self.fs, &stripes, pass) {
            Ok(guards) => guards,
            Err(e) => return (0, Err(e)),
        };
        let stale: Vec<&(TaskId, OsString)> = entries
            .iter()
            .filter(|(id, index)| self.index_is_stale(id, index))
            .collect();
        if stale.is_empty() {
            return (0, Ok(()));
        }
        if let Err(e) = self.sync(Area::Done, self.area(Area::Done).before()) {
            return (0, Err(e));
        }
        // One entry that cannot go keeps no other from going: the first
        // error is returned once all were tried.
        let (mut removed, mut first) = (0, None);
        for (_, index) in stale {
            match self.remove_index_entry(index) {
                Ok(true) => removed += 1,
                Ok(false) => {}
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        (removed, first.map_or(Ok(()), Err))
    }

    /// Removes the `expiring/` entry `index` of task `id` if it is still
    /// not the file of the task in `done/` (nor of one in `active/`); the
    /// caller holds the task's lock, and has made durable any removal of
    /// the task's file from `done/` (see
    /// [`drop_stale_indexes`](Self::drop_stale_indexes)), or moved it into
    /// `quarantine/` and made that durable (a set-aside).
    pub(in crate::file) fn drop_stale_index_locked(
        &self,
        id: &TaskId,
        index: &OsStr,
    ) -> Result<()> {
        if !self.index_is_stale(id, index) {
            return Ok(());
        }
        self.remove_index_entry(index).map(drop)
    }

    /// Removes the `expiring/` entry `index`: whether it was there (gone
    /// already is as good).
    fn remove_index_entry(&self, index: &OsStr) -> Result<bool> {
        self.remove_if_there(self.expiring.dir(), index)
    }

    /// Whether the `expiring/` entry `index` of task `id` is there and is
    /// not the file of the task in `done/`, nor of one in `active/` on its
    /// way there, nor names the task `done/` holds (a store copied without
    /// its hard links); final only under the task's lock. A file that
    /// cannot be looked at or read for now leaves the entry not stale:
    /// only a file known gone or another task's makes it so.
    pub(in crate::file) fn index_is_stale(&self, id: &TaskId, index: &OsStr) -> bool {
        let file = task_name(id);
        let Ok(Some(entry)) = self.inode(self.expiring.dir(), index) else {
            return false;
        };
        for area in [Area::Done, Area::Active] {
            match self.inode(self.dir(area), &file) {
                Ok(Some(task)) if task == entry => return false,
                Ok(_) => {}
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
    /// TTL and lacks its `expiring/` entry (so no sweep would find it): the
    /// entry is not there, or is another file (a copy). Final only under
    /// the task's lock.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming the entry or the file if either cannot be
    /// looked at (`EACCES`, `EIO`): an entry that cannot be looked at is
    /// not known missing, and is not to be given back.
    pub(in crate::file) fn index_is_missing(&self, task: &Task) -> Result<bool> {
        let Some(index) = expiring_name(task) else {
            return Ok(false);
        };
        Ok(matches!(
            self.entry_link(&index, &task.id)?,
            Link::NoEntry | Link::Other
        ))
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

/// How an `expiring/` entry stands to its task's file in `done/`
/// ([`FileBackend::entry_link`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// One inode under both names.
    Same,
    /// Two inodes (a stale entry, or a copy).
    Other,
    /// The file is there, the entry is not.
    NoEntry,
    /// The file is not there.
    NoFile,
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
pub(in crate::file) struct DueEntries {
    kept: Mutex<Option<Due>>,
    /// How many times the directory was read.
    #[cfg(test)]
    pub(in crate::file) reads: std::sync::atomic::AtomicUsize,
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
pub(in crate::file) type DueList = Vec<(Position, OsString)>;

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
    pub(in crate::file) fn read(
        &self,
        backend: &FileBackend,
        at: time::OffsetDateTime,
    ) -> Result<DueList> {
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
                layout::is_due(expires, at).then_some((position, name))
            })
            .collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(entries)
    }

    /// Keeps `entries`, due at `at`, for the next pass's first batch.
    pub(in crate::file) fn keep_left(&self, at: time::OffsetDateTime, entries: DueList) {
        *self.kept.lock().unwrap_or_else(PoisonError::into_inner) = Some(Due {
            at,
            entries: Arc::new(entries),
            left: true,
        });
    }

    /// Frees what is kept: the pass is through.
    pub(in crate::file) fn end(&self) {
        *self.kept.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}
