//! `PgStore` under real concurrency and connection failures is
//! linearizable, task by task.
//!
//! A randomized workload of five handles (two in this process, one shared
//! by two threads, the other by one; one in each of two child processes,
//! shared by two threads) on a few task ids, so that calls collide:
//! `create` with given ids (resumable or not, some with a TTL of tens of
//! milliseconds), `get`, `get_all`, `update` (plain, `if_revision`,
//! `fenced`, `leave_lease`), `finish` and `finish_fenced`, `delete`,
//! `renew_lease`, `renew_leases_of`, `renew_leases`, `release`, `claim`,
//! `reap`, `reap_task`, `sweep`, and listings page by page. Meanwhile one
//! thread ends random server backends of the store's connections
//! (`pg_terminate_backend`), another loses the reply to a random statement
//! after the server committed it (a proxy that cuts the connection), and
//! the first handle's two threads share one connection that they wait for
//! only briefly, so that calls fail before they send anything.
//!
//! Every call is recorded (invocation and response by the host's monotonic
//! clock, which every process reads alike; the wall clock too, which the
//! store's leases and TTLs go by: `TimeSource::Clock`) with its result;
//! the children write theirs to files. The merged history of each task is
//! then checked against a sequential model of one task that follows the
//! store's rules (src/rules/: first writer wins, revisions, fences, owners,
//! leases, claims and reaps, TTL from creation) with a Wing–Gong search:
//!
//! - a call that failed with an error that promises nothing was applied
//!   (`Error::changed_nothing`) must have changed nothing;
//! - any other failed call took effect within its call (with any result),
//!   or not at all; a failed create may also be undone later (its
//!   handle's next renewal pass removes the version it may have made);
//! - a listing or `get_all` is checked weaker: each task it returns is a
//!   state the task held within the call, and a task a whole listing left
//!   out was missing (or finished, for a listing of running tasks) at some
//!   moment of it; every pass (claim, reap, sweep, renewals) and listing is
//!   one call per task.
//!
//! On failure it prints the seed (`TASKSTORE_LIN_SEED` replays the calls'
//! choices, not the threads' timing), the task's history (`*` marks the
//! longest linearizable prefix found), and `TASKSTORE_LIN_DUMP=<file>`
//! keeps the whole history, which `TASKSTORE_LIN_CHECK=<file>` checks
//! again. `TASKSTORE_LIN_IDS`, `TASKSTORE_LIN_OPS`,
//! `TASKSTORE_LIN_KILL_MS` (the mean gap between ends of backends),
//! `TASKSTORE_LIN_KILLS=0` and `TASKSTORE_LIN_CUTS=0` tune a longer run.
//! Skipped like every PostgreSQL test without PostgreSQL, unless
//! `TASKSTORE_REQUIRE_PG=1`.

#![cfg(all(feature = "postgres", unix))]

mod common;
#[path = "common/pg.rs"]
mod pg_cluster;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::json;
use taskstore::{
    Error, ListQuery, NewTask, Outcome, PgStore, Task, TaskId, TaskStatus, TaskStore, TaskUpdate,
    TimeSource, Transition,
};

use common::{Rng, role, spawn};

/// Task ids the workload shares (so that operations collide;
/// `TASKSTORE_LIN_IDS` to choose).
const IDS: usize = 8;

fn ids() -> usize {
    std::env::var("TASKSTORE_LIN_IDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(IDS)
}
/// Operations per worker thread (`TASKSTORE_LIN_OPS` to choose).
const OPS_PER_THREAD: usize = 120;

fn ops_per_thread() -> usize {
    std::env::var("TASKSTORE_LIN_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(OPS_PER_THREAD)
}
/// Threads per child process; the parent runs `PARENT_THREADS`.
const CHILD_THREADS: usize = 2;
const CHILDREN: usize = 2;
const PARENT_THREADS: usize = 3;
/// The kind of resumable work the workload's tasks are, and claims take.
const KIND: &str = "lin";
/// Attempts a resumable task gets: a claim of one at its last attempt is
/// refused, and a reap fails it at once.
const MAX_ATTEMPTS: u32 = 2;
/// A lease no run of this test outlives: leases lapse only by `release`.
const LEASE: Duration = Duration::from_secs(3_600);

fn task_id(n: usize) -> TaskId {
    TaskId::parse(&format!("lin-{n}")).unwrap()
}

/// The wall clock, in Unix nanoseconds: what the store's clock reads
/// (`TimeSource::Clock`, the system clock), for expiry.
fn nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// The monotonic clock, in nanoseconds: one clock for every process of the
/// host, which no step of the wall clock moves, for the order of calls.
fn mono() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) },
        0
    );
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

// ---------------------------------------------------------------------------
// The record of a run.

/// What a task looks like, as far as the model goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct View {
    /// The `inc` metadata its create gave it: which incarnation of the id.
    inc: u64,
    rev: u64,
    status: String,
    epoch: u64,
    owner: Option<String>,
    attempts: Option<u32>,
}

fn view(task: &Task) -> View {
    View {
        inc: task
            .metadata
            .get("inc")
            .and_then(|v| v.as_u64())
            .unwrap_or(0),
        rev: task.revision,
        status: task.status.as_str().to_owned(),
        epoch: task.epoch,
        owner: task.owner_token.clone(),
        attempts: task.resume.as_ref().map(|r| r.attempts),
    }
}

