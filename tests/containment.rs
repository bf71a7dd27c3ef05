//! One bad file, one odd entry, one hostile swap never fails the whole store,
//! is never silently skipped, and never loses a task: every case of the
//! containment rules, on real files.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::json;
use taskstore::backend::UnreadableAction;
use taskstore::{
    Error, EventLog, FileCheck, FileStore, ListQuery, ManualClock, NewTask, Task, TaskEventKind,
    TaskId, TaskStatus, TaskStore,
};
use time::OffsetDateTime;

fn count(dir: &Path) -> usize {
    fs::read_dir(dir).map_or(0, |d| d.count())
}

fn task_path(root: &Path, area: &str, id: &TaskId) -> std::path::PathBuf {
    root.join(area).join(format!("{id}.json"))
}

/// Held by a test while it has a tmpfs mounted, and by every other process
/// spawn of this binary: a remount read-only fails ("mount point is busy")
/// while any process holds a file of it open for writing, and a child
/// another test forks holds copies of this process's descriptors until it
/// execs.
static SPAWNS: Mutex<()> = Mutex::new(());

fn spawns() -> MutexGuard<'static, ()> {
    SPAWNS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A file system mounted at `dir` (a tmpfs, or `dir` bound onto itself, on
/// the file system it is on), remounted read-only on demand, unmounted on
/// drop; no other test of this binary spawns a process meanwhile.
struct Mounted<'a> {
    dir: &'a Path,
    /// Bound onto itself, rather than a tmpfs.
    bind: bool,
    _alone: MutexGuard<'static, ()>,
}

impl Mounted<'_> {
    /// Mounts one, or says why it cannot (not root, no `mount`).
    fn mount(dir: &Path, bind: bool) -> Result<Mounted<'_>, String> {
        let alone = spawns();
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map_err(|e| format!("cannot run id: {e}"))?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err("not running as root".into());
        }
        let mut mount = Command::new("mount");
        if bind {
            mount.arg("--bind").arg(dir);
        } else {
            mount.args(["-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs"]);
        }
        let status = mount
            .arg(dir)
            .status()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !status.success() {
            return Err(format!("mount failed: {status}"));
        }
        Ok(Mounted {
            dir,
            bind,
            _alone: alone,
        })
    }

    /// [`mount`](Self::mount), or `None` after saying why the test skips
    /// (a failure instead with `TASKSTORE_REQUIRE_ROOT_TESTS=1`).
    fn mount_or_skip(dir: &Path, bind: bool) -> Option<Mounted<'_>> {
        match Mounted::mount(dir, bind) {
            Ok(mount) => Some(mount),
            Err(why) => {
                common::Skips::from_env("containment")
                    .skip_all("a read-only store test (it mounts a file system)", &why);
                None
            }
        }
    }

    fn read_only(&self) {
        let options = if self.bind {
            "remount,bind,ro"
        } else {
            "remount,ro"
        };
        let status = Command::new("mount")
            .args(["-o", options])
            .arg(self.dir)
            .status()
            .unwrap();
        assert!(status.success(), "remount read-only");
    }
}

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir).status();
    }
}

/// Every path under `dir`, with its owner, mode and size, in order.
fn tree(dir: &Path) -> Vec<(std::path::PathBuf, u32, u32, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            found.extend(tree(&path));
        }
        found.push((path, meta.uid(), meta.mode(), meta.len()));
    }
    found.sort();
    found
}

