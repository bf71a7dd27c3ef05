//! Change notices for `active/`: an inotify watch, so a handle learns which
//! task files changed since it last looked without `stat`-ing them all.
//!
//! The kernel queues an inotify event inside the system call that changed
//! the directory, before that call returns. So once a write has returned (in
//! any process), a reader that drains its watch afterwards finds the name it
//! wrote: the same freshness the file-status proof gives, at the cost of the
//! names that changed instead of the names that exist.
//!
//! Where there is no inotify (another OS, the per-user limit on instances
//! reached, `/proc` not mounted), there is no watch and the listing falls
//! back on the file-status proof. A lost event (the queue overflowed) or a
//! moved or deleted directory ends the watch the same way: the next listing
//! starts over.

use std::collections::HashMap;
use std::ffi::OsString;

/// How a name changed, over every event a drain found for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// Removed or renamed away, and nothing else: the name is gone, as of
    /// its last event (a later change comes with the next drain).
    Gone,
    /// Written, renamed in or changed (perhaps removed too): look.
    Changed,
}

/// What a drained watch says.
#[derive(Debug)]
pub(crate) enum Changes {
    /// These names changed.
    Names(HashMap<OsString, Change>),
    /// Events were lost, or the directory itself moved: trust nothing.
    Lost,
}

#[cfg(target_os = "linux")]
mod imp {
    use std::collections::HashMap;
    use std::ffi::OsStr;
    use std::mem::MaybeUninit;
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    use std::sync::atomic::{AtomicU64, Ordering};

    use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
    use rustix::io::Errno;

    use super::{Change, Changes};
    use crate::file::fs::Dir;

    /// What a watch notices: every way a name in the directory can change,
    /// and the directory itself going.
    const FLAGS: WatchFlags = WatchFlags::CREATE
        .union(WatchFlags::DELETE)
        .union(WatchFlags::MOVED_FROM)
        .union(WatchFlags::MOVED_TO)
        .union(WatchFlags::MODIFY)
        .union(WatchFlags::CLOSE_WRITE)
        .union(WatchFlags::ATTRIB)
        .union(WatchFlags::DELETE_SELF)
        .union(WatchFlags::MOVE_SELF)
        .union(WatchFlags::ONLYDIR);

    /// An event's fixed part: `struct inotify_event` without its name.
    const HEADER: usize = 16;
    /// The largest event: the fixed part and a name of `NAME_MAX` bytes
    /// with its NUL.
    const LARGEST: usize = HEADER + 256;

    /// An inotify instance watching one directory.
    #[derive(Debug)]
    pub(crate) struct Watch {
        fd: OwnedFd,
        /// This watch among every one the process made.
        id: u64,
        /// How many reads of its drains found events.
        reads: AtomicU64,
    }

    /// The last watch's id.
    static WATCHES: AtomicU64 = AtomicU64::new(0);

    impl Watch {
        /// Watches the directory `dir` refers to (not whatever its path
        /// names now: the watch is added through `/proc/self/fd`).
        pub(crate) fn new(dir: &Dir) -> Option<Watch> {
            let fd = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC).ok()?;
            let watch = Watch {
                fd,
                id: WATCHES.fetch_add(1, Ordering::Relaxed) + 1,
                reads: AtomicU64::new(0),
            };
            watch.set(dir, FLAGS).then_some(watch)
        }

        /// Stops (`false`) or resumes (`true`) noticing names unlinked from
        /// `dir`, the directory this watches: whether it did. Only its
        /// removals go unnoticed meanwhile; every other change still
        /// queues an event.
        pub(crate) fn notice_unlinks(&self, dir: &Dir, notice: bool) -> bool {
            let flags = if notice {
                FLAGS
            } else {
                FLAGS.difference(WatchFlags::DELETE)
            };
            self.set(dir, flags)
        }

        /// Watches `dir` for `flags` (an existing watch of it takes them
        /// instead of its own).
        fn set(&self, dir: &Dir, flags: WatchFlags) -> bool {
            let path = format!("/proc/self/fd/{}", dir.fd().as_raw_fd());
            inotify::add_watch(&self.fd, path.as_str(), flags).is_ok()
        }

        /// Whether no event is queued: nothing changed in the directory
        /// since the last drain (the kernel queues a change's event inside
        /// the system call that made it). `false` when it cannot tell.
        pub(crate) fn is_quiet(&self) -> bool {
            rustix::io::ioctl_fionread(&self.fd).is_ok_and(|queued| queued == 0)
        }

        /// Which watch this is, and how many reads of its drains found
        /// events: the same mark twice, with a drain just before each,
        /// means nothing it watches for happened in between.
        pub(crate) fn mark(&self) -> (u64, u64) {
            (self.id, self.reads.load(Ordering::Relaxed))
        }

