//! A per-handle snapshot of the decoded tasks in `active/`, and the proof
//! that lets a listing reuse it.
//!
//! Task files are never changed in place: every write renames a new file
//! over `active/<id>.json`, a terminal move renames it out, a delete or sweep
//! unlinks it, a set-aside moves it away. So
//!
//! - a directory whose status (`stat`) is unchanged since the snapshot was
//!   taken has the same entries, naming the same files: the whole snapshot
//!   is current;
//! - a file whose status is unchanged is the same file, with the same bytes:
//!   its decoded task is current, whatever happened to its neighbours.
//!
//! "Unchanged status" needs care: change times come from a clock with a
//! granularity (a kernel tick on most file systems, a second or two on some),
//! so a change made in the same tick as the status was read could leave it
//! looking the same, and a new file could reuse a freed inode number. A
//! status is trusted only if the clock had already moved past its change
//! time by more than the granularity when it was read (git's "racily clean"
//! rule): any later change then gets a later change time. A store written
//! constantly therefore re-reads only the files that changed; a quiet one is
//! listed from memory.

#[cfg(test)]
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::file::fs::{Dir, Fs, Kind, Status};
use crate::task::Task;

/// How long after its last change a file or directory must have stood still
/// before its status is trusted, on file systems with sub-second timestamps.
/// Far above a kernel tick (at most 10 ms), the granularity of the coarse
/// clock file times are taken from.
const SETTLE: Duration = Duration::from_millis(100);

/// The same, when the times have no sub-second part (a file system with one-
/// or two-second timestamps).
const SETTLE_COARSE: Duration = Duration::from_millis(2_500);

/// Snapshots larger than this (in encoded task bytes) are not kept.
pub(crate) const MAX_CACHED_BYTES: usize = 32 << 20;

/// The snapshot of one handle, if it has one.
#[derive(Debug, Default)]
pub(crate) struct ActiveCache {
    snapshot: Mutex<Option<Snapshot>>,
    /// Listings served whole from the snapshot, over the handle's life
    /// (counted for the tests only).
    #[cfg(test)]
    hits: AtomicU64,
    /// Task files whose decoded task was reused instead of read.
    #[cfg(test)]
    reused: AtomicU64,
}

#[derive(Debug)]
struct Snapshot {
    /// The directory's status before it was read; `None` if not settled
    /// then (the snapshot is not current as a whole, only file by file).
    dir: Option<Stamp>,
    entries: Arc<[Entry]>,
}

/// A task as read from `active/`, with what proves it current later.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    /// The file's status just before the read, if trusted (settled, a
    /// regular file).
    pub stamp: Option<Stamp>,
    /// The file's size.
    pub bytes: usize,
    pub task: Task,
}

