//! Listings and gets from the snapshot, in both its modes: a quiet store
//! lists from memory, every write that returned shows in the next listing,
//! only the files that changed are read again, and a running task's `get`
//! opens no file yet never answers an older version.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::{Mode, active, handle, handle_on, pair, reads, settle};
use crate::TaskId;
use crate::file::FileStore;
use crate::file::stamp::SETTLE;
use crate::query::ListQuery;
use crate::store::TaskStore;
use crate::task::{NewTask, TaskUpdate};

fn a_quiet_store_lists_from_memory_and_sees_every_later_write(mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let (reader, writer) = pair(dir.path(), mode);
    let ids: Vec<_> = (0..3)
        .map(|_| writer.create(NewTask::new()).unwrap().id)
        .collect();
    settle(&reader);
    let first = active(&reader);
    assert_eq!(first.len(), 3);
    let read = reads(&reader);
    assert_eq!(active(&reader), first);
    assert_eq!(
        reads(&reader),
        read,
        "{mode:?}: an unchanged store is listed from memory"
    );

    // Another handle's update, completion, creation and deletion are each
    // seen by the very next listing, reading only what changed.
    let updated = writer
        .update(&ids[0], TaskUpdate::new().status_message("moved on"))
        .unwrap()
        .into_task();
    assert!(active(&reader).contains(&(updated.id.clone(), updated.revision)));
    let _ = writer.complete(&ids[1], serde_json::json!("done")).unwrap();
    assert_eq!(active(&reader).len(), 2, "{mode:?}");
    let created = writer.create(NewTask::new()).unwrap().id;
    assert!(active(&reader).iter().any(|(id, _)| *id == created));
    assert!(writer.delete(&ids[2]).unwrap());
    assert!(!active(&reader).iter().any(|(id, _)| *id == ids[2]));
    if matches!(mode, Mode::Watch) {
        assert_eq!(
            reads(&reader),
            read + 2,
            "only the updated and the created files were read"
        );
    }
}

#[test]
fn with_change_notices_a_quiet_store_lists_from_memory_and_sees_every_later_write() {
    a_quiet_store_lists_from_memory_and_sees_every_later_write(Mode::Watch);
}

#[test]
fn by_file_status_a_quiet_store_lists_from_memory_and_sees_every_later_write() {
    a_quiet_store_lists_from_memory_and_sees_every_later_write(Mode::Status);
}

/// A writer bumps one task's revision, pausing now and then past the
/// settle margin so that the reader keeps snapshots and the next write
/// lands right after one was taken; every listing that starts after a write
/// returned must show at least that revision.
fn a_listing_started_after_a_write_returned_sees_it(mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let (reader, writer) = pair(dir.path(), mode);
    let id = writer.create(NewTask::new()).unwrap().id;
    let written = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            for round in 0..12u32 {
                std::thread::sleep(SETTLE + Duration::from_millis(20 + u64::from(round % 4) * 7));
                for _ in 0..(1 + round % 3) {
                    let task = writer
                        .update(&id, TaskUpdate::new().metadata("round", round))
                        .unwrap()
                        .into_task();
                    written.store(task.revision, Ordering::SeqCst);
                }
            }
            stop.store(true, Ordering::SeqCst);
        });
        while !stop.load(Ordering::SeqCst) {
            let at_least = written.load(Ordering::SeqCst);
            let listed = active(&reader);
            assert_eq!(listed.len(), 1);
            assert!(
                listed[0].1 >= at_least,
                "{mode:?}: listed revision {} after revision {at_least} was written",
                listed[0].1
            );
        }
    });
}

#[test]
fn with_change_notices_a_listing_started_after_a_write_returned_sees_it() {
    a_listing_started_after_a_write_returned_sees_it(Mode::Watch);
}

#[test]
fn by_file_status_a_listing_started_after_a_write_returned_sees_it() {
    a_listing_started_after_a_write_returned_sees_it(Mode::Status);
}

/// With `n` running tasks: each listing after a write reads only what is
/// not provably unchanged, and sees every change.
fn only_changed_files_are_read(n: usize, mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let (reader, writer) = pair(dir.path(), mode);
    let ids: Vec<_> = (0..n)
        .map(|_| writer.create(NewTask::new()).unwrap().id)
        .collect();
    settle(&reader);
    active(&reader);
    for round in 0..10u32 {
        // Replaced twice in a row: the second file may get the first's
        // freed inode number back, and must be read all the same.
        let id = &ids[round as usize * 7 % n];
        let mut last = None;
        for step in 0..2u32 {
            last = Some(
                writer
                    .update(id, TaskUpdate::new().metadata("step", round * 2 + step))
                    .unwrap()
                    .into_task(),
            );
        }
        let last = last.unwrap();
        let before = reads(&reader);
        let listed = active(&reader);
        assert!(
            listed.contains(&(last.id.clone(), last.revision)),
            "{mode:?}"
        );
        assert_eq!(listed.len(), n);
        let read = reads(&reader) - before;
        match mode {
            // One notice per write, one read per name.
            Mode::Watch => assert_eq!(read, 1, "round {round}"),
            // The file just written, and (after round 0) the one written in
            // the round before if it was read while its status had not
            // settled (on a busy machine that listing may come late enough
            // to find it settled already).
            Mode::Status => {
                let most = if round == 0 { 1 } else { 2 };
                assert!((1..=most).contains(&read), "round {round}: {read} read");
            }
        }
        settle(&reader);
    }
}

