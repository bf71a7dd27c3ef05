//! The in-process backend.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::backend::{
    Backend, Change, Decide, Insert, Modified, Position, Record, Scan, Scanned, Scope, Swap,
    is_current,
};
use crate::error::Result;
use crate::id::TaskId;
use crate::rules::{Store, StoreBuilder};
use crate::task::Task;

/// A task store in this process's memory, with the same rules as
/// [`FileStore`](crate::FileStore) but nothing durable and nothing shared
/// between processes. For tests, and hosts that need no persistence.
///
/// Handles made over clones of one [`MemoryBackend`] share its tasks:
/// `Store::with_backend(store.backend().clone()).instance_id("b").build()`.
pub type MemoryStore = Store<MemoryBackend>;

/// The tasks of a [`MemoryStore`], in this process's memory. Clones share
/// the same tasks.
#[derive(Clone, Default)]
pub struct MemoryBackend {
    tasks: Arc<Mutex<Tasks>>,
}

impl fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tasks = self.lock();
        f.debug_struct("MemoryBackend")
            .field("tasks", &tasks.by_id.len())
            .field("active", &tasks.active.len())
            .finish()
    }
}

/// The tasks by id, and two indexes in listing order: running tasks, and
/// all. Creating (which counts running tasks against the cap) costs
/// O(log n); a page of running tasks costs the page, never history.
#[derive(Debug, Default)]
struct Tasks {
    by_id: HashMap<TaskId, Task>,
    active: BTreeSet<Position>,
    all: BTreeSet<Position>,
}

impl Tasks {
    fn put(&mut self, task: Task) {
        if let Some(old) = self.by_id.remove(&task.id) {
            self.unindex(&old);
        }
        let position = Position::of(&task);
        if !task.is_terminal() {
            self.active.insert(position.clone());
        }
        self.all.insert(position);
        self.by_id.insert(task.id.clone(), task);
    }

    fn take(&mut self, id: &TaskId) -> Option<Task> {
        let task = self.by_id.remove(id)?;
        self.unindex(&task);
        Some(task)
    }

    fn unindex(&mut self, task: &Task) {
        let position = Position::of(task);
        self.active.remove(&position);
        self.all.remove(&position);
    }

    /// Applies `change` to the stored `task`.
    fn apply(&mut self, task: Task, change: Change) -> Modified {
        match change {
            Change::Keep => Modified::Kept(task),
            Change::Replace(next) => {
                let next = next.into_task();
                self.put(next.clone());
                Modified::Replaced(next)
            }
            Change::Remove => {
                self.take(&task.id);
                Modified::Removed(task)
            }
        }
    }
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> MemoryBackend {
        MemoryBackend::default()
    }

    fn lock(&self) -> MutexGuard<'_, Tasks> {
        // Every change below is made whole once decided, so a panic cannot
        // leave a half-applied task behind the poisoned lock.
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store<MemoryBackend> {
    /// An empty store on the system clock, with the default settings.
    pub fn new() -> MemoryStore {
        MemoryStore::builder()
            .build()
            .expect("the default settings are valid")
    }

    /// A builder for an empty store.
    pub fn builder() -> StoreBuilder<MemoryBackend> {
        Store::with_backend(MemoryBackend::new())
    }
}

impl Default for Store<MemoryBackend> {
    fn default() -> MemoryStore {
        MemoryStore::new()
    }
}

impl Backend for MemoryBackend {
    fn load(&self, id: &TaskId) -> Result<Option<Task>> {
        Ok(self.lock().by_id.get(id).cloned())
    }

    /// Always: a load waits at most for another thread's change in memory.
    fn try_load(&self, id: &TaskId) -> Option<Option<Task>> {
        Some(self.lock().by_id.get(id).cloned())
    }

    fn insert(&self, record: &Record, max_active: usize) -> Result<Insert> {
        let mut tasks = self.lock();
        let task = record.task();
        if let Some(existing) = tasks.by_id.get(&task.id) {
            return Ok(Insert::Exists(existing.clone()));
        }
        if !task.is_terminal() && tasks.active.len() >= max_active {
            return Ok(Insert::Full);
        }
        tasks.put(task.clone());
        Ok(Insert::Done)
    }

    fn replace(&self, current: &Task, next: &Record) -> Result<Swap> {
        let mut tasks = self.lock();
        match tasks.by_id.get(&current.id) {
            Some(stored) if is_current(stored, current) => {
                tasks.put(next.task().clone());
                Ok(Swap::Done)
            }
            stored => Ok(Swap::Changed(stored.cloned())),
        }
    }

    fn remove(&self, current: &Task) -> Result<Swap> {
        let mut tasks = self.lock();
        match tasks.by_id.get(&current.id) {
            Some(stored) if is_current(stored, current) => {
                tasks.take(&current.id);
                Ok(Swap::Done)
            }
            stored => Ok(Swap::Changed(stored.cloned())),
        }
    }

    fn scan(&self, scan: &Scan) -> Result<Scanned> {
        let tasks = self.lock();
        let index = match scan.scope {
            Scope::Active => &tasks.active,
            _ => &tasks.all,
        };
        let from = match &scan.after {
            Some(after) => std::ops::Bound::Excluded(after),
            None => std::ops::Bound::Unbounded,
        };
        let found = index
            .range((from, std::ops::Bound::Unbounded))
            .filter_map(|position| tasks.by_id.get(&position.id))
            .filter(|task| scan.matches(task))
            .take(scan.limit)
            .map(|task| scan.shaped(task))
            .collect();
        Ok(Scanned::new(found, Vec::new()))
    }

    fn modify(&self, id: &TaskId, decide: &mut Decide<'_>) -> Result<Modified> {
        let mut tasks = self.lock();
        let Some(task) = tasks.by_id.get(id).cloned() else {
            return Ok(Modified::Missing);
        };
        let change = decide(&task)?;
        Ok(tasks.apply(task, change))
    }
}
