//! Batch moves held between their halves: a task made again under their id, a
//! move another handle finished, a stripe a stopped process took, and the
//! checks and readers that wait for batches or go on without their lock.

use super::*;

/// A batch's terminal moves (a reap failing two orphans) let go of each
/// task's lock between staging a move and settling it. If another handle
/// deletes one of the tasks and makes it again under its id meanwhile, the
/// new file may get the old one's inode number (ext4 hands it back): the
/// settle must still tell it from the file it moved, and leave it. (It
/// removed it from `active/`: a create the store had acknowledged, lost.)
#[test]
fn a_batch_move_never_removes_a_task_made_again_under_its_id_meanwhile() {
    use std::os::unix::fs::MetadataExt;
    for ttl in [None, Some(Duration::from_secs(3600))] {
        let dir = tempfile::tempdir().unwrap();
        let root = &dir.path().join("store");
        let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
        let faults = FaultInjector::new();
        let reaper = open(root, &clock, Some(&faults));
        let owner = open(root, &clock, None);
        let new = |id: &str| {
            let new = NewTask::new().id(TaskId::parse(id).unwrap());
            match ttl {
                Some(ttl) => new.ttl(ttl),
                None => new,
            }
        };
        let x = owner.create(new("x")).unwrap().id;
        owner.create(new("y")).unwrap();
        // Past both leases: both are orphans, failed in one batch.
        clock.advance(Duration::from_secs(90));
        let held = faults.pause_at(FsOp::SyncDir, root.join("done"));
        let file = root.join("active").join("x.json");
        let (reused, again) = std::thread::scope(|s| {
            let held = held;
            let reaping = s.spawn(|| reaper.reap().unwrap());
            assert!(
                held.wait_reached(|| !reaping.is_finished()),
                "the reap never reached its fsync of done/"
            );
            let old = std::fs::metadata(&file).unwrap().ino();
            // Made again until its file has the moved file's inode number.
            // A new file takes the lowest free number of its group (ext4):
            // filler tasks take the lower ones the deletes free.
            assert!(owner.delete(&x).unwrap());
            let mut again = owner.create(new("x")).unwrap();
            for filler in 0..500 {
                if std::fs::metadata(&file).unwrap().ino() == old {
                    break;
                }
                assert!(owner.delete(&x).unwrap());
                owner
                    .create(NewTask::new().id(TaskId::parse(&format!("f{filler}")).unwrap()))
                    .unwrap();
                again = owner.create(new("x")).unwrap();
            }
            let reused = std::fs::metadata(&file).unwrap().ino() == old;
            held.resume();
            reaping.join().unwrap();
            (reused, again)
        });
        if !reused {
            eprintln!(
                "paused_races: the file system gave the new file another inode \
                 number; the race this test guards did not arise (ttl {ttl:?})"
            );
        }
        assert_eq!(
            owner.get(&x).unwrap(),
            Some(again.clone()),
            "the task made again is there (ttl {ttl:?})"
        );
        assert_eq!(
            open(root, &clock, None).get(&x).unwrap(),
            Some(again),
            "for a new handle too (ttl {ttl:?})"
        );
    }
}

