//! A handle's time, which never goes back, and the time the leases it
//! writes run from while its clock reads behind the time that went by.

use std::time::Duration;

use time::OffsetDateTime;

/// The latest time a handle has read ([`Store::now`](super::Store::now)), and what its leases
/// run from while its clock reads behind the time that went by.
#[derive(Clone, Copy, Debug)]
pub(super) struct HighWater {
    at: OffsetDateTime,
    /// With a monotonic clock ([`Clock::monotonic`]): the last reading,
    /// and how far the wall clock then read behind the time that went by.
    ///
    /// [`Clock::monotonic`]: crate::Clock::monotonic
    steady: Option<Steady>,
    /// Without one: while the clock reads behind `at`, `at` less its first
    /// reading behind it (the step back).
    behind_by: Option<time::Duration>,
}

/// A handle's last reading of the wall clock, the monotonic clock's
/// readings just before and just after it ([`Bracket`]; the latest of
/// each: one that went back counts nothing), and how far the wall clock
/// read behind the time that went by, by the monotonic clock (never below
/// zero).
#[derive(Clone, Copy, Debug)]
struct Steady {
    wall: OffsetDateTime,
    bracket: Bracket,
    behind: time::Duration,
}

/// The monotonic clock read just before a reading of the wall clock and
/// just after it: the wall clock read at an instant between the two. A
/// thread held up between two readings (preempted on a busy machine)
/// widens the bracket; it never makes a reading of one clock look late
/// against the other's, which would look like a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Bracket {
    pub(super) before: Duration,
    pub(super) after: Duration,
}

/// How far the wall clock may fall behind the monotonic clock between two
/// readings, over `went` by the monotonic clock, and be no step back: 1 ms
/// and 1% of `went` (the two clocks are read one after the other, and a
/// virtual machine's wall clock may run slow). A fall within it left to
/// add up, the leases would run ever further ahead of the wall clock.
fn no_step(went: Duration) -> time::Duration {
    crate::clock::span(Duration::from_millis(1).saturating_add(went / 100))
}

impl HighWater {
    /// The mark of a handle's first reading: the clock's `clock`, the
    /// monotonic clock's `monotonic` around it.
    pub(super) fn first(clock: OffsetDateTime, monotonic: Option<Bracket>) -> HighWater {
        HighWater {
            at: clock,
            steady: monotonic.map(|bracket| Steady {
                wall: clock,
                bracket,
                behind: time::Duration::ZERO,
            }),
            behind_by: None,
        }
    }

    /// A reading of the clock (`clock`, and the monotonic clock's
    /// `monotonic` around it): the handle's time, `at` moved up to `clock` (it never
    /// goes back), and the time its leases run from, never below it.
    ///
    /// With a monotonic clock, the leases run from the wall clock's
    /// reading carried forward by how far it reads behind the time that
    /// went by, as the monotonic clock measures it between readings
    /// ([`carried`](Self::carried)): stepped back, and not yet set right.
    /// The handle's own time stands still until the clock catches up with
    /// it; a lease renewed from it would stand still too, and lapse in
    /// real time under a live owner, to be reaped or claimed as soon as
    /// the clock is set right. The monotonic clock counts all the time
    /// that went by: between the last reading and the first behind, after
    /// the clock caught up with the handle's time but not with the time
    /// that went by, across a second step back. And never more: a step
    /// forward takes back what a step back added, so a wall clock stepped
    /// back and forth carries the leases no further than the monotonic
    /// clock went since the furthest the wall clock read ahead of it.
    pub(super) fn read(
        &mut self,
        clock: OffsetDateTime,
        monotonic: Option<Bracket>,
    ) -> (OffsetDateTime, OffsetDateTime) {
        let lease_from = match monotonic {
            Some(monotonic) => {
                self.behind_by = None;
                self.carried(clock, monotonic)
            }
            None => {
                self.steady = None;
                self.net_progress(clock)
            }
        };
        self.at = self.at.max(clock);
        (self.at, lease_from.max(self.at))
    }

    /// `clock` carried forward by how far it reads behind the time that
    /// went by: what it read behind at the last reading, plus how far it
    /// fell behind the monotonic clock since (read around it: `monotonic`),
    /// if further than [`no_step`], less how far it went ahead of it (a
    /// step forward), never below zero. The time between the two wall
    /// readings lies between the latest the first could have been and the
    /// earliest the second could have been, and the other way round: the
    /// wall clock fell behind only by what it fell short of the least of
    /// them, and went ahead only by what it passed the most.
    fn carried(&mut self, clock: OffsetDateTime, monotonic: Bracket) -> OffsetDateTime {
        let steady = match self.steady {
            Some(last) => {
                let least = crate::clock::span(monotonic.before.saturating_sub(last.bracket.after));
                let most = crate::clock::span(monotonic.after.saturating_sub(last.bracket.before));
                let moved = clock - last.wall;
                let fell = if moved > most {
                    most - moved
                } else if least - moved
                    > no_step(monotonic.after.saturating_sub(last.bracket.before))
                {
                    least - moved
                } else {
                    time::Duration::ZERO
                };
                Steady {
                    wall: clock,
                    bracket: Bracket {
                        before: monotonic.before.max(last.bracket.before),
                        after: monotonic.after.max(last.bracket.after),
                    },
                    behind: last.behind.saturating_add(fell).max(time::Duration::ZERO),
                }
            }
            None => Steady {
                wall: clock,
                bracket: monotonic,
                behind: time::Duration::ZERO,
            },
        };
        self.steady = Some(steady);
        clock.saturating_add(steady.behind)
    }

    /// Without a monotonic clock, the time this handle's leases run from,
    /// the clock reading `clock`: while it reads behind `at`, its reading
    /// carried forward by the step back (how far behind `at` it first
    /// read), so that `at` moves on by what the clock has gone on since,
    /// never below `at`. The clock's net progress counts, not its forward
    /// moves added up (with which a clock stepped back and forth would
    /// carry the leases without bound): the time between the last reading
    /// and the first behind is lost, and a second step back, further
    /// behind, stands the leases at `at` until the clock is back.
    fn net_progress(&mut self, clock: OffsetDateTime) -> OffsetDateTime {
        if self.at <= clock {
            self.behind_by = None;
            return clock;
        }
        let behind_by = *self.behind_by.get_or_insert(self.at - clock);
        clock.saturating_add(behind_by).max(self.at)
    }
}
