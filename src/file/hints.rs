//! The hints file: what each running task with a TTL was when its file in
//! `active/` was written, so that a sweep meeting thousands of new files
//! learns which have expired, and what to report of each, without reading
//! them (FORMAT.md, "Hints").
//!
//! Every write of a running task with a TTL appends one line to
//! `hints.log` before it renames its file into `active/`: the task's id,
//! the status of its file (inode, size and modification time), and the
//! task without its payloads. The line is a hint, never the truth: a sweep
//! trusts it for a file only while that file's `stat` still gives the same
//! inode, size and modification time (task files are never changed in
//! place), and reads the file as before otherwise. A line can be missing
//! (an append that failed, a crash before it reached the disk, a store
//! written by an older version), torn (its checksum fails) or stale (its
//! file replaced since): each only sends its task to the read.
//!
//! What makes a match a proof:
//!
//! - A writer sets its temp file's modification time itself, to the
//!   wall clock in nanoseconds and past the last it set (`unique_mtime`):
//!   no two writes of one task share it, where the kernel's own times share
//!   a tick.
//! - Writes of a task are serialized by its stripe lock, and a hint is
//!   appended under it. So the last line of a task names its newest write
//!   whose append succeeded, and a later write whose append failed has
//!   another modification time: the stat does not match, and the file is
//!   read.
//!
//! The file only grows, by a line of a few hundred bytes per write; the
//! sweep that finds it large (`COMPACT_FROM`, and twice what the last
//! compaction kept) rewrites it in place under every stripe, keeping the
//! last line of each task whose file still matches. Appenders in other
//! processes hold it open with `O_APPEND`, so they write on at its new end.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::SystemTime;

use crate::file::fs::{Dir, Fs, Kind, Status};
use crate::file::layout::{HINTS, task_file_id, task_name};
use crate::file::{Area, FileBackend};
use crate::id::TaskId;
use crate::task::Task;

/// From this size up a sweep compacts the file (when it has also doubled
/// since the last compaction kept).
const COMPACT_FROM: u64 = 4 << 20;

/// The fewest tasks a sweep removes through their hints for it to compact
/// the file at once (when they were half its tasks or more).
const MIN_GONE: usize = 1_024;

/// The most a sweep loads; a larger file is left unread (its tasks are
/// read) until a compaction shrinks it.
const MAX_LOAD: u64 = 64 << 20;

/// The hints file, open to append; `None` where it cannot be (a store that
/// cannot be written). Writes go on without it.
#[derive(Debug, Default)]
pub(crate) struct Hints {
    file: Option<(File, PathBuf)>,
    /// The size the last compaction by this handle left.
    kept: Mutex<u64>,
}

/// The status of a task file a hint names: equal means the same write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    ino: u64,
    size: u64,
    mtime: (i64, i64),
}

impl FileStamp {
    fn of(status: &Status) -> Option<FileStamp> {
        (status.kind == Kind::File && status.nlink == 1).then_some(FileStamp {
            ino: status.ino,
            size: status.size,
            mtime: status.mtime,
        })
    }
}

