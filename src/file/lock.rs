//! Striped inter-process locks: one `flock`ed file per stripe, plus an
//! in-process mutex per stripe (an `flock` belongs to the open file
//! description, so it cannot exclude threads that share this handle's file).
//!
//! For the same reason a process forked from the one that opened a lock
//! file must not lock through its copy of the descriptor: it would share the
//! lock with the process it was forked from instead of being excluded by it.
//! A stripe's file is opened again in each process that locks it.

use std::ffi::OsString;
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

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
    /// The stripe's lock file once opened, and the process that opened it;
    /// its mutex is the in-process lock.
    file: Mutex<Option<LockFile>>,
}

struct LockFile {
    pid: u32,
    file: File,
}

/// An exclusive hold on one stripe, in this process and across processes.
/// Dropping it releases both locks.
pub(crate) struct StripeGuard<'a> {
    /// Holds the stripe's file, opened.
    held: MutexGuard<'a, Option<LockFile>>,
}

impl Drop for StripeGuard<'_> {
    fn drop(&mut self) {
        // Closing would release it too; the file stays open for reuse.
        if let Some(held) = &*self.held {
            let _ = held.file.unlock();
        }
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
                    file: Mutex::new(None),
                })
                .collect(),
            dir,
        }
    }

    /// Waits for the stripe.
    pub fn lock(&self, fs: &Fs, stripe: usize) -> Result<StripeGuard<'_>> {
        let s = &self.stripes[stripe];
        let held = s.file.lock().unwrap_or_else(|e| e.into_inner());
        let held = self.opened(fs, s, held)?;
        let file = &held.as_ref().expect("opened").file;
        fs.lock(file, &s.path)
            .map_err(|e| Error::io("lock", &s.path, e))?;
        Ok(StripeGuard { held })
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
        let held = match s.file.try_lock() {
            Ok(held) => held,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(None),
        };
        let held = self.opened(fs, s, held)?;
        let file = &held.as_ref().expect("opened").file;
        let locked = fs
            .try_lock(file, &s.path)
            .map_err(|e| Error::io("lock", &s.path, e))?;
        Ok(locked.then_some(StripeGuard { held }))
    }

    /// `held`, the stripe's file under its mutex, opened by this process:
    /// once per handle and process (see the module's doc).
    fn opened<'a>(
        &self,
        fs: &Fs,
        s: &Stripe,
        mut held: MutexGuard<'a, Option<LockFile>>,
    ) -> Result<MutexGuard<'a, Option<LockFile>>> {
        let pid = std::process::id();
        if held.as_ref().is_none_or(|held| held.pid != pid) {
            let file = fs
                .open_lock_file(&self.dir, &s.name)
                .map_err(|e| Error::io("open lock file", &s.path, e))?;
            *held = Some(LockFile { pid, file });
        }
        Ok(held)
    }
}
