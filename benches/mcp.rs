//! `tasks/get` latency: `rmcp`'s in-memory `TaskManager` against
//! `taskstore::mcp::DurableTaskManager` over a `MemoryStore` and over a
//! `FileStore`, with its store reads where each `Reads` puts them (`Auto`,
//! the default: on the calling worker when the store answers without
//! waiting, else on the blocking pool; `Blocking`: always on Tokio's
//! blocking pool; `Inline`: always on the calling worker), in one run; for
//! a running task (the case a polling client hits) and a completed one;
//! plus the `FileStore` read alone, to split the cost.
//!
//! Every `tasks/get` is one `block_on` from the bench thread, as a request
//! handler's future would be; `rmcp_task_manager_block_on` is the same
//! harness around `rmcp`'s synchronous call.
//!
//! ```text
//! cargo bench --features mcp --bench mcp -- --warm-up-time 1 --measurement-time 3
//! ```

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::task_manager::{TaskManager, TaskOptions};
use taskstore::mcp::{DurableTaskManager, ManagerOptions, Reads};
use taskstore::{FileStore, MemoryStore, TaskStore};
use tokio::runtime::Runtime;

fn result() -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text("a typical small tool result")])
}

/// Whether the bench's task is still running or has completed.
#[derive(Clone, Copy)]
enum State {
    Running,
    Completed,
}

/// A durable manager with one task in `state`; returns the task id.
fn durable_task<S: TaskStore + 'static>(
    rt: &Runtime,
    store: S,
    reads: Reads,
    state: State,
) -> (DurableTaskManager<S>, String) {
    rt.block_on(async {
        let manager = DurableTaskManager::with_options(
            Arc::new(store),
            ManagerOptions::new()
                .reads(reads)
                .shutdown_grace(std::time::Duration::ZERO),
        );
        let task = manager
            .spawn(TaskOptions::new(), move |_ctx| {
                Box::pin(async move {
                    if let State::Running = state {
                        std::future::pending::<()>().await;
                    }
                    Ok(result())
                })
            })
            .await
            .expect("spawn");
        if let State::Completed = state {
            while !manager
                .get_task(&task.task_id)
                .await
                .expect("get")
                .status()
                .is_terminal()
            {
                tokio::task::yield_now().await;
            }
        }
        (manager, task.task_id)
    })
}

fn rmcp_task(rt: &Runtime, manager: &TaskManager, state: State) -> String {
    rt.block_on(async {
        let task = manager.spawn(TaskOptions::new(), move |_ctx| {
            Box::pin(async move {
                if let State::Running = state {
                    std::future::pending::<()>().await;
                }
                Ok(result())
            })
        });
        if let State::Completed = state {
            while !manager
                .get_task(&task.task_id)
                .expect("get")
                .status()
                .is_terminal()
            {
                tokio::task::yield_now().await;
            }
        }
        task.task_id
    })
}

fn tasks_get(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut stopping = Vec::new();
    for (state, name) in [(State::Running, "running"), (State::Completed, "completed")] {
        let mut group = c.benchmark_group(format!("tasks_get_{name}"));

        let in_memory = TaskManager::new();
        let rmcp_id = rmcp_task(&rt, &in_memory, state);
        group.bench_function("rmcp_task_manager", |b| {
            b.iter(|| black_box(in_memory.get_task(black_box(&rmcp_id)).expect("get")))
        });
        group.bench_function("rmcp_task_manager_block_on", |b| {
            b.iter(|| {
                rt.block_on(async {
                    black_box(in_memory.get_task(black_box(&rmcp_id)).expect("get"))
                })
            })
        });

        for (reads, how) in [
            (Reads::Auto, "auto"),
            (Reads::Blocking, "blocking"),
            (Reads::Inline, "inline"),
        ] {
            let (memory, id) = durable_task(&rt, MemoryStore::new(), reads, state);
            group.bench_function(format!("durable_memory_store_{how}"), |b| {
                b.iter(|| {
                    rt.block_on(async {
                        black_box(memory.get_task(black_box(&id)).await.expect("get"))
                    })
                })
            });
            let store = FileStore::open(dir.path().join(format!("{name}-{how}"))).expect("open");
            let (file, id) = durable_task(&rt, store, reads, state);
            group.bench_function(format!("durable_file_store_{how}"), |b| {
                b.iter(|| {
                    rt.block_on(async {
                        black_box(file.get_task(black_box(&id)).await.expect("get"))
                    })
                })
            });
            if let Reads::Inline = reads {
                // The store read alone, without the manager: on the bench
                // thread, and from async code by the three ways to run a
                // blocking call (inline, `block_in_place`, `spawn_blocking`).
                let task_id = taskstore::TaskId::parse(&id).expect("id");
                let store = Arc::clone(file.store());
                group.bench_function("file_store_get_only", |b| {
                    b.iter(|| black_box(store.get(black_box(&task_id)).expect("get")))
                });
                // What `Reads::Auto` tries first: an answer without a wait,
                // or none (a finished task).
                group.bench_function("file_store_try_get_only", |b| {
                    b.iter(|| black_box(store.try_get(black_box(&task_id))))
                });
                group.bench_function("file_store_get_block_on_inline", |b| {
                    b.iter(|| rt.block_on(async { black_box(store.get(&task_id).expect("get")) }))
                });
                group.bench_function("file_store_get_block_in_place", |b| {
                    b.iter(|| {
                        rt.block_on(async {
                            // On a worker, as a request handler runs.
                            let (store, id) = (Arc::clone(&store), task_id.clone());
                            tokio::spawn(async move {
                                tokio::task::block_in_place(|| {
                                    black_box(store.get(&id).expect("get"))
                                })
                            })
                            .await
                            .expect("join")
                        })
                    })
                });
                group.bench_function("file_store_get_spawned_inline", |b| {
                    b.iter(|| {
                        rt.block_on(async {
                            let (store, id) = (Arc::clone(&store), task_id.clone());
                            tokio::spawn(async move { black_box(store.get(&id).expect("get")) })
                                .await
                                .expect("join")
                        })
                    })
                });
                group.bench_function("file_store_get_spawn_blocking", |b| {
                    b.iter(|| {
                        rt.block_on(async {
                            let (store, id) = (Arc::clone(&store), task_id.clone());
                            tokio::task::spawn_blocking(move || {
                                black_box(store.get(&id).expect("get"))
                            })
                            .await
                            .expect("join")
                        })
                    })
                });
            }
            stopping.push(memory.shutdown_boxed());
            stopping.push(file.shutdown_boxed());
        }
        group.finish();
    }
    rt.block_on(async {
        for stop in stopping {
            stop.await;
        }
    });
}

/// A manager's shutdown, boxed, so managers over different stores can be
/// shut down together.
trait ShutdownBoxed {
    fn shutdown_boxed(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;
}

impl<S: TaskStore + 'static> ShutdownBoxed for DurableTaskManager<S> {
    fn shutdown_boxed(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
        let manager = self.clone();
        Box::pin(async move {
            let _ = manager.shutdown().await;
        })
    }
}

criterion_group!(benches, tasks_get);
criterion_main!(benches);
