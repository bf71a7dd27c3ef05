//! The versions of tasks a [`PgBackend`](super::backend::PgBackend) last
//! wrote, kept as guesses for `modify`.
//!
//! A change to a task is decided on the version read and written only if
//! the stored task is still that version. Deciding on the version this
//! handle last wrote, and writing conditionally on it, saves the round trip
//! that loads it: if another handle wrote since, the conditional write
//! misses, returns the stored version, and the decision is made again on
//! it. Only a decision to write is taken on a guess; keeping the task or
//! refusing the change is decided on the stored version, since no write
//! would confirm the guess. Running tasks only: a finished one changes no
//! more.
//!
//! A guess is the version written, with its stored JSON: a write on a
//! guess is conditional on the stored text being exactly that JSON, not
//! only on the creation time and revision that name a version elsewhere.
//! A guess may be kept for as long as the handle lives, and a task deleted
//! and made again under its id at the same instant (a clock that stands
//! still) can reach the guess's revision with other contents.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::backend::Record;
use crate::id::TaskId;

/// How many tasks are kept at most.
const MAX_TASKS: usize = 1_024;
/// The largest task kept, in bytes of its JSON: the guesses' JSON stays
/// within `MAX_TASKS * MAX_TASK_BYTES` (16 MiB), their decoded tasks beside
/// it.
const MAX_TASK_BYTES: usize = 16 << 10;

/// The guesses, by task id.
#[derive(Debug, Default)]
pub(super) struct Recent {
    tasks: Mutex<HashMap<TaskId, Arc<Record>>>,
}

impl Recent {
    fn tasks(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, Arc<Record>>> {
        // Every change to the map is one call: a poisoned lock holds a whole map.
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The version of task `id` this handle last wrote, and its JSON as
    /// stored, if kept.
    pub fn get(&self, id: &TaskId) -> Option<Arc<Record>> {
        self.tasks().get(id).cloned()
    }

    /// Keeps `record`, as stored, as the latest version of its task. A
    /// finished task is forgotten instead (it changes no more, and would
    /// take the place of a running one), as is one too large.
    pub fn remember(&self, record: &Record) {
        let task = record.task();
        let mut tasks = self.tasks();
        if record.json().len() > MAX_TASK_BYTES || task.is_terminal() {
            tasks.remove(&task.id);
            return;
        }
        if tasks.len() >= MAX_TASKS
            && !tasks.contains_key(&task.id)
            && let Some(evicted) = tasks.keys().next().cloned()
        {
            tasks.remove(&evicted);
        }
        tasks.insert(task.id.clone(), Arc::new(record.clone()));
    }

    /// Forgets task `id`.
    pub fn forget(&self, id: &TaskId) {
        self.tasks().remove(id);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.tasks().len()
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_TASK_BYTES, MAX_TASKS, Recent};
    use crate::backend::Record;
    use crate::id::TaskId;
    use crate::task::Task;

    /// `task` as stored in `len` bytes.
    fn stored(task: &Task, len: usize) -> Record {
        Record::new(task.clone(), vec![b' '; len])
    }

    fn task(n: usize) -> Task {
        serde_json::from_value(serde_json::json!({
            "taskId": format!("t{n}"), "status": "working",
            "createdAt": "2026-01-01T00:00:00Z", "lastUpdatedAt": "2026-01-01T00:00:00Z",
            "ttlMs": null, "revision": 1,
        }))
        .unwrap()
    }

    #[test]
    fn the_guesses_stay_bounded_and_forget_what_is_finished_or_too_large() {
        let recent = Recent::default();
        for n in 0..MAX_TASKS * 2 {
            recent.remember(&stored(&task(n), 100));
            assert!(recent.len() <= MAX_TASKS);
        }
        let last = task(MAX_TASKS * 2 - 1);
        assert_eq!(
            recent.get(&last.id).map(|r| r.task().clone()),
            Some(last.clone())
        );
        let mut finished = last.clone();
        finished.status = crate::task::TaskStatus::Completed;
        recent.remember(&stored(&finished, 100));
        assert!(recent.get(&last.id).is_none());
        recent.remember(&stored(&last, 100));
        recent.remember(&stored(&last, MAX_TASK_BYTES + 1));
        assert!(recent.get(&last.id).is_none());
        let kept = task(MAX_TASKS * 2 - 2);
        recent.forget(&kept.id);
        assert!(recent.get(&TaskId::parse("t-none").unwrap()).is_none());
        assert!(recent.get(&kept.id).is_none());
    }
}
