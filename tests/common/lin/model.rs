//! The model of one task: the rules of src/rules/ (and CONSISTENCY.md),
//! which every backend runs, as a sequential specification of what each
//! call may do from each state.
//!
//! Where the backends' tests differ, [`Params`] says so; nothing else in
//! it knows which backend made a history.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use taskstore::{DEFAULT_MAX_ATTEMPTS, Task, TaskId, TaskStatus};
use time::OffsetDateTime;

use super::search::{self, Found, Span};
use super::{Call, LONG_LEASE_MS, Op, Ret, outcome, returned_task};

/// What the tests of one backend set apart.
#[derive(Clone, Debug)]
pub struct Params {
    /// How a returned task is compared with the model's.
    pub compare: Compare,
    /// The handles' claim grace: how long a released resumable task with
    /// attempts left waits for a claim before a reap may fail it (their
    /// configuration: `FileStore` rounds set none, `PgStore`'s run keeps
    /// the default, the lease).
    pub claim_grace: Duration,
    /// The kind of resumable work every create makes and every claim
    /// takes.
    pub kind: &'static str,
    /// The task id of number `n`.
    pub id: fn(usize) -> TaskId,
    /// Steps the search of one task may take before it gives up (the
    /// history undecided, said, never a failure); none: no limit.
    pub budget: Option<u64>,
}

/// How much of a returned task the model knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compare {
    /// All of it: every field, each time a write stamps within its call.
    /// For a history whose every call's outcome is known (`FileStore`).
    Whole,
    /// What the rules decide: the create's marker, the revision, the
    /// status, the epoch, the owner token, the attempts. For a history
    /// with calls of unknown outcome (`PgStore` under connection
    /// failures), after which the times a write stamped and the contents
    /// it left are not known.
    Rules,
}

/// A handle's create or claim of unknown outcome: its token, the create's
/// marker (none for a claim), the task number.
pub type Undone = (String, Option<String>, usize);

/// One task as the model holds it: the task, if any, and when it expires
/// (the earliest and the latest wall-clock instant it may: a create of
/// unknown outcome read its clock somewhere within its call).
#[derive(Clone, Debug, Serialize)]
pub struct State {
    pub task: Option<Task>,
    pub expires: Option<(u64, u64)>,
    /// The call whose first of two writes ([`Call::First`]) stands, its
    /// renewal to come.
    pub second: Option<usize>,
    /// The calls with a [`Call::First`] that were taken (after which it
    /// cannot be), in order.
    pub paired: Vec<usize>,
}

const NO_TASK: State = State {
    task: None,
    expires: None,
    second: None,
    paired: Vec::new(),
};

/// Whether `history` (one task's calls, by their start) has an order that
/// respects real time and that the model accepts, from no task.
pub fn linearizable(history: &[Op], params: &Params, undone: &BTreeSet<Undone>) -> Found<State> {
    let spans: Vec<Span> = history
        .iter()
        .map(|o| Span {
            start: o.start.mono,
            end: o.end.mono,
            optional: matches!(o.call, Call::Undo { .. } | Call::First { .. }),
        })
        .collect();
    let last = history
        .iter()
        .filter(|o| o.end.wall < u64::MAX)
        .map(|o| o.end.wall.saturating_add(o.clock_ns))
        .max()
        .unwrap_or(0);
    // Each first of two writes, by its call: the call made by the same
    // thread at the same instant.
    let first_of = (0..history.len())
        .filter(|&f| matches!(history[f].call, Call::First { .. }))
        .filter_map(|f| {
            let first = &history[f];
            let call = (0..history.len()).find(|&i| {
                matches!(history[i].call, Call::Claimed | Call::RenewLease)
                    && history[i].thread == first.thread
                    && history[i].start.mono == first.start.mono
            })?;
            Some((f, call))
        })
        .collect();
    let model = Model {
        history,
        params,
        undone,
        last,
        first_of,
    };
    search::search(&model, &spans, NO_TASK, params.budget)
}

struct Model<'a> {
    history: &'a [Op],
    params: &'a Params,
    undone: &'a BTreeSet<Undone>,
    /// The wall clock's last reading of the history: an event later than
    /// it decides nothing.
    last: u64,
    /// Each [`Call::First`] (its index) and its call's.
    first_of: std::collections::HashMap<usize, usize>,
}

