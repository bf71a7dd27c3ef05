//! Resumable tasks: claims, checkpoints, fencing, and input across owners.
//! Two `FileStore` handles over one directory, on one `ManualClock`, stand
//! for two instances; the first one's background loop is too slow to
//! notice anything, as if it were stopped.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{ErrorCode, TaskPayload, TaskStatus};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use super::{elicitation, eventually, fast, settled, text};
use crate::mcp::{DurableTaskManager, INPUT_KEYS_KEY, ManagerOptions, TaskContext, TaskExit};
use crate::{Clock, FileStore, ManualClock, TaskId, TaskStore};

const LEASE: Duration = Duration::from_secs(10);

fn open(dir: &Path, clock: &Arc<ManualClock>, name: &str) -> Arc<FileStore> {
    Arc::new(
        FileStore::builder(dir)
            .instance_id(name)
            .clock(clock.clone() as Arc<dyn Clock>)
            .lease(LEASE)
            .open()
            .unwrap(),
    )
}

/// An instance whose loop never comes round: it neither renews nor
/// watches, as if its process were stopped.
fn frozen(dir: &Path, clock: &Arc<ManualClock>, name: &str) -> DurableTaskManager<FileStore> {
    let hour = Duration::from_secs(3_600);
    DurableTaskManager::with_options(
        open(dir, clock, name),
        ManagerOptions::new()
            .watch_interval(hour)
            .renew_interval(hour)
            .reap_interval(hour),
    )
}

fn live(dir: &Path, clock: &Arc<ManualClock>, name: &str) -> DurableTaskManager<FileStore> {
    DurableTaskManager::with_options(
        open(dir, clock, name),
        fast().reap_interval(Duration::from_millis(20)),
    )
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(OffsetDateTime::now_utc()))
}

fn stored<S: TaskStore>(m: &DurableTaskManager<S>, id: &str) -> crate::Task {
    m.store().get(&TaskId::parse(id).unwrap()).unwrap().unwrap()
}

/// What a resumed run saw: its epoch, attempt, input and checkpoint.
fn seen(ctx: &TaskContext) -> Value {
    json!({
        "epoch": ctx.epoch(),
        "attempt": ctx.attempt(),
        "resumed": ctx.is_resumed(),
        "kind": ctx.kind(),
        "input": ctx.input(),
        "checkpoint": ctx.last_checkpoint(),
    })
}

#[tokio::test]
async fn a_dead_owners_task_is_claimed_and_resumed_from_its_checkpoint_and_the_old_owner_is_fenced()
{
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let a = frozen(dir.path(), &clock, "a");
    let (saved_tx, saved_rx) = oneshot::channel();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let (late_tx, mut late_rx) = mpsc::unbounded_channel();
    let seed = a
        .spawn_resumable(
            "count",
            json!({"to": 5}),
            crate::mcp::TaskOptions::new(),
            move |ctx| {
                Box::pin(async move {
                    assert_eq!(seen(&ctx)["attempt"], 1);
                    ctx.checkpoint(json!({"at": 2})).await?;
                    let _ = saved_tx.send(());
                    let _ = go_rx.await;
                    // Woken after another instance took the task over: this
                    // write is refused, and the outcome too.
                    let _ = late_tx.send(ctx.checkpoint(json!({"at": 99})).await);
                    Ok(text("from a"))
                })
            },
        )
        .await
        .unwrap();
    saved_rx.await.unwrap();
    assert_eq!(stored(&a, &seed.task_id).epoch, 1);

    let b = live(dir.path(), &clock, "b");
    let (resumed_tx, mut resumed_rx) = mpsc::unbounded_channel();
    let (finish_tx, finish_rx) = oneshot::channel::<()>();
    let finish_rx = Arc::new(tokio::sync::Mutex::new(Some(finish_rx)));
    b.register_resume("count", move |ctx| {
        let resumed_tx = resumed_tx.clone();
        let finish_rx = Arc::clone(&finish_rx);
        Box::pin(async move {
            let _ = resumed_tx.send(seen(&ctx));
            if let Some(rx) = finish_rx.lock().await.take() {
                let _ = rx.await;
            }
            Ok(text(&format!(
                "from b at {}",
                ctx.last_checkpoint().unwrap()["at"]
            )))
        })
    });
    clock.advance(LEASE);
    let resumed = resumed_rx.recv().await.unwrap();
    assert_eq!(
        resumed,
        json!({"epoch": 2, "attempt": 2, "resumed": true, "kind": "count",
               "input": {"to": 5}, "checkpoint": {"at": 2}})
    );
    let claimed = stored(&b, &seed.task_id);
    assert_eq!((claimed.epoch, claimed.owner.as_deref()), (2, Some("b")));
    assert_eq!(b.running_task_count(), 1);

    // The old owner wakes: its checkpoint and its outcome are refused, its
    // run is dropped without a trace.
    go_tx.send(()).unwrap();
    let late = late_rx.recv().await.unwrap().unwrap_err();
    assert_eq!(late.code, ErrorCode::INTERNAL_ERROR);
    assert_eq!(late.data.as_ref().unwrap()["code"], "fenced");
    eventually(|| async { (a.running_task_count() == 0).then_some(()) }).await;
    let now = stored(&b, &seed.task_id);
    assert_eq!(now.status, crate::TaskStatus::Working);
    assert_eq!(
        now.revision, claimed.revision,
        "nothing of the old run landed"
    );
    assert_eq!(
        now.resume.as_ref().unwrap().checkpoint,
        Some(json!({"at": 2}))
    );

    finish_tx.send(()).unwrap();
    let done = settled(&b, &seed.task_id).await;
    let TaskPayload::Completed { result } = done.payload else {
        panic!("{done:?}")
    };
    assert_eq!(result["content"][0]["text"], "from b at 2");
    assert_eq!(
        a.get_task(&seed.task_id).await.unwrap().payload,
        TaskPayload::Completed { result }
    );
}

