//! Rows at a number of active tasks (100, 1,000, 10,000; no history):
//!
//! - `list_page/quiet/N`: the first page of 100 active tasks in listing
//!   order, over and over, by a handle nothing else writes through;
//! - `list_page/after_write/N`: the same page right after the same handle
//!   updated one task (the first of the page; the update untimed);
//! - `list_page/fresh/N`: opening a handle and reading the first page;
//! - `create_at_active/{immediate,eventual}/N` (100 and 10,000): one create,
//!   timed, the task deleted right after, untimed;
//! - `rss/10000`: the resident memory of a handle that has listed them
//!   (see `memory.rs`).
//!
//! Every peer holds the same number of active tasks, made the cheapest
//! honest way (`taskstore` through a handle without fsync, SQLite and redb
//! in one transaction); a filtered run builds them only up to the largest
//! number it needs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode};
use taskstore::{Durability, TaskId};

use crate::floor::Floor;
use crate::harness::{WriteOp, durability_name, per_op, writer};
use crate::memory;
use crate::peers::{Peer, Redb, Sqlite, Taskstore, check};
use crate::writes::{floor_bytes, floor_op};
use crate::{Filter, record};

/// The numbers of active tasks the rows run at.
const ACTIVE: [usize; 3] = [100, 1_000, 10_000];
/// Those the create rows run at.
const CREATE_AT: [usize; 2] = [100, 10_000];
/// The one the memory figure is taken at.
const RSS_AT: usize = 10_000;
/// Tasks per page.
const PAGE: usize = 100;

const DURABILITIES: [Durability; 2] = [Durability::Immediate, Durability::Eventual];

/// The workloads run at `n` active tasks, by name.
fn workloads_at(n: usize) -> Vec<String> {
    let mut names: Vec<String> = ["quiet", "after_write", "fresh"]
        .iter()
        .map(|kind| format!("list_page/{kind}/{n}"))
        .collect();
    if CREATE_AT.contains(&n) {
        for d in DURABILITIES {
            names.push(format!("create_at_active/{}/{n}", durability_name(d)));
        }
    }
    if n == RSS_AT {
        names.push(format!("rss/{n}"));
    }
    names
}

/// One peer's store, grown to the current number of active tasks.
struct Fixture {
    name: &'static str,
    dir: PathBuf,
    /// The handle the listing rows use (without fsync: they do not write,
    /// but for the one untimed update); `None` while closed.
    handle: Option<Handle>,
    /// The first task in listing order: the one `after_write` updates.
    first: Option<TaskId>,
}

enum Handle {
    Taskstore(Box<Taskstore>),
    Sqlite(Sqlite),
    Redb(Redb),
}

impl Handle {
    fn open(name: &str, dir: &Path, durability: Durability) -> Handle {
        match name {
            "taskstore" => Handle::Taskstore(Box::new(Taskstore::open(dir, durability))),
            "sqlite" => Handle::Sqlite(Sqlite::connect(dir, durability)),
            _ => Handle::Redb(Redb::open_existing(dir, durability)),
        }
    }

    fn peer(&self) -> &dyn Peer {
        match self {
            Handle::Taskstore(p) => p.as_ref(),
            Handle::Sqlite(p) => p,
            Handle::Redb(p) => p,
        }
    }
}

impl Fixture {
    fn create(name: &'static str, root: &Path) -> Fixture {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let handle = match name {
            "taskstore" => Handle::Taskstore(Box::new(Taskstore::open(&dir, Durability::Eventual))),
            "sqlite" => Handle::Sqlite(Sqlite::open(&dir, Durability::Eventual)),
            _ => Handle::Redb(Redb::open(&dir, Durability::Eventual)),
        };
        check(handle.peer());
        Fixture {
            name,
            dir,
            handle: Some(handle),
            first: None,
        }
    }

    fn handle(&self) -> &dyn Peer {
        self.handle.as_ref().unwrap().peer()
    }

    /// Another handle on the same store, committing with `durability`.
    fn writer(&self, durability: Durability) -> Handle {
        match self.handle.as_ref().unwrap() {
            // redb lets one `Database` of a process hold the file: the same
            // one, with another durability.
            Handle::Redb(redb) => Handle::Redb(redb.with_durability(durability)),
            _ => Handle::open(self.name, &self.dir, durability),
        }
    }

    /// Opens a handle and reads the first page, as a fresh process would.
    fn fresh_page(&self) -> usize {
        Handle::open(self.name, &self.dir, Durability::Eventual)
            .peer()
            .page(PAGE, None)
            .tasks
            .len()
    }

    /// Closes the handle if it is redb's (one handle may hold its file),
    /// runs `f`, and opens it again.
    fn closed<R>(&mut self, f: impl FnOnce(&Fixture) -> R) -> R {
        let redb = matches!(self.handle, Some(Handle::Redb(_)));
        if redb {
            self.handle = None;
        }
        let r = f(self);
        if redb {
            self.handle = Some(Handle::open(self.name, &self.dir, Durability::Eventual));
        }
        r
    }
}

