//! Linearizability of a `FileStore` under real concurrency: threads in this
//! process and in child processes (this test binary again, see
//! `common::spawn`) run random operations on a few task ids at once, each
//! handle its own open of one store directory. Every call is recorded with
//! the times it was made and answered (`CLOCK_REALTIME`, which every
//! process of the host shares and the stores read: [`now_ns`]) and what it
//! returned; the merged history is
//! then checked, task id by task id, for a sequential order that respects
//! real time and that a model of one task (the rules of CONSISTENCY.md and
//! the crate docs) accepts (the Wing–Gong search, with Porcupine's cache of
//! states met).
//!
//! Passes over many tasks are checked per task: a listing's answer for each
//! id (listed as this version, or left out by its filter or because it is
//! missing) must hold at some point within the listing; a claim's or a
//! reap's task is a write at some point within its pass. A pass leaving a
//! task out is not checked (it may have judged it before it changed).
//!
//! A task's expiry (TTLs of a few to a few hundred milliseconds) and its
//! lease's lapse (rounds with leases of a few hundred milliseconds) are
//! instants on the same clock as the calls' times: a call sees the task
//! gone, or an orphan, if it may take effect at or after that instant.
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

mod common;

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{Rng, spawn, touch};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use taskstore::{
    Durability, Error, FileStore, ListQuery, NewTask, Outcome, Task, TaskId, TaskStatus, TaskStore,
    TaskUpdate, Transition,
};

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
/// Leases this long never lapse in a round.
const LONG_LEASE_MS: u64 = 3_600_000;
/// The kind of resumable work every claim here resumes.
const KIND: &str = "k";

fn key(n: usize) -> TaskId {
    TaskId::parse(&format!("k{n}")).unwrap()
}

/// The time a call is made or answered: the system's real-time clock, which
/// every process of the host shares and the stores here read (their
/// `SystemClock`), so that a task's expiry (`createdAt + ttl`) is on the
/// same line as the calls' times.
fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a timespec, a clock every Linux has.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    u64::try_from(ts.tv_sec).unwrap() * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap()
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

/// Which tasks a listing asks for.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Filter {
    All,
    Active,
    Status(TaskStatus),
}

impl Filter {
    fn query(&self) -> ListQuery {
        match self {
            Filter::All => ListQuery::all(),
            Filter::Active => ListQuery::active(),
            Filter::Status(s) => ListQuery::all().status(*s),
        }
    }

    fn admits(&self, task: &Task) -> bool {
        match self {
            Filter::All => true,
            Filter::Active => !task.is_terminal(),
            Filter::Status(s) => task.status == *s,
        }
    }
}

/// A call on one task id, as the checker sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Call {
    Create {
        marker: String,
        resumable: bool,
        ttl_ms: Option<u64>,
    },
    Get,
    Update {
        value: String,
        status: Option<TaskStatus>,
        if_revision: Option<u64>,
        fence: Option<u64>,
        leave_lease: bool,
        checkpoint: bool,
        /// A status message (the value) and this poll interval (ms) set
        /// too.
        message: Option<u64>,
    },
    Finish {
        how: u8,
        value: String,
        fence: Option<u64>,
    },
    Delete,
    RenewLease,
    Release {
        epoch: u64,
    },
    /// A listing's answer for this id.
    Listed {
        filter: Filter,
    },
    /// A claim that returned this id's task.
    Claimed,
    /// A reap that returned this id's task.
    Reaped,
    /// `reap_task` of this id.
    ReapOne,
    /// A page of a listing in pages: this id's task, if the page holds it
    /// (a page says nothing of the tasks it does not hold).
    Paged {
        filter: Filter,
    },
    /// `renew_leases`: this id's task renewed, if it is one of the
    /// handle's running tasks (the call says only how many it renewed).
    RenewAll,
    /// A batch write whose lease may have lapsed while it was written (the
    /// call lasted a lease or more): a claim or a batch renewal then
    /// writes the task twice, renewing it again at once (documented:
    /// `leases::a_renewal_or_claim_that_waited_past_its_lease_hands_out_no_lapsed_lease`),
    /// and another call's write may come in between, or the second write
    /// fails and the claim is reported missed though its first stands
    /// (`renewed_claim`). Or a write under way when its process was
    /// killed. What it wrote is not all known, so this id's history is not
    /// checked.
    Unsure,
}

/// What a call returned.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Ret {
    Task(Option<Task>),
    Applied(Task),
    AlreadyTerminal(Task),
    Fenced(Task),
    Changed(Task),
    Deleted(bool),
    NotFound,
    AlreadyExists,
    NotOwner,
    /// Any other error: never expected here.
    Other(String),
}

/// One recorded call.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Op {
    /// The handle: its instance id and open's token.
    instance: String,
    token: String,
    thread: String,
    id: usize,
    call: Call,
    ret: Ret,
    start: u64,
    end: u64,
    /// The handle's lease, in nanoseconds.
    lease_ns: u64,
}

