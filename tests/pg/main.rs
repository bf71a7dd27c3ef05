//! `PgStore` against a real PostgreSQL: a throwaway cluster started from the
//! system's binaries (`tests/common/pg.rs`), a fresh schema per test. The
//! store's rules through the shared conformance suite, then what only
//! several processes and a real server show: races between processes, a
//! writer killed mid-transaction, a server restart, clocks that disagree,
//! and MCP servers (`examples/mcp_server.rs`) answering for, and resuming,
//! each other's tasks.

#![cfg(all(feature = "postgres", feature = "conformance", unix))]

mod caps;
mod clock;
#[path = "../common/mod.rs"]
mod common;
mod ended;
mod failover;
mod feed;
mod locked_rows;
mod lost_replies;
#[cfg(feature = "mcp")]
mod mcp_servers;
mod outages;
mod passes;
#[path = "../common/pg.rs"]
mod pg_cluster;
mod poolers;
mod processes;
mod refused;
mod rows;
mod setup;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use taskstore::backend::{Backend, Decide, Insert, Modified, Record, Scan, Scanned, Swap};
use taskstore::conformance::{self, Setup};
use taskstore::{
    Clock, Error, EventLog, ListQuery, ManualClock, NewTask, PgStore, Task, TaskEventKind, TaskId,
    TaskStatus, TaskStore, TaskUpdate, TimeSource, Transition,
};

use common::{Rng, role, spawn, wait_until};
use pg_cluster::{Cluster, counter_and_active, fresh_schema};

/// The shared cluster, or `None` (the test is skipped, said once).
fn cluster() -> Option<&'static Cluster> {
    pg_cluster::shared()
}

/// A handle on `schema` with the defaults and `instance`.
fn open(cluster: &Cluster, schema: &str, instance: &str) -> PgStore {
    PgStore::builder(cluster.conninfo())
        .schema(schema)
        .instance_id(instance)
        .open()
        .unwrap_or_else(|e| panic!("open schema {schema}: {e}"))
}

/// A handle's builder on `schema` through `conninfo`, as `instance`, going
/// by `clock` (`TimeSource::Clock`): the caller adds what else it needs.
fn on_clock(
    conninfo: &str,
    schema: &str,
    instance: &str,
    clock: &ManualClock,
) -> taskstore::PgStoreBuilder {
    PgStore::builder(conninfo)
        .schema(schema)
        .instance_id(instance)
        .time_source(TimeSource::Clock)
        .clock(Arc::new(clock.clone()))
}

fn child_args(
    cluster: &Cluster,
    schema: &str,
    work: &std::path::Path,
    rest: &[String],
) -> Vec<String> {
    let mut args = vec![
        cluster.conninfo(),
        schema.to_owned(),
        work.display().to_string(),
    ];
    args.extend_from_slice(rest);
    args
}

// ---------------------------------------------------------------------------
// A writer killed in the middle of its transaction.

/// The server process of `client`'s session, for [`blocked_by`].
/// A connection that began a transaction and ran `sql` in it (a lock
/// taken, held until the connection commits or goes), and its backend's
/// pid, for `blocked_by`.
fn holding(cluster: &Cluster, sql: &str) -> (postgres::Client, i32) {
    let mut holder = cluster.client();
    let pid = backend_pid(&mut holder);
    holder.batch_execute(&format!("BEGIN; {sql}")).unwrap();
    (holder, pid)
}

/// How many backends of `application` wait for a lock, whoever holds it.
fn lock_waits(client: &mut postgres::Client, application: &str) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND cardinality(pg_blocking_pids(pid)) > 0",
            &[&application],
        )
        .unwrap()
        .get(0)
}

fn backend_pid(client: &mut postgres::Client) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0)
}

/// How many backends of `application` wait for a lock that backend `pid`
/// holds (or waits for first): not for another's, as a commit waits for
/// the notification queue's while another commit writes to it.
fn blocked_by(client: &mut postgres::Client, application: &str, pid: i32) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND $2 = ANY(pg_blocking_pids(pid))",
            &[&application, &pid],
        )
        .unwrap()
        .get(0)
}

/// How many backends of `application` are connected.
fn connected(client: &mut postgres::Client, application: &str) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&application],
        )
        .unwrap()
        .get(0)
}

