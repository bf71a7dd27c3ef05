//! `FileStore` specifics: persistence across reopen, several handles as one
//! store, history never read by open or "list active", crash leftovers.

mod common;

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use taskstore::{
    Durability, FileStore, ListQuery, ManualClock, NewTask, TaskStatus, TaskStore, TaskUpdate,
    Transition,
};
use time::OffsetDateTime;

fn count(dir: &Path) -> usize {
    fs::read_dir(dir).unwrap().count()
}

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

#[test]
fn an_interrupted_terminal_move_is_final_and_finished_later() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let task = store.create(NewTask::new()).unwrap();
    let active_file = dir.path().join("active").join(format!("{}.json", task.id));
    let done_file = dir.path().join("done").join(format!("{}.json", task.id));
    let done = store
        .complete(&task.id, json!("result"))
        .unwrap()
        .into_task();
    assert!(!active_file.exists() && done_file.exists());
    // A writer killed between its two steps leaves the terminal task in active/.
    let interrupt = || fs::rename(&done_file, &active_file).unwrap();
    interrupt();
    assert_eq!(
        store.get(&task.id).unwrap(),
        Some(done.clone()),
        "final at once"
    );
    assert!(store.list(&ListQuery::active()).unwrap().tasks.is_empty());
    assert_eq!(
        store.list(&ListQuery::all()).unwrap().tasks,
        vec![done.clone()]
    );
    // Any write of the task finishes the move (and changes nothing else).
    assert_eq!(
        store.fail(&task.id, json!("late")).unwrap(),
        Transition::AlreadyTerminal(done.clone())
    );
    assert!(!active_file.exists() && done_file.exists());
    // So does a sweep.
    interrupt();
    assert_eq!(store.sweep_expired().unwrap(), 0);
    assert!(!active_file.exists() && done_file.exists());
    // And reopening reads it right all along.
    interrupt();
    drop(store);
    let store = FileStore::open(dir.path()).unwrap();
    assert_eq!(store.get(&task.id).unwrap(), Some(done));
}

/// A terminal move caught between its halves (a writer killed after linking
/// the file into `done/`, or a reaper's batch, which lets go of each task's
/// lock between them) leaves the task's file under both names. Deleting the
/// task then removes both, and its `expiring/` entry: it does not come back
/// from `done/` (it did: only the name in `active/` went, and `get` found
/// the task again, finished, and a create of its id was refused).
#[test]
fn deleting_a_task_caught_mid_move_removes_it_from_both_areas() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    for ttl in [None, Some(Duration::from_secs(3600))] {
        let mut new = NewTask::new();
        if let Some(ttl) = ttl {
            new = new.ttl(ttl);
        }
        let task = store.create(new).unwrap();
        assert!(
            store
                .complete(&task.id, json!("result"))
                .unwrap()
                .is_applied()
        );
        let name = format!("{}.json", task.id);
        let (active, done) = (dir.path().join("active"), dir.path().join("done"));
        fs::hard_link(done.join(&name), active.join(&name)).unwrap();
        assert!(store.delete(&task.id).unwrap(), "{ttl:?}");
        assert_eq!(store.get(&task.id).unwrap(), None, "{ttl:?}");
        assert!(!active.join(&name).exists() && !done.join(&name).exists());
        assert_eq!(count(&dir.path().join("expiring")), 0, "{ttl:?}");
        assert!(store.list(&ListQuery::all()).unwrap().tasks.is_empty());
    }
    drop(store);
    let report = taskstore::FileCheck::open(dir.path())
        .and_then(|check| check.verify())
        .unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
}

