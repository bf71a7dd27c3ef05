//! The index entries beside failed fsyncs: made durable with one fsync, before
//! their task and removed after it, given back later when a failed fsync kept
//! them.

use super::*;

/// A listing of history that gives finished tasks their lost `expiring/`
/// entries back links each, then makes them durable with one fsync of
/// `expiring/` for all of them (FORMAT.md, "Index"), not one a task.
#[test]
fn restored_index_entries_are_made_durable_with_one_fsync() {
    use taskstore::FsEvent;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = recorded(dir.path(), &clock, &taskstore::Recorder::new());
    for _ in 0..3 {
        let task = store
            .create(NewTask::new().ttl(Duration::from_secs(60)))
            .unwrap();
        assert!(store.complete(&task.id, json!(1)).unwrap().is_applied());
    }
    drop(store);
    let index = dir.path().join("expiring");
    for entry in fs::read_dir(&index).unwrap() {
        fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let recorder = taskstore::Recorder::new();
    let store = recorded(dir.path(), &clock, &recorder);
    let from = recorder.len();
    assert_eq!(store.list(&ListQuery::all()).unwrap().tasks.len(), 3);
    let events = recorder.events();
    let links = events[from..]
        .iter()
        .filter(|e| matches!(e, FsEvent::Link { to, .. } if in_area(to, "expiring")))
        .count();
    let syncs = events[from..]
        .iter()
        .filter(|e| synced("expiring")(e))
        .count();
    assert_eq!((links, syncs), (3, 1), "three entries linked, one fsync");
    assert_eq!(fs::read_dir(&index).unwrap().count(), 3);
}

/// A listing that gives finished tasks their lost `expiring/` entries back,
/// when one link fails and the fsync of those it made fails too, keeps the
/// task it could not link for the next listing: without its entry no sweep
/// would ever find it.
#[test]
fn an_index_entry_not_given_back_beside_a_failed_fsync_is_given_back_later() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (store, _clock, faults) = faulted(root);
    for i in 0..3 {
        let task = store
            .create(NewTask::new().ttl(Duration::from_secs(60)))
            .unwrap();
        assert!(store.complete(&task.id, json!(i)).unwrap().is_applied());
    }
    drop(store);
    let index = root.join("expiring");
    let mut entries: Vec<PathBuf> = fs::read_dir(&index)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for entry in &entries {
        fs::remove_file(entry).unwrap();
    }
    let (store, _clock, faults2) = faulted(root);
    drop(faults);
    faults2.fail_at(FsOp::Link, &entries[0], Fault::Eio);
    faults2.fail_at(FsOp::SyncDir, &index, Fault::Eio);
    assert_eq!(store.list(&ListQuery::all()).unwrap().tasks.len(), 3);
    assert_eq!(fs::read_dir(&index).unwrap().count(), 2, "one link failed");
    faults2.disarm();
    assert_eq!(store.list(&ListQuery::all()).unwrap().tasks.len(), 3);
    assert!(
        entries[0].exists(),
        "the entry whose link failed is given back by the next listing"
    );
}

/// A finished task with a TTL is never, after a power loss, in `done/`
/// without its `expiring/` entry (no sweep would ever find it): a terminal
/// move makes the entry durable before it gives the task its name in
/// `done/`, and a delete or a sweep makes the task's removal durable before
/// it removes the entry. Shown on the calls the store makes, in order.
#[test]
fn a_finished_tasks_index_entry_is_durable_first_and_removed_last() {
    use taskstore::FsEvent;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let recorder = taskstore::Recorder::new();
    let store = recorded(dir.path(), &clock, &recorder);
    let ttl = Duration::from_secs(60);
    for finish in ["delete", "sweep"] {
        let task = store.create(NewTask::new().ttl(ttl)).unwrap();
        let from = recorder.len();
        assert!(
            store
                .complete(&task.id, json!(finish))
                .unwrap()
                .is_applied()
        );
        let events = recorder.events();
        let index_durable = first(&events, from, synced("expiring"));
        let named_in_done = first(
            &events,
            from,
            |e| matches!(e, FsEvent::Link { to, .. } if in_area(to, "done")),
        );
        assert!(
            index_durable < named_in_done,
            "complete: the entry is durable (call {index_durable}) before the task is named in done/ (call {named_in_done})"
        );
        let from = recorder.len();
        match finish {
            "delete" => assert!(store.delete(&task.id).unwrap()),
            _ => {
                clock.advance(ttl * 2);
                assert_eq!(store.sweep_expired().unwrap(), 1);
            }
        }
        let events = recorder.events();
        let gone_durable = first(&events, from, synced("done"));
        let entry_removed = first(&events, from, removed_from("expiring"));
        assert!(
            gone_durable < entry_removed,
            "{finish}: the task's removal is durable (call {gone_durable}) before its entry goes (call {entry_removed})"
        );
        assert_eq!(store.get(&task.id).unwrap(), None);
        assert_eq!(
            fs::read_dir(dir.path().join("expiring")).unwrap().count(),
            0
        );
    }
}

