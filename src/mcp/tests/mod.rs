//! The manager against real stores: two `FileStore` handles over one
//! directory stand for two server instances.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rmcp::ErrorData as McpError;
use rmcp::model::{CallToolResult, ContentBlock, ErrorCode, InputRequest, TaskPayload, TaskStatus};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::*;
use crate::{Clock, FileStore, ManualClock, MemoryStore, NewTask, TaskStore};

mod background;
mod boundary;
mod feed;
// The integration tests' subscriber, one copy for both.
#[path = "../../../tests/common/logged.rs"]
#[allow(dead_code)]
mod logged;
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

pub(super) fn elicitation(message: &str) -> InputRequest {
    serde_json::from_value(json!({
        "method": "elicitation/create",
        "params": {"message": message, "requestedSchema": {"type": "object", "properties": {}}}
    }))
    .unwrap()
}

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

/// A `MemoryBackend` whose first `failures` terminal writes fail, as on a
/// disk or a database that is briefly away.
pub(super) struct Flaky {
    pub(super) inner: crate::MemoryBackend,
    pub(super) failures: std::sync::atomic::AtomicUsize,
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
        self.inner.insert(record, max_active)
    }
    fn replace(
        &self,
        current: &crate::Task,
        next: &crate::backend::Record,
    ) -> crate::Result<crate::backend::Swap> {
        use std::sync::atomic::Ordering;
        // The run's own outcome only: a reaper's `orphaned` failure lands.
        let own = next.task().is_terminal()
            && next
                .task()
                .error
                .as_ref()
                .is_none_or(|e| e["code"] != "orphaned");
        let fail = own
            && self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if fail {
            let op = format!("replace task {}", current.id);
            return Err(crate::Error::backend("flaky", op, "away for a moment"));
        }
        self.inner.replace(current, next)
    }
    fn remove(&self, current: &crate::Task) -> crate::Result<crate::backend::Swap> {
        self.inner.remove(current)
    }
    fn scan(&self, scan: &crate::backend::Scan) -> crate::Result<crate::backend::Scanned> {
        self.inner.scan(scan)
    }
}

/// While a run's outcome write is tried again, its lease is renewed: the
/// tries outlast the lease, and the manager's own reaper must not fail the
/// task as orphaned meanwhile. (Only running operations were renewed: the
/// completed outcome was lost, the task failed `orphaned`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_outcome_write_is_tried_again_keeps_its_lease() {
    // Five failed tries wait 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s: past a 1 s lease.
    completes_through_failed_outcome_writes(5).await;
}

