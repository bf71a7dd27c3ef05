//! The in-process backend.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::events::TaskEventKind;
use crate::id::TaskId;
use crate::lease::{self, Lease};
use crate::limits::Limits;
use crate::sink::{EventSink, Notifier};
use crate::store::{ListQuery, Page, TaskStore, Transition};
use crate::task::{NewTask, Outcome, Task, TaskUpdate};

/// A task store in this process's memory, with the same semantics as
/// [`FileStore`](crate::FileStore) but nothing durable and nothing shared
/// between processes. For tests, and hosts that need no persistence.
#[derive(Debug)]
pub struct MemoryStore {
    tasks: Mutex<Tasks>,
    clock: Arc<dyn Clock>,
    limits: Limits,
    lease: Lease,
    notifier: Notifier,
}

/// The tasks, running and finished apart, as `FileStore` keeps them in
/// `active/` and `done/`: creating (which counts running tasks against the
/// cap), "list active" and reaping cost O(running tasks), not O(history).
#[derive(Debug, Default)]
struct Tasks {
    active: HashMap<TaskId, Task>,
    done: HashMap<TaskId, Task>,
}

impl Tasks {
    fn get(&self, id: &TaskId) -> Option<&Task> {
        self.active.get(id).or_else(|| self.done.get(id))
    }

    /// Stores `task` where its status says, replacing any earlier version.
    fn put(&mut self, task: Task) {
        let (into, other) = if task.is_terminal() {
            (&mut self.done, &mut self.active)
        } else {
            (&mut self.active, &mut self.done)
        };
        other.remove(&task.id);
        into.insert(task.id.clone(), task);
    }

    fn remove(&mut self, id: &TaskId) -> Option<Task> {
        self.active.remove(id).or_else(|| self.done.remove(id))
    }

    fn all(&self) -> impl Iterator<Item = &Task> {
        self.active.values().chain(self.done.values())
    }
}

impl Default for MemoryStore {
    fn default() -> MemoryStore {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// An empty store on the system clock, with the default limits.
    pub fn new() -> MemoryStore {
        MemoryStore::with_clock(Arc::new(SystemClock))
    }

    /// An empty store reading time from `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> MemoryStore {
        MemoryStore {
            tasks: Mutex::new(Tasks::default()),
            clock,
            limits: Limits::default(),
            lease: Lease::default(),
            notifier: Notifier::default(),
        }
    }

    /// Sets the cap on active tasks (default 10,000).
    pub fn with_max_active(mut self, max_active: usize) -> MemoryStore {
        self.limits.max_active = max_active;
        self
    }

    /// Sets the cap on one task's encoded size (default 16 MiB).
    pub fn with_max_payload_bytes(mut self, max_payload_bytes: usize) -> MemoryStore {
        self.limits.max_payload_bytes = max_payload_bytes;
        self
    }

    /// Sets this store's instance id (default: a random UUID).
    pub fn with_instance_id(mut self, instance_id: impl Into<String>) -> MemoryStore {
        self.lease.instance_id = instance_id.into();
        self
    }

    /// Sets how long a lease lasts (default 30 s).
    pub fn with_lease(mut self, lease: std::time::Duration) -> MemoryStore {
        self.lease.duration = lease;
        self
    }

    /// Sends every task event (created, updated, completed, failed,
    /// cancelled, expired, deleted, reaped) to `sink`, outside the store's
    /// lock; a panicking sink is contained and counted.
    pub fn with_sink(mut self, sink: Arc<dyn EventSink>) -> MemoryStore {
        self.notifier = Notifier::new(sink);
        self
    }

    /// How many times the sink panicked (each time the event was dropped).
    pub fn sink_panics(&self) -> u64 {
        self.notifier.panics()
    }

    fn lock(&self) -> MutexGuard<'_, Tasks> {
        // Every mutation below validates before it writes, so a panic cannot
        // leave a half-applied task behind the poisoned lock.
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `change` on the live task `id`, unless it is terminal.
    fn mutate(
        &self,
        id: &TaskId,
        change: impl FnOnce(&mut Task, time::OffsetDateTime),
    ) -> Result<Transition> {
        let now = self.clock.now();
        let mut tasks = self.lock();
        let current = match tasks.get(id) {
            Some(t) if !t.is_expired_at(now) => t,
            _ => return Err(Error::NotFound { id: id.clone() }),
        };
        if current.is_terminal() {
            return Ok(Transition::AlreadyTerminal(current.clone()));
        }
        let mut next = current.clone();
        change(&mut next, now);
        self.lease.after_write(&mut next, now);
        self.limits.check(&next)?;
        tasks.put(next.clone());
        Ok(Transition::Applied(next))
    }
}

