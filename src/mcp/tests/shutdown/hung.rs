//! Store calls that hang at shutdown (a gated store): they hold shutdown
//! up no longer than the bound, and a spawn, a claim or a sweep caught in
//! one leaves no task working, releases what it claimed, and holds no
//! renewal up; a peer's answer that lands second leaves the first.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rmcp::model::TaskPayload;
use serde_json::json;

use super::{Gate, Gated, OpenOnDrop, gated_manager, shut_down};
use crate::backend::Backend;
use crate::mcp::tests::{elicitation, eventually, fast, settled, text, until_input_required};
use crate::mcp::{DurableTaskManager, ShutdownReport, TaskOptions};
use crate::{MemoryBackend, TaskId, TaskStatus, TaskStore};

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
                let answer = ctx.request_input("k", elicitation("?")).await?;
                Ok(text(&answer.to_string()))
            })
        })
        .await
        .unwrap();
    until_input_required(&a, &seed.task_id).await;
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
                    ctx.request_input("k", elicitation("?")).await?;
                    Ok(text("answered"))
                })
            })
            .await
            .unwrap();
        until_input_required(&a, &seed.task_id).await;
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
