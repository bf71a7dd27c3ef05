//! Graceful shutdown: the grace period, then a release for resumable tasks
//! and a `shutdown` failure for the others.

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{ErrorCode, TaskPayload};
use serde_json::json;

use super::{eventually, fast, settled, text};
use crate::mcp::{DurableTaskManager, ShutdownReport, TaskExit, TaskOptions};
use crate::{FileStore, TaskId, TaskStatus, TaskStore};

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

    let report = a.shutdown().await;
    let want = ShutdownReport {
        running: 3,
        released: 1,
        failed: 1,
    };
    assert_eq!(report, want);
    assert_eq!(a.running_task_count(), 0);

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