/// Another program's directory that holds an `active/` and a `done/` with
/// files of its own (and no marker, `tmp/` or `locks/`) is not a store:
/// an open refuses it, naming a file it holds, and makes nothing there,
/// as for any directory that holds files. (It was made a store, and the
/// first listing set its files aside into `quarantine/`.) A store half
/// made by another open (empty areas) is still one to finish, and the
/// caller may still allow it.
#[test]
fn a_directory_with_areas_of_its_own_is_not_made_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app");
    fs::create_dir_all(app.join("active")).unwrap();
    fs::create_dir_all(app.join("done")).unwrap();
    fs::write(app.join("active").join("job1.json"), b"{\"id\":\"job1\"}").unwrap();
    fs::write(app.join("done").join("README"), b"notes").unwrap();
    let before = tree(&app);
    let Err(refused) = FileStore::open(&app) else {
        panic!("another program's directory was made a store");
    };
    let said = refused.to_string();
    assert!(
        matches!(refused, Error::InvalidStore { .. })
            && said.contains("not a store")
            && said.contains("job1.json"),
        "{said}"
    );
    assert_eq!(tree(&app), before, "nothing made or moved");
    let store = FileStore::builder(&app)
        .create_in_non_empty_dir(true)
        .open()
        .expect("allowed, it is made one");
    drop(store);
    // Half made (empty areas): finished.
    let half = dir.path().join("half");
    fs::create_dir_all(half.join("active")).unwrap();
    fs::create_dir_all(half.join("expiring")).unwrap();
    FileStore::open(&half).expect("a store half made is finished");
}

/// An open that meets the handles lock held alone by another open (one
/// compacting the store's directories or moving its format, stopped in
/// the middle) waits at most its `lock_wait`, then fails naming the lock
/// file and why; so does a check, within its batch wait. (Both waited for
/// ever, saying nothing: the command hung.) Once the lock is let go, they
/// open.
#[test]
fn an_open_waits_for_the_handles_lock_only_as_long_as_it_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    drop(FileStore::open(&root).unwrap());
    let lock_path = root.join("locks").join("handles.lock");
    let held = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&lock_path)
        .unwrap();
    held.lock().unwrap();
    let Err(e) = FileStore::builder(&root)
        .lock_wait(Duration::from_millis(50))
        .open()
    else {
        panic!("opened while another open holds the store alone");
    };
    let said = e.to_string();
    assert!(
        said.contains(&lock_path.display().to_string()) && said.contains("alone"),
        "{said}"
    );
    let Err(e) = FileCheck::open_within(&root, Duration::from_millis(50)) else {
        panic!("checked while another open holds the store alone");
    };
    assert!(e.to_string().contains("handles.lock"), "{e}");
    held.unlock().unwrap();
    FileStore::builder(&root)
        .lock_wait(Duration::from_millis(50))
        .open()
        .expect("opens once the lock is let go");
    FileCheck::open_within(&root, Duration::from_millis(50)).expect("checked once it is let go");
}

