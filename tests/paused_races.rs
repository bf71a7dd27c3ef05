//! Races made on purpose: one handle's call held at the file-system seam
//! ([`FaultInjector::pause_at`]) at the point a race would hurt, while
//! another handle acts. What each test checks is the state both leave, not
//! how long anything took; the wait before letting the held call on only
//! gives a writer that does not wait (a broken store) time to act.

#![cfg(feature = "fault-injection")]

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::json;
use taskstore::{
    FaultInjector, FileStore, FsOp, ListQuery, ManualClock, NewTask, Task, TaskStatus, TaskStore,
};
use time::macros::datetime;

/// Expired tasks in the sweep: enough that it reads and removes them as it
/// meets them, under every stripe, in one chunk.
const EXPIRED: usize = 300;

/// How long the held sweep waits for the racing writer before it goes on:
/// a writer that waits for the sweep's locks (as it must) is still
/// waiting then; one that does not has long finished.
const RACE: Duration = Duration::from_millis(500);

fn open(dir: &Path, clock: &ManualClock, faults: Option<&FaultInjector>) -> FileStore {
    let mut builder = FileStore::builder(dir).clock(Arc::new(clock.clone()));
    if let Some(faults) = faults {
        builder = builder.fault_injector(faults.clone());
    }
    builder.open().unwrap()
}

/// A sweep that has read an expired task and is about to unlink its file
/// holds every stripe: another handle's create of a task under the same id
/// (and, for a finished task, its completion) waits for it, and so lands
/// after the unlink, never under it. For finished tasks (the sweep's pass
/// over the `expiring/` entries that are due), running ones its handle had
/// not read (its pass over the new files) and running ones it knew (its
/// scan's batches, which prove each file unchanged under the locks). The
/// recreated task reads back, from every handle; the sweep counts the old
/// one, and every other expired task is gone.
#[test]
fn a_sweep_about_to_unlink_an_expired_file_holds_off_a_writer_recreating_its_task() {
    for (finished, known) in [(true, false), (false, false), (false, true)] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
        let faults = FaultInjector::new();
        let sweeper = open(dir.path(), &clock, Some(&faults));
        // A running task the sweep reads as a new file only if its handle
        // follows `active/` from before it was made.
        assert!(sweeper.list(&ListQuery::active()).unwrap().tasks.is_empty());
        let writer = open(dir.path(), &clock, None);
        let ttl = Duration::from_secs(60);
        let ids: Vec<_> = (0..EXPIRED)
            .map(|n| {
                let task = writer.create(NewTask::new().ttl(ttl)).unwrap();
                if finished {
                    assert!(writer.complete(&task.id, json!(n)).unwrap().is_applied());
                }
                task.id
            })
            .collect();
        if known {
            let listed = sweeper.list(&ListQuery::active()).unwrap().tasks;
            assert_eq!(listed.len(), EXPIRED);
        }
        clock.advance(ttl * 2);

        let raced = ids[EXPIRED / 3].clone();
        let area = if finished { "done" } else { "active" };
        let file = dir.path().join(area).join(format!("{raced}.json"));
        let held = faults.pause_at(FsOp::Remove, &file);
        let swept = std::thread::scope(|s| {
            let sweep = s.spawn(|| sweeper.sweep().unwrap());
            held.wait_reached();
            let (done, finished_writing) = mpsc::channel();
            let (writer, raced) = (&writer, &raced);
            let write = s.spawn(move || {
                let again = writer
                    .create(NewTask::new().id(raced.clone()).ttl(ttl * 10))
                    .unwrap();
                let again = if finished {
                    writer
                        .complete(&again.id, json!("again"))
                        .unwrap()
                        .into_task()
                } else {
                    again
                };
                done.send(()).unwrap();
                again
            });
            // Not an assertion: either way the sweep goes on, and what the
            // two leave is checked below.
            let _ = finished_writing.recv_timeout(RACE);
            held.resume();
            let again = write.join().unwrap();
            (sweep.join().unwrap(), again)
        });
        let (swept, again) = swept;
        let what = match (finished, known) {
            (true, _) => "finished",
            (false, false) => "running, new to the sweeper",
            (false, true) => "running, known to the sweeper",
        };
        assert!(
            swept.missed.is_empty() && swept.skipped.is_empty(),
            "{what}: {swept:?}"
        );
        assert_eq!(swept.deleted, EXPIRED, "{what}: the old task is counted");
        let want: Task = again;
        assert_eq!(want.revision, if finished { 2 } else { 1 });
        assert_eq!(
            want.status,
            if finished {
                TaskStatus::Completed
            } else {
                TaskStatus::Working
            }
        );
        for reader in [&sweeper, &writer, &open(dir.path(), &clock, None)] {
            assert_eq!(
                reader.get(&raced).unwrap().as_ref(),
                Some(&want),
                "{what}: the task recreated during the sweep reads back"
            );
            for id in ids.iter().filter(|id| **id != raced) {
                assert_eq!(reader.get(id).unwrap(), None, "{what}: {id}");
            }
        }
        // Nothing of the old task is left: one file, and (finished) one
        // `expiring/` entry, the new task's.
        let fresh = open(dir.path(), &clock, None);
        let listed = if finished {
            fresh.list(&ListQuery::all()).unwrap().tasks
        } else {
            fresh.list(&ListQuery::active()).unwrap().tasks
        };
        assert_eq!(listed, [want], "{what}");
        let entries = std::fs::read_dir(dir.path().join("expiring"))
            .unwrap()
            .count();
        assert_eq!(entries, usize::from(finished), "{what}");
    }
}
