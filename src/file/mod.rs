//! The durable, multi-process file backend.
//!
//! One JSON file per task; non-terminal tasks in `active/`, terminal ones in
//! `done/`; every change under a striped inter-process lock; every write a
//! temp file, fsync, rename and directory fsync; every name resolved from an
//! open directory, never through a symlink. FORMAT.md has the layout and the
//! protocol. The backend knows nothing of the store's rules: it stores what
//! it is given, where its status says, if the task on disk is still the
//! version the rules read.

mod census;
mod codec;
mod fault;
mod fs;
mod group;
mod history;
#[cfg(test)]
mod history_tests;
mod layout;
mod lock;
mod maintenance;
mod moment;
mod open;
mod parallel;
mod park;
mod places;
mod problem;
mod proof;
mod read;
mod recovery;
mod repair;
mod scan;
mod snapshot;
#[cfg(test)]
mod snapshot_tests;
mod stamp;
mod unread;
mod verify;
mod watch;
mod write;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::backend::{
    Backend, Change, Decide, Insert, Modified, Record, Scan, Scanned, Skipped, Swap,
};
use crate::error::Result;
use crate::id::TaskId;
use crate::rules::{Store, StoreBuilder};
use crate::task::Task;

pub use self::census::{Census, StaleEntry, Usage};
#[cfg(feature = "fault-injection")]
pub use self::fault::{Count, Fault, FaultInjector, FaultMode, FsEvent, Pause, Recorder};
#[cfg(feature = "fault-injection")]
pub use self::fs::FsOp;
pub use self::problem::{Problem, ProblemKind, Report, Severity};
pub use self::repair::{Repair, RepairAction, RepairOutcome, Repairs};
pub use self::verify::FileCheck;

#[cfg(feature = "mcp")]
pub(crate) use self::layout::is_task_file;

use self::fs::{Dir, Fs};
use self::group::{Before, DirSync};
use self::layout::{Area, stripe};
use self::lock::StripeLocks;
use self::proof::Proofs;
use self::recovery::Quarantine;
use self::snapshot::ActiveSnapshot;

/// When a write counts as done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// The default: every write fsyncs the new file before renaming it into
    /// place and fsyncs every directory it changed after. Once a call returns
    /// `Ok`, the change survives a process kill **and a power loss**.
    #[default]
    Immediate,
    /// No fsync of task files or their directories. A returned change
    /// survives the process crashing (the kernel has it), but **not a power
    /// loss or kernel crash**: recent changes may then be lost, and on file
    /// systems that do not order data before renames a recently written task
    /// file may come back empty or damaged (it is then set aside like any
    /// corrupt file). Readers in other processes still never see a torn
    /// task. (The store's marker and directories are made durable either
    /// way: they are written once.)
    Eventual,
}

/// A durable task store in one directory, shared by every handle and every
/// process that opens it: the store's rules over a [`FileBackend`].
///
/// See the crate docs for its guarantees; `FORMAT.md` for the layout.
pub type FileStore = Store<FileBackend>;

/// Configures and opens a [`FileStore`]: the settings of every store
/// ([`StoreBuilder`]) and those of the file backend.
pub type FileStoreBuilder = StoreBuilder<FileOptions>;

/// What the file backend needs to open: a directory, how durable writes
/// are, and whether a directory that is not a store may become one.
#[derive(Debug)]
pub struct FileOptions {
    root: PathBuf,
    durability: Durability,
    adopt_non_empty: bool,
    #[cfg(feature = "fault-injection")]
    faults: Option<FaultInjector>,
    #[cfg(feature = "fault-injection")]
    recorder: Option<Recorder>,
    change_notices: bool,
    /// Whether an open moves a store of an older format to this one.
    upgrade_format: bool,
    /// How long an open waits for another open that holds the store alone
    /// (`None`: as long as it takes).
    lock_wait: Option<Duration>,
    /// How long a call waits for a stripe another handle holds
    /// ([`FileStoreBuilder::stripe_wait`]).
    stripe_wait: Duration,
    /// What an open calls when it starts such a wait.
    on_lock_wait: OnLockWait,
    /// See [`FileBackend::large_pass`]; set only by tests.
    large_pass: usize,
}

