//! `PgStore` against the floor — the same SQL statements issued directly
//! through `postgres`, no library around them — and against `FileStore`,
//! side by side in one run, at 1, 4 and 16 writers, as threads (`/4w`: one
//! handle, a connection each) and as processes (`/4p`: this binary re-run,
//! a handle and a connection each, timing only the operations); then the time
//! from a `tasks/cancel` on one `DurableTaskManager` to the operation
//! seeing it on another, with the PostgreSQL change feed and with polling
//! only; `PgStore`'s writes with change notices against without
//! (`change_notices(false)`), side by side; and renewal passes of 16 and
//! 256 running tasks (`renew_leases_of`) against the floor's one load and
//! one batch statement, the same batch without its locking step, and
//! `FileStore`; a sweep of 256 expired tasks and a reap of 256 orphans
//! against the floor's page of them and its one removal (or replacement)
//! batch.
//!
//! ```text
//! cargo bench --features compare,postgres,mcp --bench pg
//! ```
//!
//! Starts its own throwaway cluster, as the tests do
//! (`tests/common/pg.rs`), with the server's defaults: `fsync = on`,
//! `synchronous_commit = on` (printed with the results). `FileStore` runs
//! with `Durability::Immediate` (fsync of file and directory). Each figure
//! is the median over rounds of the mean time per operation; peers take
//! turns within each round.

#[path = "pg/cancel.rs"]
mod cancel;
#[path = "common/children.rs"]
mod children;
#[path = "pg/passes.rs"]
mod passes;
#[path = "../tests/common/pg.rs"]
mod pg_cluster;

use cancel::cancel_latency;
use passes::{Pass, pass_rows, renew_rows};

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use postgres::{Client, NoTls, Statement};
use serde_json::json;
use taskstore::mcp::{DurableTaskManager, ManagerOptions, TaskExit, TaskOptions};
use taskstore::{
    Clock, FileStore, ListQuery, ManualClock, NewTask, Outcome, PgStatements, PgStore, Task,
    TaskId, TaskStore, TaskUpdate, TimeSource, Transition, pg_statements,
};

const ROUNDS: usize = 9;
const WRITES_PER_ROUND: usize = 320;
const READS_PER_ROUND: usize = 2_000;
const LISTS_PER_ROUND: usize = 500;
const CANCEL_SAMPLES: usize = 20;
/// The sizes of the renewal passes of the `renew` rows (running tasks the
/// handle renews at once, as a manager's tick renews its runs).
const RENEW_BATCHES: [usize; 2] = [16, 256];
/// Renewals per round, in passes of one batch size.
const RENEWALS_PER_ROUND: usize = 2_048;
/// The tasks a timed sweep (or reap) of the `sweep` (`reap`) rows finds
/// expired (orphaned), made untimed before it.
const PASS_TASKS: usize = 256;
/// Rounds of the `sweep` and `reap` rows: one timed pass of each peer per
/// round.
const PASS_ROUNDS: usize = 15;
/// The page a sweep scans at a time (`SWEEP_BATCH` in
/// `src/rules/maintenance.rs`).
const SWEEP_PAGE: i64 = 1_024;

/// The environment variable that makes this binary a writer process.
const CHILD: &str = "TASKSTORE_PG_BENCH_CHILD";

