//! Bad input never panics and never spreads: invalid ids, and every kind of
//! bad file where a task file should be.

mod common;

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use serde_json::json;
use taskstore::backend::UnreadableAction;
use taskstore::{Error, FileStore, ListQuery, NewTask, TaskId, TaskStore};

use common::tree;

fn quarantined(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(root.join("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn invalid_ids_are_rejected_before_touching_the_file_system() {
    let long = "a".repeat(129);
    let table: &[(&str, &str)] = &[
        ("..", "parent directory"),
        (".", "current directory"),
        ("a/b", "path separator"),
        ("../../etc/passwd", "traversal"),
        ("a\\b", "backslash"),
        ("a\0b", "NUL"),
        ("", "empty"),
        (&long, "129 characters"),
        (".hidden", "leading dot"),
        ("tâche", "non-ASCII"),
        ("a b", "space"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let before = tree(dir.path());
    for (id, what) in table {
        let invalid = TaskId::parse(id).expect_err(what);
        // The store's error carries it unchanged, bounded and with a reason.
        let message = invalid.to_string();
        match Error::from(invalid) {
            Error::InvalidId { id: shown, reason } => {
                assert!(!reason.is_empty(), "{what}");
                assert!(shown.len() <= 200, "{what}: the error stays bounded");
                assert_eq!(Error::InvalidId { id: shown, reason }.to_string(), message);
            }
            other => panic!("{what} ({id:?}) must be InvalidId, got {other:?}"),
        }
        assert!(id.parse::<TaskId>().is_err(), "{what}: FromStr agrees");
        let as_json = serde_json::to_string(id).unwrap();
        assert!(
            serde_json::from_str::<TaskId>(&as_json).is_err(),
            "{what}: serde validates"
        );
    }
    assert!(TaskId::parse(&"a".repeat(128)).is_ok());
    // Nothing was created, and a store works as before.
    assert_eq!(tree(dir.path()), before);
    store.create(NewTask::new()).unwrap();
}

/// Plants one kind of bad file as `active/<id>.json` (or `done/`).
fn plant(root: &Path, area: &str, id: &str, kind: &str) -> PathBuf {
    let path = root.join(area).join(format!("{id}.json"));
    match kind {
        "corrupt" => fs::write(&path, b"{\"format\":1,\"task\":{\"taskId\":").unwrap(),
        "truncated" => {
            let good = format!(
                "{{\"format\":1,\"task\":{{\"taskId\":\"{id}\",\"status\":\"working\",\"createdAt\":\"2026-01-01T00:00:00Z\",\"lastUpdatedAt\":\"2026-01-01T00:00:00Z\",\"ttlMs\":null,\"revision\":1}}}}"
            );
            fs::write(&path, &good.as_bytes()[..good.len() - 9]).unwrap();
        }
        "empty" => fs::write(&path, b"").unwrap(),
        "foreign" => fs::write(&path, b"{\"hello\":\"world\"}").unwrap(),
        "binary" => fs::write(&path, [0xff, 0xfe, 0, 1, 2]).unwrap(),
        "wrong-id" => {
            let other = r#"{"format":1,"task":{"taskId":"someone-else","status":"working","createdAt":"2026-01-01T00:00:00Z","lastUpdatedAt":"2026-01-01T00:00:00Z","ttlMs":null,"revision":1}}"#;
            fs::write(&path, other).unwrap();
        }
        "newer-format" => fs::write(&path, b"{\"format\":99,\"task\":{\"v99\":true}}").unwrap(),
        "directory" => fs::create_dir(&path).unwrap(),
        "fifo" => rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap(),
        // A socket's file stays when its listener closes.
        "socket" => drop(std::os::unix::net::UnixListener::bind(&path).unwrap()),
        "symlink" => {
            let target = root.join("outside.json");
            fs::write(&target, b"secret").unwrap();
            symlink(&target, &path).unwrap();
        }
        _ => unreachable!(),
    }
    path
}

const KINDS: &[&str] = &[
    "corrupt",
    "truncated",
    "empty",
    "foreign",
    "binary",
    "wrong-id",
    "newer-format",
    "directory",
    "fifo",
    "socket",
    "symlink",
];

#[test]
fn every_kind_of_bad_file_is_reported_and_set_aside() {
    for area in ["active", "done"] {
        for kind in KINDS {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("store");
            let store = FileStore::open(&root).unwrap();
            let good = store.create(NewTask::new()).unwrap();
            let finished = store.create(NewTask::new()).unwrap();
            let finished = store
                .complete(&finished.id, json!("ok"))
                .unwrap()
                .into_task();
            drop(store);

            let id = TaskId::parse("bad-task").unwrap();
            let path = plant(&root, area, id.as_str(), kind);
            let what = format!("{kind} file in {area}/");

            // Opening still works, and the good tasks are untouched.
            let store =
                FileStore::open(&root).unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
            assert_eq!(store.get(&good.id).unwrap(), Some(good.clone()), "{what}");
            assert_eq!(
                store.get(&finished.id).unwrap(),
                Some(finished.clone()),
                "{what}"
            );

            // Reading that task is a typed error naming the file.
            let err = store.get(&id).expect_err(&what);
            match &err {
                Error::Corrupt { path: p, .. } | Error::UnsupportedFormat { path: p, .. } => {
                    assert_eq!(p, &path, "{what}")
                }
                other => panic!("{what}: expected Corrupt or UnsupportedFormat, got {other:?}"),
            }
            assert!(
                err.to_string().contains(path.to_str().unwrap()),
                "{what}: {err}"
            );
            // Mutations report it too and change nothing.
            assert!(store.complete(&id, json!(1)).is_err(), "{what}");
            assert!(
                store.create(NewTask::new().id(id.clone())).is_err(),
                "{what}"
            );

            // Listing leaves it out and reports it; the others are all there.
            let page = store.list(&ListQuery::all()).unwrap();
            let mut ids: Vec<_> = page.tasks.iter().map(|t| t.id.clone()).collect();
            ids.sort();
            let mut want = vec![good.id.clone(), finished.id.clone()];
            want.sort();
            assert_eq!(ids, want, "{what}");
            assert_eq!(
                page.skipped.len(),
                1,
                "{what}: reported: {:?}",
                page.skipped
            );
            assert_eq!(page.skipped[0].id.as_ref(), Some(&id), "{what}");
            assert_eq!(page.skipped[0].location, path.display().to_string());
            let q = quarantined(&root);
            if *kind == "newer-format" {
                // A newer taskstore's task (a rolling upgrade): left where it
                // is, never set aside, and never overwritten.
                assert_eq!(
                    page.skipped[0].action,
                    UnreadableAction::LeftInPlace,
                    "{what}"
                );
                assert!(q.is_empty(), "{what}: {q:?}");
                assert!(path.exists(), "{what}");
                assert!(matches!(
                    store.get(&id),
                    Err(Error::UnsupportedFormat { .. })
                ));
                assert!(store.create(NewTask::new().id(id.clone())).is_err());
                assert_eq!(store.sweep_expired().unwrap(), 0);
                assert!(path.exists(), "{what}: the sweep leaves it too");
                continue;
            }
            assert_eq!(page.skipped[0].action, UnreadableAction::SetAside, "{what}");
            assert_eq!(q.len(), 1, "{what}: set aside, not deleted: {q:?}");
            assert!(
                q[0].starts_with(area) && q[0].ends_with("bad-task.json"),
                "{what}: {q:?}"
            );
            assert!(!path.exists() && !path.is_symlink(), "{what}");
            if *kind == "symlink" {
                assert_eq!(
                    fs::read(root.join("outside.json")).unwrap(),
                    b"secret",
                    "the target is untouched"
                );
            }
            // Afterwards the id is free and the store is whole.
            assert_eq!(store.get(&id).unwrap(), None, "{what}");
            store.create(NewTask::new().id(id.clone())).unwrap();
            assert_eq!(store.sweep_expired().unwrap(), 0);
        }
    }
}

#[test]
fn sweep_sets_bad_running_files_aside_and_a_full_listing_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let good = store.create(NewTask::new()).unwrap();
    plant(dir.path(), "done", "x1", "corrupt");
    plant(dir.path(), "active", "x2", "empty");
    fs::write(dir.path().join("active").join("README.txt"), b"not a task").unwrap();
    // The sweep reads running tasks and the expiry index, never history.
    let swept = store.sweep().unwrap();
    assert_eq!(swept.deleted, 0);
    assert_eq!(swept.skipped.len(), 2, "{:?}", swept.skipped);
    assert_eq!(quarantined(dir.path()).len(), 2);
    let page = store.list(&ListQuery::all()).unwrap();
    assert_eq!(page.tasks, vec![good]);
    assert_eq!(
        page.skipped.len(),
        1,
        "the finished one: {:?}",
        page.skipped
    );
    assert_eq!(quarantined(dir.path()).len(), 3);
}

/// A name in `active/` that is no task file's, there before the handle
/// opened: the handle's first listing (a full pass over `active/`, not a
/// change notice) sets it aside and reports it, once.
#[test]
fn a_stray_name_in_active_before_the_open_is_set_aside_by_the_first_listing() {
    let dir = tempfile::tempdir().unwrap();
    let good = FileStore::open(dir.path())
        .unwrap()
        .create(NewTask::new())
        .unwrap();
    fs::write(dir.path().join("active").join("README.txt"), b"not a task").unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let page = store.list(&ListQuery::active()).unwrap();
    assert_eq!(page.tasks, vec![good.clone()]);
    assert_eq!(page.skipped.len(), 1, "{:?}", page.skipped);
    assert!(
        page.skipped[0].location.ends_with("README.txt"),
        "{:?}",
        page.skipped[0]
    );
    assert_eq!(page.skipped[0].action, UnreadableAction::SetAside);
    assert_eq!(quarantined(dir.path()).len(), 1);
    assert!(!dir.path().join("active").join("README.txt").exists());
    let again = store.list(&ListQuery::active()).unwrap();
    assert_eq!((again.tasks, again.skipped.len()), (vec![good], 0));
}

#[test]
fn files_are_private_and_directories_too() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = FileStore::open(&root).unwrap();
    store.create(NewTask::new()).unwrap();
    let b = store.create(NewTask::new()).unwrap();
    assert!(store.complete(&b.id, json!(1)).unwrap().is_applied());

    for path in tree(&root) {
        // A park in `tmp/` may go (its reclaiming thread) after the walk.
        let mode = match fs::symlink_metadata(&path) {
            Ok(meta) => meta.permissions().mode() & 0o777,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("{}: {e}", path.display()),
        };
        if path.is_dir() {
            assert_eq!(mode, 0o700, "{}", path.display());
        } else {
            assert_eq!(mode, 0o600, "{}", path.display());
        }
    }
    assert_eq!(
        fs::metadata(&root).unwrap().permissions().mode() & 0o777,
        0o700
    );
}

#[test]
fn a_symlinked_store_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    FileStore::open(&root).unwrap();
    let elsewhere = dir.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    fs::remove_dir(root.join("done")).unwrap();
    symlink(&elsewhere, root.join("done")).unwrap();
    match FileStore::open(&root) {
        Err(Error::InvalidStore { path, .. }) => assert_eq!(path, root.join("done")),
        other => panic!("expected InvalidStore, got {other:?}"),
    }
    fs::remove_file(root.join("done")).unwrap();
    fs::write(root.join("done"), b"").unwrap();
    assert!(matches!(
        FileStore::open(&root),
        Err(Error::InvalidStore { .. })
    ));
}

#[test]
fn a_newer_store_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    FileStore::open(dir.path()).unwrap();
    let marker = dir.path().join("taskstore.json");
    fs::write(&marker, b"{\"format\":3,\"kind\":\"taskstore\"}").unwrap();
    match FileStore::open(dir.path()) {
        Err(Error::UnsupportedFormat {
            path,
            found,
            supported,
        }) => {
            assert_eq!((path, found, supported), (marker, 3, 2));
        }
        other => panic!("expected UnsupportedFormat, got {other:?}"),
    }
}

