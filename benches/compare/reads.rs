//! The read rows: `get` by 1 and 2 readers, and "list active" (10 running
//! tasks, the whole list) beside 0, 20,000 and 200,000 finished ones, on a
//! warm handle and right after a write.

use std::time::{Duration, Instant};

use criterion::Criterion;
use taskstore::{Durability, TaskId};

use crate::harness::{result_payload, threads};
use crate::peers::{Peer, Redb, Sqlite, Taskstore};
use crate::{Filter, peers, record};

pub fn reads(c: &mut Criterion) {
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

/// The numbers of finished tasks "list active" runs beside.
const HISTORY: [usize; 3] = [0, 20_000, 200_000];

/// The workloads run beside `finished` finished tasks.
pub fn history_workloads(finished: usize) -> Vec<String> {
    let mut names = vec![format!("list_active/{finished}")];
    if finished == 0 {
        names.push("list_active_after_write/0".to_owned());
    }
    names
}

/// "List active" (10 running tasks) with 0, 20,000 and 200,000 finished ones;
/// and, with no history, right after a write to one of them (taskstore's
/// snapshot of `active/` is then not current as a whole, and the changed
/// file is read again). The history is built only up to the largest
/// number of finished tasks the filter asks for.
pub fn list_active(c: &mut Criterion, filter: &Filter) {
    let Some(largest) = HISTORY
        .into_iter()
        .filter(|&n| filter.wants(&history_workloads(n)))
        .max()
    else {
        return;
    };
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
    for target in HISTORY.into_iter().filter(|&n| n <= largest) {
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
