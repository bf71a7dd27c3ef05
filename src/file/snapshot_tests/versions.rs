//! A sweep or a write meeting a version another handle replaced since its
//! scan: the newer task is left alone, the write refused; and a batch after
//! a terminal move makes `active/` durable again.

use std::time::Duration;

use super::{Mode, active, handle_on, pair, settle};
use crate::TaskId;
use crate::file::FileStore;
use crate::store::TaskStore;
use crate::task::{NewTask, TaskUpdate};

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