fn transition(r: taskstore::Result<Transition>) -> Ret {
    match r {
        Ok(Transition::Applied(t)) => Ret::Applied(t),
        Ok(Transition::AlreadyTerminal(t)) => Ret::AlreadyTerminal(t),
        Ok(Transition::Fenced(t)) => Ret::Fenced(t),
        Ok(Transition::Changed(t)) => Ret::Changed(t),
        Ok(other) => Ret::Other(format!("{other:?}")),
        Err(e) => error(e),
    }
}

fn error(e: Error) -> Ret {
    match e {
        Error::NotFound { .. } => Ret::NotFound,
        Error::AlreadyExists { .. } => Ret::AlreadyExists,
        Error::NotOwner { .. } => Ret::NotOwner,
        e => Ret::Other(e.to_string()),
    }
}

/// The token of a handle's open: the owner token of a task it makes.
fn token_of(store: &FileStore, instance: &str, thread: &str) -> String {
    let probe = TaskId::parse(&format!("probe-{instance}-{thread}")).unwrap();
    let task = store.create(NewTask::new().id(probe.clone())).unwrap();
    assert!(store.delete(&probe).unwrap());
    task.owner_token.expect("a new task names its owner's open")
}

/// Runs `ops` random calls through `store`, recording each.
/// A line of a child's history, written as it goes (a child may be
/// killed): a call about to be made, with the ids it may write, or a call
/// made.
#[derive(Debug, Serialize, Deserialize)]
enum Line {
    Calling { thread: String, writes: Vec<usize> },
    Made(Box<Op>),
}

/// The ids call number `dice` (of `run_calls`) may write, `k` its id.
fn writes_of(dice: u64, k: usize) -> Vec<usize> {
    match dice {
        0..12 | 22..74 | 94 => vec![k],
        74..81 | 88 | 89 | 97.. => (0..keys()).collect(),
        _ => Vec::new(),
    }
}

