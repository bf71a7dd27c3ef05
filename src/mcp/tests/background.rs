//! The background loops against a store that misbehaves for one task: a
//! write that hangs for one task holds up no other task's renewals; reads
//! slower than a tick leave the renewals in batches; the watch ticks are
//! held to a floor; a panic in the loop of claims, reaps and sweeps ends
//! its pass, or its one task's resume, and no later round, and is said
//! with its pass at most once a minute; a panic in one round's store call
//! or event sink ends no later round; its sweep logs what it did beside
//! what failed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use time::OffsetDateTime;

use super::{elicitation, eventually, fast, logged, settled, text, until_cancelled};
use crate::mcp::{DurableTaskManager, MIN_WATCH_INTERVAL, ManagerOptions, TaskOptions};
use crate::{
    Claimed, ListQuery, ManualClock, MemoryBackend, NewTask, Outcome, Page, Reaped, Store, Swept,
    Task, TaskId, TaskStore, TaskUpdate, Transition,
};

/// A store over `inner` whose writes to one chosen task wait until it is
/// let go, as a write waits on a row lock another session holds (a batch
/// of renewals that names it waits whole, as one statement does); counts
/// its `get`s, claims and reaps; and, armed, panics in `lease` (a host's
/// store with a bug: the manager asks it on its async side when it
/// resumes a claimed task) or in `lease_now` (which it asks as a claim
/// pass begins).
pub(super) struct Held<S> {
    inner: S,
    held: Mutex<Option<TaskId>>,
    let_go: Condvar,
    /// Calls waiting for the held task now.
    waiting: AtomicUsize,
    gets: AtomicUsize,
    /// How many calls of `lease` are to panic.
    pub(super) lease_panics: AtomicUsize,
    /// Every call of `lease_now` panics.
    lease_now_panics: AtomicBool,
    /// Panics of `lease` and `lease_now`.
    pub(super) panicked: AtomicUsize,
    claims: AtomicUsize,
    reaps: AtomicUsize,
    /// Each `get` takes 15 ms (a round trip to a distant database).
    slow_gets: AtomicBool,
    /// The number of tasks of each renewal call, in order.
    renewals: Mutex<Vec<usize>>,
    /// How many sweeps to fail once their deletions are made (as a file
    /// store's whose barrier fsync fails), beside what they deleted.
    sweep_failures: AtomicUsize,
    /// Sweeps made.
    sweeps: AtomicUsize,
    /// How many sweeps to panic once their deletions are made (a bug in a
    /// host's wrapper, past the store's own sweep).
    sweep_panics: AtomicUsize,
}

impl<S> Held<S> {
    pub(super) fn new(inner: S) -> Arc<Held<S>> {
        Arc::new(Held {
            inner,
            held: Mutex::new(None),
            let_go: Condvar::new(),
            waiting: AtomicUsize::new(0),
            gets: AtomicUsize::new(0),
            lease_panics: AtomicUsize::new(0),
            lease_now_panics: AtomicBool::new(false),
            panicked: AtomicUsize::new(0),
            claims: AtomicUsize::new(0),
            reaps: AtomicUsize::new(0),
            slow_gets: AtomicBool::new(false),
            renewals: Mutex::new(Vec::new()),
            sweep_failures: AtomicUsize::new(0),
            sweeps: AtomicUsize::new(0),
            sweep_panics: AtomicUsize::new(0),
        })
    }

    fn hold(&self, id: &TaskId) {
        *self.held.lock().unwrap() = Some(id.clone());
    }

    fn let_go(&self) {
        *self.held.lock().unwrap() = None;
        self.let_go.notify_all();
    }

