//! The file-system seam: every call the file backend makes on the disk —
//! opens, reads, directory listings and `stat`s as well as writes, fsyncs,
//! renames, links, unlinks and locks — goes through here.
//!
//! Every name is resolved relative to an open [`Dir`] of the store and never
//! through a symlink (`openat` and friends with `O_NOFOLLOW`): a directory
//! of the store swapped for a symlink after it was opened is not followed.
//!
//! With the `fault-injection` feature a [`FaultInjector`] can make the Nth
//! call fail, the way SQLite's test VFS does, and a [`Recorder`] can log
//! every call that changed the disk (for the crash-state explorer,
//! `tests/crash_states/`); without the feature every method is a plain
//! call and the seam costs nothing.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::fault::FsEvent;
#[cfg(feature = "fault-injection")]
use super::fault::{FaultInjector, Recorder};
use super::watch::{Changes, Watch};

/// The kinds of call that go through the seam (named in fault logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FsOp {
    /// Opening a file or directory to read it.
    Open,
    /// Reading a file's bytes.
    Read,
    /// Listing a directory.
    ReadDir,
    /// `stat` of a name.
    Stat,
    /// Creating a new file (temp files, the store marker, lock files).
    Create,
    /// Writing a file's bytes.
    Write,
    /// `fsync` of a file.
    SyncFile,
    /// `rename`.
    Rename,
    /// `link`: a second name for a file.
    Link,
    /// `unlink`.
    Remove,
    /// `fsync` of a directory.
    SyncDir,
    /// `mkdir`.
    CreateDir,
    /// Taking an inter-process lock.
    Lock,
    /// Setting a file's or directory's permission bits.
    SetMode,
    /// Starting to follow a directory's change notices (an inotify watch).
    Watch,
    /// Reading the change notices of a directory's watch (named by the
    /// directory): a fault loses them, as a queue that overflowed does.
    Drain,
}

/// A directory of the store, open: names in it are resolved from this
/// handle, never through a symlink. `path` names it in errors only.
#[derive(Debug)]
pub(crate) struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// The directory's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open directory itself (for its watch).
    #[cfg(target_os = "linux")]
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    /// The path of `name` in this directory, for messages.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }
}

/// What `stat` says of a name, as the backend uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Status {
    pub kind: Kind,
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    /// 512-byte blocks allocated to it (`st_blocks`).
    pub blocks: u64,
    pub nlink: u64,
    /// Its owner's user id.
    pub uid: u32,
    pub mode: u32,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

/// The kind of thing a name is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

impl Status {
    // The field types of `struct stat` differ between architectures; on
    // some of them these casts are no-ops.
    #[allow(clippy::unnecessary_cast)]
    fn of(stat: &rustix::fs::Stat) -> Status {
        let kind = match FileType::from_raw_mode(stat.st_mode as _) {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            _ => Kind::Other,
        };
        Status {
            kind,
            dev: stat.st_dev as u64,
            ino: stat.st_ino as u64,
            size: stat.st_size as u64,
            blocks: stat.st_blocks as u64,
            nlink: stat.st_nlink as u64,
            uid: stat.st_uid as u32,
            mode: stat.st_mode as u32 & 0o7777,
            mtime: (stat.st_mtime as i64, stat.st_mtime_nsec as i64),
            ctime: (stat.st_ctime as i64, stat.st_ctime_nsec as i64),
        }
    }
}

/// The seam itself. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub(crate) struct Fs {
    #[cfg(feature = "fault-injection")]
    faults: Option<FaultInjector>,
    #[cfg(feature = "fault-injection")]
    recorder: Option<Recorder>,
}