fn run_calls(
    store: &FileStore,
    (instance, thread): (&str, &str),
    (path, knobs): (&Path, Knobs),
    seed: u64,
    ops: usize,
    log: Option<&std::sync::Mutex<fs::File>>,
) -> Vec<Op> {
    let token = token_of(store, instance, thread);
    let mut rng = Rng::new(seed);
    let mut seen: BTreeMap<usize, Task> = BTreeMap::new();
    let mut out = Vec::new();
    for n in 0..ops {
        // Half the calls go to a few hot ids; the rest fall off, so that
        // cold ids stand still long enough for their files to settle (what
        // a handle without change notices trusts, `file::stamp`).
        let k = if rng.below(2) == 0 {
            usize::try_from(rng.below(keys() as u64)).unwrap()
        } else {
            (rng.next().trailing_zeros() as usize).min(keys() - 1)
        };
        if rng.below(100) == 0 {
            std::thread::sleep(Duration::from_millis(20 + rng.below(130)));
        }
        let id = key(k);
        let marker = format!("{thread}-{n}");
        let last_rev = seen
            .get(&k)
            .map_or(1 + rng.below(3), |t| t.revision + rng.below(2));
        let last_epoch = seen.get(&k).map_or(1, |t| t.epoch);
        let made = out.len();
        let mut record = |id: usize, call: Call, ret: Ret, start: u64, end: u64| {
            out.push(Op {
                instance: instance.to_owned(),
                token: token.clone(),
                thread: thread.to_owned(),
                id,
                call,
                ret,
                start,
                end,
                lease_ns: knobs.lease_ms * 1_000_000,
            });
        };
        let dice = rng.below(100);
        let write_line = |line: &Line| {
            if let Some(log) = log {
                use std::io::Write;
                let mut text = serde_json::to_string(line).unwrap();
                text.push('\n');
                log.lock().unwrap().write_all(text.as_bytes()).unwrap();
            }
        };
        write_line(&Line::Calling {
            thread: thread.to_owned(),
            writes: writes_of(dice, k),
        });
        let start = now_ns();
        match dice {
            0..12 => {
                let resumable = rng.below(2) == 0;
                let ttl_ms = (rng.below(2) == 0).then(|| 2 + rng.below(200));
                let mut new = NewTask::new().id(id).metadata("m", marker.clone());
                if resumable {
                    new = new.resumable(KIND, json!(marker));
                }
                if let Some(ms) = ttl_ms {
                    new = new.ttl(Duration::from_millis(ms));
                }
                let ret = match store.create(new) {
                    Ok(t) => Ret::Applied(t),
                    Err(e) => error(e),
                };
                let call = Call::Create {
                    marker,
                    resumable,
                    ttl_ms,
                };
                record(k, call, ret, start, now_ns());
            }
            12..22 => {
                let ret = match store.get(&id) {
                    Ok(t) => Ret::Task(t),
                    Err(e) => error(e),
                };
                record(k, Call::Get, ret, start, now_ns());
            }
            22..47 => {
                let status = match rng.below(4) {
                    0 => Some(TaskStatus::InputRequired),
                    1 => Some(TaskStatus::Working),
                    _ => None,
                };
                let if_revision = (rng.below(3) == 0).then_some(last_rev);
                let fence = (rng.below(4) == 0).then_some(last_epoch);
                let leave_lease = rng.below(4) == 0;
                let checkpoint = rng.below(3) == 0;
                let message = (rng.below(3) == 0).then(|| 1 + rng.below(1_000));
                let mut u = TaskUpdate::new().metadata("u", marker.clone());
                if let Some(ms) = message {
                    u = u
                        .status_message(marker.clone())
                        .poll_interval(Duration::from_millis(ms));
                }
                if let Some(s) = status {
                    u = u.status(s);
                    if s == TaskStatus::InputRequired {
                        u = u.input_requests(json!({ "q": marker }));
                    }
                }
                if let Some(r) = if_revision {
                    u = u.if_revision(r);
                }
                if let Some(e) = fence {
                    u = u.fenced(e);
                }
                if leave_lease {
                    u = u.leave_lease();
                }
                if checkpoint {
                    u = u.checkpoint(json!(marker));
                }
                let ret = transition(store.update(&id, u));
                let call = Call::Update {
                    message,
                    value: marker,
                    status,
                    if_revision,
                    fence,
                    leave_lease,
                    checkpoint,
                };
                record(k, call, ret, start, now_ns());
            }
            47..54 => {
                let how = u8::try_from(rng.below(4)).unwrap();
                let fence = (rng.below(3) == 0).then_some(last_epoch);
                let outcome = outcome(how, &marker);
                let ret = transition(match fence {
                    Some(e) => store.finish_fenced(&id, outcome, e),
                    None => store.finish(&id, outcome),
                });
                let call = Call::Finish {
                    how,
                    value: marker,
                    fence,
                };
                record(k, call, ret, start, now_ns());
            }
            54..62 => {
                let ret = match store.delete(&id) {
                    Ok(b) => Ret::Deleted(b),
                    Err(e) => error(e),
                };
                record(k, Call::Delete, ret, start, now_ns());
            }
            62..66 => {
                let ret = transition(store.renew_lease(&id));
                record(k, Call::RenewLease, ret, start, now_ns());
            }
            66..74 => {
                let ret = transition(store.release(&id, last_epoch));
                let call = Call::Release { epoch: last_epoch };
                record(k, call, ret, start, now_ns());
            }
            74..81 => {
                let claim = dice < 79;
                let pass = if claim {
                    store.claim(&[KIND])
                } else {
                    store.reap()
                };
                let end = now_ns();
                match pass {
                    Ok(pass) => {
                        let lapsed = end - start >= knobs.lease_ms * 1_000_000;
                        for t in pass.tasks {
                            if let Some(k) = (0..keys()).find(|&k| key(k) == t.id) {
                                let call = match (claim, lapsed) {
                                    (true, true) => Call::Unsure,
                                    (true, false) => Call::Claimed,
                                    (false, _) => Call::Reaped,
                                };
                                record(k, call, Ret::Applied(t), start, end);
                            }
                        }
                        for m in pass.missed {
                            if let Some(k) = (0..keys()).find(|&k| key(k) == m.id) {
                                let call = if claim && lapsed {
                                    Call::Unsure
                                } else {
                                    Call::Get
                                };
                                record(k, call, Ret::Other(m.error.to_string()), start, end);
                            }
                        }
                    }
                    Err(e) => record(k, Call::Get, Ret::Other(e.to_string()), start, end),
                }
            }
            86..88 => {
                let filter =
                    [Filter::All, Filter::Active][usize::try_from(rng.below(2)).unwrap()].clone();
                let limit = usize::try_from(1 + rng.below(3)).unwrap();
                let mut query = filter.query().limit(limit);
                let mut listed = vec![false; keys()];
                let walk = now_ns();
                loop {
                    let start = now_ns();
                    let page = store.list(&query);
                    let end = now_ns();
                    match page {
                        Ok(page) => {
                            for t in &page.tasks {
                                if let Some(k) = (0..keys()).find(|&k| key(k) == t.id) {
                                    listed[k] = true;
                                    let call = Call::Paged {
                                        filter: filter.clone(),
                                    };
                                    record(k, call, Ret::Task(Some(t.clone())), start, end);
                                }
                            }
                            match page.next_cursor {
                                Some(cursor) => query = filter.query().limit(limit).after(&cursor),
                                None => {
                                    // A task no page held was missing, or
                                    // left out by the filter, at some
                                    // point of the walk: one live and
                                    // listed throughout keeps its place
                                    // (its creation time, then its id),
                                    // which some page covers.
                                    for k in (0..keys()).filter(|&k| !listed[k]) {
                                        let call = Call::Listed {
                                            filter: filter.clone(),
                                        };
                                        record(k, call, Ret::Task(None), walk, end);
                                    }
                                    break;
                                }
                            }
                        }
                        Err(e) => {
                            record(k, Call::Get, Ret::Other(e.to_string()), start, end);
                            break;
                        }
                    }
                }
            }
            88 if knobs.lease_ms >= LONG_LEASE_MS => {
                let renewed = store.renew_leases();
                let end = now_ns();
                match renewed {
                    Ok(_) => {
                        for k in 0..keys() {
                            record(k, Call::RenewAll, Ret::Task(None), start, end);
                        }
                    }
                    Err(e) => record(k, Call::Get, Ret::Other(e.to_string()), start, end),
                }
            }
            81..86 => {
                let filter = match rng.below(5) {
                    0 | 1 => Filter::Active,
                    2 => Filter::All,
                    3 => Filter::Status(TaskStatus::Working),
                    _ => Filter::Status(
                        [
                            TaskStatus::InputRequired,
                            TaskStatus::Completed,
                            TaskStatus::Failed,
                            TaskStatus::Cancelled,
                        ][usize::try_from(rng.below(4)).unwrap()],
                    ),
                };
                let page = store.list(&filter.query());
                let end = now_ns();
                match page {
                    Ok(page) => {
                        for k in 0..keys() {
                            let found = page.tasks.iter().find(|t| t.id == key(k)).cloned();
                            let call = Call::Listed {
                                filter: filter.clone(),
                            };
                            record(k, call, Ret::Task(found), start, end);
                        }
                        if !page.skipped.is_empty() {
                            record(
                                k,
                                Call::Get,
                                Ret::Other(format!("skipped {:?}", page.skipped)),
                                start,
                                end,
                            );
                        }
                    }
                    Err(e) => record(k, Call::Get, Ret::Other(e.to_string()), start, end),
                }
            }
            89 => {
                // A handle opened for one call of any kind (a process
                // just started: its open cleans up and settles what it
                // finds), beside the others' calls.
                let fresh = open(
                    path,
                    instance,
                    Knobs {
                        notices: rng.below(2) == 0,
                        ..knobs
                    },
                );
                let thread = format!("{thread}f{n}");
                let made = run_calls(
                    &fresh,
                    (instance, &thread),
                    (path, knobs),
                    rng.next(),
                    1,
                    None,
                );
                out.extend(made);
            }
            90 => {
                // A handle opened for one read, as a process just started.
                let fresh = open(
                    path,
                    instance,
                    Knobs {
                        notices: rng.below(2) == 0,
                        ..knobs
                    },
                );
                let start = now_ns();
                if rng.below(2) == 0 {
                    let ret = match fresh.get(&id) {
                        Ok(t) => Ret::Task(t),
                        Err(e) => error(e),
                    };
                    record(k, Call::Get, ret, start, now_ns());
                } else {
                    let page = fresh.list(&ListQuery::all());
                    let end = now_ns();
                    match page {
                        Ok(page) => {
                            for k in 0..keys() {
                                let found = page.tasks.iter().find(|t| t.id == key(k)).cloned();
                                let call = Call::Listed {
                                    filter: Filter::All,
                                };
                                record(k, call, Ret::Task(found), start, end);
                            }
                        }
                        Err(e) => record(k, Call::Get, Ret::Other(e.to_string()), start, end),
                    }
                }
            }
            91 => {
                let ids: Vec<usize> = (0..3)
                    .map(|_| usize::try_from(rng.below(keys() as u64)).unwrap())
                    .collect();
                let tids: Vec<TaskId> = ids.iter().map(|&k| key(k)).collect();
                let all = store.get_all(&tids);
                let end = now_ns();
                for (k, r) in ids.into_iter().zip(all) {
                    let ret = match r {
                        Ok(t) => Ret::Task(t),
                        Err(e) => error(e),
                    };
                    record(k, Call::Get, ret, start, end);
                }
            }
            92..94 => {
                // Deletes expired tasks only: seen by the calls after it.
                if let Err(e) = store.sweep() {
                    record(k, Call::Get, Ret::Other(e.to_string()), start, now_ns());
                }
            }
            94 => {
                let ret = match store.reap_task(&id) {
                    Ok(t) => Ret::Task(t),
                    Err(e) => error(e),
                };
                record(k, Call::ReapOne, ret, start, now_ns());
            }
            95..97 => {
                if let Some(found) = store.try_get(&id) {
                    record(k, Call::Get, Ret::Task(found), start, now_ns());
                }
            }
            _ => {
                let ids: Vec<usize> = (0..2)
                    .map(|_| usize::try_from(rng.below(keys() as u64)).unwrap())
                    .collect();
                let tids: Vec<TaskId> = ids.iter().map(|&k| key(k)).collect();
                let all = store.renew_leases_of(&tids);
                let end = now_ns();
                let lapsed = end - start >= knobs.lease_ms * 1_000_000;
                for (k, r) in ids.into_iter().zip(all) {
                    let call = if lapsed {
                        Call::Unsure
                    } else {
                        Call::RenewLease
                    };
                    record(k, call, transition(r), start, end);
                }
            }
        }
        for op in &out[made..] {
            write_line(&Line::Made(Box::new(op.clone())));
        }
        // What this thread last saw of a task, for its next conditions.
        if let Some(op) = out.last()
            && let Some(t) = returned_task(&op.ret)
            && op.id == k
        {
            seen.insert(k, t.clone());
        }
    }
    out
}