#[tokio::test]
async fn an_old_owner_that_finishes_after_the_claim_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let a = frozen(dir.path(), &clock, "a");
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let seed = a
        .spawn_resumable(
            "k",
            json!(null),
            crate::mcp::TaskOptions::new(),
            move |_ctx| {
                Box::pin(async move {
                    let _ = go_rx.await;
                    Ok(text("from a"))
                })
            },
        )
        .await
        .unwrap();
    let b = live(dir.path(), &clock, "b");
    let (claimed_tx, mut claimed_rx) = mpsc::unbounded_channel();
    b.register_resume("k", move |ctx| {
        let claimed_tx = claimed_tx.clone();
        Box::pin(async move {
            let _ = claimed_tx.send(());
            ctx.cancelled().await;
            Err(TaskExit::Cancelled)
        })
    });
    clock.advance(LEASE);
    claimed_rx.recv().await.unwrap();
    // The old owner's operation ends with a result: its fenced outcome is
    // refused, so the task keeps running under its new owner.
    go_tx.send(()).unwrap();
    eventually(|| async { (a.running_task_count() == 0).then_some(()) }).await;
    let task = stored(&b, &seed.task_id);
    assert_eq!((task.status, task.epoch), (crate::TaskStatus::Working, 2));
    assert_eq!(task.result, None);
    // The new owner decides the outcome.
    a.cancel_task(&seed.task_id).await.unwrap();
    assert_eq!(
        settled(&b, &seed.task_id).await.status(),
        TaskStatus::Cancelled
    );
}

#[tokio::test]
async fn input_required_survives_its_owner_and_the_answer_reaches_the_resumed_work() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let a = frozen(dir.path(), &clock, "a");
    let ask = |ctx: TaskContext| -> crate::mcp::TaskFuture {
        Box::pin(async move {
            let name = ctx.request_input("name", elicitation("Your name?")).await?;
            // Asking again in the same run is a misuse, as in rmcp.
            assert!(
                ctx.request_input("name", elicitation("Your name?"))
                    .await
                    .is_err()
            );
            Ok(text(&format!(
                "hello {} (attempt {})",
                name["v"],
                ctx.attempt()
            )))
        })
    };
    let seed = a
        .spawn_resumable("ask", json!({}), crate::mcp::TaskOptions::new(), ask)
        .await
        .unwrap();
    let id = seed.task_id.clone();
    eventually(|| async {
        (stored(&a, &id).status == crate::TaskStatus::InputRequired).then_some(())
    })
    .await;
    clock.advance(LEASE);
    // No instance runs it now; a peer without a handler takes the answer.
    let peer = live(dir.path(), &clock, "peer");
    match peer.get_task(&id).await.unwrap().payload {
        TaskPayload::InputRequired { input_requests } => {
            assert_eq!(input_requests.keys().collect::<Vec<_>>(), ["name"]);
        }
        other => panic!("still waiting for input, got {other:?}"),
    }
    peer.update_task(&id, [("name".to_owned(), json!({"v": "Ada"}))])
        .await
        .unwrap();
    assert_eq!(
        stored(&peer, &id).metadata["mcp.inputResponse.name"],
        json!({"v": "Ada"})
    );

    // Resumed elsewhere, the work asks again under the same key and gets
    // the answer given while no one ran it; the client is never asked twice.
    let b = live(dir.path(), &clock, "b");
    b.register_resume("ask", ask);
    let done = settled(&b, &id).await;
    let TaskPayload::Completed { result } = done.payload else {
        panic!("{done:?}")
    };
    assert_eq!(result["content"][0]["text"], "hello \"Ada\" (attempt 2)");
    let task = stored(&b, &id);
    assert_eq!(
        task.metadata[INPUT_KEYS_KEY]["name"]["response"],
        json!({"v": "Ada"}),
        "the accepted answer is recorded with its key"
    );
}

