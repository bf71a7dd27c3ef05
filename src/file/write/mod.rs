//! The write path: temp file, fsync, rename, directory fsync; terminal
//! moves; removals. Every function here is called with the task's stripe
//! lock held.
//!
//! This module holds the primitives every write shares (a file put in
//! place, a directory made durable, the record of what a batch touched);
//! its submodules hold the writes themselves: [`commit`] (a new version,
//! one task or a batch, and the terminal move), [`link`] (a name given
//! over a stale one, `expiring/` entries given back), [`remove`]
//! (removals, one or a batch, and those of expired tasks) and [`tidy`]
//! (what the protocol leaves to finish: a stale copy, an interrupted
//! move, a kept finished task made durable).

mod commit;
mod link;
mod remove;
mod tidy;

pub(super) use remove::PendingRemovals;
pub(super) use tidy::Version;

use std::ffi::{OsStr, OsString};
use std::io;

use crate::backend::Record;
use crate::error::{Error, Result};
use crate::file::fs::{Dir, Fs};
use crate::file::group::Before;
use crate::file::layout::{Area, task_name, temp_name};
use crate::file::{Durability, FileBackend, codec};
use crate::id::TaskId;

impl FileBackend {
    /// Writes `record` into `area` atomically and durably: temp file,
    /// (fsync), rename, (fsync directory).
    pub(super) fn write(&self, area: Area, record: &Record) -> Result<()> {
        let before = self.area(area).before();
        self.put(area, record)?;
        self.sync(area, before)
    }

    /// Writes `record` into `area` atomically, without the directory fsync.
    fn put(&self, area: Area, record: &Record) -> Result<()> {
        let id = &record.task().id;
        let bytes = codec::wrap(record.json());
        self.replace_file(id, self.dir(area), &task_name(id), &bytes, self.durability)
    }

    /// Puts `bytes` at `name` in `dir` atomically, over what is there
    /// ([`put_file`] with [`Put::Over`]). No directory fsync.
    pub(super) fn replace_file(
        &self,
        id: &TaskId,
        dir: &Dir,
        name: &OsStr,
        bytes: &[u8],
        durability: Durability,
    ) -> Result<()> {
        put_file(
            &self.fs,
            &self.tmp,
            id,
            (dir, name),
            bytes,
            durability,
            Put::Over,
        )
        .map(drop)
    }

    /// Makes the caller's changes to `area`, begun at `before`, durable
    /// (group commit: threads of this handle share directory fsyncs).
    pub(super) fn sync(&self, area: Area, before: Before) -> Result<()> {
        let dir = self.area(area);
        match self.durability {
            Durability::Immediate => dir
                .sync(&self.fs, before)
                .map_err(|e| Error::io("fsync directory", dir.dir().path(), e)),
            Durability::Eventual => Ok(()),
        }
    }

    /// A record of a batch's changes, made before the first: where the
    /// fsyncs of `active/`, `done/` and `expiring/` stand now.
    pub(super) fn touched(&self) -> Touched {
        Touched {
            before: Befores {
                active: self.active.before(),
                done: self.done.before(),
                expiring: self.expiring.before(),
            },
            active: false,
            done: false,
            expiring: false,
            unindex: Vec::new(),
            moves_settled: false,
        }
    }

    /// Removes task `id`'s name in `area`; `false` if there was none.
    pub(super) fn remove_name(&self, area: Area, id: &TaskId) -> Result<bool> {
        self.remove_if_there(self.dir(area), &task_name(id))
    }

    /// Removes the name `name` from `dir`: `true` if it was there, `false`
    /// if it was gone already ([`Fs::remove_if_there`]). Any other failure
    /// is the error, naming the path; the caller says what it means (a
    /// task's name, an index entry left for the next sweep).
    pub(in crate::file) fn remove_if_there(&self, dir: &Dir, name: &OsStr) -> Result<bool> {
        self.fs
            .remove_if_there(dir, name)
            .map_err(|e| Error::io("remove", dir.join(name), e))
    }

    /// Makes the names given in `expiring/` and `done/` durable (first
    /// `expiring/`: a task in `done/` is never without its index entry).
    fn sync_links(&self, touched: &Touched) -> Result<()> {
        if self.durability != Durability::Immediate {
            return Ok(());
        }
        self.make_links_durable(touched)
    }

    /// [`sync_links`](Self::sync_links) whatever this handle's durability.
    fn make_links_durable(&self, touched: &Touched) -> Result<()> {
        if touched.expiring {
            self.expiring
                .sync(&self.fs, touched.before.expiring)
                .map_err(|e| Error::io("fsync directory", self.expiring.dir().path(), e))?;
        }
        if touched.done {
            let done = self.area(Area::Done);
            done.sync(&self.fs, touched.before(Area::Done))
                .map_err(|e| Error::io("fsync directory", done.dir().path(), e))?;
        }
        Ok(())
    }
}

