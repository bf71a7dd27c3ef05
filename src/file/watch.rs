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

use std::collections::HashSet;
use std::ffi::OsString;

/// What a drained watch says.
#[derive(Debug)]
pub(crate) enum Changes {
    /// These names changed (were written, renamed in or out, removed).
    Names(HashSet<OsString>),
    /// Events were lost, or the directory itself moved: trust nothing.
    Lost,
}

#[cfg(target_os = "linux")]
mod imp {
    use std::collections::HashSet;
    use std::ffi::OsStr;
    use std::mem::MaybeUninit;
    use std::os::fd::{AsFd, AsRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;

    use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
    use rustix::io::Errno;

    use super::Changes;
    use crate::file::fs::Dir;

    /// An inotify instance watching one directory.
    #[derive(Debug)]
    pub(crate) struct Watch {
        fd: OwnedFd,
    }

    impl Watch {
        /// Watches the directory `dir` refers to (not whatever its path
        /// names now: the watch is added through `/proc/self/fd`).
        pub(crate) fn new(dir: &Dir) -> Option<Watch> {
            let fd = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC).ok()?;
            let path = format!("/proc/self/fd/{}", dir.fd().as_raw_fd());
            let flags = WatchFlags::CREATE
                | WatchFlags::DELETE
                | WatchFlags::MOVED_FROM
                | WatchFlags::MOVED_TO
                | WatchFlags::MODIFY
                | WatchFlags::CLOSE_WRITE
                | WatchFlags::ATTRIB
                | WatchFlags::DELETE_SELF
                | WatchFlags::MOVE_SELF
                | WatchFlags::ONLYDIR;
            inotify::add_watch(&fd, path.as_str(), flags).ok()?;
            Some(Watch { fd })
        }

        /// Every event queued so far, without waiting.
        pub(crate) fn drain(&self) -> Changes {
            let mut names = HashSet::new();
            let mut buf = [MaybeUninit::<u8>::uninit(); 8192];
            let mut reader = inotify::Reader::new(self.fd.as_fd(), &mut buf);
            loop {
                let event = match reader.next() {
                    Ok(event) => event,
                    Err(Errno::WOULDBLOCK) => return Changes::Names(names),
                    Err(Errno::INTR) => continue,
                    Err(_) => return Changes::Lost,
                };
                let flags = event.events();
                if flags.intersects(
                    ReadFlags::QUEUE_OVERFLOW
                        | ReadFlags::IGNORED
                        | ReadFlags::DELETE_SELF
                        | ReadFlags::MOVE_SELF
                        | ReadFlags::UNMOUNT,
                ) {
                    return Changes::Lost;
                }
                if let Some(name) = event.file_name() {
                    names.insert(OsStr::from_bytes(name.to_bytes()).to_owned());
                }
            }
        }
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
    }
}

pub(crate) use imp::Watch;
