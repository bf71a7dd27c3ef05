//! What a sweep, or a page of history, holds of tasks with large payloads:
//! not the payloads of a whole batch (a sweep's is up to 1,024 tasks, each
//! up to the payload cap) or of all history, but a few tasks' worth at a
//! time, or the page's. Counted by a global allocator that tracks every
//! live heap byte of this test binary and the highest count reached; its
//! tests take turns, so nothing else allocates beside the one measured.
//!
//! Heap bytes asked for, not resident memory (as `tests/snapshot_memory.rs`).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::json;
use taskstore::{
    Durability, FileStore, ListQuery, ManualClock, MemoryStore, NewTask, TaskStore, TaskUpdate,
};
use time::OffsetDateTime;

#[path = "common/counting.rs"]
mod counting;

#[cfg(all(feature = "postgres", unix))]
#[path = "common/pg.rs"]
mod pg_cluster;

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
    let before = counting::live();
    counting::reset_peak();
    let deleted = sweep();
    (counting::peak() - before, deleted)
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
    fill_finished(&file_store(dir.path(), &clock));
    let sweeper = file_store(dir.path(), &clock);
    sweep_finished("file store, finished tasks", &sweeper, &clock);
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
    fill_finished(&store);
    sweep_finished("memory store, finished tasks", &store, &clock);
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
    fill_finished(&store);
    sweep_finished("PostgreSQL, finished tasks", &store, &clock);
}

/// [`TASKS`] finished tasks in `store`, each with a result of [`PAYLOAD`]
/// bytes, expiring a second after they were made.
fn fill_finished(store: &dyn TaskStore) {
    for n in 0..TASKS {
        let task = store
            .create(NewTask::new().ttl(Duration::from_secs(1)))
            .unwrap();
        let done = store.complete(&task.id, json!({ "text": payload(n) }));
        assert!(done.unwrap().is_applied());
    }
}

/// Sweeps `store`'s tasks once `clock` has passed their expiry, and checks
/// what the sweep held.
fn sweep_finished(what: &str, store: &dyn TaskStore, clock: &ManualClock) {
    clock.advance(Duration::from_secs(1));
    let (held, deleted) = peak_of(|| store.sweep_expired().unwrap());
    check(what, held, deleted);
}

#[test]
fn a_page_of_history_holds_the_page() {
    const PAGE: usize = 10;
    let _turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    fill_finished(&file_store(dir.path(), &clock));
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
