//! The shared conformance suite: every store, over every backend, runs it.
//!
//! Like `object_store`'s `integration` module, with one function per
//! property, races included. A backend's tests call [`run`] with a factory
//! of fresh, empty [`Storage`]s; the suite opens two handles on each (two
//! instances, as two processes or hosts would be) and checks every rule
//! through them, from one thread and from many. Each check panics with a
//! message naming what broke.
//!
//! ```no_run
//! # #[cfg(feature = "conformance")] {
//! use std::sync::Arc;
//! use taskstore::conformance::{self, Setup};
//! use taskstore::{MemoryBackend, Store};
//!
//! conformance::run(|| {
//!     // One storage: every handle opened on it shares its tasks.
//!     let backend = MemoryBackend::new();
//!     move |setup: &Setup, instance_id: &str| {
//!         setup
//!             .configure(Store::with_backend(backend.clone()), instance_id)
//!             .build()
//!             .unwrap()
//!     }
//! });
//! # }
//! ```

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::{
    Clock, Error, Event, EventLog, ListQuery, MAX_DEPTH, ManualClock, NewTask, StoreBuilder, Task,
    TaskEventKind, TaskId, TaskStatus, TaskStore, TaskUpdate, Transition,
};

/// What a store under test must be configured with: the suite's clock,
/// caps, lease and event sink. [`Setup::configure`] applies them all.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Setup {
    /// The store's clock; the suite advances it.
    pub clock: ManualClock,
    /// The cap on active tasks.
    pub max_active: usize,
    /// The cap on one task's encoded size.
    pub max_payload_bytes: usize,
    /// The lease duration.
    pub lease: Duration,
    /// Where every handle sends its events; the suite counts them.
    pub events: Arc<EventLog<Event>>,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            // A fixed start, so failures reproduce.
            clock: ManualClock::new(
                OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("a valid timestamp"),
            ),
            max_active: 1_000,
            max_payload_bytes: 64 * 1024,
            lease: Duration::from_secs(30),
            events: Arc::new(EventLog::with_capacity(100_000)),
        }
    }

    /// `builder` with every setting the suite needs, for the handle of
    /// `instance_id`.
    pub fn configure<O>(&self, builder: StoreBuilder<O>, instance_id: &str) -> StoreBuilder<O> {
        builder
            .clock(Arc::new(self.clock.clone()))
            .max_active(self.max_active)
            .max_payload_bytes(self.max_payload_bytes)
            .lease(self.lease)
            .instance_id(instance_id)
            .sink(self.events.clone())
    }
}

/// One fresh, empty storage (a directory, a database schema, a shared
/// in-memory map): every handle it opens shares the same tasks.
pub trait Storage {
    /// The store a handle is.
    type Store: TaskStore;

    /// Opens a handle with the suite's settings ([`Setup::configure`]) and
    /// this instance id.
    fn open(&self, setup: &Setup, instance_id: &str) -> Self::Store;
}

impl<S: TaskStore, F: Fn(&Setup, &str) -> S> Storage for F {
    type Store = S;

    fn open(&self, setup: &Setup, instance_id: &str) -> S {
        self(setup, instance_id)
    }
}

/// The instance ids of the two handles every check gets.
pub const INSTANCES: [&str; 2] = ["instance-a", "instance-b"];

/// Opens one more handle on the storage of a check, with an instance id.
type Reopen<'a> = &'a dyn Fn(&str) -> Box<dyn TaskStore>;

