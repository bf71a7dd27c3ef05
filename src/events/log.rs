//! [`EventLog`]: a bounded, thread-safe ring buffer of recent events.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::clock::{Clock, SystemClock};
use crate::events::Event;

/// The capacity of [`EventLog::new`].
pub const DEFAULT_EVENT_LOG_CAPACITY: usize = 1_000;

/// The most records a log holds: a larger capacity is held to it. Every
/// slot is made when the log is, padded to its own cache line (about 190
/// bytes for an [`Event`], before the record it holds), so a log of this
/// capacity takes about 190 MiB empty.
pub const MAX_EVENT_LOG_CAPACITY: usize = 1 << 20;

/// A bounded ring buffer of the most recent events of this process.
///
/// Every [`push`](EventLog::push) gets the next sequence number (starting
/// at 1) and a timestamp from the log's [`Clock`]; once the log holds
/// [`capacity`](EventLog::capacity) records, each push evicts the oldest one.
/// Readers take a [`snapshot`](EventLog::snapshot), or ask for everything
/// [`since`](EventLog::since) a sequence number and learn exactly how many
/// records they missed.
///
/// # Guarantees
///
/// - Sequence numbers are unique and gap-free across all threads.
/// - The log never holds more than `capacity` records.
/// - Pushers never wait for each other except in the rare case that two of
///   them land on the same slot, and never wait for a reader longer than the
///   reader takes to clone one record: the log is an array of slots, each
///   behind its own lock, and the sequence counter is a single atomic, the
///   only shared word a push writes (evictions are derived from it).
/// - Across successive `since` calls, each passing the previous
///   [`Since::cursor`], every sequence number is either returned once or
///   counted once in [`Since::missed`].
/// - A cursor past the last push is none of this log's: `since` reads from
///   the start and sets [`Since::restarted`]. So is a cursor of another log
///   passed to [`since_of`](EventLog::since_of) with that log's
///   [`id`](EventLog::id), however far this log has pushed.
///
/// # Limitations
///
/// Timestamps are read before the sequence number is taken, so two pushes
/// racing on different threads may carry timestamps slightly out of sequence
/// order. The log is per process and lost on exit: durable observability goes
/// through an [`EventSink`](crate::EventSink) such as
/// [`JsonLinesSink`](crate::JsonLinesSink).
///
/// ```
/// use taskstore::{Event, EventLog};
///
/// let log = EventLog::with_capacity(2);
/// log.push(Event::new("a"));
/// log.push(Event::new("b"));
/// log.push(Event::new("c")); // evicts "a"
///
/// let since = log.since(0);
/// assert_eq!(since.missed, 1);
/// assert_eq!(since.records.iter().map(|r| r.seq).collect::<Vec<_>>(), [2, 3]);
/// assert_eq!(log.evicted(), 1);
/// ```
pub struct EventLog<T = Event> {
    slots: Box<[Padded<Mutex<Slot<T>>>]>,
    /// The next sequence number to hand out: the one word every push
    /// writes, on a cache line of its own so that the fields every push only
    /// reads (the slots, the clock) stay shared between cores.
    head: Padded<AtomicU64>,
    /// The oldest sequence number not removed by `clear`.
    floor: AtomicU64,
    /// `floor` again, with the evictions counted before it: written by
    /// `clear` and read by `evicted` together, so a push counts nothing.
    cleared: Mutex<Cleared>,
    clock: Arc<dyn Clock>,
    /// This log's id ([`EventLog::id`]).
    id: u64,
}

/// The largest id a log takes: the largest integer a JSON number carries
/// exactly in every reader (a JavaScript one too), so that a reader that
/// keeps it hands it back unchanged.
const MAX_LOG_ID: u64 = (1 << 53) - 1;

/// What [`EventLog::evicted`] derives the count of evictions from.
#[derive(Clone, Copy, Debug)]
struct Cleared {
    /// The floor set by the last `clear` (1 before any).
    floor: u64,
    /// Evictions by the pushes before `floor`.
    evicted: u64,
}

/// One entry of the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record<T = Event> {
    /// Its sequence number (the first record of a log is 1).
    pub seq: u64,
    /// When it was pushed, by the log's clock; written as RFC 3339. A
    /// reading RFC 3339 cannot write is held to the nearest instant it
    /// can, so that every record serializes, and every answer with it: one
    /// before year 0 is `0000-01-01T00:00:00Z`, one past the last date a
    /// time holds (a clock of the host's own), the last instant of
    /// 9999-12-31.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// What was pushed.
    pub event: T,
}

