//! The snapshot of `active/`, in both its modes: kept current by change
//! notices, and proven current by file status. Every write another handle
//! finished must show in the next listing; what did not change must not be
//! read again.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::TaskId;
use crate::file::layout::Area;
use crate::file::stamp::{self, SETTLE, Stamp};
use crate::file::{Durability, FileStore};
use crate::query::ListQuery;
use crate::store::TaskStore;
use crate::task::{NewTask, TaskUpdate};

/// How a snapshot proves itself current.
#[derive(Clone, Copy, Debug)]
pub(super) enum Mode {
    Watch,
    Status,
}

/// A handle on the store at `dir` (two of them stand for two processes).
fn handle(dir: &Path, mode: Mode) -> FileStore {
    handle_on(FileStore::builder(dir), mode)
}

/// Two handles on the store at `dir`, a reader and a writer, as two
/// processes would hold them.
pub(super) fn pair(dir: &Path, mode: Mode) -> (FileStore, FileStore) {
    (handle(dir, mode), handle(dir, mode))
}

/// The handle `builder` opens, without fsync, proving its snapshot current
/// as `mode` says.
pub(super) fn handle_on(builder: crate::file::FileStoreBuilder, mode: Mode) -> FileStore {
    let store = builder.durability(Durability::Eventual).open().unwrap();
    store
        .backend()
        .snapshot
        .watch
        .store(matches!(mode, Mode::Watch), Ordering::Relaxed);
    store
}

fn active(store: &FileStore) -> Vec<(TaskId, u64)> {
    let mut tasks: Vec<_> = store
        .list(&ListQuery::active())
        .unwrap()
        .tasks
        .into_iter()
        .map(|t| (t.id, t.revision))
        .collect();
    tasks.sort();
    tasks
}

/// The ids [`active`] lists, in order.
fn active_ids(store: &FileStore) -> Vec<TaskId> {
    active(store).into_iter().map(|(id, _)| id).collect()
}

/// Files read into `store`'s snapshot so far.
fn reads(store: &FileStore) -> u64 {
    store.backend().snapshot.lock().reads
}

/// Waits (polling, bounded) until `active/` has stood still long enough for
/// its status to be trusted.
fn settle(store: &FileStore) {
    settle_area(store, Area::Active);
}

/// The same for `area`.
pub(super) fn settle_area(store: &FileStore, area: Area) {
    let backend = store.backend();
    settle_status(area.name(), || {
        backend.fs.stat_dir(backend.dir(area)).unwrap()
    });
}

