//! The on-disk format's moving parts: the `expiring/` index the sweep reads
//! instead of history, moving a store of format 1 to format 2, and the
//! compaction of directories that grew and emptied.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use taskstore::{
    FileStore, ListQuery, MIN_MAX_PAYLOAD_BYTES, ManualClock, NewTask, Task, TaskId, TaskStore,
    TaskUpdate,
};
use time::OffsetDateTime;

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn clock() -> ManualClock {
    ManualClock::new(OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap())
}

fn open(dir: &Path, clock: &ManualClock) -> FileStore {
    FileStore::builder(dir)
        .clock(Arc::new(clock.clone()))
        .open()
        .unwrap()
}

#[test]
fn a_finished_task_with_a_ttl_is_indexed_and_swept_without_reading_history() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let store = open(dir.path(), &clock);
    let short = store
        .create(NewTask::new().ttl(Duration::from_secs(10)))
        .unwrap();
    let long = store
        .create(NewTask::new().ttl(Duration::from_secs(100)))
        .unwrap();
    let forever = store.create(NewTask::new()).unwrap();
    for t in [&short, &long, &forever] {
        assert!(store.complete(&t.id, json!(1)).unwrap().is_applied());
    }
    let index = dir.path().join("expiring");
    let entries = names(&index);
    assert_eq!(
        entries.len(),
        2,
        "one entry per finished task with a TTL: {entries:?}"
    );
    for (task, entry) in [(&short, &entries[0]), (&long, &entries[1])] {
        assert!(entry.ends_with(task.id.as_str()), "{entry}");
        let linked = fs::metadata(index.join(entry)).unwrap();
        let file = fs::metadata(dir.path().join("done").join(format!("{}.json", task.id))).unwrap();
        assert_eq!(linked.ino(), file.ino(), "the entry is the task's file");
    }
    // A file in done/ that the sweep must never read: it is not indexed.
    fs::write(dir.path().join("done/never-read.json"), b"{ not json").unwrap();
    clock.advance(Duration::from_secs(10));
    let swept = store.sweep().unwrap();
    assert_eq!(swept.deleted, 1);
    assert!(
        swept.skipped.is_empty(),
        "history was not read: {:?}",
        swept.skipped
    );
    assert_eq!(names(&index).len(), 1);
    assert!(
        !dir.path()
            .join("done")
            .join(format!("{}.json", short.id))
            .exists()
    );
    assert!(dir.path().join("done/never-read.json").exists());
    // A delete removes the entry too.
    assert!(store.delete(&long.id).unwrap());
    assert!(names(&index).is_empty());
}

#[test]
fn a_stale_index_entry_is_removed_and_never_deletes_a_task() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let store = open(dir.path(), &clock);
    let task = store
        .create(
            NewTask::new()
                .id(TaskId::parse("t").unwrap())
                .ttl(Duration::from_secs(5)),
        )
        .unwrap();
    let _ = store.complete(&task.id, json!(1)).unwrap();
    let index = dir.path().join("expiring");
    let entry = names(&index).pop().unwrap();
    // An entry of an earlier task under the id, due, whose file is another
    // (a crash between a delete's steps can leave one): its name is not
    // the finished task's. (An entry with the task's own name but another
    // inode, a store copied without its hard links, is the task's:
    // `file_store::a_store_copied_without_its_hard_links_still_sweeps_its_finished_tasks`.)
    let created: i128 = entry.split('.').next().unwrap().parse().unwrap();
    let stale = format!("{}.5000.t", created - 3_600_000_000_000);
    fs::write(index.join(&stale), b"x").unwrap();
    assert_eq!(store.sweep().unwrap().deleted, 0);
    assert_eq!(names(&index), [entry], "the stale entry is gone");
    assert!(
        dir.path().join("done/t.json").exists(),
        "the task is not the sweep's to delete"
    );
}

