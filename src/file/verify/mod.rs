//! Checking a store as `fsck` does: [`FileCheck`] opens a store directory
//! without creating or recovering anything, and [`FileCheck::verify`]
//! reports every problem with its path (`problem.rs` has their vocabulary).
//!
//! Each rule it checks is the store's own: names from `layout`, task files
//! decoded by `read_task` (the envelope, the format, the id inside against
//! the file name), two copies of a task judged by `find` (the read rule),
//! a temp file's writer told alive by its stripe lock. What it adds is only
//! the judging: what is a problem, and which problems are confirmed under
//! the task's lock before they are reported, so that a check beside live
//! writers in other processes reports none that a writer is about to
//! resolve.

mod entries;
#[cfg(all(test, feature = "fault-injection"))]
mod tests;

pub(crate) use self::entries::judge_file;
use self::entries::{Listing, Suspects};

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::file::fs::{Dir, Fs, Kind, is_symlink_refusal};
use crate::file::group::DirSync;
use crate::file::layout::{self, Area, DIRS, INDEX_DIR, MARKER, RootName, STORE_FORMAT};
use crate::file::lock::{Settled, StripeLocks};
use crate::file::open::{self, handles_lock, root_error};
use crate::file::problem::{
    DIR_MODE, FILE_MODE, Place, Problem, ProblemKind, Report, Sub, mode, problem, unreadable,
};
use crate::file::recovery::Quarantine;
use crate::file::{Durability, FileBackend};
use crate::id::TaskId;
use crate::task::Task;

/// The largest marker file read.
const MAX_MARKER_BYTES: u64 = 4_096;

/// A store directory opened to check it ([`verify`](FileCheck::verify)),
/// repair it ([`repair`](FileCheck::repair)) and count it
/// ([`census`](FileCheck::census)), as `fsck` does.
///
/// Opening creates nothing (but the handles lock's file, if missing, which
/// every open makes) and recovers nothing: unlike
/// [`FileStore::open`](crate::FileStore::open), it leaves dead writers' temp
/// files and the copies an interrupted terminal move left in place, so that
/// `verify` can report them. Checking changes nothing (but for the empty
/// file of a lock stripe, which any handle makes when it first takes the
/// stripe); it takes a task's stripe lock to confirm a problem of that
/// task, tries (without waiting) a temp file's stripe lock to tell a
/// dead writer's leftover from a live writer's file, and waits for batches
/// under way before it judges what may be one's state between its halves
/// ([`wait_for_batches`](FileCheck::wait_for_batches)). So it is safe beside
/// live writers in other processes, and reports none of their work in
/// progress as a problem (unless a batch outlasts the wait, which the
/// report then says).
///
/// ```
/// # fn main() -> taskstore::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// use taskstore::{FileCheck, FileStore, NewTask, TaskStore};
///
/// FileStore::open(dir.path())?.create(NewTask::new())?;
/// let check = FileCheck::open(dir.path())?;
/// let report = check.verify()?;
/// assert!(report.is_clean(), "{:?}", report.problems);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct FileCheck {
    root: PathBuf,
    fs: Fs,
    store: Opened,
    /// The store's format, if older than this one: a store of format 1
    /// has no `expiring/`, so it opens `Broken`, and is judged as a whole.
    older: Option<u64>,
    /// How long a check waits for batches under way before it judges.
    batch_wait: Duration,
    /// What it calls when such a wait starts.
    on_batch_wait: OnBatchWait,
    /// The store's directories that are there but would not open for the
    /// check (their permissions: a mode that denies their owner reading
    /// them), each with the error: the store is then `Broken`, and
    /// `verify` reports each (its mode, which a repair sets, or the error).
    denied: Vec<(OsString, String)>,
}

/// What a check calls when it starts waiting for batches under way
/// ([`FileCheck::on_batch_wait`]).
#[derive(Default)]
struct OnBatchWait(Option<Box<BatchWaiting>>);

/// What [`FileCheck::on_batch_wait`] is given.
type BatchWaiting = dyn Fn(&Path, Duration) + Send + Sync;

impl std::fmt::Debug for OnBatchWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}

/// How long a check waits for batches under way unless told.
const BATCH_WAIT: Duration = Duration::from_secs(30);

