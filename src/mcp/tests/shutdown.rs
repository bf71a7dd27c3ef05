//! Graceful shutdown: the grace period, then a release for resumable tasks
//! and a `shutdown` failure for the others, within a bound that neither an
//! operation that cannot be stopped nor a store call that hangs stretches.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rmcp::model::{ErrorCode, TaskPayload};
use serde_json::json;
use tokio::sync::mpsc;

use super::{eventually, fast, settled, text};
use crate::backend::{Backend, Insert, Record, Scan, Scanned, Swap};
use crate::mcp::{DurableTaskManager, ShutdownReport, TaskExit, TaskOptions};
use crate::{FileStore, MemoryBackend, Task, TaskId, TaskStatus, TaskStore};

/// How long `shutdown` may take before the test counts as hung: it only
/// ever fails a test that would otherwise never end.
const HANG: Duration = Duration::from_secs(180);

async fn shut_down<S: TaskStore>(m: &DurableTaskManager<S>) -> ShutdownReport {
    tokio::time::timeout(HANG, m.shutdown())
        .await
        .expect("shutdown never returned")
}

#[tokio::test]
async fn shutdown_lets_tasks_finish_within_the_grace_then_releases_or_fails_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    // A lease far longer than the test: only a release lets another
    // instance claim the task before the end.
    let open = |name: &str| {
        Arc::new(
            FileStore::builder(dir.path())
                .instance_id(name)
                .lease(Duration::from_secs(3_600))
                .open()
                .unwrap(),
        )
    };
    let a = DurableTaskManager::with_options(
        open("a"),
        fast().shutdown_grace(Duration::from_millis(300)),
    );
    let plain = a
        .spawn(TaskOptions::new(), |_ctx| Box::pin(std::future::pending()))
        .await
        .unwrap();
    let resumable = a
        .spawn_resumable("long", json!({"n": 1}), TaskOptions::new(), |ctx| {
            Box::pin(async move {
                ctx.checkpoint(json!({"step": 1})).await?;
                std::future::pending().await
            })
        })
        .await
        .unwrap();
    // Finishes on its own once told that shutdown began.
    let polite = a
        .spawn(TaskOptions::new(), |ctx| {
            Box::pin(async move {
                ctx.shutting_down().await;
                assert!(ctx.is_shutting_down());
                Ok(text("finished in the grace"))
            })
        })
        .await
        .unwrap();
    let resumable_id = TaskId::parse(&resumable.task_id).unwrap();
    eventually(|| async {
        a.store()
            .get(&resumable_id)
            .unwrap()
            .unwrap()
            .resume
            .unwrap()
            .checkpoint
            .map(drop)
    })
    .await;
    assert_eq!(a.running_task_count(), 3);

    let report = shut_down(&a).await;
    let want = ShutdownReport {
        running: 3,
        released: 1,
        failed: 1,
        not_stopped: 0,
        unrecorded: 0,
    };
    assert_eq!(report, want);
    assert_eq!(a.running_task_count(), 0);
    // A second call did nothing, and says so. (It repeated the first
    // one's `released` and `failed`.)
    assert_eq!(shut_down(&a).await, ShutdownReport::default());

    assert_eq!(
        settled(&a, &polite.task_id).await.status(),
        rmcp::model::TaskStatus::Completed
    );
    let TaskPayload::Failed { error } = a.get_task(&plain.task_id).await.unwrap().payload else {
        panic!()
    };
    assert_eq!(error["code"], -32603);
    assert_eq!(error["data"]["code"], "shutdown");
    assert_eq!(error["data"]["instance"], "a");
    assert_eq!(error["data"]["graceMs"], 300);
    let released = a.store().get(&resumable_id).unwrap().unwrap();
    assert_eq!(released.status, TaskStatus::Working);
    assert!(released.lease_expires_at.unwrap() <= time::OffsetDateTime::now_utc());

    // No new task once shut down.
    let refused = a
        .spawn(TaskOptions::new(), |_ctx| Box::pin(async { Ok(text("x")) }))
        .await
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::INTERNAL_ERROR);
    assert_eq!(refused.data.unwrap()["code"], "shutdown");

    // Another instance claims the released task at once (its lease would
    // have held for an hour) and resumes it from its checkpoint.
    let b = DurableTaskManager::with_options(open("b"), fast());
    b.register_resume("long", |ctx| {
        Box::pin(async move {
            let step = ctx.last_checkpoint().cloned().unwrap_or_default();
            if ctx.attempt() != 2 {
                return Err(TaskExit::Error(rmcp::ErrorData::internal_error(
                    "attempt", None,
                )));
            }
            Ok(text(&format!("resumed at {step}")))
        })
    });
    let done = settled(&b, &resumable.task_id).await;
    let TaskPayload::Completed { result } = done.payload else {
        panic!("{done:?}")
    };
    assert_eq!(result["content"][0]["text"], "resumed at {\"step\":1}");
}