#[test]
fn after_a_write_only_the_files_that_changed_are_read() {
    for mode in [Mode::Watch, Mode::Status] {
        only_changed_files_are_read(5, mode);
        only_changed_files_are_read(40, mode);
    }
}

#[test]
fn a_corrupt_file_is_set_aside_and_never_cached() {
    for mode in [Mode::Watch, Mode::Status] {
        let dir = tempfile::tempdir().unwrap();
        let store = handle(dir.path(), mode);
        store.create(NewTask::new()).unwrap();
        assert_eq!(active(&store).len(), 1);
        let bad = TaskId::new();
        std::fs::write(dir.path().join("active").join(format!("{bad}.json")), b"{").unwrap();
        settle(&store);
        let page = store.list(&ListQuery::active()).unwrap();
        assert_eq!(page.tasks.len(), 1);
        assert_eq!(page.skipped.len(), 1, "{mode:?}");
        assert!(dir.path().join("quarantine").read_dir().unwrap().count() > 0);
        let page = store.list(&ListQuery::active()).unwrap();
        assert_eq!(
            (page.tasks.len(), page.skipped.len()),
            (1, 0),
            "reported once, then gone"
        );
    }
}

#[test]
fn the_snapshot_counts_running_tasks_and_keeps_about_their_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = handle(dir.path(), Mode::Watch);
    let mut ids = Vec::new();
    for i in 0..200 {
        ids.push(store.create(NewTask::new().metadata("i", i)).unwrap().id);
    }
    for id in &ids[..50] {
        let _ = store.complete(id, serde_json::json!("done")).unwrap();
    }
    assert_eq!(store.backend().count_active().unwrap(), 150);
    let files: usize = std::fs::read_dir(dir.path().join("active"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len() as usize)
        .sum();
    let (cached, entries) = store.backend().snapshot.lock().size();
    assert_eq!(entries, 150);
    assert_eq!(
        cached, files,
        "the snapshot keeps the files' bytes, no more"
    );
}

/// A `get` of a running task on a handle whose snapshot is current by its
/// change notices opens no file, and still sees every write another handle
/// finished before it started: updates, a terminal transition (read from
/// the files), a delete, and a new task of the same id.
#[test]
fn with_change_notices_a_get_of_a_running_task_opens_no_file_and_sees_every_earlier_write() {
    let dir = tempfile::tempdir().unwrap();
    let (reader, writer) = pair(dir.path(), Mode::Watch);
    let task = writer.create(NewTask::new()).unwrap();
    let other = writer.create(NewTask::new()).unwrap();
    assert_eq!(active(&reader).len(), 2, "the snapshot is complete");
    let gets = |store: &FileStore| store.backend().snapshot.lock().gets;

    let before = reads(&reader);
    for round in 1..=20u64 {
        let updated = writer
            .update(&task.id, TaskUpdate::new().metadata("round", round))
            .unwrap()
            .into_task();
        let got = reader.get(&task.id).unwrap().unwrap();
        assert_eq!(got, updated, "round {round}: the write that returned");
    }
    assert_eq!(gets(&reader), 20, "every get served from the snapshot");
    assert_eq!(reads(&reader) - before, 20, "one file read per change");
    assert_eq!(reader.get(&other.id).unwrap(), Some(other.clone()));
    assert_eq!(reads(&reader) - before, 20, "an unchanged task is not read");

    let done = writer
        .complete(&task.id, serde_json::json!(1))
        .unwrap()
        .into_task();
    assert_eq!(reader.get(&task.id).unwrap(), Some(done));
    assert!(writer.delete(&task.id).unwrap());
    assert_eq!(reader.get(&task.id).unwrap(), None);
    let again = writer.create(NewTask::new().id(task.id.clone())).unwrap();
    assert_eq!(reader.get(&task.id).unwrap(), Some(again));
}

