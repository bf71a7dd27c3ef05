//! The census of a store: every task as a reader gets it, and what the
//! store's files take (their blocks on disk, and their sizes), read without
//! changing anything (no file set aside, no leftover cleaned, no stripe
//! lock taken; the check holds the handles lock shared, as a handle
//! does).

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::file::fs::{Dir, Kind, Status};
use crate::file::layout::{self, Area};
use crate::file::problem::Sub;
use crate::file::read::newer;
use crate::file::verify::FileCheck;
use crate::file::{FileBackend, codec, is_interrupted_move, open};
use crate::id::TaskId;
use crate::task::Task;

/// Every task of a store and what its files take: what
/// [`FileCheck::census`] read.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Census {
    /// Every stored task, one per id (the copy the read rule gives a
    /// reader), expired ones included, in listing order (`createdAt`, then
    /// id; none from [`FileCheck::census_each`], which hands them out),
    /// without what it carries for its host (status message, result,
    /// error, input requests, metadata, the resume state's input and
    /// checkpoint): which task, at which version, in which state, whose,
    /// until when, and its resume state's kind and attempts. What counting
    /// and judging the tasks needs, at a size that does not grow with
    /// their payloads: a store's payloads need not fit in memory.
    pub tasks: Vec<Task>,
    /// Task files that could not be read (left where they are; `verify`
    /// says why).
    pub unreadable: Vec<PathBuf>,
    /// The files of `unreadable` that hold no task this version will ever
    /// read from them (damaged, or another task's): what the store's own
    /// reads set aside into `quarantine/`. The others (an I/O error, a
    /// newer format, a file past the read cap) every read leaves in place,
    /// as they may read later, or with a newer `taskstore`.
    pub corrupt: Vec<PathBuf>,
    /// Names in `active/` or `done/` that are no task file's: a name not
    /// of the form `<id>.json`, or a directory, link or other non-file
    /// under one (left where they are; `verify` reports them, `repair`
    /// sets them aside).
    pub foreign: Vec<PathBuf>,
    /// Finished tasks whose file is still in `active/`, whether or not
    /// `done/` has their name too: terminal moves interrupted between
    /// their halves (as `verify` reports them,
    /// [`ProblemKind::InterruptedMove`](crate::ProblemKind::InterruptedMove)),
    /// which a sweep finishes and counts among the leftovers it cleaned
    /// ([`Swept::cleaned`](crate::Swept::cleaned); one with names in both
    /// areas is finished by the next open, and counted by its handle's
    /// first sweep); every read sees them final already.
    pub interrupted_moves: Vec<PathBuf>,
    /// `expiring/` entries that are no longer their task's file (a crash
    /// between a delete's steps, a sweep killed before its end), by the
    /// rule a sweep removes them by: a sweep removes those due
    /// ([`StaleEntry::is_due_at`]) and counts them among the leftovers it
    /// cleaned; `verify` reports each.
    pub stale_entries: Vec<StaleEntry>,
    /// What the store's files take.
    pub usage: Usage,
}

/// An `expiring/` entry that is no longer its task's file
/// ([`Census::stale_entries`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StaleEntry {
    /// The entry.
    pub path: PathBuf,
    /// When its name says its task expires.
    pub expires_at: Option<time::OffsetDateTime>,
}

impl StaleEntry {
    /// The `expiring/` entry `name`, at `path`, found stale; `None` for a
    /// name the index does not use.
    pub(crate) fn named(path: PathBuf, name: &OsStr) -> Option<StaleEntry> {
        let (_, expires_at) = layout::expiring_entry(name)?;
        Some(StaleEntry { path, expires_at })
    }

    /// Whether a sweep at `now` meets the entry, and so removes it: its
    /// name says its task has expired by then (as a sweep reads the index).
    pub fn is_due_at(&self, now: time::OffsetDateTime) -> bool {
        layout::is_due(self.expires_at, now)
    }
}