impl Hints {
    /// Opens (making it if needed) the hints file of the store at
    /// `root_dir`. Best effort: without it a store works as before.
    pub(crate) fn open(fs: &Fs, root_dir: &Dir) -> Hints {
        let path = root_dir.join(HINTS);
        let file = match fs.open_append(root_dir, OsStr::new(HINTS)) {
            Ok(file) => Some((file, path)),
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "no hints file: sweeps read each new task");
                None
            }
        };
        Hints {
            file,
            kept: Mutex::new(0),
        }
    }

    /// Gives the temp file `temp` (at `temp_path`), which holds `task`
    /// (running, with a TTL), its own modification time and appends its
    /// hint. Called under the task's stripe lock, once the file is written
    /// and before its fsync and rename. Best effort: a hint that is not
    /// written leaves its task to be read.
    pub(crate) fn note(&self, fs: &Fs, temp: &File, temp_path: &std::path::Path, task: &Task) {
        let Some((file, path)) = &self.file else {
            return;
        };
        let noted = fs
            .set_mtime(temp, temp_path, unique_mtime())
            .and_then(|()| fs.stat_file(temp, temp_path))
            .and_then(|status| {
                let stamp = FileStamp::of(&status)
                    .ok_or_else(|| std::io::Error::other("not a lone regular file"))?;
                fs.append(file, path, &line(task, stamp))
            });
        if let Err(e) = noted {
            tracing::debug!(task = %task.id, error = %e, "no hint for a write: a sweep reads the task");
        }
    }

    /// The hints file's lines, for a sweep; `None` without one, or one too
    /// large to load.
    pub(crate) fn load(&self, backend: &FileBackend) -> Option<Loaded> {
        let (_, path) = self.file.as_ref()?;
        let name = OsStr::new(HINTS);
        let mut file = backend.fs.open_read(&backend.root_dir, name).ok()?;
        let bytes = backend.fs.read_to_end(&mut file, path, MAX_LOAD).ok()?;
        Some(Loaded::parse(bytes))
    }

    /// Compacts the file if it grew large (see the module): called once
    /// per sweep, holding no lock. Best effort.
    pub(crate) fn compact_if_large(&self, backend: &FileBackend) {
        let Some((file, path)) = &self.file else {
            return;
        };
        let kept = *self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let Ok(status) = backend.fs.stat_file(file, path) else {
            return;
        };
        if status.size >= COMPACT_FROM.max(kept.saturating_mul(2)) {
            self.compact(backend, None, &HashSet::new());
        }
    }

    /// Compacts the file after a sweep removed the tasks `gone` through
    /// their hints in `loaded`, if they were half its tasks or more: their
    /// lines are dropped without a `stat`. Best effort.
    pub(crate) fn compact_after(&self, backend: &FileBackend, loaded: &Loaded, gone: &[TaskId]) {
        if gone.len() >= MIN_GONE && gone.len() * 2 >= loaded.last.len() {
            let gone = gone.iter().map(|id| key(id.as_str().as_bytes())).collect();
            self.compact(backend, Some(loaded), &gone);
        }
    }

    /// Rewrites the file with the last line of each task whose file still
    /// matches it, under every stripe (so nobody appends meanwhile), from
    /// `loaded` if the file has not grown since it was read; the
    /// tasks `gone` (by their ids' keys) are known to have no file, and
    /// their lines are dropped unread (with any of another id of the same
    /// key: a hint lost, nothing else).
    fn compact(&self, backend: &FileBackend, loaded: Option<&Loaded>, gone: &HashSet<u64>) {
        let Some((file, path)) = &self.file else {
            return;
        };
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let Ok(_all) = backend.locks.lock_all(&backend.fs) else {
            return;
        };
        let rewritten = (|| {
            let reread;
            let loaded = match loaded {
                // Nothing appended since the sweep loaded it (nobody can
                // now): its lines are the file's. (Were it another
                // handle's compaction meanwhile that left the same size,
                // lines would be lost or kept stale: hints, nothing else.)
                Some(loaded)
                    if backend.fs.stat_file(file, path)?.size == loaded.bytes.len() as u64 =>
                {
                    loaded
                }
                _ => {
                    let mut reader = backend.fs.open_read(&backend.root_dir, OsStr::new(HINTS))?;
                    reread = Loaded::parse(backend.fs.read_to_end(
                        &mut reader,
                        path,
                        i64::MAX as u64,
                    )?);
                    &reread
                }
            };
            let active = backend.dir(Area::Active);
            let mut lines: Vec<_> = loaded
                .last
                .iter()
                .filter(|(key, _)| !gone.contains(key))
                .map(|(_, range)| range.clone())
                .collect();
            // In the order they were written, which is about creation order.
            lines.sort_by_key(|range| range.start);
            let mut keep = Vec::new();
            for range in lines {
                let line = &loaded.bytes[range];
                let Some(hint) = Hint::parse(line) else {
                    continue;
                };
                let Some(id) = std::str::from_utf8(hint.id)
                    .ok()
                    .and_then(|id| TaskId::parse(id).ok())
                else {
                    continue;
                };
                let current = backend.fs.stat(active, &task_name(&id)).ok();
                if current.as_ref().and_then(FileStamp::of) == Some(hint.stamp) {
                    keep.extend_from_slice(line);
                    keep.push(b'\n');
                }
            }
            backend.fs.truncate(file, path, 0)?;
            if !keep.is_empty() {
                backend.fs.append(file, path, &keep)?;
            }
            Ok::<_, std::io::Error>(keep.len() as u64)
        })();
        match rewritten {
            Ok(size) => *kept = size,
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "hints not compacted");
            }
        }
    }
}

/// A loaded hints file: the last line of each task.
#[derive(Debug)]
pub(crate) struct Loaded {
    bytes: Vec<u8>,
    /// Each task's last line (without its newline), by the hash of its id
    /// (two ids with one hash leave one of them to be read).
    last: HashMap<u64, std::ops::Range<usize>>,
}

impl Loaded {
    fn parse(bytes: Vec<u8>) -> Loaded {
        let mut last = HashMap::new();
        let mut start = 0;
        // A last line without its newline is an append in flight or cut
        // short: left out.
        while let Some(end) = bytes[start..].iter().position(|b| *b == b'\n') {
            let end = start + end;
            let line = &bytes[start..end];
            if let Some(id) = line.split(|b| *b == b'\t').next() {
                last.insert(key(id), start..end);
            }
            start = end + 1;
        }
        Loaded { bytes, last }
    }

    /// Whether the file holds a line of task `id`.
    pub(crate) fn has(&self, id: &TaskId) -> bool {
        self.last.contains_key(&key(id.as_str().as_bytes()))
    }

    /// Task `id`, without its payloads, if its last hint is whole and the
    /// file `name` in `active/` is still the file it was written for: what a
    /// read of that file would give (the caller holds the task's lock).
    pub(crate) fn proven(&self, backend: &FileBackend, id: &TaskId, name: &OsStr) -> Option<Task> {
        let range = self.last.get(&key(id.as_str().as_bytes()))?;
        let hint = Hint::parse(&self.bytes[range.clone()])?;
        if hint.id != id.as_str().as_bytes() || task_file_id(name).as_ref() != Some(id) {
            return None;
        }
        let status = backend.fs.stat(backend.dir(Area::Active), name).ok()?;
        if FileStamp::of(&status) != Some(hint.stamp) {
            return None;
        }
        let task: Task = serde_json::from_slice(hint.head).ok()?;
        (task.id == *id).then_some(task)
    }
}