fn ns(at: OffsetDateTime) -> u64 {
    u64::try_from(at.unix_timestamp_nanos()).unwrap_or(0)
}

fn instant(wall: u64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(wall)).unwrap()
}

fn owns(op: &Op, t: &Task) -> bool {
    t.owner.as_deref() == Some(op.instance.as_str())
        && t.owner_token.as_deref() == Some(op.token.as_str())
}

/// An orphan at `w`: running, and its lease lapsed by the clock the
/// call read (released, or not renewed in time).
fn orphan(t: &Task, w: u64) -> bool {
    !t.is_terminal() && t.lease_expires_at.is_some_and(|l| ns(l) <= w)
}

impl search::Model for Model<'_> {
    type State = State;

    fn key(&self, state: &State) -> (String, bool) {
        (
            serde_json::to_string(state).unwrap(),
            self.events(state).into_iter().any(|e| e <= self.last),
        )
    }

    /// A task is gone at its expiry for every call (lazy expiry): the call
    /// takes effect at one instant within its span, no earlier than
    /// `floor`, and sees the task live before the expiry and missing from
    /// it on; an orphan from its lease's lapse on.
    fn steps(&self, state: &State, i: usize, floor: u64) -> Vec<(State, u64)> {
        let op = &self.history[i];
        let mut out = Vec::new();
        if matches!(op.ret, Ret::Unknown(_))
            && !matches!(op.call, Call::Undo { .. } | Call::First { .. })
        {
            // Not applied at all (an undo or a first write not made is left
            // out instead).
            out.push((state.clone(), floor));
        }
        let earliest = floor.max(op.start.mono);
        if earliest > op.end.mono {
            return out;
        }
        if matches!(op.call, Call::RenewAll) {
            // Renewed or not: the renewal is `renew_lease`'s, applied.
            out.push((state.clone(), floor));
            if let Some(s) = &state.task
                && !s.is_terminal()
                && owns(op, s)
                && state
                    .expires
                    .is_none_or(|(lo, _)| op.wall_at(earliest).saturating_sub(op.clock_ns) < lo)
            {
                // Its new lease is not known: the workloads call it only
                // where leases never lapse, where a lease decides nothing,
                // and it is taken as it is read next.
                let mut next = s.clone();
                next.revision += 1;
                next.lease_expires_at = None;
                let next = State {
                    task: Some(next),
                    ..state.clone()
                };
                out.push((next, earliest));
            }
            return out;
        }
        // The instants at which the call may take effect that tell apart
        // what it can see: its earliest, and the first at which the time
        // it reads may reach the task's expiry, its lease's lapse or the
        // claim grace's end, within its span.
        let events = self.events(state);
        let mut instants = vec![earliest];
        for &e in &events {
            let at = op.mono_at(e.saturating_sub(op.clock_ns));
            if earliest < at && at <= op.end.mono {
                instants.push(at);
            }
        }
        instants.sort_unstable();
        instants.dedup();
        for at in instants {
            for w in readings(op, at, &events) {
                let gone = NO_TASK;
                let mut judged = Vec::new();
                match (&state.task, state.expires) {
                    (Some(_), Some((lo, hi))) => {
                        if w >= lo {
                            judged.push(&gone);
                        }
                        if w < hi {
                            judged.push(state);
                        }
                    }
                    _ => judged.push(state),
                }
                for seen in judged {
                    for next in self.paired_step(state, seen, i, w) {
                        out.push((next, at));
                    }
                }
            }
        }
        out
    }
}

