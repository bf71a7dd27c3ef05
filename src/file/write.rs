//! The write path: temp file, fsync, rename, directory fsync; terminal
//! moves; removals. Every function here is called with the task's stripe
//! lock held.

use std::ffi::{OsStr, OsString};
use std::io;

use crate::backend::Record;
use crate::error::{Error, Result};
use crate::file::fs::Dir;
use crate::file::layout::{Area, stripe, task_name, temp_name};
use crate::file::{Durability, FileBackend, Found, codec, recovery};
use crate::id::TaskId;

impl FileBackend {
    /// Writes `record` into `area` atomically and durably: temp file,
    /// (fsync), rename, (fsync directory).
    pub(super) fn write(&self, area: Area, record: &Record) -> Result<()> {
        self.put(area, record)?;
        self.sync(area)
    }

    /// Writes `record` into `area` atomically, without the directory fsync.
    fn put(&self, area: Area, record: &Record) -> Result<()> {
        let id = &record.task().id;
        let bytes = codec::wrap(record.json());
        self.replace_file(id, self.dir(area), &task_name(id), &bytes, self.durability)
    }

    /// Puts `bytes` at `name` in `dir` atomically: a temp file named for
    /// `id` (so cleanup takes the stripe lock the caller holds), written,
    /// fsynced under `Immediate`, renamed over `name`. No directory fsync.
    pub(super) fn replace_file(
        &self,
        id: &TaskId,
        dir: &Dir,
        name: &OsStr,
        bytes: &[u8],
        durability: Durability,
    ) -> Result<()> {
        let (mut file, temp) = self.create_temp(id)?;
        let temp_path = self.tmp.join(&temp);
        let written = self
            .fs
            .write_all(&mut file, &temp_path, bytes)
            .map_err(|e| Error::io("write", &temp_path, e))
            .and_then(|()| match durability {
                Durability::Immediate => self
                    .fs
                    .sync_file(&file, &temp_path)
                    .map_err(|e| Error::io("fsync", &temp_path, e)),
                Durability::Eventual => Ok(()),
            })
            .and_then(|()| {
                drop(file);
                self.fs
                    .rename(&self.tmp, &temp, dir, name)
                    .map_err(|e| Error::io("rename into", dir.join(name), e))
            });
        if let Err(e) = written {
            // The temp file is not the task; a failed removal is retried by
            // the next open or sweep.
            let _ = self.fs.remove(&self.tmp, &temp);
            return Err(e);
        }
        Ok(())
    }

    fn create_temp(&self, id: &TaskId) -> Result<(std::fs::File, OsString)> {
        let mut attempts = 0;
        loop {
            let temp = temp_name(id);
            match self.fs.create_new(&self.tmp, &temp) {
                Ok(file) => return Ok((file, temp)),
                // A crashed writer's leftover with the same pid and sequence.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 16 => {
                    attempts += 1;
                }
                Err(e) => return Err(Error::io("create temp file", self.tmp.join(&temp), e)),
            }
        }
    }

    /// Makes the caller's changes to `area` durable (group commit: threads of
    /// this handle share directory fsyncs).
    pub(super) fn sync(&self, area: Area) -> Result<()> {
        let dir = self.area(area);
        match self.durability {
            Durability::Immediate => dir
                .sync(&self.fs)
                .map_err(|e| Error::io("fsync directory", dir.dir().path(), e)),
            Durability::Eventual => Ok(()),
        }
    }

    /// Removes task `id`'s name in `area`; `false` if there was none.
    pub(super) fn remove_name(&self, area: Area, id: &TaskId) -> Result<bool> {
        let (dir, name) = (self.dir(area), task_name(id));
        match self.fs.remove(dir, &name) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("remove", dir.join(&name), e)),
        }
    }

    /// Replaces the task `found` by `next`, durably in every directory it
    /// changes, before returning.
    ///
    /// A terminal version of a running task is written over its file in
    /// `active/` (readers see it final at once, and at every moment the task
    /// has one name that every reader finds first), then moved to `done/`
    /// ([`move_to_done`](Self::move_to_done)).
    pub(super) fn commit(&self, found: &Found, next: &Record) -> Result<()> {
        // A stale copy in the other area goes first: the move below gives
        // the task its name there.
        self.drop_stale(found)?;
        let id = &next.task().id;
        match (found.area, Area::of(next.task())) {
            (Area::Active, Area::Done) => {
                self.put(Area::Active, next)?;
                self.move_to_done(id)
            }
            (from, to) if from == to => self.write(to, next),
            (from, to) => {
                // A terminal task made running again: never done by the
                // rules, but a backend stores what it is given.
                self.write(to, next)?;
                if self.remove_name(from, id)? {
                    self.sync(from)?;
                }
                Ok(())
            }
        }
    }

    /// The second step of a terminal transition: `active/<id>.json`, already
    /// holding the terminal task, gets its name in `done/` (a hard link, so
    /// the task is never without a name), `done/` is made durable, then the
    /// name in `active/` goes and `active/` is made durable.
    ///
    /// Under the strictest model of a power loss (each directory's changes
    /// durable only by its own fsync, a rename across directories two
    /// independent halves) every crash leaves the task in `active/`, in
    /// `done/` or in both, never in neither; once this returns, the terminal
    /// version is in `done/` and no longer in `active/`, durably.
    pub(super) fn move_to_done(&self, id: &TaskId) -> Result<()> {
        let name = task_name(id);
        let (active, done) = (self.dir(Area::Active), self.dir(Area::Done));
        let linked = match self.fs.link(active, &name, done, &name) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // A stale copy the read rule already overruled.
                self.remove_name(Area::Done, id)?;
                self.fs.link(active, &name, done, &name)
            }
            other => other,
        };
        linked.map_err(|e| Error::io("link into", done.join(&name), e))?;
        self.sync(Area::Done)?;
        self.remove_name(Area::Active, id)?;
        self.sync(Area::Active)
    }

    /// Removes the task `found`, and any stale copy of it.
    pub(super) fn remove_found(&self, found: &Found) -> Result<()> {
        self.drop_stale(found)?;
        if self.remove_name(found.area, &found.task.id)? {
            self.sync(found.area)?;
        }
        Ok(())
    }

    /// Removes the stale copy beside `found`, if there is one: unlinked if
    /// it reads as a task, set aside if it is damaged.
    pub(super) fn drop_stale(&self, found: &Found) -> Result<()> {
        let Some(stale) = found.stale else {
            return Ok(());
        };
        let id = &found.task.id;
        let gone = if stale.readable {
            self.remove_name(stale.area, id)?
        } else {
            recovery::set_aside_locked(
                self,
                stale.area,
                id,
                "a damaged copy of a task whose other copy is readable",
            )?
            .is_some()
        };
        if gone {
            tracing::info!(task = %id, area = stale.area.name(), "removed a stale copy left by an interrupted terminal move");
            self.sync(stale.area)?;
        }
        Ok(())
    }

    /// Leaves the task `found` as the protocol would have: an interrupted
    /// terminal move finished, a stale copy removed.
    pub(super) fn tidy(&self, found: &Found) -> Result<()> {
        self.drop_stale(found)?;
        if found.area == Area::Active && found.task.is_terminal() {
            self.move_to_done(&found.task.id)?;
        }
        Ok(())
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

    /// Counts the names in `active/` (no reads).
    pub(super) fn count_active(&self) -> Result<usize> {
        let dir = self.dir(Area::Active);
        self.fs
            .read_dir(dir)
            .map(|names| names.len())
            .map_err(|e| Error::io("read directory", dir.path(), e))
    }
}