/// One check of the suite: on one handle, on two handles on one storage, or
/// on two with a way to open more.
#[derive(Clone, Copy)]
enum Check {
    One(fn(&dyn TaskStore, &Setup)),
    Two(fn(&dyn TaskStore, &dyn TaskStore, &Setup)),
    More(fn(&dyn TaskStore, &dyn TaskStore, Reopen<'_>, &Setup)),
}

/// Runs every check, each against two handles on a fresh storage from
/// `new_storage`.
pub fn run<St: Storage>(new_storage: impl Fn() -> St)
where
    St::Store: 'static,
{
    use Check::{More, One, Two};
    let checks: &[(&str, Check)] = &[
        ("create_and_get", One(create_and_get)),
        ("host_chosen_ids", One(host_chosen_ids)),
        (
            "update_merges_and_bumps_revision",
            One(update_merges_and_bumps_revision),
        ),
        (
            "terminal_status_in_update_is_an_error",
            One(terminal_status_in_update_is_an_error),
        ),
        ("first_writer_wins", One(first_writer_wins)),
        (
            "missing_tasks_are_not_found",
            One(missing_tasks_are_not_found),
        ),
        ("ttl_counts_from_creation", One(ttl_counts_from_creation)),
        (
            "sweep_deletes_expired_tasks",
            One(sweep_deletes_expired_tasks),
        ),
        (
            "list_orders_filters_and_pages",
            One(list_orders_filters_and_pages),
        ),
        (
            "paging_is_stable_while_creating",
            One(paging_is_stable_while_creating),
        ),
        (
            "invalid_cursor_is_an_error",
            One(invalid_cursor_is_an_error),
        ),
        ("a_zero_limit_is_an_error", One(a_zero_limit_is_an_error)),
        ("delete_removes_the_task", One(delete_removes_the_task)),
        (
            "payload_cap_changes_nothing",
            One(payload_cap_changes_nothing),
        ),
        (
            "active_cap_changes_nothing",
            One(active_cap_changes_nothing),
        ),
        ("leases_and_orphans", One(leases_and_orphans)),
        (
            "every_accepted_value_reads_back",
            Two(every_accepted_value_reads_back),
        ),
        (
            "too_deep_values_are_refused",
            One(too_deep_values_are_refused),
        ),
        (
            "two_handles_share_one_store",
            Two(two_handles_share_one_store),
        ),
        (
            "threads_race_terminal_transitions",
            One(threads_race_terminal_transitions),
        ),
        ("threads_race_updates", One(threads_race_updates)),
        (
            "handles_race_terminal_transitions",
            Two(handles_race_terminal_transitions),
        ),
        ("handles_race_updates", Two(handles_race_updates)),
        (
            "another_instance_renews_nothing_and_reaps",
            Two(another_instance_renews_nothing_and_reaps),
        ),
        (
            "a_near_cap_orphan_is_reaped",
            One(a_near_cap_orphan_is_reaped),
        ),
        (
            "every_orphan_is_reaped_in_one_pass",
            One(every_orphan_is_reaped_in_one_pass),
        ),
        (
            "events_once_per_applied_transition",
            Two(events_once_per_applied_transition),
        ),
        (
            "a_claim_moves_the_owner_and_fences_the_old_one",
            Two(a_claim_moves_the_owner_and_fences_the_old_one),
        ),
        (
            "a_reopened_instance_is_not_the_owner",
            More(a_reopened_instance_is_not_the_owner),
        ),
        (
            "resumable_orphans_wait_for_a_claim_then_are_reaped",
            Two(resumable_orphans_wait_for_a_claim_then_are_reaped),
        ),
        ("claims_race", Two(claims_race)),
        (
            "a_release_hands_the_task_over_at_once",
            Two(a_release_hands_the_task_over_at_once),
        ),
    ];
    for (name, check) in checks {
        let setup = Setup::new();
        let storage = new_storage();
        let a = storage.open(&setup, INSTANCES[0]);
        let b = storage.open(&setup, INSTANCES[1]);
        let reopen = |instance_id: &str| -> Box<dyn TaskStore> {
            Box::new(storage.open(&setup, instance_id))
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match check {
            One(check) => check(&a, &setup),
            Two(check) => check(&a, &b, &setup),
            More(check) => check(&a, &b, &reopen, &setup),
        }));
        if let Err(panic) = outcome {
            eprintln!("conformance check `{name}` failed");
            std::panic::resume_unwind(panic);
        }
    }
}

fn applied(t: Transition) -> Task {
    assert!(t.is_applied(), "expected Applied, got {t:?}");
    t.into_task()
}

fn create_and_get(store: &dyn TaskStore, setup: &Setup) {
    let now = setup.clock.now();
    let task = store
        .create(
            NewTask::new()
                .ttl(Duration::from_secs(60))
                .poll_interval(Duration::from_millis(500))
                .status_message("starting")
                .metadata("tool", "slow"),
        )
        .unwrap();
    assert_eq!(task.status, TaskStatus::Working);
    assert_eq!(task.created_at, now);
    assert_eq!(task.last_updated_at, now);
    assert_eq!(task.revision, 1);
    assert_eq!(task.ttl, Some(Duration::from_secs(60)));
    assert_eq!(task.poll_interval, Some(Duration::from_millis(500)));
    assert_eq!(task.status_message.as_deref(), Some("starting"));
    assert_eq!(task.metadata["tool"], "slow");
    assert_eq!(task.owner.as_deref(), Some(store.instance_id()));
    assert_eq!(store.get(&task.id).unwrap(), Some(task.clone()));
    uuid_v4(&task.id);
}

fn uuid_v4(id: &TaskId) {
    assert_eq!(
        id.as_str().len(),
        36,
        "generated ids are hyphenated UUIDs: {id}"
    );
    assert_eq!(
        id.as_str().as_bytes()[14],
        b'4',
        "generated ids are UUID v4: {id}"
    );
}

fn host_chosen_ids(store: &dyn TaskStore, _: &Setup) {
    let id = TaskId::parse("job-1.a_b").unwrap();
    let task = store.create(NewTask::new().id(id.clone())).unwrap();
    assert_eq!(task.id, id);
    match store.create(NewTask::new().id(id.clone())) {
        Err(Error::AlreadyExists { id: taken }) => assert_eq!(taken, id),
        other => panic!("a taken id must be AlreadyExists, got {other:?}"),
    }
    assert_eq!(store.get(&id).unwrap(), Some(task));
}

fn update_merges_and_bumps_revision(store: &dyn TaskStore, setup: &Setup) {
    let task = store.create(NewTask::new().metadata("a", 1)).unwrap();
    setup.clock.advance(Duration::from_secs(1));
    let t = applied(
        store
            .update(
                &task.id,
                TaskUpdate::new()
                    .status(TaskStatus::InputRequired)
                    .input_requests(json!({"question": "which?"}))
                    .status_message("waiting")
                    .metadata("b", 2),
            )
            .unwrap(),
    );
    assert_eq!(t.status, TaskStatus::InputRequired);
    assert_eq!(t.revision, 2);
    assert_eq!(t.created_at, task.created_at);
    assert_eq!(t.last_updated_at, setup.clock.now());
    assert_eq!(t.metadata["a"], 1, "other metadata keys stay");
    assert_eq!(t.metadata["b"], 2);
    assert_eq!(t.input_requests, Some(json!({"question": "which?"})));
    let t = applied(
        store
            .update(
                &task.id,
                TaskUpdate::new()
                    .status(TaskStatus::Working)
                    .metadata("a", 3),
            )
            .unwrap(),
    );
    assert_eq!(t.revision, 3);
    assert_eq!(t.metadata["a"], 3);
    assert_eq!(
        t.input_requests, None,
        "back to working clears input requests"
    );
    assert_eq!(t.status_message.as_deref(), Some("waiting"));
    assert_eq!(store.get(&task.id).unwrap(), Some(t));
}

fn terminal_status_in_update_is_an_error(store: &dyn TaskStore, _: &Setup) {
    let task = store.create(NewTask::new()).unwrap();
    for status in [
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ] {
        match store.update(&task.id, TaskUpdate::new().status(status)) {
            Err(Error::TerminalStatusInUpdate { id, status: s }) => {
                assert_eq!(id, task.id);
                assert_eq!(s, status);
            }
            other => panic!("terminal status in update must be an error, got {other:?}"),
        }
    }
    assert_eq!(store.get(&task.id).unwrap(), Some(task), "nothing changed");
}

fn first_writer_wins(store: &dyn TaskStore, setup: &Setup) {
    let task = store.create(NewTask::new()).unwrap();
    setup.clock.advance(Duration::from_secs(1));
    let done = applied(store.complete(&task.id, json!({"answer": 42})).unwrap());
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.result, Some(json!({"answer": 42})));
    assert_eq!(done.revision, 2);
    assert_eq!(done.lease_expires_at, None, "terminal tasks hold no lease");
    setup.clock.advance(Duration::from_secs(1));
    let later = [
        store.fail(&task.id, json!("late")).unwrap(),
        store.cancel(&task.id, Some("late".into())).unwrap(),
        store.complete(&task.id, json!("again")).unwrap(),
        store
            .update(&task.id, TaskUpdate::new().status_message("late"))
            .unwrap(),
    ];
    for t in later {
        assert_eq!(
            t,
            Transition::AlreadyTerminal(done.clone()),
            "a later writer changes nothing"
        );
    }
    assert_eq!(store.get(&task.id).unwrap(), Some(done));

    let failed = store.create(NewTask::new()).unwrap();
    let f = applied(store.fail(&failed.id, json!({"code": -1})).unwrap());
    assert_eq!(
        (f.status, f.error),
        (TaskStatus::Failed, Some(json!({"code": -1})))
    );
    let cancelled = store.create(NewTask::new().status_message("x")).unwrap();
    let c = applied(
        store
            .cancel(&cancelled.id, Some("user asked".into()))
            .unwrap(),
    );
    assert_eq!(c.status, TaskStatus::Cancelled);
    assert_eq!(c.status_message.as_deref(), Some("user asked"));
}

