//! What tests plug into the file-system seam: a [`FaultInjector`] that fails
//! the Nth call (or holds one, or counts some: [`Count`]), and a [`Recorder`] that logs every call that changed the
//! disk. Both exist only with the `fault-injection` feature; the event
//! vocabulary exists always (the seam builds events only for a recorder).

#[cfg(feature = "fault-injection")]
use std::io;
#[cfg(feature = "fault-injection")]
use std::path::Path;
use std::path::PathBuf;
#[cfg(feature = "fault-injection")]
use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(feature = "fault-injection")]
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

#[cfg(feature = "fault-injection")]
use super::fs::FsOp;

/// One call through the seam that changed the disk or made a change
/// durable, logged by a [`Recorder`] after it succeeded.
///
/// Paths are the ones the store used: a file is written and fsynced under
/// the name it has at that moment (a temp file's, before its rename). Locks
/// are not logged: they change nothing on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
pub enum FsEvent {
    /// A new, empty file was created at `path`.
    Create {
        /// The new file.
        path: PathBuf,
    },
    /// `bytes` were appended to the file open at `path`.
    Write {
        /// The file written.
        path: PathBuf,
        /// What was written (half of it, when an injected fault cut the write).
        bytes: Vec<u8>,
    },
    /// The file at `path` was fsynced.
    SyncFile {
        /// The file fsynced.
        path: PathBuf,
    },
    /// `from` was renamed to `to`, replacing whatever `to` named.
    Rename {
        /// The old name.
        from: PathBuf,
        /// The new name.
        to: PathBuf,
    },
    /// The file named `from` got a second name, `to`.
    Link {
        /// The existing name.
        from: PathBuf,
        /// The new name.
        to: PathBuf,
    },
    /// The entries `a` and `b` (of one directory) were swapped.
    Exchange {
        /// One entry.
        a: PathBuf,
        /// The other.
        b: PathBuf,
    },
    /// The name `path` was unlinked (a file, or an empty directory).
    Remove {
        /// The name removed.
        path: PathBuf,
    },
    /// The directory at `path` was fsynced.
    SyncDir {
        /// The directory fsynced.
        path: PathBuf,
    },
    /// The directory `path` was created.
    CreateDir {
        /// The new directory.
        path: PathBuf,
    },
}

/// Which error an injected fault returns.
#[cfg(feature = "fault-injection")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// `EIO`: the device failed.
    Eio,
    /// `ENOSPC`: the disk is full.
    Enospc,
}

#[cfg(feature = "fault-injection")]
impl Fault {
    fn error(self) -> io::Error {
        io::Error::from_raw_os_error(match self {
            Fault::Eio => rustix::io::Errno::IO.raw_os_error(),
            Fault::Enospc => rustix::io::Errno::NOSPC.raw_os_error(),
        })
    }
}

/// Whether an injected fault passes or stays.
#[cfg(feature = "fault-injection")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultMode {
    /// Only the one call fails.
    Once,
    /// That call and every one after it fail, like a device that has gone bad.
    Sticky,
}

/// Makes the Nth call through a store's file-system seam fail.
///
/// Clones share one state: hand one clone to
/// [`FileStoreBuilder::fault_injector`](crate::FileStoreBuilder::fault_injector)
/// and arm another.
#[cfg(feature = "fault-injection")]
#[derive(Clone, Debug, Default)]
pub struct FaultInjector {
    state: Arc<Mutex<State>>,
}

#[cfg(feature = "fault-injection")]
#[derive(Debug, Default)]
struct State {
    calls: u64,
    countdown: Option<(u64, Fault, FaultMode)>,
    failing: Option<Fault>,
    /// Calls that fail whatever the count: (kind, path, error).
    targeted: Vec<(FsOp, PathBuf, Fault)>,
    /// Calls that wait, once each, until their [`Pause`] lets them on.
    paused: Vec<(FsOp, PathBuf, Arc<Gate>)>,
    /// Calls counted, each into its [`Count`].
    counted: Vec<(FsOp, PathBuf, Arc<AtomicU64>)>,
    fired: Vec<(FsOp, PathBuf)>,
}

