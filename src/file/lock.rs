//! Striped inter-process locks: one `flock`ed file per stripe, plus an
//! in-process mutex per stripe (an `flock` belongs to the open file
//! description, so it cannot exclude threads that share this handle's file).

use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};

use crate::error::{Error, Result};
use crate::file::fs::Fs;
use crate::file::layout::{Layout, STRIPES};

pub(crate) struct StripeLocks {
    stripes: Vec<Stripe>,
}

impl std::fmt::Debug for StripeLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeLocks")
            .field("stripes", &self.stripes.len())
            .finish()
    }
}

struct Stripe {
    path: PathBuf,
    mutex: Mutex<()>,
    file: OnceLock<File>,
}

/// An exclusive hold on one stripe, in this process and across processes.
/// Dropping it releases both locks.
pub(crate) struct StripeGuard<'a> {
    file: &'a File,
    _mutex: MutexGuard<'a, ()>,
}

impl Drop for StripeGuard<'_> {
    fn drop(&mut self) {
        // Closing would release it too; the file stays open for reuse.
        let _ = self.file.unlock();
    }
}

impl StripeLocks {
    pub fn new(layout: &Layout) -> StripeLocks {
        StripeLocks {
            stripes: (0..STRIPES)
                .map(|i| Stripe {
                    path: layout.lock_file(i),
                    mutex: Mutex::new(()),
                    file: OnceLock::new(),
                })
                .collect(),
        }
    }

    /// Waits for the stripe.
    pub fn lock(&self, fs: &Fs, stripe: usize) -> Result<StripeGuard<'_>> {
        let s = &self.stripes[stripe];
        let mutex = s.mutex.lock().unwrap_or_else(|e| e.into_inner());
        let file = s.file()?;
        fs.lock(file, &s.path)
            .map_err(|e| Error::io("lock", &s.path, e))?;
        Ok(StripeGuard {
            file,
            _mutex: mutex,
        })
    }

    /// Takes the stripe only if no one holds it.
    pub fn try_lock(&self, fs: &Fs, stripe: usize) -> Result<Option<StripeGuard<'_>>> {
        let s = &self.stripes[stripe];
        let mutex = match s.mutex.try_lock() {
            Ok(m) => m,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(None),
        };
        let file = s.file()?;
        let locked = fs
            .try_lock(file, &s.path)
            .map_err(|e| Error::io("lock", &s.path, e))?;
        Ok(locked.then_some(StripeGuard {
            file,
            _mutex: mutex,
        }))
    }
}

impl Stripe {
    fn file(&self) -> Result<&File> {
        if let Some(f) = self.file.get() {
            return Ok(f);
        }
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
        }
        let f = options
            .open(&self.path)
            .map_err(|e| Error::io("open lock file", &self.path, e))?;
        // Only the holder of `mutex` gets here, so no other file can win the race.
        Ok(self.file.get_or_init(|| f))
    }
}
