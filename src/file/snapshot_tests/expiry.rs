//! A sweep of due finished tasks through the `expiring/` index: removed as
//! read, the index read once per pass, and a page of them filled past stale
//! and unreadable entries in listing order.

use std::time::Duration;

use super::{Mode, expired_since, handle_on, logged_sweeper_and_writer};
use crate::TaskId;
use crate::file::FileStore;
use crate::store::TaskStore;
use crate::task::NewTask;

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
/// page to the next, the stale one left for a sweep to remove (this scan
/// removes nothing: `Scan::removes`), the unreadable file set aside and
/// reported where the page met it.
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
        expected.len() + stale.len(),
        "the set-aside files' entries removed with them; the stale ones and the others left to the sweep"
    );
    assert!(
        unreadable.iter().all(|id| !file(id).exists()),
        "the unreadable files set aside"
    );
}