/// A store that belongs to another user is refused by a process that could
/// write into it (root, say), naming both users, and nothing in it is made
/// or changed: what it wrote (a lock file, a task file, a temp file) would
/// be its own, `0600`, and the store's owner could then neither lock nor
/// read it. Mounted read-only it opens, as nothing can be written. (Root's
/// command made lock and task files its own, and the service could no
/// longer lock those stripes or read those tasks.)
#[test]
fn a_store_of_another_user_is_refused_where_it_could_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = Mounted::mount_or_skip(dir.path(), false) else {
        return;
    };
    let root = dir.path().join("store");
    let store = FileStore::open(&root).unwrap();
    let task = store.create(NewTask::new()).unwrap();
    drop(store);
    // A uid of no one here (the overflow uid, an NFS server's squashed
    // root, is let through: below).
    let other = 4_242;
    let give = |to: u32| {
        std::os::unix::fs::lchown(&root, Some(to), Some(to)).unwrap();
        for (path, ..) in tree(&root) {
            std::os::unix::fs::lchown(&path, Some(to), Some(to)).unwrap();
        }
    };
    give(other);
    let before = tree(&root);
    let refused = |what: &str, e: Error| {
        let said = e.to_string();
        assert!(
            matches!(e, Error::InvalidStore { .. })
                && said.contains("uid 4242")
                && said.contains("runs as root"),
            "{what}: {said}"
        );
    };
    match FileStore::open(&root) {
        Err(e) => refused("open", e),
        Ok(_) => panic!("another user's store was opened for writing"),
    }
    match FileCheck::open(&root) {
        Err(e) => refused("check", e),
        Ok(_) => panic!("another user's store was opened for a check"),
    }
    assert_eq!(tree(&root), before, "nothing made or changed");
    // Owned by the overflow uid, as an NFS server that squashes root
    // shows root's own files: root's store, opened.
    let overflow: u32 = fs::read_to_string("/proc/sys/fs/overflowuid")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    give(overflow);
    drop(FileStore::open(&root).expect("the overflow uid's store opens for root"));
    give(other);
    mount.read_only();
    let store = FileStore::open(&root).expect("read-only, it opens");
    assert_eq!(store.get(&task.id).unwrap(), Some(task));
    let check = FileCheck::open(&root).expect("read-only, it is checked");
    assert!(check.verify().unwrap().is_clean());
    drop((store, check));
    // A store whose root is another user's (a volume's mount point given
    // to the service's group), its own files the service's: opened. So
    // is a new store in such a directory.
    let elsewhere = tempfile::tempdir().unwrap();
    let volume = elsewhere.path().join("volume");
    fs::create_dir(&volume).unwrap();
    std::os::unix::fs::lchown(&volume, Some(other), Some(other)).unwrap();
    let ours = FileStore::open(&volume).expect("a new store in another user's directory");
    let task = ours.create(NewTask::new()).unwrap();
    drop(ours);
    let ours = FileStore::open(&volume).expect("the store's files are this user's");
    assert_eq!(ours.get(&task.id).unwrap(), Some(task));
}

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
    let test = "a_read_only_store_with_two_copies_listed_out_of_descriptors_fails_naming_the_file";
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

#[test]
fn odd_entries_in_tmp_never_block_open() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = FileStore::open(&root).unwrap();
    let task = store.create(NewTask::new()).unwrap();
    drop(store);
    let tmp = root.join("tmp");
    fs::create_dir(tmp.join(format!("{}.1234.5.tmp", task.id))).unwrap();
    fs::create_dir(tmp.join("some-dir")).unwrap();
    symlink("/etc/passwd", tmp.join(format!("{}.1234.6.tmp", task.id))).unwrap();
    let alone = spawns();
    Command::new("mkfifo")
        .arg(tmp.join("x.1.2.tmp"))
        .status()
        .unwrap();
    drop(alone);
    let store = FileStore::open(&root).expect("odd entries in tmp/ never block open");
    assert_eq!(store.get(&task.id).unwrap(), Some(task));
    assert_eq!(
        count(&tmp),
        0,
        "tmp/ is clean: {:?}",
        fs::read_dir(&tmp).unwrap().collect::<Vec<_>>()
    );
    assert!(
        count(&root.join("quarantine")) >= 2,
        "the directories were set aside"
    );
    assert!(
        Path::new("/etc/passwd").exists(),
        "a symlink's target is never touched"
    );
    store.sweep().unwrap();
}

