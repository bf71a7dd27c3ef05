//! Opens racing: beside another handle's compaction, a marker given back, an
//! older store moved by another open, two opens of a new store.

use super::*;

/// An open beside another handle takes its share of the store before it
/// opens the areas: an open alone meanwhile (another handle gone between)
/// cannot compact a directory into a new one under it. (It took it after:
/// held between its areas while the other handle closed and a third opened
/// alone and compacted `active/`, it went on with the old, removed
/// directory, and found no running task, nor could create one.)
#[test]
fn an_open_beside_another_handle_is_never_left_with_a_compacted_away_area() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let first = FileStore::builder(root)
        .clock(Arc::new(clock.clone()))
        .durability(taskstore::Durability::Eventual)
        .max_active(100_000)
        .open()
        .unwrap();
    // `active/` grows past what an open alone compacts, then empties.
    let tasks: Vec<Task> = (0..6_000)
        .map(|_| first.create(NewTask::new()).unwrap())
        .collect();
    let (kept, gone) = tasks.split_last().unwrap();
    for task in gone {
        assert!(first.delete(&task.id).unwrap());
    }
    let active = root.join("active");
    if std::fs::metadata(&active)
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.size()
        })
        .unwrap()
        < 64 * 1024
    {
        eprintln!("paused_races: this file system shrinks directories; nothing to compact");
        return;
    }
    let faults = FaultInjector::new();
    let held = faults.pause_at(FsOp::Open, root.join("tmp"));
    let opened = std::thread::scope(|s| {
        let held = held;
        let opening = s.spawn(|| open(root, &clock, Some(&faults)));
        assert!(
            held.wait_reached(|| !opening.is_finished()),
            "the open never reached tmp/"
        );
        // The first handle goes, and another opens, alone if it can.
        drop(first);
        let third = open(root, &clock, None);
        held.resume();
        let opened = opening.join().unwrap();
        assert_eq!(third.get(&kept.id).unwrap().as_ref(), Some(kept));
        opened
    });
    assert_eq!(opened.get(&kept.id).unwrap().as_ref(), Some(kept));
    let listed = opened.list(&ListQuery::active()).unwrap().tasks;
    assert_eq!(listed, std::slice::from_ref(kept));
    opened.create(NewTask::new()).unwrap();
}

/// An open that took a store for one of format 1 that lost its marker, and
/// gives it its marker back, while another open moved the store meanwhile
/// and still has it open: the marker of format 2 stands (it is linked into
/// place only where there is none), so this open opens beside the other
/// at once. (Written over it, the marker of format 1 would have this open
/// wait to move the store again until the other closed it.)
#[test]
fn a_marker_given_back_never_replaces_one_another_open_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let root = &dir.path().join("store");
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    drop(open(root, &clock, None));
    common::make_format_1(root);
    std::fs::remove_file(root.join("taskstore.json")).unwrap();
    let faults = FaultInjector::new();
    // After it read the root (no marker, `done/` without `expiring/`).
    let listed = faults.pause_at(FsOp::CreateDir, root.join("active"));
    std::thread::scope(|s| {
        let late = s.spawn(|| open(root, &clock, Some(&faults)));
        assert!(
            listed.wait_reached(|| !late.is_finished()),
            "the open never got past its reading of the root"
        );
        let mover = open(root, &clock, None);
        let moved = std::fs::read_to_string(root.join("taskstore.json")).unwrap();
        assert!(moved.contains("\"format\":2"), "{moved}");
        listed.resume();
        let (tx, rx) = std::sync::mpsc::channel();
        s.spawn(move || tx.send(late.join().is_ok()).unwrap());
        assert_eq!(
            rx.recv_timeout(common::HANG),
            Ok(true),
            "the late open waited for the one that moved the store"
        );
        let marker = std::fs::read_to_string(root.join("taskstore.json")).unwrap();
        assert!(marker.contains("\"format\":2"), "{marker}");
        drop(mover);
    });
}

/// Two processes of this version open a store of format 1 at once (a
/// rolling upgrade): the second reads format 1 and waits to move it, while
/// the first moves it and keeps the store open. The second must then open
/// beside the first, not wait for it to close (it waited for the lock
/// exclusive, which the first holds shared for its life), and must not
/// move the store a second time.
#[test]
fn an_open_waiting_to_move_an_older_store_opens_once_another_has_moved_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let task = {
        let store = open(root, &clock, None);
        let task = store.create(NewTask::new()).unwrap();
        store.complete(&task.id, json!(1)).unwrap().into_task()
    };
    common::make_format_1(root);
    let faults = FaultInjector::new();
    // After it has read the marker (format 1), before it takes the lock.
    let held = faults.pause_at(FsOp::Lock, root.join("locks").join("handles.lock"));
    std::thread::scope(|s| {
        let held = held;
        let second = s.spawn(|| open(root, &clock, Some(&faults)));
        assert!(
            held.wait_reached(|| !second.is_finished()),
            "the second open never reached the lock"
        );
        let first = open(root, &clock, None);
        let marker = std::fs::read_to_string(root.join("taskstore.json")).unwrap();
        assert!(marker.contains("\"format\":2"), "{marker}");
        held.resume();
        // While the first is open.
        common::wait_until("the second open, beside the first", || second.is_finished());
        let second = second.join().unwrap();
        assert_eq!(second.get(&task.id).unwrap(), Some(task.clone()));
        assert_eq!(first.get(&task.id).unwrap(), Some(task.clone()));
        second.create(NewTask::new()).unwrap();
        assert_eq!(first.list(&ListQuery::all()).unwrap().tasks.len(), 2);
    });
}

/// Two opens of a new store at once, the second reading the root while the
/// first is making the store's directories: the second must not take the
/// half-made store for one of format 1 that lost its marker (`done/`
/// without `expiring/`), give it a marker of format 1, and so make the
/// first refuse it ("format 1 was not moved to format 2"). Both open, and
/// the marker says format 2. (`expiring/` is made before `done/` now.)
#[test]
fn two_opens_of_a_new_store_at_once_both_open_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = &dir.path().join("store");
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let (first, second) = (FaultInjector::new(), FaultInjector::new());
    // The first stops as it makes `expiring/`; the second as it takes the
    // handles lock (after any marker it would write).
    let made = first.pause_at(FsOp::CreateDir, root.join("expiring"));
    let locking = second.pause_at(FsOp::Lock, root.join("locks").join("handles.lock"));
    std::thread::scope(|s| {
        let one = s.spawn(|| {
            FileStore::builder(root)
                .clock(Arc::new(clock.clone()))
                .fault_injector(first.clone())
                .open()
                .map(drop)
        });
        assert!(
            made.wait_reached(|| !one.is_finished()),
            "the first open never made expiring/"
        );
        let two = s.spawn(|| {
            FileStore::builder(root)
                .clock(Arc::new(clock.clone()))
                .fault_injector(second.clone())
                .open()
                .map(drop)
        });
        assert!(
            locking.wait_reached(|| !two.is_finished()),
            "the second open never took the handles lock"
        );
        made.resume();
        let one = one.join().unwrap();
        locking.resume();
        let two = two.join().unwrap();
        assert!(one.is_ok(), "the first open: {one:?}");
        assert!(two.is_ok(), "the second open: {two:?}");
    });
    let marker = std::fs::read_to_string(root.join("taskstore.json")).unwrap();
    assert!(marker.contains("\"format\":2"), "{marker}");
}