    /// Waits while any of `ids` is held.
    fn pass(&self, ids: &[TaskId]) {
        let mut held = self.held.lock().unwrap();
        if !held.as_ref().is_some_and(|h| ids.contains(h)) {
            return;
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        while held.as_ref().is_some_and(|h| ids.contains(h)) {
            held = self.let_go.wait(held).unwrap();
        }
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Lets go of the held task when dropped, so that a failing test ends
/// (its runtime waits for the store calls under way).
struct LetGo<S>(Arc<Held<S>>);

impl<S> Drop for LetGo<S> {
    fn drop(&mut self) {
        self.0.let_go();
    }
}

impl<S: TaskStore> TaskStore for Held<S> {
    fn create(&self, new: NewTask) -> crate::Result<Task> {
        self.inner.create(new)
    }
    fn get(&self, id: &TaskId) -> crate::Result<Option<Task>> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        if self.slow_gets.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(15));
        }
        self.inner.get(id)
    }
    fn update(&self, id: &TaskId, update: TaskUpdate) -> crate::Result<Transition> {
        self.pass(std::slice::from_ref(id));
        self.inner.update(id, update)
    }
    fn finish(&self, id: &TaskId, outcome: Outcome) -> crate::Result<Transition> {
        self.pass(std::slice::from_ref(id));
        self.inner.finish(id, outcome)
    }
    fn finish_fenced(
        &self,
        id: &TaskId,
        outcome: Outcome,
        epoch: u64,
    ) -> crate::Result<Transition> {
        self.pass(std::slice::from_ref(id));
        self.inner.finish_fenced(id, outcome, epoch)
    }
    fn list(&self, query: &ListQuery) -> crate::Result<Page> {
        self.inner.list(query)
    }
    fn delete(&self, id: &TaskId) -> crate::Result<bool> {
        self.pass(std::slice::from_ref(id));
        self.inner.delete(id)
    }
    fn sweep(&self) -> crate::Result<Swept> {
        let mut swept = self.inner.sweep();
        let fail = self
            .sweep_failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if let (Ok(swept), true) = (&mut swept, fail) {
            let error = std::io::Error::other("injected: the disk is away");
            swept
                .errors
                .push(crate::Error::io("fsync", "expiring", error));
        }
        self.sweeps.fetch_add(1, Ordering::SeqCst);
        let panic = self
            .sweep_panics
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        assert!(!panic, "a bug in sweep()");
        swept
    }
    fn instance_id(&self) -> &str {
        self.inner.instance_id()
    }
    fn lease(&self) -> Option<Duration> {
        let panic = self
            .lease_panics
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        self.panicked
            .fetch_add(usize::from(panic), Ordering::SeqCst);
        assert!(!panic, "a bug in lease()");
        self.inner.lease()
    }
    fn now(&self) -> OffsetDateTime {
        self.inner.now()
    }
    fn lease_now(&self) -> OffsetDateTime {
        let panic = self.lease_now_panics.load(Ordering::SeqCst);
        self.panicked
            .fetch_add(usize::from(panic), Ordering::SeqCst);
        assert!(!panic, "a bug in lease_now()");
        self.inner.lease_now()
    }
    fn lease_from(&self) -> OffsetDateTime {
        self.inner.lease_from()
    }
    fn renew_lease(&self, id: &TaskId) -> crate::Result<Transition> {
        self.renewals.lock().unwrap().push(1);
        self.pass(std::slice::from_ref(id));
        self.inner.renew_lease(id)
    }
    fn renew_leases_of(&self, ids: &[TaskId]) -> Vec<crate::Result<Transition>> {
        self.renewals.lock().unwrap().push(ids.len());
        self.pass(ids);
        self.inner.renew_leases_of(ids)
    }
    fn release(&self, id: &TaskId, epoch: u64) -> crate::Result<Transition> {
        self.pass(std::slice::from_ref(id));
        self.inner.release(id, epoch)
    }
    fn reap(&self) -> crate::Result<Reaped> {
        self.reaps.fetch_add(1, Ordering::SeqCst);
        self.inner.reap()
    }
    fn claim(&self, kinds: &[&str]) -> crate::Result<Claimed> {
        self.claims.fetch_add(1, Ordering::SeqCst);
        self.inner.claim(kinds)
    }
}

