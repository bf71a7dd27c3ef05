//! The durable, multi-process file backend.
//!
//! One JSON file per task; non-terminal tasks in `active/`, terminal ones in
//! `done/`; every mutation under a striped inter-process lock; every write a
//! temp file, fsync, rename and directory fsync. FORMAT.md has the layout.

mod active_cache;
mod codec;
mod fs;
mod group;
mod layout;
mod lock;
mod recovery;

use std::collections::{HashMap, HashSet};
use std::fs::{DirEntry, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use time::OffsetDateTime;

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::events::TaskEventKind;
use crate::id::TaskId;
use crate::lease::{self, Lease};
use crate::limits::Limits;
use crate::sink::{EventSink, Notifier};
use crate::store::{ListQuery, Page, TaskStore, Transition};
use crate::task::{NewTask, Outcome, Task, TaskUpdate};

pub use self::fs::FsOp;
#[cfg(feature = "fault-injection")]
pub use self::fs::{Fault, FaultInjector};

use self::active_cache::{ActiveCache, Entry, Stamp};
use self::fs::Fs;
use self::group::DirSync;
use self::layout::{Area, Layout, stripe};
use self::lock::StripeLocks;

/// When a write counts as done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// The default: every write fsyncs the new file before renaming it into
    /// place and fsyncs its directory after. Once a call returns `Ok`, the
    /// change survives a process kill **and a power loss**.
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
/// process that opens it.
///
/// See the crate docs for its guarantees; `FORMAT.md` for the layout.
#[derive(Debug)]
pub struct FileStore {
    layout: Layout,
    active_dir: DirSync,
    done_dir: DirSync,
    locks: StripeLocks,
    fs: Fs,
    clock: Arc<dyn Clock>,
    durability: Durability,
    limits: Limits,
    lease: Lease,
    notifier: Notifier,
    active_cache: ActiveCache,
}

/// Configures and opens a [`FileStore`].
#[derive(Debug)]
#[must_use]
pub struct FileStoreBuilder {
    root: PathBuf,
    durability: Durability,
    clock: Arc<dyn Clock>,
    limits: Limits,
    lease: Lease,
    notifier: Notifier,
    #[cfg(feature = "fault-injection")]
    faults: Option<FaultInjector>,
}

impl FileStoreBuilder {
    /// How durable a returned write is (default [`Durability::Immediate`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Where time comes from (default [`SystemClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The cap on active (non-terminal) tasks, default 10,000.
    ///
    /// Concurrent creates in several processes may each see room for one more,
    /// so the store can briefly hold up to `max_active` plus the number of
    /// concurrent creators, never more.
    pub fn max_active(mut self, max_active: usize) -> Self {
        self.limits.max_active = max_active;
        self
    }

    /// The cap on one task's encoded JSON size, default 16 MiB, at most
    /// 1 GiB (larger values are lowered to it).
    pub fn max_payload_bytes(mut self, max_payload_bytes: usize) -> Self {
        self.limits.max_payload_bytes = max_payload_bytes.min(MAX_FILE_BYTES - 1024);
        self
    }

    /// This handle's instance id, recorded as the owner of the tasks it
    /// creates (default: a random UUID, new for every handle).
    ///
    /// Reuse an id across restarts only if the restarted process resumes the
    /// tasks it owned: renewing their leases claims they are being worked on.
    pub fn instance_id(mut self, instance_id: impl Into<String>) -> Self {
        self.lease.instance_id = instance_id.into();
        self
    }

    /// How long a lease lasts before its task counts as orphaned, default
    /// 30 s ([`DEFAULT_LEASE`](crate::DEFAULT_LEASE)), measured on the
    /// store's [`Clock`].
    pub fn lease(mut self, lease: std::time::Duration) -> Self {
        self.lease.duration = lease;
        self
    }

    /// Sends every task event (created, updated, completed, failed,
    /// cancelled, expired, deleted, reaped, and corrupt files set aside) to
    /// `sink`, after the store's locks are released; a panicking sink is
    /// contained and counted ([`FileStore::sink_panics`]).
    pub fn sink(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.notifier = Notifier::new(sink);
        self
    }

    /// Routes the store's file-system calls through `faults` (tests only).
    #[cfg(feature = "fault-injection")]
    pub fn fault_injector(mut self, faults: FaultInjector) -> Self {
        self.faults = Some(faults);
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
    /// [`Error::Io`] if the directory cannot be created or read.
    pub fn open(self) -> Result<FileStore> {
        #[cfg(feature = "fault-injection")]
        let fs = Fs::with_faults(self.faults);
        #[cfg(not(feature = "fault-injection"))]
        let fs = Fs::default();
        let layout = Layout::new(&self.root);
        recovery::prepare_dirs(&fs, &layout, self.durability)?;
        let open_dir = |path: &Path| {
            fs::open_read(path)
                .map(|dir| DirSync::new(dir, path))
                .map_err(|e| Error::io("open directory", path, e))
        };
        let store = FileStore {
            active_dir: open_dir(&layout.active)?,
            done_dir: open_dir(&layout.done)?,
            locks: StripeLocks::new(&layout),
            layout,
            fs,
            clock: self.clock,
            durability: self.durability,
            limits: self.limits,
            lease: self.lease,
            notifier: self.notifier,
            active_cache: ActiveCache::default(),
        };
        recovery::ensure_marker(&store)?;
        // Crash leftovers: dead writers' temp files. Only names in `tmp/` are
        // read, never a task file. (An interrupted terminal move needs no
        // repair to be read right; the next write, list or sweep of that
        // task finishes it.)
        recovery::clean_temp_files(&store)?;
        Ok(store)
    }
}

/// A task as found on disk, and where.
struct Found {
    task: Task,
    area: Area,
}

impl Found {
    /// A terminal task still in `active/`: its move to `done/` was
    /// interrupted between its two steps. It is final all the same.
    fn unmoved(&self) -> bool {
        self.area == Area::Active && self.task.is_terminal()
    }
}

impl FileStore {
    /// Opens (or creates) the store at `root` with the defaults.
    pub fn open(root: impl AsRef<Path>) -> Result<FileStore> {
        FileStore::builder(root).open()
    }

    /// A builder for a store at `root`.
    pub fn builder(root: impl AsRef<Path>) -> FileStoreBuilder {
        FileStoreBuilder {
            root: root.as_ref().to_owned(),
            durability: Durability::default(),
            clock: Arc::new(SystemClock),
            limits: Limits::default(),
            lease: Lease::default(),
            notifier: Notifier::default(),
            #[cfg(feature = "fault-injection")]
            faults: None,
        }
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.layout.root
    }

    /// How many times this handle's sink panicked (each time the event was
    /// dropped; the operation went on).
    pub fn sink_panics(&self) -> u64 {
        self.notifier.panics()
    }

    /// The durability this handle writes with.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Reads one task file: `Ok(None)` if there is none.
    fn read(&self, area: Area, id: &TaskId) -> Result<Option<Task>> {
        let path = self.layout.task(area, id);
        read_task_file(&path, id)
    }

    /// Finds a task, whatever its expiry. `active/` is read first: a
    /// terminal move renames the file from `active/` to `done/` in one step,
    /// so a task missing from `active/` is in `done/` if it exists at all.
    fn find(&self, id: &TaskId) -> Result<Option<Found>> {
        if let Some(task) = self.read(Area::Active, id)? {
            return Ok(Some(Found {
                task,
                area: Area::Active,
            }));
        }
        Ok(self.read(Area::Done, id)?.map(|task| Found {
            task,
            area: Area::Done,
        }))
    }

    /// Under the stripe lock of `id`: the live task, finishing an interrupted
    /// terminal move on the way.
    fn find_locked(&self, id: &TaskId, now: OffsetDateTime) -> Result<Option<Task>> {
        let Some(found) = self.find(id)? else {
            return Ok(None);
        };
        if found.unmoved() {
            self.move_to_done(id)?;
        }
        if found.task.is_expired_at(now) {
            return Ok(None);
        }
        Ok(Some(found.task))
    }

    /// The second step of a terminal transition: `active/<id>.json` (already
    /// holding the terminal task) is renamed into `done/`. The caller holds
    /// the stripe lock.
    fn move_to_done(&self, id: &TaskId) -> Result<()> {
        let (from, to) = (
            self.layout.task(Area::Active, id),
            self.layout.task(Area::Done, id),
        );
        self.fs
            .rename(&from, &to)
            .map_err(|e| Error::io("move into", &to, e))?;
        self.sync_area(Area::Done)
    }

    /// Writes `task` into `area` atomically: temp file, (fsync), rename, (fsync dir).
    fn write(&self, area: Area, task: &Task) -> Result<()> {
        self.write_file(area, task)?;
        self.sync_area(area)
    }

    /// Writes `task` into `area` atomically, without the directory fsync:
    /// after a power loss the write may be undone, never torn.
    fn write_file(&self, area: Area, task: &Task) -> Result<()> {
        self.write_encoded(area, &task.id, &self.limits.encode(task)?)
    }

    /// [`write_file`](Self::write_file) of a task already encoded (and so
    /// already checked against the payload cap).
    fn write_encoded(&self, area: Area, id: &TaskId, task_json: &[u8]) -> Result<()> {
        self.replace(id, &self.layout.task(area, id), &codec::wrap(task_json))
    }

    /// Puts `bytes` at `dest` atomically: a temp file named for `id` (so
    /// cleanup takes the stripe lock the caller holds), written, fsynced
    /// under `Immediate`, renamed over `dest`. No directory fsync.
    fn replace(&self, id: &TaskId, dest: &Path, bytes: &[u8]) -> Result<()> {
        let (mut file, temp) = self.create_temp(id)?;
        let written = self
            .fs
            .write_all(&mut file, &temp, bytes)
            .map_err(|e| Error::io("write", &temp, e))
            .and_then(|()| self.sync_file(&file, &temp))
            .and_then(|()| {
                drop(file);
                self.fs
                    .rename(&temp, dest)
                    .map_err(|e| Error::io("rename into", dest, e))
            });
        if let Err(e) = written {
            // The temp file is not the task; a failed removal is retried by
            // the next open or sweep.
            let _ = self.fs.remove_file(&temp);
            return Err(e);
        }
        Ok(())
    }

    fn create_temp(&self, id: &TaskId) -> Result<(File, PathBuf)> {
        let mut attempts = 0;
        loop {
            let temp = self.layout.temp(id);
            match self.fs.create_new(&temp) {
                Ok(file) => return Ok((file, temp)),
                // A crashed writer's leftover with the same pid and sequence.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 16 => {
                    attempts += 1;
                }
                Err(e) => return Err(Error::io("create temp file", &temp, e)),
            }
        }
    }

    fn sync_file(&self, file: &File, path: &Path) -> Result<()> {
        match self.durability {
            Durability::Immediate => self
                .fs
                .sync_file(file, path)
                .map_err(|e| Error::io("fsync", path, e)),
            Durability::Eventual => Ok(()),
        }
    }

    /// Makes the caller's change to `area` durable (group commit: threads of
    /// this handle share directory fsyncs).
    fn sync_area(&self, area: Area) -> Result<()> {
        let dir = match area {
            Area::Active => &self.active_dir,
            Area::Done => &self.done_dir,
        };
        match self.durability {
            Durability::Immediate => dir
                .sync(&self.fs)
                .map_err(|e| Error::io("fsync directory", dir.path(), e)),
            Durability::Eventual => Ok(()),
        }
    }

    /// Removes a task file; `false` if there was none.
    fn remove_if_present(&self, area: Area, id: &TaskId) -> Result<bool> {
        let path = self.layout.task(area, id);
        match self.fs.remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("remove", &path, e)),
        }
    }

    /// Locks `id`'s stripe, finds the live task and, unless it is terminal,
    /// writes what `change` makes of it.
    fn mutate(
        &self,
        id: &TaskId,
        change: impl FnOnce(&mut Task, OffsetDateTime),
    ) -> Result<Transition> {
        let transition = self.mutate_locked(id, change)?;
        if let Transition::Applied(task) = &transition {
            self.notifier
                .task(TaskEventKind::for_status(task.status), task);
        }
        Ok(transition)
    }

    fn mutate_locked(
        &self,
        id: &TaskId,
        change: impl FnOnce(&mut Task, OffsetDateTime),
    ) -> Result<Transition> {
        let _guard = self.locks.lock(&self.fs, stripe(id))?;
        let now = self.clock.now();
        let current = self
            .find_locked(id, now)?
            .ok_or_else(|| Error::NotFound { id: id.clone() })?;
        if current.is_terminal() {
            return Ok(Transition::AlreadyTerminal(current));
        }
        let mut next = current;
        change(&mut next, now);
        self.lease.after_write(&mut next, now);
        self.commit(&next)?;
        Ok(Transition::Applied(next))
    }

    /// Writes a changed task; the caller holds its stripe lock.
    ///
    /// A terminal task is written over its active file (readers see it final
    /// at once) and then renamed into `done/`, the directory fsynced: one
    /// file fsync and one directory fsync, as for any write. A crash between
    /// the two steps leaves a terminal task in `active/`, which readers take
    /// as final and the next write, sweep or list moves on.
    fn commit(&self, next: &Task) -> Result<()> {
        if !next.is_terminal() {
            return self.write(Area::Active, next);
        }
        self.write_file(Area::Active, next)?;
        self.move_to_done(&next.id)
    }

    /// Counts the files in `active/` (no reads).
    fn count_active(&self) -> Result<usize> {
        let entries = std::fs::read_dir(&self.layout.active)
            .map_err(|e| Error::io("read directory", &self.layout.active, e))?;
        let mut n = 0;
        for entry in entries {
            entry.map_err(|e| Error::io("read directory", &self.layout.active, e))?;
            n += 1;
        }
        Ok(n)
    }

    /// Reads every task in `area` into `into`, setting corrupt and foreign
    /// files aside. Terminal versions replace active ones.
    fn scan(&self, area: Area, into: &mut HashMap<TaskId, Task>) -> Result<()> {
        if area == Area::Active {
            for entry in self.active_tasks()?.iter() {
                into.entry(entry.task.id.clone())
                    .or_insert_with(|| entry.task.clone());
            }
            return Ok(());
        }
        for (id, entry) in recovery::entries(self, area)? {
            match read_task_file(&entry.path(), &id) {
                Ok(Some(task)) => {
                    into.insert(id, task);
                }
                Ok(None) => {} // removed since the directory was read
                Err(e) => recovery::set_aside_task(self, area, &id, e)?,
            }
        }
        Ok(())
    }

    /// Every task in `active/`, setting corrupt and foreign files aside.
    ///
    /// Served whole from this handle's snapshot while `active/` is provably
    /// unchanged since it was taken; otherwise only the files that are not
    /// provably unchanged are read (see `active_cache`).
    fn active_tasks(&self) -> Result<Arc<[Entry]>> {
        let before = ActiveCache::clock();
        let (status, dir) = ActiveCache::observe(&self.layout.active, before)?;
        if let Some(entries) = self.active_cache.get(dir) {
            return Ok(entries);
        }
        let listed = self.list_active_files(status)?;
        let last = self.active_cache.last();
        let known: HashMap<&TaskId, &Entry> = last
            .iter()
            .flat_map(|entries| entries.iter())
            .map(|e| (&e.task.id, e))
            .collect();
        let (mut entries, mut whole) = (Vec::new(), true);
        for (id, dir_entry) in listed {
            // The file's status before any read: the bytes read are at
            // least as new.
            let stamp = match dir_entry.metadata() {
                Ok(meta) => Stamp::settled(&meta, before),
                // Removed since the directory was read.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                // The read below reports it.
                Err(_) => None,
            };
            if let Some(old) = known
                .get(&id)
                .filter(|e| stamp.is_some() && e.stamp == stamp)
            {
                self.active_cache.reuse();
                entries.push((*old).clone());
                continue;
            }
            let path = dir_entry.path();
            let read = read_file(&path).and_then(|read| {
                read.map(|bytes| {
                    codec::unwrap(&bytes, &path, &id).map(|task| Entry {
                        stamp,
                        bytes: bytes.len(),
                        task,
                    })
                })
                .transpose()
            });
            match read {
                Ok(Some(entry)) => entries.push(entry),
                // Removed since the directory was read.
                Ok(None) => {}
                Err(e) => {
                    whole = false;
                    recovery::set_aside_task(self, Area::Active, &id, e)?;
                }
            }
        }
        let bytes = entries.iter().map(|e| e.bytes).sum();
        let entries: Arc<[Entry]> = entries.into();
        if whole {
            self.active_cache.put(dir, entries.clone(), bytes);
        } else {
            self.active_cache.clear();
        }
        Ok(entries)
    }

    /// The task files in `active/` (foreign names set aside), given the
    /// directory's status read before.
    ///
    /// A file renamed over while a `readdir` is under way may be missing
    /// from it: tmpfs (Linux 6.6 and later) gives the new entry a new place
    /// in the directory, behind the reader. So while the directory changed
    /// during a pass, it is read again and the passes' names are joined (a
    /// name gone by then reads as removed). Bounded: a task renamed over
    /// during every pass can still be missed.
    fn list_active_files(&self, mut status: Option<Stamp>) -> Result<Vec<(TaskId, DirEntry)>> {
        const PASSES: usize = 4;
        let dir = &self.layout.active;
        let mut listed = recovery::entries(self, Area::Active)?;
        for _ in 1..PASSES {
            let (now, _) = ActiveCache::observe(dir, ActiveCache::clock())?;
            if now.is_none() || now == status {
                break;
            }
            status = now;
            let mut seen: HashSet<TaskId> = listed.iter().map(|(id, _)| id.clone()).collect();
            for (id, entry) in recovery::entries(self, Area::Active)? {
                if seen.insert(id.clone()) {
                    listed.push((id, entry));
                }
            }
        }
        Ok(listed)
    }
}

