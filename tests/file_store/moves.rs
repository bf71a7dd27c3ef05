//! Terminal moves interrupted and tasks left in both areas, resolved at open
//! and finished later; crashed writers' temp files removed and counted as
//! leftovers.

use super::*;

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