const READ_DIR: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl Fs {
    #[cfg(feature = "fault-injection")]
    pub fn with_faults(faults: Option<FaultInjector>) -> Fs {
        Fs {
            faults,
            recorder: None,
        }
    }

    /// This seam, logging every call that changed the disk to `recorder`.
    #[cfg(feature = "fault-injection")]
    pub fn recording(self, recorder: Option<Recorder>) -> Fs {
        Fs { recorder, ..self }
    }

    /// Whether calls are being recorded or failed on purpose: then the
    /// store keeps every call on the calling thread, in call order.
    pub fn is_instrumented(&self) -> bool {
        #[cfg(feature = "fault-injection")]
        if self.faults.is_some() || self.recorder.is_some() {
            return true;
        }
        false
    }

    /// Logs a call that succeeded (only with a recorder; without the
    /// feature the event is never built).
    #[inline]
    fn record(&self, _event: impl FnOnce() -> FsEvent) {
        #[cfg(feature = "fault-injection")]
        if let Some(recorder) = &self.recorder {
            recorder.push(_event());
        }
    }

    #[inline]
    fn check(&self, _op: FsOp, _path: impl FnOnce() -> PathBuf) -> io::Result<()> {
        #[cfg(feature = "fault-injection")]
        if let Some(faults) = &self.faults {
            return faults.check(_op, &_path());
        }
        Ok(())
    }

    /// Opens the directory at `path` (the store's root, given by the host):
    /// its last component must not be a symlink, however it is named (a
    /// trailing slash would resolve one: it is left out).
    pub fn open_root(&self, path: &Path) -> io::Result<Dir> {
        self.check(FsOp::Open, || path.to_owned())?;
        let fd = rustix::fs::open(without_trailing_slashes(path), READ_DIR, Mode::empty())?;
        Ok(Dir {
            fd,
            path: path.to_owned(),
        })
    }

    /// Opens the directory at `path`, an ancestor of the store's root (the
    /// host's, outside the store: a symlink there is followed, as the path
    /// to the root follows it), only to fsync it.
    pub fn open_ancestor(&self, path: &Path) -> io::Result<Dir> {
        self.check(FsOp::Open, || path.to_owned())?;
        let fd = rustix::fs::open(path, READ_DIR.difference(OFlags::NOFOLLOW), Mode::empty())?;
        Ok(Dir {
            fd,
            path: path.to_owned(),
        })
    }

    /// Starts following the changes in `dir` (see `watch`): the kernel's
    /// error when it cannot, `Unsupported` where there are no change notices.
    pub fn watch(&self, dir: &Dir) -> io::Result<Watch> {
        self.check(FsOp::Watch, || dir.path.clone())?;
        Watch::new(dir)
    }

    /// The notices `watch` (of `dir`) queued since its last drain
    /// ([`Watch::drain`]); [`Changes::Lost`] if some may be lost.
    pub fn drain(&self, watch: &Watch, dir: &Dir) -> Changes {
        if self.check(FsOp::Drain, || dir.path.clone()).is_err() {
            return Changes::Lost;
        }
        watch.drain()
    }

    /// Opens the directory `name` in `dir`, never through a symlink.
    pub fn open_dir(&self, dir: &Dir, name: &OsStr) -> io::Result<Dir> {
        self.check(FsOp::Open, || dir.join(name))?;
        let fd = rustix::fs::openat(&dir.fd, name, READ_DIR, Mode::empty())?;
        Ok(Dir {
            fd,
            path: dir.join(name),
        })
    }

    /// Opens the file `name` in `dir` to read it, never through a symlink
    /// and without blocking on a FIFO.
    pub fn open_read(&self, dir: &Dir, name: &OsStr) -> io::Result<File> {
        self.check(FsOp::Open, || dir.join(name))?;
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&dir.fd, name, flags, Mode::empty())?;
        Ok(File::from(fd))
    }

    /// Reads all of `file` (at `path`), refusing more than `limit` bytes:
    /// its size is checked before anything is read.
    pub fn read_to_end(&self, file: &mut File, path: &Path, limit: u64) -> io::Result<Vec<u8>> {
        self.read_to_end_linked(file, path, limit)
            .map(|(bytes, _)| bytes)
    }

    /// [`read_to_end`](Self::read_to_end), with the file's number of links
    /// as the same `fstat` gave it.
    pub fn read_to_end_linked(
        &self,
        file: &mut File,
        path: &Path,
        limit: u64,
    ) -> io::Result<(Vec<u8>, u64)> {
        self.check(FsOp::Read, || path.to_owned())?;
        let status = Status::of(&rustix::fs::fstat(&*file)?);
        match status.kind {
            Kind::File => {}
            Kind::Dir => return Err(io::Error::from(io::ErrorKind::IsADirectory)),
            // `InvalidInput`: what the store's readers take for "not a
            // task file" (a FIFO, a device), a corrupt one. (A socket is
            // refused at its open: `is_special_file_refusal`.)
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a regular file",
                ));
            }
        }
        if status.size > limit {
            return Err(TooLarge {
                size: status.size,
                limit,
            }
            .into());
        }
        // One read of the size `fstat` gave and a byte more: a regular
        // file's read returns less than asked only at its end, so a short
        // read is the whole file, without a second read to find the end.
        // The file may grow after the `fstat`: read on, no further than the
        // limit.
        let mut reader = file.take(limit + 1);
        let mut bytes = vec![0; usize::try_from(status.size).unwrap_or(0) + 1];
        let first = loop {
            match reader.read(&mut bytes) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        let whole = first < bytes.len();
        bytes.truncate(first);
        if !whole {
            reader.read_to_end(&mut bytes)?;
        }
        if bytes.len() as u64 > limit {
            return Err(TooLarge {
                size: bytes.len() as u64,
                limit,
            }
            .into());
        }
        Ok((bytes, status.nlink))
    }

    /// The names in `dir` (without `.` and `..`).
    pub fn read_dir(&self, dir: &Dir) -> io::Result<Vec<OsString>> {
        self.read_dir_at_most(dir, usize::MAX)
    }

    /// The first `limit` names in `dir` (without `.` and `..`), in the
    /// order the directory gives them: the directory is read no further.
    pub fn read_dir_at_most(&self, dir: &Dir, limit: usize) -> io::Result<Vec<OsString>> {
        let mut names = Vec::new();
        if limit == 0 {
            return Ok(names);
        }
        self.each_entry(dir, |name, _| {
            names.push(name);
            names.len() < limit
        })?;
        Ok(names)
    }

    /// The names in `dir` (without `.` and `..`), each once: read in one
    /// call when they fit ([`each_entry_whole`](Self::each_entry_whole)),
    /// so that no rename over a name made meanwhile hides it; past that, in
    /// several. A name given twice (renamed between two calls) is kept
    /// once. For a directory whose files are renamed over (`active/`).
    pub fn read_dir_whole(&self, dir: &Dir) -> io::Result<Vec<OsString>> {
        let mut names = Vec::new();
        self.each_entry_whole(dir, |name, _| names.push(name))?;
        let mut seen = std::collections::HashSet::with_capacity(names.len());
        names.retain(|name| seen.insert(name.clone()));
        Ok(names)
    }

    /// The names in `dir` (without `.` and `..`), each with the inode
    /// number the directory holds for it.
    pub fn read_dir_inodes(&self, dir: &Dir) -> io::Result<Vec<(OsString, u64)>> {
        let mut entries = Vec::new();
        self.each_entry(dir, |name, ino| {
            entries.push((name, ino));
            true
        })?;
        Ok(entries)
    }

    /// Hands `each` every entry of `dir` (name and inode number), read in
    /// one `getdents` call when they fit in a buffer of eight times the
    /// directory's size (at most [`WHOLE_MAX`]: on tmpfs, whose directory
    /// counts 20 bytes an entry, room for ids of the longest length, 128
    /// bytes); returns whether they did.
    /// One call holds the directory's lock throughout, so no rename made
    /// meanwhile can hide a name from it or show one twice: tmpfs does both
    /// to a reading made of several calls while files are renamed over
    /// names in the directory (a probe here: most readings of 200 names
    /// missed some while two threads renamed over them), and a directory's
    /// times there may stay the same across those renames within a tick,
    /// so its status cannot tell that it changed.
    pub fn each_entry_whole(&self, dir: &Dir, each: impl FnMut(OsString, u64)) -> io::Result<bool> {
        #[cfg(not(target_os = "linux"))]
        {
            let mut each = each;
            // No `getdents` to ask for one call: read as `each_entry`
            // does, and say it was not whole.
            self.each_entry(dir, |name, ino| {
                each(name, ino);
                true
            })?;
            Ok(false)
        }
        #[cfg(target_os = "linux")]
        {
            self.each_entry_in_one(dir, each)
        }
    }

    /// [`each_entry_whole`](Self::each_entry_whole) where `getdents` is
    /// there to ask.
    #[cfg(target_os = "linux")]
    fn each_entry_in_one(
        &self,
        dir: &Dir,
        mut each: impl FnMut(OsString, u64),
    ) -> io::Result<bool> {
        let size = usize::try_from(self.stat_dir(dir)?.size).unwrap_or(usize::MAX);
        self.check(FsOp::ReadDir, || dir.path.clone())?;
        let len = size
            .saturating_mul(8)
            .saturating_add(32 << 10)
            .min(WHOLE_MAX);
        // A descriptor of its own: its offset starts at the directory's
        // start, whoever else reads it.
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&dir.fd, c".", flags, Mode::empty())?;
        let mut buf = Vec::with_capacity(len);
        let mut raw = rustix::fs::RawDir::new(&fd, buf.spare_capacity_mut());
        // The calls made: a reading in one ends with a second that finds
        // nothing more.
        let mut calls = 0;
        loop {
            if raw.is_buffer_empty() {
                calls += 1;
            }
            let Some(entry) = raw.next() else {
                break;
            };
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                each(OsStr::from_bytes(name).to_owned(), entry.ino());
            }
        }
        Ok(calls <= 2)
    }

    /// Hands `each` the entries of `dir` (name and inode number) while it
    /// asks for more.
    pub fn each_entry(
        &self,
        dir: &Dir,
        mut each: impl FnMut(OsString, u64) -> bool,
    ) -> io::Result<()> {
        self.check(FsOp::ReadDir, || dir.path.clone())?;
        for entry in rustix::fs::Dir::read_from(&dir.fd)? {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name != b"."
                && name != b".."
                && !each(OsStr::from_bytes(name).to_owned(), entry.ino())
            {
                break;
            }
        }
        Ok(())
    }

    /// What `name` in `dir` is, never following a symlink.
    pub fn stat(&self, dir: &Dir, name: &OsStr) -> io::Result<Status> {
        self.check(FsOp::Stat, || dir.join(name))?;
        let stat = rustix::fs::statat(&dir.fd, name, AtFlags::SYMLINK_NOFOLLOW)?;
        Ok(Status::of(&stat))
    }

    /// What the open directory `dir` is.
    pub fn stat_dir(&self, dir: &Dir) -> io::Result<Status> {
        self.check(FsOp::Stat, || dir.path.clone())?;
        Ok(Status::of(&rustix::fs::fstat(&dir.fd)?))
    }

    /// Whether the file system `dir` is on is mounted read-only.
    pub fn is_read_only_mount(&self, dir: &Dir) -> io::Result<bool> {
        let status = rustix::fs::fstatvfs(&dir.fd)?;
        Ok(status
            .f_flag
            .contains(rustix::fs::StatVfsMountFlags::RDONLY))
    }

    /// Whether `dir` is on an NFS mount, where a server that squashes root
    /// shows root's own files as the overflow uid's ([`check_owner`]).
    /// Never on another OS than Linux, which has no overflow uid.
    ///
    /// [`check_owner`]: super::open::check_owner
    pub fn is_nfs_mount(&self, dir: &Dir) -> io::Result<bool> {
        #[cfg(target_os = "linux")]
        {
            let status = rustix::fs::fstatfs(&dir.fd)?;
            Ok(status.f_type == rustix::fs::NFS_SUPER_MAGIC)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = dir;
            Ok(false)
        }
    }

    /// Creates `name` in `dir`, which must not exist, mode `0600`, never
    /// following a symlink.
    pub fn create_new(&self, dir: &Dir, name: &OsStr) -> io::Result<File> {
        self.check(FsOp::Create, || dir.join(name))?;
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&dir.fd, name, flags, Mode::from_raw_mode(0o600))?;
        self.record(|| FsEvent::Create {
            path: dir.join(name),
        });
        Ok(File::from(fd))
    }

    /// Opens (creating it if needed) the lock file `name` in `dir`, mode
    /// `0600`, never following a symlink.
    pub fn open_lock_file(&self, dir: &Dir, name: &OsStr) -> io::Result<File> {
        self.check(FsOp::Create, || dir.join(name))?;
        let flags = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&dir.fd, name, flags, Mode::from_raw_mode(0o600))?;
        Ok(File::from(fd))
    }

    /// Writes all of `bytes`. An injected fault writes half of them first, as
    /// a full disk would.
    pub fn write_all(&self, file: &mut File, path: &Path, bytes: &[u8]) -> io::Result<()> {
        if let Err(e) = self.check(FsOp::Write, || path.to_owned()) {
            let half = &bytes[..bytes.len() / 2];
            if file.write_all(half).is_ok() {
                self.record(|| FsEvent::Write {
                    path: path.to_owned(),
                    bytes: half.to_vec(),
                });
            }
            return Err(e);
        }
        file.write_all(bytes)?;
        self.record(|| FsEvent::Write {
            path: path.to_owned(),
            bytes: bytes.to_vec(),
        });
        Ok(())
    }

    pub fn sync_file(&self, file: &File, path: &Path) -> io::Result<()> {
        self.check(FsOp::SyncFile, || path.to_owned())?;
        file.sync_all()?;
        self.record(|| FsEvent::SyncFile {
            path: path.to_owned(),
        });
        Ok(())
    }

    /// Renames `from` in `from_dir` to `to` in `to_dir`, replacing what `to` named.
    pub fn rename(&self, from_dir: &Dir, from: &OsStr, to_dir: &Dir, to: &OsStr) -> io::Result<()> {
        self.check(FsOp::Rename, || to_dir.join(to))?;
        rustix::fs::renameat(&from_dir.fd, from, &to_dir.fd, to)?;
        self.record(|| FsEvent::Rename {
            from: from_dir.join(from),
            to: to_dir.join(to),
        });
        Ok(())
    }

    /// Gives the file `from` in `from_dir` a second name, `to` in `to_dir`
    /// (which must not exist).
    pub fn link(&self, from_dir: &Dir, from: &OsStr, to_dir: &Dir, to: &OsStr) -> io::Result<()> {
        self.check(FsOp::Link, || to_dir.join(to))?;
        rustix::fs::linkat(&from_dir.fd, from, &to_dir.fd, to, AtFlags::empty())?;
        self.record(|| FsEvent::Link {
            from: from_dir.join(from),
            to: to_dir.join(to),
        });
        Ok(())
    }

    /// Swaps the entries `a` and `b` of `dir` atomically (both must exist).
    pub fn exchange(&self, dir: &Dir, a: &OsStr, b: &OsStr) -> io::Result<()> {
        self.check(FsOp::Rename, || dir.join(a))?;
        rustix::fs::renameat_with(&dir.fd, a, &dir.fd, b, rustix::fs::RenameFlags::EXCHANGE)?;
        self.record(|| FsEvent::Exchange {
            a: dir.join(a),
            b: dir.join(b),
        });
        Ok(())
    }

    /// Removes the empty directory `name` in `dir`.
    pub fn remove_dir(&self, dir: &Dir, name: &OsStr) -> io::Result<()> {
        self.check(FsOp::Remove, || dir.join(name))?;
        rustix::fs::unlinkat(&dir.fd, name, AtFlags::REMOVEDIR)?;
        self.record(|| FsEvent::Remove {
            path: dir.join(name),
        });
        Ok(())
    }

    /// Unlinks the file `name` in `dir`.
    pub fn remove(&self, dir: &Dir, name: &OsStr) -> io::Result<()> {
        self.check(FsOp::Remove, || dir.join(name))?;
        rustix::fs::unlinkat(&dir.fd, name, AtFlags::empty())?;
        self.record(|| FsEvent::Remove {
            path: dir.join(name),
        });
        Ok(())
    }

    /// [`remove`](Self::remove)s the file `name` in `dir` if it is there:
    /// `true` if it was, `false` if it was gone already (as good: gone is
    /// what a removal wants). Any other failure is the error, for the
    /// caller to name and judge. Every "remove, gone is fine" of the file
    /// backend is this call.
    pub fn remove_if_there(&self, dir: &Dir, name: &OsStr) -> io::Result<bool> {
        match self.remove(dir, name) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Makes the changes to the entries of `dir` durable.
    pub fn sync_dir(&self, dir: &Dir) -> io::Result<()> {
        self.check(FsOp::SyncDir, || dir.path.clone())?;
        sync_dir_fd(&dir.fd)?;
        self.record(|| FsEvent::SyncDir {
            path: dir.path.clone(),
        });
        Ok(())
    }

    /// Creates the directory `name` in `dir`, mode `0700`.
    pub fn create_dir(&self, dir: &Dir, name: &OsStr) -> io::Result<()> {
        self.check(FsOp::CreateDir, || dir.join(name))?;
        rustix::fs::mkdirat(&dir.fd, name, Mode::from_raw_mode(0o700))?;
        self.record(|| FsEvent::CreateDir {
            path: dir.join(name),
        });
        Ok(())
    }

    /// Creates the directory at `path` (the store's root), mode `0700`.
    pub fn create_root(&self, path: &Path) -> io::Result<()> {
        self.check(FsOp::CreateDir, || path.to_owned())?;
        rustix::fs::mkdir(path, Mode::from_raw_mode(0o700))?;
        self.record(|| FsEvent::CreateDir {
            path: path.to_owned(),
        });
        Ok(())
    }

    /// Takes a shared `flock` on `file`, waiting for it.
    pub fn lock_shared(&self, file: &File, path: &Path) -> io::Result<()> {
        self.check(FsOp::Lock, || path.to_owned())?;
        file.lock_shared()
    }

    /// Takes a shared `flock` on `file` if no one holds it exclusive.
    pub fn try_lock_shared(&self, file: &File, path: &Path) -> io::Result<bool> {
        self.check(FsOp::Lock, || path.to_owned())?;
        taken(file.try_lock_shared())
    }

    /// Sets the permission bits of `name` in `dir`, never following a
    /// symlink: the file or directory is opened without following one and
    /// changed through its descriptor. One whose mode denies its owner
    /// reading it (`0000`, `0200`: what most needs its mode set) is opened
    /// by its path alone (`O_PATH`, which asks no permission of the file),
    /// and changed through the kernel's name of that descriptor under
    /// `/proc/self/fd`, which is that very file (`fchmod` takes no such
    /// descriptor). Not recorded: no workload replayed by the crash-state
    /// explorer changes a mode.
    pub fn set_mode(&self, dir: &Dir, name: &OsStr, mode: u32) -> io::Result<()> {
        self.check(FsOp::SetMode, || dir.join(name))?;
        // Permission bits, which fit every system's mode type (`u16` on
        // macOS).
        #[allow(clippy::unnecessary_cast)]
        let mode = Mode::from_raw_mode((mode & 0o7777) as rustix::fs::RawMode);
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        match rustix::fs::openat(&dir.fd, name, flags, Mode::empty()) {
            Ok(fd) => Ok(rustix::fs::fchmod(&fd, mode)?),
            Err(rustix::io::Errno::ACCESS) => set_mode_unreadable(dir, name, mode),
            Err(e) => Err(e.into()),
        }
    }

    /// Takes an exclusive `flock` on `file` if it is free.
    pub fn try_lock(&self, file: &File, path: &Path) -> io::Result<bool> {
        self.check(FsOp::Lock, || path.to_owned())?;
        taken(file.try_lock())
    }
}