/// A power loss in the middle of a terminal move can leave a task in both
/// areas: its running copy in `active/`, its terminal one in `done/`. The
/// next `open` keeps the copy the read rule picks and removes the other
/// (sets it aside if it is damaged), so a listing of `active/` alone is
/// right: a terminal copy is final; of two incarnations (the id reused
/// after expiry), the later one wins.
#[test]
fn a_task_left_in_both_areas_is_resolved_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path =
        |area: &str, id: &taskstore::TaskId| dir.path().join(area).join(format!("{id}.json"));
    let store = FileStore::open(dir.path()).unwrap();
    // A finished task whose running copy came back.
    let finished = store.create(NewTask::new()).unwrap();
    let running_copy = fs::read(path("active", &finished.id)).unwrap();
    let finished = store.complete(&finished.id, json!(1)).unwrap().into_task();
    fs::write(path("active", &finished.id), running_copy).unwrap();
    // A finished task whose running copy came back damaged.
    let damaged = store.create(NewTask::new()).unwrap();
    let damaged = store.cancel(&damaged.id, None).unwrap().into_task();
    fs::write(path("active", &damaged.id), b"{\"format\":1,\"ta").unwrap();
    // A running task beside an earlier incarnation's terminal copy.
    let reused = store.create(NewTask::new()).unwrap();
    let old = store
        .complete(&reused.id, json!("old"))
        .unwrap()
        .into_task();
    let old_file = fs::read(path("done", &reused.id)).unwrap();
    assert!(store.delete(&reused.id).unwrap());
    // A later creation time by the store's clock (a sleep need not give
    // one: the wall clock may step back).
    while store.now() <= old.created_at {
        std::thread::sleep(Duration::from_millis(1));
    }
    let reused = store.create(NewTask::new().id(reused.id.clone())).unwrap();
    assert!(reused.created_at > old.created_at);
    fs::write(path("done", &reused.id), old_file).unwrap();
    drop(store);

    let store = FileStore::open(dir.path()).unwrap();
    for (task, gone, kept) in [
        (&finished, "active", "done"),
        (&damaged, "active", "done"),
        (&reused, "done", "active"),
    ] {
        assert!(
            !path(gone, &task.id).exists() && path(kept, &task.id).exists(),
            "{}: one copy left, in {kept}/",
            task.id
        );
        assert_eq!(store.get(&task.id).unwrap().as_ref(), Some(task));
    }
    assert_eq!(
        store.list(&ListQuery::active()).unwrap().tasks,
        vec![reused.clone()]
    );
    let mut all = store.list(&ListQuery::all()).unwrap().tasks;
    all.sort_by(|a, b| a.id.cmp(&b.id));
    let mut want = vec![finished, damaged, reused];
    want.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(all, want);
    assert_eq!(
        count(&dir.path().join("quarantine")),
        1,
        "the damaged copy set aside, not deleted"
    );
}

#[test]
fn temp_files_of_dead_writers_are_removed_at_open_and_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let task = store.create(NewTask::new()).unwrap();
    let tmp = dir.path().join("tmp");
    fs::write(
        tmp.join(format!("{}.999999.1.tmp", task.id)),
        b"{\"format\":1,\"ta",
    )
    .unwrap();
    drop(store);
    let store = FileStore::open(dir.path()).unwrap();
    assert_eq!(count(&tmp), 0);
    fs::write(tmp.join("other-task.4242.7.tmp"), b"").unwrap();
    store.sweep_expired().unwrap();
    assert_eq!(count(&tmp), 0);
    assert_eq!(store.get(&task.id).unwrap(), Some(task));
}

/// A sweep counts among the leftovers of crashed writers only the temp
/// files whose writer is not running: a live writer's park that its
/// reclaiming thread has not removed yet goes too (after the sweep's fsync
/// of `active/`), but is no crashed writer's.
#[test]
fn a_sweep_counts_only_dead_writers_temp_files_as_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let task = store.create(NewTask::new()).unwrap();
    let tmp = dir.path().join("tmp");
    // No process has the largest pid; this one is running.
    let dead = tmp.join(format!("{}.{}.1.tmp", task.id, u32::MAX));
    let live = tmp.join(format!("{}.{}.2.tmp", task.id, std::process::id()));
    for park in [&dead, &live] {
        fs::hard_link(
            dir.path().join("active").join(format!("{}.json", task.id)),
            park,
        )
        .unwrap();
    }
    let swept = store.sweep().unwrap();
    assert_eq!(swept.cleaned, 1, "{swept:?}");
    assert_eq!(
        count(&tmp),
        0,
        "both parks are needless once active/ is durable"
    );
    assert_eq!(store.get(&task.id).unwrap(), Some(task));
}