fn outcome(how: u8, value: &str) -> Outcome {
    match how {
        0 => Outcome::Completed(json!({ "by": value })),
        1 => Outcome::Failed(json!({ "by": value })),
        2 => Outcome::Cancelled(Some(value.to_owned())),
        // Without a message: the task keeps the one it had.
        _ => Outcome::Cancelled(None),
    }
}

fn returned_task(ret: &Ret) -> Option<&Task> {
    match ret {
        Ret::Task(t) => t.as_ref(),
        Ret::Applied(t) | Ret::AlreadyTerminal(t) | Ret::Fenced(t) | Ret::Changed(t) => Some(t),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// The model of one task.

/// What the model compares of a task: all of it.
fn view(task: &Task) -> Task {
    task.clone()
}

fn ns(at: time::OffsetDateTime) -> u64 {
    u64::try_from(at.unix_timestamp_nanos()).unwrap_or(0)
}

/// Whether `at` is within `op`'s span, `shift` later (a lease read at a
/// time within the call, plus the lease).
fn within(op: &Op, at: Option<time::OffsetDateTime>, shift: u64) -> bool {
    at.is_some_and(|at| {
        let at = ns(at);
        op.start + shift <= at && at <= op.end + shift
    })
}

/// `next` with `t`'s lease, if it is a fresh one `op` gave (its time
/// within the call, plus the lease).
fn leased(mut next: Task, t: &Task, op: &Op) -> Option<Task> {
    next.lease_expires_at = t.lease_expires_at;
    within(op, t.lease_expires_at, op.lease_ns).then_some(next)
}

/// `next` with `t`'s `lastUpdatedAt`, if `op` stamped it within its span
/// (a write stamps the time it reads, which is within its call).
fn stamped(mut next: Task, t: &Task, op: &Op) -> Option<Task> {
    let at = u64::try_from(t.last_updated_at.unix_timestamp_nanos()).ok()?;
    next.last_updated_at = t.last_updated_at;
    (op.start <= at && at <= op.end).then_some(next)
}

/// Whether `found` is the model's `state`, as `op` sees it: in a round
/// whose leases never lapse, whatever the leases (`renew_leases` renews
/// some, saying which only by their number).
fn same(found: &Task, state: &Task, op: &Op) -> bool {
    if op.lease_ns >= LONG_LEASE_MS * 1_000_000 {
        let (mut a, mut b) = (found.clone(), state.clone());
        a.lease_expires_at = None;
        b.lease_expires_at = None;
        return a == b;
    }
    view(found) == *state
}

fn owns(op: &Op, t: &Task) -> bool {
    t.owner.as_deref() == Some(op.instance.as_str())
        && t.owner_token.as_deref() == Some(op.token.as_str())
}

/// An orphan at `at`: running, and its lease lapsed (lapsed by the time
/// the reaper's clock read, which is no later than `at`, and no earlier
/// than the call's start).
fn orphan(t: &Task, at: u64) -> bool {
    !t.is_terminal() && t.lease_expires_at.is_some_and(|l| ns(l) <= at)
}

/// The state after `op` from `state`, if the model accepts `op` there.
/// `Ret::Other` is never accepted: the workload expects no other error.
fn step(state: &Option<Task>, op: &Op, at: u64) -> Option<Option<Task>> {
    let keep = |t: &Task, s: &Task| same(t, s, op).then(|| Some(s.clone()));
    match (&op.call, &op.ret, state) {
        (Call::Create { .. }, Ret::AlreadyExists, Some(_)) => Some(state.clone()),
        (
            Call::Create {
                marker,
                resumable,
                ttl_ms,
            },
            Ret::Applied(t),
            None,
        ) => {
            let ok = t.id == key(op.id)
                && t.ttl == ttl_ms.map(Duration::from_millis)
                && t.status == TaskStatus::Working
                && t.revision == 1
                && t.epoch == 1
                && owns(op, t)
                && t.metadata.get("m") == Some(&json!(marker))
                && t.metadata.len() == 1
                && t.result.is_none()
                && t.error.is_none()
                && t.input_requests.is_none()
                && t.resume
                    .as_ref()
                    .map(|r| (r.kind.as_str(), &r.input, r.attempts, &r.checkpoint))
                    == resumable.then_some((KIND, &json!(marker), 1, &None))
                && t.last_updated_at == t.created_at
                && t.lease_expires_at.map(ns) == Some(ns(t.created_at) + op.lease_ns);
            if !ok {
                return None;
            }
            stamped(view(t), t, op).map(Some)
        }
        (Call::Get, Ret::Task(None), None) => Some(None),
        (Call::Get, Ret::Task(Some(t)), Some(s)) => keep(t, s),
        (Call::Listed { filter }, Ret::Task(None), s) => s
            .as_ref()
            .is_none_or(|s| !filter.admits(s))
            .then(|| state.clone()),
        (Call::Paged { filter } | Call::Listed { filter }, Ret::Task(Some(t)), Some(s)) => {
            if filter.admits(s) { keep(t, s) } else { None }
        }
        (Call::Delete, Ret::Deleted(true), Some(_)) => Some(None),
        (Call::Delete, Ret::Deleted(false), None) => Some(None),
        (
            Call::Update { .. } | Call::Finish { .. } | Call::RenewLease | Call::Release { .. },
            Ret::NotFound,
            None,
        ) => Some(None),
        (
            Call::Update { .. } | Call::Finish { .. } | Call::RenewLease | Call::Release { .. },
            Ret::AlreadyTerminal(t),
            Some(s),
        ) if s.is_terminal() => keep(t, s),
        (
            Call::Update {
                fence, if_revision, ..
            },
            _,
            Some(s),
        ) if !s.is_terminal() => {
            let fenced = fence.is_some_and(|e| e != s.epoch || !owns(op, s));
            let changed = !fenced && if_revision.is_some_and(|r| r != s.revision);
            match &op.ret {
                Ret::Fenced(t) if fenced => keep(t, s),
                Ret::Changed(t) if changed => keep(t, s),
                Ret::Applied(t) if !fenced && !changed => {
                    let mut next = stamped(updated(s, &op.call), t, op)?;
                    // The owner's writes renew its lease, unless asked not
                    // to; others' leave it.
                    if owns(op, s)
                        && !matches!(
                            op.call,
                            Call::Update {
                                leave_lease: true,
                                ..
                            }
                        )
                    {
                        next.lease_expires_at = t
                            .last_updated_at
                            .checked_add(time::Duration::nanoseconds(op.lease_ns as i64));
                    }
                    same(t, &next, op).then_some(Some(next))
                }
                _ => None,
            }
        }
        (Call::Finish { how, value, fence }, _, Some(s)) if !s.is_terminal() => {
            let fenced = fence.is_some_and(|e| e != s.epoch || !owns(op, s));
            match &op.ret {
                Ret::Fenced(t) if fenced => keep(t, s),
                Ret::Applied(t) if !fenced => {
                    let mut next = s.clone();
                    finished(&mut next, outcome(*how, value));
                    next.lease_expires_at = None;
                    let next = stamped(next, t, op)?;
                    same(t, &next, op).then_some(Some(next))
                }
                _ => None,
            }
        }
        (Call::RenewLease, _, Some(s)) if !s.is_terminal() => match &op.ret {
            Ret::NotOwner if !owns(op, s) => Some(state.clone()),
            Ret::Applied(t) if owns(op, s) => {
                let mut next = s.clone();
                next.revision += 1;
                let next = leased(next, t, op)?;
                same(t, &next, op).then_some(Some(next))
            }
            _ => None,
        },
        (Call::Release { epoch }, _, Some(s)) if !s.is_terminal() => match &op.ret {
            Ret::Fenced(t) if *epoch != s.epoch => keep(t, s),
            Ret::NotOwner if *epoch == s.epoch && !owns(op, s) => Some(state.clone()),
            Ret::Applied(t) if *epoch == s.epoch && owns(op, s) => {
                let mut next = s.clone();
                next.revision += 1;
                next.owner_token = None;
                // Lapsed at what the clock read, within the call.
                next.lease_expires_at = t.lease_expires_at;
                (within(op, t.lease_expires_at, 0) && same(t, &next, op)).then_some(Some(next))
            }
            _ => None,
        },
        (Call::Claimed, Ret::Applied(t), Some(s))
            if orphan(s, at)
                && s.resume
                    .as_ref()
                    .is_some_and(|r| r.kind == KIND && r.attempts < r.max_attempts) =>
        {
            let mut next = s.clone();
            next.revision += 1;
            next.epoch += 1;
            next.owner = Some(op.instance.clone());
            next.owner_token = Some(op.token.clone());
            if let Some(r) = &mut next.resume {
                r.attempts += 1;
            }
            let next = leased(next, t, op)?;
            same(t, &next, op).then_some(Some(next))
        }
        (Call::ReapOne, Ret::Task(None), s) => s
            .as_ref()
            .is_none_or(|s| !orphan(s, at))
            .then(|| state.clone()),
        (Call::Reaped | Call::ReapOne, Ret::Applied(t) | Ret::Task(Some(t)), Some(s))
            if orphan(s, at) =>
        {
            let mut next = s.clone();
            next.revision += 1;
            next.status = TaskStatus::Failed;
            next.input_requests = None;
            next.resume = None;
            next.error = t.error.clone();
            next.lease_expires_at = None;
            let next = stamped(next, t, op)?;
            let ok = t.error.as_ref().is_some_and(|e| e["code"] == "orphaned");
            (ok && same(t, &next, op)).then_some(Some(next))
        }
        _ => None,
    }
}

fn updated(s: &Task, call: &Call) -> Task {
    let Call::Update {
        value,
        status,
        checkpoint,
        message,
        ..
    } = call
    else {
        unreachable!()
    };
    let mut next = s.clone();
    if let Some(ms) = message {
        next.status_message = Some(value.clone());
        next.poll_interval = Some(Duration::from_millis(*ms));
    }
    if let Some(st) = status {
        if *st == TaskStatus::Working {
            next.input_requests = None;
        }
        if *st == TaskStatus::InputRequired {
            next.input_requests = Some(json!({ "q": value }));
        }
        next.status = *st;
    }
    if *checkpoint && let Some(r) = &mut next.resume {
        r.checkpoint = Some(json!(value));
    }
    next.metadata.insert("u".into(), json!(value));
    next.revision += 1;
    next
}

fn finished(next: &mut Task, outcome: Outcome) {
    next.input_requests = None;
    next.resume = None;
    next.revision += 1;
    match outcome {
        Outcome::Completed(v) => {
            next.status = TaskStatus::Completed;
            next.result = Some(v);
        }
        Outcome::Failed(v) => {
            next.status = TaskStatus::Failed;
            next.error = Some(v);
        }
        Outcome::Cancelled(m) => {
            next.status = TaskStatus::Cancelled;
            if m.is_some() {
                next.status_message = m;
            }
        }
        _ => unreachable!(),
    }
}

// ---------------------------------------------------------------------------
// The search.

/// When `task` expires, in nanoseconds of the real-time clock.
fn expiry_ns(task: &Task) -> Option<u64> {
    let at = task.expires_at()?.unix_timestamp_nanos();
    Some(u64::try_from(at).unwrap())
}

/// Each way `op` may take effect from `state` when the previous call took
/// effect at `floor`: the state after it and the instant it took effect.
/// A task is gone at its expiry for every call (lazy expiry): the call
/// takes effect at one instant within its span, no earlier than `floor`,
/// and sees the task live before the expiry and missing from it on.
fn steps(state: &Option<Task>, op: &Op, floor: u64) -> Vec<(Option<Task>, u64)> {
    let earliest = floor.max(op.start);
    if earliest > op.end {
        return Vec::new();
    }
    if matches!(op.call, Call::RenewAll) {
        // Renewed or not: the renewal is `renew_lease`'s, applied.
        let mut out = vec![(state.clone(), floor)];
        if let Some(s) = state
            && !s.is_terminal()
            && owns(op, s)
            && expiry_ns(s).is_none_or(|exp| earliest < exp)
        {
            // Its new lease is not known: the workload calls it only in
            // rounds whose leases never lapse, where a lease decides
            // nothing, and it is taken as it is read next.
            let mut next = s.clone();
            next.revision += 1;
            next.lease_expires_at = None;
            out.push((Some(next), earliest));
        }
        return out;
    }
    // The instants at which the call may take effect that tell apart
    // what it can see: its earliest, and the task's expiry and lease's
    // lapse within its span. Before the expiry the task is live; from it
    // on, gone.
    let mut instants = vec![earliest];
    if let Some(s) = state {
        for at in [expiry_ns(s), s.lease_expires_at.map(ns)]
            .into_iter()
            .flatten()
        {
            if earliest < at && at <= op.end {
                instants.push(at);
            }
        }
    }
    instants.sort_unstable();
    instants.dedup();
    let mut out = Vec::new();
    for at in instants {
        let expired = state
            .as_ref()
            .and_then(expiry_ns)
            .is_some_and(|exp| at >= exp);
        let seen = if expired { &None } else { state };
        if let Some(next) = step(seen, op, at) {
            out.push((next, at));
        }
    }
    out
}

/// Whether the history `ops` of one task id, from a missing task, has an
/// order within real time that the model accepts.
/// Or, if it has none, the longest order found (the calls' indexes) and
/// the state it leaves, to show where the history goes wrong.
fn linearizable(ops: &[Op]) -> Result<(), Box<Longest>> {
    let words = ops.len().div_ceil(64);
    let mut search = Search {
        ops,
        seen: HashSet::new(),
        order: Vec::new(),
        best: (Vec::new(), None),
    };
    let mut done = vec![0u64; words];
    if search.go(&mut done, (&None, 0)) {
        Ok(())
    } else {
        Err(Box::new(search.best))
    }
}

/// The longest order a failed search found (the calls' indexes), and the
/// state it leaves.
type Longest = (Vec<usize>, Option<Task>);

/// A Wing–Gong search with Porcupine's cache of the states met.
struct Search<'a> {
    ops: &'a [Op],
    seen: HashSet<(Vec<u64>, String, u64)>,
    /// The order being tried, and the longest tried.
    order: Vec<usize>,
    best: Longest,
}

impl Search<'_> {
    fn go(&mut self, done: &mut Vec<u64>, (state, floor): (&Option<Task>, u64)) -> bool {
        search(self, done, (state, floor))
    }
}

