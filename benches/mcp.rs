//! `tasks/get` latency: `rmcp`'s in-memory `TaskManager` against
//! `taskstore::mcp::DurableTaskManager` over a `MemoryStore` and over a
//! `FileStore`, all answering for one completed task, in one run (plus the
//! `FileStore` read alone, to split the cost).
//!
//! ```text
//! cargo bench --features mcp --bench mcp -- --warm-up-time 1 --measurement-time 3
//! ```

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::task_manager::{TaskManager, TaskOptions};
use taskstore::mcp::DurableTaskManager;
use taskstore::{FileStore, MemoryStore, TaskStore};
use tokio::runtime::Runtime;

fn result() -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text("a typical small tool result")])
}

/// A durable manager with one completed task; returns the task id.
fn durable_task<S: TaskStore + 'static>(rt: &Runtime, store: S) -> (DurableTaskManager<S>, String) {
    rt.block_on(async {
        let manager = DurableTaskManager::new(Arc::new(store));
        let task = manager
            .spawn(TaskOptions::new(), |_ctx| Box::pin(async { Ok(result()) }))
            .await
            .expect("spawn");
        while !manager
            .get_task(&task.task_id)
            .await
            .expect("get")
            .status()
            .is_terminal()
        {
            tokio::task::yield_now().await;
        }
        (manager, task.task_id)
    })
}

fn tasks_get(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("tasks_get");

    let in_memory = TaskManager::new();
    let rmcp_id = rt.block_on(async {
        let task = in_memory.spawn(TaskOptions::new(), |_ctx| Box::pin(async { Ok(result()) }));
        while !in_memory
            .get_task(&task.task_id)
            .expect("get")
            .status()
            .is_terminal()
        {
            tokio::task::yield_now().await;
        }
        task.task_id
    });
    group.bench_function("rmcp_task_manager", |b| {
        b.iter(|| black_box(in_memory.get_task(black_box(&rmcp_id)).expect("get")))
    });
    group.bench_function("rmcp_task_manager_block_on", |b| {
        b.iter(|| {
            rt.block_on(async { black_box(in_memory.get_task(black_box(&rmcp_id)).expect("get")) })
        })
    });

    let (memory, memory_id) = durable_task(&rt, MemoryStore::new());
    group.bench_function("durable_memory_store", |b| {
        b.iter(|| {
            rt.block_on(async {
                black_box(memory.get_task(black_box(&memory_id)).await.expect("get"))
            })
        })
    });

    let dir = tempfile::tempdir().expect("tempdir");
    let (file, file_id) = durable_task(&rt, FileStore::open(dir.path()).expect("open"));
    group.bench_function("durable_file_store", |b| {
        b.iter(|| {
            rt.block_on(async { black_box(file.get_task(black_box(&file_id)).await.expect("get")) })
        })
    });
    // The store read alone, without the manager and the blocking-pool hop.
    let file_task_id = taskstore::TaskId::parse(&file_id).expect("id");
    group.bench_function("file_store_get_only", |b| {
        b.iter(|| black_box(file.store().get(black_box(&file_task_id)).expect("get")))
    });
    group.finish();
    rt.block_on(async {
        memory.shutdown().await;
        file.shutdown().await;
    });
}

criterion_group!(benches, tasks_get);
criterion_main!(benches);