/// A store whose marker does not read (garbage, a directory, a symlink) is
/// refused by name, with the fix: remove the marker, and the next open
/// writes it again (as `repair` advises). Following the advice opens the
/// store with its tasks. (The refusal said only "unreadable store marker:
/// …", a directory in its place an I/O error.)
#[test]
fn a_marker_that_does_not_read_is_refused_with_how_to_fix_it() {
    for (kind, plant) in [
        (
            "garbage",
            (|m: &Path| fs::write(m, b"{garbage").unwrap()) as fn(&Path),
        ),
        ("a directory", |m: &Path| fs::create_dir(m).unwrap()),
        ("a symlink", |m: &Path| {
            std::os::unix::fs::symlink("elsewhere.json", m).unwrap()
        }),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let task = FileStore::open(dir.path())
            .unwrap()
            .create(NewTask::new())
            .unwrap();
        let marker = dir.path().join("taskstore.json");
        fs::remove_file(&marker).unwrap();
        plant(&marker);
        match FileStore::open(dir.path()) {
            Err(Error::InvalidStore { path, reason }) => {
                assert_eq!(path, marker, "{kind}");
                assert!(
                    reason.contains("remove it") && reason.contains("writes it again"),
                    "{kind}: {reason}"
                );
            }
            other => panic!("{kind}: expected InvalidStore naming the marker, got {other:?}"),
        }
        if marker.is_dir() && !marker.is_symlink() {
            fs::remove_dir(&marker).unwrap();
        } else {
            fs::remove_file(&marker).unwrap();
        }
        let store = FileStore::open(dir.path()).unwrap();
        assert_eq!(store.get(&task.id).unwrap(), Some(task), "{kind}");
    }
}

