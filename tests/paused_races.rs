//! Races made on purpose: one handle's call held at the file-system seam
//! ([`FaultInjector::pause_at`]) at the point a race would hurt, while
//! another handle acts. What each test checks is the state both leave, not
//! how long anything took. The held call is let on once the racer is seen
//! blocked on the task's stripe lock (`/proc/locks`), or has finished: a
//! racer that does not wait (a broken store) has then acted.

#![cfg(feature = "fault-injection")]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::json;
use taskstore::{
    FaultInjector, FileStore, FsOp, ListQuery, ManualClock, NewTask, Task, TaskId, TaskStatus,
    TaskStore,
};
use time::macros::datetime;

/// Expired tasks in the sweep: enough that it reads and removes them as it
/// meets them, under every stripe, in one chunk.
const EXPIRED: usize = 300;

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
            // Owned here, so that a failed assertion lets the held call
            // on as it unwinds, and the scope's threads end.
            let held = held;
            let sweep = s.spawn(|| sweeper.sweep().unwrap());
            assert!(
                held.wait_reached(|| !sweep.is_finished()),
                "the sweep never made the held call"
            );
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
            // Either way the sweep goes on, and what the two leave is
            // checked below.
            common::wait_for_lock_waiter(
                &common::stripe_lock(dir.path(), raced.as_str()),
                "the writer to wait for the sweep, or finish",
                || finished_writing.try_recv().is_ok(),
            );
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

/// How a reading handle follows the store.
#[derive(Clone, Copy, Debug)]
enum Reader {
    /// Opened before the move, first listing while it is held.
    Fresh,
    /// Listed the store before the move, follows it by change notices.
    Notices,
    /// Listed the store before the move, follows it by file status alone.
    Status,
}

/// A terminal transition moves a task's file from `active/` to `done/` in
/// steps (FORMAT.md, "Writing protocol"): the final version over
/// `active/<id>.json`, its `expiring/` name, its `done/` name, then the
/// unlink from `active/`. Held before its `done/` name (the final version
/// in `active/` alone) and before the unlink (in both), every reader sees
/// the task final, and once: a handle opened then, and handles that listed
/// the store before (following it by change notices, or by file status):
/// `get` gives the final version, a listing of running tasks leaves it out,
/// a listing of all tasks and one of its status hold it once, beside the
/// tasks the move does not touch. Another handle's cancel waits for the
/// move and changes nothing (the first terminal transition wins); once the
/// move is over, every reader sees the same.
#[test]
fn readers_in_the_middle_of_a_terminal_move_see_the_task_final_and_once() {
    let ttl = Duration::from_secs(3_600);
    for (op, area) in [(FsOp::Link, "done"), (FsOp::Remove, "active")] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
        let faults = FaultInjector::new();
        let mover = open(dir.path(), &clock, Some(&faults));
        let moved = mover.create(NewTask::new().ttl(ttl)).unwrap().id;
        let running = mover.create(NewTask::new().ttl(ttl)).unwrap().id;
        let finished = mover.create(NewTask::new().ttl(ttl)).unwrap().id;
        assert!(mover.complete(&finished, json!(0)).unwrap().is_applied());
        let status_only = FileStore::builder(dir.path())
            .clock(Arc::new(clock.clone()))
            .change_notices(false)
            .open()
            .unwrap();
        let notices = open(dir.path(), &clock, None);
        let kept = [(Reader::Notices, &notices), (Reader::Status, &status_only)];
        for (_, reader) in kept {
            assert_eq!(common::ids_of(reader, &ListQuery::all()).len(), 3);
            assert_eq!(common::ids_of(reader, &ListQuery::active()).len(), 2);
        }
        // Listing order: creation time (the clock stood still), then id.
        let all: Vec<TaskId> = {
            let mut tasks: Vec<Task> = [&moved, &running, &finished]
                .into_iter()
                .map(|id| mover.get(id).unwrap().unwrap())
                .collect();
            tasks.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            tasks.into_iter().map(|t| t.id).collect()
        };
        let completed: Vec<TaskId> = all.iter().filter(|id| **id != running).cloned().collect();

        let check = |reader: &FileStore, how: Reader, when: &str| {
            let what = format!("{how:?} reader, {when}");
            let got = reader.get(&moved).unwrap().expect(&what);
            assert_eq!(got.status, TaskStatus::Completed, "{what}");
            assert_eq!(got.result, Some(json!("final")), "{what}");
            assert_eq!(got.revision, 2, "{what}");
            assert_eq!(
                common::ids_of(reader, &ListQuery::active()),
                std::slice::from_ref(&running),
                "{what}"
            );
            assert_eq!(common::ids_of(reader, &ListQuery::all()), all, "{what}");
            assert_eq!(
                common::ids_of(reader, &ListQuery::all().status(TaskStatus::Completed)),
                completed,
                "{what}"
            );
            assert_eq!(
                common::ids_of(reader, &ListQuery::all().status(TaskStatus::Working)),
                std::slice::from_ref(&running),
                "{what}"
            );
            got
        };

        let file = dir.path().join(area).join(format!("{moved}.json"));
        // Opened before: an open while the task has a name in both areas
        // waits for the move to end (it resolves such pairs under the
        // task's lock).
        let fresh = open(dir.path(), &clock, None);
        let canceller = open(dir.path(), &clock, None);
        let held = faults.pause_at(op, &file);
        let when = format!("held before the {op:?} of {area}/");
        let (applied, cancelled) = std::thread::scope(|s| {
            let held = held; // as above
            let (mover, moved) = (&mover, &moved);
            let complete = s.spawn(move || mover.complete(moved, json!("final")).unwrap());
            assert!(
                held.wait_reached(|| !complete.is_finished()),
                "{when}: the move never made the held call"
            );
            let mut seen = Vec::new();
            for (how, reader) in [(Reader::Fresh, &fresh), kept[0], kept[1]] {
                seen.push(check(reader, how, &when));
            }
            assert!(seen.windows(2).all(|w| w[0] == w[1]), "{when}: {seen:?}");
            let (done, cancelled) = mpsc::channel();
            let canceller = &canceller;
            let cancel = s.spawn(move || {
                let got = canceller.cancel(moved, Some("late".into())).unwrap();
                done.send(()).unwrap();
                got
            });
            common::wait_for_lock_waiter(
                &common::stripe_lock(dir.path(), moved.as_str()),
                "the cancel to wait for the move, or finish",
                || cancelled.try_recv().is_ok(),
            );
            held.resume();
            (complete.join().unwrap(), cancel.join().unwrap())
        });
        assert!(applied.is_applied(), "{when}: {applied:?}");
        let want = applied.into_task();
        assert!(!cancelled.is_applied(), "{when}: {cancelled:?}");
        assert_eq!(cancelled.into_task(), want, "{when}");
        let after = open(dir.path(), &clock, None);
        for (how, reader) in [(Reader::Fresh, &after), kept[0], kept[1]] {
            assert_eq!(check(reader, how, "after the move"), want);
        }
        assert!(
            !dir.path()
                .join("active")
                .join(format!("{moved}.json"))
                .exists()
        );
    }
}

/// What races a reap or claim held just before it writes its orphan.
#[derive(Clone, Copy, Debug)]
enum Racer {
    /// The owner, renewing its lease (its clock says the lease is live).
    Renew,
    /// The owner, completing the task.
    Complete,
    /// A second instance, claiming the same orphan.
    Claim,
}

