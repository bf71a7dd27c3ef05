//! Creates and writes that fail: no task left behind, nothing to undo, every
//! write a failed batch fsync covered fails, a refused change notice watch.

use super::*;

/// When the kernel refuses a handle a change-notice watch (inotify's
/// per-user limits: `EMFILE` at the instances', `ENOSPC` at the watches';
/// here `ENOSPC`, injected at the seam), the handle lists by file status:
/// every listing still has every other handle's writes, and the handle
/// says so once, naming the directory and the error, however many
/// listings try again.
#[test]
fn a_refused_change_notice_watch_is_said_once_and_listings_still_have_every_write() {
    use taskstore::FsOp;
    let dir = tempdir();
    let root = dir.path().join("store");
    let faults = FaultInjector::new();
    let reader = FileStore::builder(&root)
        .fault_injector(faults.clone())
        .open()
        .unwrap();
    let writer = FileStore::open(&root).unwrap();
    let (active, done) = (root.join("active"), root.join("done"));
    faults.fail_at(FsOp::Watch, &active, Fault::Enospc);
    faults.fail_at(FsOp::Watch, &done, Fault::Enospc);
    let listed = |query: &ListQuery| -> Vec<TaskId> {
        let mut ids = common::ids_of(&reader, query);
        ids.sort();
        ids
    };
    let logged = common::Logged::default();
    tracing::subscriber::with_default(logged.clone(), || {
        let (mut running, mut finished) = (Vec::new(), Vec::new());
        for _ in 0..4 {
            running.push(writer.create(NewTask::new()).unwrap().id);
            running.sort();
            assert_eq!(listed(&ListQuery::active()), running);
            let id = running.remove(0);
            let done = writer.complete(&id, json!({"done": true})).unwrap();
            assert!(matches!(done, taskstore::Transition::Applied(_)));
            finished.push(id);
            finished.sort();
            assert_eq!(listed(&ListQuery::active()), running);
            assert_eq!(
                listed(&ListQuery::all().status(TaskStatus::Completed)),
                finished
            );
        }
    });
    let tried = |dir: &Path| {
        faults
            .fired()
            .iter()
            .filter(|(op, path)| *op == FsOp::Watch && path == dir)
            .count()
    };
    assert!(
        tried(&active) >= 4 && tried(&done) >= 2,
        "listings try again: {:?}",
        faults.fired()
    );
    let said = logged.warnings();
    assert_eq!(said.len(), 1, "said once: {said:?}");
    assert!(
        said[0].field("dir") == Some(&*active.display().to_string())
            && said[0]
                .field("error")
                .is_some_and(|e| e.contains("No space left")),
        "the warning names the directory and the error: {:?}",
        said[0]
    );
}

/// A create that fails leaves no task behind: whichever call of it fails
/// (an I/O error once, at every call in turn), no handle lists a task
/// afterwards, and the creating handle, which owns what it makes, renews
/// none. With an id the store chose, the caller could never find such a
/// task. (A failed fsync of `active/` after the rename left the task in
/// place: listed as working, and renewed by its handle for as long as it
/// lived.)
#[test]
fn a_create_that_fails_leaves_no_task_behind() {
    let mut failed = 0;
    for n in 1.. {
        assert!(n < 1_000, "the create never gets through");
        let dir = tempdir();
        let faults = FaultInjector::new();
        let s = FileStore::builder(dir.path().join("store"))
            .clock(clock())
            .fault_injector(faults.clone())
            .open()
            .unwrap();
        faults.fail_nth(n, Fault::Eio, FaultMode::Once);
        let result = s.create(NewTask::new());
        faults.disarm();
        if faults.fired().is_empty() {
            result.expect("a create without faults");
            break;
        }
        if result.is_ok() {
            continue;
        }
        failed += 1;
        let what = format!("EIO at call {n} ({:?})", faults.fired());
        assert_eq!(s.list(&ListQuery::active()).unwrap().tasks, [], "{what}");
        assert_eq!(s.renew_leases().unwrap(), 0, "{what}");
        let fresh = FileStore::open(dir.path().join("store")).unwrap();
        assert_eq!(fresh.list(&ListQuery::all()).unwrap().tasks, [], "{what}");
    }
    assert!(failed >= 3, "only {failed} creates failed");
}

/// A batch of renewals large enough to be staged on several workers, whose
/// one fsync of `active/` fails: every renewal it covered reports the
/// failure, none is acknowledged (the workers' records of what they
/// touched are one, and the failure reaches each write in it).
#[test]
fn a_failed_fsync_under_a_batch_staged_on_several_workers_fails_every_write_it_covered() {
    use taskstore::FsOp;
    let dir = tempdir();
    let root = dir.path().join("store");
    let (store, clock, faults) = faulted(&root);
    let ids: Vec<TaskId> = (0..600)
        .map(|_| store.create(NewTask::new()).unwrap().id)
        .collect();
    clock.advance(Duration::from_secs(5));
    faults.fail_at(FsOp::SyncDir, root.join("active"), Fault::Eio);
    let renewed = store.renew_leases_of(&ids);
    faults.disarm();
    assert_eq!(renewed.len(), ids.len());
    for (id, result) in ids.iter().zip(&renewed) {
        assert!(
            matches!(result, Err(taskstore::Error::Io { .. })),
            "{id}: {result:?}"
        );
    }
}

