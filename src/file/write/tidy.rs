//! What the protocol leaves to finish, done as it would have: a stale copy
//! of a task removed, an interrupted terminal move finished, a finished
//! task a write kept made durable (once per version); and the count of
//! running tasks the snapshot holds.

use crate::error::{Error, Result};
use crate::file::layout::{Area, expiring_name, stripe, task_name};
use crate::file::write::Touched;
use crate::file::{Durability, FileBackend, Found, recovery};
use crate::id::TaskId;
use crate::task::Task;

impl FileBackend {
    /// Removes the stale copy beside `found`, if there is one: unlinked if
    /// it reads as a task, set aside if it is damaged.
    pub(super) fn drop_stale(&self, found: &Found) -> Result<()> {
        let Some(stale) = found.stale else {
            return Ok(());
        };
        let id = &found.task.id;
        let before = self.area(stale.area).before();
        let gone = if stale.readable {
            let removed = self.remove_name(stale.area, id)?;
            if removed {
                self.sync(stale.area, before)?;
            }
            removed
        } else {
            // Made durable by the move itself (`recovery::move_aside`).
            matches!(
                recovery::set_aside_locked(
                    self,
                    stale.area,
                    id,
                    "a damaged copy of a task whose other copy is readable",
                )?,
                recovery::Moved::Aside(_)
            )
        };
        if gone {
            tracing::info!(task = %id, area = stale.area.name(), "removed a stale copy left by an interrupted terminal move");
        }
        Ok(())
    }

    /// Leaves the task `found` as the protocol would have: an interrupted
    /// terminal move finished, a stale copy removed.
    pub(in crate::file) fn tidy(&self, found: &Found) -> Result<()> {
        self.drop_stale(found)?;
        if found.is_interrupted_move() {
            self.move_to_done(&found.task)?;
        }
        Ok(())
    }

    /// Makes the finished `task` that a write kept, and answers with
    /// (`AlreadyTerminal`), durable under [`Durability::Immediate`]: its
    /// file's bytes, then its entry in `expiring/` (with a TTL), then its
    /// name in `done/` (never in `done/` without its entry). The answer
    /// tells the caller the task is final, and must hold across a power
    /// loss as this handle's own writes do, though another handle of the
    /// store may have finished it `Eventual`ly (its file and names never
    /// fsynced). Where every handle is `Immediate` it is durable already,
    /// and the fsyncs write nothing new, but each still asks the device to
    /// flush: an `AlreadyTerminal` answer costs two fsyncs (the file's and
    /// `done/`'s; three with a TTL, `expiring/`'s too), as the terminal
    /// write did, which fsyncs no more (`active/` is left to a later
    /// fsync: `faults::a_finished_version_is_made_durable_once_per_handle`
    /// counts both). A running task kept (a fenced or
    /// conditional write, a task not to reap) is left as it is: such an
    /// answer says how the task stands now, not that it is final. The caller holds
    /// the task's stripe lock, after [`tidy`](Self::tidy) (which moved a
    /// finished task still in `active/` into `done/`).
    ///
    /// Each version once per handle (the latest [`KEPT_DURABLE`] kept in
    /// mind): a retried complete, a renewal of a finished task or a cancel
    /// after completion answered again makes no fsync.
    pub(in crate::file) fn make_kept_durable(&self, task: &Task) -> Result<()> {
        if self.durability != Durability::Immediate || !task.is_terminal() {
            return Ok(());
        }
        let version = Version::of(task);
        let made = || {
            self.kept_durable
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if made().contains(&version) {
            return Ok(());
        }
        // Its entry in `expiring/` too, made durable first, as a move's
        // are (`sync_links`).
        let touched = Touched {
            expiring: expiring_name(task).is_some(),
            done: true,
            ..self.touched()
        };
        let (dir, name) = (self.dir(Area::Done), task_name(&task.id));
        let path = dir.join(&name);
        let file = self
            .fs
            .open_read(dir, &name)
            .map_err(|e| Error::io("open", &path, e))?;
        self.fs
            .sync_file(&file, &path)
            .map_err(|e| Error::io("fsync", &path, e))?;
        self.sync_links(&touched)?;
        let mut made = made();
        if made.len() == KEPT_DURABLE {
            made.pop_front();
        }
        made.push_back(version);
        Ok(())
    }

    /// Finishes interrupted terminal moves: terminal tasks still in
    /// `active/`. Adds each one moved to `moved`, as it goes. Its waits for
    /// stripes are the sweep's ([`StripeLocks::sweep`](crate::file::lock::StripeLocks::sweep)):
    /// a stripe the sweep found stuck is tried, not waited for again.
    pub(in crate::file) fn finish_moves(&self, moved: &mut usize) -> Result<()> {
        let unmoved = {
            let mut state = self.snapshot.lock();
            self.refresh(&mut state)?;
            state.unmoved()
        };
        let sweep = self.locks.sweep();
        for id in &unmoved {
            // One task whose stripe cannot be taken, or that cannot be read
            // or moved now, never stops the others: it stays as it is
            // (final for every reader), and the pass's scan reports it.
            let finished = self
                .locks
                .lock_in(&self.fs, stripe(id), sweep.as_deref())
                .and_then(|_guard| {
                    self.find(id).and_then(|found| match found {
                        Some(found) if found.is_interrupted_move() => {
                            self.tidy(&found).map(|()| true)
                        }
                        _ => Ok(false),
                    })
                });
            match finished {
                Ok(true) => *moved += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(task = %id, error = %e, "cannot finish an interrupted terminal move; left for later");
                }
            }
        }
        Ok(())
    }

    /// How many running tasks `active/` holds, from the snapshot brought up
    /// to date (with a watch: the names changed since, no more).
    pub(in crate::file) fn count_active(&self) -> Result<usize> {
        let mut state = self.snapshot.lock();
        self.refresh(&mut state)?;
        Ok(state.active())
    }
}

/// How many finished versions a handle keeps in mind as made durable
/// ([`FileBackend::make_kept_durable`]).
const KEPT_DURABLE: usize = 256;

/// A version of a task, as the store tells versions apart
/// ([`is_current`](crate::backend::is_current)): its id, creation time
/// and revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(in crate::file) struct Version {
    id: TaskId,
    created_at: time::OffsetDateTime,
    revision: u64,
}

impl Version {
    fn of(task: &Task) -> Version {
        Version {
            id: task.id.clone(),
            created_at: task.created_at,
            revision: task.revision,
        }
    }
}
