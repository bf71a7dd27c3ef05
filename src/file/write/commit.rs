//! A new version written over a task: one task under its lock from the
//! read to the last fsync, or a batch staged task by task and settled with
//! one fsync per directory; a terminal version moved from `active/` into
//! `done/` (and `expiring/`) by hard links, never leaving the task without
//! a name.

use std::ffi::{OsStr, OsString};

use crate::backend::{Record, Swap, is_current};
use crate::error::{Error, Result};
use crate::file::fs::Dir;
use crate::file::layout::{Area, expiring_name, stripe, task_name};
use crate::file::lock;
use crate::file::write::Touched;
use crate::file::{Durability, FileBackend, Found, parallel};
use crate::id::TaskId;
use crate::task::Task;

impl FileBackend {
    /// Replaces the task `found` by `next`, durably in every directory it
    /// changes, before returning. The caller holds the task's lock.
    pub(in crate::file) fn commit(&self, found: &Found, next: &Record) -> Result<()> {
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
    pub(in crate::file) fn replace_batch(&self, swaps: &[(Task, Record)]) -> Vec<Result<Swap>> {
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
        // The waits end at the pass's deadline, its `stripe_wait` after the
        // first began, and once one ran out a stripe that stays stuck is
        // tried once: a pass waits its `stripe_wait` once (`lock::Pass`),
        // the settle's waits for the stripes again included.
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
                        .stage(&found, next, Locking::Take(&pass), &mut touched)
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
        if let Err(e) = self.settle(&staged, touched, Locking::Take(&pass)) {
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
        locking: Locking<'_>,
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
        locking: Locking<'_>,
        touched: &mut Touched,
    ) -> Result<Staged> {
        let name = task_name(&task.id);
        let (active, done) = (self.dir(Area::Active), self.dir(Area::Done));
        // Which file is being moved, for `settle` to see it still is after
        // taking the lock again (holding it, nothing else can move it).
        let ino = match locking {
            Locking::Take(_) => {
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
    /// stripes' tasks are settled in full. The stripes are waited for in
    /// the stage's pass: the batch waits its `stripe_wait` once, its stage
    /// and its settle told, however many stripes are held, and a stripe
    /// held once that deadline has passed is tried once, its move left.
    fn settle(&self, staged: &[Staged], mut touched: Touched, locking: Locking<'_>) -> Result<()> {
        // `None`: the task's stripe could not be taken (tried once per
        // stripe).
        let mut untaken = std::collections::BTreeSet::new();
        let mut lock = |id: &TaskId| match locking {
            Locking::Held => Some(None),
            Locking::Take(pass) => {
                let stripe = stripe(id);
                if untaken.contains(&stripe) {
                    return None;
                }
                match self.locks.lock_in(&self.fs, stripe, Some(pass)) {
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

    /// Writes `record`, a task the store does not hold (the caller holds
    /// its lock and looked): a running task into `active/`; a finished
    /// one (a task copied from another store) as a terminal transition
    /// writes it, into `active/`, then moved into `done/` with its
    /// `expiring/` entry, so that the sweep finds it when it expires (a
    /// file written straight into `done/` would have none: found by no
    /// sweep, and a problem for `verify`:
    /// `tests::a_finished_task_inserted_gets_its_expiring_entry`).
    ///
    /// Once the first half is durable the task is stored, final for every
    /// reader (the read rule), and a move that then fails (a link or an
    /// fsync refused) leaves it as a crash between the halves does, never
    /// in neither area ([`settle`](Self::settle)): the write is done, and
    /// the move left for the next sweep, open or write of the task to
    /// finish (logged at warn), as `replace_batch` reports a move whose
    /// stripe it could not take again
    /// (`faults::a_copy_whose_move_into_done_fails_reports_the_task_it_stored`).
    pub(in crate::file) fn write_new(&self, record: &Record) -> Result<()> {
        self.write(Area::Active, record)?;
        if Area::of(record.task()) == Area::Done
            && let Err(e) = self.link_and_settle(record.task(), false)
        {
            tracing::warn!(task = %record.task().id, error = %e, "stored a finished task in active/; its move into done/ failed and is left for the next sweep");
        }
        Ok(())
    }

    /// Finishes the terminal move of `task`, whose file is still in
    /// `active/` (the caller holds its lock). Its names in `expiring/` and
    /// `done/` are made durable before its name in `active/` goes, whatever
    /// this handle's durability: the move may be another handle's, left
    /// with the task durably in `active/` alone and acknowledged so (an
    /// `Immediate` batch that could not take the task's stripe again:
    /// [`settle`](Self::settle)), and the removal from `active/` becomes
    /// durable with the next fsync there by any handle. (An `Eventual`
    /// handle that finished such a move without them left the task in
    /// `expiring/` alone after a power loss:
    /// `crash_states::mixed::an_eventual_handle_finishing_a_move_an_immediate_reap_left_never_loses_it`.)
    pub(super) fn move_to_done(&self, task: &Task) -> Result<()> {
        self.link_and_settle(task, true)
    }

    /// Links `task` (its file in `active/`, its lock held) into `done/` and
    /// `expiring/` and settles the move. With `names_first` (another
    /// handle's move: [`move_to_done`](Self::move_to_done)) the new names
    /// are durable before its name in `active/` goes whatever this handle's
    /// durability; without (this handle's own write of a new task:
    /// [`write_new`](Self::write_new)) the move promises no more than this
    /// handle's durability.
    fn link_and_settle(&self, task: &Task, names_first: bool) -> Result<()> {
        let mut touched = self.touched();
        let staged = self.link_into_done(task, None, Locking::Held, &mut touched)?;
        // Under `Immediate`, `settle` makes them durable first itself.
        if names_first && self.durability != Durability::Immediate {
            self.make_links_durable(&touched)?;
        }
        self.settle(&[staged], touched, Locking::Held)
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

/// Whether `settle` takes each moving task's lock, in the batch's pass
/// (the one its stage waited in: one deadline for the batch), or its
/// caller holds it.
#[derive(Clone, Copy, Debug)]
enum Locking<'a> {
    Take(&'a lock::Pass),
    Held,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::json;
    use time::OffsetDateTime;

    use crate::backend::{Backend, Insert};
    use crate::clock::ManualClock;
    use crate::file::{FileCheck, FileStore};
    use crate::limits::Limits;
    use crate::memory::MemoryStore;
    use crate::store::TaskStore;
    use crate::task::NewTask;

    /// A finished task inserted into a file store (a task copied from
    /// another store) is in `done/` with its `expiring/` entry, as a
    /// terminal transition leaves it: the store checks clean, and the
    /// sweep of a handle that never listed it deletes it once it expires.
    /// (Written straight into `done/`, it had no entry: `verify` found
    /// `MissingIndexEntry`, and no sweep found the task.)
    #[test]
    fn a_finished_task_inserted_gets_its_expiring_entry() {
        let tmp = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
        let elsewhere = MemoryStore::builder().clock(clock.clone()).build().unwrap();
        let made = elsewhere
            .create(NewTask::new().ttl(Duration::from_secs(60)))
            .unwrap();
        let done = elsewhere.complete(&made.id, json!(1)).unwrap().into_task();
        let store = FileStore::builder(tmp.path())
            .clock(clock.clone())
            .open()
            .unwrap();
        let record = Limits::default().record(done.clone()).unwrap();
        assert_eq!(store.backend().insert(&record, 1).unwrap(), Insert::Done);
        let report = FileCheck::open(tmp.path()).unwrap().verify().unwrap();
        assert!(report.is_clean(), "{:#?}", report.problems);
        assert_eq!(store.get(&done.id).unwrap(), Some(done.clone()));
        clock.advance(Duration::from_secs(61));
        let later = FileStore::builder(tmp.path()).clock(clock).open().unwrap();
        assert_eq!(later.sweep().unwrap().deleted, 1);
        assert!(later.backend().load(&done.id).unwrap().is_none());
    }
}
