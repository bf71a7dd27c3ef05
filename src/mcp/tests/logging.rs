//! The manager under a host's `tracing` subscriber that panics: a line it
//! logs never costs a task its run.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;

use super::{Flaky, eventually, fast, logged, settled, text};
use crate::backend::Backend;
use crate::mcp::DurableTaskManager;
use crate::{MemoryBackend, NewTask, Store, Task, TaskStore};

/// A host's subscriber with a bug: it panics at every event whose message
/// holds `text`, and keeps the others (in `logged`).
struct PanicsAt {
    text: &'static str,
    logged: logged::Logged,
    panics: Arc<AtomicUsize>,
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
        let mut seen = logged::LogEvent {
            level: *event.metadata().level(),
            fields: Vec::new(),
        };
        event.record(&mut seen);
        if seen.field("message").is_some_and(|m| m.contains(self.text)) {
            self.panics.fetch_add(1, Ordering::SeqCst);
            panic!("a bug in the host's subscriber");
        }
        self.logged.event(event);
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// A claim pass whose log of a task it could not claim panics (a host's
/// subscriber with a bug) still runs every task it claimed: the two it
/// claimed beside the one whose write failed are resumed and end, and the
/// third is claimed by a later pass. (The panic ended the pass between
/// the claim and the resumes: the two tasks stayed claimed by this live
/// instance, its lease an hour, with no run and no one to hand them back,
/// `working` until the lease lapsed.)
#[tokio::test]
async fn a_claim_pass_whose_log_panics_still_runs_the_tasks_it_claimed() {
    // One thread: the background loop logs on this one.
    let panics = Arc::new(AtomicUsize::new(0));
    let subscriber = PanicsAt {
        text: "could not claim",
        logged: logged::Logged::default(),
        panics: Arc::clone(&panics),
    };
    let _log = tracing::subscriber::set_default(subscriber);
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