/// An operation on one task, as invoked.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Call {
    Create {
        inc: u64,
        resumable: bool,
        ttl_ms: Option<u64>,
    },
    Get,
    Update {
        status: Option<String>,
        fence: Option<u64>,
        rev: Option<u64>,
        leave_lease: bool,
    },
    Finish {
        status: String,
        fence: Option<u64>,
    },
    Delete,
    Renew,
    Release {
        epoch: u64,
    },
    /// One task of a claim pass.
    Claim,
    /// One task of a reap pass, or `reap_task`.
    Reap,
    /// One task of a listing or a `get_all`: only a task it returned.
    Read,
    /// A task a whole listing left out: missing (or, from a listing of the
    /// running tasks, finished) at some moment of the call.
    Unlisted {
        active: bool,
    },
    /// One task of a sweep.
    Sweep,
    /// One task of `renew_leases` (which says only how many it renewed).
    RenewAll,
    /// The removal a failed create makes of the version it may have made
    /// (then, or at a later renewal pass of its handle): added by the
    /// checker for each create of unknown outcome.
    Undo {
        inc: u64,
    },
}

/// What it returned.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Ret {
    /// A task (created, got, or the one a pass wrote), or none.
    Task(Option<View>),
    Applied(View),
    Terminal(View),
    Fenced(View),
    Changed(View),
    Deleted(bool),
    NotFound,
    NotOwner,
    Exists,
    /// A pass left the task alone.
    Untouched,
    /// An error that promises nothing was applied.
    Nothing(String),
    /// An error after which it may or may not have been applied.
    Unknown(String),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Op {
    id: usize,
    /// The handle's owner token, and where it ran (`process/thread`).
    handle: String,
    at: String,
    call: Call,
    /// When it was invoked and returned, by the monotonic clock.
    inv: u128,
    resp: u128,
    /// The same by the wall clock.
    inv_wall: u128,
    resp_wall: u128,
    ret: Ret,
    /// A created task's `createdAt`, in Unix nanoseconds.
    #[serde(default)]
    created: Option<u128>,
}

fn failure(e: &Error) -> Ret {
    match e {
        Error::NotFound { .. } => Ret::NotFound,
        Error::NotOwner { .. } => Ret::NotOwner,
        Error::AlreadyExists { .. } => Ret::Exists,
        e if e.changed_nothing() => Ret::Nothing(e.to_string()),
        e => Ret::Unknown(e.to_string()),
    }
}

fn transition(t: Result<Transition, Error>) -> Ret {
    match t {
        Ok(Transition::Applied(t)) => Ret::Applied(view(&t)),
        Ok(Transition::AlreadyTerminal(t)) => Ret::Terminal(view(&t)),
        Ok(Transition::Fenced(t)) => Ret::Fenced(view(&t)),
        Ok(Transition::Changed(t)) => Ret::Changed(view(&t)),
        Ok(other) => panic!("a transition this test does not know: {other:?}"),
        Err(e) => failure(&e),
    }
}

// ---------------------------------------------------------------------------
// The workload.

/// In the checker's set of failed creates and claims, (handle, task
/// number | `CLAIMED`) says the handle failed a claim of that task.
const CLAIMED: u64 = 1 << 63;

/// One handle's owner token: read off a task it creates.
fn token_of(store: &PgStore, name: &str) -> String {
    let probe = TaskId::parse(&format!("probe-{name}")).unwrap();
    loop {
        match store.create(NewTask::new().id(probe.clone())) {
            Ok(t) => return t.owner_token.unwrap(),
            Err(e) => eprintln!("probe {name}: {e} (again)"),
        }
        if let Ok(Some(t)) = store.get(&probe)
            && t.owner_token.is_some()
        {
            // Made by an earlier try whose reply was lost: ours only if no
            // one else creates it (no one does).
            return t.owner_token.unwrap();
        }
    }
}

fn open(conninfo: &str, schema: &str, instance: &str) -> PgStore {
    open_with(conninfo, schema, instance, 3, Duration::from_secs(30))
}