/// `verify` beside a batch between its halves waits for the batch to end
/// and reports a clean store, as `repair` does (with nothing to repair).
/// The batches: a reap failing two orphans, held at its fsync of `done/`,
/// when both tasks have names in `active/` and `done/` and the reap holds
/// neither's stripe; a sweep that has removed an expired finished task's
/// file, held before it removes the task's `expiring/` entry (stale until
/// then), through its scan's batches and through its pass over the index
/// (a large pass), and a listing that met two expired tasks and deleted
/// them (one task alone is deleted under its lock to the end).
/// Told not to wait, `verify` reports what it saw, and says that batches
/// were under way. (It reported interrupted moves and a stale entry, another handle's
/// work in progress, and nothing said so.)
#[test]
fn verify_beside_a_batch_between_its_halves_waits_for_it() {
    use taskstore::FileCheck;
    for batch in ["reap", "sweep", "large sweep", "list"] {
        let dir = tempfile::tempdir().unwrap();
        let root = &dir.path().join("store");
        let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
        let faults = FaultInjector::new();
        let worker = FileStore::builder(root)
            .clock(Arc::new(clock.clone()))
            .fault_injector(faults.clone())
            .large_passes_from(if batch == "large sweep" { 1 } else { 256 })
            .open()
            .unwrap();
        let owner = open(root, &clock, None);
        let held = if batch == "reap" {
            for id in ["x", "y"] {
                owner
                    .create(NewTask::new().id(TaskId::parse(id).unwrap()))
                    .unwrap();
            }
            // Past both leases: both are orphans, failed in one batch.
            clock.advance(Duration::from_secs(90));
            faults.pause_at(FsOp::SyncDir, root.join("done"))
        } else {
            let ttl = Duration::from_secs(60);
            let finished =
                common::finished_with_ttl(&owner, if batch == "list" { 2 } else { 1 }, ttl).len();
            clock.advance(ttl * 2);
            let mut entries: Vec<_> = std::fs::read_dir(root.join("expiring"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            entries.sort();
            assert_eq!(entries.len(), finished, "{entries:?}");
            faults.pause_at(FsOp::Remove, &entries[0])
        };
        std::thread::scope(|s| {
            let held = held;
            let working = s.spawn(|| match batch {
                "reap" => assert_eq!(worker.reap().unwrap().tasks.len(), 2),
                "list" => assert!(worker.list(&ListQuery::all()).unwrap().tasks.is_empty()),
                _ => assert_eq!(worker.sweep().unwrap().deleted, 1),
            });
            assert!(
                held.wait_reached(|| !working.is_finished()),
                "the {batch} never reached its pause"
            );
            let seen = FileCheck::open(root)
                .unwrap()
                .wait_for_batches(Duration::ZERO)
                .verify()
                .unwrap();
            assert!(
                seen.under_way && !seen.is_clean(),
                "{batch}: the state between the halves is seen, and said to be a batch's: {seen:?}"
            );
            let logged = common::Logged::default();
            let checking = s.spawn({
                let logged = logged.clone();
                move || {
                    tracing::subscriber::with_default(logged, || {
                        let check = FileCheck::open(root).unwrap();
                        (check.verify().unwrap(), check.repair(false).unwrap())
                    })
                }
            });
            common::wait_until("the check to wait for the batch, or end", || {
                checking.is_finished()
                    || logged.events().iter().any(|e| {
                        e.field("message")
                            .is_some_and(|m| m.contains("waiting for batches"))
                    })
            });
            held.resume();
            working.join().unwrap();
            let (report, repairs) = checking.join().unwrap();
            assert!(
                report.is_clean() && !report.under_way,
                "{batch}: verify judged the batch's work in progress: {report:?}"
            );
            assert!(
                repairs.repairs.is_empty() && !repairs.under_way,
                "{batch}: {repairs:?}"
            );
        });
    }
}

/// A batch move between its halves (a reap of tasks with a TTL, their
/// `expiring/` entries linked, their names in `done/` not yet) whose moves
/// another handle finishes meanwhile, without fsyncs (`Durability::Eventual`:
/// a cancel of a task it finds terminal in `active/` tidies it into
/// `done/`): the batch, which acknowledges the moves on the strength of
/// those `done/` names, makes `done/` durable itself before it returns.
/// (It fsynced only what it linked, so nothing: a power loss could take
/// the names in `done/` and the freed earlier versions with them.)
#[test]
fn a_batch_move_another_handle_finished_is_made_durable_before_it_is_acknowledged() {
    use taskstore::{Durability, FsEvent, Recorder};
    let dir = tempfile::tempdir().unwrap();
    let root = &dir.path().join("store");
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let faults = FaultInjector::new();
    let recorder = Recorder::new();
    let reaper = FileStore::builder(root)
        .clock(Arc::new(clock.clone()))
        .fault_injector(faults.clone())
        .recorder(recorder.clone())
        .open()
        .unwrap();
    let owner = open(root, &clock, None);
    let ttl = Duration::from_secs(3_600);
    let ids: Vec<TaskId> = (0..2)
        .map(|_| owner.create(NewTask::new().ttl(ttl)).unwrap().id)
        .collect();
    drop(owner);
    // Past the leases: both are orphans, failed in one batch.
    clock.advance(Duration::from_secs(90));
    let tidier = FileStore::builder(root)
        .clock(Arc::new(clock.clone()))
        .durability(Durability::Eventual)
        .open()
        .unwrap();
    let held = faults.pause_at(FsOp::SyncDir, root.join("expiring"));
    std::thread::scope(|s| {
        let reaping = s.spawn(|| reaper.reap().unwrap());
        assert!(
            held.wait_reached(|| !reaping.is_finished()),
            "the reap never reached its pause"
        );
        for id in &ids {
            // Failed by the reap's first half, found in `active/`.
            let cancel = tidier.cancel(id, None).unwrap();
            assert!(!cancel.is_applied(), "{cancel:?}");
            assert!(root.join("done").join(format!("{id}.json")).exists());
            assert!(!root.join("active").join(format!("{id}.json")).exists());
        }
        let from = recorder.len();
        held.resume();
        let reaped = reaping.join().unwrap();
        assert_eq!(reaped.tasks.len(), 2, "{reaped:?}");
        let done = root.join("done");
        let events = recorder.events();
        assert!(
            events[from..]
                .iter()
                .any(|e| matches!(e, FsEvent::SyncDir { path } if path == &done)),
            "done/ made durable before the reap returned: {:#?}",
            &events[from..]
        );
    });
}

/// A batch's terminal moves (a reap failing x, in stripe 7, and y, in
/// stripe 33) let go of each task's lock between staging a move and
/// settling it. If another process takes x's stripe in between and is
/// stopped while it holds it, the settle cannot take it again: y's move is
/// settled all the same, and both are reported reaped, x's final version
/// durable and read failed (in `done/` beside its name in `active/`, or, with
/// a TTL, where its name in `done/` waits for its `expiring/` entry to be
/// durable, in `active/` alone), its move left for whoever takes the stripe
/// next (the sweep's clean-up, here). (The settle returned at x's stripe:
/// both tasks were reported missed, "make durable the write of" failed,
/// and y was left unsettled too.)
#[cfg(target_os = "linux")]
#[test]
fn a_batch_move_whose_stripe_a_stopped_process_took_meanwhile_settles_the_rest() {
    let test =
        "batches::a_batch_move_whose_stripe_a_stopped_process_took_meanwhile_settles_the_rest";
    common::hold_locks_if_the_holder();
    for ttl in [None, Some(Duration::from_secs(3600))] {
        let dir = tempfile::tempdir().unwrap();
        let root = &dir.path().join("store");
        let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
        let faults = FaultInjector::new();
        let reaper = FileStore::builder(root)
            .clock(Arc::new(clock.clone()))
            .fault_injector(faults.clone())
            .stripe_wait(Duration::from_millis(300))
            .open()
            .unwrap();
        let owner = open(root, &clock, None);
        let [x, y] = [common::id_in_stripe("x", 7), common::id_in_stripe("y", 33)];
        for id in [&x, &y] {
            let new = NewTask::new().id(id.clone());
            owner
                .create(match ttl {
                    Some(ttl) => new.ttl(ttl),
                    None => new,
                })
                .unwrap();
        }
        // Past both leases: both are orphans, failed in one batch.
        clock.advance(Duration::from_secs(90));
        // The settle's first fsync: of `expiring/`, before the names in
        // `done/` it gives under the locks, or of `done/`, before the names
        // in `active/` it removes under them.
        let area = if ttl.is_some() { "expiring" } else { "done" };
        let held = faults.pause_at(FsOp::SyncDir, root.join(area));
        let lock = common::stripe_lock(root, x.as_str());
        let (reaped, mut holder) = std::thread::scope(|s| {
            let held = held;
            let reaping = s.spawn(|| reaper.reap().unwrap());
            assert!(
                held.wait_reached(|| !reaping.is_finished()),
                "the reap never reached its fsync of {area}/"
            );
            let holder = common::stopped_holding(test, dir.path(), &lock);
            held.resume();
            (reaping.join().unwrap(), holder)
        });
        let what = format!("ttl {ttl:?}");
        assert!(reaped.missed.is_empty(), "{what}: {:?}", reaped.missed);
        let mut ids: Vec<_> = reaped.tasks.iter().map(|t| &t.id).collect();
        ids.sort();
        assert_eq!(ids, [&x, &y], "{what}: both reaped");
        assert!(reaped.tasks.iter().all(|t| t.status == TaskStatus::Failed));
        let file = |area: &str, id: &TaskId| root.join(area).join(format!("{id}.json"));
        assert!(holder.is_stopped(), "{what}");
        // y settled; x where its stripe left it, read failed.
        assert!(file("done", &y).exists() && !file("active", &y).exists());
        assert!(file("active", &x).exists(), "{what}");
        assert_eq!(file("done", &x).exists(), ttl.is_none(), "{what}");
        for reader in [&reaper, &owner] {
            let read = reader.get(&x).unwrap().unwrap();
            assert_eq!(read.status, TaskStatus::Failed, "{what}");
        }
        holder.kill();
        let swept = reaper.sweep().unwrap();
        assert!(swept.cleaned >= 1, "{what}: x's move finished: {swept:?}");
        assert!(file("done", &x).exists() && !file("active", &x).exists());
        let fresh = open(root, &clock, None);
        for id in [&x, &y] {
            assert_eq!(fresh.get(id).unwrap().unwrap().status, TaskStatus::Failed);
        }
    }
}

/// A batch waits its `stripe_wait` once, its settle's waits included: a
/// reap failing a (stripe 7), x (stripe 33) and y (stripe 50), beside a
/// stopped process that holds a's stripe, stages x and y, waits for a its
/// whole `stripe_wait` (a is missed), and meets x's stripe taken by another
/// stopped process before its settle: the settle tries it once, without
/// waiting (the batch's one deadline has passed), leaves x's move as a
/// crash would leave it, and settles y. Counted at the file-system seam: a
/// wait in `flock` opens a descriptor of its own for the stripe's file.
/// (The settle made a pass of its own, and waited for x's stripe a whole
/// `stripe_wait` more: one descriptor opened for it.)
#[cfg(target_os = "linux")]
#[test]
fn a_batch_whose_wait_ran_out_tries_a_stripe_taken_before_its_settle_once() {
    let test = "batches::a_batch_whose_wait_ran_out_tries_a_stripe_taken_before_its_settle_once";
    common::hold_locks_if_the_holder();
    let dir = tempfile::tempdir().unwrap();
    let root = &dir.path().join("store");
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let faults = FaultInjector::new();
    let reaper = waiting_briefly(root, &clock, &faults).open().unwrap();
    let owner = open(root, &clock, None);
    let [a, x, y] = [
        common::id_in_stripe("a", 7),
        common::id_in_stripe("x", 33),
        common::id_in_stripe("y", 50),
    ];
    for id in [&a, &x, &y] {
        owner.create(NewTask::new().id(id.clone())).unwrap();
    }
    // Past every lease: all three are orphans, failed in one batch.
    clock.advance(Duration::from_secs(90));
    let [held_a, held_x] = [&a, &x].map(|id| common::stripe_lock(root, id.as_str()));
    let _holding_a = common::stopped_holding(test, dir.path(), &held_a);
    // The settle's first fsync: of `done/`, before the names in `active/`
    // it removes under the locks.
    let held = faults.pause_at(FsOp::SyncDir, root.join("done"));
    let (reaped, tries, waits, _holding_x) = std::thread::scope(|s| {
        let held = held;
        let reaping = s.spawn(|| reaper.reap().unwrap());
        assert!(
            held.wait_reached(|| !reaping.is_finished()),
            "the reap never reached its fsync of done/"
        );
        let holding_x = common::stopped_holding(test, dir.path(), &held_x);
        let tries = faults.count_at(FsOp::Lock, &held_x);
        let waits = faults.count_at(FsOp::Create, &held_x);
        held.resume();
        (reaping.join().unwrap(), tries, waits, holding_x)
    });
    let missed: Vec<_> = reaped.missed.iter().map(|m| &m.id).collect();
    assert_eq!(missed, [&a], "{reaped:?}");
    let mut ids: Vec<_> = reaped.tasks.iter().map(|t| &t.id).collect();
    ids.sort();
    assert_eq!(ids, [&x, &y], "{reaped:?}");
    assert_eq!(
        (tries.calls(), waits.calls()),
        (1, 0),
        "the settle's tries of x's stripe, and its waits for it"
    );
    let file = |area: &str, id: &TaskId| root.join(area).join(format!("{id}.json"));
    assert!(file("done", &y).exists() && !file("active", &y).exists());
    assert!(file("done", &x).exists() && file("active", &x).exists());
    assert_eq!(reaper.get(&x).unwrap().unwrap().status, TaskStatus::Failed);
}

/// A removal batch waits its `stripe_wait` once, its wait for the moves
/// of its finished tasks to be over included: a `remove_all` of a
/// (stripe 7) and x (stripe 33), both finished, beside a stopped process
/// that holds a's stripe, waits for a its whole `stripe_wait` before any
/// removal (a reports that error), and meets x's stripe taken by another
/// stopped process before it removes x: it tries it once, without
/// waiting (the batch's one deadline has passed), and x reports the
/// lock's error. Counted at the file-system seam, as
/// `a_batch_whose_wait_ran_out_tries_a_stripe_taken_before_its_settle_once`
/// counts. (The removals made a pass of their own, and waited for x's
/// stripe a whole `stripe_wait` more: one descriptor opened for it.)
#[cfg(target_os = "linux")]
#[test]
fn a_removal_batch_whose_wait_ran_out_tries_a_stripe_taken_before_its_removals_once() {
    use taskstore::backend::Backend;
    let test =
        "batches::a_removal_batch_whose_wait_ran_out_tries_a_stripe_taken_before_its_removals_once";
    common::hold_locks_if_the_holder();
    let dir = tempfile::tempdir().unwrap();
    let root = &dir.path().join("store");
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let faults = FaultInjector::new();
    let remover = waiting_briefly(root, &clock, &faults).open().unwrap();
    let [a, x] = [common::id_in_stripe("a", 7), common::id_in_stripe("x", 33)];
    let tasks: Vec<Task> = [&a, &x]
        .map(|id| {
            remover.create(NewTask::new().id(id.clone())).unwrap();
            remover.complete(id, json!(1)).unwrap().into_task()
        })
        .into();
    let [held_a, held_x] = [&a, &x].map(|id| common::stripe_lock(root, id.as_str()));
    let _holding_a = common::stopped_holding(test, dir.path(), &held_a);
    // The fsync of `active/` once the moves of the finished tasks whose
    // stripes it took are over, before any removal.
    let held = faults.pause_at(FsOp::SyncDir, root.join("active"));
    let (removed, tries, waits, _holding_x) = std::thread::scope(|s| {
        let held = held;
        let removing = s.spawn(|| remover.backend().remove_all(&tasks));
        assert!(
            held.wait_reached(|| !removing.is_finished()),
            "the removals never reached their fsync of active/"
        );
        let holding_x = common::stopped_holding(test, dir.path(), &held_x);
        let tries = faults.count_at(FsOp::Lock, &held_x);
        let waits = faults.count_at(FsOp::Create, &held_x);
        held.resume();
        (removing.join().unwrap(), tries, waits, holding_x)
    });
    let held_by = |result: &taskstore::Result<_>, lock: &Path| matches!(result, Err(e) if e.to_string().contains(&lock.display().to_string()));
    assert!(held_by(&removed[0], &held_a), "{removed:?}");
    assert!(held_by(&removed[1], &held_x), "{removed:?}");
    assert_eq!(
        (tries.calls(), waits.calls()),
        (1, 0),
        "the removals' tries of x's stripe, and their waits for it"
    );
    for id in [&a, &x] {
        assert_eq!(
            remover.get(id).unwrap().unwrap().status,
            TaskStatus::Completed
        );
    }
}

/// A check waits for batches only for what a batch may leave between its
/// halves. Beside a batch that never ends (the batches lock held shared by
/// hand), a store whose problems no batch makes (a corrupt file in
/// `active/`, a running task in `done/`, a finished task without its
/// `expiring/` entry) is judged without waiting, and the report does not
/// say that batches were under way. (It waited for them, `wait_for_batches`
/// long, and then said so of every problem.)
#[test]
fn a_check_waits_for_batches_only_for_what_a_batch_may_leave() {
    use taskstore::{FileCheck, ProblemKind};
    let dir = tempfile::tempdir().unwrap();
    let root = &dir.path().join("store");
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let store = open(root, &clock, None);
    let running = store.create(NewTask::new()).unwrap().id;
    let unindexed = common::finished_with_ttl(&store, 1, Duration::from_secs(600)).remove(0);
    drop(store);
    let name = |id: &TaskId| format!("{id}.json");
    std::fs::rename(
        root.join("active").join(name(&running)),
        root.join("done").join(name(&running)),
    )
    .unwrap();
    for entry in std::fs::read_dir(root.join("expiring")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    std::fs::write(root.join("active").join("garbage.json"), b"{ not json").unwrap();
    let batch = common::open_lock_file(&common::batches_lock(root));
    batch.lock_shared().unwrap();
    let report = FileCheck::open(root)
        .unwrap()
        .wait_for_batches(Duration::ZERO)
        .verify()
        .unwrap();
    let mut kinds: Vec<(String, &str)> = report
        .problems
        .iter()
        .map(|p| {
            (
                p.path.file_name().unwrap().to_string_lossy().into_owned(),
                p.kind.code(),
            )
        })
        .collect();
    kinds.sort();
    let mut expected = vec![
        ("garbage.json".to_owned(), "corrupt"),
        ("garbage.json".to_owned(), "mode"),
        (name(&running), "misplaced"),
        (name(&unindexed), "missing_index_entry"),
    ];
    expected.sort();
    assert_eq!(kinds, expected, "{report:?}");
    assert!(
        !report.under_way,
        "no problem a batch makes, so no wait for batches: {report:?}"
    );
    assert!(report.problems.iter().all(|p| !p.kind.may_be_under_way()));
    // A stale entry is one: then the check waits, and says the batch was
    // under way.
    let ghost = root.join("expiring").join("1.5000.ghost");
    std::fs::write(&ghost, b"x").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ghost, std::fs::Permissions::from_mode(0o600)).unwrap();
    let report = FileCheck::open(root)
        .unwrap()
        .wait_for_batches(Duration::ZERO)
        .verify()
        .unwrap();
    assert!(report.under_way, "{report:?}");
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.kind == ProblemKind::StaleIndexEntry && p.kind.may_be_under_way()),
        "{report:?}"
    );
}