/// A handle named `name` on `backend`, with leases of `lease`.
pub(super) fn on(
    backend: &Arc<MemoryBackend>,
    name: &str,
    lease: Duration,
) -> Store<Arc<MemoryBackend>> {
    Store::with_backend(Arc::clone(backend))
        .instance_id(name)
        .lease(lease)
        .build()
        .unwrap()
}

/// Which write hangs for the held task.
#[derive(Clone, Copy, Debug)]
enum Hang {
    /// Its lease renewal (in a batch with the other task's).
    Renewal,
    /// The write that accepts an answer a peer stored for it, made by a
    /// look at it.
    Look,
}

/// A store write that hangs for one task (a row lock another session
/// holds, say) holds up the lease renewals of no other task of the
/// instance: whether it is that task's renewal (in one batch with the
/// others') or a write a look at it makes, the other task's lease is
/// renewed on, and once the held task is let go, its own is too.
/// (The watch tick waited for both, and the ticks after it with it: no
/// lease of the instance was renewed while the write hung, and peers
/// reaped or claimed its live tasks.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_hangs_for_one_task_holds_up_no_other_tasks_renewals() {
    for hang in [Hang::Renewal, Hang::Look] {
        one_task_hangs(hang).await;
    }
}

async fn one_task_hangs(hang: Hang) {
    let lease = Duration::from_millis(600);
    let backend = Arc::new(MemoryBackend::new());
    let store = Held::new(on(&backend, "owner", lease));
    let _let_go = LetGo(Arc::clone(&store));
    // No reaps: the held task's lease lapses while its renewal waits (as a
    // locked row's would), and a reap would fail it; the other task's is
    // what this test watches.
    let hour = Duration::from_secs(3_600);
    let m = DurableTaskManager::with_options(Arc::clone(&store), fast().reap_interval(hour));
    let peer = DurableTaskManager::with_options(
        Arc::new(on(&backend, "peer", lease)),
        fast().reap_interval(hour),
    );
    let (answered, answers) = std::sync::mpsc::channel();
    let asks = m
        .spawn(TaskOptions::new(), |ctx| {
            Box::pin(async move {
                let answer = ctx.request_input("k", elicitation("go on?")).await?;
                answered.send(answer.clone()).unwrap();
                ctx.cancelled().await;
                Ok(text(&answer.to_string()))
            })
        })
        .await
        .unwrap();
    let other = super::until_cancelled(&m).await;
    let (held, other) = (
        TaskId::parse(&asks.task_id).unwrap(),
        TaskId::parse(&other.task_id).unwrap(),
    );
    super::until_input_required(&m, held.as_str()).await;
    store.hold(&held);
    if let Hang::Look = hang {
        // Stored by the peer, whose writes nothing holds; the owner's
        // next look at the task accepts it, and that write waits.
        peer.update_task(held.as_str(), [("k".to_owned(), json!({"yes": true}))])
            .await
            .unwrap();
    }
    eventually(|| async { (store.waiting.load(Ordering::SeqCst) > 0).then_some(()) }).await;
    let lease_of = |id: &TaskId| backend_task(&backend, id).lease_expires_at;
    let mut seen = lease_of(&other);
    for _ in 0..2 {
        seen = eventually(|| async {
            let now = lease_of(&other);
            (now > seen).then_some(now)
        })
        .await;
    }
    assert!(
        store.waiting.load(Ordering::SeqCst) > 0,
        "{hang:?}: the held task's write still waits"
    );
    store.let_go();
    if let Hang::Renewal = hang {
        m.update_task(held.as_str(), [("k".to_owned(), json!({"yes": true}))])
            .await
            .unwrap();
    }
    let answer = eventually(|| async { answers.try_recv().ok() }).await;
    assert_eq!(answer, json!({"yes": true}));
    let before = lease_of(&held);
    eventually(|| async { (lease_of(&held) > before).then_some(()) }).await;
    for id in [&held, &other] {
        m.cancel_task(id.as_str()).await.unwrap();
    }
    let done = settled(&m, held.as_str()).await;
    assert_eq!(
        done.status(),
        rmcp::model::TaskStatus::Completed,
        "{hang:?}: {done:?}"
    );
    assert_eq!(
        settled(&m, other.as_str()).await.status(),
        rmcp::model::TaskStatus::Cancelled,
        "{hang:?}"
    );
    m.shutdown().await;
    peer.shutdown().await;
}

