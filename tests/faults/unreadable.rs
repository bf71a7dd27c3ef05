//! Files that cannot be read, looked at or removed: reported with their path,
//! left where they are, and never failing a pass or a listing.

use super::*;

/// The `task.unreadable` events since the log's sequence number `from`,
/// as (location, action), sorted.
fn unreadable_since(log: &EventLog, from: u64) -> Vec<(String, String)> {
    let mut out: Vec<_> = log
        .snapshot()
        .into_iter()
        .filter(|r| r.seq >= from && r.event.kind == TaskEventKind::Unreadable)
        .map(|r| {
            (
                r.event.data["location"].as_str().unwrap_or("").to_owned(),
                r.event.data["action"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A task file the device can no longer read (every read of it fails with
/// EIO, through the seam) is never a reason to fail a pass, never set
/// aside, never silently left out: `list`, `sweep` and `reap` return `Ok`,
/// do the rest of their work, leave the file where it is and report it (in
/// their result and as a `task.unreadable` event); `get` of it is an error
/// naming the file. Once the device reads it again, the same handle lists
/// and gets the task.
#[test]
fn an_unreadable_task_file_is_reported_and_left_and_never_fails_a_pass() {
    use taskstore::FsOp;
    use taskstore::backend::UnreadableAction::LeftInPlace;

    let dir = tempdir();
    let root = dir.path().join("store");
    let clock = ManualClock::new(T0);
    let faults = FaultInjector::new();
    let log = Arc::new(EventLog::new());
    let open = |instance: &str, lease: u64| {
        FileStore::builder(&root)
            .clock(Arc::new(clock.clone()))
            .instance_id(instance)
            .lease(Duration::from_secs(lease))
            .fault_injector(faults.clone())
            .sink(log.clone())
            .open()
            .unwrap()
    };
    let ttl = Duration::from_secs(5);
    let dead = open("dead", 1);
    let orphan = dead.create(NewTask::new().id(tid("orphan"))).unwrap();
    drop(dead);
    let store = open("owner", 3600);
    let good = store.create(NewTask::new().id(tid("good"))).unwrap();
    let unreadable = store.create(NewTask::new().id(tid("unreadable"))).unwrap();
    for id in ["old", "expired"] {
        store.create(NewTask::new().id(tid(id)).ttl(ttl)).unwrap();
        let _ = store.complete(&tid(id), json!(id)).unwrap();
    }
    store.create(NewTask::new().id(tid("moving"))).unwrap();
    let moving = store
        .complete(&tid("moving"), json!("moved"))
        .unwrap()
        .into_task();
    // A terminal move stopped between its steps: the finished task still
    // in `active/` (final for readers, moved on by the next sweep).
    let moving_file = root.join("active/moving.json");
    std::fs::rename(root.join("done/moving.json"), &moving_file).unwrap();
    // Listed once while readable: the handle's snapshot holds every file.
    assert_eq!(store.list(&ListQuery::active()).unwrap().tasks.len(), 3);
    clock.advance(Duration::from_secs(10));

    let active_file = root.join("active/unreadable.json");
    let done_file = root.join("done/old.json");
    for file in [&active_file, &moving_file, &done_file] {
        faults.fail_at(FsOp::Read, file, Fault::Eio);
    }
    // A change the listing must look at: the running task's file is
    // replaced, so it has to be read again (its last good version is not
    // the task any more).
    for file in [&active_file, &moving_file] {
        std::fs::write(root.join("tmp/x"), std::fs::read(file).unwrap()).unwrap();
        std::fs::rename(root.join("tmp/x"), file).unwrap();
    }
    // Sorted by path, as `reported` gives them.
    let all = vec![
        (moving_file.display().to_string(), LeftInPlace),
        (active_file.display().to_string(), LeftInPlace),
        (done_file.display().to_string(), LeftInPlace),
    ];
    let running = all[..2].to_vec();
    let events = |from: u64| unreadable_since(&log, from);
    let as_events = |r: &[(String, taskstore::backend::UnreadableAction)]| {
        r.iter()
            .map(|(p, _)| (p.clone(), "leftInPlace".to_owned()))
            .collect::<Vec<_>>()
    };

    let from = log.last_seq() + 1;
    let page = store
        .list(&ListQuery::all())
        .expect("list goes on past a file it cannot read");
    let ids: Vec<&str> = page.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(
        ids,
        ["good", "orphan"],
        "every readable live task, in order"
    );
    assert_eq!(reported(&page.skipped), all, "{:?}", page.skipped);
    for s in &page.skipped {
        assert!(
            s.reason.contains(&s.location),
            "the reason names the file: {s:?}"
        );
    }
    assert_eq!(events(from), as_events(&all), "one event per file");
    // The listing deleted the readable expired task it met (a handle that
    // meets one deletes it); one that expires after it is the sweep's.
    assert_eq!(store.get(&tid("expired")).unwrap(), None);
    store
        .create(NewTask::new().id(tid("late")).ttl(Duration::from_secs(1)))
        .unwrap();
    clock.advance(Duration::from_secs(2));

    for (id, file) in [
        ("unreadable", &active_file),
        ("moving", &moving_file),
        ("old", &done_file),
    ] {
        match store.get(&tid(id)) {
            Err(Error::Io { path, source, .. }) => {
                assert_eq!(&path, file);
                assert_eq!(source.raw_os_error(), Some(libc::EIO));
            }
            other => panic!("get {id}: expected Error::Io naming {file:?}, got {other:?}"),
        }
        let message = store.get(&tid(id)).unwrap_err().to_string();
        assert!(message.contains(&file.display().to_string()), "{message}");
    }

    let from = log.last_seq() + 1;
    let swept = store
        .sweep()
        .expect("a sweep goes on past a file it cannot read");
    assert_eq!(swept.deleted, 1, "the readable expired task is swept");
    assert!(swept.missed.is_empty(), "{:?}", swept.missed);
    assert_eq!(reported(&swept.skipped), all, "{:?}", swept.skipped);
    assert_eq!(events(from), as_events(&all));

    let from = log.last_seq() + 1;
    let reaped = store
        .reap()
        .expect("a reap goes on past a file it cannot read");
    let ids: Vec<&str> = reaped.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["orphan"], "the readable orphan is reaped");
    assert_eq!(
        reported(&reaped.skipped),
        running,
        "a reap reads `active/` only: {:?}",
        reaped.skipped
    );
    assert_eq!(events(from), as_events(&running));

    assert!(
        active_file.exists() && moving_file.exists() && done_file.exists(),
        "left in place"
    );
    assert_eq!(common::files_in(&root, "quarantine"), Vec::<String>::new());
    assert_eq!(store.get(&tid("expired")).unwrap(), None);

    // The device reads them again: nothing was lost.
    faults.disarm();
    let page = store.list(&ListQuery::all()).unwrap();
    assert!(page.skipped.is_empty(), "{:?}", page.skipped);
    assert!(
        page.tasks.iter().any(|t| t.id == unreadable.id),
        "listed again once readable: {:?}",
        page.tasks
    );
    assert_eq!(store.get(&unreadable.id).unwrap(), Some(unreadable));
    assert_eq!(store.get(&moving.id).unwrap(), Some(moving));
    assert_eq!(store.sweep().unwrap().cleaned, 1, "the move finished");
    assert!(!moving_file.exists());
    assert_eq!(store.get(&good.id).unwrap(), Some(good));
    assert_eq!(
        store.get(&orphan.id).unwrap().unwrap().status,
        TaskStatus::Failed
    );
}

/// A half-moved finished task (still in `active/`) whose file turns
/// unreadable after the handle read it never fails a sweep: the sweep
/// finishes the other moves and leaves this one for later, and `get` names
/// the file.
#[test]
fn a_sweep_goes_on_past_an_interrupted_move_it_cannot_read() {
    use taskstore::FsOp;
    let dir = tempdir();
    let root = dir.path().join("store");
    let faults = FaultInjector::new();
    let store = FileStore::builder(&root)
        .fault_injector(faults.clone())
        .open()
        .unwrap();
    for id in ["stuck", "movable"] {
        store.create(NewTask::new().id(tid(id))).unwrap();
        assert!(store.complete(&tid(id), json!(id)).unwrap().is_applied());
        // A terminal move stopped between its steps.
        fs::rename(
            root.join(format!("done/{id}.json")),
            root.join(format!("active/{id}.json")),
        )
        .unwrap();
    }
    // Read once while readable: the handle knows both moves are unfinished.
    assert!(store.list(&ListQuery::active()).unwrap().tasks.is_empty());
    let stuck = root.join("active/stuck.json");
    faults.fail_at(FsOp::Read, &stuck, Fault::Eio);
    store
        .sweep()
        .expect("a sweep goes on past a move it cannot finish");
    assert!(
        root.join("done/movable.json").exists(),
        "the other move is finished"
    );
    assert!(!root.join("active/movable.json").exists());
    assert!(stuck.exists(), "left in place");
    match store.get(&tid("stuck")) {
        Err(Error::Io { path, .. }) => assert_eq!(path, stuck),
        other => panic!("get must name the file it cannot read, got {other:?}"),
    }
}

/// A running task whose bytes the snapshot does not keep (past its 64 MiB
/// budget) is read by the listing that returns it. A passing I/O error
/// there is reported, and the next listing reads the file again: the task
/// is listed once the device answers. (It was left out of every later
/// listing, and of its owner's renewals, until its file changed.)
#[test]
fn a_task_past_the_snapshots_budget_is_read_again_after_a_passing_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let faults = FaultInjector::new();
    let writer = common::budget_store(root, None, None);
    let file = |id: &TaskId| root.join("active").join(format!("{id}.json"));
    common::fill_the_snapshot_budget(&writer, root, || {});
    let reader = common::budget_store(root, None, Some(&faults));
    assert_eq!(reader.list(&ListQuery::active()).unwrap().tasks.len(), 2);
    // Made after: read into the snapshot by a later listing, past the
    // budget; with more than 64 running tasks, none is kept decoded either.
    for _ in 0..64 {
        writer.create(NewTask::new()).unwrap();
    }
    let late = writer.create(NewTask::new()).unwrap();
    let listed = reader.list(&ListQuery::active()).unwrap();
    assert_eq!(listed.tasks.len(), 67);
    faults.fail_at(taskstore::FsOp::Read, file(&late.id), Fault::Eio);
    let failed = reader.list(&ListQuery::active()).unwrap();
    assert_eq!(failed.tasks.len(), 66);
    assert_eq!(failed.skipped.len(), 1, "{:?}", failed.skipped);
    assert_eq!(failed.skipped[0].id.as_ref(), Some(&late.id));
    faults.disarm();
    let again = reader.list(&ListQuery::active()).unwrap();
    assert!(again.skipped.is_empty(), "{:?}", again.skipped);
    assert!(
        again.tasks.iter().any(|t| t.id == late.id),
        "the task is listed again"
    );
    assert_eq!(reader.get(&late.id).unwrap().as_ref(), Some(&late));
}

/// A stale `expiring/` entry (its task's file gone from `done/` by a crash
/// between the two removals) whose removal fails every time: the sweep
/// still deletes every other expired task, and says what it could not do
/// in its log, not as a failed sweep. (Every sweep failed, and left every
/// expired task of that page.)
#[test]
fn a_stale_index_entry_that_cannot_be_removed_never_stops_a_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let (store, clock, faults) = faulted(&root);
    let ttl = Duration::from_secs(60);
    let ids = common::finished_with_ttl(&store, 5, ttl);
    fs::remove_file(root.join("done").join(format!("{}.json", ids[0]))).unwrap();
    let entry = fs::read_dir(root.join("expiring"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(ids[0].as_str()))
        .unwrap();
    faults.fail_at(FsOp::Remove, &entry, Fault::Eio);
    clock.advance(ttl * 2);
    let swept = store
        .sweep()
        .expect("a stale entry it cannot remove stops no sweep");
    assert_eq!(swept.deleted, 4, "{swept:?}");
    assert_eq!(common::files_in(&root, "done"), Vec::<String>::new());
    assert!(entry.exists(), "the entry it could not remove is left");
    // Once the device answers, the next sweep removes it.
    faults.disarm();
    assert_eq!(store.sweep().unwrap().deleted, 0);
    assert!(!entry.exists());
}

/// A finished task whose file cannot be looked at for now (every `stat`
/// of it EIO) keeps its `expiring/` entry: the sweep reports it, naming
/// the file, and deletes it once the device answers. (The entry was taken
/// for stale and removed, without a word: no later sweep ever found the
/// task again.)
#[test]
fn a_finished_task_whose_file_cannot_be_looked_at_keeps_its_index_entry() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let (store, clock, faults) = faulted(&root);
    let ttl = Duration::from_secs(60);
    let ids = common::finished_with_ttl(&store, 5, ttl);
    let file = root.join("done").join(format!("{}.json", ids[0]));
    faults.fail_at(FsOp::Stat, &file, Fault::Eio);
    clock.advance(ttl * 2);
    let swept = store.sweep().unwrap();
    assert_eq!(swept.deleted, 4, "{swept:?}");
    assert!(
        swept.missed.iter().any(|m| m.id == ids[0])
            || swept.skipped.iter().any(|s| s.id.as_ref() == Some(&ids[0])),
        "the task left is reported: {swept:?}"
    );
    assert_eq!(
        common::files_in(&root, "expiring").len(),
        1,
        "its entry stays"
    );
    faults.disarm();
    assert_eq!(store.sweep().unwrap().deleted, 1);
    assert_eq!(common::files_in(&root, "done"), Vec::<String>::new());
    assert_eq!(common::files_in(&root, "expiring"), Vec::<String>::new());
}

/// A dead writer's temp file that cannot be removed (every unlink of it
/// EIO) stops no sweep: the expired tasks are deleted all the same, and
/// the file goes once the device answers; a clean-up that fails as a whole
/// is the sweep's error beside the count of what its batches deleted
/// (`Swept::errors`). (Every sweep failed at the clean-up, before its
/// batches, and deleted nothing; then it deleted, and returned the
/// clean-up's error alone, without the count.)
#[test]
fn a_temp_file_that_cannot_be_removed_stops_no_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let (store, clock, faults) = faulted(&root);
    let ttl = Duration::from_secs(60);
    common::finished_with_ttl(&store, 5, ttl);
    store.create(NewTask::new().ttl(ttl)).unwrap();
    let temp = root.join("tmp/target.999999.7.tmp");
    fs::write(&temp, b"{\"format\":1,\"ta").unwrap();
    faults.fail_at(FsOp::Remove, &temp, Fault::Eio);
    clock.advance(ttl * 2);
    for round in 0..2 {
        let swept = store
            .sweep()
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(swept.deleted, if round == 0 { 6 } else { 0 }, "{swept:?}");
        assert!(temp.exists());
    }
    faults.disarm();
    assert_eq!(store.sweep().unwrap().cleaned, 1);
    assert!(!temp.exists());
    // A clean-up that fails as a whole (`tmp/` cannot be listed) is the
    // sweep's error, beside the count of what its batches deleted.
    let task = store.create(NewTask::new().ttl(ttl)).unwrap();
    faults.fail_at(FsOp::ReadDir, root.join("tmp"), Fault::Eio);
    clock.advance(ttl * 2);
    let swept = store.sweep().expect("a sweep that deleted a task");
    assert_eq!(swept.deleted, 1, "{swept:?}");
    let [err] = swept.errors.as_slice() else {
        panic!("one error, the clean-up's: {swept:?}");
    };
    assert!(err.to_string().contains("tmp"), "{err}");
    faults.disarm();
    assert_eq!(common::files_in(&root, "active"), Vec::<String>::new());
    assert_eq!(store.get(&task.id).unwrap(), None);
}
