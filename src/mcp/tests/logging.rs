//! The manager, and the store's claims, reaps and releases it makes, under
//! a host's `tracing` subscriber that panics: a line they log never costs
//! a claim or a reap its result, a release its answer, nor a task its run,
//! its hand-back or its first look.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;

use super::background::{Held, backend_task, on};
use super::{Flaky, elicitation, eventually, fast, logged, settled, text};
use crate::backend::Backend;
use crate::mcp::{DurableTaskManager, INPUT_KEYS_KEY, ManagerOptions, TaskExit};
use crate::{
    Clock, ManualClock, MemoryBackend, NewTask, Store, Task, TaskEventKind, TaskId, TaskStatus,
    TaskStore, TaskUpdate, Transition,
};

/// A host's subscriber with a bug: it panics at every event whose message
/// holds one of `texts`, once it has kept it (in `logged`, with the
/// others, in order).
struct PanicsAt {
    texts: &'static [&'static str],
    logged: logged::Logged,
    panics: Arc<AtomicUsize>,
}

impl PanicsAt {
    /// Installed on this thread until the guard is dropped: what it keeps,
    /// and how many times it panicked.
    fn install(
        texts: &'static [&'static str],
    ) -> (
        tracing::subscriber::DefaultGuard,
        logged::Logged,
        Arc<AtomicUsize>,
    ) {
        let (logged, panics) = (logged::Logged::default(), Arc::new(AtomicUsize::new(0)));
        let subscriber = PanicsAt {
            texts,
            logged: logged.clone(),
            panics: Arc::clone(&panics),
        };
        (tracing::subscriber::set_default(subscriber), logged, panics)
    }
}

