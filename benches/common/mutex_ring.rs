//! The event log's baseline, shared by the `events` and `compare`
//! benchmarks: a `Mutex<VecDeque>` ring and a separate sequence counter.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use taskstore::{Clock, Record, SystemClock};
use time::OffsetDateTime;

/// The baseline: a `Mutex<VecDeque>` ring and a separate sequence counter,
/// storing the same records. It takes its timestamps as the log does (Unix
/// nanoseconds from the system clock, made dates when read), so the two
/// differ in structure only.
pub struct MutexRing<T> {
    records: Mutex<VecDeque<(u64, i128, T)>>,
    seq: AtomicU64,
    capacity: usize,
}

impl<T: Clone> MutexRing<T> {
    pub fn new(capacity: usize) -> MutexRing<T> {
        MutexRing {
            records: Mutex::new(VecDeque::with_capacity(capacity)),
            seq: AtomicU64::new(0),
            capacity,
        }
    }

    pub fn push(&self, event: T) -> u64 {
        let at = SystemClock.now_unix_nanos();
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let mut records = self.records.lock().unwrap();
        if records.len() == self.capacity {
            records.pop_front();
        }
        records.push_back((seq, at, event));
        seq
    }

    pub fn snapshot(&self) -> Vec<Record<T>> {
        let records = self.records.lock().unwrap();
        records
            .iter()
            .map(|(seq, at, event)| Record {
                seq: *seq,
                at: OffsetDateTime::from_unix_timestamp_nanos(*at).unwrap(),
                event: event.clone(),
            })
            .collect()
    }
}
