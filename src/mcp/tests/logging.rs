//! The manager, and the store's claims it makes, under a host's `tracing`
//! subscriber that panics: a line they log never costs a claim its result,
//! nor a task its run.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;

use super::{Flaky, eventually, fast, logged, settled, text};
use crate::backend::Backend;
use crate::mcp::DurableTaskManager;
use crate::{Clock, ManualClock, MemoryBackend, NewTask, Store, Task, TaskId, TaskStore};

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

/// A claim pass whose log of a task it could not claim panics (a host's
/// subscriber with a bug) still runs every task it claimed: the two it
/// claimed beside the one whose write failed are resumed and end, and the
/// third is claimed by a later pass. (The panic ended the pass between the
/// claim and the resumes: the two tasks stayed claimed by this live
/// instance, its lease an hour, with no run and no one to hand them back,
/// `working` until the lease lapsed.)
#[tokio::test]
async fn a_claim_pass_whose_log_panics_still_runs_the_tasks_it_claimed() {
    // One thread: the background loop logs on this one.
    let (_log, _, panics) = PanicsAt::install(&["could not claim"]);
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
    for orphan in &orphans {
        let done = settled(&m, orphan.id.as_str()).await;
        assert_eq!(
            done.status(),
            rmcp::model::TaskStatus::Completed,
            "{}: {done:?}",
            orphan.id
        );
    }
    assert_eq!(panics.load(Ordering::SeqCst), 1, "the log panicked once");
    m.shutdown().await;
}
