//! The write path: temp file, fsync, rename, directory fsync; terminal
//! moves; removals. Every function here is called with the task's stripe
//! lock held.

use std::ffi::{OsStr, OsString};
use std::io;

use crate::backend::{Record, Swap, is_current};
use crate::error::{Error, Result};
use crate::file::fs::{Dir, Fs};
use crate::file::group::Before;
use crate::file::layout::{Area, expiring_name, stripe, task_name, temp_name};
use crate::file::lock::{self, BatchHold};
use crate::file::stamp::{self, Stamp};
use crate::file::unread::Unnoticed;
use crate::file::watch::Change;
use crate::file::{Durability, FileBackend, Found, codec, parallel, recovery};
use crate::id::TaskId;
use crate::task::Task;

/// What [`FileBackend::restore_missing_indexes`] did.
pub(super) struct Restored {
    /// How many tasks were given their entry back.
    pub(super) restored: usize,
    /// Each task whose entry could not be given back, with why.
    pub(super) failed: Vec<(TaskId, Error)>,
    /// The fsync that made the entries given back durable.
    pub(super) synced: Result<()>,
}

impl FileBackend {
    /// Writes `record` into `area` atomically and durably: temp file,
    /// (fsync), rename, (fsync directory).
    pub(super) fn write(&self, area: Area, record: &Record) -> Result<()> {
        let before = self.area(area).before();
        self.put(area, record)?;
        self.sync(area, before)
    }

    /// Writes `record` into `area` atomically, without the directory fsync.
    fn put(&self, area: Area, record: &Record) -> Result<()> {
        let id = &record.task().id;
        let bytes = codec::wrap(record.json());
        self.replace_file(id, self.dir(area), &task_name(id), &bytes, self.durability)
    }

    /// Puts `bytes` at `name` in `dir` atomically, over what is there
    /// ([`put_file`] with [`Put::Over`]). No directory fsync.
    pub(super) fn replace_file(
        &self,
        id: &TaskId,
        dir: &Dir,
        name: &OsStr,
        bytes: &[u8],
        durability: Durability,
    ) -> Result<()> {
        put_file(
            &self.fs,
            &self.tmp,
            id,
            (dir, name),
            bytes,
            durability,
            Put::Over,
        )
        .map(drop)
    }

    /// Makes the caller's changes to `area`, begun at `before`, durable
    /// (group commit: threads of this handle share directory fsyncs).
    pub(super) fn sync(&self, area: Area, before: Before) -> Result<()> {
        let dir = self.area(area);
        match self.durability {
            Durability::Immediate => dir
                .sync(&self.fs, before)
                .map_err(|e| Error::io("fsync directory", dir.dir().path(), e)),
            Durability::Eventual => Ok(()),
        }
    }

    /// A record of a batch's changes, made before the first: where the
    /// fsyncs of `active/`, `done/` and `expiring/` stand now.
    pub(super) fn touched(&self) -> Touched {
        Touched {
            before: Befores {
                active: self.active.before(),
                done: self.done.before(),
                expiring: self.expiring.before(),
            },
            active: false,
            done: false,
            expiring: false,
            unindex: Vec::new(),
            moves_settled: false,
        }
    }

