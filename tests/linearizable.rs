//! Linearizability of a `FileStore` under real concurrency: threads in this
//! process and in child processes (this test binary again, see
//! `common::spawn`) run random operations on a few task ids at once, each
//! handle its own open of one store directory. Every call is recorded with
//! the times it was made and answered (both clocks: the monotonic one
//! orders the calls, the wall clock, which the stores read, judges
//! expiries and leases; `common/lin/mod.rs`) and what it returned; the
//! merged history is then checked, task id by task id, against the model
//! of one task and with the search both backends' tests share
//! (`common/lin/`).
//!
//! What is this backend's own is here: the workload, the handles (each
//! round's knobs), the child processes and the child killed. Every call's
//! outcome is known (the file store fails none of these calls), so the
//! model compares whole tasks (`Compare::Whole`).
//!
//! Passes over many tasks are checked per task: a listing's answer for each
//! id (listed as this version, or left out by its filter or because it is
//! missing) must hold at some point within the listing; a claim's or a
//! reap's task is a write at some point within its pass, and a task it
//! left alone was not to be claimed (or reaped) at some point within it.
//! A task's expiry (TTLs of a few to a few hundred milliseconds) and its
//! lease's lapse (rounds with leases of a few hundred milliseconds) are
//! judged by the wall clock the stores read.
//!
//! Each round's seed picks its knobs: durability, change notices (the
//! second handle of each process the other way), leases that lapse or
//! not, the paths of large passes (with `fault-injection`), and a child
//! killed (`SIGKILL`) in the middle of its calls and replaced by a new one
//! (the ids its last calls may have written are then not checked). A
//! failure prints the seed, the longest order found and the history;
//! `TASKSTORE_LIN_SEED=<seed>` runs that round again (`TASKSTORE_LIN_ROUNDS`,
//! `TASKSTORE_LIN_OPS` and `TASKSTORE_LIN_KEYS` for more;
//! `TASKSTORE_LIN_LEASE_MS` sets the lease).

#[path = "linearizable/calls.rs"]
mod calls;
mod common;
#[path = "common/lin/mod.rs"]
mod lin;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use calls::{Line, run_calls};
use common::{spawn, touch};
use lin::{Call, Compare, LONG_LEASE_MS, Op, Params, Ret, Stamp};
use serde::{Deserialize, Serialize};
use taskstore::{Durability, Error, FileStore, TaskId};

/// The task ids the workload collides on, by default.
const KEYS: usize = 8;

/// How many task ids the workload collides on (`TASKSTORE_LIN_KEYS`).
fn keys() -> usize {
    static KEYS_SET: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *KEYS_SET.get_or_init(|| {
        env_u64("TASKSTORE_LIN_KEYS").map_or(KEYS, |n| usize::try_from(n).unwrap().max(1))
    })
}
/// Operations per thread, by default.
const OPS: usize = 150;
/// Rounds, by default: each with its seed, which picks its knobs.
const ROUNDS: u64 = 8;
/// Child processes, and threads in each (one handle per process).
const CHILDREN: usize = 2;
const CHILD_THREADS: usize = 2;
/// The kind of resumable work every claim here resumes.
const KIND: &str = "k";

fn key(n: usize) -> TaskId {
    TaskId::parse(&format!("k{n}")).unwrap()
}

/// What sets this store's histories apart for the model.
const PARAMS: Params = Params {
    compare: Compare::Whole,
    // `open` sets none.
    claim_grace: Duration::ZERO,
    kind: KIND,
    id: key,
    budget: None,
};

/// The stamp of a call under way in a child killed: never read.
const UNKNOWN: Stamp = Stamp { mono: 0, wall: 0 };

/// Whether a call lasted its handle's lease or more, by the clock the
/// store judges leases by.
fn lasted(start: Stamp, end: Stamp, knobs: Knobs) -> bool {
    end.wall.saturating_sub(start.wall) >= knobs.lease_ms * 1_000_000
}

/// Any error: never expected here.
fn error(e: Error) -> Ret {
    lin::error_or(e, |e| Ret::Other(e.to_string()))
}

