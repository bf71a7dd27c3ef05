//! The workload of `pg_linearizable.rs`: handles of a `PgStore` on one
//! schema making random calls of every kind on a few shared task ids, each
//! recorded as the shared check (`common/lin/`) reads it.

use std::cell::Cell;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use taskstore::{Error, NewTask, PgStore, TaskId, TaskStatus, TaskStore, TaskUpdate, TimeSource};

use crate::common::Rng;
use crate::lin::{Call, Filter, Op, Ret, Stamp, outcome, returned_task, transition};
use crate::{
    KIND, LONG_LEASE, MAX_ATTEMPTS, SERVER_CLOCK_REFRESH, SkewedClock, Time, failure, grace_for,
    ids, ops_per_thread, skew, task_id,
};

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

pub(crate) fn open(
    conninfo: &str,
    schema: &str,
    instance: &str,
    lease: Duration,
    time: Time,
) -> PgStore {
    open_with(
        conninfo,
        schema,
        instance,
        (lease, time),
        (3, Duration::from_secs(30)),
    )
}

/// [`open`] with `pool.0` connections, a call waiting `pool.1` for one.
fn open_with(
    conninfo: &str,
    schema: &str,
    instance: &str,
    (lease, time): (Duration, Time),
    (pool, wait): (usize, Duration),
) -> PgStore {
    // The killer may end the connections of an open: tried again.
    for _ in 0..50 {
        let builder = PgStore::builder(conninfo);
        let builder = match time {
            // Every process on this host reads one system clock: a lease
            // released before a claim began is lapsed for the claim.
            Time::System => builder.time_source(TimeSource::Clock),
            Time::Server => builder
                .clock(Arc::new(SkewedClock(skew(instance))))
                .server_clock_refresh(SERVER_CLOCK_REFRESH),
        };
        match builder
            .schema(schema)
            .instance_id(instance)
            .lease(lease)
            .claim_grace(grace_for(lease))
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

/// A handle as its calls are recorded: its instance id and token, and
/// where a thread runs (`process/thread`).
struct Who<'a> {
    instance: &'a str,
    token: &'a str,
    thread: &'a str,
}

/// Runs [`ops_per_thread`] random operations on `store`, appending each to
/// `log`.
fn work(store: &PgStore, who: &Who<'_>, seed: u64, lease: Duration, log: &Mutex<Vec<Op>>) {
    let ops = ops_per_thread();
    let mut rng = Rng::new(seed);
    let mut seen: Vec<Seen> = vec![Seen { rev: 1, epoch: 1 }; ids()];
    // The error of the handle's measurement of the server's clock in effect
    // when the call began (half its round trip), and at its end the
    // larger with that of one made within the call.
    let measured = || {
        store.server_time().map_or(0, |t| {
            u64::try_from(t.round_trip.as_nanos() / 2).unwrap_or(u64::MAX)
        })
    };
    let measured_at_start = Cell::new(0);
    let record = |id: usize, call: Call, start: Stamp, ret: Ret| {
        log.lock().unwrap().push(Op {
            instance: who.instance.to_owned(),
            token: who.token.to_owned(),
            thread: who.thread.to_owned(),
            id,
            call,
            ret,
            start,
            end: Stamp::now(),
            lease_ns: u64::try_from(lease.as_nanos()).unwrap(),
            // The clocks' drift is added by the round ([`bound_clocks`]).
            clock_ns: measured_at_start.get().max(measured()),
        });
    };
    for o in 0..ops {
        let n = rng.below(ids() as u64) as usize;
        let id = task_id(n);
        let marker = format!("{}-{o}", who.thread);
        let note = |seen: &mut Vec<Seen>, ret: &Ret| {
            if let Some(t) = returned_task(ret) {
                seen[n] = Seen {
                    rev: t.revision,
                    epoch: t.epoch,
                };
            }
        };
        let start = Stamp::now();
        measured_at_start.set(measured());
        match rng.below(100) {
            0..=14 => {
                let resumable = rng.below(2) == 0;
                let ttl_ms = (rng.below(4) == 0).then(|| 20 + rng.below(300));
                let mut new = NewTask::new().id(id.clone()).metadata("m", marker.clone());
                if resumable {
                    new = new
                        .resumable(KIND, json!(marker))
                        .max_attempts(MAX_ATTEMPTS);
                }
                if let Some(ms) = ttl_ms {
                    new = new.ttl(Duration::from_millis(ms));
                }
                let ret = match store.create(new) {
                    Ok(t) => Ret::Applied(t),
                    Err(e) => failure(e),
                };
                note(&mut seen, &ret);
                let call = Call::Create {
                    marker,
                    resumable,
                    ttl_ms,
                    max_attempts: Some(MAX_ATTEMPTS),
                };
                record(n, call, start, ret);
            }
            15..=26 => {
                let ret = match store.get(&id) {
                    Ok(t) => Ret::Task(t),
                    Err(e) => failure(e),
                };
                note(&mut seen, &ret);
                record(n, Call::Get, start, ret);
            }
            27..=44 => {
                let mut update = TaskUpdate::new().metadata("u", marker.clone());
                let status = match rng.below(3) {
                    0 => Some(TaskStatus::InputRequired),
                    1 => Some(TaskStatus::Working),
                    _ => None,
                };
                if let Some(s) = status {
                    update = update.status(s);
                    if s == TaskStatus::InputRequired {
                        update = update.input_requests(json!({ "q": marker }));
                    }
                }
                let fence = (rng.below(3) == 0).then(|| seen[n].epoch);
                if let Some(e) = fence {
                    update = update.fenced(e);
                }
                let if_revision = (rng.below(3) == 0).then(|| seen[n].rev);
                if let Some(r) = if_revision {
                    update = update.if_revision(r);
                }
                let leave_lease = rng.below(4) == 0;
                if leave_lease {
                    update = update.leave_lease();
                }
                let ret = transition(store.update(&id, update), failure);
                note(&mut seen, &ret);
                let call = Call::Update {
                    value: marker,
                    status,
                    if_revision,
                    fence,
                    leave_lease,
                    checkpoint: false,
                    message: None,
                };
                record(n, call, start, ret);
            }
            45..=54 => {
                let how = u8::try_from(rng.below(4)).unwrap();
                let fence = (rng.below(2) == 0).then(|| seen[n].epoch);
                let outcome = outcome(how, &marker);
                let ret = transition(
                    match fence {
                        Some(e) => store.finish_fenced(&id, outcome, e),
                        None => store.finish(&id, outcome),
                    },
                    failure,
                );
                note(&mut seen, &ret);
                let call = Call::Finish {
                    how,
                    value: marker,
                    fence,
                };
                record(n, call, start, ret);
            }
            55..=62 => {
                let ret = match store.delete(&id) {
                    Ok(d) => Ret::Deleted(d),
                    Err(e) => failure(e),
                };
                record(n, Call::Delete, start, ret);
            }
            63..=69 => {
                let ret = transition(store.renew_lease(&id), failure);
                note(&mut seen, &ret);
                record(n, Call::RenewLease, start, ret);
            }
            70..=79 => {
                let epoch = seen[n].epoch;
                let ret = transition(store.release(&id, epoch), failure);
                note(&mut seen, &ret);
                record(n, Call::Release { epoch }, start, ret);
            }
            80..=86 => {
                // A claim pass over every task.
                let results = store.claim(&[KIND]);
                pass(results, Call::Claimed, start, &record);
            }
            87..=90 => {
                let results = store.reap();
                pass(results, Call::Reaped, start, &record);
            }
            91..=93 => {
                let ret = match store.reap_task(&id) {
                    Ok(t) => Ret::Task(t),
                    Err(e) => failure(e),
                };
                record(n, Call::ReapOne, start, ret);
            }
            94..=95 => {
                let filter = if rng.below(2) == 0 {
                    Filter::Active
                } else {
                    Filter::All
                };
                let limit = 1 + rng.below(4) as usize;
                let mut listed = Vec::new();
                let mut query = filter.query().limit(limit);
                let whole = loop {
                    match store.list(&query) {
                        Ok(page) => {
                            let clean = page.skipped.is_empty();
                            listed.extend(page.tasks);
                            match page.next_cursor {
                                Some(c) => query = filter.query().limit(limit).after(&c),
                                None => break clean,
                            }
                        }
                        Err(_) => break false,
                    }
                };
                // Each task listed, and each a whole listing left out, at
                // some point of the walk.
                for n in 0..ids() {
                    let found = listed.iter().find(|t| t.id == task_id(n));
                    let call = match found {
                        Some(_) => Call::Paged {
                            filter: filter.clone(),
                        },
                        None if whole => Call::Listed {
                            filter: filter.clone(),
                        },
                        None => continue,
                    };
                    record(n, call, start, Ret::Task(found.cloned()));
                }
            }
            98 => {
                // A sweep deletes expired tasks only, and before it
                // returns, whatever it returns.
                let _ = store.sweep();
                for n in 0..ids() {
                    record(n, Call::Sweep, start, Ret::Untouched);
                }
            }
            // Which leases it renewed it says by their number alone: the
            // model knows none of their new leases, so it is called only
            // where leases never lapse (`Call::RenewAll`).
            99 if lease >= LONG_LEASE => {
                let ret = match store.renew_leases() {
                    Ok(_) => Ret::Untouched,
                    Err(e) => Ret::Unknown(e.to_string()),
                };
                for n in 0..ids() {
                    record(n, Call::RenewAll, start, ret.clone());
                }
            }
            97 => {
                // Renewals of a few tasks in one batch.
                let ns: Vec<usize> = (0..ids()).filter(|_| rng.below(2) == 0).collect();
                let ids: Vec<TaskId> = ns.iter().map(|&n| task_id(n)).collect();
                for (&n, r) in ns.iter().zip(store.renew_leases_of(&ids)) {
                    let ret = transition(r, failure);
                    note(&mut seen, &ret);
                    record(n, Call::RenewLease, start, ret);
                }
            }
            _ => {
                let all: Vec<TaskId> = (0..ids()).map(task_id).collect();
                for (n, got) in store.get_all(&all).into_iter().enumerate() {
                    if let Ok(Some(t)) = got {
                        record(n, Call::Get, start, Ret::Task(Some(t)));
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
    start: Stamp,
    record: &impl Fn(usize, Call, Stamp, Ret),
) {
    let (tasks, missed): (_, Vec<(TaskId, Ret)>) = match results {
        Ok(p) => (
            p.tasks,
            p.missed
                .into_iter()
                .map(|m| (m.id, failure(m.error)))
                .collect(),
        ),
        Err(e) => {
            // The pass failed as a whole: it fails so only when it cannot
            // read the tasks it would write (src/rules/maintenance.rs), so
            // it must have changed nothing.
            for n in 0..ids() {
                record(n, call.clone(), start, Ret::Nothing(e.to_string()));
            }
            return;
        }
    };
    for n in 0..ids() {
        let id = task_id(n);
        let ret = if let Some(t) = tasks.iter().find(|t| t.id == id) {
            Ret::Applied(t.clone())
        } else if let Some((_, ret)) = missed.iter().find(|(m, _)| *m == id) {
            match ret.clone() {
                Ret::Nothing(s) => Ret::Nothing(s),
                other => Ret::Unknown(format!("{other:?}")),
            }
        } else {
            Ret::Untouched
        };
        record(n, call.clone(), start, ret);
    }
}

/// Runs `threads` threads of work in this process, on `handles` handles
/// (threads share them round robin) whose leases last `lease`, going by
/// `time`, and returns their operations.
pub(crate) fn run_here(
    conninfo: &str,
    schema: &str,
    name: &str,
    (handles, threads): (usize, usize),
    seed: u64,
    (lease, time): (Duration, Time),
) -> Vec<Op> {
    let stores: Vec<(PgStore, String, String)> = (0..handles)
        .map(|h| {
            let instance = format!("{name}-h{h}");
            // The first handle's threads share one connection, and wait
            // for it only a little: calls fail before they send anything.
            let store = if h == 0 {
                open_with(
                    conninfo,
                    schema,
                    &instance,
                    (lease, time),
                    (1, Duration::from_millis(15)),
                )
            } else {
                open(conninfo, schema, &instance, lease, time)
            };
            let token = token_of(&store, &instance);
            (store, instance, token)
        })
        .collect();
    let log = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..threads {
            let (store, instance, token) = &stores[t % handles];
            let log = &log;
            let thread = format!("{name}/t{t}");
            s.spawn(move || {
                let who = Who {
                    instance,
                    token,
                    thread: &thread,
                };
                let seed = seed ^ (t as u64 + 1).wrapping_mul(7919);
                work(store, &who, seed, lease, log)
            });
        }
    });
    log.into_inner().unwrap()
}