/// Reads and decodes one task file. A missing file is `Ok(None)`; a symlink,
/// directory, FIFO or undecodable file is [`Error::Corrupt`].
///
/// This is the hot path of `get`: open, read until end of file, close. The
/// file's type needs no `fstat`: a directory fails the read, a FIFO reads
/// empty, and nothing longer than any task file could be is read.
fn read_task_file(path: &Path, id: &TaskId) -> Result<Option<Task>> {
    read_file(path)?
        .map(|bytes| codec::unwrap(&bytes, path, id))
        .transpose()
}

/// The bytes of the task file at `path`, `Ok(None)` if there is none (see
/// [`read_task_file`]).
fn read_file(path: &Path) -> Result<Option<Vec<u8>>> {
    let mut file = match fs::open_read(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if fs::is_symlink_refusal(&e) => {
            return Err(Error::corrupt(path, "is a symlink"));
        }
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let mut bytes = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::IsADirectory => {
                return Err(Error::corrupt(path, "is a directory"));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(Error::corrupt(path, "is not a regular file"));
            }
            Err(e) => return Err(Error::io("read", path, e)),
        }
        if bytes.len() > MAX_FILE_BYTES {
            return Err(Error::corrupt(path, "larger than any task file"));
        }
    }
    Ok(Some(bytes))
}