fn missing_tasks_are_not_found(store: &dyn TaskStore, _: &Setup) {
    let id = TaskId::new();
    assert_eq!(store.get(&id).unwrap(), None);
    let not_found = |r: crate::Result<Transition>| match r {
        Err(Error::NotFound { id: missing }) => assert_eq!(missing, id),
        other => panic!("expected NotFound, got {other:?}"),
    };
    not_found(store.update(&id, TaskUpdate::new()));
    not_found(store.complete(&id, json!(1)));
    not_found(store.fail(&id, json!(1)));
    not_found(store.cancel(&id, None));
    not_found(store.renew_lease(&id));
    assert!(!store.delete(&id).unwrap());
}

fn ttl_counts_from_creation(store: &dyn TaskStore, setup: &Setup) {
    let ttl = Duration::from_secs(10);
    let running = store.create(NewTask::new().ttl(ttl)).unwrap();
    let finished = store.create(NewTask::new().ttl(ttl)).unwrap();
    let forever = store.create(NewTask::new()).unwrap();
    assert_eq!(running.expires_at(), Some(running.created_at + ttl));
    setup.clock.advance(Duration::from_secs(9));
    let finished = applied(store.complete(&finished.id, json!("ok")).unwrap());
    applied(
        store
            .update(&running.id, TaskUpdate::new().status_message("busy"))
            .unwrap(),
    );
    // Just before expiry: still there.
    setup.clock.advance(Duration::from_millis(999));
    assert!(store.get(&running.id).unwrap().is_some());
    assert_eq!(store.get(&finished.id).unwrap(), Some(finished.clone()));
    // At expiry: gone for every reader, whatever the status; completion did not reset the TTL.
    setup.clock.advance(Duration::from_millis(1));
    assert_eq!(store.get(&running.id).unwrap(), None);
    assert_eq!(store.get(&finished.id).unwrap(), None);
    let listed = listed_ids(store, &ListQuery::all());
    assert_eq!(listed, vec![forever.id.clone()]);
    assert!(matches!(
        store.update(&running.id, TaskUpdate::new()),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store.complete(&running.id, json!(1)),
        Err(Error::NotFound { .. })
    ));
    // After expiry: still gone; an unlimited task never expires.
    setup.clock.advance(Duration::from_secs(365 * 24 * 3600));
    assert_eq!(store.get(&running.id).unwrap(), None);
    assert!(store.get(&forever.id).unwrap().is_some());
    // An expired id can be created again.
    let again = store.create(NewTask::new().id(running.id.clone())).unwrap();
    assert_eq!(again.revision, 1);
}

fn sweep_deletes_expired_tasks(store: &dyn TaskStore, setup: &Setup) {
    let short = store
        .create(NewTask::new().ttl(Duration::from_secs(5)))
        .unwrap();
    let done = store
        .create(NewTask::new().ttl(Duration::from_secs(5)))
        .unwrap();
    applied(store.complete(&done.id, json!(1)).unwrap());
    let long = store
        .create(NewTask::new().ttl(Duration::from_secs(50)))
        .unwrap();
    assert_eq!(store.sweep_expired().unwrap(), 0);
    setup.clock.advance(Duration::from_secs(5));
    assert_eq!(store.sweep_expired().unwrap(), 2);
    assert_eq!(store.sweep_expired().unwrap(), 0);
    assert_eq!(store.get(&short.id).unwrap(), None);
    assert!(store.get(&long.id).unwrap().is_some());
    assert!(!store.delete(&short.id).unwrap());
}

fn list_orders_filters_and_pages(store: &dyn TaskStore, setup: &Setup) {
    let mut ids = Vec::new();
    for i in 0..7 {
        // Two tasks per instant: the id breaks the tie.
        if i % 2 == 0 {
            setup.clock.advance(Duration::from_millis(10));
        }
        ids.push(
            store
                .create(NewTask::new().id(TaskId::parse(&format!("t{}", 7 - i)).unwrap()))
                .unwrap(),
        );
    }
    applied(store.complete(&ids[1].id, json!(1)).unwrap());
    applied(store.cancel(&ids[4].id, None).unwrap());
    applied(
        store
            .update(
                &ids[5].id,
                TaskUpdate::new().status(TaskStatus::InputRequired),
            )
            .unwrap(),
    );
    let mut expected: Vec<&Task> = ids.iter().collect();
    expected.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    let expected: Vec<TaskId> = expected.into_iter().map(|t| t.id.clone()).collect();

    let all = listed_ids(store, &ListQuery::all());
    assert_eq!(all, expected, "ordered by created_at, then id");

    let active = store.list(&ListQuery::active()).unwrap().tasks;
    assert_eq!(active.len(), 5);
    assert!(active.iter().all(|t| !t.is_terminal()));
    let input = listed_ids(store, &ListQuery::all().status(TaskStatus::InputRequired));
    assert_eq!(input, vec![ids[5].id.clone()]);
    let completed = store
        .list(&ListQuery::all().status(TaskStatus::Completed))
        .unwrap()
        .tasks;
    assert_eq!(completed.len(), 1);
    assert_eq!(completed[0].result, Some(json!(1)));
    assert!(
        store
            .list(&ListQuery::active().status(TaskStatus::Completed))
            .unwrap()
            .tasks
            .is_empty()
    );

    let mut paged = Vec::new();
    let mut query = ListQuery::all().limit(3);
    loop {
        let page = store.list(&query).unwrap();
        assert!(page.tasks.len() <= 3);
        paged.extend(page.tasks.into_iter().map(|t| t.id));
        match page.next_cursor {
            Some(c) => query = ListQuery::all().limit(3).after(&c),
            None => break,
        }
    }
    assert_eq!(paged, expected, "pages concatenate to the full listing");
    let exact = store.list(&ListQuery::all().limit(7)).unwrap();
    assert_eq!(exact.next_cursor, None, "no cursor when nothing is left");
}

fn paging_is_stable_while_creating(store: &dyn TaskStore, setup: &Setup) {
    let mut before = Vec::new();
    for _ in 0..10 {
        setup.clock.advance(Duration::from_millis(1));
        before.push(store.create(NewTask::new()).unwrap().id);
    }
    let mut seen = Vec::new();
    let mut query = ListQuery::active().limit(4);
    loop {
        let page = store.list(&query).unwrap();
        seen.extend(page.tasks.into_iter().map(|t| t.id));
        // Tasks created between pages come after every task already listed.
        setup.clock.advance(Duration::from_millis(1));
        store.create(NewTask::new()).unwrap();
        match page.next_cursor {
            Some(c) => query = ListQuery::active().limit(4).after(&c),
            None => break,
        }
    }
    let mut deduped = seen.clone();
    deduped.dedup();
    assert_eq!(deduped.len(), seen.len(), "no task listed twice");
    assert_eq!(
        &seen[..10],
        &before[..],
        "every earlier task listed once, in order"
    );
}

