//! The manager against real stores: two `FileStore` handles over one
//! directory stand for two server instances.
//!
//! This module holds the helpers the tests share (and the `Flaky` backend
//! that `outcome`, `shutdown` and `logging` use); the tests are in [`outcome`]
//! (a run's outcome stored, refused, tried again; panics), [`cancel`],
//! [`input`] (answers to input requests, within and across instances),
//! [`leases`] (renewals, intervals, orphans), [`errors`] (ids and store
//! errors as MCP errors) and the other submodules.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{CallToolResult, ContentBlock, InputRequest, TaskPayload};
use serde_json::json;

use super::*;
use crate::{FileStore, TaskStore};

mod background;
mod boundary;
mod cancel;
mod errors;
mod feed;
mod input;
mod leases;
mod logging;
// The integration tests' subscriber, one copy for both.
#[path = "../../../tests/common/logged.rs"]
#[allow(dead_code)]
mod logged;
mod outcome;
mod principals;
mod races;
mod resume;
mod shutdown;

/// Polls until `check` yields a value; the bound only guards against a hang.
pub(super) async fn eventually<T, F, Fut>(mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    for _ in 0..3_000 {
        if let Some(value) = check().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition never held");
}

/// Polls `m` until task `id` reads `input_required`.
pub(super) async fn until_input_required<S: crate::TaskStore + 'static>(
    m: &DurableTaskManager<S>,
    id: &str,
) {
    eventually(|| async {
        matches!(
            m.get_task(id).await.unwrap().payload,
            TaskPayload::InputRequired { .. }
        )
        .then_some(())
    })
    .await;
}

/// Spawns on `m` an operation that runs until it is cancelled, then ends
/// as cancelled.
pub(super) async fn until_cancelled<S: TaskStore + 'static>(
    m: &DurableTaskManager<S>,
) -> rmcp::model::Task {
    m.spawn(TaskOptions::new(), |ctx| {
        Box::pin(async move {
            ctx.cancelled().await;
            Err(TaskExit::Cancelled)
        })
    })
    .await
    .unwrap()
}

pub(super) fn fast() -> ManagerOptions {
    ManagerOptions::new().watch_interval(Duration::from_millis(20))
}

pub(super) fn text(s: &str) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(s.to_owned())])
}

pub(super) fn instance(dir: &std::path::Path, name: &str) -> DurableTaskManager<FileStore> {
    let store = FileStore::builder(dir).instance_id(name).open().unwrap();
    DurableTaskManager::with_options(Arc::new(store), fast())
}

/// [`instance`], with the least payload cap a store takes.
fn capped(dir: &std::path::Path, name: &str) -> DurableTaskManager<FileStore> {
    let store = FileStore::builder(dir)
        .instance_id(name)
        .max_payload_bytes(crate::MIN_MAX_PAYLOAD_BYTES)
        .open()
        .unwrap();
    DurableTaskManager::with_options(Arc::new(store), fast())
}

pub(super) async fn settled<S: TaskStore>(
    m: &DurableTaskManager<S>,
    id: &str,
) -> rmcp::model::DetailedTask {
    eventually(|| async {
        let t = m.get_task(id).await.unwrap();
        t.status().is_terminal().then_some(t)
    })
    .await
}

/// [`settled`], then polls until `m` runs task `id` no more (its run
/// forgotten: moments after its outcome is stored). A request for it then
/// reads the store, where before one naming the run could be answered from
/// the run (an update by another principal is, unread).
pub(super) async fn settled_and_forgotten<S: TaskStore>(
    m: &DurableTaskManager<S>,
    id: &str,
) -> rmcp::model::DetailedTask {
    let task = settled(m, id).await;
    let parsed = crate::TaskId::parse(id).unwrap();
    eventually(|| async { m.shared().run_of(&parsed).is_none().then_some(()) }).await;
    task
}

pub(super) fn elicitation(message: &str) -> InputRequest {
    serde_json::from_value(json!({
        "method": "elicitation/create",
        "params": {"message": message, "requestedSchema": {"type": "object", "properties": {}}}
    }))
    .unwrap()
}