/// Task `id` as stored, read through a handle of its own.
pub(super) fn backend_task(backend: &Arc<MemoryBackend>, id: &TaskId) -> Task {
    on(backend, "reader", Duration::from_secs(1))
        .get(id)
        .unwrap()
        .unwrap()
}

/// A watch interval of zero is held to [`MIN_WATCH_INTERVAL`]: over any
/// stretch of time, the owner reads its running task at most once per
/// floor, and one more for a tick under way at either end. (The loop
/// ticked about every millisecond, a store read per run each time.) The
/// bound is on how many reads, never on how soon: a slow machine reads
/// less, not more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_interval_of_zero_is_held_to_a_floor() {
    let hour = Duration::from_secs(3_600);
    let backend = Arc::new(MemoryBackend::new());
    let store = Held::new(on(&backend, "owner", hour));
    let m = DurableTaskManager::with_options(
        Arc::clone(&store),
        ManagerOptions::new()
            .watch_interval(Duration::ZERO)
            .reap_interval(hour)
            .sweep_interval(hour),
    );
    let seed = super::until_cancelled(&m).await;
    // Watched.
    eventually(|| async { (store.gets.load(Ordering::SeqCst) > 0).then_some(()) }).await;
    let start = Instant::now();
    let before = store.gets.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reads = store.gets.load(Ordering::SeqCst) - before;
    let floors = start.elapsed().as_millis() / MIN_WATCH_INTERVAL.as_millis();
    let most = usize::try_from(floors).unwrap() + 2;
    assert!(
        reads <= most,
        "{reads} reads of one task in {:?}, at most {most} wanted",
        start.elapsed()
    );
    m.cancel_task(&seed.task_id).await.unwrap();
    settled(&m, &seed.task_id).await;
    m.shutdown().await;
}