// The MCP client helpers the `mcp_servers` tests share with `tests/mcp.rs`.
#[cfg(feature = "mcp")]
#[path = "../mcp_client/mod.rs"]
mod mcp_client;

/// A handle's backend that, while armed, runs `after_scan` after each
/// `scan` and `before_batch` before each `replace_all`, each told how many
/// came before it (`passes_meet`: the two passes' scans meet; the test of
/// a batch that found no connection: one pass waits for the other).
struct Hooked {
    store: PgStore,
    armed: std::sync::atomic::AtomicBool,
    scans: std::sync::atomic::AtomicUsize,
    batches: std::sync::atomic::AtomicUsize,
    after_scan: Box<dyn Fn(usize) + Send + Sync>,
    before_batch: Box<dyn Fn(usize) + Send + Sync>,
    /// Every `remove` called, armed or not.
    removes: std::sync::atomic::AtomicUsize,
}

impl Hooked {
    fn new(
        store: PgStore,
        after_scan: impl Fn(usize) + Send + Sync + 'static,
        before_batch: impl Fn(usize) + Send + Sync + 'static,
    ) -> Hooked {
        Hooked {
            store,
            armed: true.into(),
            scans: Default::default(),
            batches: Default::default(),
            after_scan: Box::new(after_scan),
            before_batch: Box::new(before_batch),
            removes: Default::default(),
        }
    }

    /// The count `counter` was at, and one more, if armed.
    fn count(&self, counter: &std::sync::atomic::AtomicUsize) -> Option<usize> {
        use std::sync::atomic::Ordering::SeqCst;
        self.armed
            .load(SeqCst)
            .then(|| counter.fetch_add(1, SeqCst))
    }
}

impl Backend for Hooked {
    fn load(&self, id: &TaskId) -> taskstore::Result<Option<Task>> {
        self.store.backend().load(id)
    }
    fn load_all(&self, ids: &[TaskId]) -> Vec<taskstore::Result<Option<Task>>> {
        self.store.backend().load_all(ids)
    }
    fn insert(&self, record: &Record, max_active: usize) -> taskstore::Result<Insert> {
        self.store.backend().insert(record, max_active)
    }
    fn replace(&self, current: &Task, next: &Record) -> taskstore::Result<Swap> {
        self.store.backend().replace(current, next)
    }
    fn remove(&self, current: &Task) -> taskstore::Result<Swap> {
        self.removes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.store.backend().remove(current)
    }
    fn scan(&self, scan: &Scan) -> taskstore::Result<Scanned> {
        let scanned = self.store.backend().scan(scan);
        if let Some(before) = self.count(&self.scans) {
            (self.after_scan)(before);
        }
        scanned
    }
    fn modify(&self, id: &TaskId, decide: &mut Decide<'_>) -> taskstore::Result<Modified> {
        self.store.backend().modify(id, decide)
    }
    fn replace_all(&self, swaps: &[(Task, Record)]) -> Vec<taskstore::Result<Swap>> {
        if let Some(before) = self.count(&self.batches) {
            (self.before_batch)(before);
        }
        self.store.backend().replace_all(swaps)
    }
    fn remove_all(&self, tasks: &[Task]) -> Vec<taskstore::Result<Swap>> {
        self.store.backend().remove_all(tasks)
    }
    fn refresh_clock(&self) {
        self.store.backend().refresh_clock()
    }
}

/// Makes the server refuse every `statement` (`INSERT`, `UPDATE`) of
/// `schema`'s tasks with an `ERROR` reply, as a statement or lock timeout
/// would refuse one: "the test refuses every insert" (or update).
fn refuse_every(cluster: &Cluster, schema: &str, statement: &str) {
    let what = statement.to_lowercase();
    cluster
        .client()
        .batch_execute(&format!(
            "CREATE FUNCTION {schema}.refused() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 RAISE EXCEPTION 'the test refuses every {what}';
             END $$;
             CREATE TRIGGER refused BEFORE {statement} ON {schema}.tasks
                 FOR EACH ROW EXECUTE FUNCTION {schema}.refused();"
        ))
        .unwrap();
}

