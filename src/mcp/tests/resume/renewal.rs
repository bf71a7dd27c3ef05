//! A claimed run's lease renewed on the store's lease however long the
//! claim waited: claimed by a slow pass, with the clock behind, through a
//! store that does not say its lease.

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{TaskPayload, TaskStatus};
use serde_json::json;

use super::{Wrapped, clock, stored};
use crate::mcp::tests::{eventually, fast, settled, text};
use crate::mcp::{DurableTaskManager, TaskExit};
use crate::{Clock, FileStore, ManualClock, TaskStore};

/// A task claimed a day after its last update (a claim leaves
/// `lastUpdatedAt` alone) is renewed on the store's lease: its new owner
/// renews it after every step of the store's clock, half a lease each,
/// three leases in all, and never claims it again. The clock is the
/// test's: a stall of the machine lets no lease lapse. (Renewed by a lease
/// worked out from the task, a day and a lease long, the first renewal
/// was hours away.)
#[tokio::test]
async fn a_claimed_task_is_renewed_on_the_stores_lease_however_long_it_waited() {
    let dir = tempfile::tempdir().unwrap();
    let lease = Duration::from_secs(1);
    let clock = clock();
    let open = |name: &str| {
        Arc::new(
            FileStore::builder(dir.path())
                .instance_id(name)
                .lease(lease)
                .clock(clock.clone() as Arc<dyn Clock>)
                .open()
                .unwrap(),
        )
    };
    // Made by a handle that never renews it (no manager).
    let task = open("a")
        .create(crate::NewTask::new().resumable("k", json!(null)))
        .unwrap();
    let id = task.id.as_str().to_owned();
    // Unclaimed for a day: its `lastUpdatedAt` is old by the time it is
    // claimed, and says nothing of the new lease.
    clock.advance(Duration::from_secs(86_400));
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
    // Over three leases, B keeps the lease it was granted, renewed at each
    // step of the clock: the task never lapses into an orphan that B (or
    // anyone) claims again.
    let mut granted = stored(&b, &id).lease_expires_at.unwrap();
    for _ in 0..6 {
        clock.advance(lease / 2);
        granted = eventually(|| async {
            let renewed = stored(&b, &id).lease_expires_at.unwrap();
            (renewed > granted).then_some(renewed)
        })
        .await;
        assert_eq!(
            load(),
            1,
            "claimed again: the new owner let its lease lapse"
        );
    }
    assert_eq!(stored(&b, &id).epoch, 2);
    b.cancel_task(&id).await.unwrap();
    assert_eq!(settled(&b, &id).await.status(), TaskStatus::Cancelled);
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
/// it has claimed `task` (epoch 2): the manager and the task as the claim
/// returned it. (Read back from the store instead, the task could already
/// hold the run's first renewal, which came at once, and the next, a
/// renewal period away on a clock that stands still, never came.)
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
        let slow_claimed = m.store().slow_claimed.lock().unwrap();
        slow_claimed.iter().find(|t| t.id == task.id).cloned()
    })
    .await;
    assert_eq!(claimed.epoch, 2);
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
/// last is renewed all the same, by the lease the claim gave it: its run,
/// held until the store's clock has moved on three leases (half a lease a
/// step, each once the run's lease was renewed at the step's time), goes
/// on to its end, once. The clock is the test's: a stall of the machine
/// lets no lease lapse. (Only a new task's lease could be worked out: the
/// claimed run was never renewed, the task was claimed again and again,
/// each run stopped as lost, until it failed `orphaned`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_run_is_renewed_through_a_store_that_does_not_say_its_lease() {
    let backend = Arc::new(crate::MemoryBackend::new());
    let lease = Duration::from_secs(1);
    let clock = clock();
    let open = |name: &str| {
        crate::Store::with_backend(Arc::clone(&backend))
            .instance_id(name)
            .clock(clock.clone() as Arc<dyn Clock>)
            .lease(lease)
            .build()
            .unwrap()
    };
    let dead = open("dead");
    let task = dead
        .create(crate::NewTask::new().resumable("job", json!({})))
        .unwrap();
    drop(dead);
    clock.advance(lease * 2);
    let m = DurableTaskManager::with_options(
        Arc::new(Wrapped::new(open("live"), false)),
        fast().reap_interval(Duration::from_millis(50)),
    );
    let starts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&starts);
    let finish = Arc::new(tokio::sync::Notify::new());
    let told = Arc::clone(&finish);
    m.register_resume("job", move |_ctx| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let told = Arc::clone(&told);
        Box::pin(async move {
            told.notified().await;
            Ok(text("done"))
        })
    });
    let id = task.id.as_str();
    let load = || starts.load(std::sync::atomic::Ordering::SeqCst);
    let mut granted = eventually(|| async {
        let stored = stored(&m, id);
        (stored.epoch == 2 && load() == 1).then_some(stored.lease_expires_at.unwrap())
    })
    .await;
    for _ in 0..6 {
        clock.advance(lease / 2);
        granted = eventually(|| async {
            let renewed = stored(&m, id).lease_expires_at.unwrap();
            (renewed > granted).then_some(renewed)
        })
        .await;
        assert_eq!(load(), 1, "claimed again: the run's lease lapsed");
    }
    finish.notify_one();
    let settled = settled(&m, id).await;
    let TaskPayload::Completed { result } = settled.payload else {
        panic!("not completed: {:?}", settled.payload)
    };
    assert_eq!(result["content"][0]["text"], "done");
    assert_eq!(load(), 1);
}
