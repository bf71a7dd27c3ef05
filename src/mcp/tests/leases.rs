//! Leases: a dead owner's task reported orphaned and reaped, running tasks
//! kept leased by renewals at any interval (`Duration::MAX` included), and
//! no renewal for a task the owner no longer runs.

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{TaskPayload, TaskStatus};
use serde_json::json;
use time::OffsetDateTime;

use super::{elicitation, eventually, fast, settled, text, until_cancelled};
use crate::mcp::*;
use crate::{Clock, FileStore, ManualClock, MemoryStore, NewTask, TaskStore};

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

/// A running task's lease is renewed on the store's lease (a third of it,
/// by default) for as long as it runs: the store's clock moves half a lease
/// a step, a full lease in all, each once the lease was renewed at the
/// step's time, and the task completes. The clock is the test's: a stall of
/// the machine lets no lease lapse. (On the system clock a 300 ms lease
/// lapsed in any stall longer, and after one past the manager's first reap
/// (5 s) that reap raced the renewal: had it come first, it failed the task
/// the manager ran, `orphaned`, as it did `renewals_go_on`'s.)
#[tokio::test]
async fn running_tasks_keep_their_lease() {
    let dir = tempfile::tempdir().unwrap();
    let lease = Duration::from_millis(300);
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let store = FileStore::builder(dir.path())
        .instance_id("a")
        .clock(clock.clone() as Arc<dyn Clock>)
        .lease(lease)
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
    let id = crate::TaskId::parse(&seed.task_id).unwrap();
    let lease_of = || m.store().get(&id).unwrap().unwrap().lease_expires_at;
    // Renewed: the lease moves forward with the clock while the task runs.
    let mut granted = lease_of();
    for _ in 0..2 {
        clock.advance(lease / 2);
        granted = eventually(|| async {
            let now = lease_of();
            (now > granted).then_some(now)
        })
        .await;
    }
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
/// one), each after the store's clock moved half a lease on, and the task
/// is then cancelled as usual. The clock is the test's: a stall of the
/// machine lets no lease lapse (on the system clock, the test process
/// stopped 6 s let the manager's own reap fail the task before its next
/// renewal, and the renewals stopped).
async fn renewals_go_on(options: ManagerOptions) {
    let lease = Duration::from_millis(600);
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let store = MemoryStore::builder()
        .clock(clock.clone() as Arc<dyn Clock>)
        .lease(lease)
        .build()
        .unwrap();
    let m = DurableTaskManager::with_options(Arc::new(store), options.clone());
    let seed = until_cancelled(&m).await;
    let id = crate::TaskId::parse(&seed.task_id).unwrap();
    let mut seen = m.store().get(&id).unwrap().unwrap().lease_expires_at;
    for _ in 0..2 {
        clock.advance(lease / 2);
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
