//! Reading task files, and the read rule: which copy of a task is the task.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io;

use crate::error::{Error, Result};
use crate::file::fs::{Dir, is_special_file_refusal, is_symlink_refusal};
use crate::file::layout::{Area, task_name};
use crate::file::{FileBackend, Found, Stale, codec};
use crate::id::TaskId;
use crate::task::Task;

impl FileBackend {
    /// Every name in `active/`, read in one call, each once: its files are
    /// renamed over, which may hide a name from a reading in several calls,
    /// or give it twice. For the census and `verify`, which read it once.
    pub(super) fn active_names_whole(&self) -> Result<Vec<std::ffi::OsString>> {
        let active = self.dir(Area::Active);
        self.fs
            .read_dir_whole(active)
            .map_err(|e| Error::io("read directory", active.path(), e))
    }

    /// Reads task `id`'s file in `area`: `Ok(None)` if there is none.
    pub(super) fn read(&self, area: Area, id: &TaskId) -> Result<Option<Task>> {
        self.read_task(self.dir(area), &task_name(id), id)
    }

    /// Reads and decodes the task file `name` in `dir`, which must hold task
    /// `id`. A missing file is `Ok(None)`; a symlink, directory, FIFO or
    /// undecodable file is [`Error::Corrupt`]; a file larger than any task
    /// a handle writes is [`Error::FileTooLarge`], refused before it is read.
    pub(super) fn read_task(&self, dir: &Dir, name: &OsStr, id: &TaskId) -> Result<Option<Task>> {
        self.read_task_within(dir, name, id, codec::LARGEST_FILE)
    }

    /// [`read_task`](Self::read_task), refusing files past `limit` bytes
    /// (not this handle's own limit).
    pub(super) fn read_task_within(
        &self,
        dir: &Dir,
        name: &OsStr,
        id: &TaskId,
        limit: u64,
    ) -> Result<Option<Task>> {
        self.read_bytes_within(dir, name, limit)?
            .map(|bytes| codec::unwrap(&bytes, &dir.join(name), id))
            .transpose()
    }

    /// The bytes of the file `name` in `dir`, `Ok(None)` if there is none
    /// (see [`read_task`](Self::read_task)).
    ///
    /// This is the hot path of `get`: open, `fstat`, read, close.
    pub(super) fn read_bytes(&self, dir: &Dir, name: &OsStr) -> Result<Option<Vec<u8>>> {
        self.read_bytes_within(dir, name, codec::LARGEST_FILE)
    }

    /// [`read_bytes`](Self::read_bytes), refusing files past `limit` bytes
    /// (not this handle's own limit).
    pub(super) fn read_bytes_within(
        &self,
        dir: &Dir,
        name: &OsStr,
        limit: u64,
    ) -> Result<Option<Vec<u8>>> {
        Ok(self
            .read_linked_within(dir, name, limit)?
            .map(|(bytes, _)| bytes))
    }

