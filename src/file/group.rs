//! Group commit for directory fsyncs.
//!
//! One `fsync` of a directory makes durable every change made to it before
//! the fsync started. So concurrent writers of one handle share fsyncs: a
//! writer whose change an fsync already in flight will not cover waits for
//! it, then checks whether a later fsync covered it before it runs its own.
//!
//! A failed fsync is as wide: every change made before it started may be
//! lost, whichever thread's call ran it, and a later fsync that succeeds
//! proves nothing about them (the kernel reports the error once, on the
//! shared descriptor, and may have dropped what it could not write). A
//! writer learns of it by the count of failed fsyncs, read before its
//! change ([`DirSync::before`]): if that count has moved by the time its
//! change is to be durable, an fsync that may have covered the change
//! failed, and the change is reported lost (perhaps of one made after that
//! fsync: the safe side).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::file::fs::{Dir, Fs};

/// One directory's fsync, shared by the threads of a handle.
#[derive(Debug)]
pub(crate) struct DirSync {
    dir: Dir,
    /// Tickets handed out, one per change, taken after the change is made.
    changes: AtomicU64,
    /// Fsyncs of the directory that failed (changed under `state`'s lock).
    failures: AtomicU64,
    state: Mutex<Synced>,
}

#[derive(Debug, Default)]
struct Synced {
    /// Every ticket up to this one is durable.
    through: u64,
}

/// How many fsyncs of a directory had failed before a change to it began
/// ([`DirSync::before`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Before(u64);

impl DirSync {
    pub(crate) fn new(dir: Dir) -> DirSync {
        DirSync {
            dir,
            changes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            state: Mutex::new(Synced::default()),
        }
    }

    /// The directory.
    pub(crate) fn dir(&self) -> &Dir {
        &self.dir
    }

    /// Where this directory's fsyncs stand: read before a change to it
    /// begins, and given to [`sync`](Self::sync) once it is made.
    pub(crate) fn before(&self) -> Before {
        Before(self.failures.load(Ordering::SeqCst))
    }

    /// Whether an fsync of this directory has failed since the handle
    /// opened: then no removal made before it is known durable, whatever
    /// later fsyncs say.
    pub(crate) fn has_failed(&self) -> bool {
        self.failures.load(Ordering::SeqCst) > 0
    }

    /// Makes a change the caller just finished in this directory durable;
    /// `before` was read before the change began. An error if an fsync of
    /// the directory failed since then.
    pub(crate) fn sync(&self, fs: &Fs, before: Before) -> io::Result<()> {
        self.wait(fs, self.ticket(), before)
    }

    /// A ticket for a change already made.
    fn ticket(&self) -> u64 {
        self.changes.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Returns once the change of `ticket`, begun at `before`, is durable:
    /// at once if an fsync that started after it succeeded, else after an
    /// fsync of its own; an error if an fsync failed since `before`.
    fn wait(&self, fs: &Fs, ticket: u64, before: Before) -> io::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if self.before() != before {
            return Err(io::Error::other(
                "a directory fsync that may have covered this change failed",
            ));
        }
        if ticket <= state.through {
            return Ok(());
        }
        // Every ticket handed out by now belongs to a change already made.
        let target = self.changes.load(Ordering::SeqCst);
        match fs.sync_dir(&self.dir) {
            Ok(()) => {
                state.through = target;
                Ok(())
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::SeqCst);
                Err(e)
            }
        }
    }
}

#[cfg(all(test, feature = "fault-injection"))]
mod tests {
    use super::*;
    use crate::file::fault::{Fault, FaultInjector, FaultMode};

    fn dir_sync() -> (tempfile::TempDir, DirSync, Fs, FaultInjector) {
        let dir = tempfile::tempdir().unwrap();
        let faults = FaultInjector::new();
        let fs = Fs::with_faults(Some(faults.clone()));
        let sync = DirSync::new(fs.open_root(dir.path()).unwrap());
        let calls = faults.calls();
        assert_eq!(calls, 1, "the open");
        (dir, sync, fs, faults)
    }

    #[test]
    fn one_fsync_covers_every_earlier_change() {
        let (_dir, sync, fs, faults) = dir_sync();
        let before = sync.before();
        let (first, second) = (sync.ticket(), sync.ticket());
        sync.wait(&fs, second, before).unwrap();
        assert_eq!(faults.calls(), 2);
        sync.wait(&fs, first, before).unwrap();
        assert_eq!(
            faults.calls(),
            2,
            "the first change was covered: no second fsync"
        );
        sync.sync(&fs, before).unwrap();
        assert_eq!(faults.calls(), 3, "a later change needs a later fsync");
    }

    #[test]
    fn a_failed_fsync_fails_every_change_it_covered() {
        let (_dir, sync, fs, faults) = dir_sync();
        let before = sync.before();
        let (first, second) = (sync.ticket(), sync.ticket());
        faults.fail_nth(1, Fault::Eio, FaultMode::Once);
        assert!(sync.wait(&fs, second, before).is_err());
        // The first change was covered by the failed fsync: it must not be
        // reported durable by a later fsync that happens to succeed.
        assert!(sync.wait(&fs, first, before).is_err());
        assert_eq!(faults.calls(), 2);
        sync.sync(&fs, sync.before()).unwrap();
    }

    /// A change made before another thread's fsync failed, whose own sync
    /// comes after it (its ticket taken after the failure), is lost too.
    #[test]
    fn a_change_begun_before_a_failed_fsync_is_lost_whenever_it_syncs() {
        let (_dir, sync, fs, faults) = dir_sync();
        let before = sync.before();
        // The change is made here; another's fsync then fails.
        faults.fail_nth(1, Fault::Eio, FaultMode::Once);
        assert!(sync.sync(&fs, sync.before()).is_err());
        assert!(
            sync.sync(&fs, before).is_err(),
            "reported durable by an fsync after the failure"
        );
        // A change begun after the failure is made durable as any other.
        sync.sync(&fs, sync.before()).unwrap();
    }
}