/// A handle that meets hundreds of new files at once reads them side by
/// side (from change notices, or a fresh handle's first pass): every task
/// is listed, and every bad file among them is reported and set aside or
/// left, as when they come one by one.
#[test]
fn hundreds_of_new_files_at_once_are_all_read_and_bad_ones_among_them_reported() {
    const TASKS: usize = 700;
    let dir = tempfile::tempdir().unwrap();
    let watching = FileStore::open(dir.path()).unwrap();
    assert!(
        watching
            .list(&ListQuery::active())
            .unwrap()
            .tasks
            .is_empty()
    );
    let writer = FileStore::builder(dir.path())
        .durability(taskstore::Durability::Eventual)
        .max_active(usize::MAX)
        .open()
        .unwrap();
    let mut written: Vec<TaskId> = (0..TASKS)
        .map(|_| writer.create(NewTask::new()).unwrap().id)
        .collect();
    written.sort();
    plant(dir.path(), "active", "bad-corrupt", "corrupt");
    plant(dir.path(), "active", "bad-newer", "newer-format");
    for (name, handle) in [
        ("the watching handle", &watching),
        ("a fresh handle", &FileStore::open(dir.path()).unwrap()),
    ] {
        let page = handle.list(&ListQuery::active()).unwrap();
        let mut listed: Vec<TaskId> = page.tasks.into_iter().map(|t| t.id).collect();
        listed.sort();
        assert_eq!(listed.len(), TASKS, "{name}");
        assert!(listed == written, "{name}: other tasks listed");
        let mut reported: Vec<(String, String)> = page
            .skipped
            .iter()
            .map(|s| {
                (
                    s.id.as_ref().unwrap().to_string(),
                    format!("{:?}", s.action),
                )
            })
            .collect();
        reported.sort();
        let expected = if name == "the watching handle" {
            vec![
                (
                    "bad-corrupt".to_owned(),
                    format!("{:?}", UnreadableAction::SetAside),
                ),
                (
                    "bad-newer".to_owned(),
                    format!("{:?}", UnreadableAction::LeftInPlace),
                ),
            ]
        } else {
            // Set aside by the first listing: only the newer file is left.
            vec![(
                "bad-newer".to_owned(),
                format!("{:?}", UnreadableAction::LeftInPlace),
            )]
        };
        assert_eq!(reported, expected, "{name}");
    }
    assert_eq!(quarantined(dir.path()).len(), 1);
}