/// A reap (or claim) writes an orphan only if it is still the version it
/// judged lapsed, and decides that under the task's lock: held just before
/// it writes, its owner's renewal or completion, or a second claimer,
/// waits, and then finds the task reaped (or claimed) and changes nothing:
/// the renewal and the completion are refused as the task is terminal, the
/// second claim claims nothing, and the owner's renewal after a claim is
/// refused as no longer its own. No one is told a write of theirs stood
/// that the store does not hold.
#[test]
fn an_orphan_held_mid_reap_or_claim_holds_off_its_owner_and_a_second_claimer() {
    let t0 = datetime!(2030-01-01 0:00 UTC);
    for racer in [Racer::Renew, Racer::Complete, Racer::Claim] {
        let dir = tempfile::tempdir().unwrap();
        let at = |clock: &ManualClock, instance: &str, faults: Option<&FaultInjector>| {
            let mut builder = FileStore::builder(dir.path())
                .clock(Arc::new(clock.clone()))
                .instance_id(instance)
                .lease(Duration::from_secs(30));
            if let Some(faults) = faults {
                builder = builder.fault_injector(faults.clone());
            }
            builder.open().unwrap()
        };
        // The owner's clock stands still: its lease is live to it. The
        // others' is an hour on: lapsed, and past any claim grace.
        let (owner_clock, later) = (ManualClock::new(t0), ManualClock::new(t0));
        later.advance(Duration::from_secs(3_600));
        let owner = at(&owner_clock, "owner", None);
        let task = match racer {
            Racer::Claim => NewTask::new().resumable("job", json!({"n": 1})),
            _ => NewTask::new(),
        };
        let orphan = owner.create(task).unwrap();
        assert_eq!(orphan.owner.as_deref(), Some("owner"));
        let faults = FaultInjector::new();
        let first = at(&later, "first", Some(&faults));
        let second = at(&later, "second", None);

        let file = dir
            .path()
            .join("active")
            .join(format!("{}.json", orphan.id));
        let held = faults.pause_at(FsOp::Rename, &file);
        let what = format!("{racer:?}");
        let (pass, raced) = std::thread::scope(|s| {
            let held = held; // owned here: see the sweep test
            let (first, second, owner, id) = (&first, &second, &owner, &orphan.id);
            let pass = s.spawn(move || match racer {
                Racer::Claim => first.claim(&["job"]).unwrap(),
                _ => first.reap().unwrap(),
            });
            assert!(
                held.wait_reached(|| !pass.is_finished()),
                "{what}: the pass never made the held call"
            );
            let (done, raced) = mpsc::channel();
            let race = s.spawn(move || {
                let got = match racer {
                    Racer::Renew => Ok(owner.renew_lease(id).unwrap()),
                    Racer::Complete => Ok(owner.complete(id, json!("mine")).unwrap()),
                    Racer::Claim => Err(second.claim(&["job"]).unwrap()),
                };
                done.send(()).unwrap();
                got
            });
            common::wait_for_lock_waiter(
                &common::stripe_lock(dir.path(), id.as_str()),
                &format!("{what}: the racer to wait for the pass, or finish"),
                || raced.try_recv().is_ok(),
            );
            held.resume();
            (pass.join().unwrap(), race.join().unwrap())
        });
        assert!(
            pass.missed.is_empty() && pass.skipped.is_empty(),
            "{what}: {pass:?}"
        );
        assert_eq!(pass.tasks.len(), 1, "{what}: {pass:?}");
        let want = pass.tasks[0].clone();
        assert_eq!(want.id, orphan.id);
        assert_eq!(want.revision, orphan.revision + 1, "{what}");
        match raced {
            Ok(transition) => {
                assert!(!transition.is_applied(), "{what}: {transition:?}");
                assert_eq!(transition.into_task(), want, "{what}");
                assert_eq!(want.status, TaskStatus::Failed, "{what}");
                assert_eq!(want.error.as_ref().unwrap()["code"], "orphaned", "{what}");
            }
            Err(claimed) => {
                assert!(claimed.tasks.is_empty(), "{what}: {claimed:?}");
                assert_eq!(want.owner.as_deref(), Some("first"), "{what}");
                assert_eq!(want.epoch, orphan.epoch + 1, "{what}");
                // The owner it was taken from may no longer write it.
                assert!(
                    owner
                        .renew_lease(&orphan.id)
                        .is_err_and(|e| matches!(e, taskstore::Error::NotOwner { .. })),
                    "{what}"
                );
            }
        }
        for reader in [&owner, &first, &second] {
            assert_eq!(
                reader.get(&orphan.id).unwrap().as_ref(),
                Some(&want),
                "{what}"
            );
        }
    }
}

