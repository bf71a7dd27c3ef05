//! The store's change feed: each notice of a task an instance runs makes
//! the manager act on what the task has become, as a watch tick would.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::{eventually, text};
use crate::backend::{Backend, Insert, Record, Scan, Scanned, Swap};
use crate::mcp::{DurableTaskManager, ManagerOptions, TaskOptions};
use crate::{ChangeFeed, ChangeSource, Changes, MemoryBackend, Store, Task, TaskId, TaskStore};

/// The ids a [`Told`] store wrote and its feed has not named yet.
type Written = Arc<(Mutex<Vec<TaskId>>, Condvar)>;

/// A `MemoryBackend` whose change feed names every task written, as a
/// database's notifications do.
struct Told {
    inner: MemoryBackend,
    written: Written,
}

impl Told {
    fn new() -> Told {
        Told {
            inner: MemoryBackend::new(),
            written: Written::default(),
        }
    }

    /// Names `id` to the feed if `done`.
    fn tell(&self, id: &TaskId, done: bool) {
        if done {
            let (written, told) = &*self.written;
            written.lock().unwrap().push(id.clone());
            told.notify_all();
        }
    }
}

/// A subscription to a [`Told`] store's writes.
struct Listening(Written);

impl ChangeSource for Listening {
    fn wait(&mut self, timeout: Duration) -> Changes {
        let (written, told) = &*self.0;
        let (mut written, _) = told
            .wait_timeout_while(written.lock().unwrap(), timeout, |ids| ids.is_empty())
            .unwrap();
        Changes::Tasks(std::mem::take(&mut *written))
    }
}

impl Backend for Told {
    fn load(&self, id: &TaskId) -> crate::Result<Option<Task>> {
        self.inner.load(id)
    }
    fn insert(&self, record: &Record, max_active: usize) -> crate::Result<Insert> {
        let inserted = self.inner.insert(record, max_active)?;
        self.tell(&record.task().id, matches!(inserted, Insert::Done));
        Ok(inserted)
    }
    fn replace(&self, current: &Task, next: &Record) -> crate::Result<Swap> {
        let swap = self.inner.replace(current, next)?;
        self.tell(&current.id, matches!(swap, Swap::Done));
        Ok(swap)
    }
    fn remove(&self, current: &Task) -> crate::Result<Swap> {
        let swap = self.inner.remove(current)?;
        self.tell(&current.id, matches!(swap, Swap::Done));
        Ok(swap)
    }
    fn scan(&self, scan: &Scan) -> crate::Result<Scanned> {
        self.inner.scan(scan)
    }
    fn changes(&self) -> Option<ChangeFeed> {
        Some(ChangeFeed::new(Listening(Arc::clone(&self.written))))
    }
}

/// Set when dropped: when the operation holding it is stopped.
struct OnDrop(Arc<AtomicBool>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A task deleted by another instance (or process, or host) is gone: a
/// watch tick that reads it so stops its operation, since no one can see
/// an outcome any more. Its notice must do the same. (A look at a notice
/// acted only on a task it found: the operation of a task deleted ran on
/// until the next tick, which here is an hour away.)
#[tokio::test]
async fn a_notice_of_a_task_deleted_elsewhere_stops_its_operation() {
    let store = Arc::new(Store::with_backend(Told::new()).build().unwrap());
    // Only the feed can tell it: the watch ticks are an hour apart.
    let options = ManagerOptions::new().watch_interval(Duration::from_secs(3600));
    let m = DurableTaskManager::with_options(Arc::clone(&store), options);
    let stopped = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stopped);
    let seed = m
        .spawn(TaskOptions::new(), |_ctx| {
            Box::pin(async move {
                let _stopped = OnDrop(flag);
                std::future::pending::<()>().await;
                Ok(text("never"))
            })
        })
        .await
        .unwrap();
    let id = TaskId::parse(&seed.task_id).unwrap();
    assert!(store.delete(&id).unwrap());
    eventually(|| async { stopped.load(Ordering::SeqCst).then_some(()) }).await;
}