/// The answer to [`EventLog::since`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Since<T = Event> {
    /// The records after the requested sequence number, oldest first.
    pub records: Vec<Record<T>>,
    /// How many records after the requested sequence number (and up to
    /// `cursor`) were evicted or cleared before this call could read them.
    pub missed: u64,
    /// The sequence number to pass to the next `since` call: every record up
    /// to it was either returned or counted in `missed`.
    pub cursor: u64,
    /// The [`id`](EventLog::id) of the log that answered: a reader that
    /// may outlive the process keeps it beside `cursor` and passes both to
    /// [`since_of`](EventLog::since_of). (0 in an answer serialized by a
    /// version without it.)
    #[serde(default)]
    pub log: u64,
    /// Whether the sequence number asked for was past the log's last push,
    /// or (from [`since_of`](EventLog::since_of)) of another log: a cursor
    /// this log never handed out (kept from before the process
    /// restarted, or taken from another process's log). The answer then
    /// reads from the log's start, as `since(0)` does, rather than skip
    /// that many events still to come. By its number alone a log knows no
    /// other: `since` takes a cursor from before a restart that the new log
    /// has already pushed past as its own, and skips the records up to it
    /// unmarked. [`since_of`](EventLog::since_of), given the `log` the
    /// cursor came with, tells them apart.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restarted: bool,
}

/// One slot of the ring: the sequence number it last held (0 when never
/// written) and its time and event, unless `clear` removed them. The time is
/// kept as Unix nanoseconds and made an `OffsetDateTime` only when read.
struct Slot<T> {
    seq: u64,
    record: Option<(i128, T)>,
}

/// Keeps neighbouring slots on separate cache lines, so two pushers writing
/// consecutive slots do not slow each other down.
#[repr(align(64))]
struct Padded<T>(T);

impl<T> EventLog<T> {
    /// An empty log holding [`DEFAULT_EVENT_LOG_CAPACITY`] records, timed by
    /// the [`SystemClock`].
    pub fn new() -> EventLog<T> {
        EventLog::with_capacity(DEFAULT_EVENT_LOG_CAPACITY)
    }

    /// An empty log holding at most `capacity` records (at least 1, at most
    /// [`MAX_EVENT_LOG_CAPACITY`]; every slot is made now), timed by the
    /// [`SystemClock`].
    pub fn with_capacity(capacity: usize) -> EventLog<T> {
        EventLog::with_clock(capacity, Arc::new(SystemClock))
    }

    /// An empty log holding at most `capacity` records (at least 1, at most
    /// [`MAX_EVENT_LOG_CAPACITY`]; every slot is made now), timed by
    /// `clock`.
    pub fn with_clock(capacity: usize, clock: Arc<dyn Clock>) -> EventLog<T> {
        let capacity = capacity.clamp(1, MAX_EVENT_LOG_CAPACITY);
        let slots = (0..capacity)
            .map(|_| {
                Padded(Mutex::new(Slot {
                    seq: 0,
                    record: None,
                }))
            })
            .collect();
        EventLog {
            slots,
            head: Padded(AtomicU64::new(1)),
            floor: AtomicU64::new(1),
            cleared: Mutex::new(Cleared {
                floor: 1,
                evicted: 0,
            }),
            clock,
            id: uuid::Uuid::new_v4().as_u64_pair().0 & MAX_LOG_ID,
        }
    }

    /// This log's id: random, drawn when the log is made, so a log made
    /// after a restart (or in another process) has another one. At most
    /// 2<sup>53</sup> − 1, which a JSON number carries exactly to any
    /// reader. Every [`Since`] carries it as [`log`](Since::log).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Appends `event`, evicting the oldest record if the log is full, and
    /// returns its sequence number.
    pub fn push(&self, event: T) -> u64 {
        let at = self.clock.now_unix_nanos();
        // Only the number is needed here: the record itself is published to
        // readers by the slot's lock.
        let seq = self.head.0.fetch_add(1, Ordering::Relaxed);
        let record = (at, event);
        let mut slot = self.lock(seq);
        let gone = if slot.seq < seq {
            slot.seq = seq;
            slot.record.replace(record)
        } else {
            // `capacity` later pushes lapped this one before it got the slot:
            // the record is already as good as evicted.
            Some(record)
        };
        drop(slot);
        // `gone` (the evicted record) is dropped here, outside the lock.
        // Evictions are not counted here but derived from the sequence
        // numbers (see `evicted`): a push touches one shared counter only.
        drop(gone);
        seq
    }

