//! Read-only stores: they open, get and list, report what they cannot read,
//! hold two copies of a task (the terminal one wins, the failed copy named,
//! even out of descriptors), and open after their directory grew and emptied.

use super::*;

/// A store whose `active/` grew large and emptied (ext4 directories never
/// shrink), with a leftover of an interrupted compaction, on a file system
/// mounted read-only: an open alone would compact it, but nothing can be
/// written, so it opens as it is.
#[test]
fn a_read_only_store_whose_directory_grew_and_emptied_still_opens() {
    // On the file system of the temp dir (ext4 here), where directories
    // keep their size.
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = Mounted::mount_or_skip(dir.path(), true) else {
        return;
    };
    let root = dir.path().join("store");
    let Some((kept, _)) = common::grown_and_emptied(&root) else {
        return;
    };
    fs::create_dir(root.join("active.compact")).unwrap();
    fs::write(root.join("active.compact").join("x.json"), b"{}").unwrap();
    mount.read_only();

    let store = FileStore::open(&root).expect("a read-only store opens");
    assert_eq!(store.get(&kept.id).unwrap(), Some(kept.clone()));
    assert_eq!(
        store.list(&ListQuery::active()).unwrap().tasks,
        vec![kept.clone()]
    );
    assert!(root.join("active.compact").exists(), "nothing was written");
}

/// A store at `<dir>/store`, on a tmpfs mounted at `dir`, with two tasks:
/// the first finished, its running copy put back in `active/` beside the
/// terminal one (what a power loss in the middle of its move leaves), then
/// the mount made read-only, so that no `open` can resolve the two. The
/// mount, the store, the finished task and the other (running); `None`
/// where the test cannot mount (said why).
fn read_only_with_two_copies(dir: &Path) -> Option<(Mounted<'_>, PathBuf, Task, Task)> {
    let mount = Mounted::mount_or_skip(dir, false)?;
    let root = dir.join("store");
    let store = FileStore::open(&root).unwrap();
    let task = store.create(NewTask::new()).unwrap();
    let other = store.create(NewTask::new()).unwrap();
    let running = fs::read(task_path(&root, "active", &task.id)).unwrap();
    let done = store.complete(&task.id, json!(1)).unwrap().into_task();
    drop(store);
    fs::write(task_path(&root, "active", &task.id), running).unwrap();
    mount.read_only();
    Some((mount, root, done, other))
}

/// A power loss left a finished task's running copy in `active/` beside its
/// terminal one, and the store is read-only, so `open` cannot resolve the
/// two: every read answers with the terminal version. `get` does, even
/// once the handle's snapshot of `active/` is complete (a `get` of a
/// running task may be served from it, but not of this task); `list` of
/// the active tasks leaves it out, and `list` of all shows it once,
/// terminal; other running tasks are listed and got as ever.
#[test]
fn a_read_only_store_with_two_copies_still_gets_the_terminal_one() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_mount, root, done, other)) = read_only_with_two_copies(dir.path()) else {
        return;
    };
    let store = FileStore::open(&root).expect("a read-only store opens");
    assert!(
        task_path(&root, "active", &done.id).exists(),
        "unresolved: the store cannot be written"
    );
    for _ in 0..3 {
        let active = store.list(&ListQuery::active()).unwrap();
        assert_eq!(
            active.tasks,
            vec![other.clone()],
            "the stale running copy is not listed as running"
        );
        assert!(active.skipped.is_empty(), "{:?}", active.skipped);
        let all = store.list(&ListQuery::all()).unwrap();
        assert_eq!(all.tasks, vec![done.clone(), other.clone()]);
        let working = store
            .list(&ListQuery::all().status(TaskStatus::Working))
            .unwrap();
        assert_eq!(working.tasks, vec![other.clone()]);
        assert_eq!(store.get(&done.id).unwrap(), Some(done.clone()));
        assert_eq!(store.get(&other.id).unwrap(), Some(other.clone()));
    }
}

/// The same read-only store with two copies of a task, listed by a process
/// out of file descriptors (`RLIMIT_NOFILE` reached) once its handle knows
/// every running task: the listing must read the task's other copy, and
/// fails with an I/O error naming the file and `EMFILE`, as a listing
/// that cannot read a task file does. (It answered `Ok`, reporting the
/// copy as a file left in place for want of a descriptor.) Once
/// descriptors are free again, the same handle lists as before.
#[test]
fn a_read_only_store_with_two_copies_listed_out_of_descriptors_fails_naming_the_file() {
    if let Some((role, args)) = common::role() {
        assert_eq!(role, "out_of_descriptors");
        return two_copies_out_of_descriptors(Path::new(&args[0]), &args[1], &args[2]);
    }
    let dir = tempfile::tempdir().unwrap();
    let Some((_mount, root, task, other)) = read_only_with_two_copies(dir.path()) else {
        return;
    };

    let logs = tempfile::tempdir().unwrap();
    let test = "read_only::a_read_only_store_with_two_copies_listed_out_of_descriptors_fails_naming_the_file";
    let args = [
        root.display().to_string(),
        task.id.to_string(),
        other.id.to_string(),
    ];
    common::spawn(logs.path(), test, "out_of_descriptors", &args).finish();
}

