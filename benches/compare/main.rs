//! `taskstore` against the peers a user would pick instead, side by side in
//! one run, and against the physical floor. Prints a table of ratios at the
//! end (also written to `target/compare-table.md`).
//!
//! ```text
//! cargo bench --features compare --bench compare
//! cargo bench --features compare --bench compare -- 'breaker_closed|event_push'
//! ```
//!
//! A filter (criterion's regex, or `--exact`) also skips the setup of the
//! workloads it leaves out (the history of `list_active` takes minutes).
//!
//! Peers named `taskstore-…` are other configurations of `taskstore` (for
//! example `taskstore-processes`, `taskstore-time-window`): in the table each
//! gets its own rows against the other peers, marked with its name.

mod floor;
#[path = "../common/mutex_ring.rs"]
mod mutex_ring;
mod peers;
mod resilience;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode};
use serde_json::json;
use taskstore::{Durability, TaskId};

use floor::Floor;
use peers::{Peer, Redb, Sqlite, Taskstore, check};

const CHILD: &str = "TASKSTORE_COMPARE_CHILD";

/// Per-op times (ns) of every sample, by workload then peer.
static RESULTS: Mutex<BTreeMap<String, BTreeMap<&'static str, Vec<f64>>>> =
    Mutex::new(BTreeMap::new());

fn record(workload: &str, peer: &'static str, elapsed: Duration, ops: u64) {
    let per_op = elapsed.as_nanos() as f64 / ops.max(1) as f64;
    RESULTS
        .lock()
        .unwrap()
        .entry(workload.to_owned())
        .or_default()
        .entry(peer)
        .or_default()
        .push(per_op);
}

fn result_payload() -> serde_json::Value {
    json!({"content": [{"type": "text", "text": "x".repeat(512)}], "isError": false})
}

fn peers(dir: &Path, durability: Durability) -> Vec<Arc<dyn Peer>> {
    let make = |sub: &str| {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let peers: Vec<Arc<dyn Peer>> = vec![
        Arc::new(Taskstore::open(&make("taskstore"), durability)),
        Arc::new(Sqlite::open(&make("sqlite"), durability)),
        Arc::new(Redb::open(&make("redb"), durability)),
    ];
    for p in &peers {
        check(p.as_ref());
    }
    peers
}

/// Runs `per_writer(writer, ops)` on `writers` threads at once and returns
/// the wall time.
fn threads(writers: usize, ops: u64, per_writer: &(dyn Fn(usize, u64) + Sync)) -> Duration {
    let barrier = Barrier::new(writers + 1);
    std::thread::scope(|s| {
        for w in 0..writers {
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                per_writer(w, ops);
            });
        }
        barrier.wait();
        let start = Instant::now();
        // The scope joins every writer before returning.
        start
    })
    .elapsed()
}

#[derive(Clone, Copy)]
enum WriteOp {
    Create,
    Update,
    Complete,
}

impl WriteOp {
    fn name(self) -> &'static str {
        match self {
            WriteOp::Create => "create",
            WriteOp::Update => "update",
            WriteOp::Complete => "complete",
        }
    }
}

/// What one writer does: `ops` operations of `op` on `peer`. Tasks it needs
/// (to update or complete) are made untimed by `prepare`.
fn prepare(peer: &dyn Peer, op: WriteOp, ops: u64) -> Vec<TaskId> {
    match op {
        WriteOp::Create => Vec::new(),
        WriteOp::Update => vec![peer.create(None)],
        WriteOp::Complete => (0..ops).map(|_| peer.create(None)).collect(),
    }
}

fn run_op(peer: &dyn Peer, op: WriteOp, ops: u64, tasks: &[TaskId]) -> Vec<TaskId> {
    let mut made = Vec::new();
    for i in 0..ops {
        match op {
            WriteOp::Create => made.push(peer.create(None)),
            WriteOp::Update => {
                peer.update(&tasks[0], "progress", i);
            }
            WriteOp::Complete => assert!(peer.complete(&tasks[i as usize], result_payload())),
        }
    }
    made
}

