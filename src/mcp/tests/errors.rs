//! Errors as MCP errors: unknown, invalid and expired task ids are invalid
//! params; a store's errors are internal errors that carry the cause.

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::ErrorCode;
use time::OffsetDateTime;

use super::{fast, settled, text};
use crate::mcp::*;
use crate::{Clock, ManualClock, MemoryStore};

#[tokio::test]
async fn unknown_and_invalid_ids_are_invalid_params() {
    let m = DurableTaskManager::new(Arc::new(MemoryStore::new()));
    for id in ["nope", "../etc/passwd", ""] {
        for err in [
            m.get_task(id).await.unwrap_err(),
            m.cancel_task(id).await.unwrap_err(),
            m.update_task(id, []).await.unwrap_err(),
        ] {
            assert_eq!(err.code, ErrorCode::INVALID_PARAMS, "{id:?}");
        }
    }
}

#[tokio::test]
async fn expired_tasks_are_invalid_params() {
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let store = MemoryStore::builder()
        .clock(clock.clone() as Arc<dyn Clock>)
        .build()
        .unwrap();
    let m = DurableTaskManager::with_options(Arc::new(store), fast());
    let seed = m
        .spawn(TaskOptions::new().with_ttl_ms(1_000), |_ctx| {
            Box::pin(async { Ok(text("x")) })
        })
        .await
        .unwrap();
    settled(&m, &seed.task_id).await;
    clock.advance(Duration::from_millis(1_000));
    let err = m.get_task(&seed.task_id).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::INVALID_PARAMS);
}

/// A backend whose every call fails with an I/O error.
struct Broken;

impl crate::backend::Backend for Broken {
    fn load(&self, _: &crate::TaskId) -> crate::Result<Option<crate::Task>> {
        Err(broken())
    }
    fn insert(
        &self,
        _: &crate::backend::Record,
        _: usize,
    ) -> crate::Result<crate::backend::Insert> {
        Err(broken())
    }
    fn replace(
        &self,
        _: &crate::Task,
        _: &crate::backend::Record,
    ) -> crate::Result<crate::backend::Swap> {
        Err(broken())
    }
    fn remove(&self, _: &crate::Task) -> crate::Result<crate::backend::Swap> {
        Err(broken())
    }
    fn scan(&self, _: &crate::backend::Scan) -> crate::Result<crate::backend::Scanned> {
        Err(broken())
    }
}

fn broken() -> crate::Error {
    crate::Error::Io {
        op: "read",
        path: "/broken".into(),
        source: std::io::Error::other("disk on fire"),
    }
}

#[tokio::test]
async fn store_errors_are_internal_errors_with_the_cause() {
    let m = DurableTaskManager::new(Arc::new(
        crate::Store::with_backend(Broken).build().unwrap(),
    ));
    let errors = [
        m.get_task("t").await.unwrap_err(),
        m.cancel_task("t").await.unwrap_err(),
        m.update_task("t", []).await.unwrap_err(),
        m.spawn(TaskOptions::new(), |_ctx| Box::pin(async { Ok(text("x")) }))
            .await
            .unwrap_err(),
    ];
    for err in errors {
        assert_eq!(err.code, ErrorCode::INTERNAL_ERROR);
        assert!(err.message.contains("disk on fire"), "{err:?}");
        assert!(
            err.data.unwrap()["cause"]
                .as_str()
                .unwrap()
                .contains("disk on fire")
        );
    }
    assert_eq!(m.running_task_count(), 0);
}
