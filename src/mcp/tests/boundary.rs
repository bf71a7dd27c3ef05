//! Boundary values from the wire: huge ids, TTLs and poll intervals out of
//! range, malformed params.

use std::sync::Arc;

use rmcp::model::{CustomRequest, ErrorCode};
use serde_json::json;

use super::{eventually, text};
use crate::MemoryStore;
use crate::mcp::{
    DurableTaskManager, MAX_WIRE_MS, MIN_POLL_INTERVAL_MS, MIN_TTL_MS, TaskOptions,
    invalid_task_request,
};

#[tokio::test]
async fn a_huge_id_comes_back_shortened() {
    let m = DurableTaskManager::new(Arc::new(MemoryStore::new()));
    let huge = "x".repeat(1_000_000);
    for err in [
        m.get_task(&huge).await.unwrap_err(),
        m.cancel_task(&huge).await.unwrap_err(),
        m.update_task(&huge, []).await.unwrap_err(),
    ] {
        assert_eq!(err.code, ErrorCode::INVALID_PARAMS);
        assert!(err.message.len() < 300, "{} bytes", err.message.len());
        assert!(err.message.contains("xxx..."), "{}", err.message);
    }
    // A valid id that names no task is echoed whole (at most 128 bytes).
    let err = m.get_task(&"y".repeat(128)).await.unwrap_err();
    assert_eq!(err.message, format!("unknown task: {}", "y".repeat(128)));
}

#[tokio::test]
async fn ttl_and_poll_interval_are_held_to_their_bounds() {
    // A clock that stands still: the next tasks/get finds the task however
    // long the machine stalls between the two.
    let clock = Arc::new(crate::ManualClock::new(time::OffsetDateTime::now_utc()));
    let store = MemoryStore::builder().clock(clock).build().unwrap();
    let m = DurableTaskManager::new(Arc::new(store));
    let seed = m
        .spawn(
            TaskOptions::new().with_ttl_ms(0).with_poll_interval_ms(0),
            |_ctx| Box::pin(async { Ok(text("x")) }),
        )
        .await
        .unwrap();
    assert_eq!(seed.ttl_ms, Some(MIN_TTL_MS));
    assert_eq!(seed.poll_interval_ms, Some(MIN_POLL_INTERVAL_MS));
    // The next tasks/get finds it.
    m.get_task(&seed.task_id).await.unwrap();

    let longest = m
        .spawn(TaskOptions::new().with_ttl_ms(MAX_WIRE_MS), |_ctx| {
            Box::pin(async { Ok(text("x")) })
        })
        .await
        .unwrap();
    assert_eq!(longest.ttl_ms, Some(MAX_WIRE_MS));
    eventually(|| async { (m.running_task_count() == 0).then_some(()) }).await;
    for options in [
        TaskOptions::new().with_ttl_ms(MAX_WIRE_MS + 1),
        TaskOptions::new().with_ttl_ms(u64::MAX),
        TaskOptions::new().with_poll_interval_ms(u64::MAX),
    ] {
        let err = m
            .spawn(options, |_ctx| Box::pin(async { Ok(text("x")) }))
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::INVALID_PARAMS, "{err:?}");
    }
    assert_eq!(
        m.running_task_count(),
        0,
        "nothing spawned for a refused one"
    );
}

#[test]
fn malformed_task_params_are_invalid_params() {
    for (method, params, why) in [
        (
            "tasks/get",
            Some(json!({"taskId": 5})),
            "must be a string, not 5",
        ),
        ("tasks/cancel", Some(json!({"taskId": null})), "not null"),
        ("tasks/update", Some(json!({})), "missing"),
        ("tasks/get", None, "missing"),
    ] {
        let err = invalid_task_request(&CustomRequest::new(method, params)).unwrap();
        assert_eq!(err.code, ErrorCode::INVALID_PARAMS);
        assert!(
            err.message.contains(method) && err.message.contains(why),
            "{err:?}"
        );
    }
    assert!(invalid_task_request(&CustomRequest::new("tools/other", None)).is_none());
}