/// Bigger than any task file this crate writes (a task is capped well below).
const MAX_FILE_BYTES: usize = 1 << 30;

impl TaskStore for FileStore {
    fn create(&self, new: NewTask) -> Result<Task> {
        let id = new.id.clone().unwrap_or_else(TaskId::new);
        let now = self.clock.now();
        let mut task = new.into_task(id.clone(), now);
        self.lease.claim(&mut task, now);
        // Encoded once: the cap is checked before any I/O, and these bytes
        // are what is written.
        let json = self.limits.encode(&task)?;
        if self.count_active()? >= self.limits.max_active {
            // Expired tasks still have files; make room before refusing.
            recovery::sweep_area(self, Area::Active, now)?;
            if self.count_active()? >= self.limits.max_active {
                return Err(Error::TooManyActive {
                    id,
                    limit: self.limits.max_active,
                });
            }
        }
        {
            let _guard = self.locks.lock(&self.fs, stripe(&id))?;
            if let Some(found) = self.find(&id)? {
                if !found.task.is_expired_at(now) {
                    return Err(Error::AlreadyExists { id });
                }
                // An expired task is gone for every reader; its file makes way.
                self.remove_if_present(found.area, &id)?;
            }
            self.write_encoded(Area::Active, &id, &json)?;
            self.sync_area(Area::Active)?;
        }
        self.notifier.task(TaskEventKind::Created, &task);
        Ok(task)
    }

