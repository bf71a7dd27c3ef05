//! The event log alone and under concurrent pushers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};

use taskstore::{DEFAULT_EVENT_LOG_CAPACITY, Event, EventLog, ManualClock, Record};

const PUSHERS: u64 = 4;
const PER_PUSHER: u64 = 5_000;

/// Runs `PUSHERS` threads pushing `(thread, i)`; returns every `seq -> value`.
fn push_concurrently(
    log: &Arc<EventLog<(u64, u64)>>,
    during: impl FnOnce(),
) -> HashMap<u64, (u64, u64)> {
    let barrier = Arc::new(Barrier::new(PUSHERS as usize + 1));
    let threads: Vec<_> = (0..PUSHERS)
        .map(|t| {
            let (log, barrier) = (log.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                (0..PER_PUSHER)
                    .map(|i| (log.push((t, i)), (t, i)))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    barrier.wait();
    during();
    threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect()
}

#[test]
fn concurrent_pushers_get_unique_gap_free_sequence_numbers() {
    let log = Arc::new(EventLog::with_capacity(64));
    let pushed = push_concurrently(&log, || {});
    let total = PUSHERS * PER_PUSHER;
    let mut seqs: Vec<u64> = pushed.keys().copied().collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
    assert_eq!(log.len(), 64);
    assert_eq!(log.evicted(), total - 64);
    assert_eq!(log.last_seq(), total);
    let snapshot = log.snapshot();
    let kept: Vec<u64> = snapshot.iter().map(|r| r.seq).collect();
    assert_eq!(kept, (total - 63..=total).collect::<Vec<_>>());
    for record in &snapshot {
        assert_eq!(
            record.event, pushed[&record.seq],
            "record {} holds another push",
            record.seq
        );
    }
}

#[test]
fn readers_never_see_more_than_the_capacity() {
    let log = Arc::new(EventLog::with_capacity(32));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (log, done) = (log.clone(), done.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !done.load(Ordering::Relaxed) || reads == 0 {
                assert!(log.len() <= 32);
                let snapshot = log.snapshot();
                assert!(
                    snapshot.len() <= 32,
                    "snapshot of {} records",
                    snapshot.len()
                );
                assert!(
                    snapshot.windows(2).all(|w| w[0].seq + 1 == w[1].seq),
                    "snapshot not in order"
                );
                reads += 1;
            }
            reads
        })
    };
    push_concurrently(&log, || {});
    done.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    assert_eq!(log.len(), 32);
}

/// Each answer accounts for exactly the records between the cursor given
/// and the one it returns (returned or missed), and over a run for every
/// push; at a capacity of 1 or 2 a reader is overtaken in the middle of a read
/// often, and drops what it had gathered, which must then count as missed.
/// (Counting the drop as one missed record passed the run's total at a
/// capacity of 16, where the overtaking almost never happens.)
#[test]
fn since_counts_missed_records_exactly_under_concurrent_pushers() {
    // The small capacities a few runs each: the overtaking is a race.
    for capacity in [16, 1, 2, 1, 2, 1, 2] {
        since_counts_exactly_at(capacity);
    }
}

fn since_counts_exactly_at(capacity: usize) {
    let log = Arc::new(EventLog::with_capacity(capacity));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (log, done) = (log.clone(), done.clone());
        std::thread::spawn(move || {
            let (mut cursor, mut missed, mut seen): (u64, u64, Vec<Record<(u64, u64)>>) =
                (0, 0, vec![]);
            loop {
                let finished = done.load(Ordering::Acquire);
                let since = log.since(cursor);
                assert!(since.cursor >= cursor);
                if let Some(first) = since.records.first() {
                    assert!(first.seq > cursor);
                }
                assert!(since.records.last().is_none_or(|r| r.seq <= since.cursor));
                assert!(!since.restarted);
                assert_eq!(
                    since.records.len() as u64 + since.missed,
                    since.cursor - cursor,
                    "capacity {capacity}: an answer accounts for every record it moved past"
                );
                missed += since.missed;
                seen.extend(since.records);
                cursor = since.cursor;
                if finished {
                    return (cursor, missed, seen);
                }
            }
        })
    };
    let pushed = push_concurrently(&log, || {});
    done.store(true, Ordering::Release);
    let (cursor, missed, seen) = reader.join().unwrap();

    let total = PUSHERS * PER_PUSHER;
    assert_eq!(cursor, total, "the last read reached the last push");
    assert!(
        seen.windows(2).all(|w| w[0].seq < w[1].seq),
        "a record was returned twice or out of order"
    );
    assert_eq!(
        seen.len() as u64 + missed,
        total,
        "returned + missed must account for every push"
    );
    for record in &seen {
        assert_eq!(record.event, pushed[&record.seq]);
    }
}

