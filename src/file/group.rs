//! Group commit for directory fsyncs.
//!
//! One `fsync` of a directory makes durable every change made to it before
//! the fsync started. So concurrent writers of one handle share fsyncs: a
//! writer whose change an fsync already in flight will not cover waits for
//! it, then checks whether a later fsync covered it before it runs its own.

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
    state: Mutex<Synced>,
}

#[derive(Debug, Default)]
struct Synced {
    /// Every ticket up to this one is durable.
    through: u64,
    /// Every ticket up to this one was covered by an fsync that failed: its
    /// change may be lost, and a later fsync succeeding proves nothing (the
    /// kernel may have dropped the dirty data and cleared the error).
    failed_through: u64,
}

impl DirSync {
    pub(crate) fn new(dir: Dir) -> DirSync {
        DirSync {
            dir,
            changes: AtomicU64::new(0),
            state: Mutex::new(Synced::default()),
        }
    }

    /// The directory.
    pub(crate) fn dir(&self) -> &Dir {
        &self.dir
    }

    /// Makes a change the caller just finished in this directory durable.
    pub(crate) fn sync(&self, fs: &Fs) -> io::Result<()> {
        self.wait(fs, self.ticket())
    }

    /// A ticket for a change already made.
    fn ticket(&self) -> u64 {
        self.changes.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Returns once the change of `ticket` is durable: at once if an fsync
    /// that started after it succeeded, else after an fsync of its own.
    fn wait(&self, fs: &Fs, ticket: u64) -> io::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if ticket <= state.failed_through {
            return Err(io::Error::other(
                "a directory fsync that covered this change failed",
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
                state.failed_through = target;
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
        let (first, second) = (sync.ticket(), sync.ticket());
        sync.wait(&fs, second).unwrap();
        assert_eq!(faults.calls(), 2);
        sync.wait(&fs, first).unwrap();
        assert_eq!(
            faults.calls(),
            2,
            "the first change was covered: no second fsync"
        );
        let third = sync.ticket();
        sync.wait(&fs, third).unwrap();
        assert_eq!(faults.calls(), 3, "a later change needs a later fsync");
    }

    #[test]
    fn a_failed_fsync_fails_every_change_it_covered() {
        let (_dir, sync, fs, faults) = dir_sync();
        let (first, second) = (sync.ticket(), sync.ticket());
        faults.fail_nth(1, Fault::Eio, FaultMode::Once);
        assert!(sync.wait(&fs, second).is_err());
        // The first change was covered by the failed fsync: it must not be
        // reported durable by a later fsync that happens to succeed.
        assert!(sync.wait(&fs, first).is_err());
        assert_eq!(faults.calls(), 2);
        let third = sync.ticket();
        sync.wait(&fs, third).unwrap();
    }
}
