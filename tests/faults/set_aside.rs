//! Setting damaged files aside under failing I/O: the move reported with its
//! failure, shared fsyncs, an arrival not yet durable finished once by the next
//! listing, a damaged stale copy.

use super::*;

/// A corrupt finished task set aside takes its `expiring/` entry with it
/// only once its move is durable: first its name in `quarantine/` (a
/// link, made durable before its name in `done/` goes), then its leaving
/// `done/`, then the entry. Else, under a file system that orders nothing
/// between directories, a power loss could bring the file back without
/// its entry (no sweep would find it), or lose it from both directories.
#[test]
fn a_set_aside_finished_task_loses_its_entry_only_after_its_move_is_durable() {
    use taskstore::FsEvent;
    let dir = tempdir();
    let root = dir.path().join("store");
    let recorder = taskstore::Recorder::new();
    let store = FileStore::builder(&root)
        .clock(Arc::new(ManualClock::new(T0)))
        .recorder(recorder.clone())
        .open()
        .unwrap();
    let task = store
        .create(NewTask::new().ttl(Duration::from_secs(60)))
        .unwrap();
    assert!(store.complete(&task.id, json!(1)).unwrap().is_applied());
    // Damaged in place: the same inode, so the entry is still its name.
    let file = root.join("done").join(format!("{}.json", task.id));
    fs::write(&file, b"{\"format\":1,\"task\":").unwrap();

    let from = recorder.len();
    let page = store.list(&ListQuery::all()).unwrap();
    assert_eq!(page.skipped.len(), 1, "{:?}", page.skipped);
    assert_eq!(page.skipped[0].action, UnreadableAction::SetAside);
    assert!(!file.exists());
    assert_eq!(fs::read_dir(root.join("expiring")).unwrap().count(), 0);
    assert_eq!(fs::read_dir(root.join("quarantine")).unwrap().count(), 1);

    let events = recorder.events();
    let moved = first(
        &events,
        from,
        |e| matches!(e, FsEvent::Link { to, .. } if in_area(to, "quarantine")),
    );
    let quarantine_durable = first(&events, moved, synced("quarantine"));
    let left = first(&events, from, removed_from("done"));
    let done_durable = first(&events, left, synced("done"));
    let entry_removed = first(&events, from, removed_from("expiring"));
    assert!(
        quarantine_durable < left && done_durable < entry_removed,
        "linked in (call {moved}), durable in quarantine/ (call {quarantine_durable}) \
         before it leaves done/ (call {left}), gone from done/ durably (call \
         {done_durable}) before the entry goes (call {entry_removed})"
    );
}

/// A foreign name a listing moves into `quarantine/` whose leaving
/// `active/` cannot be made durable (the fsync of `active/` fails, its
/// arrival in `quarantine/` durable already) is reported as set aside,
/// with the failure: it was moved. (It was reported "left in place", kept
/// as a name left in `active/`, and forgotten by the next listing, which
/// found it gone: never said where it went.)
#[test]
fn a_set_aside_whose_fsync_fails_is_reported_as_moved_with_the_failure() {
    let dir = tempdir();
    let root = dir.path().join("store");
    let (store, _clock, faults) = faulted(&root);
    fs::write(root.join("active").join("notes.txt"), b"not a task").unwrap();
    faults.fail_at(FsOp::SyncDir, root.join("active"), Fault::Eio);
    let page = store.list(&ListQuery::active()).unwrap();
    faults.disarm();
    assert_eq!(page.skipped.len(), 1, "{:?}", page.skipped);
    let skipped = &page.skipped[0];
    assert_eq!(skipped.action, UnreadableAction::SetAside, "{skipped:?}");
    assert!(skipped.reason.contains("fsync"), "{skipped:?}");
    assert!(!root.join("active").join("notes.txt").exists());
    assert_eq!(common::files_in(&root, "quarantine").len(), 1);
}