/// A handle used in a process forked from the one that opened it (after
/// it had locked the task's stripe, so the stripe's lock file was open
/// before the fork) is still excluded by the process it was forked from: an
/// update held under the task's stripe in the parent holds off the child's
/// completion through its copy of the handle, which then completes the
/// updated task. An `flock` belongs to the open file description, which a
/// forked process shares: locking through its copy of the descriptor would
/// share the parent's lock instead of waiting for it, and the completion
/// would land under the update, which would then write the task back as it
/// was, running. The forking runs in a child process of its own (this test
/// binary run again for it alone), where no other test's thread can hold a
/// lock at the fork.
#[cfg(target_os = "linux")]
#[test]
fn a_handle_used_in_a_forked_process_is_still_held_off_by_its_parent() {
    const TEST: &str = "a_handle_used_in_a_forked_process_is_still_held_off_by_its_parent";
    if let Some((role, args)) = common::role() {
        assert_eq!(role, "forker");
        return forker(Path::new(&args[0]));
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    common::spawn(dir.path(), TEST, "forker", &[store.display().to_string()]).finish();
}

#[cfg(target_os = "linux")]
fn forker(store: &Path) {
    use taskstore::TaskUpdate;

    let faults = FaultInjector::new();
    let handle = FileStore::builder(store)
        .fault_injector(faults.clone())
        .open()
        .unwrap();
    let task = handle.create(NewTask::new()).unwrap();
    // A write, so that the task's stripe lock file is open before the fork.
    let before = handle.update(&task.id, TaskUpdate::new().metadata("before", true));
    assert!(before.unwrap().is_applied());
    let mut child = common::fork(|| {
        let completed = handle.complete(&task.id, json!("child")).unwrap();
        completed.is_applied()
    });
    let file = store.join("active").join(format!("{}.json", task.id));
    let held = faults.pause_at(FsOp::Rename, &file);
    std::thread::scope(|s| {
        // Owned here, so that a failed assertion lets the held call on as it
        // unwinds, and the scope's threads end.
        let held = held;
        let update =
            s.spawn(|| handle.update(&task.id, TaskUpdate::new().metadata("parent", true)));
        assert!(
            held.wait_reached(|| !update.is_finished()),
            "the update never made the held call"
        );
        child.go();
        // A child that waits is seen waiting; one that does not has
        // completed the task by then.
        common::wait_for_lock_waiter(
            &common::stripe_lock(store, task.id.as_str()),
            "the child to wait for the update, or finish",
            || child.has_ended(),
        );
        held.resume();
        let updated = update.join().unwrap().unwrap();
        assert!(updated.is_applied(), "{updated:?}");
    });
    // Its completion applied.
    child.finish();
    let done = handle.get(&task.id).unwrap().unwrap();
    assert_eq!(done.status, TaskStatus::Completed, "{done:?}");
    assert_eq!(
        done.metadata.get("parent"),
        Some(&json!(true)),
        "the update was lost: {done:?}"
    );
    assert_eq!(done.revision, task.revision + 3, "{done:?}");
}

/// A process forked while a thread of its parent is inside a task's stripe
/// (a write under way) takes that stripe through its copy of the handle
/// once the parent's write lets it go: the thread is not in the child, so
/// the child's copy of the handle must not wait for it to leave. (Every
/// call of the child on the stripe waited for a thread that was not there,
/// and failed after its `stripe_wait`.) The forking runs in a child process
/// of its own, as above.
#[cfg(target_os = "linux")]
#[test]
fn a_process_forked_while_a_thread_is_inside_a_stripe_takes_it_once_let_go() {
    const TEST: &str = "a_process_forked_while_a_thread_is_inside_a_stripe_takes_it_once_let_go";
    if let Some((role, args)) = common::role() {
        assert_eq!(role, "forker");
        return forked_inside(Path::new(&args[0]));
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    common::spawn(dir.path(), TEST, "forker", &[store.display().to_string()]).finish();
}

#[cfg(target_os = "linux")]
fn forked_inside(store: &Path) {
    use taskstore::TaskUpdate;

    let faults = FaultInjector::new();
    let handle = FileStore::builder(store)
        .fault_injector(faults.clone())
        .stripe_wait(Duration::from_secs(5))
        .open()
        .unwrap();
    let [a, b] = [common::id_in_stripe("a", 9), common::id_in_stripe("b", 9)];
    for id in [&a, &b] {
        handle.create(NewTask::new().id(id.clone())).unwrap();
    }
    let file = store.join("active").join(format!("{a}.json"));
    let held = faults.pause_at(FsOp::Rename, &file);
    std::thread::scope(|s| {
        let held = held;
        let update = s.spawn(|| handle.update(&a, TaskUpdate::new().metadata("parent", true)));
        assert!(
            held.wait_reached(|| !update.is_finished()),
            "the update never made the held call"
        );
        // Forked with the update inside the stripe.
        let mut child = common::fork(|| {
            let update = handle.update(&b, TaskUpdate::new().metadata("child", true));
            match update {
                Ok(t) => t.is_applied(),
                Err(e) => panic!("the child's write: {e}"),
            }
        });
        child.go();
        held.resume();
        assert!(update.join().unwrap().unwrap().is_applied());
        child.finish();
    });
    let b = handle.get(&b).unwrap().unwrap();
    assert_eq!(b.metadata.get("child"), Some(&json!(true)), "{b:?}");
}

/// An open beside another handle takes its share of the store before it
/// opens the areas: an open alone meanwhile (another handle gone between)
/// cannot compact a directory into a new one under it. (It took it after:
/// held between its areas while the other handle closed and a third opened
/// alone and compacted `active/`, it went on with the old, removed
/// directory, and found no running task, nor could create one.)
#[test]
fn an_open_beside_another_handle_is_never_left_with_a_compacted_away_area() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let first = FileStore::builder(root)
        .clock(Arc::new(clock.clone()))
        .durability(taskstore::Durability::Eventual)
        .max_active(100_000)
        .open()
        .unwrap();
    // `active/` grows past what an open alone compacts, then empties.
    let tasks: Vec<Task> = (0..6_000)
        .map(|_| first.create(NewTask::new()).unwrap())
        .collect();
    let (kept, gone) = tasks.split_last().unwrap();
    for task in gone {
        assert!(first.delete(&task.id).unwrap());
    }
    let active = root.join("active");
    if std::fs::metadata(&active)
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.size()
        })
        .unwrap()
        < 64 * 1024
    {
        eprintln!("paused_races: this file system shrinks directories; nothing to compact");
        return;
    }
    let faults = FaultInjector::new();
    let held = faults.pause_at(FsOp::Open, root.join("tmp"));
    let opened = std::thread::scope(|s| {
        let held = held;
        let opening = s.spawn(|| open(root, &clock, Some(&faults)));
        assert!(
            held.wait_reached(|| !opening.is_finished()),
            "the open never reached tmp/"
        );
        // The first handle goes, and another opens, alone if it can.
        drop(first);
        let third = open(root, &clock, None);
        held.resume();
        let opened = opening.join().unwrap();
        assert_eq!(third.get(&kept.id).unwrap().as_ref(), Some(kept));
        opened
    });
    assert_eq!(opened.get(&kept.id).unwrap().as_ref(), Some(kept));
    let listed = opened.list(&ListQuery::active()).unwrap().tasks;
    assert_eq!(listed, std::slice::from_ref(kept));
    opened.create(NewTask::new()).unwrap();
}

/// A page reads the file of a running task whose bytes the snapshot does
/// not keep (past its 64 MiB budget). If the task was deleted and made
/// again under its id meanwhile, the file is another task, later in the
/// listing order: the page leaves it for its place, and paging goes on
/// from where it was. (The page returned it where the old one stood, and
/// the cursor after it skipped every task between.)
#[test]
fn a_page_never_jumps_to_a_task_made_again_while_it_reads_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let faults = FaultInjector::new();
    let open = |faults| common::budget_store(root, Some(&clock), faults);
    let writer = open(None);
    let file = |id: &TaskId| root.join("active").join(format!("{id}.json"));
    let tick = || clock.advance(Duration::from_millis(1));
    common::fill_the_snapshot_budget(&writer, root, tick);
    let reader = open(Some(&faults));
    assert_eq!(reader.list(&ListQuery::active()).unwrap().tasks.len(), 2);
    // Read in later, past the budget; more than 64 running tasks, so none
    // is kept decoded either.
    let later: Vec<TaskId> = (0..66)
        .map(|_| {
            tick();
            writer.create(NewTask::new()).unwrap().id
        })
        .collect();
    assert_eq!(reader.list(&ListQuery::active()).unwrap().tasks.len(), 68);
    let first = reader.list(&ListQuery::active().limit(2)).unwrap();
    let cursor = first.next_cursor.unwrap();
    let raced = &later[0];
    let held = faults.pause_at(FsOp::Open, file(raced));
    let (page, again) = std::thread::scope(|s| {
        let held = held;
        let paging = s.spawn(|| {
            reader
                .list(&ListQuery::active().limit(1).after(&cursor))
                .unwrap()
        });
        assert!(
            held.wait_reached(|| !paging.is_finished()),
            "the page never read the task's file"
        );
        assert!(writer.delete(raced).unwrap());
        tick();
        let again = writer.create(NewTask::new().id(raced.clone())).unwrap();
        held.resume();
        (paging.join().unwrap(), again)
    });
    let mut listed: Vec<Task> = page.tasks;
    let mut next = page.next_cursor;
    while let Some(after) = next {
        let page = reader
            .list(&ListQuery::active().limit(7).after(&after))
            .unwrap();
        listed.extend(page.tasks);
        next = page.next_cursor;
    }
    let ids: Vec<&TaskId> = listed.iter().map(|t| &t.id).collect();
    let mut want: Vec<&TaskId> = later[1..].iter().collect();
    want.push(&again.id);
    assert_eq!(ids, want, "every task once, in order");
    assert_eq!(listed.last(), Some(&again));
}

