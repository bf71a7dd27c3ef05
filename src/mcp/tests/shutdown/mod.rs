//! Graceful shutdown: the grace period, then a release for resumable tasks
//! and a `shutdown` failure for the others, within a bound that neither an
//! operation that cannot be stopped nor a store call that hangs stretches.
//!
//! This module holds the shutdown call and the gated store the tests share;
//! the tests are in [`grace`] (the grace, then release or failure; an
//! operation that cannot be stopped; a manager dropped without shutdown)
//! and [`hung`] (store calls that hang, a spawn or a claim cut short, a
//! peer's write that lands late).

mod grace;
mod hung;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::fast;
use crate::backend::{Backend, Insert, Record, Scan, Scanned, Swap};
use crate::mcp::{DurableTaskManager, ShutdownReport};
use crate::{MemoryBackend, Task, TaskId, TaskStore};

/// How long `shutdown` may take before the test counts as hung: it only
/// ever fails a test that would otherwise never end.
const HANG: Duration = Duration::from_secs(180);

async fn shut_down<S: TaskStore>(m: &DurableTaskManager<S>) -> ShutdownReport {
    tokio::time::timeout(HANG, m.shutdown())
        .await
        .expect("shutdown never returned")
}

/// Lets writes through while open; while shut, every write waits, as on a
/// store whose disk or network hangs.
#[derive(Default)]
struct Gate {
    shut: Mutex<bool>,
    opened: Condvar,
    waiting: AtomicUsize,
}

impl Gate {
    fn set(&self, shut: bool) {
        *self.shut.lock().unwrap() = shut;
        self.opened.notify_all();
    }

    fn pass(&self) {
        let mut shut = self.shut.lock().unwrap();
        if *shut {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            while *shut {
                shut = self.opened.wait(shut).unwrap();
            }
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Opens the gate when dropped: a failing test does not leave a blocking
/// thread waiting forever (the runtime waits for it as it shuts down).
struct OpenOnDrop(Arc<Gate>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// A `MemoryBackend` (which other handles may share) behind a [`Gate`]:
/// its writes, or (`sweeps`) the scans of a sweep alone; with `claims`,
/// a claim's writes (to a new epoch) go through.
struct Gated {
    inner: Arc<MemoryBackend>,
    gate: Arc<Gate>,
    sweeps: bool,
    claims: bool,
}

impl Gated {
    fn writes(inner: Arc<MemoryBackend>, gate: &Arc<Gate>) -> Gated {
        Gated {
            inner,
            gate: Arc::clone(gate),
            sweeps: false,
            claims: false,
        }
    }

    fn write(&self) {
        if !self.sweeps {
            self.gate.pass();
        }
    }
}

impl Backend for Gated {
    fn load(&self, id: &TaskId) -> crate::Result<Option<Task>> {
        self.inner.load(id)
    }
    fn insert(&self, record: &Record, max_active: usize) -> crate::Result<Insert> {
        self.write();
        self.inner.insert(record, max_active)
    }
    fn replace(&self, current: &Task, next: &Record) -> crate::Result<Swap> {
        if !(self.claims && next.task().epoch != current.epoch) {
            self.write();
        }
        self.inner.replace(current, next)
    }
    fn remove(&self, current: &Task) -> crate::Result<Swap> {
        self.write();
        self.inner.remove(current)
    }
    fn scan(&self, scan: &Scan) -> crate::Result<Scanned> {
        if self.sweeps && scan.expired_at.is_some() {
            self.gate.pass();
        }
        self.inner.scan(scan)
    }
}

/// A manager over `backend` whose writes wait while `gate` is shut, with a
/// short shutdown (a grace of 100 ms, 300 ms for its writes).
fn gated_manager(
    backend: Arc<MemoryBackend>,
    gate: &Arc<Gate>,
) -> DurableTaskManager<crate::Store<Gated>> {
    let store = crate::Store::with_backend(Gated::writes(backend, gate))
        .build()
        .unwrap();
    DurableTaskManager::with_options(
        Arc::new(store),
        fast()
            .shutdown_grace(Duration::from_millis(100))
            .shutdown_writes(Duration::from_millis(300)),
    )
}
