//! What is made durable before what depends on it: replaced files parked until
//! their replacement is, dead writers' temp files, compactions cut short or
//! beside another open, new directories, finished versions once per handle.

use super::*;

/// A write over a running task's file first gives that file a second name
/// in `tmp/` (its park), and removes the park only once the new version is
/// durable: after the fsync of `active/` for an update, of `done/` for a
/// terminal transition (which returns without an fsync of `active/`). A
/// later removal of the finished task's file from `done/` comes after an
/// fsync of `active/`. Shown on the calls the store makes, in order (the
/// crash-state explorer shows what each order guards against).
#[test]
fn a_replaced_file_is_parked_until_its_replacement_is_durable() {
    use taskstore::FsEvent;
    let dir = tempfile::tempdir().unwrap();
    let recorder = taskstore::Recorder::new();
    let store = FileStore::builder(dir.path())
        .recorder(recorder.clone())
        .open()
        .unwrap();
    let task = store.create(NewTask::new()).unwrap();
    let name = format!("{}.json", task.id);
    let is_park_of = |path: &Path| {
        in_area(path, "tmp")
            && path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{}.", task.id)))
    };
    for (call, durable_in) in [("update", "active"), ("complete", "done")] {
        let from = recorder.len();
        let applied = match call {
            "update" => store
                .update(&task.id, TaskUpdate::new().metadata("k", json!(1)))
                .unwrap(),
            _ => store.complete(&task.id, json!("done")).unwrap(),
        };
        assert!(applied.is_applied());
        let events = recorder.events();
        let parked = first(
            &events,
            from,
            |e| matches!(e, FsEvent::Link { from, to } if in_area(from, "active") && is_park_of(to)),
        );
        let park = match &events[parked] {
            FsEvent::Link { to, .. } => to.clone(),
            _ => unreachable!(),
        };
        let replaced = first(
            &events,
            from,
            |e| matches!(e, FsEvent::Rename { to, .. } if in_area(to, "active") && to.ends_with(&name)),
        );
        let durable = first(&events, replaced, synced(durable_in));
        let unparked = first(
            &events,
            from,
            |e| matches!(e, FsEvent::Remove { path } if *path == park),
        );
        assert!(
            parked < replaced && durable < unparked,
            "{call}: parked at call {parked}, replaced at {replaced}, durable in {durable_in}/ at {durable}, unparked at {unparked}"
        );
        if call == "complete" {
            assert!(
                !events[from..].iter().any(synced("active")),
                "a terminal transition returns without an fsync of active/"
            );
        }
    }
    assert_eq!(
        fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0,
        "every park is gone"
    );
    let from = recorder.len();
    assert!(store.delete(&task.id).unwrap());
    let events = recorder.events();
    let settled = first(&events, from, synced("active"));
    let removed = first(&events, from, removed_from("done"));
    assert!(
        settled < removed,
        "delete: active/ is durable (call {settled}) before the file in done/ goes (call {removed})"
    );
}

/// A temp file whose writer is gone may be a park guarding a rename into
/// `active/` whose fsync has not run yet: `open` and a sweep remove it only
/// after an fsync of `active/` of their own.
#[test]
fn dead_writers_temp_files_go_only_after_an_fsync_of_active() {
    use taskstore::FsEvent;
    let dir = tempfile::tempdir().unwrap();
    drop(FileStore::open(dir.path()).unwrap());
    for (when, name) in [("open", "t-open.1.1.tmp"), ("sweep", "t-sweep.1.2.tmp")] {
        let recorder = taskstore::Recorder::new();
        if when == "open" {
            fs::write(dir.path().join("tmp").join(name), b"left").unwrap();
        }
        let store = FileStore::builder(dir.path())
            .recorder(recorder.clone())
            .open()
            .unwrap();
        if when == "sweep" {
            fs::write(dir.path().join("tmp").join(name), b"left").unwrap();
            store.sweep_expired().unwrap();
        }
        let events = recorder.events();
        let removed = first(
            &events,
            0,
            |e| matches!(e, FsEvent::Remove { path } if path.ends_with(name)),
        );
        let settled = events[..removed].iter().rposition(synced("active"));
        assert!(
            settled.is_some(),
            "{when}: the temp file went (call {removed}) with no fsync of active/ before it: {events:#?}"
        );
    }
}

/// A compaction cut short after its swap (the fsync of the store's root
/// failed) leaves the old directory as `active.compact`: the next open
/// makes the swap durable, with an fsync of the root, before it removes
/// the leftover's names. (It removed them first: a power loss before the
/// swap was written back could leave the root naming the emptied old
/// directory, and every running task gone.)
#[test]
fn a_compaction_cut_short_is_made_durable_before_its_leftover_goes() {
    use taskstore::FsEvent;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let Some((kept, _)) = common::grown_and_emptied(&root) else {
        return;
    };
    let faults = FaultInjector::new();
    faults.fail_at(FsOp::SyncDir, &root, Fault::Eio);
    let cut = FileStore::builder(&root)
        .fault_injector(faults.clone())
        .open();
    assert!(cut.is_err(), "the open alone failed at the root's fsync");
    drop(cut);
    assert!(
        root.join("active.compact").is_dir(),
        "the old directory is left"
    );
    let recorder = taskstore::Recorder::new();
    let store = FileStore::builder(&root)
        .recorder(recorder.clone())
        .open()
        .unwrap();
    let events = recorder.events();
    let root_durable = first(
        &events,
        0,
        |e| matches!(e, FsEvent::SyncDir { path } if path == &root),
    );
    let leftover_emptied = first(&events, 0, removed_from("active.compact"));
    assert!(
        root_durable < leftover_emptied,
        "the swap is durable (call {root_durable}) before the leftover's names go (call {leftover_emptied})"
    );
    assert_eq!(store.get(&kept.id).unwrap(), Some(kept));
    assert!(!root.join("active.compact").exists());
}

