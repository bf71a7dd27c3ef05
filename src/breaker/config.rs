//! [`BreakerConfig`]: the rules one breaker follows.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The largest count window (`window_calls`): one byte per call.
const MAX_WINDOW_CALLS: u32 = 100_000;

/// The rules of one breaker.
///
/// | field | default | meaning |
/// |---|---|---|
/// | `failure_rate_threshold` | `0.5` | trip when failures / calls in the window reach this (above `0.0`, at most `1.0`) |
/// | `window` | 60 s | the sliding time window over which the rate is counted (`> 0`, and at least `window_buckets` nanoseconds) |
/// | `window_buckets` | 10 | the window is kept as this many buckets of `window / window_buckets`, in whole nanoseconds (so a window that is not a multiple of `window_buckets` ns is kept up to `window_buckets - 1` ns shorter): a call leaves the window when its bucket does (`1..=1000`) |
/// | `window_calls` | off | judge the failure rate over the last N calls instead of the time window; `window` and `window_buckets` are then unused (`1..=100_000`) |
/// | `minimum_calls` | 10 | the rate is not judged before the window holds this many calls (`>= 1`, and `<= window_calls` when that is set) |
/// | `consecutive_failures` | off | also trip after this many failures in a row, whatever the rate (`>= 1`) |
/// | `slow_call_threshold` | off | a call that takes longer than this counts as a failure (`> 0`) |
/// | `open_duration` | 30 s | how long a tripped breaker stays open before probing (`> 0`) |
/// | `open_duration_multiplier` | `1.0` | each trip in a row without closing multiplies the open duration by this (`>= 1.0`) |
/// | `max_open_duration` | 5 min | the cap of the growing open duration (`>= open_duration`) |
/// | `half_open_probes` | 1 | how many probe calls may be in flight at once while half-open (`>= 1`) |
/// | `probe_successes_to_close` | 1 | how many probes must succeed (one after another is fine) to close (`>= 1`) |
/// | `probe_timeout` | 60 s | once any probe has held its slot this long without reporting (an upstream call with no timeout), the breaker reopens, counting each probe past it as a slow call (a failure); late reports count for nothing in the window, and a sink hears a late success as `slow` (`> 0`); set it above the upstream's latency, or probes time out every time and the breaker never closes (the third reopening in a row for a probe timeout is said, once, as a `tracing` warning giving how long the late probes took by the breaker's clock) |
///
/// Build one from the defaults with the setters, and check it with
/// [`validate`](BreakerConfig::validate) (the registry does so too):
///
/// ```
/// use std::time::Duration;
/// use taskstore::BreakerConfig;
///
/// let config = BreakerConfig::default()
///     .failure_rate_threshold(0.25)
///     .minimum_calls(20)
///     .consecutive_failures(5)
///     .open_duration(Duration::from_secs(10))
///     .open_duration_multiplier(2.0)
///     .max_open_duration(Duration::from_secs(120));
/// config.validate().unwrap();
/// assert!(BreakerConfig::default().failure_rate_threshold(1.5).validate().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// Trip when the failure rate in the window reaches this.
    pub failure_rate_threshold: f64,
    /// The sliding window the rate is counted over.
    pub window: Duration,
    /// How many buckets the window is kept in (its granularity).
    pub window_buckets: u32,
    /// If set, the window is the last this many calls, whenever they were
    /// made, instead of a span of time (`window` and `window_buckets` are
    /// then unused). Absent in configs serialized before it existed.
    #[serde(default)]
    pub window_calls: Option<u32>,
    /// The fewest calls in the window before the rate is judged.
    pub minimum_calls: u32,
    /// Trip after this many failures in a row, if set.
    pub consecutive_failures: Option<u32>,
    /// Calls longer than this count as failures, if set.
    pub slow_call_threshold: Option<Duration>,
    /// How long the breaker stays open after its first trip.
    pub open_duration: Duration,
    /// Growth of the open duration per trip in a row.
    pub open_duration_multiplier: f64,
    /// The cap of the open duration.
    pub max_open_duration: Duration,
    /// Probes in flight at once while half-open.
    pub half_open_probes: u32,
    /// Probe successes needed to close.
    pub probe_successes_to_close: u32,
    /// How long a probe that has not reported may hold its half-open slot
    /// before the breaker reopens. Absent in configs serialized before
    /// it existed (then the default).
    #[serde(default = "default_probe_timeout")]
    pub probe_timeout: Duration,
}

/// The default [`BreakerConfig::probe_timeout`].
fn default_probe_timeout() -> Duration {
    Duration::from_secs(60)
}