/// A panic in the loop of claims, reaps and sweeps ends the pass it is
/// in, or the resume of the one task it was resuming, and no later round:
/// here a host store whose `lease` panics once, as a claimed task is
/// resumed. The panic is logged with its pass and task; the task, claimed
/// but never run, is released at once (not left claimed by this live
/// instance for its lease, an hour, renewed by no one), claimed again by a
/// later round and resumed to its end; later rounds claim, reap and sweep
/// on, and the renewals go on. (The loop stopped for good at the panic: no
/// claim, reap or sweep after it, and the task read `working`, claimed by
/// a live instance that did not run it, until a restart.)
#[tokio::test]
async fn a_panic_in_the_maintenance_loop_names_its_pass() {
    // One thread: the background loop logs on this one.
    let logged = logged::Logged::default();
    let _log = tracing::subscriber::set_default(logged.clone());
    let backend = Arc::new(MemoryBackend::new());
    let dead = on(&backend, "dead", Duration::from_millis(50));
    let orphan = dead
        .create(NewTask::new().resumable("job", json!({})))
        .unwrap();
    drop(dead);
    // Leases of an hour, renewed every 50 ms: a task this instance claimed
    // and did not hand back would stay claimed past the test.
    let store = Held::new(on(&backend, "live", Duration::from_secs(3_600)));
    let options = fast()
        .renew_interval(Duration::from_millis(50))
        .reap_interval(Duration::from_millis(50))
        .sweep_interval(Duration::from_millis(1));
    let m = DurableTaskManager::with_options(Arc::clone(&store), options);
    let running = TaskId::parse(&until_cancelled(&m).await.task_id).unwrap();
    // Lapsed.
    eventually(|| async {
        backend_task(&backend, &orphan.id)
            .is_orphan_at(store.now())
            .then_some(())
    })
    .await;
    store.lease_panics.store(1, Ordering::SeqCst);
    m.register_resume("job", |_ctx| Box::pin(async { Ok(text("resumed")) }));
    let panicked = eventually(|| async {
        logged.events().into_iter().find(|e| {
            e.level == tracing::Level::ERROR
                && e.field("error")
                    .is_some_and(|m| m.contains("a bug in lease()"))
        })
    })
    .await;
    assert_eq!(panicked.field("pass"), Some("claim"), "{panicked:?}");
    assert_eq!(
        panicked.field("task"),
        Some(orphan.id.as_str()),
        "{panicked:?}"
    );
    assert_eq!(panicked.field("panics"), Some("1"), "{panicked:?}");
    let rounds = |store: &Held<_>| {
        [&store.claims, &store.reaps, &store.sweeps].map(|n| n.load(Ordering::SeqCst))
    };
    let at_panic = rounds(&store);
    // Claimed again by a later round, and resumed to its end: the claim
    // that panicked released it at once (its hour's lease given up), and
    // the next took it, with the attempt after.
    let done = settled(&m, orphan.id.as_str()).await;
    assert_eq!(
        done.status(),
        rmcp::model::TaskStatus::Completed,
        "{done:?}"
    );
    assert_eq!(backend_task(&backend, &orphan.id).epoch, 3);
    // Later rounds claim, reap and sweep on, twice each.
    eventually(|| async {
        let now = rounds(&store);
        (0..3).all(|i| now[i] >= at_panic[i] + 2).then_some(())
    })
    .await;
    // The renewals go on, twice.
    let mut seen = backend_task(&backend, &running).lease_expires_at;
    for _ in 0..2 {
        seen = eventually(|| async {
            let now = backend_task(&backend, &running).lease_expires_at;
            (now > seen).then_some(now)
        })
        .await;
    }
    let _ = m.cancel_task(running.as_str()).await;
    m.shutdown().await;
}

/// A claimed task whose resume panics at every claim is not claimed for
/// ever: each claim that panics releases it, taking an attempt, and the
/// one on its last attempt fails it with `{"code": "resume_panicked"}`,
/// naming the task, the instance and the panic. Here a task made with the
/// default three attempts (its first owner's, then two claims). (The
/// first panic stopped the loop, the task left claimed, `working`.) The
/// store's clock is the test's, moved once past the dead owner's lease: a
/// claimed lease never lapses here, so a stall of the machine between a
/// claim and its panic lets no poll reap the task. (On the system clock,
/// the test process stopped 2 s there let the claimed 100 ms lease lapse,
/// and a poll failed the task on its last attempt `orphaned`.)
#[tokio::test]
async fn a_task_whose_resume_panics_at_every_claim_fails_on_its_last_attempt() {
    let lease = Duration::from_millis(100);
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let backend = Arc::new(MemoryBackend::new());
    let open = |name: &str| {
        Store::with_backend(Arc::clone(&backend))
            .instance_id(name)
            .clock(Arc::clone(&clock) as Arc<dyn crate::Clock>)
            .lease(lease)
            .build()
            .unwrap()
    };
    let dead = open("dead");
    let orphan = dead
        .create(NewTask::new().resumable("job", json!({})))
        .unwrap();
    drop(dead);
    clock.advance(lease);
    let store = Held::new(open("live"));
    let options = fast().reap_interval(Duration::from_millis(50));
    let m = DurableTaskManager::with_options(Arc::clone(&store), options);
    store.lease_panics.store(usize::MAX, Ordering::SeqCst);
    m.register_resume("job", |_ctx| Box::pin(async { Ok(text("resumed")) }));
    let done = settled(&m, orphan.id.as_str()).await;
    let rmcp::model::TaskPayload::Failed { error } = done.payload else {
        panic!("{done:?}")
    };
    let error = &error["data"];
    assert_eq!(error["code"], "resume_panicked", "{error}");
    assert_eq!(error["instance"], "live", "{error}");
    let message = error["message"].as_str().unwrap();
    for part in [orphan.id.as_str(), "a bug in lease()", "last attempt"] {
        assert!(message.contains(part), "{part}: {message}");
    }
    let stored = backend_task(&backend, &orphan.id);
    assert_eq!(stored.epoch, 3, "two claims");
    assert_eq!(store.panicked.load(Ordering::SeqCst), 2, "two resumes");
    m.shutdown().await;
}

