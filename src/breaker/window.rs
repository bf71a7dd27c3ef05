//! The sliding windows of call outcomes: a time window kept as a fixed ring
//! of buckets, or a count window of the last N calls.

use crate::breaker::config::BreakerConfig;

/// What one call counts as in a window. Its value is the count window's
/// encoding of it (bit 0 failed, bit 1 slow).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Verdict {
    /// Succeeded in time.
    Success = 0,
    /// Failed in time.
    Failure = FAILED,
    /// Took longer than the slow-call threshold, whatever it returned: a
    /// failure, and counted as slow.
    Slow = FAILED | SLOW,
}

impl Verdict {
    /// Whether it counts as a failure.
    #[inline]
    pub fn failed(self) -> bool {
        self != Verdict::Success
    }
}

/// Calls counted in the window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub calls: u64,
    pub failures: u64,
    pub slow: u64,
}

impl Totals {
    /// Failures / calls, or `None` with no calls.
    pub fn failure_rate(&self) -> Option<f64> {
        (self.calls > 0).then(|| self.failures as f64 / self.calls as f64)
    }

    fn add(&mut self, other: Totals) {
        self.calls += other.calls;
        self.failures += other.failures;
        self.slow += other.slow;
    }

    fn sub(&mut self, other: Totals) {
        self.calls -= other.calls;
        self.failures -= other.failures;
        self.slow -= other.slow;
    }

    fn one(verdict: Verdict) -> Totals {
        Totals {
            calls: 1,
            failures: u64::from(verdict.failed()),
            slow: u64::from(verdict == Verdict::Slow),
        }
    }
}

/// The window a breaker judges its failure rate over, as configured.
#[derive(Debug)]
pub(crate) enum Window {
    /// The calls of the last `window` of time.
    Time(TimeWindow),
    /// The last `window_calls` calls, whenever they were made.
    Count(CountWindow),
}

impl Window {
    pub fn new(config: &BreakerConfig) -> Window {
        match config.window_calls {
            Some(calls) => Window::Count(CountWindow::new(calls)),
            None => Window::Time(TimeWindow::new(config.window, config.window_buckets)),
        }
    }

    /// Whether recording and totalling need the time.
    pub fn needs_time(&self) -> bool {
        matches!(self, Window::Time(_))
    }

    /// Counts one call and returns the calls in the window with it. `now`
    /// (Unix nanoseconds) is asked only by the time window.
    #[inline]
    pub fn record(&mut self, now: impl FnOnce() -> i128, verdict: Verdict) -> Totals {
        match self {
            Window::Time(w) => w.record(now(), verdict),
            Window::Count(w) => w.record(verdict),
        }
    }

    /// The calls in the window. `now` is asked only by the time window.
    pub fn totals(&mut self, now: impl FnOnce() -> i128) -> Totals {
        match self {
            Window::Time(w) => w.totals(now()),
            Window::Count(w) => w.totals(),
        }
    }

    pub fn clear(&mut self) {
        match self {
            Window::Time(w) => w.clear(),
            Window::Count(w) => w.clear(),
        }
    }
}

/// A sliding window of `buckets` buckets of `bucket_nanos` each.
///
/// A call recorded at time `t` (Unix nanoseconds) falls in bucket
/// `floor(t / bucket_nanos)`; at time `now` the window holds the calls of the
/// current bucket and the `buckets - 1` before it. Time that goes backwards
/// is treated as standing still. Memory is fixed whatever the call rate, and
/// a call within the current bucket costs two comparisons and no division.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    bucket_nanos: i128,
    /// The totals of bucket `i` at `i mod len`, for the buckets in the
    /// window; the slots of buckets that left it are zero.
    buckets: Box<[Totals]>,
    /// The newest bucket index seen (`i128::MIN` before the first call).
    latest: i128,
    /// Where bucket `latest` is kept in `buckets`.
    latest_slot: usize,
    /// The time range of bucket `latest`: `[start, end)`. A time before `end`
    /// is in the latest bucket, or goes backwards and stands still in it.
    end: i128,
    /// The sum of `buckets`.
    sum: Totals,
}

