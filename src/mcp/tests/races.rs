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

/// A `MemoryBackend` whose first write recording an input response waits,
/// once it has begun, until the test lets it go on.
struct HeldAnswer {
    inner: MemoryBackend,
    /// Told when the held write has begun.
    begun: tokio::sync::Notify,
    /// Set by the test to let the held write go on.
    go: Mutex<bool>,
    wake: std::sync::Condvar,
    held: AtomicBool,
}

impl Backend for HeldAnswer {
    fn load(&self, id: &TaskId) -> crate::Result<Option<Task>> {
        self.inner.load(id)
    }
    fn insert(&self, record: &Record, max_active: usize) -> crate::Result<Insert> {
        self.inner.insert(record, max_active)
    }
    fn replace(&self, current: &Task, next: &Record) -> crate::Result<Swap> {
        let answers = next
            .task()
            .metadata
            .get(crate::mcp::INPUT_KEYS_KEY)
            .and_then(Value::as_object)
            .is_some_and(|keys| keys.values().any(|k| k.get("response").is_some()));
        if answers && !self.held.swap(true, Ordering::SeqCst) {
            self.begun.notify_one();
            let mut go = self.go.lock().unwrap();
            while !*go {
                go = self.wake.wait(go).unwrap();
            }
        }
        self.inner.replace(current, next)
    }
    fn remove(&self, current: &Task) -> crate::Result<Swap> {
        self.inner.remove(current)
    }
    fn scan(&self, scan: &Scan) -> crate::Result<Scanned> {
        self.inner.scan(scan)
    }
}

/// A `tasks/update` at the owner whose future is dropped (a client's
/// timeout) while its write of the answer is under way: the write lands,
/// and the waiting operation must still get the answer, from the next
/// look at the task (a watch tick every `watch`), or, with `retry`, from
/// the client's retried update. (The answer stayed recorded and
/// undelivered, and the task `working` for ever.)
async fn an_update_dropped_midway(retry: bool, watch: std::time::Duration) {
    let backend = Arc::new(HeldAnswer {
        inner: MemoryBackend::new(),
        begun: tokio::sync::Notify::new(),
        go: Mutex::new(false),
        wake: std::sync::Condvar::new(),
        held: AtomicBool::new(false),
    });
    let store = Store::with_backend(Arc::clone(&backend)).build().unwrap();
    let m = DurableTaskManager::with_options(Arc::new(store), fast().watch_interval(watch));
    let seed = m
        .spawn(TaskOptions::new().with_ttl_ms(None), |ctx| {
            Box::pin(async move {
                let answer = ctx.request_input("k", elicitation("q?")).await?;
                Ok(super::text(&answer["v"].to_string()))
            })
        })
        .await
        .unwrap();
    let id = seed.task_id.clone();
    super::until_input_required(&m, &id).await;
    let answer = serde_json::json!({"v": 7});
    tokio::select! {
        _ = m.update_task(&id, [("k".to_owned(), answer.clone())]) => {
            panic!("the update finished while its write was held")
        }
        () = backend.begun.notified() => {}
    }
    // The update's future is gone; its write goes on and lands.
    *backend.go.lock().unwrap() = true;
    backend.wake.notify_all();
    super::eventually(|| async {
        let task = m
            .store()
            .get(&TaskId::parse(&id).unwrap())
            .unwrap()
            .unwrap();
        let keys = &task.metadata[crate::mcp::INPUT_KEYS_KEY];
        keys["k"].get("response").map(|_| ())
    })
    .await;
    if retry {
        // The client tries again, as it would after its timeout.
        m.update_task(&id, [("k".to_owned(), answer)])
            .await
            .unwrap();
    }
    let rmcp::model::TaskPayload::Completed { result } = settled(&m, &id).await.payload else {
        panic!("not completed")
    };
    assert_eq!(result["content"][0]["text"], "7");
}

/// The answer reaches the operation at the next watch tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_recorded_by_an_update_dropped_midway_reaches_the_operation_at_the_next_look() {
    an_update_dropped_midway(false, std::time::Duration::from_millis(20)).await;
}

/// With no watch tick to come (an hour apart), the client's retried update
/// delivers it: its write is refused as changed, and the stored state it
/// then reads holds the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_recorded_by_an_update_dropped_midway_reaches_the_operation_through_a_retry() {
    an_update_dropped_midway(true, std::time::Duration::from_secs(3600)).await;
}