/// A task whose outcome write fails `failures` times, on a store with a
/// 1 s lease and a manager that reaps every 50 ms, completes with its
/// result.
async fn completes_through_failed_outcome_writes(failures: usize) {
    let store = crate::Store::with_backend(Flaky {
        inner: crate::MemoryBackend::new(),
        failures: std::sync::atomic::AtomicUsize::new(failures),
    })
    .lease(Duration::from_secs(1))
    .build()
    .unwrap();
    let m = DurableTaskManager::with_options(
        Arc::new(store),
        fast().reap_interval(Duration::from_millis(50)),
    );
    let seed = m
        .spawn(TaskOptions::new(), |_ctx| {
            Box::pin(async { Ok(text("42")) })
        })
        .await
        .unwrap();
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
    let store = crate::Store::with_backend(Flaky {
        inner: crate::MemoryBackend::new(),
        failures: std::sync::atomic::AtomicUsize::new(3),
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

/// Two peers answer the same input key before the owner looks, and then
/// the owner itself: the first answer stands, as `rmcp` keeps the first it
/// delivers, and the later ones are acknowledged and ignored. (The second
/// peer's replaced the first in the store, though both were acknowledged;
/// and once that was fixed, the owner's own answer still replaced a peer's
/// that it had not yet taken, and the operation got the owner's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_of_two_peers_answers_to_one_key_stands() {
    let dir = tempfile::tempdir().unwrap();
    // The owner looks only at its run's start and then once an hour: the
    // answers wait in the store.
    let hour = Duration::from_secs(3_600);
    let store = FileStore::builder(dir.path())
        .instance_id("a")
        .lease(3 * hour)
        .open()
        .unwrap();
    let a = DurableTaskManager::with_options(
        Arc::new(store),
        ManagerOptions::new()
            .watch_interval(hour)
            .reap_interval(hour),
    );
    let (b, c) = (instance(dir.path(), "b"), instance(dir.path(), "c"));
    let seed = a
        .spawn(TaskOptions::new(), move |ctx| {
            Box::pin(async move {
                let answer = ctx.request_input("k", elicitation("?")).await?;
                Ok(text(&answer.to_string()))
            })
        })
        .await
        .unwrap();
    until_input_required(&b, &seed.task_id).await;
    for (peer, answer) in [(&b, "first"), (&c, "second")] {
        peer.update_task(&seed.task_id, [("k".to_owned(), json!(answer))])
            .await
            .unwrap();
    }
    let id = crate::TaskId::parse(&seed.task_id).unwrap();
    let stored = b.store().get(&id).unwrap().unwrap();
    assert_eq!(
        stored
            .metadata
            .get(&format!("{INPUT_RESPONSE_KEY_PREFIX}k")),
        Some(&json!("first")),
        "{:?}",
        stored.metadata
    );
    // The owner, which has not looked since: it takes the stored answer.
    a.update_task(&seed.task_id, [("k".to_owned(), json!("third"))])
        .await
        .unwrap();
    let TaskPayload::Completed { result } = settled(&a, &seed.task_id).await.payload else {
        panic!("not completed")
    };
    assert_eq!(result["content"][0]["text"], "\"first\"");
}

/// A one-byte answer to a task whose input request filled it to the
/// payload cap, given to another instance, cannot be carried to the owner
/// there (a peer's copy of it grows the task), while the owner takes it:
/// the peer's refusal says so as the server's limit (`-32603`, naming the
/// task's size), not as the client's bad input (`-32602`, "the task store
/// refuses it", which it was). The owner then takes the same answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_cannot_carry_a_small_answer_says_it_is_the_servers_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (capped(dir.path(), "a"), capped(dir.path(), "b"));
    let seed = a
        .spawn(TaskOptions::new(), move |ctx| {
            Box::pin(async move {
                // The largest request the store takes.
                let mut len = crate::MIN_MAX_PAYLOAD_BYTES;
                loop {
                    match ctx.request_input("k", elicitation(&"q".repeat(len))).await {
                        Ok(answer) => return Ok(text(&answer.to_string())),
                        Err(TaskExit::Error(_)) => len -= 1,
                        Err(e) => return Err(e),
                    }
                }
            })
        })
        .await
        .unwrap();
    until_input_required(&a, &seed.task_id).await;
    let refused = b
        .update_task(&seed.task_id, [("k".to_owned(), json!("y"))])
        .await
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::INTERNAL_ERROR, "{refused:?}");
    assert!(
        refused.message.contains("payload") && refused.message.contains(&seed.task_id),
        "{refused:?}"
    );
    a.update_task(&seed.task_id, [("k".to_owned(), json!("y"))])
        .await
        .unwrap();
    assert_eq!(
        settled(&a, &seed.task_id).await.status(),
        TaskStatus::Completed
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

/// An answer sent to a peer is stored once the owner has taken it: its
/// copy under `mcp.inputResponse.<key>` is cleared by the owner's write
/// that records it, so an answer over half the payload cap is taken and
/// delivered. One nested deeper than the owner's record can hold is
/// refused by the peer with `-32602`, not acknowledged. (The copy stayed
/// for the task's life: an answer that fit once but not twice was
/// acknowledged to the client and never delivered, the task left
/// `input_required`; so was one 99 or 100 levels deep.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_through_a_peer_is_stored_once_and_one_too_deep_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cap = 64 * 1024;
    let open = |name: &str| {
        let store = FileStore::builder(dir.path())
            .instance_id(name)
            .max_payload_bytes(cap)
            .open()
            .unwrap();
        DurableTaskManager::with_options(Arc::new(store), fast())
    };
    let (owner, peer) = (open("owner"), open("peer"));
    let seed = owner
        .spawn(TaskOptions::new(), |ctx| {
            Box::pin(async move {
                let answer = ctx.request_input("k", elicitation("big?")).await?;
                let len = answer["blob"].as_str().map_or(0, str::len);
                Ok(text(&len.to_string()))
            })
        })
        .await
        .unwrap();
    until_input_required(&peer, &seed.task_id).await;
    let mut deep = json!("bottom");
    for _ in 0..crate::MAX_DEPTH - 1 {
        deep = json!([deep]);
    }
    let refused = peer
        .update_task(&seed.task_id, [("k".to_owned(), deep)])
        .await
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::INVALID_PARAMS, "{refused:?}");
    // One larger than the store takes is the client's to fix too: invalid
    // params, naming the task, not an internal error.
    let too_big = json!({"blob": "x".repeat(cap + 1)});
    let refused = peer
        .update_task(&seed.task_id, [("k".to_owned(), too_big)])
        .await
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::INVALID_PARAMS, "{refused:?}");
    assert_eq!(
        refused.data.as_ref().unwrap()["taskId"],
        seed.task_id.as_str()
    );
    let blob = "x".repeat(cap * 3 / 5);
    peer.update_task(&seed.task_id, [("k".to_owned(), json!({"blob": blob}))])
        .await
        .unwrap();
    let TaskPayload::Completed { result } = settled(&peer, &seed.task_id).await.payload else {
        panic!("not completed")
    };
    assert_eq!(result["content"][0]["text"], blob.len().to_string());
}

