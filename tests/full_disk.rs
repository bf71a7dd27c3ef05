//! A full disk, for real: a small ext4 on a loop device, filled to the last
//! data block, or to the last inode. A store on it must refuse what needs
//! room with an I/O error that names the call and the path (`ENOSPC`),
//! lose nothing it acknowledged, leave no half-written task, and still
//! delete and sweep: a store that could not free itself once full would stay
//! full. Once the sweep has made room, it takes new tasks again, and a
//! reopened store is whole.
//!
//! It needs root, loop devices and `mkfs.ext4`; without them it prints why
//! it skipped and passes, unless `TASKSTORE_REQUIRE_POWER_CUT=1` (as CI
//! sets: the variable of `tests/power_cut.rs`, whose machinery this shares),
//! which makes a skip a failure.

mod common;
#[path = "power_cut/machine.rs"]
#[allow(dead_code)] // `tests/power_cut.rs` uses the rest
mod machine;

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use taskstore::{
    Error, FileCheck, FileStore, ListQuery, ManualClock, NewTask, Task, TaskId, TaskStore,
    TaskUpdate, Transition,
};
use time::macros::datetime;

use machine::{FileSystem, Machine, Skips};

/// The TTL of every task made: the sweep at the end removes them all.
const TTL: Duration = Duration::from_secs(60);

/// The stripe no task of [`Full::Inodes`] maps to.
const UNUSED: usize = 7;

/// What runs out.
#[derive(Clone, Copy, Debug)]
enum Full {
    /// Data blocks: the tasks made, then a file written until the disk
    /// refuses another block.
    Blocks,
    /// Inodes: tasks made until the disk refuses another file, none of
    /// them in stripe [`UNUSED`], whose lock file so never exists: the
    /// sweep's batch under every stripe cannot make it there.
    Inodes,
}

#[test]
fn a_full_disk_refuses_what_needs_room_loses_nothing_and_still_sweeps() {
    let mut skips = Skips::from_env("full_disk");
    let scratch = machine::scratch_dir();
    let machine = match Machine::probe(scratch.path()) {
        Ok(machine) => machine,
        Err(why) => {
            skips.skip("the full-disk test", &why);
            if let Some(failure) = skips.failure() {
                panic!("{failure}");
            }
            return;
        }
    };
    let fs = FileSystem::Ext4;
    if let Some(why) = fs.missing_tools() {
        skips.skip(fs.name(), &why);
        if let Some(failure) = skips.failure() {
            panic!("{failure}");
        }
        return;
    }
    for full in [Full::Blocks, Full::Inodes] {
        let image = scratch.path().join(format!("{full:?}.img"));
        // 16 MiB; with few inodes, where they are to run out first.
        let extra: &[&str] = match full {
            Full::Blocks => &[],
            Full::Inodes => &["-N", "512"],
        };
        fs.make_sized(&image, 16 << 20, extra)
            .unwrap_or_else(|e| panic!("{full:?}: mkfs: {e}"));
        let device = machine
            .attach(&image)
            .unwrap_or_else(|e| panic!("{full:?}: {e}"));
        let mount = machine
            .mount(&device, fs, "", &scratch.path().join(format!("{full:?}")))
            .unwrap_or_else(|e| panic!("{full:?}: {e}"));
        on_a_full_disk(mount.dir(), full);
        drop(mount);
        drop(device);
        let _ = fs::remove_file(&image);
    }
}

