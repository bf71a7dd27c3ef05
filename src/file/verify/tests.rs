//! Checks through a file-system seam that fails calls on purpose.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use super::FileCheck;
use crate::file::fs::{Fs, FsOp};
use crate::file::problem::ProblemKind;
use crate::file::repair::RepairOutcome;
use crate::file::{Fault, FaultInjector, FileStore, FsEvent, Recorder};
use crate::store::TaskStore;
use crate::task::NewTask;

/// A finished task's `expiring/` entry that is there but cannot be looked
/// at (`EIO` on its `stat`) is reported as the unreadable entry it is,
/// naming it, never as a finished task missing its entry (which a repair
/// would set out to give back). Before `index_is_missing` told `NotFound`
/// from other errors, the check reported `MissingIndexEntry` for it.
#[test]
fn an_index_entry_that_cannot_be_looked_at_is_unreadable_not_missing() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let task = store
        .create(NewTask::new().ttl(Duration::from_secs(3_600)))
        .unwrap();
    assert!(store.complete(&task.id, json!(1)).unwrap().is_applied());
    drop(store);
    let entries: Vec<PathBuf> = std::fs::read_dir(dir.path().join("expiring"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let [entry] = &entries[..] else {
        panic!("one entry: {entries:?}");
    };
    let faults = FaultInjector::new();
    faults.fail_at(FsOp::Stat, entry, Fault::Eio);
    let check = FileCheck::open_on(
        Fs::with_faults(Some(faults.clone())),
        dir.path(),
        Duration::from_secs(30),
        &|_| {},
    )
    .unwrap();
    let report = check.verify().unwrap();
    assert!(
        faults
            .fired()
            .iter()
            .any(|(op, path)| *op == FsOp::Stat && path == entry),
        "the fault fired"
    );
    let problems: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    assert!(
        !report
            .problems
            .iter()
            .any(|p| matches!(p.kind, ProblemKind::MissingIndexEntry)),
        "an entry that cannot be looked at is not missing: {problems:#?}"
    );
    assert!(
        report.problems.iter().any(|p| &p.path == entry
            && p.id.as_ref() == Some(&task.id)
            && matches!(&p.kind, ProblemKind::Unreadable { error } if error.contains("os error 5"))),
        "the entry is reported unreadable, with its error: {problems:#?}"
    );
}

/// A repair of many dead writers' temp files settles once: `active/`,
/// `done/` and `expiring/` are each fsynced once, after every temp file's
/// stripe lock was seen free and before the first removal, as an open's
/// clean-up does (`recovery::clean_temp_files`), not once per temp file
/// (20 temp files made 60 fsyncs). Every temp file is removed, and each
/// removal comes after that settle (a temp file may be a park).
#[test]
fn a_repair_of_many_dead_temp_files_settles_once_before_it_removes_them() {
    const TEMPS: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let store = FileStore::open(&root).unwrap();
    let task = store.create(NewTask::new()).unwrap();
    drop(store);
    let tmp = root.join("tmp");
    for i in 0..TEMPS {
        let name = format!("{}.999999999.{i}.tmp", task.id);
        std::fs::write(tmp.join(name), b"{\"format\":1,\"task\":{").unwrap();
    }
    let recorder = Recorder::new();
    let check = FileCheck::open_on(
        Fs::with_faults(None).recording(Some(recorder.clone())),
        &root,
        Duration::from_secs(30),
        &|_| {},
    )
    .unwrap();
    let repairs = check.repair(false).unwrap();
    let temps: Vec<&crate::file::repair::Repair> = repairs
        .repairs
        .iter()
        .filter(|r| matches!(r.problem.kind, ProblemKind::DeadTemp))
        .collect();
    assert_eq!(temps.len(), TEMPS, "{repairs:#?}");
    assert!(
        temps.iter().all(|r| r.outcome == RepairOutcome::Done),
        "{repairs:#?}"
    );
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "every one removed"
    );
    let events = recorder.events();
    let synced = |area: &str| -> Vec<usize> {
        let path = root.join(area);
        (0..events.len())
            .filter(|&i| matches!(&events[i], FsEvent::SyncDir { path: p } if *p == path))
            .collect()
    };
    let removed: Vec<usize> = (0..events.len())
        .filter(|&i| matches!(&events[i], FsEvent::Remove { path } if path.starts_with(&tmp)))
        .collect();
    assert_eq!(removed.len(), TEMPS, "{events:#?}");
    for area in ["active", "done", "expiring"] {
        let synced = synced(area);
        assert_eq!(synced.len(), 1, "{area}/ fsynced once: {synced:?}");
        assert!(
            synced[0] < removed[0],
            "{area}/ is durable (call {}) before the first removal (call {})",
            synced[0],
            removed[0]
        );
    }
}

