//! Parked files: a task file that a write in `active/` replaces keeps a
//! second name in `tmp/` until the new version is durable.
//!
//! A file system without a journal (ext2, ext4 without one) may write the
//! freeing of a file whose last name went before the directory change that
//! removed the name; its repair after a power loss then clears the name. So
//! a write whose new version was not durable yet could lose both versions
//! of the task: the new name not durable, the old file freed under the old
//! one. A file with a second name is never freed. Under
//! `Durability::Immediate` a write over a task's file in `active/` first
//! links that file into `tmp/` under a fresh temp name (its *park*), then
//! renames the new version over it; the park goes once the new version is
//! durable: after the fsync of `active/` for a running task, after the
//! fsync of `done/` for a terminal one. Removing it frees the old version,
//! which can cost a third of a durable write (ext4 returning the file's
//! block: BENCHMARKS.md), so a thread of the handle's own does it, off the
//! writer's path ([`Reclaimer`]). A write refused before its new version
//! took the name removes its park itself, before it returns (the old file
//! keeps its name, so that frees nothing); a handle whose calls are being
//! recorded or failed on purpose (feature `fault-injection`) removes its
//! parks itself, in call order. A park a crash (or a failed fsync)
//! leaves behind is a temp file whose stripe lock is free: `open` and every
//! sweep remove it, after an fsync of `active/` of their own
//! (`recovery::clean_temp_files`), since a batch lets go of a task's lock
//! between its write and that fsync.

use std::ffi::{OsStr, OsString};
use std::io;
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::file::fs::{Dir, Fs};
use crate::file::layout::{Area, task_name};
use crate::file::write::with_temp_name;
use crate::file::{Durability, FileBackend};
use crate::id::TaskId;

impl FileBackend {
    /// Gives the file `active/<id>.json`, if there is one, a second name in
    /// `tmp/` before a write replaces it (`Durability::Immediate` only: an
    /// `Eventual` write promises nothing across a power loss, and makes no
    /// fsync to wait for). The caller holds the task's lock and
    /// [`unpark`](Self::unpark)s it once the new version is durable.
    pub(super) fn park(&self, id: &TaskId) -> Result<Option<OsString>> {
        self.park_at(id, self.dir(Area::Active), &task_name(id))
    }

    /// [`park`](Self::park) for the file `name` of `dir` (a name of task
    /// `id`'s that a rename is to replace).
    pub(super) fn park_at(&self, id: &TaskId, dir: &Dir, name: &OsStr) -> Result<Option<OsString>> {
        if self.durability != Durability::Immediate {
            return Ok(None);
        }
        match with_temp_name(id, |park| self.fs.link(dir, name, &self.tmp, park)) {
            Ok(((), park)) => Ok(Some(park)),
            Err((e, _)) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err((e, park)) => Err(Error::io("link into", self.tmp.join(park), e)),
        }
    }

    /// Makes every change to `active/` durable, whatever this handle's
    /// durability: before a temp file whose writer is gone is removed (it
    /// may be a park: [`settle_parked`](Self::settle_parked)) and before a
    /// finished task's name in `done/` goes (its move's removal of its name
    /// in `active/` may not be durable).
    pub(super) fn settle_active(&self) -> Result<()> {
        let active = self.area(Area::Active);
        active
            .sync(&self.fs, active.before())
            .map_err(|e| Error::io("fsync directory", active.dir().path(), e))
    }

    /// [`settle_active`](Self::settle_active), then the same of `done/` and
    /// `expiring/`: before a temp file whose writer is gone is removed, as
    /// it may be a park of the old file of a name in any of the three
    /// (`link_over` parks the file a rename in `done/` or `expiring/`
    /// replaces).
    pub(super) fn settle_parked(&self) -> Result<()> {
        self.settle_active()?;
        let done = self.area(Area::Done);
        done.sync(&self.fs, done.before())
            .map_err(|e| Error::io("fsync directory", done.dir().path(), e))?;
        self.expiring
            .sync(&self.fs, self.expiring.before())
            .map_err(|e| Error::io("fsync directory", self.expiring.dir().path(), e))
    }

    /// Removes the park of a write refused before its new version took
    /// the name: the old file keeps its name, so removing its second name
    /// frees nothing, and it goes here, before the refused write returns.
    pub(super) fn unpark_refused(&self, park: OsString) {
        remove_park(&self.fs, &self.tmp, &park);
    }

    /// Removes a park once the version that replaced its file is durable:
    /// on the handle's reclaiming thread, or here when the calls are being
    /// recorded or failed on purpose, or when no thread can be had.
    pub(super) fn unpark(&self, park: OsString) {
        if self.fs.is_instrumented() {
            remove_park(&self.fs, &self.tmp, &park);
        } else if let Err(park) = self.reclaimer.send(&self.fs, &self.tmp, park) {
            remove_park(&self.fs, &self.tmp, &park);
        }
    }
}

/// Removes the park `name` from `tmp/`. A failure is logged: the park is a
/// temp file like any other, and the next `open` or sweep removes it.
fn remove_park(fs: &Fs, tmp: &Dir, name: &OsStr) {
    if let Err(e) = fs.remove_if_there(tmp, name) {
        tracing::warn!(file = %tmp.join(name).display(), error = %e, "cannot remove a parked file; the next open or sweep will");
    }
}

