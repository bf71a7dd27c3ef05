//! The linearizability check both backends' tests share
//! (`tests/linearizable.rs` for `FileStore`, `tests/pg_linearizable.rs` for
//! `PgStore`): the record of a call ([`Op`], [`Call`], [`Ret`]), the model
//! of one task (`model.rs`: the rules of src/rules/, which both backends
//! run) and the Wing–Gong search with Porcupine's cache of states met
//! (`search.rs`). The tests drive their backend, inject its faults and
//! handle their processes; what a history of one task may be is decided
//! here, once.
//!
//! Two clocks, each for what it is good for:
//!
//! - the order of calls in real time is taken from the monotonic clock
//!   ([`Stamp::mono`], `CLOCK_MONOTONIC`, what `std::time::Instant` reads
//!   on Linux, one clock for every process of the host), which no step of
//!   the wall clock moves, so such a step cannot fail a check;
//! - what the store judges by its clock (a task's expiry, a lease's lapse,
//!   the times a write stamps) is taken from the wall clock
//!   ([`Stamp::wall`], `CLOCK_REALTIME`, which the stores here read: their
//!   `SystemClock`, `TimeSource::Clock`). The model places a call at an
//!   instant of the monotonic clock within its span and reads the wall
//!   clock there as the call's own two readings tell ([`Op::wall_at`]).
//!
//! Included with `#[path]` by the two tests that use it, as `common/pg.rs`
//! is, so that no other test binary builds it.

#![allow(dead_code)] // each test records some kinds of calls only

mod model;
mod search;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use taskstore::{Error, ListQuery, Outcome, Task, TaskStatus, Transition};

pub use model::{Compare, Params};

/// Leases this long never lapse in a run: a task is an orphan only once
/// released, and returned tasks are compared whatever their leases (a
/// batch renewal says only how many it renewed).
pub const LONG_LEASE_MS: u64 = 3_600_000;

/// A moment of a call: both clocks, read together.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Stamp {
    /// The monotonic clock, in nanoseconds: the order of calls.
    pub mono: u64,
    /// The wall clock, in Unix nanoseconds: what the store reads.
    pub wall: u64,
}

impl Stamp {
    pub fn now() -> Stamp {
        Stamp {
            mono: clock(libc::CLOCK_MONOTONIC),
            wall: clock(libc::CLOCK_REALTIME),
        }
    }
}

