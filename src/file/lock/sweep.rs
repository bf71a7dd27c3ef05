//! The pass of each sweep under way on a handle: a sweep's waits for
//! stripes, from its first call of the backend to its last, are one
//! [`Pass`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::ThreadId;

use super::{Pass, StripeLocks};

/// The [`Pass`] of each sweep under way on a handle, by the thread that
/// runs it. A sweep (the rules' `sweep_at`) calls the backend one call
/// after the other on one thread, from `remove_unread`, its first, to
/// `settle_expired`, its last; every wait for a stripe between the two
/// (its chunks of new files and of due entries, its scans' set-asides of
/// corrupt files and removals of stale `expiring/` entries, its batches'
/// removals) is one of its pass:
/// the sweep waits its `stripe_wait` once in all, and a stripe found stuck
/// is not waited for again in it. Sweeps on other threads have passes of
/// their own. A sweep cut short before its last call (a panic) leaves its
/// pass behind, for its thread's next sweep to replace.
#[derive(Debug, Default)]
pub(super) struct Sweeps(Mutex<HashMap<ThreadId, Arc<Pass>>>);

impl Sweeps {
    fn under_way(&self) -> MutexGuard<'_, HashMap<ThreadId, Arc<Pass>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl StripeLocks {
    /// Begins a sweep on this thread: a new pass for its waits, in place
    /// of any this thread's last sweep left.
    pub fn begin_sweep(&self) -> Arc<Pass> {
        let pass = Arc::new(Pass::default());
        self.sweeps
            .under_way()
            .insert(std::thread::current().id(), Arc::clone(&pass));
        pass
    }

    /// The pass of the sweep under way on this thread, if one is.
    pub fn sweep(&self) -> Option<Arc<Pass>> {
        self.sweeps
            .under_way()
            .get(&std::thread::current().id())
            .cloned()
    }

    /// Ends the sweep under way on this thread, if one is.
    pub fn end_sweep(&self) {
        self.sweeps.under_way().remove(&std::thread::current().id());
    }
}
