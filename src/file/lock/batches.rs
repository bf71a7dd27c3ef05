//! The batches lock: held shared by a batch whose tasks are between two
//! states while it holds none of their stripes, and taken exclusive by a
//! check that judges what it found under the stripes, so that it judges
//! settled state (FORMAT.md, "Locks").

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::{Polling, StripeLocks};
use crate::error::{Error, Result};
use crate::file::fs::{Fs, is_read_only};
use crate::file::layout::BATCHES_LOCK;

/// What a check waited out ([`StripeLocks::settled_within`]).
#[derive(Debug)]
pub(crate) struct Settled {
    /// The batches lock, held exclusive until this is dropped (none on a
    /// store that cannot be written and has no batches lock file: no batch
    /// ran in it).
    _lock: Option<File>,
    /// Whether batches of other handles were still under way when the
    /// wait ran out.
    pub under_way: bool,
}

/// How long a batch waits for a check that holds the batches lock exclusive
/// before it goes on without it.
const CHECK_WAIT: Duration = Duration::from_secs(10);

/// The batches lock of one handle: one descriptor, held shared while any
/// batch of the handle holds it ([`StripeLocks::hold_batch`]).
pub(super) struct BatchLock {
    path: PathBuf,
    held: Mutex<Held>,
}

impl std::fmt::Debug for BatchLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchLock")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// How many holds the handle's batches have on the lock, and the
/// descriptor, opened by the process `pid`.
struct Held {
    pid: u32,
    count: usize,
    file: Option<File>,
    /// Whether a check outlasted a batch's wait, and no batch has taken the
    /// lock since: later batches try once and do not wait (a check stopped
    /// while it judges would otherwise cost every batch the whole wait).
    outlasted: bool,
}

/// A batch's shared hold on the batches lock; the lock is let go when the
/// last hold of the handle is dropped. A clone is one more hold, taken
/// without waiting. A hold may hold nothing: one a batch went on without
/// (a check kept the lock past [`CHECK_WAIT`]), and one taken before a
/// fork, in the child (the lock is the parent's: an `flock` belongs to the
/// open file description the two share, and the child letting it go would
/// let it go for the parent).
#[derive(Debug)]
pub(crate) struct BatchHold {
    lock: Arc<BatchLock>,
    /// The process that took it, if it holds the lock.
    pid: Option<u32>,
}

impl BatchHold {
    /// Whether this hold holds the lock (counts in this process).
    pub(crate) fn counts(&self) -> bool {
        self.pid == Some(std::process::id())
    }
}

impl Clone for BatchHold {
    fn clone(&self) -> BatchHold {
        let pid = self.counts().then(|| {
            self.lock
                .held
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .count += 1;
            std::process::id()
        });
        BatchHold {
            lock: Arc::clone(&self.lock),
            pid,
        }
    }
}

impl Drop for BatchHold {
    fn drop(&mut self) {
        if !self.counts() {
            return;
        }
        let mut held = self
            .lock
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        held.count -= 1;
        if held.count == 0
            && let Some(file) = &held.file
        {
            let _ = file.unlock();
        }
    }
}

impl BatchLock {
    /// The batches lock whose file is at `path`, held by no batch yet.
    pub(super) fn new(path: PathBuf) -> BatchLock {
        BatchLock {
            path,
            held: Mutex::new(Held {
                pid: 0,
                count: 0,
                file: None,
                outlasted: false,
            }),
        }
    }
}

impl StripeLocks {
    /// Holds the batches lock shared until the hold (and every clone of
    /// it) is dropped: for a batch that leaves its tasks between two states
    /// while it holds none of their stripes. Waits only while a check holds
    /// it exclusive, and only if no other batch of this handle holds it
    /// already; past [`CHECK_WAIT`] the batch goes on without it (a check
    /// stopped while it judges must not stop the service: it may then
    /// misjudge this batch's work in progress), and the batches after it
    /// try the lock once without waiting until one takes it again. The
    /// caller holds no stripe (the lock order is the batches lock, then
    /// stripes).
    pub fn hold_batch(&self, fs: &Fs) -> Result<BatchHold> {
        let hold = self.take_batch(fs, CHECK_WAIT)?;
        Ok(hold.unwrap_or_else(|| BatchHold {
            lock: Arc::clone(&self.batches),
            pid: None,
        }))
    }

    /// [`hold_batch`](Self::hold_batch) without waiting: `None` while a
    /// check holds the lock.
    pub fn try_hold_batch(&self, fs: &Fs) -> Result<Option<BatchHold>> {
        self.take_batch(fs, Duration::ZERO)
    }

    /// The batches lock's file.
    pub fn batches_path(&self) -> &std::path::Path {
        &self.batches.path
    }