fn search(sr: &mut Search<'_>, done: &mut Vec<u64>, (state, floor): (&Option<Task>, u64)) -> bool {
    let ops = sr.ops;
    let count = sr.order.len();
    if count == ops.len() {
        return true;
    }
    if count > sr.best.0.len() {
        sr.best = (sr.order.clone(), state.clone());
    }
    let is_done = |done: &[u64], i: usize| done[i / 64] & (1 << (i % 64)) != 0;
    let horizon = (0..ops.len())
        .filter(|&i| !is_done(done, i))
        .map(|i| ops[i].end)
        .min()
        .unwrap();
    for i in 0..ops.len() {
        if is_done(done, i) || ops[i].start > horizon {
            continue;
        }
        for (next, at) in steps(state, &ops[i], floor) {
            // The floor matters only while the task can still expire or
            // lapse.
            let timed = next
                .as_ref()
                .is_some_and(|n| expiry_ns(n).is_some() || n.lease_expires_at.is_some());
            let at = if timed { at } else { 0 };
            done[i / 64] |= 1 << (i % 64);
            let key = (done.clone(), serde_json::to_string(&next).unwrap(), at);
            if sr.seen.insert(key) {
                sr.order.push(i);
                if search(sr, done, (&next, at)) {
                    return true;
                }
                sr.order.pop();
            }
            done[i / 64] &= !(1 << (i % 64));
        }
    }
    false
}