/// A foreign entry of `tmp/` that the open's clean-up or a sweep's sets
/// aside is reported as every other entry set aside is: a
/// `task.unreadable` event naming it and where it went (the open's), and
/// in the sweep's `skipped` (a sweep's), once. (Both were set aside with
/// a log line only: a host's sink heard nothing.)
#[test]
fn foreign_entries_of_tmp_set_aside_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    drop(FileStore::open(&root).unwrap());
    let at_open = root.join("tmp").join("scratch");
    fs::write(&at_open, b"mine").unwrap();
    let events = Arc::new(EventLog::new());
    let store = FileStore::builder(&root)
        .sink(events.clone())
        .open()
        .unwrap();
    let reported = |path: &Path| -> Vec<serde_json::Value> {
        events
            .snapshot()
            .into_iter()
            .filter(|r| r.event.kind == TaskEventKind::Unreadable)
            .map(|r| r.event.data.clone())
            .filter(|data| data["location"] == path.display().to_string())
            .collect()
    };
    let said = reported(&at_open);
    assert_eq!(said.len(), 1, "{said:?}");
    assert_eq!(said[0]["action"], "setAside");
    assert!(
        said[0]["movedTo"]
            .as_str()
            .is_some_and(|to| to.starts_with(&root.join("quarantine").display().to_string())),
        "{said:?}"
    );
    assert!(!at_open.exists());
    let at_sweep = root.join("tmp").join("notes");
    fs::write(&at_sweep, b"mine").unwrap();
    let swept = store.sweep().unwrap();
    let skipped: Vec<&str> = swept.skipped.iter().map(|s| s.location.as_str()).collect();
    assert_eq!(skipped, [at_sweep.display().to_string()], "{swept:?}");
    assert_eq!(swept.skipped[0].action, UnreadableAction::SetAside);
    assert_eq!(reported(&at_sweep).len(), 1);
    assert!(!at_sweep.exists());
    // Reported once: the next sweep and listing have nothing to say.
    assert!(store.sweep().unwrap().skipped.is_empty());
    assert!(store.list(&ListQuery::all()).unwrap().skipped.is_empty());
    assert_eq!(reported(&at_open).len() + reported(&at_sweep).len(), 2);
}

#[test]
fn a_file_larger_than_any_task_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::builder(dir.path())
        .max_payload_bytes(64 * 1024)
        .open()
        .unwrap();
    let good = store.create(NewTask::new()).unwrap();
    let id = TaskId::parse("huge").unwrap();
    let path = task_path(dir.path(), "active", &id);
    // 2 GiB, sparse: reading it would take seconds and a gigabyte.
    let file = fs::File::create(&path).unwrap();
    file.set_len(2 << 30).unwrap();
    drop(file);
    match store.get(&id) {
        Err(Error::FileTooLarge {
            path: p,
            size,
            limit,
        }) => {
            assert_eq!(p, path);
            assert_eq!(size, 2 << 30);
            // The largest task any handle writes, whatever its cap (this
            // one's is 64 KiB), and the envelope: what every handle reads.
            let largest = taskstore::LARGEST_TASK as u64;
            assert!(
                (largest..largest + 1024).contains(&limit),
                "the largest task plus the envelope: {limit}"
            );
        }
        other => panic!("expected FileTooLarge, got {other:?}"),
    }
    let page = store.list(&ListQuery::active()).unwrap();
    assert_eq!(page.tasks, vec![good]);
    assert_eq!(page.skipped.len(), 1);
    assert_eq!(page.skipped[0].action, UnreadableAction::LeftInPlace);
    assert!(path.exists(), "left in place: a newer version may read it");
}

#[test]
fn an_area_swapped_for_a_symlink_after_open_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = FileStore::open(&root).unwrap();
    let before = store
        .create(NewTask::new().ttl(Duration::from_millis(1)))
        .unwrap();
    // Someone swaps active/ and done/ for symlinks to a directory of theirs.
    let victim = dir.path().join("victim");
    fs::create_dir(&victim).unwrap();
    fs::write(victim.join(format!("{}.json", before.id)), b"precious").unwrap();
    fs::rename(root.join("active"), dir.path().join("moved-active")).unwrap();
    fs::rename(root.join("done"), dir.path().join("moved-done")).unwrap();
    symlink(&victim, root.join("active")).unwrap();
    symlink(&victim, root.join("done")).unwrap();

    let after = store.create(NewTask::new()).unwrap();
    let _ = store.complete(&after.id, json!(1)).unwrap();
    // Past its TTL by the store's clock (a sleep need not be: the wall
    // clock may run slower than the monotonic one).
    while store.now() <= before.expires_at().unwrap() {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        store.sweep().unwrap().deleted,
        1,
        "the expired task, where it really is"
    );
    assert_eq!(
        fs::read(victim.join(format!("{}.json", before.id))).unwrap(),
        b"precious",
        "the symlink's target is untouched"
    );
    assert_eq!(count(&victim), 1, "nothing was written through the symlink");
    assert!(
        dir.path()
            .join("moved-done")
            .join(format!("{}.json", after.id))
            .exists()
    );
    // A new handle refuses the swapped store outright.
    assert!(matches!(
        FileStore::open(&root),
        Err(Error::InvalidStore { .. })
    ));
}