#[test]
fn expiry_is_shared_by_every_handle_and_sweep_deletes_files() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap());
    let open = || {
        FileStore::builder(dir.path())
            .clock(Arc::new(clock.clone()))
            .open()
            .unwrap()
    };
    let (a, b) = (open(), open());
    let short = a
        .create(NewTask::new().ttl(Duration::from_secs(10)))
        .unwrap();
    let done = a
        .create(NewTask::new().ttl(Duration::from_secs(10)))
        .unwrap();
    let unseen = a
        .create(NewTask::new().ttl(Duration::from_secs(10)))
        .unwrap();
    assert!(a.complete(&done.id, json!(1)).unwrap().is_applied());
    clock.advance(Duration::from_secs(10));
    assert_eq!(
        count(&dir.path().join("active")),
        2,
        "expiry is lazy: nothing is deleted when the time passes"
    );
    // Every handle agrees at once; a handle that meets an expired task
    // deletes it, so it stays gone even if a clock is stepped back.
    assert_eq!(a.get(&short.id).unwrap(), None);
    assert_eq!(b.get(&done.id).unwrap(), None);
    assert_eq!(count(&dir.path().join("active")), 1);
    assert_eq!(count(&dir.path().join("done")), 0);
    // The sweep deletes the rest.
    assert_eq!(b.sweep_expired().unwrap(), 1);
    assert_eq!(a.get(&unseen.id).unwrap(), None);
    assert_eq!(count(&dir.path().join("active")), 0);
    assert_eq!(count(&dir.path().join("done")), 0);
}

/// Every name under `dir`, recursively, with its kind: what a test compares
/// to tell that an open created nothing.
fn tree(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let is_dir = entry.file_type().unwrap().is_dir();
            names.push(format!(
                "{}{}",
                path.strip_prefix(dir).unwrap().display(),
                if is_dir { "/" } else { "" }
            ));
            if is_dir {
                stack.push(path);
            }
        }
    }
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

/// A store copied file by file (`cp -r`, `rsync` without `-H`), whose
/// `expiring/` entries are copies of its task files instead of second
/// names, still has its finished tasks expire, whether a sweep meets a few
/// or many. (A sweep of fewer than 256 due tasks took each entry for stale
/// and dropped it: the tasks then stayed in `done/` for ever.)
#[test]
fn a_store_copied_without_its_hard_links_still_sweeps_its_finished_tasks() {
    let ttl = Duration::from_secs(60);
    for n in [5, 256] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(OffsetDateTime::now_utc());
        let open = |root: &Path| {
            FileStore::builder(root)
                .clock(Arc::new(clock.clone()))
                .durability(taskstore::Durability::Eventual)
                .open()
                .unwrap()
        };
        let original = dir.path().join("original");
        let store = open(&original);
        for i in 0..n {
            let task = store.create(NewTask::new().ttl(ttl)).unwrap();
            assert!(store.complete(&task.id, json!(i)).unwrap().is_applied());
        }
        drop(store);
        let copy = dir.path().join("copy");
        common::copy_dir(&original, &copy);
        clock.advance(ttl * 2);
        let swept = open(&copy).sweep().unwrap();
        assert_eq!(swept.deleted, n, "{n} tasks: {swept:?}");
        assert_eq!(count(&copy.join("done")), 0, "{n} tasks");
        assert_eq!(count(&copy.join("expiring")), 0, "{n} tasks");
    }
}

/// How many running tasks [`under_renames`] keeps renaming over.
const RENAMED: usize = 200;

/// A store of [`RENAMED`] running tasks (on tmpfs when there is one, where
/// a `readdir` under renames misses and repeats names), each updated over
/// and over by two threads (a rename over its name in `active/`) while
/// `body` runs with the store's directory.
fn under_renames(body: impl FnOnce(&Path)) {
    let shm = Path::new("/dev/shm");
    let dir = match tempfile::Builder::new()
        .prefix("taskstore-dup")
        .tempdir_in(shm)
    {
        Ok(dir) => dir,
        Err(_) => tempfile::tempdir().unwrap(),
    };
    let writer = FileStore::builder(dir.path())
        .durability(Durability::Eventual)
        .open()
        .unwrap();
    let ids: Vec<_> = (0..RENAMED)
        .map(|_| writer.create(NewTask::new()).unwrap().id)
        .collect();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for half in ids.chunks(RENAMED / 2) {
            let (writer, stop) = (&writer, &stop);
            s.spawn(move || {
                for n in 0.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let id = &half[n % half.len()];
                    let updated = writer
                        .update(id, TaskUpdate::new().status_message(n.to_string()))
                        .unwrap();
                    assert!(updated.is_applied());
                }
            });
        }
        // Stops the writers however `body` ends (a failed assertion too),
        // so that the scope's threads end.
        struct Stop<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let _stop = Stop(&stop);
        body(dir.path());
    });
}