/// Where a paused call stands.
#[cfg(feature = "fault-injection")]
#[derive(Debug, Default)]
struct Gate {
    state: Mutex<Held>,
    changed: Condvar,
}

#[cfg(feature = "fault-injection")]
#[derive(Debug, Default)]
struct Held {
    /// The call was made (and waits, unless `resumed`).
    reached: bool,
    /// The call may go on.
    resumed: bool,
}

#[cfg(feature = "fault-injection")]
impl Gate {
    fn lock(&self) -> MutexGuard<'_, Held> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until `done` holds of the state.
    fn wait(&self, done: impl Fn(&Held) -> bool) {
        let mut state = self.lock();
        while !done(&state) {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn set(&self, change: impl FnOnce(&mut Held)) {
        change(&mut self.lock());
        self.changed.notify_all();
    }
}

/// One call held at the seam by [`FaultInjector::pause_at`]: the thread
/// that makes it waits, before the call reaches the file system, until
/// [`resume`](Pause::resume) (or the drop of this value) lets it on. For
/// races made on purpose: what the store holds at that point (its locks)
/// it holds while the test acts from another thread or handle.
#[cfg(feature = "fault-injection")]
#[derive(Debug)]
#[must_use = "a dropped pause lets its call on at once"]
pub struct Pause {
    gate: Arc<Gate>,
}

#[cfg(feature = "fault-injection")]
impl Pause {
    /// Waits until the call is made (and held): `true`; or until `going`
    /// says the thread that would make it is gone without making it
    /// (asked every millisecond while waiting): `false`, where waiting on
    /// would never end.
    pub fn wait_reached(&self, going: impl Fn() -> bool) -> bool {
        let mut held = self.gate.lock();
        while !held.reached {
            if !going() {
                return false;
            }
            held = self
                .gate
                .changed
                .wait_timeout(held, std::time::Duration::from_millis(1))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// Whether the call has been made (and is held, unless resumed).
    pub fn reached(&self) -> bool {
        self.gate.lock().reached
    }

    /// Lets the call on (or lets it through at once if it is made later).
    pub fn resume(&self) {
        self.gate.set(|held| held.resumed = true);
    }
}

#[cfg(feature = "fault-injection")]
impl Drop for Pause {
    fn drop(&mut self) {
        self.resume();
    }
}

/// How many `op` calls on one path a store made through its seam since
/// [`FaultInjector::count_at`] made this: what a test reads where what it
/// checks leaves nothing on disk (how often a lock was tried, say).
#[cfg(feature = "fault-injection")]
#[derive(Debug)]
pub struct Count {
    calls: Arc<AtomicU64>,
}

#[cfg(feature = "fault-injection")]
impl Count {
    /// The calls counted so far (made to fail or not).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
}

#[cfg(feature = "fault-injection")]
impl FaultInjector {
    /// An injector that lets every call through until armed.
    pub fn new() -> FaultInjector {
        FaultInjector::default()
    }

    /// Fails the `n`th call from now (1 is the next call), and with
    /// [`FaultMode::Sticky`] every call after it too.
    ///
    /// # Panics
    ///
    /// If `n` is 0: calls are counted from 1.
    pub fn fail_nth(&self, n: u64, fault: Fault, mode: FaultMode) {
        assert!(n >= 1, "calls are counted from 1");
        let mut s = self.lock();
        s.countdown = Some((n, fault, mode));
        s.failing = None;
    }

    /// Fails every `op` call on `path` (as the store names it: a task's
    /// file is `<store>/active/<id>.json`), until disarmed, whatever the
    /// count: one file the device can no longer read, say, while the rest
    /// of the store reads fine. Adds to what is armed already.
    pub fn fail_at(&self, op: FsOp, path: impl Into<PathBuf>, fault: Fault) {
        self.lock().targeted.push((op, path.into(), fault));
    }

    /// Holds the next `op` call on `path` (named as for
    /// [`fail_at`](Self::fail_at)) before it reaches the file system, until
    /// the returned [`Pause`] lets it on; the call then goes on as any other
    /// (a fault armed for it still fires). Once: the call after it is not
    /// held.
    pub fn pause_at(&self, op: FsOp, path: impl Into<PathBuf>) -> Pause {
        let gate = Arc::new(Gate::default());
        self.lock()
            .paused
            .push((op, path.into(), Arc::clone(&gate)));
        Pause { gate }
    }

    /// Counts every `op` call on `path` (named as for
    /// [`fail_at`](Self::fail_at)) from now on, whatever is armed, into
    /// the returned [`Count`]; [`disarm`](Self::disarm) does not stop it.
    pub fn count_at(&self, op: FsOp, path: impl Into<PathBuf>) -> Count {
        let calls = Arc::new(AtomicU64::new(0));
        self.lock()
            .counted
            .push((op, path.into(), Arc::clone(&calls)));
        Count { calls }
    }

    /// Lets every call through again (a call held by a
    /// [`pause_at`](Self::pause_at) not yet made is not held either).
    pub fn disarm(&self) {
        let mut s = self.lock();
        s.countdown = None;
        s.failing = None;
        s.targeted.clear();
        s.paused.clear();
    }

    /// Calls seen through the seam so far.
    pub fn calls(&self) -> u64 {
        self.lock().calls
    }

    /// The calls that were made to fail, in order.
    pub fn fired(&self) -> Vec<(FsOp, PathBuf)> {
        self.lock().fired.clone()
    }

    pub(crate) fn check(&self, op: FsOp, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        if let Some(at) = s.paused.iter().position(|(o, p, _)| *o == op && p == path) {
            let gate = s.paused.remove(at).2;
            // Not held while the call waits: other calls go on.
            drop(s);
            gate.set(|held| held.reached = true);
            gate.wait(|held| held.resumed);
            s = self.lock();
        }
        s.calls += 1;
        for (_, _, calls) in s.counted.iter().filter(|(o, p, _)| *o == op && p == path) {
            calls.fetch_add(1, Ordering::SeqCst);
        }
        if let Some(fault) = s.failing {
            s.fired.push((op, path.to_owned()));
            return Err(fault.error());
        }
        let targeted = s
            .targeted
            .iter()
            .find(|(o, p, _)| *o == op && p == path)
            .map(|t| t.2);
        if let Some(fault) = targeted {
            s.fired.push((op, path.to_owned()));
            return Err(fault.error());
        }
        if let Some((n, fault, mode)) = s.countdown {
            if n > 1 {
                s.countdown = Some((n - 1, fault, mode));
            } else {
                s.countdown = None;
                if mode == FaultMode::Sticky {
                    s.failing = Some(fault);
                }
                s.fired.push((op, path.to_owned()));
                return Err(fault.error());
            }
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Logs every call a store makes through its file-system seam that changed
/// the disk, in the order they returned.
///
/// Clones share one log: hand one clone to
/// [`FileStoreBuilder::recorder`](crate::FileStoreBuilder::recorder)
/// (several handles may share it) and read the log from another.
#[cfg(feature = "fault-injection")]
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    events: Arc<Mutex<Vec<FsEvent>>>,
}

#[cfg(feature = "fault-injection")]
impl Recorder {
    /// An empty log.
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// How many calls are logged so far.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is logged yet.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// The log so far, oldest first.
    pub fn events(&self) -> Vec<FsEvent> {
        self.lock().clone()
    }

    pub(crate) fn push(&self, event: FsEvent) {
        self.lock().push(event);
    }

    fn lock(&self) -> MutexGuard<'_, Vec<FsEvent>> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(all(test, feature = "fault-injection"))]
mod tests {
    use std::ffi::OsStr;

    use super::*;
    use crate::file::fs::Fs;

    /// Every call that changes the disk is logged once it succeeded, with the
    /// path it was made under; a failed call is not.
    #[test]
    fn the_recorder_logs_each_successful_call_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let recorder = Recorder::new();
        let faults = FaultInjector::new();
        let fs = Fs::with_faults(Some(faults.clone())).recording(Some(recorder.clone()));
        let root = fs.open_root(dir.path()).unwrap();
        let name = |s: &'static str| OsStr::new(s);
        fs.create_dir(&root, name("d")).unwrap();
        let sub = fs.open_dir(&root, name("d")).unwrap();
        let mut file = fs.create_new(&sub, name("a")).unwrap();
        let (a, b, c) = (
            dir.path().join("d/a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        fs.write_all(&mut file, &a, b"hello").unwrap();
        fs.sync_file(&file, &a).unwrap();
        fs.rename(&sub, name("a"), &root, name("b")).unwrap();
        fs.link(&root, name("b"), &root, name("c")).unwrap();
        fs.sync_dir(&root).unwrap();
        fs.remove(&root, name("b")).unwrap();
        faults.fail_nth(1, Fault::Eio, FaultMode::Once);
        assert!(fs.remove(&root, name("c")).is_err());
        assert_eq!(
            recorder.events(),
            [
                FsEvent::CreateDir {
                    path: dir.path().join("d")
                },
                FsEvent::Create { path: a.clone() },
                FsEvent::Write {
                    path: a.clone(),
                    bytes: b"hello".to_vec()
                },
                FsEvent::SyncFile { path: a.clone() },
                FsEvent::Rename {
                    from: a,
                    to: b.clone()
                },
                FsEvent::Link {
                    from: b.clone(),
                    to: c
                },
                FsEvent::SyncDir {
                    path: dir.path().to_owned()
                },
                FsEvent::Remove { path: b },
            ]
        );
    }

    /// A paused call waits before it reaches the file system until its
    /// pause lets it on, then goes on as armed; only the first such call is
    /// held, and a pause dropped or disarmed holds nothing.
    #[test]
    fn a_paused_call_waits_until_resumed_and_only_once() {
        let dir = tempfile::tempdir().unwrap();
        let faults = FaultInjector::new();
        let fs = Fs::with_faults(Some(faults.clone()));
        let root = fs.open_root(dir.path()).unwrap();
        let name = OsStr::new("a");
        drop(fs.create_new(&root, name).unwrap());
        let path = dir.path().join("a");
        let held = faults.pause_at(FsOp::Remove, &path);
        faults.fail_at(FsOp::Remove, &path, Fault::Eio);
        std::thread::scope(|s| {
            let remove = s.spawn(|| fs.remove(&root, name));
            assert!(held.wait_reached(|| !remove.is_finished()));
            assert!(held.reached());
            // Held: the call does not return however long it is given (the
            // wait only gives a call that was not held time to return), and
            // it has not reached the file system.
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert!(!remove.is_finished());
            assert!(path.exists());
            held.resume();
            let failed = remove.join().unwrap().unwrap_err();
            assert_eq!(
                failed.raw_os_error(),
                Some(rustix::io::Errno::IO.raw_os_error())
            );
        });
        faults.disarm();
        // Not held again: the call goes through on this thread.
        fs.remove(&root, name).unwrap();
        assert!(!path.exists());
        // A dropped pause lets its call through at once.
        drop(fs.create_new(&root, OsStr::new("c")).unwrap());
        drop(faults.pause_at(FsOp::Remove, dir.path().join("c")));
        fs.remove(&root, OsStr::new("c")).unwrap();
        let again = dir.path().join("b");
        let pause = faults.pause_at(FsOp::Create, &again);
        faults.disarm();
        drop(fs.create_new(&root, OsStr::new("b")).unwrap());
        assert!(!pause.reached());
    }
}
