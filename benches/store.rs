//! Store operations under each durability, the O(active) claim (opening
//! the store and listing active tasks with 0, 20,000 and 200,000 finished
//! tasks in it), and directories that shrink: the same calls on a fresh
//! store, on one whose `active/` held 20,000 tasks that came and went, and
//! on that one once an exclusive open compacted it.
//!
//! `cargo bench --bench store`

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use serde_json::json;
use taskstore::{Durability, FileStore, ListQuery, NewTask, TaskId, TaskStore, TaskUpdate};

fn open(dir: &Path, durability: Durability) -> FileStore {
    FileStore::builder(dir)
        .durability(durability)
        .open()
        .unwrap()
}

fn result() -> serde_json::Value {
    json!({"content": [{"type": "text", "text": "x".repeat(512)}], "isError": false})
}

fn operations(c: &mut Criterion) {
    for (name, durability) in [
        ("immediate", Durability::Immediate),
        ("eventual", Durability::Eventual),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), durability);
        let mut group = c.benchmark_group(format!("ops/{name}"));

        // Timed creates; the tasks are deleted afterwards, untimed, so the
        // store does not grow across iterations.
        group.bench_function("create", |b| {
            b.iter_custom(|iters| {
                let mut ids = Vec::with_capacity(iters as usize);
                let start = Instant::now();
                for _ in 0..iters {
                    ids.push(
                        store
                            .create(NewTask::new().metadata("tool", "bench"))
                            .unwrap()
                            .id,
                    );
                }
                let elapsed = start.elapsed();
                delete_all(&store, &ids);
                elapsed
            })
        });

        let task = store.create(NewTask::new()).unwrap();
        group.bench_function("get", |b| {
            b.iter(|| black_box(store.get(&task.id).unwrap()))
        });
        let mut n = 0u64;
        group.bench_function("update", |b| {
            b.iter(|| {
                n += 1;
                store
                    .update(&task.id, TaskUpdate::new().metadata("progress", n))
                    .unwrap()
            })
        });

        group.bench_function("complete", |b| {
            b.iter_custom(|iters| {
                let ids: Vec<TaskId> = (0..iters)
                    .map(|_| store.create(NewTask::new()).unwrap().id)
                    .collect();
                let start = Instant::now();
                for id in &ids {
                    assert!(store.complete(id, result()).unwrap().is_applied());
                }
                let elapsed = start.elapsed();
                delete_all(&store, &ids);
                elapsed
            })
        });
        group.finish();
    }
}

fn delete_all(store: &FileStore, ids: &[TaskId]) {
    for id in ids {
        store.delete(id).unwrap();
    }
}

/// Opening plus "list active" must cost the same whatever the history.
///
/// History is a few real finished task files hard-linked under 200,000
/// fresh ids: creating 200,000 inodes takes minutes on small VMs, and neither
/// `open` nor "list active" reads a finished task's file (the test
/// `open_and_list_active_never_read_history` shows it), so what they can touch
/// (the size of `done/`) is exactly that of a real history.
fn open_and_list_active(c: &mut Criterion) {
    let mut group = c.benchmark_group("open_and_list_active");
    group.sample_size(20);
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Durability::Eventual);
    for _ in 0..10 {
        store
            .create(NewTask::new().metadata("tool", "running"))
            .unwrap();
    }
    let finished_task = || {
        let id = store.create(NewTask::new()).unwrap().id;
        assert!(store.complete(&id, result()).unwrap().is_applied());
        dir.path().join("done").join(format!("{id}.json"))
    };
    let mut sample = finished_task();
    let mut finished = 1;
    for target in [0usize, 20_000, 200_000] {
        while finished < target {
            // ext4 allows 65,000 links to one inode.
            if finished % 50_000 == 0 {
                sample = finished_task();
            } else {
                let name = format!("{}.json", TaskId::new());
                std::fs::hard_link(&sample, dir.path().join("done").join(name)).unwrap();
            }
            finished += 1;
        }
        group.bench_with_input(BenchmarkId::from_parameter(target), &target, |b, _| {
            b.iter(|| {
                let store = open(dir.path(), Durability::Immediate);
                let active = store.list(&ListQuery::active()).unwrap();
                assert_eq!(active.tasks.len(), 10);
                active
            })
        });
    }
    group.finish();
}

/// A store whose `active/` once held 20,000 tasks, all gone, against a
/// fresh one and against the same store compacted (by an exclusive open). Each row opens a handle and lists the 10 running tasks, or
/// creates a task (deleted after, untimed) through a handle opened once.
fn emptied_directories(c: &mut Criterion) {
    let mut group = c.benchmark_group("emptied");
    group.sample_size(20);
    // A store with 10 running tasks, after 20,000 came and went if
    // `grown`; with the handle that made it, still open.
    let make = |grown: bool| {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::builder(dir.path())
            .durability(Durability::Eventual)
            .max_active(100_000)
            .open()
            .unwrap();
        if grown {
            let ids: Vec<TaskId> = (0..20_000)
                .map(|_| store.create(NewTask::new()).unwrap().id)
                .collect();
            delete_all(&store, &ids);
        }
        for _ in 0..10 {
            store.create(NewTask::new()).unwrap();
        }
        (dir, store)
    };
    // Every store keeps one handle open for the whole group, so every open
    // timed below is a shared one (an exclusive open does more: it checks
    // whether to compact) and none compacts `emptied`.
    let (fresh, _keep_fresh) = make(false);
    let (emptied, _keep_emptied) = make(true);
    let (compacted, maker) = make(true);
    drop(maker);
    // The exclusive open that compacts (nothing else has the store open).
    let _keep_compacted = open(compacted.path(), Durability::Eventual);
    // Every keeper has listed, as the makers have: each store has one
    // handle watching its `active/` beside the one timed.
    _keep_compacted.list(&ListQuery::active()).unwrap();
    let size = |dir: &Path| std::fs::metadata(dir.join("active")).unwrap().len();
    eprintln!(
        "emptied: active/ is {} bytes fresh, {} emptied, {} compacted",
        size(fresh.path()),
        size(emptied.path()),
        size(compacted.path())
    );
    for (name, dir) in [
        ("fresh", &fresh),
        ("emptied", &emptied),
        ("compacted", &compacted),
    ] {
        group.bench_function(BenchmarkId::new("open_list", name), |b| {
            b.iter(|| {
                let store = open(dir.path(), Durability::Eventual);
                let active = store.list(&ListQuery::active()).unwrap();
                assert_eq!(active.tasks.len(), 10);
                active
            })
        });
    }
    for (name, dir) in [
        ("fresh", &fresh),
        ("emptied", &emptied),
        ("compacted", &compacted),
    ] {
        let store = open(dir.path(), Durability::Immediate);
        group.bench_function(BenchmarkId::new("create", name), |b| {
            b.iter_custom(|iters| {
                let mut ids = Vec::with_capacity(iters as usize);
                let start = Instant::now();
                for _ in 0..iters {
                    ids.push(store.create(NewTask::new()).unwrap().id);
                }
                let elapsed = start.elapsed();
                delete_all(&store, &ids);
                elapsed
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = operations, open_and_list_active, emptied_directories
}
criterion_main!(benches);