impl tracing::Subscriber for PanicsAt {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        self.logged.event(event);
        let mut seen = logged::LogEvent {
            level: *event.metadata().level(),
            fields: Vec::new(),
        };
        event.record(&mut seen);
        let message = seen.field("message").unwrap_or_default();
        if self.texts.iter().any(|text| message.contains(text)) {
            self.panics.fetch_add(1, Ordering::SeqCst);
            panic!("a bug in the host's subscriber");
        }
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// A handle named `name` over `backend`, on `clock`, with leases of 10 s.
fn on_clock<B: Backend>(backend: B, name: &str, clock: &Arc<ManualClock>) -> Store<B> {
    Store::with_backend(backend)
        .instance_id(name)
        .clock(Arc::clone(clock) as Arc<dyn Clock>)
        .lease(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A manager whose loops come round for no pass but the claim a
/// registration wakes (every interval an hour).
fn frozen() -> ManagerOptions {
    let hour = Duration::from_secs(3_600);
    ManagerOptions::new()
        .watch_interval(hour)
        .renew_interval(hour)
        .reap_interval(hour)
}

/// Waits until each of `tasks` has ended at `m`, and checks that it
/// completed.
async fn completed<S: TaskStore>(m: &DurableTaskManager<S>, tasks: &[Task]) {
    for task in tasks {
        let done = settled(m, task.id.as_str()).await;
        assert_eq!(
            done.status(),
            rmcp::model::TaskStatus::Completed,
            "{}: {done:?}",
            task.id
        );
    }
}

/// A claim whose lines panic as it says them (a host's subscriber with a
/// bug) returns every task it claimed, and the one it could not: the
/// tasks it claimed reach the caller, to be run. (The first line it said
/// of a claimed task, after every claim was written, ended the call: the
/// tasks stayed claimed by a live instance that ran none of them, until
/// their lease lapsed.)
#[test]
fn a_claim_whose_log_panics_returns_every_task_it_claimed() {
    let (_log, _, panics) = PanicsAt::install(&[
        "claimed an orphaned task",
        "a failed claim may have left",
        "a task the pass could not handle",
    ]);
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let memory = MemoryBackend::new();
    let dead = on_clock(memory.clone(), "dead", &clock);
    let orphans: Vec<TaskId> = (0..3)
        .map(|_| {
            dead.create(NewTask::new().resumable("job", json!({})))
                .unwrap()
                .id
        })
        .collect();
    clock.advance(Duration::from_secs(11));
    let failing = orphans[1].clone();
    let live = on_clock(
        Flaky::new(memory, 1, move |current, _| current.id == failing),
        "live",
        &clock,
    );
    let claimed = live.claim(&["job"]).unwrap();
    let mut ids: Vec<&TaskId> = claimed.tasks.iter().map(|t| &t.id).collect();
    ids.sort();
    let mut expected = vec![&orphans[0], &orphans[2]];
    expected.sort();
    assert_eq!(ids, expected, "{claimed:?}");
    let missed: Vec<&TaskId> = claimed.missed.iter().map(|m| &m.id).collect();
    assert_eq!(missed, [&orphans[1]], "{claimed:?}");
    // Each claimed task's line, and the failed claim's two.
    assert_eq!(panics.load(Ordering::SeqCst), 4);
}

/// A reap whose lines panic as it says them (a host's subscriber with a
/// bug) reaps every orphan, reports each and sends each one's
/// `task.reaped`. (The first task's line ended the call: the orphans were
/// reaped, but the caller was told none of them and the sink heard of
/// none.)
#[test]
fn a_reap_whose_log_panics_reports_every_task_it_reaped() {
    let (_log, _, panics) = PanicsAt::install(&["reaped an orphaned task"]);
    let (live, mut orphans, events) = two_orphans(|memory| memory);
    let reaped = live.reap().unwrap();
    let mut ids: Vec<TaskId> = reaped.tasks.iter().map(|t| t.id.clone()).collect();
    ids.sort();
    orphans.sort();
    assert_eq!(ids, orphans, "{reaped:?}");
    assert_eq!(
        told(&events, TaskEventKind::Reaped),
        2,
        "each reaped task's event sent"
    );
    assert_eq!(panics.load(Ordering::SeqCst), 2);
}

/// Two orphans of a dead instance's, their leases lapsed, and a live
/// handle to reap them over `wrap` of their backend, its events kept.
fn two_orphans<B: Backend>(
    wrap: impl FnOnce(MemoryBackend) -> B,
) -> (Store<B>, Vec<TaskId>, Arc<crate::EventLog>) {
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let memory = MemoryBackend::new();
    let dead = on_clock(memory.clone(), "dead", &clock);
    let orphans: Vec<TaskId> = (0..2)
        .map(|_| dead.create(NewTask::new()).unwrap().id)
        .collect();
    clock.advance(Duration::from_secs(11));
    let events = Arc::new(crate::EventLog::new());
    let live = Store::with_backend(wrap(memory))
        .instance_id("live")
        .clock(Arc::clone(&clock) as Arc<dyn Clock>)
        .lease(Duration::from_secs(10))
        .sink(events.clone())
        .build()
        .unwrap();
    (live, orphans, events)
}

/// How many events of `kind` `events` holds.
fn told(events: &crate::EventLog, kind: TaskEventKind) -> usize {
    events
        .snapshot()
        .iter()
        .filter(|r| r.event.kind == kind)
        .count()
}

/// A release whose line panics (a host's subscriber with a bug) answers
/// the release it made. (The panic reached the caller, the task released
/// all the same: the MCP manager's hand-back said it could not hand the
/// task back.)
#[test]
fn a_release_whose_log_panics_answers_the_release_it_made() {
    let (_log, _, panics) = PanicsAt::install(&["released a task"]);
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let store = on_clock(MemoryBackend::new(), "owner", &clock);
    let task = store.create(NewTask::new()).unwrap();
    let released = store.release(&task.id, task.epoch).unwrap();
    assert!(released.is_applied(), "{released:?}");
    assert_eq!(panics.load(Ordering::SeqCst), 1);
}

/// A create whose reply was lost and whose removal of what it may have
/// left failed, said by a line that panics (a host's subscriber with a
/// bug), answers its error and keeps the task to remove: the next renewal
/// pass removes it. (The panic reached the caller before the task was
/// kept: it stayed in the store for good, a task of this handle's that it
/// never renewed nor removed.)
#[test]
fn a_failed_create_whose_log_panics_still_removes_what_it_left() {
    let (_log, _, panics) = PanicsAt::install(&["a failed create may have left"]);
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let memory = MemoryBackend::new();
    let flaky = Flaky::new(memory.clone(), 0, |_, _| false).losing(1, 1);
    let store = on_clock(flaky, "owner", &clock);
    let id = TaskId::parse("left-by-a-create").unwrap();
    let err = store
        .create(NewTask::new().id(id.clone()))
        .expect_err("its reply lost");
    assert!(err.to_string().contains("the reply was lost"), "{err}");
    assert!(memory.load(&id).unwrap().is_some(), "left in the store");
    store.renew_leases().unwrap();
    assert!(
        memory.load(&id).unwrap().is_none(),
        "removed by the next renewal pass"
    );
    assert_eq!(panics.load(Ordering::SeqCst), 1);
}

/// A reap that finds expired tasks, one of whose removals fails, said by a
/// line that panics (a host's subscriber with a bug), removes the others
/// and reports them. (The panic ended the call at the failed removal.)
#[test]
fn a_reap_whose_log_of_an_expired_task_panics_removes_the_others() {
    let (_log, _, panics) = PanicsAt::install(&["could not delete an expired task"]);
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let memory = MemoryBackend::new();
    let owner = on_clock(memory.clone(), "owner", &clock);
    let expiring: Vec<TaskId> = (0..2)
        .map(|_| {
            owner
                .create(NewTask::new().ttl(Duration::from_secs(5)))
                .unwrap()
                .id
        })
        .collect();
    clock.advance(Duration::from_secs(11));
    let reaper = on_clock(
        Flaky::new(memory.clone(), 0, |_, _| false).losing(0, 1),
        "reaper",
        &clock,
    );
    let reaped = reaper.reap().unwrap();
    assert_eq!(reaped.expired.len(), 1, "{reaped:?}");
    let left: Vec<&TaskId> = expiring
        .iter()
        .filter(|id| memory.load(id).unwrap().is_some())
        .collect();
    assert_eq!(left.len(), 1, "one removal failed, the other made");
    assert_eq!(panics.load(Ordering::SeqCst), 1);
}

/// A reap that meets an entry it cannot read, said by a line that panics
/// (a host's subscriber with a bug), sends the entry's `task.unreadable`
/// and reaps every orphan. (The panic ended the reap before its writes,
/// and the sink heard nothing of the entry.)
#[test]
fn a_reap_whose_log_of_an_unreadable_entry_panics_reaps_and_reports_it() {
    let (_log, _, panics) = PanicsAt::install(&["skipped a stored entry"]);
    let (live, _, events) = two_orphans(|memory| Flaky::new(memory, 0, |_, _| false).skipping());
    let reaped = live.reap().unwrap();
    assert_eq!(reaped.tasks.len(), 2, "{reaped:?}");
    assert_eq!(reaped.skipped.len(), 1, "{reaped:?}");
    assert_eq!(
        told(&events, TaskEventKind::Unreadable),
        1,
        "the entry's event sent"
    );
    assert_eq!(panics.load(Ordering::SeqCst), 1);
}

/// A write whose sink panics, said by a line that panics too (a host's
/// subscriber with a bug), answers the write it made. (The second panic,
/// in the warning that says the sink's, reached the caller of a create
/// that was stored.)
#[test]
fn a_write_whose_sink_panics_under_a_panicking_subscriber_answers_the_write() {
    struct Panicky;
    impl crate::EventSink for Panicky {
        fn emit(&self, _: &crate::Event) {
            panic!("a bug in the host's sink");
        }
    }
    let (_log, _, panics) = PanicsAt::install(&["an event sink panicked"]);
    let memory = MemoryBackend::new();
    let store = Store::with_backend(memory.clone())
        .sink(Arc::new(Panicky))
        .build()
        .unwrap();
    let task = store.create(NewTask::new()).unwrap();
    assert!(memory.load(&task.id).unwrap().is_some());
    assert_eq!(panics.load(Ordering::SeqCst), 1);
}

/// A claim pass whose log of a task it could not claim panics (a host's
/// subscriber with a bug) still runs every task it claimed: the two it
/// claimed beside the one whose write failed are resumed and end, and the
/// third is claimed by a later pass. The pass starts them before it says
/// the one it could not claim. (The panic ended the pass between the
/// claim and the resumes: the two tasks stayed claimed by this live
/// instance, its lease an hour, with no run and no one to hand them back,
/// `working` until the lease lapsed.)
#[tokio::test]
async fn a_claim_pass_whose_log_panics_still_runs_the_tasks_it_claimed() {
    // One thread: the background loop logs on this one.
    let (_log, logged, panics) = PanicsAt::install(&["could not claim"]);
    let memory = MemoryBackend::new();
    let dead = Store::with_backend(memory.clone())
        .instance_id("dead")
        .lease(Duration::from_millis(50))
        .build()
        .unwrap();
    let orphans: Vec<Task> = (0..3)
        .map(|_| {
            dead.create(NewTask::new().resumable("job", json!({})))
                .unwrap()
        })
        .collect();
    drop(dead);
    // The first write of one of them fails (as a file store's might): the
    // pass cannot claim it.
    let failing = orphans[1].id.clone();
    let backend = Flaky::new(memory.clone(), 1, move |current, _| current.id == failing);
    let store = Store::with_backend(backend)
        .instance_id("live")
        .lease(Duration::from_secs(3_600))
        .build()
        .unwrap();
    eventually(|| async {
        let now = store.now();
        orphans
            .iter()
            .all(|t| memory.load(&t.id).unwrap().unwrap().is_orphan_at(now))
            .then_some(())
    })
    .await;
    let options = fast().reap_interval(Duration::from_millis(50));
    let m = DurableTaskManager::with_options(Arc::new(store), options);
    m.register_resume("job", |_ctx| Box::pin(async { Ok(text("resumed")) }));
    completed(&m, &orphans).await;
    assert_eq!(panics.load(Ordering::SeqCst), 1, "the log panicked once");
    let events = logged.events();
    let said =
        |e: &logged::LogEvent, text: &str| e.field("message").is_some_and(|m| m.contains(text));
    let missed_at = events
        .iter()
        .position(|e| said(e, "could not claim"))
        .unwrap();
    let mut started: Vec<&str> = events[..missed_at]
        .iter()
        .filter(|e| said(e, "resuming a claimed task"))
        .filter_map(|e| e.field("task"))
        .collect();
    started.sort_unstable();
    let mut claimed = vec![orphans[0].id.as_str(), orphans[2].id.as_str()];
    claimed.sort_unstable();
    assert_eq!(started, claimed, "started before the missed one is said");
    m.shutdown().await;
}

/// A claim pass's first look at each task it claimed (here, at the answers
/// a peer stored while no one ran it) is made for every task, though the
/// look at the first logs a line that panics (its answer's write failed),
/// and so does the line of a task it could not claim: the second task's
/// answer is accepted. (The panic ended the pass at the first look: the
/// second task's answer waited, `input_required`, for a watch tick's
/// look, here an hour away.)
#[tokio::test]
async fn a_claim_pass_whose_look_at_one_task_panics_still_looks_at_the_others() {
    // One thread: the background loop logs on this one.
    let (_log, _, panics) =
        PanicsAt::install(&["could not accept input responses", "could not claim"]);
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let memory = MemoryBackend::new();
    let dead = on_clock(memory.clone(), "dead", &clock);
    let peer = DurableTaskManager::with_options(
        Arc::new(on_clock(memory.clone(), "peer", &clock)),
        frozen(),
    );
    let unclaimable = dead
        .create(NewTask::new().resumable("job", json!({})))
        .unwrap()
        .id;
    let request = serde_json::to_value(elicitation("?")).unwrap();
    let mut answered = Vec::new();
    for _ in 0..2 {
        let task = dead
            .create(NewTask::new().resumable("job", json!({})))
            .unwrap();
        let asking = TaskUpdate::new()
            .status(TaskStatus::InputRequired)
            .input_requests(json!({ "k": request }));
        let asked = dead.update(&task.id, asking).unwrap();
        assert!(matches!(asked, Transition::Applied(_)), "{asked:?}");
        peer.update_task(task.id.as_str(), [("k".to_owned(), json!("yes"))])
            .await
            .unwrap();
        answered.push(task.id);
        // The next one made later: claimed, and looked at, after.
        clock.advance(Duration::from_secs(1));
    }
    clock.advance(Duration::from_secs(10));
    // The claim of one fails, and so does the write that accepts the
    // first task's answer (each the one write so chosen).
    let first = answered[0].clone();
    let backend = Flaky::new(memory, 2, move |current, next| {
        current.id == unclaimable || (current.id == first && next.status == TaskStatus::Working)
    });
    let m = DurableTaskManager::with_options(Arc::new(on_clock(backend, "live", &clock)), frozen());
    m.register_resume("job", |ctx| {
        Box::pin(async move {
            ctx.cancelled().await;
            Err(TaskExit::Cancelled)
        })
    });
    let second = &answered[1];
    let accepted = eventually(|| async {
        let task = dead.get(second).unwrap().unwrap();
        (task.status == TaskStatus::Working).then_some(task)
    })
    .await;
    assert_eq!(
        accepted.metadata[INPUT_KEYS_KEY]["k"]["response"],
        json!("yes"),
        "{accepted:?}"
    );
    assert_eq!(dead.get(&answered[0]).unwrap().unwrap().epoch, 2);
    assert_eq!(
        panics.load(Ordering::SeqCst),
        2,
        "the missed task's line, the first look's"
    );
}

/// The store of [`claiming`]: its `lease` panics as armed.
type Live = Held<Store<Arc<MemoryBackend>>>;

/// A manager over a live handle (leases of an hour) whose first
/// `panicking` resumes panic (its store's `lease` does), made once two
/// resumable orphans made by `new` at a dead instance have lapsed, and
/// resuming them (each to "resumed"); its store, and the orphans.
async fn claiming(
    new: fn() -> NewTask,
    panicking: usize,
) -> (DurableTaskManager<Live>, Arc<Live>, Vec<Task>) {
    let backend = Arc::new(MemoryBackend::new());
    let dead = on(&backend, "dead", Duration::from_millis(50));
    let orphans: Vec<Task> = (0..2).map(|_| dead.create(new()).unwrap()).collect();
    drop(dead);
    let store = Held::new(on(&backend, "live", Duration::from_secs(3_600)));
    eventually(|| async {
        let now = store.now();
        orphans
            .iter()
            .all(|t| backend_task(&backend, &t.id).is_orphan_at(now))
            .then_some(())
    })
    .await;
    let options = fast().reap_interval(Duration::from_millis(50));
    let m = DurableTaskManager::with_options(Arc::clone(&store), options);
    store.lease_panics.store(panicking, Ordering::SeqCst);
    m.register_resume("job", |_ctx| Box::pin(async { Ok(text("resumed")) }));
    (m, store, orphans)
}

/// A claim pass whose report of a resume that panicked (a host store whose
/// `lease` panics) panics in turn, at a host's subscriber, still hands that
/// task back and resumes the other: both end, the one handed back at a
/// later pass. (The panic left the pass at the report: the task stayed
/// claimed by this live instance with no run, its lease an hour, and so
/// did the other, never resumed.)
#[tokio::test]
async fn a_claim_pass_whose_panic_report_panics_still_hands_back_and_resumes() {
    // One thread: the background loop logs on this one.
    let (_log, _, panics) =
        PanicsAt::install(&["a pass of the manager's claims, reaps and sweeps panicked"]);
    let (m, store, orphans) = claiming(|| NewTask::new().resumable("job", json!({})), 1).await;
    completed(&m, &orphans).await;
    assert_eq!(store.panicked.load(Ordering::SeqCst), 1, "one resume");
    assert_eq!(panics.load(Ordering::SeqCst), 1, "its report");
    m.shutdown().await;
}

/// A claim pass that hands back two tasks whose resumes panicked, each on
/// its last attempt, fails both, though its line for the first failed one
/// panics at a host's subscriber. (The panic left the pass at the first
/// hand-back: the second task stayed claimed by this live instance with
/// no run, its lease an hour, `working`.)
#[tokio::test]
async fn a_claim_pass_whose_hand_back_line_panics_still_hands_back_the_others() {
    // One thread: the background loop logs on this one.
    let (_log, _, panics) = PanicsAt::install(&["on its last attempt was failed"]);
    // The claim is each task's last attempt.
    let last = || NewTask::new().resumable("job", json!({})).max_attempts(2);
    let (m, _, orphans) = claiming(last, 2).await;
    for orphan in &orphans {
        let done = settled(&m, orphan.id.as_str()).await;
        let rmcp::model::TaskPayload::Failed { error } = done.payload else {
            panic!("{}: {done:?}", orphan.id)
        };
        assert_eq!(error["data"]["code"], "resume_panicked", "{error:?}");
    }
    assert_eq!(panics.load(Ordering::SeqCst), 2, "each hand-back's line");
    m.shutdown().await;
}