/// What `stat` says of a file or directory: equal settled stamps mean the
/// same file, unchanged (for a directory: the same entries).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    nlink: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl ActiveCache {
    /// The clock reading a listing takes before it reads any status.
    pub fn clock() -> SystemTime {
        SystemTime::now()
    }

    /// `dir`'s status, and the same if it had settled at `before` (a
    /// [`clock`](Self::clock) reading taken before this call). Both `None`
    /// where file change times are not available.
    pub fn observe(
        fs: &Fs,
        dir: &Dir,
        before: SystemTime,
    ) -> Result<(Option<Stamp>, Option<Stamp>)> {
        let status = fs
            .stat_dir(dir)
            .map_err(|e| Error::io("stat", dir.path(), e))?;
        let stamp = Stamp::of(&status);
        Ok((stamp, stamp.filter(|s| s.settled_at(before))))
    }

    /// The whole snapshot, if it was taken at the directory status `dir`.
    pub fn get(&self, dir: Option<Stamp>) -> Option<Arc<[Entry]>> {
        let dir = dir?;
        let entries = self
            .lock()
            .as_ref()
            .filter(|s| s.dir == Some(dir))
            .map(|s| s.entries.clone());
        #[cfg(test)]
        if entries.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        entries
    }

    /// The last snapshot's entries, to reuse file by file.
    pub fn last(&self) -> Option<Arc<[Entry]>> {
        self.lock().as_ref().map(|s| s.entries.clone())
    }

    /// Counts a task reused from the last snapshot.
    pub fn reuse(&self) {
        #[cfg(test)]
        self.reused.fetch_add(1, Ordering::Relaxed);
    }

    /// Keeps `entries`, read completely after the directory status `dir`,
    /// unless they are too large.
    pub fn put(&self, dir: Option<Stamp>, entries: Arc<[Entry]>, bytes: usize) {
        *self.lock() = (bytes <= MAX_CACHED_BYTES).then_some(Snapshot { dir, entries });
    }

    /// Drops the snapshot (a scan could not read every task).
    pub fn clear(&self) {
        *self.lock() = None;
    }

    /// Listings served whole from a snapshot.
    #[cfg(test)]
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Task files not read because their task was current in the snapshot.
    #[cfg(test)]
    pub fn reused(&self) -> u64 {
        self.reused.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Snapshot>> {
        // A snapshot is replaced whole; a poisoned lock holds a whole one.
        self.snapshot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Stamp {
    /// `status`, if it had settled at `before` and is of a regular file or
    /// directory.
    pub fn settled(status: &Status, before: SystemTime) -> Option<Stamp> {
        Stamp::of(status).filter(|s| s.settled_at(before))
    }

    /// `status`, if of a regular file or directory.
    fn of(status: &Status) -> Option<Stamp> {
        matches!(status.kind, Kind::File | Kind::Dir).then_some(Stamp {
            dev: status.dev,
            ino: status.ino,
            size: status.size,
            nlink: status.nlink,
            mtime: status.mtime,
            ctime: status.ctime,
        })
    }

    /// Whether a change made after `now` must get a later change time than
    /// this stamp's.
    fn settled_at(&self, now: SystemTime) -> bool {
        let coarse = self.ctime.1 == 0 && self.mtime.1 == 0;
        let settle = if coarse { SETTLE_COARSE } else { SETTLE };
        // A change time before 1970, or a clock before it: trust nothing.
        let (Ok(secs), Ok(nanos)) = (u64::try_from(self.ctime.0), u32::try_from(self.ctime.1))
        else {
            return false;
        };
        let Ok(now) = now.duration_since(SystemTime::UNIX_EPOCH) else {
            return false;
        };
        now.saturating_sub(Duration::new(secs, nanos)) > settle
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::file::FileStore;
    use crate::file::layout::Area;
    use crate::query::ListQuery;
    use crate::store::TaskStore;
    use crate::task::{NewTask, TaskUpdate};
    use crate::{Durability, TaskId};
    use std::path::Path;
    use std::sync::atomic::AtomicBool;

    /// Waits (polling, bounded) until `active/` has stood still long enough
    /// for its status to be trusted.
    fn settle(store: &FileStore) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let backend = store.backend();
        while ActiveCache::observe(&backend.fs, backend.dir(Area::Active), ActiveCache::clock())
            .unwrap()
            .1
            .is_none()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "active/ never settled"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A handle on the store at `dir` (two of them stand for two processes).
    fn handle(dir: &Path) -> FileStore {
        FileStore::builder(dir)
            .durability(Durability::Eventual)
            .open()
            .unwrap()
    }

    fn active(store: &FileStore) -> Vec<(TaskId, u64)> {
        let mut tasks: Vec<_> = store
            .list(&ListQuery::active())
            .unwrap()
            .tasks
            .into_iter()
            .map(|t| (t.id, t.revision))
            .collect();
        tasks.sort();
        tasks
    }

    #[test]
    fn a_quiet_store_lists_from_memory_and_sees_every_later_write() {
        let dir = tempfile::tempdir().unwrap();
        let (reader, writer) = (handle(dir.path()), handle(dir.path()));
        let ids: Vec<_> = (0..3)
            .map(|_| writer.create(NewTask::new()).unwrap().id)
            .collect();

        settle(&reader);
        let first = active(&reader);
        assert_eq!(first.len(), 3);
        assert_eq!(
            reader.backend().active_cache.hits(),
            0,
            "the first listing reads files"
        );
        assert_eq!(active(&reader), first);
        assert_eq!(
            reader.backend().active_cache.hits(),
            1,
            "an unchanged store is listed from memory"
        );

        // Another handle's update, completion, creation and deletion are
        // each seen by the very next listing, though the one before it was
        // served from memory.
        let cached = |reader: &FileStore| {
            settle(reader);
            active(reader);
            let hits = reader.backend().active_cache.hits();
            let listed = active(reader);
            assert_eq!(reader.backend().active_cache.hits(), hits + 1);
            listed
        };
        cached(&reader);
        let updated = writer
            .update(&ids[0], TaskUpdate::new().status_message("moved on"))
            .unwrap()
            .into_task();
        assert!(active(&reader).contains(&(updated.id.clone(), updated.revision)));
        assert_eq!(cached(&reader).len(), 3);
        let _ = writer.complete(&ids[1], serde_json::json!("done")).unwrap();
        assert_eq!(active(&reader).len(), 2);
        cached(&reader);
        let created = writer.create(NewTask::new()).unwrap().id;
        assert!(active(&reader).iter().any(|(id, _)| *id == created));
        cached(&reader);
        assert!(writer.delete(&ids[2]).unwrap());
        assert!(!active(&reader).iter().any(|(id, _)| *id == ids[2]));
    }

    #[test]
    fn a_listing_started_after_a_write_returned_sees_it() {
        // A writer bumps one task's revision, pausing now and then past the
        // settle margin so that the reader keeps snapshots and the next
        // write lands right after one was taken; every listing that starts
        // after a write returned must show at least that revision.
        let dir = tempfile::tempdir().unwrap();
        let (reader, writer) = (handle(dir.path()), handle(dir.path()));
        let id = writer.create(NewTask::new()).unwrap().id;
        let written = AtomicU64::new(0);
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                for round in 0..12u32 {
                    std::thread::sleep(
                        SETTLE + Duration::from_millis(20 + u64::from(round % 4) * 7),
                    );
                    for _ in 0..(1 + round % 3) {
                        let task = writer
                            .update(&id, TaskUpdate::new().metadata("round", round))
                            .unwrap()
                            .into_task();
                        written.store(task.revision, Ordering::SeqCst);
                    }
                }
                stop.store(true, Ordering::SeqCst);
            });
            while !stop.load(Ordering::SeqCst) {
                let at_least = written.load(Ordering::SeqCst);
                let listed = active(&reader);
                assert_eq!(listed.len(), 1);
                assert!(
                    listed[0].1 >= at_least,
                    "listed revision {} after revision {at_least} was written",
                    listed[0].1
                );
            }
        });
        assert!(
            reader.backend().active_cache.hits() > 0,
            "no listing was served from memory"
        );
    }

    /// With `n` running tasks: each listing after a write reads only what
    /// is not provably unchanged, and sees every change.
    fn only_changed_files_are_read(n: usize) {
        let dir = tempfile::tempdir().unwrap();
        let (reader, writer) = (handle(dir.path()), handle(dir.path()));
        let ids: Vec<_> = (0..n)
            .map(|_| writer.create(NewTask::new()).unwrap().id)
            .collect();
        settle(&reader);
        active(&reader);
        for round in 0..10u32 {
            // Replaced twice in a row: the second file may get the first's
            // freed inode number back, and must be read all the same.
            let id = &ids[round as usize * 7 % n];
            let mut last = None;
            for step in 0..2u32 {
                last = Some(
                    writer
                        .update(id, TaskUpdate::new().metadata("step", round * 2 + step))
                        .unwrap()
                        .into_task(),
                );
            }
            let last = last.unwrap();
            let reused = reader.backend().active_cache.reused();
            let listed = active(&reader);
            assert!(listed.contains(&(last.id.clone(), last.revision)));
            assert_eq!(listed.len(), n);
            // Every file was taken from memory but the one just written and
            // (after round 0) the one written in the round before: that was
            // read while its status had not settled.
            let expected = if round == 0 { n - 1 } else { n - 2 };
            assert_eq!(
                reader.backend().active_cache.reused(),
                reused + expected as u64,
                "round {round}"
            );
            settle(&reader);
        }
        // Every file replaced, then left to settle before the next listing:
        // the new statuses are trusted, and differ from those in memory.
        let last: Vec<_> = ids
            .iter()
            .map(|id| {
                let t = writer
                    .update(id, TaskUpdate::new().metadata("settled", true))
                    .unwrap()
                    .into_task();
                (t.id, t.revision)
            })
            .collect();
        settle(&reader);
        let mut last = last;
        last.sort();
        assert_eq!(active(&reader), last);
    }

    #[test]
    fn after_a_write_only_the_files_not_provably_unchanged_are_read() {
        only_changed_files_are_read(5);
        only_changed_files_are_read(40);
    }

    #[test]
    fn a_corrupt_file_is_set_aside_and_never_cached() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        store.create(NewTask::new()).unwrap();
        let bad = TaskId::new();
        std::fs::write(dir.path().join("active").join(format!("{bad}.json")), b"{").unwrap();
        settle(&store);
        assert_eq!(active(&store).len(), 1);
        assert!(store.path().join("quarantine").read_dir().unwrap().count() > 0);
        settle(&store);
        assert_eq!(active(&store).len(), 1);
        assert_eq!(active(&store).len(), 1);
        assert!(store.backend().active_cache.hits() > 0);
    }

    fn stamp(ctime: (i64, i64)) -> Stamp {
        Stamp {
            dev: 1,
            ino: 2,
            size: 4096,
            nlink: 2,
            mtime: ctime,
            ctime,
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

    #[test]
    fn a_snapshot_is_whole_only_at_its_settled_directory_status() {
        let cache = ActiveCache::default();
        let s = stamp((1_000, 1));
        cache.put(None, Arc::new([]), 0);
        assert!(
            cache.get(None).is_none(),
            "an unsettled directory is never whole"
        );
        assert!(cache.get(Some(s)).is_none());
        assert!(cache.last().is_some(), "its files may still be reused");
        cache.put(Some(s), Arc::new([]), 0);
        assert!(cache.get(Some(s)).is_some());
        assert!(cache.get(Some(stamp((1_000, 2)))).is_none());
        cache.put(Some(s), Arc::new([]), MAX_CACHED_BYTES + 1);
        assert!(cache.get(Some(s)).is_none(), "too large: not kept");
        assert!(cache.last().is_none());
    }
}
