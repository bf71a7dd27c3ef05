//! An instant as a handle's keys of its tasks keep it: exact, and smaller
//! than `OffsetDateTime`.

use std::num::NonZeroU32;

use time::OffsetDateTime;

/// An instant, to the nanosecond over all of `OffsetDateTime`'s range, in
/// 12 bytes where `OffsetDateTime` takes 16; an `Option` of one takes 12
/// too. The snapshot of `active/` and the keys of history keep three per
/// task (its creation, expiry and lease expiry), for every task a handle
/// has listed (`snapshot`, `history`); a file-status stamp keeps a file's
/// two times as `Moment`s (`stamp`).
///
/// It orders as the instants do. Only the instant is kept, not the offset it
/// was written with: those keys compare times, they never return them.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
#[repr(C, packed(4))]
pub(crate) struct Moment {
    /// Whole seconds since the Unix epoch, rounded down.
    seconds: i64,
    /// The nanoseconds past them, plus one (which leaves `Option` a value
    /// to spare).
    nanos: NonZeroU32,
}

impl From<OffsetDateTime> for Moment {
    fn from(at: OffsetDateTime) -> Moment {
        Moment {
            // `unix_timestamp` rounds down, and `nanosecond` counts up from
            // it (also before the epoch), so the pair orders as the instant.
            seconds: at.unix_timestamp(),
            nanos: NonZeroU32::MIN.saturating_add(at.nanosecond()),
        }
    }
}

impl Moment {
    /// The instant `seconds` and `nanos` past the Unix epoch, as `stat`
    /// gives a file's times; `None` unless `nanos` is under a second.
    pub fn from_unix(seconds: i64, nanos: i64) -> Option<Moment> {
        let nanos = u32::try_from(nanos).ok().filter(|&n| n < 1_000_000_000)?;
        Some(Moment {
            seconds,
            nanos: NonZeroU32::MIN.saturating_add(nanos),
        })
    }

    /// Whole seconds since the Unix epoch, rounded down.
    pub fn seconds(self) -> i64 {
        self.seconds
    }

    /// The nanoseconds past [`seconds`](Self::seconds).
    pub fn subsec_nanos(self) -> u32 {
        self.nanos.get() - 1
    }
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;
    use time::macros::datetime;

    use super::Moment;

    /// The sizes the snapshot's memory is reckoned with.
    #[test]
    fn a_moment_and_an_optional_one_take_12_bytes() {
        assert_eq!(size_of::<Moment>(), 12);
        assert_eq!(size_of::<Option<Moment>>(), 12);
    }

    /// Moments order as their instants, whatever the offset, either side of
    /// the epoch and at the ends of the range; equal instants are equal.
    #[test]
    fn moments_order_as_their_instants() {
        let times = [
            OffsetDateTime::new_utc(time::Date::MIN, time::Time::MIDNIGHT),
            datetime!(1969-12-31 23:59:59.999_999_999 UTC),
            datetime!(1969-12-31 23:59:59.5 UTC),
            datetime!(1970-01-01 00:00:00 UTC),
            datetime!(1970-01-01 00:00:00.000_000_001 UTC),
            datetime!(2026-12-04 15:00:00.5 +02:00),
            datetime!(2026-12-04 14:00:00.5 UTC),
            datetime!(2026-12-04 13:00:00.500_000_001 UTC),
            time::PrimitiveDateTime::MAX.assume_utc(),
        ];
        for a in times {
            for b in times {
                assert_eq!(
                    Moment::from(a).cmp(&Moment::from(b)),
                    a.cmp(&b),
                    "{a} against {b}"
                );
                assert_eq!(
                    Moment::from(a) == Moment::from(b),
                    a == b,
                    "{a} against {b}"
                );
            }
        }
    }
}
