//! The grace period and what follows it: tasks finish within it, then
//! resumable ones are released and the others failed `shutdown`; an
//! operation that cannot be stopped holds shutdown up no longer than the
//! bound; an outcome ending in the grace is tried again; a manager dropped
//! without a shutdown lets go of its change feed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rmcp::model::{ErrorCode, TaskPayload};
use serde_json::json;
use tokio::sync::mpsc;

use super::shut_down;
use crate::backend::{Backend, Insert, Record, Scan, Scanned, Swap};
use crate::mcp::tests::{eventually, fast, settled, text};
use crate::mcp::{DurableTaskManager, ShutdownReport, TaskExit, TaskOptions};
use crate::{FileStore, MemoryBackend, Task, TaskId, TaskStatus, TaskStore};

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

/// An operation that ends in the grace has its outcome tried again when
/// the write fails for a moment, as before shutdown; one whose every write
/// fails is counted as unrecorded. (Once shutdown had begun, a failed
/// outcome write was not tried again, and the report counted nothing.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_ending_in_the_grace_is_tried_again_and_counted_if_never_recorded() {
    for (failures, recorded) in [(1, true), (usize::MAX, false)] {
        let store = crate::Store::with_backend(crate::mcp::tests::Flaky::outcomes(failures))
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