/// Waits (polling, bounded) until `status` gives a status that has stood
/// still long enough to be trusted; `what` names it if it never does.
fn settle_status(what: &str, status: impl Fn() -> crate::file::fs::Status) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while Stamp::settled(&status(), stamp::clock()).is_none() {
        assert!(std::time::Instant::now() < deadline, "{what} never settled");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (polling, bounded) until the file `name` in `area` has stood
/// still long enough for its status to be trusted: one written in place
/// changes no directory, so `settle_area` does not wait for it.
pub(super) fn settle_file(store: &FileStore, area: Area, name: &str) {
    let backend = store.backend();
    settle_status(&format!("{}/{name}", area.name()), || {
        backend
            .fs
            .stat(backend.dir(area), std::ffi::OsStr::new(name))
            .unwrap()
    });
}

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

/// A sweep removes what it read only if it is still that version: a task
/// another handle recreated under the same id between the sweep's scan and
/// its removal is left alone, whether the sweeping handle proves versions by
/// its change notices (drained once per stripe, after the stripe's lock) or
/// by file status, and whether the tasks were running or finished (then
/// proven by their `expiring/` entries: the recreated task finished too,
/// with no entry); the other expired tasks of the batch, in the same
/// stripes or not, are removed.
#[test]
fn a_sweep_leaves_a_task_recreated_after_its_scan() {
    use std::sync::Arc;

    use time::macros::datetime;

    use crate::backend::{Backend, Scan, Scope, Swap};
    use crate::clock::ManualClock;

    for (mode, finished) in [
        (Mode::Watch, false),
        (Mode::Status, false),
        (Mode::Watch, true),
        (Mode::Status, true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(datetime!(2026-01-01 0:00 UTC)));
        let open = || handle_on(FileStore::builder(dir.path()).clock(clock.clone()), mode);
        let (sweeper, other) = (open(), open());
        let ids: Vec<TaskId> = (0..200)
            .map(|n| {
                let id = sweeper
                    .create(NewTask::new().ttl(Duration::from_secs(1)))
                    .unwrap()
                    .id;
                if finished {
                    assert!(
                        sweeper
                            .complete(&id, serde_json::json!(n))
                            .unwrap()
                            .is_applied()
                    );
                }
                id
            })
            .collect();
        clock.advance(Duration::from_secs(2));
        settle(&sweeper);
        let mut scan = Scan::new(Scope::All, usize::MAX);
        scan.expired_at = Some(crate::clock::Clock::now(&*clock));
        let expired = sweeper.backend().scan(&scan).unwrap().tasks;
        assert_eq!(expired.len(), ids.len());
        // Recreated under its id by another handle (creating over an expired
        // task of the same id replaces it), and finished like the others.
        let mut again = other.create(NewTask::new().id(ids[7].clone())).unwrap();
        if finished {
            again = other
                .complete(&again.id, serde_json::json!("again"))
                .unwrap()
                .into_task();
        }
        let results = sweeper.backend().remove_batch(&expired);
        for (task, result) in expired.iter().zip(&results) {
            match result {
                Ok(Swap::Done) => assert_ne!(task.id, again.id, "{mode:?}, finished: {finished}"),
                Ok(Swap::Changed(Some(now))) => assert_eq!(now, &again, "{mode:?}"),
                other => panic!("{mode:?}: {} gave {other:?}", task.id),
            }
        }
        assert_eq!(
            other.get(&again.id).unwrap(),
            Some(again.clone()),
            "{mode:?}, finished: {finished}"
        );
        let running = (!finished).then(|| (again.id.clone(), again.revision));
        assert_eq!(active(&sweeper), Vec::from_iter(running));
    }
}

/// A write over a running task alone reads its file again under the lock
/// only when the snapshot cannot prove it unchanged (a batch reads every
/// task again). Alone or in a batch, a version another handle replaced
/// after this one listed it is refused
/// (`Swap::Changed`, with the stored version), whether the handle proves
/// versions by its change notices or by file status; the stored version is
/// replaced.
#[test]
fn a_write_over_a_version_another_handle_replaced_is_refused() {
    use crate::backend::{Backend, Record, Swap};

    for (mode, batch) in [
        (Mode::Watch, false),
        (Mode::Status, false),
        (Mode::Watch, true),
        (Mode::Status, true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (writer, other) = pair(dir.path(), mode);
        let task = writer.create(NewTask::new()).unwrap();
        // In a batch, beside a task nobody else writes.
        let beside = writer.create(NewTask::new()).unwrap();
        assert_eq!(active(&writer).len(), 2);
        settle(&writer);
        let newer = other
            .update(
                &task.id,
                TaskUpdate::new().metadata("by", serde_json::json!("other")),
            )
            .unwrap()
            .into_task();
        let next = |task: &crate::Task| {
            let mut next = task.clone();
            next.revision += 1;
            let json = serde_json::to_vec(&next).unwrap();
            (task.clone(), Record::new(next, json))
        };
        let mut beside_written = false;
        let mut write_over = |current: &crate::Task| {
            if !batch {
                let (current, next) = next(current);
                return writer.backend().replace(&current, &next);
            }
            let mut results = writer
                .backend()
                .replace_all(&[next(current), next(&beside)]);
            if !beside_written {
                assert!(
                    matches!(results[1], Ok(Swap::Done)),
                    "{mode:?}: {results:?}"
                );
                beside_written = true;
            }
            results.swap_remove(0)
        };
        match write_over(&task) {
            Ok(Swap::Changed(Some(stored))) => assert_eq!(stored, newer, "{mode:?} {batch}"),
            other => panic!("{mode:?} {batch}: a write over a replaced version gave {other:?}"),
        }
        assert!(
            matches!(write_over(&newer), Ok(Swap::Done)),
            "{mode:?} {batch}: the stored version is replaced"
        );
        assert_eq!(
            other.get(&task.id).unwrap().map(|t| t.revision),
            Some(newer.revision + 1),
            "{mode:?} {batch}"
        );
    }
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

/// A sweep by a handle that meets hundreds of new files removes the expired
/// running tasks among them reading each file once, under its lock, never
/// into the snapshot (`unread`), and reports each with the version it read;
/// what it leaves (running tasks without a TTL, a file that does not
/// decode) goes into the snapshot as any new file does, and is listed and
/// reported. With a few new files, or a snapshot that is not complete, the
/// sweep reads them into the snapshot first, as before.
#[test]
fn a_sweep_removes_expired_files_it_has_not_read_reading_each_once() {
    const EXPIRED: usize = 300;
    const UPDATED: usize = 10;
    const LIVE: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let (clock, log, sweeper, writer) = logged_sweeper_and_writer(dir.path(), EXPIRED);
    assert!(active(&sweeper).is_empty(), "the snapshot is complete");
    let ttl = Duration::from_secs(60);
    let mut revisions = std::collections::BTreeMap::new();
    for n in 0..EXPIRED {
        let task = writer.create(NewTask::new().ttl(ttl)).unwrap();
        let task = if n < UPDATED {
            writer
                .update(&task.id, TaskUpdate::new().metadata("n", n))
                .unwrap()
                .into_task()
        } else {
            task
        };
        revisions.insert(task.id, task.revision);
    }
    let live: Vec<TaskId> = (0..LIVE)
        .map(|_| writer.create(NewTask::new()).unwrap().id)
        .collect();
    let junk = dir.path().join("active").join("junk.json");
    std::fs::write(&junk, b"{not a task").unwrap();
    clock.advance(ttl * 2);

    let (reads_before, from) = (reads(&sweeper), log.last_seq() + 1);
    let swept = sweeper.sweep().unwrap();
    assert_eq!(swept.deleted, EXPIRED, "{swept:?}");
    assert!(swept.missed.is_empty(), "{swept:?}");
    assert_eq!(
        swept
            .skipped
            .iter()
            .map(|s| s.location.as_str())
            .collect::<Vec<_>>(),
        [junk.display().to_string()],
        "the file that does not decode is reported"
    );
    assert_eq!(
        reads(&sweeper) - reads_before,
        (LIVE + 1) as u64,
        "only the files the sweep left were read into the snapshot"
    );
    let expired: std::collections::BTreeMap<TaskId, u64> =
        expired_since(&log, from).into_iter().collect();
    assert_eq!(
        expired, revisions,
        "each expired task reported once, as it was read"
    );
    let mut live = live;
    live.sort();
    assert_eq!(active_ids(&sweeper), live);
    assert_eq!(active_ids(&handle(dir.path(), Mode::Watch)), live);
    assert_eq!(
        std::fs::read_dir(dir.path().join("active"))
            .unwrap()
            .count(),
        LIVE,
        "the expired files are gone, the junk set aside"
    );
}

/// The names of new files a sweep has taken from the change notices, to
/// read the files itself, are not lost to a listing in the meantime: it
/// reads them as changed names (`State::unread`).
#[test]
fn a_listing_reads_the_new_files_a_sweep_has_taken() {
    const NEW: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let (sweeper, writer) = pair(dir.path(), Mode::Watch);
    assert!(active(&sweeper).is_empty(), "the snapshot is complete");
    for _ in 0..NEW {
        writer.create(NewTask::new()).unwrap();
    }
    let taken = sweeper.backend().take_unread().unwrap_or_default();
    assert_eq!(taken.len(), NEW, "the sweep takes every new name");
    assert_eq!(
        active(&sweeper).len(),
        NEW,
        "a listing meanwhile reads them"
    );
    assert!(sweeper.backend().snapshot.lock().unread.is_none());
}

/// A sweeper and a writer, both watching, on a new store in `dir`, and the
/// clock they share.
fn sweeper_and_writer(
    dir: &Path,
) -> (
    std::sync::Arc<crate::clock::ManualClock>,
    FileStore,
    FileStore,
) {
    let (clock, _, sweeper, writer) = logged_sweeper_and_writer(dir, 1);
    (clock, sweeper, writer)
}

/// 300 tasks `writer` makes with a TTL and 5 without, listed by `learner`
/// (if any) while all are live, then the `clock` past the expiry: the
/// expired ids and the live ones (sorted).
fn expired_and_live(
    writer: &FileStore,
    clock: &crate::clock::ManualClock,
    learner: Option<&FileStore>,
) -> (Vec<TaskId>, Vec<TaskId>) {
    let ttl = Duration::from_secs(60);
    let expired: Vec<TaskId> = (0..300)
        .map(|_| writer.create(NewTask::new().ttl(ttl)).unwrap().id)
        .collect();
    let mut live: Vec<TaskId> = (0..5)
        .map(|_| writer.create(NewTask::new()).unwrap().id)
        .collect();
    live.sort();
    if let Some(learner) = learner {
        // A listing deletes what it meets expired: it lists them live.
        assert_eq!(active_ids(learner).len(), expired.len() + live.len());
    }
    clock.advance(ttl * 2);
    (expired, live)
}

/// A sweep's own unlinks of the files it has not read queue no change
/// notices (the sweeper's watch stops noticing unlinks only while the sweep
/// holds every stripe, so no one else can make one), yet the sweeper sees
/// another handle's unlink right after; and a refresh that read the files
/// while the sweep was removing them keeps no entry of a removed file.
#[test]
fn a_sweeps_own_unlinks_queue_no_notices_and_every_other_unlink_is_still_seen() {
    use std::sync::Once;

    use crate::clock::Clock;

    // Each round: a refresh in the middle of the pass, or none.
    for refresh_meanwhile in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (clock, sweeper, writer) = sweeper_and_writer(dir.path());
        assert!(active(&sweeper).is_empty(), "the snapshot is complete");
        let (expired, live) = expired_and_live(&writer, &clock, None);

        let backend = sweeper.backend();
        let now = clock.now();
        let refreshed = Once::new();
        let mut removed = Vec::new();
        backend.remove_unread(
            &|task| {
                if refresh_meanwhile {
                    refreshed.call_once(|| {
                        let mut state = backend.snapshot.lock();
                        backend.refresh(&mut state).unwrap();
                    });
                }
                task.is_expired_at(now)
            },
            &mut |task| removed.push(task.id),
        );
        removed.sort();
        let mut want = expired.clone();
        want.sort();
        assert_eq!(removed, want, "refresh meanwhile: {refresh_meanwhile}");
        let context = format!("the sweep, refresh meanwhile: {refresh_meanwhile}");
        own_unlinks_unnoticed_others_seen(&sweeper, &writer, &expired, &live, &context);
    }
}

/// After `sweeper` removed the `expired` tasks holding every stripe: its
/// watch queued no notice of those unlinks, its snapshot keeps no entry of
/// them and lists the `live` ones, and an unlink by `writer` right after is
/// seen (`context` names the pass in the messages).
fn own_unlinks_unnoticed_others_seen(
    sweeper: &FileStore,
    writer: &FileStore,
    expired: &[TaskId],
    live: &[TaskId],
    context: &str,
) {
    {
        let state = sweeper.backend().snapshot.lock();
        let watch = state.watch.as_ref().expect("the watch lives on");
        assert!(
            watch.is_quiet(),
            "{context}: its own unlinks queued notices"
        );
        let kept = expired.iter().filter(|id| state.get(id).is_some()).count();
        assert_eq!(kept, 0, "{context}: entries of removed files kept");
        assert!(state.complete, "{context}: the snapshot is still complete");
    }
    assert_eq!(active_ids(sweeper), live);
    assert!(writer.delete(&live[0]).unwrap());
    assert_eq!(
        active_ids(sweeper),
        live[1..],
        "{context}: another handle's unlink after it is seen"
    );
}

/// The same for a sweep's batch of tasks its handle knows (listed before
/// the sweep): its own unlinks queue no notices, the removed tasks' entries
/// go, and another handle's unlink right after is seen.
#[test]
fn a_sweep_batchs_own_unlinks_queue_no_notices_and_their_entries_go() {
    use crate::backend::{Backend, Scan, Scope, Swap};
    use crate::clock::Clock;

    let dir = tempfile::tempdir().unwrap();
    let (clock, sweeper, writer) = sweeper_and_writer(dir.path());
    // Listed after the fill: the sweeper knows every task.
    let (expired, live) = expired_and_live(&writer, &clock, Some(&sweeper));

    let backend = sweeper.backend();
    let mut scan = Scan::new(Scope::All, expired.len() + live.len());
    scan.expired_at = Some(clock.now());
    scan.payloads = false;
    let doomed = backend.scan(&scan).unwrap().tasks;
    assert_eq!(doomed.len(), expired.len());
    let results = backend.remove_expired(&doomed);
    assert!(results.iter().all(|r| matches!(r, Ok(Swap::Done))));
    own_unlinks_unnoticed_others_seen(&sweeper, &writer, &expired, &live, "the batch");
}

/// A pass that panics while the sweep's watch skips unlinks leaves it
/// noticing them again: another handle's delete is seen after it. It also
/// leaves the snapshot to a full pass (the guard is shared with removal
/// batches of known tasks, whose entries such a pass would leave behind).
#[test]
fn a_sweep_that_panics_leaves_its_watch_noticing_unlinks() {
    const NEW: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let (sweeper, writer) = pair(dir.path(), Mode::Watch);
    let known = writer.create(NewTask::new()).unwrap().id;
    assert_eq!(active(&sweeper).len(), 1, "the snapshot is complete");
    for _ in 0..NEW {
        writer.create(NewTask::new()).unwrap();
    }
    let backend = sweeper.backend();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        backend.remove_unread(&|_| panic!("a doomed check that fails"), &mut |_| {});
    }));
    assert!(panicked.is_err());
    assert!(
        !backend.snapshot.lock().complete,
        "a pass that panicked leaves the next listing a full pass"
    );
    assert_eq!(active(&sweeper).len(), NEW + 1);
    assert!(writer.delete(&known).unwrap());
    assert_eq!(
        active(&sweeper).len(),
        NEW,
        "the delete after the panic was noticed"
    );
}

