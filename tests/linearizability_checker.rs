//! The linearizability check both backends' tests share (`common/lin/`),
//! on histories written by hand: where the two checks it replaced parted,
//! what each got wrong.
//!
//! - `pg_linearizable`'s judged each call's view of a task's expiry on its
//!   own, so that a call could see a task live after an earlier call had
//!   seen it expired (a create of unknown outcome leaves its expiry known
//!   only within a window): the shared model places each call at an
//!   instant, no earlier than the previous call's, and a task seen expired
//!   stays gone.
//! - `pg_linearizable`'s took a task a listing returned whatever the
//!   listing's filter: the shared model checks the filter admits it.
//! - `linearizable`'s ordered calls by the wall clock, so that a step of it
//!   during a run failed a history that is linearizable: the shared check
//!   orders calls by the monotonic clock.

#[path = "common/lin/mod.rs"]
mod lin;

use std::time::Duration;

use lin::{Call, Compare, Filter, Op, Params, Ret, Stamp};
use serde_json::json;
use taskstore::{Task, TaskId};

const MS: u64 = 1_000_000;
/// A wall-clock time of the histories: 2026-01-01.
const W0: u64 = 1_767_225_600_000_000_000;
const LEASE_NS: u64 = 3_600_000 * MS;

fn id(n: usize) -> TaskId {
    TaskId::parse(&format!("t{n}")).unwrap()
}

fn params(compare: Compare) -> Params {
    Params {
        compare,
        claim_grace: Duration::ZERO,
        kind: "k",
        id,
        budget: None,
    }
}

/// A call of handle `h` on task 0 made at `start` and answered at `end`
/// (milliseconds: monotonic, and the wall clock's readings).
fn op(call: Call, ret: Ret, (start, end): (u64, u64), (wall_start, wall_end): (u64, u64)) -> Op {
    Op {
        instance: "h".into(),
        token: "token".into(),
        thread: "h/t0".into(),
        id: 0,
        call,
        ret,
        start: Stamp {
            mono: start * MS,
            wall: wall_start,
        },
        end: Stamp {
            mono: end * MS,
            wall: wall_end,
        },
        lease_ns: LEASE_NS,
        clock_ns: 0,
    }
}

fn create(marker: &str, ttl_ms: Option<u64>) -> Call {
    Call::Create {
        marker: marker.into(),
        resumable: false,
        ttl_ms,
        max_attempts: None,
    }
}

/// The task `create(marker, ttl_ms)` makes at `at` (wall clock), at
/// `revision` with `status`.
fn task(marker: &str, ttl_ms: Option<u64>, at: u64, revision: u64, status: &str) -> Task {
    let stamp = |ns: u64| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    serde_json::from_value(json!({
        "taskId": "t0",
        "status": status,
        "createdAt": stamp(at),
        "lastUpdatedAt": stamp(at),
        "ttlMs": ttl_ms,
        "metadata": { "m": marker },
        "revision": revision,
        "owner": "h",
        "leaseExpiresAt": stamp(at + LEASE_NS),
        "ownerToken": "token",
    }))
    .unwrap()
}

/// Whether `lin::check` takes `history` as linearizable (it panics, saying
/// why, if not).
fn linearizable(history: &[Op], compare: Compare) -> bool {
    let history = history.to_vec();
    std::panic::catch_unwind(move || lin::check(&history, &params(compare), "by hand")).is_ok()
}

#[test]
fn a_task_seen_expired_is_not_seen_live_by_a_later_call() {
    // A create of unknown outcome (a reply lost), with a TTL of 100 ms: the
    // task expires between 100 and 150 ms. A read at 120..130 ms finds it
    // gone; a read that began after that one ended finds it live.
    let wall = |ms: u64| W0 + ms * MS;
    let made = op(
        create("a", Some(100)),
        Ret::Unknown("the reply was lost".into()),
        (0, 50),
        (wall(0), wall(50)),
    );
    let gone = op(
        Call::Get,
        Ret::Task(None),
        (120, 130),
        (wall(120), wall(130)),
    );
    let live = op(
        Call::Get,
        Ret::Task(Some(task("a", Some(100), wall(40), 1, "working"))),
        (140, 145),
        (wall(140), wall(145)),
    );
    assert!(!linearizable(
        &[made.clone(), gone.clone(), live.clone()],
        Compare::Rules
    ));
    // Either read alone is fine; so are both the other way round.
    assert!(linearizable(&[made.clone(), gone.clone()], Compare::Rules));
    assert!(linearizable(&[made.clone(), live.clone()], Compare::Rules));
    let early_live = op(live.call, live.ret, (60, 70), (wall(60), wall(70)));
    assert!(linearizable(&[made, early_live, gone], Compare::Rules));
}