/// A listing that meets several names that are no task file's in
/// `active/`, and an open that meets several entries of `tmp/` that are no
/// temp file's, set them aside with one fsync of `quarantine/` for all
/// their arrivals and then one of the directory for all their leavings
/// (each made one of each per name).
#[test]
fn names_set_aside_together_share_their_fsyncs() {
    use taskstore::FsEvent;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let recorder = taskstore::Recorder::new();
    drop(recorded(dir.path(), &clock, &recorder));
    for name in ["a.txt", "b.txt", "c.txt"] {
        fs::write(dir.path().join("active").join(name), b"not a task").unwrap();
        fs::write(dir.path().join("tmp").join(name), b"not a temp file").unwrap();
    }
    let synced = |from: usize, area: &str| {
        let path = dir.path().join(area);
        recorder.events()[from..]
            .iter()
            .filter(|e| matches!(e, FsEvent::SyncDir { path: p } if *p == path))
            .count()
    };
    let from = recorder.len();
    let store = recorded(dir.path(), &clock, &recorder);
    assert_eq!(common::files_in(dir.path(), "tmp"), Vec::<String>::new());
    let opened = [synced(from, "quarantine"), synced(from, "tmp")];
    let from = recorder.len();
    let page = store.list(&ListQuery::active()).unwrap();
    assert_eq!(page.skipped.len(), 3, "{:?}", page.skipped);
    assert_eq!(common::files_in(dir.path(), "quarantine").len(), 6);
    let listed = [synced(from, "quarantine"), synced(from, "active")];
    assert_eq!(
        (opened, listed),
        ([1, 1], [1, 1]),
        "fsyncs of quarantine/ and the directory left, by the open and the listing"
    );
}

/// A foreign name a listing sets aside whose arrival in `quarantine/`
/// cannot be made durable (the fsync of `quarantine/` fails) is not
/// unlinked from `active/`: it is reported left in place, with the
/// failure. It then has a name in both, as after a crash between the two
/// halves of a set-aside, and the next listing finishes the move under
/// the name it was given: set aside once, not twice. (A rename moved it
/// out of `active/` before its arrival was durable.)
#[test]
fn a_set_aside_whose_arrival_is_not_durable_is_left_and_finished_once_by_the_next_listing() {
    let dir = tempdir();
    let root = dir.path().join("store");
    let (store, _clock, faults) = faulted(&root);
    let file = root.join("active").join("notes.txt");
    fs::write(&file, b"not a task").unwrap();
    faults.fail_at(FsOp::SyncDir, root.join("quarantine"), Fault::Eio);
    let page = store.list(&ListQuery::active()).unwrap();
    faults.disarm();
    assert_eq!(page.skipped.len(), 1, "{:?}", page.skipped);
    let skipped = &page.skipped[0];
    assert_eq!(skipped.action, UnreadableAction::LeftInPlace, "{skipped:?}");
    assert!(skipped.reason.contains("fsync"), "{skipped:?}");
    assert!(file.exists());
    let quarantined = common::files_in(&root, "quarantine");
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");

    let page = store.list(&ListQuery::active()).unwrap();
    assert_eq!(page.skipped.len(), 1, "{:?}", page.skipped);
    let skipped = &page.skipped[0];
    assert_eq!(skipped.action, UnreadableAction::SetAside, "{skipped:?}");
    assert!(
        skipped
            .moved_to
            .as_deref()
            .is_some_and(|to| to.ends_with(&quarantined[0])),
        "{skipped:?}"
    );
    assert!(!file.exists());
    assert_eq!(common::files_in(&root, "quarantine"), quarantined);
}

/// A damaged stale copy beside a finished task (a power loss in the middle
/// of its terminal move) is set aside by the next write of the task with
/// one fsync of its directory: the set-aside makes its move durable, and
/// nothing fsyncs the directory again for it (it did, twice in all).
#[test]
fn a_damaged_stale_copy_is_set_aside_with_one_fsync_of_its_directory() {
    use taskstore::FsEvent;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let recorder = taskstore::Recorder::new();
    let store = recorded(dir.path(), &clock, &recorder);
    let task = store.create(NewTask::new()).unwrap();
    assert!(store.complete(&task.id, json!(1)).unwrap().is_applied());
    // Left after the open, which resolves the copies it finds.
    let stale = dir.path().join("active").join(format!("{}.json", task.id));
    fs::write(&stale, b"{damaged").unwrap();
    let from = recorder.len();
    let again = store.cancel(&task.id, None).unwrap();
    assert!(!again.is_applied(), "{again:?}");
    assert!(!stale.exists(), "set aside");
    let active = dir.path().join("active");
    let synced = recorder.events()[from..]
        .iter()
        .filter(|e| matches!(e, FsEvent::SyncDir { path } if *path == active))
        .count();
    assert_eq!(
        synced,
        1,
        "fsyncs of active/: {:?}",
        &recorder.events()[from..]
    );
}
