//! What a `FileStore` handle holds for the running tasks it has listed, and
//! for the history it has paged: at most 1.5 times the bytes of their files,
//! counted by a global allocator that tracks every live heap byte of this
//! test binary (its tests take turns, so nothing else allocates beside the
//! one measured).
//!
//! Heap bytes asked for, not resident memory: the allocator's own overhead
//! per allocation is not counted here (`benches/compare/memory.rs` measures
//! resident memory, with it, side by side with SQLite and redb).

#[path = "common/counting.rs"]
mod counting;

use std::sync::{Mutex, PoisonError};

use counting::live;
use taskstore::{Durability, FileStore, ListQuery, NewTask, TaskStore};

/// The tests take turns: the counters are the process's.
static TURN: Mutex<()> = Mutex::new(());

/// A handle on the store at `dir`, without fsync; kept current by change
/// notices, or (`notices` false: as on macOS, and in the command-line tool)
/// by file status, with a file-status stamp per task.
fn handle(dir: &std::path::Path, notices: bool) -> FileStore {
    FileStore::builder(dir)
        .durability(Durability::Eventual)
        .change_notices(notices)
        .open()
        .unwrap()
}

/// Waits until every file written has settled (the store trusts a file's
/// status once it is 100 ms old), so that a handle kept current by file
/// status keeps a stamp for every task: the most it holds.
fn settled() {
    std::thread::sleep(std::time::Duration::from_millis(300));
}

/// The bytes of the files in `area`.
fn file_bytes(area: &std::path::Path) -> usize {
    std::fs::read_dir(area)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len() as usize)
        .sum()
}

/// Running tasks, as many as a 2-core machine writes quickly.
const TASKS: usize = 3_000;

#[test]
fn with_change_notices_a_handle_holds_at_most_one_and_a_half_times_the_files_it_listed() {
    holds_at_most_one_and_a_half_times_the_files_it_listed(true);
}

#[test]
fn by_file_status_a_handle_holds_at_most_one_and_a_half_times_the_files_it_listed() {
    holds_at_most_one_and_a_half_times_the_files_it_listed(false);
}

fn holds_at_most_one_and_a_half_times_the_files_it_listed(notices: bool) {
    let _turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    {
        let writer = handle(dir.path(), true);
        for i in 0..TASKS {
            writer
                .create(NewTask::new().metadata("n", i as u64))
                .unwrap();
        }
    }
    settled();
    let files = file_bytes(&dir.path().join("active"));

    let before = live();
    let reader = handle(dir.path(), notices);
    let page = reader.list(&ListQuery::active().limit(100)).unwrap();
    assert_eq!(page.tasks.len(), 100);
    drop(page);
    let after_page = live() - before;

    let all = reader.list(&ListQuery::active()).unwrap();
    assert_eq!(all.tasks.len(), TASKS);
    drop(all);
    let after_all = live() - before;

    let ratio = |held: isize| held as f64 / files as f64;
    eprintln!(
        "{TASKS} running tasks, {files} bytes of files: the handle (notices {notices}) holds \
         {after_page} bytes after a page ({:.2}x), {after_all} after listing all ({:.2}x)",
        ratio(after_page),
        ratio(after_all)
    );
    assert!(
        ratio(after_page) <= 1.5,
        "after a page of 100 the handle holds {after_page} bytes for {files} bytes of files"
    );
    assert!(
        after_all <= after_page + (after_page / 100),
        "a listing's answer, once dropped, must leave nothing behind: \
         {after_all} bytes held against {after_page}"
    );
    drop(reader);
    assert!(
        live() - before < (files / 100) as isize,
        "a dropped handle leaves {} bytes behind",
        live() - before
    );
}