/// A store named through a symlink is refused, and the error says so,
/// while the directory it points to opens; an area that is a symlink too.
/// (The store's own symlink was refused as "not a directory", which it is,
/// through the link.)
#[test]
fn a_store_named_through_a_symlink_is_refused_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("store");
    FileStore::open(&real).unwrap();
    let link = dir.path().join("link");
    symlink(&real, &link).unwrap();
    // Named with a trailing slash too (which resolves a symlink whatever
    // the open asks: it opened through one), by a handle and a check.
    let slashed = std::path::PathBuf::from(format!("{}/", link.display()));
    let twice = std::path::PathBuf::from(format!("{}//", link.display()));
    for name in [&link, &slashed, &twice] {
        let Err(refused) = FileStore::open(name) else {
            panic!("a store through a symlink opened: {}", name.display());
        };
        let message = refused.to_string();
        assert!(
            matches!(refused, Error::InvalidStore { .. })
                && message.contains("is a symlink")
                && message.contains(&link.display().to_string()),
            "{message}"
        );
        let Err(refused) = FileCheck::open(name) else {
            panic!("a check through a symlink opened: {}", name.display());
        };
        assert!(refused.to_string().contains("is a symlink"), "{refused}");
    }
    FileStore::open(&real).expect("the directory the symlink points to opens");
    FileStore::open(format!("{}/", real.display())).expect("so does its name with a slash");
    fs::rename(real.join("done"), dir.path().join("done")).unwrap();
    symlink(dir.path().join("done"), real.join("done")).unwrap();
    let Err(refused) = FileStore::open(&real) else {
        panic!("a store whose area is a symlink opened");
    };
    let message = refused.to_string();
    assert!(
        message.contains("is a symlink") && message.contains("done"),
        "{message}"
    );
}

/// On tmpfs when there is one: a directory's times there may stay the
/// same across changes made within a tick, so room an operator makes right
/// after the quarantine was found full must still be seen. (The handle
/// kept the full quarantine's times unsettled, and took the same times for
/// "still full": with the room made within the tick, it left the files in
/// place.)
#[test]
fn the_quarantine_is_bounded_and_what_it_cannot_take_is_left_and_reported() {
    let dir = match tempfile::Builder::new()
        .prefix("taskstore-quarantine")
        .tempdir_in("/dev/shm")
    {
        Ok(dir) => dir,
        Err(_) => tempfile::tempdir().unwrap(),
    };
    let store = FileStore::open(dir.path()).unwrap();
    let quarantine = dir.path().join("quarantine");
    for i in 0..995 {
        fs::write(quarantine.join(format!("old-{i}")), b"x").unwrap();
    }
    let store = {
        drop(store);
        FileStore::open(dir.path()).unwrap()
    };
    for i in 0..8 {
        fs::write(
            dir.path().join("active").join(format!("bad-{i}.json")),
            b"{",
        )
        .unwrap();
    }
    let page = store.list(&ListQuery::active()).unwrap();
    let aside = page
        .skipped
        .iter()
        .filter(|s| s.action == UnreadableAction::SetAside)
        .count();
    let left = page
        .skipped
        .iter()
        .filter(|s| s.action == UnreadableAction::LeftInPlace)
        .count();
    assert_eq!((aside, left), (5, 3), "{:?}", page.skipped);
    assert_eq!(count(&quarantine), 1_000);
    assert_eq!(count(&dir.path().join("active")), 3, "left in place");
    // Still reported on the next listing, never silently dropped.
    assert_eq!(store.list(&ListQuery::active()).unwrap().skipped.len(), 3);
    // Finished tasks' files are read by every full listing: left while the
    // quarantine is full, set aside once an operator makes room.
    for i in 0..3 {
        fs::write(dir.path().join("done").join(format!("bad-{i}.json")), b"{").unwrap();
    }
    let set_aside = |page: &taskstore::Page| {
        page.skipped
            .iter()
            .filter(|s| s.action == UnreadableAction::SetAside)
            .count()
    };
    let page = store.list(&ListQuery::all()).unwrap();
    assert_eq!(
        (page.skipped.len(), set_aside(&page)),
        (6, 0),
        "{:?}",
        page.skipped
    );
    for i in 0..2 {
        fs::remove_file(quarantine.join(format!("old-{i}"))).unwrap();
    }
    let page = store.list(&ListQuery::all()).unwrap();
    assert_eq!(
        (page.skipped.len(), set_aside(&page)),
        (6, 2),
        "{:?}",
        page.skipped
    );
    assert_eq!(count(&quarantine), 1_000);
    assert_eq!(count(&dir.path().join("done")), 1, "left in place");
}