#[tokio::test]
async fn a_resumed_run_replays_answers_and_refuses_a_different_request_under_a_used_key() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let a = frozen(dir.path(), &clock, "a");
    let seed = a
        .spawn_resumable("two", json!({}), crate::mcp::TaskOptions::new(), |ctx| {
            Box::pin(async move {
                ctx.request_input("first", elicitation("1?")).await?;
                ctx.request_input("second", elicitation("2?")).await?;
                Ok(text("unreachable: the owner dies before"))
            })
        })
        .await
        .unwrap();
    let id = seed.task_id.clone();
    let waits_for = |key: &'static str| {
        let a = a.clone();
        let id = id.clone();
        async move {
            eventually(|| async {
                let t = stored(&a, &id);
                t.input_requests
                    .as_ref()
                    .is_some_and(|r| r.get(key).is_some())
                    .then_some(())
            })
            .await
        }
    };
    waits_for("first").await;
    // Answered at the owner: recorded before the operation gets it.
    a.update_task(&id, [("first".to_owned(), json!({"v": 1}))])
        .await
        .unwrap();
    waits_for("second").await;
    clock.advance(LEASE);

    let b = live(dir.path(), &clock, "b");
    let (out_tx, mut out_rx) = mpsc::unbounded_channel();
    b.register_resume("two", move |ctx| {
        let out_tx = out_tx.clone();
        Box::pin(async move {
            // Replayed from the record, at once: not asked again.
            let first = ctx.request_input("first", elicitation("1?")).await?;
            let conflict = ctx
                .request_input("second", elicitation("something else?"))
                .await;
            let conflict = match conflict {
                Err(TaskExit::Error(e)) => Some(e.message.to_string()),
                _ => None,
            };
            let _ = out_tx.send((first, conflict));
            ctx.cancelled().await;
            Err(TaskExit::Cancelled)
        })
    });
    let (first, conflict) = out_rx.recv().await.unwrap();
    assert_eq!(first, json!({"v": 1}));
    let conflict = conflict.expect("a used key cannot name a different request");
    assert!(
        conflict.contains(&format!("task {id}")) && conflict.contains("\"second\""),
        "the error names the task and the key: {conflict}"
    );
    // The outstanding request stays as it was asked.
    let task = stored(&b, &id);
    assert_eq!(
        task.input_requests.as_ref().unwrap()["second"]["params"]["message"],
        "2?"
    );
    b.cancel_task(&id).await.unwrap();
    assert_eq!(settled(&b, &id).await.status(), TaskStatus::Cancelled);
}

#[tokio::test]
async fn a_claimed_task_is_renewed_on_the_stores_lease_however_long_it_waited() {
    let dir = tempfile::tempdir().unwrap();
    let lease = Duration::from_secs(1);
    let open = |name: &str| {
        Arc::new(
            FileStore::builder(dir.path())
                .instance_id(name)
                .lease(lease)
                .open()
                .unwrap(),
        )
    };
    // Made by a handle that never renews it (no manager).
    let task = open("a")
        .create(crate::NewTask::new().resumable("k", json!(null)))
        .unwrap();
    let id = task.id.as_str().to_owned();
    // Unclaimed for several leases: its `lastUpdatedAt` is old by the
    // time it is claimed, and says nothing of the new lease.
    tokio::time::sleep(lease * 4).await;
    let b = DurableTaskManager::with_options(
        open("b"),
        fast().reap_interval(Duration::from_millis(20)),
    );
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    b.register_resume("k", move |ctx| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            ctx.cancelled().await;
            Err(TaskExit::Cancelled)
        })
    });
    let load = || runs.load(std::sync::atomic::Ordering::SeqCst);
    eventually(|| async { (load() == 1).then_some(()) }).await;
    // Over several leases, B keeps the lease it was granted: the task never
    // lapses into an orphan that B (or anyone) claims again.
    tokio::time::sleep(lease * 4).await;
    assert_eq!(
        load(),
        1,
        "claimed again: the new owner let its lease lapse"
    );
    assert_eq!(stored(&b, &id).epoch, 2);
    b.cancel_task(&id).await.unwrap();
    assert_eq!(settled(&b, &id).await.status(), TaskStatus::Cancelled);
}

/// What a resumed operation's first `request_input` came to, run before
/// the manager looked at the claimed task again.
#[derive(Debug, PartialEq)]
enum FirstAsk {
    /// It returned (with this error, if any).
    Returned(Result<Value, String>),
    /// It put its key back into the stored `inputRequests`.
    AskedAgain,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_knows_a_stored_cancel_at_once_and_never_asks_a_withdrawn_key_again() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let a = frozen(dir.path(), &clock, "a");
    let seed = a
        .spawn_resumable("ask", json!({}), crate::mcp::TaskOptions::new(), |ctx| {
            Box::pin(async move {
                ctx.request_input("go", elicitation("Proceed?")).await?;
                Ok(text("unreachable: the owner dies first"))
            })
        })
        .await
        .unwrap();
    let id = seed.task_id.clone();
    eventually(|| async {
        (stored(&a, &id).status == crate::TaskStatus::InputRequired).then_some(())
    })
    .await;