/// What a store's files take: the blocks allocated to them on disk, and
/// their sizes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Usage {
    /// Bytes allocated on disk to the store's directories and files: their
    /// blocks (`st_blocks` × 512), each inode once (an `expiring/` entry is
    /// another name of its task file), as `du` counts them. The store's own
    /// names: the root, its marker and directories, and each directory's
    /// entries (one level deep: a directory set aside in `quarantine/`
    /// counts its own blocks, not what it holds).
    pub allocated_bytes: u64,
    /// Bytes in the store's files: the sizes of its marker, task files,
    /// temp files and quarantined files, and of foreign files among the
    /// task files, as `ls -l` shows them. Far below
    /// `allocated_bytes` for small tasks: a file of a few hundred bytes
    /// takes a whole block.
    pub file_bytes: u64,
    /// Task files (`active/` and `done/`; not the foreign names there).
    pub task_files: usize,
    /// Bytes in task files (their sizes).
    pub task_bytes: u64,
    /// Files in `tmp/`.
    pub temp_files: usize,
    /// Files in `quarantine/`.
    pub quarantined: usize,
    /// Bytes in `quarantine/` (the sizes of its files).
    pub quarantined_bytes: u64,
}

/// The blocks of the inodes met so far, each counted once.
#[derive(Default)]
struct Blocks {
    seen: HashSet<(u64, u64)>,
    bytes: u64,
}

impl Blocks {
    fn add(&mut self, status: &Status) {
        if self.seen.insert((status.dev, status.ino)) {
            self.bytes += status.blocks * 512;
        }
    }
}

impl FileCheck {
    /// Reads every task; see [`census_with`](FileCheck::census_with).
    pub fn census(&self) -> Result<Census> {
        self.census_with(&mut |_, _| {})
    }

    /// Reads every task of the store as a reader gets it, and what its
    /// files take ([`Usage`]), calling `progress(done, total)` as it goes:
    /// [`census_each`](FileCheck::census_each), its tasks collected in
    /// listing order into [`Census::tasks`].
    ///
    /// # Errors
    ///
    /// As [`census_each`](FileCheck::census_each).
    pub fn census_with(&self, progress: &mut dyn FnMut(usize, usize)) -> Result<Census> {
        let mut tasks = Vec::new();
        let mut census = self.census_each(progress, &mut |task| tasks.push(task))?;
        tasks.sort_by(Task::listing_order);
        census.tasks = tasks;
        Ok(census)
    }