/// An open that is not alone (a check holds the store: `taskstore verify`
/// run after the crash) does not compact, so it leaves a cut compaction's
/// leftover for an open alone; but it makes the swap durable before it
/// writes anything into the area. (It left that to the open alone too: a
/// power loss meanwhile, on a file system that had not written the root
/// back, could put the area's name on the old directory again, and the
/// next open alone emptied the new one, with every task written since.)
#[test]
fn an_open_beside_another_makes_a_cut_compactions_swap_durable_first() {
    use taskstore::FsEvent;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let kept = FileStore::open(&root)
        .unwrap()
        .create(NewTask::new())
        .unwrap();
    // What a compaction cut short after its swap leaves (planted by hand,
    // so that this runs on file systems whose directories shrink and are
    // never compacted): the old directory under the leftover's name.
    let leftover = root.join("active.compact");
    fs::create_dir(&leftover).unwrap();
    fs::set_permissions(
        &leftover,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let check = taskstore::FileCheck::open(&root).unwrap();
    let recorder = taskstore::Recorder::new();
    let store = FileStore::builder(&root)
        .recorder(recorder.clone())
        .open()
        .unwrap();
    let task = store.create(NewTask::new()).unwrap();
    let events = recorder.events();
    let root_durable = first(
        &events,
        0,
        |e| matches!(e, FsEvent::SyncDir { path } if path == &root),
    );
    let written = first(
        &events,
        0,
        |e| matches!(e, FsEvent::Rename { to, .. } if to.ends_with(format!("active/{}.json", task.id))),
    );
    assert!(
        root_durable < written,
        "the swap is durable (call {root_durable}) before the area is written (call {written})"
    );
    assert!(leftover.is_dir(), "the leftover is left for an open alone");
    assert_eq!(store.get(&kept.id).unwrap(), Some(kept));
    drop(check);
}

/// A store opened where its parent directories do not exist yet makes them,
/// and the name of each is made durable in its own parent before `open`
/// returns, as the store's own name is: a power cut could otherwise lose a
/// directory on the way to the store, and the store with it. (Only the
/// store's own parent was fsynced.) Shown on the calls the store makes.
#[test]
fn opening_a_store_under_new_directories_makes_each_ones_name_durable() {
    use taskstore::FsEvent;
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().canonicalize().unwrap();
    let root = base.join("srv/tasks/store");
    let recorder = taskstore::Recorder::new();
    let store = FileStore::builder(&root)
        .recorder(recorder.clone())
        .open()
        .unwrap();
    let synced: Vec<PathBuf> = recorder
        .events()
        .into_iter()
        .filter_map(|e| match e {
            FsEvent::SyncDir { path } => Some(path),
            _ => None,
        })
        .collect();
    for dir in [base.join("srv/tasks"), base.join("srv"), base.clone()] {
        assert!(
            synced.contains(&dir),
            "{} was not fsynced: {synced:?}",
            dir.display()
        );
    }
    assert!(store.create(NewTask::new()).is_ok());
}

/// An `Immediate` write that keeps a finished task makes that version
/// durable once: its file, `expiring/` (with a TTL) and `done/` are
/// fsynced before the first `AlreadyTerminal` answer (another handle may have finished it
/// `Eventual`ly), and a later answer for the same version makes no fsync
/// (each made two: a retried complete, a renewal of a finished task, a
/// cancel after completion, each flushing the device again for nothing).
/// The first answer pays what the terminal write paid: two fsyncs (the
/// file's, `done/`'s), three with a TTL (`expiring/`'s too); `active/` is
/// not fsynced by either (FORMAT.md, "Writing protocol").
#[test]
fn a_finished_version_is_made_durable_once_per_handle() {
    use taskstore::FsEvent;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let recorder = taskstore::Recorder::new();
    let store = recorded(dir.path(), &clock, &recorder);
    let fsyncs = |from: usize| {
        recorder.events()[from..]
            .iter()
            .filter(|e| matches!(e, FsEvent::SyncFile { .. } | FsEvent::SyncDir { .. }))
            .count()
    };
    // With a TTL, its `expiring/` entry is made durable too.
    for (new, first) in [
        (NewTask::new(), 2),
        (NewTask::new().ttl(Duration::from_secs(3600)), 3),
    ] {
        let task = store.create(new).unwrap();
        let from = recorder.len();
        assert!(store.complete(&task.id, json!(1)).unwrap().is_applied());
        assert_eq!(
            fsyncs(from),
            first,
            "the terminal write pays what its first AlreadyTerminal answer does"
        );
        let mut made = Vec::new();
        for _ in 0..3 {
            let from = recorder.len();
            let again = store.complete(&task.id, json!(2)).unwrap();
            assert!(!again.is_applied(), "{again:?}");
            made.push(fsyncs(from));
        }
        assert_eq!(made, [first, 0, 0], "fsyncs per AlreadyTerminal answer");
    }
}