    /// A hold on the batches lock, waiting for it up to `wait` (not at all
    /// once a check outlasted a wait, until a batch takes it again). The
    /// handle's mutex is held only while the lock is tried, never while
    /// the batch waits: another batch of the handle, or a reader's
    /// [`try_hold_batch`](Self::try_hold_batch), is not held up behind it.
    fn take_batch(&self, fs: &Fs, wait: Duration) -> Result<Option<BatchHold>> {
        let lock = &self.batches;
        let pid = std::process::id();
        let hold = || BatchHold {
            lock: Arc::clone(lock),
            pid: Some(pid),
        };
        let mut polling = Polling::new(wait);
        let mut replaced = 0;
        loop {
            let mut held = lock.held.lock().unwrap_or_else(PoisonError::into_inner);
            if held.pid != pid {
                // A process forked from the one that took it holds nothing.
                *held = Held {
                    pid,
                    count: 0,
                    file: None,
                    outlasted: false,
                };
            }
            if held.count > 0 {
                held.count += 1;
                return Ok(Some(hold()));
            }
            let file = match held.file.take() {
                Some(file) => file,
                None => fs
                    .open_lock_file(&self.dir, OsStr::new(BATCHES_LOCK))
                    .map_err(|e| Error::io("open lock file", &lock.path, e))?,
            };
            let locked = fs
                .try_lock_shared(&file, &lock.path)
                .map_err(|e| Error::io("lock", &lock.path, e))?;
            if locked && self.still_at(fs, &file) {
                held.file = Some(file);
                held.count = 1;
                held.outlasted = false;
                return Ok(Some(hold()));
            }
            if locked {
                // The file was replaced or removed (an older version's
                // `repair` sets it aside as a foreign name): a check
                // locks the one at the path, so must this.
                let _ = file.unlock();
                replaced += 1;
                if replaced < 3 {
                    continue;
                }
                return Err(Error::io(
                    "lock",
                    &lock.path,
                    std::io::Error::other("the lock file is replaced again and again"),
                ));
            }
            held.file = Some(file);
            if held.outlasted {
                // Tried once: the check that outlasted a wait still holds it.
                return Ok(None);
            }
            if polling.ran_out() {
                if !wait.is_zero() {
                    held.outlasted = true;
                    tracing::warn!(lock = %lock.path.display(), "a check of the store has held the batches lock for 10 s; a batch goes on without it, and so do the batches after it, without waiting, until a batch takes it again");
                }
                return Ok(None);
            }
            drop(held);
            polling.pause();
        }
    }

    /// Whether `file` is the batches lock file at its path (or that cannot
    /// be told).
    fn still_at(&self, fs: &Fs, file: &File) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (
            file.metadata(),
            fs.stat(&self.dir, OsStr::new(BATCHES_LOCK)),
        ) {
            (Ok(open), Ok(there)) => open.dev() == there.dev && open.ino() == there.ino,
            (_, Err(e)) if e.kind() == std::io::ErrorKind::NotFound => false,
            _ => true,
        }
    }

    /// Takes the batches lock exclusive through a descriptor of its own,
    /// trying for up to `wait`, so that no batch of another handle is under
    /// way while it is held (until the [`Settled`] is dropped); calls
    /// `waiting(lock, wait)` if it has to wait. The caller holds no stripe,
    /// and its handle runs no batch meanwhile.
    pub fn settled_within(
        &self,
        fs: &Fs,
        wait: Duration,
        waiting: &dyn Fn(&Path, Duration),
    ) -> Result<Settled> {
        let (path, name) = (&self.batches.path, OsStr::new(BATCHES_LOCK));
        let file = match fs.open_lock_file(&self.dir, name) {
            Ok(file) => file,
            // A store that cannot be written: a lock file no batch made
            // is one no batch holds.
            Err(e) if is_read_only(&e) => match fs.open_read(&self.dir, name) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(Settled {
                        _lock: None,
                        under_way: false,
                    });
                }
                Err(e) => return Err(Error::io("open lock file", path, e)),
            },
            Err(e) => return Err(Error::io("open lock file", path, e)),
        };
        let mut polling = Polling::new(wait);
        loop {
            if fs
                .try_lock(&file, path)
                .map_err(|e| Error::io("lock", path, e))?
            {
                return Ok(Settled {
                    _lock: Some(file),
                    under_way: false,
                });
            }
            if polling.ran_out() {
                return Ok(Settled {
                    _lock: None,
                    under_way: true,
                });
            }
            if polling.is_first() {
                tracing::info!(lock = %path.display(), "waiting for batches under way in other handles to end");
                waiting(path, wait);
            }
            polling.pause();
        }
    }
}