fn main() {
    if let Ok(spec) = std::env::var(CHILD) {
        child(&spec);
        return;
    }
    let Some(cluster) = pg_cluster::shared() else {
        return;
    };
    let mut settings = cluster.client();
    let show = |c: &mut Client, name: &str| -> String {
        c.query_one(&format!("SHOW {name}"), &[]).unwrap().get(0)
    };
    println!(
        "server: fsync = {}, synchronous_commit = {}, {}",
        show(&mut settings, "fsync"),
        show(&mut settings, "synchronous_commit"),
        show(&mut settings, "server_version")
    );
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    let mut table = Vec::new();
    for writers in [1usize, 4, 16] {
        for op in [Op::Create, Op::Complete] {
            for (suffix, writing) in [("w", Writers::Threads), ("p", Writers::Processes)] {
                let name = format!("{}/{writers}{suffix}", op.name());
                if wanted(&name) {
                    table.push((name, write_rows(cluster, op, writers, writing)));
                }
            }
        }
    }
    if wanted("get") {
        table.push(("get/1w".to_owned(), read_rows(cluster, Read::Get)));
    }
    if wanted("list_active") {
        table.push((
            "list_active/1w".to_owned(),
            read_rows(cluster, Read::ListActive),
        ));
    }
    if !table.is_empty() {
        println!("\n| workload | direct SQL (floor) | PgStore | ratio | FileStore (Immediate) |");
        println!("|---|---|---|---|---|");
    }
    for (name, [floor, store, file]) in &table {
        println!(
            "| {name} | {} | {} | {:.2}x | {} |",
            show_time(*floor),
            show_time(*store),
            store / floor,
            show_time(*file)
        );
    }
    let renewals: Vec<usize> = RENEW_BATCHES
        .into_iter()
        .filter(|size| wanted(&format!("renew/{size}")))
        .collect();
    if !renewals.is_empty() {
        println!(
            "\n| workload | floor, batch waiting for held rows | direct SQL (floor) | PgStore | \
             PgStore / floor | floor / waiting | FileStore (Immediate) |"
        );
        println!("|---|---|---|---|---|---|---|");
    }
    for size in renewals {
        let [waiting, floor, store, file] = renew_rows(cluster, size);
        println!(
            "| renew/{size} | {} | {} | {} | {:.2}x | {:.2}x | {} |",
            show_time(waiting),
            show_time(floor),
            show_time(store),
            store / floor,
            floor / waiting,
            show_time(file)
        );
    }
    let passes: Vec<Pass> = [Pass::Sweep, Pass::Reap]
        .into_iter()
        .filter(|pass| wanted(&format!("{}/{PASS_TASKS}", pass.name())))
        .collect();
    if !passes.is_empty() {
        println!("\n| workload | direct SQL (floor) | PgStore | PgStore / floor |");
        println!("|---|---|---|---|");
    }
    for pass in passes {
        let [floor, store] = pass_rows(cluster, pass);
        println!(
            "| {}/{PASS_TASKS} | {} | {} | {:.2}x |",
            pass.name(),
            show_time(floor),
            show_time(store),
            store / floor
        );
    }
    if wanted("notices") {
        notice_table(cluster);
    }
    if wanted("cancel") {
        cancel_latency(cluster);
    }
}

/// `PgStore` with change notices (the default) against without
/// (`change_notices(false)`): a notifying transaction holds PostgreSQL's
/// commit-time `NOTIFY` lock until its commit is flushed. Updates change
/// no active-task count; completes also lower the counter row, on which
/// they serialize either way.
fn notice_table(cluster: &pg_cluster::Cluster) {
    println!("\n| workload (notices) | PgStore, notices | PgStore, none | ratio |");
    println!("|---|---|---|---|");
    for writers in [1usize, 4, 16] {
        for op in [Notice::Update, Notice::Complete] {
            let [on, off] = notice_rows(cluster, op, writers);
            println!(
                "| {}/{writers}w | {} | {} | {:.2}x |",
                op.name(),
                show_time(on),
                show_time(off),
                on / off
            );
        }
    }
}

#[derive(Clone, Copy)]
enum Notice {
    Update,
    Complete,
}

impl Notice {
    fn name(self) -> &'static str {
        match self {
            Notice::Update => "update",
            Notice::Complete => "complete",
        }
    }
}

/// Per-operation times (ns) of `op` on `writers` threads: with notices,
/// without. The two handles share one schema and take turns each round.
fn notice_rows(cluster: &pg_cluster::Cluster, op: Notice, writers: usize) -> [f64; 2] {
    let schema = pg_cluster::fresh_schema("bench");
    let store = |notices: bool| {
        PgStore::builder(cluster.conninfo())
            .schema(&schema)
            .pool_size(writers)
            .max_active(1_000_000)
            .change_notices(notices)
            .open()
            .unwrap()
    };
    let stores = [store(true), store(false)];
    let per = WRITES_PER_ROUND / writers;
    let ops = (per * writers) as f64;
    let mut times = [Vec::new(), Vec::new()];
    // Round 0 is a warm-up, not counted: the first row of a run paid the
    // server's and the connections' first use.
    for round in 0..=ROUNDS {
        for turn in 0..2 {
            // Which goes first moves on each round.
            let slot = (round + turn) % 2;
            let s = &stores[slot];
            let prepared: Vec<Vec<TaskId>> = (0..writers)
                .map(|_| {
                    (0..per)
                        .map(|_| s.create(NewTask::new()).unwrap().id)
                        .collect()
                })
                .collect();
            let elapsed = threads(writers, &|w| {
                for id in &prepared[w] {
                    let written = match op {
                        Notice::Update => s.update(id, TaskUpdate::new().status_message("working")),
                        Notice::Complete => s.complete(id, result_payload()),
                    };
                    assert!(written.unwrap().is_applied());
                }
            });
            if round > 0 {
                times[slot].push(elapsed.as_nanos() as f64 / ops);
            }
        }
    }
    times.map(median)
}