/// An `expiring/` entry whose task is gone from `done/` is removed only
/// after an fsync of `done/`: the removal of the task's file may not be
/// durable yet (here another handle's sweep failed its closing fsync, and
/// keeps its removals pending), and a power loss must never bring back a
/// finished task without its entry, which no sweep would find (or, where a
/// file is freed before the removal of its last name is durable, its name
/// pointing at a freed file).
#[test]
fn a_stale_index_entry_goes_only_after_its_tasks_removal_is_durable() {
    use taskstore::FsOp;
    let dir = tempdir();
    let root = dir.path().join("store");
    let clock = ManualClock::new(T0);
    let faults = FaultInjector::new();
    let recorder = taskstore::Recorder::new();
    let open = |faults: Option<&FaultInjector>| {
        let builder = FileStore::builder(&root)
            .clock(Arc::new(clock.clone()))
            .recorder(recorder.clone());
        match faults {
            Some(faults) => builder.fault_injector(faults.clone()),
            None => builder,
        }
        .open()
        .unwrap()
    };
    let (failing, other) = (open(Some(&faults)), open(None));
    let ttl = Duration::from_secs(60);
    for i in 0..3 {
        let task = failing.create(NewTask::new().ttl(ttl)).unwrap();
        assert!(failing.complete(&task.id, json!(i)).unwrap().is_applied());
    }
    clock.advance(ttl * 2);
    let done = root.join("done");
    faults.fail_at(FsOp::SyncDir, &done, Fault::Eio);
    failing.sweep_expired().unwrap_err();
    assert_eq!(
        fs::read_dir(&done).unwrap().count(),
        0,
        "unlinked, not durably"
    );
    assert_eq!(fs::read_dir(root.join("expiring")).unwrap().count(), 3);

    let from = recorder.len();
    assert_eq!(other.sweep_expired().unwrap(), 0, "nothing left to delete");
    let events = recorder.events();
    let entry_removed = first(&events, from, removed_from("expiring"));
    let done_durable = first(&events, from, synced("done"));
    assert!(
        done_durable < entry_removed,
        "the removals from done/ are durable (call {done_durable}) before a stale entry goes (call {entry_removed})"
    );
    assert_eq!(fs::read_dir(root.join("expiring")).unwrap().count(), 0);
}

/// After an fsync of `done/` failed, a removal from it may be lost: a
/// power loss can bring the file back. So the finished tasks' `expiring/`
/// entries stay, whatever later fsyncs say (the kernel reports a failure
/// once): a task come back is still found and swept. (The next sweep's
/// retry removed them after its own fsync succeeded, and so did a later
/// sweep that found them stale: such a task would never be swept.)
#[test]
fn after_a_failed_fsync_of_done_the_index_entries_of_its_removals_stay() {
    use taskstore::FsOp;
    let dir = tempdir();
    let root = dir.path().join("store");
    let (store, clock, faults) = faulted(&root);
    let ttl = Duration::from_secs(60);
    let ids = common::finished_with_ttl(&store, 3, ttl);
    clock.advance(ttl * 2);
    let entries = common::files_in(&root, "expiring");
    assert_eq!(entries.len(), 3);
    faults.fail_at(FsOp::SyncDir, root.join("done"), Fault::Eio);
    let swept = store.sweep().expect("a sweep that deleted 3 tasks");
    assert_eq!(swept.deleted, 3, "{swept:?}");
    assert_eq!(swept.errors.len(), 1, "the sweep's fsync of done/ failed");
    faults.disarm();
    store.sweep().unwrap();
    store.sweep().unwrap();
    assert_eq!(common::files_in(&root, "done"), Vec::<String>::new());
    for id in &ids {
        assert_eq!(store.get(id).unwrap(), None);
    }
    assert_eq!(
        common::files_in(&root, "expiring"),
        entries,
        "the entries stay for the tasks a power loss may bring back"
    );
    // A handle opened after it (after a reboot, the files are back or
    // durably gone) finds them stale, and its sweep removes them.
    drop(store);
    let again = FileStore::builder(&root)
        .clock(Arc::new(clock.clone()))
        .open()
        .unwrap();
    again.sweep().unwrap();
    assert_eq!(
        common::files_in(&root, "expiring"),
        Vec::<String>::new(),
        "a handle opened later removes the stale entries"
    );
}