#[test]
fn since_reports_what_was_evicted_and_where_to_go_on() {
    let log = EventLog::with_capacity(3);
    for i in 1..=5 {
        assert_eq!(log.push(i), i);
    }
    let all = log.since(0);
    assert_eq!((all.missed, all.cursor), (2, 5));
    assert_eq!(
        all.records.iter().map(|r| r.event).collect::<Vec<_>>(),
        [3, 4, 5]
    );

    let later = log.since(3);
    assert_eq!((later.missed, later.records.len(), later.cursor), (0, 2, 5));
    let none = log.since(5);
    assert_eq!((none.missed, none.records.len(), none.cursor), (0, 0, 5));

    for i in 6..=12 {
        log.push(i);
    }
    let gap = log.since(5);
    assert_eq!(gap.missed, 4, "6..=9 were evicted");
    assert_eq!(
        gap.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [10, 11, 12]
    );
    assert_eq!(log.evicted(), 9);
}

#[test]
fn clear_empties_the_log_and_sequence_numbers_go_on() {
    let log = EventLog::with_capacity(10);
    for i in 0..4 {
        log.push(i);
    }
    log.clear();
    assert!(log.is_empty());
    assert!(log.snapshot().is_empty());
    assert_eq!(log.evicted(), 0, "clearing is not eviction");
    assert_eq!(log.push(99), 5);
    let since = log.since(2);
    assert_eq!(
        since.missed, 2,
        "records 3 and 4 were cleared before being read"
    );
    assert_eq!(since.records.iter().map(|r| r.seq).collect::<Vec<_>>(), [5]);
    assert_eq!(log.len(), 1);
}

#[test]
fn the_default_log_holds_a_thousand_records_oldest_first() {
    let log: EventLog = EventLog::default();
    assert_eq!(log.capacity(), DEFAULT_EVENT_LOG_CAPACITY);
    for i in 0..1_500u64 {
        log.push(Event::new("tick").field("i", i));
    }
    let snapshot = log.snapshot();
    assert_eq!(snapshot.len(), 1_000);
    assert_eq!(snapshot[0].seq, 501);
    assert_eq!(snapshot[0].event.data["i"], 500);
    assert_eq!(snapshot[999].seq, 1_500);
}

#[test]
fn records_serialize_for_a_debugging_endpoint() {
    let clock = ManualClock::new(time::macros::datetime!(2026-01-02 03:04:05 UTC));
    let log = EventLog::with_clock(4, Arc::new(clock));
    log.push(
        Event::new("task.created")
            .to_layer("working")
            .field("taskId", "t1"),
    );
    let since = log.since(0);
    let json = serde_json::to_value(&since).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "records": [{
                "seq": 1,
                "at": "2026-01-02T03:04:05Z",
                "event": {"kind": "task.created", "layer_to": "working", "data": {"taskId": "t1"}},
            }],
            "missed": 0,
            "cursor": 1,
            "log": log.id(),
        })
    );
    let back: taskstore::Since = serde_json::from_value(json).unwrap();
    assert_eq!(back, since);
    // A JSON number carries the log's id exactly to any reader (a
    // JavaScript one reads numbers as doubles).
    assert!(log.id() < 1 << 53);
    let _: Vec<Record> =
        serde_json::from_str(&serde_json::to_string(&log.snapshot()).unwrap()).unwrap();
}

#[test]
fn a_cursor_past_the_last_push_starts_over_and_says_so() {
    // A reader that kept its cursor across a restart of the process (or
    // read another process's log) holds a number this log has not reached:
    // reading on from it would skip that many new events without a word.
    let log = EventLog::with_capacity(4);
    for i in 1..=3 {
        log.push(i);
    }
    let foreign = log.since(10);
    assert!(
        foreign.restarted,
        "a cursor past the last push is not this log's"
    );
    assert_eq!(foreign.missed, 0);
    assert_eq!(
        foreign.records.iter().map(|r| r.event).collect::<Vec<_>>(),
        [1, 2, 3],
        "it reads from the start, as since(0) does"
    );
    assert_eq!(foreign.cursor, 3);

    // Read on from the answer's cursor: nothing new is skipped.
    log.push(4);
    let next = log.since(foreign.cursor);
    assert!(!next.restarted);
    assert_eq!(
        next.records.iter().map(|r| r.event).collect::<Vec<_>>(),
        [4]
    );

    // The last push itself is a cursor of this log, not a foreign one; the
    // number after it is not (taken for one, the next push, which gets that
    // number, would be skipped by the read after it).
    let caught_up = log.since(4);
    assert!(!caught_up.restarted);
    assert!(caught_up.records.is_empty());
    let ahead = log.since(5);
    assert!(
        ahead.restarted,
        "one past the last push is no cursor of this log"
    );
    assert_eq!(ahead.records.len(), 4);

    // A cursor past the end of a log that lapped its capacity starts over
    // with what it holds, and counts what it lost as missed.
    for i in 5..=7 {
        log.push(i);
    }
    let lapped = log.since(100);
    assert!(lapped.restarted);
    assert_eq!(lapped.missed, 3, "1, 2 and 3 were evicted");
    assert_eq!(
        lapped.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [4, 5, 6, 7]
    );
}