/// A `readdir` under way while another handle renames files over names in
/// `active/` may name a file twice (tmpfs gives the new entry a new place,
/// after the old one; a probe found thousands of such names in a few
/// thousand listings). A handle that follows `active/` by file status (no
/// change notices) reads it whole at each listing after a change, and
/// counts each running task once however often the listing named it: its
/// count of active tasks stays right, so a create under the cap is not
/// refused. (Each name listed twice counted twice, for the handle's life:
/// creates were refused well below the cap, and the snapshot's byte budget
/// shrank with the count of its bytes.) The race arises on tmpfs, so the
/// test runs there when there is one.
#[test]
fn renames_under_a_listing_count_each_running_task_once() {
    under_renames(|dir| {
        let reader = FileStore::builder(dir)
            .change_notices(false)
            .max_active(RENAMED + 1)
            .open()
            .unwrap();
        for round in 0..300 {
            let listed = reader.list(&ListQuery::active()).unwrap().tasks;
            assert_eq!(listed.len(), RENAMED, "listing {round}");
        }
        // A handle with change notices reads `active/` in several calls at
        // its first listing, and the notices after it bring back what a
        // rename hid.
        for round in 0..100 {
            let fresh = FileStore::builder(dir)
                .max_active(RENAMED + 1)
                .open()
                .unwrap();
            let listed = fresh.list(&ListQuery::active()).unwrap().tasks;
            assert_eq!(listed.len(), RENAMED, "first listing of handle {round}");
            let made = fresh.create(NewTask::new());
            assert!(made.is_ok(), "handle {round}: {made:?}");
            assert!(fresh.delete(&made.unwrap().id).unwrap());
        }
        let made = reader.create(NewTask::new());
        assert!(
            made.is_ok(),
            "{RENAMED} tasks run, the cap is {}: {made:?}",
            RENAMED + 1
        );
        assert!(reader.delete(&made.unwrap().id).unwrap());
    });
}

/// A handle with change notices whose first listing's notices are lost
/// (the kernel's queue overflowed during the pass: a fault on the drain
/// here) lists every running task all the same: its pass, read in several
/// calls, is made again without the watch (in one call), since the
/// notices that would bring back what a rename hid from it are gone. (It
/// dropped the lost watch and took the pass for whole: the second handle
/// listed 192 of 200.)
#[cfg(feature = "fault-injection")]
#[test]
fn a_first_listing_whose_notices_are_lost_misses_no_running_task() {
    use taskstore::{Fault, FaultInjector, FsOp};
    under_renames(|dir| {
        for round in 0..150 {
            let faults = FaultInjector::new();
            faults.fail_at(FsOp::Drain, dir.join("active"), Fault::Eio);
            let fresh = FileStore::builder(dir)
                .fault_injector(faults.clone())
                .open()
                .unwrap();
            let listed = fresh.list(&ListQuery::active()).unwrap().tasks;
            assert_eq!(listed.len(), RENAMED, "first listing of handle {round}");
            assert!(
                faults.fired().iter().any(|(op, _)| *op == FsOp::Drain),
                "the notices were lost"
            );
        }
    });
}

/// The census (`stats`, the command's dry runs) and `verify` read
/// `active/` beside the same renames: each running task is counted once,
/// every one of them (the census missed some in most of 300 readings, and
/// counted up to 379 task files for 200), and `verify` finds nothing
/// wrong.
#[test]
fn renames_under_a_census_or_a_check_count_each_running_task_once() {
    under_renames(|dir| {
        let check = taskstore::FileCheck::open(dir).unwrap();
        for round in 0..300 {
            let census = check.census().unwrap();
            let running = census.tasks.iter().filter(|t| !t.is_terminal()).count();
            assert_eq!(running, RENAMED, "census {round}: running tasks");
            assert_eq!(
                census.usage.task_files, RENAMED,
                "census {round}: task files"
            );
        }
        let entries = |sub: &str| fs::read_dir(dir.join(sub)).unwrap().count();
        for round in 0..100 {
            let report = check.verify().unwrap();
            assert!(report.problems.is_empty(), "verify {round}: {report:?}");
            // Each entry once: the running tasks, the lock files, and the
            // two writers' temp files at most.
            let most = RENAMED + entries("locks") + 2;
            assert!(
                report.checked <= most,
                "verify {round} checked {} entries of at most {most}",
                report.checked
            );
        }
    });
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

/// A store in a new directory, on a clock of its own, and two handles on
/// it without fsync, as the held-stripe tests use them: a sweeper that
/// waits for a stripe as long as the test does, and a writer that gives
/// up (an error) after `writer_wait`.
fn sweeper_and_writer(
    writer_wait: Duration,
) -> (tempfile::TempDir, ManualClock, FileStore, FileStore) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap());
    let open = |wait: Duration| {
        FileStore::builder(dir.path())
            .clock(Arc::new(clock.clone()))
            .durability(Durability::Eventual)
            .stripe_wait(wait)
            .open()
            .unwrap()
    };
    let (sweeper, writer) = (open(common::HANG), open(writer_wait));
    (dir, clock, sweeper, writer)
}

