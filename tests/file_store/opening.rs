//! Opening a store: tasks survive a reopen, several handles are one store, an
//! open reads no history, what an open makes of an empty, half-made, existing
//! or newer store and what it refuses (and then makes nothing), a symlinked
//! parent, a dropped handle.

use super::*;

#[test]
fn tasks_survive_reopen_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (running, done) = {
        let store = FileStore::open(dir.path()).unwrap();
        let running = store
            .create(
                NewTask::new()
                    .ttl(Duration::from_secs(3600))
                    .metadata("k", json!({"nested": [1, 2]})),
            )
            .unwrap();
        let running = store
            .update(
                &running.id,
                TaskUpdate::new()
                    .status(TaskStatus::InputRequired)
                    .input_requests(json!({"q": "?"})),
            )
            .unwrap()
            .into_task();
        let done = store.create(NewTask::new()).unwrap();
        let done = store
            .complete(&done.id, json!({"big": "x".repeat(100_000)}))
            .unwrap()
            .into_task();
        (running, done)
    };
    let store = FileStore::open(dir.path()).unwrap();
    assert_eq!(store.get(&running.id).unwrap(), Some(running));
    assert_eq!(store.get(&done.id).unwrap(), Some(done));
}

#[test]
fn several_handles_are_one_store() {
    let dir = tempfile::tempdir().unwrap();
    let a = FileStore::open(dir.path()).unwrap();
    let b = FileStore::open(dir.path()).unwrap();
    let task = a.create(NewTask::new()).unwrap();
    let updated = b
        .update(&task.id, TaskUpdate::new().metadata("b", 1))
        .unwrap()
        .into_task();
    assert_eq!(a.get(&task.id).unwrap(), Some(updated.clone()));
    let won = a.cancel(&task.id, None).unwrap();
    assert!(won.is_applied());
    assert_eq!(
        b.complete(&task.id, json!(1)).unwrap(),
        Transition::AlreadyTerminal(won.into_task())
    );
    assert_eq!(b.list(&ListQuery::all()).unwrap().tasks.len(), 1);
}

#[test]
fn open_and_list_active_never_read_history() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let running = store.create(NewTask::new()).unwrap();
    // History that would be set aside if anything read it.
    for i in 0..50 {
        fs::write(
            dir.path().join("done").join(format!("old-{i}.json")),
            b"not json",
        )
        .unwrap();
    }
    drop(store);
    let store = FileStore::open(dir.path()).unwrap();
    let active = store.list(&ListQuery::active()).unwrap();
    assert_eq!(active.tasks, vec![running.clone()]);
    let working = store
        .list(&ListQuery::all().status(TaskStatus::Working))
        .unwrap();
    assert_eq!(working.tasks, vec![running]);
    assert_eq!(
        count(&dir.path().join("quarantine")),
        0,
        "no finished task file was read"
    );
    assert_eq!(count(&dir.path().join("done")), 50);
    // Listing everything does read history, and sets those files aside.
    assert_eq!(store.list(&ListQuery::all()).unwrap().tasks.len(), 1);
    assert_eq!(count(&dir.path().join("quarantine")), 50);
}

/// Every name under `dir`, recursively, with its kind: what a test compares
/// to tell that an open created nothing.
fn tree(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = common::tree(dir)
        .into_iter()
        .map(|path| {
            let is_dir = path.is_dir() && !path.is_symlink();
            let name = path.strip_prefix(dir).unwrap().display();
            format!("{name}{}", if is_dir { "/" } else { "" })
        })
        .collect();
    names.sort();
    names
}

/// A project directory with a user's own files in it.
fn user_directory() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("Cargo.toml"), "[package]\n").unwrap();
    fs::create_dir(dir.path().join("src")).unwrap();
    fs::write(dir.path().join("src").join("main.rs"), "fn main() {}\n").unwrap();
    dir
}