/// A dead instance's handle on a fresh schema named after `name` (the
/// connections named `application`), on a `ManualClock` its leases have
/// lapsed by once `made` has made its tasks, and an heir (one handle)
/// whose two passes at a time meet after their scans.
fn passes_meet<T>(
    cluster: &Cluster,
    name: &str,
    application: &str,
    made: impl FnOnce(&PgStore) -> T,
) -> (T, PgStore, taskstore::Store<Hooked>) {
    let schema = fresh_schema(name);
    let conninfo = format!("{} application_name={application}", cluster.conninfo());
    let clock = ManualClock::new(time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap());
    let lease = Duration::from_secs(30);
    let open = |instance_id: &str| {
        PgStore::builder(&conninfo)
            .schema(&schema)
            .instance_id(instance_id)
            .time_source(TimeSource::Clock)
            .clock(Arc::new(clock.clone()))
            .lease(lease)
            .open()
            .unwrap()
    };
    let dead = open("dead");
    let tasks = made(&dead);
    clock.advance(lease);
    let meet = std::sync::Barrier::new(2);
    let backend = Hooked::new(
        open("heir"),
        move |_| {
            meet.wait();
        },
        |_| {},
    );
    let heir = taskstore::Store::with_backend(backend)
        .clock(Arc::new(clock.clone()))
        .lease(lease)
        .instance_id("heir")
        .build()
        .unwrap();
    (tasks, dead, heir)
}

/// The ids of the tasks `passes` reported, sorted.
fn reported<'a, P: 'a>(passes: &'a [P], tasks: impl Fn(&'a P) -> &'a [Task]) -> Vec<&'a TaskId> {
    let mut ids: Vec<&TaskId> = passes.iter().flat_map(tasks).map(|t| &t.id).collect();
    ids.sort();
    ids
}

/// A dead instance's two resumable orphans on a fresh schema named after
/// `application` (the connections named so too), the heir whose passes
/// then claim them (one at a time: `passes_meet` disarmed), and the
/// schema; every statement that writes tasks runs `body` (PL/pgSQL, the
/// rows it wrote in `written`) before it ends.
fn two_orphans_written_through(
    cluster: &Cluster,
    application: &str,
    body: &str,
) -> (Vec<Task>, taskstore::Store<Hooked>, String) {
    let (orphans, _dead, heir) = passes_meet(cluster, application, application, |dead| {
        (1..=2)
            .map(|n| {
                dead.create(NewTask::new().resumable("k", json!(n)))
                    .unwrap()
            })
            .collect::<Vec<_>>()
    });
    heir.backend()
        .armed
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let schema = heir.backend().store.schema().to_owned();
    cluster
        .client()
        .batch_execute(&format!(
            "CREATE FUNCTION {schema}.written() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 {body}
                 RETURN NULL;
             END $$;
             CREATE TRIGGER written AFTER UPDATE ON {schema}.tasks
                 REFERENCING NEW TABLE AS written
                 FOR EACH STATEMENT EXECUTE FUNCTION {schema}.written();"
        ))
        .unwrap();
    (orphans, heir, schema)
}

/// Asserts that `passes` reported each of `orphans` once.
fn each_claimed_once(orphans: &[Task], passes: &[taskstore::Claimed]) {
    let mut want: Vec<&TaskId> = orphans.iter().map(|t| &t.id).collect();
    want.sort();
    assert_eq!(
        reported(passes, |c| &c.tasks),
        want,
        "each claimed once: {passes:?}"
    );
}

/// A fresh schema named after `name`, a proxy that loses a reply, and a
/// handle (instance `creator`) through the proxy.
fn behind_a_proxy(cluster: &Cluster, name: &str) -> (String, pg_cluster::LosesAReply, PgStore) {
    let schema = fresh_schema(name);
    let proxy = pg_cluster::LosesAReply::start(cluster);
    let store = PgStore::builder(proxy.conninfo())
        .schema(&schema)
        .instance_id("creator")
        .open()
        .unwrap();
    (schema, proxy, store)
}

/// Runs `f` on a thread of its own and returns what it returns, or fails
/// the test if it never does (within `common::HANG`).
fn returns<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (send, got) = std::sync::mpsc::channel();
    std::thread::spawn(move || drop(send.send(f())));
    got.recv_timeout(common::HANG)
        .unwrap_or_else(|_| panic!("{what} never returned"))
}