/// [`open`] with `pool` connections, a call waiting `wait` for one.
fn open_with(conninfo: &str, schema: &str, instance: &str, pool: usize, wait: Duration) -> PgStore {
    // The killer may end the connections of an open: tried again.
    for _ in 0..50 {
        match PgStore::builder(conninfo)
            .schema(schema)
            .instance_id(instance)
            // Every process on this host reads one system clock: a lease
            // released before a claim began is lapsed for the claim.
            .time_source(TimeSource::Clock)
            .lease(LEASE)
            .pool_size(pool)
            .pool_wait(wait)
            .open()
        {
            Ok(store) => return store,
            Err(e) => {
                eprintln!("open {instance}: {e} (again)");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    panic!("could not open {instance}");
}

/// What a worker thread remembers of each task, to make calls that may
/// land (a revision or epoch it saw).
#[derive(Clone, Default)]
struct Seen {
    rev: u64,
    epoch: u64,
}

/// Runs `ops` random operations on `store` (owner token `token`),
/// appending each to `log`.
fn work(store: &PgStore, token: &str, at: &str, seed: u64, ops: usize, log: &Mutex<Vec<Op>>) {
    let mut rng = Rng::new(seed);
    let mut seen: Vec<Seen> = vec![Seen { rev: 1, epoch: 1 }; ids()];
    let mut record = |id: usize, call: Call, (inv, inv_wall): (u128, u128), ret: Ret| {
        log.lock().unwrap().push(Op {
            id,
            handle: token.to_owned(),
            at: at.to_owned(),
            call,
            inv,
            resp: mono(),
            inv_wall,
            resp_wall: nanos(),
            ret,
            created: None,
        });
    };
    for _ in 0..ops {
        let n = rng.below(ids() as u64) as usize;
        let id = task_id(n);
        let note = |seen: &mut Vec<Seen>, ret: &Ret| {
            let v = match ret {
                Ret::Applied(v) | Ret::Terminal(v) | Ret::Fenced(v) | Ret::Changed(v) => v,
                Ret::Task(Some(v)) => v,
                _ => return,
            };
            seen[n] = Seen {
                rev: v.rev,
                epoch: v.epoch,
            };
        };
        let inv = (mono(), nanos());
        match rng.below(100) {
            0..=14 => {
                let inc = rng.next() >> 12;
                let resumable = rng.below(2) == 0;
                let ttl_ms = (rng.below(4) == 0).then(|| 20 + rng.below(300));
                let mut new = NewTask::new().id(id.clone()).metadata("inc", inc);
                if resumable {
                    new = new.resumable(KIND, json!(null)).max_attempts(MAX_ATTEMPTS);
                }
                if let Some(ms) = ttl_ms {
                    new = new.ttl(Duration::from_millis(ms));
                }
                let (ret, created) = match store.create(new) {
                    Ok(t) => (
                        Ret::Task(Some(view(&t))),
                        Some(t.created_at.unix_timestamp_nanos() as u128),
                    ),
                    Err(e) => (failure(&e), None),
                };
                note(&mut seen, &ret);
                log.lock().unwrap().push(Op {
                    id: n,
                    handle: token.to_owned(),
                    at: at.to_owned(),
                    call: Call::Create {
                        inc,
                        resumable,
                        ttl_ms,
                    },
                    inv: inv.0,
                    resp: mono(),
                    inv_wall: inv.1,
                    resp_wall: nanos(),
                    ret,
                    created,
                });
            }
            15..=26 => {
                let ret = match store.get(&id) {
                    Ok(t) => Ret::Task(t.as_ref().map(view)),
                    Err(e) => failure(&e),
                };
                note(&mut seen, &ret);
                record(n, Call::Get, inv, ret);
            }
            27..=44 => {
                let mut update = TaskUpdate::new().metadata("k", rng.below(1_000));
                let status = match rng.below(3) {
                    0 => Some(TaskStatus::InputRequired),
                    1 => Some(TaskStatus::Working),
                    _ => None,
                };
                if let Some(s) = status {
                    update = update.status(s);
                }
                let fence = (rng.below(3) == 0).then(|| seen[n].epoch);
                if let Some(e) = fence {
                    update = update.fenced(e);
                }
                let rev = (rng.below(3) == 0).then(|| seen[n].rev);
                if let Some(r) = rev {
                    update = update.if_revision(r);
                }
                let leave_lease = rng.below(4) == 0;
                if leave_lease {
                    update = update.leave_lease();
                }
                let ret = transition(store.update(&id, update));
                note(&mut seen, &ret);
                let status = status.map(|s| s.as_str().to_owned());
                record(
                    n,
                    Call::Update {
                        status,
                        fence,
                        rev,
                        leave_lease,
                    },
                    inv,
                    ret,
                );
            }
            45..=54 => {
                let outcome = match rng.below(3) {
                    0 => Outcome::Completed(json!(1)),
                    1 => Outcome::Failed(json!(2)),
                    _ => Outcome::Cancelled(None),
                };
                let status = outcome.status().as_str().to_owned();
                let fence = (rng.below(2) == 0).then(|| seen[n].epoch);
                let ret = transition(match fence {
                    Some(e) => store.finish_fenced(&id, outcome, e),
                    None => store.finish(&id, outcome),
                });
                note(&mut seen, &ret);
                record(n, Call::Finish { status, fence }, inv, ret);
            }
            55..=62 => {
                let ret = match store.delete(&id) {
                    Ok(d) => Ret::Deleted(d),
                    Err(e) => failure(&e),
                };
                record(n, Call::Delete, inv, ret);
            }
            63..=69 => {
                let ret = transition(store.renew_lease(&id));
                note(&mut seen, &ret);
                record(n, Call::Renew, inv, ret);
            }
            70..=79 => {
                let epoch = seen[n].epoch;
                let ret = transition(store.release(&id, epoch));
                note(&mut seen, &ret);
                record(n, Call::Release { epoch }, inv, ret);
            }
            80..=86 => {
                // A claim pass over every task.
                let results = store.claim(&[KIND]);
                pass(results, Call::Claim, inv, &mut record);
            }
            87..=90 => {
                let results = store.reap();
                pass(results, Call::Reap, inv, &mut record);
            }
            91..=93 => {
                let ret = match store.reap_task(&id) {
                    Ok(Some(t)) => Ret::Task(Some(view(&t))),
                    Ok(None) => Ret::Untouched,
                    Err(e) => failure(&e),
                };
                record(n, Call::Reap, inv, ret);
            }
            94..=95 => {
                let active = rng.below(2) == 0;
                let limit = 1 + rng.below(4) as usize;
                let mut listed = Vec::new();
                let mut after: Option<String> = None;
                let whole = loop {
                    let mut query = if active {
                        ListQuery::active()
                    } else {
                        ListQuery::all()
                    };
                    query = query.limit(limit);
                    if let Some(cursor) = &after {
                        query = query.after(cursor);
                    }
                    match store.list(&query) {
                        Ok(page) => {
                            let clean = page.skipped.is_empty();
                            listed.extend(page.tasks);
                            match page.next_cursor {
                                Some(c) => after = Some(c),
                                None => break clean,
                            }
                        }
                        Err(_) => break false,
                    }
                };
                for n in 0..ids() {
                    match listed.iter().find(|t| t.id == task_id(n)) {
                        Some(t) => record(n, Call::Read, inv, Ret::Task(Some(view(t)))),
                        None if whole => record(n, Call::Unlisted { active }, inv, Ret::Task(None)),
                        None => {}
                    }
                }
            }
            98 => {
                // A sweep deletes expired tasks only, and before it
                // returns, whatever it returns.
                let _ = store.sweep();
                let ret = Ret::Untouched;
                for n in 0..ids() {
                    record(n, Call::Sweep, inv, ret.clone());
                }
            }
            99 => {
                let ret = match store.renew_leases() {
                    Ok(_) => Ret::Untouched,
                    Err(e) => Ret::Unknown(e.to_string()),
                };
                for n in 0..ids() {
                    record(n, Call::RenewAll, inv, ret.clone());
                }
            }
            97 => {
                // Renewals of a few tasks in one batch.
                let ns: Vec<usize> = (0..ids()).filter(|_| rng.below(2) == 0).collect();
                let ids: Vec<TaskId> = ns.iter().map(|&n| task_id(n)).collect();
                for (&n, r) in ns.iter().zip(store.renew_leases_of(&ids)) {
                    let ret = transition(r);
                    note(&mut seen, &ret);
                    record(n, Call::Renew, inv, ret);
                }
            }
            _ => {
                let all: Vec<TaskId> = (0..ids()).map(task_id).collect();
                for (n, got) in store.get_all(&all).into_iter().enumerate() {
                    if let Ok(Some(t)) = got {
                        record(n, Call::Read, inv, Ret::Task(Some(view(&t))));
                    }
                }
            }
        }
    }
}

/// Records one pass (a claim, a reap) as one operation per task.
fn pass(
    results: Result<taskstore::Claimed, Error>,
    call: Call,
    inv: (u128, u128),
    record: &mut impl FnMut(usize, Call, (u128, u128), Ret),
) {
    let (tasks, missed) = match results {
        Ok(p) => (p.tasks, p.missed),
        Err(e) => {
            // The pass failed as a whole: it fails so only when it cannot
            // read the tasks it would write (src/rules/maintenance.rs), so
            // it must have changed nothing.
            for n in 0..ids() {
                record(n, call.clone(), inv, Ret::Nothing(e.to_string()));
            }
            return;
        }
    };
    for n in 0..ids() {
        let id = task_id(n);
        let ret = if let Some(t) = tasks.iter().find(|t| t.id == id) {
            Ret::Task(Some(view(t)))
        } else if let Some(m) = missed.iter().find(|m| m.id == id) {
            match failure(&m.error) {
                Ret::Nothing(s) => Ret::Nothing(s),
                other => Ret::Unknown(format!("{other:?}")),
            }
        } else {
            Ret::Untouched
        };
        record(n, call.clone(), inv, ret);
    }
}

/// Runs `threads` threads of work in this process, on `handles` handles
/// (threads share them round robin), and returns their operations.
fn run_here(
    conninfo: &str,
    schema: &str,
    name: &str,
    handles: usize,
    threads: usize,
    seed: u64,
) -> Vec<Op> {
    let stores: Vec<(PgStore, String)> = (0..handles)
        .map(|h| {
            let instance = format!("{name}-h{h}");
            // The first handle's threads share one connection, and wait
            // for it only a little: calls fail before they send anything.
            let store = if h == 0 {
                open_with(conninfo, schema, &instance, 1, Duration::from_millis(15))
            } else {
                open(conninfo, schema, &instance)
            };
            let token = token_of(&store, &instance);
            (store, token)
        })
        .collect();
    let log = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..threads {
            let (store, token) = &stores[t % handles];
            let log = &log;
            let at = format!("{name}/t{t}");
            s.spawn(move || {
                work(
                    store,
                    token,
                    &at,
                    seed ^ (t as u64 + 1).wrapping_mul(7919),
                    ops_per_thread(),
                    log,
                )
            });
        }
    });
    log.into_inner().unwrap()
}

// ---------------------------------------------------------------------------
// The model of one task, and the search.

/// One task as the model holds it: the task, if any, and when it expires
/// (the earliest and latest instant it may, in Unix nanoseconds: a create
/// of unknown outcome read its clock somewhere within its call).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct State {
    task: Option<View>,
    expires: Option<(u128, u128)>,
}