/// The same read-only store with two copies of a task, its running copy
/// failing to open (`EIO`) once the handle knows every running task: the
/// listing leaves the task out and reports the file that failed, the
/// running copy, left in place (it named the copy in `done/`, which was
/// never read).
#[cfg(feature = "fault-injection")]
#[test]
fn a_read_only_store_with_two_copies_reports_the_copy_that_failed() {
    use taskstore::{Fault, FaultInjector, FsOp};
    let dir = tempfile::tempdir().unwrap();
    let Some((_mount, root, task, other)) = read_only_with_two_copies(dir.path()) else {
        return;
    };

    let faults = FaultInjector::new();
    let store = FileStore::builder(&root)
        .fault_injector(faults.clone())
        .open()
        .expect("a read-only store opens");
    assert_eq!(
        store.list(&ListQuery::active()).unwrap().tasks,
        vec![other.clone()]
    );
    let failing = task_path(&root, "active", &task.id);
    faults.fail_at(FsOp::Open, &failing, Fault::Eio);
    let page = store.list(&ListQuery::active()).unwrap();
    assert_eq!(page.tasks, vec![other]);
    let reported: Vec<_> = page
        .skipped
        .iter()
        .map(|s| (s.location.clone(), s.action))
        .collect();
    assert_eq!(
        reported,
        vec![(failing.display().to_string(), UnreadableAction::LeftInPlace)],
        "{:?}",
        page.skipped
    );
}

/// The child of
/// [`a_read_only_store_with_two_copies_listed_out_of_descriptors_fails_naming_the_file`].
fn two_copies_out_of_descriptors(root: &Path, task: &str, other: &str) {
    let task = TaskId::parse(task).unwrap();
    let store = FileStore::open(root).expect("a read-only store opens");
    let other = store
        .get(&TaskId::parse(other).unwrap())
        .unwrap()
        .expect("the other task");
    let first = store.list(&ListQuery::active()).unwrap();
    assert_eq!(first.tasks, vec![other.clone()]);

    let had = common::set_soft_limit(libc::RLIMIT_NOFILE, common::lowest_free_descriptor());
    let listed = store.list(&ListQuery::active());
    common::set_soft_limit(libc::RLIMIT_NOFILE, had);
    let copies = [
        task_path(root, "active", &task),
        task_path(root, "done", &task),
    ];
    match listed {
        Err(Error::Io { path, source, .. })
            if source.raw_os_error() == Some(libc::EMFILE) && copies.contains(&path) => {}
        Err(e) => panic!("out of descriptors, the listing failed otherwise: {e}"),
        Ok(page) => panic!(
            "out of descriptors, the listing answered Ok: {} tasks, skipped {:?}",
            page.tasks.len(),
            page.skipped
        ),
    }
    let again = store.list(&ListQuery::active()).unwrap();
    assert_eq!(again.tasks, vec![other]);
    assert!(again.skipped.is_empty(), "{:?}", again.skipped);
}

#[test]
fn a_read_only_store_opens_gets_and_lists_and_reports_what_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = Mounted::mount_or_skip(dir.path(), false) else {
        return;
    };
    let root = dir.path().join("store");
    let store = FileStore::open(&root).unwrap();
    let running = store.create(NewTask::new()).unwrap();
    let done = store.create(NewTask::new()).unwrap();
    let done = store.complete(&done.id, json!(1)).unwrap().into_task();
    drop(store);
    // A crashed writer's temp file, a corrupt task, a stray file.
    fs::write(
        root.join("tmp").join(format!("{}.999.1.tmp", running.id)),
        b"{",
    )
    .unwrap();
    let bad = TaskId::parse("bad").unwrap();
    fs::write(task_path(&root, "active", &bad), b"{ not json").unwrap();
    fs::write(root.join("done").join("notes.txt"), b"hello").unwrap();
    mount.read_only();

    let store = FileStore::open(&root).expect("a read-only store opens");
    assert_eq!(store.get(&running.id).unwrap(), Some(running.clone()));
    assert_eq!(store.get(&done.id).unwrap(), Some(done.clone()));
    match store.get(&bad) {
        Err(Error::Corrupt { path, .. }) => assert_eq!(path, task_path(&root, "active", &bad)),
        other => panic!("expected Corrupt naming the file, got {other:?}"),
    }
    let page = store
        .list(&ListQuery::all())
        .expect("a read-only store lists");
    assert_eq!(page.tasks, vec![running.clone(), done.clone()]);
    let mut reported: Vec<_> = page
        .skipped
        .iter()
        .map(|s| (s.location.clone(), s.action))
        .collect();
    reported.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        reported,
        vec![
            (
                root.join("active/bad.json").display().to_string(),
                UnreadableAction::LeftInPlace
            ),
            (
                root.join("done/notes.txt").display().to_string(),
                UnreadableAction::LeftInPlace
            ),
        ],
        "each bad entry reported, none moved"
    );
    let swept = store
        .sweep()
        .expect("a sweep of a read-only store reports, never fails");
    assert_eq!(swept.deleted, 0);
    assert!(!swept.skipped.is_empty());
    let reaped = store
        .reap()
        .expect("a reap of a read-only store reports, never fails");
    assert!(reaped.tasks.is_empty());
    // A write is an error naming what failed.
    match store.create(NewTask::new()) {
        Err(Error::Io { path, .. }) => assert!(path.starts_with(&root), "{path:?}"),
        other => panic!("expected Io, got {other:?}"),
    }
}
