//! The sweep row: deleting 10,000 expired tasks (and nothing else), against
//! SQLite's `DELETE ... WHERE expires_at <= ?` on its expiry index, redb's
//! range removal from its expiry table, the floor (the file system deleting
//! 10,000 files of a task's size) and the bounds (what any sweep storing one
//! file per task must do when it meets the tasks at the sweep, and when
//! their files are on disk, with an expiry index for finished ones). The
//! goal's row runs a second time with all of them taking turns
//! (`sweep_10000_in_turns`); the rows of finished tasks and of tasks
//! written back run in turns only.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
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
/// The goal's row (`sweep_10000`) with every store, the floor and the bound
/// taking turns sample by sample, and the warm row's `taskstore` with them.
pub const IN_TURNS: &str = "sweep_10000_in_turns";

/// The sweep rows' workloads.
pub fn workloads() -> [&'static str; 5] {
    [WORKLOAD, WARM, FINISHED, WRITTEN_BACK, IN_TURNS]
}

/// What a sweep row's tasks are, as the rows that take turns make them.
#[derive(Clone, Copy)]
struct Row {
    workload: &'static str,
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
/// durable handle. The goal's row (`sweep_10000`) and the warm row (its
/// sweeping handle knows the tasks: see `sweep_by`) run each store as a
/// group of its own, and the goal's row runs again with every store, the
/// floor and the bound taking turns (`sweep_10000_in_turns`); the rows of
/// finished tasks and of tasks written back take turns only.
pub fn sweep(c: &mut Criterion) {
    sweep_by(c, WORKLOAD, false);
    sweep_by(c, WARM, true);
    let row = |workload, finished, written_back| Row {
        workload,
        finished,
        written_back,
    };
    in_turns(c, row(FINISHED, true, false));
    in_turns(c, row(WRITTEN_BACK, false, true));
    in_turns(c, row(IN_TURNS, false, false));
}

/// A row with every store and its bound taking turns: each sample fills
/// all of them with 10,000 expired tasks (the bound with as many files of a
/// task's bytes; untimed, as in `sweep_by`), writes every one's files back
/// if the row asks (one `sync` for all), then times each one's sweep, one
/// after the other, in the order they were filled; which goes first moves
/// on by one each sample. Run as groups of their own, a minute or more
/// apart, this VM's speed drifts between them by more than the goal's
/// margin; here the drift weighs on all of them alike.
///
/// The goal's row in turns (`sweep_10000_in_turns`) also has the floor and
/// `taskstore` with a sweeping handle that knows the tasks (the warm row's,
/// as `taskstore-warm`). The finished row's bound names each file in an
/// expiry index too, as this store does.
fn in_turns(c: &mut Criterion, row: Row) {
    const N: usize = 10_000;
    let workload = row.workload;
    let mut group = c.benchmark_group(workload);
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    let dir = tempfile::tempdir().unwrap();
    let bytes = task_bytes(row.finished);
    let mut parties: Vec<Party> = peers(dir.path(), Durability::Immediate)
        .into_iter()
        .map(Party::Peer)
        .collect();
    if workload == IN_TURNS {
        let warm = dir.path().join("taskstore-warm");
        std::fs::create_dir_all(&warm).unwrap();
        parties.push(Party::Warm(Arc::new(Taskstore::open(
            &warm,
            Durability::Immediate,
        ))));
        parties.push(Party::Floor(Floor::new(&dir.path().join("floor"), true)));
    }
    let index = row
        .finished
        .then(|| Index::new(&dir.path().join("bound-index")));
    parties.push(Party::Bound(
        Floor::new(&dir.path().join("bound"), true),
        index,
    ));
    // The party that goes first in the next sample (criterion runs one
    // sweep a sample here, so `iters` is 1 and cannot say).
    let mut first = 0;
    group.bench_function("in-turns", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let order: Vec<&Party> = (0..parties.len())
                    .map(|k| &parties[(first + k) % parties.len()])
                    .collect();
                first = (first + 1) % parties.len();
                let known: Vec<Vec<PathBuf>> = order
                    .iter()
                    .map(|party| party.fill(N, &bytes, row.finished))
                    .collect();
                if row.written_back || row.finished {
                    write_back();
                }
                std::thread::sleep(Duration::from_millis(2));
                for (party, known) in order.iter().zip(&known) {
                    let start = Instant::now();
                    assert_eq!(party.sweep(known), N);
                    let elapsed = start.elapsed();
                    record(workload, party.name(), elapsed, 1);
                    total += elapsed;
                }
            }
            total
        })
    });
    group.finish();
}

/// One of the parties a sweep row times (every one in [`in_turns`]; the
/// floor and the bound in `sweep_by` too).
enum Party {
    Peer(Arc<dyn Peer>),
    /// `taskstore` whose sweeping handle lists a page after each fill
    /// (untimed, `Peer::learn_tasks`: while the tasks are live by its
    /// clock), so that it knows the tasks before the sweep, as a server's
    /// long-lived handle would (`sweep_10000_warm`'s handle).
    Warm(Arc<dyn Peer>),
    /// Unlinking the files, their names known, on one thread, and one
    /// fsync of the directory (`Floor::remove_all`).
    Floor(Floor),
    /// Listing, reading, decoding and unlinking the files on the store's
    /// workers, and one fsync (`read_and_remove_all`); with an expiry
    /// index, through it (`Index::read_and_remove_all`).
    Bound(Floor, Option<Index>),
}

