//! The cost of `reap_orphans` against the number of active tasks: the scan
//! when nothing is orphaned (what a periodic reaper pays almost always), and
//! a pass that reaps half of the active tasks.
//!
//! `cargo bench --bench reap`

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use taskstore::{Durability, FileStore, ManualClock, NewTask, TaskStore};
use time::OffsetDateTime;

#[path = "../tests/common/tree.rs"]
mod tree;
use tree::copy_dir;

const SIZES: [usize; 3] = [10, 100, 1_000];

fn t0() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap()
}

/// A store with `n` active tasks: `orphans` of them owned by a dead instance
/// whose 1 s lease has lapsed by `t0() + 10 s`, the rest by a live one.
fn build(dir: &Path, n: usize, orphans: usize) {
    let clock = ManualClock::new(t0());
    let open = |instance: &str, lease: u64| {
        FileStore::builder(dir)
            .clock(Arc::new(clock.clone()))
            .instance_id(instance)
            .lease(Duration::from_secs(lease))
            .durability(Durability::Eventual)
            .open()
            .unwrap()
    };
    let dead = open("dead", 1);
    for _ in 0..orphans {
        dead.create(NewTask::new().metadata("tool", "slow"))
            .unwrap();
    }
    let live = open("live", 3600);
    for _ in orphans..n {
        live.create(NewTask::new().metadata("tool", "slow"))
            .unwrap();
    }
}

fn reaper(dir: &Path) -> FileStore {
    FileStore::builder(dir)
        .clock(Arc::new(ManualClock::new(t0() + Duration::from_secs(10))))
        .instance_id("reaper")
        .open()
        .unwrap()
}

fn reap(c: &mut Criterion) {
    let mut group = c.benchmark_group("reap_orphans/no_orphans");
    for n in SIZES {
        let dir = tempfile::tempdir().unwrap();
        build(dir.path(), n, 0);
        let s = reaper(dir.path());
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| assert!(black_box(s.reap_orphans().unwrap()).is_empty()))
        });
    }
    group.finish();

    // Each iteration reaps a fresh copy of the store (the copy is not timed).
    let mut group = c.benchmark_group("reap_orphans/half_orphaned");
    group.sample_size(10);
    for n in SIZES {
        let template = tempfile::tempdir().unwrap();
        build(template.path(), n, n / 2);
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter_batched(
                || {
                    let dir = tempfile::tempdir().unwrap();
                    copy_dir(template.path(), &dir.path().join("s"));
                    let s = reaper(&dir.path().join("s"));
                    (dir, s)
                },
                // Returned, so the copy is removed outside the timing.
                |(dir, s)| {
                    assert_eq!(s.reap_orphans().unwrap().len(), n / 2);
                    (dir, s)
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, reap);
criterion_main!(benches);