/// A pass that panics at every round (a host store whose `lease_now`
/// panics as each claim pass begins) ends no later pass: the reaps go on
/// after each. Its panics are counted and said at most once a minute by
/// the store's clock, with how many there were: once while the clock
/// stands still, however many rounds panic, and once more, with the count
/// since, after it has gone a minute on. (The first panic stopped the
/// loop: no reap after it.)
#[tokio::test]
async fn a_pass_that_panics_at_every_round_is_said_once_a_minute_and_ends_no_other() {
    let logged = logged::Logged::default();
    let _log = tracing::subscriber::set_default(logged.clone());
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let inner = Store::with_backend(Arc::new(MemoryBackend::new()))
        .instance_id("live")
        .clock(Arc::clone(&clock) as Arc<dyn crate::Clock>)
        .build()
        .unwrap();
    let store = Held::new(inner);
    store.lease_now_panics.store(true, Ordering::SeqCst);
    let options = fast().reap_interval(Duration::from_millis(1));
    let m = DurableTaskManager::with_options(Arc::clone(&store), options);
    m.register_resume("job", |_ctx| Box::pin(async { Ok(text("resumed")) }));
    let panics = || u64::try_from(store.panicked.load(Ordering::SeqCst)).unwrap();
    let said = || {
        logged
            .events()
            .into_iter()
            .filter(|e| e.field("pass") == Some("claim"))
            .collect::<Vec<_>>()
    };
    eventually(|| async {
        (panics() >= 3 && store.reaps.load(Ordering::SeqCst) >= 3).then_some(())
    })
    .await;
    let first = said();
    assert_eq!(first.len(), 1, "{first:?}");
    let error = first[0].field("error").unwrap_or_default();
    assert!(error.contains("a bug in lease_now()"), "{first:?}");
    assert_eq!(first[0].field("panics"), Some("1"));
    clock.advance(Duration::from_secs(61));
    let before = panics();
    let again = eventually(|| async { (said().len() == 2).then(|| said()[1].clone()) }).await;
    let (total, since) = (
        again.field("panics").unwrap().parse::<u64>().unwrap(),
        again
            .field("since_last_warning")
            .unwrap()
            .parse::<u64>()
            .unwrap(),
    );
    assert!(total > before, "{again:?}");
    assert_eq!(since, total - 1, "{again:?}");
    m.shutdown().await;
}