fn clock(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a timespec, clocks every Linux has.
    let rc = unsafe { libc::clock_gettime(id, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    u64::try_from(ts.tv_sec).unwrap() * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap()
}

/// Which tasks a listing asks for.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Filter {
    All,
    Active,
    Status(TaskStatus),
}

impl Filter {
    pub fn query(&self) -> ListQuery {
        match self {
            Filter::All => ListQuery::all(),
            Filter::Active => ListQuery::active(),
            Filter::Status(s) => ListQuery::all().status(*s),
        }
    }

    pub fn admits(&self, task: &Task) -> bool {
        match self {
            Filter::All => true,
            Filter::Active => !task.is_terminal(),
            Filter::Status(s) => task.status == *s,
        }
    }
}

/// A call on one task id, as the checker sees it. The workloads make the
/// calls so that the model can tell what they write: a create's metadata
/// `m` is its `marker` (and its resumable input), an update's metadata `u`
/// its `value`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Call {
    Create {
        marker: String,
        resumable: bool,
        ttl_ms: Option<u64>,
        /// `NewTask::max_attempts`, if set.
        max_attempts: Option<u32>,
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
    /// `finish` (`finish_fenced` with a fence) with [`outcome`]`(how,
    /// value)`.
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
    /// A listing's answer for this id: the task, or none (left out by its
    /// filter, or missing) at some point within the listing.
    Listed {
        filter: Filter,
    },
    /// A page of a listing in pages: this id's task, if the page holds it
    /// (a page says nothing of the tasks it does not hold).
    Paged {
        filter: Filter,
    },
    /// One task of a claim pass: `Applied` (claimed) or `Untouched`.
    Claimed,
    /// One task of a reap pass: `Applied` (failed as an orphan) or
    /// `Untouched`.
    Reaped,
    /// `reap_task` of this id.
    ReapOne,
    /// One task of a sweep (which deletes expired tasks only).
    Sweep,
    /// `renew_leases`: this id's task renewed, if it is one of the
    /// handle's running tasks (the call says only how many it renewed).
    /// Made only where leases never lapse: its new lease is not known.
    RenewAll,
    /// What a workload cannot tell it wrote (a write under way in a child
    /// killed, a batch that may have written twice): this id's history is
    /// not checked.
    Unsure,
    /// The removal a create of unknown outcome makes of the version it
    /// may have made (then, or at a later renewal pass of its handle):
    /// added by [`check`], not recorded.
    Undo {
        marker: String,
    },
    /// The first of the two writes a claim (`claim`) or a renewal that
    /// lasted its lease may have made: a batch of fresh leases that
    /// returned after the lease it wrote had lapsed renews each task again
    /// within the call (`Returned::lapsed` in src/rules/maintenance.rs),
    /// and the call answers for the second write (a renewal of a task
    /// reaped or claimed since the first may answer that it changed
    /// nothing). Added by [`check`] beside each such call (a renewal
    /// whatever it answered, a claim that may have claimed), not recorded;
    /// the model takes it, if at all, before its call, which is then that
    /// renewal.
    First {
        claim: bool,
    },
}

/// What a call returned.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Ret {
    Task(Option<Task>),
    Applied(Task),
    AlreadyTerminal(Task),
    Fenced(Task),
    Changed(Task),
    Deleted(bool),
    NotFound,
    AlreadyExists,
    NotOwner,
    /// A write refused for what it asked (`Error::InvalidTask`: a
    /// checkpoint of a task that is not resumable); it changed nothing.
    InvalidTask,
    /// A pass left the task alone.
    Untouched,
    /// An error that promises nothing was applied
    /// (`Error::changed_nothing`): left out of the check.
    Nothing(String),
    /// An error after which the call may or may not have been applied
    /// (a lost connection): it took effect within its call, with any
    /// result, or not at all.
    Unknown(String),
    /// Any other error: never expected.
    Other(String),
}

/// One recorded call.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Op {
    /// The handle: its instance id and its open's token.
    pub instance: String,
    pub token: String,
    /// Where it ran (process and thread).
    pub thread: String,
    pub id: usize,
    pub call: Call,
    pub ret: Ret,
    /// When it was made and answered.
    pub start: Stamp,
    pub end: Stamp,
    /// The handle's lease, in nanoseconds.
    pub lease_ns: u64,
    /// How far the time the store read within the call may be from the
    /// wall clock's reading at that instant, in nanoseconds: none where the
    /// store reads the system clock; a store going by a database server's
    /// clock, carried on by the monotonic clock, is off by its measurement's
    /// error and the clocks' drift since.
    #[serde(default)]
    pub clock_ns: u64,
}

impl Op {
    /// The wall clock's reading at `mono`, an instant within the call, as
    /// the call's two readings tell (no later than its last).
    pub fn wall_at(&self, mono: u64) -> u64 {
        (self.start.wall + mono.saturating_sub(self.start.mono)).min(self.end.wall)
    }

    /// The instant within the call at which the wall clock reads `wall`.
    pub fn mono_at(&self, wall: u64) -> u64 {
        self.start.mono + wall.saturating_sub(self.start.wall)
    }

    /// Whether `at`, a time the store stamped, is one it may have read
    /// within the call.
    pub fn read_within(&self, at: u64) -> bool {
        self.start.wall.saturating_sub(self.clock_ns) <= at
            && at <= self.end.wall.saturating_add(self.clock_ns)
    }
}

/// A transition's result as recorded, an error by `error`.
pub fn transition(r: taskstore::Result<Transition>, error: fn(Error) -> Ret) -> Ret {
    match r {
        Ok(Transition::Applied(t)) => Ret::Applied(t),
        Ok(Transition::AlreadyTerminal(t)) => Ret::AlreadyTerminal(t),
        Ok(Transition::Fenced(t)) => Ret::Fenced(t),
        Ok(Transition::Changed(t)) => Ret::Changed(t),
        Ok(other) => Ret::Other(format!("{other:?}")),
        Err(e) => error(e),
    }
}

