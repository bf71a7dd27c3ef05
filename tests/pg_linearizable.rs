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
//! `reap`, `reap_task`, `sweep`, and listings page by page; in three
//! rounds, one whose leases outlast it (they lapse only by `release`) and
//! one whose leases last 30 to 130 ms, with no claim grace, so that leases
//! lapse under the workload and claims and reaps race their owners' writes,
//! both on the system clock (`TimeSource::Clock`); then the short leases on
//! the server's clock (`TimeSource::Server`, the default), every handle's
//! own clock seconds to an hour off ([`skew`]). Meanwhile one
//! thread ends random server backends of the store's connections
//! (`pg_terminate_backend`), another loses the reply to a random statement
//! after the server committed it (a proxy that cuts the connection), and
//! the first handle's two threads share one connection that they wait for
//! only briefly, so that calls fail before they send anything.
//!
//! Every call is recorded (both clocks: the monotonic one orders the
//! calls, the wall clock, which the store's leases and TTLs go by,
//! judges expiries, on the server's clock within its bound:
//! [`bound_clocks`]; `common/lin/mod.rs`) with its result; the children
//! write theirs to files. The merged history of each
//! task is then checked against the model of one task and with the search
//! both backends' tests share (`common/lin/`), which follow the store's
//! rules (src/rules/: first writer wins, revisions, fences, owners,
//! leases, claims and reaps, TTL from creation). What is this backend's
//! own is its calls of unknown outcome:
//!
//! - a call that failed with an error that promises nothing was applied
//!   (`Error::changed_nothing`) must have changed nothing;
//! - any other failed call took effect within its call (with any result),
//!   or not at all; a failed create may also be undone later (its
//!   handle's next renewal pass removes the version it may have made);
//! - so the model compares what the rules decide of a returned task
//!   (`Compare::Rules`), not the times it was stamped with;
//! - a listing or `get_all` is checked weaker: each task it returns is a
//!   state the task held within the call (the whole walk of a listing in
//!   pages), and a task a whole listing left out was missing (or
//!   finished, for a listing of running tasks) at some moment of it;
//!   every pass (claim, reap, sweep, renewals) and listing is one call per
//!   task, a task a claim or a reap left alone included.
//!
//! On failure it prints the seed (`TASKSTORE_LIN_SEED` replays the calls'
//! choices, not the threads' timing), the task's history (`*` marks the
//! longest order found), and `TASKSTORE_LIN_DUMP=<file>`
//! keeps the whole history, which `TASKSTORE_LIN_CHECK=<file>` checks
//! again. `TASKSTORE_LIN_IDS`, `TASKSTORE_LIN_OPS`,
//! `TASKSTORE_LIN_KILL_MS` (the mean gap between ends of backends),
//! `TASKSTORE_LIN_KILLS=0` and `TASKSTORE_LIN_CUTS=0` tune a longer run.
//! Skipped like every PostgreSQL test without PostgreSQL, unless
//! `TASKSTORE_REQUIRE_PG=1`.

#![cfg(all(feature = "postgres", unix))]

#[path = "pg_linearizable/calls.rs"]
mod calls;
mod common;
#[path = "common/lin/mod.rs"]
mod lin;
#[path = "common/pg.rs"]
mod pg_cluster;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use calls::{open, run_here};
use lin::{Call, Compare, Op, Params, Ret, Stamp};
use taskstore::{Error, TaskId};

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
/// A lease no round outlives: leases lapse only by `release`. The other
/// rounds' lease is 30 to 130 milliseconds ([`rounds_for`]), so that leases
/// lapse under the workload and claims and reaps take them
/// (`TASKSTORE_LIN_LEASE_MS` to run one round of a lease chosen, on the
/// system clock, or on the server's with `TASKSTORE_LIN_TIME=server`).
const LONG_LEASE: Duration = Duration::from_millis(lin::LONG_LEASE_MS);