impl Default for BreakerConfig {
    fn default() -> BreakerConfig {
        BreakerConfig {
            failure_rate_threshold: 0.5,
            window: Duration::from_secs(60),
            window_buckets: 10,
            window_calls: None,
            minimum_calls: 10,
            consecutive_failures: None,
            slow_call_threshold: None,
            open_duration: Duration::from_secs(30),
            open_duration_multiplier: 1.0,
            max_open_duration: Duration::from_secs(300),
            half_open_probes: 1,
            probe_successes_to_close: 1,
            probe_timeout: default_probe_timeout(),
        }
    }
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        #[must_use]
        pub fn $name(mut self, value: $ty) -> BreakerConfig {
            self.$name = value;
            self
        }
    };
}

impl BreakerConfig {
    /// The first field in which `other` differs from this config, if any.
    /// (Every field is named here: a field added to the struct and not to
    /// this comparison does not compile.)
    pub(crate) fn first_difference(&self, other: &BreakerConfig) -> Option<&'static str> {
        let BreakerConfig {
            failure_rate_threshold,
            window,
            window_buckets,
            window_calls,
            minimum_calls,
            consecutive_failures,
            slow_call_threshold,
            open_duration,
            open_duration_multiplier,
            max_open_duration,
            half_open_probes,
            probe_successes_to_close,
            probe_timeout,
        } = self;
        let fields = [
            (
                "failure_rate_threshold",
                *failure_rate_threshold != other.failure_rate_threshold,
            ),
            ("window", *window != other.window),
            ("window_buckets", *window_buckets != other.window_buckets),
            ("window_calls", *window_calls != other.window_calls),
            ("minimum_calls", *minimum_calls != other.minimum_calls),
            (
                "consecutive_failures",
                *consecutive_failures != other.consecutive_failures,
            ),
            (
                "slow_call_threshold",
                *slow_call_threshold != other.slow_call_threshold,
            ),
            ("open_duration", *open_duration != other.open_duration),
            (
                "open_duration_multiplier",
                *open_duration_multiplier != other.open_duration_multiplier,
            ),
            (
                "max_open_duration",
                *max_open_duration != other.max_open_duration,
            ),
            (
                "half_open_probes",
                *half_open_probes != other.half_open_probes,
            ),
            (
                "probe_successes_to_close",
                *probe_successes_to_close != other.probe_successes_to_close,
            ),
            ("probe_timeout", *probe_timeout != other.probe_timeout),
        ];
        fields
            .into_iter()
            .find_map(|(field, differs)| differs.then_some(field))
    }

    setter!(
        /// Sets the failure-rate threshold (above `0.0`, at most `1.0`).
        failure_rate_threshold: f64
    );
    setter!(
        /// Sets the sliding window.
        window: Duration
    );
    setter!(
        /// Sets the number of buckets the window is kept in.
        window_buckets: u32
    );
    setter!(
        /// Sets the fewest calls before the rate is judged.
        minimum_calls: u32
    );
    setter!(
        /// Sets the open duration of the first trip.
        open_duration: Duration
    );
    setter!(
        /// Sets the growth of the open duration per trip in a row (1.0: none).
        open_duration_multiplier: f64
    );
    setter!(
        /// Sets the cap of the growing open duration.
        max_open_duration: Duration
    );
    setter!(
        /// Sets how many probes may be in flight at once while half-open.
        half_open_probes: u32
    );
    setter!(
        /// Sets how many probe successes close the breaker.
        probe_successes_to_close: u32
    );
    setter!(
        /// Sets how long a probe that has not reported may hold its
        /// half-open slot before the breaker reopens.
        probe_timeout: Duration
    );

    /// Also trips after `n` failures in a row.
    #[must_use]
    pub fn consecutive_failures(mut self, n: u32) -> BreakerConfig {
        self.consecutive_failures = Some(n);
        self
    }

    /// Judges the failure rate over the last `calls` calls instead of the
    /// time window (a count-based window, as resilience4j's `COUNT_BASED`).
    ///
    /// It reads no clock: with it and no slow-call threshold, the closed
    /// path reads the time only when the breaker trips. `minimum_calls` must
    /// not be more than `calls` (the default 10 fits any window of 10 calls
    /// or more).
    #[must_use]
    pub fn window_calls(mut self, calls: u32) -> BreakerConfig {
        self.window_calls = Some(calls);
        self
    }

    /// Counts calls longer than `threshold` as failures.
    #[must_use]
    pub fn slow_call_threshold(mut self, threshold: Duration) -> BreakerConfig {
        self.slow_call_threshold = Some(threshold);
        self
    }

    /// Checks every field against the ranges in the table above.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidBreakerConfig`] naming the first offending field.
    pub fn validate(&self) -> Result<()> {
        self.validate_for(None)
    }

    /// [`validate`](Self::validate), naming `breaker` in the error.
    pub(crate) fn validate_for(&self, breaker: Option<&str>) -> Result<()> {
        let fail = |field: &'static str, reason: String| {
            Err(Error::InvalidBreakerConfig {
                breaker: breaker.map(str::to_owned),
                field,
                reason,
            })
        };
        let rate = self.failure_rate_threshold;
        if !(rate > 0.0 && rate <= 1.0) {
            return fail(
                "failure_rate_threshold",
                format!(
                    "{rate} is outside (0.0, 1.0]: above 0, since a rate of 0 would trip \
                     a breaker that saw no failure"
                ),
            );
        }
        // The time window, unless a count window stands in for it.
        if self.window_calls.is_none() {
            if self.window.is_zero() {
                return fail("window", "must be longer than zero".into());
            }
            if !(1..=1000).contains(&self.window_buckets) {
                return fail(
                    "window_buckets",
                    format!("{} is outside 1..=1000", self.window_buckets),
                );
            }
            if self.window.as_nanos() < u128::from(self.window_buckets) {
                return fail(
                    "window",
                    format!(
                        "{:?} is shorter than window_buckets ({}) nanoseconds: a bucket lasts \
                         at least 1 ns",
                        self.window, self.window_buckets
                    ),
                );
            }
        }
        if let Some(calls) = self.window_calls
            && !(1..=MAX_WINDOW_CALLS).contains(&calls)
        {
            return fail(
                "window_calls",
                format!("{calls} is outside 1..={MAX_WINDOW_CALLS}"),
            );
        }
        if self.minimum_calls == 0 {
            return fail("minimum_calls", "must be at least 1".into());
        }
        if let Some(calls) = self.window_calls
            && self.minimum_calls > calls
        {
            return fail(
                "minimum_calls",
                format!(
                    "{} is more than window_calls {calls}: the failure rate would never be judged",
                    self.minimum_calls
                ),
            );
        }
        if self.consecutive_failures == Some(0) {
            return fail("consecutive_failures", "must be at least 1 when set".into());
        }
        if self.slow_call_threshold.is_some_and(|t| t.is_zero()) {
            return fail(
                "slow_call_threshold",
                "must be longer than zero when set".into(),
            );
        }
        if self.open_duration.is_zero() {
            return fail("open_duration", "must be longer than zero".into());
        }
        let multiplier = self.open_duration_multiplier;
        if !multiplier.is_finite() || multiplier < 1.0 {
            return fail(
                "open_duration_multiplier",
                format!("{multiplier} is not a finite number >= 1.0"),
            );
        }
        if self.max_open_duration < self.open_duration {
            return fail(
                "max_open_duration",
                format!(
                    "{:?} is shorter than open_duration {:?}",
                    self.max_open_duration, self.open_duration
                ),
            );
        }
        if self.half_open_probes == 0 {
            return fail("half_open_probes", "must be at least 1".into());
        }
        if self.probe_successes_to_close == 0 {
            return fail("probe_successes_to_close", "must be at least 1".into());
        }
        if self.probe_timeout.is_zero() {
            return fail("probe_timeout", "must be longer than zero".into());
        }
        Ok(())
    }

    /// How long the breaker stays open after `trips` trips in a row (the
    /// first trip is 1): `open_duration * multiplier^(trips - 1)`, capped at
    /// `max_open_duration`. Any duration is kept whole, however long
    /// (though an open breaker's retry time stops at the last date it can
    /// hold, the end of the year 9999).
    pub fn open_duration_after(&self, trips: u32) -> Duration {
        let exponent = i32::try_from(trips.saturating_sub(1)).unwrap_or(i32::MAX);
        let growth = self.open_duration_multiplier.powi(exponent);
        // Without growth the duration is used as it is: `f64` nanoseconds
        // are exact only up to 2^53 (about 104 days).
        let grown = if growth == 1.0 {
            Some(self.open_duration)
        } else {
            duration_from_nanos(self.open_duration.as_nanos() as f64 * growth)
        };
        grown.map_or(self.max_open_duration, |d| d.min(self.max_open_duration))
    }
}

/// `nanos` (not negative, perhaps infinite) as a duration; `None` past
/// [`Duration::MAX`]. (`Duration::from_nanos` takes a `u64`, which ends at
/// about 584 years.)
fn duration_from_nanos(nanos: f64) -> Option<Duration> {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    // `as` saturates: infinity becomes `u128::MAX`, past `Duration::MAX`.
    let nanos = nanos as u128;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).ok()?;
    let subsec = u32::try_from(nanos % NANOS_PER_SEC).expect("under a second");
    Some(Duration::new(secs, subsec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        BreakerConfig::default().validate().unwrap();
    }

    #[test]
    fn open_duration_grows_to_its_cap() {
        let c = BreakerConfig::default()
            .open_duration(Duration::from_secs(10))
            .open_duration_multiplier(2.0)
            .max_open_duration(Duration::from_secs(60));
        let got: Vec<_> = (1..=5)
            .map(|t| c.open_duration_after(t).as_secs())
            .collect();
        assert_eq!(got, [10, 20, 40, 60, 60]);
        assert_eq!(c.open_duration_after(u32::MAX), Duration::from_secs(60));
    }
}
