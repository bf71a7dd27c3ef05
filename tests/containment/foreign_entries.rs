//! Foreign and odd entries: entries of `tmp` that never block an open and are
//! set aside and reported, files larger than any task refused before they are
//! read, long foreign names, a bounded quarantine, names left in place
//! reported once, events of what a listing could not read.

use super::*;

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