/// What the store refuses of a client's input is the client's to fix,
/// `-32602`, on every path that stores it: a tool call's task too large
/// to store (no task is made), and an answer too large, sent to the
/// instance that runs the task (naming it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_the_store_refuses_is_invalid_params_at_a_spawn_and_at_the_owner() {
    let cap = 4 * 1024;
    let store = MemoryStore::builder()
        .max_payload_bytes(cap)
        .build()
        .unwrap();
    let m = DurableTaskManager::with_options(Arc::new(store), fast());
    let big = json!({"blob": "x".repeat(cap + 1)});
    let refused = m
        .spawn_resumable("k", big.clone(), TaskOptions::new(), |_ctx| {
            Box::pin(std::future::pending())
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::INVALID_PARAMS, "{refused:?}");
    let seed = m
        .spawn(TaskOptions::new(), |ctx| {
            Box::pin(async move {
                ctx.request_input("k", elicitation("big?")).await?;
                Ok(text("answered"))
            })
        })
        .await
        .unwrap();
    until_input_required(&m, &seed.task_id).await;
    let refused = m
        .update_task(&seed.task_id, [("k".to_owned(), big)])
        .await
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::INVALID_PARAMS, "{refused:?}");
    assert_eq!(
        refused.data.as_ref().unwrap()["taskId"],
        seed.task_id.as_str()
    );
}

/// The owner's write recording an answer takes no more room than the
/// peer's write that stored its copy: it clears the copy to `null`, the
/// key's record held `null` for it, and it sheds the key's outstanding
/// request. So the largest answer a peer's copy holds is delivered, also
/// while another request stays outstanding (a write that leaves none
/// sheds them all), and no answer a peer acknowledged is refused by the
/// owner's record and tried again for ever. (With the cleared copy made
/// 512 bytes instead of `null`, the answer is never recorded, and this
/// fails.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_answer_a_peer_stores_is_delivered() {
    let cap = 8 * 1024;
    let backend = Arc::new(crate::MemoryBackend::new());
    let open = |name: &str| {
        let store = crate::Store::with_backend(Arc::clone(&backend))
            .instance_id(name)
            .max_payload_bytes(cap)
            .build()
            .unwrap();
        DurableTaskManager::with_options(Arc::new(store), fast())
    };
    let (owner, peer) = (open("owner"), open("peer"));
    let seed = owner
        .spawn(TaskOptions::new(), |ctx| {
            Box::pin(async move {
                let (k, other) = tokio::join!(
                    ctx.request_input("k", elicitation("big?")),
                    ctx.request_input("other", elicitation("and?")),
                );
                let blob = k?["blob"].as_str().map_or(0, str::len);
                Ok(text(&format!("{blob} {}", other?["v"])))
            })
        })
        .await
        .unwrap();
    let outstanding = |n: usize| {
        let peer = peer.clone();
        let id = seed.task_id.clone();
        async move {
            eventually(|| async {
                match peer.get_task(&id).await.unwrap().payload {
                    TaskPayload::InputRequired { input_requests } => {
                        (input_requests.len() == n).then_some(())
                    }
                    _ => None,
                }
            })
            .await;
        }
    };
    outstanding(2).await;
    // The largest answer the peer's copy holds: each larger one is refused
    // and stores nothing.
    let mut size = cap;
    loop {
        let answer = json!({"blob": "x".repeat(size)});
        match peer
            .update_task(&seed.task_id, [("k".to_owned(), answer)])
            .await
        {
            Ok(()) => break,
            // Too large for the task, or (within a request's size of
            // fitting) for the peer's copy alone.
            Err(e) => {
                let full = e.data.as_ref().is_some_and(|d| d["code"] == "taskFull");
                assert!(e.code == ErrorCode::INVALID_PARAMS || full, "{e:?}");
                size -= 1;
            }
        }
    }
    // Recorded by the owner: one request left.
    outstanding(1).await;
    peer.update_task(&seed.task_id, [("other".to_owned(), json!({"v": 1}))])
        .await
        .unwrap();
    let TaskPayload::Completed { result } = settled(&owner, &seed.task_id).await.payload else {
        panic!("not completed")
    };
    assert_eq!(result["content"][0]["text"], format!("{size} 1"));
}