/// A store whose directories all opened, or one whose layout is broken
/// (only its root is open: `verify` reports what is wrong with it).
#[derive(Debug)]
enum Opened {
    Whole {
        backend: Box<FileBackend>,
        locks: Dir,
        quarantine: Dir,
    },
    Broken(Dir),
}

/// What one task file is (short-lived: a task by value costs nothing next
/// to the read that made it).
#[allow(clippy::large_enum_variant)]
pub(crate) enum FileState {
    Missing,
    Task(Task),
    Bad(ProblemKind),
}

#[derive(Deserialize)]
struct Marker {
    format: Option<u64>,
    kind: Option<String>,
}

/// Only the id inside a task file: to tell a file that holds another task
/// from one that does not decode (`read_task` refuses both).
#[derive(Deserialize)]
struct Peek {
    task: PeekTask,
}

#[derive(Deserialize)]
struct PeekTask {
    #[serde(rename = "taskId")]
    id: String,
}

impl FileCheck {
    /// Opens the store at `root` to check it, changing nothing.
    ///
    /// Like a handle, it holds `locks/handles.lock` shared for its life
    /// (making the lock file if missing and the store can be written), taken
    /// before it opens the store's directories: an open meanwhile is not
    /// alone, so it compacts no directory the check has open, and one that
    /// moves a store of an older format waits until the check is dropped.
    /// It waits at most 30 s for an open that holds the lock alone
    /// ([`open_within`](FileCheck::open_within) sets the wait).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidStore`] if `root` is not a directory, is a symlink,
    /// holds neither the store's marker nor the directories every store
    /// has (`active/`, `done/`, `tmp/`, `locks/`: it is not a store), or,
    /// to root, belongs to another user and is not mounted read-only (a
    /// check makes lock files, a repair writes tasks); [`Error::Io`] if it
    /// cannot be opened or read. One of the store's directories that its
    /// permissions keep closed (a mode that denies its owner reading it) is
    /// no error here: the check opens the store's root alone, as for a
    /// broken layout; [`verify`](FileCheck::verify) reports the directory
    /// (its mode, or why it did not open), [`repair`](FileCheck::repair)
    /// sets its mode by its name alone, and what reads the store whole (a
    /// census) fails naming it.
    pub fn open(root: impl AsRef<Path>) -> Result<FileCheck> {
        FileCheck::open_within(root, BATCH_WAIT)
    }

    /// [`open`](FileCheck::open), waiting at most `wait` (30 s in `open`)
    /// for an open that holds the store alone (compacting its directories
    /// or moving its format), after which it fails with [`Error::Io`]
    /// naming `locks/handles.lock`.
    ///
    /// # Errors
    ///
    /// As [`open`](FileCheck::open).
    pub fn open_within(root: impl AsRef<Path>, wait: Duration) -> Result<FileCheck> {
        FileCheck::open_within_noting(root, wait, |_| {})
    }

    /// [`open_within`](FileCheck::open_within), calling `waiting(lock)`
    /// when it starts waiting for an open that holds the store alone, with
    /// the lock's path (`locks/handles.lock`): such a wait is otherwise
    /// silent until it ends. The `taskstore` command says on stderr that it
    /// waits.
    ///
    /// # Errors
    ///
    /// As [`open`](FileCheck::open).
    pub fn open_within_noting(
        root: impl AsRef<Path>,
        wait: Duration,
        waiting: impl Fn(&Path),
    ) -> Result<FileCheck> {
        FileCheck::open_on(Fs::default(), root.as_ref(), wait, &waiting)
    }