/// The key of an id's line in [`Loaded`].
fn key(id: &[u8]) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(id)
}

/// One whole line: `<id> TAB <ino> <size> <mtime secs> <mtime nanos> TAB
/// <task JSON> TAB <checksum>`.
struct Hint<'a> {
    id: &'a [u8],
    stamp: FileStamp,
    head: &'a [u8],
}

impl<'a> Hint<'a> {
    fn parse(line: &'a [u8]) -> Option<Hint<'a>> {
        let split = line.iter().rposition(|b| *b == b'\t')?;
        let (body, sum) = (&line[..split], &line[split + 1..]);
        if sum.len() != 16
            || u64::from_str_radix(std::str::from_utf8(sum).ok()?, 16).ok()? != checksum(body)
        {
            return None;
        }
        let mut fields = body.splitn(3, |b| *b == b'\t');
        let id = fields.next()?;
        let stamp = std::str::from_utf8(fields.next()?).ok()?;
        let head = fields.next()?;
        let mut numbers = stamp.split(' ');
        let mut next = || numbers.next()?.parse::<i64>().ok();
        let stamp = FileStamp {
            ino: u64::try_from(next()?).ok()?,
            size: u64::try_from(next()?).ok()?,
            mtime: (next()?, next()?),
        };
        Some(Hint { id, stamp, head })
    }
}

/// The line of `task`, whose file has `stamp`, newline included.
fn line(task: &Task, stamp: FileStamp) -> Vec<u8> {
    let mut body = format!(
        "{}\t{} {} {} {}\t",
        task.id, stamp.ino, stamp.size, stamp.mtime.0, stamp.mtime.1
    )
    .into_bytes();
    // Compact JSON holds no tab or newline: both are escaped in strings.
    serde_json::to_writer(&mut body, &task.without_payloads()).expect("a task always encodes");
    let sum = format!("\t{:016x}\n", checksum(&body));
    body.extend_from_slice(sum.as_bytes());
    body
}

/// FNV-1a, 64 bits: enough to tell a torn or foreign line from a whole one.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A modification time for a new task file: the wall clock in nanoseconds,
/// past the last this process gave (see the module).
fn unique_mtime() -> (i64, i64) {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    let mut last = LAST.load(Ordering::Relaxed);
    let nanos = loop {
        let next = now.max(last.saturating_add(1));
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break next,
            Err(seen) => last = seen,
        }
    };
    (
        nanos.div_euclid(1_000_000_000),
        nanos.rem_euclid(1_000_000_000),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> Task {
        crate::task::NewTask::default()
            .ttl(std::time::Duration::from_secs(60))
            .into_task(
                TaskId::parse("t-1").unwrap(),
                time::OffsetDateTime::UNIX_EPOCH,
            )
    }

    const STAMP: FileStamp = FileStamp {
        ino: 42,
        size: 310,
        mtime: (1_700_000_000, 5),
    };

    #[test]
    fn a_line_reads_back_as_written() {
        let task = task();
        let line = line(&task, STAMP);
        assert_eq!(line.last(), Some(&b'\n'));
        let hint = Hint::parse(&line[..line.len() - 1]).unwrap();
        assert_eq!(hint.stamp, STAMP);
        let head: Task = serde_json::from_slice(hint.head).unwrap();
        assert_eq!(head, task.without_payloads());
    }

    #[test]
    fn a_torn_or_altered_line_is_no_hint() {
        let line = line(&task(), STAMP);
        let whole = &line[..line.len() - 1];
        for cut in 1..whole.len() {
            assert!(Hint::parse(&whole[..cut]).is_none(), "cut at {cut}");
        }
        let mut altered = whole.to_vec();
        let at = altered.iter().position(|b| *b == b'4').unwrap();
        altered[at] = b'5';
        assert!(Hint::parse(&altered).is_none());
    }

    #[test]
    fn the_last_whole_line_of_a_task_wins_and_a_torn_end_is_left_out() {
        let task = task();
        let mut next = task.clone();
        next.revision += 1;
        let newer = FileStamp { ino: 43, ..STAMP };
        let mut bytes = line(&task, STAMP);
        bytes.extend(line(&next, newer));
        let torn = line(&task, STAMP);
        bytes.extend_from_slice(&torn[..torn.len() / 2]);
        let loaded = Loaded::parse(bytes);
        let range = loaded.last[&key(task.id.as_str().as_bytes())].clone();
        let hint = Hint::parse(&loaded.bytes[range]).unwrap();
        assert_eq!(hint.stamp, newer);
    }

    #[test]
    fn modification_times_given_in_a_row_differ() {
        let times: Vec<_> = (0..1_000).map(|_| unique_mtime()).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]));
    }
}