#[tokio::test]
async fn input_round_trip_in_the_same_instance_and_across_instances() {
    let dir = tempfile::tempdir().unwrap();
    let a = instance(dir.path(), "a");
    let b = instance(dir.path(), "b");
    let seed = a
        .spawn(TaskOptions::new(), |ctx| {
            Box::pin(async move {
                let first = ctx.request_input("k1", elicitation("first?")).await?;
                let second = ctx.request_input("k2", elicitation("second?")).await?;
                Ok(text(&format!("{} {}", first["v"], second["v"])))
            })
        })
        .await
        .unwrap();
    for (key, via) in [("k1", &a), ("k2", &b)] {
        // Both instances see the outstanding request.
        eventually(|| async {
            match b.get_task(&seed.task_id).await.unwrap().payload {
                TaskPayload::InputRequired { input_requests } => {
                    input_requests.contains_key(key).then_some(())
                }
                _ => None,
            }
        })
        .await;
        via.update_task(
            &seed.task_id,
            [
                (key.to_owned(), json!({"v": key})),
                ("unknown".to_owned(), json!(0)),
            ],
        )
        .await
        .unwrap();
    }
    let TaskPayload::Completed { result } = settled(&b, &seed.task_id).await.payload else {
        panic!()
    };
    assert_eq!(result["content"][0]["text"], "\"k1\" \"k2\"");
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

#[tokio::test]
async fn a_dead_owners_task_is_reported_orphaned_once_its_lease_lapses() {
    let dir = tempfile::tempdir().unwrap();
    // Manual time in the past: the lease looks lapsed by the wall clock, so
    // the reaper's own check (by the store's clock) is what decides.
    let clock = Arc::new(ManualClock::new(
        time::macros::datetime!(2001-01-01 0:00 UTC),
    ));
    let open = |name: &str| {
        FileStore::builder(dir.path())
            .instance_id(name)
            .clock(clock.clone() as Arc<dyn Clock>)
            .lease(Duration::from_secs(10))
            .open()
            .unwrap()
    };
    let dead = open("dead");
    let task = dead.create(NewTask::new()).unwrap();
    let live = DurableTaskManager::with_options(Arc::new(open("live")), fast());
    let id = task.id.as_str();
    assert_eq!(
        live.get_task(id).await.unwrap().status(),
        TaskStatus::Working
    );
    clock.advance(Duration::from_secs(10));
    let TaskPayload::Failed { error } = live.get_task(id).await.unwrap().payload else {
        panic!()
    };
    assert_eq!(error["code"], -32603);
    assert_eq!(error["data"]["code"], "orphaned");
    assert_eq!(error["data"]["owner"], "dead");
}

/// `tasks/get` of an orphan reaps that task and no other: a client's poll
/// costs one task's write, whatever else the store holds. (It ran a whole
/// reap pass inside the request: a scan of every running task and a write
/// per orphan, one pass per concurrent poll; here the other four orphans
/// were reaped by the first `tasks/get`.)
#[tokio::test]
async fn a_get_of_an_orphan_reaps_that_task_alone() {
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let backend = Arc::new(crate::MemoryBackend::new());
    let open = |name: &str| {
        crate::Store::with_backend(Arc::clone(&backend))
            .clock(clock.clone() as Arc<dyn Clock>)
            .instance_id(name)
            .build()
            .unwrap()
    };
    let dead = open("dead");
    let ids: Vec<crate::TaskId> = (0..5)
        .map(|_| dead.create(NewTask::new()).unwrap().id)
        .collect();
    clock.advance(Duration::from_secs(60));
    // Its first reap is a reap interval (5 s) away.
    let live = DurableTaskManager::with_options(Arc::new(open("live")), fast());
    let TaskPayload::Failed { error } = live.get_task(ids[0].as_str()).await.unwrap().payload
    else {
        panic!("task {} was not reaped", ids[0])
    };
    assert_eq!(error["data"]["code"], "orphaned");
    let reaped: Vec<&crate::TaskId> = ids[1..]
        .iter()
        .filter(|id| live.store().get(id).unwrap().unwrap().is_terminal())
        .collect();
    assert!(
        reaped.is_empty(),
        "tasks/get of task {} reaped other tasks too: {reaped:?}",
        ids[0]
    );
}

#[tokio::test]
async fn running_tasks_keep_their_lease() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::builder(dir.path())
        .instance_id("a")
        .lease(Duration::from_millis(300))
        .open()
        .unwrap();
    let m = DurableTaskManager::with_options(Arc::new(store), fast());
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let seed = m
        .spawn(TaskOptions::new(), |_ctx| {
            Box::pin(async move {
                let _ = go_rx.await;
                Ok(text("done"))
            })
        })
        .await
        .unwrap();
    let first = m
        .store()
        .get(&crate::TaskId::parse(&seed.task_id).unwrap())
        .unwrap()
        .unwrap();
    // Renewed: the lease moves forward while the task runs.
    eventually(|| async {
        let now = m.store().get(&first.id).unwrap().unwrap();
        (now.lease_expires_at > first.lease_expires_at).then_some(())
    })
    .await;
    assert_eq!(m.running_task_count(), 1);
    go_tx.send(()).unwrap();
    assert_eq!(
        settled(&m, &seed.task_id).await.status(),
        TaskStatus::Completed
    );
}