fn on_a_full_disk(disk: &Path, full: Full) {
    let root = disk.join("store");
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let open = || {
        FileStore::builder(&root)
            .clock(Arc::new(clock.clone()))
            .max_active(usize::MAX)
            .open()
            .unwrap()
    };
    let store = open();
    // A payload that takes a block of its own per task file.
    let new = || NewTask::new().ttl(TTL).metadata("note", "x".repeat(600));
    let mut made: Vec<Task> = Vec::new();
    let refused = match full {
        Full::Blocks => {
            for _ in 0..300 {
                made.push(store.create(new()).unwrap());
            }
            take_the_rest(disk, full, "filler");
            store
                .create(new())
                .expect_err("a create on a disk without a free block")
        }
        Full::Inodes => {
            let ids = (0..)
                .map(|n| format!("task-{n}"))
                .filter(|id| common::stripe(id) != UNUSED);
            let mut refused = None;
            for id in ids.take(2_000) {
                match store.create(new().id(TaskId::parse(&id).unwrap())) {
                    Ok(task) => made.push(task),
                    Err(e) => {
                        refused = Some(e);
                        break;
                    }
                }
            }
            let lock = root.join("locks").join(format!("{UNUSED:02}.lock"));
            assert!(!lock.exists(), "{full:?}: {} exists", lock.display());
            refused.expect("512 inodes run out before 2,000 tasks")
        }
    };
    let said = refused.to_string();
    match &refused {
        Error::Io { path, source, .. } => {
            assert_eq!(
                source.kind(),
                io::ErrorKind::StorageFull,
                "{full:?}: the refusal is the disk's: {said}"
            );
            assert!(
                path.starts_with(&root),
                "{full:?}: the refusal names a path in the store: {said}"
            );
        }
        other => panic!("{full:?}: the refusal is an I/O error, not {other:?}"),
    }
    // Enough for the sweep's batch to take every stripe at once.
    assert!(
        made.len() >= 256,
        "{full:?}: only {} tasks before the disk was full",
        made.len()
    );

    // A refused create leaves nothing behind, not even its temp file
    // (each would hold room the disk does not have). (A refused write over
    // a running task also drops the second name it gave the task's file,
    // its park, but on the handle's reclaiming thread: not checked until
    // the handle is dropped, which waits for that thread.)
    let temp_files = || -> Vec<_> {
        fs::read_dir(root.join("tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    };
    assert!(temp_files().is_empty(), "{full:?}: {:?}", temp_files());

    // Nothing acknowledged is lost, nothing refused is half there.
    let reads_back = |store: &FileStore, tasks: &[Task]| {
        for task in tasks {
            assert_eq!(
                store.get(&task.id).unwrap().as_ref(),
                Some(task),
                "{full:?}: {} reads back as acknowledged",
                task.id
            );
        }
        let mut listed: Vec<TaskId> = store
            .list(&ListQuery::active())
            .unwrap()
            .tasks
            .into_iter()
            .map(|t| t.id)
            .collect();
        listed.sort();
        let mut ids: Vec<TaskId> = tasks.iter().map(|t| t.id.clone()).collect();
        ids.sort();
        assert_eq!(
            listed, ids,
            "{full:?}: the listing has every task, and no other"
        );
    };
    reads_back(&store, &made);

    // Writes that need room: refused whole, or done whole.
    let updated = store.update(
        &made[0].id,
        TaskUpdate::new().metadata("more", "y".repeat(600)),
    );
    settle(&store, &mut made[0], updated, full, "update");
    let completed = store.complete(&made[1].id, json!({"answer": 42}));
    settle(&store, &mut made[1], completed, full, "complete");
    let running: Vec<Task> = made.iter().filter(|t| !t.is_terminal()).cloned().collect();
    let finished: Vec<Task> = made.iter().filter(|t| t.is_terminal()).cloned().collect();
    reads_back(&store, &running);
    for task in &finished {
        assert_eq!(store.get(&task.id).unwrap().as_ref(), Some(task));
    }

    // What frees room works on a full disk.
    let deleted = made.pop().unwrap();
    assert!(
        store.delete(&deleted.id).unwrap(),
        "{full:?}: a delete on a full disk"
    );
    assert_eq!(store.get(&deleted.id).unwrap(), None);
    // What the delete freed is taken again: the sweep runs on a full disk.
    take_the_rest(disk, full, "after-delete");
    clock.advance(TTL * 2);
    assert_eq!(
        store.sweep_expired().unwrap(),
        made.len(),
        "{full:?}: a sweep on a full disk removes every expired task"
    );
    assert!(
        store.list(&ListQuery::all()).unwrap().tasks.is_empty(),
        "{full:?}: nothing is left after the sweep"
    );

    // Room again: the store takes tasks, and a reopened one is whole.
    let after = store.create(new()).unwrap();
    assert_eq!(store.get(&after.id).unwrap().as_ref(), Some(&after));
    drop(store);
    let reopened = open();
    reads_back(&reopened, std::slice::from_ref(&after));
    assert!(
        temp_files().is_empty(),
        "{full:?}: a reopened store has no temp file left: {:?}",
        temp_files()
    );
    let report = FileCheck::open(&root).unwrap().verify().unwrap();
    assert!(
        report.problems.is_empty(),
        "{full:?}: verify finds the store whole: {:?}",
        report.problems
    );
}

/// Checks a write that may need more room than the disk has: refused with
/// the disk's error and the task unchanged, or applied and reading back;
/// `task` becomes what the store now holds.
fn settle(
    store: &FileStore,
    task: &mut Task,
    result: taskstore::Result<Transition>,
    full: Full,
    what: &str,
) {
    match result {
        Ok(Transition::Applied(now)) => {
            assert_ne!(now.revision, task.revision, "{full:?}: {what} applied");
            *task = now;
        }
        Ok(other) => panic!("{full:?}: {what} of a running task: {other:?}"),
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::StorageFull => {}
        Err(e) => panic!("{full:?}: {what} failed, but not for want of room: {e}"),
    }
    assert_eq!(
        store.get(&task.id).unwrap().as_ref(),
        Some(&*task),
        "{full:?}: after the {what}, the task is its old version or its new one"
    );
}

/// Takes what room is left on `disk`, of the kind `full` runs out of, with
/// files named after `name`.
fn take_the_rest(disk: &Path, full: Full, name: &str) {
    match full {
        Full::Blocks => fill_blocks(&disk.join(name)),
        Full::Inodes => {
            for n in 0.. {
                match File::create(disk.join(format!("{name}-{n}"))) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::StorageFull => break,
                    Err(e) => panic!("create a file on {}: {e}", disk.display()),
                }
            }
        }
    }
}

/// Writes a file at `path` until the disk refuses another block, and makes
/// it durable.
fn fill_blocks(path: &Path) {
    let mut file = File::create(path).unwrap();
    let block = vec![0xa5u8; 4096];
    loop {
        match file.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::StorageFull => break,
            Err(e) => panic!("fill {}: {e}", path.display()),
        }
    }
    // What delayed allocation reserved is allocated now, or the last
    // write's blocks are given back.
    let _ = file.sync_all();
}
