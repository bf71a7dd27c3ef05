//! The sweep row: deleting 10,000 expired tasks (and nothing else), against
//! SQLite's `DELETE ... WHERE expires_at <= ?` on its expiry index, redb's
//! range removal from its expiry table, the floor (the file system deleting
//! 10,000 files of a task's size) and the bound (what any sweep storing one
//! file per task must do when it meets the tasks at the sweep).

use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode};
use taskstore::Durability;

use crate::floor::Floor;
use crate::peers::{Peer, Taskstore};
use crate::{peers, record};

/// The workload of [`sweep`].
pub const WORKLOAD: &str = "sweep_10000";
/// The same, by a sweeping handle that already knows the tasks.
pub const WARM: &str = "sweep_10000_warm";
/// The same, of finished tasks (each completed after it was made).
pub const FINISHED: &str = "sweep_10000_finished";
/// The same, with every store's files written back before the sweep.
pub const WRITTEN_BACK: &str = "sweep_10000_written_back";

/// The sweep rows' workloads.
pub fn workloads() -> [&'static str; 4] {
    [WORKLOAD, WARM, FINISHED, WRITTEN_BACK]
}

/// How a sweep row's tasks are made and met.
#[derive(Clone, Copy)]
struct Row {
    workload: &'static str,
    /// The sweeping handle lists a page after the fill (untimed), so that
    /// it knows the tasks before the sweep, as a long-lived server's handle
    /// would: the row times the deletions, not the learning of 10,000 new
    /// files (SQLite and redb run the same sweep).
    warm: bool,
    /// Each task is completed after it is made (untimed): the sweep deletes
    /// finished tasks (the file store's from `done/`, through its expiry
    /// index).
    finished: bool,
    /// Every dirty page of the machine is written back after the fill
    /// (`sync`, untimed), as it is when tasks expire minutes after they were
    /// written: a file the sweep unlinks then frees its disk blocks, where a
    /// file not yet written back (ext4's delayed allocation) has none.
    written_back: bool,
}

/// Deleting 10,000 expired tasks: each sample fills every store with them
/// (untimed; `taskstore` through a handle without fsync, SQLite and redb in
/// one transaction each), waits for them to expire, and times one sweep by a
/// durable handle. The rows vary what is swept and how it is met (see
/// [`Row`]).
pub fn sweep(c: &mut Criterion) {
    let row = |workload, warm, finished, written_back| Row {
        workload,
        warm,
        finished,
        written_back,
    };
    sweep_by(c, row(WORKLOAD, false, false, false));
    sweep_by(c, row(WARM, true, false, false));
    sweep_by(c, row(FINISHED, false, true, false));
    sweep_by(c, row(WRITTEN_BACK, false, false, true));
}

fn sweep_by(c: &mut Criterion, row: Row) {
    const N: usize = 10_000;
    let workload = row.workload;
    let mut group = c.benchmark_group(workload);
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    let dir = tempfile::tempdir().unwrap();
    let peers = peers(dir.path(), Durability::Immediate);
    for peer in &peers {
        let name = peer.name();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    if row.finished {
                        // Long enough for the filler to complete each task
                        // before it expires; made in the past, so expired.
                        peer.fill_finished(N, Duration::from_secs(1));
                    } else {
                        peer.fill(N, Some(Duration::from_millis(1)));
                    }
                    if row.warm {
                        peer.page(1, None);
                    }
                    if row.written_back {
                        write_back();
                    }
                    std::thread::sleep(Duration::from_millis(2));
                    let start = Instant::now();
                    assert_eq!(peer.sweep_expired(), N);
                    let elapsed = start.elapsed();
                    record(workload, name, elapsed, 1);
                    total += elapsed;
                }
                total
            })
        });
    }
    if workload != WORKLOAD {
        group.finish();
        return;
    }
    // The floor: the file system deleting as many files of a task's size
    // (its names known), with one fsync of the directory.
    let floor = Floor::new(&dir.path().join("floor"), true);
    let bytes = task_bytes();
    group.bench_function("floor", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                floor.fill(N, &bytes);
                let files = floor.files();
                let start = Instant::now();
                floor.remove_all(&files);
                let elapsed = start.elapsed();
                record(WORKLOAD, "floor", elapsed, 1);
                total += elapsed;
            }
            total
        })
    });
    // The bound: a sweep that meets the files at the sweep, one file per
    // task, with nothing of the store's own: list the directory, then on as
    // many threads as the store's passes use, read and decode each file
    // (its status and revision are what the `task.expired` event reports)
    // and unlink it; one fsync of the directory.
    let bound = Floor::new(&dir.path().join("bound"), true);
    group.bench_function("bound", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                bound.fill(N, &bytes);
                let start = Instant::now();
                assert_eq!(read_and_remove_all(&bound), N);
                let elapsed = start.elapsed();
                record(WORKLOAD, "bound", elapsed, 1);
                total += elapsed;
            }
            total
        })
    });
    group.finish();
}

/// Writes back every dirty page of the machine (`sync(2)`).
fn write_back() {
    // SAFETY: `sync` takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// A task file's envelope, for the bound's decoding.
#[derive(serde::Deserialize)]
struct Envelope {
    task: taskstore::Task,
}

/// Lists `floor`'s destination, reads, decodes and unlinks every file in
/// it on up to four threads (as the store's parallel passes), and fsyncs the
/// directory once; returns how many files it removed.
fn read_and_remove_all(floor: &Floor) -> usize {
    let files = floor.files();
    let workers = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .clamp(1, 4);
    let removed: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(files.len().div_ceil(workers).max(1))
            .map(|share| {
                scope.spawn(move || {
                    for path in share {
                        let bytes = std::fs::read(path).unwrap();
                        let envelope: Envelope = serde_json::from_slice(&bytes).unwrap();
                        std::hint::black_box((envelope.task.status, envelope.task.revision));
                        std::fs::remove_file(path).unwrap();
                    }
                    share.len()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    floor.sync_dest();
    removed
}

/// The bytes of a running task's file with a TTL, as the store writes it.
fn task_bytes() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let store = Taskstore::open(dir.path(), Durability::Eventual);
    let id = store.create(Some(Duration::from_secs(60)));
    std::fs::read(dir.path().join("active").join(format!("{id}.json"))).unwrap()
}
