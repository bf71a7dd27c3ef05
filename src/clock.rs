//! Time sources: the system clock, and a manual clock that tests advance.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;

/// Where the store (and the breakers) read the time.
pub trait Clock: Send + Sync + Debug {
    /// The current time, in UTC.
    fn now(&self) -> OffsetDateTime;

    /// The current time as nanoseconds since the Unix epoch: the same instant
    /// as [`now`](Clock::now), for hot paths that store a timestamp and format
    /// it later (the event log). Override it when it can be cheaper.
    fn now_unix_nanos(&self) -> i128 {
        self.now().unix_timestamp_nanos()
    }

    /// A reading of a monotonic clock beside the wall clock, if the clock
    /// has one: how far it has gone since an origin of its own (fixed for
    /// the clock and its clones: only the difference of two readings means
    /// anything). It never goes back, and a step of the wall clock (NTP,
    /// by hand) moves it not at all. A store reads it just before and just
    /// after each reading of the wall clock, and measures by it, from one
    /// of its readings to the next, how far the wall clock has fallen
    /// behind the time that went by (a step back not yet set right; a fall
    /// of at most 1 ms and 1% of the time between the readings is none,
    /// and so is a thread held up between two readings), and
    /// runs the leases it writes that far ahead of the wall clock (see
    /// [`TaskStore::lease_from`]); a step forward takes it back.
    ///
    /// [`SystemClock`] reads [`std::time::Instant`]; [`ManualClock`] holds
    /// one that [`advance`](ManualClock::advance) moves and
    /// [`set`](ManualClock::set) does not. The default is `None`, no
    /// monotonic clock: a store then runs its leases on by the wall
    /// clock's net progress since it first read behind, which loses the
    /// time that went by between its last reading and that one, and a
    /// second step back, further behind, stands them at the store's time.
    ///
    /// [`TaskStore::lease_from`]: crate::TaskStore::lease_from
    fn monotonic(&self) -> Option<Duration> {
        None
    }
}

/// `d` in whole milliseconds, or `u64::MAX` past what a `u64` holds: the
/// one rule for every duration the crate writes or compares as a count of
/// milliseconds.
pub(crate) fn whole_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `by` as a span `time` adds, or the longest it holds.
pub(crate) fn span(by: Duration) -> time::Duration {
    time::Duration::try_from(by).unwrap_or(time::Duration::MAX)
}

/// `at` in UTC. An instant UTC cannot hold (a reading in another offset,
/// taken near the end or the start of the range of dates) is the last or
/// the first instant UTC holds: a time the store takes must be one it can
/// write, compare and read back.
pub(crate) fn in_utc(at: OffsetDateTime) -> OffsetDateTime {
    at.checked_to_offset(time::UtcOffset::UTC)
        // A negative offset takes an instant past the end of the range; a
        // positive one, before its start.
        .unwrap_or_else(|| utc_edge(at.offset().is_negative()))
}

/// The last instant UTC holds (`late`), or the first.
pub(crate) fn utc_edge(late: bool) -> OffsetDateTime {
    let edge = if late {
        time::PrimitiveDateTime::MAX
    } else {
        time::PrimitiveDateTime::MIN
    };
    edge.assume_utc()
}

/// The instant `unix_nanos` after the Unix epoch, or the first or last
/// instant UTC holds for a reading past either end.
pub(crate) fn at_unix_nanos(unix_nanos: i128) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(unix_nanos)
        .unwrap_or_else(|_| utc_edge(unix_nanos >= 0))
}

/// `at`, held to the instants RFC 3339 writes (years 0 to 9999): one before
/// year 0 is its first instant. For times that are only reported (an event
/// log's record, a breaker's health), so that every report serializes
/// whatever the clock read; a time the store or a breaker goes by is
/// never held so.
pub(crate) fn writable(at: OffsetDateTime) -> OffsetDateTime {
    // 0000-01-01T00:00:00Z.
    let first = OffsetDateTime::from_unix_timestamp(-62_167_219_200).unwrap_or(at);
    at.max(first)
}

/// `time::serde::rfc3339` for a time only reported, held to what RFC 3339
/// writes ([`writable`]) on the way out.
pub(crate) mod held_rfc3339 {
    use serde::Serializer;
    use time::OffsetDateTime;

