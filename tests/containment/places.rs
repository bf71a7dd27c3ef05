//! Where a store may be opened: not a directory with areas of its own, not
//! another user's store where it could be written, not through a symlink (named
//! or swapped in after open); and the wait for the handles lock.

use super::*;

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
    // Owned by the overflow uid on a local file system: a user's
    // (`nobody`, a service's), refused as any other. Only an NFS server
    // that squashes root shows root's own files so (it opened here, and
    // what root wrote was root's, which `nobody` could not lock or read).
    let overflow: u32 = fs::read_to_string("/proc/sys/fs/overflowuid")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    give(overflow);
    let before = tree(&root);
    match FileStore::open(&root) {
        Err(e) => assert!(
            matches!(e, Error::InvalidStore { .. })
                && e.to_string().contains(&format!("uid {overflow}")),
            "overflow uid: {e}"
        ),
        Ok(_) => panic!("the overflow uid's store on a local mount was opened for writing"),
    }
    assert_eq!(tree(&root), before, "nothing made or changed");
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