/// An open that took a store for one of format 1 that lost its marker, and
/// gives it its marker back, while another open moved the store meanwhile
/// and still has it open: the marker of format 2 stands (it is linked into
/// place only where there is none), so this open opens beside the other
/// at once. (Written over it, the marker of format 1 would have this open
/// wait to move the store again until the other closed it.)
#[test]
fn a_marker_given_back_never_replaces_one_another_open_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let root = &dir.path().join("store");
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    drop(open(root, &clock, None));
    common::make_format_1(root);
    std::fs::remove_file(root.join("taskstore.json")).unwrap();
    let faults = FaultInjector::new();
    // After it read the root (no marker, `done/` without `expiring/`).
    let listed = faults.pause_at(FsOp::CreateDir, root.join("active"));
    std::thread::scope(|s| {
        let late = s.spawn(|| open(root, &clock, Some(&faults)));
        assert!(
            listed.wait_reached(|| !late.is_finished()),
            "the open never got past its reading of the root"
        );
        let mover = open(root, &clock, None);
        let moved = std::fs::read_to_string(root.join("taskstore.json")).unwrap();
        assert!(moved.contains("\"format\":2"), "{moved}");
        listed.resume();
        let (tx, rx) = std::sync::mpsc::channel();
        s.spawn(move || tx.send(late.join().is_ok()).unwrap());
        assert_eq!(
            rx.recv_timeout(common::HANG),
            Ok(true),
            "the late open waited for the one that moved the store"
        );
        let marker = std::fs::read_to_string(root.join("taskstore.json")).unwrap();
        assert!(marker.contains("\"format\":2"), "{marker}");
        drop(mover);
    });
}

/// Two processes of this version open a store of format 1 at once (a
/// rolling upgrade): the second reads format 1 and waits to move it, while
/// the first moves it and keeps the store open. The second must then open
/// beside the first, not wait for it to close (it waited for the lock
/// exclusive, which the first holds shared for its life), and must not
/// move the store a second time.
#[test]
fn an_open_waiting_to_move_an_older_store_opens_once_another_has_moved_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let task = {
        let store = open(root, &clock, None);
        let task = store.create(NewTask::new()).unwrap();
        store.complete(&task.id, json!(1)).unwrap().into_task()
    };
    common::make_format_1(root);
    let faults = FaultInjector::new();
    // After it has read the marker (format 1), before it takes the lock.
    let held = faults.pause_at(FsOp::Lock, root.join("locks").join("handles.lock"));
    std::thread::scope(|s| {
        let held = held;
        let second = s.spawn(|| open(root, &clock, Some(&faults)));
        assert!(
            held.wait_reached(|| !second.is_finished()),
            "the second open never reached the lock"
        );
        let first = open(root, &clock, None);
        let marker = std::fs::read_to_string(root.join("taskstore.json")).unwrap();
        assert!(marker.contains("\"format\":2"), "{marker}");
        held.resume();
        // While the first is open.
        common::wait_until("the second open, beside the first", || second.is_finished());
        let second = second.join().unwrap();
        assert_eq!(second.get(&task.id).unwrap(), Some(task.clone()));
        assert_eq!(first.get(&task.id).unwrap(), Some(task.clone()));
        second.create(NewTask::new()).unwrap();
        assert_eq!(first.list(&ListQuery::all()).unwrap().tasks.len(), 2);
    });
}

/// A batch's terminal moves (a reap failing two orphans) let go of each
/// task's lock between staging a move and settling it. If another handle
/// deletes one of the tasks and makes it again under its id meanwhile, the
/// new file may get the old one's inode number (ext4 hands it back): the
/// settle must still tell it from the file it moved, and leave it. (It
/// removed it from `active/`: a create the store had acknowledged, lost.)
#[test]
fn a_batch_move_never_removes_a_task_made_again_under_its_id_meanwhile() {
    use std::os::unix::fs::MetadataExt;
    for ttl in [None, Some(Duration::from_secs(3600))] {
        let dir = tempfile::tempdir().unwrap();
        let root = &dir.path().join("store");
        let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
        let faults = FaultInjector::new();
        let reaper = open(root, &clock, Some(&faults));
        let owner = open(root, &clock, None);
        let new = |id: &str| {
            let new = NewTask::new().id(TaskId::parse(id).unwrap());
            match ttl {
                Some(ttl) => new.ttl(ttl),
                None => new,
            }
        };
        let x = owner.create(new("x")).unwrap().id;
        owner.create(new("y")).unwrap();
        // Past both leases: both are orphans, failed in one batch.
        clock.advance(Duration::from_secs(90));
        let held = faults.pause_at(FsOp::SyncDir, root.join("done"));
        let file = root.join("active").join("x.json");
        let (reused, again) = std::thread::scope(|s| {
            let held = held;
            let reaping = s.spawn(|| reaper.reap().unwrap());
            assert!(
                held.wait_reached(|| !reaping.is_finished()),
                "the reap never reached its fsync of done/"
            );
            let old = std::fs::metadata(&file).unwrap().ino();
            // Made again until its file has the moved file's inode number.
            // A new file takes the lowest free number of its group (ext4):
            // filler tasks take the lower ones the deletes free.
            assert!(owner.delete(&x).unwrap());
            let mut again = owner.create(new("x")).unwrap();
            for filler in 0..500 {
                if std::fs::metadata(&file).unwrap().ino() == old {
                    break;
                }
                assert!(owner.delete(&x).unwrap());
                owner
                    .create(NewTask::new().id(TaskId::parse(&format!("f{filler}")).unwrap()))
                    .unwrap();
                again = owner.create(new("x")).unwrap();
            }
            let reused = std::fs::metadata(&file).unwrap().ino() == old;
            held.resume();
            reaping.join().unwrap();
            (reused, again)
        });
        if !reused {
            eprintln!(
                "paused_races: the file system gave the new file another inode \
                 number; the race this test guards did not arise (ttl {ttl:?})"
            );
        }
        assert_eq!(
            owner.get(&x).unwrap(),
            Some(again.clone()),
            "the task made again is there (ttl {ttl:?})"
        );
        assert_eq!(
            open(root, &clock, None).get(&x).unwrap(),
            Some(again),
            "for a new handle too (ttl {ttl:?})"
        );
    }
}

/// A directory fsync that fails covers every change made to the directory
/// before it started, whichever thread's call ran it: those changes may be
/// lost (the kernel reports the error once, on the shared descriptor, and a
/// later fsync that succeeds proves nothing about them). A batch renewal
/// has written one task's new version (its rename into `active/` done) and
/// is held before its second task's rename; meanwhile a create on another
/// thread of the same handle runs an fsync of `active/` that fails. The
/// batch's own fsync, after, succeeds: it must still report the first
/// renewal failed, not durable. (It reported it renewed: its ticket for
/// the fsync was taken after the failure.)
#[test]
fn a_change_made_before_another_threads_failed_fsync_is_never_reported_durable() {
    use taskstore::{Error, Fault};
    let dir = tempfile::tempdir().unwrap();
    let root = &dir.path().join("store");
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let faults = FaultInjector::new();
    let store = open(root, &clock, Some(&faults));
    // Ids of different stripes: the create never waits for the held batch.
    let (x, y) = (TaskId::parse("x").unwrap(), TaskId::parse("y").unwrap());
    for id in [&x, &y] {
        store.create(NewTask::new().id(id.clone())).unwrap();
    }
    clock.advance(Duration::from_secs(5));
    let active = root.join("active");
    let held = faults.pause_at(FsOp::Rename, active.join("y.json"));
    let renewed = std::thread::scope(|s| {
        let held = held;
        let renewing = s.spawn(|| store.renew_leases_of(&[x.clone(), y.clone()]));
        assert!(
            held.wait_reached(|| !renewing.is_finished()),
            "the batch never reached its second rename"
        );
        faults.fail_at(FsOp::SyncDir, &active, Fault::Eio);
        let failed = store.create(NewTask::new().id(TaskId::parse("z").unwrap()));
        assert!(
            matches!(failed, Err(Error::Io { .. })),
            "the create's fsync of active/ failed: {failed:?}"
        );
        faults.disarm();
        held.resume();
        renewing.join().unwrap()
    });
    assert!(
        renewed[0].is_err(),
        "x's new version was renamed into active/ before an fsync of active/ \
         failed, yet its renewal was reported durable: {:?}",
        renewed[0]
    );
}