/// A create whose id is held by a file that is no readable task fails with
/// that file's error, and leaves nothing to undo: nothing of it was
/// written, so nothing warns that it may have left its task. (The undo's
/// removal failed on the same unreadable file, and the handle warned and
/// kept the task to remove at its renewal passes; a file store's pass sets
/// the file aside, as a listing does, and PostgreSQL's read the row again
/// each time.)
#[test]
fn a_create_over_an_unreadable_file_leaves_nothing_to_undo() {
    let dir = tempdir();
    let root = dir.path().join("store");
    let (store, _clock, _faults) = faulted(&root);
    fs::write(root.join("active").join("held.json"), b"not a task").unwrap();
    let id = TaskId::parse("held").unwrap();
    let logged = common::Logged::default();
    let err = tracing::subscriber::with_default(logged.clone(), || {
        let err = store.create(NewTask::new().id(id.clone())).unwrap_err();
        assert_eq!(store.renew_leases().unwrap(), 0);
        err
    });
    assert!(matches!(err, taskstore::Error::Corrupt { .. }), "{err:?}");
    let undo = logged.warnings_of("failed create");
    assert!(undo.is_empty(), "{undo:?}");

    // A file past any task's size (sparse: nothing is written) is no task
    // of this create's either.
    let big = fs::File::create(root.join("active").join("big.json")).unwrap();
    big.set_len(2 << 30).unwrap();
    drop(big);
    let logged = common::Logged::default();
    let err = tracing::subscriber::with_default(logged.clone(), || {
        let new = NewTask::new().id(TaskId::parse("big").unwrap());
        store.create(new).unwrap_err()
    });
    assert!(
        matches!(err, taskstore::Error::FileTooLarge { .. }),
        "{err:?}"
    );
    let undo = logged.warnings_of("failed create");
    assert!(undo.is_empty(), "{undo:?}");
}

/// A copy whose second half of storing a finished task in a file store
/// fails with an I/O error (the link into `done/` refused, `EIO`; with a
/// TTL and without) reports the task copied: it is stored, durably, and
/// final for every reader, in `active/`, as a copy killed between the
/// halves leaves it, and reads back as the source holds it. A copy run
/// again counts it as there; the next sweep finishes the move. (It was
/// reported missed, with the link's error, though stored: the command
/// said "not copied" and exited 1, and its run again said it was there.)
#[test]
fn a_copy_whose_move_into_done_fails_reports_the_task_it_stored() {
    let dir = tempdir();
    let source = FileStore::open(dir.path().join("from")).unwrap();
    let plain = source.create(NewTask::new()).unwrap().id;
    assert!(source.complete(&plain, json!(1)).unwrap().is_applied());
    let with_ttl = source
        .create(NewTask::new().ttl(Duration::from_secs(86_400)))
        .unwrap()
        .id;
    assert!(source.fail(&with_ttl, json!("no")).unwrap().is_applied());
    let running = source.create(NewTask::new()).unwrap().id;
    let root = dir.path().join("to");
    let faults = FaultInjector::new();
    let to = FileStore::builder(&root)
        .fault_injector(faults.clone())
        .open()
        .unwrap();
    let finished = [&plain, &with_ttl];
    for id in finished {
        faults.fail_at(
            FsOp::Link,
            root.join("done").join(format!("{id}.json")),
            Fault::Eio,
        );
    }
    let copied = to.copy_from(&source).unwrap();
    assert_eq!(faults.fired().len(), 2, "{:?}", faults.fired());
    assert!(copied.missed.is_empty(), "{copied:?}");
    assert!(copied.is_complete(), "{copied:?}");
    let mut all = vec![plain.clone(), with_ttl.clone(), running.clone()];
    all.sort();
    let mut said = copied.copied.clone();
    said.sort();
    assert_eq!(said, all);
    let mut unmoved = common::unmoved(&root);
    unmoved.sort();
    let mut expected: Vec<String> = finished.iter().map(|id| format!("{id}.json")).collect();
    expected.sort();
    assert_eq!(unmoved, expected, "in active/, their moves unfinished");
    faults.disarm();
    let reopened = FileStore::open(&root).unwrap();
    for id in &all {
        assert_eq!(reopened.get(id).unwrap(), source.get(id).unwrap(), "{id}");
    }
    let again = to.copy_from(&source).unwrap();
    assert!(
        again.copied.is_empty() && again.already_there == 3,
        "{again:?}"
    );
    let swept = reopened.sweep().unwrap();
    assert_eq!((swept.deleted, swept.cleaned), (0, 2), "{swept:?}");
    assert!(common::unmoved(&root).is_empty());
    for id in &all {
        assert_eq!(reopened.get(id).unwrap(), source.get(id).unwrap(), "{id}");
    }
}