#[test]
fn a_listing_returns_only_tasks_its_filter_admits() {
    let wall = |ms: u64| W0 + ms * MS;
    let made = op(
        create("a", None),
        Ret::Applied(task("a", None, wall(5), 1, "working")),
        (0, 10),
        (wall(0), wall(10)),
    );
    let finished = op(
        Call::Finish {
            how: 0,
            value: "f".into(),
            fence: None,
        },
        Ret::Applied(task("a", None, wall(25), 2, "completed")),
        (20, 30),
        (wall(20), wall(30)),
    );
    let listed = |filter: Filter| {
        op(
            Call::Paged { filter },
            Ret::Task(Some(task("a", None, wall(25), 2, "completed"))),
            (40, 50),
            (wall(40), wall(50)),
        )
    };
    let history = |filter| vec![made.clone(), finished.clone(), listed(filter)];
    assert!(!linearizable(&history(Filter::Active), Compare::Rules));
    assert!(linearizable(&history(Filter::All), Compare::Rules));
}

#[test]
fn a_clock_off_the_wall_clock_is_judged_within_its_bound_and_no_further() {
    // A store going by a database server's clock reads a time up to
    // `clock_ns` off the wall clock the calls were recorded by. A task
    // created at 5 ms with a TTL of 100 ms expires at 105 ms; a read
    // recorded at 100..102 ms finds it gone, as a store whose clock ran
    // 3 to 5 ms ahead would.
    let wall = |ms: u64| W0 + ms * MS;
    let history = |clock_ms: u64| {
        let made = op(
            create("a", Some(100)),
            Ret::Applied(task("a", Some(100), wall(5), 1, "working")),
            (0, 10),
            (wall(0), wall(10)),
        );
        let gone = op(
            Call::Get,
            Ret::Task(None),
            (100, 102),
            (wall(100), wall(102)),
        );
        [made, gone].map(|o| Op {
            clock_ns: clock_ms * MS,
            ..o
        })
    };
    assert!(!linearizable(&history(0), Compare::Whole));
    assert!(!linearizable(&history(2), Compare::Whole));
    assert!(linearizable(&history(3), Compare::Whole));
    assert!(linearizable(&history(5), Compare::Whole));
    // A time stamped past the call's span by the clock's error is the
    // store's reading; past it by more, not.
    let stamped_late = |clock_ms: u64| {
        [op(
            create("a", None),
            Ret::Applied(task("a", None, wall(12), 1, "working")),
            (0, 10),
            (wall(0), wall(10)),
        )]
        .map(|o| Op {
            clock_ns: clock_ms * MS,
            ..o
        })
    };
    assert!(!linearizable(&stamped_late(0), Compare::Whole));
    assert!(!linearizable(&stamped_late(1), Compare::Whole));
    assert!(linearizable(&stamped_late(2), Compare::Whole));
}

#[test]
fn a_step_of_the_wall_clock_fails_no_history() {
    // The wall clock steps back an hour between a create and the read
    // after it: the read's wall-clock times are all before the create's.
    let created = W0 + 5 * MS;
    let made = op(
        create("a", None),
        Ret::Applied(task("a", None, created, 1, "working")),
        (0, 10),
        (W0, W0 + 10 * MS),
    );
    let back = W0 - 3_600_000 * MS;
    let read = op(
        Call::Get,
        Ret::Task(Some(task("a", None, created, 1, "working"))),
        (20, 30),
        (back + 20 * MS, back + 30 * MS),
    );
    assert!(linearizable(&[made.clone(), read.clone()], Compare::Whole));
    // Read before the create, by the monotonic clock: not linearizable.
    let before = op(read.call, read.ret, (0, 1), (back, back + MS));
    let made = op(made.call, made.ret, (2, 10), (W0, W0 + 10 * MS));
    assert!(!linearizable(&[made, before], Compare::Whole));
}

#[test]
fn a_renewal_that_lasted_its_lease_may_have_written_twice() {
    // A batch of fresh leases that returned after the lease it wrote had
    // lapsed renews the task again within the call: a renewal of 30 ms
    // leases that took 60 ms returns revision 3 of a task at revision 1,
    // and a read in between may see revision 2, the first write.
    let wall = |ms: u64| W0 + ms * MS;
    let leased = |mut o: Op| {
        o.lease_ns = 30 * MS;
        o
    };
    let made = leased(op(
        create("a", None),
        Ret::Applied(task("a", None, wall(5), 1, "working")),
        (0, 10),
        (wall(0), wall(10)),
    ));
    let renewal = |(start, end): (u64, u64)| {
        leased(op(
            Call::RenewLease,
            Ret::Applied(task("a", None, wall(5), 3, "working")),
            (start, end),
            (wall(start), wall(end)),
        ))
    };
    let read = |(start, end): (u64, u64)| {
        let mut read = leased(op(
            Call::Get,
            Ret::Task(Some(task("a", None, wall(5), 2, "working"))),
            (start, end),
            (wall(start), wall(end)),
        ));
        read.thread = "h/t1".into();
        read
    };
    let history = |renewed, seen| vec![made.clone(), renewal(renewed), read(seen)];
    assert!(linearizable(&history((20, 80), (40, 50)), Compare::Rules));
    // Both writes made within the call, the first one before the second.
    assert!(!linearizable(&history((20, 80), (90, 95)), Compare::Rules));
    // A call shorter than its lease wrote once.
    assert!(!linearizable(&history((20, 45), (25, 30)), Compare::Rules));
    assert!(!linearizable(
        &[made.clone(), renewal((20, 45))],
        Compare::Rules
    ));
    assert!(linearizable(&[made, renewal((20, 80))], Compare::Rules));
}