/// An `fsync` of a directory. On Apple's systems that one leaves the
/// changes in the drive's cache, where a power cut loses them: the store
/// asks for `F_FULLFSYNC` there, as `File::sync_all` does for its files,
/// and falls back to `fsync` only on a file system that has no such call
/// (as SQLite does).
fn sync_dir_fd(fd: &OwnedFd) -> io::Result<()> {
    #[cfg(target_vendor = "apple")]
    {
        match rustix::fs::fcntl_fullfsync(fd) {
            Err(rustix::io::Errno::NOTSUP | rustix::io::Errno::INVAL) => {}
            done => return Ok(done?),
        }
    }
    Ok(rustix::fs::fsync(fd)?)
}

/// [`Fs::set_mode`] of `name` in `dir`, a file or directory whose mode
/// denies its owner reading it: opened by its path alone (`O_PATH`) and
/// changed through `/proc/self/fd` (Linux's `fchmodat` cannot be told not
/// to follow a symlink).
#[cfg(target_os = "linux")]
fn set_mode_unreadable(dir: &Dir, name: &OsStr, mode: Mode) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(&dir.fd, name, flags, Mode::empty())?;
    // Opened as a symlink, not through it: never changed.
    if FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode) == FileType::Symlink {
        return Err(rustix::io::Errno::LOOP.into());
    }
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    Ok(rustix::fs::chmod(path.as_str(), mode)?)
}