/// An error as the outcomes the rules name, any other as `other`.
pub fn error_or(e: Error, other: fn(Error) -> Ret) -> Ret {
    match e {
        Error::NotFound { .. } => Ret::NotFound,
        Error::AlreadyExists { .. } => Ret::AlreadyExists,
        Error::NotOwner { .. } => Ret::NotOwner,
        Error::InvalidTask { .. } => Ret::InvalidTask,
        e => other(e),
    }
}

/// The outcome a `Finish` call gives.
pub fn outcome(how: u8, value: &str) -> Outcome {
    match how {
        0 => Outcome::Completed(json!({ "by": value })),
        1 => Outcome::Failed(json!({ "by": value })),
        2 => Outcome::Cancelled(Some(value.to_owned())),
        // Without a message: the task keeps the one it had.
        _ => Outcome::Cancelled(None),
    }
}

/// The task a call returned, if any.
pub fn returned_task(ret: &Ret) -> Option<&Task> {
    match ret {
        Ret::Task(t) => t.as_ref(),
        Ret::Applied(t) | Ret::AlreadyTerminal(t) | Ret::Fenced(t) | Ret::Changed(t) => Some(t),
        _ => None,
    }
}

/// Checks every task id's history; panics with the first that is not
/// linearizable. Returns the number of calls checked.
pub fn check(ops: &[Op], params: &Params, what: &str) -> usize {
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
        let word = |s: String| s.split([' ', '{', '(']).next().unwrap().to_owned();
        let kind = format!(
            "{}->{}",
            word(format!("{:?}", o.call)),
            word(format!("{:?}", o.ret))
        );
        *kinds.entry(kind).or_default() += 1;
    }
    eprintln!("{what}: {kinds:?}");
    // A handle's creates and claims of unknown outcome: a task of one of
    // them may be no longer the caller's to renew or release (the handle
    // dropped it: `NotFound`).
    let undone: BTreeSet<model::Undone> = ops
        .iter()
        .filter(|o| matches!(o.ret, Ret::Unknown(_)))
        .filter_map(|o| match &o.call {
            Call::Create { marker, .. } => Some((o.token.clone(), Some(marker.clone()), o.id)),
            Call::Claimed => Some((o.token.clone(), None, o.id)),
            _ => None,
        })
        .collect();
    let mut by_id: HashMap<usize, Vec<Op>> = HashMap::new();
    for op in ops {
        by_id.entry(op.id).or_default().push(op.clone());
        let lasted = op
            .end
            .wall
            .saturating_sub(op.start.wall)
            .saturating_add(2 * op.clock_ns)
            >= op.lease_ns;
        // A renewal whatever it answered (its second write may have found
        // the task reaped since), a claim that may have claimed.
        let wrote = match op.call {
            Call::RenewLease => true,
            Call::Claimed => matches!(op.ret, Ret::Applied(_) | Ret::Unknown(_)),
            _ => false,
        };
        if wrote && lasted {
            let mut first = op.clone();
            first.call = Call::First {
                claim: matches!(op.call, Call::Claimed),
            };
            first.ret = Ret::Unknown("the first of two writes, if it made two".into());
            by_id.entry(op.id).or_default().push(first);
        }
        if let (Call::Create { marker, .. }, Ret::Unknown(_)) = (&op.call, &op.ret) {
            let mut undo = op.clone();
            undo.call = Call::Undo {
                marker: marker.clone(),
            };
            undo.end = Stamp {
                mono: u64::MAX,
                wall: u64::MAX,
            };
            by_id.entry(op.id).or_default().push(undo);
        }
    }
    let (what, params) = (what.to_owned(), params.clone());
    // The search recurses once per call of a task's history: a stack of
    // its own, deep enough for long histories.
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(move || check_each(by_id, &params, &undone, &what))
        .unwrap()
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn check_each(
    by_id: HashMap<usize, Vec<Op>>,
    params: &Params,
    undone: &BTreeSet<model::Undone>,
    what: &str,
) -> usize {
    let mut checked = 0;
    let mut unsure = Vec::new();
    let mut ids: Vec<usize> = by_id.keys().copied().collect();
    ids.sort_unstable();
    for k in ids {
        let history = &by_id[&k];
        if history.iter().any(|o| matches!(o.call, Call::Unsure)) {
            unsure.push(k);
            continue;
        }
        // Errors that promise nothing changed are left out: had they
        // changed something, nothing else explains it. So are reads that
        // failed: they change nothing.
        let mut kept: Vec<Op> = history.iter().filter(|o| kept(o)).cloned().collect();
        kept.sort_by_key(|o| (o.start.mono, o.end.mono));
        match model::linearizable(&kept, params, undone) {
            search::Found::Order => {}
            search::Found::Undecided => eprintln!(
                "{what}: the history of task {} ({} calls) was too large to decide",
                (params.id)(k),
                kept.len()
            ),
            search::Found::Not { order, state } => {
                panic!(
                    "{what}: the history of task {} is not linearizable ({} calls):\n{}",
                    (params.id)(k),
                    kept.len(),
                    report(&kept, &order, &state)
                );
            }
        }
        checked += kept.len();
    }
    if !unsure.is_empty() {
        eprintln!(
            "{what}: not checked (a write under way in a killed child, or a batch write \
             that may have been made twice): tasks {unsure:?}"
        );
    }
    checked
}