    /// Removes task `id`'s name in `area`; `false` if there was none.
    pub(super) fn remove_name(&self, area: Area, id: &TaskId) -> Result<bool> {
        let (dir, name) = (self.dir(area), task_name(id));
        match self.fs.remove(dir, &name) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("remove", dir.join(&name), e)),
        }
    }

    /// Replaces the task `found` by `next`, durably in every directory it
    /// changes, before returning. The caller holds the task's lock.
    pub(super) fn commit(&self, found: &Found, next: &Record) -> Result<()> {
        let mut touched = self.touched();
        let staged = self.stage(found, next, Locking::Held, &mut touched)?;
        self.settle(&[staged], touched, Locking::Held)
    }

    /// Replaces each `current` by its `next`, if it is still that version,
    /// with one fsync per directory for the whole batch: the staged writes
    /// of every task first, then the fsyncs the terminal moves need before
    /// their names in `active/` go, then those names, then `active/`'s
    /// fsync. If an fsync fails, every write it covered reports it. A
    /// terminal move whose stripe another process took between the halves
    /// (and holds, stopped) is durable and reported written all the same,
    /// its move left for later ([`settle`](Self::settle)).
    ///
    /// A batch of one holds the task's lock throughout, as a `modify` does.
    pub(super) fn replace_batch(&self, swaps: &[(Task, Record)]) -> Vec<Result<Swap>> {
        if let [(current, next)] = swaps {
            return vec![self.replace_one(current, next)];
        }
        // Terminal moves leave each task with names in both areas between
        // the halves, when the batch holds none of their stripes: the
        // batches lock is held throughout, so that a check judges settled
        // state.
        let moves = swaps
            .iter()
            .any(|(current, next)| !current.is_terminal() && next.task().is_terminal());
        let _hold = match moves.then(|| self.locks.hold_batch(&self.fs)).transpose() {
            Ok(hold) => hold,
            Err(e) => {
                return swaps
                    .iter()
                    .map(|_| Err(e.for_each_of("write", &self.root)))
                    .collect();
            }
        };
        // Each task staged under its own lock, side by side when there are
        // many (each stage writes and fsyncs a file: a renewal of thousands
        // of leases waits on as many fsyncs), each with its own record of
        // what it touched, all settled together below. First every task
        // whose stripe no one holds, then those whose stripe another held,
        // waited for: a stripe held for long (by a process stopped while it
        // holds it) holds up no other task's write.
        // Once one wait for a held stripe ran out, the others are tried
        // for moments only: a pass waits its `stripe_wait` once.
        let pass = lock::Pass::default();
        let stage = |(current, next): &(Task, Record), wait: bool| {
            let mut touched = self.touched();
            let mut staged = None;
            let guard = if wait {
                self.locks
                    .lock_in(&self.fs, stripe(&current.id), Some(&pass))
                    .map(Some)
            } else {
                self.locks.try_lock(&self.fs, stripe(&current.id))
            };
            let result = match guard {
                Ok(None) => return None,
                Ok(Some(_guard)) => match self.find(&current.id) {
                    Ok(Some(found)) if is_current(&found.task, current) => self
                        .stage(&found, next, Locking::Take, &mut touched)
                        .map(|one| {
                            staged = Some(one);
                            Swap::Done
                        }),
                    Ok(found) => Ok(Swap::Changed(found.map(|f| f.task))),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            Some((result, staged, touched))
        };
        let mut staging = parallel::map_io(swaps, |swap| stage(swap, false));
        let held: Vec<usize> = (0..swaps.len())
            .filter(|&at| staging[at].is_none())
            .collect();
        for (at, one) in held
            .iter()
            .zip(parallel::map_io(&held, |&at| stage(&swaps[at], true)))
        {
            staging[*at] = one;
        }
        let mut touched: Option<Touched> = None;
        let mut staged = Vec::new();
        let mut results = Vec::with_capacity(swaps.len());
        for (result, one, theirs) in staging.into_iter().map(|one| one.expect("waited for")) {
            results.push(result);
            staged.extend(one);
            match touched.as_mut() {
                Some(touched) => touched.absorb(theirs),
                None => touched = Some(theirs),
            }
        }
        let touched = touched.unwrap_or_else(|| self.touched());
        if let Err(e) = self.settle(&staged, touched, Locking::Take) {
            for result in &mut results {
                if matches!(result, Ok(Swap::Done)) {
                    *result = Err(e.for_each_of("make durable the write of", &self.root));
                }
            }
        }
        results
    }

    /// Replaces `current` by `next` if it is still that version, under its
    /// lock from the read to the last fsync.
    ///
    /// A running task the snapshot proves unchanged is not read again (see
    /// [`proven_running`](Self::proven_running); no copy in `done/` to look
    /// for unless `open` left one).
    fn replace_one(&self, current: &Task, next: &Record) -> Result<Swap> {
        let _guard = self.locks.lock(&self.fs, stripe(&current.id))?;
        let proven = !current.is_terminal()
            && !self.unresolved.may_have_two(&current.id)
            && self.proven_running(current, &mut false)?;
        let found = if proven {
            Some(Found {
                task: current.clone(),
                area: Area::Active,
                stale: None,
            })
        } else {
            self.find(&current.id)?
        };
        match found {
            Some(found) if is_current(&found.task, current) => {
                self.commit(&found, next)?;
                Ok(Swap::Done)
            }
            found => Ok(Swap::Changed(found.map(|f| f.task))),
        }
    }

    /// The first half of a write of `next` over `found` (its lock held):
    /// the new version in place, readers see it at once. A running task is
    /// written over its file in `active/`. A terminal version of a running
    /// task is written over its file in `active/` too, then given its names
    /// in `expiring/` (if it has a TTL) and `done/` (hard links, so it
    /// never lacks a name); [`settle`](Self::settle) removes the name in
    /// `active/` once those are durable.
    fn stage(
        &self,
        found: &Found,
        next: &Record,
        locking: Locking,
        touched: &mut Touched,
    ) -> Result<Staged> {
        // A stale copy in the other area goes first: the move below gives
        // the task its name there.
        self.drop_stale(found)?;
        let task = next.task();
        match (found.area, Area::of(task)) {
            (Area::Active, Area::Done) => {
                let park = self.put_parked(next)?;
                self.link_into_done(task, park, locking, touched)
            }
            (Area::Active, Area::Active) => {
                let park = self.put_parked(next)?;
                touched.active = true;
                Ok(Staged::Written { park })
            }
            (from, to) if from == to => {
                self.put(to, next)?;
                touched.mark(to);
                Ok(Staged::Written { park: None })
            }
            (from, to) => {
                // A terminal task made running again: never done by the
                // rules, but a backend stores what it is given.
                self.put(to, next)?;
                touched.mark(to);
                if self.remove_name(from, &task.id)? {
                    touched.mark(from);
                }
                Ok(Staged::Written { park: None })
            }
        }
    }

    /// Writes `next` over its task's file in `active/`, which is parked
    /// first (see `park`): until the new version is durable, a power loss
    /// leaves the old file or the new one under the name, never a freed
    /// one. The caller unparks it once the new version is durable.
    fn put_parked(&self, next: &Record) -> Result<Option<OsString>> {
        let park = self.park(&next.task().id)?;
        match self.put(Area::Active, next) {
            Ok(()) => Ok(park),
            Err(e) => {
                // The old file keeps its name: nothing to guard.
                if let Some(park) = park {
                    self.unpark_refused(park);
                }
                Err(e)
            }
        }
    }

    /// Gives the terminal `task`, whose file is `active/<id>.json`, its
    /// names in `expiring/` (with a TTL) and `done/`. Under `Immediate`, the
    /// name in `done/` of a task with an `expiring/` entry is left to
    /// [`settle`](Self::settle), which gives it once the entry is durable:
    /// a power loss never leaves a finished task without the entry that
    /// gets it swept.
    fn link_into_done(
        &self,
        task: &Task,
        park: Option<OsString>,
        locking: Locking,
        touched: &mut Touched,
    ) -> Result<Staged> {
        let name = task_name(&task.id);
        let (active, done) = (self.dir(Area::Active), self.dir(Area::Done));
        // Which file is being moved, for `settle` to see it still is after
        // taking the lock again (holding it, nothing else can move it).
        let ino = match locking {
            Locking::Take => {
                let file = self
                    .fs
                    .stat(active, &name)
                    .map_err(|e| Error::io("stat", active.join(&name), e))?;
                Some((file.dev, file.ino))
            }
            Locking::Held => None,
        };
        let mut linked = true;
        let index = expiring_name(task);
        if let Some(index) = &index {
            self.link_over(&task.id, (active, &name), (self.expiring.dir(), index))?;
            touched.expiring = true;
            linked = self.durability != Durability::Immediate;
        }
        if linked {
            self.link_over(&task.id, (active, &name), (done, &name))?;
            touched.done = true;
        }
        Ok(Staged::Moving {
            id: task.id.clone(),
            ino,
            linked,
            index,
            park,
        })
    }

    /// The second half of the staged writes: `expiring/` and `done/` made
    /// durable, then each moved task's name in `active/` removed (if it is
    /// still that file), then `active/` made durable if a running task was
    /// written there.
    ///
    /// Under the strictest model of a power loss (each directory's changes
    /// durable only by its own fsync, a rename across directories two
    /// independent halves, a file freed before the removal of its last name
    /// is durable) every crash leaves a moving task in `active/`, in `done/`
    /// or in both, never in neither, and never in `done/` without its index
    /// entry; once this returns, the terminal version is durably in `done/`,
    /// or, where its file was not seen there (a look that failed, another
    /// handle's change), durably in `active/` (final by the read rule).
    ///
    /// With [`Locking::Take`], a task whose stripe cannot be taken again
    /// (another process took it since the stage, and is stopped while it
    /// holds it, say) is settled as far as no lock is needed, and its
    /// move left as a crash would leave it, for the next write of the task,
    /// open or sweep to finish: durably in `done/` if this settle gave it
    /// its name there (beside its name in `active/`), else durably in
    /// `active/` alone, final by the read rule either way. The other
    /// stripes' tasks are settled in full, the batch waiting its
    /// `stripe_wait` once however many stripes are held.
    fn settle(&self, staged: &[Staged], mut touched: Touched, locking: Locking) -> Result<()> {
        // `None`: the task's stripe could not be taken (tried once per
        // stripe).
        let pass = lock::Pass::default();
        let mut untaken = std::collections::BTreeSet::new();
        let mut lock = |id: &TaskId| match locking {
            Locking::Held => Some(None),
            Locking::Take => {
                let stripe = stripe(id);
                if untaken.contains(&stripe) {
                    return None;
                }
                match self.locks.lock_in(&self.fs, stripe, Some(&pass)) {
                    Ok(guard) => Some(Some(guard)),
                    Err(e) => {
                        tracing::warn!(task = %id, error = %e, "cannot take a task's lock again to finish its terminal move; left to the task's next write, open or sweep");
                        untaken.insert(stripe);
                        None
                    }
                }
            }
        };
        // Whether this settle gave each moving task its name in `done/`.
        let mut in_done: Vec<bool> = staged
            .iter()
            .map(|s| matches!(s, Staged::Moving { linked: true, .. }))
            .collect();
        // Only while `active/<id>.json` is still the file being moved (not
        // finished by another handle meanwhile, nor a new task of the id).
        // Its inode number alone cannot tell: deleted meanwhile (which
        // removes the second name the move gave it), the file is freed, and
        // a new task of the id may get the number back. The second name
        // holds the file: while it is there, no other file has the number.
        let same = |dir: &Dir, name: &OsStr, ino: (u64, u64)| {
            self.fs
                .stat(dir, name)
                .is_ok_and(|file| (file.dev, file.ino) == ino)
        };
        let still = |staged: &Staged| {
            let Staged::Moving {
                id,
                ino: Some(ino),
                linked,
                index,
                ..
            } = staged
            else {
                return true;
            };
            let name = task_name(id);
            let second = match (linked, index) {
                (false, Some(index)) => same(self.expiring.dir(), index, *ino),
                _ => same(self.dir(Area::Done), &name, *ino),
            };
            second && same(self.dir(Area::Active), &name, *ino)
        };
        let unlinked = staged
            .iter()
            .any(|s| matches!(s, Staged::Moving { linked: false, .. }));
        if unlinked {
            // The `expiring/` entries first, then the names in `done/`.
            self.sync_links(&Touched {
                expiring: touched.expiring,
                before: touched.before,
                ..self.touched()
            })?;
            touched.expiring = false;
            for (at, staged) in staged.iter().enumerate() {
                let Staged::Moving {
                    id,
                    linked: false,
                    ino,
                    ..
                } = staged
                else {
                    continue;
                };
                let Some(_guard) = lock(id) else {
                    // Whoever holds it may have finished the move, as
                    // below, without an fsync: `done/` is made durable all
                    // the same.
                    touched.done = true;
                    continue;
                };
                let name = task_name(id);
                if still(staged) {
                    self.link_over(
                        id,
                        (self.dir(Area::Active), &name),
                        (self.dir(Area::Done), &name),
                    )?;
                    touched.done = true;
                    in_done[at] = true;
                } else if ino.is_some_and(|ino| same(self.dir(Area::Done), &name, ino)) {
                    // Another handle finished the move, perhaps without an
                    // fsync (`Eventual`): this batch acknowledges it on the
                    // strength of that name, so makes it durable itself.
                    touched.done = true;
                }
            }
        }
        self.sync_links(&touched)?;
        // Moves whose file was not seen linked into `done/` (a look that
        // failed, or another handle moved or deleted the task meanwhile):
        // their terminal version stays in `active/` (final by the read
        // rule, moved on by a later write or sweep), made durable there.
        let mut kept = Vec::new();
        for (at, staged) in staged.iter().enumerate() {
            let Staged::Moving { id, park, ino, .. } = staged else {
                continue;
            };
            let name = task_name(id);
            let Some(_guard) = lock(id) else {
                // Left for later, its name in `active/` too (a second name
                // of its file, or its only one).
                if in_done[at] {
                    if let Some(park) = park {
                        self.unpark(park.clone());
                    }
                } else {
                    touched.active = true;
                    kept.extend(park.clone());
                }
                continue;
            };
            // In `done/` (the file itself, not just its `expiring/` entry)
            // before its name in `active/` goes: never in neither.
            if ino.is_some_and(|ino| !same(self.dir(Area::Done), &name, ino)) {
                touched.active = true;
                kept.extend(park.clone());
                continue;
            }
            if let Some(park) = park {
                self.unpark(park.clone());
            }
            if still(staged) {
                self.remove_name(Area::Active, id)?;
            }
        }
        // The running tasks written need `active/` durable. A moved task's
        // removal from `active/` does not: if a power loss undoes it, the
        // task is in `active/` (its terminal version, or its previous one,
        // or nothing if that was freed) and durably in `done/`, and a
        // terminal version anywhere is final (the read rule). It becomes
        // durable with the next fsync of `active/`, which comes before its
        // file in `done/` is ever removed (`settle_moves`).
        if touched.active {
            self.sync(Area::Active, touched.before(Area::Active))?;
            for staged in staged {
                if let Staged::Written { park: Some(park) } = staged {
                    self.unpark(park.clone());
                }
            }
            for park in kept {
                self.unpark(park);
            }
        }
        Ok(())
    }

    /// Makes the names given in `expiring/` and `done/` durable (first
    /// `expiring/`: a task in `done/` is never without its index entry).
    fn sync_links(&self, touched: &Touched) -> Result<()> {
        if touched.expiring && self.durability == Durability::Immediate {
            self.expiring
                .sync(&self.fs, touched.before.expiring)
                .map_err(|e| Error::io("fsync directory", self.expiring.dir().path(), e))?;
        }
        if touched.done {
            self.sync(Area::Done, touched.before(Area::Done))?;
        }
        Ok(())
    }

    /// Finishes the terminal move of `task`, whose file is still in
    /// `active/` (the caller holds its lock).
    pub(super) fn move_to_done(&self, task: &Task) -> Result<()> {
        let mut touched = self.touched();
        let staged = self.link_into_done(task, None, Locking::Held, &mut touched)?;
        self.settle(&[staged], touched, Locking::Held)
    }

    /// Gives the file `from` in `from_dir` the name `to` in `to_dir`,
    /// replacing a stale file there (one the read rule already overruled,
    /// an index entry of an earlier move of the same file, or a copy). The
    /// caller holds task `id`'s lock (or the store alone).
    ///
    /// A name taken is replaced in one step, never removed first: the file
    /// is linked into `tmp/` under a fresh temp name of the task, renamed
    /// over `to`. So a power loss leaves `to` naming the old file or the
    /// new one, never neither (a finished task without its `expiring/`
    /// entry, which no sweep would find). Under `Immediate` the old file is
    /// parked first (see `park`: freed, its name could be cleared before
    /// the rename is durable), and `to_dir` is made durable before the park
    /// goes. A temp name a crash leaves in `tmp/` is a temp file like any
    /// other, which `open` and every sweep remove.
    pub(super) fn link_over(
        &self,
        id: &TaskId,
        (from_dir, from): (&Dir, &OsStr),
        (to_dir, to): (&Dir, &OsStr),
    ) -> Result<()> {
        let stat = |dir: &Dir, name: &OsStr| self.fs.stat(dir, name).map(|s| (s.dev, s.ino));
        let taken = match self.fs.link(from_dir, from, to_dir, to) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => stat(to_dir, to),
            Err(e) => return Err(Error::io("link into", to_dir.join(to), e)),
        };
        let file = stat(from_dir, from).map_err(|e| Error::io("stat", from_dir.join(from), e))?;
        match taken {
            // That file already (a rename between two names of one file
            // would do nothing, and leave the temp name).
            Ok(taken) if taken == file => return Ok(()),
            Ok(_) => {}
            // Gone since.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return self
                    .fs
                    .link(from_dir, from, to_dir, to)
                    .map_err(|e| Error::io("link into", to_dir.join(to), e));
            }
            Err(e) => return Err(Error::io("stat", to_dir.join(to), e)),
        }
        let before = self.before_of(to_dir);
        let park = self.park_at(id, to_dir, to)?;
        let renamed = with_temp_name(id, |temp| self.fs.link(from_dir, from, &self.tmp, temp))
            .map_err(|(e, temp)| Error::io("link into", self.tmp.join(temp), e))
            .and_then(|((), temp)| {
                self.fs.rename(&self.tmp, &temp, to_dir, to).map_err(|e| {
                    // A second name of the file, no more; a failed removal
                    // is retried by the next open or sweep.
                    let _ = self.fs.remove(&self.tmp, &temp);
                    Error::io("rename into", to_dir.join(to), e)
                })
            });
        if let Err(e) = renamed {
            // The old file keeps its name: nothing to guard.
            if let Some(park) = park {
                self.unpark_refused(park);
            }
            return Err(e);
        }
        // A park a failed fsync leaves is removed as a crash's is.
        self.sync_changed(to_dir, before)?;
        if let Some(park) = park {
            self.unpark(park);
        }
        Ok(())
    }

    /// Gives each finished task of `ids` whose `expiring/` entry is gone (a
    /// power loss under `Eventual` can take it) or a copy (a store copied
    /// without its hard links) its entry again, a link, under its lock,
    /// then (under `Immediate`) makes them durable with one fsync (a copy
    /// replaced makes its own first, before its park goes: `link_over`). A
    /// task moved or changed meanwhile is left as it is. A task whose entry
    /// cannot be given back (its lock not taken: a process stopped while it
    /// holds it; an I/O error) keeps none of the others from theirs; several
    /// tasks are one pass, which waits its `stripe_wait` once. Returns how
    /// many it restored, logged once, each task it could not restore, with
    /// why, and whether the fsync failed: the tasks not restored are said
    /// either way, for a caller to try again.
    pub(super) fn restore_missing_indexes(&self, ids: &[TaskId]) -> Restored {
        let touched = Touched {
            expiring: true,
            ..self.touched()
        };
        // One task alone waits as its caller's calls do (a check's, as one
        // pass).
        let pass = (ids.len() > 1).then(lock::Pass::default);
        let mut restored = 0;
        let mut failed = Vec::new();
        for id in ids {
            let linked = self
                .locks
                .lock_in(&self.fs, stripe(id), pass.as_ref())
                .and_then(|_guard| {
                    let Some(found) = self.find(id)? else {
                        return Ok(false);
                    };
                    if found.area != Area::Done || !self.index_is_missing(&found.task) {
                        return Ok(false);
                    }
                    let Some(index) = expiring_name(&found.task) else {
                        return Ok(false);
                    };
                    self.link_over(
                        id,
                        (self.dir(Area::Done), &task_name(id)),
                        (self.expiring.dir(), &index),
                    )?;
                    Ok(true)
                });
            match linked {
                Ok(true) => {
                    tracing::debug!(task = %id, "gave a finished task its expiring/ entry back");
                    restored += 1;
                }
                Ok(false) => {}
                Err(e) => failed.push((id.clone(), e)),
            }
        }
        // Those linked are made durable whatever became of the others.
        let synced = match restored {
            0 => Ok(()),
            _ => self.sync_links(&touched).inspect(|()| {
                tracing::warn!(store = %self.root.display(), restored, "gave finished tasks their expiring/ entries back (lost to a power loss, or copies)");
            }),
        };
        Restored {
            restored,
            failed,
            synced,
        }
    }

    /// Notes the `expiring/` entry of the finished `task`, if it has one, for
    /// [`sync_touched`](Self::sync_touched) to remove once the task's own
    /// removal is durable. (The entry's name is its incarnation's alone, so
    /// it may go after the task's lock is released.)
    pub(super) fn remove_index(&self, task: &Task, touched: &mut Touched) {
        if let Some(name) = expiring_name(task) {
            touched.unindex.push(name);
        }
    }

    /// Makes the removals recorded in `touched` durable: one fsync per
    /// directory, however many names went. The tasks' names first, then
    /// their `expiring/` entries: a power loss may leave an entry whose task
    /// is gone (stale: the next sweep removes it, or, after a failed fsync
    /// of `done/` on this handle, the first sweep of a handle opened
    /// after it), never a finished task
    /// without its entry (which no sweep would find).
    pub(super) fn sync_touched(&self, touched: &Touched) -> Result<()> {
        if touched.done {
            self.sync(Area::Done, touched.before(Area::Done))?;
        }
        if touched.active {
            self.sync(Area::Active, touched.before(Area::Active))?;
        }
        let mut unindexed = self.touched();
        let removed = parallel::map(&touched.unindex, |name| {
            match self.fs.remove(self.expiring.dir(), name) {
                Ok(()) => true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                // The task is durably gone; its entry is stale, and the
                // next sweep removes it.
                Err(e) => {
                    tracing::warn!(
                        entry = %self.expiring.dir().join(name).display(),
                        error = %e,
                        "cannot remove the index entry of a removed task; the next sweep will"
                    );
                    false
                }
            }
        })
        .contains(&true);
        unindexed.expiring = removed;
        self.sync_links(&unindexed)
    }

    /// Removes the task `found`, and any stale copy of it, and its index
    /// entry (after the file: an entry left behind is stale, harmless).
    /// The caller makes `touched` durable.
    pub(super) fn remove_found(&self, found: &Found, touched: &mut Touched) -> Result<()> {
        self.drop_stale(found)?;
        // A terminal task still in `active/` is a move interrupted, or one
        // between its halves (a batch lets go of each task's lock between
        // them): its file may have its name in `done/` too. The move is
        // finished first, as a write would ([`tidy`](Self::tidy)), and the
        // task removed from `done/`, once its own removal from `active/` is
        // durable too (the move left that to a later fsync).
        let area = if found.area == Area::Active && found.task.is_terminal() {
            self.move_to_done(&found.task)?;
            touched.moves_settled = false;
            Area::Done
        } else {
            found.area
        };
        if area == Area::Done {
            self.settle_moves(touched)?;
        }
        if self.remove_name(area, &found.task.id)? {
            touched.mark(area);
        }
        if area == Area::Done {
            self.remove_index(&found.task, touched);
        }
        Ok(())
    }

    /// Removes `current` without reading it again, if a scan proved it
    /// unchanged: a finished task through its `expiring/` entry (still the
    /// same inode as its file), a running one through the snapshot (still
    /// that version, and the change notices or the file's settled status
    /// say its file has not changed). `Ok(false)`: no proof, read it. The
    /// caller holds the task's lock and makes `touched` durable; `drained`
    /// says whether the change notices were drained since it took the lock
    /// (once is enough: no other writer changes a task of a locked stripe).
    pub(super) fn remove_proven(
        &self,
        current: &Task,
        touched: &mut Touched,
        drained: &mut bool,
    ) -> Result<bool> {
        let name = task_name(&current.id);
        if let Some(index) = self.proofs.take(current) {
            if !self.entry_is_file(&index, &current.id)
                || self.fs.stat(self.dir(Area::Active), &name).is_ok()
            {
                return Ok(false);
            }
            self.settle_moves(touched)?;
            if self.remove_name(Area::Done, &current.id)? {
                touched.mark(Area::Done);
            }
            self.remove_index(current, touched);
            return Ok(true);
        }
        // No `done/` copy needs looking for: `open` resolved every pair it
        // found (a sweep needs a store it can write), a terminal move of
        // this task changes `active/` first (and so the proof), and a
        // create under an expired task's id removes the old one first.
        if current.is_terminal() || !self.proven_running(current, drained)? {
            return Ok(false);
        }
        if self.remove_name(Area::Active, &current.id)? {
            touched.mark(Area::Active);
        }
        Ok(true)
    }

    /// Whether the running task `current` is proven still the version in
    /// `active/` without reading its file: the snapshot holds that version,
    /// and the change notices (drained under the lock, once: `drained`) or
    /// the file's settled status say its file has not changed since. The
    /// caller holds the task's lock.
    fn proven_running(&self, current: &Task, drained: &mut bool) -> Result<bool> {
        let mut state = self.snapshot.lock();
        let watching = state.complete && state.watch.is_some();
        if watching && !*drained {
            self.refresh(&mut state)?;
            *drained = true;
        }
        // A drain may have found the watch lost.
        let watching = state.complete && state.watch.is_some();
        Ok(match state.get(&current.id) {
            Some((slot, entry))
                if slot.created_at() == current.created_at.into()
                    && entry.revision == current.revision =>
            {
                watching
                    || entry.stamp().is_some_and(|stamp| {
                        self.fs
                            .stat(self.dir(Area::Active), &task_name(&current.id))
                            .ok()
                            .and_then(|s| Stamp::settled(&s, stamp::clock()))
                            == Some(stamp)
                    })
            }
            _ => false,
        })
    }

    /// Makes `active/` durable before the first removal of a finished
    /// task's file from `done/` in this batch (`Durability::Immediate`).
    /// A terminal move leaves its removal from `active/` to a later fsync;
    /// were the file in `done/` durably gone first, a power loss could leave
    /// the task in `active/` alone, running again. The caller holds the
    /// task's lock, or waited for it after it read the task
    /// ([`settle_moves_of`](Self::settle_moves_of)): every move of the
    /// task it removes is over.
    fn settle_moves(&self, touched: &mut Touched) -> Result<()> {
        if !touched.moves_settled && self.durability == Durability::Immediate {
            self.settle_active()?;
            touched.moves_settled = true;
        }
        Ok(())
    }

    /// [`settle_moves`](Self::settle_moves) once for a batch that may remove
    /// finished tasks, before the first: with `wait`, after taking and
    /// letting go each of their stripes' locks (in stripe order), so that
    /// every move of them that was under way when they were read is over.
    /// A stripe whose lock cannot be taken (another process stopped while
    /// it holds it, say) is left out, with its error: the batch removes
    /// none of its tasks, and each of them reports that error, while the
    /// other stripes' tasks go.
    fn settle_moves_of(&self, tasks: &[Task], wait: bool) -> Result<(Touched, Untaken)> {
        let mut touched = self.touched();
        let mut untaken = Untaken::new();
        let terminal: std::collections::BTreeSet<usize> = tasks
            .iter()
            .filter(|task| task.is_terminal())
            .map(|task| stripe(&task.id))
            .collect();
        if !terminal.is_empty() {
            if wait {
                let pass = lock::Pass::default();
                for stripe in terminal {
                    if let Err(e) = self.locks.lock_in(&self.fs, stripe, Some(&pass)).map(drop) {
                        untaken.insert(stripe, e);
                    }
                }
                if tasks
                    .iter()
                    .any(|task| task.is_terminal() && !untaken.contains_key(&stripe(&task.id)))
                {
                    self.settle_moves(&mut touched)?;
                }
            } else {
                self.settle_moves_once(&mut touched)?;
            }
        }
        Ok((touched, untaken))
    }

    /// [`settle_moves`](Self::settle_moves), the caller holding every
    /// stripe, unless no name changed in `active/` since the last time this
    /// handle made it durable so: every terminal move ends with an unlink
    /// there, which the handle's watch notices (no one else can unlink
    /// there while every stripe is held, so none goes unnoticed), and a
    /// move under way then was over (its stripe was held). The notices are
    /// drained first; with no complete snapshot kept by a live watch,
    /// `active/` is made durable. So a sweep's batches of finished tasks
    /// make it durable once, not once per batch, while nothing moves.
    pub(super) fn settle_moves_once(&self, touched: &mut Touched) -> Result<()> {
        if touched.moves_settled || self.durability != Durability::Immediate {
            return Ok(());
        }
        let mark = {
            let mut state = self.snapshot.lock();
            if state.complete && state.watch.is_some() {
                self.refresh(&mut state)?;
            }
            state
                .watch
                .as_ref()
                .filter(|_| state.complete)
                .map(|watch| watch.mark())
        };
        let mut settled = self
            .moves_settled_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if mark.is_some() && *settled == mark {
            touched.moves_settled = true;
            return Ok(());
        }
        self.settle_moves(touched)?;
        *settled = mark;
        Ok(())
    }

    /// Removes each of `tasks` that is still the version given, under its
    /// lock, then makes every removal durable at once: one fsync per
    /// directory for the batch. If those fsyncs fail, every removal they
    /// covered reports it.
    ///
    /// A large batch (a sweep's) takes every stripe's lock once, in stripe
    /// order, and removes the tasks in the order given (a sweep gives them
    /// in listing order, about the order their files were made, in which
    /// ext4 frees them faster than in any other), spread over the cores.
    /// Writers wait for the batch.
    ///
    /// One task is removed under its lock to the last fsync, as a `modify`
    /// does. Several (the expired tasks a read met) are left to the sweep
    /// while a check of the store holds the batches lock: a reader never
    /// waits for one.
    pub(super) fn remove_batch(&self, tasks: &[Task]) -> Vec<Result<Swap>> {
        if let [task] = tasks {
            return vec![self.remove_single(task)];
        }
        let _hold = match self.hold_removals(tasks, false) {
            Ok(hold) => hold,
            Err(failed) => return failed,
        };
        let (results, touched) = self.remove_unsettled(tasks);
        self.settle_removals(results, &touched)
    }

    /// Removes `current` if it is still that version, under its lock until
    /// the removal (and its index entry's) is durable.
    fn remove_single(&self, current: &Task) -> Result<Swap> {
        let _guard = self.locks.lock(&self.fs, stripe(&current.id))?;
        let mut touched = self.touched();
        let swap = self.remove_locked(current, &mut touched, &mut false)?;
        match (self.sync_touched(&touched), swap) {
            (Err(e), Swap::Done) => Err(e),
            (_, swap) => Ok(swap),
        }
    }

    /// The batches lock, held shared by a batch that may remove finished
    /// tasks: it removes their `expiring/` entries only once their files'
    /// removals are durable, when it holds none of their stripes. `None`
    /// for running tasks alone; `Err`, one error per task, if it cannot be
    /// taken, or (unless `wait`) while a check holds it.
    fn hold_removals(
        &self,
        tasks: &[Task],
        wait: bool,
    ) -> std::result::Result<Option<BatchHold>, Vec<Result<Swap>>> {
        if !tasks.iter().any(Task::is_terminal) {
            return Ok(None);
        }
        let hold = if wait {
            self.locks.hold_batch(&self.fs).map(Some)
        } else {
            self.locks.try_hold_batch(&self.fs).and_then(|hold| {
                hold.map(Some).ok_or_else(|| {
                    Error::io(
                        "lock",
                        self.locks.batches_path(),
                        io::Error::new(
                            io::ErrorKind::WouldBlock,
                            "a check of the store holds it: left for the sweep",
                        ),
                    )
                })
            })
        };
        hold.map_err(|e| {
            tasks
                .iter()
                .map(|_| Err(e.for_each_of("remove", &self.root)))
                .collect()
        })
    }

    /// [`remove_batch`](Self::remove_batch) for expired tasks: what the
    /// removals changed is made durable by
    /// [`settle_expired_removals`](Self::settle_expired_removals), once for
    /// a whole sweep.
    pub(super) fn remove_expired_batch(&self, tasks: &[Task]) -> Vec<Result<Swap>> {
        let hold = match self.hold_removals(tasks, true) {
            Ok(hold) => hold,
            Err(failed) => return failed,
        };
        let (results, touched) = self.remove_unsettled(tasks);
        self.defer_removals(touched, hold.as_ref());
        results
    }

    /// Leaves what removals of expired tasks touched to be made durable by
    /// [`settle_expired_removals`](Self::settle_expired_removals). Index
    /// entries left to remove keep the batches lock held until then
    /// (`hold`, the caller's, which holds it while it removes them).
    pub(super) fn defer_removals(&self, touched: Touched, hold: Option<&BatchHold>) {
        let mut pending = self
            .pending_removals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let hold = hold.filter(|_| !touched.unindex.is_empty());
        match pending.as_mut() {
            Some(pending) => {
                pending.touched.absorb(touched);
                // A hold that holds the lock over one that does not (an
                // earlier batch went on without it).
                if !pending.hold.as_ref().is_some_and(BatchHold::counts) {
                    pending.hold = hold.cloned().or(pending.hold.take());
                }
            }
            None => {
                *pending = Some(PendingRemovals {
                    touched,
                    hold: hold.cloned(),
                });
            }
        }
    }

    /// Makes durable every removal of expired tasks this handle has made.
    /// The pending changes are held while they are made durable (a second
    /// caller waits rather than return before they are), and kept if that
    /// fails, for the next call, which does not fail for the same fsync.
    pub(super) fn settle_expired_removals(&self) -> Result<()> {
        let mut pending = self
            .pending_removals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(PendingRemovals { touched, hold }) = pending.as_mut()
            && let Err(e) = self.sync_touched(touched)
        {
            // What is left is a problem `verify` may report, not a batch
            // under way.
            *hold = None;
            // Reported once: the next call makes them durable again, as
            // changes made from now. The failed fsync may have lost the
            // removals (the files come back after a power loss, expired,
            // and a later sweep deletes them again), so their `expiring/`
            // entries stay: without them a finished task come back would
            // never be swept. An entry whose file is durably gone is stale,
            // and a handle opened after this one removes it (this one keeps
            // every such entry: `drop_stale_indexes`).
            touched.before = self.touched().before;
            touched.unindex.clear();
            return Err(e);
        }
        *pending = None;
        Ok(())
    }

    /// [`remove_batch`](Self::remove_batch) but for making its removals
    /// durable: the results, and what the removals changed.
    fn remove_unsettled(&self, tasks: &[Task]) -> (Vec<Result<Swap>>, Touched) {
        let all = if tasks.len() >= self.large_pass {
            self.locks.lock_all(&self.fs).ok()
        } else {
            None
        };
        let (settled, untaken) = match self.settle_moves_of(tasks, all.is_none()) {
            Ok((touched, untaken)) => (touched.moves_settled, untaken),
            Err(e) => {
                let results = tasks
                    .iter()
                    .map(|_| Err(e.for_each_of("remove", &self.root)))
                    .collect();
                return (results, self.touched());
            }
        };
        let (results, touched) = match all {
            Some(_guards) => {
                // While this batch holds every stripe, the only unlinks in
                // `active/` are its own (as in `remove_unread`): the watch
                // need not queue them, and the removed tasks' entries go
                // below.
                let unnoticed = Unnoticed::start(self);
                let shares = parallel::shares(
                    tasks,
                    |_, _| false,
                    |share| {
                        let mut touched = Touched {
                            moves_settled: settled,
                            ..self.touched()
                        };
                        let mut drained = false;
                        let results: Vec<Result<Swap>> = share
                            .iter()
                            .map(|task| self.remove_locked(task, &mut touched, &mut drained))
                            .collect();
                        (results, touched)
                    },
                );
                let mut touched = self.touched();
                let mut results = Vec::with_capacity(tasks.len());
                for (share, share_touched) in shares {
                    touched.absorb(share_touched);
                    results.extend(share);
                }
                // A task removed is gone from every area, and no one can
                // write it again before the stripes go: its entry goes now,
                // with no notice to come.
                let gone = tasks
                    .iter()
                    .zip(&results)
                    .filter(|(_, result)| matches!(result, Ok(Swap::Done)))
                    .map(|(task, _)| (task_name(&task.id), Change::Gone))
                    .collect();
                self.revise(&mut self.snapshot.lock(), gone);
                drop(unnoticed);
                (results, touched)
            }
            None => self.remove_by_stripe(tasks, settled, &untaken),
        };
        (results, touched)
    }

    /// [`remove_batch`](Self::remove_batch) one stripe at a time: the batch
    /// in stripe order, each stripe's lock taken once for all of its tasks
    /// (a failed lock is tried again per task, so that each reports its own
    /// error). The tasks of a stripe in `untaken` are not tried: each
    /// reports the error its lock gave.
    fn remove_by_stripe(
        &self,
        tasks: &[Task],
        settled: bool,
        untaken: &Untaken,
    ) -> (Vec<Result<Swap>>, Touched) {
        let mut touched = Touched {
            moves_settled: settled,
            ..self.touched()
        };
        let mut order: Vec<(usize, usize)> = tasks
            .iter()
            .enumerate()
            .map(|(at, task)| (stripe(&task.id), at))
            .collect();
        order.sort_unstable();
        let mut results: Vec<Option<Result<Swap>>> = tasks.iter().map(|_| None).collect();
        let pass = lock::Pass::default();
        for group in order.chunk_by(|a, b| a.0 == b.0) {
            if let Some(e) = untaken.get(&group[0].0) {
                for &(_, at) in group {
                    results[at] = Some(Err(e.for_each_of("remove", &self.root)));
                }
                continue;
            }
            let guard = self.locks.lock_in(&self.fs, group[0].0, Some(&pass));
            let mut drained = false;
            for &(stripe, at) in group {
                let result = match &guard {
                    Ok(_) => self.remove_locked(&tasks[at], &mut touched, &mut drained),
                    // Held by another for the whole wait: tried again, it
                    // would only wait again.
                    Err(e) if lock::ran_out(e) => Err(e.for_each_of("remove", &self.root)),
                    Err(_) => self.locks.lock(&self.fs, stripe).and_then(|_guard| {
                        self.remove_locked(&tasks[at], &mut touched, &mut false)
                    }),
                };
                results[at] = Some(result);
            }
        }
        let results = results
            .into_iter()
            .map(|result| result.expect("every task is in one stripe's group"))
            .collect();
        (results, touched)
    }

    /// Makes a batch's removals durable; if that fails, every removal it
    /// covered reports it.
    fn settle_removals(
        &self,
        mut results: Vec<Result<Swap>>,
        touched: &Touched,
    ) -> Vec<Result<Swap>> {
        if let Err(e) = self.sync_touched(touched) {
            for result in &mut results {
                if matches!(result, Ok(Swap::Done)) {
                    *result = Err(e.for_each_of("make durable the removal of", &self.root));
                }
            }
        }
        results
    }

    /// Removes `current` if it is still that version; the caller holds its
    /// lock and makes `touched` durable (`drained`: as `remove_proven`).
    fn remove_locked(
        &self,
        current: &Task,
        touched: &mut Touched,
        drained: &mut bool,
    ) -> Result<Swap> {
        if self.remove_proven(current, touched, drained)? {
            return Ok(Swap::Done);
        }
        match self.find(&current.id)? {
            Some(found) if is_current(&found.task, current) => {
                self.remove_found(&found, touched)?;
                Ok(Swap::Done)
            }
            found => Ok(Swap::Changed(found.map(|f| f.task))),
        }
    }

    /// Removes the stale copy beside `found`, if there is one: unlinked if
    /// it reads as a task, set aside if it is damaged.
    pub(super) fn drop_stale(&self, found: &Found) -> Result<()> {
        let Some(stale) = found.stale else {
            return Ok(());
        };
        let id = &found.task.id;
        let before = self.area(stale.area).before();
        let gone = if stale.readable {
            let removed = self.remove_name(stale.area, id)?;
            if removed {
                self.sync(stale.area, before)?;
            }
            removed
        } else {
            // Made durable by the move itself (`recovery::move_aside`).
            matches!(
                recovery::set_aside_locked(
                    self,
                    stale.area,
                    id,
                    "a damaged copy of a task whose other copy is readable",
                )?,
                recovery::Moved::Aside(_)
            )
        };
        if gone {
            tracing::info!(task = %id, area = stale.area.name(), "removed a stale copy left by an interrupted terminal move");
        }
        Ok(())
    }

    /// Leaves the task `found` as the protocol would have: an interrupted
    /// terminal move finished, a stale copy removed.
    pub(super) fn tidy(&self, found: &Found) -> Result<()> {
        self.drop_stale(found)?;
        if found.area == Area::Active && found.task.is_terminal() {
            self.move_to_done(&found.task)?;
        }
        Ok(())
    }

    /// Makes the finished `task` that a write kept, and answers with
    /// (`AlreadyTerminal`), durable under [`Durability::Immediate`]: its
    /// file's bytes, then its entry in `expiring/` (with a TTL), then its
    /// name in `done/` (never in `done/` without its entry). The answer
    /// tells the caller the task is final, and must hold across a power
    /// loss as this handle's own writes do, though another handle of the
    /// store may have finished it `Eventual`ly (its file and names never
    /// fsynced). Where every handle is `Immediate` it is durable already,
    /// and the fsyncs write nothing new, but each still asks the device to
    /// flush: an `AlreadyTerminal` answer costs two fsyncs (three with a
    /// TTL), as a write does. A running task kept (a fenced or
    /// conditional write, a task not to reap) is left as it is: such an
    /// answer says how the task stands now, not that it is final. The caller holds
    /// the task's stripe lock, after [`tidy`](Self::tidy) (which moved a
    /// finished task still in `active/` into `done/`).
    ///
    /// Each version once per handle (the latest [`KEPT_DURABLE`] kept in
    /// mind): a retried complete, a renewal of a finished task or a cancel
    /// after completion answered again makes no fsync.
    pub(super) fn make_kept_durable(&self, task: &Task) -> Result<()> {
        if self.durability != Durability::Immediate || !task.is_terminal() {
            return Ok(());
        }
        let version = Version::of(task);
        let made = || {
            self.kept_durable
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if made().contains(&version) {
            return Ok(());
        }
        // Its entry in `expiring/` too, made durable first, as a move's
        // are (`sync_links`).
        let touched = Touched {
            expiring: expiring_name(task).is_some(),
            done: true,
            ..self.touched()
        };
        let (dir, name) = (self.dir(Area::Done), task_name(&task.id));
        let path = dir.join(&name);
        let file = self
            .fs
            .open_read(dir, &name)
            .map_err(|e| Error::io("open", &path, e))?;
        self.fs
            .sync_file(&file, &path)
            .map_err(|e| Error::io("fsync", &path, e))?;
        self.sync_links(&touched)?;
        let mut made = made();
        if made.len() == KEPT_DURABLE {
            made.pop_front();
        }
        made.push_back(version);
        Ok(())
    }

    /// Finishes interrupted terminal moves: terminal tasks still in
    /// `active/`. Returns how many were moved.
    pub(super) fn finish_moves(&self) -> Result<usize> {
        let unmoved = {
            let mut state = self.snapshot.lock();
            self.refresh(&mut state)?;
            state.unmoved()
        };
        let mut moved = 0;
        for id in &unmoved {
            let _guard = self.locks.lock(&self.fs, stripe(id))?;
            // One task that cannot be read or moved now never stops the
            // others: it stays as it is, and the pass's scan reports it.
            let finished = self.find(id).and_then(|found| match found {
                Some(found) if found.area == Area::Active && found.task.is_terminal() => {
                    self.tidy(&found).map(|()| true)
                }
                _ => Ok(false),
            });
            match finished {
                Ok(true) => moved += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(task = %id, error = %e, "cannot finish an interrupted terminal move; left for later");
                }
            }
        }
        Ok(moved)
    }

    /// How many running tasks `active/` holds, from the snapshot brought up
    /// to date (with a watch: the names changed since, no more).
    pub(super) fn count_active(&self) -> Result<usize> {
        let mut state = self.snapshot.lock();
        self.refresh(&mut state)?;
        Ok(state.active())
    }
}