/// A running file whose listing keys read but whose task does not decode
/// takes no place in a page: the page is filled from the entries after it,
/// so no listing or sweep stops short of the tasks behind it.
#[test]
fn a_file_that_decodes_only_in_part_leaves_its_place_in_the_page_to_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    plant_half(dir.path(), "active", "working");
    let mut created: Vec<TaskId> = (0..6)
        .map(|_| store.create(NewTask::new()).unwrap().id)
        .collect();
    created.sort();
    let (listed, _) = pages_of_four(&store, ListQuery::active);
    assert_eq!(listed, created, "every task behind the bad file is listed");
}

/// Plants task `half` in `area` of the store at `root`, with `status`: its
/// listing keys decode, the task does not (a status message that is a
/// number), and it is older than any task made after it (first in listing
/// order).
fn plant_half(root: &Path, area: &str, status: &str) {
    let task = format!(
        r#"{{"format":1,"task":{{"taskId":"half","status":"{status}","createdAt":"2020-01-01T00:00:00Z","lastUpdatedAt":"2020-01-01T00:00:00Z","ttlMs":null,"revision":2,"statusMessage":5}}}}"#
    );
    fs::write(root.join(area).join("half.json"), task).unwrap();
}

/// Every page of four of `query()` in turn: the ids listed (sorted), and
/// those of the entries reported unreadable.
fn pages_of_four(store: &FileStore, query: fn() -> ListQuery) -> (Vec<TaskId>, Vec<TaskId>) {
    let (mut listed, mut skipped) = (Vec::new(), Vec::new());
    let mut page_query = query().limit(4);
    loop {
        let page = store.list(&page_query).unwrap();
        listed.extend(page.tasks.into_iter().map(|t| t.id));
        skipped.extend(page.skipped.into_iter().filter_map(|s| s.id));
        match page.next_cursor {
            Some(cursor) => page_query = query().limit(4).after(&cursor),
            None => break,
        }
    }
    listed.sort();
    (listed, skipped)
}

