//! Pages of history: the first page of 100 of every task
//! (`ListQuery::all().limit(100)`) beside 20,000 finished tasks and 10
//! running ones, against SQLite's keyset page on an index of every task by
//! (`created_at`, id) (in a database of its own: the other rows' SQLite
//! indexes only running tasks, and pays for no more). redb is left out: its
//! fixture here would need an index table of every task the other rows'
//! redb does not keep.
//!
//! - `history_page/quiet`: a handle that has listed history before, nothing
//!   changed since;
//! - `history_page/after_complete`: right after another handle (SQLite: a
//!   transaction) finished one more task, untimed;
//! - `history_page/fresh`: a handle opened for the page (SQLite: a new
//!   connection), its first listing;
//! - `history_page/fresh_ttl`: the same, the finished tasks made with a TTL
//!   (a day), so each has an `expiring/` entry that places it without a
//!   read (taskstore: a store of its own; SQLite: the same database as
//!   `fresh`, whose page reads the same index with or without a TTL).
//! - `rss/history/20010`: the resident memory of a handle that reads the
//!   first page of every task, then lists them all (`memory.rs`).

use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion};
use serde_json::json;
use taskstore::{Durability, FileStore, ListQuery, NewTask, TaskStore};

use crate::peers::{Peer, Sqlite};
use crate::{Filter, memory, record};

/// Finished tasks beside the page.
const FINISHED: usize = 20_000;
/// Tasks in a page.
const PAGE: usize = 100;

const QUIET: &str = "history_page/quiet";
const AFTER_COMPLETE: &str = "history_page/after_complete";
const FRESH: &str = "history_page/fresh";
const FRESH_TTL: &str = "history_page/fresh_ttl";

/// The resident memory of a handle that lists the store's history: its
/// first page, then every task (`benches/compare/memory.rs`).
const RSS: &str = "rss/history/20010";

/// The history rows' workloads.
pub fn workloads() -> [&'static str; 5] {
    [QUIET, AFTER_COMPLETE, FRESH, FRESH_TTL, RSS]
}

/// One finished task more, through `store`.
fn finish(store: &FileStore) {
    finish_as(store, NewTask::new());
}

/// One finished task more, made as `new`, through `store`.
fn finish_as(store: &FileStore, new: NewTask) {
    let task = store.create(new).unwrap();
    assert!(
        store
            .complete(&task.id, json!("done"))
            .unwrap()
            .is_applied()
    );
}

/// A store at `root` holding `FINISHED` tasks made as `new()` and
/// finished, and 10 running ones; and the handle (without fsync) that made
/// them (untimed).
fn fixture(root: &std::path::Path, new: impl Fn() -> NewTask) -> FileStore {
    let writer = FileStore::builder(root)
        .durability(Durability::Eventual)
        .open()
        .unwrap();
    for _ in 0..FINISHED {
        finish_as(&writer, new());
    }
    for _ in 0..10 {
        writer.create(NewTask::new()).unwrap();
    }
    writer
}

/// The first page, checked.
fn first_page(store: &FileStore) {
    let page = store.list(&ListQuery::all().limit(PAGE)).unwrap();
    assert_eq!(page.tasks.len(), PAGE);
    std::hint::black_box(page);
}

pub fn history(c: &mut Criterion, filter: &Filter) {
    let dir = tempfile::tempdir().unwrap();
    let ts_root = dir.path().join("taskstore");
    let writer = fixture(&ts_root, NewTask::new);
    if filter.wants(&[RSS]) {
        memory::measure_history(RSS, &ts_root, FINISHED + 10);
    }
    if !filter.wants(&[QUIET, AFTER_COMPLETE, FRESH, FRESH_TTL]) {
        return;
    }
    let reader = FileStore::open(&ts_root).unwrap();
    let ttl_root = dir.path().join("taskstore-ttl");
    // Held open, as `writer` is: the fresh handles' opens are not alone.
    let _ttl_writer = fixture(&ttl_root, || {
        NewTask::new().ttl(Duration::from_secs(86_400))
    });
    let sqlite_dir = dir.path().join("sqlite");
    std::fs::create_dir_all(&sqlite_dir).unwrap();
    let sqlite = Sqlite::open(&sqlite_dir, Durability::Immediate);
    sqlite.index_history();
    sqlite.insert_finished(FINISHED);
    sqlite.fill(10, None);
    let sqlite_page = |sqlite: &Sqlite| {
        let page = sqlite.history_page(PAGE, None);
        assert_eq!(page.tasks.len(), PAGE);
        std::hint::black_box(page);
    };

    let mut group = c.benchmark_group(QUIET);
    first_page(&reader);
    row(
        &mut group,
        QUIET,
        "taskstore",
        || {},
        || first_page(&reader),
    );
    row(&mut group, QUIET, "sqlite", || {}, || sqlite_page(&sqlite));
    group.finish();

    let mut group = c.benchmark_group(AFTER_COMPLETE);
    let (wrote, inserted) = (|| finish(&writer), || sqlite.insert_finished(1));
    row(&mut group, AFTER_COMPLETE, "taskstore", wrote, || {
        first_page(&reader)
    });
    row(&mut group, AFTER_COMPLETE, "sqlite", inserted, || {
        sqlite_page(&sqlite)
    });
    group.finish();

    let mut group = c.benchmark_group(FRESH);
    group.sample_size(10);
    // Each handle (connection) is dropped after the timer stops.
    row(
        &mut group,
        FRESH,
        "taskstore",
        || {},
        || {
            let fresh = FileStore::open(&ts_root).unwrap();
            first_page(&fresh);
            fresh
        },
    );
    let sqlite_fresh = || {
        let fresh = Sqlite::connect(&sqlite_dir, Durability::Immediate);
        sqlite_page(&fresh);
        fresh
    };
    row(&mut group, FRESH, "sqlite", || {}, sqlite_fresh);
    group.finish();

    let mut group = c.benchmark_group(FRESH_TTL);
    group.sample_size(10);
    row(
        &mut group,
        FRESH_TTL,
        "taskstore",
        || {},
        || {
            let fresh = FileStore::open(&ttl_root).unwrap();
            first_page(&fresh);
            fresh
        },
    );
    row(&mut group, FRESH_TTL, "sqlite", || {}, sqlite_fresh);
    group.finish();
}

/// A row of `workload` for `peer`: each iteration runs `before` untimed,
/// then times `page`, dropping what it returns after the timer stops.
fn row<T>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    workload: &'static str,
    peer: &'static str,
    before: impl Fn(),
    page: impl Fn() -> T,
) {
    group.bench_function(peer, |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                before();
                let start = Instant::now();
                let held = page();
                elapsed += start.elapsed();
                drop(held);
            }
            record(workload, peer, elapsed, iters);
            elapsed
        })
    });
}
