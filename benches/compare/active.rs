//! Rows at a number of active tasks (100, 1,000, 10,000; no history):
//!
//! - `list_page/quiet/N`: the first page of 100 active tasks in listing
//!   order, over and over, by a handle nothing else writes through;
//! - `list_page/after_write/N`: the same page right after the same handle
//!   updated one task (the first of the page; the update untimed);
//! - `list_page/fresh/N`: opening a handle and reading the first page;
//! - `create_at_active/{immediate,eventual}/10000-vs-100`: one create,
//!   timed, the task deleted right after, untimed, in a store holding
//!   10,000 active tasks and in a second store of the same peer holding
//!   100, taking turns (which goes first alternates), so that the disk's
//!   drifting fsync latency weighs on both alike; recorded as the rows
//!   `create_at_active/{immediate,eventual}/{100,10000}` (two groups run
//!   minutes apart once gave ratios from 0.6 to 1.9 for the same build);
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
use crate::harness::{WriteOp, durability_name, writer};
use crate::memory;
use crate::peers::{Peer, Redb, Sqlite, Taskstore, check};
use crate::writes::{floor_bytes, floor_op, take_turns};
use crate::{Filter, record};

/// The numbers of active tasks the rows run at.
const ACTIVE: [usize; 3] = [100, 1_000, 10_000];
/// The two numbers the create rows compare, taking turns: the second
/// store, held at the smaller, and the fixture once grown to the larger.
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
    if n == CREATE_AT[1] {
        for d in DURABILITIES {
            names.push(create_group(d));
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
    // The create rows' second stores, held at the smaller number.
    // Only when a create row is wanted (a filter for the pages alone
    // builds none of it).
    let creates = largest >= CREATE_AT[1] && filter.wants(&DURABILITIES.map(create_group));
    let (small, small_floors) = if creates {
        let at = root.path().join("small");
        let small: Vec<Fixture> = fixtures
            .iter()
            .map(|f| Fixture::create(f.name, &at))
            .collect();
        for f in &small {
            for task in f.handle().list_active() {
                f.handle().delete(&task.id);
            }
            f.handle().fill(CREATE_AT[0], None);
            assert_eq!(f.handle().list_active().len(), CREATE_AT[0], "{}", f.name);
        }
        let floors: Vec<Floor> = DURABILITIES
            .iter()
            .map(|d| Floor::new(&at.join("floor"), *d == Durability::Immediate))
            .collect();
        floors[0].fill(CREATE_AT[0], &bytes);
        (small, floors)
    } else {
        (Vec::new(), Vec::new())
    };
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
        if creates && n == CREATE_AT[1] {
            create_rows(c, &fixtures, &small, &floors, &small_floors, &bytes);
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

/// The criterion group of the create rows with `durability`.
fn create_group(durability: Durability) -> String {
    format!(
        "create_at_active/{}/{}-vs-{}",
        durability_name(durability),
        CREATE_AT[1],
        CREATE_AT[0]
    )
}

/// The create rows: each peer's `large` store (at `CREATE_AT[1]`) and its
/// `small` one (at `CREATE_AT[0]`) taking turns, and the floor's two
/// directories the same way: `floors` (one directory, a handle per
/// durability) hold the larger number of files, `small_floors` the
/// smaller.
fn create_rows(
    c: &mut Criterion,
    large: &[Fixture],
    small: &[Fixture],
    floors: &[Floor],
    small_floors: &[Floor],
    bytes: &[u8],
) {
    let [few, many] = CREATE_AT;
    for ((durability, floor), small_floor) in DURABILITIES.into_iter().zip(floors).zip(small_floors)
    {
        let dname = durability_name(durability);
        let (at_few, at_many) = (
            format!("create_at_active/{dname}/{few}"),
            format!("create_at_active/{dname}/{many}"),
        );
        let mut group = c.benchmark_group(create_group(durability));
        group.sampling_mode(SamplingMode::Flat).sample_size(10);
        for (l, s) in large.iter().zip(small) {
            assert_eq!(l.name, s.name);
            let (lw, sw) = (l.writer(durability), s.writer(durability));
            let name = l.name;
            group.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    let create = |h: &Handle| writer(h.peer(), WriteOp::Create, 1, || {});
                    let (many_t, few_t) = take_turns(iters, |_| create(&lw), || create(&sw));
                    record(&at_many, name, many_t, iters);
                    record(&at_few, name, few_t, iters);
                    many_t + few_t
                })
            });
        }
        group.bench_function("floor", |b| {
            b.iter_custom(|iters| {
                let (many_t, few_t) = take_turns(
                    iters,
                    |_| floor_op(floor, WriteOp::Create, "c", bytes),
                    || floor_op(small_floor, WriteOp::Create, "c", bytes),
                );
                record(&at_many, "floor", many_t, iters);
                record(&at_few, "floor", few_t, iters);
                many_t + few_t
            })
        });
        group.finish();
    }
}
