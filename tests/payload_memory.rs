//! What a sweep, or a page of history, holds of tasks with large payloads:
//! not the payloads of a whole batch (a sweep's is up to 1,024 tasks, each
//! up to the payload cap) or of all history, but a few tasks' worth at a
//! time, or the page's. Counted by a global allocator that tracks every
//! live heap byte of this test binary and the highest count reached; its
//! tests take turns, so nothing else allocates beside the one measured.
//!
//! Heap bytes asked for, not resident memory (as `tests/snapshot_memory.rs`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::json;
use taskstore::{
    Durability, FileStore, ListQuery, ManualClock, MemoryStore, NewTask, TaskStore, TaskUpdate,
};
use time::OffsetDateTime;

#[cfg(all(feature = "postgres", unix))]
#[path = "common/pg.rs"]
mod pg_cluster;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn add(bytes: isize) {
    let now = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System` unchanged; only the counters
// are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            add(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The tests take turns: the counters are the process's.
static TURN: Mutex<()> = Mutex::new(());

/// How many tasks each test sweeps: more than the share from which a pass
/// runs on both cores and reads new files without the snapshot (256).
const TASKS: usize = 300;
/// Each task's payload: 300 of them are 19.2 MB.
const PAYLOAD: usize = 64 * 1024;
/// What a sweep may hold beyond what it held before: a few tasks whole at
/// once (a worker's file and its decoded task, on each core), and a batch
/// of tasks without payloads. A sweep holding the batch's payloads holds
/// all 300 (more than 19 MB).
const BUDGET: isize = (8 * PAYLOAD + 1024 * 1024) as isize;

fn clock() -> ManualClock {
    ManualClock::new(OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap())
}

fn payload(n: usize) -> String {
    format!("{n:08}").repeat(PAYLOAD / 8)
}

/// The most heap `sweep` held beyond what was held when it started, and
/// how many tasks it deleted.
fn peak_of(sweep: impl FnOnce() -> usize) -> (isize, usize) {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let deleted = sweep();
    (PEAK.load(Ordering::Relaxed) - before, deleted)
}

fn file_store(dir: &std::path::Path, clock: &ManualClock) -> FileStore {
    FileStore::builder(dir)
        .durability(Durability::Eventual)
        .clock(Arc::new(clock.clone()))
        .open()
        .unwrap()
}

fn check(what: &str, held: isize, deleted: usize) {
    eprintln!("{what}: {deleted} tasks deleted holding at most {held} more bytes");
    assert_eq!(deleted, TASKS, "{what}: tasks deleted");
    assert!(
        held <= BUDGET,
        "{what}: the sweep held {held} bytes more at its peak (budget {BUDGET}, payloads \
         {} bytes in all)",
        TASKS * PAYLOAD
    );
}

#[test]
fn a_sweep_of_finished_tasks_holds_a_few_results_at_a_time() {
    let _turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    finished_files(dir.path(), &clock);
    clock.advance(Duration::from_secs(1));
    let sweeper = file_store(dir.path(), &clock);
    let (held, deleted) = peak_of(|| sweeper.sweep_expired().unwrap());
    check("file store, finished tasks", held, deleted);
}

#[test]
fn a_sweep_of_running_tasks_holds_a_few_payloads_at_a_time() {
    let _turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
    // Met at the sweep as new files (`listed_first`: the handle's snapshot
    // is complete and follows the store), or known before it.
    for listed_first in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let clock = clock();
        let sweeper = file_store(dir.path(), &clock);
        if listed_first {
            sweeper.list(&ListQuery::active().limit(1)).unwrap();
        }
        {
            let writer = file_store(dir.path(), &clock);
            for n in 0..TASKS {
                let task = writer
                    .create(
                        NewTask::new()
                            .ttl(Duration::from_secs(1))
                            .metadata("input", payload(n)),
                    )
                    .unwrap();
                let update = TaskUpdate::new().status_message(format!("step {n}"));
                assert!(writer.update(&task.id, update).unwrap().is_applied());
            }
        }
        if !listed_first {
            sweeper.list(&ListQuery::active().limit(1)).unwrap();
        }
        clock.advance(Duration::from_secs(1));
        let (held, deleted) = peak_of(|| sweeper.sweep_expired().unwrap());
        check(
            &format!("file store, running tasks (listed first: {listed_first})"),
            held,
            deleted,
        );
    }
}

#[test]
fn a_sweep_of_the_memory_store_copies_no_payloads() {
    let _turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
    let clock = clock();
    let store = MemoryStore::builder()
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    for n in 0..TASKS {
        let task = store
            .create(NewTask::new().ttl(Duration::from_secs(1)))
            .unwrap();
        let done = store.complete(&task.id, json!({ "text": payload(n) }));
        assert!(done.unwrap().is_applied());
    }
    clock.advance(Duration::from_secs(1));
    let (held, deleted) = peak_of(|| store.sweep_expired().unwrap());
    check("memory store, finished tasks", held, deleted);
}

#[cfg(all(feature = "postgres", unix))]
#[test]
fn a_sweep_of_postgres_holds_a_few_rows_at_a_time() {
    let _turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(cluster) = pg_cluster::shared() else {
        return;
    };
    let clock = clock();
    let store = taskstore::PgStore::builder(cluster.conninfo())
        .schema(pg_cluster::fresh_schema("payload_memory"))
        .clock(Arc::new(clock.clone()))
        // The test drives a `ManualClock`: no correction to the server's.
        .time_source(taskstore::TimeSource::Clock)
        .open()
        .unwrap();
    for n in 0..TASKS {
        let task = store
            .create(NewTask::new().ttl(Duration::from_secs(1)))
            .unwrap();
        let done = store.complete(&task.id, json!({ "text": payload(n) }));
        assert!(done.unwrap().is_applied());
    }
    clock.advance(Duration::from_secs(1));
    let (held, deleted) = peak_of(|| store.sweep_expired().unwrap());
    check("PostgreSQL, finished tasks", held, deleted);
}

/// Finished tasks in a new `FileStore` in `dir` (written without fsync), each with a
/// result of [`PAYLOAD`] bytes, expiring after a second of `clock`.
fn finished_files(dir: &std::path::Path, clock: &ManualClock) {
    let writer = file_store(dir, clock);
    for n in 0..TASKS {
        let task = writer
            .create(NewTask::new().ttl(Duration::from_secs(1)))
            .unwrap();
        let done = writer.complete(&task.id, json!({ "text": payload(n) }));
        assert!(done.unwrap().is_applied());
    }
}

#[test]
fn a_page_of_history_holds_the_page() {
    const PAGE: usize = 10;
    let _turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    finished_files(dir.path(), &clock);
    let reader = file_store(dir.path(), &clock);
    let mut query = ListQuery::all().limit(PAGE);
    let mut listed = 0;
    let mut peak = 0;
    loop {
        let (held, page) = {
            let mut page = None;
            let (held, _) = peak_of(|| {
                page = Some(reader.list(&query).unwrap());
                0
            });
            (held, page.unwrap())
        };
        peak = peak.max(held);
        listed += page.tasks.len();
        match page.next_cursor {
            Some(cursor) => query = ListQuery::all().limit(PAGE).after(&cursor),
            None => break,
        }
    }
    assert_eq!(listed, TASKS);
    // The page's tasks whole (decoded, about twice their files), a file
    // being read, and the names of history.
    let budget = (4 * PAGE * PAYLOAD + 1024 * 1024) as isize;
    eprintln!("pages of {PAGE} of {TASKS} finished tasks: at most {peak} bytes held by a page");
    assert!(
        peak <= budget,
        "a page of {PAGE} held {peak} bytes at its peak (budget {budget}, history {} bytes)",
        TASKS * PAYLOAD
    );
}