    // A peer cancels the task while its owner is gone: the request is
    // withdrawn (the task is `working` again), its key stays recorded
    // without an answer.
    let b = live(dir.path(), &clock, "b");
    b.cancel_task(&id).await.unwrap();
    let withdrawn = stored(&b, &id);
    assert_eq!(withdrawn.status, crate::TaskStatus::Working);
    assert!(withdrawn.metadata[INPUT_KEYS_KEY].get("go").is_some());
    clock.advance(LEASE);

    // B resumes it. The handler runs the operation's first step at once,
    // before the manager looks at the claimed task again (on a busy
    // multi-threaded runtime the operation may well run first): it must
    // already know of the cancel, and must not put "go" back before the
    // client, which already saw it asked once.
    let (first_tx, mut first_rx) = mpsc::unbounded_channel();
    let store = Arc::clone(b.store());
    let task_id = TaskId::parse(&id).unwrap();
    b.register_resume("ask", move |ctx| {
        let knew = ctx.is_cancel_requested();
        let (store, task_id) = (Arc::clone(&store), task_id.clone());
        let first = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                tokio::select! {
                    asked = ctx.request_input("go", elicitation("Proceed?")) => {
                        FirstAsk::Returned(asked.map_err(|e| format!("{e:?}")))
                    }
                    () = eventually(|| async {
                        let now = store.get(&task_id).unwrap().unwrap();
                        (now.status == crate::TaskStatus::InputRequired).then_some(())
                    }) => FirstAsk::AskedAgain,
                }
            })
        });
        let _ = first_tx.send((knew, first));
        Box::pin(async move {
            ctx.cancelled().await;
            Err(TaskExit::Cancelled)
        })
    });
    let (knew, first) = first_rx.recv().await.unwrap();
    assert_eq!(
        first,
        FirstAsk::Returned(Err("Cancelled".to_owned())),
        "a withdrawn key was asked again"
    );
    assert!(knew, "the resumed run started without the stored cancel");
    let done = settled(&b, &id).await;
    assert_eq!(done.status(), TaskStatus::Cancelled);
    let task = stored(&b, &id);
    assert_eq!(task.input_requests, None);
    assert_eq!(task.epoch, 2);
}

/// A resume handler that panics while it builds its future fails the
/// claimed task as a panicking operation does, and the background loop that
/// resumed it goes on: it claims and runs the next orphan. (The panic went
/// through the loop, which then renewed, claimed and reaped nothing more.)
#[tokio::test]
async fn a_resume_handler_that_panics_building_its_future_fails_its_task_and_the_loop_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let a = frozen(dir.path(), &clock, "a");
    let pending =
        |_ctx: TaskContext| -> crate::mcp::TaskFuture { Box::pin(std::future::pending()) };
    let options = crate::mcp::TaskOptions::new;
    let poison = a
        .spawn_resumable("poison", json!({}), options(), pending)
        .await
        .unwrap();
    let b = live(dir.path(), &clock, "b");
    b.register_resume("poison", |_ctx| -> crate::mcp::TaskFuture {
        panic!("cannot parse the input")
    });
    b.register_resume("fine", |_ctx| Box::pin(async { Ok(text("resumed")) }));
    clock.advance(LEASE);
    let TaskPayload::Failed { error } = settled(&b, &poison.task_id).await.payload else {
        panic!()
    };
    assert_eq!(
        error["message"],
        "task operation panicked: cannot parse the input"
    );
    // The loop is alive: the next orphan is claimed and run.
    let fine = a
        .spawn_resumable("fine", json!({}), options(), pending)
        .await
        .unwrap();
    clock.advance(LEASE);
    let TaskPayload::Completed { result } = settled(&b, &fine.task_id).await.payload else {
        panic!()
    };
    assert_eq!(result["content"][0]["text"], "resumed");
}

/// A host's wrapper over a store: forwards every call, and counts the
/// sweeps and claims; `lease` forwarded only if `says_lease` (the default
/// says nothing); with `claims_nothing`, a claim claims nothing (as one
/// whose write fails for each orphan, every time); with `claim_takes`, the
/// first claim that claims a task moves that clock on by that much (a pass
/// that took that long after it read the time its leases count from).
struct Wrapped<S> {
    inner: S,
    says_lease: bool,
    sweeps: std::sync::atomic::AtomicUsize,
    claims: std::sync::atomic::AtomicUsize,
    claims_nothing: std::sync::atomic::AtomicBool,
    claim_takes: std::sync::Mutex<Option<(Arc<ManualClock>, Duration)>>,
    /// `reap_task` calls.
    task_reaps: std::sync::atomic::AtomicUsize,
}

impl<S> Wrapped<S> {
    fn new(inner: S, says_lease: bool) -> Wrapped<S> {
        Wrapped {
            inner,
            says_lease,
            sweeps: std::sync::atomic::AtomicUsize::new(0),
            claims: std::sync::atomic::AtomicUsize::new(0),
            claims_nothing: std::sync::atomic::AtomicBool::new(false),
            claim_takes: std::sync::Mutex::new(None),
            task_reaps: std::sync::atomic::AtomicUsize::new(0),
        }
    }
}