/// Checks every task id's history; panics with the first that is not
/// linearizable.
fn check(ops: &[Op], what: &str) -> usize {
    for e in ops {
        if let Ret::Other(msg) = &e.ret
            && !matches!(e.call, Call::Unsure)
        {
            panic!(
                "{what}: an unexpected error from {}/{}: {msg}\n{e:?}",
                e.instance, e.thread
            );
        }
    }
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for o in ops {
        let call = format!("{:?}", o.call);
        let call = call.split([' ', '{', '(']).next().unwrap().to_owned();
        let ret = format!("{:?}", o.ret);
        let ret = ret.split([' ', '{', '(']).next().unwrap().to_owned();
        *kinds.entry(format!("{call}->{ret}")).or_default() += 1;
    }
    eprintln!("{what}: {kinds:?}");
    let mut checked = 0;
    let mut unsure = Vec::new();
    for k in 0..keys() {
        let mut history: Vec<Op> = ops.iter().filter(|o| o.id == k).cloned().collect();
        if history.iter().any(|o| matches!(o.call, Call::Unsure)) {
            unsure.push(k);
            continue;
        }
        history.sort_by_key(|o| (o.start, o.end));
        if let Err(found) = linearizable(&history) {
            let (order, state) = *found;
            let mut text = String::new();
            let line = |o: &Op| {
                format!(
                    "[{:>9}..{:>9} us] {}/{} {:?}\n    -> {}\n",
                    us(o.start),
                    us(o.end),
                    o.instance,
                    o.thread,
                    o.call,
                    short(&o.ret),
                )
            };
            text += "The longest order found ends with:\n";
            for &i in order
                .iter()
                .rev()
                .take(8)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                text += &line(&history[i]);
            }
            text += &format!(
                "leaving {}\nand no call left can come next; the first of them:\n",
                short(&Ret::Task(state))
            );
            for (_, o) in history
                .iter()
                .enumerate()
                .filter(|(i, _)| !order.contains(i))
                .take(8)
            {
                text += &line(o);
            }
            text += "The whole history:\n";
            for o in &history {
                text += &format!(
                    "[{:>9}..{:>9} us] {}/{} {:?}\n    -> {}\n",
                    us(o.start),
                    us(o.end),
                    o.instance,
                    o.thread,
                    o.call,
                    short(&o.ret),
                );
            }
            panic!(
                "{what}: the history of task k{k} is not linearizable ({} calls):\n{text}",
                history.len()
            );
        }
        checked += history.len();
    }
    if !unsure.is_empty() {
        eprintln!(
            "{what}: not checked (a write under way in a killed child, or a batch write \
             that may have been made twice): tasks {unsure:?}"
        );
    }
    checked
}

