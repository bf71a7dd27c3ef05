//! Cancellation: a cancel at another instance reaches the operation,
//! written once, even at the payload cap; cooperative (the operation may
//! finish anyway); and it wakes a pending input request.

use std::sync::Arc;

use rmcp::model::TaskStatus;
use serde_json::json;

use super::{capped, elicitation, fast, instance, settled, text, until_input_required};
use crate::mcp::*;
use crate::{FileStore, MemoryStore, TaskStore};

#[tokio::test]
async fn cancel_at_another_instance_reaches_the_operation() {
    let dir = tempfile::tempdir().unwrap();
    let a = instance(dir.path(), "a");
    let b = instance(dir.path(), "b");
    let (saw_tx, saw_rx) = tokio::sync::oneshot::channel();
    let seed = a
        .spawn(TaskOptions::new(), |ctx| {
            Box::pin(async move {
                ctx.cancelled().await;
                assert!(ctx.is_cancel_requested());
                let _ = saw_tx.send(());
                Err(TaskExit::Cancelled)
            })
        })
        .await
        .unwrap();
    b.cancel_task(&seed.task_id).await.unwrap();
    saw_rx.await.unwrap();
    let from_a = settled(&a, &seed.task_id).await;
    let from_b = settled(&b, &seed.task_id).await;
    assert_eq!(from_a.status(), TaskStatus::Cancelled);
    assert_eq!(from_a, from_b);
    // Cancelling a terminal task is acknowledged and changes nothing.
    b.cancel_task(&seed.task_id).await.unwrap();
    assert_eq!(a.get_task(&seed.task_id).await.unwrap(), from_a);
}

/// A `tasks/cancel` repeated (a client's retry) while the operation has not
/// ended yet writes nothing more: the flag is in the stored task already.
/// (Each repeat rewrote it, a durable write and a new revision apiece.)
#[tokio::test]
async fn a_repeated_cancel_writes_the_flag_once() {
    let dir = tempfile::tempdir().unwrap();
    let a = instance(dir.path(), "a");
    let log = Arc::new(crate::EventLog::new());
    let peer = FileStore::builder(dir.path())
        .instance_id("b")
        .sink(log.clone())
        .open()
        .unwrap();
    let b = DurableTaskManager::with_options(Arc::new(peer), fast());
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let seed = a
        .spawn(TaskOptions::new(), |ctx| {
            Box::pin(async move {
                // Told of the cancel, it ends only when the test lets it.
                ctx.cancelled().await;
                let _ = release_rx.await;
                Err(TaskExit::Cancelled)
            })
        })
        .await
        .unwrap();
    let updates = || {
        log.snapshot()
            .iter()
            .filter(|r| r.event.kind == crate::TaskEventKind::Updated)
            .count()
    };
    b.cancel_task(&seed.task_id).await.unwrap();
    assert_eq!(updates(), 1, "the flag written");
    for _ in 0..3 {
        b.cancel_task(&seed.task_id).await.unwrap();
    }
    assert_eq!(updates(), 1, "no write for a cancel asked already");
    let _ = release_tx.send(());
    assert_eq!(
        settled(&a, &seed.task_id).await.status(),
        TaskStatus::Cancelled
    );
}

/// A task whose operation filled it to the payload cap (its largest
/// checkpoint) cannot take the cancel request's flag: it is cancelled
/// outright instead, at its owner and at a peer alike, and the operation
/// at the owner is told. (`tasks/cancel` answered `-32603`, "would be 4137
/// bytes, over the payload limit", and the operation never heard of it,
/// even at the instance asked: the cancel was lost.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_filled_to_the_payload_cap_is_cancelled_all_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (capped(dir.path(), "a"), capped(dir.path(), "b"));
    for (asked, name) in [(&a, "the owner"), (&b, "a peer")] {
        let (filled_tx, filled_rx) = tokio::sync::oneshot::channel();
        let (told_tx, told_rx) = tokio::sync::oneshot::channel();
        let seed = a
            .spawn_resumable("big", json!({}), TaskOptions::new(), move |ctx| {
                Box::pin(async move {
                    // The largest checkpoint the store takes.
                    let mut len = crate::MIN_MAX_PAYLOAD_BYTES;
                    while ctx.checkpoint(json!("c".repeat(len))).await.is_err() {
                        len -= 1;
                    }
                    let _ = filled_tx.send(());
                    ctx.cancelled().await;
                    let _ = told_tx.send(());
                    Err(TaskExit::Cancelled)
                })
            })
            .await
            .unwrap();
        filled_rx.await.unwrap();
        asked
            .cancel_task(&seed.task_id)
            .await
            .unwrap_or_else(|e| panic!("tasks/cancel at {name}: {e:?}"));
        let done = settled(&a, &seed.task_id).await;
        assert_eq!(done.status(), TaskStatus::Cancelled, "{name}");
        if name == "the owner" {
            told_rx.await.expect("the operation is told");
        }
    }
    // Filled by its metadata (a host's), which a cancelled task keeps: it
    // is cancelled without the message that says why. (The outright
    // cancel was refused too, and the cancel lost.)
    let seed = a
        .spawn(TaskOptions::new(), |_ctx| Box::pin(std::future::pending()))
        .await
        .unwrap();
    let id = crate::TaskId::parse(&seed.task_id).unwrap();
    let mut len = crate::MIN_MAX_PAYLOAD_BYTES;
    while a
        .store()
        .update(
            &id,
            crate::TaskUpdate::new().metadata("host", json!("m".repeat(len))),
        )
        .is_err()
    {
        len -= 1;
    }
    b.cancel_task(&seed.task_id)
        .await
        .unwrap_or_else(|e| panic!("tasks/cancel of a task filled by metadata: {e:?}"));
    assert_eq!(
        settled(&a, &seed.task_id).await.status(),
        TaskStatus::Cancelled
    );
}

#[tokio::test]
async fn cancel_is_cooperative_the_operation_may_finish_anyway() {
    let m = DurableTaskManager::with_options(Arc::new(MemoryStore::new()), fast());
    let seed = m
        .spawn(TaskOptions::new(), |ctx| {
            Box::pin(async move {
                ctx.cancelled().await;
                Ok(text("finished despite cancel"))
            })
        })
        .await
        .unwrap();
    m.cancel_task(&seed.task_id).await.unwrap();
    assert_eq!(
        settled(&m, &seed.task_id).await.status(),
        TaskStatus::Completed
    );
}

#[tokio::test]
async fn cancel_wakes_a_pending_input_request() {
    let dir = tempfile::tempdir().unwrap();
    let a = instance(dir.path(), "a");
    let b = instance(dir.path(), "b");
    let seed = a
        .spawn(TaskOptions::new(), |ctx| {
            Box::pin(async move {
                let err = ctx.request_input("k", elicitation("?")).await.unwrap_err();
                assert!(matches!(err, TaskExit::Cancelled));
                Err(err)
            })
        })
        .await
        .unwrap();
    until_input_required(&b, &seed.task_id).await;
    b.cancel_task(&seed.task_id).await.unwrap();
    assert_eq!(
        settled(&a, &seed.task_id).await.status(),
        TaskStatus::Cancelled
    );
}