/// A reader never waits for a check: while one holds the batches lock
/// exclusive (here, by hand), a listing that meets expired finished tasks
/// hides them and leaves their deletion to the sweep, instead of waiting
/// for the lock (a stopped `verify` would have stopped every listing that
/// met an expired task). One task alone is deleted under its own lock. A
/// lock file replaced under the handle is found again at its path.
#[test]
fn a_reader_leaves_expired_tasks_to_the_sweep_while_a_check_holds_the_batches_lock() {
    let dir = tempfile::tempdir().unwrap();
    let root = &dir.path().join("store");
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let store = open(root, &clock, None);
    let ttl = Duration::from_secs(60);
    let ids = common::finished_with_ttl(&store, 3, ttl);
    clock.advance(ttl * 2);
    let path = common::batches_lock(root);
    let check = common::open_lock_file(&path);
    check.lock().unwrap();
    assert!(store.list(&ListQuery::all()).unwrap().tasks.is_empty());
    let file = |id: &TaskId| root.join("done").join(format!("{id}.json"));
    assert!(
        ids.iter().all(|id| file(id).exists()),
        "the listing waited for the check, or went on without the lock"
    );
    assert_eq!(store.get(&ids[0]).unwrap(), None);
    assert!(!file(&ids[0]).exists(), "one task alone is deleted");
    check.unlock().unwrap();
    assert_eq!(store.sweep().unwrap().deleted, 2);

    // The lock file replaced under the handle (an older version's `repair`
    // sets it aside as a foreign name): the handle locks the file a check
    // locks, the one at the path, not the one it opened before.
    let more = common::finished_with_ttl(&store, 2, ttl);
    clock.advance(ttl * 2);
    std::fs::rename(&path, root.join("quarantine").join("batches.lock")).unwrap();
    let check = common::open_lock_file(&path);
    check.lock().unwrap();
    assert!(store.list(&ListQuery::all()).unwrap().tasks.is_empty());
    assert!(
        more.iter().all(|id| file(id).exists()),
        "the handle locked the file set aside"
    );
}