/// A finished task whose `expiring/` entry is gone (a power loss under
/// `Eventual` can lose it: CONSISTENCY.md) gets it back from the first
/// listing of history that reads its file, and is then swept when it
/// expires; tasks whose entries are there are left as they are, and so is
/// a finished task without a TTL. (No sweep ever removed it: a sweep looks
/// only at the entries.)
#[test]
fn a_listing_of_history_gives_a_finished_task_its_lost_index_entry_back() {
    for durability in [
        taskstore::Durability::Eventual,
        taskstore::Durability::Immediate,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let clock = clock();
        let store = FileStore::builder(dir.path())
            .clock(Arc::new(clock.clone()))
            .durability(durability)
            .open()
            .unwrap();
        let tasks: Vec<Task> = (0..3)
            .map(|_| {
                store
                    .create(NewTask::new().ttl(Duration::from_secs(10)))
                    .unwrap()
            })
            .collect();
        let forever = store.create(NewTask::new()).unwrap();
        for task in tasks.iter().chain([&forever]) {
            assert!(store.complete(&task.id, json!(1)).unwrap().is_applied());
        }
        drop(store);
        let index = dir.path().join("expiring");
        let entries = names(&index);
        assert_eq!(entries.len(), 3);
        let lost = entries
            .iter()
            .find(|e| e.ends_with(tasks[1].id.as_str()))
            .unwrap();
        fs::remove_file(index.join(lost)).unwrap();
        let store = open(dir.path(), &clock);
        let listed = store.list(&ListQuery::all()).unwrap();
        assert_eq!(listed.tasks.len(), 4);
        assert_eq!(
            names(&index),
            entries,
            "{durability:?}: the lost entry is back"
        );
        let done = dir
            .path()
            .join("done")
            .join(format!("{}.json", tasks[1].id));
        assert_eq!(
            fs::metadata(&done).unwrap().nlink(),
            2,
            "a link, not a copy"
        );
        clock.advance(Duration::from_secs(60));
        assert_eq!(store.sweep().unwrap().deleted, 3, "{durability:?}");
        assert!(names(&index).is_empty());
        assert_eq!(
            store.get(&forever.id).unwrap().map(|t| t.id),
            Some(forever.id)
        );
    }
}

#[test]
fn a_store_of_format_1_is_moved_to_format_2_at_an_exclusive_open() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let ttl_ids: Vec<TaskId> = {
        let store = open(dir.path(), &clock);
        (0..5)
            .map(|i| {
                let t = store
                    .create(NewTask::new().ttl(Duration::from_secs(10 + i)))
                    .unwrap();
                let _ = store.complete(&t.id, json!(i)).unwrap();
                t.id
            })
            .collect()
    };
    common::make_format_1(dir.path());
    let store = open(dir.path(), &clock);
    let marker = fs::read_to_string(dir.path().join("taskstore.json")).unwrap();
    assert!(marker.contains("\"format\":2"), "{marker}");
    assert_eq!(names(&dir.path().join("expiring")).len(), ttl_ids.len());
    clock.advance(Duration::from_secs(20));
    assert_eq!(store.sweep().unwrap().deleted, ttl_ids.len());
    assert!(store.list(&ListQuery::all()).unwrap().tasks.is_empty());
}

/// An open told not to move a store of an older format
/// (`upgrade_format(false)`) refuses it with `Error::OlderFormat`, naming
/// both formats, and changes nothing (format 1 has no `expiring/`, which
/// any other open makes first); an open with the default moves it, and
/// indexes its finished tasks. So too for a store of format 1 that lost
/// its marker (known by its `done/` without `expiring/`): it was taken for
/// a new store, given an empty `expiring/` and a marker of format 2, and
/// its finished tasks were never swept.
#[test]
fn an_open_told_not_to_upgrade_leaves_an_older_store_as_it_is() {
    for marker in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let clock = clock();
        let id = {
            let store = open(dir.path(), &clock);
            let t = store
                .create(NewTask::new().ttl(Duration::from_secs(60)))
                .unwrap();
            let _ = store.complete(&t.id, json!(1)).unwrap();
            t.id
        };
        common::make_format_1(dir.path());
        if !marker {
            fs::remove_file(dir.path().join("taskstore.json")).unwrap();
        }
        let before = common::tree(dir.path());
        let refused = FileStore::builder(dir.path())
            .clock(Arc::new(clock.clone()))
            .upgrade_format(false)
            .open();
        match refused {
            Err(taskstore::Error::OlderFormat {
                found: 1,
                current: 2,
                ref path,
            }) => assert_eq!(path, dir.path()),
            other => panic!("marker {marker}: {other:?}"),
        }
        assert_eq!(common::tree(dir.path()), before, "nothing changed");
        // A check reads no more of it than an open does: the census is
        // refused, and `verify` reports the format alone.
        let check = taskstore::FileCheck::open(dir.path()).unwrap();
        match check.census() {
            Err(taskstore::Error::OlderFormat { found: 1, .. }) => {}
            other => panic!("marker {marker}: {:?}", other.map(|c| c.tasks.len())),
        }
        let kinds: Vec<_> = check
            .verify()
            .unwrap()
            .problems
            .into_iter()
            .map(|p| p.kind)
            .collect();
        assert!(
            kinds.contains(&taskstore::ProblemKind::OlderFormat {
                found: 1,
                current: 2
            }),
            "marker {marker}: {kinds:?}"
        );
        let missing = kinds
            .iter()
            .filter(|k| **k == taskstore::ProblemKind::Missing)
            .count();
        assert_eq!(
            missing,
            usize::from(!marker),
            "the marker alone may be missing, not expiring/: {kinds:?}"
        );
        drop(check);
        assert_eq!(common::tree(dir.path()), before, "nothing changed");
        if marker {
            // An open that may move it made `expiring/` and stopped (it
            // waited for another handle, and was stopped): still format 1,
            // its entries not checked (each finished task was reported
            // without its index entry).
            let index = dir.path().join("expiring");
            fs::create_dir(&index).unwrap();
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&index, fs::Permissions::from_mode(0o700)).unwrap();
            let report = taskstore::FileCheck::open(dir.path())
                .unwrap()
                .verify()
                .unwrap();
            let kinds: Vec<_> = report.problems.into_iter().map(|p| p.kind).collect();
            assert_eq!(
                kinds,
                [taskstore::ProblemKind::OlderFormat {
                    found: 1,
                    current: 2
                }]
            );
        }
        let store = open(dir.path(), &clock);
        let written = fs::read_to_string(dir.path().join("taskstore.json")).unwrap();
        assert!(written.contains("\"format\":2"), "{written}");
        assert_eq!(
            names(&dir.path().join("expiring")).len(),
            1,
            "marker {marker}: the finished task is indexed"
        );
        clock.advance(Duration::from_secs(120));
        assert_eq!(store.sweep().unwrap().deleted, 1, "marker {marker}");
        assert_eq!(store.get(&id).unwrap(), None);
    }
}