/// How a round's handles are opened.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Knobs {
    immediate: bool,
    notices: bool,
    /// How long leases last: an hour (none lapses), or moments (owners
    /// lapse while they work, and reaps and claims race them).
    lease_ms: u64,
    /// Passes of one task on take the paths of large ones (feature
    /// `fault-injection`; ignored without it).
    large: bool,
    /// A child is killed in the middle of its calls, and another takes
    /// its place.
    kill: bool,
}

fn open(store: &Path, instance: &str, knobs: Knobs) -> FileStore {
    let builder = FileStore::builder(store);
    #[cfg(feature = "fault-injection")]
    let builder = if knobs.large {
        builder.large_passes_from(1)
    } else {
        builder
    };
    builder
        .instance_id(instance)
        .durability(if knobs.immediate {
            Durability::Immediate
        } else {
            Durability::Eventual
        })
        .change_notices(knobs.notices)
        // No lease lapses in a round: a task is an orphan only once
        // released, and a resumable orphan may be reaped at once.
        .lease(Duration::from_millis(knobs.lease_ms))
        .claim_grace(Duration::ZERO)
        .open()
        .expect("open the store")
}

// ---------------------------------------------------------------------------
// The rounds.

/// SplitMix64's finalizer: every bit of the result depends on every bit
/// of `z`.
fn mix(z: u64) -> u64 {
    let z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.parse().expect(name))
}

/// One round: children and threads run at once on a fresh store, then the
/// merged history is checked. Returns the number of calls checked.
fn round(seed: u64, knobs: Knobs, ops: usize) -> usize {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let work = tmp.path().to_owned();
    drop(open(&store, "setup", knobs));
    let children: Vec<_> = (0..CHILDREN)
        .map(|c| {
            let args = vec![
                store.display().to_string(),
                work.display().to_string(),
                c.to_string(),
                (seed ^ (0x100 * (c as u64 + 1))).to_string(),
                serde_json::to_string(&knobs).unwrap(),
                ops.to_string(),
            ];
            spawn(
                &work,
                "concurrent_histories_are_linearizable",
                "child",
                &args,
            )
        })
        .collect();
    let handles = [
        Arc::new(open(&store, "pA", knobs)),
        // The other handle of this process follows the store the other way.
        Arc::new(open(
            &store,
            "pB",
            Knobs {
                notices: !knobs.notices,
                ..knobs
            },
        )),
    ];
    for c in 0..CHILDREN {
        let ready = work.join(format!("ready-{c}"));
        common::wait_until("a child to be ready", || ready.exists());
    }
    touch(&work.join("go"));
    // A child killed (`SIGKILL`) in the middle of its calls, and another
    // started in its place (the same instance id, a new open).
    let killer = knobs.kill.then(|| {
        let (store, work) = (store.clone(), work.clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20 + seed % 200));
            let args = vec![
                store.display().to_string(),
                work.display().to_string(),
                CHILDREN.to_string(),
                (seed ^ 0x7777).to_string(),
                serde_json::to_string(&knobs).unwrap(),
                ops.to_string(),
            ];
            spawn(
                &work,
                "concurrent_histories_are_linearizable",
                "child",
                &args,
            )
        })
    });
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let path = store.clone();
            let store = handles[t % 2].clone();
            let instance = if t % 2 == 0 { "pA" } else { "pB" };
            std::thread::spawn(move || {
                let thread = format!("p{t}");
                run_calls(
                    &store,
                    (instance, &thread),
                    (&path, knobs),
                    seed ^ (t as u64 + 1),
                    ops,
                    None,
                )
            })
        })
        .collect();
    let mut children: Vec<Option<common::Running>> = children.into_iter().map(Some).collect();
    if let Some(killer) = killer {
        let replacement = killer.join().unwrap();
        children[0].take().unwrap().kill();
        children.push(Some(replacement));
    }
    let mut all: Vec<Op> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    for (c, child) in children.into_iter().enumerate() {
        let killed = child.is_none();
        if let Some(child) = child {
            child.finish();
        }
        all.extend(read_history(
            &work.join(format!("history-{c}.jsonl")),
            killed,
        ));
    }
    lin::check(&all, &PARAMS, &format!("seed {seed}, {knobs:?}"))
}