#[test]
fn open_refuses_a_directory_of_user_files_and_creates_nothing() {
    let dir = user_directory();
    let before = tree(dir.path());
    match FileStore::open(dir.path()) {
        Err(taskstore::Error::InvalidStore { path, reason }) => {
            assert_eq!(path, dir.path());
            assert!(reason.contains("not a store"), "{reason}");
        }
        other => panic!("expected InvalidStore, got {other:?}"),
    }
    assert_eq!(tree(dir.path()), before, "nothing was created");

    // `open(".")` from inside the project, as a mistaken command line does.
    let cwd = std::env::current_dir().unwrap();
    std::env::set_current_dir(dir.path()).unwrap();
    let relative = FileStore::open(".");
    std::env::set_current_dir(cwd).unwrap();
    assert!(
        matches!(relative, Err(taskstore::Error::InvalidStore { .. })),
        "{relative:?}"
    );
    assert_eq!(tree(dir.path()), before, "nothing was created");

    // Asked for explicitly, it becomes a store beside the user's files.
    let store = FileStore::builder(dir.path())
        .create_in_non_empty_dir(true)
        .open()
        .unwrap();
    store.create(NewTask::new()).unwrap();
    assert!(dir.path().join("taskstore.json").is_file());
    assert!(dir.path().join("src").join("main.rs").is_file());
}

#[test]
fn an_existing_store_opens_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let task = FileStore::open(dir.path())
        .unwrap()
        .create(NewTask::new())
        .unwrap();
    let before = tree(dir.path());
    let store = FileStore::open(dir.path()).unwrap();
    assert_eq!(store.get(&task.id).unwrap(), Some(task));
    assert_eq!(tree(dir.path()), before);
}

#[test]
fn an_empty_directory_becomes_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    // (Writing the marker took a lock stripe: `locks/` holds its file.)
    let top: Vec<String> = tree(dir.path())
        .into_iter()
        .filter(|n| !n.starts_with("locks/") || n == "locks/")
        .collect();
    assert_eq!(
        top,
        [
            "active/",
            "done/",
            "expiring/",
            "locks/",
            "quarantine/",
            "taskstore.json",
            "tmp/"
        ]
    );
    store.create(NewTask::new()).unwrap();
}

#[test]
fn a_half_made_store_opens() {
    // A first open that stopped after making some of the store's
    // directories (a crash, a full disk) left only the store's own names.
    let dir = tempfile::tempdir().unwrap();
    for name in ["active", "done", "tmp"] {
        fs::create_dir(dir.path().join(name)).unwrap();
    }
    let store = FileStore::open(dir.path()).unwrap();
    assert!(dir.path().join("taskstore.json").is_file());
    assert!(dir.path().join("quarantine").is_dir());
    store.create(NewTask::new()).unwrap();
}

#[test]
fn lost_and_found_alone_is_an_empty_directory() {
    // The root of a fresh file system holds `lost+found`.
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("lost+found")).unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    store.create(NewTask::new()).unwrap();
    assert!(dir.path().join("lost+found").is_dir());
    // With anything else beside it, it is not.
    let other = tempfile::tempdir().unwrap();
    fs::create_dir(other.path().join("lost+found")).unwrap();
    fs::write(other.path().join("notes.txt"), "mine").unwrap();
    assert!(matches!(
        FileStore::open(other.path()),
        Err(taskstore::Error::InvalidStore { .. })
    ));
    assert!(!other.path().join("taskstore.json").exists());
    // `verify` follows the same rule: `lost+found` is no problem, a file
    // of anyone's beside it is foreign.
    drop(store);
    let report = taskstore::FileCheck::open(dir.path())
        .and_then(|check| check.verify())
        .unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let report = taskstore::FileCheck::open(dir.path())
        .and_then(|check| check.verify())
        .unwrap();
    let foreign: Vec<_> = report
        .problems
        .iter()
        .map(|p| (p.path.clone(), p.kind.to_string()))
        .collect();
    assert_eq!(
        foreign,
        [(
            dir.path().join("notes.txt"),
            "not a name this store uses".to_owned()
        )]
    );
}

