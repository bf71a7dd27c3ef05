//! The shared backend test suite: every [`TaskStore`] runs it.
//!
//! Like `object_store`'s `integration` module: a backend's tests call
//! [`run`] with a factory that builds a fresh, empty store for a [`Setup`].
//! Each check panics with a message naming what broke.
//!
//! ```no_run
//! # #[cfg(feature = "conformance")] {
//! use std::sync::Arc;
//! use taskstore::{MemoryStore, conformance};
//!
//! conformance::run(|setup| {
//!     MemoryStore::with_clock(Arc::new(setup.clock.clone()))
//!         .with_max_active(setup.max_active)
//!         .with_max_payload_bytes(setup.max_payload_bytes)
//!         .with_lease(setup.lease)
//! });
//! # }
//! ```

use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;

use crate::{
    Clock, Error, ListQuery, ManualClock, NewTask, Task, TaskId, TaskStatus, TaskStore, TaskUpdate,
    Transition,
};

/// What a factory must configure on the store it builds.
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
        }
    }
}

/// One check of the suite.
type Check = fn(&dyn TaskStore, &Setup);

/// Runs every check against fresh stores from `new_store`.
pub fn run<S: TaskStore>(new_store: impl Fn(&Setup) -> S) {
    let checks: &[(&str, Check)] = &[
        ("create_and_get", create_and_get),
        ("host_chosen_ids", host_chosen_ids),
        (
            "update_merges_and_bumps_revision",
            update_merges_and_bumps_revision,
        ),
        (
            "terminal_status_in_update_is_an_error",
            terminal_status_in_update_is_an_error,
        ),
        ("first_writer_wins", first_writer_wins),
        ("missing_tasks_are_not_found", missing_tasks_are_not_found),
        ("ttl_counts_from_creation", ttl_counts_from_creation),
        ("sweep_deletes_expired_tasks", sweep_deletes_expired_tasks),
        (
            "list_orders_filters_and_pages",
            list_orders_filters_and_pages,
        ),
        (
            "paging_is_stable_while_creating",
            paging_is_stable_while_creating,
        ),
        ("invalid_cursor_is_an_error", invalid_cursor_is_an_error),
        ("delete_removes_the_task", delete_removes_the_task),
        ("payload_cap_changes_nothing", payload_cap_changes_nothing),
        ("active_cap_changes_nothing", active_cap_changes_nothing),
        ("leases_and_orphans", leases_and_orphans),
    ];
    for (name, check) in checks {
        let setup = Setup::new();
        let store = new_store(&setup);
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&store, &setup)));
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