/// The rounds of `seed`, by the leases of every handle in every process
/// and the time they go by: one whose leases no round outlives, then a
/// short one, both on the system clock; then the short one on the
/// server's clock, from hosts whose clocks are seconds to an hour apart.
fn rounds_for(seed: u64) -> Vec<(Duration, Time)> {
    let ms = std::env::var("TASKSTORE_LIN_LEASE_MS")
        .ok()
        .and_then(|s| s.parse().ok());
    let short = Duration::from_millis(30 + seed % 100);
    match ms {
        Some(ms) => {
            let time = match std::env::var("TASKSTORE_LIN_TIME").as_deref() {
                Ok("server") => Time::Server,
                _ => Time::System,
            };
            vec![(Duration::from_millis(ms), time)]
        }
        None => vec![
            (LONG_LEASE, Time::System),
            (short, Time::System),
            (short, Time::Server),
        ],
    }
}

/// What a round's handles go by for their TTLs and leases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Time {
    /// The system clock, which every handle here reads
    /// (`TimeSource::Clock`): the wall clock the calls are recorded by.
    System,
    /// The server's clock (`TimeSource::Server`, the default), measured
    /// every [`SERVER_CLOCK_REFRESH`] by handles whose own clocks are off
    /// by [`skew`]: the time each reads is the server's within its
    /// measurement's error and the clocks' drift since (`Op::clock_ns`,
    /// set by [`Round::run`]).
    Server,
}

impl Time {
    fn arg(self) -> &'static str {
        match self {
            Time::System => "system",
            Time::Server => "server",
        }
    }

    fn from_arg(arg: &str) -> Time {
        match arg {
            "server" => Time::Server,
            _ => Time::System,
        }
    }
}

/// How often a handle of a [`Time::Server`] round measures the server's
/// clock again: several times a round, so that calls meet new measurements.
const SERVER_CLOCK_REFRESH: Duration = Duration::from_millis(200);

/// How far the clock of handle `instance` is off, in a [`Time::Server`]
/// round: every handle's differently, from an hour behind to an hour
/// ahead.
fn skew(instance: &str) -> time::Duration {
    let seconds = match instance {
        "parent-h0" => 7,
        "parent-h1" => -3_600,
        "child0-h0" => 3_600,
        "child1-h0" => -11,
        _ => 1,
    };
    time::Duration::seconds(seconds)
}

/// The system clock, off by a host's skew.
#[derive(Debug)]
struct SkewedClock(time::Duration);

impl taskstore::Clock for SkewedClock {
    fn now(&self) -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc() + self.0
    }
}

/// The claim grace of a run whose leases last `lease`: the default (one
/// lease) where leases do not lapse, none where they do, so that a lapsed
/// lease's task is claimed, not failed, while the run lasts.
fn grace_for(lease: Duration) -> Duration {
    if lease >= LONG_LEASE {
        lease
    } else {
        Duration::ZERO
    }
}

fn task_id(n: usize) -> TaskId {
    TaskId::parse(&format!("lin-{n}")).unwrap()
}

/// What sets this store's histories apart for the model, for a run whose
/// leases last `lease`.
fn params(lease: Duration) -> Params {
    Params {
        // Calls of unknown outcome (connections ended, replies lost) leave
        // the times they stamped and what they wrote unknown: the model
        // compares what the rules decide.
        compare: Compare::Rules,
        claim_grace: grace_for(lease),
        kind: KIND,
        id: task_id,
        // A history with many calls of unknown outcome has many orders to
        // try: past this many steps it is said undecided.
        budget: Some(5_000_000),
    }
}

