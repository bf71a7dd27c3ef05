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
//! back on the file-status proof (a handle the kernel refuses a watch says
//! so once: `FileBackend::watch`). A lost event (the queue overflowed) or a
//! moved or deleted directory ends the watch the same way: the next listing
//! starts over.
//!
//! A dropped watch's instance is kept, its watch removed, for the process's
//! next watch: closing an instance waits for the kernel, ending a watch does
//! not (see `IDLE`).

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
    /// These names changed (never without a watch: Linux's alone).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Names(HashMap<OsString, Change>),
    /// Events were lost, or the directory itself moved: trust nothing.
    Lost,
}

#[cfg(target_os = "linux")]
mod imp {
    use std::collections::HashMap;
    use std::ffi::OsStr;
    use std::io;
    use std::mem::MaybeUninit;
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Mutex, MutexGuard, PoisonError};

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
        /// The instance; `None` once the watch has ended.
        fd: Option<OwnedFd>,
        /// The watch's descriptor in it: events of another (one the
        /// instance had before) are not this watch's.
        wd: i32,
        /// The process that made it. A process forked from that one has a
        /// copy of `fd`, for the same instance: reading it would take the
        /// events away from the process they are for, so there the watch
        /// is lost from the start.
        pid: u32,
        /// This watch among every one the process made.
        id: u64,
        /// How many reads of its drains found events.
        reads: AtomicU64,
    }

    /// The last watch's id.
    static WATCHES: AtomicU64 = AtomicU64::new(0);

    /// How many instances whose watch ended the process keeps for the next
    /// watches (they count against the per-user limit of instances, 128 by
    /// default, until the process exits).
    pub(super) const IDLE_AT_MOST: usize = 4;

    /// Instances whose watch ended (they watch nothing, and nothing is
    /// queued in them), and the process that keeps them.
    ///
    /// Closing an instance waits until the kernel has freed every watch
    /// ended so far, by any instance (an RCU grace period: 0.1 to 30 ms
    /// measured here, 7 ms typical), where ending a watch does not wait.
    /// So a dropped watch leaves its instance here, and the next watch
    /// takes it: a handle's drop, and a listing that replaces a lost watch,
    /// do not wait for the kernel.
    ///
    /// A process forked from this one has copies of these descriptors, for
    /// the same instances: it must not take them, or two processes would
    /// read (and so take away) each other's events.
    static IDLE: Mutex<Idle> = Mutex::new(Idle {
        pid: 0,
        fds: Vec::new(),
    });

    struct Idle {
        pid: u32,
        fds: Vec<OwnedFd>,
    }

    /// The idle instances, this process's only.
    fn idle() -> MutexGuard<'static, Idle> {
        let mut idle = IDLE.lock().unwrap_or_else(PoisonError::into_inner);
        let pid = std::process::id();
        if idle.pid != pid {
            idle.pid = pid;
            // Closing copies another process still has open does not wait.
            idle.fds.clear();
        }
        idle
    }

    impl Watch {
        /// Watches the directory `dir` refers to (not whatever its path
        /// names now: the watch is added through `/proc/self/fd`), with an
        /// idle instance if there is one. The error is the kernel's: `MFILE`
        /// at the per-user (or per-process) limit of instances, `NOSPC` at
        /// the per-user limit of watches.
        pub(crate) fn new(dir: &Dir) -> io::Result<Watch> {
            let idle = idle().fds.pop();
            let fd = match idle {
                Some(fd) => fd,
                None => inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC)?,
            };
            Watch::on(fd, dir)
        }

        /// Watches `dir` with the instance `fd`, new or idle. Events of an
        /// idle one's last watch may still come (the kernel was queueing
        /// one as the watch ended): they are not this watch's (see
        /// `drain`).
        pub(super) fn on(fd: OwnedFd, dir: &Dir) -> io::Result<Watch> {
            let wd = add(&fd, dir, FLAGS)?;
            Ok(Watch {
                fd: Some(fd),
                wd,
                pid: std::process::id(),
                id: WATCHES.fetch_add(1, Ordering::Relaxed) + 1,
                reads: AtomicU64::new(0),
            })
        }

        /// Ends the watch: its instance, watching nothing now, with the
        /// events it had queued read and dropped; `None` if either could
        /// not be done (the instance is closed).
        pub(super) fn end(&mut self) -> Option<OwnedFd> {
            let fd = self.fd.take()?;
            match inotify::remove_watch(&fd, self.wd) {
                // `INVAL`: the watch went with its directory.
                Ok(()) | Err(Errno::INVAL) => {}
                Err(_) => return None,
            }
            let mut buf = [MaybeUninit::<u8>::uninit(); 8192];
            loop {
                match rustix::io::read(&fd, &mut buf) {
                    Ok((filled, _)) if !filled.is_empty() => {}
                    Err(Errno::INTR) => {}
                    Ok(_) | Err(Errno::WOULDBLOCK) => return Some(fd),
                    Err(_) => return None,
                }
            }
        }

        /// Whether this process made the watch (see `pid`).
        fn ours(&self) -> bool {
            self.pid == std::process::id()
        }

        pub(super) fn fd(&self) -> &OwnedFd {
            self.fd.as_ref().expect("only a drop ends a watch")
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
            self.ours() && add(self.fd(), dir, flags) == Ok(self.wd)
        }

        /// Whether no event is queued: nothing changed in the directory
        /// since the last drain (the kernel queues a change's event inside
        /// the system call that made it). `false` when it cannot tell.
        pub(crate) fn is_quiet(&self) -> bool {
            self.ours() && rustix::io::ioctl_fionread(self.fd()).is_ok_and(|queued| queued == 0)
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
        /// `Lost` in a process other than the one that made the watch (see
        /// `pid`).
        pub(crate) fn drain(&self) -> Changes {
            if !self.ours() {
                return Changes::Lost;
            }
            let mut names = HashMap::new();
            let mut buf = [MaybeUninit::<u8>::uninit(); 8192];
            loop {
                let filled = match rustix::io::read(self.fd(), &mut buf) {
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
                    let (wd, mask, len) = (field(0).cast_signed(), field(4), field(12) as usize);
                    let Some(name) = rest.get(HEADER..HEADER + len) else {
                        return Changes::Lost; // never: the kernel writes whole events
                    };
                    rest = &rest[HEADER + len..];
                    let flags = ReadFlags::from_bits_retain(mask);
                    // An overflow is no watch's (its `wd` is -1): events
                    // of this watch may be lost.
                    if wd != self.wd && !flags.contains(ReadFlags::QUEUE_OVERFLOW) {
                        continue; // the instance's last watch's (see `IDLE`)
                    }
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

    impl Drop for Watch {
        /// Ends the watch and keeps its instance idle for the next watch,
        /// unless `IDLE_AT_MOST` are idle already (then it is closed here);
        /// in a process forked from the one that made it, closes this
        /// process's copy alone.
        fn drop(&mut self) {
            if !self.ours() {
                // The copy goes (closing it waits for nothing: the process
                // that made the watch still has the instance); the watch
                // stays, the other process's.
                return;
            }
            let Some(fd) = self.end() else {
                return;
            };
            let mut idle = idle();
            if idle.fds.len() < IDLE_AT_MOST {
                idle.fds.push(fd);
                return;
            }
            drop(idle);
            drop(fd);
        }
    }

    /// Watches `dir` for `flags` with the instance `fd` (an existing watch
    /// of it takes them instead of its own): the watch's descriptor.
    fn add(fd: &OwnedFd, dir: &Dir, flags: WatchFlags) -> Result<i32, Errno> {
        let path = format!("/proc/self/fd/{}", dir.fd().as_raw_fd());
        inotify::add_watch(fd, path.as_str(), flags)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::collections::HashMap;
    use std::ffi::OsString;
    use std::os::fd::{AsRawFd, OwnedFd};

    use super::imp::IDLE_AT_MOST;
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

    /// An ended watch leaves its instance watching nothing, with nothing
    /// queued.
    #[test]
    fn an_ended_watch_leaves_its_instance_empty() {
        let dir = tempfile::tempdir().unwrap();
        let mut watch = Watch::new(&Fs::default().open_root(dir.path()).unwrap()).unwrap();
        std::fs::write(dir.path().join("written"), b"x").unwrap();
        let instance = watch.end().expect("the watch ends");
        assert_eq!(watches(&instance), 0);
        assert_eq!(rustix::io::ioctl_fionread(&instance).unwrap(), 0);
    }

    /// A watch on an instance that still holds events of its last watch (of
    /// another directory, and the kernel's notice that it ended, as when an
    /// event was under way as the watch ended) reports its own directory's
    /// changes alone, and is not lost.
    #[test]
    fn a_watch_on_a_used_instance_reports_its_own_directory_alone() {
        use rustix::fs::inotify::{self, CreateFlags, WatchFlags};

        let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let instance = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC).unwrap();
        let last = inotify::add_watch(&instance, one.path(), WatchFlags::ALL_EVENTS).unwrap();
        std::fs::write(one.path().join("before"), b"x").unwrap();
        inotify::remove_watch(&instance, last).unwrap();
        assert!(rustix::io::ioctl_fionread(&instance).unwrap() > 0);
        let watch = Watch::on(instance, &Fs::default().open_root(two.path()).unwrap()).unwrap();
        assert_eq!(watches(watch.fd()), 1);
        std::fs::write(one.path().join("after"), b"x").unwrap();
        std::fs::write(two.path().join("its own"), b"x").unwrap();
        let names = drain(&watch);
        assert_eq!(
            names.keys().collect::<Vec<_>>(),
            [&OsString::from("its own")]
        );
        assert!(drain(&watch).is_empty());
    }

    /// How many watches the inotify instance `fd` has, as the kernel lists
    /// them.
    fn watches(fd: &OwnedFd) -> usize {
        let path = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter(|line| line.starts_with("inotify wd:"))
            .count()
    }

    /// The inotify instances this process has open.
    fn instances() -> usize {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
            .filter(|target| target.as_os_str() == "anon_inode:inotify")
            .count()
    }

    /// Set in the child process the next test runs itself as.
    const CHILD: &str = "TASKSTORE_WATCH_INSTANCES_CHILD";

    /// A handle built with `change_notices(false)` makes no instance.
    /// Dropped watches leave at most `IDLE_AT_MOST` instances open, and the
    /// next watches take those before they make new ones. It counts the
    /// process's instances, so it runs in a child process (the test binary
    /// run again for this test alone), where no other test makes or drops
    /// any.
    #[test]
    fn dropped_watches_leave_few_instances_and_the_next_take_them() {
        if std::env::var_os(CHILD).is_none() {
            let name =
                "file::watch::tests::dropped_watches_leave_few_instances_and_the_next_take_them";
            let output = std::process::Command::new(std::env::current_exe().unwrap())
                .args([name, "--exact", "--test-threads=1", "--nocapture"])
                .env(CHILD, "1")
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&output.stdout);
            let why = String::from_utf8_lossy(&output.stderr);
            assert!(output.status.success(), "the child failed:\n{said}{why}");
            assert!(said.contains("1 passed"), "the child ran no test:\n{said}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = Fs::default().open_root(dir.path()).unwrap();
        let before = instances();
        // A handle without change notices makes none, whatever it lists.
        use crate::TaskStore;
        let store = crate::FileStore::builder(dir.path().join("store"))
            .change_notices(false)
            .open()
            .unwrap();
        for query in [crate::ListQuery::active(), crate::ListQuery::all()] {
            assert!(store.list(&query).unwrap().tasks.is_empty());
        }
        assert_eq!(instances(), before, "a handle without change notices");
        drop(store);
        const WATCHES: usize = 32;
        for round in 0..3 {
            let watches: Vec<Watch> = (0..WATCHES).map(|_| Watch::new(&root).unwrap()).collect();
            let open = instances() - before;
            assert_eq!(
                open, WATCHES,
                "round {round}: {open} instances for {WATCHES} watches"
            );
            drop(watches);
            let open = instances() - before;
            assert_eq!(
                open, IDLE_AT_MOST,
                "round {round}: {open} instances left open"
            );
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
        pub(crate) fn new(_dir: &Dir) -> std::io::Result<Watch> {
            Err(std::io::ErrorKind::Unsupported.into())
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