/// A cursor kept from before a restart that the new log has already pushed
/// past looks like one of its own by its number alone: `since` skips the
/// records up to it without a word. With the log's id kept beside it
/// (`Since::log`), `since_of` tells it from this log's own, reads from the
/// start and says so; and a cursor of this log reads on as `since` does.
/// (In a container the process id is the same after every restart, so it
/// tells nothing.)
#[test]
fn a_cursor_of_another_log_starts_over_though_this_one_pushed_past_it() {
    let before = EventLog::with_capacity(8);
    for i in 1..=3 {
        before.push(i);
    }
    let kept = before.since(0);
    assert_eq!(kept.log, before.id());
    drop(before);

    // The process restarts: a new log, which has pushed past the cursor.
    let log = EventLog::with_capacity(8);
    assert_ne!(log.id(), kept.log, "each log has an id of its own");
    for i in 11..=15 {
        log.push(i);
    }
    let by_number = log.since(kept.cursor);
    assert!(!by_number.restarted, "the number alone cannot tell");
    assert_eq!(by_number.records.len(), 2, "11, 12 and 13 skipped unmarked");

    let resumed = log.since_of(kept.log, kept.cursor);
    assert!(resumed.restarted, "a cursor of another log");
    assert_eq!(resumed.missed, 0);
    assert_eq!(
        resumed.records.iter().map(|r| r.event).collect::<Vec<_>>(),
        [11, 12, 13, 14, 15],
        "it reads from the start, as since(0) does"
    );
    assert_eq!(resumed.log, log.id());

    // This log's own cursor reads on as `since` does.
    log.push(16);
    let next = log.since_of(resumed.log, resumed.cursor);
    assert!(!next.restarted);
    assert_eq!(
        next.records.iter().map(|r| r.event).collect::<Vec<_>>(),
        [16]
    );
    // And one past its last push is still not its own.
    assert!(log.since_of(log.id(), 100).restarted);
}

/// A capacity past what a log takes (a host passing "unbounded" from its
/// configuration) is held to `MAX_EVENT_LOG_CAPACITY`, not a panic: every
/// slot is made when the log is (about 190 bytes each, padded to a cache
/// line), so a log of `usize::MAX` slots cannot exist. (It panicked with
/// "capacity overflow", from a constructor that returns no error.)
#[test]
fn a_capacity_past_the_most_is_held_to_it() {
    let log: EventLog = EventLog::with_capacity(usize::MAX);
    assert_eq!(log.capacity(), taskstore::MAX_EVENT_LOG_CAPACITY);
    log.push(Event::new("tick"));
    assert_eq!(log.len(), 1);
}

/// A record stamped before year 0 (a clock set there: a `ManualClock`, a
/// host's own) has no RFC 3339 form, the form a record's time is written
/// in. It is written as the first instant RFC 3339 holds,
/// `0000-01-01T00:00:00Z`, so that a snapshot or `since` with it
/// serializes, the records around it too; the log keeps it. (Serializing
/// any answer that held it failed, losing every record of the answer.)
#[test]
fn a_record_stamped_before_year_0_serializes_with_the_others() {
    let clock = ManualClock::new(time::macros::datetime!(2026-01-02 03:04:05 UTC));
    let log = EventLog::with_clock(8, Arc::new(clock.clone()));
    log.push(Event::new("before"));
    clock.set(time::macros::datetime!(-0001-06-01 12:00:00 UTC));
    log.push(Event::new("stamped-before-year-0"));
    clock.set(time::PrimitiveDateTime::MIN.assume_utc());
    log.push(Event::new("stamped-at-the-first-instant"));
    clock.set(time::macros::datetime!(2026-01-02 03:04:06 UTC));
    log.push(Event::new("after"));

    let since = log.since(0);
    let json = match serde_json::to_string(&since) {
        Ok(json) => json,
        Err(e) => panic!("the answer does not serialize: {e}"),
    };
    let back: taskstore::Since = serde_json::from_str(&json).unwrap();
    assert_eq!(back, since);
    let at: Vec<String> = back.records.iter().map(|r| r.at.to_string()).collect();
    assert_eq!(
        back.records
            .iter()
            .map(|r| r.event.kind.to_string())
            .collect::<Vec<_>>(),
        [
            "before",
            "stamped-before-year-0",
            "stamped-at-the-first-instant",
            "after"
        ]
    );
    let year_0 = time::macros::datetime!(0000-01-01 00:00:00 UTC);
    assert_eq!(
        back.records.iter().map(|r| r.at).collect::<Vec<_>>(),
        [
            time::macros::datetime!(2026-01-02 03:04:05 UTC),
            year_0,
            year_0,
            time::macros::datetime!(2026-01-02 03:04:06 UTC),
        ],
        "{at:?}"
    );
    // One record alone, as a host writes each to a line of its own.
    for record in log.snapshot() {
        serde_json::to_string(&record).unwrap();
    }
}
