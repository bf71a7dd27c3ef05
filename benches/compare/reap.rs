//! The reap rows: a reaper's pass that fails one orphan (a task whose
//! owner's lease lapsed), paired with the floor operation by operation as
//! the write rows' `*/1w-paired` are: a reap is a read of the lapsed
//! running tasks and a terminal move, and the floor writes the same bytes
//! (the failed task's file) with write + fsync + rename + directory fsync.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode};
use taskstore::{Durability, FileStore, ManualClock, NewTask, TaskStore};
use time::OffsetDateTime;

use crate::floor::Floor;
use crate::harness::{WriteOp, durability_name};
use crate::record;
use crate::writes::{floor_op, take_turns, task_file};

/// The dead owner's lease: the clock moves past it before each reap.
const LEASE: Duration = Duration::from_secs(1);

/// The workloads of [`reap`], by name.
pub fn workloads() -> Vec<String> {
    ["immediate", "eventual"]
        .iter()
        .map(|d| format!("reap/{d}/1w-paired"))
        .collect()
}

/// One orphan at a time: made by a handle whose lease then lapses
/// (untimed), reaped by another (timed: the whole `reap` call), deleted
/// (untimed), so the store holds nothing else and each pass fails exactly
/// one task.
pub fn reap(c: &mut Criterion) {
    for durability in [Durability::Immediate, Durability::Eventual] {
        let dname = durability_name(durability);
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("taskstore");
        let clock = ManualClock::new(OffsetDateTime::now_utc());
        let open = |instance: &str, lease: Duration| {
            FileStore::builder(&root)
                .clock(Arc::new(clock.clone()))
                .instance_id(instance)
                .lease(lease)
                .durability(durability)
                .open()
                .unwrap()
        };
        let dead = open("dead", LEASE);
        let reaper = open("reaper", Duration::from_secs(3600));
        let reap_one = || {
            let orphan = dead.create(NewTask::new()).unwrap();
            clock.advance(LEASE * 2);
            let start = Instant::now();
            let reaped = reaper.reap().unwrap();
            let elapsed = start.elapsed();
            assert_eq!(reaped.tasks.len(), 1, "{:?}", reaped.missed);
            assert_eq!(reaped.tasks[0].id, orphan.id);
            (orphan.id, elapsed)
        };
        // The floor writes what a reap writes: the failed orphan's file.
        let (id, _) = reap_one();
        let bytes = task_file(&root, &id);
        assert!(reaper.delete(&id).unwrap());
        let floor = Floor::new(
            &dir.path().join("floor"),
            durability == Durability::Immediate,
        );
        let workload = format!("reap/{dname}/1w-paired");
        let mut group = c.benchmark_group(&workload);
        group.sampling_mode(SamplingMode::Flat).sample_size(10);
        group.bench_function("taskstore+floor", |b| {
            b.iter_custom(|iters| {
                let ours = |_| {
                    let (id, elapsed) = reap_one();
                    assert!(reaper.delete(&id).unwrap());
                    elapsed
                };
                let (ours, theirs) = take_turns(iters, ours, || {
                    floor_op(&floor, WriteOp::Complete, "paired", &bytes)
                });
                record(&workload, "taskstore", ours, iters);
                record(&workload, "floor", theirs, iters);
                ours + theirs
            })
        });
        group.finish();
    }
}
