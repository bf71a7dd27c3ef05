//! A peer's write landing between a run's read of its input state and the
//! run's own write: the run's write must not undo it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::{elicitation, fast, settled};
use crate::backend::{Backend, Insert, Record, Scan, Scanned, Swap};
use crate::mcp::protocol::{cancel_requested, cancel_update};
use crate::mcp::{DurableTaskManager, TaskExit, TaskOptions};
use crate::{MemoryBackend, Store, Task, TaskId, TaskStatus, TaskStore};

/// A shared `MemoryBackend` that, just before the first write asking
/// under `key`, lets a peer instance's `tasks/cancel` land (through a store
/// of its own over the same tasks), and records every task it writes.
struct CancelFirst {
    inner: Arc<MemoryBackend>,
    peer: Store<Arc<MemoryBackend>>,
    key: &'static str,
    fired: AtomicBool,
    written: Mutex<Vec<Task>>,
}

impl CancelFirst {
    fn asks(task: &Task, key: &str) -> bool {
        matches!(&task.input_requests, Some(Value::Object(o)) if o.contains_key(key))
    }
}

impl Backend for CancelFirst {
    fn load(&self, id: &TaskId) -> crate::Result<Option<Task>> {
        self.inner.load(id)
    }
    fn insert(&self, record: &Record, max_active: usize) -> crate::Result<Insert> {
        self.inner.insert(record, max_active)
    }
    fn replace(&self, current: &Task, next: &Record) -> crate::Result<Swap> {
        if Self::asks(next.task(), self.key) && !self.fired.swap(true, Ordering::SeqCst) {
            let stored = self.inner.load(&current.id)?.expect("the task is stored");
            let cancelled = self.peer.update(&current.id, cancel_update(&stored))?;
            assert!(cancelled.is_applied(), "{cancelled:?}");
            self.written.lock().unwrap().push(cancelled.task().clone());
        }
        let swap = self.inner.replace(current, next)?;
        if swap == Swap::Done {
            self.written.lock().unwrap().push(next.task().clone());
        }
        Ok(swap)
    }
    fn remove(&self, current: &Task) -> crate::Result<Swap> {
        self.inner.remove(current)
    }
    fn scan(&self, scan: &Scan) -> crate::Result<Scanned> {
        self.inner.scan(scan)
    }
}

/// Two input requests of one run, the second asked just as a cancel from
/// another instance lands: the first request, which the cancel withdrew,
/// is never put back into `inputRequests` (a client would see its key
/// asked twice), and the run ends cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_landing_as_a_run_asks_again_is_never_undone() {
    let inner = Arc::new(MemoryBackend::new());
    let backend = Arc::new(CancelFirst {
        peer: Store::with_backend(Arc::clone(&inner))
            .instance_id("b")
            .build()
            .unwrap(),
        inner,
        key: "k2",
        fired: AtomicBool::new(false),
        written: Mutex::new(Vec::new()),
    });
    let store = Store::with_backend(Arc::clone(&backend))
        .instance_id("a")
        .build()
        .unwrap();
    let m = DurableTaskManager::with_options(Arc::new(store), fast());
    let seed = m
        .spawn(TaskOptions::new(), |ctx| {
            Box::pin(async move {
                let (first, second) = tokio::join!(
                    ctx.request_input("k1", elicitation("first?")),
                    ctx.request_input("k2", elicitation("second?")),
                );
                assert!(matches!(first, Err(TaskExit::Cancelled)), "{first:?}");
                assert!(matches!(second, Err(TaskExit::Cancelled)), "{second:?}");
                Err(TaskExit::Cancelled)
            })
        })
        .await
        .unwrap();
    assert_eq!(
        settled(&m, &seed.task_id).await.status(),
        rmcp::model::TaskStatus::Cancelled
    );
    assert!(
        backend.fired.load(Ordering::SeqCst),
        "the cancel never landed"
    );
    let written = backend.written.lock().unwrap();
    let cancel_at = written
        .iter()
        .position(cancel_requested)
        .expect("the cancel is among the writes");
    for task in &written[cancel_at..] {
        assert!(
            !(task.status == TaskStatus::InputRequired && CancelFirst::asks(task, "k1")),
            "a withdrawn request was put back after the cancel: {task:?}"
        );
    }
}
