//! The write rows: create, update and complete by 1, 2 and 4 writers
//! (threads, and processes for `taskstore` and SQLite), the floor, and
//! `taskstore` paired with the floor operation by operation.

use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode};
use taskstore::{Durability, TaskId};

use crate::floor::Floor;
use crate::harness::{
    WriteOp, durability_name, per_op, result_payload, writer, writer_processes, writer_threads,
};
use crate::peers::{Peer, Taskstore};
use crate::{peers, record};

pub const WRITERS: [usize; 3] = [1, 2, 4];

/// The workloads of [`writes`], by name.
pub fn workloads() -> Vec<String> {
    let mut names = Vec::new();
    for op in WriteOp::ALL {
        for d in ["immediate", "eventual"] {
            for w in ["1w", "2w", "4w", "1w-paired"] {
                names.push(format!("{}/{d}/{w}", op.name()));
            }
        }
    }
    names
}

/// Records one sample of `workload` by `peer` (`timed` per writer over
/// `ops` operations) and returns criterion's figure for `iters`.
fn sample(
    workload: &str,
    peer: &'static str,
    timed: &[Duration],
    ops: u64,
    iters: u64,
) -> Duration {
    let per = per_op(timed, ops);
    record(workload, peer, per, 1);
    per.mul_f64(iters as f64)
}

pub fn writes(c: &mut Criterion) {
    for durability in [Durability::Immediate, Durability::Eventual] {
        let dname = durability_name(durability);
        let dir = tempfile::tempdir().unwrap();
        let peers = peers(dir.path(), durability);
        let floor = Floor::new(
            &dir.path().join("floor"),
            durability == Durability::Immediate,
        );
        let floor_bytes = floor_bytes();
        for op in WriteOp::ALL {
            for writers in WRITERS {
                let workload = format!("{}/{dname}/{writers}w", op.name());
                let mut group = c.benchmark_group(&workload);
                group.sampling_mode(SamplingMode::Flat).sample_size(10);
                for peer in &peers {
                    let name = peer.name();
                    group.bench_function(name, |b| {
                        b.iter_custom(|iters| {
                            let per = iters.div_ceil(writers as u64);
                            let timed = writer_threads(peer.as_ref(), op, writers, per);
                            sample(&workload, name, &timed, per * writers as u64, iters)
                        })
                    });
                }
                if writers > 1 {
                    // Processes against processes: each its own handle (for
                    // SQLite its own connection) on the threads' store.
                    for (peer, name) in [
                        ("taskstore", "taskstore-processes"),
                        ("sqlite", "sqlite-processes"),
                    ] {
                        let root = dir.path().join(peer);
                        group.bench_function(name, |b| {
                            b.iter_custom(|iters| {
                                let per = iters.div_ceil(writers as u64);
                                let timed =
                                    writer_processes(peer, &root, durability, op, writers, per);
                                sample(&workload, name, &timed, per * writers as u64, iters)
                            })
                        });
                    }
                }
                let bytes = match op {
                    WriteOp::Complete => &floor_bytes.1,
                    _ => &floor_bytes.0,
                };
                group.bench_function("floor", |b| {
                    b.iter_custom(|iters| {
                        let per = iters.div_ceil(writers as u64);
                        let timed = floor_threads(&floor, op, writers, per, bytes);
                        sample(&workload, "floor", &timed, per * writers as u64, iters)
                    })
                });
                group.finish();
                if writers == 1 {
                    paired(c, &peers[0], &floor, op, dname, bytes);
                }
            }
        }
    }
}

/// The floor's writers: each writes `per` files (a new name for a create or
/// a complete, removed untimed right after; one name over and over for an
/// update), each write timed alone.
fn floor_threads(
    floor: &Floor,
    op: WriteOp,
    writers: usize,
    per: u64,
    bytes: &[u8],
) -> Vec<Duration> {
    let barrier = Barrier::new(writers);
    let timed = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for w in 0..writers {
            let (barrier, timed) = (&barrier, &timed);
            s.spawn(move || {
                barrier.wait();
                let mut total = Duration::ZERO;
                for _ in 0..per {
                    total += floor_op(floor, op, &format!("w{w}"), bytes);
                }
                timed.lock().unwrap().push(total);
            });
        }
    });
    timed.into_inner().unwrap()
}