/// Blocks its thread until `gate` opens (or its sender is gone), after
/// saying so on `blocked`: checks for nothing and never yields, so it can
/// be neither cancelled nor aborted.
fn stuck(gate: std::sync::mpsc::Receiver<()>, blocked: mpsc::UnboundedSender<()>) {
    tokio::task::block_in_place(|| {
        let _ = blocked.send(());
        let _ = gate.recv();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_that_cannot_be_stopped_do_not_hold_shutdown_up_and_their_tasks_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let open = |name: &str| {
        Arc::new(
            FileStore::builder(dir.path())
                .instance_id(name)
                .lease(Duration::from_secs(3_600))
                .open()
                .unwrap(),
        )
    };
    let a = DurableTaskManager::with_options(
        open("a"),
        // The operations never stop, so shutdown always takes all of its
        // allowance: long enough for two writes on a busy machine.
        fast()
            .shutdown_grace(Duration::from_millis(100))
            .shutdown_writes(Duration::from_secs(2)),
    );
    let (blocked_tx, mut blocked_rx) = mpsc::unbounded_channel();
    let (plain_go, plain_gate) = std::sync::mpsc::channel::<()>();
    let blocked = blocked_tx.clone();
    let plain = a
        .spawn(TaskOptions::new(), move |_ctx| {
            Box::pin(async move {
                stuck(plain_gate, blocked);
                Ok(text("finished after shutdown"))
            })
        })
        .await
        .unwrap();
    let (resumable_go, resumable_gate) = std::sync::mpsc::channel::<()>();
    let (late_tx, mut late_rx) = mpsc::unbounded_channel();
    let resumable = a
        .spawn_resumable("stuck", json!({}), TaskOptions::new(), move |ctx| {
            Box::pin(async move {
                ctx.checkpoint(json!({"step": 1})).await?;
                stuck(resumable_gate, blocked_tx);
                // Let go after shutdown: refused, and renews nothing.
                let _ = late_tx.send(ctx.checkpoint(json!({"step": 2})).await);
                Ok(text("finished after shutdown"))
            })
        })
        .await
        .unwrap();
    blocked_rx.recv().await.unwrap();
    blocked_rx.recv().await.unwrap();

    let report = shut_down(&a).await;
    assert_eq!(
        report,
        ShutdownReport {
            running: 2,
            released: 1,
            failed: 1,
            not_stopped: 2,
            unrecorded: 0,
        }
    );
    assert_eq!(a.running_task_count(), 0);
    let TaskPayload::Failed { error } = a.get_task(&plain.task_id).await.unwrap().payload else {
        panic!("the plain task is failed")
    };
    assert_eq!(error["data"]["code"], "shutdown");
    let resumable_id = TaskId::parse(&resumable.task_id).unwrap();
    let released = a.store().get(&resumable_id).unwrap().unwrap();
    assert_eq!((released.status, released.epoch), (TaskStatus::Working, 1));
    assert!(released.lease_expires_at.unwrap() <= time::OffsetDateTime::now_utc());

    // Let the operations go: nothing they do now is written.
    plain_go.send(()).unwrap();
    resumable_go.send(()).unwrap();
    let late = late_rx.recv().await.unwrap().unwrap_err();
    assert_eq!(late.code, ErrorCode::INTERNAL_ERROR);
    assert_eq!(late.data.unwrap()["code"], "shutdown");

    // Another instance claims the released task at once (its lease would
    // have held an hour) and resumes it from the checkpoint saved before.
    let b = DurableTaskManager::with_options(open("b"), fast());
    b.register_resume("stuck", |ctx| {
        Box::pin(async move {
            let at = ctx.last_checkpoint().cloned().unwrap_or_default();
            Ok(text(&format!("resumed at {at}, attempt {}", ctx.attempt())))
        })
    });
    let done = settled(&b, &resumable.task_id).await;
    let TaskPayload::Completed { result } = done.payload else {
        panic!("{done:?}")
    };
    assert_eq!(
        result["content"][0]["text"],
        "resumed at {\"step\":1}, attempt 2"
    );
    let TaskPayload::Failed { error } = b.get_task(&plain.task_id).await.unwrap().payload else {
        panic!("the plain task stays failed")
    };
    assert_eq!(error["data"]["code"], "shutdown");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_calls_that_hang_do_not_hold_shutdown_up() {
    let gate = Arc::new(Gate::default());
    let _open = OpenOnDrop(Arc::clone(&gate));
    let m = gated_manager(Arc::new(MemoryBackend::new()), &gate);
    let running = m
        .spawn(TaskOptions::new(), |_ctx| Box::pin(std::future::pending()))
        .await
        .unwrap();
    // From now on the store hangs: a spawn waits in its create, and the
    // `shutdown` failure of the running task will wait in its write.
    gate.set(true);
    let late = tokio::spawn({
        let m = m.clone();
        async move {
            m.spawn(TaskOptions::new(), |_ctx| Box::pin(std::future::pending()))
                .await
        }
    });
    eventually(|| async { (gate.waiting.load(Ordering::SeqCst) >= 1).then_some(()) }).await;

    let report = shut_down(&m).await;
    assert_eq!(
        report,
        ShutdownReport {
            running: 1,
            released: 0,
            failed: 0,
            not_stopped: 0,
            unrecorded: 2,
        },
        "the failure of the running task and the spawn's create never returned"
    );
    assert_eq!(m.running_task_count(), 0);

    // The store comes back: the write under way lands, and the task the
    // late spawn created is stopped at once.
    gate.set(false);
    let late = late.await.unwrap().unwrap();
    for id in [&running.task_id, &late.task_id] {
        let TaskPayload::Failed { error } = settled(&m, id).await.payload else {
            panic!("task {id} is failed")
        };
        assert_eq!(error["data"]["code"], "shutdown", "{id}");
    }
}

/// A `spawn` whose caller goes away while its create is under way (a
/// host's timeout, a request dropped with its connection) leaves no task
/// that shows `working` with nothing running it: once the create returns,
/// the task it made is failed (`abandoned`), unrun; a resumable one is not
/// left for another instance to claim and run for a caller that never got
/// its id. Until then the spawn counts as starting, so a shutdown meanwhile
/// reports its create as unrecorded. (The task stayed `working`, owned by
/// this instance, and a resumable one was claimed and run a lease later;
/// shutdown did not count it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawn_dropped_during_its_create_leaves_no_task_working() {
    let gate = Arc::new(Gate::default());
    let _open = OpenOnDrop(Arc::clone(&gate));
    let backend = Arc::new(MemoryBackend::new());
    let m = gated_manager(Arc::clone(&backend), &gate);
    gate.set(true);
    let caller = tokio::spawn({
        let m = m.clone();
        async move {
            m.spawn_resumable("job", json!({"n": 1}), TaskOptions::new(), |_ctx| {
                Box::pin(std::future::pending())
            })
            .await
        }
    });
    eventually(|| async { (gate.waiting.load(Ordering::SeqCst) >= 1).then_some(()) }).await;
    // The caller goes away, its create still under way.
    caller.abort();
    assert!(caller.await.unwrap_err().is_cancelled());
    let report = shut_down(&m).await;
    assert_eq!(
        report.unrecorded, 1,
        "the dropped spawn's create: {report:?}"
    );

    // The store comes back: the create lands, and its task is failed.
    gate.set(false);
    let reader = crate::Store::with_backend(Arc::clone(&backend))
        .build()
        .unwrap();
    let task = eventually(|| async {
        let tasks = reader.list(&crate::ListQuery::all()).unwrap().tasks;
        match tasks.as_slice() {
            [task] if task.is_terminal() => Some(task.clone()),
            _ => None,
        }
    })
    .await;
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(task.error.as_ref().unwrap()["code"], "abandoned");
    assert_eq!(m.running_task_count(), 0);
}

/// The same when the runtime the `spawn` ran on shuts down while its
/// create is under way (a server stopping): the task the create made is
/// failed all the same, and the spawn stops counting as starting. (The
/// guard handed the failing to that runtime, which dropped it unrun: the
/// task stayed `working`, and shutdown counted the create for ever.)
#[test]
fn a_spawn_whose_runtime_shuts_down_during_its_create_leaves_no_task_working() {
    let gate = Arc::new(Gate::default());
    let _open = OpenOnDrop(Arc::clone(&gate));
    let backend = Arc::new(MemoryBackend::new());
    let main = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let m = main.block_on(async { gated_manager(Arc::clone(&backend), &gate) });
    gate.set(true);
    let other = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    /// Says when the future holding it is dropped.
    struct Dropped(Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    other.spawn({
        let (m, dropped) = (m.clone(), Dropped(Arc::clone(&dropped)));
        async move {
            let _dropped = dropped;
            m.spawn(TaskOptions::new(), |_ctx| Box::pin(std::future::pending()))
                .await
        }
    });
    main.block_on(eventually(|| async {
        (gate.waiting.load(Ordering::SeqCst) >= 1).then_some(())
    }));
    // The runtime shuts down (its drop waits for the create's thread),
    // dropping the spawn; then the store comes back.
    let shutting = std::thread::spawn(move || drop(other));
    main.block_on(eventually(|| async {
        dropped.load(Ordering::SeqCst).then_some(())
    }));
    gate.set(false);
    shutting.join().unwrap();
    let reader = crate::Store::with_backend(Arc::clone(&backend))
        .build()
        .unwrap();
    let task = main.block_on(eventually(|| async {
        let tasks = reader.list(&crate::ListQuery::all()).unwrap().tasks;
        match tasks.as_slice() {
            [task] if task.is_terminal() => Some(task.clone()),
            _ => None,
        }
    }));
    assert_eq!(task.error.as_ref().unwrap()["code"], "abandoned");
    let report = main.block_on(shut_down(&m));
    assert_eq!(report.unrecorded, 0, "nothing is under way: {report:?}");
}

/// (Here for the gate.) Two peers answer one input key at once: the one
/// whose write lands second decided on the task before the first landed.
/// It must not replace the first answer: it writes only at the revision
/// it decided on, and decides again on the task as it stands, where the
/// key holds an answer. (Deciding again without that condition, it wrote
/// its own over the first.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_answer_lands_second_leaves_the_first() {
    let gate = Arc::new(Gate::default());
    let _open = OpenOnDrop(Arc::clone(&gate));
    let backend = Arc::new(MemoryBackend::new());
    let hour = Duration::from_secs(3_600);
    let plain = |name: &str| {
        let store = crate::Store::with_backend(Arc::clone(&backend))
            .instance_id(name)
            .lease(3 * hour)
            .build()
            .unwrap();
        DurableTaskManager::with_options(
            Arc::new(store),
            crate::mcp::ManagerOptions::new()
                .watch_interval(hour)
                .reap_interval(hour),
        )
    };
    // The owner looks at its run's start and then once an hour.
    let (a, c) = (plain("a"), plain("c"));
    let b = {
        let store = crate::Store::with_backend(Gated::writes(Arc::clone(&backend), &gate))
            .instance_id("b")
            .build()
            .unwrap();
        DurableTaskManager::with_options(Arc::new(store), fast())
    };
    let seed = a
        .spawn(TaskOptions::new(), |ctx| {
            Box::pin(async move {
                let answer = ctx.request_input("k", super::elicitation("?")).await?;
                Ok(text(&answer.to_string()))
            })
        })
        .await
        .unwrap();
    super::until_input_required(&a, &seed.task_id).await;
    gate.set(true);
    let late = tokio::spawn({
        let (b, id) = (b.clone(), seed.task_id.clone());
        async move { b.update_task(&id, [("k".to_owned(), json!("late"))]).await }
    });
    // B has read the task and waits to write; C's answer lands first.
    eventually(|| async { (gate.waiting.load(Ordering::SeqCst) >= 1).then_some(()) }).await;
    c.update_task(&seed.task_id, [("k".to_owned(), json!("first"))])
        .await
        .unwrap();
    gate.set(false);
    late.await.unwrap().unwrap();
    let id = TaskId::parse(&seed.task_id).unwrap();
    let stored = a.store().get(&id).unwrap().unwrap();
    assert_eq!(
        stored
            .metadata
            .get(&format!("{}k", crate::mcp::INPUT_RESPONSE_KEY_PREFIX)),
        Some(&json!("first")),
        "{:?}",
        stored.metadata
    );
}

/// (Here for the gate.) A claim of several tasks launches every run it
/// claimed before it looks at any of them: a run is renewed only once
/// launched, and the look at a claimed task may write (an answer a peer
/// stored while no one ran it), so runs launched one after another's look
/// could see their claimed leases lapse behind a long queue of such
/// writes. Here the first look's write waits at the gate, and both runs
/// are already running. (The second was launched only after the first's
/// look had written.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_launches_every_run_before_it_looks_at_any() {
    const LEASE: Duration = Duration::from_secs(10);
    let gate = Arc::new(Gate::default());
    let _open = OpenOnDrop(Arc::clone(&gate));
    let backend = Arc::new(MemoryBackend::new());
    let clock = Arc::new(crate::ManualClock::new(time::OffsetDateTime::now_utc()));
    let store = |name: &str, backend: Arc<dyn Backend>| {
        crate::Store::with_backend(backend)
            .instance_id(name)
            .clock(clock.clone() as Arc<dyn crate::Clock>)
            .lease(LEASE)
            .build()
            .unwrap()
    };
    let hour = Duration::from_secs(3_600);
    let frozen = crate::mcp::ManagerOptions::new()
        .watch_interval(hour)
        .renew_interval(hour)
        .reap_interval(hour);
    // A's writes pass a gate of their own, shut once its runs wait for
    // input: A is about to die, and nothing of it lands after. (A first
    // watch tick of A's that a loaded machine put off until after the
    // peer's answers delivered one and completed its task, and B then
    // claimed one task, not two.)
    let dying = Arc::new(Gate::default());
    let _dead = OpenOnDrop(Arc::clone(&dying));
    let a = DurableTaskManager::with_options(
        Arc::new(store(
            "a",
            Arc::new(Gated::writes(Arc::clone(&backend), &dying)),
        )),
        frozen.clone(),
    );
    let c = DurableTaskManager::with_options(
        Arc::new(store("c", Arc::clone(&backend) as Arc<dyn Backend>)),
        frozen.clone(),
    );
    let mut ids = Vec::new();
    for n in 0..2 {
        let seed = a
            .spawn_resumable("job", json!({"n": n}), TaskOptions::new(), |ctx| {
                Box::pin(async move {
                    ctx.request_input("k", super::elicitation("?")).await?;
                    Ok(text("answered"))
                })
            })
            .await
            .unwrap();
        super::until_input_required(&a, &seed.task_id).await;
        ids.push(seed.task_id);
    }
    dying.set(true);
    // Answered at a peer while A, about to die, does not look.
    for id in &ids {
        c.update_task(id, [("k".to_owned(), json!("yes"))])
            .await
            .unwrap();
    }
    // A dies: its leases lapse.
    drop(a);
    clock.advance(LEASE + Duration::from_secs(1));
    gate.set(true);
    let gated = Gated {
        claims: true,
        ..Gated::writes(Arc::clone(&backend), &gate)
    };
    // B's loops come round only for the claim its registration wakes: a
    // watch tick's look at the first run launched could write (and wait)
    // before the claim launched the second, a race this test does not
    // mean.
    let b = DurableTaskManager::with_options(Arc::new(store("b", Arc::new(gated))), frozen);
    b.register_resume("job", |_ctx| Box::pin(std::future::pending()));
    // The first look's write waits at the gate, and does not land while
    // it is shut: both runs run all the same. (Waited for, not read once:
    // a second claim pass, had one started, might launch its own run a
    // moment after the first pass's look; launched only after that look's
    // write, the second run never runs while the gate is shut.)
    eventually(|| async { (gate.waiting.load(Ordering::SeqCst) >= 1).then_some(()) }).await;
    eventually(|| async { (b.running_task_count() == 2).then_some(()) }).await;
    assert!(
        gate.waiting.load(Ordering::SeqCst) >= 1,
        "every claimed run runs before the first look's write lands"
    );
    gate.set(false);
}

/// A run shutdown stopped stays stopped when a watch tick that read it
/// before then finds it lost: nothing more of it is written (its writes
/// answer "stopped" without reaching the store), and no takeover is
/// claimed for it. (The tick relabelled it lost, and its later writes went
/// to the store.)
#[tokio::test]
async fn a_stopped_run_found_lost_afterwards_stays_stopped() {
    let m =
        DurableTaskManager::with_options(std::sync::Arc::new(crate::MemoryStore::new()), fast());
    let seed = m
        .spawn(TaskOptions::new(), |_ctx| Box::pin(std::future::pending()))
        .await
        .unwrap();
    let id = TaskId::parse(&seed.task_id).unwrap();
    let run = m.shared().run_of(&id).unwrap();
    // Shutdown's mark, then the tick's finding.
    crate::mcp::calls::lock(&run.state).ending = crate::mcp::run::Ending::Stopped;
    m.shared().lose(&run, None);
    assert_eq!(run.ending(), crate::mcp::run::Ending::Stopped);
    let written = m
        .shared()
        .write(&run, crate::TaskUpdate::new().status_message("late"))
        .await
        .ok()
        .unwrap();
    assert!(matches!(written, crate::mcp::run::RunWrite::Stopped));
    assert_eq!(m.store().get(&id).unwrap().unwrap().status_message, None);
}

/// A claim under way when shutdown begins is seen through: the tasks it
/// claimed are released (their runs stopped as they start), not left owned
/// by this instance with a fresh lease and no run until the lease lapses
/// (an attempt spent for nothing). The background loop used to be aborted
/// in the middle of the claim, whose write landed all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_under_way_at_shutdown_releases_what_it_claimed() {
    let clock = Arc::new(crate::ManualClock::new(time::OffsetDateTime::now_utc()));
    let lease = Duration::from_secs(10);
    let shared = Arc::new(MemoryBackend::new());
    let handle = |name: &str, gate: &Arc<Gate>| {
        crate::Store::with_backend(Gated::writes(Arc::clone(&shared), gate))
            .instance_id(name)
            .clock(clock.clone() as Arc<dyn crate::Clock>)
            .lease(lease)
            .build()
            .unwrap()
    };
    // A dead instance's resumable task.
    let a = handle("a", &Arc::new(Gate::default()));
    let orphan = a
        .create(crate::NewTask::new().resumable("job", json!({})))
        .unwrap();
    clock.advance(lease);
    // Instance b's claim of it waits in its write while shutdown begins.
    let gate = Arc::new(Gate::default());
    let _open = OpenOnDrop(Arc::clone(&gate));
    gate.set(true);
    let b = DurableTaskManager::with_options(
        Arc::new(handle("b", &gate)),
        fast()
            .reap_interval(Duration::from_millis(20))
            .shutdown_grace(Duration::from_millis(50))
            .shutdown_writes(Duration::from_secs(60)),
    );
    b.register_resume("job", |_ctx| Box::pin(std::future::pending()));
    eventually(|| async { (gate.waiting.load(Ordering::SeqCst) >= 1).then_some(()) }).await;
    let mut stopping = b.shared().stop.subscribe();
    let shutdown = tokio::spawn({
        let b = b.clone();
        async move { shut_down(&b).await }
    });
    // The store answers once the loop is told to stop.
    stopping.wait_for(|stop| *stop).await.unwrap();
    gate.set(false);
    let report = shutdown.await.unwrap();
    assert_eq!((report.released, report.unrecorded), (1, 0), "{report:?}");
    // Released: its lease lapsed now, for any instance to claim at once.
    let task = a.get(&orphan.id).unwrap().unwrap();
    let now = crate::Clock::now(&*clock);
    assert!(task.lease_expires_at.unwrap() <= now, "{task:?}");
}