/// A sweep of hundreds of finished tasks due by their `expiring/` entries
/// reads each file once, under every stripe, and unlinks it at once
/// (`remove_due`); what it leaves, its scan meets as before: an entry that
/// is not its task's (removed as stale), a file that does not decode (set
/// aside and reported), a task with a copy in `active/` (a terminal move
/// a crash cut short: both go). Each task is reported once, with the
/// version it read.
#[test]
fn a_sweep_removes_due_finished_tasks_as_it_reads_them_and_leaves_its_scan_the_odd_ones() {
    const FINISHED: usize = 300; // one chunk, read on every worker
    let dir = tempfile::tempdir().unwrap();
    let (clock, log, sweeper, writer) = logged_sweeper_and_writer(dir.path(), FINISHED);
    let ttl = Duration::from_secs(60);
    let (area, index) = (
        |area: &str| dir.path().join(area),
        dir.path().join("expiring"),
    );
    let mut revisions = std::collections::BTreeMap::new();
    let mut moving = None;
    let mut made = Vec::new();
    for n in 0..FINISHED {
        let task = writer.create(NewTask::new().ttl(ttl)).unwrap();
        let done = writer
            .complete(&task.id, serde_json::json!(n))
            .unwrap()
            .into_task();
        if n == 1 {
            // A terminal move cut short by a crash: the terminal version
            // still in `active/` too (a move renames it there first).
            let name = format!("{}.json", task.id);
            std::fs::copy(area("done").join(&name), area("active").join(&name)).unwrap();
            moving = Some(task.id.clone());
        }
        revisions.insert(done.id.clone(), done.revision);
        made.push(done.id);
        clock.advance(Duration::from_millis(1));
    }
    let ids = made;
    // A second entry, earlier, for one task: not its task's own.
    let stale = std::ffi::OsString::from(format!("1.60000.{}", ids[2]));
    std::fs::hard_link(
        area("done").join(format!("{}.json", ids[2])),
        index.join(&stale),
    )
    .unwrap();
    // A file that does not decode, its entry still its file.
    let corrupt = area("done").join(format!("{}.json", ids[3]));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&corrupt)
        .unwrap()
        .set_len(10)
        .unwrap();
    revisions.remove(&ids[3]);
    clock.advance(ttl * 2);

    let from = log.last_seq() + 1;
    let swept = sweeper.sweep().unwrap();
    assert!(swept.missed.is_empty(), "{swept:?}");
    assert_eq!(
        swept
            .skipped
            .iter()
            .map(|s| s.id.clone())
            .collect::<Vec<_>>(),
        [Some(ids[3].clone())],
        "the file that does not decode is reported, once"
    );
    let reports = expired_since(&log, from);
    assert_eq!(reports.len(), FINISHED - 1, "no task reported twice");
    let expired = reports.into_iter().collect();
    let differ = made_order(&ids, &expired, &revisions);
    assert!(
        differ.is_empty(),
        "(place, reported, made) of the tasks not reported once at their version: {differ:?}"
    );
    assert_eq!(swept.deleted, FINISHED - 1, "{swept:?}");
    for name in ["active", "done", "expiring"] {
        let left: Vec<_> = std::fs::read_dir(area(name))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{name}/ still holds {left:?}");
    }
    let moving = moving.unwrap();
    assert_eq!(sweeper.get(&moving).unwrap(), None);
    assert_eq!(writer.get(&moving).unwrap(), None);
}