/// An error that promises nothing was applied (`Error::changed_nothing`),
/// or one after which it may or may not have been.
fn failure(e: Error) -> Ret {
    lin::error_or(e, |e| {
        if e.changed_nothing() {
            Ret::Nothing(e.to_string())
        } else {
            Ret::Unknown(e.to_string())
        }
    })
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
    // The proxy counts from its start: an earlier round's are not this one's.
    let before = proxy.cuts();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1 + rng.below(40)));
        let marker = format!("lin-{}", rng.below(ids() as u64));
        proxy.arm(&[&marker]);
    }
    proxy.cuts() - before
}

/// How far, at most, each handle of a round read the time from the wall
/// clock the calls were recorded by, set as each of its calls'
/// `clock_ns`: none on the system clock; on the server's, the largest
/// error of a measurement any of the handle's calls met (`clock_ns` as
/// recorded: half its round trip; the largest, as a handle's time never
/// goes back, so a reading may still be one an earlier measurement's
/// error took ahead), plus how far the wall clock (the server's, on this
/// host) drifted from the monotonic clock (which carries a handle's time
/// on between measurements) over the round, plus 2 ms: that drift between
/// a handle's open and its first call, and the server's microsecond
/// rounding (`src/pg/clock.rs`, "Bound"). Returns the largest.
fn bound_clocks(ops: &mut [Op], time: Time) -> u64 {
    if time == Time::System {
        for o in ops.iter_mut() {
            o.clock_ns = 0;
        }
        return 0;
    }
    let mut measured: HashMap<String, u64> = HashMap::new();
    for o in ops.iter() {
        let m = measured.entry(o.token.clone()).or_default();
        *m = (*m).max(o.clock_ns);
    }
    let offsets: Vec<i128> = ops
        .iter()
        .flat_map(|o| [o.start, o.end])
        .filter(|s| s.wall < u64::MAX)
        .map(|s| i128::from(s.wall) - i128::from(s.mono))
        .collect();
    let drift = offsets.iter().max().zip(offsets.iter().min());
    let drift = drift.map_or(0, |(hi, lo)| u64::try_from(hi - lo).unwrap());
    let mut largest = 0;
    for o in ops.iter_mut() {
        o.clock_ns = measured[&o.token] + drift + 2_000_000;
        largest = largest.max(o.clock_ns);
    }
    largest
}

/// Whether some of the calls `made` picks were applied, if a hundred or
/// more were made. Every history of calls that all failed of unknown
/// outcome is linearizable: a statement the server refuses would pass
/// unseen.
fn some_applied(ops: &[Op], made: impl Fn(&Call) -> bool) -> bool {
    let calls: Vec<&Op> = ops.iter().filter(|o| made(&o.call)).collect();
    calls.len() < 100 || calls.iter().any(|o| matches!(o.ret, Ret::Applied(_)))
}

#[test]
fn concurrent_histories_over_postgres_are_linearizable() {
    let test = "concurrent_histories_over_postgres_are_linearizable";
    if let Some((_, args)) = role() {
        // A child: args are conninfo, schema, out file, name, seed, the
        // run's lease in milliseconds and the time it goes by.
        let seed: u64 = args[4].parse().unwrap();
        let lease = Duration::from_millis(args[5].parse().unwrap());
        let time = Time::from_arg(&args[6]);
        let threads = (1, CHILD_THREADS);
        let ops = run_here(&args[0], &args[1], &args[3], threads, seed, (lease, time));
        common::write_atomic(Path::new(&args[2]), &serde_json::to_vec(&ops).unwrap());
        return;
    }
    if let Ok(path) = std::env::var("TASKSTORE_LIN_CHECK") {
        // Checks a history dumped by an earlier run (`TASKSTORE_LIN_DUMP`).
        let ops: Vec<Op> = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let lease = ops
            .first()
            .map_or(LONG_LEASE, |o| Duration::from_nanos(o.lease_ns));
        lin::check(&ops, &params(lease), "a dumped history");
        return;
    }
    let Some(cluster) = pg_cluster::shared() else {
        return;
    };
    let seed = std::env::var("TASKSTORE_LIN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| Rng::new(Stamp::now().wall ^ u64::from(std::process::id())).next() >> 1);
    eprintln!("{test}: TASKSTORE_LIN_SEED={seed} replays its operations' choices");
    let kills = std::env::var("TASKSTORE_LIN_KILLS").map_or(true, |v| v != "0");
    let cuts = std::env::var("TASKSTORE_LIN_CUTS").map_or(true, |v| v != "0");
    let proxy = pg_cluster::LosesAReply::start(cluster);
    let conninfo = if cuts {
        proxy.conninfo()
    } else {
        cluster.conninfo()
    };
    for (lease, time) in rounds_for(seed) {
        let round = Round {
            cluster,
            proxy: cuts.then_some(&proxy),
            conninfo: &conninfo,
            kills,
            seed,
            lease,
            time,
        };
        round.run(test);
    }
}

/// One round of the test: its workload on a fresh schema, with leases of
/// `lease`, checked.
struct Round<'a> {
    cluster: &'a pg_cluster::Cluster,
    /// The proxy that loses replies, if it does.
    proxy: Option<&'a pg_cluster::LosesAReply>,
    conninfo: &'a str,
    /// Whether backends are ended meanwhile.
    kills: bool,
    seed: u64,
    lease: Duration,
    time: Time,
}