impl<S: TaskStore> TaskStore for Wrapped<S> {
    fn create(&self, new: crate::NewTask) -> crate::Result<crate::Task> {
        self.inner.create(new)
    }
    fn get(&self, id: &TaskId) -> crate::Result<Option<crate::Task>> {
        self.inner.get(id)
    }
    fn update(&self, id: &TaskId, update: crate::TaskUpdate) -> crate::Result<crate::Transition> {
        self.inner.update(id, update)
    }
    fn finish(&self, id: &TaskId, outcome: crate::Outcome) -> crate::Result<crate::Transition> {
        self.inner.finish(id, outcome)
    }
    fn finish_fenced(
        &self,
        id: &TaskId,
        outcome: crate::Outcome,
        epoch: u64,
    ) -> crate::Result<crate::Transition> {
        self.inner.finish_fenced(id, outcome, epoch)
    }
    fn list(&self, query: &crate::ListQuery) -> crate::Result<crate::Page> {
        self.inner.list(query)
    }
    fn delete(&self, id: &TaskId) -> crate::Result<bool> {
        self.inner.delete(id)
    }
    fn sweep(&self) -> crate::Result<crate::Swept> {
        self.sweeps
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.sweep()
    }
    fn instance_id(&self) -> &str {
        self.inner.instance_id()
    }
    fn now(&self) -> OffsetDateTime {
        self.inner.now()
    }
    fn renew_lease(&self, id: &TaskId) -> crate::Result<crate::Transition> {
        self.inner.renew_lease(id)
    }
    fn release(&self, id: &TaskId, epoch: u64) -> crate::Result<crate::Transition> {
        self.inner.release(id, epoch)
    }
    fn lease_now(&self) -> OffsetDateTime {
        self.inner.lease_now()
    }
    fn lease_from(&self) -> OffsetDateTime {
        self.inner.lease_from()
    }
    fn reap(&self) -> crate::Result<crate::Reaped> {
        self.inner.reap()
    }
    fn reap_task(&self, id: &TaskId) -> crate::Result<Option<crate::Task>> {
        self.task_reaps
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.reap_task(id)
    }
    fn lease(&self) -> Option<Duration> {
        self.says_lease.then(|| self.inner.lease()).flatten()
    }
    fn claim(&self, kinds: &[&str]) -> crate::Result<crate::Claimed> {
        self.claims
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self
            .claims_nothing
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Ok(crate::Claimed::default());
        }
        let claimed = self.inner.claim(kinds)?;
        if !claimed.tasks.is_empty()
            && let Some((clock, takes)) = self.claim_takes.lock().unwrap().take()
        {
            clock.advance(takes);
        }
        Ok(claimed)
    }
}

/// A store of `backend`, instance `name`, on `clock`, whose leases last an
/// hour.
fn hourly(
    backend: &Arc<crate::MemoryBackend>,
    clock: &Arc<ManualClock>,
    name: &str,
) -> crate::Store<Arc<crate::MemoryBackend>> {
    crate::Store::with_backend(Arc::clone(backend))
        .instance_id(name)
        .clock(clock.clone() as Arc<dyn Clock>)
        .lease(HOUR)
        .build()
        .unwrap()
}

const HOUR: Duration = Duration::from_secs(3_600);

/// A manager over `live` whose claim passes each take five sixths of a
/// lease by `clock`, resuming `job` runs that wait to be cancelled, once
/// it has claimed `task` (epoch 2): the manager and the task as claimed.
async fn claimed_by_a_slow_pass(
    live: crate::Store<Arc<crate::MemoryBackend>>,
    clock: &Arc<ManualClock>,
    task: &crate::Task,
) -> (
    DurableTaskManager<Wrapped<crate::Store<Arc<crate::MemoryBackend>>>>,
    crate::Task,
) {
    let store = Wrapped::new(live, true);
    *store.claim_takes.lock().unwrap() = Some((Arc::clone(clock), HOUR * 5 / 6));
    let m = DurableTaskManager::with_options(
        Arc::new(store),
        fast().reap_interval(Duration::from_millis(20)),
    );
    m.register_resume("job", move |ctx| {
        Box::pin(async move {
            ctx.cancelled().await;
            Err(TaskExit::Cancelled)
        })
    });
    let claimed = eventually(|| async {
        let stored = stored(&m, task.id.as_str());
        (stored.epoch == 2).then_some(stored)
    })
    .await;
    (m, claimed)
}

/// Waits for `m` to renew `claimed` (its run's, not claimed again), then
/// cancels it.
async fn renewed_then_cancelled<S: TaskStore>(m: &DurableTaskManager<S>, claimed: &crate::Task) {
    let id = claimed.id.as_str();
    let granted = claimed.lease_expires_at.unwrap();
    let renewed = eventually(|| async {
        let stored = stored(m, id);
        (stored.lease_expires_at.unwrap() > granted).then_some(stored)
    })
    .await;
    assert_eq!(renewed.epoch, 2, "renewed, not claimed again");
    m.cancel_task(id).await.unwrap();
    assert_eq!(settled(m, id).await.status(), TaskStatus::Cancelled);
}