/// A `MemoryBackend` whose chosen writes fail, the first `failures` of
/// them, each with an error of its own (as a file store's I/O error would
/// be), as on a disk or a database that is briefly away. A write is chosen
/// by the task it replaces and the one it writes. It can also lose the
/// reply of its first inserts (the task stored, an error answered), fail
/// its first removals, and meet an entry it cannot read in every scan.
pub(super) struct Flaky {
    inner: crate::MemoryBackend,
    failures: std::sync::atomic::AtomicUsize,
    chosen: Box<Chosen>,
    lost_inserts: std::sync::atomic::AtomicUsize,
    failed_removals: std::sync::atomic::AtomicUsize,
    skipping: bool,
}

/// Which writes of a [`Flaky`] backend fail: given the task a write
/// replaces and the one it writes, whether it is one.
type Chosen = dyn Fn(&crate::Task, &crate::Task) -> bool + Send + Sync;

impl Flaky {
    /// Over `inner` (whose clones share its tasks), failing the first
    /// `failures` writes for which `chosen(current, next)` holds.
    pub(super) fn new(
        inner: crate::MemoryBackend,
        failures: usize,
        chosen: impl Fn(&crate::Task, &crate::Task) -> bool + Send + Sync + 'static,
    ) -> Flaky {
        Flaky {
            inner,
            failures: std::sync::atomic::AtomicUsize::new(failures),
            chosen: Box::new(chosen),
            lost_inserts: std::sync::atomic::AtomicUsize::new(0),
            failed_removals: std::sync::atomic::AtomicUsize::new(0),
            skipping: false,
        }
    }

    /// This backend, its first `inserts` inserts stored and answered with
    /// an error (a reply lost), and its first `removals` removals failed.
    pub(super) fn losing(self, inserts: usize, removals: usize) -> Flaky {
        self.lost_inserts
            .store(inserts, std::sync::atomic::Ordering::SeqCst);
        self.failed_removals
            .store(removals, std::sync::atomic::Ordering::SeqCst);
        self
    }

    /// This backend, every scan of it meeting an entry it cannot read.
    pub(super) fn skipping(mut self) -> Flaky {
        self.skipping = true;
        self
    }

    /// A new store's backend whose first `failures` writes of a run's own
    /// outcome fail (a reaper's `orphaned` failure lands).
    pub(super) fn outcomes(failures: usize) -> Flaky {
        Flaky::new(crate::MemoryBackend::new(), failures, |_, next| {
            next.is_terminal() && next.error.as_ref().is_none_or(|e| e["code"] != "orphaned")
        })
    }
}

/// Takes one of `left`: whether there was one.
fn take_one(left: &std::sync::atomic::AtomicUsize) -> bool {
    use std::sync::atomic::Ordering;
    left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl crate::backend::Backend for Flaky {
    fn load(&self, id: &crate::TaskId) -> crate::Result<Option<crate::Task>> {
        self.inner.load(id)
    }
    fn insert(
        &self,
        record: &crate::backend::Record,
        max_active: usize,
    ) -> crate::Result<crate::backend::Insert> {
        let inserted = self.inner.insert(record, max_active)?;
        if take_one(&self.lost_inserts) {
            let op = format!("insert task {}", record.task().id);
            return Err(crate::Error::backend("flaky", op, "the reply was lost"));
        }
        Ok(inserted)
    }
    fn replace(
        &self,
        current: &crate::Task,
        next: &crate::backend::Record,
    ) -> crate::Result<crate::backend::Swap> {
        let fail = (self.chosen)(current, next.task()) && take_one(&self.failures);
        if fail {
            let op = format!("replace task {}", current.id);
            return Err(crate::Error::backend("flaky", op, "away for a moment"));
        }
        self.inner.replace(current, next)
    }
    fn remove(&self, current: &crate::Task) -> crate::Result<crate::backend::Swap> {
        if take_one(&self.failed_removals) {
            let op = format!("remove task {}", current.id);
            return Err(crate::Error::backend("flaky", op, "away for a moment"));
        }
        self.inner.remove(current)
    }
    fn scan(&self, scan: &crate::backend::Scan) -> crate::Result<crate::backend::Scanned> {
        let mut scanned = self.inner.scan(scan)?;
        if self.skipping {
            scanned.skipped.push(crate::backend::Skipped::new(
                None,
                "flaky/entry",
                "does not read",
                crate::UnreadableAction::LeftInPlace,
            ));
        }
        Ok(scanned)
    }
}