impl Round<'_> {
    fn run(&self, test: &str) {
        let Round {
            cluster,
            proxy,
            conninfo,
            kills,
            seed,
            lease,
            time,
        } = *self;
        let conninfo = conninfo.to_owned();
        let schema = pg_cluster::fresh_schema("lin");
        // The schema made before anything is killed.
        drop(open(&conninfo, &schema, "maker", lease, time));
        let work_dir = tempfile::tempdir().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (ops, killed, cut) = std::thread::scope(|s| {
            let killing = kills.then(|| {
                let stop = stop.clone();
                s.spawn(move || killer(cluster, seed ^ 0xdead, &stop))
            });
            let cutting = proxy.map(|proxy| {
                let stop = stop.clone();
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
                        lease.as_millis().to_string(),
                        time.arg().to_owned(),
                    ];
                    spawn(work_dir.path(), test, "worker", &args)
                })
                .collect();
            let threads = (2, PARENT_THREADS);
            let mut ops = run_here(&conninfo, &schema, "parent", threads, seed, (lease, time));
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
        let mut ops = ops;
        let clock_bound = bound_clocks(&mut ops, time);
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
        let checked = lin::check(
            &ops,
            &params(lease),
            &format!("seed {seed}, leases of {lease:?}, {time:?} time"),
        );
        let creates = |c: &Call| matches!(c, Call::Create { .. });
        let updates = |c: &Call| matches!(c, Call::Update { .. });
        assert!(
            some_applied(&ops, creates),
            "no create applied (seed {seed}, leases of {lease:?})"
        );
        assert!(
            some_applied(&ops, updates),
            "no update applied (seed {seed}, leases of {lease:?})"
        );
        // The active-task counter counts the active rows, whatever was lost.
        let (counter, active) = pg_cluster::counter_and_active(&mut cluster.client(), &schema);
        assert_eq!(
            counter, active,
            "the active-task counter is out (seed {seed}, leases of {lease:?})"
        );
        let applied = |made: fn(&Call) -> bool| {
            ops.iter()
                .filter(|o| made(&o.call) && matches!(o.ret, Ret::Applied(_)))
                .count()
        };
        let claimed = applied(|c| matches!(c, Call::Claimed));
        let reaped = applied(|c| matches!(c, Call::Reaped));
        eprintln!(
            "{test}: {checked} operations on {} tasks linearizable ({unknown} of unknown outcome, \
         {nothing} that changed nothing; {claimed} claims and {reaped} reaps applied; \
         {killed} backends ended, {cut} replies lost; leases of {lease:?}, {time:?} time, \
         clocks within {clock_bound} ns)",
            ids()
        );
    }
}