/// A claim pass that took most of a lease (a batch of many orphans over a
/// slow server: the leases it grants count from the time it read before
/// its scan) has its claimed runs renewed at once, not a renewal period
/// after they were launched: by then the lease would have lapsed. (Each
/// run counted its renewals from its launch: with a lease of an hour,
/// renewed every 20 minutes, a pass of 50 minutes left the run 10 minutes
/// of lease and a first renewal 20 minutes away.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_claimed_by_a_slow_pass_is_renewed_at_once() {
    let backend = Arc::new(crate::MemoryBackend::new());
    let clock = clock();
    let task = hourly(&backend, &clock, "dead")
        .create(crate::NewTask::new().resumable("job", json!({})))
        .unwrap();
    clock.advance(HOUR);
    let (m, claimed) =
        claimed_by_a_slow_pass(hourly(&backend, &clock, "live"), &clock, &task).await;
    renewed_then_cancelled(&m, &claimed).await;
}

/// The same with the live instance's clock stepped back before the pass,
/// behind the time the instance last read (its `now` stands still while
/// the clock is behind): the claimed run is renewed at once all the same,
/// its renewals counted from when the pass granted the lease by the time
/// the store's own leases run from ([`TaskStore::lease_from`], carried on
/// by the monotonic clock). (Counted by the store's `now`, the lease looked
/// granted just then, and the first renewal came a renewal period after
/// the launch, past the lease.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_claimed_by_a_slow_pass_with_the_clock_behind_is_renewed_at_once() {
    let backend = Arc::new(crate::MemoryBackend::new());
    let clock = clock();
    let task = hourly(&backend, &clock, "dead")
        .create(crate::NewTask::new().resumable("job", json!({})))
        .unwrap();
    let live = hourly(&backend, &clock, "live");
    clock.advance(HOUR * 3);
    let seen = live.now();
    // Stepped back two hours: the dead owner's lease has lapsed by the
    // clock, and the live instance's time is ahead of it.
    clock.set(seen - HOUR * 2 + Duration::from_secs(1));
    let (m, claimed) = claimed_by_a_slow_pass(live, &clock, &task).await;
    assert_eq!(
        m.store().now(),
        seen,
        "the live instance's time stood still"
    );
    renewed_then_cancelled(&m, &claimed).await;
}