/// A reader does not wait behind another call's wait for the batches
/// lock either: while a check holds it exclusive (by hand) and a reap of
/// two orphans on the same handle waits for it (its tries seen at the
/// seam), a listing on that handle that meets two expired finished tasks
/// tries the lock once, hides them and leaves them to the sweep, and
/// returns while the reap still waits (its wait has not ended: it said
/// nothing of going on without the lock); the reap takes the lock once the
/// check lets go. (Were the handle's lock calls one at a time through a
/// wait, the listing would wait for the reap's whole bound.)
#[test]
fn a_reader_does_not_wait_behind_a_batch_waiting_for_a_check() {
    let dir = tempfile::tempdir().unwrap();
    let root = &dir.path().join("store");
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let faults = FaultInjector::new();
    let store = open(root, &clock, Some(&faults));
    let ttl = Duration::from_secs(60);
    let expired = common::finished_with_ttl(&store, 2, ttl);
    for id in ["x", "y"] {
        store
            .create(NewTask::new().id(TaskId::parse(id).unwrap()))
            .unwrap();
    }
    // Past the TTL and both leases.
    clock.advance(ttl * 2);
    let path = common::batches_lock(root);
    let check = common::open_lock_file(&path);
    check.lock().unwrap();
    let tries = faults.count_at(FsOp::Lock, &path);
    // The reap says on the log when its wait ends without the lock.
    let reaping_log = common::Logged::default();
    let gave_up = || reaping_log.warnings_of("goes on without it");
    std::thread::scope(|s| {
        let reaping = s.spawn(|| {
            tracing::subscriber::with_default(reaping_log.clone(), || store.reap().unwrap())
        });
        common::wait_until("the reap to wait for the batches lock", || {
            tries.calls() >= 2 || reaping.is_finished()
        });
        assert!(!reaping.is_finished(), "the reap waits for the check");
        let listed = store.list(&ListQuery::all()).unwrap();
        assert!(
            gave_up().is_empty(),
            "the listing returned only once the reap's wait had ended: {:?}",
            gave_up()
        );
        let ids: Vec<&str> = listed.tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids.len(), 2, "the orphans alone: {ids:?}");
        let file = |id: &TaskId| root.join("done").join(format!("{id}.json"));
        assert!(
            expired.iter().all(|id| file(id).exists()),
            "the listing left the expired tasks to the sweep"
        );
        check.unlock().unwrap();
        assert_eq!(reaping.join().unwrap().tasks.len(), 2);
    });
    assert!(
        gave_up().is_empty(),
        "the reap took the lock: {:?}",
        gave_up()
    );
    assert_eq!(store.sweep().unwrap().deleted, 2);
}