/// A write done in place, or a terminal move still to finish (`linked`:
/// whether its file has its name in `done/` yet).
#[derive(Debug)]
enum Staged {
    Written {
        /// The previous version, parked until `active/` is durable.
        park: Option<OsString>,
    },
    Moving {
        id: TaskId,
        /// The file moved, when the lock is let go in between.
        ino: Option<(u64, u64)>,
        linked: bool,
        /// Its name in `expiring/`, if it has one.
        index: Option<OsString>,
        /// The previous version, parked until `done/` is durable.
        park: Option<OsString>,
    },
}

/// Where the fsyncs of each directory a batch may change stood before its
/// first change ([`DirSync::before`](crate::file::group::DirSync::before)).
#[derive(Clone, Copy, Debug)]
struct Befores {
    active: Before,
    done: Before,
    expiring: Before,
}

/// Whether `settle` takes each moving task's lock, or its caller holds it.
#[derive(Clone, Copy, Debug)]
enum Locking {
    Take,
    Held,
}

/// The stripes whose locks a batch could not take, each with the error
/// taking it gave ([`FileBackend::settle_moves_of`]).
type Untaken = std::collections::BTreeMap<usize, Error>;

/// The removals of expired tasks a handle has made and not yet made
/// durable ([`settle_expired_removals`](FileBackend::settle_expired_removals)),
/// and, while they leave `expiring/` entries to remove, a hold on the
/// batches lock.
#[derive(Debug)]
pub(super) struct PendingRemovals {
    touched: Touched,
    hold: Option<BatchHold>,
}

