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
pub(crate) struct Proofs(Mutex<HashMap<TaskId, (OffsetDateTime, u64, OsString)>>);

impl Proofs {
    /// Remembers that `task` was read through its index entry `index`.
    pub(crate) fn remember(&self, task: &Task, index: &OsStr) {
        let mut proofs = self.0.lock().unwrap_or_else(PoisonError::into_inner);
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
        let mut proofs = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match proofs.remove(&current.id) {
            Some((created_at, revision, index))
                if created_at == current.created_at && revision == current.revision =>
            {
                Some(index)
            }
            _ => None,
        }
    }
}