/// Reads slower than a tick (20 runs, each read 15 ms, ticks 20 ms apart)
/// leave the renewals in batches: a look under way that is merely slow,
/// not held up for a third of the lease, is no reason to renew its run
/// alone. (Every due renewal became a call of its own: a run's look was
/// under way at almost every tick, and thousands of them one by one
/// outlast a lease.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_slower_than_a_tick_leave_the_renewals_in_batches() {
    let backend = Arc::new(MemoryBackend::new());
    let inner = Store::with_backend(Arc::clone(&backend))
        .instance_id("owner")
        .lease(Duration::from_secs(60))
        .build()
        .unwrap();
    let store = Held::new(inner);
    store.slow_gets.store(true, Ordering::SeqCst);
    let hour = Duration::from_secs(3_600);
    // Renewals due every 200 ms, at ticks between which the runs are read
    // (a read of all 20 takes longer than a tick): when its renewal is due
    // a run's look is mostly under way, and its lease (a minute) is far
    // from a third gone.
    let options = fast()
        .reap_interval(hour)
        .renew_interval(Duration::from_millis(200));
    let m = DurableTaskManager::with_options(Arc::clone(&store), options);
    let mut ids = Vec::new();
    for _ in 0..20 {
        let h = super::until_cancelled(&m).await;
        ids.push(h.task_id);
    }
    store.renewals.lock().unwrap().clear();
    let sizes = eventually(|| async {
        let sizes = store.renewals.lock().unwrap().clone();
        (sizes.len() >= 20).then_some(sizes)
    })
    .await;
    for id in &ids {
        let _ = m.cancel_task(id).await;
    }
    m.shutdown().await;
    let renewed: usize = sizes.iter().sum();
    assert!(
        renewed >= 4 * sizes.len(),
        "renewals were made a few ids at a time: {sizes:?}"
    );
}

/// A manager whose watch interval is as long as its store's lease or longer
/// says so once, when made: its renewals run on the watch ticks, so every
/// lease would lapse between two, and peers reap or claim tasks it runs.
/// One with the default timing says nothing. (Nothing said it: the docs
/// alone warned.)
#[tokio::test]
async fn a_watch_interval_as_long_as_the_lease_is_warned_of() {
    let logged = logged::Logged::default();
    let _log = tracing::subscriber::set_default(logged.clone());
    let backend = Arc::new(MemoryBackend::new());
    let lease = Duration::from_secs(2);
    let quiet = DurableTaskManager::new(Arc::new(on(&backend, "quiet", lease)));
    quiet.shutdown().await;
    assert!(
        logged.warnings_of("watch interval").is_empty(),
        "{:?}",
        logged.warnings()
    );
    let slow = DurableTaskManager::with_options(
        Arc::new(on(&backend, "slow", lease)),
        ManagerOptions::new().watch_interval(lease),
    );
    slow.shutdown().await;
    let said = logged.warnings_of("watch interval");
    assert_eq!(said.len(), 1, "{:?}", logged.warnings());
    assert_eq!(said[0].field("watch_interval_ms"), Some("2000"));
    assert_eq!(said[0].field("lease_ms"), Some("2000"));
}

/// The background sweep logs what it did, as the reap beside it logs each
/// task it reaped: how many tasks it deleted (and cleaned, missed,
/// skipped) when it did anything, at info, and each failure of its pass
/// beside that, at warn. Here a first sweep deletes three expired tasks,
/// once with a failure after its deletions (a barrier fsync), once
/// without; a second, with nothing to do, logs nothing. (It called
/// `sweep_expired`: the failed sweep logged its error alone, not the
/// three tasks it deleted, and the one that succeeded logged nothing.)
#[tokio::test]
async fn the_background_sweep_logs_what_it_deleted_beside_its_failures() {
    for fails in [true, false] {
        // One thread: the background loop logs on this one.
        let logged = logged::Logged::default();
        let _log = tracing::subscriber::set_default(logged.clone());
        let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
        let inner = Store::with_backend(Arc::new(MemoryBackend::new()))
            .instance_id("sweeper")
            .clock(Arc::clone(&clock) as Arc<dyn crate::Clock>)
            .build()
            .unwrap();
        for _ in 0..3 {
            inner
                .create(NewTask::new().ttl(Duration::from_secs(1)))
                .unwrap();
        }
        clock.advance(Duration::from_secs(2));
        let store = Held::new(inner);
        store
            .sweep_failures
            .store(usize::from(fails), Ordering::SeqCst);
        // A sweep on every turn of the loop, the first at once: once the
        // second is made, the first's logs are written.
        let hour = Duration::from_secs(3_600);
        let options = fast()
            .reap_interval(hour)
            .sweep_interval(Duration::from_millis(1));
        let m = DurableTaskManager::with_options(Arc::clone(&store), options);
        eventually(|| async { (store.sweeps.load(Ordering::SeqCst) >= 2).then_some(()) }).await;
        m.shutdown().await;
        let swept: Vec<_> = logged
            .events()
            .into_iter()
            .filter(|e| e.field("message") == Some("swept expired tasks"))
            .collect();
        assert_eq!(swept.len(), 1, "{fails}: {:?}", logged.events());
        assert_eq!(swept[0].level, tracing::Level::INFO, "{fails}");
        assert_eq!(swept[0].field("deleted"), Some("3"), "{fails}: {swept:?}");
        for count in ["cleaned", "missed", "skipped"] {
            assert_eq!(swept[0].field(count), Some("0"), "{fails}: {swept:?}");
        }
        let failures = logged.warnings_of("sweep");
        if fails {
            assert_eq!(failures.len(), 1, "{:?}", logged.warnings());
            let error = failures[0].field("error").unwrap_or_default();
            assert!(error.contains("the disk is away"), "{failures:?}");
        } else {
            assert!(failures.is_empty(), "{failures:?}");
        }
    }
}