impl TimeWindow {
    pub fn new(window: std::time::Duration, buckets: u32) -> TimeWindow {
        let buckets = buckets.max(1);
        let bucket_nanos = (window.as_nanos() / u128::from(buckets)).max(1);
        TimeWindow {
            bucket_nanos: i128::try_from(bucket_nanos).unwrap_or(i128::MAX),
            buckets: vec![Totals::default(); buckets as usize].into_boxed_slice(),
            latest: i128::MIN,
            latest_slot: 0,
            end: i128::MIN,
            sum: Totals::default(),
        }
    }

    pub fn record(&mut self, now: i128, verdict: Verdict) -> Totals {
        self.roll(now);
        let one = Totals::one(verdict);
        self.buckets[self.latest_slot].add(one);
        self.sum.add(one);
        self.sum
    }

    pub fn totals(&mut self, now: i128) -> Totals {
        self.roll(now);
        self.sum
    }

    pub fn clear(&mut self) {
        self.buckets.fill(Totals::default());
        self.sum = Totals::default();
    }

    /// Moves the window to `now`: the buckets that left it are emptied.
    fn roll(&mut self, now: i128) {
        if now < self.end {
            // In the latest bucket, or time went backwards: stand still.
            return;
        }
        let index = now.div_euclid(self.bucket_nanos);
        let len = self.buckets.len();
        // `latest` is `i128::MIN` before the first call: the subtraction saturates.
        let steps = index.saturating_sub(self.latest);
        if steps >= len as i128 {
            self.clear();
        } else {
            for i in self.latest + 1..=index {
                let slot = self.slot(i);
                let gone = std::mem::take(&mut self.buckets[slot]);
                self.sum.sub(gone);
            }
        }
        self.latest = index;
        self.latest_slot = self.slot(index);
        // `index * bucket_nanos <= now`, so only the end can overflow.
        self.end = (index * self.bucket_nanos).saturating_add(self.bucket_nanos);
    }

    fn slot(&self, index: i128) -> usize {
        // The remainder is below `len`, which is a `usize`.
        index.rem_euclid(self.buckets.len() as i128) as usize
    }
}

/// The outcomes of the last `capacity` calls, and their running totals.
///
/// Reads no clock. Memory grows with the calls up to `capacity` bytes and
/// stays there; clearing it keeps the allocation.
#[derive(Debug)]
pub(crate) struct CountWindow {
    capacity: usize,
    /// One [`Verdict`] byte per call: bit 0 failed, bit 1 slow. Holds `min(calls,
    /// capacity)` outcomes (the calls in the window); once full, `next` is
    /// the oldest.
    outcomes: Vec<u8>,
    next: usize,
    /// Failed and slow calls among `outcomes`, kept as plain counters (not a
    /// `Totals`, which the compiler copies through memory on the hot path).
    failures: u64,
    slow: u64,
}

const FAILED: u8 = 1;
const SLOW: u8 = 2;

impl CountWindow {
    pub fn new(calls: u32) -> CountWindow {
        CountWindow {
            capacity: (calls as usize).max(1),
            outcomes: Vec::new(),
            next: 0,
            failures: 0,
            slow: 0,
        }
    }

    #[inline]
    pub fn record(&mut self, verdict: Verdict) -> Totals {
        let outcome = verdict as u8;
        if self.outcomes.len() < self.capacity {
            self.outcomes.push(outcome);
        } else {
            let old = std::mem::replace(&mut self.outcomes[self.next], outcome);
            self.failures -= u64::from(old & FAILED);
            self.slow -= u64::from(old >> 1);
            self.next += 1;
            if self.next == self.capacity {
                self.next = 0;
            }
        }
        self.failures += u64::from(outcome & FAILED);
        self.slow += u64::from(outcome >> 1);
        self.totals()
    }