/// `count` tasks `store` makes with `ttl` and completes.
fn finished_with_ttl(store: &FileStore, count: usize, ttl: Duration) -> Vec<taskstore::TaskId> {
    (0..count)
        .map(|n| {
            let id = store.create(NewTask::new().ttl(ttl)).unwrap().id;
            assert!(store.complete(&id, json!(n)).unwrap().is_applied());
            id
        })
        .collect()
}

/// A stripe another process holds (stopped while it holds it, say) keeps a
/// sweep from deleting that stripe's expired tasks alone: every other
/// expired task is deleted, finished or running, and each of the held
/// stripe's is reported missed, naming the lock. Once the lock is let go,
/// the next sweep deletes the rest. With few tasks (each batch a stripe at
/// a time) and with more than a large pass (every stripe at once, which
/// cannot be had).
#[test]
fn a_sweep_deletes_every_expired_task_but_a_held_stripes() {
    for finished in [40, 300] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap());
        let store = FileStore::builder(dir.path())
            .clock(Arc::new(clock.clone()))
            .durability(Durability::Eventual)
            .stripe_wait(Duration::from_millis(200))
            .open()
            .unwrap();
        let ttl = Duration::from_secs(10);
        let mut ids: Vec<taskstore::TaskId> = (0..finished + 10)
            .map(|n| {
                let id = store.create(NewTask::new().ttl(ttl)).unwrap().id;
                if n < finished {
                    assert!(store.complete(&id, json!(n)).unwrap().is_applied());
                }
                id
            })
            .collect();
        clock.advance(ttl * 2);
        let held = common::stripe(ids[0].as_str());
        let lock = common::open_lock_file(&common::stripe_lock(dir.path(), ids[0].as_str()));
        lock.lock().unwrap();
        let swept = store.sweep().unwrap();
        let mut want: Vec<&taskstore::TaskId> = ids
            .iter()
            .filter(|id| common::stripe(id.as_str()) == held)
            .collect();
        want.sort();
        let mut missed: Vec<&taskstore::TaskId> = swept.missed.iter().map(|m| &m.id).collect();
        missed.sort();
        assert_eq!(
            missed, want,
            "{finished} finished: the held stripe's are missed"
        );
        assert_eq!(swept.deleted, ids.len() - want.len(), "{finished} finished");
        for missed in &swept.missed {
            let said = missed.error.to_string();
            assert!(said.contains(&format!("locks/{held:02}.lock")), "{said}");
        }
        lock.unlock().unwrap();
        assert_eq!(store.sweep().unwrap().deleted, want.len(), "{finished}");
        ids.retain(|id| store.get(id).unwrap().is_some());
        assert!(ids.is_empty(), "{finished}: {ids:?} left");
    }
}

