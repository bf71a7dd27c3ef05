//! Claims, renewals and reaps under failing I/O: a task that cannot be renewed
//! holds up no other, a failed claim or create is never renewed, many leases
//! made durable together, a reap's failure said with the task's id.

use super::*;

/// A task this handle cannot renew (the device fails the rename of its
/// renewed file, and only of that one) keeps none of its other tasks from
/// being renewed: the pass renews the rest, then reports the one, naming
/// its file. (The pass stopped at it, before it wrote any renewal, and
/// every lease of the handle lapsed.)
#[test]
fn a_task_that_cannot_be_renewed_keeps_no_other_from_being_renewed() {
    let dir = tempdir();
    let root = dir.path().join("store");
    let (store, clock, faults) = faulted(&root);
    // The one that fails first in listing order, so that a pass stopping
    // at it would leave the other.
    let stuck = store.create(NewTask::new()).unwrap();
    let fine = store.create(NewTask::new()).unwrap();
    let stuck_path = root.join("active").join(format!("{}.json", stuck.id));
    faults.fail_at(FsOp::Rename, &stuck_path, Fault::Eio);
    clock.advance(Duration::from_secs(5));
    match store.renew_leases() {
        Err(taskstore::Error::Io { path, .. }) => assert_eq!(path, stuck_path),
        other => panic!("the task that failed is reported, got {other:?}"),
    }
    faults.disarm();
    let renewed = store.get(&fine.id).unwrap().unwrap();
    assert_eq!(
        renewed.lease_expires_at,
        Some(T0 + Duration::from_secs(5) + taskstore::DEFAULT_LEASE),
        "the other task is renewed"
    );
    assert_eq!(store.get(&stuck.id).unwrap(), Some(stuck), "kept as it was");
}

/// A renewal pass says what it renewed beside what it could not:
/// `TaskStore::renew` returns the tasks it renewed (each as stored, its
/// lease moved) and, in `missed`, the one whose renewed file the device
/// would not rename, with its id and the error naming its file;
/// `renew_leases`, a count alone, still fails with that error. (There was
/// only `renew_leases`: its error was all a caller learned, not how many
/// tasks, nor which, the pass had renewed.)
#[test]
fn a_renewal_pass_reports_what_it_renewed_beside_what_it_could_not() {
    let dir = tempdir();
    let root = dir.path().join("store");
    let (store, clock, faults) = faulted(&root);
    let stuck = store.create(NewTask::new()).unwrap();
    let mut fine: Vec<TaskId> = (0..3)
        .map(|_| store.create(NewTask::new()).unwrap().id)
        .collect();
    let stuck_path = root.join("active").join(format!("{}.json", stuck.id));
    faults.fail_at(FsOp::Rename, &stuck_path, Fault::Eio);
    clock.advance(Duration::from_secs(5));
    let renewed = store.renew().unwrap();
    faults.disarm();
    let mut ids: Vec<TaskId> = renewed.tasks.iter().map(|t| t.id.clone()).collect();
    ids.sort();
    fine.sort();
    assert_eq!(ids, fine, "{renewed:?}");
    for task in &renewed.tasks {
        assert_eq!(
            task.lease_expires_at,
            Some(T0 + Duration::from_secs(5) + taskstore::DEFAULT_LEASE)
        );
        assert_eq!(store.get(&task.id).unwrap().as_ref(), Some(task));
    }
    assert_eq!(renewed.missed.len(), 1, "{renewed:?}");
    assert_eq!(renewed.missed[0].id, stuck.id);
    match &renewed.missed[0].error {
        Error::Io { path, .. } => assert_eq!(path, &stuck_path),
        other => panic!("the task that failed is reported, got {other:?}"),
    }
    assert!(renewed.skipped.is_empty() && renewed.expired.is_empty());
    assert_eq!(store.get(&stuck.id).unwrap(), Some(stuck), "kept as it was");
    faults.fail_at(FsOp::Rename, &stuck_path, Fault::Eio);
    let count = store.renew_leases();
    faults.disarm();
    assert!(
        matches!(&count, Err(Error::Io { path, .. }) if *path == stuck_path),
        "{count:?}"
    );
}

/// A store at `root` with handles of the instances `names` on one clock
/// and one fault injector, and a resumable task (five attempts) the first
/// made, its lease lapsed: an orphan for the others to claim.
fn an_orphan_and<const N: usize>(
    root: &Path,
    names: [&str; N],
) -> (Task, ManualClock, FaultInjector, [FileStore; N]) {
    let clock = ManualClock::new(T0);
    let faults = FaultInjector::new();
    let handles = names.map(|instance_id| {
        FileStore::builder(root)
            .clock(Arc::new(clock.clone()))
            .instance_id(instance_id)
            .fault_injector(faults.clone())
            .open()
            .unwrap()
    });
    let resumable = NewTask::new().resumable("k", json!(1)).max_attempts(5);
    let task = handles[0].create(resumable).unwrap();
    clock.advance(taskstore::DEFAULT_LEASE);
    (task, clock, faults, handles)
}