/// A store whose `active/` grew to 6,000 tasks and then kept `kept(size)`
/// of them (`size`: the directory's size once grown), opened again while
/// another handle has it open (never compacted), then alone: `active/`'s
/// size once grown and after that open; every kept task is still there,
/// whole, either way. `None` where directories shrink by themselves.
fn compaction_keeping(kept: impl Fn(u64) -> usize) -> Option<(u64, u64)> {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::builder(dir.path())
        .durability(taskstore::Durability::Eventual)
        .max_active(100_000)
        .open()
        .unwrap();
    let mut tasks: Vec<Task> = (0..6_000)
        .map(|_| store.create(NewTask::new()).unwrap())
        .collect();
    let active = dir.path().join("active");
    let grown = fs::metadata(&active).unwrap().size();
    if grown < 64 * 1024 {
        return None;
    }
    let mut keep = tasks.split_off(tasks.len() - kept(grown));
    for task in &tasks {
        assert!(store.delete(&task.id).unwrap());
    }
    // Another handle has it open: no compaction.
    let other = FileStore::open(dir.path()).unwrap();
    assert_eq!(fs::metadata(&active).unwrap().size(), grown);
    drop(other);
    drop(store);
    let store = FileStore::open(dir.path()).unwrap();
    let mut listed = store.list(&ListQuery::active()).unwrap().tasks;
    listed.sort_by(|a, b| a.id.cmp(&b.id));
    keep.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(listed, keep);
    for task in &keep {
        assert_eq!(store.get(&task.id).unwrap().as_ref(), Some(task));
    }
    assert!(!dir.path().join("active.compact").exists());
    assert_eq!(common::files_in(dir.path(), "active").len(), keep.len());
    Some((grown, fs::metadata(&active).unwrap().size()))
}

#[test]
fn a_directory_that_grew_and_emptied_is_compacted_when_no_one_else_has_the_store_open() {
    let Some((grown, compacted)) = compaction_keeping(|_| 1) else {
        eprintln!("file_format: this file system shrinks directories; nothing to compact");
        return;
    };
    assert!(compacted * 8 < grown, "{grown} -> {compacted} bytes");
}

/// An open reads a large directory only as far as it takes to see it is
/// not bloated (it holds at least an eighth of what its size could): at
/// that many entries it is left as it is, one fewer and it is compacted,
/// whole.
#[test]
fn a_directory_is_compacted_exactly_when_it_holds_less_than_an_eighth_of_its_size() {
    // The fewest entries that keep a directory of `size` bytes: its
    // entries need 64 bytes each and 4 KiB more, and it may be eight
    // times that.
    let fewest = |size: u64| (size - 8 * 4096).div_ceil(8 * 64) as usize;
    let Some((grown, after)) = compaction_keeping(fewest) else {
        eprintln!("file_format: this file system shrinks directories; nothing to compact");
        return;
    };
    assert_eq!(
        after, grown,
        "a directory holding enough entries was compacted"
    );
    let (grown, after) = compaction_keeping(|size| fewest(size) - 1).unwrap();
    assert!(
        after < grown,
        "a directory one entry short of enough was not compacted"
    );
}