fn show_time(ns: f64) -> String {
    if ns >= 1_000_000.0 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.1} µs", ns / 1e3)
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[derive(Clone, Copy)]
enum Op {
    Create,
    Complete,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Complete => "complete",
        }
    }
}

/// One thread's connection and its prepared statements.
struct DirectConn {
    client: Client,
    insert: Statement,
    replace: Statement,
    load: Statement,
    list_active: Statement,
}

impl DirectConn {
    fn new(conninfo: &str, sql: &PgStatements) -> DirectConn {
        let mut client = Client::connect(conninfo, NoTls).unwrap();
        DirectConn {
            insert: client.prepare(&sql.insert).unwrap(),
            replace: client.prepare(&sql.replace).unwrap(),
            load: client.prepare(&sql.load).unwrap(),
            list_active: client.prepare(&sql.list_active).unwrap(),
            client,
        }
    }

    /// The row values of a new task, as `PgStore` stores them.
    fn create(&mut self, channel: &str, n: usize) -> Task {
        let task = new_task(n);
        let json = serde_json::to_string(&task).unwrap();
        let created = task.created_at.unix_timestamp_nanos() as i64;
        let row = self
            .client
            .query_one(
                &self.insert,
                &[
                    &task.id.as_str(),
                    &created,
                    &1i64,
                    &"working",
                    &true,
                    &None::<i64>,
                    &json,
                    &1_000_000i64,
                    &channel,
                ],
            )
            .unwrap();
        assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (1, 1));
        task
    }

    fn complete(&mut self, channel: &str, task: &Task) {
        let mut next = task.clone();
        Outcome::Completed(result_payload()).apply_for_bench(&mut next);
        let json = serde_json::to_string(&next).unwrap();
        let created = task.created_at.unix_timestamp_nanos() as i64;
        let row = self
            .client
            .query_one(
                &self.replace,
                &[
                    &task.id.as_str(),
                    &created,
                    &(task.revision as i64),
                    &created,
                    &(next.revision as i64),
                    &"completed",
                    &false,
                    &None::<i64>,
                    &json,
                    &-1i64,
                    &channel,
                ],
            )
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), 1);
    }
}

fn result_payload() -> serde_json::Value {
    json!({"content": [{"type": "text", "text": "x".repeat(512)}], "isError": false})
}

fn new_task(n: usize) -> Task {
    let id = TaskId::parse(&format!("d-{}-{n}", uuid_like())).unwrap();
    let now = time::OffsetDateTime::now_utc();
    serde_json::from_value(json!({
        "taskId": id, "status": "working", "createdAt": rfc3339(now), "lastUpdatedAt": rfc3339(now),
        "ttlMs": null, "revision": 1, "owner": "direct", "leaseExpiresAt": rfc3339(now + Duration::from_secs(30)),
    }))
    .unwrap()
}

fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// What `complete` does to a task, for the floor (the store's rules do it
/// for `PgStore`).
trait ApplyForBench {
    fn apply_for_bench(self, task: &mut Task);
}

impl ApplyForBench for Outcome {
    fn apply_for_bench(self, task: &mut Task) {
        if let Outcome::Completed(result) = self {
            task.status = taskstore::TaskStatus::Completed;
            task.result = Some(result);
        }
        task.revision += 1;
        task.last_updated_at = time::OffsetDateTime::now_utc();
        task.lease_expires_at = None;
    }
}

/// Runs `work(writer)` on `writers` threads at once; the wall time.
fn threads(writers: usize, work: &(dyn Fn(usize) + Sync)) -> Duration {
    let barrier = Barrier::new(writers + 1);
    std::thread::scope(|s| {
        for w in 0..writers {
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                work(w);
            });
        }
        barrier.wait();
        Instant::now()
    })
    .elapsed()
}

/// How the writers of a row run.
#[derive(Clone, Copy, PartialEq)]
enum Writers {
    Threads,
    Processes,
}