/// Where the fsyncs of each directory a batch may change stood before its
/// first change ([`DirSync::before`](crate::file::group::DirSync::before)).
#[derive(Clone, Copy, Debug)]
struct Befores {
    active: Before,
    done: Before,
    expiring: Before,
}

/// The directories a batch of writes changed, to make durable once.
#[derive(Debug)]
pub(super) struct Touched {
    /// Where the directories' fsyncs stood before the batch's first change
    /// ([`FileBackend::touched`]).
    before: Befores,
    active: bool,
    done: bool,
    expiring: bool,
    /// `expiring/` entries to remove once the removals are durable.
    unindex: Vec<OsString>,
    /// `active/` was made durable before this batch's first removal from
    /// `done/` (see `settle_moves`).
    moves_settled: bool,
}

impl Touched {
    /// Adds what another share of the batch touched, to be made durable
    /// with it: the directories changed (begun at the earlier of the two)
    /// and the `expiring/` entries to remove. Not `moves_settled`, which
    /// keeps its own value: it guides a share's removals while they are
    /// made (`settle_moves`), and no record is read for it once merged
    /// (the merged one is only made durable: `sync_touched`, a batch
    /// write's `settle`).
    fn absorb(&mut self, other: Touched) {
        let (ours, theirs) = (&mut self.before, other.before);
        ours.active = ours.active.min(theirs.active);
        ours.done = ours.done.min(theirs.done);
        ours.expiring = ours.expiring.min(theirs.expiring);
        self.active |= other.active;
        self.done |= other.done;
        self.expiring |= other.expiring;
        self.unindex.extend(other.unindex);
    }

    /// Where `area`'s fsyncs stood before the batch's first change.
    fn before(&self, area: Area) -> Before {
        match area {
            Area::Active => self.before.active,
            Area::Done => self.before.done,
        }
    }

    pub(super) fn mark(&mut self, area: Area) {
        match area {
            Area::Active => self.active = true,
            Area::Done => self.done = true,
        }
    }
}

/// How [`put_file`] puts its temp file at the name.
pub(super) enum Put {
    /// Renamed over whatever is there.
    Over,
    /// Linked to the name only if nothing is there, then removed.
    New,
}

/// Puts `bytes` at `name` in `dir` (`to`) atomically: a temp file in `tmp`
/// named for `id` (so cleanup takes the stripe lock the caller holds),
/// written, fsynced under `Immediate`, then put at the name as `put` says.
/// `false`: `Put::New` found the name taken, and left it as it is. No
/// directory fsync.
pub(super) fn put_file(
    fs: &Fs,
    tmp: &Dir,
    id: &TaskId,
    (dir, name): (&Dir, &OsStr),
    bytes: &[u8],
    durability: Durability,
    put: Put,
) -> Result<bool> {
    let (mut file, temp) = with_temp_name(id, |temp| fs.create_new(tmp, temp))
        .map_err(|(e, temp)| Error::io("create temp file", tmp.join(temp), e))?;
    let temp_path = tmp.join(&temp);
    let written = fs
        .write_all(&mut file, &temp_path, bytes)
        .map_err(|e| Error::io("write", &temp_path, e))
        .and_then(|()| match durability {
            Durability::Immediate => fs
                .sync_file(&file, &temp_path)
                .map_err(|e| Error::io("fsync", &temp_path, e)),
            Durability::Eventual => Ok(()),
        })
        .and_then(|()| {
            drop(file);
            match put {
                Put::Over => fs
                    .rename(tmp, &temp, dir, name)
                    .map(|()| true)
                    .map_err(|e| Error::io("rename into", dir.join(name), e)),
                Put::New => match fs.link(tmp, &temp, dir, name) {
                    Ok(()) => Ok(true),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                    Err(e) => Err(Error::io("link into", dir.join(name), e)),
                },
            }
        });
    let placed = match written {
        Ok(placed) => placed,
        Err(e) => {
            // The temp file is not the task; a failed removal is retried by
            // the next open or sweep.
            let _ = fs.remove(tmp, &temp);
            return Err(e);
        }
    };
    if let Put::New = put {
        // Its other name holds the bytes now; a failed removal is retried
        // by the next open or sweep, as above.
        let _ = fs.remove(tmp, &temp);
    }
    Ok(placed)
}

/// Runs `make` with a fresh temp name for task `id` until the name is not
/// taken (a crashed writer's leftover with the same pid and sequence): the
/// result and the name, or the error and the name.
pub(super) fn with_temp_name<T>(
    id: &TaskId,
    mut make: impl FnMut(&OsStr) -> io::Result<T>,
) -> std::result::Result<(T, OsString), (io::Error, OsString)> {
    let mut attempts = 0;
    loop {
        let temp = temp_name(id);
        match make(&temp) {
            Ok(made) => return Ok((made, temp)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 16 => {
                attempts += 1;
            }
            Err(e) => return Err((e, temp)),
        }
    }
}