/// A batch does not wait for a check without bound: while the batches lock
/// is held exclusive and never let go (a `verify` stopped while it judges,
/// played here by hand), a reap of two orphans (a batch of terminal moves)
/// still fails them, after its bounded wait, and says on the log that it
/// went on without the lock. (Waiting without bound, it never returned.)
/// The next batch does not wait the bound again: it tries once and goes on,
/// without a second warning (each batch waited the whole bound, a sweep
/// once per chunk). A renewal of the same tasks, which moves none between
/// areas, does not wait for the check at all.
#[test]
fn a_batch_goes_on_without_the_lock_a_stopped_check_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let root = &dir.path().join("store");
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let reaper = open(root, &clock, None);
    for id in ["x", "y"] {
        reaper
            .create(NewTask::new().id(TaskId::parse(id).unwrap()))
            .unwrap();
    }
    // Past both leases: both are orphans, failed in one batch.
    clock.advance(Duration::from_secs(90));
    let check = common::open_lock_file(&common::batches_lock(root));
    check.lock().unwrap();
    // A renewal batch moves no task between areas, and takes no hold: it
    // never waits for a check.
    let renewing = common::Logged::default();
    let renewed = tracing::subscriber::with_default(renewing.clone(), || {
        reaper.renew_leases_of(&[TaskId::parse("x").unwrap(), TaskId::parse("y").unwrap()])
    });
    assert!(renewed.iter().all(Result::is_ok), "{renewed:?}");
    assert!(renewing.warnings().is_empty(), "{:?}", renewing.warnings());
    clock.advance(Duration::from_secs(90));
    let logged = common::Logged::default();
    let reaped = std::thread::scope(|s| {
        let reaping = s
            .spawn(|| tracing::subscriber::with_default(logged.clone(), || reaper.reap().unwrap()));
        common::wait_until("the reap to end beside a check that never lets go", || {
            reaping.is_finished()
        });
        reaping.join().unwrap()
    });
    assert_eq!(reaped.tasks.len(), 2);
    let went_on = |logged: &common::Logged| {
        logged
            .warnings()
            .iter()
            .filter(|w| {
                w.field("message")
                    .is_some_and(|m| m.contains("goes on without it"))
            })
            .count()
    };
    assert_eq!(went_on(&logged), 1, "{:?}", logged.warnings());
    // Two more orphans, and another batch beside the same check.
    for id in ["z", "w"] {
        reaper
            .create(NewTask::new().id(TaskId::parse(id).unwrap()))
            .unwrap();
    }
    clock.advance(Duration::from_secs(90));
    let again = common::Logged::default();
    let reaped = tracing::subscriber::with_default(again.clone(), || reaper.reap().unwrap());
    assert_eq!(reaped.tasks.len(), 2);
    assert_eq!(went_on(&again), 0, "waited again: {:?}", again.warnings());
}

