//! Checks on one handle: the task model, the caps, TTLs, leases and the
//! sweep (listings in `listing.rs`, values in `values.rs`).

use super::*;

pub(super) fn create_and_get(store: &dyn TaskStore, setup: &Setup) {
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

pub(super) fn uuid_v4(id: &TaskId) {
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

pub(super) fn host_chosen_ids(store: &dyn TaskStore, _: &Setup) {
    let id = TaskId::parse("job-1.a_b").unwrap();
    let task = store.create(NewTask::new().id(id.clone())).unwrap();
    assert_eq!(task.id, id);
    match store.create(NewTask::new().id(id.clone())) {
        Err(Error::AlreadyExists { id: taken }) => assert_eq!(taken, id),
        other => panic!("a taken id must be AlreadyExists, got {other:?}"),
    }
    assert_eq!(store.get(&id).unwrap(), Some(task));
}

pub(super) fn update_merges_and_bumps_revision(store: &dyn TaskStore, setup: &Setup) {
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

pub(super) fn terminal_status_in_update_is_an_error(store: &dyn TaskStore, _: &Setup) {
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

pub(super) fn first_writer_wins(store: &dyn TaskStore, setup: &Setup) {
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

pub(super) fn missing_tasks_are_not_found(store: &dyn TaskStore, _: &Setup) {
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

/// `get_all` answers each id as `get` does, in order: a running task, a
/// finished one, none for an expired one (deleted, its `task.expired`
/// event sent once though its id is given twice), a deleted one and an id
/// never made; the same task again for an id given twice.
pub(super) fn getting_many_is_getting_each(store: &dyn TaskStore, setup: &Setup) {
    let running = store.create(NewTask::new()).unwrap();
    let finished = store.create(NewTask::new()).unwrap();
    let finished = applied(store.complete(&finished.id, json!("ok")).unwrap());
    let short = store
        .create(NewTask::new().ttl(Duration::from_secs(1)))
        .unwrap();
    let deleted = store.create(NewTask::new()).unwrap();
    assert!(store.delete(&deleted.id).unwrap());
    setup.clock.advance(Duration::from_secs(2));
    let ids = [
        running.id.clone(),
        short.id.clone(),
        finished.id.clone(),
        deleted.id.clone(),
        TaskId::new(),
        short.id.clone(),
        running.id.clone(),
    ];
    let got: Vec<Option<Task>> = store
        .get_all(&ids)
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let expected = [
        Some(running.clone()),
        None,
        Some(finished),
        None,
        None,
        None,
        Some(running),
    ];
    assert_eq!(got, expected);
    assert!(store.get_all(&[]).is_empty());
    let expired = setup
        .events
        .snapshot()
        .iter()
        .filter(|r| {
            r.event.kind == TaskEventKind::Expired && r.event.data["taskId"] == short.id.as_str()
        })
        .count();
    assert_eq!(expired, 1, "task.expired events of {}", short.id);
    assert!(
        !store.delete(&short.id).unwrap(),
        "the expired task is gone"
    );
}

pub(super) fn ttl_counts_from_creation(store: &dyn TaskStore, setup: &Setup) {
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

pub(super) fn a_ttl_under_a_millisecond_is_refused(store: &dyn TaskStore, _: &Setup) {
    // It would be expired the instant it was made: accepted, and never
    // read back.
    for ttl in [Duration::ZERO, Duration::from_micros(999)] {
        let id = TaskId::new();
        match store.create(NewTask::new().id(id.clone()).ttl(ttl)) {
            Err(Error::InvalidTask { id: named, reason }) => {
                assert_eq!(named, id);
                assert!(reason.contains("ttl"), "{reason}");
            }
            other => panic!("a TTL of {ttl:?}: expected InvalidTask, got {other:?}"),
        }
        assert_eq!(store.get(&id).unwrap(), None, "nothing was made");
    }
    assert!(store.list(&ListQuery::all()).unwrap().tasks.is_empty());
    let short = store
        .create(NewTask::new().ttl(Duration::from_millis(1)))
        .unwrap();
    assert_eq!(store.get(&short.id).unwrap(), Some(short));
}

/// Metadata keys beginning with `mcp.` are the MCP task manager's
/// (FORMAT.md): a host's create or update that sets one (the principal a
/// task is bound to, the cancel request, an input answer, any other) is
/// refused with [`Error::ReservedMetadata`], naming the operation, the
/// task and the key, and changes nothing, read from either handle; the
/// manager's own writes of them (crate-private) are stored, and a host's
/// later write keeps them. A key only like one (`mcp`, `MCP.x`,
/// `x.mcp.y`) is the host's. (A host's update rebound a task to another
/// principal, or unbound it with `null`, and a host's create forged one.)
pub(super) fn mcp_metadata_is_the_managers(a: &dyn TaskStore, b: &dyn TaskStore, _: &Setup) {
    let refused = |result: crate::Result<()>, operation: &str, id: &TaskId, key: &str| match result
    {
        Err(e @ Error::ReservedMetadata { .. }) => {
            let text = e.to_string();
            let Error::ReservedMetadata {
                op,
                id: named,
                key: k,
            } = e
            else {
                unreachable!()
            };
            assert_eq!((op, &named, k.as_str()), (operation, id, key));
            assert!(
                text.starts_with(&format!("{operation} of task {id} refused: ")),
                "{text}"
            );
            assert!(text.contains(&format!("{key:?}")), "{text}");
        }
        other => panic!("a host's {operation} of metadata key {key:?}: {other:?}"),
    };
    let forged = TaskId::parse("forged-principal").unwrap();
    let create = a.create(
        NewTask::new()
            .id(forged.clone())
            .metadata("tool", "x")
            .metadata("mcp.principal", "mallory"),
    );
    refused(create.map(drop), "create", &forged, "mcp.principal");
    assert_eq!(b.get(&forged).unwrap(), None, "nothing was created");

    let bound = a
        .create(
            NewTask::new()
                .metadata("tool", "x")
                .reserved_metadata("mcp.principal", "alice"),
        )
        .unwrap();
    assert_eq!(bound.metadata["mcp.principal"], "alice");
    assert_eq!(bound.metadata["tool"], "x");
    assert_eq!(b.get(&bound.id).unwrap().as_ref(), Some(&bound));
    for (key, value) in [
        ("mcp.principal", json!("mallory")),
        ("mcp.principal", Value::Null),
        ("mcp.cancelRequested", json!(true)),
        ("mcp.inputKeys", json!({})),
        ("mcp.inputResponse.k", json!("an answer")),
        ("mcp.", json!(1)),
        ("mcp.someday", json!(1)),
    ] {
        for store in [a, b] {
            let update = TaskUpdate::new()
                .status_message("changed")
                .metadata("note", 1)
                .metadata(key, value.clone());
            refused(
                store.update(&bound.id, update).map(drop),
                "update",
                &bound.id,
                key,
            );
        }
        assert_eq!(
            b.get(&bound.id).unwrap().as_ref(),
            Some(&bound),
            "nothing changed"
        );
    }
    // The manager's own writes, and the host's after them, which keep them.
    let cancel = TaskUpdate::new().reserved_metadata("mcp.cancelRequested", true);
    applied(b.update(&bound.id, cancel).unwrap());
    let host = TaskUpdate::new()
        .metadata("mcp", 1)
        .metadata("MCP.principal", "x")
        .metadata("x.mcp.principal", "y");
    let kept = applied(a.update(&bound.id, host).unwrap());
    assert_eq!(kept.revision, bound.revision + 2);
    for (key, value) in [
        ("tool", json!("x")),
        ("mcp.principal", json!("alice")),
        ("mcp.cancelRequested", json!(true)),
        ("mcp", json!(1)),
        ("MCP.principal", json!("x")),
        ("x.mcp.principal", json!("y")),
    ] {
        assert_eq!(kept.metadata.get(key), Some(&value), "{key}");
    }
    assert_eq!(b.get(&bound.id).unwrap(), Some(kept));
}

/// A checkpoint has its place in a resumable task's resume state alone:
/// on a task that is not resumable, an update that saves one is refused,
/// naming the task, and changes nothing (not its status message, not its
/// revision), where it was applied with the checkpoint dropped. A
/// resumable task keeps it, and reads it back from another handle.
pub(super) fn a_checkpoint_of_a_task_that_is_not_resumable_is_refused(
    a: &dyn TaskStore,
    b: &dyn TaskStore,
    _: &Setup,
) {
    let plain = a.create(NewTask::new().status_message("before")).unwrap();
    let update = || {
        TaskUpdate::new()
            .status_message("after")
            .checkpoint(json!({"page": 7}))
    };
    match a.update(&plain.id, update()) {
        Err(Error::InvalidTask { id, reason }) => {
            assert_eq!(id, plain.id);
            assert!(reason.contains("checkpoint"), "{reason}");
        }
        other => panic!("a checkpoint of a task that is not resumable: {other:?}"),
    }
    assert_eq!(
        b.get(&plain.id).unwrap(),
        Some(plain.clone()),
        "nothing changed"
    );
    // Fenced to its epoch by its owner, alike.
    match a.update(&plain.id, update().fenced(plain.epoch)) {
        Err(Error::InvalidTask { id, .. }) => assert_eq!(id, plain.id),
        other => panic!("a fenced checkpoint of a task that is not resumable: {other:?}"),
    }
    assert_eq!(b.get(&plain.id).unwrap(), Some(plain));
    let resumable = a
        .create(NewTask::new().resumable("k", json!({"file": "x"})))
        .unwrap();
    let saved = applied(a.update(&resumable.id, update()).unwrap());
    let read = b.get(&resumable.id).unwrap().expect("the task");
    assert_eq!(read, saved);
    let resume = read.resume.expect("its resume state");
    assert_eq!(resume.checkpoint, Some(json!({"page": 7})));
    assert_eq!(read.status_message.as_deref(), Some("after"));
}

pub(super) fn sweep_deletes_expired_tasks(store: &dyn TaskStore, setup: &Setup) {
    // With every kind of payload: a sweep reads its tasks without them.
    let short = store
        .create(
            NewTask::new()
                .ttl(Duration::from_secs(5))
                .metadata("tool", "slow")
                .status_message("starting"),
        )
        .unwrap();
    let asking = store
        .create(NewTask::new().ttl(Duration::from_secs(5)))
        .unwrap();
    let asking = applied(
        store
            .update(
                &asking.id,
                TaskUpdate::new()
                    .status(TaskStatus::InputRequired)
                    .input_requests(json!({"confirm": {"message": "go on?"}})),
            )
            .unwrap(),
    );
    let done = store
        .create(NewTask::new().ttl(Duration::from_secs(5)))
        .unwrap();
    let done = applied(
        store
            .complete(
                &done.id,
                json!({"content": [{"type": "text", "text": "done"}]}),
            )
            .unwrap(),
    );
    let long = store
        .create(NewTask::new().ttl(Duration::from_secs(50)))
        .unwrap();
    assert_eq!(store.sweep_expired().unwrap(), 0);
    setup.clock.advance(Duration::from_secs(5));
    assert_eq!(store.sweep_expired().unwrap(), 3);
    assert_eq!(store.sweep_expired().unwrap(), 0);
    assert_eq!(store.get(&short.id).unwrap(), None);
    assert!(store.get(&long.id).unwrap().is_some());
    assert!(!store.delete(&short.id).unwrap());
    // Each reported once, with the status and revision it was swept at,
    // and when it expired.
    let events = setup.events.snapshot();
    for task in [&short, &asking, &done] {
        let expired: Vec<&Value> = events
            .iter()
            .filter(|r| {
                r.event.kind == TaskEventKind::Expired && r.event.data["taskId"] == task.id.as_str()
            })
            .map(|r| &r.event.data)
            .collect();
        assert_eq!(
            expired,
            [&json!({
                "taskId": task.id.as_str(),
                "status": task.status.as_str(),
                "revision": task.revision,
                "expiredAt": task
                    .expires_at()
                    .unwrap()
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap(),
            })],
            "the task.expired event of {}",
            task.id
        );
    }
}

pub(super) fn delete_removes_the_task(store: &dyn TaskStore, _: &Setup) {
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

pub(super) fn active_cap_changes_nothing(store: &dyn TaskStore, setup: &Setup) {
    let mut tasks = Vec::new();
    for _ in 0..setup.max_active {
        tasks.push(
            store
                .create(NewTask::new().ttl(Duration::from_secs(100)))
                .unwrap(),
        );
    }
    // A task waiting for input is active: it keeps its slot.
    let waiting = TaskUpdate::new().status(TaskStatus::InputRequired);
    applied(store.update(&tasks[2].id, waiting).unwrap());
    match store.create(NewTask::new()) {
        Err(Error::TooManyActive { op, limit, .. }) => {
            assert_eq!((op, limit), ("create", setup.max_active));
        }
        other => panic!("expected TooManyActive, got {other:?}"),
    }
    // An id already taken is that, full or not: a host's retried create
    // learns its task was made.
    match store.create(NewTask::new().id(tasks[1].id.clone())) {
        Err(Error::AlreadyExists { id }) => assert_eq!(id, tasks[1].id),
        other => panic!("expected AlreadyExists at the cap, got {other:?}"),
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

pub(super) fn leases_and_orphans(store: &dyn TaskStore, setup: &Setup) {
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
    // A renewal pass returns the tasks it renewed, each as stored.
    let pass = store.renew().unwrap();
    assert!(pass.missed.is_empty(), "{pass:?}");
    let stored = store.get(&task.id).unwrap().unwrap();
    assert_eq!(pass.tasks, [stored], "{pass:?}");
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

/// An expired task is gone for every reader and its id is free again, at
/// the active-task cap too: expired tasks hold their places only until
/// deleted, and a backend may count before it looks for the id, so a full
/// store must not answer `AlreadyExists` (nor `TooManyActive`) for an id
/// whose task has expired.
pub(super) fn an_expired_id_is_free_again_at_the_cap(store: &dyn TaskStore, setup: &Setup) {
    let ttl = Duration::from_secs(100);
    let mut tasks = Vec::new();
    for _ in 0..setup.max_active {
        tasks.push(store.create(NewTask::new().ttl(ttl)).unwrap());
    }
    setup.clock.advance(ttl);
    let again = match store.create(NewTask::new().id(tasks[0].id.clone())) {
        Ok(task) => task,
        other => panic!("an expired id at the cap: expected the task, got {other:?}"),
    };
    assert_eq!((again.revision, again.created_at), (1, setup.clock.now()));
    assert_eq!(store.get(&again.id).unwrap(), Some(again));
}

/// A cancel without a message keeps the status message the task had (the
/// message is optional: none given, none changed).
pub(super) fn a_cancel_without_a_message_keeps_the_status_message(
    store: &dyn TaskStore,
    _: &Setup,
) {
    let task = store
        .create(NewTask::new().status_message("halfway"))
        .unwrap();
    let cancelled = applied(store.cancel(&task.id, None).unwrap());
    assert_eq!(cancelled.status, TaskStatus::Cancelled);
    assert_eq!(cancelled.status_message.as_deref(), Some("halfway"));
}