/// Per-operation times (ns): floor, PgStore, FileStore.
// One loop counts operations for both kinds; only `complete` indexes.
#[allow(clippy::needless_range_loop)]
fn write_rows(cluster: &pg_cluster::Cluster, op: Op, writers: usize, how: Writers) -> [f64; 3] {
    if how == Writers::Processes {
        return process_rows(cluster, op, writers);
    }
    let schema = pg_cluster::fresh_schema("bench");
    let store = PgStore::builder(cluster.conninfo())
        .schema(&schema)
        .pool_size(writers)
        .max_active(1_000_000)
        .open()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = FileStore::builder(dir.path())
        .max_active(1_000_000)
        .open()
        .unwrap();
    let sql = pg_statements(&schema);
    let direct: Vec<std::sync::Mutex<DirectConn>> = (0..writers)
        .map(|_| std::sync::Mutex::new(DirectConn::new(&cluster.conninfo(), &sql)))
        .collect();
    let per = WRITES_PER_ROUND / writers;
    let ops = (per * writers) as f64;
    let mut times = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        // The floor.
        let prepared: Vec<Vec<Task>> = match op {
            Op::Create => vec![Vec::new(); writers],
            Op::Complete => (0..writers)
                .map(|w| {
                    let mut c = direct[w].lock().unwrap();
                    (0..per).map(|n| c.create(&sql.channel, n)).collect()
                })
                .collect(),
        };
        let elapsed = threads(writers, &|w| {
            let mut c = direct[w].lock().unwrap();
            for n in 0..per {
                match op {
                    Op::Create => drop(c.create(&sql.channel, n)),
                    Op::Complete => c.complete(&sql.channel, &prepared[w][n]),
                }
            }
        });
        times[0].push(elapsed.as_nanos() as f64 / ops);
        // The stores.
        for (slot, s) in [(1, &store as &dyn TaskStore), (2, &file as &dyn TaskStore)] {
            let prepared: Vec<Vec<TaskId>> = match op {
                Op::Create => vec![Vec::new(); writers],
                Op::Complete => (0..writers)
                    .map(|_| {
                        (0..per)
                            .map(|_| s.create(NewTask::new()).unwrap().id)
                            .collect()
                    })
                    .collect(),
            };
            let elapsed = threads(writers, &|w| {
                for n in 0..per {
                    match op {
                        Op::Create => drop(s.create(NewTask::new()).unwrap()),
                        Op::Complete => {
                            let t = s.complete(&prepared[w][n], result_payload()).unwrap();
                            assert!(matches!(t, Transition::Applied(_)));
                        }
                    }
                }
            });
            times[slot].push(elapsed.as_nanos() as f64 / ops);
        }
    }
    times.map(median)
}

/// Per-operation times (ns) with `writers` processes: floor, PgStore,
/// FileStore. Each process opens its own handle (or connection), prepares
/// its tasks, says "ready", and on "go" runs its share, timing only that;
/// the figure is the slowest process's time over all operations.
fn process_rows(cluster: &pg_cluster::Cluster, op: Op, writers: usize) -> [f64; 3] {
    let schema = pg_cluster::fresh_schema("bench");
    // The schema, made once before the children race to open it.
    drop(
        PgStore::builder(cluster.conninfo())
            .schema(&schema)
            .open()
            .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let per = WRITES_PER_ROUND / writers;
    let ops = (per * writers) as f64;
    let mut times = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        for (slot, kind, place) in [
            (0, "floor", schema.clone()),
            (1, "pg", schema.clone()),
            (2, "file", dir.path().display().to_string()),
        ] {
            let spec = format!("{kind}|{}|{per}|{}|{place}", op.name(), cluster.conninfo());
            times[slot].push(run_children(&spec, writers).as_nanos() as f64 / ops);
        }
    }
    times.map(median)
}

/// Starts `writers` children on `spec`, releases them at once, and returns
/// the slowest one's timed total.
fn run_children(spec: &str, writers: usize) -> Duration {
    children::run(CHILD, spec, writers)
        .into_iter()
        .max()
        .unwrap_or_default()
}