        /// Every event queued so far, without waiting.
        ///
        /// One `read` returns every event queued when it was made, as many
        /// as fit: a read that left room for the largest event found them
        /// all, and no second read (to see it would block) is needed.
        pub(crate) fn drain(&self) -> Changes {
            let mut names = HashMap::new();
            let mut buf = [MaybeUninit::<u8>::uninit(); 8192];
            loop {
                let filled = match rustix::io::read(&self.fd, &mut buf) {
                    Ok((filled, _)) => filled,
                    Err(Errno::WOULDBLOCK) => return Changes::Names(names),
                    Err(Errno::INTR) => continue,
                    Err(_) => return Changes::Lost,
                };
                if !filled.is_empty() {
                    self.reads.fetch_add(1, Ordering::Relaxed);
                }
                let mut rest: &[u8] = filled;
                while rest.len() >= HEADER {
                    let field = |at: usize| {
                        u32::from_ne_bytes(rest[at..at + 4].try_into().expect("four bytes"))
                    };
                    let (mask, len) = (field(4), field(12) as usize);
                    let Some(name) = rest.get(HEADER..HEADER + len) else {
                        return Changes::Lost; // never: the kernel writes whole events
                    };
                    rest = &rest[HEADER + len..];
                    let flags = ReadFlags::from_bits_retain(mask);
                    if flags.intersects(
                        ReadFlags::QUEUE_OVERFLOW
                            | ReadFlags::IGNORED
                            | ReadFlags::DELETE_SELF
                            | ReadFlags::MOVE_SELF
                            | ReadFlags::UNMOUNT,
                    ) {
                        return Changes::Lost;
                    }
                    // The name is NUL-padded.
                    let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(len)];
                    if name.is_empty() {
                        continue;
                    }
                    // The last event says where the name stands: one that
                    // was written and then went is gone, one that went and
                    // came back changed.
                    let change = if flags.intersects(ReadFlags::DELETE | ReadFlags::MOVED_FROM) {
                        Change::Gone
                    } else {
                        Change::Changed
                    };
                    names.insert(OsStr::from_bytes(name).to_owned(), change);
                }
                if filled.len() + LARGEST <= buf.len() {
                    return Changes::Names(names);
                }
            }
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::collections::HashMap;
    use std::ffi::OsString;

    use super::{Change, Changes, Watch};
    use crate::file::fs::Fs;

    fn drain(watch: &Watch) -> HashMap<OsString, Change> {
        match watch.drain() {
            Changes::Names(names) => names,
            Changes::Lost => panic!("the watch was lost"),
        }
    }

    /// Each name's last event says where it stands; a drain finds every
    /// event queued before it, however many buffers they fill; a quiet
    /// drain finds nothing.
    #[test]
    fn a_drain_finds_every_name_and_where_it_stands() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        let watch = Watch::new(&Fs::default().open_root(path).unwrap()).unwrap();
        assert!(drain(&watch).is_empty());

        std::fs::write(path.join("written"), b"x").unwrap();
        std::fs::write(path.join("gone"), b"x").unwrap();
        std::fs::remove_file(path.join("gone")).unwrap();
        std::fs::write(path.join("back"), b"x").unwrap();
        std::fs::remove_file(path.join("back")).unwrap();
        std::fs::write(path.join("back"), b"y").unwrap();
        std::fs::rename(path.join("written"), path.join("moved")).unwrap();
        let names = drain(&watch);
        let change = |name: &str| names.get(&OsString::from(name)).copied();
        assert_eq!(change("gone"), Some(Change::Gone));
        assert_eq!(change("back"), Some(Change::Changed));
        assert_eq!(change("written"), Some(Change::Gone));
        assert_eq!(change("moved"), Some(Change::Changed));
        assert_eq!(names.len(), 4);
        assert!(drain(&watch).is_empty());

        // Names of 200 bytes: about 40 events fill the 8 KiB buffer.
        let long = |i: usize| format!("{i:0>200}");
        for i in 0..1_000 {
            std::fs::write(path.join(long(i)), b"x").unwrap();
        }
        let names = drain(&watch);
        assert_eq!(names.len(), 1_000);
        assert!((0..1_000).all(|i| names.get(&OsString::from(long(i))) == Some(&Change::Changed)));
        assert!(drain(&watch).is_empty());
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::Changes;
    use crate::file::fs::Dir;

    /// No inotify here: never a watch.
    #[derive(Debug)]
    pub(crate) struct Watch;

    impl Watch {
        pub(crate) fn new(_dir: &Dir) -> Option<Watch> {
            None
        }

        pub(crate) fn drain(&self) -> Changes {
            Changes::Lost
        }

        pub(crate) fn is_quiet(&self) -> bool {
            false
        }

        pub(crate) fn mark(&self) -> (u64, u64) {
            (0, 0)
        }

        pub(crate) fn notice_unlinks(&self, _dir: &Dir, _notice: bool) -> bool {
            false
        }
    }
}

pub(crate) use imp::Watch;