    /// The most records the log holds.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// How many records the log holds now (never more than the capacity).
    ///
    /// Under concurrent pushes this is a moment's figure: it counts records
    /// whose push has taken a sequence number.
    pub fn len(&self) -> usize {
        let head = self.head.0.load(Ordering::Acquire);
        let floor = self.floor.load(Ordering::Acquire);
        let held = head.saturating_sub(floor);
        usize::try_from(held).map_or(self.capacity(), |held| held.min(self.capacity()))
    }

    /// Whether the log holds no records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many records were evicted to make room, over the log's life.
    ///
    /// Records removed by [`clear`](EventLog::clear) are not evictions. Like
    /// [`len`](EventLog::len), it counts from the sequence numbers handed out:
    /// the push of `seq` evicts record `seq - capacity` unless that one was
    /// cleared.
    pub fn evicted(&self) -> u64 {
        let cleared = *self.lock_cleared();
        let head = self.head.0.load(Ordering::Acquire);
        cleared.evicted + self.evicted_between(cleared.floor, head)
    }

    /// The sequence number of the last push (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.head.0.load(Ordering::Acquire) - 1
    }

    /// Removes every record. Sequence numbers go on from where they were; a
    /// later [`since`](EventLog::since) counts the removed records as missed.
    pub fn clear(&self) {
        let mut cleared = self.lock_cleared();
        let head = self.head.0.load(Ordering::Acquire);
        if head > cleared.floor {
            cleared.evicted += self.evicted_between(cleared.floor, head);
            cleared.floor = head;
        }
        self.floor.fetch_max(head, Ordering::AcqRel);
        drop(cleared);
        for slot in self.slots.iter() {
            let mut slot = slot.0.lock().unwrap_or_else(PoisonError::into_inner);
            let gone = if slot.seq < head {
                slot.record.take()
            } else {
                None
            };
            drop(slot);
            drop(gone);
        }
    }

    /// Evictions by the pushes of `floor..head` when `floor` is the floor:
    /// the push of `s` evicts `s - capacity` if that is at least `floor`.
    fn evicted_between(&self, floor: u64, head: u64) -> u64 {
        head.saturating_sub(floor.saturating_add(self.capacity() as u64))
    }

    fn lock_cleared(&self) -> MutexGuard<'_, Cleared> {
        // Two plain integers, never left half-written.
        self.cleared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock(&self, seq: u64) -> MutexGuard<'_, Slot<T>> {
        // The index is below `capacity`, which is a `usize`.
        let index = (seq % self.slots.len() as u64) as usize;
        // A panic while a slot is locked (a panicking `clone`) leaves the slot whole.
        self.slots[index]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T: Clone> EventLog<T> {
    /// Every record the log holds, oldest first.
    ///
    /// Records whose push is still under way on another thread, and those
    /// after them, are left for the next call.
    pub fn snapshot(&self) -> Vec<Record<T>> {
        self.since(0).records
    }

    /// The records after sequence number `seq`, oldest first and gap-free,
    /// and how many records after `seq` the caller missed because they were
    /// evicted or cleared (by pushes that lapped this very read too). Pass 0
    /// for everything.
    ///
    /// Pass the answer's [`cursor`](Since::cursor) to the next call to read
    /// on without losing count. A `seq` past the last push is no cursor of
    /// this log (one kept from before a restart, say): the answer reads from
    /// the start and says so in [`restarted`](Since::restarted).
    pub fn since(&self, seq: u64) -> Since<T> {
        let head = self.head.0.load(Ordering::Acquire);
        // Every cursor this log hands out is below `head`, which only grows.
        let restarted = seq >= head;
        let seq = if restarted { 0 } else { seq };
        let floor = self.floor.load(Ordering::Acquire);
        let first_wanted = seq.saturating_add(1);
        let oldest_held = head.saturating_sub(self.capacity() as u64).max(floor);
        let start = first_wanted.max(oldest_held);
        let mut missed = start - first_wanted;
        let mut cursor = start - 1;
        let mut records =
            Vec::with_capacity(usize::try_from(head.saturating_sub(start)).unwrap_or(0));
        for s in start..head {
            let slot = self.lock(s);
            if slot.seq < s {
                // The push of `s` took its number but has not stored it yet.
                break;
            }
            match &slot.record {
                Some((at, event)) if slot.seq == s => records.push(Record {
                    seq: s,
                    at: datetime(*at),
                    event: event.clone(),
                }),
                // Evicted by a later push (which may lap a slow reader), or
                // removed by `clear`. What was read before it is older still:
                // it is dropped too, so the answer is one gap-free run.
                _ => {
                    missed += records.len() as u64 + 1;
                    records.clear();
                }
            }
            cursor = s;
        }
        Since {
            records,
            missed,
            cursor,
            log: self.id,
            restarted,
        }
    }

    /// [`since`](EventLog::since) for a cursor kept with the
    /// [`log`](Since::log) that handed it out: a cursor of another log (of
    /// this process before a restart, or of another process) reads from
    /// the start and sets [`restarted`](Since::restarted), however far
    /// this log has pushed, where `since` would take its number for one of
    /// its own and skip the records up to it.
    ///
    /// ```
    /// use taskstore::{Event, EventLog};
    ///
    /// let before = EventLog::new();
    /// before.push(Event::new("a"));
    /// let kept = before.since(0);
    ///
    /// // After a restart: a new log, which has pushed past the cursor.
    /// let log = EventLog::new();
    /// log.push(Event::new("b"));
    /// log.push(Event::new("c"));
    /// let since = log.since_of(kept.log, kept.cursor);
    /// assert!(since.restarted);
    /// assert_eq!(since.records.len(), 2);
    /// ```
    pub fn since_of(&self, log: u64, seq: u64) -> Since<T> {
        if log == self.id {
            return self.since(seq);
        }
        let mut since = self.since(0);
        since.restarted = true;
        since
    }
}