    pub(crate) use time::serde::rfc3339::deserialize;

    pub(crate) fn serialize<S: Serializer>(at: &OffsetDateTime, to: S) -> Result<S::Ok, S::Error> {
        time::serde::rfc3339::serialize(&super::writable(*at), to)
    }

    /// The same for an `Option`.
    pub(crate) mod option {
        use serde::Serializer;
        use time::OffsetDateTime;

        pub(crate) use time::serde::rfc3339::option::deserialize;

        pub(crate) fn serialize<S: Serializer>(
            at: &Option<OffsetDateTime>,
            to: S,
        ) -> Result<S::Ok, S::Error> {
            time::serde::rfc3339::option::serialize(&at.map(super::super::writable), to)
        }
    }
}

/// `time::serde::rfc3339` for a task's own stamps (`createdAt`,
/// `lastUpdatedAt`, `leaseExpiresAt`), with the fraction of a second always
/// written in full, nine digits: RFC 3339 as `time` writes it drops a
/// fraction's trailing zeros (none at all at a whole second), so a task's
/// size would hang on the instants of its writes, and a task the store took
/// at the payload cap could have a write that grows nothing its host gave
/// it refused a moment later (FORMAT.md, "Tasks"). Reads take either form.
pub(crate) mod stamp {
    use serde::{Serializer, ser::Error as _};
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    pub(crate) use time::serde::rfc3339::deserialize;

    pub(crate) fn serialize<S: Serializer>(at: &OffsetDateTime, to: S) -> Result<S::Ok, S::Error> {
        to.serialize_str(&format(*at).map_err(S::Error::custom)?)
    }

    /// `at` in RFC 3339 with a fraction of nine digits.
    pub(crate) fn format(at: OffsetDateTime) -> Result<String, time::error::Format> {
        let mut text = at.format(&Rfc3339)?;
        // `YYYY-MM-DDTHH:MM:SS` (RFC 3339 has four-digit years alone), then
        // the fraction's dot and digits if any, then the offset.
        let seconds_end = 19;
        let digits = text[seconds_end..].strip_prefix('.').map_or(0, |rest| {
            rest.bytes().take_while(u8::is_ascii_digit).count()
        });
        if digits == 0 {
            text.insert_str(seconds_end, ".000000000");
        } else {
            let zeros = "000000000".get(digits..).unwrap_or_default();
            text.insert_str(seconds_end + 1 + digits, zeros);
        }
        Ok(text)
    }

    /// The same for an `Option`.
    pub(crate) mod option {
        use serde::Serializer;
        use time::OffsetDateTime;

        pub(crate) use time::serde::rfc3339::option::deserialize;

        pub(crate) fn serialize<S: Serializer>(
            at: &Option<OffsetDateTime>,
            to: S,
        ) -> Result<S::Ok, S::Error> {
            match at {
                Some(at) => super::serialize(at, to),
                None => to.serialize_none(),
            }
        }
    }
}

/// The operating system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn now_unix_nanos(&self) -> i128 {
        // Skips the calendar arithmetic of `OffsetDateTime`.
        match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(after) => after.as_nanos() as i128,
            Err(before) => -(before.duration().as_nanos() as i128),
        }
    }

    /// [`std::time::Instant`], from the first reading of any
    /// `SystemClock` in the process.
    fn monotonic(&self) -> Option<Duration> {
        static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        Some(ORIGIN.get_or_init(std::time::Instant::now).elapsed())
    }
}

/// The wall clock read once, then carried on by the monotonic clock: it
/// never steps (an NTP correction, a clock set by hand moves it not at
/// all) and never goes back, and it drifts from the wall clock by every
/// step the wall clock takes after it was made. What a breaker's open
/// period and slow-call timing go by ([`BreakerRegistry::new`]'s default):
/// a span measured on it is a span that passed.
///
/// [`BreakerRegistry::new`]: crate::BreakerRegistry::new
#[derive(Clone, Copy, Debug)]
pub struct SteadyClock {
    start: OffsetDateTime,
    base: std::time::Instant,
}