/// A sweeper and a writer, both watching, on a new store in `dir`, the
/// clock they share, and the event log the sweeper sends to (room for the
/// events of a sweep of `tasks` tasks).
fn logged_sweeper_and_writer(
    dir: &Path,
    tasks: usize,
) -> (
    std::sync::Arc<crate::clock::ManualClock>,
    std::sync::Arc<crate::events::EventLog>,
    FileStore,
    FileStore,
) {
    let clock = std::sync::Arc::new(crate::clock::ManualClock::new(
        time::macros::datetime!(2026-01-01 0:00 UTC),
    ));
    let log = std::sync::Arc::new(crate::events::EventLog::with_capacity(4 * tasks));
    let open = |builder: crate::file::FileStoreBuilder| {
        handle_on(builder.clock(clock.clone()), Mode::Watch)
    };
    let sweeper = open(FileStore::builder(dir).sink(log.clone()));
    let writer = open(FileStore::builder(dir));
    (clock, log, sweeper, writer)
}

/// The `task.expired` events `log` holds from sequence number `from` on:
/// each task's id and the revision reported, in order.
fn expired_since(log: &crate::events::EventLog, from: u64) -> Vec<(TaskId, u64)> {
    log.snapshot()
        .into_iter()
        .filter(|r| r.seq >= from && r.event.kind == crate::events::TaskEventKind::Expired)
        .map(|r| {
            (
                TaskId::parse(r.event.data["taskId"].as_str().unwrap()).unwrap(),
                r.event.data["revision"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The tasks of `made` (by their place in it) whose report in `expired`
/// is not their version in `want`.
fn made_order(
    made: &[TaskId],
    expired: &std::collections::BTreeMap<TaskId, u64>,
    want: &std::collections::BTreeMap<TaskId, u64>,
) -> Vec<(usize, Option<u64>, Option<u64>)> {
    made.iter()
        .enumerate()
        .filter(|(_, id)| expired.get(*id) != want.get(*id))
        .map(|(at, id)| (at, expired.get(id).copied(), want.get(id).copied()))
        .collect()
}

/// A sweep of finished tasks reads the `expiring/` index once, however many
/// batches it takes (not once per batch of 1,024), and a second sweep at
/// the same instant reads it again: a task that finished since the first is
/// found.
#[test]
fn a_sweep_reads_the_expiry_index_once_per_pass() {
    use std::sync::Arc;

    use crate::backend::{Backend, Scan, Scope};
    use std::sync::atomic::Ordering;

    use time::macros::datetime;

    use crate::clock::ManualClock;

    const FINISHED: usize = 2_500; // three batches
    let ttl = Duration::from_secs(60);
    let start = datetime!(2026-01-01 0:00 UTC);
    let clock = Arc::new(ManualClock::new(start));
    let dir = tempfile::tempdir().unwrap();
    let sweeper = handle_on(
        FileStore::builder(dir.path()).clock(clock.clone()),
        Mode::Watch,
    );
    // A writer whose clock stays at the start: what it makes is expired at
    // the sweeper's instant from the moment it is made.
    let writer = handle_on(
        FileStore::builder(dir.path()).clock(Arc::new(ManualClock::new(start))),
        Mode::Watch,
    );
    let finish = |n: usize| {
        for _ in 0..n {
            let id = writer.create(NewTask::new().ttl(ttl)).unwrap().id;
            assert!(
                writer
                    .complete(&id, serde_json::json!(1))
                    .unwrap()
                    .is_applied()
            );
        }
    };
    finish(FINISHED);
    clock.advance(ttl * 2);
    let reads = || sweeper.backend().due.reads.load(Ordering::Relaxed);
    assert_eq!(sweeper.sweep().unwrap().deleted, FINISHED);
    assert_eq!(reads(), 1, "one pass, one read of the index");
    finish(3);
    assert_eq!(
        sweeper.sweep().unwrap().deleted,
        3,
        "the tasks that finished since, at the same instant"
    );
    assert_eq!(reads(), 2);
    // A pass left unfinished keeps its entries for its next batch; a new
    // pass from the start reads the index again.
    let backend = sweeper.backend();
    finish(5);
    let mut first = Scan::new(Scope::All, 2);
    first.expired_at = Some(crate::clock::Clock::now(&*clock));
    assert_eq!(backend.scan(&first).unwrap().tasks.len(), 2);
    finish(1);
    let again = Scan {
        limit: 100,
        ..first.clone()
    };
    assert_eq!(backend.scan(&again).unwrap().tasks.len(), 6);
    assert_eq!(reads(), 4);
}

/// A scan of expired finished tasks reads its entries on every worker and
/// still returns them in listing order, `limit` at a time: an entry whose
/// task's file is gone (stale) or does not read leaves its place in the
/// page to the next, the stale one removed, the unreadable file set aside
/// and reported where the page met it.
#[test]
fn an_expired_page_of_finished_tasks_fills_past_stale_and_unreadable_entries_in_order() {
    use std::sync::Arc;

    use crate::backend::{Backend, Position, Scan, Scope};
    use crate::clock::{Clock, ManualClock};

    const FINISHED: usize = 700;
    const PAGE: usize = 300; // read on every worker
    let ttl = Duration::from_secs(60);
    let start = time::macros::datetime!(2026-01-01 0:00 UTC);
    let clock = Arc::new(ManualClock::new(start));
    let dir = tempfile::tempdir().unwrap();
    let writer = FileStore::builder(dir.path())
        .clock(Arc::new(ManualClock::new(start)))
        .open()
        .unwrap();
    let mut tasks: Vec<_> = (0..FINISHED)
        .map(|i| {
            let task = writer.create(NewTask::new().ttl(ttl)).unwrap();
            let completed = writer.complete(&task.id, serde_json::json!(i));
            assert!(completed.unwrap().is_applied());
            task
        })
        .collect();
    tasks.sort_by_key(Position::of);
    let done = dir.path().join("done");
    let file = |id: &TaskId| done.join(format!("{id}.json"));
    let (mut stale, mut unreadable) = (Vec::new(), Vec::new());
    for (at, task) in tasks.iter().enumerate() {
        match at % 10 {
            3 => {
                std::fs::remove_file(file(&task.id)).unwrap();
                stale.push(task.id.clone());
            }
            // Rewritten in place: still the entry's file, not a task.
            7 => {
                std::fs::write(file(&task.id), b"{\"format\":1,\"ta").unwrap();
                unreadable.push(task.id.clone());
            }
            _ => {}
        }
    }
    let expected: Vec<TaskId> = tasks
        .iter()
        .map(|task| task.id.clone())
        .filter(|id| !stale.contains(id) && !unreadable.contains(id))
        .collect();

    clock.advance(ttl * 2);
    let sweeper = FileStore::builder(dir.path())
        .clock(clock.clone())
        .open()
        .unwrap();
    let mut scan = Scan::new(Scope::All, PAGE);
    scan.expired_at = Some(clock.now());
    let (mut listed, mut skipped) = (Vec::new(), Vec::new());
    loop {
        let page = sweeper.backend().scan(&scan).unwrap();
        assert!(page.tasks.len() <= PAGE);
        skipped.extend(page.skipped.iter().filter_map(|s| s.id.clone()));
        let Some(last) = page.tasks.last() else {
            break;
        };
        scan.after = Some(Position::of(last));
        let full = page.tasks.len() == PAGE;
        listed.extend(page.tasks.into_iter().map(|task| task.id));
        if !full {
            break;
        }
    }
    assert_eq!(listed.len(), expected.len());
    assert!(listed == expected, "every readable task, in listing order");
    assert_eq!(skipped, unreadable, "reported as the pages met them");
    let left: usize = std::fs::read_dir(dir.path().join("expiring"))
        .unwrap()
        .count();
    assert_eq!(
        left,
        expected.len(),
        "the stale entries removed, and the set-aside files' with them; the others left to the sweep"
    );
    assert!(
        unreadable.iter().all(|id| !file(id).exists()),
        "the unreadable files set aside"
    );
}

/// A removal batch under every stripe makes `active/` durable before its
/// removals from `done/` unless nothing changed there since it last did:
/// a task that finished between two batches (its move's last unlink is in
/// `active/`) makes the next batch do it again, though the sweep's notices
/// were drained before the move (the batch drains them itself).
#[cfg(feature = "fault-injection")]
#[test]
fn a_batch_after_a_move_makes_active_durable_again() {
    use std::sync::Arc;

    use crate::backend::{Backend, Scan, Scope};
    use crate::clock::{Clock, ManualClock};
    use crate::file::{FsEvent, Recorder};

    const EACH: usize = 300; // a batch that takes every stripe
    let clock = Arc::new(ManualClock::new(
        time::macros::datetime!(2026-01-01 0:00 UTC),
    ));
    let dir = tempfile::tempdir().unwrap();
    let recorder = Recorder::new();
    let sweeper = FileStore::builder(dir.path())
        .clock(clock.clone())
        .recorder(recorder.clone())
        .open()
        .unwrap();
    assert!(active(&sweeper).is_empty(), "the snapshot is complete");
    let filler = handle_on(
        FileStore::builder(dir.path()).clock(clock.clone()),
        Mode::Watch,
    );
    let finish = |n: usize, ttl: Duration| {
        for at in 0..n {
            let id = filler.create(NewTask::new().ttl(ttl)).unwrap().id;
            let done = filler.complete(&id, serde_json::json!(at)).unwrap();
            assert!(done.is_applied());
        }
    };
    finish(3 * EACH, Duration::from_secs(60));
    clock.advance(Duration::from_secs(61));
    let backend = sweeper.backend();
    let mut scan = Scan::new(Scope::All, 3 * EACH);
    scan.expired_at = Some(clock.now());
    scan.payloads = false;
    let tasks = backend.scan(&scan).unwrap().tasks;
    assert_eq!(tasks.len(), 3 * EACH);
    let fsyncs_of_active = |batch: &[crate::task::Task]| {
        let from = recorder.len();
        backend.remove_expired(batch);
        recorder.events()[from..]
            .iter()
            .filter(|e| matches!(e, FsEvent::SyncDir { path } if path.ends_with("active")))
            .count()
    };
    assert_eq!(fsyncs_of_active(&tasks[..EACH]), 1, "the first batch");
    assert_eq!(
        fsyncs_of_active(&tasks[EACH..2 * EACH]),
        0,
        "nothing moved since"
    );
    finish(1, Duration::from_secs(3_600));
    assert_eq!(
        fsyncs_of_active(&tasks[2 * EACH..]),
        1,
        "a task finished since the last batch"
    );
    backend.settle_expired().unwrap();
}