fn writes(c: &mut Criterion) {
    for (dname, durability) in [
        ("immediate", Durability::Immediate),
        ("eventual", Durability::Eventual),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let peers = peers(dir.path(), durability);
        let floor = Floor::new(
            &dir.path().join("floor"),
            durability == Durability::Immediate,
        );
        let floor_bytes = floor_bytes();
        for op in [WriteOp::Create, WriteOp::Update, WriteOp::Complete] {
            for writers in [1usize, 2, 4] {
                let workload = format!("{}/{dname}/{writers}w", op.name());
                let mut group = c.benchmark_group(&workload);
                group.sampling_mode(SamplingMode::Flat).sample_size(10);
                for peer in &peers {
                    let name = peer.name();
                    group.bench_function(name, |b| {
                        b.iter_custom(|iters| {
                            let per = iters.div_ceil(writers as u64);
                            let tasks: Vec<Vec<TaskId>> = (0..writers)
                                .map(|_| prepare(peer.as_ref(), op, per))
                                .collect();
                            let made = Mutex::new(Vec::new());
                            let elapsed = threads(writers, per, &|w, n| {
                                let m = run_op(peer.as_ref(), op, n, &tasks[w]);
                                made.lock().unwrap().extend(m);
                            });
                            // Untimed: finish what was created, so active sets stay small
                            // and every peer grows the same history.
                            for id in made.into_inner().unwrap() {
                                peer.complete(&id, json!(null));
                            }
                            if let WriteOp::Update = op {
                                for t in &tasks {
                                    peer.complete(&t[0], json!(null));
                                }
                            }
                            record(&workload, name, elapsed, per * writers as u64);
                            elapsed.mul_f64(iters as f64 / (per * writers as u64) as f64)
                        })
                    });
                }
                if writers > 1 {
                    let root = dir.path().join("taskstore");
                    group.bench_function("taskstore-processes", |b| {
                        b.iter_custom(|iters| {
                            let per = iters.div_ceil(writers as u64);
                            let elapsed = processes(&root, dname, op, writers, per);
                            record(
                                &workload,
                                "taskstore-processes",
                                elapsed,
                                per * writers as u64,
                            );
                            elapsed.mul_f64(iters as f64 / (per * writers as u64) as f64)
                        })
                    });
                }
                let bytes = match op {
                    WriteOp::Complete => &floor_bytes.1,
                    _ => &floor_bytes.0,
                };

                group.bench_function("floor", |b| {
                    b.iter_custom(|iters| {
                        let per = iters.div_ceil(writers as u64);
                        let elapsed = threads(writers, per, &|w, n| {
                            for i in 0..n {
                                let name = match op {
                                    WriteOp::Update => format!("w{w}.json"),
                                    _ => format!("w{w}-{i}-{}.json", TaskId::new()),
                                };
                                floor.write(&name, bytes);
                            }
                        });
                        record(&workload, "floor", elapsed, per * writers as u64);
                        elapsed.mul_f64(iters as f64 / (per * writers as u64) as f64)
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
            let tasks = prepare(ts.as_ref(), op, iters);
            let (mut ours, mut theirs) = (Duration::ZERO, Duration::ZERO);
            let mut made = Vec::new();
            for i in 0..iters {
                // The task this operation needs: none to create, the one
                // task to update, the i-th to complete.
                let task = match op {
                    WriteOp::Create => &tasks[..],
                    WriteOp::Update => &tasks[..1],
                    WriteOp::Complete => &tasks[i as usize..],
                };
                let ts_op = || {
                    let start = Instant::now();
                    let m = run_op(ts.as_ref(), op, 1, task);
                    (start.elapsed(), m)
                };
                let floor_op = || {
                    let name = match op {
                        WriteOp::Update => "paired.json".to_owned(),
                        _ => format!("p-{i}-{}.json", TaskId::new()),
                    };
                    let start = Instant::now();
                    floor.write(&name, bytes);
                    start.elapsed()
                };
                let ((t, m), f) = if i % 2 == 0 {
                    let a = ts_op();
                    (a, floor_op())
                } else {
                    let f = floor_op();
                    (ts_op(), f)
                };
                ours += t;
                theirs += f;
                made.extend(m);
            }
            for id in made.iter().chain(match op {
                WriteOp::Update => &tasks[..],
                _ => &[],
            }) {
                ts.complete(id, json!(null));
            }
            record(&workload, "taskstore", ours, iters);
            record(&workload, "floor", theirs, iters);
            ours + theirs
        })
    });
    group.finish();
}

/// The bytes `taskstore` writes for a new task, and for a completed one.
fn floor_bytes() -> (Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Taskstore::open(dir.path(), Durability::Eventual);
    let id = store.create(None);
    let created = std::fs::read(dir.path().join("active").join(format!("{id}.json"))).unwrap();
    store.complete(&id, result_payload());
    let completed = std::fs::read(dir.path().join("done").join(format!("{id}.json"))).unwrap();
    (created, completed)
}

/// `writers` processes, each doing `per` operations on the store at `root`;
/// returns the wall time from their common start to the last one's end
/// (process start-up is excluded: each child waits for a start file).
fn processes(root: &Path, durability: &str, op: WriteOp, writers: usize, per: u64) -> Duration {
    let go = root.with_extension(format!("go-{}", TaskId::new()));
    let mut children: Vec<_> = (0..writers)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .env(
                    CHILD,
                    format!(
                        "{}|{durability}|{per}|{}|{}",
                        op.name(),
                        root.display(),
                        go.display()
                    ),
                )
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Each child prints "ready" once its tasks are prepared.
    for child in &mut children {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
    }
    let start = Instant::now();
    std::fs::write(&go, b"").unwrap();
    for child in &mut children {
        assert!(child.wait().unwrap().success());
    }
    let elapsed = start.elapsed();
    std::fs::remove_file(&go).unwrap();
    elapsed
}

fn child(spec: &str) {
    let parts: Vec<&str> = spec.split('|').collect();
    let op = match parts[0] {
        "create" => WriteOp::Create,
        "update" => WriteOp::Update,
        _ => WriteOp::Complete,
    };
    let durability = if parts[1] == "immediate" {
        Durability::Immediate
    } else {
        Durability::Eventual
    };
    let per: u64 = parts[2].parse().unwrap();
    let store = Taskstore::open(Path::new(parts[3]), durability);
    let go = Path::new(parts[4]);
    let tasks = prepare(&store, op, per);
    println!("ready");
    while !go.exists() {
        std::thread::sleep(Duration::from_micros(200));
    }
    let made = run_op(&store, op, per, &tasks);
    for id in made {
        store.complete(&id, json!(null));
    }
}

fn reads(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let peers = peers(dir.path(), Durability::Immediate);
    for readers in [1usize, 2] {
        let workload = format!("get/{readers}r");
        let mut group = c.benchmark_group(&workload);
        for peer in &peers {
            let ids: Vec<TaskId> = (0..readers)
                .map(|_| {
                    let id = peer.create(None);
                    peer.update(&id, "progress", 1);
                    id
                })
                .collect();
            let name = peer.name();
            group.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    let per = iters.div_ceil(readers as u64);
                    let elapsed = threads(readers, per, &|w, n| {
                        for _ in 0..n {
                            std::hint::black_box(peer.get(&ids[w]).unwrap());
                        }
                    });
                    record(&workload, name, elapsed, per * readers as u64);
                    elapsed.mul_f64(iters as f64 / (per * readers as u64) as f64)
                })
            });
        }
        group.finish();
    }
}

