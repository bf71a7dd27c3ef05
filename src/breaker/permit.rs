//! Permits: permission to make one call, and how it ends.

use std::fmt;

use crate::breaker::circuit::Breaker;

/// Permission to make one call, borrowed from its [`Breaker`]. Give it a
/// verdict with [`success`](Permit::success) or [`failure`](Permit::failure);
/// dropping it without one counts nothing and, for a half-open probe, frees
/// its slot.
///
/// Taking and settling one touches no reference count; to hold a permit
/// where the breaker cannot be borrowed (a spawned task), use
/// [`OwnedPermit`].
#[must_use = "a permit should get a verdict: success() or failure()"]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    ticket: Ticket,
}

/// A [`Permit`] that owns a handle to its breaker (one reference-count
/// increment when taken), so it can move into a spawned task: from
/// [`Breaker::try_acquire_owned`]. The same rules apply.
#[must_use = "a permit should get a verdict: success() or failure()"]
pub struct OwnedPermit {
    breaker: Breaker,
    ticket: Ticket,
}

/// How a permit ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Settlement {
    /// The caller reported success (still a failure if it was slow).
    Success,
    /// The caller reported failure.
    Failure,
    /// Dropped without a verdict: counts nothing.
    Dropped,
}

/// What a permit of either kind remembers.
pub(super) struct Ticket {
    pub generation: u64,
    pub probe: bool,
    /// When it was taken: read with a slow-call threshold, and for a probe,
    /// to give back its slot (the closed path leaves it 0 without a
    /// threshold).
    pub started: Nanos,
    pub settled: bool,
}

/// Unix nanoseconds (an `i128`) kept as two 64-bit halves. With the 8-byte
/// alignment of the halves a permit is small and copied with plain moves; an
/// `i128` field (16-byte aligned) made the compiler copy permits with vector
/// moves that stall on store forwarding, a quarter of the closed path.
#[derive(Clone, Copy, Debug)]
pub(super) struct Nanos {
    high: i64,
    low: u64,
}

impl Nanos {
    #[inline]
    pub fn new(nanos: i128) -> Nanos {
        Nanos {
            high: (nanos >> 64) as i64,
            low: nanos as u64,
        }
    }

    #[inline]
    pub fn get(self) -> i128 {
        (i128::from(self.high) << 64) | i128::from(self.low)
    }
}

impl Ticket {
    #[inline]
    pub fn new(generation: u64, probe: bool, started: Nanos) -> Ticket {
        Ticket {
            generation,
            probe,
            started,
            settled: false,
        }
    }
}

impl<'a> Permit<'a> {
    #[inline]
    pub(super) fn new(breaker: &'a Breaker, ticket: Ticket) -> Permit<'a> {
        Permit { breaker, ticket }
    }

    /// The call succeeded (it counts as a failure if it was slower than the
    /// slow-call threshold).
    #[inline]
    pub fn success(mut self) {
        self.breaker.settle(&mut self.ticket, Settlement::Success);
    }

    /// The call failed.
    #[inline]
    pub fn failure(mut self) {
        self.breaker.settle(&mut self.ticket, Settlement::Failure);
    }

    /// Whether this permit is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.ticket.probe
    }

    /// The breaker it was taken from.
    pub fn breaker(&self) -> &'a Breaker {
        self.breaker
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.ticket.settled {
            self.breaker.settle(&mut self.ticket, Settlement::Dropped);
        }
    }
}

impl OwnedPermit {
    #[inline]
    pub(super) fn new(breaker: Breaker, ticket: Ticket) -> OwnedPermit {
        OwnedPermit { breaker, ticket }
    }

    /// The call succeeded (it counts as a failure if it was slower than the
    /// slow-call threshold).
    pub fn success(mut self) {
        self.breaker.settle(&mut self.ticket, Settlement::Success);
    }

    /// The call failed.
    pub fn failure(mut self) {
        self.breaker.settle(&mut self.ticket, Settlement::Failure);
    }

    /// Whether this permit is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.ticket.probe
    }

    /// The breaker it was taken from.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }
}

impl Drop for OwnedPermit {
    fn drop(&mut self) {
        if !self.ticket.settled {
            self.breaker.settle(&mut self.ticket, Settlement::Dropped);
        }
    }
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("breaker", &self.breaker.name())
            .field("probe", &self.ticket.probe)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for OwnedPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedPermit")
            .field("breaker", &self.breaker.name())
            .field("probe", &self.ticket.probe)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanos_keep_every_i128() {
        for n in [
            0,
            1,
            -1,
            i128::MIN,
            i128::MAX,
            1_767_225_600_000_000_000,
            -42 << 70,
        ] {
            assert_eq!(Nanos::new(n).get(), n);
        }
    }
}