/// `try_get` (a `get` that waits for nothing) answers only what `get`
/// would answer at that instant, from the snapshot, opening no file: after
/// another handle's write returned it answers nothing (the write's notice
/// is pending) until a `get` has taken the write in, then the new version;
/// never the old one. It answers nothing while another thread holds the
/// snapshot, for a finished task, for an expired one (`get` deletes it),
/// or without change notices.
#[test]
fn try_get_answers_only_what_get_would_and_never_an_older_version() {
    use std::sync::Arc;

    use time::macros::datetime;

    use crate::clock::ManualClock;

    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(datetime!(2026-01-01 0:00 UTC)));
    let open = |mode| handle_on(FileStore::builder(dir.path()).clock(clock.clone()), mode);
    let (reader, writer) = (open(Mode::Watch), open(Mode::Watch));
    let task = writer.create(NewTask::new()).unwrap();
    assert_eq!(active(&reader).len(), 1, "the snapshot is complete");
    assert_eq!(reader.try_get(&task.id), Some(Some(task.clone())));

    let before = reads(&reader);
    for round in 1..=20u64 {
        let updated = writer
            .update(&task.id, TaskUpdate::new().metadata("round", round))
            .unwrap()
            .into_task();
        assert_eq!(
            reader.try_get(&task.id),
            None,
            "round {round}: a write's notice is pending"
        );
        assert_eq!(reader.get(&task.id).unwrap().as_ref(), Some(&updated));
        assert_eq!(
            reader.try_get(&task.id),
            Some(Some(updated)),
            "round {round}: the write that returned"
        );
    }
    assert_eq!(
        reads(&reader) - before,
        20,
        "one file read per change, by get"
    );

    // Another thread holds the snapshot (as a listing does, across file
    // reads): no wait, no answer.
    {
        let _listing = reader.backend().snapshot.lock();
        std::thread::scope(|s| {
            let answer = s.spawn(|| reader.try_get(&task.id)).join().unwrap();
            assert_eq!(answer, None);
        });
    }

    // A task with a TTL, past it: left to `get`, which deletes it.
    let short = writer
        .create(NewTask::new().ttl(Duration::from_secs(1)))
        .unwrap();
    assert_eq!(reader.get(&short.id).unwrap().as_ref(), Some(&short));
    assert_eq!(reader.try_get(&short.id), Some(Some(short.clone())));
    clock.advance(Duration::from_secs(1));
    assert_eq!(reader.try_get(&short.id), None);
    assert_eq!(reader.get(&short.id).unwrap(), None);

    // A finished task lives in `done/`: left to `get`.
    let done = writer
        .complete(&task.id, serde_json::json!(1))
        .unwrap()
        .into_task();
    assert_eq!(reader.get(&task.id).unwrap(), Some(done));
    assert_eq!(reader.try_get(&task.id), None);

    // Without change notices the snapshot proves itself by file status,
    // which takes a system call: never.
    let by_status = open(Mode::Status);
    let running = writer.create(NewTask::new()).unwrap();
    assert_eq!(active(&by_status).len(), 1);
    assert_eq!(by_status.try_get(&running.id), None);
    assert_eq!(by_status.get(&running.id).unwrap(), Some(running));
}

/// While a handle holds few running tasks (`MAX_DECODED`), a listing decodes
/// each version once and copies it after; a change another handle made is
/// decoded afresh; with more running tasks nothing is kept decoded.
#[test]
fn few_running_tasks_are_decoded_once_per_version() {
    use crate::file::snapshot::MAX_DECODED;

    let dir = tempfile::tempdir().unwrap();
    let (reader, writer) = pair(dir.path(), Mode::Watch);
    let decodes = |store: &FileStore| store.backend().snapshot.lock().decodes;
    let ids: Vec<TaskId> = (0..10)
        .map(|_| writer.create(NewTask::new()).unwrap().id)
        .collect();
    assert_eq!(active(&reader).len(), 10);
    assert_eq!(decodes(&reader), 10);
    for _ in 0..3 {
        assert_eq!(active(&reader).len(), 10);
    }
    assert_eq!(decodes(&reader), 10, "copies, not decodes");
    let updated = writer
        .update(&ids[3], TaskUpdate::new().metadata("k", 1))
        .unwrap()
        .into_task();
    assert!(active(&reader).contains(&(updated.id.clone(), updated.revision)));
    assert_eq!(decodes(&reader), 11, "the changed task, decoded afresh");
    assert_eq!(reader.get(&ids[3]).unwrap(), Some(updated));

    for _ in 10..=MAX_DECODED {
        writer.create(NewTask::new()).unwrap();
    }
    let before = decodes(&reader);
    assert_eq!(active(&reader).len(), MAX_DECODED + 1);
    assert_eq!(active(&reader).len(), MAX_DECODED + 1);
    assert_eq!(
        decodes(&reader) - before,
        2 * (MAX_DECODED as u64 + 1 - 10),
        "past MAX_DECODED, only the copies kept before are reused"
    );
}