impl Party {
    fn name(&self) -> &'static str {
        match self {
            Party::Peer(peer) => peer.name(),
            Party::Warm(_) => "taskstore-warm",
            Party::Floor(_) => "floor",
            Party::Bound(..) => "bound",
        }
    }

    /// Fixture, untimed: `n` expired tasks (`finished` ones if asked), or
    /// files of `bytes`; the files' paths for the floor (its names known),
    /// none for the rest.
    fn fill(&self, n: usize, bytes: &[u8], finished: bool) -> Vec<PathBuf> {
        match self {
            // Long enough for the filler to complete each task before it
            // expires; made in the past, so expired.
            Party::Peer(peer) if finished => {
                peer.fill_finished(n, Duration::from_secs(1));
                Vec::new()
            }
            Party::Peer(peer) => {
                peer.fill(n, Some(Duration::from_millis(1)));
                Vec::new()
            }
            Party::Warm(peer) => {
                peer.fill(n, Some(Duration::from_millis(1)));
                peer.learn_tasks();
                Vec::new()
            }
            Party::Floor(floor) => {
                floor.fill(n, bytes);
                floor.files()
            }
            Party::Bound(bound, index) => {
                bound.fill(n, bytes);
                if let Some(index) = index {
                    index.link_all(&bound.files());
                }
                Vec::new()
            }
        }
    }

    /// The timed sweep (the floor's of `known`, what `fill` gave): how many
    /// tasks or files it removed.
    fn sweep(&self, known: &[PathBuf]) -> usize {
        match self {
            Party::Peer(peer) | Party::Warm(peer) => peer.sweep_expired(),
            Party::Floor(floor) => {
                floor.remove_all(known);
                known.len()
            }
            Party::Bound(bound, None) => read_and_remove_all(bound),
            Party::Bound(bound, Some(index)) => index.read_and_remove_all(bound),
        }
    }
}

/// The goal's row (`warm` false) or the warm row, each store's samples as
/// a group of its own; the goal's row also times the floor and the bound
/// that way.
fn sweep_by(c: &mut Criterion, workload: &'static str, warm: bool) {
    const N: usize = 10_000;
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
                    peer.fill(N, Some(Duration::from_millis(1)));
                    if warm {
                        peer.learn_tasks();
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
    // The floor (the file system deleting as many files of a task's size,
    // its names known) and the bound (a sweep that meets the files at the
    // sweep, one file per task, with nothing of the store's own), each
    // timed as in `in_turns`, but as a group of its own.
    let bytes = task_bytes(false);
    for party in [
        Party::Floor(Floor::new(&dir.path().join("floor"), true)),
        Party::Bound(Floor::new(&dir.path().join("bound"), true), None),
    ] {
        let name = party.name();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let known = party.fill(N, &bytes, false);
                    let start = Instant::now();
                    assert_eq!(party.sweep(&known), N);
                    let elapsed = start.elapsed();
                    record(WORKLOAD, name, elapsed, 1);
                    total += elapsed;
                }
                total
            })
        });
    }
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
    let removed = on_workers(&floor.files(), |path| {
        read_and_decode(path);
        std::fs::remove_file(path).unwrap();
    });
    floor.sync_dest();
    removed
}

/// Reads and decodes the task file at `path`: its status and revision are
/// what the `task.expired` event reports.
fn read_and_decode(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    let envelope: Envelope = serde_json::from_slice(&bytes).unwrap();
    std::hint::black_box((envelope.task.status, envelope.task.revision));
}

/// Runs `each` on every item of `items` on up to four threads (as the
/// store's parallel passes); returns how many it ran on.
fn on_workers<T: Sync>(items: &[T], each: impl Fn(&T) + Sync) -> usize {
    let workers = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .clamp(1, 4);
    let each = &each;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(items.len().div_ceil(workers).max(1))
            .map(|share| {
                scope.spawn(move || {
                    share.iter().for_each(each);
                    share.len()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    })
}

/// The finished rows' expiry index, for their bound: a second name (a hard
/// link) of each file, in a directory of its own, named by the file's name.
struct Index {
    dir: PathBuf,
    handle: File,
}

impl Index {
    fn new(dir: &Path) -> Index {
        std::fs::create_dir_all(dir).unwrap();
        Index {
            dir: dir.to_owned(),
            handle: File::open(dir).unwrap(),
        }
    }

    /// Fixture, untimed: names each of `files` in the index too.
    fn link_all(&self, files: &[PathBuf]) {
        for file in files {
            std::fs::hard_link(file, self.dir.join(file.file_name().unwrap())).unwrap();
        }
    }

    /// Lists the index; reads, decodes and unlinks each file through its
    /// name in `floor`'s destination; fsyncs that directory; then unlinks
    /// the index names (which frees the files) and fsyncs the index: what
    /// removing a file with two names durably costs at the least (the index
    /// entry of a file still named elsewhere is never left to point at
    /// nothing). Returns how many files it removed.
    fn read_and_remove_all(&self, floor: &Floor) -> usize {
        let entries: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        let removed = on_workers(&entries, |entry| {
            let file = floor.dest().join(entry.file_name().unwrap());
            read_and_decode(&file);
            std::fs::remove_file(&file).unwrap();
        });
        floor.sync_dest();
        on_workers(&entries, |entry| std::fs::remove_file(entry).unwrap());
        self.handle.sync_all().unwrap();
        removed
    }
}

/// The bytes of a task's file with a TTL, as the store writes it: a running
/// one, or one completed as the finished rows' tasks are.
fn task_bytes(finished: bool) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let store = Taskstore::open(dir.path(), Durability::Eventual);
    let id = store.create(Some(Duration::from_secs(60)));
    let area = if finished {
        assert!(store.complete(&id, serde_json::json!("done")));
        "done"
    } else {
        "active"
    };
    std::fs::read(dir.path().join(area).join(format!("{id}.json"))).unwrap()
}
