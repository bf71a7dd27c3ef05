//! A run's outcome: stored at once and inlined, refused by the store (the
//! task failed with why, even at the payload cap), tried again while the
//! run holds the task, and panics (building the future, running it, or
//! dropping it) failing the task alone.

use std::sync::Arc;
use std::time::Duration;

use rmcp::ErrorData as McpError;
use rmcp::model::{TaskPayload, TaskStatus};
use serde_json::{Value, json};

use super::{Flaky, eventually, fast, instance, logged, settled, text};
use crate::mcp::*;
use crate::{MemoryStore, TaskStore};

#[tokio::test]
async fn spawned_task_is_durable_at_once_and_completes_with_the_result_inlined() {
    let dir = tempfile::tempdir().unwrap();
    let a = instance(dir.path(), "a");
    let b = instance(dir.path(), "b");
    let seed = a
        .spawn(TaskOptions::new().with_poll_interval_ms(10), |_ctx| {
            Box::pin(async { Ok(text("42")) })
        })
        .await
        .unwrap();
    assert_eq!(seed.status, TaskStatus::Working);
    assert_eq!(seed.ttl_ms, Some(300_000));
    // Another instance resolves it the moment spawn returns.
    b.get_task(&seed.task_id).await.unwrap();
    let done = settled(&b, &seed.task_id).await;
    let TaskPayload::Completed { result } = done.payload else {
        panic!("{done:?}")
    };
    assert_eq!(
        Value::Object(result),
        serde_json::to_value(text("42")).unwrap()
    );
    eventually(|| async { (a.running_task_count() == 0).then_some(()) }).await;
}

/// An outcome the store refuses as a value (a result or an error over the
/// payload cap) fails the task at once, with why and the task's id. (It
/// was logged and dropped: the task stayed `working` until its lease
/// lapsed, then read as orphaned.)
#[tokio::test]
async fn an_outcome_the_store_refuses_fails_the_task_with_why() {
    let store = MemoryStore::builder()
        .max_payload_bytes(4_096)
        .build()
        .unwrap();
    let m = DurableTaskManager::with_options(Arc::new(store), fast());
    let big = "x".repeat(10_000);
    let result = big.clone();
    let too_big_result = m
        .spawn(TaskOptions::new(), move |_ctx| {
            Box::pin(async move { Ok(text(&result)) })
        })
        .await
        .unwrap();
    let too_big_error = m
        .spawn(TaskOptions::new(), move |_ctx| {
            Box::pin(async move { Err(TaskExit::Error(McpError::internal_error(big, None))) })
        })
        .await
        .unwrap();
    for seed in [too_big_result, too_big_error] {
        let TaskPayload::Failed { error } = settled(&m, &seed.task_id).await.payload else {
            panic!()
        };
        assert_eq!(error["code"], -32603);
        assert_eq!(error["data"]["code"], "outcome_refused");
        let message = error["data"]["message"].as_str().unwrap();
        assert!(message.contains(seed.task_id.as_str()), "{message}");
        assert!(message.contains("payload limit of 4096 bytes"), "{message}");
    }
}

/// An outcome refused at a task its operation filled to the payload cap
/// (with its status message here; its metadata would do as well) still
/// ends the task: the `outcome_refused` failure that takes the outcome's
/// place is small, and a small failure always fits. The run is not
/// forgotten with its task left `working`. (The failure was refused too,
/// and nothing more was tried: the task read `working` after its run
/// ended; once its lease lapsed it read orphaned, or, resumable as here,
/// was claimed and its work run again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_refused_at_a_task_filled_to_the_cap_fails_the_task_all_the_same() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let store = MemoryStore::builder()
        .max_payload_bytes(crate::MIN_MAX_PAYLOAD_BYTES)
        .build()
        .unwrap();
    let m = DurableTaskManager::with_options(Arc::new(store), fast());
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let seed = m
        .spawn_resumable("fill", json!({}), TaskOptions::new(), move |ctx| {
            counted.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                // The longest status message the task takes: it is at the
                // cap, within a byte.
                let mut len = crate::MIN_MAX_PAYLOAD_BYTES;
                while ctx.set_status_message("p".repeat(len)).await.is_err() {
                    len -= 1;
                }
                Ok(text(&"r".repeat(2 * crate::MIN_MAX_PAYLOAD_BYTES)))
            })
        })
        .await
        .unwrap();
    eventually(|| async { (m.running_task_count() == 0).then_some(()) }).await;
    let task = m.get_task(&seed.task_id).await.unwrap();
    let TaskPayload::Failed { error } = task.payload else {
        panic!(
            "the run of task {} ended, but the task reads {:?}: its outcome was not recorded",
            seed.task_id, task.task.status
        )
    };
    assert_eq!(error["data"]["code"], "outcome_refused", "{error:?}");
    let message = error["data"]["message"].as_str().unwrap();
    assert!(message.contains(seed.task_id.as_str()), "{message}");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// A handler that panics while it builds its future (before any `await`:
/// an argument it cannot parse, say) fails its task as a panicking
/// operation does, and the caller goes on: the spawn returns its task, and
/// the manager keeps running others. (The panic went through the caller:
/// the spawn's, or the background loop's resuming a claim, which then
/// renewed, claimed and reaped nothing more; and the task, left among the
/// runs with no supervisor, stayed `working` for ever.)
#[tokio::test]
async fn a_handler_that_panics_building_its_future_fails_its_task_and_nothing_else() {
    let m = DurableTaskManager::with_options(Arc::new(MemoryStore::new()), fast());
    let spawned = m
        .spawn(TaskOptions::new(), |_ctx| -> crate::mcp::TaskFuture {
            panic!("cannot parse the arguments")
        })
        .await
        .unwrap();
    let TaskPayload::Failed { error } = settled(&m, &spawned.task_id).await.payload else {
        panic!()
    };
    assert_eq!(
        error["message"],
        "task operation panicked: cannot parse the arguments"
    );
    eventually(|| async { (m.running_task_count() == 0).then_some(()) }).await;
    let next = m
        .spawn(TaskOptions::new(), |_ctx| {
            Box::pin(async { Ok(text("ok")) })
        })
        .await
        .unwrap();
    assert!(matches!(
        settled(&m, &next.task_id).await.payload,
        TaskPayload::Completed { .. }
    ));
}

/// While a run's outcome write is tried again, its lease is renewed: the
/// tries outlast the lease, and the manager's own reaper must not fail the
/// task as orphaned meanwhile. (Only running operations were renewed: the
/// completed outcome was lost, the task failed `orphaned`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_outcome_write_is_tried_again_keeps_its_lease() {
    // Five failed tries wait 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s.
    completes_through_failed_outcome_writes(5).await;
}

/// A task whose outcome write fails `failures` times, on a store with a
/// 1 s lease and a manager that reaps every 50 ms, completes with its
/// result; once its first write has failed, the store's clock moves a
/// lease on, half a lease a step, each once the run's lease was renewed at
/// the step's time, while the write is still being tried. The clock is the
/// test's: a stall of the machine lets no lease lapse. (On the system
/// clock, the test process stopped 3 s between two tries let the lease
/// lapse, and the manager's own reap failed the task `orphaned`.)
async fn completes_through_failed_outcome_writes(failures: usize) {
    let lease = Duration::from_secs(1);
    let clock = Arc::new(crate::ManualClock::new(time::OffsetDateTime::now_utc()));
    let store = crate::Store::with_backend(Flaky::outcomes(failures))
        .clock(clock.clone() as Arc<dyn crate::Clock>)
        .lease(lease)
        .build()
        .unwrap();
    let store = Arc::new(store);
    let m = DurableTaskManager::with_options(
        Arc::clone(&store),
        fast().reap_interval(Duration::from_millis(50)),
    );
    let seed = m
        .spawn(TaskOptions::new(), |_ctx| {
            Box::pin(async { Ok(text("42")) })
        })
        .await
        .unwrap();
    let id = crate::TaskId::parse(&seed.task_id).unwrap();
    let left = || {
        store
            .backend()
            .failures
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    eventually(|| async { (left() < failures).then_some(()) }).await;
    let stored = || store.get(&id).unwrap().unwrap();
    let mut granted = stored().lease_expires_at;
    for _ in 0..2 {
        clock.advance(lease / 2);
        let seen = eventually(|| async {
            let task = stored();
            (task.is_terminal() || task.lease_expires_at > granted).then_some(task)
        })
        .await;
        assert!(
            !seen.is_terminal(),
            "the outcome landed with the lease not renewed since the clock moved: {seen:?}"
        );
        granted = seen.lease_expires_at;
    }
    let settled = settled(&m, &seed.task_id).await;
    let TaskPayload::Completed { result } = settled.payload else {
        panic!("not completed: {:?}", settled.payload)
    };
    assert_eq!(
        Value::Object(result),
        serde_json::to_value(text("42")).unwrap()
    );
}

/// Outside shutdown, an outcome whose write keeps failing (a database
/// failing over, a disk full for a while) is tried for as long as its run
/// holds the task, not only six times: the completed result lands once
/// the store takes it. (After about 3 s of tries it was logged and
/// dropped, and the run forgotten: its lease lapsed and the task failed
/// `orphaned`, though it had completed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_is_tried_for_as_long_as_its_run_holds_the_task() {
    // Six failed tries: the sixth was the last.
    completes_through_failed_outcome_writes(6).await;
}

