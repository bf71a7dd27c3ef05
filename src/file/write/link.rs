//! Names given by hard link over a stale one, in one step (never removed
//! first), and the `expiring/` entries of finished tasks given back when a
//! power loss or a copy of the store took them.

use std::ffi::OsStr;
use std::io;

use crate::error::{Error, Result};
use crate::file::FileBackend;
use crate::file::fs::Dir;
use crate::file::layout::{Area, expiring_name, stripe, task_name};
use crate::file::lock;
use crate::file::write::{Touched, with_temp_name};
use crate::id::TaskId;

/// What [`FileBackend::restore_missing_indexes`] did.
pub(in crate::file) struct Restored {
    /// How many tasks were given their entry back.
    pub(in crate::file) restored: usize,
    /// Each task whose entry could not be given back, with why.
    pub(in crate::file) failed: Vec<(TaskId, Error)>,
    /// The fsync that made the entries given back durable.
    pub(in crate::file) synced: Result<()>,
}

impl FileBackend {
    /// Gives the file `from` in `from_dir` the name `to` in `to_dir`,
    /// replacing a stale file there (one the read rule already overruled,
    /// an index entry of an earlier move of the same file, or a copy). The
    /// caller holds task `id`'s lock (or the store alone).
    ///
    /// A name taken is replaced in one step, never removed first: the file
    /// is linked into `tmp/` under a fresh temp name of the task, renamed
    /// over `to`. So a power loss leaves `to` naming the old file or the
    /// new one, never neither (a finished task without its `expiring/`
    /// entry, which no sweep would find). Under `Immediate` the old file is
    /// parked first (see `park`: freed, its name could be cleared before
    /// the rename is durable), and `to_dir` is made durable before the park
    /// goes. A temp name a crash leaves in `tmp/` is a temp file like any
    /// other, which `open` and every sweep remove.
    pub(in crate::file) fn link_over(
        &self,
        id: &TaskId,
        (from_dir, from): (&Dir, &OsStr),
        (to_dir, to): (&Dir, &OsStr),
    ) -> Result<()> {
        let stat = |dir: &Dir, name: &OsStr| self.fs.stat(dir, name).map(|s| (s.dev, s.ino));
        let taken = match self.fs.link(from_dir, from, to_dir, to) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => stat(to_dir, to),
            Err(e) => return Err(Error::io("link into", to_dir.join(to), e)),
        };
        let file = stat(from_dir, from).map_err(|e| Error::io("stat", from_dir.join(from), e))?;
        match taken {
            // That file already (a rename between two names of one file
            // would do nothing, and leave the temp name).
            Ok(taken) if taken == file => return Ok(()),
            Ok(_) => {}
            // Gone since.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return self
                    .fs
                    .link(from_dir, from, to_dir, to)
                    .map_err(|e| Error::io("link into", to_dir.join(to), e));
            }
            Err(e) => return Err(Error::io("stat", to_dir.join(to), e)),
        }
        let before = self.before_of(to_dir);
        let park = self.park_at(id, to_dir, to)?;
        let renamed = with_temp_name(id, |temp| self.fs.link(from_dir, from, &self.tmp, temp))
            .map_err(|(e, temp)| Error::io("link into", self.tmp.join(temp), e))
            .and_then(|((), temp)| {
                self.fs.rename(&self.tmp, &temp, to_dir, to).map_err(|e| {
                    // A second name of the file, no more; a failed removal
                    // is retried by the next open or sweep.
                    let _ = self.fs.remove(&self.tmp, &temp);
                    Error::io("rename into", to_dir.join(to), e)
                })
            });
        if let Err(e) = renamed {
            // The old file keeps its name: nothing to guard.
            if let Some(park) = park {
                self.unpark_refused(park);
            }
            return Err(e);
        }
        // A park a failed fsync leaves is removed as a crash's is.
        self.sync_changed(to_dir, before)?;
        if let Some(park) = park {
            self.unpark(park);
        }
        Ok(())
    }

    /// Gives each finished task of `ids` whose `expiring/` entry is gone (a
    /// power loss under `Eventual` can take it) or a copy (a store copied
    /// without its hard links) its entry again, a link, under its lock,
    /// then (under `Immediate`) makes them durable with one fsync (a copy
    /// replaced makes its own first, before its park goes: `link_over`). A
    /// task moved or changed meanwhile is left as it is. A task whose entry
    /// cannot be given back (its lock not taken: a process stopped while it
    /// holds it; an I/O error) keeps none of the others from theirs; several
    /// tasks are one pass, which waits its `stripe_wait` once. Returns how
    /// many it restored, logged once, each task it could not restore, with
    /// why, and whether the fsync failed: the tasks not restored are said
    /// either way, for a caller to try again.
    pub(in crate::file) fn restore_missing_indexes(&self, ids: &[TaskId]) -> Restored {
        let touched = Touched {
            expiring: true,
            ..self.touched()
        };
        // One task alone waits as its caller's calls do (a check's, as one
        // pass).
        let pass = (ids.len() > 1).then(lock::Pass::default);
        let mut restored = 0;
        let mut failed = Vec::new();
        for id in ids {
            let linked = self
                .locks
                .lock_in(&self.fs, stripe(id), pass.as_ref())
                .and_then(|_guard| {
                    let Some(found) = self.find(id)? else {
                        return Ok(false);
                    };
                    if found.area != Area::Done || !self.index_is_missing(&found.task)? {
                        return Ok(false);
                    }
                    let Some(index) = expiring_name(&found.task) else {
                        return Ok(false);
                    };
                    self.link_over(
                        id,
                        (self.dir(Area::Done), &task_name(id)),
                        (self.expiring.dir(), &index),
                    )?;
                    Ok(true)
                });
            match linked {
                Ok(true) => {
                    tracing::debug!(task = %id, "gave a finished task its expiring/ entry back");
                    restored += 1;
                }
                Ok(false) => {}
                Err(e) => failed.push((id.clone(), e)),
            }
        }
        // Those linked are made durable whatever became of the others.
        let synced = match restored {
            0 => Ok(()),
            _ => self.sync_links(&touched).inspect(|()| {
                tracing::warn!(store = %self.root.display(), restored, "gave finished tasks their expiring/ entries back (lost to a power loss, or copies)");
            }),
        };
        Restored {
            restored,
            failed,
            synced,
        }
    }
}
