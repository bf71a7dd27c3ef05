//! Proofs that a task file is unchanged since a scan read it, so that
//! removing it under its lock needs no second read.
//!
//! A finished task with a TTL has a second name in `expiring/`, a hard link
//! made when it moved to `done/` and never changed. While that name exists
//! its file's inode cannot be reused; so if `done/<id>.json` is still the
//! same inode as the index entry, it is still the file the scan read
//! (task files are never changed in place).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::sync::{Mutex, PoisonError};

use time::OffsetDateTime;

use crate::id::TaskId;
use crate::task::Task;

/// At most this many proofs are kept; past it, all are dropped and the
/// count starts again (a removal without its proof reads the file again:
/// correct, slower).
const MAX_PROOFS: usize = 65_536;

/// The finished tasks a scan read through the `expiring/` index, by id: the
/// version read, and its index entry.
#[derive(Debug, Default)]
pub(crate) struct Proofs {
    kept: Mutex<HashMap<TaskId, (OffsetDateTime, u64, OsString)>>,
    /// How many proofs a removal has taken (tests count them).
    #[cfg(test)]
    taken: std::sync::atomic::AtomicUsize,
}

impl Proofs {
    /// Remembers that `task` was read through its index entry `index`.
    pub(crate) fn remember(&self, task: &Task, index: &OsStr) {
        let mut proofs = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        if proofs.len() >= MAX_PROOFS {
            proofs.clear();
        }
        proofs.insert(
            task.id.clone(),
            (task.created_at, task.revision, index.to_owned()),
        );
    }

    /// The index entry `current` was read through, if it was this version.
    pub(crate) fn take(&self, current: &Task) -> Option<OsString> {
        let mut proofs = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        match proofs.remove(&current.id) {
            Some((created_at, revision, index))
                if created_at == current.created_at && revision == current.revision =>
            {
                #[cfg(test)]
                self.taken
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Some(index)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
impl Proofs {
    /// How many proofs are kept.
    pub(crate) fn len(&self) -> usize {
        self.kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// How many proofs removals have taken.
    pub(crate) fn taken(&self) -> usize {
        self.taken.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use time::macros::datetime;

    use crate::clock::ManualClock;
    use crate::file::FileStore;
    use crate::store::TaskStore;
    use crate::task::NewTask;

    /// A proof is kept for a removal to take: a preview of what a sweep
    /// would delete (`Store::expired`) reads the same tasks and removes
    /// none, so it keeps none (it kept one per task, up to 65,536, about
    /// 13 MB). The sweep's own scan keeps them, and its removals take them.
    #[test]
    fn a_preview_keeps_no_proofs_and_a_sweep_still_uses_them() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(datetime!(2026-01-01 0:00 UTC)));
        let store = FileStore::builder(dir.path())
            .clock(clock.clone())
            .open()
            .unwrap();
        for n in 0..50 {
            let id = store
                .create(NewTask::new().ttl(Duration::from_secs(1)))
                .unwrap()
                .id;
            assert!(
                store
                    .complete(&id, serde_json::json!(n))
                    .unwrap()
                    .is_applied()
            );
        }
        clock.advance(Duration::from_secs(2));
        assert_eq!(store.expired().unwrap().len(), 50);
        assert_eq!(store.backend().proofs.len(), 0, "the preview kept proofs");
        // The sweep's own scan keeps them, and its removals take each one
        // (no second read).
        assert_eq!(store.sweep().unwrap().deleted, 50);
        assert_eq!(store.backend().proofs.taken(), 50, "the sweep read again");
        assert_eq!(store.backend().proofs.len(), 0, "the sweep left proofs");
    }
}