/// Intervals of `Duration::MAX` (a host's "never") hold no lease renewal
/// up: the next claim, reap and sweep are taken as far off, not added to
/// the time. (The addition overflowed, "overflow when adding duration to
/// instant": the background task panicked, and the renewals it ran beside
/// the claims, reaps and sweeps stopped with it, silently; peers then
/// reaped or claimed the live task.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intervals_of_duration_max_stop_no_lease_renewal() {
    for options in [
        fast().reap_interval(Duration::MAX),
        fast().sweep_interval(Duration::MAX),
    ] {
        renewals_go_on(options).await;
    }
}

/// With one interval of `Duration::MAX`, the manager's other passes go
/// on: with no reaps, its sweeps delete an expired task; with no sweeps,
/// its reaps fail an orphan. (The overflow panicked the loop of claims,
/// reaps and sweeps at its first pass; that loop runs as a task of its own
/// now, so the renewals the test above watches would go on without it:
/// only its passes show it is alive.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interval_of_duration_max_stops_no_other_pass() {
    use crate::backend::Backend;
    let backend = Arc::new(crate::MemoryBackend::new());
    let open = |name: &str| {
        crate::Store::with_backend(Arc::clone(&backend))
            .instance_id(name)
            .lease(Duration::from_millis(300))
            .build()
            .unwrap()
    };
    let stored = |id: &crate::TaskId| backend.load(id).unwrap();
    let sweeps = DurableTaskManager::with_options(
        Arc::new(open("sweeps")),
        fast()
            .reap_interval(Duration::MAX)
            .sweep_interval(Duration::from_millis(20)),
    );
    let expiring = open("other")
        .create(NewTask::new().ttl(Duration::from_millis(1)))
        .unwrap();
    eventually(|| async { stored(&expiring.id).is_none().then_some(()) }).await;
    sweeps.shutdown().await;
    let reaps = DurableTaskManager::with_options(
        Arc::new(open("reaps")),
        fast()
            .sweep_interval(Duration::MAX)
            .reap_interval(Duration::from_millis(20)),
    );
    let orphan = open("dead").create(NewTask::new()).unwrap();
    eventually(|| async {
        stored(&orphan.id)
            .is_some_and(|task| task.status == crate::TaskStatus::Failed)
            .then_some(())
    })
    .await;
    reaps.shutdown().await;
}