fn invalid_cursor_is_an_error(store: &dyn TaskStore, _: &Setup) {
    for cursor in ["", "garbage", "c1.notanumber.x", "c1.1.../..", "c9.1.a"] {
        match store.list(&ListQuery::all().after(cursor)) {
            Err(Error::InvalidCursor { .. }) => {}
            other => panic!("cursor {cursor:?} must be InvalidCursor, got {other:?}"),
        }
    }
}

fn delete_removes_the_task(store: &dyn TaskStore, _: &Setup) {
    let a = store.create(NewTask::new()).unwrap();
    let b = store.create(NewTask::new()).unwrap();
    applied(store.complete(&b.id, json!(1)).unwrap());
    assert!(store.delete(&a.id).unwrap());
    assert!(store.delete(&b.id).unwrap());
    assert!(!store.delete(&a.id).unwrap());
    assert_eq!(store.get(&a.id).unwrap(), None);
    assert_eq!(store.get(&b.id).unwrap(), None);
    assert!(store.list(&ListQuery::all()).unwrap().tasks.is_empty());
    // A deleted id can be used again.
    store.create(NewTask::new().id(a.id.clone())).unwrap();
}

fn payload_cap_changes_nothing(store: &dyn TaskStore, setup: &Setup) {
    let big = "x".repeat(setup.max_payload_bytes);
    let task = store.create(NewTask::new()).unwrap();
    let too_large = |r: crate::Result<Transition>| match r {
        Err(Error::PayloadTooLarge { id, size, limit }) => {
            assert_eq!(id, task.id);
            assert!(size > limit);
            assert_eq!(limit, setup.max_payload_bytes);
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    };
    too_large(store.complete(&task.id, json!(big)));
    too_large(store.fail(&task.id, json!(big)));
    too_large(store.update(&task.id, TaskUpdate::new().metadata("k", big.clone())));
    assert_eq!(
        store.get(&task.id).unwrap(),
        Some(task.clone()),
        "nothing changed"
    );
    match store.create(NewTask::new().metadata("k", big)) {
        Err(Error::PayloadTooLarge { .. }) => {}
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    assert_eq!(
        store.list(&ListQuery::all()).unwrap().tasks.len(),
        1,
        "nothing created"
    );
    // The limit is on the task as a whole, not an approximation.
    let room = setup.max_payload_bytes - serde_json::to_vec(&task).unwrap().len() - 30;
    applied(store.complete(&task.id, json!("y".repeat(room))).unwrap());
}

fn active_cap_changes_nothing(store: &dyn TaskStore, setup: &Setup) {
    let mut tasks = Vec::new();
    for _ in 0..setup.max_active {
        tasks.push(
            store
                .create(NewTask::new().ttl(Duration::from_secs(100)))
                .unwrap(),
        );
    }
    match store.create(NewTask::new()) {
        Err(Error::TooManyActive { limit, .. }) => assert_eq!(limit, setup.max_active),
        other => panic!("expected TooManyActive, got {other:?}"),
    }
    assert_eq!(
        store.list(&ListQuery::active()).unwrap().tasks.len(),
        setup.max_active
    );
    // A finished task frees its slot; an expired one does too.
    applied(store.complete(&tasks[0].id, json!(1)).unwrap());
    store.create(NewTask::new()).unwrap();
    setup.clock.advance(Duration::from_secs(100));
    store.create(NewTask::new()).unwrap();
}

fn leases_and_orphans(store: &dyn TaskStore, setup: &Setup) {
    let task = store.create(NewTask::new()).unwrap();
    let first_lease = task.lease_expires_at.expect("a new task has a lease");
    assert_eq!(first_lease, task.created_at + setup.lease);
    // Renewal moves the lease, bumps the revision, leaves lastUpdatedAt alone.
    setup.clock.advance(setup.lease / 2);
    let renewed = applied(store.renew_lease(&task.id).unwrap());
    assert_eq!(
        renewed.lease_expires_at,
        Some(setup.clock.now() + setup.lease)
    );
    assert_eq!(renewed.revision, task.revision + 1);
    assert_eq!(renewed.last_updated_at, task.last_updated_at);
    assert_eq!(store.renew_leases().unwrap(), 1);
    // Just before the lease lapses: not an orphan.
    let lapses = store
        .get(&task.id)
        .unwrap()
        .unwrap()
        .lease_expires_at
        .unwrap();
    setup.clock.set(lapses - time::Duration::nanoseconds(1));
    assert!(store.reap_orphans().unwrap().is_empty());
    // At the lapse: reaped, once.
    let other_done = store.create(NewTask::new()).unwrap();
    applied(store.complete(&other_done.id, json!(1)).unwrap());
    setup.clock.set(lapses);
    let reaped = store.reap_orphans().unwrap();
    assert_eq!(reaped.len(), 1);
    let orphan = &reaped[0];
    assert_eq!(orphan.id, task.id);
    assert_eq!(orphan.status, TaskStatus::Failed);
    let error = orphan.error.as_ref().unwrap();
    assert_eq!(error["code"], "orphaned");
    assert_eq!(error["owner"], store.instance_id());
    assert_eq!(store.get(&task.id).unwrap().as_ref(), Some(orphan));
    assert!(
        store.reap_orphans().unwrap().is_empty(),
        "reaping twice changes nothing"
    );
    assert!(matches!(
        store.renew_lease(&task.id).unwrap(),
        Transition::AlreadyTerminal(_)
    ));
    // The owner's later completion loses to the reaper (first writer wins).
    assert!(!store.complete(&task.id, json!(1)).unwrap().is_applied());
}

/// The ids `store` lists for `query`, in listing order.
fn listed_ids(store: &dyn TaskStore, query: &ListQuery) -> Vec<TaskId> {
    store
        .list(query)
        .unwrap()
        .tasks
        .into_iter()
        .map(|t| t.id)
        .collect()
}

fn a_zero_limit_is_an_error(store: &dyn TaskStore, _: &Setup) {
    store.create(NewTask::new()).unwrap();
    match store.list(&ListQuery::all().limit(0)) {
        Err(Error::InvalidQuery { .. }) => {}
        other => panic!("limit(0) must be InvalidQuery, got {other:?}"),
    }
}

/// A value nested `levels` deep (arrays and objects in turn).
fn nested(levels: usize) -> Value {
    let mut v = json!("leaf");
    for i in 0..levels {
        v = if i % 2 == 0 {
            json!([v])
        } else {
            json!({ "k": v })
        };
    }
    v
}

/// Floats that need every digit to round-trip, from a fixed sequence.
fn awkward_floats() -> Vec<Value> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut floats = vec![
        json!(0.1),
        json!(0.300_000_000_000_000_04),
        json!(f64::MAX),
        json!(f64::MIN_POSITIVE),
        json!(5e-324),
        json!(-1.797_693_134_862_315_7e308),
        json!(123_456_789.123_456_78),
    ];
    while floats.len() < 200 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let f = f64::from_bits(state);
        if f.is_finite() {
            floats.push(json!(f));
        }
    }
    floats
}