impl SteadyClock {
    /// A clock at the wall clock's time now.
    pub fn new() -> SteadyClock {
        SteadyClock {
            start: OffsetDateTime::now_utc(),
            base: std::time::Instant::now(),
        }
    }
}

impl Default for SteadyClock {
    fn default() -> SteadyClock {
        SteadyClock::new()
    }
}

impl Clock for SteadyClock {
    fn now(&self) -> OffsetDateTime {
        self.start.saturating_add(span(self.base.elapsed()))
    }

    /// The monotonic clock it carries the time on by, from when it was
    /// made.
    fn monotonic(&self) -> Option<Duration> {
        Some(self.base.elapsed())
    }
}

/// A clock that moves only when told to. Clones share one time, so a test can
/// hand one clone to a store and advance another.
///
/// It has a monotonic reading beside its wall clock ([`Clock::monotonic`],
/// starting at zero): [`advance`](Self::advance) moves both (time goes
/// by), [`set`](Self::set) the wall clock alone (a step, forward or back,
/// as NTP or a hand makes), and
/// [`advance_monotonic`](Self::advance_monotonic) the monotonic one alone.
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: Arc<Mutex<Readings>>,
}

/// A [`ManualClock`]'s wall clock and monotonic clock.
#[derive(Clone, Copy, Debug)]
struct Readings {
    wall: OffsetDateTime,
    monotonic: Duration,
}

impl ManualClock {
    /// A clock standing at `start` (in UTC: an instant UTC cannot hold, as
    /// a time in another offset near the end of the range of dates may be,
    /// is the last or the first it holds).
    pub fn new(start: OffsetDateTime) -> ManualClock {
        ManualClock {
            now: Arc::new(Mutex::new(Readings {
                wall: in_utc(start),
                monotonic: Duration::ZERO,
            })),
        }
    }

    /// Moves the clock forward: time goes by, for the wall clock and the
    /// monotonic one alike.
    pub fn advance(&self, by: Duration) {
        let mut now = self.lock();
        now.wall = now.wall.saturating_add(span(by));
        now.monotonic = now.monotonic.saturating_add(by);
    }

    /// Sets the wall clock to `to` (which may be in the past; in UTC, as
    /// [`new`](Self::new) takes it): a step, which leaves the monotonic
    /// reading as it is.
    pub fn set(&self, to: OffsetDateTime) {
        self.lock().wall = in_utc(to);
    }