const NO_TASK: State = State {
    task: None,
    expires: None,
};

fn terminal(status: &str) -> bool {
    matches!(status, "completed" | "failed" | "cancelled")
}

fn claimable(v: &View) -> bool {
    !terminal(&v.status) && v.owner.is_none() && v.attempts.is_some_and(|a| a < MAX_ATTEMPTS)
}

fn reapable(v: &View) -> bool {
    // Released (no owner's open holds it): an orphan at once. A resumable
    // one with attempts left waits for a claim for the claim grace (the
    // lease, longer than the run).
    !terminal(&v.status) && v.owner.is_none() && v.attempts.is_none_or(|a| a >= MAX_ATTEMPTS)
}

/// The states `op` may leave from `state`, its result agreeing (none if it
/// cannot be linearized there). An operation of unknown outcome may have
/// any result. `undone`: the handles' failed creates and claims (a task of
/// one of them is no caller's to renew or release: `NotFound`).
fn step(state: &State, op: &Op, undone: &HashSet<(String, u64)>) -> Vec<State> {
    let unknown = matches!(op.ret, Ret::Unknown(_));
    // Whether the task had expired by the clock the call read (within its
    // call; any time after its invocation for one of unknown outcome).
    let until = if matches!(op.call, Call::Undo { .. }) {
        u128::MAX
    } else {
        op.resp_wall
    };
    let mut judged = Vec::new();
    match (&state.task, state.expires) {
        (Some(_), Some((lo, hi))) => {
            if until >= lo {
                judged.push(true);
            }
            if op.inv_wall < hi {
                judged.push(false);
            }
        }
        _ => judged.push(false),
    }
    let mut out = Vec::new();
    if unknown && !matches!(op.call, Call::Undo { .. }) {
        // Not applied at all.
        out.push(state.clone());
    }
    for expired in judged {
        let next = if expired {
            step_expired(state, op, undone)
        } else {
            step_live(state, op, undone)
        };
        for n in next {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    out
}

/// [`step`] on a task the call finds expired: gone for it, and deleted
/// (best effort) by it.
fn step_expired(state: &State, op: &Op, undone: &HashSet<(String, u64)>) -> Vec<State> {
    let unknown = matches!(op.ret, Ret::Unknown(_));
    let agrees = |expected: Ret| unknown || same(&expected, &op.ret);
    let gone_or_kept = vec![NO_TASK, state.clone()];
    match &op.call {
        Call::Create { .. } => step_live(&NO_TASK, op, undone),
        Call::Get if agrees(Ret::Task(None)) => gone_or_kept,
        Call::Unlisted { .. } | Call::Sweep | Call::RenewAll => gone_or_kept,
        Call::Update { .. } | Call::Finish { .. } | Call::Renew | Call::Release { .. }
            if agrees(Ret::NotFound) =>
        {
            gone_or_kept
        }
        Call::Delete if agrees(Ret::Deleted(false)) => vec![NO_TASK],
        Call::Claim | Call::Reap if agrees(Ret::Untouched) => gone_or_kept,
        Call::Undo { .. } => step_live(state, op, undone),
        _ => vec![],
    }
}

/// [`step`] on a task the call finds live (or none).
fn step_live(state: &State, op: &Op, undone: &HashSet<(String, u64)>) -> Vec<State> {
    let unknown = matches!(op.ret, Ret::Unknown(_));
    let s = &state.task;
    let me = &op.handle;
    // The next task, if `ret` agrees with `expected`.
    let check = |expected: Ret, next: Option<View>| -> Vec<State> {
        if unknown || same(&expected, &op.ret) {
            let expires = if next.is_some() { state.expires } else { None };
            vec![State {
                task: next,
                expires,
            }]
        } else {
            vec![]
        }
    };
    match (&op.call, s) {
        (
            Call::Create {
                inc,
                resumable,
                ttl_ms,
            },
            None,
        ) => {
            let v = View {
                inc: *inc,
                rev: 1,
                status: "working".into(),
                epoch: 1,
                owner: Some(me.clone()),
                attempts: resumable.then_some(1),
            };
            let expires = ttl_ms.map(|ms| {
                let ttl = u128::from(ms) * 1_000_000;
                match op.created {
                    Some(at) => (at + ttl, at + ttl),
                    None => (op.inv_wall + ttl, op.resp_wall + ttl),
                }
            });
            if unknown || same(&Ret::Task(Some(v.clone())), &op.ret) {
                vec![State {
                    task: Some(v),
                    expires,
                }]
            } else {
                vec![]
            }
        }
        (Call::Create { .. }, Some(v)) => check(Ret::Exists, Some(v.clone())),
        (Call::Undo { inc }, _) => match s {
            Some(v) if v.inc == *inc && v.rev == 1 => vec![NO_TASK],
            _ => vec![state.clone()],
        },
        (Call::Sweep, _) => vec![state.clone()],
        (Call::RenewAll, _) => match s {
            Some(v) if !terminal(&v.status) && v.owner.as_ref() == Some(me) => {
                let mut next = v.clone();
                next.rev += 1;
                vec![
                    state.clone(),
                    State {
                        task: Some(next),
                        expires: state.expires,
                    },
                ]
            }
            _ => vec![state.clone()],
        },
        (Call::Unlisted { active }, _) => match s {
            None => vec![state.clone()],
            Some(v) if *active && terminal(&v.status) => vec![state.clone()],
            Some(_) => vec![],
        },
        (Call::Get | Call::Read, _) => {
            if matches!(op.call, Call::Read) || !unknown {
                check(Ret::Task(s.clone()), s.clone())
            } else {
                vec![state.clone()]
            }
        }
        (Call::Update { .. } | Call::Finish { .. }, None) => check(Ret::NotFound, None),
        (
            Call::Update {
                status, fence, rev, ..
            },
            Some(v),
        ) => {
            if terminal(&v.status) {
                return check(Ret::Terminal(v.clone()), s.clone());
            }
            if fence.is_some_and(|e| e != v.epoch || v.owner.as_ref() != Some(me)) {
                return check(Ret::Fenced(v.clone()), s.clone());
            }
            if rev.is_some_and(|r| r != v.rev) {
                return check(Ret::Changed(v.clone()), s.clone());
            }
            let mut next = v.clone();
            next.rev += 1;
            if let Some(st) = status {
                next.status = st.clone();
            }
            check(Ret::Applied(next.clone()), Some(next))
        }
        (Call::Finish { status, fence }, Some(v)) => {
            if terminal(&v.status) {
                return check(Ret::Terminal(v.clone()), s.clone());
            }
            if fence.is_some_and(|e| e != v.epoch || v.owner.as_ref() != Some(me)) {
                return check(Ret::Fenced(v.clone()), s.clone());
            }
            let mut next = v.clone();
            next.rev += 1;
            next.status = status.clone();
            next.attempts = None;
            check(Ret::Applied(next.clone()), Some(next))
        }
        (Call::Delete, None) => check(Ret::Deleted(false), None),
        (Call::Delete, Some(_)) => check(Ret::Deleted(true), None),
        (Call::Renew | Call::Release { .. }, None) => check(Ret::NotFound, None),
        (Call::Renew | Call::Release { .. }, Some(v)) => {
            if terminal(&v.status) {
                return check(Ret::Terminal(v.clone()), s.clone());
            }
            if let Call::Release { epoch } = op.call
                && epoch != v.epoch
            {
                return check(Ret::Fenced(v.clone()), s.clone());
            }
            let mut out = Vec::new();
            if v.owner.as_ref() == Some(me)
                && (undone.contains(&(me.clone(), v.inc))
                    || undone.contains(&(me.clone(), op.id as u64 | CLAIMED)))
            {
                out.extend(check(Ret::NotFound, s.clone()));
            }
            if v.owner.as_ref() != Some(me) {
                out.extend(check(Ret::NotOwner, s.clone()));
                return out;
            }
            let mut next = v.clone();
            next.rev += 1;
            if matches!(op.call, Call::Release { .. }) {
                next.owner = None;
            }
            out.extend(check(Ret::Applied(next.clone()), Some(next)));
            out
        }
        (Call::Claim, _) => match s {
            Some(v) if claimable(v) => {
                let mut next = v.clone();
                next.rev += 1;
                next.epoch += 1;
                next.owner = Some(me.clone());
                next.attempts = v.attempts.map(|a| a + 1);
                check(Ret::Task(Some(next.clone())), Some(next))
            }
            _ => check(Ret::Untouched, s.clone()),
        },
        (Call::Reap, _) => match s {
            Some(v) if reapable(v) => {
                let mut next = v.clone();
                next.rev += 1;
                next.status = "failed".into();
                next.attempts = None;
                check(Ret::Task(Some(next.clone())), Some(next))
            }
            _ => check(Ret::Untouched, s.clone()),
        },
    }
}

/// Whether the search takes `op` in: not an error that changed nothing,
/// nor a read that failed.
fn kept(op: &Op) -> bool {
    match op.ret {
        Ret::Nothing(_) => false,
        Ret::Unknown(_) => !matches!(op.call, Call::Get | Call::Read | Call::Unlisted { .. }),
        _ => true,
    }
}

fn same(a: &Ret, b: &Ret) -> bool {
    serde_json::to_value(a).unwrap() == serde_json::to_value(b).unwrap()
}

/// Whether the operations on one task are linearizable from no task; on
/// failure, the longest linearizable prefix found.
fn linearizable(ops: &[Op], undone: &HashSet<(String, u64)>) -> Result<(), Vec<usize>> {
    // Errors that promise nothing changed are left out: had they changed
    // something, nothing else explains it.
    // So are reads that failed: they change nothing (but expired tasks,
    // which are gone for every reader anyway).
    let ops: Vec<&Op> = ops.iter().filter(|o| kept(o)).collect();
    let words = ops.len().div_ceil(64).max(1);
    // Every operation takes effect within its call, or not at all (an
    // operation of unknown outcome may be linearized as one that did
    // nothing), but the removal of a failed create's task, which a renewal
    // pass of its handle may make at any later time: it alone may be left
    // out, or come after its call.
    let required = ops
        .iter()
        .filter(|o| !matches!(o.call, Call::Undo { .. }))
        .count();
    let mut seen: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut best: Vec<usize> = Vec::new();
    let mut path = Vec::new();
    let mut done = vec![0u64; words];
    let mut budget: u64 = 5_000_000;
    #[allow(clippy::too_many_arguments)]
    fn search(
        ops: &[&Op],
        optional: &[bool],
        required: usize,
        linearized: usize,
        state: &State,
        done: &mut Vec<u64>,
        seen: &mut HashSet<(Vec<u64>, State)>,
        path: &mut Vec<usize>,
        best: &mut Vec<usize>,
        undone: &HashSet<(String, u64)>,
        budget: &mut u64,
    ) -> bool {
        if linearized == required {
            return true;
        }
        if *budget == 0 {
            // Undecided: taken as linearizable (said), never a failure.
            return true;
        }
        *budget -= 1;
        if !seen.insert((done.clone(), state.clone())) {
            return false;
        }
        if path.len() > best.len() {
            *best = path.clone();
        }
        let is_done = |done: &Vec<u64>, i: usize| done[i / 64] & (1 << (i % 64)) != 0;
        // The earliest response among required operations not linearized:
        // only operations invoked before it may go next.
        let horizon = (0..ops.len())
            .filter(|&i| !optional[i] && !is_done(done, i))
            .map(|i| ops[i].resp)
            .min()
            .unwrap_or(u128::MAX);
        for i in 0..ops.len() {
            if is_done(done, i) || ops[i].inv > horizon {
                continue;
            }
            for next in step(state, ops[i], undone) {
                done[i / 64] |= 1 << (i % 64);
                path.push(i);
                let l = linearized + usize::from(!optional[i]);
                if search(
                    ops, optional, required, l, &next, done, seen, path, best, undone, budget,
                ) {
                    return true;
                }
                path.pop();
                done[i / 64] &= !(1 << (i % 64));
            }
        }
        false
    }
    let mut sorted = ops.clone();
    sorted.sort_by_key(|o| o.inv);
    let optional: Vec<bool> = sorted
        .iter()
        .map(|o| matches!(o.call, Call::Undo { .. }))
        .collect();
    let found = search(
        &sorted,
        &optional,
        required,
        0,
        &NO_TASK,
        &mut done,
        &mut seen,
        &mut path,
        &mut best,
        undone,
        &mut budget,
    );
    if budget == 0 {
        eprintln!(
            "a task's history of {} operations was too large to decide",
            ops.len()
        );
    }
    if found { Ok(()) } else { Err(best) }
}

/// Checks every task's history; panics with the first that is not
/// linearizable, its operations and the seed.
fn check(ops: &[Op], seed: u64) -> usize {
    let undone: HashSet<(String, u64)> = ops
        .iter()
        .filter_map(|o| match (&o.call, &o.ret) {
            (Call::Create { inc, .. }, Ret::Unknown(_)) => Some((o.handle.clone(), *inc)),
            // A failed claim's task is no caller's either, whatever it is.
            (Call::Claim, Ret::Unknown(_)) => Some((o.handle.clone(), o.id as u64 | CLAIMED)),
            _ => None,
        })
        .collect();
    let mut by_id: HashMap<usize, Vec<Op>> = HashMap::new();
    for op in ops {
        by_id.entry(op.id).or_default().push(op.clone());
        if let (Call::Create { inc, .. }, Ret::Unknown(_)) = (&op.call, &op.ret) {
            let mut undo = op.clone();
            undo.call = Call::Undo { inc: *inc };
            by_id.entry(op.id).or_default().push(undo);
        }
    }
    let mut checked = 0;
    for n in 0..ids() {
        let mut history = by_id.remove(&n).unwrap_or_default();
        history.sort_by_key(|o| o.inv);
        checked += history.len();
        if let Err(best) = linearizable(&history, &undone) {
            let kept: Vec<&Op> = {
                let mut k: Vec<&Op> = history.iter().filter(|o| kept(o)).collect();
                k.sort_by_key(|o| o.inv);
                k
            };
            let t0 = history.first().map_or(0, |o| o.inv);
            let placed: Vec<*const Op> = best.iter().map(|&i| kept[i] as *const Op).collect();
            let mut lines = String::new();
            for o in &history {
                // `*`: in the longest linearizable prefix found.
                let mark = if placed.contains(&(o as *const Op)) {
                    '*'
                } else {
                    ' '
                };
                lines.push_str(&format!(
                    "{mark} [{:>9.3} .. {:>9.3} ms] {} {:?} -> {:?}\n",
                    (o.inv - t0) as f64 / 1e6,
                    (o.resp - t0) as f64 / 1e6,
                    o.at,
                    o.call,
                    o.ret
                ));
            }
            let prefix: Vec<String> = best
                .iter()
                .map(|&i| format!("{} {:?} -> {:?}", kept[i].at, kept[i].call, kept[i].ret))
                .collect();
            panic!(
                "task lin-{n} is not linearizable (seed {seed}); its {} operations:\n{lines}\
                 the longest linearizable prefix found:\n  {}",
                history.len(),
                prefix.join("\n  ")
            );
        }
    }
    checked
}

// ---------------------------------------------------------------------------
// The test.

/// Ends a random backend of the store's connections now and then, until
/// `stop`; returns how many it ended.
fn killer(cluster: &pg_cluster::Cluster, seed: u64, stop: &AtomicBool) -> usize {
    let mut client = cluster.client();
    let mut rng = Rng::new(seed);
    let mut killed = 0;
    while !stop.load(Ordering::SeqCst) {
        let gap: u64 = std::env::var("TASKSTORE_LIN_KILL_MS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(25);
        std::thread::sleep(Duration::from_millis(1 + rng.below(2 * gap)));
        let pids: Vec<i32> = client
            .query(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'taskstore' \
                 AND pid <> pg_backend_pid()",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        if pids.is_empty() {
            continue;
        }
        let pid = pids[rng.below(pids.len() as u64) as usize];
        client
            .execute("SELECT pg_terminate_backend($1)", &[&pid])
            .unwrap();
        killed += 1;
    }
    killed
}

/// Loses the reply to a statement about a random task now and then, after
/// the server committed it (the connection cut), until `stop`; returns
/// how many it lost.
fn cutter(proxy: &pg_cluster::LosesAReply, seed: u64, stop: &AtomicBool) -> usize {
    let mut rng = Rng::new(seed);
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1 + rng.below(40)));
        let marker = format!("lin-{}", rng.below(ids() as u64));
        proxy.arm(&[&marker]);
    }
    proxy.cuts()
}