/// `Repairs::under_way` set by a repair's own wait: a check that judged an
/// interrupted move with no batch under way (its own wait for batches
/// took the lock at once) finds one under way when it comes to finish the
/// move (the batches lock taken shared, by hand, between the two, at the
/// seam); the repair's wait runs out, the move is left for a later run
/// ("run repair again") and the repairs say batches were under way. A run
/// with nothing under way then finishes it.
#[test]
fn a_repair_whose_own_wait_for_batches_runs_out_says_so_and_leaves_the_move() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use crate::file::repair::RepairAction;

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let faults = FaultInjector::new();
    let store = FileStore::builder(&root)
        .fault_injector(faults.clone())
        .open()
        .unwrap();
    let task = store.create(NewTask::new()).unwrap();
    faults.fail_at(
        FsOp::Link,
        root.join("done").join(format!("{}.json", task.id)),
        Fault::Eio,
    );
    store
        .complete(&task.id, json!(1))
        .expect_err("the move into done/ failed");
    drop(store);
    let batches = root.join("locks").join("batches.lock");
    let seam = FaultInjector::new();
    let check = FileCheck::open_on(
        Fs::with_faults(Some(seam.clone())),
        &root,
        Duration::ZERO,
        &|_| {},
    )
    .unwrap()
    .wait_for_batches(Duration::ZERO);
    // Armed once the check has judged (its last tick): the next try of the
    // batches lock is the repair's own.
    let pause = Arc::new(Mutex::new(None));
    let armed = AtomicBool::new(false);
    let repairs = std::thread::scope(|s| {
        let repairing = s.spawn(|| {
            check.repair_with(false, &mut |done, total| {
                if done == total && !armed.swap(true, Ordering::SeqCst) {
                    *pause.lock().unwrap() = Some(seam.pause_at(FsOp::Lock, &batches));
                }
            })
        });
        while !armed.load(Ordering::SeqCst) && !repairing.is_finished() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let held = pause
            .lock()
            .unwrap()
            .take()
            .expect("the check judged, and armed the pause");
        assert!(
            held.wait_reached(|| !repairing.is_finished()),
            "the repair never tried the batches lock again"
        );
        let batch = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&batches)
            .unwrap();
        batch
            .try_lock_shared()
            .expect("no check holds the lock now");
        held.resume();
        let repairs = repairing.join().unwrap().unwrap();
        drop(batch);
        repairs
    });
    assert!(repairs.under_way, "{repairs:#?}");
    let [repair] = &repairs.repairs[..] else {
        panic!("one repair: {repairs:#?}");
    };
    assert_eq!(repair.action, RepairAction::FinishMove);
    assert!(
        matches!(&repair.outcome, RepairOutcome::Skipped { reason } if reason.contains("run repair again")),
        "{repairs:#?}"
    );
    let again = FileCheck::open(&root).unwrap().repair(false).unwrap();
    assert!(!again.under_way, "{again:#?}");
    assert_eq!(again.fixed(), 1, "{again:#?}");
}