pub fn active(c: &mut Criterion, filter: &Filter) {
    let Some(largest) = ACTIVE
        .into_iter()
        .filter(|&n| filter.wants(&workloads_at(n)))
        .max()
    else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let mut fixtures: Vec<Fixture> = ["taskstore", "sqlite", "redb"]
        .into_iter()
        .map(|name| Fixture::create(name, root.path()))
        .collect();
    let floors: Vec<Floor> = DURABILITIES
        .iter()
        .map(|d| Floor::new(&root.path().join("floor"), *d == Durability::Immediate))
        .collect();
    let bytes = floor_bytes().0;
    // What `check` left: removed, so each store holds exactly `n`.
    for f in &fixtures {
        for task in f.handle().list_active() {
            f.handle().delete(&task.id);
        }
    }
    let mut held = 0;
    for n in ACTIVE.into_iter().filter(|&n| n <= largest) {
        for f in &mut fixtures {
            f.handle().fill(n - held, None);
            f.first = Some(f.handle().page(1, None).tasks[0].id.clone());
            assert_eq!(f.handle().list_active().len(), n, "{}", f.name);
        }
        floors[0].fill(n - held, &bytes);
        held = n;
        if !filter.wants(&workloads_at(n)) {
            continue;
        }
        list_rows(c, &mut fixtures, n);
        if CREATE_AT.contains(&n) {
            create_rows(c, &fixtures, &floors, &bytes, n);
        }
        if n == RSS_AT && filter.wants(&[format!("rss/{n}")]) {
            let workload = format!("rss/{n}");
            for f in &mut fixtures {
                let name = f.name;
                f.closed(|f| memory::measure(&workload, name, &f.dir, n));
            }
        }
    }
}

fn list_rows(c: &mut Criterion, fixtures: &mut [Fixture], n: usize) {
    let workload = format!("list_page/quiet/{n}");
    let mut group = c.benchmark_group(&workload);
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    for f in fixtures.iter() {
        group.bench_function(f.name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    assert_eq!(f.handle().page(PAGE, None).tasks.len(), PAGE);
                }
                let elapsed = start.elapsed();
                record(&workload, f.name, elapsed, iters);
                elapsed
            })
        });
    }
    group.finish();

    let workload = format!("list_page/after_write/{n}");
    let mut group = c.benchmark_group(&workload);
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    for f in fixtures.iter() {
        let first = f.first.clone().unwrap();
        group.bench_function(f.name, |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for i in 0..iters {
                    // Untimed: the first task of the page changes, through
                    // the same handle.
                    f.handle().update(&first, "progress", i);
                    let start = Instant::now();
                    let page = f.handle().page(PAGE, None);
                    elapsed += start.elapsed();
                    assert_eq!(page.tasks[0].metadata["progress"], i);
                }
                record(&workload, f.name, elapsed, iters);
                elapsed
            })
        });
    }
    group.finish();

    let workload = format!("list_page/fresh/{n}");
    let mut group = c.benchmark_group(&workload);
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    for f in fixtures.iter_mut() {
        let name = f.name;
        f.closed(|f| {
            group.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        // The handle is closed inside the loop: its drop is
                        // timed too (small next to the open).
                        assert_eq!(f.fresh_page(), PAGE);
                    }
                    let elapsed = start.elapsed();
                    record(&workload, name, elapsed, iters);
                    elapsed
                })
            });
        });
    }
    group.finish();
}

fn create_rows(c: &mut Criterion, fixtures: &[Fixture], floors: &[Floor], bytes: &[u8], n: usize) {
    for (durability, floor) in DURABILITIES.into_iter().zip(floors) {
        let workload = format!("create_at_active/{}/{n}", durability_name(durability));
        let mut group = c.benchmark_group(&workload);
        group.sampling_mode(SamplingMode::Flat).sample_size(10);
        for f in fixtures {
            let handle = f.writer(durability);
            let name = f.name;
            group.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    let timed = writer(handle.peer(), WriteOp::Create, iters, || {});
                    let per = per_op(&[timed], iters);
                    record(&workload, name, per, 1);
                    timed
                })
            });
        }
        group.bench_function("floor", |b| {
            b.iter_custom(|iters| {
                let timed: Duration = (0..iters)
                    .map(|_| floor_op(floor, WriteOp::Create, "c", bytes))
                    .sum();
                record(&workload, "floor", timed, iters);
                timed
            })
        });
        group.finish();
    }
}