impl TaskStore for MemoryStore {
    fn create(&self, new: NewTask) -> Result<Task> {
        let now = self.clock.now();
        let id = new.id.clone().unwrap_or_else(TaskId::new);
        let mut task = new.into_task(id.clone(), now);
        self.lease.claim(&mut task, now);
        self.limits.check(&task)?;
        let mut tasks = self.lock();
        if tasks.get(&id).is_some_and(|t| !t.is_expired_at(now)) {
            return Err(Error::AlreadyExists { id });
        }
        let active = tasks
            .active
            .values()
            .filter(|t| !t.is_expired_at(now))
            .count();
        if active >= self.limits.max_active {
            return Err(Error::TooManyActive {
                id,
                limit: self.limits.max_active,
            });
        }
        tasks.put(task.clone());
        drop(tasks);
        self.notifier.task(TaskEventKind::Created, &task);
        Ok(task)
    }

    fn get(&self, id: &TaskId) -> Result<Option<Task>> {
        let now = self.clock.now();
        Ok(self
            .lock()
            .get(id)
            .filter(|t| !t.is_expired_at(now))
            .cloned())
    }

    fn update(&self, id: &TaskId, update: TaskUpdate) -> Result<Transition> {
        if let Some(status) = update.terminal_status() {
            return Err(Error::TerminalStatusInUpdate {
                id: id.clone(),
                status,
            });
        }
        let transition = self.mutate(id, |task, now| update.apply(task, now))?;
        if let Transition::Applied(task) = &transition {
            self.notifier
                .task(TaskEventKind::for_status(task.status), task);
        }
        Ok(transition)
    }

    fn finish(&self, id: &TaskId, outcome: Outcome) -> Result<Transition> {
        let transition = self.mutate(id, |task, now| outcome.apply(task, now))?;
        if let Transition::Applied(task) = &transition {
            self.notifier
                .task(TaskEventKind::for_status(task.status), task);
        }
        Ok(transition)
    }

    fn list(&self, query: &ListQuery) -> Result<Page> {
        query.cursor()?;
        let now = self.clock.now();
        let tasks = self.lock();
        let active = tasks.active.values();
        let done = query.wants_terminal().then(|| tasks.done.values());
        let tasks = active
            .chain(done.into_iter().flatten())
            .filter(|t| query.wants(t.status))
            .cloned()
            .collect();
        query.page(tasks, now)
    }

    fn delete(&self, id: &TaskId) -> Result<bool> {
        let now = self.clock.now();
        let removed = self.lock().remove(id).filter(|t| !t.is_expired_at(now));
        if let Some(task) = &removed {
            self.notifier.task(TaskEventKind::Deleted, task);
        }
        Ok(removed.is_some())
    }

    fn sweep_expired(&self) -> Result<usize> {
        let now = self.clock.now();
        let mut tasks = self.lock();
        let expired: Vec<TaskId> = tasks
            .all()
            .filter(|t| t.is_expired_at(now))
            .map(|t| t.id.clone())
            .collect();
        let expired: Vec<Task> = expired.iter().filter_map(|id| tasks.remove(id)).collect();
        drop(tasks);
        for task in &expired {
            self.notifier.task(TaskEventKind::Expired, task);
        }
        Ok(expired.len())
    }

    fn instance_id(&self) -> &str {
        &self.lease.instance_id
    }

    fn renew_lease(&self, id: &TaskId) -> Result<Transition> {
        let now = self.clock.now();
        let mut tasks = self.lock();
        if let Some(task) = tasks.done.get(id).filter(|t| !t.is_expired_at(now)) {
            return Ok(Transition::AlreadyTerminal(task.clone()));
        }
        let task = match tasks.active.get_mut(id) {
            Some(t) if !t.is_expired_at(now) => t,
            _ => return Err(Error::NotFound { id: id.clone() }),
        };
        if !self.lease.owns(task) {
            return Err(Error::NotOwner {
                id: id.clone(),
                owner: task.owner.clone(),
            });
        }
        self.lease.renew(task, now);
        Ok(Transition::Applied(task.clone()))
    }

    fn reap_orphans(&self) -> Result<Vec<Task>> {
        let now = self.clock.now();
        let mut reaped = Vec::new();
        let mut tasks = self.lock();
        for task in tasks.active.values() {
            if task.is_expired_at(now) || !lease::is_orphan(task, now) {
                continue;
            }
            let mut task = task.clone();
            let error = lease::orphan_error(&task, &self.lease.instance_id);
            Outcome::Failed(error).apply(&mut task, now);
            self.lease.after_write(&mut task, now);
            reaped.push(task);
        }
        for task in &reaped {
            tasks.put(task.clone());
        }
        drop(tasks);
        reaped.sort_by(Task::listing_order);
        for task in &reaped {
            self.notifier.task(TaskEventKind::Reaped, task);
        }
        Ok(reaped)
    }
}
