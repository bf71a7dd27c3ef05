//! The cancel-latency rows of `benches/pg.rs`: the time from a
//! `tasks/cancel` on one `DurableTaskManager` to the operation seeing it
//! on another, with the PostgreSQL change feed and with polling only.

use super::*;

/// A `PgStore` without its change feed: the manager polls.
struct Polling(PgStore);

impl TaskStore for Polling {
    fn create(&self, new: NewTask) -> taskstore::Result<Task> {
        self.0.create(new)
    }
    fn get(&self, id: &TaskId) -> taskstore::Result<Option<Task>> {
        self.0.get(id)
    }
    fn update(&self, id: &TaskId, update: TaskUpdate) -> taskstore::Result<Transition> {
        self.0.update(id, update)
    }
    fn finish(&self, id: &TaskId, outcome: Outcome) -> taskstore::Result<Transition> {
        self.0.finish(id, outcome)
    }
    fn list(&self, query: &ListQuery) -> taskstore::Result<taskstore::Page> {
        self.0.list(query)
    }
    fn delete(&self, id: &TaskId) -> taskstore::Result<bool> {
        self.0.delete(id)
    }
    fn sweep(&self) -> taskstore::Result<taskstore::Swept> {
        self.0.sweep()
    }
    fn instance_id(&self) -> &str {
        self.0.instance_id()
    }
    fn renew_lease(&self, id: &TaskId) -> taskstore::Result<Transition> {
        self.0.renew_lease(id)
    }
    fn reap(&self) -> taskstore::Result<taskstore::Reaped> {
        self.0.reap()
    }
    fn finish_fenced(
        &self,
        id: &TaskId,
        outcome: Outcome,
        epoch: u64,
    ) -> taskstore::Result<Transition> {
        self.0.finish_fenced(id, outcome, epoch)
    }
    fn claim(&self, kinds: &[&str]) -> taskstore::Result<taskstore::Claimed> {
        self.0.claim(kinds)
    }
    fn release(&self, id: &TaskId, epoch: u64) -> taskstore::Result<Transition> {
        self.0.release(id, epoch)
    }
}

/// From `tasks/cancel` on manager B to the operation seeing it on manager A.
pub(crate) fn cancel_latency(cluster: &pg_cluster::Cluster) {
    let schema = pg_cluster::fresh_schema("cancel");
    let open = |instance: &str| {
        PgStore::builder(cluster.conninfo())
            .schema(&schema)
            .instance_id(instance)
            .open()
            .unwrap()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("\n| cancel on B, seen by the operation on A | median | p95 | max |");
    println!("|---|---|---|---|");
    let (fa, fb) = (Arc::new(open("feed-a")), Arc::new(open("feed-b")));
    let (pa, pb) = (
        Arc::new(Polling(open("poll-a"))),
        Arc::new(Polling(open("poll-b"))),
    );
    let watch = ManagerOptions::default().watch_interval;
    let feed = runtime.block_on(samples(fa, fb));
    let polling = runtime.block_on(samples(pa, pb));
    for (name, mut v) in [
        ("PostgreSQL NOTIFY (change feed)".to_owned(), feed),
        (format!("polling only (watch every {watch:?})"), polling),
    ] {
        v.sort();
        let p = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
        println!(
            "| {name} | {:?} | {:?} | {:?} |",
            p(0.5),
            p(0.95),
            v[v.len() - 1]
        );
    }
}

async fn samples<S: TaskStore + 'static>(a: Arc<S>, b: Arc<S>) -> Vec<Duration> {
    let a = DurableTaskManager::new(a);
    let b = DurableTaskManager::new(b);
    let mut out = Vec::new();
    for _ in 0..CANCEL_SAMPLES {
        let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
        let task = a
            .spawn(TaskOptions::new(), move |ctx| {
                Box::pin(async move {
                    ctx.cancelled().await;
                    let _ = seen_tx.send(Instant::now());
                    Err(TaskExit::Cancelled)
                })
            })
            .await
            .unwrap();
        // Let the watch loop's phase fall where it may.
        tokio::time::sleep(Duration::from_millis(37)).await;
        let sent = Instant::now();
        b.cancel_task(&task.task_id).await.unwrap();
        let seen = seen_rx.await.unwrap();
        out.push(seen - sent);
    }
    a.shutdown().await;
    b.shutdown().await;
    out
}
