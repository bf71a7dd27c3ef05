//! The workload of `linearizable.rs`: random calls of every kind on a few
//! shared task ids through one `FileStore` handle, each recorded as the
//! shared check (`common/lin/`) reads it.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use taskstore::{FileStore, ListQuery, NewTask, Task, TaskId, TaskStatus, TaskStore, TaskUpdate};

use crate::common::Rng;
use crate::lin::{Call, Filter, Op, Ret, Stamp, outcome, returned_task, transition};
use crate::{KIND, Knobs, LONG_LEASE_MS, error, key, keys, lasted, open};

/// The token of a handle's open: the owner token of a task it makes.
fn token_of(store: &FileStore, instance: &str, thread: &str) -> String {
    let probe = TaskId::parse(&format!("probe-{instance}-{thread}")).unwrap();
    let task = store.create(NewTask::new().id(probe.clone())).unwrap();
    assert!(store.delete(&probe).unwrap());
    task.owner_token.expect("a new task names its owner's open")
}

/// A line of a child's history, written as it goes (a child may be
/// killed): a call about to be made, with the ids it may write, or a call
/// made.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Line {
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

/// Runs `ops` random calls through `store`, recording each (and writing
/// each to `log`, in a child).
pub(crate) fn run_calls(
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
        let mut record = |id: usize, call: Call, ret: Ret, start: Stamp, end: Stamp| {
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
                clock_ns: 0,
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
        let start = Stamp::now();
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
                    max_attempts: None,
                };
                record(k, call, ret, start, Stamp::now());
            }
            12..22 => {
                let ret = match store.get(&id) {
                    Ok(t) => Ret::Task(t),
                    Err(e) => error(e),
                };
                record(k, Call::Get, ret, start, Stamp::now());
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
                let ret = transition(store.update(&id, u), error);
                let call = Call::Update {
                    message,
                    value: marker,
                    status,
                    if_revision,
                    fence,
                    leave_lease,
                    checkpoint,
                };
                record(k, call, ret, start, Stamp::now());
            }
            47..54 => {
                let how = u8::try_from(rng.below(4)).unwrap();
                let fence = (rng.below(3) == 0).then_some(last_epoch);
                let outcome = outcome(how, &marker);
                let ret = transition(
                    match fence {
                        Some(e) => store.finish_fenced(&id, outcome, e),
                        None => store.finish(&id, outcome),
                    },
                    error,
                );
                let call = Call::Finish {
                    how,
                    value: marker,
                    fence,
                };
                record(k, call, ret, start, Stamp::now());
            }
            54..62 => {
                let ret = match store.delete(&id) {
                    Ok(b) => Ret::Deleted(b),
                    Err(e) => error(e),
                };
                record(k, Call::Delete, ret, start, Stamp::now());
            }
            62..66 => {
                let ret = transition(store.renew_lease(&id), error);
                record(k, Call::RenewLease, ret, start, Stamp::now());
            }
            66..74 => {
                let ret = transition(store.release(&id, last_epoch), error);
                let call = Call::Release { epoch: last_epoch };
                record(k, call, ret, start, Stamp::now());
            }
            74..81 => {
                let claim = dice < 79;
                let pass = if claim {
                    store.claim(&[KIND])
                } else {
                    store.reap()
                };
                let end = Stamp::now();
                match pass {
                    Ok(pass) => {
                        let lapsed = lasted(start, end, knobs);
                        // A task the pass left alone: not claimable (or
                        // reapable) at some point within it.
                        for k in (0..keys()).filter(|&k| {
                            !pass.tasks.iter().any(|t| t.id == key(k))
                                && !pass.missed.iter().any(|m| m.id == key(k))
                        }) {
                            let call = if claim { Call::Claimed } else { Call::Reaped };
                            record(k, call, Ret::Untouched, start, end);
                        }
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
                let walk = Stamp::now();
                loop {
                    let start = Stamp::now();
                    let page = store.list(&query);
                    let end = Stamp::now();
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
                let end = Stamp::now();
                match renewed {
                    Ok(_) => {
                        for k in 0..keys() {
                            record(k, Call::RenewAll, Ret::Untouched, start, end);
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
                let end = Stamp::now();
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
                let start = Stamp::now();
                if rng.below(2) == 0 {
                    let ret = match fresh.get(&id) {
                        Ok(t) => Ret::Task(t),
                        Err(e) => error(e),
                    };
                    record(k, Call::Get, ret, start, Stamp::now());
                } else {
                    let page = fresh.list(&ListQuery::all());
                    let end = Stamp::now();
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
                let end = Stamp::now();
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
                    record(k, Call::Get, Ret::Other(e.to_string()), start, Stamp::now());
                }
            }
            94 => {
                let ret = match store.reap_task(&id) {
                    Ok(t) => Ret::Task(t),
                    Err(e) => error(e),
                };
                record(k, Call::ReapOne, ret, start, Stamp::now());
            }
            95..97 => {
                if let Some(found) = store.try_get(&id) {
                    record(k, Call::Get, Ret::Task(found), start, Stamp::now());
                }
            }
            _ => {
                let ids: Vec<usize> = (0..2)
                    .map(|_| usize::try_from(rng.below(keys() as u64)).unwrap())
                    .collect();
                let tids: Vec<TaskId> = ids.iter().map(|&k| key(k)).collect();
                let all = store.renew_leases_of(&tids);
                let end = Stamp::now();
                let lapsed = lasted(start, end, knobs);
                for (k, r) in ids.into_iter().zip(all) {
                    let call = if lapsed {
                        Call::Unsure
                    } else {
                        Call::RenewLease
                    };
                    record(k, call, transition(r, error), start, end);
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
