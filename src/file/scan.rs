//! Scans: the running tasks from a handle's snapshot of `active/`, history
//! from `done/`.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::Arc;

use crate::backend::{Scan, Scanned, Scope, Skipped};
use crate::error::Result;
use crate::file::active_cache::{ActiveCache, Entry, Stamp};
use crate::file::layout::Area;
use crate::file::read::newer;
use crate::file::{FileBackend, codec, recovery};
use crate::id::TaskId;
use crate::task::Task;

impl FileBackend {
    /// One batch of a scan: the running tasks from the snapshot of
    /// `active/`; with [`Scope::All`], the finished ones read from `done/`.
    pub(super) fn scan_tasks(&self, scan: &Scan) -> Result<Scanned> {
        let (entries, mut skipped) = self.active_tasks()?;
        let mut picked: Vec<&Task> = Vec::new();
        let mut history: HashMap<TaskId, Task> = HashMap::new();
        if scan.scope == Scope::All {
            let (names, foreign) = recovery::entries(self, Area::Done)?;
            skipped.extend(foreign);
            for (id, name) in names {
                match self.read_task(self.dir(Area::Done), &name, &id) {
                    Ok(Some(task)) => {
                        history.insert(id, task);
                    }
                    Ok(None) => {} // removed since the directory was read
                    Err(e) => skipped.push(recovery::set_aside_task(self, Area::Done, &id, e)),
                }
            }
            // A task in both areas (a terminal move under way, or one a power
            // loss interrupted) is listed once, by the read rule.
            for entry in entries.iter() {
                match history.get(&entry.task.id) {
                    Some(done) if newer(done, &entry.task) => {}
                    _ => picked.push(&entry.task),
                }
            }
            let active: HashSet<&TaskId> = picked.iter().map(|t| &t.id).collect();
            let shadowed: Vec<TaskId> = history
                .keys()
                .filter(|id| active.contains(id))
                .cloned()
                .collect();
            for id in shadowed {
                history.remove(&id);
            }
            picked.extend(history.values());
        } else {
            picked.extend(entries.iter().map(|e| &e.task));
        }
        picked.retain(|t| scan.matches(t) && scan.is_after(t));
        picked.sort_unstable_by(|a, b| Task::listing_order(a, b));
        picked.truncate(scan.limit);
        let tasks = picked.into_iter().cloned().collect();
        Ok(Scanned::new(tasks, skipped))
    }

    /// Every task in `active/`, and the files that could not be read.
    ///
    /// Served whole from this handle's snapshot while `active/` is provably
    /// unchanged since it was taken; otherwise only the files that are not
    /// provably unchanged are read (see `active_cache`).
    pub(super) fn active_tasks(&self) -> Result<(Arc<[Entry]>, Vec<Skipped>)> {
        let before = ActiveCache::clock();
        let active = self.dir(Area::Active);
        let (status, dir) = ActiveCache::observe(&self.fs, active, before)?;
        if let Some(entries) = self.active_cache.get(dir) {
            return Ok((entries, Vec::new()));
        }
        let (listed, mut skipped) = self.list_active_files(status)?;
        let last = self.active_cache.last();
        let known: HashMap<&TaskId, &Entry> = last
            .iter()
            .flat_map(|entries| entries.iter())
            .map(|e| (&e.task.id, e))
            .collect();
        let mut entries = Vec::new();
        for (id, name) in listed {
            // The file's status before any read: the bytes read are at
            // least as new.
            let stamp = match self.fs.stat(active, &name) {
                Ok(status) => Stamp::settled(&status, before),
                // Removed since the directory was read.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                // The read below reports it.
                Err(_) => None,
            };
            if let Some(old) = known
                .get(&id)
                .filter(|e| stamp.is_some() && e.stamp == stamp)
            {
                self.active_cache.reuse();
                entries.push((*old).clone());
                continue;
            }
            let path = active.join(&name);
            let read = self.read_bytes(active, &name).and_then(|read| {
                read.map(|bytes| {
                    codec::unwrap(&bytes, &path, &id).map(|task| Entry {
                        stamp,
                        bytes: bytes.len(),
                        task,
                    })
                })
                .transpose()
            });
            match read {
                Ok(Some(entry)) => entries.push(entry),
                // Removed since the directory was read.
                Ok(None) => {}
                Err(e) => skipped.push(recovery::set_aside_task(self, Area::Active, &id, e)),
            }
        }
        let bytes = entries.iter().map(|e| e.bytes).sum();
        let entries: Arc<[Entry]> = entries.into();
        if skipped.is_empty() {
            self.active_cache.put(dir, entries.clone(), bytes);
        } else {
            self.active_cache.clear();
        }
        Ok((entries, skipped))
    }

    /// The task files in `active/` (foreign names set aside), given the
    /// directory's status read before.
    ///
    /// A file renamed over while a `readdir` is under way may be missing
    /// from it: tmpfs (Linux 6.6 and later) gives the new entry a new place
    /// in the directory, behind the reader. So while the directory changed
    /// during a pass, it is read again and the passes' names are joined (a
    /// name gone by then reads as removed). Bounded: a task renamed over
    /// during every pass can still be missed.
    fn list_active_files(&self, mut status: Option<Stamp>) -> Result<recovery::Entries> {
        const PASSES: usize = 4;
        let dir = self.dir(Area::Active);
        let (mut listed, mut skipped) = recovery::entries(self, Area::Active)?;
        for _ in 1..PASSES {
            let (now, _) = ActiveCache::observe(&self.fs, dir, ActiveCache::clock())?;
            if now.is_none() || now == status {
                break;
            }
            status = now;
            let mut seen: HashSet<TaskId> = listed.iter().map(|(id, _)| id.clone()).collect();
            let (more, foreign) = recovery::entries(self, Area::Active)?;
            skipped.extend(foreign);
            for (id, name) in more {
                if seen.insert(id.clone()) {
                    listed.push((id, name));
                }
            }
        }
        Ok((listed, skipped))
    }
}