/// A sweep that takes long (a backlog of expired tasks after an outage, a
/// store call that hangs) holds no lease renewal up: running tasks keep
/// their leases while it goes on. (Renewals waited behind it on one loop,
/// and a peer could reap a task still running, or claim and run it twice.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_that_takes_long_holds_no_renewal_up() {
    let gate = Arc::new(Gate::default());
    let _open = OpenOnDrop(Arc::clone(&gate));
    gate.set(true);
    let store = crate::Store::with_backend(Gated {
        sweeps: true,
        ..Gated::writes(Arc::new(MemoryBackend::new()), &gate)
    })
    .lease(Duration::from_millis(300))
    .build()
    .unwrap();
    let m = DurableTaskManager::with_options(Arc::new(store), fast());
    // The first pass's sweep waits in its scan from now on.
    eventually(|| async { (gate.waiting.load(Ordering::SeqCst) >= 1).then_some(()) }).await;
    let seed = m
        .spawn(TaskOptions::new(), |_ctx| Box::pin(std::future::pending()))
        .await
        .unwrap();
    let id = TaskId::parse(&seed.task_id).unwrap();
    let lease = || m.store().get(&id).unwrap().unwrap().lease_expires_at;
    let first = lease().unwrap();
    // Renewed (every third of the lease) while the sweep still waits.
    eventually(|| async { (lease().unwrap() > first).then_some(()) }).await;
    assert_eq!(
        gate.waiting.load(Ordering::SeqCst),
        1,
        "the sweep still waits"
    );
    gate.set(false);
    shut_down(&m).await;
}