    /// Moves the monotonic reading alone forward (time that goes by while
    /// the wall clock stands still, or with [`set`](Self::set), whatever
    /// it reads meanwhile).
    pub fn advance_monotonic(&self, by: Duration) {
        let mut now = self.lock();
        now.monotonic = now.monotonic.saturating_add(by);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Readings> {
        // A panic while holding this lock cannot leave the time half-written.
        self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        self.lock().wall
    }

    fn monotonic(&self) -> Option<Duration> {
        Some(self.lock().monotonic)
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> OffsetDateTime {
        (**self).now()
    }

    fn now_unix_nanos(&self) -> i128 {
        (**self).now_unix_nanos()
    }

    fn monotonic(&self) -> Option<Duration> {
        (**self).monotonic()
    }
}

/// A host's clock outside its contract, for tests: its nanoseconds swing
/// from one end of `i128` to the other at each reading (the first is
/// `i128::MIN`), while `now` stands at the epoch.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Swinging(std::sync::atomic::AtomicBool);

#[cfg(test)]
impl Clock for Swinging {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH
    }

    fn now_unix_nanos(&self) -> i128 {
        use std::sync::atomic::Ordering;
        if self.0.fetch_xor(true, Ordering::Relaxed) {
            i128::MAX
        } else {
            i128::MIN
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_time() {
        let a = ManualClock::new(OffsetDateTime::UNIX_EPOCH);
        let b = a.clone();
        a.advance(Duration::from_secs(5));
        assert_eq!(b.now(), OffsetDateTime::UNIX_EPOCH + Duration::from_secs(5));
        b.set(OffsetDateTime::UNIX_EPOCH);
        assert_eq!(a.now(), OffsetDateTime::UNIX_EPOCH);
    }

    /// A stamp is written with a fraction of nine digits whatever its
    /// instant, in any offset, and reads back as the same instant.
    #[test]
    fn stamps_are_written_at_one_width() {
        use time::macros::datetime;
        let cases = [
            (
                datetime!(2030-01-01 0:00 UTC),
                "2030-01-01T00:00:00.000000000Z",
            ),
            (
                datetime!(2030-01-01 0:00:00.5 UTC),
                "2030-01-01T00:00:00.500000000Z",
            ),
            (
                datetime!(2030-01-01 0:00:00.000000001 UTC),
                "2030-01-01T00:00:00.000000001Z",
            ),
            (
                datetime!(2030-01-01 0:00:00.123456789 UTC),
                "2030-01-01T00:00:00.123456789Z",
            ),
            (
                datetime!(2030-01-01 0:00:00.12 -05:30),
                "2030-01-01T00:00:00.120000000-05:30",
            ),
            (
                datetime!(0000-01-01 0:00 UTC),
                "0000-01-01T00:00:00.000000000Z",
            ),
            (
                datetime!(9999-12-31 23:59:59.9 UTC),
                "9999-12-31T23:59:59.900000000Z",
            ),
        ];
        for (at, text) in cases {
            assert_eq!(stamp::format(at).unwrap(), text);
            let back = OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339);
            assert_eq!(back.unwrap(), at, "{text}");
        }
        // RFC 3339 has no year before 0: refused, as `time` refuses it.
        let before = time::Date::from_calendar_date(-1, time::Month::January, 1);
        assert!(stamp::format(before.unwrap().midnight().assume_utc()).is_err());
    }

    /// A time in another offset past either end of UTC's range is that
    /// end: west of UTC past the last instant, east of it before the
    /// first; one within the range is the same instant in UTC.
    #[test]
    fn times_past_the_range_of_utc_are_its_ends() {
        let last = time::PrimitiveDateTime::MAX.assume_utc();
        let first = time::PrimitiveDateTime::MIN.assume_utc();
        let west = time::PrimitiveDateTime::MAX.assume_offset(time::macros::offset!(-1));
        let east = time::PrimitiveDateTime::MIN.assume_offset(time::macros::offset!(+1));
        assert_eq!(in_utc(west), last);
        assert_eq!(in_utc(east), first);
        let within = time::macros::datetime!(2030-01-01 01:00 +01:00);
        assert_eq!(
            in_utc(within),
            time::macros::datetime!(2030-01-01 00:00 UTC)
        );
        assert_eq!(in_utc(within).offset(), time::UtcOffset::UTC);
        let clock = ManualClock::new(east);
        assert_eq!(clock.now(), first);
        clock.set(west);
        assert_eq!(clock.now(), last);
    }

    /// A step of the wall clock leaves the monotonic reading as it is;
    /// advancing moves both, and clones share it.
    #[test]
    fn a_manual_clocks_monotonic_reading_moves_with_time_not_with_steps() {
        let a = ManualClock::new(OffsetDateTime::UNIX_EPOCH);
        let b = a.clone();
        assert_eq!(a.monotonic(), Some(Duration::ZERO));
        a.advance(Duration::from_secs(5));
        assert_eq!(b.monotonic(), Some(Duration::from_secs(5)));
        b.set(OffsetDateTime::UNIX_EPOCH - Duration::from_secs(60));
        b.set(OffsetDateTime::UNIX_EPOCH + Duration::from_secs(60));
        assert_eq!(a.monotonic(), Some(Duration::from_secs(5)));
        a.advance_monotonic(Duration::from_secs(1));
        assert_eq!(b.monotonic(), Some(Duration::from_secs(6)));
        assert_eq!(
            b.now(),
            OffsetDateTime::UNIX_EPOCH + Duration::from_secs(60)
        );
    }

    #[test]
    fn the_system_clocks_monotonic_reading_never_goes_back() {
        let first = SystemClock.monotonic().unwrap();
        let second = SystemClock.monotonic().unwrap();
        assert!(first <= second);
        assert!(SteadyClock::new().monotonic().is_some());
    }

    #[test]
    fn system_nanos_agree_with_now() {
        let before = SystemClock.now().unix_timestamp_nanos();
        let nanos = SystemClock.now_unix_nanos();
        let after = SystemClock.now().unix_timestamp_nanos();
        assert!(before <= nanos && nanos <= after);
    }
}
