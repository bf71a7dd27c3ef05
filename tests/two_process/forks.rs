//! Processes forked from one that had handles: they take none of the parent's
//! change notices, free their own replaced files and drop their handles
//! cleanly.

use super::*;

// ---------------------------------------------------------------------------
// Processes forked from one that had handles.

/// A process forked from one that had a handle on the store, and the
/// process it was forked from, each list through a handle; then the forked
/// child makes a task and lists again: the parent's next listing has the
/// task. Twice: with a handle each opened after the fork, the parent's
/// first one dropped before it (its inotify instance is kept for the next
/// watch, and the child has a copy of its descriptor); and with the one
/// handle opened before the fork, used in both (the child has a copy of
/// its watch's descriptor). Were both processes to watch through one
/// instance, the child's listing would read, and so take away, the change
/// notice the parent's handle looks for, and the parent would list from
/// memory without the task. The forking runs in a child process of its own
/// (this test binary run again for it alone), where no other test's thread
/// can hold a lock at the fork.
#[cfg(target_os = "linux")]
#[test]
fn a_forked_process_takes_none_of_its_parents_change_notices() {
    const TEST: &str = "forks::a_forked_process_takes_none_of_its_parents_change_notices";
    if let Some((role, args)) = common::role() {
        return forker(&role, &args);
    }
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().to_owned();
    for role in ["handles-after-a-drop", "one-handle-for-both"] {
        let store = work.join(role);
        drop(open(&store, "setup"));
        spawn(&work, TEST, role, &args(&store, &work, &[])).finish();
    }
}

#[cfg(target_os = "linux")]
fn forker(role: &str, args: &[String]) {
    let (store, _) = dirs(args);
    let listed = |s: &FileStore| s.list(&ListQuery::active()).unwrap().tasks;
    let before = open(&store, "before");
    assert!(listed(&before).is_empty());
    let shared = match role {
        "handles-after-a-drop" => {
            drop(before);
            None
        }
        "one-handle-for-both" => Some(before),
        _ => panic!("unknown role {role}"),
    };
    // The handle each process lists through: the shared one, or one of
    // its own.
    let own = || shared.is_none().then(|| open(&store, "own"));
    let mut child = common::fork(|| {
        let own = own();
        let s = own.as_ref().or(shared.as_ref()).unwrap();
        assert!(listed(s).is_empty());
        s.create(NewTask::new().id(id("forked", 0))).unwrap();
        assert_eq!(listed(s).len(), 1);
        // Kept open until the child ends, as in a process still running.
        std::mem::forget(own);
        true
    });
    let own = own();
    let s = own.as_ref().or(shared.as_ref()).unwrap();
    assert!(listed(s).is_empty());
    child.go();
    child.finish();
    let tasks = listed(s);
    assert_eq!(
        tasks.iter().map(|task| &task.id).collect::<Vec<_>>(),
        [&id("forked", 0)],
        "{role}: the parent's listing after the forked child made a task"
    );
}

/// A process forked from one whose handle had replaced a task's file (so
/// a thread of the parent's frees the old versions) writes through that
/// handle: it frees its own replaced files, and dropping the handle there
/// ends cleanly. (The child handed them to the parent's thread, which does
/// not run in it: they stayed in `tmp/`; and its drop, waiting for that
/// thread, panicked.) The forking runs in a child process of its own.
#[cfg(target_os = "linux")]
#[test]
fn a_forked_process_frees_its_own_replaced_files_and_drops_its_handle_cleanly() {
    const TEST: &str =
        "forks::a_forked_process_frees_its_own_replaced_files_and_drops_its_handle_cleanly";
    if common::role().is_some() {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        let handle = open(&store, "parent");
        let task = handle.create(NewTask::new()).unwrap();
        // A replacing write: the parent's reclaiming thread starts.
        let update = TaskUpdate::new().status_message("parent");
        assert!(handle.update(&task.id, update).unwrap().is_applied());
        let child = common::fork(|| {
            let update = TaskUpdate::new().status_message("child");
            let applied = handle.update(&task.id, update).unwrap().is_applied();
            drop(handle);
            // The child's parks carry its pid.
            let pid = format!(".{}.", std::process::id());
            let left: Vec<String> = std::fs::read_dir(store.join("tmp"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name.contains(&pid))
                .collect();
            assert_eq!(left, Vec::<String>::new(), "the child's replaced files");
            applied
        });
        child.finish();
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    spawn(tmp.path(), TEST, "forker", &[]).finish();
}