/// The same of `expiring/`: a batch of terminal moves (a reap failing two
/// orphans with a TTL) has given the first its `expiring/` entry and is
/// held before the second's rename; meanwhile a completion on another
/// thread of the same handle runs an fsync of `expiring/` that fails. The
/// batch's own fsync of `expiring/`, after, succeeds: the first orphan's
/// failure must still be reported missed, not reaped. (It was reported
/// reaped: `expiring/` was fsynced with no record of failures at all.)
#[test]
fn an_index_entry_made_before_another_threads_failed_fsync_is_never_reported_durable() {
    use taskstore::Fault;
    let dir = tempfile::tempdir().unwrap();
    let root = &dir.path().join("store");
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let faults = FaultInjector::new();
    let reaper = open(root, &clock, Some(&faults));
    let owner = open(root, &clock, None);
    let ttl = Duration::from_secs(3600);
    let new = |id: &str| NewTask::new().id(TaskId::parse(id).unwrap()).ttl(ttl);
    let x = owner.create(new("x")).unwrap().id;
    owner.create(new("y")).unwrap();
    // Past both leases: both are orphans, failed in one batch.
    clock.advance(Duration::from_secs(90));
    let z = reaper.create(new("z")).unwrap().id;
    let held = faults.pause_at(FsOp::Rename, root.join("active").join("y.json"));
    let reaped = std::thread::scope(|s| {
        let held = held;
        let reaping = s.spawn(|| reaper.reap().unwrap());
        assert!(
            held.wait_reached(|| !reaping.is_finished()),
            "the reap never reached its second rename"
        );
        faults.fail_at(FsOp::SyncDir, root.join("expiring"), Fault::Eio);
        let failed = reaper.complete(&z, json!("done"));
        assert!(failed.is_err(), "the completion's fsync failed: {failed:?}");
        faults.disarm();
        held.resume();
        reaping.join().unwrap()
    });
    assert!(
        !reaped.tasks.iter().any(|task| task.id == x),
        "x's expiring/ entry was made before an fsync of expiring/ failed, \
         yet its failure was reported reaped: {:?}",
        reaped.tasks
    );
    assert!(
        reaped.missed.iter().any(|missed| missed.id == x),
        "x is reported missed: {:?}",
        reaped.missed
    );
}