    fn get(&self, id: &TaskId) -> Result<Option<Task>> {
        let now = self.clock.now();
        Ok(self
            .find(id)?
            .map(|found| found.task)
            .filter(|t| !t.is_expired_at(now)))
    }

    fn update(&self, id: &TaskId, update: TaskUpdate) -> Result<Transition> {
        if let Some(status) = update.terminal_status() {
            return Err(Error::TerminalStatusInUpdate {
                id: id.clone(),
                status,
            });
        }
        self.mutate(id, |task, now| update.apply(task, now))
    }

    fn finish(&self, id: &TaskId, outcome: Outcome) -> Result<Transition> {
        self.mutate(id, |task, now| outcome.apply(task, now))
    }

    fn list(&self, query: &ListQuery) -> Result<Page> {
        query.cursor()?;
        let now = self.clock.now();
        let mut tasks = HashMap::new();
        if query.wants_active() || query.wants_terminal() {
            // `active/` first: a task that moves to `done/` meanwhile is then
            // found again there, and its terminal version wins. A terminal
            // task still in `active/` (an interrupted move) is seen here too.
            self.scan(Area::Active, &mut tasks)?;
        }
        if query.wants_terminal() {
            self.scan(Area::Done, &mut tasks)?;
        }
        query.page(tasks.into_values().collect(), now)
    }

