//! The store's change feed: each notice of a task an instance runs makes
//! the manager act on what the task has become, as a watch tick would, and
//! a feed that may have missed notices makes it read every task again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::{eventually, fast, text};
use crate::backend::{Backend, Insert, Record, Scan, Scanned, Swap};
use crate::mcp::{DurableTaskManager, ManagerOptions, TaskExit, TaskOptions};
use crate::{ChangeFeed, ChangeSource, Changes, MemoryBackend, Store, Task, TaskId, TaskStore};

/// A `MemoryBackend` whose change feed names every task written, as a
/// database's notifications do, unless it is told to lose them; and whose
/// next tick's read of one chosen task, once armed, is held after it
/// read.
struct Told {
    inner: MemoryBackend,
    tell: Arc<Tell>,
}

/// What a [`Told`] store and the test share.
#[derive(Default)]
struct Tell {
    state: Mutex<TellState>,
    changed: Condvar,
}

/// The feed's notices not taken yet, and the held read.
#[derive(Default)]
struct TellState {
    ids: Vec<TaskId>,
    /// Notices lost: the next wait says so.
    missed: bool,
    /// Writes notify no one (their notices are lost).
    losing: bool,
    /// The task whose next read is held.
    armed: Option<TaskId>,
    /// A read is held.
    holding: bool,
    /// Held reads may go on.
    let_go: bool,
    /// Each `load_all` made since the feed last said it missed notices:
    /// the ids it read.
    read_after_missed: Option<Vec<Vec<TaskId>>>,
}

impl Tell {
    fn state(&self) -> std::sync::MutexGuard<'_, TellState> {
        self.state.lock().unwrap()
    }

    /// Names `id` to the feed if `done` (unless notices are being lost).
    fn written(&self, id: &TaskId, done: bool) {
        let mut state = self.state();
        if done && !state.losing {
            state.ids.push(id.clone());
            self.changed.notify_all();
        }
    }

    /// The feed's next wait says notices may have been missed.
    fn lose(&self) {
        let mut state = self.state();
        state.missed = true;
        state.read_after_missed = Some(Vec::new());
        self.changed.notify_all();
    }

    fn let_go(&self) {
        self.state().let_go = true;
        self.changed.notify_all();
    }
}

/// A subscription to a [`Told`] store's writes.
struct Listening(Arc<Tell>);

impl ChangeSource for Listening {
    fn wait(&mut self, timeout: Duration) -> Changes {
        let tell = &self.0;
        let (mut state, _) = tell
            .changed
            .wait_timeout_while(tell.state(), timeout, |s| s.ids.is_empty() && !s.missed)
            .unwrap();
        if std::mem::take(&mut state.missed) {
            state.ids.clear();
            return Changes::Missed;
        }
        Changes::Tasks(std::mem::take(&mut state.ids))
    }
}

impl Told {
    fn new() -> (Told, Arc<Tell>) {
        let tell = Arc::new(Tell::default());
        let told = Told {
            inner: MemoryBackend::new(),
            tell: Arc::clone(&tell),
        };
        (told, tell)
    }
}

impl Backend for Told {
    fn load(&self, id: &TaskId) -> crate::Result<Option<Task>> {
        self.inner.load(id)
    }
    /// A tick's read (a look at one task reads it with `load`).
    fn load_all(&self, ids: &[TaskId]) -> Vec<crate::Result<Option<Task>>> {
        let found = self.inner.load_all(ids);
        let mut state = self.tell.state();
        if let Some(reads) = &mut state.read_after_missed {
            reads.push(ids.to_vec());
        }
        if state.armed.as_ref().is_some_and(|id| ids.contains(id)) {
            state.armed = None;
            state.holding = true;
            drop(self.tell.changed.wait_while(state, |s| !s.let_go).unwrap());
        }
        found
    }
    fn insert(&self, record: &Record, max_active: usize) -> crate::Result<Insert> {
        let inserted = self.inner.insert(record, max_active)?;
        self.tell
            .written(&record.task().id, matches!(inserted, Insert::Done));
        Ok(inserted)
    }
    fn replace(&self, current: &Task, next: &Record) -> crate::Result<Swap> {
        let swap = self.inner.replace(current, next)?;
        self.tell.written(&current.id, matches!(swap, Swap::Done));
        Ok(swap)
    }
    fn remove(&self, current: &Task) -> crate::Result<Swap> {
        let swap = self.inner.remove(current)?;
        self.tell.written(&current.id, matches!(swap, Swap::Done));
        Ok(swap)
    }
    fn scan(&self, scan: &Scan) -> crate::Result<Scanned> {
        self.inner.scan(scan)
    }
    fn changes(&self) -> Option<ChangeFeed> {
        Some(ChangeFeed::new(Listening(Arc::clone(&self.tell))))
    }
}