fn every_accepted_value_reads_back(a: &dyn TaskStore, b: &dyn TaskStore, _: &Setup) {
    let values = [
        json!(null),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(""),
        json!("\u{0}\u{1f}\"\\\u{2028}\u{fffd}\u{10ffff} é 字 🦀"),
        json!({"": null, "\u{0}": [true, false, {}, []]}),
        Value::Array(awkward_floats()),
        nested(MAX_DEPTH),
    ];
    for value in values {
        let task = a
            .create(NewTask::new().metadata("v", value.clone()))
            .unwrap();
        let waiting = applied(
            a.update(
                &task.id,
                TaskUpdate::new()
                    .status(TaskStatus::InputRequired)
                    .input_requests(value.clone())
                    .status_message("\u{0}\n\u{7f}"),
            )
            .unwrap(),
        );
        assert_eq!(
            b.get(&task.id).unwrap(),
            Some(waiting),
            "input requests read back"
        );
        let done = applied(a.complete(&task.id, value.clone()).unwrap());
        let read = b.get(&task.id).unwrap().expect("the task reads back");
        assert_eq!(read, done, "an accepted value reads back exactly");
        assert_eq!(read.result.as_ref(), Some(&value));
        assert_eq!(read.metadata["v"], value);
        let failed = a.create(NewTask::new()).unwrap();
        let failed = applied(a.fail(&failed.id, value.clone()).unwrap());
        assert_eq!(b.get(&failed.id).unwrap(), Some(failed));
    }
}

fn too_deep_values_are_refused(store: &dyn TaskStore, _: &Setup) {
    let deep = nested(MAX_DEPTH + 1);
    let too_deep = |r: crate::Result<Transition>, id: &TaskId| match r {
        Err(Error::TooDeep {
            id: got,
            depth,
            limit,
        }) => {
            assert_eq!(&got, id);
            assert_eq!((depth, limit), (MAX_DEPTH + 1, MAX_DEPTH));
        }
        other => panic!("expected TooDeep, got {other:?}"),
    };
    match store.create(NewTask::new().metadata("deep", deep.clone())) {
        Err(Error::TooDeep { .. }) => {}
        other => panic!("expected TooDeep, got {other:?}"),
    }
    let task = store.create(NewTask::new()).unwrap();
    too_deep(store.complete(&task.id, deep.clone()), &task.id);
    too_deep(store.fail(&task.id, deep.clone()), &task.id);
    too_deep(
        store.update(&task.id, TaskUpdate::new().input_requests(deep.clone())),
        &task.id,
    );
    too_deep(
        store.update(&task.id, TaskUpdate::new().metadata("deep", deep)),
        &task.id,
    );
    assert_eq!(store.get(&task.id).unwrap(), Some(task), "nothing changed");
    assert_eq!(store.list(&ListQuery::all()).unwrap().tasks.len(), 1);
}

fn two_handles_share_one_store(a: &dyn TaskStore, b: &dyn TaskStore, setup: &Setup) {
    assert_ne!(a.instance_id(), b.instance_id());
    let task = a.create(NewTask::new().metadata("from", "a")).unwrap();
    assert_eq!(b.get(&task.id).unwrap(), Some(task.clone()));
    setup.clock.advance(Duration::from_secs(1));
    let updated = applied(
        b.update(&task.id, TaskUpdate::new().metadata("from", "b"))
            .unwrap(),
    );
    assert_eq!(updated.revision, 2);
    assert_eq!(
        updated.owner.as_deref(),
        Some(a.instance_id()),
        "another instance's write keeps the owner"
    );
    assert_eq!(
        updated.lease_expires_at, task.lease_expires_at,
        "another instance's write does not renew the owner's lease"
    );
    assert_eq!(a.get(&task.id).unwrap(), Some(updated));
    let done = applied(a.complete(&task.id, json!("a")).unwrap());
    assert_eq!(
        b.fail(&task.id, json!("b")).unwrap(),
        Transition::AlreadyTerminal(done.clone())
    );
    assert_eq!(listed_ids(b, &ListQuery::all()), vec![task.id.clone()]);
    assert!(b.list(&ListQuery::active()).unwrap().tasks.is_empty());
    assert!(b.delete(&task.id).unwrap());
    assert_eq!(a.get(&task.id).unwrap(), None);
}