/// A handle's reclaiming thread: removes the parks it is handed, in order,
/// started on the first one. Dropping the handle waits for it to finish
/// them. A process forked from the one that started it has no such thread
/// (only the forking thread is copied): it starts one of its own.
#[derive(Debug, Default)]
pub(super) struct Reclaimer {
    worker: Mutex<Option<Worker>>,
}

#[derive(Debug)]
struct Worker {
    parks: mpsc::Sender<OsString>,
    thread: JoinHandle<()>,
    /// The process the thread runs in.
    pid: u32,
}

/// Takes a worker whose thread runs in another process (this one was forked
/// from it) out of `worker`, and lets it go without a word to its thread:
/// there is no such thread here to send to or wait for.
fn drop_if_forked(worker: &mut Option<Worker>) {
    if worker.as_ref().is_some_and(|w| w.pid != std::process::id()) {
        std::mem::forget(worker.take());
    }
}

impl Reclaimer {
    /// Hands `park` to the thread; `Err(park)` if no thread can be had.
    fn send(&self, fs: &Fs, tmp: &Arc<Dir>, park: OsString) -> Result<(), OsString> {
        let mut worker = self.worker.lock().unwrap_or_else(PoisonError::into_inner);
        drop_if_forked(&mut worker);
        if worker.is_none() {
            let (parks, handed) = mpsc::channel::<OsString>();
            let (fs, tmp) = (fs.clone(), Arc::clone(tmp));
            let spawned = std::thread::Builder::new()
                .name("taskstore-reclaim".to_owned())
                .spawn(move || {
                    for park in handed {
                        remove_park(&fs, &tmp, &park);
                    }
                });
            match spawned {
                Ok(thread) => {
                    *worker = Some(Worker {
                        parks,
                        thread,
                        pid: std::process::id(),
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the thread that frees replaced task files; writers free them");
                    return Err(park);
                }
            }
        }
        let worker = worker.as_ref().expect("started above");
        worker.parks.send(park).map_err(|e| e.0)
    }

    /// Waits until every park handed over is removed, and the thread ends.
    pub(super) fn finish(&self) {
        let worker = {
            let mut worker = self.worker.lock().unwrap_or_else(PoisonError::into_inner);
            drop_if_forked(&mut worker);
            worker.take()
        };
        if let Some(Worker { parks, thread, .. }) = worker {
            drop(parks);
            if thread.join().is_err() {
                tracing::warn!("the thread that frees replaced task files panicked");
            }
        }
    }
}

impl Drop for FileBackend {
    fn drop(&mut self) {
        self.reclaimer.finish();
    }
}

/// Whether the writer whose process id a temp file's name gives
/// (`layout::temp_file_writer`) is running on this host: a signal 0 reaches
/// it, or is refused for want of permission. A park whose stripe is free
/// but whose writer runs is that writer's, waiting for its reclaiming
/// thread, not a crashed writer's leftover. (A process in another pid
/// namespace, or a dead writer's pid taken by another process, is
/// misjudged; nothing is lost either way.)
pub(super) fn writer_is_running(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e == rustix::io::Errno::PERM,
    }
}

#[cfg(all(test, feature = "fault-injection", target_os = "linux"))]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::Reclaimer;
    use crate::file::fs::{Fs, FsOp};
    use crate::file::{FaultInjector, Pause};

    /// Dropping a handle (`Reclaimer::finish`) returns only once every park
    /// handed to its thread is removed: with the removal held, `finish`
    /// waits in the join, and the park is gone when it returns.
    ///
    /// The held removal is let on only once the finishing thread has
    /// returned or is asleep (`/proc/thread-self`'s state `S`: waiting in
    /// the join). A `finish` that does not wait returns while the park is
    /// still held, and sees it; one that waits is let on and sees it gone.
    #[test]
    fn finishing_waits_until_every_park_handed_over_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let park = dir.path().join("park");
        std::fs::write(&park, "a replaced version").unwrap();
        let faults = FaultInjector::new();
        let fs = Fs::with_faults(Some(faults.clone()));
        let tmp = Arc::new(fs.open_root(dir.path()).unwrap());
        let held: Pause = faults.pause_at(FsOp::Remove, &park);
        let reclaimer = Reclaimer::default();
        reclaimer.send(&fs, &tmp, "park".into()).unwrap();
        assert!(held.wait_reached(|| true));

        let left = std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::channel();
            let (reclaimer, park) = (&reclaimer, &park);
            let finisher = s.spawn(move || {
                tx.send(std::fs::read_link("/proc/thread-self").unwrap())
                    .unwrap();
                reclaimer.finish();
                park.exists()
            });
            let stat = std::path::Path::new("/proc")
                .join(rx.recv().unwrap())
                .join("stat");
            while !finisher.is_finished() && !asleep(&stat) {
                std::thread::sleep(Duration::from_millis(1));
            }
            held.resume();
            finisher.join().unwrap()
        });
        assert!(
            !left,
            "finish returned before the park it was handed was removed"
        );
    }

    /// Whether the thread whose `/proc/<pid>/task/<tid>/stat` is `stat` is
    /// asleep (state `S`), or gone.
    fn asleep(stat: &std::path::Path) -> bool {
        let Ok(line) = std::fs::read_to_string(stat) else {
            return true;
        };
        let state = line.rsplit_once(')').map(|(_, rest)| rest.trim_start());
        state.is_some_and(|s| s.starts_with('S'))
    }
}