#[test]
fn a_clock_stepped_back_never_brings_an_expired_task_back() {
    let dir = tempfile::tempdir().unwrap();
    let start = OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
    let clock = ManualClock::new(start);
    let open = || {
        FileStore::builder(dir.path())
            .clock(Arc::new(clock.clone()))
            .open()
            .unwrap()
    };
    let (a, b) = (open(), open());
    let task = a
        .create(NewTask::new().ttl(Duration::from_secs(10)))
        .unwrap();
    clock.advance(Duration::from_secs(10));
    assert_eq!(a.get(&task.id).unwrap(), None, "expired");
    // The clock is stepped back, before the expiry.
    clock.set(start);
    assert_eq!(
        a.get(&task.id).unwrap(),
        None,
        "this handle's time never goes back"
    );
    assert_eq!(
        b.get(&task.id).unwrap(),
        None,
        "another handle: it was deleted when seen expired"
    );
    assert_eq!(open().get(&task.id).unwrap(), None, "a new handle too");
    assert!(a.list(&ListQuery::all()).unwrap().tasks.is_empty());
}

/// A handle's time never goes back from any time a clock reads: past
/// 2262 and before 1677 too (Unix nanoseconds in an `i64`, where the
/// high-water mark was kept, hold neither, so a clock read there and then
/// stepped back moved the handle's time back with it).
#[test]
fn a_handles_time_never_goes_back_from_times_past_what_nanoseconds_hold() {
    use time::macros::datetime;
    let clock = ManualClock::new(datetime!(1500-01-01 0:00 UTC));
    let store = taskstore::MemoryStore::builder()
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let mut seen = store.now();
    for at in [
        datetime!(1600-01-01 0:00 UTC),
        datetime!(2026-12-01 0:00 UTC),
        datetime!(3000-01-01 0:00 UTC),
        datetime!(2026-12-01 0:00 UTC),
        datetime!(9999-12-31 23:59:59.999_999_999 UTC),
        datetime!(1500-01-01 0:00 UTC),
    ] {
        clock.set(at);
        let now = store.now();
        assert!(now >= seen, "read {now} after {seen} (the clock at {at})");
        assert_eq!(now, at.max(seen), "the clock at {at}");
        seen = now;
    }
}