/// Threads race `complete`, `fail` and `cancel` on 20 tasks, through the
/// handles given (one each, in turn): exactly one applied transition per
/// task, and every loser sees the winner untouched.
fn race_terminal_transitions(handles: &[&dyn TaskStore]) {
    const THREADS: usize = 6;
    let ids: Vec<TaskId> = (0..20)
        .map(|_| handles[0].create(NewTask::new()).unwrap().id)
        .collect();
    let results: Vec<Vec<(TaskId, Transition)>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let store = handles[t % handles.len()];
                let ids = &ids;
                s.spawn(move || {
                    ids.iter()
                        .map(|id| {
                            let outcome = match t % 3 {
                                0 => store.complete(id, json!({ "thread": t })),
                                1 => store.fail(id, json!({ "thread": t })),
                                _ => store.cancel(id, Some(format!("thread {t}"))),
                            };
                            (id.clone(), outcome.unwrap())
                        })
                        .collect()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let mut by_task: BTreeMap<TaskId, Vec<Transition>> = BTreeMap::new();
    for (id, transition) in results.into_iter().flatten() {
        by_task.entry(id).or_default().push(transition);
    }
    for (id, transitions) in by_task {
        let winners: Vec<&Task> = transitions
            .iter()
            .filter(|t| t.is_applied())
            .map(Transition::task)
            .collect();
        assert_eq!(winners.len(), 1, "task {id}: exactly one winner");
        let winner = winners[0];
        assert!(winner.is_terminal());
        assert_eq!(winner.revision, 2);
        for t in &transitions {
            assert_eq!(t.task(), winner, "task {id}: every loser sees the winner");
        }
        for store in handles {
            assert_eq!(store.get(&id).unwrap().as_ref(), Some(winner));
        }
    }
}

fn threads_race_terminal_transitions(store: &dyn TaskStore, _: &Setup) {
    race_terminal_transitions(&[store]);
}

fn handles_race_terminal_transitions(a: &dyn TaskStore, b: &dyn TaskStore, _: &Setup) {
    race_terminal_transitions(&[a, b]);
}

/// Threads update one task 25 times each, through the handles given, each
/// merging its own metadata key: none is lost, the revision rises by one
/// per update, and each thread was handed distinct revisions.
fn race_updates(handles: &[&dyn TaskStore]) {
    const THREADS: usize = 4;
    const EACH: u64 = 25;
    let task = handles[0].create(NewTask::new()).unwrap();
    let revisions: Vec<u64> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let store = handles[t % handles.len()];
                let id = &task.id;
                s.spawn(move || {
                    (0..EACH)
                        .map(|i| {
                            let update = TaskUpdate::new().metadata(format!("t{t}"), i);
                            applied(store.update(id, update).unwrap()).revision
                        })
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let distinct: HashSet<u64> = revisions.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        revisions.len(),
        "each revision handed out once"
    );
    let last = 1 + THREADS as u64 * EACH;
    assert_eq!(distinct, (2..=last).collect(), "revision +1 per update");
    for store in handles {
        let read = store.get(&task.id).unwrap().unwrap();
        assert_eq!(read.revision, last);
        for t in 0..THREADS {
            assert_eq!(read.metadata[&format!("t{t}")], EACH - 1, "no update lost");
        }
    }
}

fn threads_race_updates(store: &dyn TaskStore, _: &Setup) {
    race_updates(&[store]);
}

fn handles_race_updates(a: &dyn TaskStore, b: &dyn TaskStore, _: &Setup) {
    race_updates(&[a, b]);
}

fn another_instance_renews_nothing_and_reaps(a: &dyn TaskStore, b: &dyn TaskStore, setup: &Setup) {
    let task = a.create(NewTask::new()).unwrap();
    match b.renew_lease(&task.id) {
        Err(Error::NotOwner { id, owner }) => {
            assert_eq!(id, task.id);
            assert_eq!(owner.as_deref(), Some(a.instance_id()));
        }
        other => panic!("another instance's renewal must be NotOwner, got {other:?}"),
    }
    assert_eq!(b.renew_leases().unwrap(), 0, "b owns nothing");
    assert_eq!(
        a.get(&task.id).unwrap(),
        Some(task.clone()),
        "nothing changed"
    );
    setup.clock.advance(setup.lease / 2);
    let renewed = applied(a.renew_lease(&task.id).unwrap());
    assert!(
        b.reap().unwrap().tasks.is_empty(),
        "a renewed lease is not lapsed"
    );
    setup.clock.set(renewed.lease_expires_at.unwrap());
    let reaped = b.reap().unwrap();
    assert!(reaped.missed.is_empty() && reaped.skipped.is_empty());
    assert_eq!(reaped.tasks.len(), 1);
    let orphan = &reaped.tasks[0];
    assert_eq!(orphan.status, TaskStatus::Failed);
    let error = orphan.error.as_ref().unwrap();
    assert_eq!(error["owner"], a.instance_id());
    assert_eq!(error["reapedBy"], b.instance_id());
    assert_eq!(a.get(&task.id).unwrap().as_ref(), Some(orphan));
    assert_eq!(
        a.renew_lease(&task.id).unwrap(),
        Transition::AlreadyTerminal(orphan.clone())
    );
    assert!(!a.complete(&task.id, json!(1)).unwrap().is_applied());
}

/// A task whose metadata leaves less room than an orphan error takes.
fn near_cap(store: &dyn TaskStore, setup: &Setup) -> Task {
    let probe = NewTask::new()
        .metadata("blob", "")
        .status_message("almost full");
    let bare = store.create(probe).unwrap();
    let size = serde_json::to_vec(&bare).unwrap().len();
    assert!(store.delete(&bare.id).unwrap());
    let blob = "x".repeat(setup.max_payload_bytes - size - 16);
    let task = store
        .create(
            NewTask::new()
                .metadata("blob", blob)
                .status_message("almost full"),
        )
        .unwrap_or_else(|e| panic!("a task just under the cap is accepted: {e}"));
    assert!(serde_json::to_vec(&task).unwrap().len() <= setup.max_payload_bytes);
    task
}

fn a_near_cap_orphan_is_reaped(store: &dyn TaskStore, setup: &Setup) {
    let task = near_cap(store, setup);
    setup.clock.advance(setup.lease);
    let reaped = store.reap().unwrap();
    assert!(reaped.missed.is_empty(), "{:?}", reaped.missed);
    assert_eq!(reaped.tasks.len(), 1);
    let orphan = &reaped.tasks[0];
    assert_eq!((&orphan.id, orphan.status), (&task.id, TaskStatus::Failed));
    assert_eq!(orphan.error.as_ref().unwrap()["code"], "orphaned");
    // The orphan keeps all it had: the store's own write may go past the
    // payload cap by its headroom, which an orphan error always fits.
    assert_eq!(orphan.metadata, task.metadata);
    assert_eq!(orphan.status_message, task.status_message);
    let size = serde_json::to_vec(orphan).unwrap().len();
    assert!(size > setup.max_payload_bytes, "{size}: past the cap");
    assert!(
        size <= setup.max_payload_bytes + crate::OWN_HEADROOM,
        "{size}"
    );
    assert_eq!(store.get(&task.id).unwrap().as_ref(), Some(orphan));
}

fn every_orphan_is_reaped_in_one_pass(store: &dyn TaskStore, setup: &Setup) {
    let mut expected = Vec::new();
    for i in 0..5 {
        setup.clock.advance(Duration::from_millis(1));
        let task = if i == 2 {
            near_cap(store, setup)
        } else {
            store.create(NewTask::new()).unwrap()
        };
        expected.push(task.id);
    }
    setup.clock.advance(setup.lease);
    let reaped = store.reap().unwrap();
    assert!(reaped.missed.is_empty(), "{:?}", reaped.missed);
    let ids: Vec<TaskId> = reaped.tasks.iter().map(|t| t.id.clone()).collect();
    assert_eq!(ids, expected, "every orphan, in listing order");
    assert!(store.list(&ListQuery::active()).unwrap().tasks.is_empty());
}

fn events_once_per_applied_transition(a: &dyn TaskStore, b: &dyn TaskStore, setup: &Setup) {
    let count = |kind: TaskEventKind, id: &TaskId| {
        setup
            .events
            .snapshot()
            .iter()
            .filter(|r| r.event.kind == kind && r.event.data["taskId"] == id.as_str())
            .count()
    };
    let task = a
        .create(NewTask::new().ttl(Duration::from_secs(3_600)))
        .unwrap();
    assert_eq!(count(TaskEventKind::Created, &task.id), 1);
    applied(
        b.update(&task.id, TaskUpdate::new().metadata("k", 1))
            .unwrap(),
    );
    assert_eq!(count(TaskEventKind::Updated, &task.id), 1);
    let big = "x".repeat(setup.max_payload_bytes);
    assert!(a.complete(&task.id, json!(big)).is_err());
    assert_eq!(
        count(TaskEventKind::Completed, &task.id),
        0,
        "a refused write is no event"
    );
    applied(a.complete(&task.id, json!(1)).unwrap());
    assert!(!b.cancel(&task.id, None).unwrap().is_applied());
    assert!(!a.update(&task.id, TaskUpdate::new()).unwrap().is_applied());
    assert_eq!(count(TaskEventKind::Completed, &task.id), 1);
    assert_eq!(count(TaskEventKind::Cancelled, &task.id), 0);
    assert_eq!(count(TaskEventKind::Updated, &task.id), 1);
    assert!(a.update(&TaskId::new(), TaskUpdate::new()).is_err());

    // A race across both handles: one terminal event.
    let raced = a.create(NewTask::new()).unwrap();
    let terminal = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..4 {
            let store = [a, b][t % 2];
            let (raced, terminal) = (&raced, &terminal);
            s.spawn(move || {
                let won = match t % 3 {
                    0 => store.complete(&raced.id, json!(t)),
                    1 => store.fail(&raced.id, json!(t)),
                    _ => store.cancel(&raced.id, None),
                };
                if won.unwrap().is_applied() {
                    terminal.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    let events: usize = [
        TaskEventKind::Completed,
        TaskEventKind::Failed,
        TaskEventKind::Cancelled,
    ]
    .into_iter()
    .map(|k| count(k, &raced.id))
    .sum();
    assert_eq!((terminal.into_inner(), events), (1, 1));

    assert!(b.delete(&raced.id).unwrap());
    assert!(!a.delete(&raced.id).unwrap());
    assert_eq!(count(TaskEventKind::Deleted, &raced.id), 1);

    let orphan = a.create(NewTask::new()).unwrap();
    setup.clock.advance(setup.lease);
    assert_eq!(b.reap().unwrap().tasks.len(), 1);
    assert!(a.reap().unwrap().tasks.is_empty());
    assert_eq!(count(TaskEventKind::Reaped, &orphan.id), 1);
    assert_eq!(
        count(TaskEventKind::Failed, &orphan.id),
        0,
        "a reap is its own event"
    );

    setup.clock.advance(Duration::from_secs(3_600));
    assert_eq!(a.sweep().unwrap().deleted, 1);
    assert_eq!(b.sweep().unwrap().deleted, 0);
    assert_eq!(count(TaskEventKind::Expired, &task.id), 1);
}

fn fenced(t: Transition) -> Task {
    match t {
        Transition::Fenced(task) => task,
        other => panic!("expected Fenced, got {other:?}"),
    }
}

fn a_claim_moves_the_owner_and_fences_the_old_one(
    a: &dyn TaskStore,
    b: &dyn TaskStore,
    setup: &Setup,
) {
    let task = a
        .create(NewTask::new().resumable("convert", json!({"file": "x.pdf"})))
        .unwrap();
    assert_eq!(task.epoch, 1);
    let resume = task
        .resume
        .clone()
        .expect("a resumable task keeps its resume state");
    assert_eq!((resume.kind.as_str(), resume.attempts), ("convert", 1));
    let saved = applied(
        a.update(
            &task.id,
            TaskUpdate::new().checkpoint(json!({"page": 7})).fenced(1),
        )
        .unwrap(),
    );
    assert_eq!(
        saved.resume.as_ref().unwrap().checkpoint,
        Some(json!({"page": 7}))
    );
    // Not an orphan yet: nothing to claim.
    assert!(b.claim(&["convert"]).unwrap().tasks.is_empty());
    setup.clock.advance(setup.lease);
    assert!(
        b.claim(&["other-kind"]).unwrap().tasks.is_empty(),
        "only a handler for its kind claims it"
    );
    let claimed = b.claim(&["convert"]).unwrap();
    assert!(claimed.missed.is_empty());
    assert_eq!(claimed.tasks.len(), 1);
    let taken = &claimed.tasks[0];
    assert_eq!(taken.epoch, 2);
    assert_eq!(taken.owner.as_deref(), Some(b.instance_id()));
    assert_eq!(taken.status, TaskStatus::Working);
    assert_eq!(taken.revision, saved.revision + 1);
    let resume = taken.resume.as_ref().unwrap();
    assert_eq!(resume.attempts, 2);
    assert_eq!(resume.input, json!({"file": "x.pdf"}));
    assert_eq!(
        resume.checkpoint,
        Some(json!({"page": 7})),
        "resumed from its checkpoint"
    );
    assert_eq!(
        taken.lease_expires_at,
        Some(setup.clock.now() + setup.lease)
    );
    assert!(
        a.claim(&["convert"]).unwrap().tasks.is_empty(),
        "claimed once"
    );
    assert!(
        b.reap().unwrap().tasks.is_empty(),
        "a claimed task is not an orphan"
    );

    // Every write of the old epoch is refused and changes nothing.
    let old = [
        a.update(&task.id, TaskUpdate::new().status_message("late").fenced(1)),
        a.update(
            &task.id,
            TaskUpdate::new().checkpoint(json!({"page": 1})).fenced(1),
        ),
        a.update(
            &task.id,
            TaskUpdate::new()
                .status(TaskStatus::InputRequired)
                .input_requests(json!({"q": 1}))
                .fenced(1),
        ),
        a.finish_fenced(&task.id, crate::Outcome::Completed(json!("old")), 1),
        a.finish_fenced(&task.id, crate::Outcome::Failed(json!("old")), 1),
    ];
    for write in old {
        assert_eq!(&fenced(write.unwrap()), taken);
    }
    match a.renew_lease(&task.id) {
        Err(Error::NotOwner { owner, .. }) => assert_eq!(owner.as_deref(), Some(b.instance_id())),
        other => panic!("the old owner cannot renew, got {other:?}"),
    }
    assert_eq!(b.get(&task.id).unwrap().as_ref(), Some(taken));
    // The new epoch works, and finishes the task once.
    applied(b.renew_lease(&task.id).unwrap());
    applied(
        b.update(
            &task.id,
            TaskUpdate::new().checkpoint(json!({"page": 9})).fenced(2),
        )
        .unwrap(),
    );
    let done = applied(
        b.finish_fenced(&task.id, crate::Outcome::Completed(json!("new")), 2)
            .unwrap(),
    );
    assert_eq!(done.result, Some(json!("new")));
    assert_eq!(done.resume, None, "a finished task keeps no resume state");
    assert_eq!(
        a.finish_fenced(&task.id, crate::Outcome::Completed(json!("old")), 1)
            .unwrap(),
        Transition::AlreadyTerminal(done)
    );
    let claimed_events = setup
        .events
        .snapshot()
        .iter()
        .filter(|r| r.event.kind == TaskEventKind::Claimed)
        .count();
    assert_eq!(claimed_events, 1);
}

fn a_reopened_instance_is_not_the_owner(
    a: &dyn TaskStore,
    _: &dyn TaskStore,
    reopen: Reopen<'_>,
    setup: &Setup,
) {
    let task = a.create(NewTask::new()).unwrap();
    // The same instance id, opened again (a restarted process).
    let again = reopen(a.instance_id());
    assert_eq!(again.instance_id(), a.instance_id());
    assert!(
        matches!(again.renew_lease(&task.id), Err(Error::NotOwner { .. })),
        "a new open is not the owner"
    );
    assert_eq!(again.renew_leases().unwrap(), 0);
    setup.clock.advance(setup.lease / 2);
    let written = applied(
        again
            .update(&task.id, TaskUpdate::new().metadata("cancel", true))
            .unwrap(),
    );
    assert_eq!(
        written.lease_expires_at, task.lease_expires_at,
        "its writes do not renew the lease"
    );
    setup.clock.advance(setup.lease / 2);
    let reaped = again.reap().unwrap();
    assert_eq!(reaped.tasks.len(), 1, "the dead open's task is reaped");
    assert_eq!(
        applied_or_terminal(a.renew_lease(&task.id)),
        TaskStatus::Failed
    );
}

fn applied_or_terminal(t: crate::Result<Transition>) -> TaskStatus {
    t.unwrap().task().status
}

fn resumable_orphans_wait_for_a_claim_then_are_reaped(
    a: &dyn TaskStore,
    b: &dyn TaskStore,
    setup: &Setup,
) {
    let waits = a.create(NewTask::new().resumable("k", json!(1))).unwrap();
    let last = a
        .create(NewTask::new().resumable("k", json!(2)).max_attempts(1))
        .unwrap();
    let plain = a.create(NewTask::new()).unwrap();
    setup.clock.advance(setup.lease);
    // At the lapse: the plain orphan and the one out of attempts are failed;
    // the resumable one waits for a claim.
    let reaped: Vec<TaskId> = b.reap().unwrap().tasks.into_iter().map(|t| t.id).collect();
    assert_eq!(reaped.len(), 2);
    assert!(reaped.contains(&last.id) && reaped.contains(&plain.id));
    let out_of_attempts = a.get(&last.id).unwrap().unwrap();
    assert_eq!(out_of_attempts.error.as_ref().unwrap()["attempts"], 1);
    assert!(
        b.claim(&["k"])
            .unwrap()
            .tasks
            .iter()
            .all(|t| t.id == waits.id)
    );
    // Claimed, it runs again; when that owner dies too and no one claims it
    // within the grace (one lease), it is failed.
    setup.clock.advance(setup.lease);
    assert!(a.reap().unwrap().tasks.is_empty(), "within the grace");
    setup.clock.advance(setup.lease);
    let reaped = a.reap().unwrap();
    assert_eq!(reaped.tasks.len(), 1);
    let failed = &reaped.tasks[0];
    assert_eq!(failed.id, waits.id);
    let error = failed.error.as_ref().unwrap();
    assert_eq!(
        (error["code"].as_str(), error["kind"].as_str()),
        (Some("orphaned"), Some("k"))
    );
    assert_eq!(error["attempts"], 2);
}

fn claims_race(a: &dyn TaskStore, b: &dyn TaskStore, setup: &Setup) {
    let ids: Vec<TaskId> = (0..20)
        .map(|i| {
            a.create(NewTask::new().resumable("k", json!(i)).max_attempts(5))
                .unwrap()
                .id
        })
        .collect();
    setup.clock.advance(setup.lease);
    let claims: Vec<Vec<Task>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|t| {
                let store = [a, b][t % 2];
                s.spawn(move || store.claim(&["k"]).unwrap().tasks)
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let mut claimed: Vec<&TaskId> = claims.iter().flatten().map(|t| &t.id).collect();
    claimed.sort();
    let mut want: Vec<&TaskId> = ids.iter().collect();
    want.sort();
    assert_eq!(claimed, want, "every orphan claimed exactly once");
    for task in claims.iter().flatten() {
        assert_eq!(task.epoch, 2);
    }
}

fn a_release_hands_the_task_over_at_once(a: &dyn TaskStore, b: &dyn TaskStore, setup: &Setup) {
    let task = a
        .create(NewTask::new().resumable("k", json!({"n": 1})))
        .unwrap();
    let plain = a.create(NewTask::new()).unwrap();
    // Only the owner, at the task's epoch, may release it.
    assert_eq!(&fenced(a.release(&task.id, 2).unwrap()), &task);
    match b.release(&task.id, 1) {
        Err(Error::NotOwner { owner, .. }) => assert_eq!(owner.as_deref(), Some(a.instance_id())),
        other => panic!("another instance cannot release it, got {other:?}"),
    }
    assert!(matches!(
        a.release(&TaskId::parse("missing").unwrap(), 1),
        Err(Error::NotFound { .. })
    ));
    assert_eq!(
        a.get(&task.id).unwrap().as_ref(),
        Some(&task),
        "nothing changed"
    );

    setup.clock.advance(setup.lease / 4);
    let released = applied(a.release(&task.id, 1).unwrap());
    assert_eq!(released.lease_expires_at, Some(setup.clock.now()));
    assert_eq!(released.revision, task.revision + 1);
    assert_eq!(released.last_updated_at, task.last_updated_at);
    assert_eq!((released.epoch, released.status), (1, TaskStatus::Working));
    // Claimable at once, with no time passing: the new owner's epoch fences
    // the old one's writes and releases.
    let claimed = b.claim(&["k"]).unwrap();
    assert_eq!(claimed.tasks.len(), 1, "claimed at once");
    let taken = &claimed.tasks[0];
    assert_eq!(
        (taken.epoch, taken.owner.as_deref()),
        (2, Some(b.instance_id()))
    );
    assert_eq!(&fenced(a.release(&task.id, 1).unwrap()), taken);
    assert!(matches!(
        a.release(&task.id, 2),
        Err(Error::NotOwner { .. })
    ));
    assert!(b.reap().unwrap().tasks.is_empty(), "the claimed task runs");

    // A released task that is not resumable is reaped at once.
    applied(a.release(&plain.id, 1).unwrap());
    let reaped = b.reap().unwrap();
    assert_eq!(reaped.tasks.len(), 1);
    assert_eq!(reaped.tasks[0].id, plain.id);
    assert_eq!(reaped.tasks[0].error.as_ref().unwrap()["code"], "orphaned");
    // A terminal task is left as it is.
    let done = applied(
        b.finish_fenced(&task.id, crate::Outcome::Completed(json!(1)), 2)
            .unwrap(),
    );
    assert_eq!(
        b.release(&task.id, 2).unwrap(),
        Transition::AlreadyTerminal(done)
    );
}