/// A claim whose write the device fails after the new version is in place
/// (the fsync of `active/` fails, its rename done) is reported missed, and
/// the task, which the store may hold as this handle's, is never renewed
/// by it: its lease lapses and another instance claims it. (The handle's
/// `renew_leases` renewed it: a task no caller knew of, kept working for
/// as long as the handle lived.) A later claim by the same handle that
/// lands is renewed as any.
#[test]
fn a_claim_that_fails_after_its_write_stands_is_never_renewed() {
    let dir = tempdir();
    let root = dir.path().join("store");
    let (task, clock, faults, [dead, heir, other]) =
        an_orphan_and(&root, ["dead", "heir", "other"]);
    faults.fail_at(FsOp::SyncDir, root.join("active"), Fault::Eio);
    let claimed = heir.claim(&["k"]).unwrap();
    faults.disarm();
    assert!(claimed.tasks.is_empty(), "{claimed:?}");
    assert_eq!(claimed.missed.len(), 1, "{claimed:?}");
    let stored = dead.get(&task.id).unwrap().unwrap();
    assert_eq!(
        (stored.owner.as_deref(), stored.epoch),
        (Some("heir"), 2),
        "the claim's version stands"
    );
    // Another's write over it (an unfenced update keeps the owner) makes
    // it no less a failed claim's.
    let update = TaskUpdate::new().status_message("seen");
    assert!(other.update(&task.id, update).unwrap().is_applied());
    clock.advance(taskstore::DEFAULT_LEASE / 2);
    assert_eq!(heir.renew_leases().unwrap(), 0, "not renewed by its pass");
    let of = heir.renew_leases_of(std::slice::from_ref(&task.id));
    assert!(
        matches!(of[..], [Err(Error::NotFound { .. })]),
        "nor by name: {of:?}"
    );
    clock.advance(taskstore::DEFAULT_LEASE / 2);
    assert_eq!(heir.renew_leases().unwrap(), 0, "nor once its lease lapsed");
    let taken = other.claim(&["k"]).unwrap();
    assert_eq!(taken.tasks.len(), 1, "{taken:?}");
    assert_eq!(taken.tasks[0].epoch, 3);
    // Left to lapse again, the same handle claims it, and renews it.
    clock.advance(taskstore::DEFAULT_LEASE);
    let again = heir.claim(&["k"]).unwrap();
    assert_eq!(again.tasks.len(), 1, "{again:?}");
    clock.advance(taskstore::DEFAULT_LEASE / 2);
    assert_eq!(
        heir.renew_leases().unwrap(),
        1,
        "a claim that landed is renewed"
    );
}

/// A claim that failed before its write stood (the rename of the claimed
/// version fails) leaves the task as it was; the same handle's next claim
/// of it, which writes the same revision and epoch, lands and is renewed
/// as any claim. (Kept as a failed claim's version, it would have been
/// left to lapse.)
#[test]
fn a_claim_after_a_failed_claim_of_the_same_task_is_renewed() {
    let dir = tempdir();
    let root = dir.path().join("store");
    let (task, clock, faults, [dead, heir]) = an_orphan_and(&root, ["dead", "heir"]);
    let path = root.join("active").join(format!("{}.json", task.id));
    faults.fail_at(FsOp::Rename, &path, Fault::Eio);
    let failed = heir.claim(&["k"]).unwrap();
    faults.disarm();
    assert_eq!(failed.missed.len(), 1, "{failed:?}");
    assert_eq!(dead.get(&task.id).unwrap(), Some(task.clone()), "as it was");
    clock.advance(Duration::from_secs(1));
    let claimed = heir.claim(&["k"]).unwrap();
    assert_eq!(claimed.tasks.len(), 1, "{claimed:?}");
    assert_eq!(claimed.tasks[0].epoch, 2);
    clock.advance(taskstore::DEFAULT_LEASE / 2);
    assert_eq!(
        heir.renew_leases().unwrap(),
        1,
        "the claim that landed is renewed"
    );
}

/// Renewing the leases of many tasks at once (`renew_leases_of`, what the
/// MCP manager's watch calls) makes them durable with one fsync of
/// `active/`, not one each: a manager renewing thousands of leases one by
/// one let the last of them lapse before it got to them. Shown on the
/// calls the store makes, for a batch large enough that its files are
/// written by several workers at once.
#[test]
fn renewing_many_leases_at_once_makes_them_durable_together() {
    use taskstore::FsEvent;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let recorder = taskstore::Recorder::new();
    let store = recorded(dir.path(), &clock, &recorder);
    let ids: Vec<TaskId> = (0..600)
        .map(|_| store.create(NewTask::new()).unwrap().id)
        .collect();
    clock.advance(Duration::from_secs(5));
    let from = recorder.len();
    let renewed = store.renew_leases_of(&ids);
    // One answer per id, in the order given, each that task's renewal.
    assert_eq!(renewed.len(), ids.len());
    for (id, result) in ids.iter().zip(&renewed) {
        assert!(
            matches!(result, Ok(t) if t.is_applied() && &t.task().id == id),
            "{id}: {result:?}"
        );
    }
    let syncs = |from: usize| {
        recorder.events()[from..]
            .iter()
            .filter(|e| matches!(e, FsEvent::SyncDir { path } if path.ends_with("active")))
            .count()
    };
    assert_eq!(syncs(from), 1, "one fsync of active/ for 600 renewals");
    let fresh = recorded(dir.path(), &clock, &taskstore::Recorder::new());
    for id in &ids {
        let task = fresh.get(id).unwrap().unwrap();
        assert_eq!(
            (task.lease_expires_at, task.revision),
            (
                Some(T0 + Duration::from_secs(5) + taskstore::DEFAULT_LEASE),
                2
            ),
            "{id}"
        );
    }
    // One at a time, each is made durable on its own.
    let from = recorder.len();
    for id in &ids {
        assert!(store.renew_lease(id).unwrap().is_applied());
    }
    assert_eq!(syncs(from), ids.len());
}