    /// Reads every task of the store as a reader gets it, and what its
    /// files take ([`Usage`]), calling `progress(done, total)` as it goes,
    /// and hands each task to `each` (as [`Census::tasks`] holds it,
    /// without what it carries for its host) in no particular order,
    /// keeping none: the census returned has no [`tasks`](Census::tasks).
    /// What it holds while it reads is the running tasks and the names in
    /// `done/`, not the finished tasks: a count over a store's history
    /// (`taskstore stats`) needs no room for it. Changes nothing and takes
    /// no stripe lock.
    ///
    /// `active/` is read before `done/` (and `done/` listed after), as the
    /// store's listings do: a task that finishes during the census is met
    /// at least once, and two copies of a task count once, by the read
    /// rule (the running tasks are handed to `each` last, once `done/` was
    /// read). Beside live writers it is a snapshot of a moving store: a
    /// task created or deleted meanwhile may be in it or not.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedFormat`] if the store's marker names a newer
    /// format (as an open refuses it: this version may misread it),
    /// [`Error::OlderFormat`] if it is of an older format (an open that may
    /// upgrade it moves it first: this one has no `expiring/`),
    /// [`Error::InvalidStore`] if the store's layout is broken (`verify`
    /// says how), [`Error::Io`] if a directory cannot be read. After an
    /// error, `each` may have been handed some of the tasks.
    pub fn census_each(
        &self,
        progress: &mut dyn FnMut(usize, usize),
        each: &mut dyn FnMut(Task),
    ) -> Result<Census> {
        self.refuse_older()?;
        let store = self.backend()?;
        open::refuse_newer(
            &store.root_dir,
            open::read_marker(&store.fs, &store.root_dir)?,
        )?;
        let mut census = Census::default();
        let mut blocks = Blocks::default();
        let active = store.active_names_whole()?;
        let done_before = read_dir(store, store.dir(Area::Done))?.len();
        let mut total = active.len() + done_before;
        let mut seen = 0;
        // The running tasks, by id: a copy of one in `done/` is picked
        // between by the read rule.
        let mut tasks: HashMap<TaskId, Task> = HashMap::new();
        // Finished tasks met in `active/`, by name.
        let mut finished_active = Vec::new();
        for name in active {
            seen += 1;
            progress(seen, total.max(seen));
            if let Some(task) = read(store, Area::Active, &name, &mut census, &mut blocks)? {
                if is_interrupted_move(Area::Active, &task) {
                    finished_active.push(name);
                }
                tasks.insert(task.id.clone(), task);
            }
        }
        // Listed again after `active/` was read: a task moved meanwhile is
        // in this listing.
        let done = read_dir(store, store.dir(Area::Done))?;
        total = seen + done.len();
        census.interrupted_moves = finished_active
            .iter()
            .map(|name| store.dir(Area::Active).join(name))
            .collect();
        for name in &done {
            seen += 1;
            progress(seen, total);
            if let Some(task) = read(store, Area::Done, name, &mut census, &mut blocks)? {
                match tasks.get_mut(&task.id) {
                    Some(running) => {
                        if newer(&task, running) {
                            *running = task;
                        }
                    }
                    None => each(task),
                }
            }
        }
        for sub in [Sub::Tmp, Sub::Quarantine, Sub::Expiring, Sub::Locks] {
            let Some(dir) = self.sub_dir(sub) else {
                continue;
            };
            for name in read_dir(store, dir)? {
                let Ok(status) = store.fs.stat(dir, &name) else {
                    continue;
                };
                blocks.add(&status);
                match sub {
                    Sub::Tmp => {
                        census.usage.temp_files += 1;
                        census.usage.file_bytes += status.size;
                    }
                    Sub::Quarantine => {
                        census.usage.quarantined += 1;
                        census.usage.quarantined_bytes += status.size;
                        census.usage.file_bytes += status.size;
                    }
                    Sub::Expiring => {
                        if let Some((position, _)) = layout::expiring_entry(&name)
                            && store.index_is_stale(&position.id, &name)
                            && let Some(entry) = StaleEntry::named(dir.join(&name), &name)
                        {
                            census.stale_entries.push(entry);
                        }
                    }
                    // Empty lock files.
                    _ => {}
                }
            }
        }
        if let Ok(status) = store.fs.stat(&store.root_dir, layout::MARKER.as_ref()) {
            blocks.add(&status);
            census.usage.file_bytes += status.size;
        }
        let dirs = [
            Sub::Active,
            Sub::Done,
            Sub::Tmp,
            Sub::Expiring,
            Sub::Locks,
            Sub::Quarantine,
        ];
        for dir in
            std::iter::once(&store.root_dir).chain(dirs.iter().filter_map(|s| self.sub_dir(*s)))
        {
            if let Ok(status) = store.fs.stat_dir(dir) {
                blocks.add(&status);
            }
        }
        census.usage.allocated_bytes = blocks.bytes;
        tasks.into_values().for_each(each);
        Ok(census)
    }
}

fn read_dir(store: &FileBackend, dir: &Dir) -> Result<Vec<OsString>> {
    store
        .fs
        .read_dir(dir)
        .map_err(|e| Error::io("read directory", dir.path(), e))
}

/// Reads the entry `name` of `area` into the census: its size, and the task
/// it holds (`None` if it is gone, foreign or unreadable). A name that is
/// no task file's, or is not a file, counts as foreign, not as a task file.
fn read(
    store: &FileBackend,
    area: Area,
    name: &OsString,
    census: &mut Census,
    blocks: &mut Blocks,
) -> Result<Option<Task>> {
    let dir = store.dir(area);
    let path = dir.join(name);
    let id = layout::task_file_id(name);
    match store.fs.stat(dir, name) {
        Ok(status) => {
            blocks.add(&status);
            if status.kind == Kind::File {
                census.usage.file_bytes += status.size;
            }
            if status.kind != Kind::File || id.is_none() {
                census.foreign.push(path);
                return Ok(None);
            }
            census.usage.task_files += 1;
            census.usage.task_bytes += status.size;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(_) => {}
    }
    let Some(id) = id else {
        census.foreign.push(path);
        return Ok(None);
    };
    let read = store
        .read_bytes(dir, name)
        .and_then(|bytes| bytes.map(|b| codec::unwrap(&b, &path, &id)).transpose());
    match read {
        // One task whole at a time: a census of thousands holds no payload.
        Ok(task) => Ok(task.as_ref().map(Task::without_payloads)),
        Err(e) => {
            // As `recovery::set_aside_task` tells what it sets aside.
            if matches!(e, Error::Corrupt { .. }) {
                census.corrupt.push(path.clone());
            }
            census.unreadable.push(path);
            Ok(None)
        }
    }
}