/// A renewal period as long as the lease (a host's setting) does not stop
/// the renewals of a running task's lease: the period is at most a third
/// of the lease, and renewals go on. (With `renew_interval` of a minute
/// over a 600 ms lease, no renewal came before the lease lapsed, and a
/// peer could reap or claim the live task.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intervals_as_long_as_the_lease_still_keep_it() {
    renewals_go_on(fast().renew_interval(Duration::from_secs(60))).await;
}

/// A manager with `options`, over a store of 600 ms leases, renews the
/// lease of the task it runs twice (the first renewal is not the only
/// one), and the task is then cancelled as usual.
async fn renewals_go_on(options: ManagerOptions) {
    let store = MemoryStore::builder()
        .lease(Duration::from_millis(600))
        .build()
        .unwrap();
    let m = DurableTaskManager::with_options(Arc::new(store), options.clone());
    let seed = until_cancelled(&m).await;
    let id = crate::TaskId::parse(&seed.task_id).unwrap();
    let mut seen = m.store().get(&id).unwrap().unwrap().lease_expires_at;
    for _ in 0..2 {
        seen = eventually(|| async {
            let now = m.store().get(&id).unwrap().unwrap().lease_expires_at;
            (now > seen).then_some(now)
        })
        .await;
    }
    m.cancel_task(&seed.task_id).await.unwrap();
    assert_eq!(
        settled(&m, &seed.task_id).await.status(),
        TaskStatus::Cancelled,
        "{options:?}"
    );
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

/// A `tasks/cancel` or `tasks/update` sent to the owning instance of a
/// task it has no run of (its outcome write failed for good, say) leaves
/// the task's lease as it is: a client's request says nothing about
/// whether the owner is alive. (Each renewed it, so a client that kept
/// asking kept the reaper away.)
#[tokio::test]
async fn a_request_for_a_task_the_owner_no_longer_runs_renews_nothing() {
    let clock = ManualClock::new(OffsetDateTime::UNIX_EPOCH + Duration::from_secs(1_000_000));
    let store = MemoryStore::builder()
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let store = Arc::new(store);
    let m = DurableTaskManager::with_options(Arc::clone(&store), fast());
    // Made by the manager's own handle, asking for input, with no run here.
    let task = store.create(NewTask::new()).unwrap();
    let asked = store
        .update(
            &task.id,
            crate::TaskUpdate::new()
                .status(crate::TaskStatus::InputRequired)
                .input_requests(
                    serde_json::to_value(
                        [("k", elicitation("q?"))]
                            .into_iter()
                            .collect::<std::collections::BTreeMap<_, _>>(),
                    )
                    .unwrap(),
                ),
        )
        .unwrap()
        .into_task();
    let id = task.id.to_string();
    let stored = |store: &MemoryStore| store.get(&task.id).unwrap().unwrap();
    clock.advance(Duration::from_secs(10));
    m.update_task(&id, [("k".to_owned(), json!({"v": 1}))])
        .await
        .unwrap();
    let answered = stored(&store);
    assert!(answered.revision > asked.revision, "the answer was written");
    assert_eq!(
        answered.lease_expires_at, asked.lease_expires_at,
        "an update"
    );
    clock.advance(Duration::from_secs(10));
    m.cancel_task(&id).await.unwrap();
    let cancelled = stored(&store);
    assert!(
        cancelled.revision > answered.revision,
        "the cancel was written"
    );
    assert_eq!(
        cancelled.lease_expires_at, asked.lease_expires_at,
        "a cancel"
    );
}
