//! Striped inter-process locks: one `flock`ed file per stripe, plus an
//! in-process mutex per stripe (an `flock` belongs to the open file
//! description, so it cannot exclude threads that share this handle's file).

use std::ffi::OsString;
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};

use crate::error::{Error, Result};
use crate::file::fs::{Dir, Fs};
use crate::file::layout::{STRIPES, lock_name};

pub(crate) struct StripeLocks {
    dir: Dir,
    stripes: Vec<Stripe>,
}

impl std::fmt::Debug for StripeLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeLocks")
            .field("dir", &self.dir.path())
            .field("stripes", &self.stripes.len())
            .finish()
    }
}

struct Stripe {
    name: OsString,
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
    /// The stripes whose lock files live in `dir` (`locks/`).
    pub fn new(dir: Dir) -> StripeLocks {
        StripeLocks {
            stripes: (0..STRIPES)
                .map(|i| Stripe {
                    name: lock_name(i),
                    path: dir.join(lock_name(i)),
                    mutex: Mutex::new(()),
                    file: OnceLock::new(),
                })
                .collect(),
            dir,
        }
    }

    /// Waits for the stripe.
    pub fn lock(&self, fs: &Fs, stripe: usize) -> Result<StripeGuard<'_>> {
        let s = &self.stripes[stripe];
        let mutex = s.mutex.lock().unwrap_or_else(|e| e.into_inner());
        let file = self.file(fs, s)?;
        fs.lock(file, &s.path)
            .map_err(|e| Error::io("lock", &s.path, e))?;
        Ok(StripeGuard {
            file,
            _mutex: mutex,
        })
    }

    /// Waits for every stripe, in stripe order (no one else holds more than
    /// one stripe at a time, so this order cannot deadlock).
    pub fn lock_all(&self, fs: &Fs) -> Result<Vec<StripeGuard<'_>>> {
        (0..self.stripes.len())
            .map(|stripe| self.lock(fs, stripe))
            .collect()
    }

    /// Takes the stripe only if no one holds it.
    pub fn try_lock(&self, fs: &Fs, stripe: usize) -> Result<Option<StripeGuard<'_>>> {
        let s = &self.stripes[stripe];
        let mutex = match s.mutex.try_lock() {
            Ok(m) => m,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(None),
        };
        let file = self.file(fs, s)?;
        let locked = fs
            .try_lock(file, &s.path)
            .map_err(|e| Error::io("lock", &s.path, e))?;
        Ok(locked.then_some(StripeGuard {
            file,
            _mutex: mutex,
        }))
    }

    /// The stripe's lock file, opened once per handle. Only the holder of
    /// the stripe's mutex gets here, so no other file can win the race.
    fn file<'a>(&self, fs: &Fs, s: &'a Stripe) -> Result<&'a File> {
        if let Some(f) = s.file.get() {
            return Ok(f);
        }
        let f = fs
            .open_lock_file(&self.dir, &s.name)
            .map_err(|e| Error::io("open lock file", &s.path, e))?;
        Ok(s.file.get_or_init(|| f))
    }
}