/// An operation that ends in the grace has its outcome tried again when
/// the write fails for a moment, as before shutdown; one whose every write
/// fails is counted as unrecorded. (Once shutdown had begun, a failed
/// outcome write was not tried again, and the report counted nothing.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_ending_in_the_grace_is_tried_again_and_counted_if_never_recorded() {
    for (failures, recorded) in [(1, true), (usize::MAX, false)] {
        let store = crate::Store::with_backend(super::Flaky {
            inner: MemoryBackend::new(),
            failures: AtomicUsize::new(failures),
        })
        .build()
        .unwrap();
        let m = DurableTaskManager::with_options(
            Arc::new(store),
            fast().shutdown_grace(Duration::from_secs(30)),
        );
        let seed = m
            .spawn(TaskOptions::new(), |ctx| {
                Box::pin(async move {
                    ctx.shutting_down().await;
                    Ok(text("finished in the grace"))
                })
            })
            .await
            .unwrap();
        let report = shut_down(&m).await;
        let id = TaskId::parse(&seed.task_id).unwrap();
        let task = m.store().get(&id).unwrap().unwrap();
        if recorded {
            assert_eq!(task.status, TaskStatus::Completed, "{report:?}");
            assert_eq!(report.unrecorded, 0, "{report:?}");
        } else {
            assert_eq!(task.status, TaskStatus::Working, "{report:?}");
            assert_eq!(report.unrecorded, 1, "{report:?}");
        }
    }
}

