//! The file-system seam: every write, fsync, rename, unlink, directory fsync
//! and lock of the file backend goes through here.
//!
//! With the `fault-injection` feature a [`FaultInjector`] can make the Nth call
//! fail, the way SQLite's test VFS does, and a [`Recorder`] can log every
//! call that changed the disk (for the crash-state explorer,
//! `tests/crash_states/`); without the feature every method is a plain call
//! and the seam costs nothing.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

#[cfg(feature = "fault-injection")]
pub use fault::{Fault, FaultInjector};
#[cfg(feature = "fault-injection")]
pub use record::{FsEvent, Recorder};

/// The kinds of call that go through the seam (named in fault logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FsOp {
    /// Creating a new file (temp files, the store marker).
    Create,
    /// Writing a file's bytes.
    Write,
    /// `fsync` of a file.
    SyncFile,
    /// `rename`.
    Rename,
    /// `unlink`.
    Remove,
    /// `fsync` of a directory.
    SyncDir,
    /// `mkdir`.
    CreateDir,
    /// Taking an inter-process lock.
    Lock,
}

/// The seam itself. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub(crate) struct Fs {
    #[cfg(feature = "fault-injection")]
    faults: Option<FaultInjector>,
    #[cfg(feature = "fault-injection")]
    recorder: Option<Recorder>,
}

impl Fs {
    #[cfg(feature = "fault-injection")]
    pub fn with_faults(faults: Option<FaultInjector>) -> Fs {
        Fs {
            faults,
            recorder: None,
        }
    }

    /// This seam, logging every call that changed the disk to `recorder`.
    #[cfg(feature = "fault-injection")]
    pub fn recording(self, recorder: Option<Recorder>) -> Fs {
        Fs { recorder, ..self }
    }

    /// Logs a call that succeeded (only with a recorder).
    #[cfg(feature = "fault-injection")]
    fn record(&self, event: impl FnOnce() -> FsEvent) {
        if let Some(recorder) = &self.recorder {
            recorder.push(event());
        }
    }

    #[inline]
    fn check(&self, _op: FsOp, _path: &Path) -> io::Result<()> {
        #[cfg(feature = "fault-injection")]
        if let Some(faults) = &self.faults {
            return faults.check(_op, _path);
        }
        Ok(())
    }

    /// Creates `path`, which must not exist, mode `0600`, never following a symlink.
    pub fn create_new(&self, path: &Path) -> io::Result<File> {
        self.check(FsOp::Create, path)?;
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
        }
        let file = options.open(path)?;
        #[cfg(feature = "fault-injection")]
        self.record(|| FsEvent::Create {
            path: path.to_owned(),
        });
        Ok(file)
    }

    /// Writes all of `bytes`. An injected fault writes half of them first, as
    /// a full disk would.
    pub fn write_all(&self, file: &mut File, path: &Path, bytes: &[u8]) -> io::Result<()> {
        if let Err(e) = self.check(FsOp::Write, path) {
            let half = &bytes[..bytes.len() / 2];
            if file.write_all(half).is_ok() {
                #[cfg(feature = "fault-injection")]
                self.record(|| FsEvent::Write {
                    path: path.to_owned(),
                    bytes: half.to_vec(),
                });
            }
            return Err(e);
        }
        file.write_all(bytes)?;
        #[cfg(feature = "fault-injection")]
        self.record(|| FsEvent::Write {
            path: path.to_owned(),
            bytes: bytes.to_vec(),
        });
        Ok(())
    }

    pub fn sync_file(&self, file: &File, path: &Path) -> io::Result<()> {
        self.check(FsOp::SyncFile, path)?;
        file.sync_all()?;
        #[cfg(feature = "fault-injection")]
        self.record(|| FsEvent::SyncFile {
            path: path.to_owned(),
        });
        Ok(())
    }

    pub fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check(FsOp::Rename, to)?;
        fs::rename(from, to)?;
        #[cfg(feature = "fault-injection")]
        self.record(|| FsEvent::Rename {
            from: from.to_owned(),
            to: to.to_owned(),
        });
        Ok(())
    }

    pub fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.check(FsOp::Remove, path)?;
        fs::remove_file(path)?;
        #[cfg(feature = "fault-injection")]
        self.record(|| FsEvent::Remove {
            path: path.to_owned(),
        });
        Ok(())
    }

    pub fn sync_dir(&self, dir: &File, path: &Path) -> io::Result<()> {
        self.check(FsOp::SyncDir, path)?;
        dir.sync_all()?;
        #[cfg(feature = "fault-injection")]
        self.record(|| FsEvent::SyncDir {
            path: path.to_owned(),
        });
        Ok(())
    }

    /// Creates one directory, mode `0700`.
    pub fn create_dir(&self, path: &Path) -> io::Result<()> {
        self.check(FsOp::CreateDir, path)?;
        let mut builder = fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(path)?;
        #[cfg(feature = "fault-injection")]
        self.record(|| FsEvent::CreateDir {
            path: path.to_owned(),
        });
        Ok(())
    }

    /// Takes an exclusive `flock` on `file`, waiting for it.
    pub fn lock(&self, file: &File, path: &Path) -> io::Result<()> {
        self.check(FsOp::Lock, path)?;
        file.lock()
    }

    /// Takes an exclusive `flock` on `file` if it is free.
    pub fn try_lock(&self, file: &File, path: &Path) -> io::Result<bool> {
        self.check(FsOp::Lock, path)?;
        match file.try_lock() {
            Ok(()) => Ok(true),
            Err(fs::TryLockError::WouldBlock) => Ok(false),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

/// Opens a file for reading without following a symlink and without blocking
/// on a FIFO. Reads are not part of the fault seam: they change nothing.
pub(crate) fn open_read(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    options.open(path)
}

/// Whether `e` says a symlink was refused by `O_NOFOLLOW`.
pub(crate) fn is_symlink_refusal(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        e.raw_os_error() == Some(libc::ELOOP)
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}

#[cfg(feature = "fault-injection")]
mod fault {
    use std::io;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex};

    use super::FsOp;

    /// Which error an injected fault returns.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Fault {
        /// `EIO`: the device failed.
        Eio,
        /// `ENOSPC`: the disk is full.
        Enospc,
    }

    impl Fault {
        fn error(self) -> io::Error {
            io::Error::from_raw_os_error(match self {
                Fault::Eio => libc::EIO,
                Fault::Enospc => libc::ENOSPC,
            })
        }
    }

    /// Makes the Nth call through a store's file-system seam fail.
    ///
    /// Clones share one state: hand one clone to
    /// [`FileStoreBuilder::fault_injector`](crate::FileStoreBuilder::fault_injector)
    /// and arm another.
    #[derive(Clone, Debug, Default)]
    pub struct FaultInjector {
        state: Arc<Mutex<State>>,
    }

    #[derive(Debug, Default)]
    struct State {
        calls: u64,
        countdown: Option<(u64, Fault, bool)>,
        failing: Option<Fault>,
        fired: Vec<(FsOp, PathBuf)>,
    }

    impl FaultInjector {
        /// An injector that lets every call through until armed.
        pub fn new() -> FaultInjector {
            FaultInjector::default()
        }

        /// Fails the `n`th call from now (1 is the next call). With `sticky`,
        /// every call after it fails too, like a device that has gone bad.
        pub fn fail_nth(&self, n: u64, fault: Fault, sticky: bool) {
            assert!(n >= 1, "calls are counted from 1");
            let mut s = self.lock();
            s.countdown = Some((n, fault, sticky));
            s.failing = None;
        }

        /// Lets every call through again.
        pub fn disarm(&self) {
            let mut s = self.lock();
            s.countdown = None;
            s.failing = None;
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
            s.calls += 1;
            if let Some(fault) = s.failing {
                s.fired.push((op, path.to_owned()));
                return Err(fault.error());
            }
            if let Some((n, fault, sticky)) = s.countdown {
                if n > 1 {
                    s.countdown = Some((n - 1, fault, sticky));
                } else {
                    s.countdown = None;
                    if sticky {
                        s.failing = Some(fault);
                    }
                    s.fired.push((op, path.to_owned()));
                    return Err(fault.error());
                }
            }
            Ok(())
        }

        fn lock(&self) -> std::sync::MutexGuard<'_, State> {
            self.state.lock().unwrap_or_else(|e| e.into_inner())
        }
    }
}

