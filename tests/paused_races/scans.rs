//! Readers, pages and scans held in the middle of a move: they see a task final
//! and once, never jump to a task made again, and return no finished task from
//! a scan of active ones.

use super::*;

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