/// Whether the search takes `op` in: not an error that changed nothing,
/// nor a read that failed.
fn kept(op: &Op) -> bool {
    match op.ret {
        Ret::Nothing(_) => false,
        Ret::Unknown(_) => !matches!(
            op.call,
            Call::Get | Call::Listed { .. } | Call::Paged { .. }
        ),
        _ => true,
    }
}

/// Where a history goes wrong: the end of the longest order found, the
/// state it leaves, the calls that cannot come next, and the whole history
/// (`*` marks the calls of the order found).
fn report(history: &[Op], order: &[usize], state: &model::State) -> String {
    let t0 = history.first().map_or(0, |o| o.start.mono);
    let line = |i: usize, o: &Op| {
        let mark = if order.contains(&i) { '*' } else { ' ' };
        let end = o.end.mono.saturating_sub(t0).min(999_999_999_999);
        format!(
            "{mark} [{:>9}..{:>9} us] {}/{} {:?}\n    -> {}\n",
            (o.start.mono - t0) / 1_000,
            end / 1_000,
            o.instance,
            o.thread,
            o.call,
            short(&o.ret),
        )
    };
    let mut text = String::from("The longest order found ends with:\n");
    for &i in &order[order.len().saturating_sub(8)..] {
        text += &line(i, &history[i]);
    }
    text += &format!(
        "leaving {} (expiring {:?})\nand no call left can come next; the first of them:\n",
        short(&Ret::Task(state.task.clone())),
        state.expires
    );
    for (i, o) in history
        .iter()
        .enumerate()
        .filter(|(i, _)| !order.contains(i))
        .take(8)
    {
        text += &line(i, o);
    }
    text += "The whole history:\n";
    for (i, o) in history.iter().enumerate() {
        text += &line(i, o);
    }
    text
}

/// A time in microseconds, within a thousand seconds (enough to tell the
/// times of one run apart).
fn us(at: time::OffsetDateTime) -> i128 {
    (at.unix_timestamp_nanos() / 1_000) % 1_000_000_000
}

fn short(ret: &Ret) -> String {
    let t = |t: &Task| {
        format!(
            "{:?} rev {} epoch {} owner {:?}/{:?} created {} updated {} lease {:?} meta {} \
             res {:?} err {:?} in {:?} resume {:?} msg {:?} poll {:?}",
            t.status,
            t.revision,
            t.epoch,
            t.owner,
            t.owner_token.as_deref().map(|s| &s[..6.min(s.len())]),
            us(t.created_at),
            us(t.last_updated_at),
            t.lease_expires_at.map(us),
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
            t.poll_interval.map(|d: Duration| d.as_millis()),
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