/// The directories a batch of writes changed, to make durable once.
#[derive(Debug)]
pub(super) struct Touched {
    /// Where the directories' fsyncs stood before the batch's first change
    /// ([`FileBackend::touched`]).
    before: Befores,
    active: bool,
    done: bool,
    expiring: bool,
    /// `expiring/` entries to remove once the removals are durable.
    unindex: Vec<OsString>,
    /// `active/` was made durable before this batch's first removal from
    /// `done/` (see `settle_moves`).
    moves_settled: bool,
}

impl Touched {
    /// Adds what another share of the batch touched (begun at the earlier
    /// of the two).
    fn absorb(&mut self, other: Touched) {
        let (ours, theirs) = (&mut self.before, other.before);
        ours.active = ours.active.min(theirs.active);
        ours.done = ours.done.min(theirs.done);
        ours.expiring = ours.expiring.min(theirs.expiring);
        self.active |= other.active;
        self.done |= other.done;
        self.expiring |= other.expiring;
        self.unindex.extend(other.unindex);
    }

    /// Where `area`'s fsyncs stood before the batch's first change.
    fn before(&self, area: Area) -> Before {
        match area {
            Area::Active => self.before.active,
            Area::Done => self.before.done,
        }
    }

    pub(super) fn mark(&mut self, area: Area) {
        match area {
            Area::Active => self.active = true,
            Area::Done => self.done = true,
        }
    }
}

