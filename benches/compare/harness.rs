//! Running a workload's writers: threads of this process, or processes (the
//! bench binary re-executing itself). Every writer times its own operations
//! and nothing else; what an operation needs (a task to update or complete)
//! and what it leaves (a task it created) are made and removed around it,
//! untimed, so that the store's directories keep their size all along.

use std::path::Path;
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use taskstore::{Durability, TaskId};

use crate::children;
use crate::peers::{Peer, Sqlite, Taskstore};

/// The environment variable that makes the bench binary a writer process.
pub const CHILD: &str = "TASKSTORE_COMPARE_CHILD";

pub fn result_payload() -> serde_json::Value {
    json!({"content": [{"type": "text", "text": "x".repeat(512)}], "isError": false})
}

/// Runs `per_writer(writer, ops)` on `writers` threads at once and returns
/// the wall time.
pub fn threads(writers: usize, ops: u64, per_writer: &(dyn Fn(usize, u64) + Sync)) -> Duration {
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

#[derive(Clone, Copy, Debug)]
pub enum WriteOp {
    Create,
    Update,
    Complete,
}

impl WriteOp {
    pub const ALL: [WriteOp; 3] = [WriteOp::Create, WriteOp::Update, WriteOp::Complete];

    pub fn name(self) -> &'static str {
        match self {
            WriteOp::Create => "create",
            WriteOp::Update => "update",
            WriteOp::Complete => "complete",
        }
    }

    fn parse(name: &str) -> WriteOp {
        WriteOp::ALL
            .into_iter()
            .find(|op| op.name() == name)
            .unwrap_or_else(|| panic!("unknown operation {name:?}"))
    }
}

pub fn durability_name(durability: Durability) -> &'static str {
    match durability {
        Durability::Eventual => "eventual",
        _ => "immediate",
    }
}

fn parse_durability(name: &str) -> Durability {
    match name {
        "eventual" => Durability::Eventual,
        _ => Durability::Immediate,
    }
}

/// One writer's share of a write row: `ops` operations of `op` on `peer`,
/// each timed alone; returns their total. Untimed: the task an update needs
/// (made before `start` is called), the task each `complete` finishes (made
/// just before it), and deleting every task made (right after its
/// operation), so each operation meets the store as the row set it up.
pub fn writer(peer: &dyn Peer, op: WriteOp, ops: u64, start: impl FnOnce()) -> Duration {
    let target = matches!(op, WriteOp::Update).then(|| peer.create(None));
    start();
    let mut timed = Duration::ZERO;
    for i in 0..ops {
        match op {
            WriteOp::Create => {
                let t = Instant::now();
                let id = peer.create(None);
                timed += t.elapsed();
                assert!(peer.delete(&id));
            }
            WriteOp::Update => {
                let id = target.as_ref().unwrap();
                let t = Instant::now();
                peer.update(id, "progress", i);
                timed += t.elapsed();
            }
            WriteOp::Complete => {
                let id = peer.create(None);
                let t = Instant::now();
                assert!(peer.complete(&id, result_payload()));
                timed += t.elapsed();
                assert!(peer.delete(&id));
            }
        }
    }
    if let Some(id) = target {
        assert!(peer.delete(&id));
    }
    timed
}

/// The figure of a row whose writers timed `timed` over `ops` operations in
/// all: the longest writer's total divided by every writer's operations (the
/// time per operation as if the timed sections had run back to back, which
/// for one writer is its mean latency).
pub fn per_op(timed: &[Duration], ops: u64) -> Duration {
    let longest = timed.iter().max().copied().unwrap_or_default();
    longest.div_f64(ops.max(1) as f64)
}

/// `writers` threads, each a [`writer`] of `per` operations on `peer`,
/// started together; returns each one's timed total.
pub fn writer_threads(peer: &dyn Peer, op: WriteOp, writers: usize, per: u64) -> Vec<Duration> {
    let barrier = Barrier::new(writers);
    let timed = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..writers {
            let (barrier, timed) = (&barrier, &timed);
            s.spawn(move || {
                let t = writer(peer, op, per, || {
                    barrier.wait();
                });
                timed.lock().unwrap().push(t);
            });
        }
    });
    timed.into_inner().unwrap()
}

/// `writers` processes, each a [`writer`] of `per` operations on its own
/// handle of `peer` ("taskstore" or "sqlite") at `root`; returns each one's
/// timed total, as it reported it. Process start-up, opening the store and
/// the untimed parts are outside every total; the children are released at
/// once, each by a line on its standard input.
pub fn writer_processes(
    peer: &str,
    root: &Path,
    durability: Durability,
    op: WriteOp,
    writers: usize,
    per: u64,
) -> Vec<Duration> {
    let spec = format!(
        "{peer}|{}|{}|{per}|{}",
        op.name(),
        durability_name(durability),
        root.display()
    );
    children::run(CHILD, &spec, writers)
}

/// A writer process (see [`writer_processes`]): opens its handle, says
/// "ready", waits for "go", runs, and reports its timed total.
pub fn child(spec: &str) {
    let parts: Vec<&str> = spec.split('|').collect();
    let [peer, op, durability, per, root] = parts[..] else {
        panic!("bad writer spec {spec:?}");
    };
    let (op, durability) = (WriteOp::parse(op), parse_durability(durability));
    let per: u64 = per.parse().unwrap();
    let peer: Box<dyn Peer> = match peer {
        "taskstore" => Box::new(Taskstore::open(Path::new(root), durability)),
        // One connection, with its `busy_timeout`.
        "sqlite" => Box::new(Sqlite::connect(Path::new(root), durability)),
        other => panic!("no process peer {other:?}"),
    };
    // Opens the connection (SQLite opens it on first use).
    assert!(peer.get(&TaskId::new()).is_none());
    let timed = writer(peer.as_ref(), op, per, children::ready);
    children::report(timed);
}