/// "List active" (10 running tasks) with 0, 20,000 and 200,000 finished ones;
/// and, with no history, right after a write to one of them (taskstore's
/// snapshot of `active/` is then not current as a whole, and the changed
/// file is read again).
fn list_active(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let ts_root = dir.path().join("ts");
    std::fs::create_dir_all(&ts_root).unwrap();
    let ts = Taskstore::open(&ts_root, Durability::Eventual);
    let sqlite_dir = dir.path().join("sqlite");
    std::fs::create_dir_all(&sqlite_dir).unwrap();
    let sqlite = Sqlite::open(&sqlite_dir, Durability::Eventual);
    let redb_dir = dir.path().join("redb");
    std::fs::create_dir_all(&redb_dir).unwrap();
    let redb = Redb::open(&redb_dir, Durability::Eventual);
    let all: [&dyn Peer; 3] = [&ts, &sqlite, &redb];
    let running: Vec<Vec<TaskId>> = all
        .iter()
        .map(|p| (0..10).map(|_| p.create(None)).collect())
        .collect();
    // taskstore's history: real finished task files hard-linked under fresh
    // ids (creating 200,000 inodes takes minutes here; see BENCHMARKS.md).
    let sample = || {
        let id = ts.create(None);
        ts.complete(&id, result_payload());
        ts_root.join("done").join(format!("{id}.json"))
    };
    let mut link_to = sample();
    let mut finished = 1;
    for target in [0usize, 20_000, 200_000] {
        while finished < target {
            if finished % 50_000 == 0 {
                link_to = sample();
            } else {
                let name = format!("{}.json", TaskId::new());
                std::fs::hard_link(&link_to, ts_root.join("done").join(name)).unwrap();
            }
            finished += 1;
        }
        let workload = format!("list_active/{target}");
        let mut group = c.benchmark_group(&workload);
        for p in all {
            let name = p.name();
            group.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        assert_eq!(p.list_active().len(), 10);
                    }
                    let elapsed = start.elapsed();
                    record(&workload, name, elapsed, iters);
                    elapsed
                })
            });
        }
        group.finish();
        if target == 0 {
            let workload = "list_active_after_write/0";
            let mut group = c.benchmark_group(workload);
            for (p, ids) in all.iter().zip(&running) {
                let name = p.name();
                group.bench_function(name, |b| {
                    b.iter_custom(|iters| {
                        let mut elapsed = Duration::ZERO;
                        for i in 0..iters {
                            // Untimed: one of the ten running tasks changes
                            // (the same one; the other nine stand still).
                            p.update(&ids[0], "progress", i);
                            let start = Instant::now();
                            assert_eq!(p.list_active().len(), 10);
                            elapsed += start.elapsed();
                        }
                        record(workload, name, elapsed, iters);
                        elapsed
                    })
                });
            }
            group.finish();
        }
        // The peers' history for the next step, in one transaction each.
        let next = match target {
            0 => 20_000,
            20_000 => 180_000,
            _ => 0,
        };
        sqlite.insert_finished(next);
        redb.insert_finished(next);
    }
}