    /// Whether it holds `capacity` calls, every one a success.
    #[inline]
    pub fn full_of_successes(&self) -> bool {
        self.outcomes.len() == self.capacity && self.failures == 0 && self.slow == 0
    }

    #[inline]
    pub fn totals(&self) -> Totals {
        Totals {
            calls: self.outcomes.len() as u64,
            failures: self.failures,
            slow: self.slow,
        }
    }

    pub fn clear(&mut self) {
        self.outcomes.clear();
        self.next = 0;
        self.failures = 0;
        self.slow = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Verdict::{Failure, Slow, Success};

    const SEC: i128 = 1_000_000_000;

    fn totals(t: Totals) -> (u64, u64, u64) {
        (t.calls, t.failures, t.slow)
    }

    #[test]
    fn calls_leave_with_their_bucket() {
        let mut w = TimeWindow::new(std::time::Duration::from_secs(10), 10);
        w.record(0, Failure);
        w.record(5 * SEC + SEC / 2, Slow);
        assert_eq!(w.totals(10 * SEC - 1).calls, 2);
        // At 10 s the bucket [0 s, 1 s) has left the window.
        assert_eq!(totals(w.totals(10 * SEC)), (1, 1, 1));
        assert_eq!(w.totals(15 * SEC).calls, 0);
    }

    #[test]
    fn time_going_backwards_stands_still() {
        let t0 = 100 * SEC;
        let mut w = TimeWindow::new(std::time::Duration::from_secs(10), 10);
        w.record(t0, Failure);
        w.record(t0 - 50 * SEC, Failure);
        assert_eq!(w.totals(t0 - 60 * SEC).failures, 2);
    }

    #[test]
    fn rolling_step_by_step_and_by_leaps_agree() {
        // One call per 300 ms for a minute, the window read after each; the
        // running sum must equal a recount of the last ten 1 s buckets.
        let mut w = TimeWindow::new(std::time::Duration::from_secs(10), 10);
        let mut calls = vec![];
        for i in 0..200i128 {
            let now = -30 * SEC + i * 300_000_000 + if i % 37 == 0 { 25 * SEC } else { 0 };
            let now = now.max(calls.last().copied().unwrap_or(i128::MIN));
            w.record(now, if i % 3 == 0 { Failure } else { Success });
            calls.push(now);
            let current = now.div_euclid(SEC);
            let expected = calls
                .iter()
                .filter(|t| t.div_euclid(SEC) > current - 10)
                .count();
            assert_eq!(w.totals(now).calls, expected as u64, "call {i}");
        }
    }

    #[test]
    fn negative_times_and_huge_jumps() {
        let mut w = TimeWindow::new(std::time::Duration::from_secs(10), 10);
        w.record(-SEC / 2, Failure);
        assert_eq!(w.totals(-1).calls, 1);
        assert_eq!(w.totals(9 * SEC - 1).calls, 1);
        assert_eq!(w.totals(9 * SEC + SEC / 2).calls, 0);
        w.record(i128::MAX - 1, Failure);
        assert_eq!(w.totals(i128::MAX).calls, 1);
    }

    #[test]
    fn the_count_window_holds_the_last_n_calls() {
        let mut w = CountWindow::new(3);
        w.record(Failure);
        w.record(Slow);
        assert_eq!(totals(w.totals()), (2, 2, 1));
        w.record(Success);
        w.record(Success); // the first failure leaves
        assert_eq!(totals(w.totals()), (3, 1, 1));
        w.record(Success); // the slow failure leaves
        assert_eq!(totals(w.totals()), (3, 0, 0));
        w.clear();
        assert_eq!(totals(w.totals()), (0, 0, 0));
        w.record(Failure);
        assert_eq!(totals(w.totals()), (1, 1, 0));
    }
}