    fn delete(&self, id: &TaskId) -> Result<bool> {
        let deleted = {
            let _guard = self.locks.lock(&self.fs, stripe(id))?;
            let now = self.clock.now();
            let Some(found) = self.find(id)? else {
                return Ok(false);
            };
            // Under the lock the task's one file stays where it was found.
            if self.remove_if_present(found.area, id)? {
                self.sync_area(found.area)?;
            }
            Some(found.task).filter(|t| !t.is_expired_at(now))
        };
        if let Some(task) = &deleted {
            self.notifier.task(TaskEventKind::Deleted, task);
        }
        Ok(deleted.is_some())
    }

    fn sweep_expired(&self) -> Result<usize> {
        let now = self.clock.now();
        recovery::clean_temp_files(self)?;
        Ok(recovery::sweep_area(self, Area::Active, now)?
            + recovery::sweep_area(self, Area::Done, now)?)
    }

    fn instance_id(&self) -> &str {
        &self.lease.instance_id
    }

    fn renew_lease(&self, id: &TaskId) -> Result<Transition> {
        let _guard = self.locks.lock(&self.fs, stripe(id))?;
        let now = self.clock.now();
        let mut task = self
            .find_locked(id, now)?
            .ok_or_else(|| Error::NotFound { id: id.clone() })?;
        if task.is_terminal() {
            return Ok(Transition::AlreadyTerminal(task));
        }
        if !self.lease.owns(&task) {
            return Err(Error::NotOwner {
                id: id.clone(),
                owner: task.owner,
            });
        }
        self.lease.renew(&mut task, now);
        // No directory fsync: a renewal undone by a power loss only matters
        // to an owner that the power loss has stopped as well.
        self.write_file(Area::Active, &task)?;
        Ok(Transition::Applied(task))
    }

    fn reap_orphans(&self) -> Result<Vec<Task>> {
        let mut reaped = Vec::new();
        let mut candidates = HashMap::new();
        self.scan(Area::Active, &mut candidates)?;
        let first_look = self.clock.now();
        for (id, task) in candidates {
            if !lease::is_orphan(&task, first_look) {
                continue;
            }
            // Re-check under the lock: the owner may have renewed or finished.
            let task = {
                let _guard = self.locks.lock(&self.fs, stripe(&id))?;
                let now = self.clock.now();
                let Some(mut task) = self.find_locked(&id, now)? else {
                    continue;
                };
                if !lease::is_orphan(&task, now) {
                    continue;
                }
                let error = lease::orphan_error(&task, &self.lease.instance_id);
                Outcome::Failed(error).apply(&mut task, now);
                self.lease.after_write(&mut task, now);
                self.commit(&task)?;
                task
            };
            tracing::info!(task = %id, owner = task.owner.as_deref().unwrap_or(""), "reaped an orphaned task");
            self.notifier.task(TaskEventKind::Reaped, &task);
            reaped.push(task);
        }
        reaped.sort_by(Task::listing_order);
        Ok(reaped)
    }
}