/// How [`put_file`] puts its temp file at the name.
pub(super) enum Put {
    /// Renamed over whatever is there.
    Over,
    /// Linked to the name only if nothing is there, then removed.
    New,
}

/// Puts `bytes` at `name` in `dir` (`to`) atomically: a temp file in `tmp`
/// named for `id` (so cleanup takes the stripe lock the caller holds),
/// written, fsynced under `Immediate`, then put at the name as `put` says.
/// `false`: `Put::New` found the name taken, and left it as it is. No
/// directory fsync.
pub(super) fn put_file(
    fs: &Fs,
    tmp: &Dir,
    id: &TaskId,
    (dir, name): (&Dir, &OsStr),
    bytes: &[u8],
    durability: Durability,
    put: Put,
) -> Result<bool> {
    let (mut file, temp) = with_temp_name(id, |temp| fs.create_new(tmp, temp))
        .map_err(|(e, temp)| Error::io("create temp file", tmp.join(temp), e))?;
    let temp_path = tmp.join(&temp);
    let written = fs
        .write_all(&mut file, &temp_path, bytes)
        .map_err(|e| Error::io("write", &temp_path, e))
        .and_then(|()| match durability {
            Durability::Immediate => fs
                .sync_file(&file, &temp_path)
                .map_err(|e| Error::io("fsync", &temp_path, e)),
            Durability::Eventual => Ok(()),
        })
        .and_then(|()| {
            drop(file);
            match put {
                Put::Over => fs
                    .rename(tmp, &temp, dir, name)
                    .map(|()| true)
                    .map_err(|e| Error::io("rename into", dir.join(name), e)),
                Put::New => match fs.link(tmp, &temp, dir, name) {
                    Ok(()) => Ok(true),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                    Err(e) => Err(Error::io("link into", dir.join(name), e)),
                },
            }
        });
    let placed = match written {
        Ok(placed) => placed,
        Err(e) => {
            // The temp file is not the task; a failed removal is retried by
            // the next open or sweep.
            let _ = fs.remove(tmp, &temp);
            return Err(e);
        }
    };
    if let Put::New = put {
        // Its other name holds the bytes now; a failed removal is retried
        // by the next open or sweep, as above.
        let _ = fs.remove(tmp, &temp);
    }
    Ok(placed)
}

/// Runs `make` with a fresh temp name for task `id` until the name is not
/// taken (a crashed writer's leftover with the same pid and sequence): the
/// result and the name, or the error and the name.
pub(super) fn with_temp_name<T>(
    id: &TaskId,
    mut make: impl FnMut(&OsStr) -> io::Result<T>,
) -> std::result::Result<(T, OsString), (io::Error, OsString)> {
    let mut attempts = 0;
    loop {
        let temp = temp_name(id);
        match make(&temp) {
            Ok(made) => return Ok((made, temp)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 16 => {
                attempts += 1;
            }
            Err(e) => return Err((e, temp)),
        }
    }
}

/// How many finished versions a handle keeps in mind as made durable
/// ([`FileBackend::make_kept_durable`]).
const KEPT_DURABLE: usize = 256;

/// A version of a task, as the store tells versions apart
/// ([`is_current`]): its id, creation time and revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Version {
    id: TaskId,
    created_at: time::OffsetDateTime,
    revision: u64,
}

impl Version {
    fn of(task: &Task) -> Version {
        Version {
            id: task.id.clone(),
            created_at: task.created_at,
            revision: task.revision,
        }
    }
}