#[test]
fn concurrent_histories_over_postgres_are_linearizable() {
    let test = "concurrent_histories_over_postgres_are_linearizable";
    if let Some((_, args)) = role() {
        // A child: args are conninfo, schema, out file, name, seed.
        let seed: u64 = args[4].parse().unwrap();
        let ops = run_here(&args[0], &args[1], &args[3], 1, CHILD_THREADS, seed);
        common::write_atomic(Path::new(&args[2]), &serde_json::to_vec(&ops).unwrap());
        return;
    }
    if let Ok(path) = std::env::var("TASKSTORE_LIN_CHECK") {
        // Checks a history dumped by an earlier run (`TASKSTORE_LIN_DUMP`).
        let ops: Vec<Op> = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        check(&ops, 0);
        return;
    }
    let Some(cluster) = pg_cluster::shared() else {
        return;
    };
    let seed = std::env::var("TASKSTORE_LIN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| Rng::new(nanos() as u64 ^ u64::from(std::process::id())).next() >> 1);
    eprintln!("{test}: TASKSTORE_LIN_SEED={seed} replays its operations' choices");
    let kills = std::env::var("TASKSTORE_LIN_KILLS").map_or(true, |v| v != "0");
    let cuts = std::env::var("TASKSTORE_LIN_CUTS").map_or(true, |v| v != "0");
    let proxy = pg_cluster::LosesAReply::start(cluster);
    let conninfo = if cuts {
        proxy.conninfo()
    } else {
        cluster.conninfo()
    };
    let schema = pg_cluster::fresh_schema("lin");
    // The schema made before anything is killed.
    drop(open(&conninfo, &schema, "maker"));
    let work_dir = tempfile::tempdir().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (ops, killed, cut) = std::thread::scope(|s| {
        let killing = kills.then(|| {
            let stop = stop.clone();
            s.spawn(move || killer(cluster, seed ^ 0xdead, &stop))
        });
        let cutting = cuts.then(|| {
            let (stop, proxy) = (stop.clone(), &proxy);
            s.spawn(move || cutter(proxy, seed ^ 0xbeef, &stop))
        });
        let children: Vec<_> = (0..CHILDREN)
            .map(|c| {
                let out = work_dir.path().join(format!("ops-{c}.json"));
                let args = vec![
                    conninfo.clone(),
                    schema.clone(),
                    out.display().to_string(),
                    format!("child{c}"),
                    seed.wrapping_add(c as u64 + 1).wrapping_mul(31).to_string(),
                ];
                spawn(work_dir.path(), test, "worker", &args)
            })
            .collect();
        let mut ops = run_here(&conninfo, &schema, "parent", 2, PARENT_THREADS, seed);
        children.into_iter().for_each(common::Running::finish);
        stop.store(true, Ordering::SeqCst);
        let killed = killing.map_or(0, |k| k.join().unwrap());
        let cut = cutting.map_or(0, |k| k.join().unwrap());
        for c in 0..CHILDREN {
            let bytes = std::fs::read(work_dir.path().join(format!("ops-{c}.json"))).unwrap();
            ops.extend(serde_json::from_slice::<Vec<Op>>(&bytes).unwrap());
        }
        (ops, killed, cut)
    });
    let unknown = ops
        .iter()
        .filter(|o| matches!(o.ret, Ret::Unknown(_)))
        .count();
    let nothing = ops
        .iter()
        .filter(|o| matches!(o.ret, Ret::Nothing(_)))
        .count();
    if let Ok(path) = std::env::var("TASKSTORE_LIN_DUMP") {
        std::fs::write(path, serde_json::to_vec(&ops).unwrap()).unwrap();
    }
    let checked = check(&ops, seed);
    // The active-task counter counts the active rows, whatever was lost.
    let (counter, active) = pg_cluster::counter_and_active(&mut cluster.client(), &schema);
    assert_eq!(
        counter, active,
        "the active-task counter is out (seed {seed})"
    );
    eprintln!(
        "{test}: {checked} operations on {} tasks linearizable ({unknown} of unknown outcome, \
         {nothing} that changed nothing; {killed} backends ended, {cut} replies lost)",
        ids()
    );
}
