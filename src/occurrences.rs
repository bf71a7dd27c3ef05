//! [`Occurrences`]: a trouble that may come at every turn, counted, and
//! said at most once a minute by a clock while it goes on (said at every
//! turn, it would flood the log). Of the sinks: the panics of a store's or
//! registry's sink ([`Notifier`]) and of a [`FanOut`]'s sinks, the lines a
//! [`JsonLinesSink`] drops for want of room in a pipe or loses to failed
//! writes; of the MCP manager:
//! the panics of its loop of claims, reaps and sweeps. It knows nothing of
//! either: each says its own warning.
//!
//! [`Notifier`]: crate::sink::Notifier
//! [`FanOut`]: crate::FanOut
//! [`JsonLinesSink`]: crate::JsonLinesSink

use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::clock::Clock;

/// How long after a warning they are counted without another, in
/// nanoseconds: a minute.
const WARN_AGAIN_AFTER_NANOS: u128 = 60 * 1_000_000_000;

/// Occurrences of one trouble (the panics of one sink, or of the sinks of
/// one fan-out; the lines one JSON-lines sink dropped, or lost to failed
/// writes; the panics of one
/// manager's passes): how many, and when they were last said.
#[derive(Debug, Default)]
pub(crate) struct Occurrences {
    count: AtomicU64,
    said: Mutex<Said>,
}

/// The last warning of the occurrences.
#[derive(Debug, Default)]
struct Said {
    /// When (the clock's Unix nanoseconds); `None` before the first
    /// occurrence.
    at: Option<i128>,
    /// The occurrences counted by then.
    count: u64,
}

/// What a warning says: how many in all, and how many since the warning
/// before (`None` at the first).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Warning {
    pub(crate) count: u64,
    pub(crate) since_last_warning: Option<u64>,
}

impl Occurrences {
    /// How many were counted.
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Counts one, and hands `warn` what to say if it is due: the first at
    /// once, then at most once a minute by `clock`. A clock stepped back by
    /// more than a minute says the next one at once.
    #[cold]
    pub(crate) fn count_one(&self, clock: &dyn Clock, warn: impl FnOnce(Warning)) {
        let now = clock.now_unix_nanos();
        // Two numbers, never left half-written.
        let mut said = self.said.lock().unwrap_or_else(PoisonError::into_inner);
        // Counted under the lock, so that the counts said only go up.
        let count = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let since_last_warning = match said.at {
            None => None,
            Some(at) if now.abs_diff(at) < WARN_AGAIN_AFTER_NANOS => return,
            Some(_) => Some(count - said.count),
        };
        *said = Said {
            at: Some(now),
            count,
        };
        drop(said);
        // Contained: the warning is said amid the work whose trouble it
        // counts (a write whose sink panicked, a pass), which a host's
        // subscriber that panicked here would end.
        crate::panics::contained(|| {
            warn(Warning {
                count,
                since_last_warning,
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Swinging;

    /// Counting never panics itself, whatever the clock reads: two
    /// readings as far apart as `i128` holds are a warning apart, not an
    /// overflow (their difference saturated to `i128::MIN`, whose `abs`
    /// overflows).
    #[test]
    fn counting_never_overflows_on_a_clock_at_the_ends_of_i128() {
        let panics = Occurrences::default();
        let clock = Swinging::default();
        let mut said = 0;
        for _ in 0..4 {
            panics.count_one(&clock, |_| said += 1);
        }
        assert_eq!(panics.count(), 4);
        assert_eq!(said, 4, "each reading a swing apart: each said");
    }
}