/// The times `op` may have read at instant `at` that tell apart what it
/// sees: the wall clock's reading there, or, for a store whose clock may
/// be off it by `op.clock_ns`, the two ends of that window and each
/// `event` within it with the moment before it (every judgment of the
/// model is of a time against an event: lapsed or expired from it on).
fn readings(op: &Op, at: u64, events: &[u64]) -> Vec<u64> {
    let w = op.wall_at(at);
    if op.clock_ns == 0 {
        return vec![w];
    }
    let (lo, hi) = (w.saturating_sub(op.clock_ns), w.saturating_add(op.clock_ns));
    let mut out = vec![lo, hi];
    for &e in events {
        if lo < e && e <= hi {
            out.extend([e - 1, e]);
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

impl Model<'_> {
    /// The wall-clock instants at which what a call sees of `state` may
    /// change by time alone.
    fn events(&self, state: &State) -> Vec<u64> {
        let Some(t) = &state.task else {
            return Vec::new();
        };
        let mut events = Vec::new();
        if let Some((lo, hi)) = state.expires {
            events.extend([lo, hi]);
        }
        if let Some(l) = t.lease_expires_at {
            let grace = u64::try_from(self.params.claim_grace.as_nanos()).unwrap();
            events.extend([ns(l), ns(l).saturating_add(grace)]);
        }
        events
    }

    /// Whether `found` is the model's `state`, as far as `op` can tell.
    fn same(&self, found: &Task, state: &Task, op: &Op) -> bool {
        match self.params.compare {
            Compare::Rules => {
                let view = |t: &Task| {
                    (
                        t.metadata.get("m").cloned(),
                        t.revision,
                        t.status,
                        t.epoch,
                        t.owner_token.clone(),
                        t.resume.as_ref().map(|r| r.attempts),
                    )
                };
                view(found) == view(state)
            }
            // Where leases never lapse, whatever the leases
            // (`renew_leases` renews some, saying which only by their
            // number).
            Compare::Whole if op.lease_ns >= LONG_LEASE_MS * 1_000_000 => {
                let (mut a, mut b) = (found.clone(), state.clone());
                a.lease_expires_at = None;
                b.lease_expires_at = None;
                a == b
            }
            Compare::Whole => found == state,
        }
    }

    /// Whether `op`'s result is `expected` (any, for a call of unknown
    /// outcome).
    fn agrees(&self, op: &Op, expected: &Ret) -> bool {
        let same = |a: &Task, b: &Task| self.same(a, b, op);
        match (&op.ret, expected) {
            (Ret::Unknown(_), _) => true,
            (Ret::Task(None), Ret::Task(None)) => true,
            (Ret::Task(Some(a)), Ret::Task(Some(b)))
            | (Ret::Applied(a), Ret::Applied(b))
            | (Ret::AlreadyTerminal(a), Ret::AlreadyTerminal(b))
            | (Ret::Fenced(a), Ret::Fenced(b))
            | (Ret::Changed(a), Ret::Changed(b)) => same(a, b),
            (Ret::Deleted(a), Ret::Deleted(b)) => a == b,
            (Ret::NotFound, Ret::NotFound)
            | (Ret::AlreadyExists, Ret::AlreadyExists)
            | (Ret::NotOwner, Ret::NotOwner)
            | (Ret::InvalidTask, Ret::InvalidTask)
            | (Ret::Untouched, Ret::Untouched) => true,
            _ => false,
        }
    }

    /// `next` with the time `op` stamped on it: the one it returned, if
    /// within its span (a write stamps the time it reads), or `w`.
    fn stamped(&self, mut next: Task, op: &Op, w: u64) -> Option<Task> {
        match returned_task(&op.ret) {
            Some(t) => {
                next.last_updated_at = t.last_updated_at;
                let within = op.read_within(ns(t.last_updated_at));
                (within || self.params.compare == Compare::Rules).then_some(next)
            }
            None => {
                next.last_updated_at = instant(w);
                Some(next)
            }
        }
    }

    /// `next` with the lease `op` gave it, `shift` after the time it read:
    /// the one it returned, if within its span, or `w` on.
    fn leased(&self, mut next: Task, op: &Op, w: u64, shift: u64) -> Option<Task> {
        match returned_task(&op.ret) {
            Some(t) => {
                next.lease_expires_at = t.lease_expires_at;
                let within = t
                    .lease_expires_at
                    .is_some_and(|l| op.read_within(ns(l).saturating_sub(shift)));
                (within || self.params.compare == Compare::Rules).then_some(next)
            }
            None => {
                next.lease_expires_at = Some(instant(w + shift));
                Some(next)
            }
        }
    }

    /// [`step`](Self::step) of call `i` from `seen` (`state` as the call
    /// sees it at `w`), and the first of two writes
    /// ([`Call::First`]): taken before its call and never after it, it
    /// leaves its call to be the renewal that follows it.
    fn paired_step(&self, state: &State, seen: &State, i: usize, w: u64) -> Vec<State> {
        let op = &self.history[i];
        // `next` with what `state` knew of first writes, and `taken` added
        // to the calls with one taken.
        let marked = |next: State, second: Option<usize>, taken: Option<usize>| {
            let mut paired = state.paired.clone();
            paired.extend(taken);
            State {
                second,
                paired,
                ..next
            }
        };
        let written = |task: Task| State {
            task: Some(task),
            expires: seen.expires,
            ..NO_TASK
        };
        if let Call::First { claim } = op.call {
            // Its call, unless that call changed nothing after it (a
            // renewal of a task reaped since: `NotOwner`), and is left out.
            let call = self.first_of.get(&i).copied();
            if call.is_some_and(|call| state.second.is_some() || state.paired.contains(&call)) {
                return vec![];
            }
            let Some(t) = &seen.task else {
                return vec![];
            };
            let mut next = t.clone();
            if claim {
                if !self.claimable(t, w) {
                    return vec![];
                }
                next.epoch += 1;
                next.owner = Some(op.instance.clone());
                next.owner_token = Some(op.token.clone());
                if let Some(r) = &mut next.resume {
                    r.attempts += 1;
                }
            } else if t.is_terminal() || !owns(op, t) {
                return vec![];
            }
            next.revision += 1;
            next.lease_expires_at = Some(instant(w + op.lease_ns));
            return vec![marked(written(next), call.or(state.second), None)];
        }
        let has_first = self.first_of.values().any(|&c| c == i);
        if !has_first {
            return self
                .step(seen, op, w)
                .into_iter()
                .map(|next| marked(next, state.second, None))
                .collect();
        }
        if state.second == Some(i) && !matches!(op.call, Call::Claimed) {
            // A renewal after its first write: a renewal of what that
            // wrote.
            return self
                .step(seen, op, w)
                .into_iter()
                .map(|next| marked(next, None, Some(i)))
                .collect();
        }
        if state.second == Some(i) {
            // A claim's renewal after its first write.
            let Some(t) = seen
                .task
                .as_ref()
                .filter(|t| !t.is_terminal() && owns(op, t))
            else {
                return vec![];
            };
            let mut next = t.clone();
            next.revision += 1;
            let Some(next) = self.leased(next, op, w, op.lease_ns) else {
                return vec![];
            };
            if !self.agrees(op, &Ret::Applied(next.clone())) {
                return vec![];
            }
            return vec![marked(written(next), None, Some(i))];
        }
        self.step(seen, op, w)
            .into_iter()
            .map(|next| marked(next, state.second, Some(i)))
            .collect()
    }

    /// The states `op` may leave from `state` at wall-clock `w`, its
    /// result agreeing (none if it cannot be taken there).
    fn step(&self, state: &State, op: &Op, w: u64) -> Vec<State> {
        let s = state.task.as_ref();
        let keep = |expected: Ret| {
            if self.agrees(op, &expected) {
                vec![state.clone()]
            } else {
                vec![]
            }
        };
        let becomes = |expected: Ret, next: Option<Task>| {
            if !self.agrees(op, &expected) {
                return vec![];
            }
            let expires = next.as_ref().and(state.expires);
            vec![State {
                task: next,
                expires,
                ..NO_TASK
            }]
        };
        let applied = |next: Option<Task>| match next {
            Some(next) => becomes(Ret::Applied(next.clone()), Some(next)),
            None => vec![],
        };
        match (&op.call, s) {
            (Call::Create { .. }, Some(_)) => keep(Ret::AlreadyExists),
            (Call::Create { ttl_ms, .. }, None) => {
                let Some(next) = self.made(op, w) else {
                    return vec![];
                };
                let expires = ttl_ms.map(|ms| {
                    let ttl = ms * 1_000_000;
                    match returned_task(&op.ret) {
                        Some(t) => (ns(t.created_at) + ttl, ns(t.created_at) + ttl),
                        None => (
                            w + ttl,
                            op.end.wall.saturating_add(op.clock_ns).saturating_add(ttl),
                        ),
                    }
                });
                if !self.agrees(op, &Ret::Applied(next.clone())) {
                    return vec![];
                }
                vec![State {
                    task: Some(next),
                    expires,
                    ..NO_TASK
                }]
            }
            (Call::Undo { marker }, _) => match s {
                Some(t) if t.metadata.get("m") == Some(&json!(marker)) && t.revision == 1 => {
                    vec![NO_TASK]
                }
                _ => vec![state.clone()],
            },
            (Call::Get, _) => keep(Ret::Task(s.cloned())),
            (Call::Listed { filter }, _) if matches!(op.ret, Ret::Task(None)) => {
                if s.is_none_or(|s| !filter.admits(s)) {
                    vec![state.clone()]
                } else {
                    vec![]
                }
            }
            (Call::Paged { filter } | Call::Listed { filter }, Some(t)) if filter.admits(t) => {
                keep(Ret::Task(Some(t.clone())))
            }
            (Call::Paged { .. } | Call::Listed { .. }, _) => vec![],
            (Call::Sweep, _) => vec![state.clone()],
            (Call::Delete, _) => becomes(Ret::Deleted(s.is_some()), None),
            (
                Call::Update { .. } | Call::Finish { .. } | Call::RenewLease | Call::Release { .. },
                None,
            ) => keep(Ret::NotFound),
            (
                Call::Update { .. } | Call::Finish { .. } | Call::RenewLease | Call::Release { .. },
                Some(t),
            ) if t.is_terminal() => keep(Ret::AlreadyTerminal(t.clone())),
            (
                Call::Update {
                    fence,
                    if_revision,
                    leave_lease,
                    checkpoint,
                    ..
                },
                Some(t),
            ) => {
                if fence.is_some_and(|e| e != t.epoch || !owns(op, t)) {
                    return keep(Ret::Fenced(t.clone()));
                }
                if if_revision.is_some_and(|r| r != t.revision) {
                    return keep(Ret::Changed(t.clone()));
                }
                // A checkpoint has no place in a task that is not resumable.
                if *checkpoint && t.resume.is_none() {
                    return keep(Ret::InvalidTask);
                }
                let Some(mut next) = self.stamped(updated(t, &op.call), op, w) else {
                    return vec![];
                };
                // The owner's writes renew its lease, unless asked not to;
                // others' leave it.
                if owns(op, t) && !leave_lease {
                    next.lease_expires_at = next
                        .last_updated_at
                        .checked_add(time::Duration::nanoseconds(op.lease_ns as i64));
                }
                applied(Some(next))
            }
            (Call::Finish { how, value, fence }, Some(t)) => {
                if fence.is_some_and(|e| e != t.epoch || !owns(op, t)) {
                    return keep(Ret::Fenced(t.clone()));
                }
                let mut next = t.clone();
                finished(&mut next, *how, value);
                next.lease_expires_at = None;
                applied(self.stamped(next, op, w))
            }
            (Call::RenewLease | Call::Release { .. }, Some(t)) => {
                if let Call::Release { epoch } = op.call
                    && epoch != t.epoch
                {
                    return keep(Ret::Fenced(t.clone()));
                }
                let mut out = Vec::new();
                // A task of the handle's create or claim of unknown
                // outcome: the handle may have dropped it.
                let mine = |marker: Option<String>| (op.token.clone(), marker, op.id);
                if t.owner_token.as_ref() == Some(&op.token)
                    && (self.undone.contains(&mine(None))
                        || (t.metadata.get("m").and_then(|m| m.as_str()))
                            .is_some_and(|m| self.undone.contains(&mine(Some(m.to_owned())))))
                {
                    out.extend(keep(Ret::NotFound));
                }
                if !owns(op, t) {
                    out.extend(keep(Ret::NotOwner));
                    return out;
                }
                let mut next = t.clone();
                next.revision += 1;
                let next = if matches!(op.call, Call::Release { .. }) {
                    next.owner_token = None;
                    // Lapsed at what the clock read, within the call.
                    self.leased(next, op, w, 0)
                } else {
                    self.leased(next, op, w, op.lease_ns)
                };
                out.extend(applied(next));
                out
            }
            (Call::Claimed, _) => match s {
                Some(t) if self.claimable(t, w) => {
                    let mut next = t.clone();
                    next.revision += 1;
                    next.epoch += 1;
                    next.owner = Some(op.instance.clone());
                    next.owner_token = Some(op.token.clone());
                    if let Some(r) = &mut next.resume {
                        r.attempts += 1;
                    }
                    applied(self.leased(next, op, w, op.lease_ns))
                }
                _ => keep(Ret::Untouched),
            },
            (Call::Reaped | Call::ReapOne, _) => match s {
                Some(t) if self.reapable(t, w) => {
                    let mut next = t.clone();
                    next.revision += 1;
                    next.status = TaskStatus::Failed;
                    next.input_requests = None;
                    next.resume = None;
                    next.lease_expires_at = None;
                    next.error = match returned_task(&op.ret) {
                        Some(r) if r.error.as_ref().is_some_and(|e| e["code"] == "orphaned") => {
                            r.error.clone()
                        }
                        Some(_) => return vec![],
                        None => Some(json!({ "code": "orphaned" })),
                    };
                    let Some(next) = self.stamped(next, op, w) else {
                        return vec![];
                    };
                    if matches!(op.call, Call::ReapOne) {
                        becomes(Ret::Task(Some(next.clone())), Some(next))
                    } else {
                        applied(Some(next))
                    }
                }
                _ if matches!(op.call, Call::ReapOne) => keep(Ret::Task(None)),
                _ => keep(Ret::Untouched),
            },
            (Call::RenewAll | Call::Unsure | Call::First { .. }, _) => {
                unreachable!("not a call of the model")
            }
        }
    }

    /// The task `op`, a create, makes at `w` (or at the time it returned,
    /// if within its span).
    fn made(&self, op: &Op, w: u64) -> Option<Task> {
        let Call::Create {
            marker,
            resumable,
            ttl_ms,
            max_attempts,
        } = &op.call
        else {
            unreachable!()
        };
        let created = match returned_task(&op.ret) {
            Some(t) => {
                let within = op.read_within(ns(t.created_at));
                if !within && self.params.compare == Compare::Whole {
                    return None;
                }
                t.created_at
            }
            None => instant(w),
        };
        let lease = created.checked_add(time::Duration::nanoseconds(op.lease_ns as i64));
        let stamp = |at: OffsetDateTime| {
            json!(
                at.format(&time::format_description::well_known::Rfc3339)
                    .unwrap()
            )
        };
        let resume = resumable.then(|| {
            json!({
                "kind": self.params.kind,
                "input": marker,
                "attempts": 1,
                "maxAttempts": max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS),
            })
        });
        let task = json!({
            "taskId": (self.params.id)(op.id),
            "status": "working",
            "createdAt": stamp(created),
            "lastUpdatedAt": stamp(created),
            "ttlMs": ttl_ms,
            "metadata": { "m": marker },
            "revision": 1,
            "owner": op.instance,
            "leaseExpiresAt": lease.map(stamp),
            "ownerToken": op.token,
            "resume": resume,
        });
        Some(serde_json::from_value(task).expect("a task the model made"))
    }

    fn claimable(&self, t: &Task, w: u64) -> bool {
        orphan(t, w)
            && t.epoch < u64::MAX
            && t.resume
                .as_ref()
                .is_some_and(|r| r.kind == self.params.kind && r.attempts < r.max_attempts)
    }

    /// An orphan a reap fails: at once if it cannot be resumed, a
    /// resumable one with attempts left once the claim grace is over.
    fn reapable(&self, t: &Task, w: u64) -> bool {
        let Some(lapsed) = t.lease_expires_at.filter(|_| orphan(t, w)) else {
            return false;
        };
        let grace = u64::try_from(self.params.claim_grace.as_nanos()).unwrap();
        t.resume
            .as_ref()
            .is_none_or(|r| r.attempts >= r.max_attempts)
            || w >= ns(lapsed).saturating_add(grace)
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

fn finished(next: &mut Task, how: u8, value: &str) {
    next.input_requests = None;
    next.resume = None;
    next.revision += 1;
    match outcome(how, value) {
        taskstore::Outcome::Completed(v) => {
            next.status = TaskStatus::Completed;
            next.result = Some(v);
        }
        taskstore::Outcome::Failed(v) => {
            next.status = TaskStatus::Failed;
            next.error = Some(v);
        }
        taskstore::Outcome::Cancelled(m) => {
            next.status = TaskStatus::Cancelled;
            if m.is_some() {
                next.status_message = m;
            }
        }
        _ => unreachable!(),
    }
}