/// `repair` finishes a real interrupted move once the batch it waited for
/// has ended: a completion whose link into `done/` failed at the device
/// leaves the task's terminal version in `active/` (an interrupted move, a
/// state a batch also leaves between its halves); while a batch of another
/// handle holds the batches lock (shared, by hand), `repair` waits for it,
/// and once it ends finishes the move (`finish_move`, done, nothing said
/// to be under way): the task is in `done/` alone, completed.
#[test]
fn repair_finishes_an_interrupted_move_after_waiting_for_a_batch() {
    use taskstore::{Fault, FileCheck, RepairAction, RepairOutcome};
    let dir = tempfile::tempdir().unwrap();
    let root = &dir.path().join("store");
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let faults = FaultInjector::new();
    let store = open(root, &clock, Some(&faults));
    let id = TaskId::parse("x").unwrap();
    store.create(NewTask::new().id(id.clone())).unwrap();
    faults.fail_at(FsOp::Link, root.join("done").join("x.json"), Fault::Eio);
    store
        .complete(&id, json!("yes"))
        .expect_err("the move into done/ failed");
    faults.disarm();
    drop(store);
    assert_eq!(
        common::unmoved(root),
        ["x.json"],
        "the move was interrupted"
    );
    let batch = common::open_lock_file(&common::batches_lock(root));
    batch.lock_shared().unwrap();
    let waiting = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let check = FileCheck::open(root).unwrap().on_batch_wait({
        let waiting = Arc::clone(&waiting);
        move |_, _| waiting.store(true, std::sync::atomic::Ordering::SeqCst)
    });
    std::thread::scope(|s| {
        let repairing = s.spawn(|| check.repair(false).unwrap());
        common::wait_until("the repair to wait for the batch, or end", || {
            waiting.load(std::sync::atomic::Ordering::SeqCst) || repairing.is_finished()
        });
        assert!(!repairing.is_finished(), "the repair waits for the batch");
        batch.unlock().unwrap();
        let repairs = repairing.join().unwrap();
        assert!(!repairs.under_way, "{repairs:?}");
        let actions: Vec<_> = repairs
            .repairs
            .iter()
            .map(|r| (r.action.clone(), r.outcome.clone()))
            .collect();
        assert_eq!(
            actions,
            [(RepairAction::FinishMove, RepairOutcome::Done)],
            "{repairs:?}"
        );
    });
    assert!(common::files_in(root, "active").is_empty());
    assert_eq!(common::files_in(root, "done"), ["x.json"]);
    let store = open(root, &clock, None);
    assert_eq!(
        store.get(&id).unwrap().unwrap().status,
        TaskStatus::Completed
    );
    assert!(FileCheck::open(root).unwrap().verify().unwrap().is_clean());
}
