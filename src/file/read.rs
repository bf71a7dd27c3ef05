//! Reading task files, and the read rule: which copy of a task is the task.

use std::io::{self, Read};
use std::path::Path;

use crate::error::{Error, Result};
use crate::file::layout::Area;
use crate::file::{FileBackend, Found, codec, fs};
use crate::id::TaskId;
use crate::task::Task;

/// Bigger than any task file this crate writes (a task is capped well below).
pub(super) const MAX_FILE_BYTES: usize = 1 << 30;

impl FileBackend {
    /// Reads one task file: `Ok(None)` if there is none.
    pub(super) fn read(&self, area: Area, id: &TaskId) -> Result<Option<Task>> {
        let path = self.layout.task(area, id);
        read_task_file(&path, id)
    }

    /// Finds a task, whatever its expiry, by the read rule.
    ///
    /// `active/` is read first: a terminal move renames the file from
    /// `active/` to `done/` in one step, so a task missing from `active/` is
    /// in `done/` if it exists at all. A running task in `active/` is looked
    /// for in `done/` too: a power loss in the middle of a terminal move can
    /// leave the old running copy beside the terminal one, and a terminal
    /// version anywhere is final ([`newer`]).
    pub(super) fn find(&self, id: &TaskId) -> Result<Option<Found>> {
        let Some(active) = self.read(Area::Active, id)? else {
            return Ok(self.read(Area::Done, id)?.map(|task| Found {
                task,
                area: Area::Done,
                stale: None,
            }));
        };
        if active.is_terminal() {
            // An interrupted move: final all the same.
            return Ok(Some(Found {
                task: active,
                area: Area::Active,
                stale: None,
            }));
        }
        let done = match self.read(Area::Done, id) {
            Ok(done) => done,
            // A damaged copy cannot outrank a readable one; the stale-copy
            // check at open and `verify` report it.
            Err(e @ (Error::Corrupt { .. } | Error::UnsupportedFormat { .. })) => {
                tracing::warn!(task = %id, error = %e, "ignoring an unreadable second copy of a running task");
                None
            }
            Err(e) => return Err(e),
        };
        Ok(Some(match done {
            Some(done) if newer(&done, &active) => Found {
                task: done,
                area: Area::Done,
                stale: Some(Area::Active),
            },
            Some(_) => Found {
                task: active,
                area: Area::Active,
                stale: Some(Area::Done),
            },
            None => Found {
                task: active,
                area: Area::Active,
                stale: None,
            },
        }))
    }
}

/// Whether copy `a` of a task outranks copy `b`: a later incarnation
/// (`createdAt`) wins; within one, a terminal version is final; then the
/// higher revision.
pub(super) fn newer(a: &Task, b: &Task) -> bool {
    (a.created_at, a.is_terminal(), a.revision) > (b.created_at, b.is_terminal(), b.revision)
}

/// Reads and decodes one task file. A missing file is `Ok(None)`; a symlink,
/// directory, FIFO or undecodable file is [`Error::Corrupt`].
///
/// This is the hot path of `get`: open, read until end of file, close. The
/// file's type needs no `fstat`: a directory fails the read, a FIFO reads
/// empty, and nothing longer than any task file could be is read.
pub(super) fn read_task_file(path: &Path, id: &TaskId) -> Result<Option<Task>> {
    read_file(path)?
        .map(|bytes| codec::unwrap(&bytes, path, id))
        .transpose()
}

/// The bytes of the task file at `path`, `Ok(None)` if there is none (see
/// [`read_task_file`]).
pub(super) fn read_file(path: &Path) -> Result<Option<Vec<u8>>> {
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