/// `verify` beside a batch between its halves waits for the batch to end
/// and reports a clean store, as `repair` does (with nothing to repair).
/// The batches: a reap failing two orphans, held at its fsync of `done/`,
/// when both tasks have names in `active/` and `done/` and the reap holds
/// neither's stripe; a sweep that has removed an expired finished task's
/// file, held before it removes the task's `expiring/` entry (stale until
/// then), through its scan's batches and through its pass over the index
/// (a large pass), and a listing that met two expired tasks and deleted
/// them (one task alone is deleted under its lock to the end).
/// Told not to wait, `verify` reports what it saw, and says that batches
/// were under way. (It reported interrupted moves and a stale entry, another handle's
/// work in progress, and nothing said so.)
#[test]
fn verify_beside_a_batch_between_its_halves_waits_for_it() {
    use taskstore::FileCheck;
    for batch in ["reap", "sweep", "large sweep", "list"] {
        let dir = tempfile::tempdir().unwrap();
        let root = &dir.path().join("store");
        let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
        let faults = FaultInjector::new();
        let worker = FileStore::builder(root)
            .clock(Arc::new(clock.clone()))
            .fault_injector(faults.clone())
            .large_passes_from(if batch == "large sweep" { 1 } else { 256 })
            .open()
            .unwrap();
        let owner = open(root, &clock, None);
        let held = if batch == "reap" {
            for id in ["x", "y"] {
                owner
                    .create(NewTask::new().id(TaskId::parse(id).unwrap()))
                    .unwrap();
            }
            // Past both leases: both are orphans, failed in one batch.
            clock.advance(Duration::from_secs(90));
            faults.pause_at(FsOp::SyncDir, root.join("done"))
        } else {
            let ttl = Duration::from_secs(60);
            let finished =
                common::finished_with_ttl(&owner, if batch == "list" { 2 } else { 1 }, ttl).len();
            clock.advance(ttl * 2);
            let mut entries: Vec<_> = std::fs::read_dir(root.join("expiring"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            entries.sort();
            assert_eq!(entries.len(), finished, "{entries:?}");
            faults.pause_at(FsOp::Remove, &entries[0])
        };
        std::thread::scope(|s| {
            let held = held;
            let working = s.spawn(|| match batch {
                "reap" => assert_eq!(worker.reap().unwrap().tasks.len(), 2),
                "list" => assert!(worker.list(&ListQuery::all()).unwrap().tasks.is_empty()),
                _ => assert_eq!(worker.sweep().unwrap().deleted, 1),
            });
            assert!(
                held.wait_reached(|| !working.is_finished()),
                "the {batch} never reached its pause"
            );
            let seen = FileCheck::open(root)
                .unwrap()
                .wait_for_batches(Duration::ZERO)
                .verify()
                .unwrap();
            assert!(
                seen.under_way && !seen.is_clean(),
                "{batch}: the state between the halves is seen, and said to be a batch's: {seen:?}"
            );
            let logged = common::Logged::default();
            let checking = s.spawn({
                let logged = logged.clone();
                move || {
                    tracing::subscriber::with_default(logged, || {
                        let check = FileCheck::open(root).unwrap();
                        (check.verify().unwrap(), check.repair(false).unwrap())
                    })
                }
            });
            common::wait_until("the check to wait for the batch, or end", || {
                checking.is_finished()
                    || logged.events().iter().any(|e| {
                        e.field("message")
                            .is_some_and(|m| m.contains("waiting for batches"))
                    })
            });
            held.resume();
            working.join().unwrap();
            let (report, repairs) = checking.join().unwrap();
            assert!(
                report.is_clean() && !report.under_way,
                "{batch}: verify judged the batch's work in progress: {report:?}"
            );
            assert!(
                repairs.repairs.is_empty() && !repairs.under_way,
                "{batch}: {repairs:?}"
            );
        });
    }
}

/// A batch move between its halves (a reap of tasks with a TTL, their
/// `expiring/` entries linked, their names in `done/` not yet) whose moves
/// another handle finishes meanwhile, without fsyncs (`Durability::Eventual`:
/// a cancel of a task it finds terminal in `active/` tidies it into
/// `done/`): the batch, which acknowledges the moves on the strength of
/// those `done/` names, makes `done/` durable itself before it returns.
/// (It fsynced only what it linked, so nothing: a power loss could take
/// the names in `done/` and the freed earlier versions with them.)
#[test]
fn a_batch_move_another_handle_finished_is_made_durable_before_it_is_acknowledged() {
    use taskstore::{Durability, FsEvent, Recorder};
    let dir = tempfile::tempdir().unwrap();
    let root = &dir.path().join("store");
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let faults = FaultInjector::new();
    let recorder = Recorder::new();
    let reaper = FileStore::builder(root)
        .clock(Arc::new(clock.clone()))
        .fault_injector(faults.clone())
        .recorder(recorder.clone())
        .open()
        .unwrap();
    let owner = open(root, &clock, None);
    let ttl = Duration::from_secs(3_600);
    let ids: Vec<TaskId> = (0..2)
        .map(|_| owner.create(NewTask::new().ttl(ttl)).unwrap().id)
        .collect();
    drop(owner);
    // Past the leases: both are orphans, failed in one batch.
    clock.advance(Duration::from_secs(90));
    let tidier = FileStore::builder(root)
        .clock(Arc::new(clock.clone()))
        .durability(Durability::Eventual)
        .open()
        .unwrap();
    let held = faults.pause_at(FsOp::SyncDir, root.join("expiring"));
    std::thread::scope(|s| {
        let reaping = s.spawn(|| reaper.reap().unwrap());
        assert!(
            held.wait_reached(|| !reaping.is_finished()),
            "the reap never reached its pause"
        );
        for id in &ids {
            // Failed by the reap's first half, found in `active/`.
            let cancel = tidier.cancel(id, None).unwrap();
            assert!(!cancel.is_applied(), "{cancel:?}");
            assert!(root.join("done").join(format!("{id}.json")).exists());
            assert!(!root.join("active").join(format!("{id}.json")).exists());
        }
        let from = recorder.len();
        held.resume();
        let reaped = reaping.join().unwrap();
        assert_eq!(reaped.tasks.len(), 2, "{reaped:?}");
        let done = root.join("done");
        let events = recorder.events();
        assert!(
            events[from..]
                .iter()
                .any(|e| matches!(e, FsEvent::SyncDir { path } if path == &done)),
            "done/ made durable before the reap returned: {:#?}",
            &events[from..]
        );
    });
}

/// A batch's terminal moves (a reap failing x, in stripe 7, and y, in
/// stripe 33) let go of each task's lock between staging a move and
/// settling it. If another process takes x's stripe in between and is
/// stopped while it holds it, the settle cannot take it again: y's move is
/// settled all the same, and both are reported reaped, x's final version
/// durable and read failed (in `done/` beside its name in `active/`, or, with
/// a TTL, where its name in `done/` waits for its `expiring/` entry to be
/// durable, in `active/` alone), its move left for whoever takes the stripe
/// next (the sweep's clean-up, here). (The settle returned at x's stripe:
/// both tasks were reported missed, "make durable the write of" failed,
/// and y was left unsettled too.)
#[cfg(target_os = "linux")]
#[test]
fn a_batch_move_whose_stripe_a_stopped_process_took_meanwhile_settles_the_rest() {
    let test = "a_batch_move_whose_stripe_a_stopped_process_took_meanwhile_settles_the_rest";
    common::hold_locks_if_the_holder();
    for ttl in [None, Some(Duration::from_secs(3600))] {
        let dir = tempfile::tempdir().unwrap();
        let root = &dir.path().join("store");
        let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
        let faults = FaultInjector::new();
        let reaper = FileStore::builder(root)
            .clock(Arc::new(clock.clone()))
            .fault_injector(faults.clone())
            .stripe_wait(Duration::from_millis(300))
            .open()
            .unwrap();
        let owner = open(root, &clock, None);
        let [x, y] = [common::id_in_stripe("x", 7), common::id_in_stripe("y", 33)];
        for id in [&x, &y] {
            let new = NewTask::new().id(id.clone());
            owner
                .create(match ttl {
                    Some(ttl) => new.ttl(ttl),
                    None => new,
                })
                .unwrap();
        }
        // Past both leases: both are orphans, failed in one batch.
        clock.advance(Duration::from_secs(90));
        // The settle's first fsync: of `expiring/`, before the names in
        // `done/` it gives under the locks, or of `done/`, before the names
        // in `active/` it removes under them.
        let area = if ttl.is_some() { "expiring" } else { "done" };
        let held = faults.pause_at(FsOp::SyncDir, root.join(area));
        let lock = common::stripe_lock(root, x.as_str());
        let (reaped, mut holder) = std::thread::scope(|s| {
            let held = held;
            let reaping = s.spawn(|| reaper.reap().unwrap());
            assert!(
                held.wait_reached(|| !reaping.is_finished()),
                "the reap never reached its fsync of {area}/"
            );
            let holder = common::stopped_holding(test, dir.path(), &lock);
            held.resume();
            (reaping.join().unwrap(), holder)
        });
        let what = format!("ttl {ttl:?}");
        assert!(reaped.missed.is_empty(), "{what}: {:?}", reaped.missed);
        let mut ids: Vec<_> = reaped.tasks.iter().map(|t| &t.id).collect();
        ids.sort();
        assert_eq!(ids, [&x, &y], "{what}: both reaped");
        assert!(reaped.tasks.iter().all(|t| t.status == TaskStatus::Failed));
        let file = |area: &str, id: &TaskId| root.join(area).join(format!("{id}.json"));
        assert!(holder.is_stopped(), "{what}");
        // y settled; x where its stripe left it, read failed.
        assert!(file("done", &y).exists() && !file("active", &y).exists());
        assert!(file("active", &x).exists(), "{what}");
        assert_eq!(file("done", &x).exists(), ttl.is_none(), "{what}");
        for reader in [&reaper, &owner] {
            let read = reader.get(&x).unwrap().unwrap();
            assert_eq!(read.status, TaskStatus::Failed, "{what}");
        }
        holder.kill();
        let swept = reaper.sweep().unwrap();
        assert!(swept.cleaned >= 1, "{what}: x's move finished: {swept:?}");
        assert!(file("done", &x).exists() && !file("active", &x).exists());
        let fresh = open(root, &clock, None);
        for id in [&x, &y] {
            assert_eq!(fresh.get(id).unwrap().unwrap().status, TaskStatus::Failed);
        }
    }
}

/// A call of a handle waits for a stripe its `stripe_wait` at most, even
/// behind another thread of the handle that waits for it (or holds it): a
/// write of b, while another thread's write of a (both in stripe 7) waits
/// for the stripe a stopped process holds, fails when its own wait runs
/// out, naming the lock, while the other still waits. The other is held at
/// the seam as it opens the descriptor it waits on, so that its wait
/// outlasts b's, whatever the timing. Once the stopped process is gone, it
/// goes on, and its write is applied. (The write of b queued on the
/// stripe's in-process lock, held through the other's whole wait, with no
/// deadline of its own: it returned only once the other had.)
#[cfg(target_os = "linux")]
#[test]
fn a_write_behind_another_threads_wait_for_a_stripe_gives_up_at_its_own_wait() {
    use taskstore::TaskUpdate;
    let test = "a_write_behind_another_threads_wait_for_a_stripe_gives_up_at_its_own_wait";
    common::hold_locks_if_the_holder();
    let dir = tempfile::tempdir().unwrap();
    let root = &dir.path().join("store");
    let faults = FaultInjector::new();
    let store = FileStore::builder(root)
        .fault_injector(faults.clone())
        .stripe_wait(Duration::from_millis(300))
        .open()
        .unwrap();
    let [a, b] = [common::id_in_stripe("a", 7), common::id_in_stripe("b", 7)];
    // The handle opens the stripe's lock file here: the next file it opens
    // at that path is a wait's own descriptor.
    for id in [&a, &b] {
        store.create(NewTask::new().id(id.clone())).unwrap();
    }
    let lock = common::stripe_lock(root, a.as_str());
    let mut holder = common::stopped_holding(test, dir.path(), &lock);
    let waiting = faults.pause_at(FsOp::Create, &lock);
    let update = |n: i64| TaskUpdate::new().metadata("n", json!(n));
    std::thread::scope(|s| {
        let first = s.spawn(|| store.update(&a, update(1)));
        assert!(
            waiting.wait_reached(|| !first.is_finished()),
            "the write of a never came to wait for the stripe"
        );
        let (sent, second) = mpsc::channel();
        let (store, b) = (&store, &b);
        s.spawn(move || {
            let _ = sent.send(store.update(b, update(2)));
        });
        let second = second.recv_timeout(common::HANG);
        let still_waiting = !first.is_finished();
        // Let go before any assertion: the first write ends either way.
        holder.kill();
        waiting.resume();
        let first = first.join().unwrap();
        let second = second.expect("the write of b waited for the other thread's wait");
        assert!(still_waiting, "b's write returned only after a's did");
        let said = second.expect_err("b's stripe is held").to_string();
        assert!(said.contains("locks/07.lock"), "{said}");
        assert!(matches!(&first, Ok(t) if t.is_applied()), "{first:?}");
    });
}

/// A stale `expiring/` entry (its file gone from `done/`) is removed after
/// an fsync of `done/` made under its task's lock: whatever removed the
/// file (another handle's sweep, which settles its removals at its end)
/// did so before that lock, so the fsync covers it, and a power loss
/// cannot bring the file back without its entry. (The fsync came before
/// the lock: a batch between its halves could finish its move, and another
/// sweep remove the file, in between, and the entry went with that removal
/// not durable.) Shown by holding the fsync and trying the task's lock.
#[test]
fn a_stale_entrys_removal_is_made_durable_under_its_tasks_lock() {
    let dir = tempfile::tempdir().unwrap();
    let root = &dir.path().join("store");
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let faults = FaultInjector::new();
    let sweeper = open(root, &clock, Some(&faults));
    let writer = open(root, &clock, None);
    let ttl = Duration::from_secs(60);
    let id = common::finished_with_ttl(&writer, 1, ttl).remove(0);
    drop(writer);
    // Its file gone from `done/` (by hand here): its entry is stale.
    std::fs::remove_file(root.join("done").join(format!("{id}.json"))).unwrap();
    clock.advance(ttl * 2);
    let held = faults.pause_at(FsOp::SyncDir, root.join("done"));
    let lock = common::open_lock_file(&common::stripe_lock(root, id.as_str()));
    std::thread::scope(|s| {
        let sweeping = s.spawn(|| sweeper.sweep().unwrap());
        assert!(
            held.wait_reached(|| !sweeping.is_finished()),
            "the sweep never made done/ durable"
        );
        let free = lock.try_lock().is_ok();
        if free {
            lock.unlock().unwrap();
        }
        held.resume();
        sweeping.join().unwrap();
        assert!(!free, "done/ was made durable without the task's lock");
    });
    assert_eq!(
        std::fs::read_dir(root.join("expiring")).unwrap().count(),
        0,
        "the stale entry is gone"
    );
}

/// Two opens of a new store at once, the second reading the root while the
/// first is making the store's directories: the second must not take the
/// half-made store for one of format 1 that lost its marker (`done/`
/// without `expiring/`), give it a marker of format 1, and so make the
/// first refuse it ("format 1 was not moved to format 2"). Both open, and
/// the marker says format 2. (`expiring/` is made before `done/` now.)
#[test]
fn two_opens_of_a_new_store_at_once_both_open_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = &dir.path().join("store");
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let (first, second) = (FaultInjector::new(), FaultInjector::new());
    // The first stops as it makes `expiring/`; the second as it takes the
    // handles lock (after any marker it would write).
    let made = first.pause_at(FsOp::CreateDir, root.join("expiring"));
    let locking = second.pause_at(FsOp::Lock, root.join("locks").join("handles.lock"));
    std::thread::scope(|s| {
        let one = s.spawn(|| {
            FileStore::builder(root)
                .clock(Arc::new(clock.clone()))
                .fault_injector(first.clone())
                .open()
                .map(drop)
        });
        assert!(
            made.wait_reached(|| !one.is_finished()),
            "the first open never made expiring/"
        );
        let two = s.spawn(|| {
            FileStore::builder(root)
                .clock(Arc::new(clock.clone()))
                .fault_injector(second.clone())
                .open()
                .map(drop)
        });
        assert!(
            locking.wait_reached(|| !two.is_finished()),
            "the second open never took the handles lock"
        );
        made.resume();
        let one = one.join().unwrap();
        locking.resume();
        let two = two.join().unwrap();
        assert!(one.is_ok(), "the first open: {one:?}");
        assert!(two.is_ok(), "the second open: {two:?}");
    });
    let marker = std::fs::read_to_string(root.join("taskstore.json")).unwrap();
    assert!(marker.contains("\"format\":2"), "{marker}");
}

/// A check waits for batches only for what a batch may leave between its
/// halves. Beside a batch that never ends (the batches lock held shared by
/// hand), a store whose problems no batch makes (a corrupt file in
/// `active/`, a running task in `done/`, a finished task without its
/// `expiring/` entry) is judged without waiting, and the report does not
/// say that batches were under way. (It waited for them, `wait_for_batches`
/// long, and then said so of every problem.)
#[test]
fn a_check_waits_for_batches_only_for_what_a_batch_may_leave() {
    use taskstore::{FileCheck, ProblemKind};
    let dir = tempfile::tempdir().unwrap();
    let root = &dir.path().join("store");
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let store = open(root, &clock, None);
    let running = store.create(NewTask::new()).unwrap().id;
    let unindexed = common::finished_with_ttl(&store, 1, Duration::from_secs(600)).remove(0);
    drop(store);
    let name = |id: &TaskId| format!("{id}.json");
    std::fs::rename(
        root.join("active").join(name(&running)),
        root.join("done").join(name(&running)),
    )
    .unwrap();
    for entry in std::fs::read_dir(root.join("expiring")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    std::fs::write(root.join("active").join("garbage.json"), b"{ not json").unwrap();
    let batch = common::open_lock_file(&common::batches_lock(root));
    batch.lock_shared().unwrap();
    let report = FileCheck::open(root)
        .unwrap()
        .wait_for_batches(Duration::ZERO)
        .verify()
        .unwrap();
    let mut kinds: Vec<(String, &str)> = report
        .problems
        .iter()
        .map(|p| {
            (
                p.path.file_name().unwrap().to_string_lossy().into_owned(),
                p.kind.code(),
            )
        })
        .collect();
    kinds.sort();
    let mut expected = vec![
        ("garbage.json".to_owned(), "corrupt"),
        ("garbage.json".to_owned(), "mode"),
        (name(&running), "misplaced"),
        (name(&unindexed), "missing_index_entry"),
    ];
    expected.sort();
    assert_eq!(kinds, expected, "{report:?}");
    assert!(
        !report.under_way,
        "no problem a batch makes, so no wait for batches: {report:?}"
    );
    assert!(report.problems.iter().all(|p| !p.kind.may_be_under_way()));
    // A stale entry is one: then the check waits, and says the batch was
    // under way.
    let ghost = root.join("expiring").join("1.5000.ghost");
    std::fs::write(&ghost, b"x").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ghost, std::fs::Permissions::from_mode(0o600)).unwrap();
    let report = FileCheck::open(root)
        .unwrap()
        .wait_for_batches(Duration::ZERO)
        .verify()
        .unwrap();
    assert!(report.under_way, "{report:?}");
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.kind == ProblemKind::StaleIndexEntry && p.kind.may_be_under_way()),
        "{report:?}"
    );
}