/// What an open calls when it starts waiting for another open that holds
/// the store alone ([`FileStoreBuilder::on_lock_wait`]).
#[derive(Clone, Default)]
pub(crate) struct OnLockWait(Option<Arc<LockWaiting>>);

/// What [`FileStoreBuilder::on_lock_wait`] is given.
type LockWaiting = dyn Fn(&Path) + Send + Sync;

impl std::fmt::Debug for OnLockWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}

/// The storage of a [`FileStore`]: task files in one directory.
///
/// The active-task cap is approximate: a create counts the running tasks
/// (every create that returned before it, in any process, included) before
/// it takes its task's lock, so creates that run at the same time, in
/// threads or processes, can each pass the count; the store then holds at
/// most the cap plus the number of creators racing. A create that finds the
/// store full is refused without writing.
///
/// Under [`Durability::Immediate`] a handle runs one thread of its own,
/// started by its first write over a running task: it frees the files that
/// writes replaced, once their replacements are durable, off the writers'
/// path. Dropping the handle waits for it to finish.
#[derive(Debug)]
pub struct FileBackend {
    root: PathBuf,
    root_dir: Dir,
    active: DirSync,
    done: DirSync,
    /// Shared with the reclaiming thread (see `park`).
    tmp: std::sync::Arc<Dir>,
    expiring: DirSync,
    quarantine: Quarantine,
    locks: StripeLocks,
    fs: Fs,
    durability: Durability,
    snapshot: ActiveSnapshot,
    proofs: Proofs,
    /// The keys of the finished tasks in `done/`, for paging history.
    history_keys: history::HistoryKeys,
    /// The `expiring/` entries a pass over expired history goes through.
    due: scan::DueEntries,
    /// Frees the files that writes replaced (see `park`).
    reclaimer: park::Reclaimer,
    /// The watch's mark (`Watch::mark`) when `active/` was last made
    /// durable under every stripe before removals from `done/`
    /// (`settle_moves_once`).
    moves_settled_at: std::sync::Mutex<Option<(u64, u64)>>,
    /// What the removals of expired tasks changed, to make durable at the
    /// end of their sweep (`Backend::settle_expired`).
    pending_removals: std::sync::Mutex<Option<write::PendingRemovals>>,
    /// The handles lock, held shared for the handle's life: an open that
    /// gets it exclusive knows no other handle has the store open (see
    /// `open`). `None` on a read-only store that has none.
    handles: Option<(std::fs::File, PathBuf)>,
    /// The tasks `open` left with copies in both `active/` and `done/` (it
    /// may, on a store it cannot write): every read of one of them, `get`
    /// and listings alike, applies the read rule to both areas.
    unresolved: read::Unresolved,
    /// The fewest tasks a pass takes the paths of large passes for (every
    /// stripe at once, the sweep's reading and removing in one go):
    /// `parallel::MIN_SHARED`, but for tests that set it lower
    /// (`FileStoreBuilder::large_passes_from`), so that short random
    /// sequences go through those paths too.
    large_pass: usize,
    /// Crashed writers' temp files the open removed, not counted by a
    /// sweep yet (the first counts them among its leftovers cleaned).
    cleaned_at_open: std::sync::atomic::AtomicUsize,
    /// The finished versions this handle made durable for an answer that
    /// kept them (`make_kept_durable`), the latest few: a later answer for
    /// one makes no fsync.
    kept_durable: std::sync::Mutex<std::collections::VecDeque<write::Version>>,
    /// Foreign entries of `tmp/` the temp-file clean-up set aside (or could
    /// not), not reported yet: the open's go to the store's sink as it
    /// opens, a sweep's clean-up's with the sweep's first batch (every
    /// scan takes what is here into its `skipped`).
    set_aside: std::sync::Mutex<Vec<Skipped>>,
}