/// A record's time: the clock's reading, within the instants RFC 3339
/// writes, so that every record serializes (see [`Record::at`]).
fn datetime(unix_nanos: i128) -> OffsetDateTime {
    crate::clock::writable(crate::clock::at_unix_nanos(unix_nanos))
}

impl<T> Default for EventLog<T> {
    fn default() -> EventLog<T> {
        EventLog::new()
    }
}

impl<T> fmt::Debug for EventLog<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventLog")
            .field("capacity", &self.capacity())
            .field("len", &self.len())
            .field("last_seq", &self.last_seq())
            .field("evicted", &self.evicted())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::time::Duration;

    #[test]
    fn records_carry_the_clock_time() {
        let clock = ManualClock::new(OffsetDateTime::UNIX_EPOCH);
        let log = EventLog::with_clock(4, Arc::new(clock.clone()));
        log.push(1);
        clock.advance(Duration::from_secs(3));
        log.push(2);
        let snap = log.snapshot();
        assert_eq!(snap[0].at, OffsetDateTime::UNIX_EPOCH);
        assert_eq!(
            snap[1].at,
            OffsetDateTime::UNIX_EPOCH + Duration::from_secs(3)
        );
    }

    #[test]
    fn evictions_are_derived_across_clears() {
        let log = EventLog::with_capacity(3);
        for i in 1..=5 {
            log.push(i); // 4 and 5 evict 1 and 2
        }
        assert_eq!(log.evicted(), 2);
        log.clear(); // removes 3, 4, 5: not evictions
        log.clear();
        assert_eq!(log.evicted(), 2);
        for i in 6..=8 {
            log.push(i); // into emptied slots
        }
        assert_eq!(log.evicted(), 2);
        log.push(9); // evicts 6
        assert_eq!(log.evicted(), 3);
        log.clear(); // removes 7, 8, 9
        log.push(10);
        assert_eq!(log.evicted(), 3);
        for i in 11..=14 {
            log.push(i); // 13 and 14 evict 10 and 11
        }
        assert_eq!(log.evicted(), 5);
        assert_eq!(
            log.snapshot().iter().map(|r| r.event).collect::<Vec<_>>(),
            [12, 13, 14]
        );
    }

    #[test]
    fn record_times_are_held_to_what_rfc_3339_writes() {
        use time::format_description::well_known::Rfc3339;
        let year_0 = time::macros::datetime!(0000-01-01 00:00:00 UTC);
        let first = year_0.unix_timestamp_nanos();
        assert_eq!(datetime(first), year_0);
        assert_eq!(datetime(first - 1), year_0);
        assert_eq!(datetime(i128::MIN), year_0);
        assert_eq!(datetime(first + 1), year_0 + time::Duration::NANOSECOND);
        let last = time::PrimitiveDateTime::MAX.assume_utc();
        assert_eq!(datetime(i128::MAX), last);
        assert_eq!(datetime(last.unix_timestamp_nanos()), last);
        for at in [year_0, last] {
            at.format(&Rfc3339).unwrap();
        }
        assert!(
            (year_0 - time::Duration::NANOSECOND)
                .format(&Rfc3339)
                .is_err()
        );
    }

    #[test]
    fn zero_capacity_means_one() {
        let log = EventLog::with_capacity(0);
        log.push(1);
        log.push(2);
        assert_eq!(log.capacity(), 1);
        assert_eq!(
            log.snapshot().iter().map(|r| r.event).collect::<Vec<_>>(),
            [2]
        );
    }
}