/// A sweep that waits for a stripe another process holds holds no other
/// stripe while it waits: a write of a task of another stripe goes on
/// meanwhile. (The sweep took every stripe in order and waited for the
/// held one holding all those below it, for its `stripe_wait`, 30 s by
/// default: every write to them waited as long.) Once the stripe is let
/// go, the sweep deletes every expired task.
#[cfg(target_os = "linux")]
#[test]
fn a_sweep_waiting_for_a_held_stripe_holds_up_no_write_of_another() {
    let (dir, clock, sweeper, writer) = sweeper_and_writer(Duration::from_secs(10));
    let held = 63;
    let ttl = Duration::from_secs(10);
    // More than a large pass: the sweep takes every stripe at once.
    let expired = finished_with_ttl(&writer, 300, ttl);
    let live = std::iter::repeat_with(|| writer.create(NewTask::new()).unwrap())
        .find(|task| common::stripe(task.id.as_str()) != held)
        .unwrap();
    clock.advance(ttl * 2);
    let path = dir.path().join("locks").join(format!("{held:02}.lock"));
    let lock = common::open_lock_file(&path);
    lock.lock().unwrap();
    std::thread::scope(|s| {
        let sweep = s.spawn(|| sweeper.sweep());
        common::wait_for_lock_waiter(&path, "the sweep to wait for the held stripe", || {
            sweep.is_finished()
        });
        let done = writer.complete(&live.id, json!("while the sweep waits"));
        assert!(
            matches!(&done, Ok(t) if t.is_applied()),
            "the write waited with the sweep: {done:?}"
        );
        assert!(
            !sweep.is_finished(),
            "the sweep went on without the held stripe"
        );
        lock.unlock().unwrap();
        let swept = sweep.join().unwrap().unwrap();
        assert_eq!(swept.deleted, expired.len(), "{:?}", swept.missed);
    });
    for id in &expired {
        assert_eq!(writer.get(id).unwrap(), None);
    }
}

/// The same after the sweep met two other stripes held for a moment
/// (here 10 and 20, each let go once the sweep waits for it): a write of
/// a third stripe goes on while it waits for the held one. (Its third try
/// took every stripe waiting for each holding those before it, for as
/// long as the held one's `stripe_wait`.)
#[cfg(target_os = "linux")]
#[test]
fn a_sweep_that_met_busy_stripes_holds_up_no_write_while_it_waits_for_a_held_one() {
    let (dir, clock, sweeper, writer) = sweeper_and_writer(Duration::from_secs(3));
    let ttl = Duration::from_secs(10);
    let expired = finished_with_ttl(&writer, 300, ttl);
    let live = std::iter::repeat_with(|| writer.create(NewTask::new()).unwrap())
        .find(|task| common::stripe(task.id.as_str()) < 63)
        .unwrap();
    clock.advance(ttl * 2);
    let path = |s: usize| dir.path().join("locks").join(format!("{s:02}.lock"));
    let held: Vec<_> = [10, 20, 63]
        .iter()
        .map(|&s| {
            let lock = common::open_lock_file(&path(s));
            lock.lock().unwrap();
            lock
        })
        .collect();
    std::thread::scope(|s| {
        let sweep = s.spawn(|| sweeper.sweep());
        // Two writes that are brief: each let go once the sweep waits for it.
        for (lock, stripe) in held[..2].iter().zip([10, 20]) {
            common::wait_for_lock_waiter(&path(stripe), "the sweep to wait", || {
                sweep.is_finished()
            });
            lock.unlock().unwrap();
        }
        common::wait_for_lock_waiter(&path(63), "the sweep to wait for 63", || {
            sweep.is_finished()
        });
        let done = writer.complete(&live.id, json!("while the sweep waits"));
        held[2].unlock().unwrap();
        let swept = sweep.join().unwrap().unwrap();
        assert_eq!(swept.deleted, expired.len(), "{:?}", swept.missed);
        assert!(
            matches!(&done, Ok(t) if t.is_applied()),
            "the write (stripe {}) waited with the sweep: {done:?}",
            common::stripe(live.id.as_str())
        );
    });
}