/// Lets the held reads of a [`Told`] store go on when dropped (a failed
/// test included: the runtime waits for them as it shuts down).
struct LetGo(Arc<Tell>);

impl Drop for LetGo {
    fn drop(&mut self) {
        self.0.let_go();
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
    let (told, _tell) = Told::new();
    let store = Arc::new(Store::with_backend(told).build().unwrap());
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

/// A feed that may have missed notices (a `PgStore` feed whose connection
/// was lost) makes the manager read every task it runs again, a task
/// whose read was under way then included: that read may have been made
/// before the write whose notice was lost. (The manager's watch passed
/// over a task with a look under way, which here had read the task
/// before another instance cancelled it, and acted on that: the cancel
/// went unseen while the feed and the ticks were quiet.)
#[tokio::test]
async fn a_missed_notice_reads_again_a_task_whose_read_was_under_way() {
    let (told, tell) = Told::new();
    let store = Arc::new(Store::with_backend(told).build().unwrap());
    let m = DurableTaskManager::with_options(Arc::clone(&store), fast());
    let cancelled = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cancelled);
    let seed = m
        .spawn(TaskOptions::new(), |ctx| {
            Box::pin(async move {
                ctx.cancelled().await;
                flag.store(true, Ordering::SeqCst);
                Err(TaskExit::Cancelled)
            })
        })
        .await
        .unwrap();
    let id = TaskId::parse(&seed.task_id).unwrap();
    // A tick's read of the task reads it, and is held before it answers
    // (until the test ends): the ticks after it leave the task to it.
    let _let_go = LetGo(Arc::clone(&tell));
    tell.state().armed = Some(id.clone());
    eventually(|| async { tell.state().holding.then_some(()) }).await;
    // Another instance cancels the task; its notice is lost.
    tell.state().losing = true;
    assert!(store.cancel(&id, None).unwrap().is_applied());
    tell.lose();
    eventually(|| async { cancelled.load(Ordering::SeqCst).then_some(()) }).await;
}

/// After a feed that may have missed notices, the manager reads every task
/// it runs again in one store call (`get_all`: one statement for a
/// `PgStore`), not one call a task, each waiting for the one before. (It
/// read them one at a time.)
#[tokio::test]
async fn a_missed_notice_reads_every_run_in_one_call() {
    let (told, tell) = Told::new();
    let store = Arc::new(Store::with_backend(told).build().unwrap());
    // Only the feed reads: the watch ticks are an hour apart.
    let options = ManagerOptions::new().watch_interval(Duration::from_secs(3600));
    let m = DurableTaskManager::with_options(Arc::clone(&store), options);
    // Every notice lost from the start: the creates' own, taken by the
    // manager late on a loaded machine, read some runs in calls of their
    // own after the lost notices were said (the missed notices' read then
    // read two runs, or came second).
    tell.state().losing = true;
    let mut ids = Vec::new();
    let mut stopped = Vec::new();
    for _ in 0..3 {
        let flag = Arc::new(AtomicBool::new(false));
        let on_drop = Arc::clone(&flag);
        let seed = m
            .spawn(TaskOptions::new(), |_ctx| {
                Box::pin(async move {
                    let _stopped = OnDrop(on_drop);
                    std::future::pending::<()>().await;
                    Ok(text("never"))
                })
            })
            .await
            .unwrap();
        ids.push(TaskId::parse(&seed.task_id).unwrap());
        stopped.push(flag);
    }
    // Another instance deletes the three; their notices are lost.
    for id in &ids {
        assert!(store.delete(id).unwrap());
    }
    tell.lose();
    eventually(|| async {
        stopped
            .iter()
            .all(|s| s.load(Ordering::SeqCst))
            .then_some(())
    })
    .await;
    let mut reads = tell.state().read_after_missed.clone().unwrap();
    reads.iter_mut().for_each(|read| read.sort());
    ids.sort();
    assert_eq!(reads, vec![ids], "every run read in one call");
}
