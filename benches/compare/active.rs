//! Rows at a number of active tasks (100, 1,000, 10,000; no history), each
//! peer holding one store at each number:
//!
//! - `list_page/quiet/N`: the first page of 100 active tasks in listing
//!   order, over and over, by a handle nothing else writes through;
//! - `list_page/after_write/N`: the same page right after the same handle
//!   updated one task (the first of the page; the update untimed);
//! - `list_page/fresh/N`: opening a handle and reading the first page;
//! - `create_at_active/{immediate,eventual}/10000-vs-100`: one create,
//!   timed, the task deleted right after, untimed, in the store holding
//!   10,000 active tasks and in the one holding 100, recorded as the rows
//!   `create_at_active/{immediate,eventual}/{100,10000}`;
//! - `rss/10000`: the resident memory of a handle that has listed them
//!   (see `memory.rs`).
//!
//! The rows that compare numbers of tasks take turns: a peer's stores at
//! each number time one operation each, one after the other, and which
//! goes first moves on every round (the criterion group
//! `list_page/{kind}/100-vs-1000-vs-10000` records the three rows of its
//! kind), so that the disk's and the VM's drift weighs on all of them
//! alike. Two groups run minutes apart once gave ratios from 0.6 to 1.9
//! for the same build.
//!
//! Every peer's stores hold their tasks made the cheapest honest way
//! (`taskstore` through a handle without fsync, SQLite and redb in one
//! transaction); a filtered run builds only the stores it needs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode};
use taskstore::{Durability, TaskId};

use crate::floor::Floor;
use crate::harness::{WriteOp, durability_name, writer};
use crate::memory;
use crate::peers::{Peer, Redb, Sqlite, Taskstore, check};
use crate::writes::{floor_bytes, floor_op, rounds, take_turns};
use crate::{Filter, record};

/// The numbers of active tasks the rows run at.
const ACTIVE: [usize; 3] = [100, 1_000, 10_000];
/// The two numbers the create rows compare, taking turns.
const CREATE_AT: [usize; 2] = [100, 10_000];
/// The one the memory figure is taken at.
const RSS_AT: usize = 10_000;
/// Tasks per page.
const PAGE: usize = 100;
/// The peers, each with a store at every number.
const PEERS: [&str; 3] = ["taskstore", "sqlite", "redb"];
/// The list rows' kinds.
const LIST_KINDS: [&str; 3] = ["quiet", "after_write", "fresh"];

const DURABILITIES: [Durability; 2] = [Durability::Immediate, Durability::Eventual];

/// One peer's store, holding a number of active tasks.
struct Fixture {
    name: &'static str,
    dir: PathBuf,
    /// The handle the listing rows use (without fsync: they do not write,
    /// but for the one untimed update); `None` while closed.
    handle: Option<Handle>,
    /// The first task in listing order: the one `after_write` updates.
    first: TaskId,
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
    /// `name`'s store in `root`, checked, then holding exactly `n` active
    /// tasks (what `check` left is removed first).
    fn at(name: &'static str, root: &Path, n: usize) -> Fixture {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let handle = match name {
            "taskstore" => Handle::Taskstore(Box::new(Taskstore::open(&dir, Durability::Eventual))),
            "sqlite" => Handle::Sqlite(Sqlite::open(&dir, Durability::Eventual)),
            _ => Handle::Redb(Redb::open(&dir, Durability::Eventual)),
        };
        let peer = handle.peer();
        check(peer);
        for task in peer.list_active() {
            peer.delete(&task.id);
        }
        peer.fill(n, None);
        assert_eq!(peer.list_active().len(), n, "{name}");
        let first = peer.page(1, None).tasks[0].id.clone();
        Fixture {
            name,
            dir,
            handle: Some(handle),
            first,
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
        Fixture::all_closed(std::slice::from_mut(self), |all| f(&all[0]))
    }

    /// [`closed`](Self::closed) for all of `fixtures` at once.
    fn all_closed<R>(fixtures: &mut [Fixture], f: impl FnOnce(&[Fixture]) -> R) -> R {
        let closed: Vec<bool> = fixtures
            .iter_mut()
            .map(|fx| {
                let redb = matches!(fx.handle, Some(Handle::Redb(_)));
                if redb {
                    fx.handle = None;
                }
                redb
            })
            .collect();
        let r = f(fixtures);
        for (fx, closed) in fixtures.iter_mut().zip(closed) {
            if closed {
                fx.handle = Some(Handle::open(fx.name, &fx.dir, Durability::Eventual));
            }
        }
        r
    }
}