/// A durable handle (no seam instrumentation: the reclaiming thread, not
/// the inline path the call-order tests see) frees the files its writes
/// replaced: no park is left in `tmp/` once the handle is gone, and every
/// write stands. (This test fails when the thread removes nothing; that
/// the drop waits for a thread whose removal is held is
/// `file::park::tests::finishing_waits_until_every_park_handed_over_is_removed`.)
#[test]
fn a_dropped_handle_leaves_no_parked_file_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let task = store.create(NewTask::new()).unwrap();
    for i in 0..50 {
        assert!(
            store
                .update(&task.id, TaskUpdate::new().metadata("i", json!(i)))
                .unwrap()
                .is_applied()
        );
    }
    assert!(
        store
            .complete(&task.id, json!("done"))
            .unwrap()
            .is_applied()
    );
    drop(store);
    assert_eq!(
        count(&dir.path().join("tmp")),
        0,
        "parks left after the drop"
    );
    let store = FileStore::open(dir.path()).unwrap();
    let got = store.get(&task.id).unwrap().unwrap();
    assert_eq!((got.status, got.revision), (TaskStatus::Completed, 52));
}

#[test]
fn repair_changes_nothing_in_a_store_of_a_newer_format() {
    // `open` refuses a newer format rather than misread it; a repair must
    // not apply this version's rules to its files either (a newer version's
    // own files would be set aside as foreign, its temp files removed).
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let kept = store.create(NewTask::new()).unwrap();
    drop(store);
    let marker = dir.path().join("taskstore.json");
    let text = fs::read_to_string(&marker).unwrap();
    fs::write(&marker, text.replace("\"format\":2", "\"format\":3")).unwrap();
    fs::write(dir.path().join("locks/leases.lock"), b"").unwrap();
    fs::write(dir.path().join("active/index.v3"), b"{}").unwrap();
    let before = common::tree_of(dir.path());

    let check = taskstore::FileCheck::open(dir.path()).unwrap();
    for dry_run in [true, false] {
        let repairs = check.repair(dry_run).unwrap();
        assert!(!repairs.repairs.is_empty(), "verify still reports");
        for repair in &repairs.repairs {
            assert!(
                matches!(repair.action, taskstore::RepairAction::Leave { .. }),
                "dry run {dry_run}: {repair}"
            );
        }
        let marker_repair = repairs
            .repairs
            .iter()
            .find(|r| r.problem.path == marker)
            .expect("the marker is reported");
        assert!(
            marker_repair.to_string().contains("newer"),
            "{marker_repair}"
        );
    }
    drop(check);
    assert_eq!(common::tree_of(dir.path()), before, "nothing changed");
    let _ = kept;
}

/// The settings every store has are checked before anything is made: a
/// refused open leaves no directory behind. (It made the store, then
/// refused the settings.) A cap of no active task is refused too (it was
/// taken, and every create then refused with `TooManyActive`).
#[test]
fn a_refused_open_makes_no_store() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    for (field, builder) in [
        ("instance_id", FileStore::builder(&root).instance_id("")),
        ("lease", FileStore::builder(&root).lease(Duration::ZERO)),
        ("max_active", FileStore::builder(&root).max_active(0)),
    ] {
        match builder.open() {
            Err(taskstore::Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field} must be refused, got {other:?}"),
        }
        assert!(!root.exists(), "{field}: no store was made");
    }
}

/// A store whose parent directory is a symlink (systemd's `DynamicUser=`
/// makes `/var/lib/<app>` one, to `/var/lib/private/<app>`): the path to
/// the store may go through symlinks, only the store's own directory may
/// not be one. The first open fsyncs the parent to make the store's name
/// durable, and opened it refusing a symlink: "Not a directory", whether
/// the store's directory was made beforehand (empty, by a deployment) or
/// by the open.
#[test]
fn a_store_under_a_symlinked_parent_opens() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("private-app");
    std::fs::create_dir(&real).unwrap();
    let app = dir.path().join("app");
    std::os::unix::fs::symlink(&real, &app).unwrap();
    std::fs::create_dir(app.join("made-before")).unwrap();
    for name in ["made-before", "made-by-the-open"] {
        let root = app.join(name);
        let store = FileStore::open(&root).unwrap_or_else(|e| panic!("{name}: {e}"));
        let task = store.create(NewTask::new()).unwrap();
        drop(store);
        let again = FileStore::open(&root).unwrap();
        assert_eq!(again.get(&task.id).unwrap(), Some(task), "{name}");
    }
}