/// A time in microseconds, within a thousand seconds (enough to tell the
/// times of one round apart).
fn us(ns: u64) -> u64 {
    (ns / 1_000) % 1_000_000_000
}

fn short(ret: &Ret) -> String {
    let t = |t: &Task| {
        format!(
            "{:?} rev {} epoch {} owner {:?}/{:?} created {} updated {} lease {:?} meta {} res {:?} err {:?} in {:?} resume {:?} msg {:?}",
            t.status,
            t.revision,
            t.epoch,
            t.owner,
            t.owner_token.as_deref().map(|s| &s[..6.min(s.len())]),
            us(ns(t.created_at)),
            us(ns(t.last_updated_at)),
            t.lease_expires_at.map(|l| us(ns(l))),
            Value::Object(t.metadata.clone()),
            t.result,
            t.error
                .as_ref()
                .map(|e| e.get("code").cloned().unwrap_or(e.clone())),
            t.input_requests,
            t.resume
                .as_ref()
                .map(|r| (r.attempts, r.checkpoint.clone())),
            t.status_message,
        )
    };
    match ret {
        Ret::Task(Some(x)) => format!("Some({})", t(x)),
        Ret::Applied(x) => format!("Applied({})", t(x)),
        Ret::AlreadyTerminal(x) => format!("AlreadyTerminal({})", t(x)),
        Ret::Fenced(x) => format!("Fenced({})", t(x)),
        Ret::Changed(x) => format!("Changed({})", t(x)),
        other => format!("{other:?}"),
    }
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
    // The search recurses once per call of a task's history: a stack of
    // its own, deep enough for long histories.
    let what = format!("seed {seed}, {knobs:?}");
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(move || check(&all, &what))
        .unwrap()
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
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
                    start: 0,
                    end: 0,
                    lease_ns: 0,
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