/// Deleting 10,000 expired tasks.
fn sweep(c: &mut Criterion) {
    const N: usize = 10_000;
    let workload = "sweep_10000";
    let mut group = c.benchmark_group(workload);
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    let dir = tempfile::tempdir().unwrap();
    let peers = peers(dir.path(), Durability::Immediate);
    let setup_dir = dir.path().join("taskstore");
    for peer in &peers {
        let name = peer.name();
        // Filling a store is not what is measured: taskstore's fixture is
        // written through an `Eventual` handle on the same directory.
        let filler: Arc<dyn Peer> = if name == "taskstore" {
            Arc::new(Taskstore::open(&setup_dir, Durability::Eventual))
        } else {
            peer.clone()
        };
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    for _ in 0..N {
                        filler.create(Some(Duration::from_millis(1)));
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
    group.finish();
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn human(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// Whether `peer` is `taskstore` or another configuration of it.
fn is_ours(peer: &str) -> bool {
    peer == "taskstore" || peer.starts_with("taskstore-")
}

/// One row per (configuration of ours, other peer): `taskstore` first, then
/// each `taskstore-…` variant, whose rows name it beside the workload.
fn print_table() {
    let results = RESULTS.lock().unwrap();
    if results.is_empty() {
        return;
    }
    let mut out = String::new();
    out.push_str("| workload | taskstore | against | its time | taskstore / it |\n");
    out.push_str("|---|---|---|---|---|\n");
    for (workload, peers) in results.iter() {
        if !peers.contains_key("taskstore") {
            continue;
        }
        let mut ours: Vec<(&str, f64)> = peers
            .iter()
            .filter(|(p, _)| is_ours(p))
            .map(|(p, v)| (*p, median(v)))
            .collect();
        // `taskstore` first, then its variants by name.
        ours.sort_by_key(|(p, _)| *p != "taskstore");
        let others: Vec<(&str, f64)> = peers
            .iter()
            .filter(|(p, _)| !is_ours(p))
            .map(|(p, v)| (*p, median(v)))
            .collect();
        for (name, time) in &ours {
            let label = if *name == "taskstore" {
                workload.clone()
            } else {
                format!("{workload} [{name}]")
            };
            for (i, (peer, theirs)) in others.iter().enumerate() {
                let first = if i == 0 {
                    (label.as_str(), human(*time))
                } else {
                    ("", String::new())
                };
                out.push_str(&format!(
                    "| {} | {} | {peer} | {} | {:.2} |\n",
                    first.0,
                    first.1,
                    human(*theirs),
                    time / theirs
                ));
            }
        }
    }
    println!("\n{out}");
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let _ = std::fs::write(Path::new(&target).join("compare-table.md"), &out);
}

/// Every peer name the workloads record, for matching the filter against
/// whole benchmark ids (`workload/peer`).
const PEER_NAMES: &[&str] = &[
    "taskstore",
    "taskstore-processes",
    "taskstore-time-window",
    "sqlite",
    "redb",
    "floor",
    "taskstore+floor",
    "failsafe",
    "recloser",
    "tower-resilience",
    "mutex-vecdeque",
];

/// Criterion's benchmark filter, read from the same arguments, so that a
/// filtered run skips the setup of the workloads it would not time.
enum Filter {
    All,
    Regex(regex::Regex),
    Exact(String),
    None,
}

impl Filter {
    fn from_args() -> Filter {
        // Criterion's options that take a value (see `configure_from_args`).
        const WITH_VALUE: &[&str] = &[
            "-c",
            "--color",
            "--colour",
            "-s",
            "--save-baseline",
            "-b",
            "--baseline",
            "--baseline-lenient",
            "--format",
            "--profile-time",
            "--load-baseline",
            "--sample-size",
            "--warm-up-time",
            "--measurement-time",
            "--nresamples",
            "--noise-threshold",
            "--confidence-level",
            "--significance-level",
            "--plotting-backend",
            "--output-format",
        ];
        let mut args = std::env::args().skip(1);
        let (mut pattern, mut exact, mut ignored) = (None, false, false);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--exact" => exact = true,
                "--ignored" => ignored = true,
                a if WITH_VALUE.contains(&a) => {
                    args.next();
                }
                a if a.starts_with('-') => {}
                _ if pattern.is_none() => pattern = Some(arg),
                _ => {}
            }
        }
        match (pattern, exact, ignored) {
            (_, _, true) => Filter::None,
            (None, _, _) => Filter::All,
            (Some(p), true, _) => Filter::Exact(p),
            // An invalid regex: let criterion report it.
            (Some(p), false, _) => regex::Regex::new(&p).map_or(Filter::All, Filter::Regex),
        }
    }

    /// Whether any benchmark of these workloads is to run.
    fn wants(&self, workloads: &[impl AsRef<str>]) -> bool {
        workloads.iter().any(|w| {
            PEER_NAMES.iter().any(|p| {
                let id = format!("{}/{p}", w.as_ref());
                match self {
                    Filter::All => true,
                    Filter::Regex(r) => r.is_match(&id),
                    Filter::Exact(e) => *e == id,
                    Filter::None => false,
                }
            })
        })
    }
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD) {
        child(&spec);
        return;
    }
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let filter = Filter::from_args();
    let writes_workloads = [WriteOp::Create, WriteOp::Update, WriteOp::Complete]
        .into_iter()
        .flat_map(|op| {
            ["immediate", "eventual"].into_iter().flat_map(move |d| {
                ["1w", "2w", "4w", "1w-paired"].map(move |w| format!("{}/{d}/{w}", op.name()))
            })
        })
        .collect::<Vec<_>>();
    if filter.wants(&writes_workloads) {
        writes(&mut c);
    }
    if filter.wants(&["get/1r", "get/2r"]) {
        reads(&mut c);
    }
    if filter.wants(&[
        "list_active/0",
        "list_active/20000",
        "list_active/200000",
        "list_active_after_write/0",
    ]) {
        list_active(&mut c);
    }
    if filter.wants(&["sweep_10000"]) {
        sweep(&mut c);
    }
    if filter.wants(&[
        "breaker_closed/1t",
        "breaker_closed/2t",
        "breaker_open_rejection",
    ]) {
        resilience::breakers(&mut c);
    }
    if filter.wants(&[
        "event_push/1t",
        "event_push/2t",
        "event_push_u64/1t",
        "event_push_u64/2t",
        "event_snapshot_1000",
    ]) {
        resilience::event_log(&mut c);
    }
    c.final_summary();
    print_table();
}