/// [`Fs::set_mode`] of `name` in `dir`, a file or directory whose mode
/// denies its owner reading it: `fchmodat` told not to follow a symlink
/// (which changes a symlink swapped in meanwhile, never what it names),
/// after a look that refuses a symlink, as on Linux.
#[cfg(not(target_os = "linux"))]
fn set_mode_unreadable(dir: &Dir, name: &OsStr, mode: Mode) -> io::Result<()> {
    let stat = rustix::fs::statat(&dir.fd, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if FileType::from_raw_mode(stat.st_mode) == FileType::Symlink {
        return Err(rustix::io::Errno::LOOP.into());
    }
    Ok(rustix::fs::chmodat(
        &dir.fd,
        name,
        mode,
        AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

/// Whether a `try_lock` took the lock (`false`: another holds it).
fn taken(tried: Result<(), std::fs::TryLockError>) -> io::Result<bool> {
    match tried {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// The largest buffer [`Fs::each_entry_whole`] reads a directory into.
#[cfg(target_os = "linux")]
const WHOLE_MAX: usize = 8 << 20;

/// A file larger than the caller allows: refused before it is read.
#[derive(Debug)]
pub(crate) struct TooLarge {
    pub size: u64,
    pub limit: u64,
}

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bytes, over the {} bytes any task file of this store can have",
            self.size, self.limit
        )
    }
}

impl std::error::Error for TooLarge {}

impl From<TooLarge> for io::Error {
    fn from(e: TooLarge) -> io::Error {
        io::Error::new(io::ErrorKind::FileTooLarge, e)
    }
}

/// Whether `e` says a symlink was refused by `O_NOFOLLOW`.
pub(crate) fn is_symlink_refusal(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
}

/// Whether `e`, from [`Fs::open_read`], says the name is no regular file
/// that can be opened at all: a socket, or a device with no driver behind
/// it (`ENXIO`; a FIFO opens, and its `fstat` tells it apart). A regular
/// file's open never fails so.
pub(crate) fn is_special_file_refusal(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::NXIO.raw_os_error())
}

/// `path` without the slashes that end it (`/` itself stays): the name
/// of its last component, which `O_NOFOLLOW` then applies to.
pub(crate) fn without_trailing_slashes(path: &Path) -> &Path {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    let kept = bytes.len() - bytes.iter().rev().take_while(|b| **b == b'/').count();
    Path::new(std::ffi::OsStr::from_bytes(
        &bytes[..kept.max(1).min(bytes.len())],
    ))
}

/// Whether `e` says the store cannot be written here (a read-only mount,
/// or no permission): an error that no retry will mend, and that a pass
/// over many tasks reports instead of stopping at.
pub(crate) fn is_read_only(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::ReadOnlyFilesystem || e.kind() == io::ErrorKind::PermissionDenied
}

/// Whether `e` is a failure for want of what the process or the system
/// rations (open files: `EMFILE`, `ENFILE`; memory: `ENOMEM`), not of
/// anything the file it names holds: every file fails so until the
/// resource is back, and a pass over many files meeting it fails with it
/// rather than report each file it could not open.
pub(crate) fn is_short_of_resources(e: &io::Error) -> bool {
    use rustix::io::Errno;
    [Errno::MFILE, Errno::NFILE, Errno::NOMEM]
        .iter()
        .any(|short| e.raw_os_error() == Some(short.raw_os_error()))
}

#[cfg(all(test, not(feature = "fault-injection")))]
mod tests {
    /// Without the feature the seam holds nothing: every call is the plain
    /// call behind an inlined `Ok(())`.
    #[test]
    fn the_seam_is_zero_sized_without_fault_injection() {
        assert_eq!(std::mem::size_of::<super::Fs>(), 0);
    }
}

#[cfg(test)]
mod whole_tests;

#[cfg(test)]
mod read_tests;