/// The same where a sweep removes stale `expiring/` entries, which it does
/// under every stripe of those entries at once: entries left by another
/// process's sweep that removed its tasks' files from `done/` and was
/// stopped before it removed their entries (it leaves them to its end),
/// one of them of the stripe that stopped process holds. A write of a
/// task of another of those stripes goes on while the sweep waits. (The
/// sweep waited for stripe 63 holding the lower stripes of the entries.)
#[cfg(target_os = "linux")]
#[test]
fn a_sweep_removing_stale_expiry_entries_holds_up_no_write_while_it_waits() {
    let (dir, clock, sweeper, writer) = sweeper_and_writer(Duration::from_secs(3));
    let ttl = Duration::from_secs(10);
    let finished_in = |stripe: usize| loop {
        let id = writer.create(NewTask::new().ttl(ttl)).unwrap().id;
        assert!(writer.complete(&id, json!(1)).unwrap().is_applied());
        if common::stripe(id.as_str()) == stripe {
            return id;
        }
    };
    // Their files gone from `done/`, their `expiring/` entries left.
    let low = finished_in(5);
    let high = finished_in(63);
    let live = std::iter::repeat_with(|| writer.create(NewTask::new()).unwrap())
        .find(|task| common::stripe(task.id.as_str()) == 5)
        .unwrap();
    clock.advance(ttl * 2);
    for id in [&low, &high] {
        fs::remove_file(dir.path().join("done").join(format!("{id}.json"))).unwrap();
    }
    let path = dir.path().join("locks").join("63.lock");
    let lock = common::open_lock_file(&path);
    lock.lock().unwrap();
    std::thread::scope(|s| {
        let sweep = s.spawn(|| sweeper.sweep());
        common::wait_for_lock_waiter(&path, "the sweep to wait for 63", || sweep.is_finished());
        let done = writer.complete(&live.id, json!("while the sweep waits"));
        lock.unlock().unwrap();
        sweep.join().unwrap().unwrap();
        assert!(
            matches!(&done, Ok(t) if t.is_applied()),
            "the write (stripe 5) waited with the sweep: {done:?}"
        );
    });
}

/// A sweep beside writers of its own handle, six threads updating tasks of
/// every stripe without a pause, ends: its every-stripe chunks take the
/// stripes those writers hold for moments. (Its third try and after gave
/// up at once on a stripe another thread of the handle held, let go of
/// all, and started over, with no bound: the sweep ran for minutes.)
#[cfg(feature = "fault-injection")]
#[test]
fn a_sweep_beside_busy_writers_of_its_own_handle_ends() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap());
    let store = FileStore::builder(dir.path())
        .clock(Arc::new(clock.clone()))
        .durability(Durability::Eventual)
        .large_passes_from(1)
        .open()
        .unwrap();
    let ttl = Duration::from_secs(10);
    let expired = finished_with_ttl(&store, 20, ttl);
    let live: Vec<taskstore::TaskId> = (0..64)
        .map(|stripe| {
            let id = common::id_in_stripe("live", stripe);
            store.create(NewTask::new().id(id.clone())).unwrap().id
        })
        .collect();
    clock.advance(ttl * 2);
    let (stop, writes) = (AtomicBool::new(false), AtomicUsize::new(0));
    let (store, live, stop, writes) = (&store, &live, &stop, &writes);
    std::thread::scope(|s| {
        for writer in 0..6 {
            s.spawn(move || {
                let mut n = writer * 21;
                while !stop.load(Ordering::Relaxed) {
                    let update = TaskUpdate::new().metadata("n", json!(n));
                    let updated = store.update(&live[n % live.len()], update).unwrap();
                    assert!(updated.is_applied(), "{updated:?}");
                    writes.fetch_add(1, Ordering::Relaxed);
                    n += 5;
                }
            });
        }
        let (sent, swept) = std::sync::mpsc::channel();
        s.spawn(move || {
            let _ = sent.send(store.sweep());
        });
        let swept = swept.recv_timeout(common::HANG);
        stop.store(true, Ordering::Relaxed);
        let swept = swept
            .unwrap_or_else(|_| {
                panic!(
                    "the sweep still runs after {:?}, beside {} writes",
                    common::HANG,
                    writes.load(Ordering::Relaxed)
                )
            })
            .unwrap();
        assert_eq!(swept.deleted, expired.len(), "{:?}", swept.missed);
    });
}

/// Finished tasks with a TTL, made through a handle gone since, whose
/// `expiring/` entries a power loss took (under `Eventual`): those of
/// `lost`, beside `kept`, which keep theirs.
fn finished_without_entries(root: &Path, lost: &[&taskstore::TaskId], kept: &[&taskstore::TaskId]) {
    let writer = FileStore::open(root).unwrap();
    for &id in lost.iter().chain(kept) {
        let ttl = Duration::from_secs(3_600);
        writer
            .create(NewTask::new().id(id.clone()).ttl(ttl))
            .unwrap();
        assert!(writer.complete(id, json!(0)).unwrap().is_applied());
    }
    for id in lost {
        assert!(has_entry(root, id));
        for entry in fs::read_dir(root.join("expiring")).unwrap() {
            let entry = entry.unwrap();
            if entry
                .file_name()
                .to_string_lossy()
                .ends_with(&format!(".{id}"))
            {
                fs::remove_file(entry.path()).unwrap();
            }
        }
    }
}