/// One floor write as `op` needs it, timed; a new file is removed after,
/// untimed.
pub fn floor_op(floor: &Floor, op: WriteOp, prefix: &str, bytes: &[u8]) -> Duration {
    let name = match op {
        WriteOp::Update => format!("{prefix}.json"),
        _ => format!("{prefix}-{}.json", TaskId::new()),
    };
    let start = Instant::now();
    floor.write(&name, bytes);
    let elapsed = start.elapsed();
    if !matches!(op, WriteOp::Update) {
        floor.remove(&name);
    }
    elapsed
}

/// One writer, `taskstore` and the floor taking turns operation by
/// operation (which goes first alternates), so that the disk's drifting
/// fsync latency weighs on both alike: the ratio to trust for the floor.
fn paired(
    c: &mut Criterion,
    ts: &Arc<dyn Peer>,
    floor: &Floor,
    op: WriteOp,
    dname: &str,
    bytes: &[u8],
) {
    assert_eq!(ts.name(), "taskstore");
    let workload = format!("{}/{dname}/1w-paired", op.name());
    let mut group = c.benchmark_group(&workload);
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    group.bench_function("taskstore+floor", |b| {
        b.iter_custom(|iters| {
            // The one task an update updates, made untimed.
            let target = matches!(op, WriteOp::Update).then(|| ts.create(None));
            let ts_op = |i| match &target {
                Some(id) => {
                    let start = Instant::now();
                    ts.update(id, "progress", i);
                    start.elapsed()
                }
                None => writer(ts.as_ref(), op, 1, || {}),
            };
            let (ours, theirs) = take_turns(iters, ts_op, || floor_op(floor, op, "paired", bytes));
            if let Some(id) = target {
                assert!(ts.delete(&id));
            }
            record(&workload, "taskstore", ours, iters);
            record(&workload, "floor", theirs, iters);
            ours + theirs
        })
    });
    group.finish();
}

/// `iters` rounds of `ours(i)` and `floor()` taking turns (which goes
/// first alternates), each timing one operation: their totals.
pub fn take_turns(
    iters: u64,
    mut ours: impl FnMut(u64) -> Duration,
    mut floor: impl FnMut() -> Duration,
) -> (Duration, Duration) {
    let totals = rounds(iters, 2, |party, i| match party {
        0 => ours(i),
        _ => floor(),
    });
    (totals[0], totals[1])
}

/// `iters` rounds in which each of `parties` parties times one operation
/// (`op(party, round)`), one after the other; which goes first moves on by
/// one each round, so that the machine's drift weighs on all of them
/// alike: each party's total.
pub fn rounds(
    iters: u64,
    parties: usize,
    mut op: impl FnMut(usize, u64) -> Duration,
) -> Vec<Duration> {
    let mut totals = vec![Duration::ZERO; parties];
    for i in 0..iters {
        for k in 0..parties {
            let party = (i as usize + k) % parties;
            totals[party] += op(party, i);
        }
    }
    totals
}

/// The bytes `taskstore` writes for a new task, and for a completed one.
pub fn floor_bytes() -> (Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Taskstore::open(dir.path(), Durability::Eventual);
    let id = store.create(None);
    let created = task_file(dir.path(), &id);
    store.complete(&id, result_payload());
    let completed = task_file(dir.path(), &id);
    (created, completed)
}

/// The bytes of the one file under `root` whose name holds `id` (wherever
/// the store's layout puts it; a store's `tmp/` holds only temp files and
/// parks, which a handle may still be removing).
pub fn task_file(root: &std::path::Path, id: &TaskId) -> Vec<u8> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                if entry.file_name() != "tmp" {
                    dirs.push(entry.path());
                }
            } else if entry.file_name().to_string_lossy().contains(id.as_str()) {
                found.push(entry.path());
            }
        }
    }
    assert_eq!(found.len(), 1, "the files of task {id}: {found:?}");
    std::fs::read(&found[0]).unwrap()
}