/// An event sink that panics on every `task.expired` event.
struct PanicsOnExpiry;

impl crate::EventSink for PanicsOnExpiry {
    fn emit(&self, event: &crate::Event) {
        let expired = crate::EventKind::Task(crate::TaskEventKind::Expired);
        assert!(event.kind != expired, "a bug in the sink");
    }
}

/// A panic in one round of the loop of claims, reaps and sweeps ends
/// neither that pass nor the loop: a host store whose `sweep` panics once
/// its deletions are made (a bug in its wrapper) has the panic logged as
/// that sweep's failure, and the next rounds sweep on; an event sink that
/// panics on every `task.expired` event cuts no sweep short (each sweep
/// deletes every expired task and says so). Here three tasks expire before
/// the first round, whose sweep panics, and two more after it, which a
/// later round deletes.
#[tokio::test]
async fn a_panic_in_one_round_of_sweeps_ends_no_later_round() {
    // One thread: the background loop logs on this one.
    let logged = logged::Logged::default();
    let _log = tracing::subscriber::set_default(logged.clone());
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let inner = Store::with_backend(Arc::new(MemoryBackend::new()))
        .instance_id("sweeper")
        .clock(Arc::clone(&clock) as Arc<dyn crate::Clock>)
        .sink(Arc::new(PanicsOnExpiry))
        .build()
        .unwrap();
    let store = Held::new(inner);
    let expiring = |n| {
        for _ in 0..n {
            store
                .inner
                .create(NewTask::new().ttl(Duration::from_secs(1)))
                .unwrap();
        }
        clock.advance(Duration::from_secs(2));
    };
    expiring(3);
    store.sweep_panics.store(1, Ordering::SeqCst);
    let hour = Duration::from_secs(3_600);
    let options = fast()
        .reap_interval(hour)
        .sweep_interval(Duration::from_millis(1));
    let m = DurableTaskManager::with_options(Arc::clone(&store), options);
    let failed = eventually(|| async {
        logged.warnings_of("sweep").into_iter().find(|e| {
            e.field("error")
                .is_some_and(|e| e.contains("a bug in sweep()"))
        })
    })
    .await;
    assert_eq!(
        failed.field("message"),
        Some("sweeping expired tasks failed"),
        "{failed:?}"
    );
    expiring(2);
    let swept = |deleted: &'static str| {
        let logged = logged.clone();
        async move {
            logged.events().into_iter().find(|e| {
                e.field("message") == Some("swept expired tasks")
                    && e.field("deleted") == Some(deleted)
            })
        }
    };
    eventually(|| swept("2")).await;
    m.shutdown().await;
    assert!(swept("3").await.is_none(), "the first sweep panicked");
    // Each expired task's event reached the sink (and was dropped).
    assert_eq!(store.inner.sink_panics(), 5);
}