/// Whether task `id` has an entry in `expiring/`.
fn has_entry(root: &Path, id: &taskstore::TaskId) -> bool {
    fs::read_dir(root.join("expiring")).unwrap().any(|entry| {
        entry
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(&format!(".{id}"))
    })
}

/// A listing of history that gives a finished task its lost `expiring/`
/// entry back waits for the task's stripe (a process stopped while it
/// holds it) without holding what its handle knows of history: another
/// thread's listing through the same handle lists meanwhile. Once the
/// stripe is let go, the first listing gives the entry back. (It waited
/// holding the handle's history, and every other listing of the handle
/// waited with it, as long as its `stripe_wait`.)
#[cfg(target_os = "linux")]
#[test]
fn a_listing_waiting_to_give_an_index_entry_back_holds_up_no_other_listing() {
    let test = "a_listing_waiting_to_give_an_index_entry_back_holds_up_no_other_listing";
    common::hold_locks_if_the_holder();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let (held, free) = (
        common::id_in_stripe("held", 7),
        common::id_in_stripe("free", 33),
    );
    finished_without_entries(&root, &[&held], &[&free]);
    let lock = common::stripe_lock(&root, held.as_str());
    let mut holder = common::stopped_holding(test, tmp.path(), &lock);
    // Waits for the stripe longer than the test waits for the other listing.
    let reader = FileStore::builder(&root)
        .stripe_wait(common::HANG * 2)
        .open()
        .unwrap();
    std::thread::scope(|s| {
        let first = s.spawn(|| reader.list(&ListQuery::all()));
        common::wait_for_lock_waiter(&lock, "the listing to wait for the held stripe", || {
            first.is_finished()
        });
        let (sent, second) = std::sync::mpsc::channel();
        let reader = &reader;
        s.spawn(move || {
            let _ = sent.send(common::ids_of(reader, &ListQuery::all()));
        });
        let second = second.recv_timeout(common::HANG);
        let still_waiting = !first.is_finished();
        // Let go before any assertion: the first listing ends either way.
        holder.kill();
        let first = first.join().unwrap().unwrap();
        let mut second = second.expect("the second listing waited for the first one's wait");
        assert!(still_waiting, "the first listing gave up its wait");
        second.sort();
        let mut want = vec![held.clone(), free.clone()];
        want.sort();
        assert_eq!(second, want);
        assert_eq!(first.tasks.len(), 2, "{first:?}");
    });
    assert!(has_entry(&root, &held), "the entry is given back");
}

/// A listing of history gives back every lost `expiring/` entry whose
/// task's stripe it can take, past one a stopped process holds (its
/// `stripe_wait` runs out), and that one at the next listing once the
/// stripe is let go. (It stopped at the first task it could not lock, and
/// the tasks after it, the held one too, kept no entry for as long as the
/// handle lived: no sweep would ever delete them.)
#[cfg(target_os = "linux")]
#[test]
fn a_listing_gives_back_every_index_entry_it_can_and_the_rest_once_let_go() {
    let test = "a_listing_gives_back_every_index_entry_it_can_and_the_rest_once_let_go";
    common::hold_locks_if_the_holder();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let held = common::id_in_stripe("held", 7);
    let free: Vec<_> = (20..28).map(|s| common::id_in_stripe("free", s)).collect();
    let lost: Vec<_> = std::iter::once(&held).chain(&free).collect();
    finished_without_entries(&root, &lost, &[]);
    let lock = common::stripe_lock(&root, held.as_str());
    let mut holder = common::stopped_holding(test, tmp.path(), &lock);
    let reader = FileStore::builder(&root)
        .stripe_wait(Duration::from_millis(300))
        .open()
        .unwrap();
    assert_eq!(reader.list(&ListQuery::all()).unwrap().tasks.len(), 9);
    let without: Vec<_> = free.iter().filter(|id| !has_entry(&root, id)).collect();
    assert!(
        without.is_empty(),
        "left without their entries: {without:?}"
    );
    assert!(!has_entry(&root, &held));
    holder.kill();
    assert_eq!(reader.list(&ListQuery::all()).unwrap().tasks.len(), 9);
    assert!(
        has_entry(&root, &held),
        "the held stripe's entry, once let go"
    );
}