fn child(args: &[String]) {
    let (store, work) = (PathBuf::from(&args[0]), PathBuf::from(&args[1]));
    let c: usize = args[2].parse().unwrap();
    let seed: u64 = args[3].parse().unwrap();
    let knobs: Knobs = serde_json::from_str(&args[4]).unwrap();
    let ops: usize = args[5].parse().unwrap();
    // Both children are one instance id, opened twice: a restarted
    // process's handle, not the owner of the other's tasks.
    // The second child follows the store the other way, with the other
    // durability (handles of one store may differ in both).
    let knobs = if c == 1 {
        Knobs {
            notices: !knobs.notices,
            immediate: !knobs.immediate,
            ..knobs
        }
    } else {
        knobs
    };
    let handle = Arc::new(open(&store, "c", knobs));
    let log = Arc::new(std::sync::Mutex::new(
        fs::File::options()
            .create(true)
            .append(true)
            .open(work.join(format!("history-{c}.jsonl")))
            .unwrap(),
    ));
    touch(&work.join(format!("ready-{c}")));
    common::wait_until("the go", || work.join("go").exists());
    let threads: Vec<_> = (0..CHILD_THREADS)
        .map(|t| {
            let handle = handle.clone();
            let store = store.clone();
            let log = log.clone();
            std::thread::spawn(move || {
                let thread = format!("c{c}t{t}");
                run_calls(
                    &handle,
                    ("c", &thread),
                    (&store, knobs),
                    seed ^ (t as u64 + 7),
                    ops,
                    Some(&log),
                )
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// The calls a child's history holds; for a child killed, the ids its
/// calls under way may have written are marked `Unsure`.
fn read_history(path: &Path, killed: bool) -> Vec<Op> {
    let text = fs::read_to_string(path).unwrap();
    let mut ops = Vec::new();
    let mut calling: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for line in text.lines() {
        // A killed child's last line may be cut short.
        match serde_json::from_str::<Line>(line) {
            Ok(Line::Calling { thread, writes }) => {
                calling.insert(thread, writes);
            }
            Ok(Line::Made(op)) => ops.push(*op),
            Err(e) => assert!(killed, "{}: {e}: {line}", path.display()),
        }
    }
    if killed {
        // The last call of each thread may have been under way: it may
        // have written, or written and not said so.
        for (thread, writes) in calling {
            for id in writes {
                ops.push(Op {
                    instance: "c".into(),
                    token: String::new(),
                    thread: thread.clone(),
                    id,
                    call: Call::Unsure,
                    ret: Ret::Other("killed".into()),
                    start: UNKNOWN,
                    end: UNKNOWN,
                    lease_ns: 0,
                    clock_ns: 0,
                });
            }
        }
    }
    ops
}

#[test]
fn concurrent_histories_are_linearizable() {
    if let Some((role, args)) = common::role() {
        assert_eq!(role, "child");
        return child(&args);
    }
    let ops = env_u64("TASKSTORE_LIN_OPS").map_or(OPS, |n| usize::try_from(n).unwrap());
    let seeds: Vec<u64> = match env_u64("TASKSTORE_LIN_SEED") {
        Some(seed) => vec![seed],
        None => {
            let base = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
            let rounds = env_u64("TASKSTORE_LIN_ROUNDS").unwrap_or(ROUNDS);
            (0..rounds).map(|r| base.wrapping_add(r)).collect()
        }
    };
    let mut checked = 0;
    for seed in seeds {
        // The knobs follow from the seed, so that it alone replays a round.
        // Each from bits of its own of a hash of the seed, so that
        // consecutive seeds try the knobs in every combination.
        let h = mix(seed);
        let bit = |n: u32| (h >> (63 - n)) & 1 == 1;
        let knobs = Knobs {
            immediate: bit(0),
            notices: bit(1),
            large: bit(2),
            kill: bit(3),
            lease_ms: env_u64("TASKSTORE_LIN_LEASE_MS").unwrap_or(if bit(4) {
                LONG_LEASE_MS
            } else {
                100 + (h >> 20) % 300
            }),
        };
        eprintln!("linearizable: seed {seed}, {knobs:?}, {ops} calls a thread");
        checked += round(seed, knobs, ops);
    }
    eprintln!("linearizable: {checked} calls checked");
}