    /// [`open_within_noting`](FileCheck::open_within_noting) through the
    /// file-system seam `fs` (a test's, which fails calls on purpose).
    fn open_on(fs: Fs, root: &Path, wait: Duration, waiting: &dyn Fn(&Path)) -> Result<FileCheck> {
        let root = root.to_owned();
        let root_dir = fs.open_root(&root).map_err(|e| root_error(&root, e))?;
        let names = fs
            .read_dir(&root_dir)
            .map_err(|e| Error::io("read directory", &root, e))?;
        // A store that lost its marker still has its directories; a
        // directory with some of the store's names alone (`active/` and
        // `done/`, say) is a user's, which a check must not take for one
        // (nor make its lock file in).
        let older = open::older_format(&fs, &root_dir, &names);
        if !open::is_a_store(&names) {
            return Err(Error::InvalidStore {
                path: root,
                reason: format!(
                    "holds no {MARKER}, nor the directories of a store (active/, done/, tmp/, \
                     locks/): not a store"
                ),
            });
        }
        open::check_owner(&fs, &root_dir)?;
        // Shared, as a handle holds it, before the areas are opened: an
        // open alone (which compacts an area into a new directory) cannot
        // come between, and the areas opened are the ones in use for as
        // long as the check lives.
        // A directory that is missing, not a directory or a symlink is the
        // layout's problem (`verify` reports it). One its permissions keep
        // closed (a mode that denies its owner reading it) leaves the store
        // `Broken` as well: `verify` reports it (as a mode, which a repair
        // sets by its name alone, `Fs::set_mode`, when its mode is wrong;
        // else as unreadable, with why), never a store checked and found
        // clean. One that cannot be opened for any other reason (an I/O
        // error) is an error naming it.
        let denied = std::cell::RefCell::new(Vec::new());
        let open = |name: &str| match fs.open_dir(&root_dir, OsStr::new(name)) {
            Ok(dir) => Ok(Some(dir)),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                let mut denied = denied.borrow_mut();
                if !denied.iter().any(|(n, _): &(OsString, String)| n == name) {
                    denied.push((OsString::from(name), e.to_string()));
                }
                Ok(None)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) || is_symlink_refusal(&e) =>
            {
                Ok(None)
            }
            Err(e) => Err(Error::io("open directory", root.join(name), e)),
        };
        let handles = match open("locks")? {
            Some(locks) => handles_lock(&fs, &locks)?.map(|(file, path, _)| (file, path)),
            None => None,
        };
        if let Some((file, path)) = &handles {
            open::lock_shared_within(&fs, file, path, Some(wait), waiting)?;
        }
        let dirs = (
            open("active")?,
            open("done")?,
            open("tmp")?,
            open("expiring")?,
            open("quarantine")?,
            open("locks")?,
            open("locks")?,
            open("quarantine")?,
        );
        let store = match dirs {
            (
                Some(active),
                Some(done),
                Some(tmp),
                Some(expiring),
                Some(quarantine),
                Some(locks),
                Some(own_locks),
                Some(own_quarantine),
            ) => {
                let backend = FileBackend {
                    root: root.clone(),
                    root_dir,
                    active: DirSync::new(active),
                    done: DirSync::new(done),
                    tmp: std::sync::Arc::new(tmp),
                    expiring: DirSync::new(expiring),
                    quarantine: Quarantine::new(&fs, quarantine),
                    locks: {
                        let mut locks = StripeLocks::new(locks, BATCH_WAIT);
                        locks.for_a_check(BATCH_WAIT);
                        locks
                    },
                    fs: fs.clone(),
                    durability: Durability::Immediate,
                    snapshot: Default::default(),
                    proofs: Default::default(),
                    history_keys: Default::default(),
                    due: Default::default(),
                    reclaimer: Default::default(),
                    pending_removals: Default::default(),
                    moves_settled_at: Default::default(),
                    handles,
                    // A check resolves no copies: any task may have two.
                    unresolved: Default::default(),
                    large_pass: crate::file::parallel::MIN_SHARED,
                    cleaned_at_open: Default::default(),
                    kept_durable: Default::default(),
                    set_aside: Default::default(),
                };
                Opened::Whole {
                    backend: Box::new(backend),
                    locks: own_locks,
                    quarantine: own_quarantine,
                }
            }
            _ => Opened::Broken(root_dir),
        };
        Ok(FileCheck {
            root,
            fs,
            store,
            older,
            batch_wait: BATCH_WAIT,
            on_batch_wait: OnBatchWait::default(),
            denied: denied.into_inner(),
        })
    }

    /// Sets how long [`verify`](FileCheck::verify) and
    /// [`repair`](FileCheck::repair) wait for batches of other handles that
    /// are under way (30 seconds unless set; `Duration::ZERO` tries once).
    ///
    /// A batch (a reap of several tasks, a removal of several
    /// finished ones, a sweep) leaves its tasks between two states for a
    /// moment while it holds none of their locks: a terminal move's names
    /// in both areas, a removed task's `expiring/` entry. It holds
    /// `locks/batches.lock` shared meanwhile, and a check that met such a
    /// state takes it exclusive before it judges, so that it judges what
    /// the batches left. If the wait runs out (a process stopped in the
    /// middle of a batch), the check judges what it sees and says so
    /// ([`Report::under_way`]). A task's lock another handle holds is
    /// waited for as long at most, the check's waits for locks all told
    /// (30 seconds, unless set so, as a handle's `stripe_wait`, from its
    /// first such wait): a wait that ran out is a problem of its own,
    /// naming the lock, and a lock still held after that is tried once,
    /// without waiting.
    #[must_use]
    pub fn wait_for_batches(mut self, wait: Duration) -> FileCheck {
        self.batch_wait = wait;
        if let Opened::Whole { backend, .. } = &mut self.store {
            backend.locks.for_a_check(wait);
        }
        self
    }

    /// Calls `waiting(lock, wait)` each time [`verify`](FileCheck::verify)
    /// or [`repair`](FileCheck::repair) starts waiting for batches under
    /// way ([`wait_for_batches`](FileCheck::wait_for_batches)): `lock` is
    /// the batches lock (`locks/batches.lock`), `wait` the longest the
    /// wait lasts. Such a wait is otherwise silent until it ends; the
    /// `taskstore` command says on stderr that it waits.
    #[must_use]
    pub fn on_batch_wait(
        mut self,
        waiting: impl Fn(&Path, Duration) + Send + Sync + 'static,
    ) -> FileCheck {
        self.on_batch_wait = OnBatchWait(Some(Box::new(waiting)));
        self
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// [`Error::OlderFormat`] for a store of an older format, which this
    /// version reads only once an open has moved it.
    pub(crate) fn refuse_older(&self) -> Result<()> {
        match self.older {
            Some(found) => Err(Error::OlderFormat {
                path: self.root.clone(),
                found,
                current: STORE_FORMAT,
            }),
            None => Ok(()),
        }
    }

    /// Checks the whole store; see [`verify_with`](FileCheck::verify_with).
    pub fn verify(&self) -> Result<Report> {
        self.verify_with(&mut |_, _| {})
    }

    /// Checks the whole store, calling `progress(done, total)` as it goes
    /// through the entries of its directories. Changes nothing.
    ///
    /// Checks the layout (the marker and its format, the directories, no
    /// symlink, no foreign name, the modes: `0600` files, `0700`
    /// directories, the root's own mode aside, which is the host's), every
    /// task file (it decodes, holds the task its name
    /// says, is not of a newer format, is not larger than any task file a
    /// store writes), every task's copies (no terminal task left in
    /// `active/`, no copy beside the one the read rule picks, no running
    /// task in `done/`), `tmp/` (no temp file of a dead writer) and the lock
    /// files. A problem of a task is reported only if it holds under the
    /// task's stripe lock; a temp file whose stripe lock is held belongs to
    /// a live writer and is not a problem.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if a directory of the store cannot be read, or a lock
    /// cannot be taken; problems with single entries are reported, not
    /// errors.
    pub fn verify_with(&self, progress: &mut dyn FnMut(usize, usize)) -> Result<Report> {
        let mut problems = Vec::new();
        self.check_root(&mut problems)?;
        // A directory that would not open is a problem whatever its mode
        // (an ACL, another owner): the error names why.
        for (name, error) in &self.denied {
            let path = self.root_dir().join(name);
            if !problems.iter().any(|p| p.path == path) {
                problems.push(problem(
                    path,
                    None,
                    ProblemKind::Unreadable {
                        error: error.clone(),
                    },
                    Place::Top(name.clone()),
                ));
            }
        }
        let mut checked = 0;
        let mut settled = None;
        // A store of an older format is judged as a whole (`OlderFormat`):
        // its entries are this format's only once an open has moved it.
        if let Opened::Whole { backend, locks, .. } = &self.store
            && self.older.is_none()
        {
            let mut listing = Listing::read(backend, locks)?;
            let total = listing.total();
            let mut tick = || {
                checked += 1;
                progress(checked, total);
            };
            self.check_tmp(backend, &listing.tmp, &mut problems, &mut tick)?;
            // A task in both areas, and every task found wanting below, is
            // judged again under its lock.
            let in_done: BTreeSet<&OsString> = listing.done.iter().collect();
            let ids: BTreeSet<TaskId> = listing
                .active
                .iter()
                .filter(|n| in_done.contains(n))
                .filter_map(|n| layout::task_file_id(n))
                .collect();
            drop(in_done);
            let mut suspects = Suspects {
                of_batches: !ids.is_empty(),
                ids,
            };
            for area in [Area::Active, Area::Done] {
                let names = std::mem::take(listing.area(area));
                self.check_area(
                    backend,
                    area,
                    names,
                    &mut suspects,
                    &mut problems,
                    &mut tick,
                );
            }
            let mut stale = Vec::new();
            self.check_expiring(
                backend,
                &listing.expiring,
                &mut stale,
                &mut problems,
                &mut tick,
            );
            // What may be a batch between its halves is judged once the
            // batches under way have ended; nothing else waits for them.
            if suspects.of_batches || !stale.is_empty() {
                settled = Some(self.settle(backend)?);
            }
            for id in suspects.ids {
                self.check_task(backend, &id, &mut problems)?;
            }
            for (id, name) in stale {
                self.check_index(backend, &id, &name, &mut problems)?;
            }
            self.check_locks(locks, &listing.locks, &mut problems, &mut tick);
        }
        problems.sort_by(|a, b| (&a.path, a.kind.code()).cmp(&(&b.path, b.kind.code())));
        problems.dedup();
        let under_way = settled.is_some_and(|s| s.under_way);
        Ok(Report {
            problems,
            checked,
            under_way,
        })
    }

    /// The batches lock of `backend`'s store, held exclusive once the
    /// batches under way have ended, or the wait for them ran out
    /// ([`wait_for_batches`](FileCheck::wait_for_batches)).
    pub(crate) fn settle(&self, backend: &FileBackend) -> Result<Settled> {
        let waiting = |lock: &Path, wait: Duration| {
            if let Some(waiting) = &self.on_batch_wait.0 {
                waiting(lock, wait);
            }
        };
        backend
            .locks
            .settled_within(&self.fs, self.batch_wait, &waiting)
    }

    /// The root directory, open.
    fn root_dir(&self) -> &Dir {
        match &self.store {
            Opened::Whole { backend, .. } => &backend.root_dir,
            Opened::Broken(dir) => dir,
        }
    }

    /// The backend over this store, if its layout let it open.
    pub(crate) fn backend(&self) -> Result<&FileBackend> {
        match &self.store {
            Opened::Whole { backend, .. } => Ok(backend),
            Opened::Broken(root) => {
                // Looked at again: only an error says which.
                if let Some((name, error)) = self.denied.first() {
                    return Err(Error::InvalidStore {
                        path: self.root.clone(),
                        reason: format!(
                            "its directory {} cannot be opened ({error}): run verify \
                             (`repair --apply`, run as the store's owner, sets its mode \
                             back to 0700)",
                            root.join(name).display()
                        ),
                    });
                }
                let broken: Vec<String> = DIRS
                    .into_iter()
                    .filter(|name| {
                        !matches!(self.fs.stat(root, OsStr::new(name)), Ok(s) if s.kind == Kind::Dir)
                    })
                    .map(|name| format!("{name}/"))
                    .collect();
                let verb = if broken.len() == 1 { "is" } else { "are" };
                Err(Error::InvalidStore {
                    path: self.root.clone(),
                    reason: format!(
                        "its {} {verb} missing, not a directory, or a symlink: run verify",
                        broken.join(", ")
                    ),
                })
            }
        }
    }

    /// The open directory of `sub` (only for a whole store).
    pub(crate) fn sub_dir(&self, sub: Sub) -> Option<&Dir> {
        let Opened::Whole {
            backend,
            locks,
            quarantine,
        } = &self.store
        else {
            return None;
        };
        Some(match sub {
            Sub::Active => backend.dir(Area::Active),
            Sub::Done => backend.dir(Area::Done),
            Sub::Tmp => &backend.tmp,
            Sub::Expiring => backend.expiring.dir(),
            Sub::Locks => locks,
            Sub::Quarantine => quarantine,
        })
    }

    /// The directory and name of `place`, to act on it.
    pub(crate) fn locate<'a>(&'a self, place: &'a Place) -> Option<(&'a Dir, &'a OsStr)> {
        match place {
            Place::Top(name) => Some((self.root_dir(), name)),
            Place::In(sub, name) => Some((self.sub_dir(*sub)?, name)),
        }
    }

    pub(crate) fn fs(&self) -> &Fs {
        &self.fs
    }

    /// The root's entries and the marker. (The root's own mode is the
    /// host's: a store may be made in a directory the host created. Nothing
    /// inside can be read through it: every entry has the store's modes.)
    fn check_root(&self, problems: &mut Vec<Problem>) -> Result<()> {
        let root = self.root_dir();
        let names = self
            .fs
            .read_dir(root)
            .map_err(|e| Error::io("read directory", root.path(), e))?;
        if let Some(found) = self.older {
            let name = OsString::from(MARKER);
            problems.push(problem(
                root.join(&name),
                None,
                ProblemKind::OlderFormat {
                    found,
                    current: STORE_FORMAT,
                },
                Place::Top(name),
            ));
        }
        for wanted in DIRS.iter().chain([&MARKER]) {
            // Format 1 has no `expiring/`: the move makes it.
            let missing_in_format = self.older == Some(1) && *wanted == INDEX_DIR;
            if !missing_in_format && !names.iter().any(|n| n == wanted) {
                let name = OsString::from(wanted);
                problems.push(problem(
                    root.join(&name),
                    None,
                    ProblemKind::Missing,
                    Place::Top(name),
                ));
            }
        }
        for name in names {
            let path = root.join(&name);
            let place = Place::Top(name.clone());
            match RootName::of(&name) {
                RootName::Marker => {
                    if let Some(kind) = self.check_marker(root, &name) {
                        problems.push(problem(path, None, kind, place));
                    }
                    continue;
                }
                RootName::Harmless => continue,
                RootName::Foreign => {
                    problems.push(problem(path, None, ProblemKind::Foreign, place));
                    continue;
                }
                RootName::Dir => {}
            }
            let kind = match self.fs.stat(root, &name) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Some(ProblemKind::Missing),
                Err(e) => Some(unreadable(e)),
                Ok(s) if s.kind == Kind::Symlink => Some(ProblemKind::Symlink),
                Ok(s) if s.kind != Kind::Dir => Some(ProblemKind::NotADirectory),
                Ok(s) if s.mode != DIR_MODE => Some(mode(s.mode, DIR_MODE)),
                Ok(_) => None,
            };
            if let Some(kind) = kind {
                problems.push(problem(path, None, kind, place));
            }
        }
        Ok(())
    }

    /// What is wrong with the marker `name` in `root`, if anything.
    fn check_marker(&self, root: &Dir, name: &OsStr) -> Option<ProblemKind> {
        let path = root.join(name);
        let status = match self.fs.stat(root, name) {
            Ok(status) => status,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Some(ProblemKind::Missing),
            Err(e) => return Some(unreadable(e)),
        };
        match status.kind {
            Kind::Symlink => return Some(ProblemKind::Symlink),
            Kind::File => {}
            _ => return Some(ProblemKind::NotAFile),
        }
        let bytes = self
            .fs
            .open_read(root, name)
            .and_then(|mut file| self.fs.read_to_end(&mut file, &path, MAX_MARKER_BYTES));
        let bytes = match bytes {
            Ok(bytes) => bytes,
            Err(e) if is_symlink_refusal(&e) => return Some(ProblemKind::Symlink),
            Err(e) => return Some(unreadable(e)),
        };
        let bad = |reason: &str| {
            Some(ProblemKind::BadMarker {
                reason: reason.to_owned(),
            })
        };
        let marker: Marker = match serde_json::from_slice(&bytes) {
            Ok(marker) => marker,
            Err(e) => return bad(&format!("not a store marker: {e}")),
        };
        match marker.format {
            None | Some(0) => return bad("no format version"),
            Some(found) if found > STORE_FORMAT => {
                return Some(ProblemKind::NewerFormat {
                    found,
                    supported: STORE_FORMAT,
                });
            }
            Some(_) => {}
        }
        if marker.kind.as_deref() != Some("taskstore") {
            return bad("its kind is not \"taskstore\"");
        }
        (status.mode != FILE_MODE).then(|| mode(status.mode, FILE_MODE))
    }
}
