//! The durable, multi-process file backend.
//!
//! One JSON file per task; non-terminal tasks in `active/`, terminal ones in
//! `done/`; every change under a striped inter-process lock; every write a
//! temp file, fsync, rename and directory fsync. FORMAT.md has the layout.
//! The backend knows nothing of the store's rules: it stores what it is
//! given, where its status says, if the task on disk is still the version
//! the rules read.

mod active_cache;
mod codec;
mod fs;
mod group;
mod layout;
mod lock;
mod read;
mod recovery;
mod scan;
mod write;

use std::path::{Path, PathBuf};

use crate::backend::{
    Backend, Change, Decide, Insert, Modified, Record, Scan, Scanned, Swap, is_current,
};
use crate::error::{Error, Result};
use crate::id::TaskId;
use crate::rules::{Store, StoreBuilder};
use crate::task::Task;

pub use self::fs::FsOp;
#[cfg(feature = "fault-injection")]
pub use self::fs::{Fault, FaultInjector, FsEvent, Recorder};

use self::active_cache::ActiveCache;
use self::fs::Fs;
use self::group::DirSync;
use self::layout::{Area, Layout, stripe};
use self::lock::StripeLocks;

/// When a write counts as done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// The default: every write fsyncs the new file before renaming it into
    /// place and fsyncs every directory it changed after. Once a call returns
    /// `Ok`, the change survives a process kill **and a power loss**.
    #[default]
    Immediate,
    /// No fsync at all. A returned change survives the process crashing
    /// (the kernel has it), but **not a power loss or kernel crash**: recent
    /// changes may then be lost, and on file systems that do not order data
    /// before renames a recently written task file may come back empty or
    /// damaged (it is then set aside like any corrupt file). Readers in other
    /// processes still never see a torn task.
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

/// What the file backend needs to open: a directory, and how durable writes
/// are.
#[derive(Debug)]
pub struct FileOptions {
    root: PathBuf,
    durability: Durability,
    #[cfg(feature = "fault-injection")]
    faults: Option<FaultInjector>,
    #[cfg(feature = "fault-injection")]
    recorder: Option<Recorder>,
}

/// The storage of a [`FileStore`]: task files in one directory.
#[derive(Debug)]
pub struct FileBackend {
    layout: Layout,
    active_dir: DirSync,
    done_dir: DirSync,
    locks: StripeLocks,
    fs: Fs,
    durability: Durability,
    active_cache: ActiveCache,
}

impl StoreBuilder<FileOptions> {
    /// How durable a returned write is (default [`Durability::Immediate`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.options.durability = durability;
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

    /// Opens the store, creating its directory if needed.
    ///
    /// Opening reads no task file: it checks the layout and the format
    /// marker and removes temp files left by crashed writers, at a cost that
    /// does not grow with the number of tasks.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedFormat`] for a store written by a newer format,
    /// [`Error::InvalidStore`] if a store directory is a symlink or a file,
    /// [`Error::Io`] if the directory cannot be created or read,
    /// [`Error::InvalidConfig`] for invalid settings.
    pub fn open(self) -> Result<FileStore> {
        let options = &self.options;
        #[cfg(feature = "fault-injection")]
        let fs = Fs::with_faults(options.faults.clone()).recording(options.recorder.clone());
        #[cfg(not(feature = "fault-injection"))]
        let fs = Fs::default();
        let layout = Layout::new(&options.root);
        recovery::prepare_dirs(&fs, &layout, options.durability)?;
        let open_dir = |path: &Path| {
            fs::open_read(path)
                .map(|dir| DirSync::new(dir, path))
                .map_err(|e| Error::io("open directory", path, e))
        };
        let backend = FileBackend {
            active_dir: open_dir(&layout.active)?,
            done_dir: open_dir(&layout.done)?,
            locks: StripeLocks::new(&layout),
            layout,
            fs,
            durability: options.durability,
            active_cache: ActiveCache::default(),
        };
        recovery::ensure_marker(&backend)?;
        // Crash leftovers: dead writers' temp files. Only names in `tmp/` are
        // read, never a task file.
        recovery::clean_temp_files(&backend)?;
        self.finish(backend)
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
            #[cfg(feature = "fault-injection")]
            faults: None,
            #[cfg(feature = "fault-injection")]
            recorder: None,
        })
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.backend().layout.root
    }

    /// The durability this handle writes with.
    pub fn durability(&self) -> Durability {
        self.backend().durability
    }
}

impl FileBackend {
    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.layout.root
    }
}

/// A task as found on disk, and where.
#[derive(Debug)]
struct Found {
    task: Task,
    area: Area,
    /// An older copy of the same task in the other area, left by a power
    /// loss in the middle of a terminal move: the caller removes it.
    stale: Option<Area>,
}

impl Backend for FileBackend {
    fn load(&self, id: &TaskId) -> Result<Option<Task>> {
        Ok(self.find(id)?.map(|found| found.task))
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
        self.write(area_of(record.task()), record)?;
        Ok(Insert::Done)
    }

    fn replace(&self, current: &Task, next: &Record) -> Result<Swap> {
        let _guard = self.locks.lock(&self.fs, stripe(&current.id))?;
        match self.find(&current.id)? {
            Some(found) if is_current(&found.task, current) => {
                self.commit(&found, next)?;
                Ok(Swap::Done)
            }
            found => Ok(Swap::Changed(found.map(|f| f.task))),
        }
    }

    fn remove(&self, current: &Task) -> Result<Swap> {
        let _guard = self.locks.lock(&self.fs, stripe(&current.id))?;
        match self.find(&current.id)? {
            Some(found) if is_current(&found.task, current) => {
                self.remove_found(&found)?;
                Ok(Swap::Done)
            }
            found => Ok(Swap::Changed(found.map(|f| f.task))),
        }
    }

    fn scan(&self, scan: &Scan) -> Result<Scanned> {
        self.scan_tasks(scan)
    }

    fn modify(&self, id: &TaskId, decide: &mut Decide<'_>) -> Result<Modified> {
        let _guard = self.locks.lock(&self.fs, stripe(id))?;
        let Some(found) = self.find(id)? else {
            return Ok(Modified::Missing);
        };
        match decide(&found.task)? {
            Change::Keep => {
                self.tidy(&found)?;
                Ok(Modified::Kept(found.task))
            }
            Change::Replace(next) => {
                self.commit(&found, &next)?;
                Ok(Modified::Replaced(next.into_task()))
            }
            Change::Remove => {
                self.remove_found(&found)?;
                Ok(Modified::Removed(found.task))
            }
        }
    }

    fn clean_up(&self) -> Result<usize> {
        Ok(recovery::clean_temp_files(self)? + self.finish_moves()?)
    }
}

/// Where a task lives: running tasks in `active/`, finished ones in `done/`.
fn area_of(task: &Task) -> Area {
    if task.is_terminal() {
        Area::Done
    } else {
        Area::Active
    }
}