/// A writer process: `kind|op|per|conninfo|schema or dir`.
// One loop counts operations for both kinds; only `complete` indexes.
#[allow(clippy::needless_range_loop)]
fn child(spec: &str) {
    let parts: Vec<&str> = spec.splitn(5, '|').collect();
    let [kind, op, per, conninfo, place] = parts[..] else {
        panic!("bad writer spec {spec:?}");
    };
    let op = match op {
        "create" => Op::Create,
        _ => Op::Complete,
    };
    let per: usize = per.parse().unwrap();
    let ready = children::ready;
    let timed = match kind {
        "floor" => {
            let sql = pg_statements(place);
            let mut c = DirectConn::new(conninfo, &sql);
            let prepared: Vec<Task> = match op {
                Op::Create => Vec::new(),
                Op::Complete => (0..per).map(|n| c.create(&sql.channel, n)).collect(),
            };
            ready();
            let started = Instant::now();
            for n in 0..per {
                match op {
                    Op::Create => drop(c.create(&sql.channel, n)),
                    Op::Complete => c.complete(&sql.channel, &prepared[n]),
                }
            }
            started.elapsed()
        }
        kind => {
            let store: Box<dyn TaskStore> = match kind {
                "pg" => Box::new(
                    PgStore::builder(conninfo)
                        .schema(place)
                        .pool_size(1)
                        .max_active(1_000_000)
                        .open()
                        .unwrap(),
                ),
                _ => Box::new(
                    FileStore::builder(place)
                        .max_active(1_000_000)
                        .open()
                        .unwrap(),
                ),
            };
            let prepared: Vec<TaskId> = match op {
                Op::Create => Vec::new(),
                Op::Complete => (0..per)
                    .map(|_| store.create(NewTask::new()).unwrap().id)
                    .collect(),
            };
            ready();
            let started = Instant::now();
            for n in 0..per {
                match op {
                    Op::Create => drop(store.create(NewTask::new()).unwrap()),
                    Op::Complete => {
                        let t = store.complete(&prepared[n], result_payload()).unwrap();
                        assert!(matches!(t, Transition::Applied(_)));
                    }
                }
            }
            started.elapsed()
        }
    };
    children::report(timed);
}

#[derive(Clone, Copy)]
enum Read {
    Get,
    ListActive,
}

/// A `PgStore` on a fresh schema (its name) and a `FileStore` in a fresh
/// directory (kept while the store is), with their default settings.
fn peers(cluster: &pg_cluster::Cluster) -> (String, PgStore, tempfile::TempDir, FileStore) {
    let schema = pg_cluster::fresh_schema("bench");
    let store = PgStore::builder(cluster.conninfo())
        .schema(&schema)
        .open()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = FileStore::open(dir.path()).unwrap();
    (schema, store, dir, file)
}

/// Per-operation times (ns) of one reader: floor, PgStore, FileStore; over
/// 10 running and 1,000 finished tasks.
fn read_rows(cluster: &pg_cluster::Cluster, read: Read) -> [f64; 3] {
    let (schema, store, _dir, file) = peers(cluster);
    let mut running = Vec::new();
    for s in [&store as &dyn TaskStore, &file as &dyn TaskStore] {
        for n in 0..1_010 {
            let t = s.create(NewTask::new().metadata("n", n)).unwrap();
            if n < 1_000 {
                let _ = s.complete(&t.id, result_payload()).unwrap();
            } else {
                let _ = s
                    .update(&t.id, TaskUpdate::new().status_message("running"))
                    .unwrap();
                running.push(t.id);
            }
        }
    }
    let sql = pg_statements(&schema);
    let mut direct = DirectConn::new(&cluster.conninfo(), &sql);
    let (pg_task, file_task) = (running[0].clone(), running[10].clone());
    let count = match read {
        Read::Get => READS_PER_ROUND,
        Read::ListActive => LISTS_PER_ROUND,
    };
    let mut times = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        let started = Instant::now();
        for _ in 0..count {
            match read {
                Read::Get => {
                    let row = direct
                        .client
                        .query_one(&direct.load, &[&pg_task.as_str()])
                        .unwrap();
                    // Decoded, as any caller must to use the task.
                    let task: Task = serde_json::from_str(row.get(0)).unwrap();
                    std::hint::black_box(task);
                }
                Read::ListActive => {
                    let rows = direct
                        .client
                        .query(&direct.list_active, &[&1_000i64])
                        .unwrap();
                    assert_eq!(rows.len(), 10);
                    let tasks: Vec<Task> = rows
                        .iter()
                        .map(|r| serde_json::from_str(r.get(1)).unwrap())
                        .collect();
                    std::hint::black_box(tasks);
                }
            }
        }
        times[0].push(started.elapsed().as_nanos() as f64 / count as f64);
        for (slot, s, id) in [
            (1, &store as &dyn TaskStore, &pg_task),
            (2, &file as &dyn TaskStore, &file_task),
        ] {
            let started = Instant::now();
            for _ in 0..count {
                match read {
                    Read::Get => drop(std::hint::black_box(s.get(id).unwrap())),
                    Read::ListActive => {
                        let page = s.list(&ListQuery::active().limit(1_000)).unwrap();
                        assert_eq!(page.tasks.len(), 10);
                    }
                }
            }
            times[slot].push(started.elapsed().as_nanos() as f64 / count as f64);
        }
    }
    times.map(median)
}
