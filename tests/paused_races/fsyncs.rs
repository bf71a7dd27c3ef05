//! Another thread's failed fsync: a change or an index entry made before it is
//! never reported durable, and a stale entry's removal is made durable under
//! its task's lock.

use super::*;

/// A directory fsync that fails covers every change made to the directory
/// before it started, whichever thread's call ran it: those changes may be
/// lost (the kernel reports the error once, on the shared descriptor, and a
/// later fsync that succeeds proves nothing about them). A batch renewal
/// has written one task's new version (its rename into `active/` done) and
/// is held before its second task's rename; meanwhile a create on another
/// thread of the same handle runs an fsync of `active/` that fails. The
/// batch's own fsync, after, succeeds: it must still report the first
/// renewal failed, not durable. (It reported it renewed: its ticket for
/// the fsync was taken after the failure.)
#[test]
fn a_change_made_before_another_threads_failed_fsync_is_never_reported_durable() {
    use taskstore::{Error, Fault};
    let dir = tempfile::tempdir().unwrap();
    let root = &dir.path().join("store");
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let faults = FaultInjector::new();
    let store = open(root, &clock, Some(&faults));
    // Ids of different stripes: the create never waits for the held batch.
    let (x, y) = (TaskId::parse("x").unwrap(), TaskId::parse("y").unwrap());
    for id in [&x, &y] {
        store.create(NewTask::new().id(id.clone())).unwrap();
    }
    clock.advance(Duration::from_secs(5));
    let active = root.join("active");
    let held = faults.pause_at(FsOp::Rename, active.join("y.json"));
    let renewed = std::thread::scope(|s| {
        let held = held;
        let renewing = s.spawn(|| store.renew_leases_of(&[x.clone(), y.clone()]));
        assert!(
            held.wait_reached(|| !renewing.is_finished()),
            "the batch never reached its second rename"
        );
        faults.fail_at(FsOp::SyncDir, &active, Fault::Eio);
        let failed = store.create(NewTask::new().id(TaskId::parse("z").unwrap()));
        assert!(
            matches!(failed, Err(Error::Io { .. })),
            "the create's fsync of active/ failed: {failed:?}"
        );
        faults.disarm();
        held.resume();
        renewing.join().unwrap()
    });
    assert!(
        renewed[0].is_err(),
        "x's new version was renamed into active/ before an fsync of active/ \
         failed, yet its renewal was reported durable: {:?}",
        renewed[0]
    );
}

/// The same of `expiring/`: a batch of terminal moves (a reap failing two
/// orphans with a TTL) has given the first its `expiring/` entry and is
/// held before the second's rename; meanwhile a completion on another
/// thread of the same handle runs an fsync of `expiring/` that fails. The
/// batch's own fsync of `expiring/`, after, succeeds: the first orphan's
/// failure must still be reported missed, not reaped. (It was reported
/// reaped: `expiring/` was fsynced with no record of failures at all.)
#[test]
fn an_index_entry_made_before_another_threads_failed_fsync_is_never_reported_durable() {
    use taskstore::Fault;
    let dir = tempfile::tempdir().unwrap();
    let root = &dir.path().join("store");
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let faults = FaultInjector::new();
    let reaper = open(root, &clock, Some(&faults));
    let owner = open(root, &clock, None);
    let ttl = Duration::from_secs(3600);
    let new = |id: &str| NewTask::new().id(TaskId::parse(id).unwrap()).ttl(ttl);
    let x = owner.create(new("x")).unwrap().id;
    owner.create(new("y")).unwrap();
    // Past both leases: both are orphans, failed in one batch.
    clock.advance(Duration::from_secs(90));
    let z = reaper.create(new("z")).unwrap().id;
    let held = faults.pause_at(FsOp::Rename, root.join("active").join("y.json"));
    let reaped = std::thread::scope(|s| {
        let held = held;
        let reaping = s.spawn(|| reaper.reap().unwrap());
        assert!(
            held.wait_reached(|| !reaping.is_finished()),
            "the reap never reached its second rename"
        );
        faults.fail_at(FsOp::SyncDir, root.join("expiring"), Fault::Eio);
        let failed = reaper.complete(&z, json!("done"));
        assert!(failed.is_err(), "the completion's fsync failed: {failed:?}");
        faults.disarm();
        held.resume();
        reaping.join().unwrap()
    });
    assert!(
        !reaped.tasks.iter().any(|task| task.id == x),
        "x's expiring/ entry was made before an fsync of expiring/ failed, \
         yet its failure was reported reaped: {:?}",
        reaped.tasks
    );
    assert!(
        reaped.missed.iter().any(|missed| missed.id == x),
        "x is reported missed: {:?}",
        reaped.missed
    );
}

/// A stale `expiring/` entry (its file gone from `done/`) is removed after
/// an fsync of `done/` made under its task's lock: whatever removed the
/// file (another handle's sweep, which settles its removals at its end)
/// did so before that lock, so the fsync covers it, and a power loss
/// cannot bring the file back without its entry. (The fsync came before
/// the lock: a batch between its halves could finish its move, and another
/// sweep remove the file, in between, and the entry went with that removal
/// not durable.) Shown by holding the fsync and trying the task's lock.
#[test]
fn a_stale_entrys_removal_is_made_durable_under_its_tasks_lock() {
    let dir = tempfile::tempdir().unwrap();
    let root = &dir.path().join("store");
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let faults = FaultInjector::new();
    let sweeper = open(root, &clock, Some(&faults));
    let writer = open(root, &clock, None);
    let ttl = Duration::from_secs(60);
    let id = common::finished_with_ttl(&writer, 1, ttl).remove(0);
    drop(writer);
    // Its file gone from `done/` (by hand here): its entry is stale.
    std::fs::remove_file(root.join("done").join(format!("{id}.json"))).unwrap();
    clock.advance(ttl * 2);
    let held = faults.pause_at(FsOp::SyncDir, root.join("done"));
    let lock = common::open_lock_file(&common::stripe_lock(root, id.as_str()));
    std::thread::scope(|s| {
        let sweeping = s.spawn(|| sweeper.sweep().unwrap());
        assert!(
            held.wait_reached(|| !sweeping.is_finished()),
            "the sweep never made done/ durable"
        );
        let free = lock.try_lock().is_ok();
        if free {
            lock.unlock().unwrap();
        }
        held.resume();
        sweeping.join().unwrap();
        assert!(!free, "done/ was made durable without the task's lock");
    });
    assert_eq!(
        std::fs::read_dir(root.join("expiring")).unwrap().count(),
        0,
        "the stale entry is gone"
    );
}