/// A task a reap (or a sweep, or a claim) could not handle is said in the
/// log, with its id and the error, whatever the caller keeps of the pass:
/// `reap_orphans`, which the MCP manager's loop calls, returns the tasks
/// reaped alone. (Nothing was said: the pass returned `Ok` with fewer
/// tasks, and the failures were gone.)
#[test]
fn a_task_a_reap_could_not_handle_is_said_with_its_id() {
    use taskstore::FsOp;
    let dir = tempdir();
    let root = dir.path().join("store");
    let (store, clock, faults) = faulted(&root);
    let owner = FileStore::builder(&root)
        .clock(Arc::new(clock.clone()))
        .open()
        .unwrap();
    let ids: Vec<TaskId> = (0..2)
        .map(|_| owner.create(NewTask::new()).unwrap().id)
        .collect();
    clock.advance(Duration::from_secs(90));
    faults.fail_at(FsOp::SyncDir, root.join("done"), Fault::Eio);
    let logged = common::Logged::default();
    let reaped = tracing::subscriber::with_default(logged.clone(), || store.reap_orphans());
    faults.disarm();
    assert_eq!(reaped.unwrap().len(), 0, "neither reap was made durable");
    for id in &ids {
        assert!(
            logged
                .warnings()
                .iter()
                .any(|w| w.field("task") == Some(id.as_str()) && w.field("error").is_some()),
            "no warning names {id}: {:?}",
            logged.warnings()
        );
    }
}

/// A task whose create failed and could not be undone is no caller's: a
/// renewal of given leases renews it under no id it is given, given twice
/// or not, and a renewal of its lease alone does not either. (Given twice,
/// the second renewal renewed it; so did `renew_lease`.)
#[test]
fn a_failed_creates_task_is_renewed_under_no_repeated_id() {
    use taskstore::FsOp;
    let dir = tempdir();
    let root = dir.path().join("store");
    let (store, _clock, faults) = faulted(&root);
    let id = TaskId::parse("made-and-failed").unwrap();
    let file = root.join("active").join("made-and-failed.json");
    faults.fail_at(FsOp::SyncDir, root.join("active"), Fault::Eio);
    faults.fail_at(FsOp::Remove, &file, Fault::Eio);
    assert!(store.create(NewTask::new().id(id.clone())).is_err());
    faults.disarm();
    // Still not removable: the task stays, kept from renewal.
    faults.fail_at(FsOp::Remove, &file, Fault::Eio);
    let mut renewed = store.renew_leases_of(&[id.clone(), id.clone()]);
    renewed.push(store.renew_lease(&id));
    faults.disarm();
    for result in renewed {
        assert!(
            matches!(result, Err(taskstore::Error::NotFound { .. })),
            "{result:?}"
        );
    }
}

/// A task whose create failed and could not be undone is no caller's, and a
/// renewal of every lease the handle holds passes it by as well: it keeps
/// the lease it was made with, and lapses on time. (`TaskStore::create`:
/// the store removes what the failed write may have stored "so that no task
/// is left"; what it cannot remove yet is never renewed.)
#[test]
fn a_failed_creates_task_is_not_renewed_by_a_renewal_of_every_lease() {
    use taskstore::FsOp;
    let dir = tempdir();
    let root = dir.path().join("store");
    let (store, clock, faults) = faulted(&root);
    let id = TaskId::parse("made-and-failed").unwrap();
    let file = root.join("active").join("made-and-failed.json");
    faults.fail_at(FsOp::SyncDir, root.join("active"), Fault::Eio);
    faults.fail_at(FsOp::Remove, &file, Fault::Eio);
    assert!(store.create(NewTask::new().id(id.clone())).is_err());
    faults.disarm();
    let left = store
        .get(&id)
        .unwrap()
        .expect("its removal failed: the task is still stored");
    clock.advance(Duration::from_secs(5));
    // Still not removable: the pass keeps it, and renews no lease of it.
    faults.fail_at(FsOp::Remove, &file, Fault::Eio);
    let renewed = store.renew_leases();
    faults.disarm();
    assert_eq!(renewed.unwrap(), 0, "no task of a caller's to renew");
    assert_eq!(
        store.get(&id).unwrap(),
        Some(left),
        "its lease was not renewed"
    );
}