/// A task claimed through a store that does not say how long its leases
/// last is renewed all the same, by the lease the claim gave it: its run
/// goes on to its end, once. (Only a new task's lease could be worked out:
/// the claimed run was never renewed, the task was claimed again and
/// again, each run stopped as lost, until it failed `orphaned`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_run_is_renewed_through_a_store_that_does_not_say_its_lease() {
    let backend = Arc::new(crate::MemoryBackend::new());
    let open = |name: &str| {
        crate::Store::with_backend(Arc::clone(&backend))
            .instance_id(name)
            .lease(Duration::from_secs(1))
            .build()
            .unwrap()
    };
    let dead = open("dead");
    let task = dead
        .create(crate::NewTask::new().resumable("job", json!({})))
        .unwrap();
    drop(dead);
    let m = DurableTaskManager::with_options(
        Arc::new(Wrapped::new(open("live"), false)),
        fast().reap_interval(Duration::from_millis(50)),
    );
    let starts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&starts);
    m.register_resume("job", move |_ctx| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            // Longer than two leases.
            tokio::time::sleep(Duration::from_millis(2_500)).await;
            Ok(text("done"))
        })
    });
    let settled = settled(&m, task.id.as_str()).await;
    let TaskPayload::Completed { result } = settled.payload else {
        panic!("not completed: {:?}", settled.payload)
    };
    assert_eq!(result["content"][0]["text"], "done");
    assert_eq!(starts.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// A handle named `name` on `backend`, at `clock`'s time, with [`LEASE`].
fn on_memory(
    backend: &Arc<crate::MemoryBackend>,
    clock: &Arc<ManualClock>,
    name: &str,
) -> crate::Store<Arc<crate::MemoryBackend>> {
    crate::Store::with_backend(Arc::clone(backend))
        .instance_id(name)
        .clock(clock.clone() as Arc<dyn Clock>)
        .lease(LEASE)
        .build()
        .unwrap()
}

/// A resumable task whose owner died on its last attempt is reported
/// `failed` (orphaned) by the first `tasks/get` after its lease lapsed,
/// as a task that cannot be resumed is: nobody may claim it. (It read
/// `working` until the reaper's next tick, up to its interval.)
#[tokio::test]
async fn a_lapsed_task_with_no_attempt_left_reads_failed_at_once() {
    let clock = clock();
    let backend = Arc::new(crate::MemoryBackend::new());
    let open = |name: &str| on_memory(&backend, &clock, name);
    let dead = open("dead");
    let task = dead
        .create(
            crate::NewTask::new()
                .resumable("job", json!({}))
                .max_attempts(1),
        )
        .unwrap();
    drop(dead);
    let hour = Duration::from_secs(3_600);
    let m = DurableTaskManager::with_options(
        Arc::new(Wrapped::new(open("b"), true)),
        ManagerOptions::new()
            .watch_interval(hour)
            .renew_interval(hour)
            .reap_interval(hour),
    );
    // The loop's first pass is over (it sweeps last); its first reap is an
    // hour away.
    eventually(|| async {
        (m.store().sweeps.load(std::sync::atomic::Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    clock.advance(LEASE + Duration::from_secs(1));
    let read = m.get_task(task.id.as_str()).await.unwrap();
    let TaskPayload::Failed { error } = read.payload else {
        panic!("not failed: {read:?}")
    };
    assert_eq!(error["data"]["code"], "orphaned", "{error:?}");
}

/// A restarted instance registers its resume handlers right after it
/// starts; the first pass of its loop must not reap meanwhile the tasks it
/// is about to resume (their claim grace passed while it was down). (That
/// pass claimed with no handler yet, then reaped them: `failed`,
/// orphaned, though the instance resumes their kind.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_instance_resumes_what_it_was_down_for() {
    let clock = clock();
    let backend = Arc::new(crate::MemoryBackend::new());
    let open = |name: &str| on_memory(&backend, &clock, name);
    let dead = open("before-the-restart");
    let task = dead
        .create(crate::NewTask::new().resumable("job", json!({})))
        .unwrap();
    drop(dead);
    // Down for longer than the lease and the claim grace (one lease).
    clock.advance(LEASE * 3);
    let m = DurableTaskManager::with_options(
        Arc::new(Wrapped::new(open("after-the-restart"), true)),
        // No reap but the first pass's could come before the registration
        // below (a first pass that reaped failed the task): a reap 200 ms
        // in could, on a stalled machine, and fail it rightly.
        fast().reap_interval(Duration::from_secs(60)),
    );
    // The loop's first pass is over: it sweeps last.
    eventually(|| async {
        (m.store().sweeps.load(std::sync::atomic::Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    m.register_resume("job", |_ctx| Box::pin(async { Ok(text("resumed")) }));
    let settled = settled(&m, task.id.as_str()).await;
    let TaskPayload::Completed { result } = settled.payload else {
        panic!("not resumed: {:?}", settled.payload)
    };
    assert_eq!(result["content"][0]["text"], "resumed");
}

/// Polling a resumable orphan of a kind this instance does not resume
/// starts no claim pass: it could claim nothing. (Every `tasks/get` woke
/// one, a scan of the store's orphans per client poll, on every instance
/// with a handler of any kind.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_an_orphan_of_a_kind_this_instance_does_not_resume_claims_nothing() {
    let clock = clock();
    let backend = Arc::new(crate::MemoryBackend::new());
    let dead = on_memory(&backend, &clock, "dead");
    let task = dead
        .create(crate::NewTask::new().resumable("job", json!({})))
        .unwrap();
    drop(dead);
    let m = DurableTaskManager::with_options(
        Arc::new(Wrapped::new(on_memory(&backend, &clock, "other"), true)),
        polling_alone(),
    );
    m.register_resume("another-kind", |_ctx| Box::pin(async { Ok(text("no")) }));
    // The registration's own claim is over.
    eventually(|| async {
        (m.store().claims.load(std::sync::atomic::Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    let claims = m.store().claims.load(std::sync::atomic::Ordering::SeqCst);
    // Lapsed, within its claim grace (one lease).
    clock.advance(LEASE + Duration::from_secs(1));
    for _ in 0..20 {
        let read = m.get_task(task.id.as_str()).await.unwrap();
        assert_eq!(read.task.status, TaskStatus::Working);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        m.store().claims.load(std::sync::atomic::Ordering::SeqCst),
        claims,
        "claim passes started by the polls"
    );
}

/// Options of a manager that polls every 10 ms and renews and reaps
/// nothing of its own for an hour: what it does is what the test's polls
/// start.
fn polling_alone() -> ManagerOptions {
    let hour = Duration::from_secs(3_600);
    ManagerOptions::new()
        .watch_interval(Duration::from_millis(10))
        .renew_interval(hour)
        .reap_interval(hour)
}

/// A wrapped store on a memory backend.
type OnMemory = Wrapped<crate::Store<Arc<crate::MemoryBackend>>>;

/// A manager on instance `name` of `backend` (polling, no renewals or
/// reaps of its own for an hour) whose clock, set with `owners`' at first,
/// was stepped forward three leases, read (its time stays there), and set
/// right; and that clock.
fn past_a_step_set_right(
    backend: &Arc<crate::MemoryBackend>,
    owners: &ManualClock,
    name: &str,
) -> (DurableTaskManager<OnMemory>, Arc<ManualClock>) {
    let ours = Arc::new(ManualClock::new(owners.now()));
    let store = Wrapped::new(on_memory(backend, &ours, name), true);
    ours.advance(LEASE * 3);
    let ahead = store.now();
    ours.set(owners.now());
    assert!(store.lease_now() < ahead, "the step read");
    let m = DurableTaskManager::with_options(Arc::new(store), polling_alone());
    (m, ours)
}

/// Polling another owner's live task on an instance whose clock was
/// stepped forward and set right asks for no reap: the task's lease is
/// judged by what the clock reads ([`TaskStore::lease_now`]), as a reap
/// judges it, not by the latest time the handle read. (Each poll asked
/// the store to reap the task, which declined: a write's lock and reads
/// per client poll, for as long as the step.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_a_live_task_after_a_clock_set_right_asks_for_no_reap() {
    use std::sync::atomic::Ordering;
    let backend = Arc::new(crate::MemoryBackend::new());
    let owners = clock();
    let task = on_memory(&backend, &owners, "owner")
        .create(crate::NewTask::new())
        .unwrap();
    let (m, _ours) = past_a_step_set_right(&backend, &owners, "other");
    assert!(task.is_orphan_at(m.store().now()));
    assert!(!task.is_orphan_at(m.store().lease_now()));
    for _ in 0..5 {
        let read = m.get_task(task.id.as_str()).await.unwrap();
        assert_eq!(read.task.status, TaskStatus::Working);
    }
    assert_eq!(
        m.store().task_reaps.load(Ordering::SeqCst),
        0,
        "reaps asked for"
    );
}

/// On an instance whose clock was stepped forward and set right, polling
/// a resumable orphan whose lease lapsed (by the clock) after the last
/// claim pass began wakes a claim pass: when that pass began is what the
/// clock read then ([`TaskStore::lease_now`]). (It was the handle's time,
/// ahead by the step, so the pass seemed to have begun after the lapse,
/// and no poll woke one until the step was caught up.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_an_orphan_after_a_clock_set_right_wakes_a_claim() {
    use std::sync::atomic::Ordering;
    let backend = Arc::new(crate::MemoryBackend::new());
    let owners = clock();
    let task = on_memory(&backend, &owners, "dead")
        .create(crate::NewTask::new().resumable("job", json!({})))
        .unwrap();
    let (m, ours) = past_a_step_set_right(&backend, &owners, "live");
    m.store().claims_nothing.store(true, Ordering::SeqCst);
    m.register_resume("job", |_ctx| Box::pin(async { Ok(text("resumed")) }));
    // The registration's own claim is over, before the lease lapsed.
    eventually(|| async { (m.store().claims.load(Ordering::SeqCst) > 0).then_some(()) }).await;
    let claims = m.store().claims.load(Ordering::SeqCst);
    // Lapsed by the clock, within its claim grace (one lease).
    ours.advance(LEASE + Duration::from_secs(1));
    let read = m.get_task(task.id.as_str()).await.unwrap();
    assert_eq!(read.task.status, TaskStatus::Working);
    eventually(|| async { (m.store().claims.load(Ordering::SeqCst) > claims).then_some(()) }).await;
}

/// Polling a resumable orphan of a kind this instance resumes, which its
/// claim cannot take, starts one claim pass once its lease lapsed, not one
/// per poll: a pass that began after the lapse had it to claim already.
/// (Every `tasks/get` woke a claim pass, a scan of the store's orphans per
/// client poll, for as long as the claims failed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_an_orphan_a_claim_cannot_take_starts_one_claim_pass_not_one_per_poll() {
    use std::sync::atomic::Ordering;
    let clock = clock();
    let backend = Arc::new(crate::MemoryBackend::new());
    let dead = on_memory(&backend, &clock, "dead");
    let task = dead
        .create(crate::NewTask::new().resumable("job", json!({})))
        .unwrap();
    drop(dead);
    let store = Wrapped::new(on_memory(&backend, &clock, "live"), true);
    store.claims_nothing.store(true, Ordering::SeqCst);
    let m = DurableTaskManager::with_options(Arc::new(store), polling_alone());
    m.register_resume("job", |_ctx| Box::pin(async { Ok(text("resumed")) }));
    // The registration's own claim is over, before the lease lapsed.
    eventually(|| async { (m.store().claims.load(Ordering::SeqCst) > 0).then_some(()) }).await;
    let claims = m.store().claims.load(Ordering::SeqCst);
    // Lapsed, within its claim grace (one lease).
    clock.advance(LEASE + Duration::from_secs(1));
    m.get_task(task.id.as_str()).await.unwrap();
    // The first poll since the lapse woke a claim.
    eventually(|| async { (m.store().claims.load(Ordering::SeqCst) > claims).then_some(()) }).await;
    for _ in 0..20 {
        let read = m.get_task(task.id.as_str()).await.unwrap();
        assert_eq!(read.task.status, TaskStatus::Working);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        m.store().claims.load(Ordering::SeqCst),
        claims + 1,
        "claim passes started by the polls"
    );
}