    /// [`read_bytes_within`](Self::read_bytes_within), with the file's
    /// number of links when it was read.
    pub(super) fn read_linked_within(
        &self,
        dir: &Dir,
        name: &OsStr,
        limit: u64,
    ) -> Result<Option<(Vec<u8>, u64)>> {
        let mut file = match self.fs.open_read(dir, name) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if is_symlink_refusal(&e) => {
                return Err(Error::corrupt(dir.join(name), "is a symlink"));
            }
            // A socket: as a FIFO or a device is, once opened.
            Err(e) if is_special_file_refusal(&e) => {
                return Err(Error::corrupt(dir.join(name), "is not a regular file"));
            }
            Err(e) => return Err(Error::io("open", dir.join(name), e)),
        };
        let path = dir.join(name);
        match self.fs.read_to_end_linked(&mut file, &path, limit) {
            Ok(read) => Ok(Some(read)),
            Err(e) if e.kind() == io::ErrorKind::IsADirectory => {
                Err(Error::corrupt(path, "is a directory"))
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                Err(Error::corrupt(path, "is not a regular file"))
            }
            Err(e) if e.kind() == io::ErrorKind::FileTooLarge => {
                let too_large = e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<crate::file::fs::TooLarge>());
                let (size, limit) = too_large.map_or((0, limit), |t| (t.size, t.limit));
                Err(Error::FileTooLarge { path, size, limit })
            }
            Err(e) => Err(Error::io("read", path, e)),
        }
    }

    /// Finds a task, whatever its expiry, by the read rule.
    ///
    /// `active/` is read first: a terminal move gives the task its name in
    /// `done/` before it takes the one in `active/` away, so a task missing
    /// from `active/` is in `done/` if it exists at all. A running task in
    /// `active/` is looked for in `done/` too if `open` may have left it
    /// there: a power loss in the middle of a terminal move can leave the
    /// old running copy (or a damaged one) beside the terminal one, and a
    /// terminal version anywhere is final ([`newer`]).
    pub(super) fn find(&self, id: &TaskId) -> Result<Option<Found>> {
        let active = match self.read(Area::Active, id) {
            Ok(Some(active)) => active,
            Ok(None) => {
                return Ok(self.read(Area::Done, id)?.map(|task| Found {
                    task,
                    area: Area::Done,
                    stale: None,
                }));
            }
            // A damaged running copy yields to a terminal one.
            Err(e @ Error::Corrupt { .. }) => {
                return match self.read(Area::Done, id)? {
                    Some(task) => Ok(Some(Found {
                        task,
                        area: Area::Done,
                        stale: Some(Stale {
                            area: Area::Active,
                            readable: false,
                        }),
                    })),
                    None => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
        // A terminal one is an interrupted move (or one under way): final
        // all the same. A running one has no second copy unless `open` left
        // one: only a power loss leaves a running copy beside a terminal
        // one (a move renames the terminal version into `active/` first),
        // and `open` resolves every pair it can.
        if active.is_terminal() || !self.unresolved.may_have_two(id) {
            return Ok(Some(Found {
                task: active,
                area: Area::Active,
                stale: None,
            }));
        }
        let done = match self.read(Area::Done, id) {
            Ok(Some(done)) => Copy::Readable(done),
            Ok(None) => Copy::Missing,
            // A damaged copy cannot outrank a readable one.
            Err(Error::Corrupt { .. }) => Copy::Damaged,
            Err(e) => return Err(e),
        };
        let (task, area, stale) = match done {
            Copy::Readable(done) if newer(&done, &active) => (
                done,
                Area::Done,
                Some(Stale {
                    area: Area::Active,
                    readable: true,
                }),
            ),
            Copy::Readable(_) => (
                active,
                Area::Active,
                Some(Stale {
                    area: Area::Done,
                    readable: true,
                }),
            ),
            Copy::Damaged => (
                active,
                Area::Active,
                Some(Stale {
                    area: Area::Done,
                    readable: false,
                }),
            ),
            Copy::Missing => (active, Area::Active, None),
        };
        Ok(Some(Found { task, area, stale }))
    }
}

/// Which tasks may still have a copy in both `active/` and `done/` (a power
/// loss in the middle of a terminal move) that `open` did not resolve: a
/// read of one of them looks in both areas, even where a reading of
/// `active/` alone would do for any other task.
#[derive(Debug, Default)]
pub(super) enum Unresolved {
    /// Not looked for (a check of a store, not a handle): any task may.
    #[default]
    Unknown,
    /// These, which `open` found and could not resolve (on a store it
    /// cannot write); none on a store it could.
    Only(BTreeSet<TaskId>),
}

impl Unresolved {
    /// Whether no task may have two copies: reads of `active/` alone
    /// are the tasks (the case of every store `open` could write).
    pub(super) fn is_empty(&self) -> bool {
        matches!(self, Unresolved::Only(ids) if ids.is_empty())
    }

    /// Whether task `id` may have a copy in both areas.
    pub(super) fn may_have_two(&self, id: &TaskId) -> bool {
        match self {
            Unresolved::Unknown => true,
            Unresolved::Only(ids) => !ids.is_empty() && ids.contains(id),
        }
    }
}

/// The second copy of a task, as `find` met it (short-lived: a task by
/// value costs nothing next to the read that made it).
#[allow(clippy::large_enum_variant)]
enum Copy {
    Missing,
    Readable(Task),
    Damaged,
}

/// Whether copy `a` of a task outranks copy `b`: a later incarnation
/// (`createdAt`) wins; within one, a terminal version is final; then the
/// higher revision.
pub(super) fn newer(a: &Task, b: &Task) -> bool {
    (a.created_at, a.is_terminal(), a.revision) > (b.created_at, b.is_terminal(), b.revision)
}
