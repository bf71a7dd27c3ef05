//! Polls of a task's status as a trigger: a lapsed task with no attempt
//! left, or a resumable one past its claim grace, reads failed, a restarted instance resumes what it was down for,
//! an orphan wakes one claim pass (none for a kind not resumed here), and
//! a clock set right asks for no reap of a live task.

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{TaskPayload, TaskStatus};
use serde_json::json;

use super::{LEASE, Wrapped, clock};
use crate::mcp::tests::{eventually, fast, settled, text};
use crate::mcp::{DurableTaskManager, ManagerOptions};
use crate::{Clock, ManualClock, TaskStore};

/// A resumable task of kind `job` an instance "dead" made and left (its
/// handle dropped, its lease running out by `clock`).
fn left_by_a_dead_instance(
    backend: &Arc<crate::MemoryBackend>,
    clock: &Arc<ManualClock>,
) -> crate::Task {
    on_memory(backend, clock, "dead")
        .create(crate::NewTask::new().resumable("job", json!({})))
        .unwrap()
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

/// A resumable orphan with attempts left that no instance claimed within
/// its claim grace reads `failed` (orphaned) at the first `tasks/get`
/// past that grace, judged by the reap's own rule (`TaskStore::reap_task`),
/// as a reap would fail it; within the grace it reads `working`, waiting
/// for a claim. Here read at an instance that resumes no kind and reaps
/// nothing of its own for an hour. (It read `working` until the next
/// reap, up to its interval.)
#[tokio::test]
async fn a_resumable_orphan_past_its_claim_grace_reads_failed_at_once() {
    let clock = clock();
    let backend = Arc::new(crate::MemoryBackend::new());
    let task = left_by_a_dead_instance(&backend, &clock);
    let m = DurableTaskManager::with_options(
        Arc::new(Wrapped::new(on_memory(&backend, &clock, "b"), true)),
        polling_alone(),
    );
    // Lapsed, within its claim grace (one lease).
    clock.advance(LEASE + Duration::from_secs(1));
    let read = m.get_task(task.id.as_str()).await.unwrap();
    assert_eq!(read.task.status, TaskStatus::Working, "{read:?}");
    // Past it.
    clock.advance(LEASE);
    let read = m.get_task(task.id.as_str()).await.unwrap();
    let TaskPayload::Failed { error } = read.payload else {
        panic!("not failed: {read:?}")
    };
    assert_eq!(error["data"]["code"], "orphaned", "{error:?}");
    assert_eq!(error["data"]["reapedBy"], "b", "{error:?}");
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

/// A poll of a resumable orphan past its claim grace, at an instance that
/// resumes its kind while its claim pass is under way, leaves the task to
/// that pass: `working`, then resumed. (The poll judged it by the reap's
/// rule, since a pass had begun after its lease lapsed, and failed it,
/// orphaned, under the pass about to claim it: a restarted instance's
/// client polling as it registered its handlers saw its task failed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_while_a_claim_pass_is_under_way_leaves_the_task_to_it() {
    let clock = clock();
    let backend = Arc::new(crate::MemoryBackend::new());
    let task = left_by_a_dead_instance(&backend, &clock);
    // Past its claim grace (one lease after its lease lapsed).
    clock.advance(LEASE * 3);
    let m = DurableTaskManager::with_options(
        Arc::new(Wrapped::new(on_memory(&backend, &clock, "b"), true)),
        polling_alone(),
    );
    let (begun, claim_begun) = std::sync::mpsc::channel();
    let (let_go, go) = std::sync::mpsc::channel();
    *m.store().claim_held.lock().unwrap() = Some(super::Held { begun, go });
    m.register_resume("job", |_ctx| Box::pin(async { Ok(text("resumed")) }));
    // The registration's claim pass has begun, and is held in the claim.
    tokio::task::spawn_blocking(move || claim_begun.recv().unwrap())
        .await
        .unwrap();
    let read = m.get_task(task.id.as_str()).await.unwrap();
    let_go.send(()).unwrap();
    assert_eq!(
        read.task.status,
        TaskStatus::Working,
        "a poll under the claim pass failed the task it was claiming: {read:?}"
    );
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
    let task = left_by_a_dead_instance(&backend, &clock);
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
    let task = left_by_a_dead_instance(&backend, &clock);
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