#[cfg(feature = "fault-injection")]
mod record {
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

    /// One call through the seam that changed the disk or made a change
    /// durable, logged by a [`Recorder`] after it succeeded.
    ///
    /// Paths are the ones the store passed: a file is written and fsynced
    /// under the name it has at that moment (a temp file's, before its
    /// rename). Locks are not logged: they change nothing on disk.
    #[derive(Clone, Debug, PartialEq, Eq)]
    #[non_exhaustive]
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
        /// The name `path` was unlinked.
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

    /// Logs every call a store makes through its file-system seam that
    /// changed the disk, in the order they returned.
    ///
    /// Clones share one log: hand one clone to
    /// [`FileStoreBuilder::recorder`](crate::FileStoreBuilder::recorder)
    /// (several handles may share it) and read the log from another.
    #[derive(Clone, Debug, Default)]
    pub struct Recorder {
        events: Arc<Mutex<Vec<FsEvent>>>,
    }

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
}

#[cfg(all(test, feature = "fault-injection"))]
mod record_tests {
    use super::*;

    /// Every call that changes the disk is logged once it succeeded, with the
    /// path it was made under; a failed call is not.
    #[test]
    fn the_recorder_logs_each_successful_call_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let recorder = Recorder::new();
        let faults = FaultInjector::new();
        let fs = Fs::with_faults(Some(faults.clone())).recording(Some(recorder.clone()));
        let (sub, a, b) = (
            dir.path().join("d"),
            dir.path().join("d/a"),
            dir.path().join("b"),
        );
        fs.create_dir(&sub).unwrap();
        let mut file = fs.create_new(&a).unwrap();
        fs.write_all(&mut file, &a, b"hello").unwrap();
        fs.sync_file(&file, &a).unwrap();
        fs.rename(&a, &b).unwrap();
        let handle = open_read(dir.path()).unwrap();
        fs.sync_dir(&handle, dir.path()).unwrap();
        fs.remove_file(&b).unwrap();
        faults.fail_nth(1, Fault::Eio, false);
        assert!(fs.remove_file(&b).is_err());
        assert_eq!(
            recorder.events(),
            [
                FsEvent::CreateDir { path: sub },
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
                FsEvent::SyncDir {
                    path: dir.path().to_owned()
                },
                FsEvent::Remove { path: b },
            ]
        );
    }
}

#[cfg(all(test, not(feature = "fault-injection")))]
mod tests {
    /// Without the feature the seam holds nothing: every call is the plain
    /// call behind an inlined `Ok(())`.
    #[test]
    fn the_seam_is_zero_sized_without_fault_injection() {
        assert_eq!(std::mem::size_of::<super::Fs>(), 0);
    }
}
