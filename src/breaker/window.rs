//! The sliding time window of call outcomes, kept as a fixed ring of buckets.

use time::OffsetDateTime;

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
}

/// A sliding window of `buckets` buckets of `bucket_nanos` each.
///
/// A call recorded at time `t` falls in bucket `floor(t / bucket_nanos)`; at
/// time `now` the window holds the calls of the current bucket and the
/// `buckets - 1` before it. Time that goes backwards is treated as standing
/// still. Memory is fixed whatever the call rate.
#[derive(Debug)]
pub(crate) struct Window {
    bucket_nanos: i128,
    buckets: Box<[Bucket]>,
    /// The newest bucket index seen.
    latest: i128,
}

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    index: i128,
    totals: Totals,
}

impl Window {
    pub fn new(window: std::time::Duration, buckets: u32) -> Window {
        let buckets = buckets.max(1);
        let bucket_nanos = (window.as_nanos() / u128::from(buckets)).max(1);
        Window {
            bucket_nanos: i128::try_from(bucket_nanos).unwrap_or(i128::MAX),
            buckets: vec![
                Bucket {
                    index: i128::MIN,
                    totals: Totals::default()
                };
                buckets as usize
            ]
            .into_boxed_slice(),
            latest: i128::MIN,
        }
    }

    pub fn record(&mut self, now: OffsetDateTime, failed: bool, slow: bool) {
        let index = self.index(now);
        let len = self.buckets.len() as i128;
        let bucket = &mut self.buckets[index.rem_euclid(len) as usize];
        if bucket.index != index {
            *bucket = Bucket {
                index,
                totals: Totals::default(),
            };
        }
        bucket.totals.calls += 1;
        bucket.totals.failures += u64::from(failed);
        bucket.totals.slow += u64::from(slow);
    }

    pub fn totals(&mut self, now: OffsetDateTime) -> Totals {
        let current = self.index(now);
        let oldest = current - (self.buckets.len() as i128 - 1);
        let mut sum = Totals::default();
        for bucket in self
            .buckets
            .iter()
            .filter(|b| b.index >= oldest && b.index <= current)
        {
            sum.calls += bucket.totals.calls;
            sum.failures += bucket.totals.failures;
            sum.slow += bucket.totals.slow;
        }
        sum
    }

    pub fn clear(&mut self) {
        for bucket in self.buckets.iter_mut() {
            bucket.index = i128::MIN;
            bucket.totals = Totals::default();
        }
    }

    /// The bucket index of `now`, never behind the newest one seen.
    fn index(&mut self, now: OffsetDateTime) -> i128 {
        let index = now.unix_timestamp_nanos().div_euclid(self.bucket_nanos);
        self.latest = self.latest.max(index);
        self.latest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn calls_leave_with_their_bucket() {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let mut w = Window::new(Duration::from_secs(10), 10);
        w.record(t0, true, false);
        w.record(t0 + Duration::from_millis(5_500), false, true);
        assert_eq!(w.totals(t0 + Duration::from_millis(9_999)).calls, 2);
        // At 10 s the bucket [0 s, 1 s) has left the window.
        let t = w.totals(t0 + Duration::from_secs(10));
        assert_eq!((t.calls, t.failures, t.slow), (1, 0, 1));
        assert_eq!(w.totals(t0 + Duration::from_secs(15)).calls, 0);
    }

    #[test]
    fn time_going_backwards_stands_still() {
        let t0 = OffsetDateTime::UNIX_EPOCH + Duration::from_secs(100);
        let mut w = Window::new(Duration::from_secs(10), 10);
        w.record(t0, true, false);
        w.record(t0 - Duration::from_secs(50), true, false);
        assert_eq!(w.totals(t0 - Duration::from_secs(60)).failures, 2);
    }
}
