//! Resumable tasks: claims, checkpoints, fencing, and input across owners.
//! Two `FileStore` handles over one directory, on one `ManualClock`, stand
//! for two instances; the first one's background loop is too slow to
//! notice anything, as if it were stopped.
//!
//! This module holds the instances and the wrapped store the tests share;
//! the tests are in [`owners`] (a dead owner's task claimed and resumed,
//! the old owner fenced, input and cancels across owners), [`renewal`]
//! (a claimed run's lease renewed however the claim went) and [`polling`]
//! (orphans found by a poll, and clocks set right).

mod owners;
mod polling;
mod renewal;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::fast;
use crate::mcp::{DurableTaskManager, ManagerOptions, TaskContext};
use crate::{Clock, FileStore, ManualClock, TaskId, TaskStore};

const LEASE: Duration = Duration::from_secs(10);

fn open(dir: &Path, clock: &Arc<ManualClock>, name: &str) -> Arc<FileStore> {
    Arc::new(
        FileStore::builder(dir)
            .instance_id(name)
            .clock(clock.clone() as Arc<dyn Clock>)
            .lease(LEASE)
            .open()
            .unwrap(),
    )
}

/// An instance whose loop never comes round: it neither renews nor
/// watches, as if its process were stopped.
fn frozen(dir: &Path, clock: &Arc<ManualClock>, name: &str) -> DurableTaskManager<FileStore> {
    let hour = Duration::from_secs(3_600);
    DurableTaskManager::with_options(
        open(dir, clock, name),
        ManagerOptions::new()
            .watch_interval(hour)
            .renew_interval(hour)
            .reap_interval(hour),
    )
}

fn live(dir: &Path, clock: &Arc<ManualClock>, name: &str) -> DurableTaskManager<FileStore> {
    DurableTaskManager::with_options(
        open(dir, clock, name),
        fast().reap_interval(Duration::from_millis(20)),
    )
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(OffsetDateTime::now_utc()))
}

fn stored<S: TaskStore>(m: &DurableTaskManager<S>, id: &str) -> crate::Task {
    m.store().get(&TaskId::parse(id).unwrap()).unwrap().unwrap()
}

/// What a resumed run saw: its epoch, attempt, input and checkpoint.
fn seen(ctx: &TaskContext) -> Value {
    json!({
        "epoch": ctx.epoch(),
        "attempt": ctx.attempt(),
        "resumed": ctx.is_resumed(),
        "kind": ctx.kind(),
        "input": ctx.input(),
        "checkpoint": ctx.last_checkpoint(),
    })
}

/// A host's wrapper over a store: forwards every call, and counts the
/// sweeps and claims; `lease` forwarded only if `says_lease` (the default
/// says nothing); with `claims_nothing`, a claim claims nothing (as one
/// whose write fails for each orphan, every time); with `claim_takes`, the
/// first claim that claims a task moves that clock on by that much (a pass
/// that took that long after it read the time its leases count from), and
/// keeps the tasks as that claim returned them in `slow_claimed`; with
/// `claim_held` set, the next claim says it has begun and waits to be let
/// go (a claim pass under way, held there by the test).
struct Wrapped<S> {
    inner: S,
    says_lease: bool,
    sweeps: std::sync::atomic::AtomicUsize,
    claims: std::sync::atomic::AtomicUsize,
    claims_nothing: std::sync::atomic::AtomicBool,
    claim_takes: std::sync::Mutex<Option<(Arc<ManualClock>, Duration)>>,
    slow_claimed: std::sync::Mutex<Vec<crate::Task>>,
    /// `reap_task` calls.
    task_reaps: std::sync::atomic::AtomicUsize,
    claim_held: std::sync::Mutex<Option<Held>>,
}

/// A claim held: it sends on `begun`, then waits for `go`.
struct Held {
    begun: std::sync::mpsc::Sender<()>,
    go: std::sync::mpsc::Receiver<()>,
}

impl<S> Wrapped<S> {
    fn new(inner: S, says_lease: bool) -> Wrapped<S> {
        Wrapped {
            inner,
            says_lease,
            sweeps: std::sync::atomic::AtomicUsize::new(0),
            claims: std::sync::atomic::AtomicUsize::new(0),
            claims_nothing: std::sync::atomic::AtomicBool::new(false),
            claim_takes: std::sync::Mutex::new(None),
            slow_claimed: std::sync::Mutex::new(Vec::new()),
            task_reaps: std::sync::atomic::AtomicUsize::new(0),
            claim_held: std::sync::Mutex::new(None),
        }
    }
}

impl<S: TaskStore> TaskStore for Wrapped<S> {
    fn create(&self, new: crate::NewTask) -> crate::Result<crate::Task> {
        self.inner.create(new)
    }
    fn get(&self, id: &TaskId) -> crate::Result<Option<crate::Task>> {
        self.inner.get(id)
    }
    fn update(&self, id: &TaskId, update: crate::TaskUpdate) -> crate::Result<crate::Transition> {
        self.inner.update(id, update)
    }
    fn finish(&self, id: &TaskId, outcome: crate::Outcome) -> crate::Result<crate::Transition> {
        self.inner.finish(id, outcome)
    }
    fn finish_fenced(
        &self,
        id: &TaskId,
        outcome: crate::Outcome,
        epoch: u64,
    ) -> crate::Result<crate::Transition> {
        self.inner.finish_fenced(id, outcome, epoch)
    }
    fn list(&self, query: &crate::ListQuery) -> crate::Result<crate::Page> {
        self.inner.list(query)
    }
    fn delete(&self, id: &TaskId) -> crate::Result<bool> {
        self.inner.delete(id)
    }
    fn sweep(&self) -> crate::Result<crate::Swept> {
        self.sweeps
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.sweep()
    }
    fn instance_id(&self) -> &str {
        self.inner.instance_id()
    }
    fn now(&self) -> OffsetDateTime {
        self.inner.now()
    }
    fn renew_lease(&self, id: &TaskId) -> crate::Result<crate::Transition> {
        self.inner.renew_lease(id)
    }
    fn release(&self, id: &TaskId, epoch: u64) -> crate::Result<crate::Transition> {
        self.inner.release(id, epoch)
    }
    fn lease_now(&self) -> OffsetDateTime {
        self.inner.lease_now()
    }
    fn lease_from(&self) -> OffsetDateTime {
        self.inner.lease_from()
    }
    fn reap(&self) -> crate::Result<crate::Reaped> {
        self.inner.reap()
    }
    fn reap_task(&self, id: &TaskId) -> crate::Result<Option<crate::Task>> {
        self.task_reaps
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.reap_task(id)
    }
    fn lease(&self) -> Option<Duration> {
        self.says_lease.then(|| self.inner.lease()).flatten()
    }
    fn claim(&self, kinds: &[&str]) -> crate::Result<crate::Claimed> {
        self.claims
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let held = self.claim_held.lock().unwrap().take();
        if let Some(held) = held {
            held.begun.send(()).unwrap();
            held.go.recv().unwrap();
        }
        if self
            .claims_nothing
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Ok(crate::Claimed::default());
        }
        let claimed = self.inner.claim(kinds)?;
        if !claimed.tasks.is_empty()
            && let Some((clock, takes)) = self.claim_takes.lock().unwrap().take()
        {
            clock.advance(takes);
            *self.slow_claimed.lock().unwrap() = claimed.tasks.clone();
        }
        Ok(claimed)
    }
}