/// A handle with few running tasks keeps a decoded copy of each it listed
/// (so that a server's frequent listings copy instead of decoding), but
/// only of a small task: a decoded task takes many times its file's bytes
/// (a number in an array, two bytes of JSON, is a 32-byte value), and
/// forty running tasks with large checkpoints held 17 times their files
/// for the handle's life. Listed, then dropped, they leave at most 1.5
/// times their files behind, as many tasks do.
#[test]
fn a_few_large_running_tasks_listed_leave_at_most_one_and_a_half_times_their_files() {
    let _turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    {
        let writer = handle(dir.path(), true);
        let numbers: Vec<u64> = (0..20_000).map(|n| n % 10).collect();
        for _ in 0..40 {
            writer
                .create(NewTask::new().metadata("numbers", numbers.clone()))
                .unwrap();
        }
    }
    settled();
    let files = file_bytes(&dir.path().join("active"));
    let before = live();
    let reader = handle(dir.path(), true);
    for _ in 0..2 {
        let all = reader.list(&ListQuery::active()).unwrap();
        assert_eq!(all.tasks.len(), 40);
    }
    let held = live() - before;
    eprintln!(
        "40 large running tasks, {files} bytes of files: the handle holds {held} bytes \
         after listing them ({:.2}x)",
        held as f64 / files as f64
    );
    assert!(
        held as f64 <= 1.5 * files as f64,
        "after listing 40 running tasks the handle holds {held} bytes for {files} bytes of files"
    );
}

/// A fresh handle's first listing reads every running task's file, but
/// holds no more of their bytes at once than the snapshot keeps (64 MiB),
/// plus what it is reading: 150 MB of tasks listed a page at a time stay
/// under 96 MiB at their peak. (The pass read every file before the
/// snapshot's budget dropped the bytes past it: the peak was the store.)
#[test]
fn a_first_listing_holds_no_more_of_the_files_than_the_snapshot_keeps() {
    let _turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    {
        let writer = handle(dir.path(), true);
        let payload = "x".repeat(100 << 10);
        for _ in 0..1_500 {
            writer
                .create(NewTask::new().metadata("payload", payload.clone()))
                .unwrap();
        }
    }
    for notices in [true, false] {
        let before = live();
        counting::reset_peak();
        let reader = handle(dir.path(), notices);
        let page = reader.list(&ListQuery::active().limit(10)).unwrap();
        assert_eq!(page.tasks.len(), 10);
        drop(page);
        let peak = counting::peak() - before;
        eprintln!(
            "a first page of 1,500 tasks of 100 KiB (notices {notices}): a peak of {peak} bytes"
        );
        assert!(
            peak <= 96 << 20,
            "a first listing of 150 MB of tasks peaked at {peak} bytes (notices {notices})"
        );
        drop(reader);
    }
}

/// The listing keys of history a handle keeps once it has paged it: at
/// most 1.5 times the bytes of the finished tasks' files (each a task with
/// a small result), nothing of the pages once dropped, nothing once the
/// handle is.
#[test]
fn with_change_notices_a_handle_that_paged_history_holds_at_most_one_and_a_half_times_its_files() {
    paged_history_holds_at_most_one_and_a_half_times_its_files(true);
}

#[test]
fn by_file_status_a_handle_that_paged_history_holds_at_most_one_and_a_half_times_its_files() {
    paged_history_holds_at_most_one_and_a_half_times_its_files(false);
}

fn paged_history_holds_at_most_one_and_a_half_times_its_files(notices: bool) {
    let _turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    {
        let writer = handle(dir.path(), true);
        for i in 0..TASKS {
            let task = writer.create(NewTask::new()).unwrap();
            let done = writer.complete(&task.id, serde_json::json!(i)).unwrap();
            assert!(done.is_applied());
        }
    }
    settled();
    let files = file_bytes(&dir.path().join("done"));

    let before = live();
    let reader = handle(dir.path(), notices);
    let mut query = ListQuery::all().limit(100);
    let mut listed = 0;
    loop {
        let page = reader.list(&query).unwrap();
        listed += page.tasks.len();
        match page.next_cursor {
            Some(cursor) => query = ListQuery::all().limit(100).after(&cursor),
            None => break,
        }
    }
    assert_eq!(listed, TASKS);
    let held = live() - before;
    eprintln!(
        "{TASKS} finished tasks, {files} bytes of files: the handle (notices {notices}) holds \
         {held} bytes after paging them ({:.2}x, {} bytes a task)",
        held as f64 / files as f64,
        held / TASKS as isize
    );
    assert!(
        held as f64 <= 1.5 * files as f64,
        "after paging history the handle holds {held} bytes for {files} bytes of files"
    );
    drop(reader);
    assert!(
        live() - before < (files / 100) as isize,
        "a dropped handle leaves {} bytes behind",
        live() - before
    );
}