/// A reader never waits for a check: while one holds the batches lock
/// exclusive (here, by hand), a listing that meets expired finished tasks
/// hides them and leaves their deletion to the sweep, instead of waiting
/// for the lock (a stopped `verify` would have stopped every listing that
/// met an expired task). One task alone is deleted under its own lock. A
/// lock file replaced under the handle is found again at its path.
#[test]
fn a_reader_leaves_expired_tasks_to_the_sweep_while_a_check_holds_the_batches_lock() {
    let dir = tempfile::tempdir().unwrap();
    let root = &dir.path().join("store");
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let store = open(root, &clock, None);
    let ttl = Duration::from_secs(60);
    let ids = common::finished_with_ttl(&store, 3, ttl);
    clock.advance(ttl * 2);
    let path = common::batches_lock(root);
    let check = common::open_lock_file(&path);
    check.lock().unwrap();
    assert!(store.list(&ListQuery::all()).unwrap().tasks.is_empty());
    let file = |id: &TaskId| root.join("done").join(format!("{id}.json"));
    assert!(
        ids.iter().all(|id| file(id).exists()),
        "the listing waited for the check, or went on without the lock"
    );
    assert_eq!(store.get(&ids[0]).unwrap(), None);
    assert!(!file(&ids[0]).exists(), "one task alone is deleted");
    check.unlock().unwrap();
    assert_eq!(store.sweep().unwrap().deleted, 2);

    // The lock file replaced under the handle (an older version's `repair`
    // sets it aside as a foreign name): the handle locks the file a check
    // locks, the one at the path, not the one it opened before.
    let more = common::finished_with_ttl(&store, 2, ttl);
    clock.advance(ttl * 2);
    std::fs::rename(&path, root.join("quarantine").join("batches.lock")).unwrap();
    let check = common::open_lock_file(&path);
    check.lock().unwrap();
    assert!(store.list(&ListQuery::all()).unwrap().tasks.is_empty());
    assert!(
        more.iter().all(|id| file(id).exists()),
        "the handle locked the file set aside"
    );
}