/// The same in history: a page of finished tasks decodes only the files it
/// returns, so a file whose listing keys decode but whose task does not is
/// found only then, and the next file takes its place.
#[test]
fn a_finished_file_that_decodes_only_in_part_leaves_its_place_in_the_page_to_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    plant_half(dir.path(), "done", "completed");
    let mut created: Vec<TaskId> = (0..6)
        .map(|_| {
            let id = store.create(NewTask::new()).unwrap().id;
            assert!(store.complete(&id, json!(1)).unwrap().is_applied());
            id
        })
        .collect();
    created.sort();
    let (listed, skipped) = pages_of_four(&store, ListQuery::all);
    assert_eq!(listed, created, "every task behind the bad file is listed");
    assert_eq!(
        skipped,
        [TaskId::parse("half").unwrap()],
        "the bad file reported once"
    );
}

/// A file left in place (a newer format's) is reported once by a call that
/// reads `active/` in several batches: a listing whose first batch was all
/// expired tasks, a sweep of more tasks than one batch holds. (It was
/// reported again by every batch: twice in the page's `skipped`, once per
/// 1,024 tasks in the sweep's, each time with its event.)
#[test]
fn a_file_left_in_place_is_reported_once_per_call_however_many_batches() {
    let dir = tempfile::tempdir().unwrap();
    let clock = taskstore::ManualClock::new(time::OffsetDateTime::now_utc());
    let log = std::sync::Arc::new(taskstore::EventLog::with_capacity(10_000));
    let store = FileStore::builder(dir.path())
        .clock(std::sync::Arc::new(clock.clone()))
        .durability(taskstore::Durability::Eventual)
        .sink(log.clone())
        .open()
        .unwrap();
    let ttl = std::time::Duration::from_secs(60);
    for _ in 0..3 {
        store.create(NewTask::new().ttl(ttl)).unwrap();
    }
    clock.advance(ttl * 2);
    store.create(NewTask::new()).unwrap();
    plant(dir.path(), "active", "newer", "newer-format");
    let unreadable = |log: &taskstore::EventLog| {
        log.snapshot()
            .iter()
            .filter(|r| r.event.kind == taskstore::TaskEventKind::Unreadable)
            .count()
    };
    let page = store.list(&ListQuery::active().limit(2)).unwrap();
    assert_eq!(page.tasks.len(), 1);
    assert_eq!(page.skipped.len(), 1, "{:?}", page.skipped);
    assert_eq!(unreadable(&log), 1);
    for _ in 0..2_100 {
        store.create(NewTask::new().ttl(ttl)).unwrap();
    }
    clock.advance(ttl * 2);
    let swept = store.sweep().unwrap();
    assert_eq!(swept.deleted, 2_100);
    assert_eq!(swept.skipped.len(), 1, "{:?}", swept.skipped);
    assert_eq!(unreadable(&log), 2);
}

/// A task that would be expired the instant it is made is refused, whatever
/// makes it so: here a clock at the last instant `time` has, where any TTL
/// saturates its expiry to that instant. (The create succeeded and the task
/// was gone at once: accepted, and never read back.)
#[test]
fn a_task_expired_when_made_is_refused_at_the_end_of_time() {
    let end = time::PrimitiveDateTime::MAX.assume_utc();
    let clock = std::sync::Arc::new(taskstore::ManualClock::new(end));
    let dir = tempfile::tempdir().unwrap();
    let file = FileStore::builder(dir.path())
        .clock(clock.clone())
        .open()
        .unwrap();
    let memory = taskstore::MemoryStore::builder()
        .clock(clock)
        .build()
        .unwrap();
    for store in [&file as &dyn TaskStore, &memory] {
        let id = TaskId::new();
        let made = store.create(
            NewTask::new()
                .id(id.clone())
                .ttl(std::time::Duration::from_secs(60)),
        );
        match made {
            Err(Error::InvalidTask { id: named, reason }) => {
                assert_eq!(named, id);
                assert!(reason.contains("expired"), "{reason}");
            }
            other => panic!("expected InvalidTask, got {other:?}"),
        }
        assert_eq!(store.get(&id).unwrap(), None);
        // Without a TTL it never expires: made, and read back.
        let task = store.create(NewTask::new()).unwrap();
        assert_eq!(store.get(&task.id).unwrap(), Some(task));
    }
}
