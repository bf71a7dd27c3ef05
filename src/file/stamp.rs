//! The file-status proof: when a `stat` tells that a file (or a
//! directory's entries) has not changed since it was read.
//!
//! Task files are never changed in place: every write renames a new file
//! over `active/<id>.json`, a terminal move takes the name away, a delete
//! or sweep unlinks it, a set-aside moves it away. So
//!
//! - a directory whose status is unchanged since it was read has the same
//!   entries, naming the same files;
//! - a file whose status is unchanged is the same file, with the same bytes.
//!
//! "Unchanged status" needs care: change times come from a clock with a
//! granularity (a kernel tick on most file systems, a second or two on some),
//! so a change made in the same tick as the status was read could leave it
//! looking the same, and a new file could reuse a freed inode number. A
//! status is trusted only if the clock had already moved past its change
//! time by more than the granularity when it was read (git's "racily clean"
//! rule): any later change then gets a later change time.

use std::time::{Duration, SystemTime};

use crate::file::fs::{Kind, Status};
use crate::file::moment::Moment;

/// How long after its last change a file or directory must have stood still
/// before its status is trusted, on file systems with sub-second timestamps.
/// Far above a kernel tick (at most 10 ms), the granularity of the coarse
/// clock file times are taken from.
pub(crate) const SETTLE: Duration = Duration::from_millis(100);

/// The same, when the times have no sub-second part (a file system with one-
/// or two-second timestamps).
const SETTLE_COARSE: Duration = Duration::from_millis(2_500);

/// The clock reading taken before any status is read.
pub(crate) fn clock() -> SystemTime {
    SystemTime::now()
}

/// What `stat` says of a file or directory: equal settled stamps mean the
/// same file, unchanged (for a directory: the same entries).
///
/// 52 bytes, and an `Option` of one 52 too: a handle without change
/// notices keeps one per task it knows. The times are `Moment`s and the
/// link count 32 bits, packed to 4-byte alignment; a status that does not
/// fit them exactly (a time's nanoseconds past a second, more than
/// `u32::MAX` links) makes no stamp, so two statuses that differ never
/// make equal stamps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, packed(4))]
pub(crate) struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: Moment,
    ctime: Moment,
    nlink: u32,
}

impl Stamp {
    /// `status`, if it had settled at `before` and is of a regular file or
    /// directory.
    pub fn settled(status: &Status, before: SystemTime) -> Option<Stamp> {
        Stamp::of(status).filter(|s| s.settled_at(before))
    }

    /// `status`, if of a regular file or directory (and it fits a stamp).
    pub fn of(status: &Status) -> Option<Stamp> {
        if !matches!(status.kind, Kind::File | Kind::Dir) {
            return None;
        }
        Some(Stamp {
            dev: status.dev,
            ino: status.ino,
            size: status.size,
            mtime: Moment::from_unix(status.mtime.0, status.mtime.1)?,
            ctime: Moment::from_unix(status.ctime.0, status.ctime.1)?,
            nlink: u32::try_from(status.nlink).ok()?,
        })
    }

    /// Whether a change made after `now` must get a later change time than
    /// this stamp's.
    fn settled_at(&self, now: SystemTime) -> bool {
        let (ctime, mtime) = (self.ctime, self.mtime);
        let coarse = ctime.subsec_nanos() == 0 && mtime.subsec_nanos() == 0;
        let settle = if coarse { SETTLE_COARSE } else { SETTLE };
        // A change time before 1970, or a clock before it: trust nothing.
        let Ok(secs) = u64::try_from(ctime.seconds()) else {
            return false;
        };
        let Ok(now) = now.duration_since(SystemTime::UNIX_EPOCH) else {
            return false;
        };
        now.saturating_sub(Duration::new(secs, ctime.subsec_nanos())) > settle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp((secs, nanos): (i64, i64)) -> Stamp {
        let ctime = Moment::from_unix(secs, nanos).unwrap();
        Stamp {
            dev: 1,
            ino: 2,
            size: 4096,
            nlink: 2,
            mtime: ctime,
            ctime,
        }
    }

    /// The size a handle without change notices keeps per task.
    #[test]
    fn a_stamp_and_an_optional_one_take_52_bytes() {
        assert_eq!(size_of::<Stamp>(), 52);
        assert_eq!(size_of::<Option<Stamp>>(), 52);
    }

    /// A status whose times or link count do not fit a stamp exactly makes
    /// none (else two statuses that differ there could make equal stamps).
    #[test]
    fn a_status_that_does_not_fit_makes_no_stamp() {
        let status = |mtime: (i64, i64), nlink: u64| Status {
            kind: Kind::File,
            dev: 1,
            ino: 2,
            size: 300,
            blocks: 8,
            nlink,
            uid: 0,
            mode: 0o644,
            mtime,
            ctime: (1_000, 5),
        };
        assert!(Stamp::of(&status((1_000, 999_999_999), 1)).is_some());
        assert!(Stamp::of(&status((1_000, 1_000_000_000), 1)).is_none());
        assert!(Stamp::of(&status((1_000, -1), 1)).is_none());
        assert!(Stamp::of(&status((1_000, 0), u64::from(u32::MAX) + 1)).is_none());
        assert_ne!(
            Stamp::of(&status((1_000, 1), 1)),
            Stamp::of(&status((1_000, 2), 1))
        );
    }

    /// Every part of a status a stamp keeps tells two files apart: two
    /// statuses that differ in any one of them make different stamps. (A
    /// stamp built without its inode passed every other test: a replaced
    /// file gets a later change time too, but not on a clock stepped back.)
    #[test]
    fn statuses_that_differ_in_any_kept_part_make_different_stamps() {
        let base = Status {
            kind: Kind::File,
            dev: 1,
            ino: 2,
            size: 300,
            blocks: 8,
            nlink: 1,
            uid: 0,
            mode: 0o600,
            mtime: (1_000, 5),
            ctime: (1_000, 5),
        };
        let changed = [
            Status { dev: 9, ..base },
            Status { ino: 9, ..base },
            Status { size: 301, ..base },
            Status { nlink: 2, ..base },
            Status {
                mtime: (1_000, 6),
                ..base
            },
            Status {
                ctime: (1_000, 6),
                ..base
            },
        ];
        for other in changed {
            assert_ne!(Stamp::of(&base), Stamp::of(&other), "{other:?}");
        }
    }

    fn at(secs: u64, millis: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    #[test]
    fn a_stamp_settles_after_the_granularity_margin() {
        let s = stamp((1_000, 500_000_000));
        assert!(!s.settled_at(at(1_000, 500)));
        assert!(!s.settled_at(at(1_000, 600)));
        assert!(s.settled_at(at(1_000, 601)));
        // A clock behind the change time (stepped back): not settled.
        assert!(!s.settled_at(at(999, 0)));
    }

    #[test]
    fn whole_second_times_need_the_coarse_margin() {
        let s = stamp((1_000, 0));
        assert!(!s.settled_at(at(1_001, 0)));
        assert!(!s.settled_at(at(1_002, 500)));
        assert!(s.settled_at(at(1_002, 501)));
    }
}