/// A batch does not wait for a check without bound: while the batches lock
/// is held exclusive and never let go (a `verify` stopped while it judges,
/// played here by hand), a reap of two orphans (a batch of terminal moves)
/// still fails them, after its bounded wait, and says on the log that it
/// went on without the lock. (Waiting without bound, it never returned.)
/// The next batch does not wait the bound again: it tries once and goes on,
/// without a second warning (each batch waited the whole bound, a sweep
/// once per chunk). A renewal of the same tasks, which moves none between
/// areas, does not wait for the check at all.
#[test]
fn a_batch_goes_on_without_the_lock_a_stopped_check_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let root = &dir.path().join("store");
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let reaper = open(root, &clock, None);
    for id in ["x", "y"] {
        reaper
            .create(NewTask::new().id(TaskId::parse(id).unwrap()))
            .unwrap();
    }
    // Past both leases: both are orphans, failed in one batch.
    clock.advance(Duration::from_secs(90));
    let check = common::open_lock_file(&common::batches_lock(root));
    check.lock().unwrap();
    // A renewal batch moves no task between areas, and takes no hold: it
    // never waits for a check.
    let renewing = common::Logged::default();
    let renewed = tracing::subscriber::with_default(renewing.clone(), || {
        reaper.renew_leases_of(&[TaskId::parse("x").unwrap(), TaskId::parse("y").unwrap()])
    });
    assert!(renewed.iter().all(Result::is_ok), "{renewed:?}");
    assert!(renewing.warnings().is_empty(), "{:?}", renewing.warnings());
    clock.advance(Duration::from_secs(90));
    let logged = common::Logged::default();
    let reaped = std::thread::scope(|s| {
        let reaping = s
            .spawn(|| tracing::subscriber::with_default(logged.clone(), || reaper.reap().unwrap()));
        common::wait_until("the reap to end beside a check that never lets go", || {
            reaping.is_finished()
        });
        reaping.join().unwrap()
    });
    assert_eq!(reaped.tasks.len(), 2);
    let went_on = |logged: &common::Logged| {
        logged
            .warnings()
            .iter()
            .filter(|w| {
                w.field("message")
                    .is_some_and(|m| m.contains("goes on without it"))
            })
            .count()
    };
    assert_eq!(went_on(&logged), 1, "{:?}", logged.warnings());
    // Two more orphans, and another batch beside the same check.
    for id in ["z", "w"] {
        reaper
            .create(NewTask::new().id(TaskId::parse(id).unwrap()))
            .unwrap();
    }
    clock.advance(Duration::from_secs(90));
    let again = common::Logged::default();
    let reaped = tracing::subscriber::with_default(again.clone(), || reaper.reap().unwrap());
    assert_eq!(reaped.tasks.len(), 2);
    assert_eq!(went_on(&again), 0, "waited again: {:?}", again.warnings());
}

/// A scan of the active tasks (a listing's, a reap's) that reads a running
/// task's file again (one whose bytes its handle's snapshot has no room
/// for: past its byte budget, among more tasks than it keeps decoded) just
/// as another handle finishes the task, its terminal version in `active/`
/// between the move's rename and its link into `done/`, returns no
/// finished task: the version read is judged by the scan's filter, as
/// every other task it returns (`Backend::scan`: "a batch of stored tasks
/// that match"). It was checked by its creation time alone, and returned
/// `completed` among the active tasks; the rules' listing filters the
/// backend's batch again, so a host never saw it, but a pass over the
/// batch met a task it did not ask for.
#[test]
fn a_scan_of_active_tasks_that_reads_a_task_mid_move_returns_no_finished_task() {
    use taskstore::backend::{Backend, Scan, Scope};
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let open = |faults: &FaultInjector| {
        FileStore::builder(dir.path())
            .clock(Arc::new(clock.clone()))
            .max_payload_bytes(40 << 20)
            .fault_injector(faults.clone())
            .open()
            .unwrap()
    };
    let (reads, moves) = (FaultInjector::new(), FaultInjector::new());
    let (reader, writer) = (open(&reads), open(&moves));
    common::fill_the_snapshot_budget(&writer, dir.path(), || {});
    // The reader's snapshot keeps the two large files, and no byte of the
    // tasks made after them.
    assert_eq!(reader.list(&ListQuery::active()).unwrap().tasks.len(), 2);
    let made: Vec<TaskId> = (0..65)
        .map(|_| writer.create(NewTask::new()).unwrap().id)
        .collect();
    assert_eq!(reader.list(&ListQuery::active()).unwrap().tasks.len(), 67);
    let target = made.last().unwrap().clone();
    let file = |area: &str| dir.path().join(area).join(format!("{target}.json"));

    let read = reads.pause_at(FsOp::Open, file("active"));
    let linked = moves.pause_at(FsOp::Link, file("done"));
    std::thread::scope(|s| {
        let listing = s.spawn(|| {
            reader
                .backend()
                .scan(&Scan::new(Scope::Active, 100))
                .unwrap()
        });
        assert!(
            read.wait_reached(|| !listing.is_finished()),
            "the page reads the task's file"
        );
        let finishing = s.spawn(|| writer.complete(&target, json!(1)).unwrap());
        assert!(
            linked.wait_reached(|| !finishing.is_finished()),
            "the move links the terminal version into done/"
        );
        read.resume();
        let page = listing.join().unwrap();
        linked.resume();
        assert!(finishing.join().unwrap().is_applied());
        let finished: Vec<&Task> = page.tasks.iter().filter(|t| t.is_terminal()).collect();
        assert!(
            finished.is_empty(),
            "finished tasks listed as active: {finished:?}"
        );
    });
    let all = reader.list(&ListQuery::active()).unwrap();
    assert_eq!(all.tasks.len(), 66);
    assert!(all.tasks.iter().all(|t| t.status == TaskStatus::Working));
}