pub fn active(c: &mut Criterion, filter: &Filter) {
    let lists = filter.wants(&LIST_KINDS.map(list_group));
    let creates = filter.wants(&DURABILITIES.map(create_group));
    let rss = filter.wants(&[rss_workload()]);
    // Only the stores a wanted row needs are built (a filter for the
    // create rows alone builds none at 1,000).
    let sizes: Vec<usize> = ACTIVE
        .into_iter()
        .filter(|n| lists || (creates && CREATE_AT.contains(n)) || (rss && *n == RSS_AT))
        .collect();
    if sizes.is_empty() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    // By peer, then by size: each peer holds one store at each size.
    let mut stores: Vec<Vec<Fixture>> = PEERS
        .into_iter()
        .map(|name| {
            sizes
                .iter()
                .map(|&n| Fixture::at(name, &root.path().join(n.to_string()), n))
                .collect()
        })
        .collect();
    let at = |n: usize| sizes.iter().position(|&m| m == n).unwrap();
    if lists {
        list_rows(c, &mut stores, &ACTIVE.map(at));
    }
    if creates {
        let bytes = floor_bytes().0;
        // One directory per size, a handle per durability on each.
        let floors: Vec<Vec<Floor>> = CREATE_AT
            .iter()
            .map(|&n| {
                let dir = root.path().join(n.to_string()).join("floor");
                let floors: Vec<Floor> = DURABILITIES
                    .iter()
                    .map(|d| Floor::new(&dir, *d == Durability::Immediate))
                    .collect();
                floors[0].fill(n, &bytes);
                floors
            })
            .collect();
        let (few, many) = (at(CREATE_AT[0]), at(CREATE_AT[1]));
        let large: Vec<&Fixture> = stores.iter().map(|s| &s[many]).collect();
        let small: Vec<&Fixture> = stores.iter().map(|s| &s[few]).collect();
        create_rows(c, &large, &small, &floors[1], &floors[0], &bytes);
    }
    if rss {
        let workload = rss_workload();
        for peer in &mut stores {
            let f = &mut peer[at(RSS_AT)];
            let name = f.name;
            f.closed(|f| memory::measure(&workload, name, &f.dir, RSS_AT));
        }
    }
}

/// The list rows: for each kind, each peer's stores at every number of
/// [`ACTIVE`] (`stores[peer][at[k]]` holds `ACTIVE[k]`) taking turns, page
/// by page (which goes first moves on by one each round), recorded as the
/// rows `list_page/{kind}/{n}`.
fn list_rows(c: &mut Criterion, stores: &mut [Vec<Fixture>], at: &[usize]) {
    let rows = |kind: &str| -> Vec<String> {
        ACTIVE
            .iter()
            .map(|n| format!("list_page/{kind}/{n}"))
            .collect()
    };
    // Records each size's total under its row: the group's own time is
    // their sum.
    let record_all = |rows: &[String], name: &'static str, totals: Vec<Duration>, iters: u64| {
        for (row, total) in rows.iter().zip(&totals) {
            record(row, name, *total, iters);
        }
        totals.into_iter().sum::<Duration>()
    };

    let (kind, quiet) = ("quiet", rows("quiet"));
    let mut group = c.benchmark_group(list_group(kind));
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    for peer in stores.iter() {
        let fixtures: Vec<&Fixture> = at.iter().map(|&k| &peer[k]).collect();
        let name = fixtures[0].name;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let totals = rounds(iters, fixtures.len(), |k, _| {
                    let start = Instant::now();
                    let len = fixtures[k].handle().page(PAGE, None).tasks.len();
                    let elapsed = start.elapsed();
                    assert_eq!(len, PAGE);
                    elapsed
                });
                record_all(&quiet, name, totals, iters)
            })
        });
    }
    group.finish();

    let (kind, after_write) = ("after_write", rows("after_write"));
    let mut group = c.benchmark_group(list_group(kind));
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    for peer in stores.iter() {
        let fixtures: Vec<&Fixture> = at.iter().map(|&k| &peer[k]).collect();
        let name = fixtures[0].name;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let totals = rounds(iters, fixtures.len(), |k, i| {
                    let f = fixtures[k];
                    // Untimed: the first task of the page changes, through
                    // the same handle.
                    f.handle().update(&f.first, "progress", i);
                    let start = Instant::now();
                    let page = f.handle().page(PAGE, None);
                    let elapsed = start.elapsed();
                    assert_eq!(page.tasks[0].metadata["progress"], i);
                    elapsed
                });
                record_all(&after_write, name, totals, iters)
            })
        });
    }
    group.finish();

    let (kind, fresh) = ("fresh", rows("fresh"));
    let mut group = c.benchmark_group(list_group(kind));
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    for peer in stores.iter_mut() {
        let name = peer[0].name;
        Fixture::all_closed(peer, |peer| {
            let fixtures: Vec<&Fixture> = at.iter().map(|&k| &peer[k]).collect();
            group.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    let totals = rounds(iters, fixtures.len(), |k, _| {
                        // The handle is closed inside the timing: its drop
                        // is timed too (small next to the open).
                        let start = Instant::now();
                        let len = fixtures[k].fresh_page();
                        let elapsed = start.elapsed();
                        assert_eq!(len, PAGE);
                        elapsed
                    });
                    record_all(&fresh, name, totals, iters)
                })
            });
        });
    }
    group.finish();
}

/// The criterion group of the list rows of `kind`.
fn list_group(kind: &str) -> String {
    let sizes: Vec<String> = ACTIVE.iter().map(|n| n.to_string()).collect();
    format!("list_page/{kind}/{}", sizes.join("-vs-"))
}

/// The memory row's workload.
fn rss_workload() -> String {
    format!("rss/{RSS_AT}")
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
    large: &[&Fixture],
    small: &[&Fixture],
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