/// A directory that cannot be compacted (a directory among its entries,
/// which cannot be linked) is left as it is, and the next one is still
/// compacted. (The open stopped at the first: `expiring/` stayed bloated
/// whenever `active/` held a directory.)
#[test]
fn a_directory_that_cannot_be_compacted_leaves_the_next_one_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::builder(dir.path())
        .durability(taskstore::Durability::Eventual)
        .max_active(100_000)
        .open()
        .unwrap();
    let tasks: Vec<Task> = (0..6_000)
        .map(|_| {
            store
                .create(NewTask::new().ttl(Duration::from_secs(3600)))
                .unwrap()
        })
        .collect();
    for task in &tasks {
        assert!(store.complete(&task.id, json!(1)).unwrap().is_applied());
    }
    let (active, expiring) = (dir.path().join("active"), dir.path().join("expiring"));
    let grown = (
        fs::metadata(&active).unwrap().size(),
        fs::metadata(&expiring).unwrap().size(),
    );
    if grown.0 < 64 * 1024 || grown.1 < 64 * 1024 {
        eprintln!("file_format: this file system shrinks directories; nothing to compact");
        return;
    }
    for task in &tasks[1..] {
        assert!(store.delete(&task.id).unwrap());
    }
    drop(store);
    fs::create_dir(active.join("a-directory")).unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    assert_eq!(
        fs::metadata(&active).unwrap().size(),
        grown.0,
        "left as it is"
    );
    let compacted = fs::metadata(&expiring).unwrap().size();
    assert!(compacted * 8 < grown.1, "{} -> {compacted} bytes", grown.1);
    assert_eq!(
        store
            .get(&tasks[0].id)
            .unwrap()
            .as_ref()
            .map(|t| t.is_terminal()),
        Some(true)
    );
    assert_eq!(names(&expiring).len(), 1, "the kept task's entry");
}

#[test]
fn a_leftover_of_an_interrupted_compaction_is_removed_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let task = store.create(NewTask::new()).unwrap();
    drop(store);
    // A compaction that stopped after linking: second names of the same files.
    let leftover = dir.path().join("active.compact");
    fs::create_dir(&leftover).unwrap();
    let file = format!("{}.json", task.id);
    fs::hard_link(dir.path().join("active").join(&file), leftover.join(&file)).unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    assert!(!leftover.exists());
    assert_eq!(store.get(&task.id).unwrap(), Some(task));
}

#[test]
fn a_repair_applies_to_the_directories_a_compaction_made_meanwhile() {
    // A check opens the store's directories without being a handle. An open
    // alone may then compact `active/` into a new directory: a repair
    // applied through the old one would act on names that are gone, and
    // leave the problem where it is now.
    let dir = tempfile::tempdir().unwrap();
    let Some((kept, grown)) = common::grown_and_emptied(dir.path()) else {
        return;
    };
    let active = dir.path().join("active");
    let bad = TaskId::new();
    fs::write(active.join(format!("{bad}.json")), b"not a task").unwrap();

    let check = taskstore::FileCheck::open(dir.path()).unwrap();
    // An open while the check lives is not alone: it compacts nothing.
    drop(FileStore::open(dir.path()).unwrap());
    let repairs = check.repair(false).unwrap();
    let set_aside: Vec<_> = repairs
        .repairs
        .iter()
        .filter(|r| r.problem.id.as_ref() == Some(&bad))
        .filter(|r| !matches!(r.action, taskstore::RepairAction::SetMode { .. }))
        .map(|r| (r.action.clone(), r.outcome.clone()))
        .collect();
    assert_eq!(
        set_aside,
        [(
            taskstore::RepairAction::SetAside,
            taskstore::RepairOutcome::Done
        )],
        "{repairs:?}"
    );
    assert!(
        !active.join(format!("{bad}.json")).exists(),
        "the unreadable file is no longer in active/"
    );
    // Once the check is gone, an open alone compacts as before.
    drop(check);
    let store = FileStore::open(dir.path()).unwrap();
    assert!(
        fs::metadata(&active).unwrap().size() * 8 < grown,
        "an open alone compacts active/ once no check holds it"
    );
    assert_eq!(store.get(&kept.id).unwrap(), Some(kept));
}