impl StoreBuilder<FileOptions> {
    /// How durable a returned write is (default [`Durability::Immediate`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.options.durability = durability;
        self
    }

    /// Lets `open` make a store in a directory that holds other files and
    /// is not a store yet (no `taskstore.json`). Off by default: opening,
    /// say, a home directory by mistake is refused rather than filled with
    /// the store's folders.
    pub fn create_in_non_empty_dir(mut self, allow: bool) -> Self {
        self.options.adopt_non_empty = allow;
        self
    }

    /// Whether `open` moves a store of an older format to this version's
    /// (on by default). The move waits until no other handle has the store
    /// open, and versions that read only the older format refuse the store
    /// after it. Off, such a store is refused with
    /// [`Error::OlderFormat`](crate::Error::OlderFormat) and left as it is:
    /// for a tool that must not change a store a service of an older
    /// version still runs on (the command-line tool asks for `--upgrade`).
    pub fn upgrade_format(mut self, on: bool) -> Self {
        self.options.upgrade_format = on;
        self
    }

    /// How long `open` waits for another open that holds the store alone
    /// (one compacting its directories or moving its format: moments,
    /// unless that process is stopped in the middle), after which it fails
    /// with [`Error::Io`](crate::Error::Io) naming `locks/handles.lock`.
    /// Unset, it waits as long as it takes. (The wait of an open that
    /// moves a store itself, for the other handles to close it, is not
    /// bounded by this.)
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        self.options.lock_wait = Some(wait);
        self
    }

    /// How long a call waits for a task's stripe lock (`locks/<n>.lock`)
    /// that another handle or process holds, 30 s by default, after which
    /// it fails with [`Error::Io`](crate::Error::Io) naming the lock file.
    /// A stripe is held for one write and its fsyncs, or one chunk of a
    /// large pass: moments. A process stopped while it holds one
    /// (`SIGSTOP`, a paused container) holds it until it goes on or is
    /// gone; a reap, claim, renewal or sweep then reports the tasks of that
    /// stripe missed and handles the rest, and once a wait for a stripe ran
    /// out, calls try it for 100 ms only until one takes it again. A pass
    /// over many tasks (a batch, a reap's, a check) waits this long once,
    /// all its waits told, from its first: a stripe held past that is
    /// tried once, and so is one tried for 100 ms in vain, once a wait of
    /// the pass ran out.
    pub fn stripe_wait(mut self, wait: Duration) -> Self {
        self.options.stripe_wait = wait;
        self
    }

    /// Calls `waiting(lock)` when `open` starts waiting for another open
    /// that holds the store alone ([`lock_wait`](Self::lock_wait)), with the
    /// lock's path (`locks/handles.lock`): such a wait is otherwise silent
    /// until it ends. The `taskstore` command says on stderr that it waits.
    pub fn on_lock_wait(mut self, waiting: impl Fn(&Path) + Send + Sync + 'static) -> Self {
        self.options.on_lock_wait = OnLockWait(Some(Arc::new(waiting)));
        self
    }

    /// Routes the store's file-system calls through `faults` (tests only).
    #[cfg(feature = "fault-injection")]
    pub fn fault_injector(mut self, faults: FaultInjector) -> Self {
        self.options.faults = Some(faults);
        self
    }

    /// Logs the store's file-system calls that change the disk to `recorder`
    /// (tests only: the crash-state explorer replays them).
    #[cfg(feature = "fault-injection")]
    pub fn recorder(mut self, recorder: Recorder) -> Self {
        self.options.recorder = Some(recorder);
        self
    }

    /// Whether the handle follows the store by inotify change notices
    /// where it can (`true`, the default), or by file status alone, as it
    /// does where inotify is missing or its per-user limit of instances is
    /// reached. Both ways list the same (`CONSISTENCY.md` says what file
    /// status cannot see).
    ///
    /// `false` suits a process that lists once and exits, such as a
    /// command-line tool: change notices pay off from a handle's second
    /// listing on, and a process that made an inotify instance waits, as
    /// it exits, for the kernel to free its watch (5 to 7 ms here).
    pub fn change_notices(mut self, on: bool) -> Self {
        self.options.change_notices = on;
        self
    }

    /// Makes a pass of `tasks` tasks or more (256 by default) take the paths
    /// of large ones: a sweep reading each expired file once under every
    /// stripe and removing it at once, a removal batch under every stripe
    /// (tests only: a random sequence of a few dozen operations then goes
    /// through them too). At least 1. Work is still spread over the cores
    /// only from 256 items.
    #[cfg(feature = "fault-injection")]
    pub fn large_passes_from(mut self, tasks: usize) -> Self {
        self.options.large_pass = tasks.max(1);
        self
    }

    /// Opens the store, creating it if its directory is missing or empty.
    ///
    /// Opening reads no task file but to resolve two copies of one task. It
    /// checks the layout and the format marker, removes temp files left by
    /// crashed writers, and resolves the copies a power loss may have left
    /// of a task in both `active/` and `done/` (one `stat` per running task):
    /// its cost follows the number of running tasks, never history. (Once, a
    /// store of the older format 1 is moved to this one: that open reads
    /// every finished task's file to index it.)
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedFormat`](crate::Error::UnsupportedFormat) for a
    /// store written by a newer format, [`Error::InvalidStore`](crate::Error::InvalidStore)
    /// if the directory holds other files and is not a store (see
    /// [`create_in_non_empty_dir`](Self::create_in_non_empty_dir)), if a
    /// store directory is a symlink or a file, or, to root, if the store
    /// belongs to another user (its marker does) and is not mounted
    /// read-only (the files root wrote would be root's, which the owner
    /// could not lock or read),
    /// [`Error::Io`](crate::Error::Io)
    /// if the directory cannot be created or read,
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) for invalid
    /// settings.
    pub fn open(self) -> Result<FileStore> {
        self.check()?;
        let backend = open::open(&self.options)?;
        // What the open set aside is reported as a listing reports what it
        // sets aside: to the sink (the open returns no report).
        let set_aside = backend.take_set_aside();
        let store = self.finish(backend)?;
        store.notify_skipped(&set_aside);
        Ok(store)
    }
}

impl Store<FileBackend> {
    /// Opens (or creates) the store at `root` with the defaults.
    pub fn open(root: impl AsRef<Path>) -> Result<FileStore> {
        FileStore::builder(root).open()
    }

    /// A builder for a store at `root`.
    pub fn builder(root: impl AsRef<Path>) -> FileStoreBuilder {
        StoreBuilder::with_options(FileOptions {
            root: root.as_ref().to_owned(),
            durability: Durability::default(),
            adopt_non_empty: false,
            #[cfg(feature = "fault-injection")]
            faults: None,
            #[cfg(feature = "fault-injection")]
            recorder: None,
            change_notices: true,
            upgrade_format: true,
            lock_wait: None,
            stripe_wait: lock::STRIPE_WAIT,
            on_lock_wait: OnLockWait::default(),
            large_pass: parallel::MIN_SHARED,
        })
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        self.backend().path()
    }

    /// The durability this handle writes with.
    pub fn durability(&self) -> Durability {
        self.backend().durability
    }
}

impl FileBackend {
    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The open directory of `area`.
    fn area(&self, area: Area) -> &DirSync {
        match area {
            Area::Active => &self.active,
            Area::Done => &self.done,
        }
    }

    /// The open directory of `area`, to resolve names in.
    fn dir(&self, area: Area) -> &Dir {
        self.area(area).dir()
    }

    /// The group of `dir`'s fsyncs, if it is `active/`, `done/` or
    /// `expiring/` (the same open directory, not only the same path).
    fn group_of(&self, dir: &Dir) -> Option<&DirSync> {
        [&self.active, &self.done, &self.expiring]
            .into_iter()
            .find(|group| std::ptr::eq(group.dir(), dir))
    }

    /// Where the fsyncs of `dir` stand, read before a change to it begins,
    /// for [`sync_changed`](Self::sync_changed).
    fn before_of(&self, dir: &Dir) -> Option<Before> {
        self.group_of(dir).map(DirSync::before)
    }

    /// Makes a change to `dir`, begun at `before` ([`before_of`](Self::before_of)),
    /// durable under `Durability::Immediate`: through its group if it has
    /// one (which knows of the group's failed fsyncs), else by an fsync of
    /// its own.
    fn sync_changed(&self, dir: &Dir, before: Option<Before>) -> Result<()> {
        if self.durability != Durability::Immediate {
            return Ok(());
        }
        match (self.group_of(dir), before) {
            (Some(group), Some(before)) => group.sync(&self.fs, before),
            _ => self.fs.sync_dir(dir),
        }
        .map_err(|e| crate::error::Error::io("fsync directory", dir.path(), e))
    }

    /// Keeps `skipped`, a foreign entry the temp-file clean-up met, to be
    /// reported ([`take_set_aside`](Self::take_set_aside)).
    fn keep_set_aside(&self, skipped: Skipped) {
        self.set_aside
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(skipped);
    }

    /// Keeps, of `skipped`, the reports a listing makes once (files set
    /// aside, not left in place: those every listing reports), for the
    /// next scan to report ([`take_set_aside`](Self::take_set_aside)): the
    /// listing that made them failed.
    fn keep_reports_once(&self, skipped: Vec<Skipped>) {
        skipped
            .into_iter()
            .filter(|report| report.action != crate::backend::UnreadableAction::LeftInPlace)
            .for_each(|report| self.keep_set_aside(report));
    }

    /// The foreign entries the temp-file clean-up met since the last call,
    /// to report.
    fn take_set_aside(&self) -> Vec<Skipped> {
        std::mem::take(
            &mut *self
                .set_aside
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// A task as found on disk, and where.
#[derive(Debug)]
struct Found {
    task: Task,
    area: Area,
    /// Another copy of the task, in the other area, that the read rule
    /// overrules: left by a power loss in the middle of a terminal move. The
    /// next write of the task removes it (sets it aside if it is damaged).
    stale: Option<Stale>,
}

impl Found {
    /// Whether this is a terminal move left between its steps: see
    /// [`is_interrupted_move`].
    fn is_interrupted_move(&self) -> bool {
        is_interrupted_move(self.area, &self.task)
    }
}

/// Whether `task`, read from `area`, is a terminal move left between its
/// steps (an interrupted move): a terminal task in `active/`, whether or
/// not `done/` has its name too. The one rule by which `verify` reports
/// one ([`ProblemKind::InterruptedMove`]),
/// a census counts it ([`Census::interrupted_moves`]),
/// and a sweep finishes and counts it (or the open that resolves a task
/// with names in both areas, which its handle's first sweep counts).
pub(crate) fn is_interrupted_move(area: Area, task: &Task) -> bool {
    area == Area::Active && task.is_terminal()
}

/// A copy of a task that the read rule overrules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stale {
    area: Area,
    /// Whether it reads as a task (else it is set aside, not removed).
    readable: bool,
}

impl Backend for FileBackend {
    fn load(&self, id: &TaskId) -> Result<Option<Task>> {
        if let Some(task) = self.load_running(id)? {
            return Ok(Some(task));
        }
        Ok(self.find(id)?.map(|found| found.task))
    }

    /// A running task the snapshot holds, while no change notice is
    /// pending and no other thread holds the snapshot: no file is opened
    /// and nothing waits. Anything else (a finished task, a change to read,
    /// a snapshot in use, no change notices) is left to `load`.
    fn try_load(&self, id: &TaskId) -> Option<Option<Task>> {
        self.load_running_at_once(id).map(Some)
    }

    fn insert(&self, record: &Record, max_active: usize) -> Result<Insert> {
        let id = &record.task().id;
        if !record.task().is_terminal() && self.count_active()? >= max_active {
            return Ok(Insert::Full);
        }
        let _guard = self.locks.lock(&self.fs, stripe(id))?;
        if let Some(found) = self.find(id)? {
            return Ok(Insert::Exists(found.task));
        }
        self.write_new(record)?;
        Ok(Insert::Done)
    }

    fn replace(&self, current: &Task, next: &Record) -> Result<Swap> {
        self.replace_batch(&[(current.clone(), next.clone())])
            .pop()
            .expect("one result per pair")
    }

    fn replace_all(&self, swaps: &[(Task, Record)]) -> Vec<Result<Swap>> {
        self.replace_batch(swaps)
    }

    fn remove(&self, current: &Task) -> Result<Swap> {
        self.remove_batch(std::slice::from_ref(current))
            .pop()
            .expect("one result per task")
    }

    fn remove_all(&self, tasks: &[Task]) -> Vec<Result<Swap>> {
        self.remove_batch(tasks)
    }

    fn remove_expired(&self, tasks: &[Task]) -> Vec<Result<Swap>> {
        self.remove_expired_batch(tasks)
    }

    fn settle_expired(&self) -> Result<()> {
        // The sweep's last call: its waits for stripes are over.
        self.locks.end_sweep();
        self.due.end();
        self.settle_expired_removals()
    }

    fn remove_unread(
        &self,
        doomed: &(dyn Fn(&Task) -> bool + Sync),
        removed: &mut dyn FnMut(Task),
    ) {
        // A sweep's first call: its waits for stripes, to its
        // `settle_expired`, are one pass (`lock::Pass`).
        self.locks.begin_sweep();
        FileBackend::remove_unread(self, doomed, removed);
    }

    fn remove_due(&self, now: time::OffsetDateTime, removed: &mut dyn FnMut(Task)) {
        FileBackend::remove_due(self, now, removed);
    }

    fn scan(&self, scan: &Scan) -> Result<Scanned> {
        let mut scanned = self.scan_tasks(scan)?;
        scanned.skipped.extend(self.take_set_aside());
        Ok(scanned)
    }

    fn modify(&self, id: &TaskId, decide: &mut Decide<'_>) -> Result<Modified> {
        let _guard = self.locks.lock(&self.fs, stripe(id))?;
        let Some(found) = self.find(id)? else {
            return Ok(Modified::Missing);
        };
        match decide(&found.task)? {
            Change::Keep => {
                self.tidy(&found)?;
                self.make_kept_durable(&found.task)?;
                Ok(Modified::Kept(found.task))
            }
            Change::Replace(next) => {
                self.commit(&found, &next)?;
                Ok(Modified::Replaced(next.into_task()))
            }
            Change::Remove => {
                let mut touched = self.touched();
                self.remove_found(&found, &mut touched)?;
                self.sync_touched(&touched)?;
                Ok(Modified::Removed(found.task))
            }
        }
    }

    /// Dead writers' temp files and half-finished moves; the first call
    /// counts those the open removed or finished too (temp files, tasks
    /// with names in both areas), failing or not
    /// (`faults::a_sweep_whose_clean_up_fails_still_counts_what_the_open_cleaned`).
    fn clean_up(&self, cleaned: &mut usize) -> Result<()> {
        *cleaned += self
            .cleaned_at_open
            .swap(0, std::sync::atomic::Ordering::Relaxed);
        *cleaned += recovery::clean_temp_files(self)?;
        self.finish_moves(cleaned)
    }
}
