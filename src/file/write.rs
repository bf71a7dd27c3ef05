//! The write path: temp file, fsync, rename, directory fsync; terminal
//! moves; removals. Every function here is called with the task's stripe
//! lock held.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::backend::Record;
use crate::error::{Error, Result};
use crate::file::layout::{Area, stripe};
use crate::file::{Durability, FileBackend, Found, area_of, codec};
use crate::id::TaskId;

impl FileBackend {
    /// Writes `record` into `area` atomically and durably: temp file,
    /// (fsync), rename, (fsync directory).
    pub(super) fn write(&self, area: Area, record: &Record) -> Result<()> {
        self.write_file(area, record)?;
        self.sync_area(area)
    }

    /// Writes `record` into `area` atomically, without the directory fsync:
    /// after a power loss the write may be undone, never torn.
    pub(super) fn write_file(&self, area: Area, record: &Record) -> Result<()> {
        let id = &record.task().id;
        self.replace_file(id, &self.layout.task(area, id), &codec::wrap(record.json()))
    }

    /// Puts `bytes` at `dest` atomically: a temp file named for `id` (so
    /// cleanup takes the stripe lock the caller holds), written, fsynced
    /// under `Immediate`, renamed over `dest`. No directory fsync.
    pub(super) fn replace_file(&self, id: &TaskId, dest: &Path, bytes: &[u8]) -> Result<()> {
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

    /// Makes the caller's changes to `area` durable (group commit: threads of
    /// this handle share directory fsyncs).
    pub(super) fn sync_area(&self, area: Area) -> Result<()> {
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
    pub(super) fn remove_if_present(&self, area: Area, id: &TaskId) -> Result<bool> {
        let path = self.layout.task(area, id);
        match self.fs.remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("remove", &path, e)),
        }
    }

    /// Replaces the task `found` by `next`, durably in every directory it
    /// changes.
    ///
    /// A terminal version of a running task is written over its active file
    /// (readers see it final at once, and the task has one file at every
    /// moment) and then renamed into `done/`; both directories are fsynced
    /// before this returns, `done/` first. A power loss before that can leave
    /// the old running copy beside the terminal one: the read rule takes the
    /// terminal copy, and the stale one is removed by the next write of the
    /// task or at open.
    pub(super) fn commit(&self, found: &Found, next: &Record) -> Result<()> {
        let id = &next.task().id;
        let to = area_of(next.task());
        match (found.area, to) {
            (Area::Active, Area::Done) => {
                self.write_file(Area::Active, next)?;
                self.move_to_done(id)?;
            }
            (from, to) if from == to => self.write(to, next)?,
            (from, to) => {
                // A terminal task made running again: never done by the
                // rules, but a backend stores what it is given.
                self.write(to, next)?;
                if self.remove_if_present(from, id)? {
                    self.sync_area(from)?;
                }
            }
        }
        self.drop_stale(found)
    }

    /// The second step of a terminal transition: `active/<id>.json` (already
    /// holding the terminal task) is renamed into `done/`, and both
    /// directories are made durable.
    pub(super) fn move_to_done(&self, id: &TaskId) -> Result<()> {
        let (from, to) = (
            self.layout.task(Area::Active, id),
            self.layout.task(Area::Done, id),
        );
        self.fs
            .rename(&from, &to)
            .map_err(|e| Error::io("move into", &to, e))?;
        self.sync_area(Area::Done)?;
        self.sync_area(Area::Active)
    }

    /// Removes the task `found`, and any stale copy of it.
    pub(super) fn remove_found(&self, found: &Found) -> Result<()> {
        if self.remove_if_present(found.area, &found.task.id)? {
            self.sync_area(found.area)?;
        }
        self.drop_stale(found)
    }

    /// Removes the stale copy beside `found`, if there is one.
    pub(super) fn drop_stale(&self, found: &Found) -> Result<()> {
        if let Some(stale) = found.stale
            && self.remove_if_present(stale, &found.task.id)?
        {
            tracing::info!(task = %found.task.id, area = stale.name(), "removed a stale copy left by an interrupted terminal move");
            self.sync_area(stale)?;
        }
        Ok(())
    }

    /// Leaves the task `found` as the protocol would have: an interrupted
    /// terminal move finished, a stale copy removed.
    pub(super) fn tidy(&self, found: &Found) -> Result<()> {
        if found.area == Area::Active && found.task.is_terminal() {
            self.move_to_done(&found.task.id)?;
        }
        self.drop_stale(found)
    }

    /// Finishes interrupted terminal moves: terminal tasks still in
    /// `active/`. Returns how many were moved.
    pub(super) fn finish_moves(&self) -> Result<usize> {
        let (entries, _) = self.active_tasks()?;
        let mut moved = 0;
        for entry in entries.iter().filter(|e| e.task.is_terminal()) {
            let id = &entry.task.id;
            let _guard = self.locks.lock(&self.fs, stripe(id))?;
            if let Some(found) = self.find(id)?
                && found.area == Area::Active
                && found.task.is_terminal()
            {
                self.tidy(&found)?;
                moved += 1;
            }
        }
        Ok(moved)
    }

    /// Counts the files in `active/` (no reads).
    pub(super) fn count_active(&self) -> Result<usize> {
        let dir = &self.layout.active;
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
        let mut n = 0;
        for entry in entries {
            entry.map_err(|e| Error::io("read directory", dir, e))?;
            n += 1;
        }
        Ok(n)
    }
}