/// A store of format 1 moved by a handle with a smaller payload cap than
/// the one that wrote a finished task: the move reads every file whatever
/// this handle's cap, so the large task is indexed too, and swept once
/// expired. (It was skipped, as a file larger
/// than this handle reads, and the store marked format 2 all the same: no
/// sweep would ever have found it.) Files no version reads (one of a newer
/// format, one past any cap) are left as they are, and stop no move: else
/// the store could never be opened again.
#[test]
fn a_store_of_format_1_moved_by_a_handle_with_a_smaller_cap_indexes_every_task() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let large = |cap: usize| {
        FileStore::builder(dir.path())
            .clock(Arc::new(clock.clone()))
            .max_payload_bytes(cap)
            .open()
            .unwrap()
    };
    let ttl = Duration::from_secs(60);
    let ids: Vec<TaskId> = {
        let store = large(1 << 20);
        [20_000, 10]
            .into_iter()
            .map(|size| {
                let t = store
                    .create(NewTask::new().ttl(ttl).metadata("m", "x".repeat(size)))
                    .unwrap();
                let _ = store.complete(&t.id, json!(1)).unwrap();
                t.id
            })
            .collect()
    };
    common::make_format_1(dir.path());
    let newer = dir.path().join("done").join("newer.json");
    fs::write(&newer, b"{\"format\":9,\"task\":{}}\n").unwrap();
    // Sparse: its size alone refuses it.
    let huge = dir.path().join("done").join("huge.json");
    fs::File::create(&huge).unwrap().set_len(2 << 30).unwrap();
    drop(large(taskstore::MIN_MAX_PAYLOAD_BYTES));
    assert!(newer.exists() && huge.exists(), "left as they are");
    let marker = fs::read_to_string(dir.path().join("taskstore.json")).unwrap();
    assert!(marker.contains("\"format\":2"), "{marker}");
    assert_eq!(
        names(&dir.path().join("expiring")).len(),
        ids.len(),
        "every finished task is indexed"
    );
    clock.advance(ttl * 2);
    assert_eq!(large(1 << 20).sweep().unwrap().deleted, ids.len());
}

/// A task file an earlier version wrote, its stamps without the fraction of
/// a second (RFC 3339 as `time` writes it at a whole second) and the task
/// exactly at the payload cap so: this version writes the stamps in full,
/// nine digits, so the same task encodes 30 bytes past the cap; a write
/// that grows nothing its host gave it is still taken (the cap measures a
/// write against the stored task as this version encodes it, FORMAT.md
/// "Task files"), and the task reads back as written.
#[test]
fn a_task_at_the_cap_with_short_stamps_takes_a_write_that_grows_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let clock = clock();
    let cap = MIN_MAX_PAYLOAD_BYTES;
    let store = FileStore::builder(&root)
        .clock(Arc::new(clock.clone()))
        .max_payload_bytes(cap)
        .open()
        .unwrap();
    let task = store.create(NewTask::new().metadata("k", "")).unwrap();
    // Its file as the earlier version wrote it, put in place by a rename.
    let path = root.join("active").join(format!("{}.json", task.id));
    let mut file: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let stored = &mut file["task"];
    for stamp in ["createdAt", "lastUpdatedAt", "leaseExpiresAt"] {
        let full = stored[stamp].as_str().unwrap().to_owned();
        assert!(full.ends_with(".000000000Z"), "{full}");
        stored[stamp] = json!(full.replace(".000000000Z", "Z"));
    }
    let short = serde_json::to_vec(&*stored).unwrap().len();
    let room = cap - short;
    stored["metadata"]["k"] = json!("z".repeat(room));
    assert_eq!(serde_json::to_vec(&*stored).unwrap().len(), cap);
    let written = dir.path().join("written.json");
    fs::write(&written, format!("{file}\n")).unwrap();
    fs::rename(&written, &path).unwrap();
    let before: Task = serde_json::from_value(file["task"].clone()).unwrap();
    assert_eq!(store.get(&task.id).unwrap().as_ref(), Some(&before));
    assert_eq!(serde_json::to_vec(&before).unwrap().len(), cap + 30);
    // A fraction of a second later, a value of the same length.
    clock.advance(Duration::from_nanos(123_456_789));
    let updated = store
        .update(&task.id, TaskUpdate::new().metadata("k", "y".repeat(room)))
        .unwrap_or_else(|e| panic!("a write that grows nothing the host gave: {e}"));
    assert!(updated.is_applied(), "{updated:?}");
    let updated = updated.into_task();
    assert_eq!(serde_json::to_vec(&updated).unwrap().len(), cap + 30);
    drop(store);
    assert_eq!(open(&root, &clock).get(&task.id).unwrap(), Some(updated));
}