#[test]
fn events_report_what_a_listing_could_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(EventLog::new());
    let store = FileStore::builder(dir.path())
        .sink(log.clone())
        .open()
        .unwrap();
    store.create(NewTask::new()).unwrap();
    fs::write(dir.path().join("active").join("bad.json"), b"{").unwrap();
    let page = store.list(&ListQuery::all()).unwrap();
    assert_eq!(page.tasks.len(), 1);
    assert_eq!(page.skipped.len(), 1);
    let reported: Vec<_> = log
        .snapshot()
        .into_iter()
        .filter(|r| r.event.kind == TaskEventKind::Unreadable)
        .filter(|r| {
            r.event.data["location"]
                .as_str()
                .is_some_and(|p| p.ends_with("bad.json"))
        })
        .collect();
    assert_eq!(reported.len(), 1, "one event for the unreadable file");
}

/// A foreign name as long as a name may be is set aside too, under a
/// shortened name: the quarantine's prefix made the whole too long, so the
/// move failed and the name was left in place for good (and the report
/// did not say why).
#[test]
fn a_foreign_name_as_long_as_a_name_may_be_is_set_aside() {
    for notices in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let store = FileStore::builder(root)
            .change_notices(notices)
            .open()
            .unwrap();
        store.create(NewTask::new()).unwrap();
        let long = "x".repeat(255);
        fs::write(root.join("active").join(&long), b"junk").unwrap();
        let page = store.list(&ListQuery::active()).unwrap();
        let actions: Vec<_> = page.skipped.iter().map(|s| (s.action, &s.reason)).collect();
        assert_eq!(
            actions,
            vec![(
                UnreadableAction::SetAside,
                &"not a task file name".to_owned()
            )],
            "change notices: {notices}"
        );
        assert!(!root.join("active").join(&long).exists());
        let moved = fs::read_dir(root.join("quarantine")).unwrap().count();
        assert_eq!(moved, 1);
    }
}

/// A foreign name left in `active/` (the quarantine is full) is reported
/// once per listing, however many passes over `active/` a handle made
/// before it: without change notices, every create after a change makes
/// one. With them, by every listing too, as long as it is there, and set
/// aside by the first listing after the quarantine has room. (Each pass
/// added a report, kept until a listing took them all: a handle that only
/// created grew without bound, and its next listing repeated the same name
/// hundreds of times. With change notices, only the first listing reported
/// it, and it was never set aside.)
#[test]
fn a_name_left_in_place_is_reported_once_a_listing_however_many_passes_came_before() {
    for notices in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        drop(FileStore::open(root).unwrap());
        for i in 0..1_000 {
            fs::write(root.join("quarantine").join(format!("old-{i}")), b"x").unwrap();
        }
        fs::write(root.join("active").join("stray.txt"), b"x").unwrap();
        let store = FileStore::builder(root)
            .change_notices(notices)
            .open()
            .unwrap();
        let stray = root.join("active").join("stray.txt").display().to_string();
        let reports = |page: &taskstore::Page| {
            page.skipped
                .iter()
                .filter(|s| s.location == stray)
                .map(|s| s.action)
                .collect::<Vec<_>>()
        };
        let left = vec![UnreadableAction::LeftInPlace];
        let page = store.list(&ListQuery::active()).unwrap();
        assert_eq!(reports(&page), left);
        let why = &page.skipped[0].reason;
        assert!(
            why.contains("not set aside: the quarantine is full"),
            "says why it was left: {why}"
        );
        for _ in 0..50 {
            store.create(NewTask::new()).unwrap();
        }
        for _ in 0..2 {
            let page = store.list(&ListQuery::active().limit(1)).unwrap();
            assert_eq!(reports(&page), left, "change notices: {notices}");
        }
        fs::remove_file(root.join("quarantine").join("old-0")).unwrap();
        let page = store.list(&ListQuery::active().limit(1)).unwrap();
        assert_eq!(
            reports(&page),
            vec![UnreadableAction::SetAside],
            "change notices: {notices}"
        );
        assert!(!root.join("active").join("stray.txt").exists());
        let page = store.list(&ListQuery::active().limit(1)).unwrap();
        assert_eq!(reports(&page), vec![], "change notices: {notices}");
    }
}