/// A recording write that fails for a cause that may pass is tried again:
/// the outcome lands. (It was logged and dropped.)
#[tokio::test]
async fn an_outcome_whose_write_fails_for_a_moment_is_recorded_on_a_later_try() {
    let store = crate::Store::with_backend(Flaky::outcomes(3))
        .build()
        .unwrap();
    let m = DurableTaskManager::with_options(Arc::new(store), fast());
    let seed = m
        .spawn(TaskOptions::new(), |_ctx| {
            Box::pin(async { Ok(text("42")) })
        })
        .await
        .unwrap();
    let TaskPayload::Completed { result } = settled(&m, &seed.task_id).await.payload else {
        panic!()
    };
    assert_eq!(
        Value::Object(result),
        serde_json::to_value(text("42")).unwrap()
    );
}

/// An operation's error is the task's, as JSON-RPC; a panic fails the task
/// with its message, and the host's log names the task (it logged nothing
/// that did).
#[tokio::test]
async fn errors_are_inlined_as_jsonrpc_and_panics_fail_the_task() {
    // One thread: the supervisor logs on this one.
    let logged = logged::Logged::default();
    let _log = tracing::subscriber::set_default(logged.clone());
    let m = DurableTaskManager::with_options(Arc::new(MemoryStore::new()), fast());
    let failed = m
        .spawn(TaskOptions::new(), |_ctx| {
            Box::pin(async { Err(TaskExit::Error(McpError::internal_error("boom", None))) })
        })
        .await
        .unwrap();
    let TaskPayload::Failed { error } = settled(&m, &failed.task_id).await.payload else {
        panic!()
    };
    assert_eq!(error["code"], -32603);
    assert_eq!(error["message"], "boom");

    let panicked = m
        .spawn(TaskOptions::new(), |_ctx| {
            Box::pin(async { panic!("operation bug") })
        })
        .await
        .unwrap();
    let TaskPayload::Failed { error } = settled(&m, &panicked.task_id).await.payload else {
        panic!()
    };
    assert_eq!(error["message"], "task operation panicked: operation bug");
    let named = logged.events().into_iter().any(|e| {
        e.level == tracing::Level::ERROR
            && e.field("task") == Some(panicked.task_id.as_str())
            && e.field("error")
                .is_some_and(|m| m.contains("panicked: operation bug"))
    });
    assert!(named, "{:?}", logged.events());
}

/// A panic whose payload panics again when dropped (`panic_any` of such a
/// value, in a host's operation): the supervisor dropped the payload where
/// a second panic ended it, so the run was never recorded nor forgotten
/// (its task `working` for ever, its lease renewed). It fails the task as
/// any panic does.
#[tokio::test]
async fn an_operation_whose_panic_panics_again_when_dropped_fails_its_task() {
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                panic!("this payload panics when dropped (expected in this test)");
            }
        }
    }
    let m = DurableTaskManager::with_options(Arc::new(MemoryStore::new()), fast());
    let bombed = m
        .spawn(TaskOptions::new(), |_ctx| {
            Box::pin(async { std::panic::panic_any(Bomb) })
        })
        .await
        .unwrap();
    let TaskPayload::Failed { error } = settled(&m, &bombed.task_id).await.payload else {
        panic!()
    };
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("task operation panicked")),
        "{error:?}"
    );
}