/// A `MemoryBackend` with a change feed that never names a change, and
/// counts its live subscriptions.
struct Fed {
    inner: MemoryBackend,
    feeds: Arc<AtomicUsize>,
}

/// One subscription of [`Fed`]: counted while it lives.
struct QuietFeed(Arc<AtomicUsize>);

impl crate::ChangeSource for QuietFeed {
    fn wait(&mut self, timeout: Duration) -> crate::Changes {
        std::thread::sleep(timeout.min(Duration::from_millis(20)));
        crate::Changes::Tasks(Vec::new())
    }
}

impl Drop for QuietFeed {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Backend for Fed {
    fn load(&self, id: &TaskId) -> crate::Result<Option<Task>> {
        self.inner.load(id)
    }
    fn insert(&self, record: &Record, max_active: usize) -> crate::Result<Insert> {
        self.inner.insert(record, max_active)
    }
    fn replace(&self, current: &Task, next: &Record) -> crate::Result<Swap> {
        self.inner.replace(current, next)
    }
    fn remove(&self, current: &Task) -> crate::Result<Swap> {
        self.inner.remove(current)
    }
    fn scan(&self, scan: &Scan) -> crate::Result<Scanned> {
        self.inner.scan(scan)
    }
    fn changes(&self) -> Option<crate::ChangeFeed> {
        self.feeds.fetch_add(1, Ordering::SeqCst);
        Some(crate::ChangeFeed::new(QuietFeed(Arc::clone(&self.feeds))))
    }
}

/// A manager dropped without `shutdown` lets go of its change feed: the
/// thread waiting on it ends, and the feed (a PostgreSQL connection, for
/// `PgStore`) is closed. (Both lived on until the feed next named a
/// change, which on a quiet store is never.)
#[tokio::test]
async fn a_manager_dropped_without_shutdown_lets_go_of_its_change_feed() {
    let feeds = Arc::new(AtomicUsize::new(0));
    let store = crate::Store::with_backend(Fed {
        inner: MemoryBackend::new(),
        feeds: Arc::clone(&feeds),
    })
    .build()
    .unwrap();
    let m = DurableTaskManager::with_options(Arc::new(store), fast());
    let seed = m
        .spawn(TaskOptions::new(), |_ctx| {
            Box::pin(async { Ok(text("42")) })
        })
        .await
        .unwrap();
    settled(&m, &seed.task_id).await;
    assert_eq!(feeds.load(Ordering::SeqCst), 1);
    drop(m);
    eventually(|| async { (feeds.load(Ordering::SeqCst) == 0).then_some(()) }).await;
}

/// A `shutdown_writes` of `Duration::MAX` (no bound on the final writes)
/// is taken as far off, not added to the time. (The addition overflowed:
/// `shutdown` panicked, "overflow when adding duration to instant".)
#[tokio::test]
async fn a_shutdown_writes_allowance_of_duration_max_shuts_down() {
    let m = DurableTaskManager::with_options(
        Arc::new(crate::MemoryStore::new()),
        fast().shutdown_writes(Duration::MAX),
    );
    let seed = m
        .spawn(TaskOptions::new(), |_ctx| {
            Box::pin(async { Ok(text("done")) })
        })
        .await
        .unwrap();
    let report = shut_down(&m).await;
    assert_eq!((report.failed, report.unrecorded), (0, 0), "{report:?}");
    assert_eq!(
        settled(&m, &seed.task_id).await.status(),
        rmcp::model::TaskStatus::Completed
    );
}

/// A resumable task whose run shutdown stops is on its last attempt is
/// failed with the `shutdown` error, not released: no instance may claim
/// it (a claim needs an attempt left). (It was released all the same,
/// counted `released`, and then reaped: the client read it orphaned.)
#[tokio::test]
async fn a_resumable_task_on_its_last_attempt_is_failed_at_shutdown_not_released() {
    let m = DurableTaskManager::with_options(
        Arc::new(crate::MemoryStore::new()),
        fast()
            .max_attempts(1)
            .shutdown_grace(Duration::from_millis(50)),
    );
    let seed = m
        .spawn_resumable("k", json!({}), TaskOptions::new(), |_ctx| {
            Box::pin(std::future::pending())
        })
        .await
        .unwrap();
    let report = shut_down(&m).await;
    assert_eq!((report.released, report.failed), (0, 1), "{report:?}");
    let TaskPayload::Failed { error } = m.get_task(&seed.task_id).await.unwrap().payload else {
        panic!("task {} did not fail", seed.task_id)
    };
    assert_eq!(error["data"]["code"], "shutdown", "{error:?}");
}

/// A task released at shutdown that no instance claims is reaped, once
/// its claim grace is over, with a message that says its owner released
/// it; an owner that died still reads as one that stopped renewing. (Both
/// read "its owner .. stopped renewing its lease", which hid that the
/// task was handed over on purpose.)
#[tokio::test]
async fn a_released_task_no_one_claims_is_reaped_as_released() {
    const LEASE: Duration = Duration::from_secs(10);
    let backend = Arc::new(MemoryBackend::new());
    let clock = Arc::new(crate::ManualClock::new(time::OffsetDateTime::now_utc()));
    let open = |name: &str| {
        crate::Store::with_backend(Arc::clone(&backend))
            .instance_id(name)
            .clock(clock.clone() as Arc<dyn crate::Clock>)
            .lease(LEASE)
            .build()
            .unwrap()
    };
    let m = DurableTaskManager::with_options(
        Arc::new(open("leaving")),
        fast().shutdown_grace(Duration::ZERO),
    );
    let released = m
        .spawn_resumable("job", json!({}), TaskOptions::new(), |_ctx| {
            Box::pin(std::future::pending())
        })
        .await
        .unwrap();
    assert_eq!(shut_down(&m).await.released, 1);
    let died = open("died")
        .create(crate::NewTask::new().resumable("job", json!({})))
        .unwrap();
    // Past both leases and the claim grace (one lease), with no handler
    // for the kind anywhere.
    clock.advance(LEASE * 2 + Duration::from_secs(1));
    let reaped = open("reaper").reap().unwrap();
    assert_eq!(reaped.tasks.len(), 2, "{reaped:?}");
    let message = |id: &str| {
        let task = reaped.tasks.iter().find(|t| t.id.as_str() == id).unwrap();
        let error = task.error.as_ref().unwrap();
        assert_eq!(error["code"], "orphaned", "{error:?}");
        error["message"].as_str().unwrap().to_owned()
    };
    let released = message(&released.task_id);
    assert!(
        released.contains("its owner leaving released it")
            && !released.contains("stopped renewing"),
        "{released}"
    );
    let died = message(died.id.as_str());
    assert!(
        died.contains("its owner died stopped renewing its lease"),
        "{died}"
    );
}
